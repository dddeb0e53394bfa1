// parse_e2e.h: `lwb parse --e2e`: the kernel timeline of chosen decoder layers in an end-to-end
// serving run (TensorRT-LLM's parse_e2e.py, reference §7), for `lwb correlate` to set against
// lwb's own layer-wise runs.
//
// Two Nsight Systems profiles of one serving run: the eager trace (no CUDA graphs, the layer-wise
// calibrator in MARK mode: every decoder layer inside a `layer_wise_benchmarks layer_idx <i>`
// range) and optionally the graph trace (CUDA graphs, COLLECT mode: layer ranges exist only while
// the graphs were captured). Iterations are the executor's `[Executor] _forward_step N: ...`
// ranges with the target numbers of context and generation requests, the first --warmup-times
// of them dropped. The layers' kernels are found in the eager trace (launched inside a layer's
// range) and carried over to the graph trace through the shortest common supersequence of the
// two kernel sequences; the timeline is the graph trace's kernels of the requested layers, each
// with its mean duration and its mean end from the first of them.
//
// Defines: parse_e2e (the mode, called by cmd_parse with the parsed options), e2e_parse_step
// (an executor range's text to its counts), e2e_parse_layer.
//
// NOTES:
// - TensorRT-LLM pushes the executor's ranges in its own NVTX domain ("TensorRT-LLM", the
//   default of its nvtx_range helper) and the calibrator's layer ranges in the default domain,
//   both as registered strings; ranges are read from every domain but NCCL's, inline text or
//   registered. Newer executors write `X ctx reqs, T ctx tokens, Z gen reqs`, which the
//   reference's pattern no longer matches; both forms count here (targets compare requests).
// - Marked layers need not be 0..L-1 (the reference indexes its list of marked layers with the
//   layer index): --layer-indices is looked up by the number in the range text, and a layer
//   marked twice per iteration contributes each of its passes, in order.
// - A kernel belongs to the iteration whose range holds the start of its launch call (a call
//   that starts inside a push/pop range ends inside it), of the process that pushed the
//   iterations. Within an iteration kernels are in launch order, the nodes of one graph launch
//   in capture order (CUDA_GRAPH_NODE_EVENTS; graphNodeId when the capture is not in the
//   profile, as in the reference), then by GPU start.
// - Where the reference fails with an assertion or an index error, this says what differs in
//   one line: no iteration with the target counts (and which counts exist), fewer iterations
//   than warm-up, iteration ids that differ between the traces, kernel sequences or layer
//   ranges that differ across iterations, a requested layer that is not marked or has no
//   kernels.
//
// Does not: parse the command line (cmd_parse.h) or read SQLite (trace.h).
// Tested by test/test_e2e.c (synthetic profiles in nsys's schema, and real ones made by
// test/gpu/e2e_probe.c through test/gpu/e2e_run.sh when test/data/e2e/ holds them).
#pragma once

#define E2E_STEP "[Executor] _forward_step "
#define E2E_LAYER LWB_MARK "layer_idx "

struct e2e_iter {
    int64_t start, end;   // ns, CPU: the executor's range
    long long id;         // executor iteration (N)
    long long ctx, gen;   // context and generation requests
    long long ctx_tokens; // context tokens; -1 in the older form
    uint64_t pid;         // process that pushed it
};

struct e2e_layer {
    int64_t start, end; // ns, CPU
    long long idx;      // the number in the range text
};

struct e2e_trace {
    const char *role;        // "eager" or "graph"
    struct lwb_trace *t;
    struct e2e_iter *all;    // (nall) every executor range, by start
    int nall;
    struct e2e_iter *it;     // (nit) the kept ones: target counts, after warm-up, by start
    int nit;
    uint64_t pid;            // the process of the iterations
    uint32_t **k;            // (nit) per iteration: kernels (indices into t->k) in launch order
    int *nk;                 // (nit)
    int32_t *names;          // (nk[0]) iteration 0's kernel names, as ids of the common table
};

static bool e2e_num(const char **p, long long *v) {
    const char *s = *p;
    long long x = 0;
    int digits = 0;
    for (; isdigit((unsigned char)*s); s++, digits++) {
        if (digits == 18) // beyond any count a profile holds
            lwb_user_error("parse --e2e: a range's number has more than 18 digits: \"%.80s\"", tesc(*p));
        x = x * 10 + (*s - '0');
    }
    if (!digits) return false;
    *v = x, *p = s;
    return true;
}
static bool e2e_lit(const char **p, const char *lit) {
    if (!str_starts(*p, lit)) return false;
    *p += strlen(lit);
    return true;
}

// "[Executor] _forward_step N: X ctx reqs, Y gen reqs" or "... X ctx reqs, T ctx tokens, Y gen
// reqs", followed by anything (the reference matches a prefix).
static bool e2e_parse_step(const char *s, struct e2e_iter *it) {
    long long a;
    if (!e2e_lit(&s, E2E_STEP) || !e2e_num(&s, &it->id) || !e2e_lit(&s, ": ") || !e2e_num(&s, &it->ctx) ||
        !e2e_lit(&s, " ctx reqs, ") || !e2e_num(&s, &a))
        return false;
    it->ctx_tokens = -1;
    if (e2e_lit(&s, " ctx tokens, ")) {
        it->ctx_tokens = a;
        if (!e2e_num(&s, &a)) return false;
    }
    it->gen = a;
    return e2e_lit(&s, " gen reqs");
}

// "layer_wise_benchmarks layer_idx <i>", nothing after.
static bool e2e_parse_layer(const char *s, long long *idx) {
    return e2e_lit(&s, E2E_LAYER) && e2e_num(&s, idx) && !*s;
}

// Ranges the mode reads: push/pop, outside NCCL's domain (as parse).
static bool e2e_range_counts(const struct lwb_trace *t, const struct lwb_trace_range *r) {
    return r->type == LWB_RANGE_PUSHPOP && !(r->domain >= 0 && !strcmp(trace_str(t, r->domain), "NCCL"));
}

static int e2e_iter_cmp(const void *x, const void *y) {
    const struct e2e_iter *p = x, *q = y;
    if (p->start != q->start) return p->start < q->start ? -1 : 1;
    if (p->end != q->end) return p->end < q->end ? -1 : 1;
    return (p->id > q->id) - (p->id < q->id);
}

// Every executor range of the trace, by start; all from one process.
static void e2e_find_iters(struct e2e_trace *e) {
    const struct lwb_trace *t = e->t;
    size_t cap = 0;
    for (size_t i = 0; i < t->nr; i++) {
        const struct lwb_trace_range *r = &t->r[i];
        struct e2e_iter it = {.start = r->start, .end = r->end, .pid = r->tid & LWB_PROC_MASK};
        if (!e2e_range_counts(t, r) || !e2e_parse_step(trace_str(t, r->text), &it)) continue;
        if (e->nall && it.pid != e->all[0].pid)
            lwb_user_error("parse --e2e: %s: executor ranges come from more than one process (pids %d and %d); "
                           "profile each rank into its own file",
                           t->path, (int)((e->all[0].pid >> 24) & 0xFFFFFF), (int)((it.pid >> 24) & 0xFFFFFF));
        lwb_grow((void **)&e->all, &cap, (size_t)e->nall + 1, sizeof *e->all);
        e->all[e->nall++] = it;
    }
    if (!e->nall)
        lwb_user_error("parse --e2e: %s (the %s trace) has no \"" E2E_STEP "N: X ctx reqs, Y gen reqs\" ranges; "
                       "profile the serving run with nsys -t cuda,nvtx (TensorRT-LLM's executor pushes them)",
                       t->path, e->role);
    lwb_sort(e->all, (size_t)e->nall, sizeof *e->all, e2e_iter_cmp);
    e->pid = e->all[0].pid;
}

// The (ctx, gen) counts the trace's iterations have, with how many of each, for messages.
static void e2e_counts_text(const struct e2e_trace *e, struct lwb_str *s) {
    bool *seen = xcalloc((size_t)e->nall + 1, 1);
    int shown = 0;
    for (int i = 0; i < e->nall; i++) {
        if (seen[i]) continue;
        int n = 0;
        for (int j = i; j < e->nall; j++)
            if (e->all[j].ctx == e->all[i].ctx && e->all[j].gen == e->all[i].gen) seen[j] = true, n++;
        if (shown++ == 8) {
            str_puts(s, ", ...");
            break;
        }
        str_printf(s, "%s%lld ctx reqs and %lld gen reqs (%d)", shown > 1 ? ", " : "", e->all[i].ctx, e->all[i].gen, n);
    }
    free(seen);
}

// The target generation count when not given: with 0 context requests, that of the first
// iteration without context requests (the reference's rule); otherwise 0.
static long long e2e_default_gen(const struct e2e_trace *e, long long ctx) {
    if (ctx) return 0;
    for (int i = 0; i < e->nall; i++)
        if (e->all[i].ctx == 0) return e->all[i].gen;
    struct lwb_str s = {0};
    e2e_counts_text(e, &s);
    lwb_user_error("parse --e2e: cannot choose --target-gen-reqs: no iteration of %s has 0 ctx reqs (it has %s); "
                   "give --target-ctx-reqs and --target-gen-reqs",
                   e->t->path, s.s);
}

// Keep the iterations with the target counts, less the first `warmup`.
static void e2e_keep(struct e2e_trace *e, long long ctx, long long gen, int warmup) {
    int n = 0;
    e->it = xcalloc((size_t)e->nall + 1, sizeof *e->it);
    for (int i = 0; i < e->nall; i++)
        if (e->all[i].ctx == ctx && e->all[i].gen == gen) e->it[n++] = e->all[i];
    if (!n) {
        struct lwb_str s = {0};
        e2e_counts_text(e, &s);
        lwb_user_error("parse --e2e: no iteration of %s (the %s trace) has %lld ctx reqs and %lld gen reqs; its "
                       "iterations have %s (--target-ctx-reqs, --target-gen-reqs)",
                       e->t->path, e->role, ctx, gen, s.s);
    }
    if (n <= warmup)
        lwb_user_error("parse --e2e: %s (the %s trace) has %d %s with %lld ctx reqs and %lld gen reqs and "
                       "--warmup-times drops %d, so none is left; give --warmup-times less than %d or profile "
                       "more iterations",
                       e->t->path, e->role, n, plural((size_t)n, "iteration", "iterations"), ctx, gen, warmup, n);
    e->nit = n - warmup;
    memmove(e->it, e->it + warmup, (size_t)e->nit * sizeof *e->it);
}

// Up to 16 numbers of a list, for messages.
static void e2e_ids_text(struct lwb_str *s, const long long *v, int n) {
    for (int i = 0; i < n && i < 16; i++) str_printf(s, "%s%lld", i ? " " : "", v[i]);
    if (n > 16) str_puts(s, " ...");
    if (!n) str_puts(s, "(none)");
}

static void e2e_print_ids(const char *what, const struct e2e_iter *it, int n) {
    printf("%s", what);
    for (int i = 0; i < n; i++) printf(" %lld", it[i].id);
    printf("\n");
}

// The kept iteration whose range holds time `x`, or -1.
static int e2e_iter_at(const struct e2e_trace *e, int64_t x) {
    int lo = 0, hi = e->nit; // first iteration starting after x
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (e->it[mid].start <= x) lo = mid + 1;
        else hi = mid;
    }
    return lo > 0 && x <= e->it[lo - 1].end ? lo - 1 : -1;
}

// Launch order; the nodes of one graph launch by capture time, then node id, then GPU start.
static int e2e_kernel_cmp(const void *x, const void *y, void *arg) {
    const struct lwb_trace *t = arg;
    uint32_t i = *(const uint32_t *)x, j = *(const uint32_t *)y;
    const struct lwb_trace_kernel *a = &t->k[i], *b = &t->k[j];
    if (a->launch != b->launch) return a->launch < b->launch ? -1 : 1;
    if (a->site_start != b->site_start) return a->site_start < b->site_start ? -1 : 1;
    if (a->graph_node != b->graph_node) return a->graph_node < b->graph_node ? -1 : 1;
    if (a->start != b->start) return a->start < b->start ? -1 : 1;
    return (i > j) - (i < j);
}

// Each kept iteration's kernels; every iteration must launch the same sequence (times are
// averaged per position). Names of iteration 0 go to the common table `names`.
static void e2e_kernels(struct e2e_trace *e, struct lwb_strtab *names) {
    const struct lwb_trace *t = e->t;
    e->k = xcalloc((size_t)e->nit, sizeof *e->k);
    e->nk = xcalloc((size_t)e->nit, sizeof *e->nk);
    int32_t *at = xmalloc((t->nk + 1) * sizeof *at);
    for (size_t i = 0; i < t->nk; i++) {
        const struct lwb_trace_kernel *k = &t->k[i];
        bool ours = !(k->flags & LWB_K_NO_LAUNCH) && (k->site_tid & LWB_PROC_MASK) == e->pid;
        at[i] = ours ? e2e_iter_at(e, k->launch) : -1;
        if (at[i] >= 0) e->nk[at[i]]++;
    }
    for (int r = 0; r < e->nit; r++) e->k[r] = xmalloc(((size_t)e->nk[r] + 1) * sizeof **e->k), e->nk[r] = 0;
    for (size_t i = 0; i < t->nk; i++)
        if (at[i] >= 0) e->k[at[i]][e->nk[at[i]]++] = (uint32_t)i;
    free(at);
    for (int r = 0; r < e->nit; r++) qsort_r(e->k[r], (size_t)e->nk[r], sizeof **e->k, e2e_kernel_cmp, (void *)t);
    for (int r = 1; r < e->nit; r++) {
        int n = LWB_MIN(e->nk[0], e->nk[r]), i = 0;
        while (i < n && t->k[e->k[0][i]].name == t->k[e->k[r][i]].name) i++;
        if (i == n && e->nk[0] == e->nk[r]) continue;
        const char *x = i < e->nk[0] ? trace_str(t, t->k[e->k[0][i]].name) : "(end of iteration)";
        const char *y = i < e->nk[r] ? trace_str(t, t->k[e->k[r][i]].name) : "(end of iteration)";
        lwb_user_error("parse --e2e: %s (the %s trace): iteration %lld launches other kernels than iteration %lld: "
                       "kernel %d is \"%.300s\" instead of \"%.300s\" (%d and %d kernels); times are averaged per "
                       "kernel position, so every kept iteration must launch the same sequence",
                       t->path, e->role, e->it[r].id, e->it[0].id, i, y, x, e->nk[r], e->nk[0]);
    }
    e->names = xmalloc(((size_t)e->nk[0] + 1) * sizeof *e->names);
    for (int i = 0; i < e->nk[0]; i++) e->names[i] = strtab_intern(names, trace_str(t, t->k[e->k[0][i]].name));
}

static void e2e_print_counts(const struct e2e_trace *e) {
    printf("#Kernels (%s)", e->role);
    for (int r = 0; r < e->nit; r++) printf(" %d", e->nk[r]);
    printf("\n");
}

static int e2e_layer_cmp(const void *x, const void *y) {
    const struct e2e_layer *p = x, *q = y;
    if (p->start != q->start) return p->start < q->start ? -1 : 1;
    return (p->end < q->end) - (p->end > q->end);
}

// The layer ranges of the eager trace's first kept iteration (*out, by start); every kept
// iteration must mark the same layers in the same order.
static int e2e_layers(const struct e2e_trace *e, struct e2e_layer **out) {
    const struct lwb_trace *t = e->t;
    struct e2e_layer **per = xcalloc((size_t)e->nit, sizeof *per);
    int *n = xcalloc((size_t)e->nit, sizeof *n);
    size_t *cap = xcalloc((size_t)e->nit, sizeof *cap);
    for (size_t i = 0; i < t->nr; i++) {
        const struct lwb_trace_range *r = &t->r[i];
        struct e2e_layer l = {r->start, r->end, 0};
        if (!e2e_range_counts(t, r) || (r->tid & LWB_PROC_MASK) != e->pid || !e2e_parse_layer(trace_str(t, r->text), &l.idx))
            continue;
        int it = e2e_iter_at(e, r->start);
        if (it < 0 || r->end > e->it[it].end) continue; // outside the kept iterations
        lwb_grow((void **)&per[it], &cap[it], (size_t)n[it] + 1, sizeof **per);
        per[it][n[it]++] = l;
    }
    for (int it = 0; it < e->nit; it++) lwb_sort(per[it], (size_t)n[it], sizeof **per, e2e_layer_cmp);
    for (int it = 1; it < e->nit; it++) {
        bool same = n[it] == n[0];
        for (int j = 0; same && j < n[0]; j++) same = per[it][j].idx == per[0][j].idx;
        if (same) continue;
        struct lwb_str a = {0}, b = {0};
        long long *v = xmalloc(((size_t)LWB_MAX(n[0], n[it]) + 1) * sizeof *v);
        for (int j = 0; j < n[0]; j++) v[j] = per[0][j].idx;
        e2e_ids_text(&a, v, n[0]);
        for (int j = 0; j < n[it]; j++) v[j] = per[it][j].idx;
        e2e_ids_text(&b, v, n[it]);
        lwb_user_error("parse --e2e: %s: the layer ranges differ across iterations: iteration %lld marks layers %s, "
                       "iteration %lld marks %s; every kept iteration must run the same layers",
                       t->path, e->it[it].id, b.s, e->it[0].id, a.s);
    }
    for (int it = 1; it < e->nit; it++) free(per[it]);
    int n0 = n[0];
    *out = per[0];
    free(per), free(n), free(cap);
    return n0;
}

static void e2e_trace_free(struct e2e_trace *e) {
    for (int r = 0; r < e->nit; r++) free(e->k[r]);
    free(e->all), free(e->it), free(e->k), free(e->nk), free(e->names);
}

// Open a profile as parse does (impossible times: left out with a warning, or refused).
static void e2e_open(struct lwb_trace *t, const char *path, bool strict) {
    trace_open(t, path);
    if (t->bad_times && strict)
        lwb_user_error("parse: %s: %zu GPU activities or NVTX ranges have impossible times (end before start, or "
                       "outside 0 .. 2^53 ns); drop --strict to leave them out",
                       path, t->bad_times);
    if (t->bad_times)
        lwb_warn("%s: %zu GPU activities or NVTX ranges have impossible times (end before start, or outside 0 .. "
                 "2^53 ns) and are left out (--strict refuses such profiles)",
                 path, t->bad_times);
}

// A string as Python's repr writes it (for the reference's Namespace line).
static void e2e_repr(const char *s) {
    if (!s) {
        printf("None");
        return;
    }
    putchar('\'');
    for (const char *p = tesc(s); *p; p++) {
        if (*p == '\'' || *p == '\\') putchar('\\');
        putchar(*p);
    }
    putchar('\'');
}

// The two traces must keep the same executor iterations.
static void e2e_check_ids(const struct e2e_trace *eg, const struct e2e_trace *gr) {
    bool same = eg->nit == gr->nit;
    for (int i = 0; same && i < eg->nit; i++) same = eg->it[i].id == gr->it[i].id;
    if (same) return;
    int i = 0;
    while (i < eg->nit && i < gr->nit && eg->it[i].id == gr->it[i].id) i++;
    struct lwb_str x = {0}, y = {0};
    long long *v = xmalloc(((size_t)LWB_MAX(eg->nit, gr->nit) + 1) * sizeof *v);
    for (int j = 0; j < eg->nit; j++) v[j] = eg->it[j].id;
    e2e_ids_text(&x, v, eg->nit);
    for (int j = 0; j < gr->nit; j++) v[j] = gr->it[j].id;
    e2e_ids_text(&y, v, gr->nit);
    lwb_user_error("parse --e2e: the iteration ids differ between the traces: the eager trace keeps %s, the graph "
                   "trace %s (first difference at position %d); profile both runs over the same iterations "
                   "(TLLM_PROFILE_START_STOP)",
                   x.s, y.s, i);
}

// Layers of the graph trace's kernels, through the eager trace: eager kernels belong to the
// layer range around their launch; each layer takes the span of supersequence positions from
// its first eager kernel's to its last's; a graph kernel belongs to the span holding its own.
struct e2e_map {
    int *span_lo, *span_hi; // (nlayer) supersequence positions; -1: the layer launches nothing
    int *graph_layer;       // (graph kernels per iteration) layer position; -1: none
};

static void e2e_align(struct e2e_map *m, const struct e2e_trace *eg, const struct e2e_trace *gr,
                      const struct e2e_layer *layer, int nlayer) {
    // scs_merge aligns up to 2^26 cells past the lists' common tail, and concatenates beyond: a
    // timeline from that would put graph kernels in the wrong layers, so refuse it.
    int m0 = eg->nk[0], n0 = gr->nk[0], tail = 0;
    while (tail < m0 && tail < n0 && eg->names[m0 - 1 - tail] == gr->names[n0 - 1 - tail]) tail++;
    if ((size_t)(m0 - tail + 1) * (size_t)(n0 - tail + 1) > ((size_t)1 << 26))
        lwb_user_error("parse --e2e: the eager and graph iterations (%d and %d kernels) differ over %d and %d kernels, "
                       "more than lwb aligns (2^26 pairs); profile fewer layers per iteration, or give only "
                       "--eager-trace",
                       m0, n0, m0 - tail, n0 - tail);
    int32_t *sup;
    int nsup = scs_merge(eg->names, eg->nk[0], gr->names, gr->nk[0], &sup);
    printf("#Kernels (supersequence) %d\n", nsup);
    m->span_lo = xmalloc(((size_t)nlayer + 1) * sizeof *m->span_lo);
    m->span_hi = xmalloc(((size_t)nlayer + 1) * sizeof *m->span_hi);
    for (int p = 0; p < nlayer; p++) m->span_lo[p] = m->span_hi[p] = -1;
    for (int i = 0, j = 0, p = 0; i < eg->nk[0]; i++, j++) {
        while (sup[j] != eg->names[i]) j++;
        int64_t launch = eg->t->k[eg->k[0][i]].launch;
        while (p + 1 < nlayer && layer[p + 1].start <= launch) p++;
        if (p < nlayer && layer[p].start <= launch && launch <= layer[p].end) {
            if (m->span_lo[p] < 0) m->span_lo[p] = j;
            m->span_hi[p] = j;
        }
    }
    m->graph_layer = xmalloc(((size_t)gr->nk[0] + 1) * sizeof *m->graph_layer);
    for (int i = 0, j = 0, p = 0; i < gr->nk[0]; i++, j++) {
        while (sup[j] != gr->names[i]) j++;
        while (p < nlayer && (m->span_lo[p] < 0 || m->span_hi[p] < j)) p++;
        m->graph_layer[i] = p < nlayer && m->span_lo[p] <= j ? p : -1;
    }
    free(sup);
}

// Every requested layer is marked and has kernels in both traces. Returns the first graph
// kernel of the requested layers (the origin of the timeline's ends).
static int e2e_check_layers(const struct lwb_val *li, const struct e2e_trace *eg, const struct e2e_trace *gr,
                            const struct e2e_layer *layer, int nlayer, const struct e2e_map *m) {
    if (!nlayer)
        lwb_user_error("parse --e2e: %s has no \"" E2E_LAYER "<i>\" ranges in its kept iterations; profile the eager "
                       "run with the layer-wise calibrator in MARK mode",
                       eg->t->path);
    int first = INT_MAX;
    for (int q = 0; q < li->n; q++) {
        int marked = 0, eager_kernels = 0, kernels = 0;
        for (int p = 0; p < nlayer; p++) {
            if (layer[p].idx != li->ints[q]) continue;
            marked++;
            eager_kernels += m->span_lo[p] >= 0;
            for (int i = 0; i < gr->nk[0]; i++)
                if (m->graph_layer[i] == p) kernels++, first = LWB_MIN(first, i);
        }
        if (!marked) {
            struct lwb_str s = {0};
            long long *v = xmalloc(((size_t)nlayer + 1) * sizeof *v);
            for (int p = 0; p < nlayer; p++) v[p] = layer[p].idx;
            e2e_ids_text(&s, v, nlayer);
            lwb_user_error("parse --e2e: --layer-indices: layer %lld is not marked in %s (its iterations mark layers "
                           "%s); profile the eager run with the layer-wise calibrator in MARK mode over that layer",
                           li->ints[q], eg->t->path, s.s);
        }
        if (!eager_kernels)
            lwb_user_error("parse --e2e: layer %lld launches no kernel inside its layer_idx ranges in %s", li->ints[q],
                           eg->t->path);
        if (!kernels)
            lwb_user_error("parse --e2e: layer %lld: none of its kernels in %s aligns with a kernel of the graph "
                           "trace %s",
                           li->ints[q], eg->t->path, gr->t->path);
    }
    return first;
}

// The timeline: the graph trace's kernels of the requested layers in their order, each with its
// mean duration and mean end from kernel `first`'s start over the kept iterations; printed as
// the reference's table and returned as its JSON.
static json_t *e2e_timeline(const struct lwb_val *li, const struct e2e_trace *gr, const struct e2e_layer *layer,
                            int nlayer, const struct e2e_map *m, int first) {
    struct lwb_trace *t = gr->t;
    json_t *tl = json_array();
    printf("%-40s %8s %8s\n", "Kernel", "Duration", "End");
    printf("----------------------------------------------------------\n");
    for (int q = 0; q < li->n; q++) {
        char module[64];
        snprintf(module, sizeof module, "layer_idx %lld", li->ints[q]);
        for (int p = 0; p < nlayer; p++) {
            if (layer[p].idx != li->ints[q]) continue;
            for (int i = 0; i < gr->nk[0]; i++) {
                if (m->graph_layer[i] != p) continue;
                int64_t dur = 0, end = 0; // ns sums: exact
                for (int r = 0; r < gr->nit; r++) {
                    const struct lwb_trace_kernel *k = &t->k[gr->k[r][i]];
                    dur += k->end - k->start;
                    end += k->end - t->k[gr->k[r][first]].start;
                }
                double dur_ns = (double)dur / gr->nit, end_ns = (double)end / gr->nit;
                int32_t name = t->k[gr->k[0][i]].name;
                printf("%-40.40s %8.1f %8.1f\n", tesc(trace_str(t, trace_short_name(t, name, true))), dur_ns / 1000.0,
                       end_ns / 1000.0);
                json_t *e = json_object();
                json_object_set_new(e, "name", json_str(trace_str(t, name)));
                json_object_set_new(e, "duration", json_real(dur_ns));
                json_object_set_new(e, "end", json_real(end_ns));
                json_object_set_new(e, "module", json_str(module)); // lwb's: correlate's per-module table
                json_array_append_new(tl, e);
            }
        }
    }
    json_t *all = json_array(), *o = json_object();
    json_object_set_new(o, "name", json_string("parse_e2e"));
    json_object_set_new(o, "timeline", tl);
    json_array_append_new(all, o);
    return all;
}

// The reference's first line: its argparse Namespace.
static void e2e_print_args(const struct lwb_args *a, const struct lwb_val *li, long long target_ctx, int warmup) {
    printf("Namespace(eager_trace=");
    e2e_repr(arg_str(a, "eager_trace"));
    printf(", graph_trace=");
    e2e_repr(arg_str(a, "graph_trace"));
    printf(", target_ctx_reqs=%lld, target_gen_reqs=", target_ctx);
    if (arg_set(a, "target_gen_reqs")) printf("%lld", arg_int(a, "target_gen_reqs"));
    else printf("None");
    printf(", layer_indices=[");
    for (int i = 0; i < li->n; i++) printf("%s%lld", i ? ", " : "", li->ints[i]);
    printf("], warmup_times=%d, error_on_unknown_kernel=%s, output=", warmup,
           arg_bool(a, "error_on_unknown_kernel") ? "True" : "False");
    e2e_repr(arg_str(a, "output"));
    printf(")\n");
}

// The mode. `eager_path` and `graph_path` are the SQLite files to read (graph_path NULL: the
// eager trace is both, as the reference does for context iterations, which run without graphs).
static int parse_e2e(const struct lwb_args *a, const char *eager_path, const char *graph_path) {
    const struct lwb_val *li = arg_val(a, "layer_indices", LWB_OPT_INT_LIST);
    const char *output = arg_str(a, "output");
    const int warmup = arg_set(a, "warmup_times") ? (int)arg_int(a, "warmup_times") : 5;
    const long long target_ctx = arg_set(a, "target_ctx_reqs") ? arg_int(a, "target_ctx_reqs") : 0;
    for (int i = 0; i < li->n; i++)
        for (int j = 0; j < i; j++)
            if (li->ints[i] == li->ints[j])
                lwb_user_error("parse --e2e: --layer-indices names layer %lld twice; give each layer once", li->ints[i]);

    // Before any work: the inputs are profiles, the output replaces neither them nor a special file.
    char why[512];
    const char *inputs[2] = {eager_path, graph_path};
    for (int i = 0; i < 2; i++)
        if (inputs[i] && !input_check(inputs[i], LWB_IN_PROFILE, why, sizeof why))
            lwb_user_error("%s: %s", inputs[i], why);
    if (output) output_check(output, "--output");

    e2e_print_args(a, li, target_ctx, warmup);
    struct lwb_trace te, tg;
    bool strict = arg_bool(a, "strict");
    e2e_open(&te, eager_path, strict);
    if (graph_path) e2e_open(&tg, graph_path, strict);
    struct e2e_trace eg = {.role = "eager", .t = &te}, gr = {.role = "graph", .t = graph_path ? &tg : &te};

    e2e_find_iters(&eg);
    const long long target_gen = arg_set(a, "target_gen_reqs") ? arg_int(a, "target_gen_reqs")
                                                               : e2e_default_gen(&eg, target_ctx);
    printf("target_ctx_reqs=%lld target_gen_reqs=%lld\n", target_ctx, target_gen);
    e2e_keep(&eg, target_ctx, target_gen, warmup);
    e2e_print_ids("Iters (eager)", eg.it, eg.nit);
    struct e2e_layer *layer;
    int nlayer = e2e_layers(&eg, &layer);
    printf("Layers (eager)");
    for (int j = 0; j < nlayer; j++) printf(" %lld", layer[j].idx);
    printf("\n");
    if (graph_path) {
        e2e_find_iters(&gr);
    } else {
        gr.all = xmalloc(((size_t)eg.nall + 1) * sizeof *gr.all);
        memcpy(gr.all, eg.all, (size_t)eg.nall * sizeof *gr.all);
        gr.nall = eg.nall, gr.pid = eg.pid;
    }
    e2e_keep(&gr, target_ctx, target_gen, warmup);
    e2e_print_ids("Iters (graph)", gr.it, gr.nit);
    e2e_check_ids(&eg, &gr);

    struct lwb_strtab names = {0};
    e2e_kernels(&eg, &names);
    e2e_kernels(&gr, &names);
    e2e_print_counts(&eg);
    e2e_print_counts(&gr);
    const struct e2e_trace *both[2] = {&eg, &gr};
    for (int i = 0; i < 2; i++)
        if (both[i]->nit && both[i]->nk[0] == 0)
            lwb_user_error("parse --e2e: the %s trace %s has no kernel launched inside its kept iterations (no "
                           "CUPTI_ACTIVITY_KIND_RUNTIME launch rows, or kernels of another process); profile with "
                           "-t cuda,nvtx",
                           both[i]->role, both[i]->t->path);
    struct e2e_map m;
    e2e_align(&m, &eg, &gr, layer, nlayer);
    int first = e2e_check_layers(li, &eg, &gr, layer, nlayer, &m);
    json_t *all = e2e_timeline(li, &gr, layer, nlayer, &m, first);
    if (arg_bool(a, "error_on_unknown_kernel") && gr.t->unknown_kernels)
        lwb_user_error("parse --e2e: %d torch kernel %s not in the short-name table (warnings above); drop "
                       "--error-on-unknown-kernel to parse anyway",
                       gr.t->unknown_kernels, plural((size_t)gr.t->unknown_kernels, "name is", "names are"));
    if (output) {
        char *dir = parse_dirname(output);
        output_dir(dir);
        free(dir);
        report_json(all, output_open(output));
        outputs_commit();
        printf("Wrote %s\n", tesc(output));
    }
    json_decref(all);
    free(m.span_lo), free(m.span_hi), free(m.graph_layer), free(layer);
    strtab_free(&names);
    e2e_trace_free(&eg), e2e_trace_free(&gr);
    if (graph_path) trace_free(&tg);
    trace_free(&te);
    return 0;
}

// runner.h: running the layers over the problems: warm-up with checks, CUDA-graph capture,
// the timed loop with events and NVTX, statistics, and each module timed alone for the
// roofline table.
//
// Defines: struct lwb_stats and stats_compute (mean, median, min, max, P90 of per-iteration
// times), struct lwb_runner (what a run holds: device, layers, buffers, per-problem launches),
// runner_setup_problem (inputs of one problem: cache lengths, balance override, tensor maps),
// runner_forward, runner_warmup_check (NaN / Inf / mostly-zero outputs name the layer and
// module), runner_time_problem (the reference's loop: eager or one replayed graph, events back
// to back, the `b=.. s=.. past=..` NVTX range per iteration), runner_module_times (each module
// alone from a cold L2, its cost beyond the flushes), and the NVTX markers of the layer-wise contract.
//
// Does not: parse options or print the tables (cmd_run.h), or know layer internals beyond
// layers/deepseek.h's module functions.
// Tested by test/test_plan.c (statistics, markers) and on the GPU by test/gpu/run_lwb.sh.
#pragma once

struct lwb_stats {
    double mean, median, min, max, p90; // microseconds
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Percentiles interpolate linearly between order statistics (numpy's default).
static double percentile_sorted(const double *v, int n, double q) {
    if (n == 1) return v[0];
    double pos = q * (n - 1);
    int lo = (int)floor(pos);
    if (lo >= n - 1) return v[n - 1];
    return v[lo] + (pos - lo) * (v[lo + 1] - v[lo]);
}

static struct lwb_stats stats_compute(const double *us, int n) {
    double *v = xmalloc(sizeof *v * (size_t)n);
    memcpy(v, us, sizeof *v * (size_t)n);
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    struct lwb_stats s = {.min = v[0], .max = v[n - 1], .median = percentile_sorted(v, n, 0.5),
                          .p90 = percentile_sorted(v, n, 0.9)};
    for (int i = 0; i < n; i++) s.mean += v[i];
    s.mean /= n;
    free(v);
    return s;
}

// ---------------------------------------------------------------------------------------------

struct lwb_runner {
    struct lwb_device dev;
    struct lwb_gpuspec spec;     // peak FLOPs for floors
    double copy_bw;              // measured device-to-device bytes/s
    CUstream s;
    struct ds_dims d;
    struct ds_layer *layers;
    int nlayers;
    struct ds_buffers buf;
    struct ds_problem *problems;
    int nproblems;
    struct ds_run *runs;         // (nproblems, nlayers)
    struct lwb_routing *routing; // per problem: the balance override (method NotModified: none)
    struct lwb_kreq init;
    CUdeviceptr flush;           // L2 eviction buffer for module timings
    size_t flush_bytes;
    int world_size;
};

static struct ds_run *runner_run(struct lwb_runner *r, int problem, int layer) {
    return &r->runs[(size_t)problem * r->nlayers + layer];
}

// Per-problem state on the device: cache lengths and the balance override, then tensor maps.
static void runner_setup_problem(struct lwb_runner *r, int pi) {
    const struct ds_problem *p = &r->problems[pi];
    int *lens = xmalloc(sizeof(int) * (size_t)p->batch);
    for (int b = 0; b < p->batch; b++) lens[b] = p->kv_len;
    upload_wait(r->s, r->buf.kv_lens, lens, sizeof(int) * (size_t)p->batch);
    free(lens);
    const struct lwb_routing *ro = &r->routing[pi];
    if (ro->method != LWB_BALANCE_NOT_MODIFIED && r->buf.override) {
        int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)p->tokens * r->d.top_k);
        if (routing_select(ro, ids))
            upload_wait(r->s, r->buf.override, ids, sizeof(int32_t) * (size_t)p->tokens * r->d.top_k);
        free(ids);
    }
    for (int l = 0; l < r->nlayers; l++) ds_run_bind(runner_run(r, pi, l), &r->d, &r->buf);
}

static void runner_forward(struct lwb_runner *r, int pi) {
    for (int l = 0; l < r->nlayers; l++) ds_forward(runner_run(r, pi, l), &r->d, &r->buf, r->s, l == 0);
}

// Count NaN/Inf and zeros in a bf16 device buffer of n elements.
static void scan_bf16(CUdeviceptr p, size_t n, size_t *nonfinite, size_t *zeros) {
    uint16_t *h = xmalloc(n * 2);
    CU_CHECK(lwb_cu.cuMemcpyDtoH(h, p, n * 2));
    *nonfinite = *zeros = 0;
    for (size_t i = 0; i < n; i++) {
        *nonfinite += (h[i] & 0x7f80) == 0x7f80;
        *zeros += (h[i] & 0x7fff) == 0;
    }
    free(h);
}

static void check_output(const char *what, int layer, const char *module, CUdeviceptr p, size_t n) {
    size_t nonfinite, zeros;
    scan_bf16(p, n, &nonfinite, &zeros);
    if (nonfinite)
        lwb_fatal("layer %d %s: %zu of %zu outputs are NaN or Inf after the warm-up forward (%s); this is a "
                  "numerical fault in lwb's kernels or weight scales",
                  layer, module, nonfinite, n, what);
    if (zeros * 2 > n)
        lwb_fatal("layer %d %s: %zu of %zu outputs are zero after the warm-up forward (%s); more than half zero "
                  "means a kernel did not write its output",
                  layer, module, zeros, n, what);
}

// One eager forward, module by module, checking each module's output.
static void runner_warmup_check(struct lwb_runner *r, int pi) {
    const struct ds_dims *d = &r->d;
    struct ds_buffers *b = &r->buf;
    const size_t n = (size_t)r->problems[pi].tokens * d->hidden;
    for (int l = 0; l < r->nlayers; l++) {
        struct ds_run *run = runner_run(r, pi, l);
        const int li = run->L->index;
        ds_module_input_norm(run, d, b, r->s, l == 0);
        ds_module_mla(run, d, b, r->s);
        stream_wait(r->s, 300, "the warm-up forward");
        check_output("attention output", li, "MLA", b->attn_out, n);
        ds_module_post_norm(run, d, b, r->s);
        if (run->L->moe) {
            if (d->shared_inter) ds_module_shared(run, r->s);
            ds_module_gate(run, r->s);
            ds_module_experts(run, d, b, r->s);
        } else {
            ds_module_mlp(run, r->s);
        }
        stream_wait(r->s, 300, "the warm-up forward");
        check_output("residual", li, "post_attention_layernorm", b->residual, n);
        check_output("hidden_states", li, run->L->moe ? "Deepseekv3MoE" : "GatedMLP", b->hidden, n);
    }
}

// ---------------------------------------------------------------------------------------------
// NVTX markers of the layer-wise benchmarks contract

static void marker_json(const char *kind, json_t *obj) {
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    struct lwb_str s = {0};
    str_printf(&s, "layer_wise_benchmarks %s %s", kind, text);
    lwb_nvtx_range(s.s);
    str_free(&s);
    free(text);
    json_decref(obj);
}

// "b=128 s=1 past=8193 NP1", with " balance=0.5" (%.2g) when a ratio is given.
static void iteration_text(const struct ds_problem *p, int world_size, char *out, size_t n) {
    char bal[32] = "";
    if (p->has_ratio) snprintf(bal, sizeof bal, " balance=%.2g", p->ratio);
    snprintf(out, n, "b=%d s=%d past=%d%s NP%d", p->batch, p->qlen, p->past, bal, world_size);
}

static json_t *problem_spec_json(const struct ds_problem *p) {
    json_t *o = json_object();
    json_object_set_new(o, "batch_size", json_integer(p->batch));
    json_object_set_new(o, "seq_len_q", json_integer(p->qlen));
    json_object_set_new(o, "seq_len_kv_cache", json_integer(p->past));
    json_object_set_new(o, "balance_ratio", p->has_ratio ? json_real(p->ratio) : json_null());
    return o;
}

// The reference's loop for one problem: warm-up + timed iterations back to back, each inside
// its NVTX range, replaying one captured graph or running eagerly; `us` receives the times of
// the timed iterations.
static void runner_time_problem(struct lwb_runner *r, int pi, bool graph, int warmup, int timed, double *us) {
    CUgraphExec exec = NULL;
    if (graph) {
        CUgraph g;
        CU_CHECK(lwb_cu.cuStreamBeginCapture(r->s, CU_STREAM_CAPTURE_MODE_GLOBAL));
        runner_forward(r, pi);
        CU_CHECK(lwb_cu.cuStreamEndCapture(r->s, &g));
        CU_CHECK(lwb_cu.cuGraphInstantiateWithFlags(&exec, g, 0));
        CU_CHECK(lwb_cu.cuGraphDestroy(g));
        CU_CHECK(lwb_cu.cuGraphLaunch(exec, r->s)); // upload the graph before timing
        stream_wait(r->s, 300, "the graph's first replay");
    }
    const int n = warmup + timed;
    CUevent *ev = xcalloc((size_t)n + 1, sizeof *ev);
    for (int i = 0; i <= n; i++) CU_CHECK(lwb_cu.cuEventCreate(&ev[i], CU_EVENT_DEFAULT));
    char text[128];
    iteration_text(&r->problems[pi], r->world_size, text, sizeof text);
    for (int i = 0; i < n; i++) {
        CU_CHECK(lwb_cu.cuEventRecord(ev[i], r->s));
        lwb_nvtx_push(text);
        if (graph) CU_CHECK(lwb_cu.cuGraphLaunch(exec, r->s));
        else runner_forward(r, pi);
        lwb_nvtx_pop();
    }
    CU_CHECK(lwb_cu.cuEventRecord(ev[n], r->s));
    stream_wait(r->s, 600, "the timed iterations");
    for (int i = warmup; i < n; i++) {
        float ms;
        CU_CHECK(lwb_cu.cuEventElapsedTime(&ms, ev[i], ev[i + 1]));
        us[i - warmup] = ms * 1e3;
    }
    for (int i = 0; i <= n; i++) CU_CHECK(lwb_cu.cuEventDestroy(ev[i]));
    free(ev);
    if (exec) CU_CHECK(lwb_cu.cuGraphExecDestroy(exec));
}

// ---------------------------------------------------------------------------------------------
// Modules timed alone

struct lwb_module_time {
    int layer;          // model layer index
    const char *module; // NVTX name (as in ds_cost)
    double us;          // median time alone
    double flops, bytes;
};

typedef void (*module_fn)(struct lwb_runner *r, struct ds_run *run);
static void mt_mla(struct lwb_runner *r, struct ds_run *run) { ds_module_mla(run, &r->d, &r->buf, r->s); }
static void mt_moe(struct lwb_runner *r, struct ds_run *run) {
    if (r->d.shared_inter) ds_module_shared(run, r->s);
    ds_module_gate(run, r->s);
    ds_module_experts(run, &r->d, &r->buf, r->s);
}
static void mt_shared(struct lwb_runner *r, struct ds_run *run) { ds_module_shared(run, r->s); }
static void mt_gate(struct lwb_runner *r, struct ds_run *run) { ds_module_gate(run, r->s); }
static void mt_experts(struct lwb_runner *r, struct ds_run *run) { ds_module_experts(run, &r->d, &r->buf, r->s); }
static void mt_mlp(struct lwb_runner *r, struct ds_run *run) { ds_module_mlp(run, r->s); }

struct module_call {
    struct lwb_runner *r;
    struct ds_run *run;
    module_fn fn;
};
static void module_call_enqueue(void *arg, CUstream s) {
    struct module_call *m = arg;
    (void)s; // the module enqueues on the runner's stream
    m->fn(m->r, m->run);
}

// A module's time alone, from a cold L2 (time_cold_us: the flushes and the events' own cost are
// not charged to it).
static double time_module(struct lwb_runner *r, struct ds_run *run, module_fn fn, int reps) {
    struct module_call m = {r, run, fn};
    return time_cold_us(r->s, r->flush, r->flush_bytes, module_call_enqueue, &m, reps, 5);
}

// What the least kernel costs by time_module's method: a one-element fill after a flush. No module
// can take less; for a module of one small kernel it is most of the time.
struct fill_one {
    const struct lwb_kreq *init;
    CUdeviceptr p;
};
static void fill_one_enqueue(void *arg, CUstream s) {
    struct fill_one *f = arg;
    init_fill_bf16(f->init, s, f->p, 1, 1, 0.f, 1.f);
}
static double runner_launch_cost(struct lwb_runner *r) {
    struct fill_one f = {&r->init, r->flush}; // the flush buffer's first element: scratch
    return time_cold_us(r->s, r->flush, r->flush_bytes, fill_one_enqueue, &f, 20, 5);
}

// Active experts of the last forward (for the MoE floors: only they must be read).
static int runner_active_experts(struct lwb_runner *r, int tokens) {
    size_t n = (size_t)tokens * r->d.top_k;
    int32_t *ids = xmalloc(n * 4);
    CU_CHECK(lwb_cu.cuMemcpyDtoH(ids, r->buf.ids, n * 4));
    char *seen = xcalloc((size_t)r->d.experts, 1);
    int active = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < r->d.experts && !seen[ids[i]]) seen[ids[i]] = 1, active++;
    free(ids), free(seen);
    return active;
}

// Every module of every layer, alone. Returns the count written to out (room for 5 per layer).
static int runner_module_times(struct lwb_runner *r, int pi, int reps, struct lwb_module_time *out) {
    runner_setup_problem(r, pi);
    runner_forward(r, pi); // inputs of every module are in place after a full forward
    stream_wait(r->s, 600, "the roofline forward");
    int n = 0;
    for (int l = 0; l < r->nlayers; l++) {
        struct ds_run *run = runner_run(r, pi, l);
        // Restore this layer's inputs (the stream buffers hold the last layer's outputs).
        if (r->nlayers > 1) {
            runner_setup_problem(r, pi);
            for (int k = 0; k <= l; k++) ds_forward(runner_run(r, pi, k), &r->d, &r->buf, r->s, k == 0);
            stream_wait(r->s, 600, "the roofline forward");
        }
        double active = run->L->moe ? runner_active_experts(r, r->problems[pi].tokens) : 0;
        struct ds_cost cost[5];
        int nc = ds_cost(&r->d, &r->problems[pi], run->L->moe, active, cost);
        for (int c = 0; c < nc; c++) {
            module_fn fn = !strcmp(cost[c].module, "MLA")              ? mt_mla
                           : !strcmp(cost[c].module, "Deepseekv3MoE")  ? mt_moe
                           : !strcmp(cost[c].module, "DeepseekV3Gate") ? mt_gate
                           : !strcmp(cost[c].module, "MoE")            ? mt_experts
                           : run->L->moe                               ? mt_shared
                                                                       : mt_mlp;
            // Timing MLA alone re-runs the post-attention part's inputs; the MoE modules read
            // the post-attention norm's output, which a full forward left in place.
            out[n++] = (struct lwb_module_time){run->L->index, cost[c].module, time_module(r, run, fn, reps),
                                                cost[c].flops, cost[c].bytes};
        }
    }
    return n;
}

// Measured device-to-device copy bandwidth (bytes read + written per second).
static double measure_copy_bw(CUstream s) {
    const size_t bytes = (size_t)1 << 30;
    CUdeviceptr a = dev_alloc(bytes, "bandwidth probe"), b = dev_alloc(bytes, "bandwidth probe");
    CU_CHECK(lwb_cu.cuMemsetD8Async(a, 1, bytes, s));
    CUevent e0, e1;
    CU_CHECK(lwb_cu.cuEventCreate(&e0, CU_EVENT_DEFAULT));
    CU_CHECK(lwb_cu.cuEventCreate(&e1, CU_EVENT_DEFAULT));
    double best = 0;
    for (int i = 0; i < 6; i++) {
        CU_CHECK(lwb_cu.cuEventRecord(e0, s));
        CU_CHECK(lwb_cu.cuMemcpyDtoDAsync(b, a, bytes, s));
        CU_CHECK(lwb_cu.cuEventRecord(e1, s));
        stream_wait(s, 60, "the bandwidth probe");
        float ms;
        CU_CHECK(lwb_cu.cuEventElapsedTime(&ms, e0, e1));
        if (i > 0) best = LWB_MAX(best, 2.0 * bytes / (ms * 1e-3));
    }
    CU_CHECK(lwb_cu.cuEventDestroy(e0));
    CU_CHECK(lwb_cu.cuEventDestroy(e1));
    dev_free(a, bytes), dev_free(b, bytes);
    return best;
}

// runner.h: running the layers over the problems: warm-up with checks, CUDA-graph capture,
// the timed loop with events and NVTX, statistics, and each module timed alone for the
// roofline table.
//
// Defines: struct lwb_stats and stats_compute (mean, median, min, max, P90 of per-iteration
// times), struct lwb_runner (what a run holds: device, the family and its state, the current
// problem's module lists), runner_setup_problem, runner_forward, runner_warmup_check (NaN / Inf
// / mostly-zero outputs name the layer and module), runner_time_problem (the reference's loop:
// eager or one replayed graph, events back to back, the `b=.. s=.. past=..` NVTX range per
// iteration), runner_module_times (each module alone from a cold L2, its cost beyond the
// flushes), and the NVTX markers of the layer-wise contract.
//
// Does not: parse options or print the tables (cmd_run.h), or know any family: it walks the
// module lists a family's table gives (family.h).
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
    lwb_sort(v, (size_t)n, sizeof *v, cmp_double);
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
    struct lwb_gpuspec spec;     // peak FLOPs and link bandwidth for floors
    double copy_bw;              // measured device-to-device bytes/s
    CUstream s;
    const struct lwb_family *fam;
    void *f;                     // the family's state
    int nlayers, nproblems;
    const struct lwb_problem *problems;
    struct lwb_modules *mods;    // (nlayers) the current problem's module lists
    int mods_problem;            // the problem they are for (-1: none)
    struct lwb_kreq init;
    CUdeviceptr flush;           // L2 eviction buffer for module timings
    size_t flush_bytes;
    int world_size;
    const struct lwb_replay *replay; // recorded routing replayed in the loop, or NULL
};

// Per-problem state on the device (the family's), and the layers' module lists.
static void runner_setup_problem(struct lwb_runner *r, int pi) {
    r->fam->setup(r->f, pi, r->s);
    if (!r->mods) r->mods = xcalloc((size_t)r->nlayers, sizeof *r->mods);
    for (int l = 0; l < r->nlayers; l++) r->fam->modules(r->f, pi, l, false, &r->mods[l]);
    r->mods_problem = pi;
}

static void runner_forward(struct lwb_runner *r, int pi) {
    if (r->mods_problem != pi) LWB_BUG("forward of problem %d set up for %d", pi, r->mods_problem);
    for (int l = 0; l < r->nlayers; l++) modules_run(&r->mods[l], 0, r->mods[l].n, r->s);
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

// One eager forward, a top-level module at a time, checking the outputs each module names.
static void runner_warmup_check(struct lwb_runner *r, int pi, const int *layer_index) {
    if (r->mods_problem != pi) LWB_BUG("warm-up of problem %d set up for %d", pi, r->mods_problem);
    for (int l = 0; l < r->nlayers; l++) {
        const struct lwb_modules *ml = &r->mods[l];
        for (int i = 0; i < ml->n; i = module_end(ml, i)) {
            const int end = module_end(ml, i);
            modules_run(ml, i, end, r->s);
            stream_wait(r->s, 300, "the warm-up forward");
            for (int k = i; k < end; k++) {
                const struct lwb_module *m = &ml->m[k];
                if (!m->check_ptr) continue;
                check_output(m->check_what, layer_index[l], m->name ? m->name : m->label ? m->label : "layer",
                             m->check_ptr, m->check_n);
            }
        }
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

// The reference's loop for one problem: warm-up + timed iterations back to back, each inside
// its NVTX range, replaying one captured graph or running eagerly; `us` receives the times of
// the timed iterations. `on_iteration` (may be NULL) runs on the host before iteration i is
// enqueued (the test fault switch). With a replay, iteration i's recorded choices are copied into
// what the MoE layers read first (a device-to-device copy outside the graph and outside the
// iteration's NVTX range, inside its timed span, as the reference's pre_step).
static void runner_time_problem(struct lwb_runner *r, int pi, bool graph, int warmup, int timed, double *us,
                                void (*on_iteration)(int i)) {
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
        if (on_iteration) on_iteration(i);
        CU_CHECK(lwb_cu.cuEventRecord(ev[i], r->s));
        if (r->replay) r->fam->route_replay(r->f, replay_slot(r->replay, i), r->s);
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

// One more eager forward, a layer at a time, reading back the expert ids each MoE layer used:
// `out` receives (MoE layers, tokens x top_k = per). The router's choice is a function of the
// problem's inputs and weights, which the iterations do not change, so without a replay this is
// every iteration's choice; with one, it is the choice of the replayed iteration loaded last.
static void runner_route_forward(struct lwb_runner *r, int pi, size_t per, int32_t *out) {
    if (r->mods_problem != pi) LWB_BUG("routing forward of problem %d set up for %d", pi, r->mods_problem);
    int at = 0;
    for (int l = 0; l < r->nlayers; l++) {
        modules_run(&r->mods[l], 0, r->mods[l].n, r->s);
        if (r->fam->route_layer(r->f, l)) r->fam->route_read(r->f, pi, l, out + per * (size_t)at++, r->s);
    }
}

// ---------------------------------------------------------------------------------------------
// Modules timed alone

struct lwb_module_time {
    int layer;          // model layer index
    const char *module; // NVTX name, or the label of work outside the ranges
    double us;          // median time alone
    struct lwb_cost cost;
};

struct lwb_module_times {
    struct lwb_module_time *t;
    int n;
    size_t cap;
};

struct module_span {
    const struct lwb_modules *l;
    int from, to;
};
static void module_span_enqueue(void *arg, CUstream s) {
    struct module_span *m = arg;
    modules_run(m->l, m->from, m->to, s);
}

// What the least kernel costs by time_cold_us's method: a one-element fill after a flush. No
// module can take less; for a module of one small kernel it is most of the time.
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

// Every module of every layer (named, or with a floor of its own), alone, from a cold L2: its
// cost beyond the flushes (time_cold_us). Every rank times the same modules in the same order,
// so the collectives inside them pair up.
static void runner_module_times(struct lwb_runner *r, int pi, const int *layer_index, int reps,
                                struct lwb_module_times *out) {
    out->n = 0;
    struct lwb_modules ml = {0};
    for (int l = 0; l < r->nlayers; l++) {
        // Inputs of this layer's modules are in place after a forward up to it.
        runner_setup_problem(r, pi);
        for (int k = 0; k <= l; k++) modules_run(&r->mods[k], 0, r->mods[k].n, r->s);
        stream_wait(r->s, 600, "the roofline forward");
        r->fam->modules(r->f, pi, l, true, &ml); // costs from this forward's routing
        for (int i = 0; i < ml.n; i++) {
            const struct lwb_module *m = &ml.m[i];
            if (!m->name && !(m->label && (m->cost.sent || m->cost.received))) continue;
            struct module_span span = {&ml, i, module_end(&ml, i)};
            double us = time_cold_us(r->s, r->flush, r->flush_bytes, module_span_enqueue, &span, reps, 5);
            struct lwb_module_time t = {layer_index[l], m->name ? m->name : m->label, us, m->cost};
            LWB_PUSH(out->t, out->n, out->cap, t);
        }
    }
    free(ml.m);
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

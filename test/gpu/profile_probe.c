// profile_probe.c: checks lwb's built-in profiler (src/profile.h, src/nvtx.h) on a GPU, and
// compares its profile with an Nsight Systems export of the same program.
//
// The program follows the layer-wise-benchmarks NVTX contract: after cuProfilerStart an empty
// `layer_wise_benchmarks args {...}` range; per problem an empty `layer_wise_benchmarks
// problem_spec {...}` range; per iteration a `b=<B> s=<Q> past=<P> NP1` range around the work,
// which is: `MLA` around one rmsnorm (4096 x 7168 bf16), `Deepseekv3MoE` > `DeepseekV3Gate`
// around a second, `Deepseekv3MoE` > `MoE` around a third plus a memset and a device copy.
// Problem 1 runs it eagerly; problem 2 runs it once eagerly, captures it into a CUDA graph
// (module ranges pushed during capture) and replays the graph inside each iteration range.
// Each problem has W warm-up and T timed iterations (CUDA events around the timed ones).
// The same loops run once before the profiler starts and once after it stopped, so the timed
// loop with the profiler on is compared with it off.
//
// Build on the development machine, from the repository root, after ./build.sh (the rule the
// Makefile should carry, linked like the tests but without cmocka):
//   build/profile_probe: test/gpu/profile_probe.c lwb.c build/embedded.h
//   	$(CC) $(CFLAGS) -MMD -MP -MF $@.d -o $@ $< $(LDLIBS)
// Usage, on the GPU machine:
//   build/profile_probe OUTDIR [--window loop|run] [--iters W,T]
//       runs everything, writes OUTDIR/report_np1_rank0.sqlite (unless running under nsys),
//       prints the timings and the module breakdown of that file, and checks it (exit 1 when
//       a count is wrong). --window loop (default): one activity window per problem around
//       its warm-up and timed iterations (capture outside it); run: one window from
//       cuProfilerStart to cuProfilerStop, the span nsys -c cudaProfilerApi records.
//   build/profile_probe --check FILE.sqlite [OTHER.sqlite]
//       prints the module breakdown of any profile (lwb's or an nsys export) by the rules the
//       parser uses (launch -> enclosing ranges; graph kernels -> node chain -> ranges at
//       capture); with two files, compares them: same rows and counts, means within 5 %.
#define LWB_NO_MAIN
#include "../../lwb.c"
#include <jansson.h>

struct probe {
    CUstream s;
    struct lwb_kreq req;
    struct rmsnorm_config cfg;
    int rows;
    CUdeviceptr x, w, out1, out2, out3, scratch, copy_src, copy_dst;
    size_t scratch_bytes, copy_bytes;
    int warmup, timed;
};

static void forward(struct probe *pb) {
    const long long h = pb->cfg.hidden;
    lwb_nvtx_push("MLA");
    rmsnorm_enqueue(&pb->req, pb->cfg, pb->s, pb->x, h, 0, 0, 0, pb->w, pb->out1, h, pb->rows, 1e-6f);
    lwb_nvtx_pop();
    lwb_nvtx_push("Deepseekv3MoE");
    lwb_nvtx_push("DeepseekV3Gate");
    rmsnorm_enqueue(&pb->req, pb->cfg, pb->s, pb->out1, h, 0, 0, 0, pb->w, pb->out2, h, pb->rows, 1e-6f);
    lwb_nvtx_pop();
    lwb_nvtx_push("MoE");
    rmsnorm_enqueue(&pb->req, pb->cfg, pb->s, pb->out2, h, 0, 0, 0, pb->w, pb->out3, h, pb->rows, 1e-6f);
    CU_CHECK(lwb_cu.cuMemsetD8Async(pb->scratch, 0, pb->scratch_bytes, pb->s));
    CU_CHECK(lwb_cu.cuMemcpyDtoDAsync(pb->copy_dst, pb->copy_src, pb->copy_bytes, pb->s));
    lwb_nvtx_pop();
    lwb_nvtx_pop();
}

static CUgraphExec capture(struct probe *pb) {
    CUgraph g;
    CUgraphExec ge;
    CU_CHECK(lwb_cu.cuStreamBeginCapture(pb->s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    forward(pb);
    CU_CHECK(lwb_cu.cuStreamEndCapture(pb->s, &g));
    CU_CHECK(lwb_cu.cuGraphInstantiateWithFlags(&ge, g, 0));
    CU_CHECK(lwb_cu.cuGraphDestroy(g));
    return ge;
}

static void marker(const char *kind, json_t *obj) {
    char *js = json_dumps(obj, 0);
    char text[1024];
    snprintf(text, sizeof text, "layer_wise_benchmarks %s %s", kind, js);
    lwb_nvtx_range(text);
    free(js);
    json_decref(obj);
}

// W warm-up then T timed iterations inside iteration ranges; returns us per timed iteration.
static double iterations(struct probe *pb, CUgraphExec ge, int past) {
    char text[128];
    snprintf(text, sizeof text, "b=%d s=1 past=%d NP1", pb->rows, past);
    CUevent e0, e1;
    CU_CHECK(lwb_cu.cuEventCreate(&e0, CU_EVENT_DEFAULT));
    CU_CHECK(lwb_cu.cuEventCreate(&e1, CU_EVENT_DEFAULT));
    for (int i = 0; i < pb->warmup + pb->timed; i++) {
        if (i == pb->warmup) CU_CHECK(lwb_cu.cuEventRecord(e0, pb->s));
        lwb_nvtx_push(text);
        if (ge) CU_CHECK(lwb_cu.cuGraphLaunch(ge, pb->s));
        else forward(pb);
        lwb_nvtx_pop();
    }
    CU_CHECK(lwb_cu.cuEventRecord(e1, pb->s));
    CU_CHECK(lwb_cu.cuEventSynchronize(e1));
    float ms = 0;
    CU_CHECK(lwb_cu.cuEventElapsedTime(&ms, e0, e1));
    CU_CHECK(lwb_cu.cuEventDestroy(e0));
    CU_CHECK(lwb_cu.cuEventDestroy(e1));
    return 1000.0 * ms / pb->timed;
}

static json_t *problem_json(int rows, int past) {
    return json_pack("{s:i, s:i, s:i, s:n}", "batch_size", rows, "seq_len_q", 1,
                     "seq_len_kv_cache", past, "balance_ratio");
}

// Both problems, as the benchmark would run them. `prof` is NULL when nothing is profiled;
// with `run_window` its window spans both problems, else one window per problem's iterations.
static void problems(struct probe *pb, struct lwb_profiler *prof, bool run_window, double us[2]) {
    if (prof && run_window) profile_begin(prof);
    marker("problem_spec", problem_json(pb->rows, 0));
    if (prof && !run_window) profile_begin(prof);
    us[0] = iterations(pb, NULL, 0);
    if (prof && !run_window) profile_end(prof);
    marker("problem_spec", problem_json(pb->rows, 1024));
    forward(pb); // the eager pass before capture, outside any iteration range
    CUgraphExec ge = capture(pb);
    if (prof && !run_window) profile_begin(prof);
    us[1] = iterations(pb, ge, 1024);
    if (prof && !run_window) profile_end(prof);
    CU_CHECK(lwb_cu.cuGraphExecDestroy(ge));
    if (prof && run_window) profile_end(prof);
}

// ---------------------------------------------------------------------------------------------
// Checks, through lwb's own parser (src/trace.h): the module breakdown of a profile of this
// program must hold, per problem, the five (module, kernel) rows of the forward once per run,
// graph kernels included; two profiles of it must agree (rows and counts, means within 5 % or
// 0.5 us).

static const char *const probe_rows[][2] = {
    {"MLA", "lwb_rmsnorm"},
    {"Deepseekv3MoE > DeepseekV3Gate", "lwb_rmsnorm"},
    {"Deepseekv3MoE > MoE", "lwb_rmsnorm"},
    {"Deepseekv3MoE > MoE", "Memset"},
    {"Deepseekv3MoE > MoE", "Memcpy"},
};

static int check_one(const char *path, struct lwb_trace *t, struct lwb_breakdown *b) {
    trace_open(t, path);
    struct lwb_bd_opts o = {.module = NULL, .warmup = -1};
    if (!breakdown_build(t, &o, b)) {
        printf("check: %s has no layer-wise markers\n", path);
        return 1;
    }
    int bad = 0;
    printf("%s: %d problems\n  %-8s %-34s %-12s %5s %10s\n", path, b->np, "problem", "module", "name", "count",
           "mean us");
    for (int p = 0; p < b->np; p++) {
        struct lwb_module_row *rows;
        int n = breakdown_module_rows(b, p, &rows);
        for (int i = 0; i < n; i++)
            printf("  %-8d %-34s %-12s %5d %10.2f\n", p, rows[i].path[0] ? rows[i].path : "-", rows[i].short_name,
                   rows[i].count, rows[i].mean_ns / 1000);
        for (size_t k = 0; k < LWB_ARRAY_LEN(probe_rows); k++) {
            int found = 0;
            for (int i = 0; i < n; i++)
                found += !strcmp(rows[i].path, probe_rows[k][0]) && !strcmp(rows[i].short_name, probe_rows[k][1]) &&
                         rows[i].count == 1;
            if (found != 1) {
                printf("check: problem %d: %s under %s: %d rows, expected 1\n", p, probe_rows[k][1], probe_rows[k][0],
                       found);
                bad++;
            }
        }
        free(rows);
    }
    if (b->np != 2) printf("check: %d problems, expected 2\n", b->np), bad++;
    printf("check: %s\n", bad ? "FAILED" : "ok");
    return bad;
}

static int check_main(int argc, char **argv) {
    struct lwb_trace t[2];
    struct lwb_breakdown b[2];
    int bad = 0;
    for (int i = 0; i < argc; i++) bad += check_one(argv[i], &t[i], &b[i]);
    if (argc == 2) {
        int d = breakdown_compare(&b[0], &b[1], 0.05, 500, stdout);
        printf("compare: %s\n", d ? "DIFFERENT" : "same rows and counts, means within 5 % (or 0.5 us)");
        bad += d;
    }
    for (int i = 0; i < argc; i++) breakdown_free(&b[i]), trace_free(&t[i]);
    return bad ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------

int main(int argc, char **argv) {
    lwb_proc_init("profile_probe");
    if (argc >= 3 && argc <= 4 && !strcmp(argv[1], "--check")) return check_main(argc - 2, argv + 2);
    const char *outdir = NULL;
    bool run_window = false;
    struct probe pb = {.rows = 4096, .warmup = 5, .timed = 20};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--window") && i + 1 < argc) {
            i++;
            if (strcmp(argv[i], "loop") && strcmp(argv[i], "run"))
                lwb_user_error("--window must be loop or run (got %s)", argv[i]);
            run_window = !strcmp(argv[i], "run");
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            if (sscanf(argv[++i], "%d,%d", &pb.warmup, &pb.timed) != 2 || pb.warmup < 0 || pb.timed < 1)
                lwb_user_error("--iters takes WARMUP,TIMED (got %s)", argv[i]);
        } else if (argv[i][0] != '-' && !outdir) {
            outdir = argv[i];
        } else {
            lwb_user_error("usage: profile_probe OUTDIR [--window loop|run] [--iters W,T] | "
                           "profile_probe --check FILE.sqlite [OTHER.sqlite]");
        }
    }
    if (!outdir) lwb_user_error("usage: profile_probe OUTDIR [--window loop|run] [--iters W,T]");

    struct lwb_device dev;
    device_open(&dev, 0);
    struct lwb_jit jit;
    jit_init(&jit, dev.arch, true);
    pb.cfg = rmsnorm_choose_config(7168, false);
    rmsnorm_request(&pb.req, pb.cfg);
    struct lwb_kreq *reqs[] = {&pb.req};
    jit_build(&jit, reqs, 1);
    CU_CHECK(lwb_cu.cuStreamCreate(&pb.s, CU_STREAM_NON_BLOCKING));
    const size_t elems = (size_t)pb.rows * (size_t)pb.cfg.hidden;
    pb.x = dev_alloc(elems * 2, "x");
    pb.out1 = dev_alloc(elems * 2, "out1");
    pb.out2 = dev_alloc(elems * 2, "out2");
    pb.out3 = dev_alloc(elems * 2, "out3");
    pb.w = dev_alloc((size_t)pb.cfg.hidden * 2, "weight");
    pb.scratch_bytes = elems * 2;
    pb.scratch = dev_alloc(pb.scratch_bytes, "memset target");
    pb.copy_bytes = (size_t)4 << 20;
    pb.copy_src = dev_alloc(pb.copy_bytes, "copy source");
    pb.copy_dst = dev_alloc(pb.copy_bytes, "copy target");
    const unsigned two_ones = 0x3F803F80u; // two bf16 1.0
    CU_CHECK(lwb_cu.cuMemsetD32Async(pb.x, two_ones, elems / 2, pb.s));
    CU_CHECK(lwb_cu.cuMemsetD32Async(pb.w, two_ones, (size_t)pb.cfg.hidden / 2, pb.s));
    CU_CHECK(lwb_cu.cuStreamSynchronize(pb.s));

    const char *nsys = profile_nsys_signal();
    printf("profile_probe: %s, rmsnorm %d x %d bf16, %d warm-up + %d timed iterations per problem\n",
           dev.name, pb.rows, pb.cfg.hidden, pb.warmup, pb.timed);
    if (nsys) printf("under Nsight Systems (%s is set): lwb's profiler stays off\n", nsys);
    else printf("lwb's profiler: on, activity window per %s\n", run_window ? "run" : "problem loop");

    double off1[2], on[2], off2[2];
    problems(&pb, NULL, false, off1);

    struct lwb_profiler prof;
    if (!nsys) profile_init(&prof, &dev, 0, 1);
    CU_CHECK(lwb_cu.cuProfilerStart());
    // The run's lists as the reference's run.py records them (its parse.py reads them too).
    marker("args", json_pack("{s:i, s:i, s:s, s:s, s:[i], s:[i], s:[i,i], s:[n]}", "warmup_times", pb.warmup,
                             "run_times", pb.timed, "window", run_window ? "run" : "loop", "profiler",
                             nsys ? "nsys" : "lwb", "batch_size_list", pb.rows, "seq_len_q_list", 1,
                             "seq_len_kv_cache_list", 0, 1024, "balance_ratio_list"));
    problems(&pb, nsys ? NULL : &prof, run_window, on);
    CU_CHECK(lwb_cu.cuCtxSynchronize());
    CU_CHECK(lwb_cu.cuProfilerStop());
    char *written = NULL;
    if (!nsys) {
        double t0 = lwb_now();
        const char *path = profile_write(&prof, outdir);
        written = xstrdup(path);
        printf("wrote %s in %.3f s\n", path, lwb_now() - t0);
        profile_free(&prof);
    }

    problems(&pb, NULL, false, off2);

    uint16_t row[8];
    CU_CHECK(lwb_cu.cuMemcpyDtoH(row, pb.out3, sizeof row));
    for (int i = 0; i < 8; i++)
        if (row[i] < 0x3F7F || row[i] > 0x3F81)
            lwb_fatal("rmsnorm output[%d] = bf16 0x%04x, expected about 1.0 (0x3f80)", i, row[i]);

    printf("timed loop, us per iteration:\n  %-6s %12s %12s %12s %8s\n", "", "off before",
           nsys ? "under nsys" : "profiled", "off after", "ratio");
    const char *names[2] = {"eager", "graph"};
    for (int k = 0; k < 2; k++)
        printf("  %-6s %12.2f %12.2f %12.2f %8.4f\n", names[k], off1[k], on[k], off2[k],
               on[k] / (0.5 * (off1[k] + off2[k])));
    int rc = 0;
    if (written) {
        char *args[1] = {written};
        rc = check_main(1, args);
    }
    free(written);
    return rc;
}

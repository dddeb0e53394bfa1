// e2e_probe.c: a small stand-in for TensorRT-LLM's serving loop, to make real Nsight Systems
// profiles for `lwb parse --e2e` (test/gpu/e2e_run.sh profiles it; test/test_e2e.c reads the
// exports from test/data/e2e/).
//
// It emits the markers the way TensorRT-LLM does:
// - per executor iteration N a push/pop range "[Executor] _forward_step N: X ctx reqs, Y gen reqs"
//   (--form new: "X ctx reqs, T ctx tokens, Y gen reqs", the current executor's text) in the
//   executor's own NVTX domain, "TensorRT-LLM", as a registered string (its nvtx_range helper
//   is the Python nvtx package's annotate with that domain);
// - around each decoder layer's forward a range "layer_wise_benchmarks layer_idx <i>" in the
//   default domain, also registered (the layer-wise calibrator's MARK and COLLECT modes);
// - cuProfilerStart before iteration --profile-from (TLLM_PROFILE_START_STOP's start) and
//   cuProfilerStop after the last, so nsys -c cudaProfilerApi records that window.
// A layer is lwb's own kernels: an RMSNorm, a bf16 GEMM (hidden x hidden) and the 1x128
// activation quantisation; before the layers a memset (input preparation), after them a final
// RMSNorm and a device copy (the sampled tokens).
//
// Modes: --mode eager (MARK: every forward runs eagerly with layer ranges) and --mode graph
// (COLLECT: a CUDA graph per generation batch size, captured with layer ranges before the
// profiled window as TensorRT-LLM captures during warm-up, replayed by the generation-only
// iterations; iterations with context requests run eagerly, with layer ranges).
//
// The schedule (20 iterations): 0: 4 ctx reqs (128 ctx tokens); 1-12: 4 gen reqs; 13: 1 ctx req
// (32 tokens) and 4 gen reqs; 14-19: 5 gen reqs. With the default window (from iteration 2),
// `lwb parse --e2e` keeps iterations 7-12 by default (target 0 ctx / 4 gen, 5 warm-up).
//
// Build on the development machine: make build/e2e_probe (linked like the tests, no cmocka).
// Usage, on the GPU machine, under nsys (test/gpu/e2e_run.sh):
//   build/e2e_probe [--mode eager|graph] [--form old|new] [--layers N] [--first-layer I]
//                   [--profile-from K]
// It checks its own output (every value 1.0) and exits 1 when it is wrong.
#define LWB_NO_MAIN
#include "../../lwb.c"
#include <nvtx3/nvToolsExt.h>

enum { E2E_ITERS = 20, E2E_HIDDEN = 1024, E2E_ROWS = 128 };

struct e2e_step {
    int ctx, tokens, gen; // context requests, their tokens, generation requests
};

static struct e2e_step e2e_schedule(int it) {
    if (it == 0) return (struct e2e_step){4, 128, 0};
    if (it <= 12) return (struct e2e_step){0, 0, 4};
    if (it == 13) return (struct e2e_step){1, 32, 4};
    return (struct e2e_step){0, 0, 5};
}

struct probe {
    CUstream s;
    struct rmsnorm_config norm;
    struct lwb_kreq norm_req, quant_req;
    struct lwb_gemm gemm;              // h x w^T -> y, E2E_ROWS rows
    int layers, first_layer;
    CUdeviceptr x, h, y;               // (E2E_ROWS, E2E_HIDDEN) bf16: input, normed, layer output
    CUdeviceptr w_norm, w_gemm, ws;    // (E2E_HIDDEN) bf16, (E2E_HIDDEN, E2E_HIDDEN) bf16, split-K
    CUdeviceptr q, qs;                 // (E2E_ROWS, E2E_HIDDEN) e4m3, (E2E_ROWS, E2E_HIDDEN / 128) f32
    CUdeviceptr meta, tokens_dev, tokens_out; // memset target, the copy's source and target
    nvtxDomainHandle_t domain;         // TensorRT-LLM's (created at first use, as the executor does)
    nvtxStringHandle_t *layer_text;    // (layers) registered in the default domain at first use
};

// A registered-string push in `domain` (NULL: the default one), as the Python nvtx package does.
static void probe_push(nvtxDomainHandle_t domain, nvtxStringHandle_t text) {
    nvtxEventAttributes_t a = {0};
    a.version = NVTX_VERSION;
    a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    a.messageType = NVTX_MESSAGE_TYPE_REGISTERED;
    a.message.registered = text;
    nvtxDomainRangePushEx(domain, &a);
}

// One forward over `rows` tokens: the layers inside their ranges, then the final norm.
static void forward(struct probe *pb, int rows) {
    const long long h = E2E_HIDDEN;
    for (int l = 0; l < pb->layers; l++) {
        if (!pb->layer_text[l]) {
            char text[64];
            snprintf(text, sizeof text, "layer_wise_benchmarks layer_idx %d", pb->first_layer + l);
            pb->layer_text[l] = nvtxDomainRegisterStringA(NULL, text);
        }
        probe_push(NULL, pb->layer_text[l]);
        rmsnorm_enqueue(&pb->norm_req, pb->norm, pb->s, l ? pb->y : pb->x, h, 0, 0, 0, pb->w_norm, pb->h, h, rows,
                        1e-6f);
        gemm_enqueue(&pb->gemm, pb->s);
        quant_enqueue(&pb->quant_req, pb->s, pb->y, h, rows, E2E_HIDDEN, pb->q, h, pb->qs, h / 128);
        nvtxDomainRangePop(NULL);
    }
    rmsnorm_enqueue(&pb->norm_req, pb->norm, pb->s, pb->y, h, 0, 0, 0, pb->w_norm, pb->h, h, rows, 1e-6f);
}

static CUgraphExec capture(struct probe *pb, int rows) {
    CUgraph g;
    CUgraphExec ge;
    forward(pb, rows); // the eager pass of warm-up before the capture
    CU_CHECK(lwb_cu.cuStreamBeginCapture(pb->s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    forward(pb, rows);
    CU_CHECK(lwb_cu.cuStreamEndCapture(pb->s, &g));
    CU_CHECK(lwb_cu.cuGraphInstantiateWithFlags(&ge, g, 0));
    CU_CHECK(lwb_cu.cuGraphDestroy(g));
    return ge;
}

// One executor iteration: its range around input preparation, the forward (or the batch's
// graph) and the copy of the sampled tokens; then the host waits for it, as the sampler does.
static void iteration(struct probe *pb, int it, bool new_form, CUgraphExec ge) {
    struct e2e_step st = e2e_schedule(it);
    char text[160];
    if (new_form)
        snprintf(text, sizeof text, "[Executor] _forward_step %d: %d ctx reqs, %d ctx tokens, %d gen reqs", it, st.ctx,
                 st.tokens, st.gen);
    else
        snprintf(text, sizeof text, "[Executor] _forward_step %d: %d ctx reqs, %d gen reqs", it, st.ctx, st.gen);
    if (!pb->domain) pb->domain = nvtxDomainCreateA("TensorRT-LLM");
    probe_push(pb->domain, nvtxDomainRegisterStringA(pb->domain, text));
    CU_CHECK(lwb_cu.cuMemsetD8Async(pb->meta, 0, 4096, pb->s));
    if (ge) CU_CHECK(lwb_cu.cuGraphLaunch(ge, pb->s));
    else forward(pb, st.tokens + st.gen);
    CU_CHECK(lwb_cu.cuMemcpyDtoDAsync(pb->tokens_out, pb->tokens_dev, 4096, pb->s));
    nvtxDomainRangePop(pb->domain);
    CU_CHECK(lwb_cu.cuStreamSynchronize(pb->s));
}

static const char usage[] = "usage: e2e_probe [--mode eager|graph] [--form old|new] [--layers N] [--first-layer I] "
                            "[--profile-from K]";

int main(int argc, char **argv) {
    lwb_proc_init("e2e_probe");
    bool graph = false, new_form = false;
    int profile_from = 2;
    struct probe pb = {.layers = 4};
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--mode") && v && (!strcmp(v, "eager") || !strcmp(v, "graph"))) graph = !strcmp(v, "graph");
        else if (!strcmp(argv[i], "--form") && v && (!strcmp(v, "old") || !strcmp(v, "new"))) new_form = !strcmp(v, "new");
        else if (!strcmp(argv[i], "--layers") && v && atoi(v) >= 1 && atoi(v) <= 64) pb.layers = atoi(v);
        else if (!strcmp(argv[i], "--first-layer") && v && atoi(v) >= 0 && atoi(v) <= 1000) pb.first_layer = atoi(v);
        else if (!strcmp(argv[i], "--profile-from") && v && atoi(v) >= 0 && atoi(v) < E2E_ITERS) profile_from = atoi(v);
        else lwb_user_error("%s", usage);
        i++;
    }

    struct lwb_device dev;
    device_open(&dev, 0);
    struct lwb_jit jit;
    jit_init(&jit, dev.arch, true);
    pb.norm = rmsnorm_choose_config(E2E_HIDDEN, false);
    rmsnorm_request(&pb.norm_req, pb.norm);
    quant_request(&pb.quant_req);
    gemm_plan(&pb.gemm, "e2e", E2E_ROWS, E2E_HIDDEN, E2E_HIDDEN, 1, GEMM_EPI_BF16, false, 0, &dev);
    struct lwb_kreq *reqs[] = {&pb.norm_req, &pb.quant_req, &pb.gemm.req};
    jit_build(&jit, reqs, (int)LWB_ARRAY_LEN(reqs));
    CU_CHECK(lwb_cu.cuStreamCreate(&pb.s, CU_STREAM_NON_BLOCKING));

    const size_t elems = (size_t)E2E_ROWS * E2E_HIDDEN;
    pb.x = dev_alloc(elems * 2, "x");
    pb.h = dev_alloc(elems * 2, "h");
    pb.y = dev_alloc(elems * 2, "y");
    pb.w_norm = dev_alloc((size_t)E2E_HIDDEN * 2, "norm weight");
    pb.w_gemm = dev_alloc((size_t)E2E_HIDDEN * E2E_HIDDEN * 2, "gemm weight");
    pb.q = dev_alloc(elems, "q");
    pb.qs = dev_alloc(elems / 128 * 4, "q scales");
    pb.meta = dev_alloc(4096, "metadata");
    pb.tokens_dev = dev_alloc(4096, "tokens");
    pb.tokens_out = dev_alloc(4096, "tokens out");
    size_t ws = gemm_workspace_bytes(&pb.gemm);
    pb.ws = ws ? dev_alloc(ws, "split-K workspace") : 0;
    // Every value 1.0, the GEMM's weights 2^-10: each layer's output is 1.0 again (1024 x 2^-10).
    const unsigned ones = 0x3F803F80u, w = 0x3A803A80u; // two bf16 1.0, two bf16 2^-10
    CU_CHECK(lwb_cu.cuMemsetD32Async(pb.x, ones, elems / 2, pb.s));
    CU_CHECK(lwb_cu.cuMemsetD32Async(pb.h, ones, elems / 2, pb.s));
    CU_CHECK(lwb_cu.cuMemsetD32Async(pb.y, ones, elems / 2, pb.s));
    CU_CHECK(lwb_cu.cuMemsetD32Async(pb.w_norm, ones, E2E_HIDDEN / 2, pb.s));
    CU_CHECK(lwb_cu.cuMemsetD32Async(pb.w_gemm, w, (size_t)E2E_HIDDEN * E2E_HIDDEN / 2, pb.s));
    struct lwb_operand a = {pb.h, E2E_ROWS, E2E_HIDDEN, E2E_HIDDEN, 1, 0};
    struct lwb_operand b = {pb.w_gemm, E2E_HIDDEN, E2E_HIDDEN, E2E_HIDDEN, 1, 0};
    gemm_bind(&pb.gemm, &a, &b, pb.y, E2E_HIDDEN, 0, pb.ws);
    pb.layer_text = xcalloc((size_t)pb.layers, sizeof *pb.layer_text);

    // Warm-up, as the executor's: an eager forward, and in graph mode the graphs of the
    // generation batch sizes, captured with their layer ranges.
    forward(&pb, E2E_ROWS);
    CUgraphExec ge[6] = {0}; // by generation requests
    if (graph)
        for (int it = 0; it < E2E_ITERS; it++) {
            struct e2e_step st = e2e_schedule(it);
            if (!st.ctx && !ge[st.gen]) ge[st.gen] = capture(&pb, st.gen);
        }
    CU_CHECK(lwb_cu.cuStreamSynchronize(pb.s));

    printf("e2e_probe: %s, %s (%s), %s form, %d layers (layer_idx %d..%d), %d iterations, profiled from %d\n",
           dev.name, graph ? "graph" : "eager", graph ? "COLLECT" : "MARK", new_form ? "new" : "old", pb.layers,
           pb.first_layer, pb.first_layer + pb.layers - 1, E2E_ITERS, profile_from);
    double t0 = lwb_now();
    for (int it = 0; it < E2E_ITERS; it++) {
        if (it == profile_from) CU_CHECK(lwb_cu.cuProfilerStart());
        struct e2e_step st = e2e_schedule(it);
        iteration(&pb, it, new_form, graph && !st.ctx ? ge[st.gen] : NULL);
    }
    CU_CHECK(lwb_cu.cuProfilerStop());
    printf("%d iterations in %.3f ms\n", E2E_ITERS, 1000 * (lwb_now() - t0));

    uint16_t row[8];
    CU_CHECK(lwb_cu.cuMemcpyDtoH(row, pb.h, sizeof row));
    for (int i = 0; i < 8; i++)
        if (row[i] < 0x3F7F || row[i] > 0x3F81)
            lwb_fatal("final norm output[%d] = bf16 0x%04x, expected about 1.0 (0x3f80)", i, row[i]);
    for (int i = 0; i < 6; i++)
        if (ge[i]) CU_CHECK(lwb_cu.cuGraphExecDestroy(ge[i]));
    free(pb.layer_text);
    printf("check: ok\n");
    return 0;
}

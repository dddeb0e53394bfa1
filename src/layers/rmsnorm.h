// layers/rmsnorm.h: host side of the rmsnorm kernel family (kernels/rmsnorm.cu.in).
//
// Defines: struct rmsnorm_config, rmsnorm_choose_config (threads per row from the hidden size),
// rmsnorm_request (the JIT request), rmsnorm_enqueue, rmsnorm_bytes (the traffic it must move),
// rmsnorm_samples (representative requests for `lwb kernels --compile`).
//
// Does not: own buffers; the layer that uses a norm passes its pointers.
// Tested by test/test_kernels.c (config, request) and test/ref/rmsnorm.c (the C reference), on
// the GPU by test/gpu/check.c.
#pragma once

struct rmsnorm_config {
    int hidden;   // row length
    int threads;  // per block
    int residual; // 1: fused residual add
    int quant;    // 1: also the fp8 output (e4m3 + a scale per 128 columns)
};

// Threads per block: every thread holds at most 8 chunks of 16 bytes; among the choices that
// leave no thread idle, the one nearest 256 threads (enough warps per row to hide latency,
// while rows still spread over all multiprocessors).
static struct rmsnorm_config rmsnorm_choose_config(int hidden, bool residual) {
    const int chunks = hidden % 8 == 0 ? hidden / 8 : hidden;
    int best = 0, best_score = INT_MAX;
    for (int per = 1; per <= 8; per++) {
        int threads = LWB_CEIL_DIV(LWB_CEIL_DIV(chunks, per), 32) * 32;
        threads = LWB_MAX(32, LWB_MIN(1024, threads));
        int waste = threads * per - chunks;
        if (waste < 0) continue; // does not fit in 8 chunks per thread at 1024 threads
        int score = waste * 64 + abs(threads - 256);
        if (score < best_score) best_score = score, best = threads;
    }
    if (!best) best = 1024; // very long rows: the scalar path loops over PER_THREAD
    return (struct rmsnorm_config){.hidden = hidden, .threads = best, .residual = residual};
}

static void rmsnorm_request(struct lwb_kreq *r, struct rmsnorm_config c) {
    *r = (struct lwb_kreq){.family = "rmsnorm"};
    snprintf(r->label, sizeof r->label, "rmsnorm_h%d%s%s", c.hidden, c.residual ? "_res" : "", c.quant ? "_q8" : "");
    kreq_set(r, "HIDDEN", c.hidden);
    kreq_set(r, "THREADS", c.threads);
    kreq_set(r, "RESIDUAL", c.residual);
    kreq_set(r, "QUANT", c.quant);
    kreq_entry(r, "lwb_rmsnorm");
}

// out[i] = norm(x[i] (+ residual[i])) * weight for `rows` rows; with a residual the sum goes
// to res_out (which may be the residual itself). Strides are in elements; with the vector path
// they must keep rows 16-byte aligned.
static void rmsnorm_enqueue_q8(const struct lwb_kreq *r, struct rmsnorm_config c, CUstream s, CUdeviceptr x,
                               long long x_stride, CUdeviceptr residual, CUdeviceptr res_out, long long res_stride,
                               CUdeviceptr weight, CUdeviceptr out, long long out_stride, int rows, float eps,
                               CUdeviceptr q, CUdeviceptr qs);
static void rmsnorm_enqueue(const struct lwb_kreq *r, struct rmsnorm_config c, CUstream s,
                            CUdeviceptr x, long long x_stride, CUdeviceptr residual, CUdeviceptr res_out,
                            long long res_stride, CUdeviceptr weight, CUdeviceptr out,
                            long long out_stride, int rows, float eps) {
    rmsnorm_enqueue_q8(r, c, s, x, x_stride, residual, res_out, res_stride, weight, out, out_stride, rows, eps, 0, 0);
}
// The same, with the fp8 output q (rows x hidden e4m3) and qs (rows x hidden/128 scales) when the
// config quantises.
static void rmsnorm_enqueue_q8(const struct lwb_kreq *r, struct rmsnorm_config c, CUstream s, CUdeviceptr x,
                               long long x_stride, CUdeviceptr residual, CUdeviceptr res_out, long long res_stride,
                               CUdeviceptr weight, CUdeviceptr out, long long out_stride, int rows, float eps,
                               CUdeviceptr q, CUdeviceptr qs) {
    if (c.quant && (!q || !qs)) LWB_BUG("rmsnorm: a quantising norm needs its fp8 outputs");
    if (c.hidden % 8 == 0 &&
        (x_stride % 8 || out_stride % 8 || (c.residual && res_stride % 8) || (x | out | weight) % 16))
        LWB_BUG("rmsnorm: rows are not 16-byte aligned");
    if (rows == 0) return;
    void *args[] = {&x, &x_stride, &residual, &res_out, &res_stride, &weight, &out, &out_stride, &rows, &eps, &q, &qs};
    cu_launch(kreq_func(r, "lwb_rmsnorm"), (struct lwb_launch){{(unsigned)rows}, {(unsigned)c.threads}},
              s, args);
}

// Bytes the kernel must move: read x (and residual), write out (and residual), read the weight.
static double rmsnorm_bytes(struct rmsnorm_config c, long long rows) {
    double row = 2.0 * c.hidden;
    return rows * row * (c.residual ? 4 : 2) + row;
}

static int rmsnorm_samples(struct lwb_kreq *out, int max) {
    static const struct {
        int hidden;
        bool residual, quant;
    } s[] = {{7168, true, false}, {1536, false, false}, {512, false, false}, {4096, true, false},
             {1001, true, false}, {7168, true, true}, {1536, false, true}};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(s) && n < max; i++) {
        struct rmsnorm_config c = rmsnorm_choose_config(s[i].hidden, s[i].residual);
        c.quant = s[i].quant;
        rmsnorm_request(&out[n++], c);
    }
    return n;
}

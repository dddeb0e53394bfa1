// check.c: numerical checks and benchmarks of lwb's kernels on the GPU machine.
//
//   build/gpu_check [FAMILY...]      families: see `families` below (default: all but the variants)
//
// Each check runs a kernel through lwb's JIT on fresh random inputs (never zeros), compares it
// with its C reference (test/ref/) or, for shapes too large for the CPU, with a plain fp32 GPU
// reference, using the family's stated tolerance, and prints the first mismatches. Each
// benchmark times the kernel with events (L2 flushed before every timed launch, median of the
// repeats) and prints it next to its floor: bytes over the measured copy bandwidth, FLOPs over
// the bf16 tensor peak. The last line says how many checks failed; the exit code is nonzero
// if any did.
//
// Built here by `./build.sh gpu` (includes lwb.c like the tests), run there by test/gpu/run.sh.
#define LWB_NO_MAIN
#include "../../lwb.c"
#include <sys/wait.h>
#include "../ref/gemm.c"
#include "../ref/rmsnorm.c"
#include "../ref/mla_decode.c"
#include "../ref/mla_prefill.c"
#include "../ref/mla_rope.c"
#include "../ref/moe_route.c"
#include "../ref/gemm_fp8.c"
#include "../ref/dsa_topk.c"

#define PEAK_BF16_TFLOPS 989.4 // H100/H200 SXM dense bf16 (datasheet)
#define PEAK_FP8_TFLOPS 1978.9 // H100/H200 SXM dense fp8 (datasheet)

struct check {
    struct lwb_device dev;
    struct lwb_jit jit;
    CUstream s;
    double copy_bw;      // measured device-to-device bytes/s (read + write)
    CUdeviceptr flush;   // scratch written before each timed launch to evict L2
    size_t flush_bytes;
    int failures, checks;
    struct ref_rng rng;
    struct lwb_kreq init; // seeded device fills
};

static CUdeviceptr upload(const void *h, size_t bytes) {
    CUdeviceptr d = dev_alloc(bytes, "check input");
    CU_CHECK(lwb_cu.cuMemcpyHtoD(d, h, bytes));
    return d;
}
static void download(void *h, CUdeviceptr d, size_t bytes) { CU_CHECK(lwb_cu.cuMemcpyDtoH(h, d, bytes)); }

// Fill device memory with a byte pattern that decodes to NaN in bf16 and fp32, so unwritten
// outputs cannot pass.
static void poison(struct check *c, CUdeviceptr d, size_t bytes) {
    CU_CHECK(lwb_cu.cuMemsetD8Async(d, 0xff, bytes, c->s));
}

static uint16_t *rand_bf16(struct check *c, size_t n, float lo, float hi) {
    uint16_t *x = xmalloc(n * 2);
    ref_fill_bf16(&c->rng, x, n, lo, hi);
    return x;
}

static float *bf16_to_f32(const uint16_t *x, size_t n) {
    float *y = xmalloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = ref_bf16_to_f32(x[i]);
    return y;
}

static void verdict(struct check *c, const char *what, struct ref_diff d, double max_rel_l2) {
    bool ok = d.bad == 0 && d.nonfinite == 0 && d.rel_l2 <= max_rel_l2;
    c->checks++;
    if (!ok) c->failures++;
    printf("%s  check %-44s max_abs %.3g  rel_l2 %.3g  bad %zu  nonfinite %zu\n", ok ? "PASS" : "FAIL", what,
           d.max_abs, d.rel_l2, d.bad, d.nonfinite);
    fflush(stdout);
}

typedef void (*launch_fn)(void *arg, CUstream s);

// Time of one launch (us) from a cold L2, as lwb run's roofline times modules (time_cold_us).
static double time_us(struct check *c, launch_fn fn, void *arg, int reps) {
    return time_cold_us(c->s, c->flush, c->flush_bytes, fn, arg, reps, 5);
}

static void bench_line_peak(struct check *c, const char *what, double us, double bytes, double flops, double peak) {
    double t_mem = bytes / c->copy_bw * 1e6, t_math = flops / (peak * 1e12) * 1e6;
    double floor_us = LWB_MAX(t_mem, t_math);
    printf("bench %-46s %9.1f us  %7.1f TFLOP/s  %6.2f TB/s  floor %8.1f us (%s)  %5.1f%% of floor\n",
           what, us, flops / us * 1e-6, bytes / us * 1e-6, floor_us, t_mem >= t_math ? "memory" : "math",
           100.0 * floor_us / us);
    fflush(stdout);
}
static void bench_line(struct check *c, const char *what, double us, double bytes, double flops) {
    bench_line_peak(c, what, us, bytes, flops, PEAK_BF16_TFLOPS);
}

// ---------------------------------------------------------------------------------------------
// copy: the bandwidth every memory floor divides by

struct copy_arg {
    CUdeviceptr a, b;
    size_t bytes;
};
static void copy_launch(void *p, CUstream s) {
    struct copy_arg *a = p;
    CU_CHECK(lwb_cu.cuMemcpyDtoDAsync(a->b, a->a, a->bytes, s));
}
static void check_copy(struct check *c) {
    struct copy_arg a = {.bytes = (size_t)1 << 31};
    a.a = dev_alloc(a.bytes, "copy source");
    a.b = dev_alloc(a.bytes, "copy destination");
    CU_CHECK(lwb_cu.cuMemsetD8Async(a.a, 1, a.bytes, c->s));
    double us = time_us(c, copy_launch, &a, 10);
    c->copy_bw = 2.0 * a.bytes / (us * 1e-6);
    printf("bench %-46s %9.1f us  %6.2f TB/s (bytes read + written)\n", "copy 2 GiB device to device", us,
           c->copy_bw * 1e-12);
    dev_free(a.a, a.bytes);
    dev_free(a.b, a.bytes);
}

// ---------------------------------------------------------------------------------------------
// rmsnorm

struct rms_arg {
    struct lwb_kreq *r;
    struct rmsnorm_config cfg;
    CUdeviceptr x, res, w, y;
    long long xs, rs, ys;
    int rows;
};
static void rms_launch(void *p, CUstream s) {
    struct rms_arg *a = p;
    rmsnorm_enqueue(a->r, a->cfg, s, a->x, a->xs, a->res, a->res, a->rs, a->w, a->y, a->ys, a->rows, 1e-6f);
}

static void check_rmsnorm_case(struct check *c, int hidden, bool residual, int rows, int xs, int ys) {
    struct rmsnorm_config cfg = rmsnorm_choose_config(hidden, residual);
    struct lwb_kreq req;
    rmsnorm_request(&req, cfg);
    struct lwb_kreq *rp = &req;
    jit_build(&c->jit, &rp, 1);
    size_t nx = (size_t)rows * xs, ny = (size_t)rows * ys;
    uint16_t *x = rand_bf16(c, nx, -2, 2), *res = rand_bf16(c, nx, -2, 2), *w = rand_bf16(c, hidden, 0.5f, 1.5f);
    struct rms_arg a = {&req, cfg, upload(x, nx * 2), residual ? upload(res, nx * 2) : 0, upload(w, hidden * 2),
                        dev_alloc(ny * 2, "y"), xs, xs, ys, rows};
    poison(c, a.y, ny * 2);
    rms_launch(&a, c->s);
    stream_wait(c->s, 60, "check");
    uint16_t *y = xmalloc(ny * 2), *res_got = xmalloc(nx * 2);
    download(y, a.y, ny * 2);
    if (residual) download(res_got, a.res, nx * 2);
    float *want = xcalloc(ny, sizeof *want);
    ref_rmsnorm(x, xs, residual ? res : NULL, xs, w, want, ys, rows, hidden, 1e-6f);
    // Compare only the columns the kernel owns.
    float *g = xcalloc((size_t)rows * hidden, 4), *e = xcalloc((size_t)rows * hidden, 4);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < hidden; i++) {
            g[(size_t)r * hidden + i] = ref_bf16_to_f32(y[(size_t)r * ys + i]);
            e[(size_t)r * hidden + i] = want[(size_t)r * ys + i];
        }
    char what[128];
    snprintf(what, sizeof what, "rmsnorm h=%d rows=%d%s strides %d/%d", hidden, rows, residual ? " +res" : "", xs, ys);
    verdict(c, what, ref_compare("y", g, e, (size_t)rows * hidden, RMSNORM_ATOL, RMSNORM_RTOL, 1), 5e-3);
    if (residual) {
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < hidden; i++) {
                g[(size_t)r * hidden + i] = ref_bf16_to_f32(res_got[(size_t)r * xs + i]);
                e[(size_t)r * hidden + i] = ref_bf16_to_f32(res[(size_t)r * xs + i]);
            }
        snprintf(what, sizeof what, "rmsnorm h=%d rows=%d residual sum", hidden, rows);
        verdict(c, what, ref_compare("residual", g, e, (size_t)rows * hidden, 0, 0, 1), 0);
    }
    free(x), free(res), free(w), free(y), free(res_got), free(want), free(g), free(e);
    dev_free(a.x, nx * 2), dev_free(a.res, residual ? nx * 2 : 0), dev_free(a.w, hidden * 2), dev_free(a.y, ny * 2);
}

static void check_rmsnorm(struct check *c) {
    check_rmsnorm_case(c, 7168, true, 7, 7168, 7168);
    check_rmsnorm_case(c, 1536, false, 33, 2112, 1536); // q_a inside the fused a-projection
    check_rmsnorm_case(c, 512, false, 33, 2112, 576);   // kv_a: first 512 of each 576-wide row
    check_rmsnorm_case(c, 1001, true, 5, 1001, 1001);   // scalar path
    check_rmsnorm_case(c, 4096, true, 130, 4096, 4096);

    const int hidden = 7168, rows = 8192;
    struct rmsnorm_config cfg = rmsnorm_choose_config(hidden, true);
    struct lwb_kreq req;
    rmsnorm_request(&req, cfg);
    struct lwb_kreq *rp = &req;
    jit_build(&c->jit, &rp, 1);
    size_t n = (size_t)rows * hidden;
    uint16_t *x = rand_bf16(c, n, -2, 2), *w = rand_bf16(c, hidden, 0.5f, 1.5f);
    struct rms_arg a = {&req, cfg, upload(x, n * 2), upload(x, n * 2), upload(w, hidden * 2),
                        dev_alloc(n * 2, "y"), hidden, hidden, hidden, rows};
    double us = time_us(c, rms_launch, &a, 20);
    char what[128];
    snprintf(what, sizeof what, "rmsnorm+residual h=%d rows=%d (%d thr)", hidden, rows, cfg.threads);
    bench_line(c, what, us, rmsnorm_bytes(cfg, rows), 0);
    double frac = rmsnorm_bytes(cfg, rows) / (us * 1e-6) / c->copy_bw;
    printf("%s  rmsnorm bandwidth %.1f%% of copy bandwidth (target >= 80%%)\n", frac >= 0.8 ? "PASS" : "FAIL",
           100 * frac);
    c->checks++;
    if (frac < 0.8) c->failures++;
    free(x), free(w);
    dev_free(a.x, n * 2), dev_free(a.res, n * 2), dev_free(a.w, hidden * 2), dev_free(a.y, n * 2);
}

// ---------------------------------------------------------------------------------------------
// gemm

// Plain fp32 reference on the GPU for shapes too large for the CPU (shared-memory tiles of 16).
static const char *ref_gemm_text =
    "extern \"C\" __global__ void ref_gemm(const bf16 *a, i64 lda, const bf16 *b, i64 ldb, int m, int n,\n"
    "                                      int k, float *out) {\n"
    "    __shared__ float ta[16][17], tb[16][17];\n"
    "    const int r = blockIdx.y * 16 + threadIdx.y, col = blockIdx.x * 16 + threadIdx.x;\n"
    "    float s = 0.f;\n"
    "    for (int k0 = 0; k0 < k; k0 += 16) {\n"
    "        const int ra = blockIdx.y * 16 + threadIdx.y, rb = blockIdx.x * 16 + threadIdx.y;\n"
    "        ta[threadIdx.y][threadIdx.x] = ra < m && k0 + threadIdx.x < k ? lwb_f32(a[ra * lda + k0 + threadIdx.x]) : 0.f;\n"
    "        tb[threadIdx.y][threadIdx.x] = rb < n && k0 + threadIdx.x < k ? lwb_f32(b[rb * ldb + k0 + threadIdx.x]) : 0.f;\n"
    "        __syncthreads();\n"
    "        for (int i = 0; i < 16; i++) s += ta[threadIdx.y][i] * tb[threadIdx.x][i];\n"
    "        __syncthreads();\n"
    "    }\n"
    "    if (r < m && col < n) out[(i64)r * n + col] = s;\n"
    "}\n";

static struct lwb_kreq g_ref_req;

static void ref_gemm_gpu(struct check *c, CUdeviceptr a, long long lda, CUdeviceptr b, long long ldb, int m, int n,
                         int k, CUdeviceptr out) {
    if (!g_ref_req.module) {
        g_ref_req = (struct lwb_kreq){.text = ref_gemm_text};
        snprintf(g_ref_req.label, sizeof g_ref_req.label, "ref_gemm");
        kreq_entry(&g_ref_req, "ref_gemm");
        struct lwb_kreq *p = &g_ref_req;
        jit_build(&c->jit, &p, 1);
    }
    void *args[] = {&a, &lda, &b, &ldb, &m, &n, &k, &out};
    cu_launch(kreq_func(&g_ref_req, "ref_gemm"),
              (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(n, 16), (unsigned)LWB_CEIL_DIV(m, 16)}, {16, 16}}, c->s, args);
}

struct gemm_arg {
    struct lwb_gemm *g;
};
static void gemm_launch(void *p, CUstream s) { gemm_enqueue(((struct gemm_arg *)p)->g, s); }

// One product checked against the CPU reference. A is `batch` slices of M x K inside rows of
// `lda` elements (slice z at column z * K... as attention heads are laid out), B is `batch`
// contiguous N x K matrices; grouped: `groups` experts with `rows_of[e]` rows each.
static void check_gemm_case(struct check *c, const char *name, int m, int n, int k, int batch, int lda, int epi,
                            int groups, const int *rows_of) {
    bool grouped = groups > 0;
    int zb = grouped ? groups : batch; // B's z count
    long long total_rows = m;
    if (grouped) {
        total_rows = 0;
        for (int e = 0; e < groups; e++) total_rows += rows_of[e];
    }
    struct lwb_gemm g;
    gemm_plan(&g, name, total_rows, n, k, grouped ? 1 : batch, epi, grouped,
              grouped ? (double)total_rows / groups : 0, &c->dev);
    jit_build(&c->jit, (struct lwb_kreq *[]){&g.req}, 1);
    size_t na = (size_t)total_rows * lda, nb = (size_t)zb * n * k;
    uint16_t *a = rand_bf16(c, na, -1, 1), *b = rand_bf16(c, nb, -1, 1);
    float scale = 1.0f / sqrtf((float)k);
    for (size_t i = 0; i < nb; i++) b[i] = ref_f32_to_bf16(ref_bf16_to_f32(b[i]) * scale * 2.0f);
    int nout = epi == GEMM_EPI_SWIGLU ? n / 2 : n;
    size_t esz = epi == GEMM_EPI_F32 ? 4 : 2;
    size_t nc = (size_t)total_rows * batch * nout;
    CUdeviceptr da = upload(a, na * 2), db = upload(b, nb * 2), dc = dev_alloc(nc * esz, "C"), ws = 0;
    size_t wsb = gemm_workspace_bytes(&g);
    if (wsb) ws = dev_alloc(wsb, "ws");
    struct lwb_operand A = {da, grouped ? total_rows : m, k, lda, grouped ? 1 : batch, k};
    struct lwb_operand B = {db, n, k, k, zb, (long long)n * k};
    // C: batch slices side by side in each row, like per-head outputs.
    gemm_bind(&g, &A, &B, dc, (long long)nout * batch, nout, ws);
    CUdeviceptr dt = 0, dn = 0;
    if (grouped) {
        int tiles[4 * 512], nt = 0;
        long long row = 0;
        for (int e = 0; e < groups; e++) {
            for (int r0 = 0; r0 < rows_of[e]; r0 += gemm_tile_rows(&g)) {
                tiles[4 * nt] = e, tiles[4 * nt + 1] = (int)(row + r0), tiles[4 * nt + 2] = (int)(row + rows_of[e]);
                tiles[4 * nt + 3] = 0;
                nt++;
            }
            row += rows_of[e];
        }
        dt = upload(tiles, sizeof tiles);
        dn = upload(&nt, sizeof nt);
        gemm_bind_tiles(&g, dt, dn, nt + 3); // extra grid rows must exit cleanly
    }
    poison(c, dc, nc * esz);
    gemm_enqueue(&g, c->s);
    stream_wait(c->s, 60, "check");
    void *got_raw = xmalloc(nc * esz);
    download(got_raw, dc, nc * esz);
    float *got = xmalloc(nc * 4), *want = xcalloc(nc, 4);
    for (size_t i = 0; i < nc; i++)
        got[i] = esz == 4 ? ((float *)got_raw)[i] : ref_bf16_to_f32(((uint16_t *)got_raw)[i]);
    float *tmp = xmalloc((size_t)total_rows * nout * 4);
    if (grouped) {
        long long row = 0;
        for (int e = 0; e < groups; e++) {
            ref_gemm(a + row * lda, lda, b + (size_t)e * n * k, k, rows_of[e], n, k, epi, tmp);
            memcpy(want + row * nout, tmp, (size_t)rows_of[e] * nout * 4);
            row += rows_of[e];
        }
    } else {
        for (int z = 0; z < batch; z++) {
            ref_gemm(a + (size_t)z * k, lda, b + (size_t)z * n * k, k, m, n, k, epi, tmp);
            for (int r = 0; r < m; r++) memcpy(want + ((size_t)r * batch + z) * nout, tmp + (size_t)r * nout, nout * 4);
        }
    }
    char what[160];
    snprintf(what, sizeof what, "gemm %s m=%lld n=%d k=%d x%d e%d bm%d bn%d split%d%s", name, total_rows, n, k,
             batch, epi, g.cfg.bm, g.cfg.bn, g.cfg.splitk, g.tma_store ? " tma" : "");
    verdict(c, what, ref_compare("C", got, want, nc, GEMM_ATOL, GEMM_RTOL, 1), 1e-2);
    free(a), free(b), free(got_raw), free(got), free(want), free(tmp);
    dev_free(da, na * 2), dev_free(db, nb * 2), dev_free(dc, nc * esz);
    if (ws) dev_free(ws, wsb);
    if (dt) dev_free(dt, 4 * 512 * 4), dev_free(dn, 4);
}

// A large product checked against the fp32 GPU reference, then timed.
static void check_gemm_big(struct check *c, const char *name, long long m, int n, int k, int epi, bool verify) {
    struct lwb_gemm g;
    gemm_plan(&g, name, m, n, k, 1, epi, false, 0, &c->dev);
    jit_build(&c->jit, (struct lwb_kreq *[]){&g.req}, 1);
    size_t na = (size_t)m * k, nb = (size_t)n * k;
    uint16_t *a = rand_bf16(c, na, -1, 1), *b = rand_bf16(c, nb, -1.0f / sqrtf(k) * 2, 1.0f / sqrtf(k) * 2);
    int nout = epi == GEMM_EPI_SWIGLU ? n / 2 : n;
    size_t esz = epi == GEMM_EPI_F32 ? 4 : 2, nc = (size_t)m * nout;
    CUdeviceptr da = upload(a, na * 2), db = upload(b, nb * 2), dc = dev_alloc(nc * esz, "C"), ws = 0;
    size_t wsb = gemm_workspace_bytes(&g);
    if (wsb) ws = dev_alloc(wsb, "ws");
    struct lwb_operand A = {da, m, k, k, 1, 0}, B = {db, n, k, k, 1, 0};
    gemm_bind(&g, &A, &B, dc, nout, 0, ws);
    char what[160];
    snprintf(what, sizeof what, "gemm %s %lldx%dx%d bm%d bn%d s%d split%d%s", name, m, n, k, g.cfg.bm, g.cfg.bn,
             g.cfg.stages, g.cfg.splitk, g.cfg.splitk > 1 ? "+reduce" : "");
    if (verify && epi != GEMM_EPI_SWIGLU) {
        poison(c, dc, nc * esz);
        gemm_enqueue(&g, c->s);
        CUdeviceptr dr = dev_alloc((size_t)m * n * 4, "ref");
        ref_gemm_gpu(c, da, k, db, k, (int)m, n, k, dr);
        stream_wait(c->s, 60, "check");
        float *want = xmalloc((size_t)m * n * 4), *got = xmalloc(nc * 4);
        void *raw = xmalloc(nc * esz);
        download(want, dr, (size_t)m * n * 4);
        download(raw, dc, nc * esz);
        for (size_t i = 0; i < nc; i++) got[i] = esz == 4 ? ((float *)raw)[i] : ref_bf16_to_f32(((uint16_t *)raw)[i]);
        verdict(c, what, ref_compare("C", got, want, nc, GEMM_ATOL, GEMM_RTOL, 1), 1e-2);
        free(want), free(got), free(raw);
        dev_free(dr, (size_t)m * n * 4);
    }
    struct gemm_arg ga = {&g};
    double us = time_us(c, gemm_launch, &ga, 15);
    bench_line(c, what, us, gemm_bytes((double)m, n, k, 1, 1, epi), gemm_flops((double)m, n, k, 1));
    free(a), free(b);
    dev_free(da, na * 2), dev_free(db, nb * 2), dev_free(dc, nc * esz);
    if (ws) dev_free(ws, wsb);
}

// The router's form of an fp32 product: split-K partials kept as the output (no reduce kernel),
// summed here in slab order as the top-k sums them, against the fp32 GPU reference.
static void check_gemm_partials(struct check *c, const char *name, long long m, int n, int k) {
    struct lwb_gemm g;
    gemm_plan(&g, name, m, n, k, 1, GEMM_EPI_F32, false, 0, &c->dev);
    gemm_keep_partials(&g);
    jit_build(&c->jit, (struct lwb_kreq *[]){&g.req}, 1);
    size_t na = (size_t)m * k, nb = (size_t)n * k, nc = (size_t)m * n, bytes = gemm_output_bytes(&g);
    uint16_t *a = rand_bf16(c, na, -1, 1), *b = rand_bf16(c, nb, -2.0f / sqrtf(k), 2.0f / sqrtf(k));
    CUdeviceptr da = upload(a, na * 2), db = upload(b, nb * 2), dc = dev_alloc(bytes, "partials");
    CUdeviceptr dr = dev_alloc(nc * 4, "ref");
    struct lwb_operand A = {da, m, k, k, 1, 0}, B = {db, n, k, k, 1, 0};
    gemm_bind(&g, &A, &B, dc, n, 0, 0);
    poison(c, dc, bytes);
    gemm_enqueue(&g, c->s);
    ref_gemm_gpu(c, da, k, db, k, (int)m, n, k, dr);
    stream_wait(c->s, 60, "check");
    float *slabs = xmalloc(bytes), *want = xmalloc(nc * 4), *got = xcalloc(nc, 4);
    download(slabs, dc, bytes);
    download(want, dr, nc * 4);
    for (int sp = 0; sp < g.cfg.splitk; sp++)
        for (size_t i = 0; i < nc; i++) got[i] += slabs[sp * nc + i];
    char what[160];
    snprintf(what, sizeof what, "gemm %s %lldx%dx%d bm%d bn%d %d kept partials", name, m, n, k, g.cfg.bm, g.cfg.bn,
             g.cfg.splitk);
    verdict(c, what, ref_compare("C", got, want, nc, GEMM_ATOL, GEMM_RTOL, 1), 1e-2);
    free(a), free(b), free(slabs), free(want), free(got);
    dev_free(da, na * 2), dev_free(db, nb * 2), dev_free(dc, bytes), dev_free(dr, nc * 4);
}

// Grouped expert products at DeepSeek shapes: `rows` tokens per expert, all experts active.
static void bench_grouped(struct check *c, const char *name, int experts, int rows, int n, int k, int epi) {
    long long total = (long long)experts * rows;
    struct lwb_gemm g;
    gemm_plan(&g, name, total, n, k, 1, epi, true, rows, &c->dev);
    jit_build(&c->jit, (struct lwb_kreq *[]){&g.req}, 1);
    size_t na = (size_t)total * k, nb = (size_t)experts * n * k;
    CUdeviceptr da = dev_alloc(na * 2, "A"), db = dev_alloc(nb * 2, "B");
    init_fill_bf16(&c->init, c->s, da, (long long)na, 1, -1.f, 1.f);
    init_fill_bf16(&c->init, c->s, db, (long long)nb, 2, -2.f / sqrtf((float)k), 2.f / sqrtf((float)k));
    int nout = epi == GEMM_EPI_SWIGLU ? n / 2 : n;
    CUdeviceptr dc = dev_alloc((size_t)total * nout * 2, "C");
    struct lwb_operand A = {da, total, k, k, 1, 0}, B = {db, n, k, k, experts, (long long)n * k};
    gemm_bind(&g, &A, &B, dc, nout, 0, 0);
    int ntiles = 0, *tiles = xcalloc((size_t)experts * LWB_CEIL_DIV(rows, gemm_tile_rows(&g)) * 4 + 4, sizeof *tiles);
    for (int e = 0; e < experts; e++)
        for (int r0 = 0; r0 < rows; r0 += gemm_tile_rows(&g)) {
            tiles[4 * ntiles] = e, tiles[4 * ntiles + 1] = e * rows + r0, tiles[4 * ntiles + 2] = (e + 1) * rows;
            ntiles++;
        }
    CUdeviceptr dt = upload(tiles, (size_t)ntiles * 16), dn = upload(&ntiles, 4);
    gemm_bind_tiles(&g, dt, dn, ntiles);
    struct gemm_arg ga = {&g};
    double us = time_us(c, gemm_launch, &ga, 10);
    char what[160];
    snprintf(what, sizeof what, "grouped %s %dx%d rows, %dx%d bm%d bn%d s%d", name, experts, rows, n, k, g.cfg.bm,
             g.cfg.bn, g.cfg.stages);
    bench_line(c, what, us, gemm_bytes((double)total, n, k, 1, experts, epi), gemm_flops((double)total, n, k, 1));
    free(tiles);
    dev_free(da, na * 2), dev_free(db, nb * 2), dev_free(dc, (size_t)total * nout * 2), dev_free(dt, 0), dev_free(dn, 4);
}

static void check_gemm(struct check *c) {
    check_gemm_case(c, "odd", 77, 200, 448, 1, 448, GEMM_EPI_BF16, 0, NULL);
    check_gemm_case(c, "rows64", 37, 136, 320, 1, 320, GEMM_EPI_BF16, 0, NULL);
    check_gemm_case(c, "heads", 50, 136, 128, 3, 192 * 3, GEMM_EPI_BF16, 0, NULL); // strided slices
    check_gemm_case(c, "f32split", 130, 256, 7168, 1, 7168, GEMM_EPI_F32, 0, NULL);
    check_gemm_case(c, "swiglu", 300, 512, 1024, 1, 1024, GEMM_EPI_SWIGLU, 0, NULL);
    check_gemm_case(c, "relu2", 300, 1856, 2688, 1, 2688, GEMM_EPI_RELU2, 0, NULL);
    static const int rows_a[] = {0, 3, 70, 130, 1};
    check_gemm_case(c, "grouped", 0, 256, 512, 1, 512, GEMM_EPI_SWIGLU, 5, rows_a);
    check_gemm_case(c, "grouped", 0, 192, 256, 1, 256, GEMM_EPI_BF16, 5, rows_a);
    static const int rows_b[] = {300, 260, 0, 129};
    check_gemm_case(c, "groupedbig", 0, 512, 512, 1, 512, GEMM_EPI_BF16, 4, rows_b);

    // DeepSeek-V3 products: generation (128 tokens) and context (8193 tokens).
    check_gemm_big(c, "fused_a", 128, 2112, 7168, GEMM_EPI_BF16, true);
    check_gemm_big(c, "q_b", 128, 24576, 1536, GEMM_EPI_BF16, true);
    check_gemm_big(c, "o_proj", 128, 7168, 16384, GEMM_EPI_BF16, true);
    check_gemm_big(c, "gate", 128, 256, 7168, GEMM_EPI_F32, true);
    check_gemm_partials(c, "gate", 128, 256, 7168);
    check_gemm_partials(c, "gate", 7, 256, 7168);
    check_gemm_big(c, "shared13", 128, 4096, 7168, GEMM_EPI_SWIGLU, false);
    check_gemm_big(c, "shared2", 128, 7168, 2048, GEMM_EPI_BF16, true);
    check_gemm_big(c, "fused_a", 8193, 2112, 7168, GEMM_EPI_BF16, true);
    check_gemm_big(c, "q_b", 8193, 24576, 1536, GEMM_EPI_BF16, false);
    check_gemm_big(c, "kv_b", 8193, 32768, 512, GEMM_EPI_BF16, false);
    check_gemm_big(c, "o_proj", 8193, 7168, 16384, GEMM_EPI_BF16, false);
    check_gemm_big(c, "dense13", 8192, 36864, 7168, GEMM_EPI_SWIGLU, false);
    check_gemm_big(c, "square", 8192, 8192, 8192, GEMM_EPI_BF16, false);
    bench_grouped(c, "experts13", 256, 4, 4096, 7168, GEMM_EPI_SWIGLU);
    bench_grouped(c, "experts2", 256, 4, 7168, 2048, GEMM_EPI_BF16);
    bench_grouped(c, "experts13", 256, 256, 4096, 7168, GEMM_EPI_SWIGLU);
    bench_grouped(c, "experts2", 256, 256, 7168, 2048, GEMM_EPI_BF16);
}

struct fill_arg {
    struct check *c;
    CUdeviceptr p;
};
static void fill_launch(void *arg, CUstream s) {
    struct fill_arg *a = arg;
    init_fill_bf16(&a->c->init, s, a->p, 1, 7, -1.f, 1.f);
}

// Configuration variants of compute-bound products (tile, cluster, TMA-store epilogue), timed
// side by side to pick the defaults.
static void bench_gemm_variant(struct check *c, const char *name, long long m, int n, int k, int epi, bool grouped,
                               int rows, struct gemm_config cfg, int tma_store) {
    int experts = grouped ? (int)(m / rows) : 1;
    struct lwb_gemm g;
    gemm_plan_config(&g, name, m, n, k, 1, epi, grouped, cfg);
    if (epi == GEMM_EPI_F32) gemm_keep_partials(&g); // split fp32 products leave partials, as the router's
    jit_build(&c->jit, (struct lwb_kreq *[]){&g.req}, 1);
    size_t na = (size_t)m * k, nb = (size_t)experts * n * k, nc = gemm_output_bytes(&g);
    int nout = epi == GEMM_EPI_SWIGLU ? n / 2 : n;
    CUdeviceptr da = dev_alloc(na * 2, "A"), db = dev_alloc(nb * 2, "B"), dc = dev_alloc(nc, "C");
    init_fill_bf16(&c->init, c->s, da, (long long)na, 51, -1.f, 1.f);
    init_fill_bf16(&c->init, c->s, db, (long long)nb, 52, -2.f / sqrtf((float)k), 2.f / sqrtf((float)k));
    struct lwb_operand A = {da, m, k, k, 1, 0}, B = {db, n, k, k, experts, (long long)n * k};
    size_t wsb = gemm_workspace_bytes(&g);
    CUdeviceptr ws = wsb ? dev_alloc(wsb, "ws") : 0;
    gemm_bind(&g, &A, &B, dc, nout, 0, ws);
    if (!tma_store) g.tma_store = 0;
    CUdeviceptr dt = 0, dn = 0;
    if (grouped) {
        int tr = gemm_tile_rows(&g), nt = 0, *tiles = xcalloc((size_t)experts * LWB_CEIL_DIV(rows, tr) * 4, sizeof(int));
        for (int e = 0; e < experts; e++)
            for (int r0 = 0; r0 < rows; r0 += tr, nt++)
                tiles[4 * nt] = e, tiles[4 * nt + 1] = e * rows + r0, tiles[4 * nt + 2] = (e + 1) * rows;
        dt = upload(tiles, (size_t)nt * 16), dn = upload(&nt, 4);
        gemm_bind_tiles(&g, dt, dn, nt);
        free(tiles);
    }
    struct gemm_arg ga = {&g};
    double us = time_us(c, gemm_launch, &ga, 10);
    char what[160];
    snprintf(what, sizeof what, "%s %lldx%dx%d bm%d bn%d s%d x%d %s", name, m, n, k, cfg.bm, cfg.bn, cfg.stages,
             cfg.splitk, g.tma_store ? "tma-store" : "direct");
    bench_line(c, what, us, gemm_bytes((double)m, n, k, 1, experts, epi), gemm_flops((double)m, n, k, 1));
    dev_free(da, na * 2), dev_free(db, nb * 2), dev_free(dc, nc);
    if (ws) dev_free(ws, 0);
    if (dt) dev_free(dt, 0), dev_free(dn, 0);
}

static void check_gemm_variants(struct check *c) {
    // Compute-bound shapes: pipeline depth of 128 x 256 tiles, and 128 x 128 for comparison.
    struct gemm_config v[] = {{128, 256, 2, 1, 1}, {128, 256, 3, 1, 1}, {128, 128, 4, 1, 1}, {128, 128, 3, 1, 1}};
    for (size_t i = 0; i < LWB_ARRAY_LEN(v); i++) {
        bench_gemm_variant(c, "square", 8192, 8192, 8192, GEMM_EPI_BF16, false, 0, v[i], 1);
        bench_gemm_variant(c, "q_b", 8193, 24576, 1536, GEMM_EPI_BF16, false, 0, v[i], 1);
        bench_gemm_variant(c, "kv_b", 8193, 32768, 512, GEMM_EPI_BF16, false, 0, v[i], 1);
        bench_gemm_variant(c, "o_proj", 8193, 7168, 16384, GEMM_EPI_BF16, false, 0, v[i], 1);
        bench_gemm_variant(c, "experts13", 256 * 256, 4096, 7168, GEMM_EPI_SWIGLU, true, 256, v[i], 1);
        bench_gemm_variant(c, "experts2", 256 * 256, 7168, 2048, GEMM_EPI_BF16, true, 256, v[i], 1);
    }
    // Memory-bound decode shapes: tile width and depth.
    struct gemm_config d[] = {{128, 64, 6, 1, 1}, {128, 128, 4, 1, 1}, {64, 128, 4, 1, 2}, {64, 64, 6, 1, 2}};
    for (size_t i = 0; i < LWB_ARRAY_LEN(d); i++) {
        bench_gemm_variant(c, "q_b", 128, 24576, 1536, GEMM_EPI_BF16, false, 0, d[i], 1);
        bench_gemm_variant(c, "o_proj", 128, 7168, 16384, GEMM_EPI_BF16, false, 0, d[i], 1);
        bench_gemm_variant(c, "shared13", 128, 4096, 7168, GEMM_EPI_SWIGLU, false, 0, d[i], 1);
    }
}

// The decode router (fp32 partials for the top-k) under several tilings, the same kernel on a
// short K (its fixed cost), and what an almost empty launch costs here.
static void check_router_variants(struct check *c) {
    struct gemm_config r[] = {{128, 64, 6, 16, 1}, {64, 64, 6, 16, 2}, {64, 32, 6, 16, 2}, {64, 64, 4, 28, 2}};
    for (size_t i = 0; i < LWB_ARRAY_LEN(r); i++)
        bench_gemm_variant(c, "gate", 128, 256, 7168, GEMM_EPI_F32, false, 0, r[i], 1);
    bench_gemm_variant(c, "gate_k448", 128, 256, 448, GEMM_EPI_F32, false, 0, (struct gemm_config){64, 64, 6, 1, 2}, 1);
    bench_gemm_variant(c, "gate_k64", 128, 256, 64, GEMM_EPI_F32, false, 0, (struct gemm_config){64, 64, 2, 1, 2}, 1);
    CUdeviceptr one = dev_alloc(2, "one element");
    struct fill_arg fa = {c, one};
    bench_line(c, "fill of one element (launch cost)", time_us(c, fill_launch, &fa, 20), 2, 0);
    dev_free(one, 2);
}

// ---------------------------------------------------------------------------------------------
// mla_decode

// A paged cache of `blocks` blocks with a shuffled block table, so pages are not in order.
struct paged {
    int batch, page, max_blocks, blocks;
    int *table;   // (batch, max_blocks)
    int *kv_len;  // (batch)
};

static void paged_make(struct check *c, struct paged *p, int batch, int page, const int *kv_len) {
    p->batch = batch, p->page = page;
    int maxlen = 0;
    for (int b = 0; b < batch; b++) maxlen = LWB_MAX(maxlen, kv_len[b]);
    p->max_blocks = LWB_CEIL_DIV(maxlen, page) + 1;
    p->blocks = batch * p->max_blocks;
    p->table = xmalloc(sizeof(int) * (size_t)p->blocks);
    p->kv_len = xmalloc(sizeof(int) * (size_t)batch);
    memcpy(p->kv_len, kv_len, sizeof(int) * (size_t)batch);
    for (int i = 0; i < p->blocks; i++) p->table[i] = i;
    for (int i = p->blocks - 1; i > 0; i--) { // Fisher-Yates
        int j = (int)(ref_next(&c->rng) % (uint64_t)(i + 1)), t = p->table[i];
        p->table[i] = p->table[j], p->table[j] = t;
    }
}

struct mla_arg {
    struct lwb_mla_decode *d;
    CUdeviceptr table, lens, out, ws;
    int max_blocks;
    float scale;
};
static void mla_launch(void *p, CUstream s) {
    struct mla_arg *a = p;
    mla_decode_enqueue(a->d, s, a->table, a->max_blocks, a->lens, a->scale, a->out, a->ws);
}

static void check_mla_decode_case(struct check *c, int batch, int qlen, int heads, int page, const int *kv_len,
                                  int force_splits, bool verify) {
    struct paged pg;
    paged_make(c, &pg, batch, page, kv_len);
    int tokens = batch * qlen, maxlen = 0;
    for (int b = 0; b < batch; b++) maxlen = LWB_MAX(maxlen, kv_len[b]);
    struct lwb_mla_decode d = {.cfg = mla_decode_choose(heads, page, qlen, batch, maxlen, c->dev.sm_count)};
    if (force_splits) {
        d.cfg.split_len = LWB_CEIL_DIV(LWB_CEIL_DIV(maxlen, force_splits), 64) * 64;
        d.cfg.num_splits = LWB_CEIL_DIV(maxlen, d.cfg.split_len);
    }
    mla_decode_request(&d.req, d.cfg);
    jit_build(&c->jit, (struct lwb_kreq *[]){&d.req}, 1);
    size_t nq = (size_t)tokens * heads * 576, nc = (size_t)pg.blocks * page * 576, no = (size_t)tokens * heads * 512;
    CUdeviceptr dq = dev_alloc(nq * 2, "q"), dc = dev_alloc(nc * 2, "cache"), dout = dev_alloc(no * 2, "out");
    // Queries and cache like a trained model's: O(1) latents, scores of a few units.
    init_fill_bf16(&c->init, c->s, dq, (long long)nq, 11 + (unsigned)batch, -0.25f, 0.25f);
    init_fill_bf16(&c->init, c->s, dc, (long long)nc, 12 + (unsigned)batch, -1.f, 1.f);
    CUdeviceptr dt = upload(pg.table, sizeof(int) * (size_t)pg.blocks), dl = upload(kv_len, sizeof(int) * (size_t)batch);
    size_t wsb = mla_decode_workspace(&d.cfg, tokens);
    CUdeviceptr ws = wsb ? dev_alloc(wsb, "ws") : 0;
    mla_decode_bind(&d, dq, tokens, dc, pg.blocks);
    float scale = 0.1352f;
    struct mla_arg a = {&d, dt, dl, dout, ws, pg.max_blocks, scale};
    char what[160];
    snprintf(what, sizeof what, "mla_decode b=%d q=%d h=%d page=%d kv<=%d splits=%d", batch, qlen, heads, page, maxlen,
             d.cfg.num_splits);
    if (verify) {
        poison(c, dout, no * 2);
        mla_launch(&a, c->s);
        stream_wait(c->s, 60, "mla_decode");
        uint16_t *q = xmalloc(nq * 2), *cache = xmalloc(nc * 2), *got16 = xmalloc(no * 2);
        download(q, dq, nq * 2), download(cache, dc, nc * 2), download(got16, dout, no * 2);
        float *got = bf16_to_f32(got16, no), *want = xmalloc(no * 4);
        ref_mla_decode(q, cache, pg.table, pg.max_blocks, kv_len, batch, qlen, heads, page, scale, want);
        verdict(c, what, ref_compare("o", got, want, no, MLA_DECODE_ATOL, MLA_DECODE_RTOL, 1), 1e-2);
        free(q), free(cache), free(got16), free(got), free(want);
    } else {
        double us = time_us(c, mla_launch, &a, 10), pairs = 0, cached = 0;
        for (int b = 0; b < batch; b++) {
            cached += kv_len[b];
            for (int i = 0; i < qlen; i++) pairs += kv_len[b] - (qlen - 1 - i);
        }
        bench_line(c, what, us, mla_decode_bytes(heads, tokens, cached), mla_decode_flops(heads, pairs));
    }
    dev_free(dq, nq * 2), dev_free(dc, nc * 2), dev_free(dout, no * 2), dev_free(dt, 0), dev_free(dl, 0);
    if (ws) dev_free(ws, wsb);
    free(pg.table), free(pg.kv_len);
}

static void check_mla_decode(struct check *c) {
    static const int lens7[] = {98, 1, 64, 65, 200, 33, 127};
    check_mla_decode_case(c, 7, 1, 128, 32, lens7, 1, true);
    check_mla_decode_case(c, 7, 1, 128, 32, lens7, 3, true);
    static const int lens3[] = {101, 10, 300};
    check_mla_decode_case(c, 3, 4, 128, 64, lens3, 0, true); // MTP: causal among 4 new tokens
    check_mla_decode_case(c, 3, 2, 64, 16, lens3, 2, true);
    static const int lens1[] = {1000};
    check_mla_decode_case(c, 1, 1, 128, 128, lens1, 0, true);
    // Heads per rank under attention TP (128 heads over 16, 8, 4 ranks): one block holds several
    // query tokens' rows (MTP) or pads a request's rows to 64; rows of other tokens are masked
    // to their own causal range.
    check_mla_decode_case(c, 7, 1, 8, 32, lens7, 1, true);
    check_mla_decode_case(c, 7, 1, 16, 32, lens7, 3, true);
    check_mla_decode_case(c, 7, 1, 32, 64, lens7, 0, true);
    check_mla_decode_case(c, 3, 4, 16, 64, lens3, 0, true);  // 64 rows: 4 tokens x 16 heads
    check_mla_decode_case(c, 3, 4, 8, 32, lens3, 2, true);   // 32 rows: 4 tokens x 8 heads
    check_mla_decode_case(c, 3, 3, 32, 16, lens3, 0, true);  // 96 rows: a token across two blocks
    // DeepSeek GEN default: 128 requests, 8193 cached + 1 new token each.
    int *big = xmalloc(sizeof(int) * 128);
    for (int b = 0; b < 128; b++) big[b] = 8194;
    check_mla_decode_case(c, 128, 1, 128, 32, big, 0, false);
    check_mla_decode_case(c, 128, 1, 128, 64, big, 0, false);
    for (int b = 0; b < 32; b++) big[b] = 2090 + 4;
    check_mla_decode_case(c, 32, 4, 128, 32, big, 0, false);
    for (int b = 0; b < 128; b++) big[b] = 8194;
    for (int h = 8; h <= 32; h *= 2) check_mla_decode_case(c, 128, 1, h, 32, big, 0, false); // TP 16, 8, 4
    big[0] = 32768;
    check_mla_decode_case(c, 1, 1, 128, 64, big, 0, false);
    free(big);
}

// ---------------------------------------------------------------------------------------------
// mla_prefill

struct prefill_arg {
    struct lwb_mla_prefill *p;
    int batch, qlen, kv_len;
    float scale;
    CUdeviceptr out;
};
static void prefill_launch(void *p, CUstream s) {
    struct prefill_arg *a = p;
    mla_prefill_enqueue(a->p, s, a->batch, a->qlen, a->kv_len, a->scale, a->out);
}

static void check_mla_prefill_case(struct check *c, int batch, int qlen, int kv_len, int heads, bool verify) {
    struct lwb_mla_prefill p;
    mla_prefill_request(&p, heads);
    jit_build(&c->jit, (struct lwb_kreq *[]){&p.req}, 1);
    int pitch = mla_prefill_pitch(kv_len), tokens = batch * qlen, keys = batch * pitch, kstride = keys;
    size_t nq = (size_t)tokens * heads * 192, nk = (size_t)keys * heads * 128, nkv = (size_t)keys * 576,
           nv = (size_t)heads * 128 * kstride, no = (size_t)tokens * heads * 128;
    CUdeviceptr dq = dev_alloc(nq * 2, "q"), dk = dev_alloc(nk * 2, "k"), dkv = dev_alloc(nkv * 2, "kv"),
                dv = dev_alloc(nv * 2, "vt"), dout = dev_alloc(no * 2, "out");
    init_fill_bf16(&c->init, c->s, dq, (long long)nq, 21, -0.5f, 0.5f);
    init_fill_bf16(&c->init, c->s, dk, (long long)nk, 22, -0.5f, 0.5f);
    init_fill_bf16(&c->init, c->s, dkv, (long long)nkv, 23, -0.5f, 0.5f);
    init_fill_bf16(&c->init, c->s, dv, (long long)nv, 24, -1.f, 1.f);
    mla_prefill_bind(&p, dq, tokens, dk, dkv, keys, dv, kstride);
    float scale = 0.1352f;
    struct prefill_arg a = {&p, batch, qlen, kv_len, scale, dout};
    char what[160];
    snprintf(what, sizeof what, "mla_prefill b=%d q=%d kv=%d h=%d", batch, qlen, kv_len, heads);
    if (verify) {
        poison(c, dout, no * 2);
        prefill_launch(&a, c->s);
        stream_wait(c->s, 60, "mla_prefill");
        uint16_t *q = xmalloc(nq * 2), *k = xmalloc(nk * 2), *kv = xmalloc(nkv * 2), *v = xmalloc(nv * 2),
                 *got16 = xmalloc(no * 2);
        download(q, dq, nq * 2), download(k, dk, nk * 2), download(kv, dkv, nkv * 2), download(v, dv, nv * 2);
        download(got16, dout, no * 2);
        float *got = bf16_to_f32(got16, no), *want = xmalloc(no * 4);
        ref_mla_prefill(q, k, kv, v, kstride, pitch, batch, qlen, kv_len, heads, scale, want);
        verdict(c, what, ref_compare("o", got, want, no, MLA_PREFILL_ATOL, MLA_PREFILL_RTOL, 1), 1e-2);
        free(q), free(k), free(kv), free(v), free(got16), free(got), free(want);
    } else {
        double us = time_us(c, prefill_launch, &a, 10);
        bench_line(c, what, us, mla_prefill_bytes(heads, batch, qlen, kv_len),
                   mla_prefill_flops(heads, batch, qlen, kv_len));
    }
    dev_free(dq, nq * 2), dev_free(dk, nk * 2), dev_free(dkv, nkv * 2), dev_free(dv, nv * 2), dev_free(dout, no * 2);
}

static void check_mla_prefill(struct check *c) {
    check_mla_prefill_case(c, 2, 200, 200, 16, true);
    check_mla_prefill_case(c, 1, 129, 129, 128, true);
    check_mla_prefill_case(c, 3, 77, 300, 16, true); // chunked context: 223 cached keys
    check_mla_prefill_case(c, 1, 8193, 8193, 128, false); // DeepSeek CTX default
    check_mla_prefill_case(c, 4, 2048, 4096, 128, false);
}
// Separate cases, one process each, to tell which shape breaks.
static void check_prefill_odd(struct check *c) {
    check_mla_prefill_case(c, 2, 77, 77, 16, true); // key counts that are not multiples of 8
    check_mla_prefill_case(c, 3, 50, 147, 16, true);
}

// ---------------------------------------------------------------------------------------------
// moe_route: routing against the C reference; permutation and combine by their invariants

// The all-to-all's kernels on one GPU: destination masks and counts against the CPU, the send
// buffer (every token's row, ids and weights once per destination rank it reaches, in that
// destination's block), and the sum of returned rows (random ones here) plus a shared term.
static void check_moe_a2a(struct check *c, const struct lwb_kreq *req, struct moe_route_config rc, CUdeviceptr dids,
                          CUdeviceptr dw, CUdeviceptr dx, int tokens) {
    const int N = rc.ranks, K = rc.top_k, H = rc.hidden, EL = rc.experts / N;
    const size_t rows_max = (size_t)tokens * N;
    struct moe_a2a a = {dev_alloc(8 * (size_t)tokens, "mask"), dev_alloc(4 * (size_t)N, "count"),
                        dev_alloc(4 * (size_t)N, "planned"), dev_alloc(4 * (size_t)N, "offset"),
                        dev_alloc(4 * (size_t)N, "fill"), dev_alloc(64, "changed"), dev_alloc(4 * rows_max, "slot")};
    CU_CHECK(lwb_cu.cuMemsetD32Async(a.changed, 0, 1, c->s));
    moe_a2a_count_enqueue(req, rc, c->s, &a, dids, tokens);
    stream_wait(c->s, 60, "a2a count");
    int *ids = xmalloc(4 * (size_t)tokens * K), *cnt = xmalloc(4 * (size_t)N), *want = xcalloc((size_t)N, 4);
    float *w = xmalloc(4 * (size_t)tokens * K);
    download(ids, dids, 4 * (size_t)tokens * K), download(w, dw, 4 * (size_t)tokens * K);
    download(cnt, a.dest_count, 4 * (size_t)N);
    unsigned long long *mask = xcalloc((size_t)tokens, 8), *got_mask = xmalloc(8 * (size_t)tokens);
    download(got_mask, a.mask, 8 * (size_t)tokens);
    for (int t = 0; t < tokens; t++)
        for (int k = 0; k < K; k++) mask[t] |= 1ull << (ids[t * K + k] / EL);
    size_t bad = 0;
    for (int t = 0; t < tokens; t++) {
        bad += mask[t] != got_mask[t];
        for (int j = 0; j < N; j++) want[j] += (int)(mask[t] >> j & 1);
    }
    int *off = xmalloc(4 * (size_t)N), total = 0;
    for (int j = 0; j < N; j++) bad += cnt[j] != want[j], off[j] = total, total += want[j];
    CUdeviceptr pl = upload(want, 4 * (size_t)N), of = upload(off, 4 * (size_t)N);
    CU_CHECK(lwb_cu.cuMemcpyDtoDAsync(a.planned, pl, 4 * (size_t)N, c->s));
    CU_CHECK(lwb_cu.cuMemcpyDtoDAsync(a.offset, of, 4 * (size_t)N, c->s));
    CUdeviceptr sx = dev_alloc(rows_max * H * 2, "send_x"), si = dev_alloc(rows_max * K * 4, "send_ids"),
                sw = dev_alloc(rows_max * K * 4, "send_w"), back = dev_alloc(rows_max * H * 2, "back"),
                shd = dev_alloc((size_t)tokens * H * 2, "shared"), out = dev_alloc((size_t)tokens * H * 2, "out");
    moe_a2a_pack_enqueue(req, rc, c->s, &a, dids, dw, dx, tokens, sx, si, sw);
    init_fill_bf16(&c->init, c->s, back, (long long)rows_max * H, 41, -1.f, 1.f);
    init_fill_bf16(&c->init, c->s, shd, (long long)tokens * H, 42, -1.f, 1.f);
    moe_a2a_sum_enqueue(req, c->s, &a, back, shd, out, tokens);
    stream_wait(c->s, 60, "a2a pack and sum");
    int *slot = xmalloc(4 * rows_max), *sids = xmalloc(4 * rows_max * K), changed = 0;
    uint16_t *x = xmalloc((size_t)tokens * H * 2), *sxh = xmalloc(rows_max * H * 2), *bh = xmalloc(rows_max * H * 2);
    uint16_t *shh = xmalloc((size_t)tokens * H * 2), *oh = xmalloc((size_t)tokens * H * 2);
    download(slot, a.slot, 4 * (size_t)tokens * N), download(sids, si, 4 * rows_max * K), download(&changed, a.changed, 4);
    download(x, dx, (size_t)tokens * H * 2), download(sxh, sx, rows_max * H * 2), download(bh, back, rows_max * H * 2);
    download(shh, shd, (size_t)tokens * H * 2), download(oh, out, (size_t)tokens * H * 2);
    char *used = xcalloc(rows_max, 1);
    for (int t = 0; t < tokens; t++)
        for (int j = 0; j < N; j++) {
            int r = slot[t * N + j];
            if (!(mask[t] >> j & 1)) {
                bad += r != -1;
                continue;
            }
            if (r < off[j] || r >= off[j] + want[j] || used[r]) {
                bad++;
                continue;
            }
            used[r] = 1;
            bad += memcmp(sxh + (size_t)r * H, x + (size_t)t * H, (size_t)H * 2) != 0;
            bad += memcmp(sids + (size_t)r * K, ids + (size_t)t * K, (size_t)K * 4) != 0;
        }
    bad += changed != 0;
    float *gotf = bf16_to_f32(oh, (size_t)tokens * H), *wantf = xmalloc(4 * (size_t)tokens * H);
    for (int t = 0; t < tokens; t++)
        for (int h = 0; h < H; h++) {
            float acc = ref_bf16_to_f32(shh[(size_t)t * H + h]);
            for (int j = 0; j < N; j++)
                if (slot[t * N + j] >= 0) acc += ref_bf16_to_f32(bh[(size_t)slot[t * N + j] * H + h]);
            wantf[(size_t)t * H + h] = acc;
        }
    char what[128];
    snprintf(what, sizeof what, "moe_a2a count/pack t=%d ranks=%d (%d rows)", tokens, N, total);
    verdict(c, what, (struct ref_diff){.bad = bad}, 0);
    snprintf(what, sizeof what, "moe_a2a sum t=%d ranks=%d", tokens, N);
    verdict(c, what, ref_compare("out", gotf, wantf, (size_t)tokens * H, 2e-2, 1e-2, 1), 1e-2);
    dev_free(a.mask, 0), dev_free(a.dest_count, 0), dev_free(a.planned, 0), dev_free(a.offset, 0), dev_free(a.fill, 0);
    dev_free(a.changed, 0), dev_free(a.slot, 0), dev_free(pl, 0), dev_free(of, 0), dev_free(sx, 0), dev_free(si, 0);
    dev_free(sw, 0), dev_free(back, 0), dev_free(shd, 0), dev_free(out, 0);
    free(ids), free(cnt), free(want), free(w), free(mask), free(got_mask), free(off), free(slot), free(sids), free(x);
    free(sxh), free(bh), free(shh), free(oh), free(used), free(gotf), free(wantf);
}

// The logits arrive as `splits` partial slabs (as the gate GEMM leaves them); the reference sums
// them in the kernel's order.
// With rc.ranks > 1 the permutation keeps the slots of rank `rank`'s experts only (other slots get
// row -1 and add nothing in combine), and the shared term is added to rows shared_first .. only.
// Two e4m3 bytes equal, or neighbouring codes of one sign (the CPU's and the GPU's rounding of
// x * 448 / amax may differ in the last bit).
static bool fp8_close(uint8_t a, uint8_t b) { return a == b || ((a & 0x80) == (b & 0x80) && abs((a & 0x7f) - (b & 0x7f)) == 1); }

// fp8 runs' permutation: every routed copy quantised as ref_quant_1x128 quantises its token; and
// the quantisation of the rows a permutation filled (xp: the bf16 permutation's rows), rows past
// them untouched.
static void check_moe_permute_fp8(struct check *c, const struct lwb_kreq *req, struct moe_route_config rc,
                                  struct moe_perm *p, CUdeviceptr dids, int tokens, int e0, int rows_a, int rows_b,
                                  CUdeviceptr dx, CUdeviceptr dxp, int n) {
    const int H = rc.hidden, G = H / 128, EL = rc.experts / rc.ranks;
    CUdeviceptr dq = dev_alloc((size_t)n * H, "q_perm"), ds = dev_alloc((size_t)n * G * 4, "s_perm");
    poison(c, dq, (size_t)n * H), poison(c, ds, (size_t)n * G * 4);
    moe_permute_fp8_enqueue(req, rc, c->s, p, dids, tokens, e0, rows_a, rows_b, dx, dq, ds);
    stream_wait(c->s, 60, "moe_permute_fp8");
    int *rows = xmalloc(4 * (size_t)n), last[2];
    download(rows, p->perm_row, 4 * (size_t)n);
    download(&last[0], p->offsets + (CUdeviceptr)(EL - 1) * 4, 4), download(&last[1], p->counts + (CUdeviceptr)(EL - 1) * 4, 4);
    const int used = last[0] + last[1];
    uint16_t *x = xmalloc((size_t)tokens * H * 2);
    download(x, dx, (size_t)tokens * H * 2);
    // n >= tokens rows: room for the tokens' and the used rows' references alike.
    float *xf = bf16_to_f32(x, (size_t)tokens * H), *ws = xmalloc((size_t)n * G * 4), *gs = xmalloc((size_t)n * G * 4);
    uint8_t *wq = xmalloc((size_t)n * H), *gq = xmalloc((size_t)n * H);
    ref_quant_1x128(xf, tokens, H, wq, ws);
    download(gq, dq, (size_t)n * H), download(gs, ds, (size_t)n * G * 4);
    size_t bad = 0, copies = 0;
    for (int i = 0; i < n; i++) {
        if (rows[i] < 0) continue;
        copies++;
        const size_t r = (size_t)rows[i], t = (size_t)(i / rc.top_k);
        for (int h = 0; h < H; h++) bad += !fp8_close(gq[r * H + h], wq[t * H + h]);
        for (int g = 0; g < G; g++) bad += fabsf(gs[r * G + g] - ws[t * G + g]) > 1e-6f * fabsf(ws[t * G + g]);
    }
    bad += copies != (size_t)used;
    char what[160];
    snprintf(what, sizeof what, "moe_permute_fp8 t=%d e=%d (rank %d of %d): %zu quantised copies", tokens, rc.experts,
             e0 / EL, rc.ranks, copies);
    verdict(c, what, (struct ref_diff){.bad = bad}, 0);
    // quant_enqueue_used on the bf16 permutation's rows (xp): rows 0..used-1 quantised, the rest untouched.
    struct lwb_kreq qr;
    quant_request(&qr);
    jit_build(&c->jit, (struct lwb_kreq *[]){&qr}, 1);
    poison(c, dq, (size_t)n * H), poison(c, ds, (size_t)n * G * 4);
    quant_enqueue_used(&qr, c->s, dxp, H, n, H, dq, H, ds, G, p->offsets + (CUdeviceptr)(EL - 1) * 4,
                       p->counts + (CUdeviceptr)(EL - 1) * 4);
    stream_wait(c->s, 60, "quant rows used");
    uint16_t *xp = xmalloc((size_t)used * H * 2 + 2);
    download(xp, dxp, (size_t)used * H * 2);
    float *xpf = bf16_to_f32(xp, (size_t)used * H);
    ref_quant_1x128(xpf, used, H, wq, ws);
    download(gq, dq, (size_t)n * H), download(gs, ds, (size_t)n * G * 4);
    bad = 0;
    for (size_t i = 0; i < (size_t)used * H; i++) bad += !fp8_close(gq[i], wq[i]);
    for (size_t i = (size_t)used * H; i < (size_t)n * H; i++) bad += gq[i] != 0xff;
    for (size_t i = 0; i < (size_t)used * G; i++) bad += fabsf(gs[i] - ws[i]) > 1e-6f * fabsf(ws[i]);
    snprintf(what, sizeof what, "quant_1x128 of the %d rows used of %d (device count)", used, n);
    verdict(c, what, (struct ref_diff){.bad = bad}, 0);
    free(rows), free(x), free(xf), free(ws), free(gs), free(wq), free(gq), free(xp), free(xpf);
    dev_free(dq, 0), dev_free(ds, 0);
}

static void check_moe_route_case(struct check *c, int tokens, struct moe_route_config rc, int rows_a, int rows_b,
                                 bool with_override, int splits, int rank, int shared_first, int shared_rows) {
    struct lwb_kreq req;
    moe_route_request(&req, rc);
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);
    const int E = rc.experts, K = rc.top_k, H = rc.hidden, n = tokens * K;
    const size_t nl = (size_t)tokens * E;
    float *parts = xmalloc(sizeof(float) * nl * splits), *logits = xcalloc(nl, sizeof(float));
    float *bias = xmalloc(sizeof(float) * E);
    for (size_t i = 0; i < nl * splits; i++) parts[i] = ref_uniform(&c->rng, -2.5f, 2.5f) / (float)splits;
    for (int sp = 0; sp < splits; sp++)
        for (size_t i = 0; i < nl; i++) logits[i] += parts[sp * nl + i];
    for (int e = 0; e < E; e++) bias[e] = ref_uniform(&c->rng, -0.05f, 0.05f);
    int *ovr = NULL;
    if (with_override) { // a balanced-like selection: distinct experts per token
        ovr = xmalloc(sizeof(int) * (size_t)n);
        for (int t = 0; t < tokens; t++)
            for (int k = 0; k < K; k++) ovr[t * K + k] = (t * K + k * 7) % E;
    }
    CUdeviceptr dl = upload(parts, sizeof(float) * nl * splits), db = upload(bias, sizeof(float) * E);
    CUdeviceptr dov = ovr ? upload(ovr, sizeof(int) * (size_t)n) : 0;
    CUdeviceptr dids = dev_alloc(sizeof(int) * (size_t)n, "ids"), dw = dev_alloc(sizeof(float) * (size_t)n, "w");
    moe_topk_enqueue(&req, c->s, dl, splits, (long long)nl, db, tokens, 2.5f, dov, dids, dw);
    // Permute random hidden states, treat them as expert outputs, combine with a shared term.
    size_t nx = (size_t)tokens * H;
    CUdeviceptr dx = dev_alloc(nx * 2, "x"), dxp = dev_alloc((size_t)n * H * 2, "x_perm"), dsh = dev_alloc(nx * 2, "sh"),
                dout = dev_alloc(nx * 2, "out");
    init_fill_bf16(&c->init, c->s, dx, (long long)nx, 31, -1.f, 1.f);
    init_fill_bf16(&c->init, c->s, dsh, (long long)nx, 32, -1.f, 1.f);
    const int EL = E / rc.ranks, e0 = rank * EL;
    int mta = moe_max_tiles(tokens, K, EL, rows_a), mtb = moe_max_tiles(tokens, K, EL, rows_b);
    struct moe_perm p = {dev_alloc(4 * EL, "counts"), dev_alloc(4 * EL, "offsets"), dev_alloc(4 * EL, "fill"),
                         dev_alloc(16 * (size_t)mta, "tiles_a"), dev_alloc(16 * (size_t)mtb, "tiles_b"),
                         dev_alloc(8, "ntiles"), dev_alloc(4 * (size_t)n, "perm_row")};
    moe_permute_enqueue(&req, rc, c->s, &p, dids, tokens, e0, rows_a, rows_b, dx, dxp);
    // Softmax routing comes with Qwen3-Next's gated shared expert: shared * sigmoid(x . w_sg).
    float *sgw = NULL;
    CUdeviceptr dsgw = 0;
    if (rc.scoring) {
        uint16_t *hw = rand_bf16(c, (size_t)H, -2.f / sqrtf((float)H), 2.f / sqrtf((float)H));
        sgw = bf16_to_f32(hw, (size_t)H);
        dsgw = upload(hw, (size_t)H * 2);
        free(hw);
    }
    moe_combine_gated_enqueue(&req, c->s, dxp, &p, dw, dsh, shared_first, shared_rows, dsgw ? dx : 0, dsgw, dout, tokens);
    stream_wait(c->s, 60, "moe_route");

    int *ids = xmalloc(sizeof(int) * (size_t)n), *want_ids = xmalloc(sizeof(int) * (size_t)n);
    float *w = xmalloc(sizeof(float) * (size_t)n), *want_w = xmalloc(sizeof(float) * (size_t)n);
    download(ids, dids, sizeof(int) * (size_t)n), download(w, dw, sizeof(float) * (size_t)n);
    if (rc.scoring) ref_moe_topk_softmax(logits, tokens, E, K, rc.norm, 2.5f, want_ids, want_w);
    else ref_moe_topk(logits, bias, tokens, E, K, rc.groups, rc.topk_group, rc.norm, 2.5f, want_ids, want_w);
    size_t bad_ids = 0, bad_w = 0;
    for (int i = 0; i < n; i++) {
        int want = ovr ? ovr[i] : want_ids[i];
        if (ids[i] != want) bad_ids++;
        if (fabsf(w[i] - want_w[i]) > 1e-4f * fabsf(want_w[i]) + 1e-6f) bad_w++;
    }
    char what[160];
    snprintf(what, sizeof what, "moe_topk t=%d e=%d k=%d g=%d/%d splits=%d%s%s", tokens, E, K, rc.topk_group,
             rc.groups, splits, with_override ? " override" : "", rc.scoring ? " softmax" : "");
    for (int i = 0; i < n && !ovr; i++) bad_ids += ids[i] < 0 || ids[i] >= E;
    struct ref_diff d = {.bad = bad_ids + bad_w};
    verdict(c, what, d, 0);

    // Permutation invariants (this rank's experts: local index e - e0).
    int *counts = xmalloc(4 * (size_t)EL), *offs = xmalloc(4 * (size_t)EL), *rows = xmalloc(4 * (size_t)n), nt[2];
    int *ta = xmalloc(16 * (size_t)mta), *tb = xmalloc(16 * (size_t)mtb);
    download(counts, p.counts, 4 * (size_t)EL), download(offs, p.offsets, 4 * (size_t)EL);
    download(rows, p.perm_row, 4 * (size_t)n), download(nt, p.ntiles, 8);
    download(ta, p.tiles_a, 16 * (size_t)mta), download(tb, p.tiles_b, 16 * (size_t)mtb);
    size_t bad = 0;
    int *want_count = xcalloc((size_t)EL, sizeof(int));
    for (int i = 0; i < n; i++)
        if (ids[i] >= e0 && ids[i] < e0 + EL) want_count[ids[i] - e0]++;
    for (int e = 0, off = 0; e < EL; e++) {
        bad += counts[e] != want_count[e] || offs[e] != off;
        off += want_count[e];
    }
    char *used = xcalloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        int e = ids[i] - e0, r = rows[i];
        if (e < 0 || e >= EL) bad += r != -1;
        else if (r < offs[e] || r >= offs[e] + counts[e] || used[r]) bad++;
        else used[r] = 1;
    }
    // Tile lists: each expert's rows in consecutive entries of rows_a (rows_b) rows.
    for (int pass = 0; pass < 2; pass++) {
        const int *tl = pass ? tb : ta, tr = pass ? rows_b : rows_a;
        int k = 0;
        for (int e = 0; e < EL; e++)
            for (int r0 = 0; r0 < counts[e]; r0 += tr, k++)
                bad += tl[4 * k] != e || tl[4 * k + 1] != offs[e] + r0 || tl[4 * k + 2] != offs[e] + counts[e];
        bad += nt[pass] != k;
    }
    uint16_t *x = xmalloc(nx * 2), *xp = xmalloc((size_t)n * H * 2), *sh = xmalloc(nx * 2), *out = xmalloc(nx * 2);
    download(x, dx, nx * 2), download(xp, dxp, (size_t)n * H * 2), download(sh, dsh, nx * 2), download(out, dout, nx * 2);
    for (int i = 0; i < n; i++)
        if (rows[i] >= 0) bad += memcmp(xp + (size_t)rows[i] * H, x + (size_t)(i / K) * H, (size_t)H * 2) != 0;
    snprintf(what, sizeof what, "moe_permute t=%d e=%d (rank %d of %d) k=%d tiles %d/%d", tokens, E, rank, rc.ranks, K,
             rows_a, rows_b);
    d = (struct ref_diff){.bad = bad};
    verdict(c, what, d, 0);
    float *got = bf16_to_f32(out, nx), *want = xmalloc(nx * 4);
    for (int t = 0; t < tokens; t++)
        for (int h = 0; h < H; h++) {
            float acc = 0;
            for (int k = 0; k < K; k++)
                if (rows[t * K + k] >= 0) acc += w[t * K + k] * ref_bf16_to_f32(x[(size_t)t * H + h]);
            if (t >= shared_first && t < shared_first + shared_rows) {
                float g = 1.f;
                if (sgw) {
                    double dot = 0;
                    for (int j = 0; j < H; j++) dot += (double)ref_bf16_to_f32(x[(size_t)(t - shared_first) * H + j]) * sgw[j];
                    g = (float)(1.0 / (1.0 + exp(-dot)));
                }
                acc += g * ref_bf16_to_f32(sh[(size_t)(t - shared_first) * H + h]);
            }
            want[(size_t)t * H + h] = acc;
        }
    snprintf(what, sizeof what, "moe_combine t=%d h=%d shared rows %d..%d", tokens, H, shared_first,
             shared_first + shared_rows - 1);
    verdict(c, what, ref_compare("out", got, want, nx, 2e-2, 1e-2, 1), 1e-2);
    if (rc.ranks > 1) check_moe_a2a(c, &req, rc, dids, dw, dx, tokens);
    if (rc.quant) check_moe_permute_fp8(c, &req, rc, &p, dids, tokens, e0, rows_a, rows_b, dx, dxp, n);
    free(parts), free(logits), free(bias), free(ovr), free(ids), free(want_ids), free(w), free(want_w), free(counts), free(offs);
    free(rows), free(ta), free(tb), free(want_count), free(used), free(x), free(xp), free(sh), free(out), free(got);
    free(want), free(sgw);
    if (dsgw) dev_free(dsgw, (size_t)H * 2);
}

static void check_moe_route(struct check *c) {
    struct moe_route_config ds = {256, 8, 8, 4, 1, 7168, 1, 0};
    // fp8 permutations: one rank, and rank 3 of 8 (most slots routed elsewhere).
    check_moe_route_case(c, 131, (struct moe_route_config){256, 8, 8, 4, 1, 7168, 1, 1}, 64, 128, false, 1, 0, 0, 131);
    check_moe_route_case(c, 50, (struct moe_route_config){64, 6, 8, 1, 1, 1024, 8, 1}, 64, 64, false, 1, 3, 0, 50);
    check_moe_route_case(c, 131, ds, 64, 128, false, 1, 0, 0, 131);
    check_moe_route_case(c, 7, ds, 128, 256, false, 16, 0, 0, 7);
    check_moe_route_case(c, 131, ds, 64, 128, true, 3, 0, 0, 131);
    check_moe_route_case(c, 1000, (struct moe_route_config){64, 6, 1, 1, 1, 2048, 1}, 64, 64, false, 2, 0, 0, 1000);
    check_moe_route_case(c, 33, (struct moe_route_config){128, 8, 4, 2, 0, 4096, 1}, 128, 64, false, 1, 0, 0, 33);
    // Expert parallelism: rank 3 of 8 keeps experts 96..127; tokens gathered from 4 ranks, the
    // shared term on this rank's own rows only.
    check_moe_route_case(c, 4 * 37, (struct moe_route_config){256, 8, 8, 4, 1, 7168, 8}, 64, 128, false, 2, 3, 37, 37);
    check_moe_route_case(c, 96, (struct moe_route_config){256, 8, 8, 4, 1, 7168, 16}, 64, 64, true, 1, 15, 0, 96);
    // Fewer than 32 experts (--scaled-from 16 and 8 on one GPU: 16 and 32 experts in 8 groups).
    check_moe_route_case(c, 77, (struct moe_route_config){16, 8, 8, 4, 1, 7168, 1}, 64, 64, false, 4, 0, 0, 77);
    check_moe_route_case(c, 77, (struct moe_route_config){32, 8, 8, 4, 1, 7168, 1}, 64, 64, false, 1, 0, 0, 77);
    check_moe_route_case(c, 50, (struct moe_route_config){32, 8, 8, 4, 1, 7168, 4}, 64, 64, false, 1, 1, 0, 50);
    // Qwen3-Next: softmax over 512 (256 under --scaled-from 2) experts, top-10, renormalised; the
    // gated shared expert; a non-normalised variant (Qwen's norm_topk_prob false).
    check_moe_route_case(c, 133, (struct moe_route_config){512, 10, 1, 1, 1, 2048, 1, 0, 1}, 64, 64, false, 1, 0, 0, 133);
    check_moe_route_case(c, 77, (struct moe_route_config){256, 10, 1, 1, 1, 2048, 1, 0, 1}, 64, 128, false, 2, 0, 0, 77);
    check_moe_route_case(c, 40, (struct moe_route_config){128, 8, 1, 1, 0, 2048, 1, 0, 1}, 64, 64, true, 1, 0, 0, 40);
}

// ---------------------------------------------------------------------------------------------
// mla_rope: rotation, cache rows, gather

static void check_mla_rope(struct check *c) {
    const int heads = 16, page = 16, batch = 3, qlen = 5, tokens = batch * qlen, positions = 400;
    const int kv_len[3] = {5, 120, 333};
    struct lwb_kreq req;
    mla_rope_request(&req, (struct mla_rope_config){heads, 128, 64, 512, page});
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);
    struct paged pg;
    paged_make(c, &pg, batch, page, kv_len);
    double inv_freq[32];
    for (int i = 0; i < 32; i++) inv_freq[i] = pow(10000.0, -2.0 * i / 64);
    float *cs = xmalloc(4 * 32 * (size_t)positions), *sn = xmalloc(4 * 32 * (size_t)positions);
    mla_rope_tables(inv_freq, 32, positions, 1.0, cs, sn);
    size_t nq = (size_t)tokens * heads * 192, na = (size_t)tokens * 2112, nc = (size_t)pg.blocks * page * 576;
    uint16_t *q = rand_bf16(c, nq, -1, 1), *a = rand_bf16(c, na, -1, 1);
    CUdeviceptr dq = upload(q, nq * 2), da = upload(a, na * 2), dqa = dev_alloc((size_t)tokens * heads * 576 * 2, "qa"),
                dkv = dev_alloc((size_t)tokens * 576 * 2, "kv_new"), dc = dev_alloc(nc * 2, "cache"),
                dt = upload(pg.table, 4 * (size_t)pg.blocks), dlen = upload(kv_len, sizeof kv_len),
                dcs = upload(cs, 4 * 32 * (size_t)positions), dsn = upload(sn, 4 * 32 * (size_t)positions);
    init_fill_bf16(&c->init, c->s, dc, (long long)nc, 41, -1.f, 1.f);
    poison(c, dqa, (size_t)tokens * heads * 576 * 2);
    struct mla_rope_args ra = {dq, dqa, da + 2048 * 2, 2112, da + 1536 * 2, 2112, dkv, dc, dt, dlen, dcs, dsn,
                               pg.max_blocks, qlen, tokens};
    mla_rope_enqueue(&req, c->s, &ra);
    int gather_len = kv_len[0]; // all requests' first kv_len[0] rows (uniform gather)
    CUdeviceptr dg = dev_alloc((size_t)batch * gather_len * 576 * 2, "gather");
    mla_gather_enqueue(&req, c->s, dc, dt, pg.max_blocks, gather_len, gather_len, batch, dg);
    stream_wait(c->s, 60, "mla_rope");
    uint16_t *gq = xmalloc(nq * 2), *gqa = xmalloc((size_t)tokens * heads * 576 * 2), *gkv = xmalloc((size_t)tokens * 576 * 2),
             *gc = xmalloc(nc * 2), *gg = xmalloc((size_t)batch * gather_len * 576 * 2);
    download(gq, dq, nq * 2), download(gqa, dqa, (size_t)tokens * heads * 576 * 2);
    download(gkv, dkv, (size_t)tokens * 576 * 2), download(gc, dc, nc * 2);
    download(gg, dg, (size_t)batch * gather_len * 576 * 2);
    size_t bad = 0, n = 0;
    float r[64];
    double num = 0, den = 0;
    for (int t = 0; t < tokens; t++) {
        int b = t / qlen, pos = kv_len[b] - qlen + t % qlen;
        const float *cp = cs + (size_t)pos * 32, *sp = sn + (size_t)pos * 32;
        for (int h = 0; h < heads; h++) {
            size_t base = ((size_t)t * heads + h) * 192;
            ref_rope64(q + base + 128, cp, sp, r);
            for (int i = 0; i < 64; i++) {
                float g = ref_bf16_to_f32(gq[base + 128 + i]), g2 = ref_bf16_to_f32(gqa[((size_t)t * heads + h) * 576 + 512 + i]);
                bad += fabsf(g - r[i]) > 1e-2f + 1e-2f * fabsf(r[i]) || g2 != g;
                num += (g - r[i]) * (g - r[i]), den += r[i] * r[i], n++;
            }
            for (int i = 0; i < 128; i++) bad += gq[base + i] != q[base + i]; // nope part untouched
        }
        ref_rope64(a + (size_t)t * 2112 + 2048, cp, sp, r);
        const uint16_t *row = gkv + (size_t)t * 576;
        for (int i = 0; i < 512; i++) bad += row[i] != a[(size_t)t * 2112 + 1536 + i];
        for (int i = 0; i < 64; i++) bad += fabsf(ref_bf16_to_f32(row[512 + i]) - r[i]) > 1e-2f + 1e-2f * fabsf(r[i]);
        const uint16_t *crow = gc + ((size_t)pg.table[b * pg.max_blocks + pos / page] * page + pos % page) * 576;
        bad += memcmp(crow, row, 576 * 2) != 0;
    }
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < gather_len; j++)
            bad += memcmp(gg + ((size_t)b * gather_len + j) * 576,
                          gc + ((size_t)pg.table[b * pg.max_blocks + j / page] * page + j % page) * 576, 576 * 2) != 0;
    struct ref_diff d = {.bad = bad, .rel_l2 = sqrt(num / den)};
    verdict(c, "mla_rope h=16 page=16 b=3 q=5 (+cache, gather)", d, 1e-2);
    free(cs), free(sn), free(q), free(a), free(gq), free(gqa), free(gkv), free(gc), free(gg), free(pg.table), free(pg.kv_len);
}

// ---------------------------------------------------------------------------------------------
// dsa_topk: the indexer's top-k selection against test/ref/dsa_topk.c. The result is one exact
// set written in ascending order, so every entry must match.

enum { TOPK_RANDOM, TOPK_LEVELS, TOPK_NARROW, TOPK_EQUAL, TOPK_INF };

// RANDOM: uniform in [-3, 5), never 0. LEVELS: a few exact values, the top ones rare, so the k-th
// score falls inside a level of ties. NARROW: 64 values in [1, 1.0625): one bin of the first
// digit, so the kernel's candidate list overflows and it sweeps the row again. EQUAL: one value.
// INF: mostly -inf, 5% zeros of either sign (one value), 2% positives.
static float topk_score(struct check *c, int kind) {
    const int l = (int)(ref_next(&c->rng) % 100);
    switch (kind) {
    case TOPK_RANDOM: {
        const float v = ref_uniform(&c->rng, -3.f, 5.f);
        return v != 0.f ? v : 1e-3f;
    }
    case TOPK_LEVELS: return l < 2 ? 9.f : l < 6 ? 5.5f : l < 25 ? 2.f : l < 60 ? ref_uniform(&c->rng, -1.f, 0.5f) : -7.f;
    case TOPK_NARROW: return 1.f + (float)(ref_next(&c->rng) % 64) / 1024.f;
    case TOPK_EQUAL: return 0.75f;
    default: return l < 5 ? (ref_next(&c->rng) & 1 ? -0.f : 0.f) : l < 7 ? ref_uniform(&c->rng, 1.f, 2.f) : -INFINITY;
    }
}

struct topk_arg {
    const struct lwb_kreq *r;
    CUdeviceptr logits, lens, out;
    long long ld, max_keys;
    int row0, rows, qlen;
};
static void topk_launch(void *p, CUstream s) {
    struct topk_arg *a = p;
    dsa_topk_enqueue(a->r, s, a->logits, a->ld, a->row0, a->rows, a->lens, a->qlen, a->out, a->max_keys);
}

static long long topk_max_keys(int row0, int rows, const int *kv_lens, int qlen) {
    long long m = 0;
    for (int j = 0; j < rows; j++) m = LWB_MAX(m, ref_topk_row_keys(kv_lens, qlen, (long long)row0 + j));
    return m;
}

// Rows row0 .. row0 + rows - 1 of requests with kv_lens (qlen tokens each); scores past a row's
// keys are NaN, which the kernel must not read (a NaN's key is above every number's).
static void check_dsa_topk_case(struct check *c, const char *name, int topk, int row0, int rows, int qlen,
                                const int *kv_lens, int batch, long long ld, int kind) {
    struct lwb_kreq req;
    dsa_topk_request(&req, topk);
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);
    const long long max_keys = topk_max_keys(row0, rows, kv_lens, qlen);
    if (max_keys > ld) LWB_BUG("dsa_topk check %s: rows of %lld keys, ld %lld", name, max_keys, ld);
    const size_t nx = (size_t)rows * ld, nout = (size_t)(row0 + rows) * topk;
    float *x = xmalloc(nx * sizeof *x);
    for (int j = 0; j < rows; j++) {
        const int n = ref_topk_row_keys(kv_lens, qlen, (long long)row0 + j);
        for (long long e = 0; e < ld; e++) x[(size_t)j * ld + e] = e < n ? topk_score(c, kind) : NAN;
    }
    struct topk_arg a = {&req, upload(x, nx * sizeof *x), upload(kv_lens, sizeof(int) * (size_t)batch),
                         dev_alloc(nout * 4, "topk out"), ld, max_keys, row0, rows, qlen};
    CU_CHECK(lwb_cu.cuMemsetD8Async(a.out, 0x5a, nout * 4, c->s)); // neither an index nor -1
    topk_launch(&a, c->s);
    stream_wait(c->s, 60, "dsa_topk");
    int *got = xmalloc(nout * 4), *want = xmalloc(nout * 4);
    download(got, a.out, nout * 4);
    ref_dsa_topk(x, ld, row0, rows, kv_lens, qlen, topk, want);
    size_t bad = 0;
    for (size_t i = (size_t)row0 * topk; i < nout; i++)
        if (got[i] != want[i] && bad++ < 10)
            fprintf(stderr, "  token %zu entry %zu: got %d, expected %d\n", i / topk, i % topk, got[i], want[i]);
    char what[160];
    snprintf(what, sizeof what, "dsa_topk %s k=%d rows=%d from %d q=%d keys<=%lld", name, topk, rows, row0, qlen,
             max_keys);
    verdict(c, what, (struct ref_diff){.bad = bad}, 0);
    free(x), free(got), free(want);
    dev_free(a.logits, nx * sizeof *x), dev_free(a.lens, 0), dev_free(a.out, nout * 4);
}

// Time of one launch on device-filled scores (uniform in [-3, 5)), against reading the scores of
// rows longer than topk once and writing every row's indices.
static void bench_dsa_topk(struct check *c, const char *name, int topk, int row0, int rows, int qlen,
                           const int *kv_lens, int batch) {
    struct lwb_kreq req;
    dsa_topk_request(&req, topk);
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);
    const long long ld = topk_max_keys(row0, rows, kv_lens, qlen);
    const size_t nx = (size_t)rows * ld, nout = (size_t)(row0 + rows) * topk;
    struct topk_arg a = {&req, dev_alloc(nx * 4, "scores"), upload(kv_lens, sizeof(int) * (size_t)batch),
                         dev_alloc(nout * 4, "topk out"), ld, ld, row0, rows, qlen};
    init_fill_f32(&c->init, c->s, a.logits, (long long)nx, 61, -3.f, 5.f);
    const double us = time_us(c, topk_launch, &a, 20);
    char what[160];
    snprintf(what, sizeof what, "dsa_topk %s k=%d rows=%d from %d keys<=%lld", name, topk, rows, row0, ld);
    bench_line(c, what, us, dsa_topk_bytes(dsa_topk_keys_read(topk, row0, rows, kv_lens, qlen), rows, topk), 0);
    dev_free(a.logits, nx * 4), dev_free(a.lens, 0), dev_free(a.out, nout * 4);
}

static void check_dsa_topk(struct check *c) {
    // Rows below, at and just above k, and longer, in one launch; rows ld apart, not 16-byte aligned.
    static const int mixed64[] = {1, 5, 63, 64, 65, 66, 100, 1000, 4097, 33};
    check_dsa_topk_case(c, "mixed", 64, 0, 10, 1, mixed64, 10, 4103, TOPK_RANDOM);
    static const int mixed2k[] = {1, 2047, 2048, 2049, 2050, 3000, 5000, 17, 40000, 32769};
    check_dsa_topk_case(c, "mixed", 2048, 0, 10, 1, mixed2k, 10, 40001, TOPK_RANDOM);
    // GEN: 128 requests with 32769 keys (32768 cached + the new token); MTP: 2 tokens each.
    int *gen = xmalloc(sizeof(int) * 128);
    for (int b = 0; b < 128; b++) gen[b] = 32769;
    check_dsa_topk_case(c, "gen", 2048, 0, 128, 1, gen, 128, 32769, TOPK_RANDOM);
    check_dsa_topk_case(c, "gen", 64, 0, 128, 1, gen, 128, 32769, TOPK_RANDOM);
    check_dsa_topk_case(c, "mtp", 2048, 0, 128, 2, gen, 64, 32772, TOPK_RANDOM);
    // CTX: a chunk of one 3000-token prefill (token t has t + 1 keys), short rows first.
    static const int ctx[] = {3000};
    check_dsa_topk_case(c, "ctx", 2048, 1900, 700, 3000, ctx, 1, 3000, TOPK_RANDOM);
    check_dsa_topk_case(c, "ctx", 64, 30, 300, 3000, ctx, 1, 3001, TOPK_RANDOM);
    // Longer than the shared-memory copy holds (about 48k keys): the passes read global memory.
    static const int longer[] = {70000, 47000, 48500, 50000, 100000, 2049};
    check_dsa_topk_case(c, "long", 2048, 0, 6, 1, longer, 6, 100005, TOPK_RANDOM);
    check_dsa_topk_case(c, "long", 64, 0, 6, 1, longer, 6, 100005, TOPK_RANDOM);
    // Ties at the k-th score: the lower indices must win.
    static const int ties[] = {32769, 5000, 70000, 2100};
    check_dsa_topk_case(c, "levels", 2048, 0, 4, 1, ties, 4, 70000, TOPK_LEVELS);
    check_dsa_topk_case(c, "levels", 64, 0, 4, 1, ties, 4, 70000, TOPK_LEVELS);
    check_dsa_topk_case(c, "narrow", 2048, 0, 4, 1, ties, 4, 70000, TOPK_NARROW);
    check_dsa_topk_case(c, "narrow", 64, 0, 4, 1, ties, 4, 70000, TOPK_NARROW);
    check_dsa_topk_case(c, "equal", 2048, 0, 4, 1, ties, 4, 70000, TOPK_EQUAL);
    check_dsa_topk_case(c, "-inf/+-0", 2048, 0, 4, 1, ties, 4, 70000, TOPK_INF);
    check_dsa_topk_case(c, "-inf/+-0", 64, 0, 4, 1, ties, 4, 70000, TOPK_INF);
    // Speed: GEN (one block per token on 128 of the multiprocessors) and the last 4096 tokens of a
    // 32768-token prefill (28673 .. 32768 keys each).
    bench_dsa_topk(c, "gen", 2048, 0, 128, 1, gen, 128);
    bench_dsa_topk(c, "mtp", 2048, 0, 128, 2, gen, 64);
    static const int prefill[] = {32768};
    bench_dsa_topk(c, "ctx", 2048, 32768 - 4096, 4096, 32768, prefill, 1);
    free(gen);
}

// ---------------------------------------------------------------------------------------------
// init: seeded fills are in range, varied, and reproducible

static void check_init(struct check *c) {
    const long long n = 1000003; // odd: exercises the tail
    CUdeviceptr a = dev_alloc(n * 2, "fill"), b = dev_alloc(n * 2, "fill");
    init_fill_bf16(&c->init, c->s, a, n, 7, -0.5f, 1.5f);
    init_fill_bf16(&c->init, c->s, b, n, 7, -0.5f, 1.5f);
    uint16_t *x = xmalloc(n * 2), *y = xmalloc(n * 2);
    stream_wait(c->s, 60, "check");
    download(x, a, n * 2), download(y, b, n * 2);
    double sum = 0, sq = 0;
    size_t out_of_range = 0;
    for (long long i = 0; i < n; i++) {
        float v = ref_bf16_to_f32(x[i]);
        out_of_range += !(v >= -0.5f && v <= 1.5f);
        sum += v, sq += (double)v * v;
    }
    double mean = sum / n, var = sq / n - mean * mean; // uniform: mean 0.5, variance 4/12
    bool ok = out_of_range == 0 && fabs(mean - 0.5) < 0.01 && fabs(var - 1.0 / 3) < 0.01 && !memcmp(x, y, n * 2);
    c->checks++, c->failures += !ok;
    printf("%s  check %-44s mean %.4f var %.4f out of range %zu, same seed same values %s\n", ok ? "PASS" : "FAIL",
           "init uniform bf16 n=1000003", mean, var, out_of_range, memcmp(x, y, n * 2) ? "no" : "yes");
    free(x), free(y);
    dev_free(a, n * 2), dev_free(b, n * 2);
}

// ---------------------------------------------------------------------------------------------
// jit: cold and warm build of every family's sample kernels

static void check_jit(struct check *c) {
    char dir[] = "/tmp/lwb-jit-XXXXXX";
    if (!mkdtemp(dir)) lwb_fatal("mkdtemp failed");
    setenv("LWB_CACHE_DIR", dir, 1);
    for (int pass = 0; pass < 2; pass++) {
        struct lwb_jit j;
        jit_init(&j, c->dev.arch, true);
        static struct lwb_kreq reqs[256];
        struct lwb_kreq *p[256];
        int n = 0;
        for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_kfamilies); i++) n += lwb_kfamilies[i].samples(reqs + n, 256 - n);
        for (int i = 0; i < n; i++) p[i] = &reqs[i];
        double t0 = lwb_now();
        jit_build(&j, p, n);
        double dt = lwb_now() - t0;
        printf("jit %s: %d kernels (%d cached, %d compiled) built and loaded in %.3f s\n", pass ? "warm" : "cold", n,
               j.ncached, j.ncompiled, dt);
        for (int i = 0; i < n; i++) kreq_free(&reqs[i]);
    }
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) lwb_warn("could not remove %s", dir);
}

// ---------------------------------------------------------------------------------------------

static void check_setup(struct check *c) {
    device_open(&c->dev, 0);
    CU_CHECK(lwb_cu.cuStreamCreate(&c->s, CU_STREAM_NON_BLOCKING));
    jit_init(&c->jit, c->dev.arch, true);
    init_request(&c->init);
    jit_build(&c->jit, (struct lwb_kreq *[]){&c->init}, 1);
    c->flush_bytes = (size_t)c->dev.l2_bytes * 4;
    c->flush = dev_alloc(c->flush_bytes, "L2 flush");
    check_copy(c); // every floor needs it
}

// ---------------------------------------------------------------------------------------------
// fp8: activation quantisation (alone and fused into RMSNorm), fp8 weight fills and their bf16
// copies, and the fp8 GEMMs, against test/ref/gemm_fp8.c on fresh random inputs

// Random bf16 values, quantised on the CPU: e4m3 bytes and 1 x 128 scales of a rows x cols matrix.
static void rand_fp8_act(struct check *c, int rows, int cols, uint8_t *q, float *s, float lo, float hi) {
    float *x = xmalloc(sizeof(float) * (size_t)rows * cols);
    for (size_t i = 0; i < (size_t)rows * cols; i++) x[i] = ref_uniform(&c->rng, lo, hi) * (i % 97 == 0 ? 4.f : 1.f);
    ref_quant_1x128(x, rows, cols, q, s);
    free(x);
}
// A random fp8 weight of n x k (z matrices) with per-block scales, as the checkpoint stores one:
// values from uniform(-1, 1) / sqrt(k) per element, each 128 x 128 block (or 64 x 128 with
// sb_rows 64) quantised with its own scale.
static void rand_fp8_weight(struct check *c, int z, int n, int k, int sb_rows, uint8_t *q, float *s) {
    const int kb = k / 128, nb = LWB_CEIL_DIV(n, sb_rows);
    float *w = xmalloc(sizeof(float) * (size_t)n * k);
    for (int e = 0; e < z; e++) {
        for (size_t i = 0; i < (size_t)n * k; i++) w[i] = ref_uniform(&c->rng, -2.f, 2.f) / sqrtf((float)k);
        for (int b = 0; b < nb; b++)
            for (int kk = 0; kk < kb; kk++) {
                float amax = 0;
                for (int r = b * sb_rows; r < LWB_MIN(n, (b + 1) * sb_rows); r++)
                    for (int i = kk * 128; i < kk * 128 + 128; i++) amax = fmaxf(amax, fabsf(w[(size_t)r * k + i]));
                float sc = amax > 0 ? amax / 448.f : 1.f;
                s[((size_t)e * nb + b) * kb + kk] = sc;
                for (int r = b * sb_rows; r < LWB_MIN(n, (b + 1) * sb_rows); r++)
                    for (int i = kk * 128; i < kk * 128 + 128; i++)
                        q[(size_t)e * n * k + (size_t)r * k + i] = ref_f32_to_e4m3(w[(size_t)r * k + i] / sc);
            }
    }
    free(w);
}

struct gemm8_arg {
    struct lwb_gemm *g;
};
static void gemm8_launch(void *p, CUstream s) { gemm_enqueue(((struct gemm8_arg *)p)->g, s); }

// One fp8 product against the reference; grouped: `groups` experts with rows_of[e] rows. With
// bench, also timed against its floor and the bf16 kernel on the same shape.
static void check_gemm8_case(struct check *c, const char *name, int m, int n, int k, int batch, int epi, int groups,
                             const int *rows_of, bool verify, bool bench) {
    const bool grouped = groups > 0;
    const int zb = grouped ? groups : batch, sb_rows = epi == GEMM_EPI_SWIGLU64 ? 64 : 128, kb = k / 128;
    long long rows = m;
    if (grouped) {
        rows = 0;
        for (int e = 0; e < groups; e++) rows += rows_of[e];
    }
    const int za = grouped ? 1 : batch;
    struct lwb_gemm g;
    gemm_plan_fp8(&g, name, rows, n, k, za, epi, grouped, grouped ? (double)rows / groups : 0, &c->dev);
    jit_build(&c->jit, (struct lwb_kreq *[]){&g.req}, 1);
    const size_t na = (size_t)za * rows * k, nsa = (size_t)za * rows * kb, nb = (size_t)zb * n * k;
    const size_t nsb = (size_t)zb * LWB_CEIL_DIV(n, sb_rows) * kb;
    uint8_t *a = NULL, *b = NULL;
    float *sa = NULL, *sbv = NULL;
    CUdeviceptr da, db, dsa, dsb;
    if (verify) { // CPU-quantised inputs the reference reads
        a = xmalloc(na), b = xmalloc(nb), sa = xmalloc(nsa * 4), sbv = xmalloc(nsb * 4);
        for (int z = 0; z < za; z++)
            rand_fp8_act(c, (int)rows, k, a + (size_t)z * rows * k, sa + (size_t)z * rows * kb, -1.f, 1.f);
        rand_fp8_weight(c, zb, n, k, sb_rows, b, sbv);
        da = upload(a, na), db = upload(b, nb), dsa = upload(sa, nsa * 4), dsb = upload(sbv, nsb * 4);
    } else { // timing only: device fills
        da = dev_alloc(na, "A"), db = dev_alloc(nb, "B"), dsa = dev_alloc(nsa * 4, "sa"), dsb = dev_alloc(nsb * 4, "sb");
        init_fill_e4m3_at(&c->init, c->s, da, (long long)na, 1, 1, 0, 91);
        init_fill_e4m3_at(&c->init, c->s, db, (long long)nb, 1, 1, 0, 92);
        init_fill_f32(&c->init, c->s, dsa, (long long)nsa, 93, 0.5f / 448, 1.f / 448);
        init_fill_f32(&c->init, c->s, dsb, (long long)nsb, 94, 0.5f / 448, 1.f / 448);
    }
    const int nout = epi == GEMM_EPI_SWIGLU64 ? n / 2 : n;
    const size_t esz = epi == GEMM_EPI_F32 ? 4 : 2, nc = (size_t)rows * za * nout;
    CUdeviceptr dc = dev_alloc(nc * esz, "C"), ws = 0;
    size_t wsb = gemm_workspace_bytes(&g);
    if (wsb) ws = dev_alloc(wsb, "ws");
    struct lwb_operand A = {da, rows, k, k, za, rows * k}, B = {db, n, k, k, zb, (long long)n * k};
    gemm_bind_fp8(&g, &A, dsa, rows, &B, dsb, dc, (long long)nout * za, nout, ws);
    CUdeviceptr dt = 0, dn = 0;
    if (grouped) {
        int *tiles = xcalloc(4 * 4096, sizeof(int)), nt = 0;
        long long row = 0;
        for (int e = 0; e < groups; e++) {
            for (int r0 = 0; r0 < rows_of[e]; r0 += gemm_tile_rows(&g), nt++) {
                tiles[4 * nt] = e, tiles[4 * nt + 1] = (int)(row + r0), tiles[4 * nt + 2] = (int)(row + rows_of[e]);
            }
            row += rows_of[e];
        }
        dt = upload(tiles, 4 * 4096 * sizeof(int));
        dn = upload(&nt, sizeof nt);
        gemm_bind_tiles(&g, dt, dn, nt + 3);
        free(tiles);
    }
    char what[200];
    int regs = 0, local = 0;
    CU_CHECK(lwb_cu.cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, kreq_func(&g.req, "lwb_gemm_fp8")));
    CU_CHECK(lwb_cu.cuFuncGetAttribute(&local, CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, kreq_func(&g.req, "lwb_gemm_fp8")));
    snprintf(what, sizeof what, "gemm_fp8 %s m=%lld n=%d k=%d x%d e%d%s bm%d bn%d s%d split%d ov%d r%d%s", name, rows, n, k,
             za, epi, grouped ? " grouped" : "", g.cfg.bm, g.cfg.bn, g.cfg.stages, g.cfg.splitk, g.cfg.overlap, regs,
             local ? " SPILLS" : "");
    if (verify) {
        poison(c, dc, nc * esz);
        gemm_enqueue(&g, c->s);
        stream_wait(c->s, 60, "check");
        void *raw = xmalloc(nc * esz);
        download(raw, dc, nc * esz);
        float *got = xmalloc(nc * 4), *want = xcalloc(nc, 4), *tmp = xmalloc((size_t)rows * nout * 4);
        for (size_t i = 0; i < nc; i++) got[i] = esz == 4 ? ((float *)raw)[i] : ref_bf16_to_f32(((uint16_t *)raw)[i]);
        if (grouped) {
            long long row = 0;
            for (int e = 0; e < groups; e++) {
                ref_gemm_fp8(a + row * k, k, sa + row * kb, b + (size_t)e * n * k, k,
                             sbv + (size_t)e * LWB_CEIL_DIV(n, sb_rows) * kb, sb_rows, rows_of[e], n, k, epi == GEMM_EPI_SWIGLU64 ? 3 : epi, tmp);
                memcpy(want + row * nout, tmp, (size_t)rows_of[e] * nout * 4);
                row += rows_of[e];
            }
        } else {
            for (int z = 0; z < za; z++) {
                ref_gemm_fp8(a + (size_t)z * rows * k, k, sa + (size_t)z * rows * kb, b + (size_t)z * n * k, k,
                             sbv + (size_t)z * LWB_CEIL_DIV(n, sb_rows) * kb, sb_rows, (int)rows, n, k,
                             epi == GEMM_EPI_SWIGLU64 ? 3 : epi, tmp);
                for (long long r = 0; r < rows; r++)
                    memcpy(want + ((size_t)r * za + z) * nout, tmp + (size_t)r * nout, (size_t)nout * 4);
            }
        }
        verdict(c, what, ref_compare("C", got, want, nc, GEMM_FP8_ATOL, GEMM_FP8_RTOL, 1), 1e-2);
        free(raw), free(got), free(want), free(tmp);
    }
    if (bench) {
        struct gemm8_arg ga = {&g};
        double us = time_us(c, gemm8_launch, &ga, 10);
        bench_line_peak(c, what, us, gemm_bytes_fp8((double)rows, n, k, za, zb, epi), gemm_flops((double)rows, n, k, za),
                        PEAK_FP8_TFLOPS);
        // lwb's bf16 kernel on the same shape, for the speed-up fp8 brings.
        if (za == 1 && (!grouped || rows_of[0] * groups == rows)) {
            const int bepi = epi == GEMM_EPI_SWIGLU64 ? GEMM_EPI_SWIGLU : epi;
            struct gemm_config bc = gemm_choose_config(rows, n, k, 1, grouped, grouped ? rows_of[0] : 0, c->dev.sm_count,
                                                       c->dev.smem_optin);
            char bname[64];
            snprintf(bname, sizeof bname, "bf16 %s", name);
            bench_gemm_variant(c, bname, rows, n, k, bepi, grouped, grouped ? rows_of[0] : 0, bc, 1);
        }
    }
    free(a), free(b), free(sa), free(sbv);
    dev_free(da, 0), dev_free(db, 0), dev_free(dsa, 0), dev_free(dsb, 0), dev_free(dc, 0);
    if (ws) dev_free(ws, 0);
    if (dt) dev_free(dt, 0), dev_free(dn, 0);
}

// The quantisation kernel and the quantising RMSNorm against ref_quant_1x128 (bytes equal, or a
// neighbouring code where the CPU's and the GPU's rounding of x * 448 / amax differ; scales within
// 1e-6 relative).
static void check_quant_case(struct check *c, int rows, int cols, bool norm) {
    struct lwb_kreq req;
    struct rmsnorm_config cfg = rmsnorm_choose_config(cols, true);
    cfg.quant = 1;
    if (norm) rmsnorm_request(&req, cfg);
    else quant_request(&req);
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);
    const size_t n = (size_t)rows * cols, ns = (size_t)rows * (cols / 128);
    uint16_t *x = rand_bf16(c, n, -3, 3), *res = rand_bf16(c, n, -1, 1), *w = rand_bf16(c, cols, 0.5f, 1.5f);
    CUdeviceptr dx = upload(x, n * 2), dres = upload(res, n * 2), dw = upload(w, (size_t)cols * 2);
    CUdeviceptr dq = dev_alloc(n, "q"), ds = dev_alloc(ns * 4, "s"), dy = dev_alloc(n * 2, "y");
    poison(c, dq, n), poison(c, ds, ns * 4);
    if (norm) rmsnorm_enqueue_q8(&req, cfg, c->s, dx, cols, dres, dres, cols, dw, dy, cols, rows, 1e-6f, dq, ds);
    else quant_enqueue(&req, c->s, dx, cols, rows, cols, dq, cols, ds, cols / 128);
    stream_wait(c->s, 60, "quant");
    uint8_t *q = xmalloc(n);
    float *s = xmalloc(ns * 4), *src = xmalloc(n * 4), *ws = xmalloc(ns * 4);
    uint8_t *wq = xmalloc(n);
    download(q, dq, n), download(s, ds, ns * 4);
    if (norm) { // the quantised input is the bf16 output the kernel wrote
        uint16_t *y = xmalloc(n * 2);
        download(y, dy, n * 2);
        for (size_t i = 0; i < n; i++) src[i] = ref_bf16_to_f32(y[i]);
        free(y);
    } else {
        for (size_t i = 0; i < n; i++) src[i] = ref_bf16_to_f32(x[i]);
    }
    ref_quant_1x128(src, rows, cols, wq, ws);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (q[i] != wq[i] && !((q[i] & 0x80) == (wq[i] & 0x80) && abs((q[i] & 0x7f) - (wq[i] & 0x7f)) == 1)) bad++;
    for (size_t i = 0; i < ns; i++) bad += fabsf(s[i] - ws[i]) > 1e-6f * fabsf(ws[i]);
    char what[128];
    snprintf(what, sizeof what, "%s rows=%d cols=%d", norm ? "rmsnorm+quant" : "quant_1x128", rows, cols);
    verdict(c, what, (struct ref_diff){.bad = bad}, 0);
    free(x), free(res), free(w), free(q), free(s), free(src), free(ws), free(wq);
    dev_free(dx, 0), dev_free(dres, 0), dev_free(dw, 0), dev_free(dq, 0), dev_free(ds, 0), dev_free(dy, 0);
}

// fp8 weight fills: a shard's bytes and scales equal the whole matrix's at its place; the bf16
// copy equals the bytes times their block scale; gate/up halves carry their matrix's values.
static void check_fp8_fills(struct check *c) {
    const int rows = 384, cols = 640, sr = rows / 128, sc = cols / 128;
    CUdeviceptr q = dev_alloc((size_t)rows * cols, "q"), s = dev_alloc((size_t)sr * sc * 4, "s");
    CUdeviceptr q2 = dev_alloc((size_t)128 * 256, "q2"), s2 = dev_alloc(8, "s2"), out = dev_alloc((size_t)rows * cols * 2, "o");
    init_fill_fp8(&c->init, c->s, q, s, rows, cols, cols, 0, 0, 77, 0.05f);
    init_fill_fp8(&c->init, c->s, q2, s2, 128, 256, cols, 256, 128, 77, 0.05f); // rows 256.., cols 128..
    init_dequant_fp8(&c->init, c->s, q, s, rows, cols, out);
    stream_wait(c->s, 60, "fills");
    uint8_t *hq = xmalloc((size_t)rows * cols), *hq2 = xmalloc(128 * 256);
    float *hs = xmalloc((size_t)sr * sc * 4), hs2[2];
    uint16_t *ho = xmalloc((size_t)rows * cols * 2);
    download(hq, q, (size_t)rows * cols), download(hq2, q2, 128 * 256), download(hs, s, (size_t)sr * sc * 4);
    download(hs2, s2, 8), download(ho, out, (size_t)rows * cols * 2);
    size_t bad = 0, distinct = 0;
    for (int r = 0; r < 128; r++)
        for (int k = 0; k < 256; k++) bad += hq2[r * 256 + k] != hq[(size_t)(256 + r) * cols + 128 + k];
    bad += hs2[0] != hs[2 * sc + 1] || hs2[1] != hs[2 * sc + 2];
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            float want = ref_round_bf16(ref_e4m3_to_f32(hq[(size_t)r * cols + k]) * hs[(r / 128) * sc + k / 128]);
            bad += ref_bf16_to_f32(ho[(size_t)r * cols + k]) != want;
            distinct += hq[(size_t)r * cols + k] != hq[0];
        }
    for (int i = 0; i < sr * sc; i++) bad += !(hs[i] >= 0.05f * 0.75f / 448.f && hs[i] <= 0.05f * 1.25f / 448.f);
    bad += distinct < (size_t)rows * cols / 2;
    verdict(c, "fp8 fill: a shard equals the whole at its place; bf16 copy = bytes x block scale", (struct ref_diff){.bad = bad}, 0);
    free(hq), free(hq2), free(hs), free(ho);
    dev_free(q, 0), dev_free(s, 0), dev_free(q2, 0), dev_free(s2, 0), dev_free(out, 0);
}

static void check_fp8(struct check *c) {
    check_fp8_fills(c);
    check_quant_case(c, 37, 7168, false);
    check_quant_case(c, 5, 1536, false);
    check_quant_case(c, 33, 7168, true);
    check_quant_case(c, 7, 1536, true);
    check_quant_case(c, 9, 1024, true); // the reduced model's hidden and q_lora_rank
    check_quant_case(c, 9, 384, true);
    check_gemm8_case(c, "odd", 77, 200, 384, 1, GEMM_EPI_BF16, 0, NULL, true, false);
    setenv("LWB_FP8_OVERLAP", "1", 1); // both consumer loops, on odd block counts
    check_gemm8_case(c, "odd_ov", 77, 200, 384, 1, GEMM_EPI_BF16, 0, NULL, true, false);
    check_gemm8_case(c, "big_ov", 300, 512, 1152, 1, GEMM_EPI_BF16, 0, NULL, true, false);
    setenv("LWB_FP8_OVERLAP", "0", 1);
    check_gemm8_case(c, "big_no_ov", 300, 512, 1152, 1, GEMM_EPI_BF16, 0, NULL, true, false);
    unsetenv("LWB_FP8_OVERLAP");
    check_gemm8_case(c, "odd_f32", 300, 512, 1536, 1, GEMM_EPI_F32, 0, NULL, true, false);
    check_gemm8_case(c, "fused_a", 128, 2112, 7168, 1, GEMM_EPI_BF16, 0, NULL, true, false); // split K
    check_gemm8_case(c, "heads", 50, 512, 128, 3, GEMM_EPI_BF16, 0, NULL, true, false);
    check_gemm8_case(c, "swiglu", 130, 512, 1024, 1, GEMM_EPI_SWIGLU64, 0, NULL, true, false);
    check_gemm8_case(c, "swiglu_dec", 16, 4096, 7168, 1, GEMM_EPI_SWIGLU64, 0, NULL, true, false); // split K
    static const int rows5[] = {0, 1, 130, 64, 7};
    check_gemm8_case(c, "experts13", 0, 512, 768, 1, GEMM_EPI_SWIGLU64, 5, rows5, true, false);
    check_gemm8_case(c, "experts2", 0, 384, 512, 1, GEMM_EPI_BF16, 5, rows5, true, false);
    // Speed at DeepSeek's shapes (floors: bytes / copy bandwidth, FLOPs / dense fp8 peak 1979 TFLOP/s).
    for (int ov = 0; ov < 2; ov++) { // the chosen overlap, then the other
        if (ov) setenv("LWB_FP8_OVERLAP", "0", 1);
        check_gemm8_case(c, "q_b", 8192, 24576, 1536, 1, GEMM_EPI_BF16, 0, NULL, false, true);
        check_gemm8_case(c, "o_proj", 8192, 7168, 16384, 1, GEMM_EPI_BF16, 0, NULL, false, true);
        check_gemm8_case(c, "sq8192", 8192, 8192, 8192, 1, GEMM_EPI_BF16, 0, NULL, false, true);
        unsetenv("LWB_FP8_OVERLAP");
    }
    check_gemm8_case(c, "fused_a_dec", 128, 2112, 7168, 1, GEMM_EPI_BF16, 0, NULL, false, true);
    int *r256 = xmalloc(256 * sizeof(int));
    for (int e = 0; e < 256; e++) r256[e] = 4;
    check_gemm8_case(c, "experts13_dec", 0, 4096, 7168, 1, GEMM_EPI_SWIGLU64, 256, r256, false, true);
    check_gemm8_case(c, "experts2_dec", 0, 7168, 2048, 1, GEMM_EPI_BF16, 256, r256, false, true);
    for (int e = 0; e < 256; e++) r256[e] = 256;
    check_gemm8_case(c, "experts13_ctx", 0, 4096, 7168, 1, GEMM_EPI_SWIGLU64, 256, r256, false, true);
    free(r256);
}

#include "check_dsa.h" // the V3.2 indexer and the sparse attention (after the helpers above)
#include "check_mamba.h" // the Mamba2 mixer kernels
#include "check_gqa.h" // grouped-query attention
#include "check_gdn.h" // Gated DeltaNet

static const struct {
    const char *name;
    void (*fn)(struct check *);
    bool by_default;
} families[] = {
    {"init", check_init, true},           {"rmsnorm", check_rmsnorm, true},
    {"gemm", check_gemm, true},           {"gemmvar", check_gemm_variants, false},
    {"router", check_router_variants, false},
    {"mla_decode", check_mla_decode, true}, {"mla_prefill", check_mla_prefill, true},
    {"prefill_odd", check_prefill_odd, true},
    {"moe_route", check_moe_route, true}, {"mla_rope", check_mla_rope, true},
    {"dsa_topk", check_dsa_topk, true},
    {"dsa", check_dsa, true},
    {"mamba", check_mamba, true},
    {"gqa", check_gqa, true},
    {"gdn", check_gdn, true},
    {"jit", check_jit, true},             {"fp8", check_fp8, true},
};

// Each family runs in its own process, so a kernel that faults (the context is lost) does not
// stop the others; the parent never touches the GPU.
int main(int argc, char **argv) {
    lwb_proc_init("gpu_check");
    int failed_families = 0, ran = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(families); i++) {
        bool run = argc < 2 && families[i].by_default;
        for (int a = 1; a < argc; a++) run |= !strcmp(argv[a], families[i].name);
        if (!run) continue;
        ran++;
        printf("== %s\n", families[i].name);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            struct check c = {.rng = {12345}};
            check_setup(&c);
            families[i].fn(&c);
            jit_summary(&c.jit, stdout);
            printf("%s: %d of %d checks failed\n", families[i].name, c.failures, c.checks);
            fflush(stdout);
            _exit(c.failures ? 1 : 0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            failed_families++;
            printf("FAIL  family %s (%s %d)\n", families[i].name, WIFEXITED(st) ? "exit" : "signal",
                   WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        }
    }
    printf("%d of %d families failed\n", failed_families, ran);
    return failed_families ? 1 : 0;
}

// layers/init.h: host side of the init kernel family (kernels/init.cu.in): seeded random fills
// on the device.
//
// Defines: init_request, init_fill_bf16, init_fill_f32, init_samples.
//
// Does not: decide scales (each layer picks them like a trained model's, so routing is not
// degenerate and activations stay finite).
// Tested by test/gpu/check.c (values in range, not constant, reproducible by seed).
#pragma once

static void init_request(struct lwb_kreq *r) {
    *r = (struct lwb_kreq){.family = "init"};
    snprintf(r->label, sizeof r->label, "init");
    kreq_set(r, "VEC", 8);
    kreq_entry(r, "lwb_fill_uniform_bf16");
    kreq_entry(r, "lwb_fill_uniform_f32");
    kreq_entry(r, "lwb_fill_e4m3");
    kreq_entry(r, "lwb_fill_e4m3_gateup");
    kreq_entry(r, "lwb_fill_scales_gateup");
    kreq_entry(r, "lwb_dequant_e4m3");
    kreq_entry(r, "lwb_transpose_bf16");
}

static unsigned init_blocks(long long n, int per_thread) {
    return (unsigned)LWB_MAX(1, LWB_MIN(LWB_CEIL_DIV(LWB_CEIL_DIV(n, per_thread), 256), 132 * 16));
}

// Uniform bf16 in [lo, hi) over a rows x cols block at element `first` of a matrix with rows of
// `ld` elements: a deterministic function of (seed, first + r * ld + c), so a shard of a weight
// holds what the whole weight holds at those positions.
static void init_fill_bf16_at(const struct lwb_kreq *r, CUstream s, CUdeviceptr p, long long rows, long long cols,
                              long long ld, long long first, unsigned long long seed, float lo, float hi) {
    if (p % 16) LWB_BUG("init: buffers must be 16-byte aligned");
    if (rows <= 0 || cols <= 0) return;
    void *args[] = {&p, &rows, &cols, &ld, &first, &seed, &lo, &hi};
    cu_launch(kreq_func(r, "lwb_fill_uniform_bf16"), (struct lwb_launch){{init_blocks(rows * cols, 8)}, {256}}, s, args);
}
// Uniform bf16 in [lo, hi): a deterministic function of (seed, index).
static void init_fill_bf16(const struct lwb_kreq *r, CUstream s, CUdeviceptr p, long long n,
                           unsigned long long seed, float lo, float hi) {
    init_fill_bf16_at(r, s, p, 1, n, n, 0, seed, lo, hi);
}
// Uniform fp32 over a rows x cols block at element `first` of a matrix with rows of `ld`.
static void init_fill_f32_at(const struct lwb_kreq *r, CUstream s, CUdeviceptr p, long long rows, long long cols,
                             long long ld, long long first, unsigned long long seed, float lo, float hi) {
    if (rows <= 0 || cols <= 0) return;
    void *args[] = {&p, &rows, &cols, &ld, &first, &seed, &lo, &hi};
    cu_launch(kreq_func(r, "lwb_fill_uniform_f32"), (struct lwb_launch){{init_blocks(rows * cols, 1)}, {256}}, s, args);
}
static void init_fill_f32(const struct lwb_kreq *r, CUstream s, CUdeviceptr p, long long n,
                          unsigned long long seed, float lo, float hi) {
    init_fill_f32_at(r, s, p, 1, n, n, 0, seed, lo, hi);
}

// e4m3 bytes over the whole range, element (r, c) from (seed, first + r * ld + c).
static void init_fill_e4m3_at(const struct lwb_kreq *r, CUstream s, CUdeviceptr q, long long rows, long long cols,
                              long long ld, long long first, unsigned long long seed) {
    if (rows <= 0 || cols <= 0) return;
    void *args[] = {&q, &rows, &cols, &ld, &first, &seed};
    cu_launch(kreq_func(r, "lwb_fill_e4m3"), (struct lwb_launch){{init_blocks(rows * cols, 2)}, {256}}, s, args);
}

// An fp8 weight block of rows x cols at (row0, col0) of a rows_total x ld matrix, and its scales
// (one per 128 x 128 block of the whole matrix: row0 and col0 multiples of 128), drawn so that
// the weights are uniform in about [-amax, amax] (each block's scale amax * (0.75 .. 1.25) / 448):
// any shard holds the whole matrix's values at its positions.
static void init_fill_fp8(const struct lwb_kreq *r, CUstream s, CUdeviceptr q, CUdeviceptr scales, long long rows,
                          long long cols, long long ld, long long row0, long long col0, unsigned long long seed,
                          float amax) {
    if (row0 % 128 || col0 % 128) LWB_BUG("init: an fp8 shard must start on a 128 x 128 block");
    init_fill_e4m3_at(r, s, q, rows, cols, ld, row0 * ld + col0, seed);
    const long long kb_ld = LWB_CEIL_DIV(ld, 128);
    init_fill_f32_at(r, s, scales, LWB_CEIL_DIV(rows, 128), LWB_CEIL_DIV(cols, 128), kb_ld, (row0 / 128) * kb_ld + col0 / 128,
                     seed ^ 0x5ca1e5ULL, amax * 0.75f / 448.f, amax * 1.25f / 448.f);
}

// A gate/up pair in lwb's fp8 layout (see lwb_fill_e4m3_gateup) with its per-half scales.
static void init_fill_fp8_gateup(const struct lwb_kreq *r, CUstream s, CUdeviceptr q, CUdeviceptr scales,
                                 int experts, int e0, int inter, int j0, int inter_total, int hidden,
                                 unsigned long long seed, float amax) {
    unsigned long long sg = seed, su = seed ^ 0x7570ULL;
    float lo = amax * 0.75f / 448.f, hi = amax * 1.25f / 448.f;
    long long n = (long long)experts * 2 * inter * hidden;
    void *a1[] = {&q, &experts, &e0, &inter, &j0, &inter_total, &hidden, &sg, &su};
    cu_launch(kreq_func(r, "lwb_fill_e4m3_gateup"), (struct lwb_launch){{init_blocks(n, 1)}, {256}}, s, a1);
    unsigned long long ssg = sg ^ 0x5ca1e5ULL, ssu = su ^ 0x5ca1e5ULL;
    long long ns = (long long)experts * (2 * inter / 64) * (hidden / 128);
    void *a2[] = {&scales, &experts, &e0, &inter, &j0, &inter_total, &hidden, &ssg, &ssu, &lo, &hi};
    cu_launch(kreq_func(r, "lwb_fill_scales_gateup"), (struct lwb_launch){{init_blocks(ns, 1)}, {256}}, s, a2);
}

// bf16 copy of a block-scaled fp8 matrix (TensorRT-LLM's dequantised kv_b_proj).
static void init_dequant_fp8(const struct lwb_kreq *r, CUstream s, CUdeviceptr q, CUdeviceptr scales, long long rows,
                             long long cols, CUdeviceptr out) {
    void *args[] = {&q, &scales, &rows, &cols, &out};
    cu_launch(kreq_func(r, "lwb_dequant_e4m3"), (struct lwb_launch){{init_blocks(rows * cols, 1)}, {256}}, s, args);
}

// dst[z] = src[z]^T: z matrices of rows x cols (row strides src_ld, dst_ld; batch strides in
// elements).
static void init_transpose(const struct lwb_kreq *r, CUstream s, CUdeviceptr src, long long src_ld, long long src_z,
                           CUdeviceptr dst, long long dst_ld, long long dst_z, int rows, int cols, int z) {
    void *args[] = {&src, &src_ld, &src_z, &dst, &dst_ld, &dst_z, &rows, &cols};
    cu_launch(kreq_func(r, "lwb_transpose_bf16"),
              (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(cols, 32), (unsigned)LWB_CEIL_DIV(rows, 32), (unsigned)z}, {32, 8}},
              s, args);
}

static int init_samples(struct lwb_kreq *out, int max) {
    if (max < 1) return 0;
    init_request(&out[0]);
    return 1;
}

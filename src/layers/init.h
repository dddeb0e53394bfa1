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
static void init_fill_f32(const struct lwb_kreq *r, CUstream s, CUdeviceptr p, long long n,
                          unsigned long long seed, float lo, float hi) {
    if (n <= 0) return;
    void *args[] = {&p, &n, &seed, &lo, &hi};
    cu_launch(kreq_func(r, "lwb_fill_uniform_f32"), (struct lwb_launch){{init_blocks(n, 1)}, {256}}, s, args);
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

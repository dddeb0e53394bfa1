// layers/quant.h: host side of the quant kernel family (kernels/quant.cu.in): bf16 activations to
// fp8 e4m3 with one scale per row and 128 columns, for the fp8 GEMMs.
//
// Defines: quant_request, quant_enqueue (quant_enqueue_used: a row count on the device), quant_samples.
//
// NOTES (where lwb quantises, and why there): TensorRT-LLM quantises every fp8 linear's input in
// a separate kernel. lwb fuses it where the producer holds whole 128-column groups of a row: the
// RMSNorms (the previous layer's closing norm, the next layer's input_layernorm, before fused_a;
// q_a_layernorm before q_b; post_attention_layernorm before the shared experts and the dense MLP)
// and the MoE permutation (each routed copy of a token quantised as it is written). A separate
// pass remains after the SwiGLU products (the gate/up GEMM's 128-wide tile yields 64 outputs,
// half a scale group, so no tile knows a group's amax), before o_proj (the attention writes its
// output per head and split), and for the first selected layer's input (the problem's).
// Does not: own buffers. Tested by test/gpu/check.c against test/ref/gemm_fp8.c.
#pragma once

static void quant_request(struct lwb_kreq *r) {
    *r = (struct lwb_kreq){.family = "quant"};
    snprintf(r->label, sizeof r->label, "quant_1x128");
    kreq_set(r, "GROUP", 128);
    kreq_entry(r, "lwb_quant_1x128");
}

// x: rows x cols bf16 (row stride ld_x); q: rows x cols bytes (row stride ld_q); s: rows x cols/128.
// With used_a and used_b (device ints), only the first *used_a + *used_b rows (at most `rows`).
static void quant_enqueue_used(const struct lwb_kreq *r, CUstream s, CUdeviceptr x, long long ld_x, int rows, int cols,
                               CUdeviceptr q, long long ld_q, CUdeviceptr scales, long long ld_s, CUdeviceptr used_a,
                               CUdeviceptr used_b) {
    if (cols % 128 || rows < 0) LWB_BUG("quant: %d columns", cols);
    long long warps = (long long)rows * (cols / 128);
    if (warps == 0) return;
    void *args[] = {&x, &ld_x, &rows, &cols, &q, &ld_q, &scales, &ld_s, &used_a, &used_b};
    cu_launch(kreq_func(r, "lwb_quant_1x128"), (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(warps, 8)}, {256}}, s, args);
}

static void quant_enqueue(const struct lwb_kreq *r, CUstream s, CUdeviceptr x, long long ld_x, int rows, int cols,
                          CUdeviceptr q, long long ld_q, CUdeviceptr scales, long long ld_s) {
    quant_enqueue_used(r, s, x, ld_x, rows, cols, q, ld_q, scales, ld_s, 0, 0);
}

static int quant_samples(struct lwb_kreq *out, int max) {
    if (max < 1) return 0;
    quant_request(&out[0]);
    return 1;
}

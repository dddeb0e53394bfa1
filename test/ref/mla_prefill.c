// mla_prefill.c: the C reference of kernels/mla_prefill.cu.in.
//
// Per request, head and query i: scores over keys j <= past + i of q . [k_nope_j | k_rope_j]
// (192 wide) times the scale, softmax in double, output sum_j p_j v_j (128 wide).
//
// Tolerance: atol 2e-2, rtol 5e-2, relative L2 <= 1e-2, as mla_decode (bf16 probabilities in the
// weighted sum, one bf16 rounding of the output, convex combinations of O(1) values).
#pragma once
#include "ref.h"

#define MLA_PREFILL_ATOL 2e-2
#define MLA_PREFILL_RTOL 5e-2

// q: (batch*qlen, heads, 192); kn: (batch*pitch, heads, 128); kv: (batch*pitch, 576) rope in
// 512..575; vt: (heads, 128, key_stride); request b's keys start at row b*pitch.
// out: (batch*qlen, heads, 128) floats.
static void ref_mla_prefill(const uint16_t *q, const uint16_t *kn, const uint16_t *kv, const uint16_t *vt,
                            long key_stride, int pitch, int batch, int qlen, int kv_len, int heads, float scale,
                            float *out) {
    double *p = malloc(sizeof(double) * (size_t)kv_len);
    int past = kv_len - qlen;
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < qlen; i++)
            for (int h = 0; h < heads; h++) {
                const uint16_t *qr = q + (((size_t)b * qlen + i) * heads + h) * 192;
                int n = past + i + 1;
                double mx = -1e300, sum = 0;
                for (int j = 0; j < n; j++) {
                    size_t key = (size_t)b * pitch + j;
                    const uint16_t *k1 = kn + (key * heads + h) * 128, *k2 = kv + key * 576 + 512;
                    double s = 0;
                    for (int d = 0; d < 128; d++) s += (double)ref_bf16_to_f32(qr[d]) * ref_bf16_to_f32(k1[d]);
                    for (int d = 0; d < 64; d++) s += (double)ref_bf16_to_f32(qr[128 + d]) * ref_bf16_to_f32(k2[d]);
                    p[j] = s * scale;
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j < n; j++) sum += p[j] = exp(p[j] - mx);
                float *o = out + (((size_t)b * qlen + i) * heads + h) * 128;
                for (int d = 0; d < 128; d++) {
                    double acc = 0;
                    const uint16_t *vr = vt + ((size_t)h * 128 + d) * key_stride + (size_t)b * pitch;
                    for (int j = 0; j < n; j++) acc += p[j] * ref_bf16_to_f32(vr[j]);
                    o[d] = (float)(acc / sum);
                }
            }
    free(p);
}

// mla_decode.c: the C reference of kernels/mla_decode.cu.in.
//
// For each request b, query token i (of qlen) and head h: scores s_t = scale * q . c_t over the
// cached rows c_t (576 wide) for t <= kv_len[b] - qlen + i, softmax in double, output
// sum_t p_t * c_t[0:512].
//
// Tolerance: atol 2e-2, rtol 5e-2, relative L2 <= 1e-2. The kernel rounds the probabilities to
// bf16 before the weighted sum (2^-9 relative each, averaging out over hundreds of tokens) and
// its output once more; outputs are convex combinations of O(1) latents. A wrong page, row or
// mask moves whole rows by O(1).
#pragma once
#include "ref.h"

#define MLA_DECODE_ATOL 2e-2
#define MLA_DECODE_RTOL 5e-2

// q: (batch*qlen, heads, 576); cache: (blocks, page, 576); table: (batch, max_blocks).
static void ref_mla_decode(const uint16_t *q, const uint16_t *cache, const int *table, int max_blocks,
                           const int *kv_len, int batch, int qlen, int heads, int page, float scale, float *out) {
    double *p = NULL;
    int cap = 0;
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < qlen; i++) {
            int limit = kv_len[b] - (qlen - 1 - i);
            if (limit > cap) {
                free(p);
                cap = limit;
                p = malloc(sizeof *p * (size_t)cap);
            }
            for (int h = 0; h < heads; h++) {
                const uint16_t *qr = q + (((size_t)b * qlen + i) * heads + h) * 576;
                double mx = -1e300, sum = 0;
                for (int t = 0; t < limit; t++) {
                    const uint16_t *c = cache + ((size_t)table[b * max_blocks + t / page] * page + t % page) * 576;
                    double s = 0;
                    for (int d = 0; d < 576; d++) s += (double)ref_bf16_to_f32(qr[d]) * ref_bf16_to_f32(c[d]);
                    p[t] = s * scale;
                    if (p[t] > mx) mx = p[t];
                }
                for (int t = 0; t < limit; t++) sum += p[t] = exp(p[t] - mx);
                float *o = out + (((size_t)b * qlen + i) * heads + h) * 512;
                for (int d = 0; d < 512; d++) {
                    double acc = 0;
                    for (int t = 0; t < limit; t++) {
                        const uint16_t *c = cache + ((size_t)table[b * max_blocks + t / page] * page + t % page) * 576;
                        acc += p[t] * ref_bf16_to_f32(c[d]);
                    }
                    o[d] = (float)(acc / sum);
                }
            }
        }
    free(p);
}

// gqa.c: the C reference of kernels/gqa.cu.in.
//
// Preparation, per token and head: x from the projection row; with qk_norm,
// y = bf16(x * (1 / sqrt(mean(x^2) + eps)) * (1 + w)); with RoPE on the first R dims (NeoX halves),
// out_i = y_i cos - y_{i+R/2} sin, out_{i+R/2} = y_{i+R/2} cos + y_i sin (fp32, cos/sin of the
// token's position from the same fp32 tables), other dims pass; rounded to bf16. Values and gates
// are copied.
// Attention, per request b, query token i (position kv_len[b] - qlen + i) and head h (KV head
// h / (q_heads / kv_heads)): scores scale * q . k_t over t <= that position, softmax in double,
// output sum_t p_t v_t, times sigmoid(gate) when gated.
//
// Tolerances.
//   Preparation: atol 1.6e-2, rtol 8e-3, relative L2 <= 1e-3; copies (gates) exact. The kernel's
//   rsqrt and warp-order sum differ from C's in the last fp32 bits, which moves a normalised value
//   sitting on a rounding boundary by one bf16 step (2^-8..2^-7 relative: rtol). RoPE then mixes
//   two such values, and where a_i cos - b_i sin cancels, that step is absolute: one bf16 step of
//   the largest normalised values (RMS 1 times 1 + w, under 4: 2^-6, atol). A wrong rotation,
//   head, pair or cache row is off by O(1) and moves the relative L2 (1e-5 when right) far past
//   its bound.
//   Attention: atol 2e-2, rtol 5e-2, relative L2 <= 1e-2, the rule of mla_decode: the kernels
//   round probabilities to bf16 before P V (2^-9 relative each, averaging out over many keys)
//   and the output once; outputs are convex combinations of O(1) values, and a wrong page, row,
//   head or mask moves whole rows by O(1).
#pragma once
#include <stdlib.h>
#include "ref.h"

#define GQA_PREP_ATOL 1.6e-2
#define GQA_PREP_RTOL 8e-3
#define GQA_PREP_L2 1e-3
#define GQA_ATTN_ATOL 2e-2
#define GQA_ATTN_RTOL 5e-2
#define GQA_ATTN_L2 1e-2

struct ref_gqa_shape {
    int q_heads, kv_heads, head_dim, rope_dim;
    int qk_norm, gate;
};

// One head: src (head_dim) to dst (head_dim bf16); w: norm weights or NULL (no norm); cs/sn: the
// position's rope_dim/2 cosines and sines, or NULL.
static void ref_gqa_head(const uint16_t *src, const uint16_t *w, float eps, int hd, int rope, const float *cs,
                         const float *sn, uint16_t *dst) {
    float x[512];
    for (int d = 0; d < hd; d++) x[d] = ref_bf16_to_f32(src[d]);
    if (w) {
        float ss = 0.f;
        for (int d = 0; d < hd; d++) ss += x[d] * x[d];
        const float r = 1.0f / sqrtf(ss / (float)hd + eps);
        for (int d = 0; d < hd; d++) x[d] = ref_round_bf16(x[d] * r * (1.0f + ref_bf16_to_f32(w[d])));
    }
    if (cs && rope > 0) {
        const int half = rope / 2;
        for (int i = 0; i < half; i++) {
            const float a = x[i], b = x[i + half];
            x[i] = a * cs[i] - b * sn[i];
            x[i + half] = b * cs[i] + a * sn[i];
        }
    }
    for (int d = 0; d < hd; d++) dst[d] = ref_f32_to_bf16(x[d]);
}

// qkv: (tokens, ld) rows; pos: each token's position; outputs q, gate (tokens, q_heads, hd) and
// k, v (tokens, kv_heads, hd); gate may be NULL when not gated.
static void ref_gqa_prep(const uint16_t *qkv, long long ld, int tokens, struct ref_gqa_shape s, const uint16_t *q_norm_w,
                         const uint16_t *k_norm_w, float eps, const float *cos_t, const float *sin_t, const int *pos,
                         uint16_t *q, uint16_t *gate, uint16_t *k, uint16_t *v) {
    const int hd = s.head_dim, qw = s.gate ? 2 * hd : hd, half = s.rope_dim / 2;
    for (int t = 0; t < tokens; t++) {
        const uint16_t *row = qkv + (size_t)t * ld;
        const float *cs = s.rope_dim ? cos_t + (size_t)pos[t] * half : NULL;
        const float *sn = s.rope_dim ? sin_t + (size_t)pos[t] * half : NULL;
        for (int h = 0; h < s.q_heads; h++) {
            const uint16_t *src = row + (size_t)h * qw;
            ref_gqa_head(src, s.qk_norm ? q_norm_w : NULL, eps, hd, s.rope_dim, cs, sn,
                         q + ((size_t)t * s.q_heads + h) * hd);
            if (s.gate && gate) memcpy(gate + ((size_t)t * s.q_heads + h) * hd, src + hd, (size_t)hd * 2);
        }
        const uint16_t *kr = row + (size_t)s.q_heads * qw, *vr = kr + (size_t)s.kv_heads * hd;
        for (int h = 0; h < s.kv_heads; h++) {
            ref_gqa_head(kr + (size_t)h * hd, s.qk_norm ? k_norm_w : NULL, eps, hd, s.rope_dim, cs, sn,
                         k + ((size_t)t * s.kv_heads + h) * hd);
            memcpy(v + ((size_t)t * s.kv_heads + h) * hd, vr + (size_t)h * hd, (size_t)hd * 2);
        }
    }
}

// Row j of request b's keys (which 0) or values (1) of KV head h in a paged cache of blocks
// [2][kv_heads][page][hd].
static const uint16_t *ref_gqa_cache_row(const uint16_t *cache, const int *table, int max_blocks, int b, int j,
                                         int which, int h, int kv_heads, int page, int hd) {
    const size_t blk = (size_t)table[(size_t)b * max_blocks + j / page];
    return cache + (((blk * 2 + which) * kv_heads + h) * page + j % page) * hd;
}

// q, gate: (batch * qlen, q_heads, hd) (gate NULL: not gated); out: same shape, fp32.
static void ref_gqa_attn(const uint16_t *q, const uint16_t *gate, const uint16_t *cache, const int *table,
                         int max_blocks, const int *kv_len, int batch, int qlen, struct ref_gqa_shape s, int page,
                         float scale, float *out) {
    const int hd = s.head_dim, group = s.q_heads / s.kv_heads;
    int maxlen = 0;
    for (int b = 0; b < batch; b++) maxlen = kv_len[b] > maxlen ? kv_len[b] : maxlen;
    float *kf = malloc(sizeof(float) * (size_t)maxlen * hd), *vf = malloc(sizeof(float) * (size_t)maxlen * hd);
    double *p = malloc(sizeof(double) * (size_t)(maxlen > 0 ? maxlen : 1)), *acc = malloc(sizeof(double) * hd);
    float qf[512];
    for (int b = 0; b < batch; b++)
        for (int kh = 0; kh < s.kv_heads; kh++) {
            for (int j = 0; j < kv_len[b]; j++) { // the request's keys and values of this head, in fp32
                const uint16_t *kr = ref_gqa_cache_row(cache, table, max_blocks, b, j, 0, kh, s.kv_heads, page, hd);
                const uint16_t *vr = ref_gqa_cache_row(cache, table, max_blocks, b, j, 1, kh, s.kv_heads, page, hd);
                for (int d = 0; d < hd; d++)
                    kf[(size_t)j * hd + d] = ref_bf16_to_f32(kr[d]), vf[(size_t)j * hd + d] = ref_bf16_to_f32(vr[d]);
            }
            for (int i = 0; i < qlen; i++)
                for (int g = 0; g < group; g++) {
                    const int h = kh * group + g, limit = kv_len[b] - qlen + i + 1;
                    const size_t row = ((size_t)b * qlen + i) * s.q_heads + h;
                    for (int d = 0; d < hd; d++) qf[d] = ref_bf16_to_f32(q[row * hd + d]);
                    double mx = -1e300, sum = 0;
                    for (int t = 0; t < limit; t++) {
                        double dot = 0;
                        for (int d = 0; d < hd; d++) dot += (double)qf[d] * kf[(size_t)t * hd + d];
                        p[t] = dot * scale;
                        if (p[t] > mx) mx = p[t];
                    }
                    for (int d = 0; d < hd; d++) acc[d] = 0;
                    for (int t = 0; t < limit; t++) {
                        const double e = exp(p[t] - mx);
                        sum += e;
                        for (int d = 0; d < hd; d++) acc[d] += e * vf[(size_t)t * hd + d];
                    }
                    for (int d = 0; d < hd; d++) {
                        double o = acc[d] / sum;
                        if (gate) o *= 1.0 / (1.0 + exp(-(double)ref_bf16_to_f32(gate[row * hd + d])));
                        out[row * hd + d] = (float)o;
                    }
                }
        }
    free(kf), free(vf), free(p), free(acc);
}

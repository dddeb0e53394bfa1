// dsa_index.c: the C reference of kernels/dsa_index.cu.in (DeepSeek-V3.2's indexer up to its
// scores) and of the sparse form of kernels/mla_decode.cu.in.
//
// Preparation, per 128-vector: (keys) LayerNorm in fp32 with eps, weight and bias, rounded to bf16;
// non-interleaved RoPE on dims [0, rope) in fp32, rounded to bf16; the normalised Sylvester
// Hadamard transform in fp32, rounded to bf16; amax (at least 1e-4), scale 2^ceil(log2(amax /
// 448)), e4m3 of x / scale. Queries: RoPE, transform, quantisation; folded weight w * scale / 8 /
// sqrt(128). Tolerance: bytes equal or one e4m3 step apart (the GPU sums in another order, which
// may move a value across a rounding boundary), scales and folded weights within 1e-6 relative
// (power-of-two scales: equal unless an amax sits on a power of two).
//
// Scores: k_scale[s] * sum_h W[t][h] * max(0, sum_d q8[t][h][d] k8[s][d]) in double. Hopper's fp8
// tensor cores accumulate a 128-deep dot product with about 14 bits of mantissa (what DeepSeek's
// V3 report measured on H800), so each head's dot is exact to ~2^-14 of its largest partial sum:
// tolerance atol 1e-3 x the largest |score| of the case, rtol 1e-3, relative L2 <= 1e-3 (measured
// 1.5e-4 .. 2.4e-4). A wrong key, head or scale moves scores by O(1) of their size.
//
// Sparse attention: as ref_mla_decode over the rows a token's selection names (-1: none).
#pragma once
#include "ref.h"
#include "gemm_fp8.c"

#define DSA_SCORE_ATOL 1e-3 // times the largest |score|
#define DSA_SCORE_RTOL 1e-3
#define DSA_SCORE_L2 1e-3

// Rope, transform, quantise one 128-vector (values already bf16-exact); returns the scale.
static float ref_dsa_vec(float *v, const float *cs, const float *sn, int rope, uint8_t *out) {
    const int half = rope / 2;
    float tmp[128];
    for (int i = 0; i < half; i++) {
        const float a = v[i], b = v[i + half];
        tmp[i] = ref_round_bf16(a * cs[i] - b * sn[i]);
        tmp[i + half] = ref_round_bf16(b * cs[i] + a * sn[i]);
    }
    for (int i = 0; i < half; i++) v[i] = tmp[i], v[i + half] = tmp[i + half];
    for (int h = 1; h < 128; h *= 2)
        for (int j = 0; j < 128; j++)
            if (!(j & h)) {
                const float a = v[j], b = v[j + h];
                v[j] = a + b, v[j + h] = a - b;
            }
    float amax = 0;
    for (int i = 0; i < 128; i++) {
        v[i] = ref_round_bf16(v[i] * 0.08838834764831845f);
        amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = fmaxf(amax, 1e-4f);
    int e;
    const float m = frexpf(amax / 448.f, &e); // amax / 448 = m 2^e, m in [0.5, 1)
    const float scale = ldexpf(1.f, m == 0.5f ? e - 1 : e);
    for (int i = 0; i < 128; i++) out[i] = ref_f32_to_e4m3(v[i] / scale);
    return scale;
}

// Token t (request t / qlen, query t % qlen at position kv_len - qlen + i): its key into
// kout/kscale, its 64 heads' queries into q8 and folded weights into wt (when q is given).
// cos/sin: (positions, rope / 2).
static void ref_dsa_prep(const uint16_t *q, const uint16_t *k, const float *w, const float *ln_w, const float *ln_b,
                         float eps, const float *cos_t, const float *sin_t, int rope, const int *kv_len, int qlen,
                         int tokens, uint8_t *kout, float *kscale, uint8_t *q8, float *wt) {
    for (int t = 0; t < tokens; t++) {
        const int pos = kv_len[t / qlen] - qlen + t % qlen;
        const float *cs = cos_t + (size_t)pos * (rope / 2), *sn = sin_t + (size_t)pos * (rope / 2);
        float v[128], mean = 0, var = 0;
        for (int i = 0; i < 128; i++) mean += v[i] = ref_bf16_to_f32(k[(size_t)t * 128 + i]);
        mean /= 128;
        for (int i = 0; i < 128; i++) var += (v[i] - mean) * (v[i] - mean);
        const float rstd = 1.f / sqrtf(var / 128 + eps);
        for (int i = 0; i < 128; i++) v[i] = ref_round_bf16((v[i] - mean) * rstd * ln_w[i] + ln_b[i]);
        kscale[t] = ref_dsa_vec(v, cs, sn, rope, kout + (size_t)t * 128);
        if (!q) continue;
        for (int h = 0; h < 64; h++) {
            for (int i = 0; i < 128; i++) v[i] = ref_bf16_to_f32(q[((size_t)t * 64 + h) * 128 + i]);
            const float s = ref_dsa_vec(v, cs, sn, rope, q8 + ((size_t)t * 64 + h) * 128);
            wt[(size_t)t * 64 + h] = w[(size_t)t * 64 + h] * s * 0.125f * 0.08838834764831845f;
        }
    }
}

// Scores of every token against its visible keys: out row t (ld floats), keys 0 .. pos(t).
// keys/kscale: (batch, max_len) request-major (the cache gathered).
static void ref_dsa_logits(const uint8_t *q8, const float *wt, const uint8_t *keys, const float *kscale, int max_len,
                           const int *kv_len, int batch, int qlen, float *out, long ld) {
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < qlen; i++) {
            const int t = b * qlen + i, n = kv_len[b] - qlen + i + 1;
            for (int s = 0; s < n; s++) {
                const uint8_t *kr = keys + ((size_t)b * max_len + s) * 128;
                double acc = 0;
                for (int h = 0; h < 64; h++) {
                    const uint8_t *qr = q8 + ((size_t)t * 64 + h) * 128;
                    double dot = 0;
                    for (int d = 0; d < 128; d++) dot += (double)ref_e4m3_to_f32(qr[d]) * ref_e4m3_to_f32(kr[d]);
                    if (dot > 0) acc += dot * wt[(size_t)t * 64 + h];
                }
                out[(size_t)t * ld + s] = (float)(acc * kscale[(size_t)b * max_len + s]);
            }
        }
}

// Sparse absorbed attention: token t (request t / qlen) over the cache rows sel[t][j] (j < topk,
// -1 skipped); q: (tokens, heads, 576); out (tokens, heads, 512).
static void ref_mla_sparse(const uint16_t *q, const uint16_t *cache, const int *table, int max_blocks, const int *sel,
                           int topk, int tokens, int qlen, int heads, int page, float scale, float *out) {
    double *p = malloc(sizeof *p * (size_t)topk);
    for (int t = 0; t < tokens; t++) {
        const int b = t / qlen;
        for (int h = 0; h < heads; h++) {
            const uint16_t *qr = q + ((size_t)t * heads + h) * 576;
            double mx = -1e300, sum = 0;
            for (int j = 0; j < topk; j++) {
                const int id = sel[(size_t)t * topk + j];
                if (id < 0) continue;
                const uint16_t *c = cache + ((size_t)table[b * max_blocks + id / page] * page + id % page) * 576;
                double s = 0;
                for (int d = 0; d < 576; d++) s += (double)ref_bf16_to_f32(qr[d]) * ref_bf16_to_f32(c[d]);
                p[j] = s * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (int j = 0; j < topk; j++)
                if (sel[(size_t)t * topk + j] >= 0) sum += p[j] = exp(p[j] - mx);
            float *o = out + ((size_t)t * heads + h) * 512;
            for (int d = 0; d < 512; d++) {
                double acc = 0;
                for (int j = 0; j < topk; j++) {
                    const int id = sel[(size_t)t * topk + j];
                    if (id < 0) continue;
                    const uint16_t *c = cache + ((size_t)table[b * max_blocks + id / page] * page + id % page) * 576;
                    acc += p[j] * ref_bf16_to_f32(c[d]);
                }
                o[d] = (float)(acc / sum);
            }
        }
    }
    free(p);
}

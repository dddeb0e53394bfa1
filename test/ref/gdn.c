// gdn.c: the C references of kernels/gdn.cu.in (the Gated DeltaNet mixer of Qwen3-Next).
//
//   ref_gdn_conv   causal depthwise conv1d (no bias) + SiLU over q|k|v, with the conv-state cache
//   ref_gdn_rule   the gated delta rule token by token (the reference of both the chunked CTX
//                  kernels and the GEN step: the chunked form is never used here)
//   ref_gdn_norm   gated RMSNorm, norm before gate (transformers' Qwen3NextRMSNormGated)
//
// Sums in double: the reference must be more exact than the kernels it judges. Values the kernels
// store in bf16 are rounded to bf16 here too; the recurrent state is rounded to the cache dtype
// where the kernels store it (at the end for CTX, after every token for GEN). The fp16 and
// state-dtype helpers are mamba.c's (the same enum of cache dtypes).
//
// Tolerances (|got - ref| <= atol + rtol |ref| per element, and a bound on the relative L2 error),
// with q, k, v, z ~ U(-1, 1), beta in [0.2, 0.8], alpha in [0.5, 1), prior states ~ U(-0.5, 0.5):
//   conv     atol 1e-2, rtol 1e-2, rel_l2 5e-3: one bf16 rounding of an O(1) value (<= 0.4 %) plus
//            fp32 vs double sums of K terms; a wrong tap or channel is off by O(0.1..1).
//   conv state  exact: the kernel copies bf16 inputs.
//   CTX o    atol 1.5e-3, rtol 4e-2, rel_l2 1.5e-2: o is small (rms ~5e-3, max ~0.1: q carries
//            1/sqrt(Dk)); the chunked kernels round T, the scaled k and v, W, U, P, the
//            chunk-start state and V_new to bf16 before their tensor-core products, then o. A CPU
//            model of exactly these roundings, on these inputs at the test shapes, stays at
//            rel_l2 <= 4e-3 and max |err| <= 5e-4 (a quarter and a third of the bounds); an
//            indexing error (a token, head, chunk boundary or column slice) moves o by O(o),
//            rel_l2 >= 0.1.
//   GEN o    atol 2e-4, rtol 1e-2, rel_l2 5e-3: fp32 throughout, then one bf16 rounding (2^-9
//            relative); the state's per-token rounding may land one step apart in a few entries.
//   state    atol 3e-3, rtol 2e-2 (bf16 cache: atol 4e-3, rtol 3e-2), rel_l2 1e-2: entries are
//            O(0.05..0.5); the chunked path builds them from bf16 operands in fp32 sums (the model
//            above: rel_l2 <= 3e-3, max |err| <= 1.4e-3); the cache dtype's own rounding (2^-11 /
//            2^-8 relative) may land one step apart.
//   norm     atol 2e-2, rtol 2e-2, rel_l2 1e-2: three bf16 roundings of O(1) values plus fp32 vs
//            double for the head's mean square.
#pragma once
#include <stdlib.h>
#include "ref.h"
#include "mamba.c"

#define GDN_CONV_ATOL 1e-2
#define GDN_CONV_RTOL 1e-2
#define GDN_CONV_L2 5e-3
#define GDN_O_ATOL 1.5e-3
#define GDN_O_RTOL 4e-2
#define GDN_O_L2 1.5e-2
#define GDN_STEP_O_ATOL 2e-4
#define GDN_STEP_O_RTOL 1e-2
#define GDN_STEP_O_L2 5e-3
#define GDN_STATE_L2 1e-2
#define GDN_NORM_ATOL 2e-2
#define GDN_NORM_RTOL 2e-2
#define GDN_NORM_L2 1e-2
static double ref_gdn_state_atol(int dtype) { return dtype == 2 ? 4e-3 : 3e-3; }
static double ref_gdn_state_rtol(int dtype) { return dtype == 2 ? 3e-2 : 2e-2; }

struct ref_gdn_shape {
    int k_heads, v_heads, k_dim, v_dim, conv_k;
    int state_dtype; // 0 fp32, 1 fp16, 2 bf16
};

static int ref_gdn_conv_dim(struct ref_gdn_shape s) { return 2 * s.k_heads * s.k_dim + s.v_heads * s.v_dim; }

// proj: (batch * qlen, ld) bf16 (q|k|v at column 0); conv_w (K, conv_dim); conv_state (batch, K-1,
// conv_dim) bf16, read when has_past and replaced by the last K-1 inputs; out (batch * qlen,
// conv_dim): silu(conv) rounded to bf16.
static void ref_gdn_conv(struct ref_gdn_shape sh, const uint16_t *proj, long ld, const uint16_t *conv_w,
                         uint16_t *conv_state, int batch, int qlen, int has_past, float *out) {
    const int cd = ref_gdn_conv_dim(sh), k = sh.conv_k;
    uint16_t *nstate = malloc(sizeof(uint16_t) * (size_t)(k - 1) * cd);
    for (int b = 0; b < batch; b++) {
        uint16_t *st = conv_state + (size_t)b * (k - 1) * cd;
        // input at request position pos (negative: the cache, or zero)
#define REF_GDN_IN(pos, ch)                                                                        \
    ((pos) >= 0 ? proj[((size_t)b * qlen + (pos)) * ld + (ch)]                                      \
                : (has_past ? st[(size_t)(k - 1 + (pos)) * cd + (ch)] : (uint16_t)0))
        for (int i = 0; i < qlen; i++)
            for (int ch = 0; ch < cd; ch++) {
                double acc = 0;
                for (int w = 0; w < k; w++)
                    acc += (double)ref_bf16_to_f32(conv_w[(size_t)w * cd + ch]) *
                           ref_bf16_to_f32(REF_GDN_IN(i - (k - 1) + w, ch));
                out[((size_t)b * qlen + i) * cd + ch] = ref_round_bf16((float)(acc / (1.0 + exp(-acc))));
            }
        for (int j = 0; j < k - 1; j++)
            for (int ch = 0; ch < cd; ch++) nstate[(size_t)j * cd + ch] = REF_GDN_IN(qlen - (k - 1) + j, ch);
#undef REF_GDN_IN
        memcpy(st, nstate, sizeof(uint16_t) * (size_t)(k - 1) * cd);
    }
    free(nstate);
}

// beta and g of v-head h from projection row `row`.
static void ref_gdn_gate(struct ref_gdn_shape sh, const uint16_t *row, int h, const float *A_log,
                         const float *dt_bias, double *beta, double *g) {
    const int cd = ref_gdn_conv_dim(sh), vd = sh.v_heads * sh.v_dim;
    const double bv = ref_bf16_to_f32(row[cd + vd + h]), av = ref_bf16_to_f32(row[cd + vd + sh.v_heads + h]);
    const double x = av + dt_bias[h];
    *beta = 1.0 / (1.0 + exp(-bv));
    *g = -exp((double)A_log[h]) * (x > 20 ? x : log1p(exp(x)));
}

// The gated delta rule, request by request, token by token, per v-head h (k-head h / (Hv/Hk)):
//   q, k L2-normalised (eps 1e-6 inside the root), q /= sqrt(Dk); S = alpha S;
//   u = beta (v - S^T k); S += k u^T; o = S^T q.
// qkv: (batch * qlen, conv_dim) bf16 (q | k | v); state: (batch, Hv, Dk, Dv) floats as the cache
// holds them, read when has_past (else zero) and replaced by the final state rounded to the cache
// dtype; per_token: round the state to the cache dtype after every token (the GEN step's
// semantics). o: (batch * qlen, Hv * Dv), rounded to bf16.
static void ref_gdn_rule(struct ref_gdn_shape sh, const uint16_t *proj, long ld, const uint16_t *qkv,
                         const float *A_log, const float *dt_bias, float *state, int batch, int qlen, int has_past,
                         int per_token, float *o) {
    const int Hk = sh.k_heads, Hv = sh.v_heads, Dk = sh.k_dim, Dv = sh.v_dim, cd = ref_gdn_conv_dim(sh);
    double *s = malloc(sizeof(double) * (size_t)Dk * Dv), *q = malloc(sizeof(double) * Dk),
           *k = malloc(sizeof(double) * Dk), *u = malloc(sizeof(double) * Dv);
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < Hv; h++) {
            const int kh = h / (Hv / Hk);
            float *slot = state + ((size_t)b * Hv + h) * Dk * Dv;
            for (int e = 0; e < Dk * Dv; e++) s[e] = has_past ? slot[e] : 0.0;
            for (int i = 0; i < qlen; i++) {
                const size_t t = (size_t)b * qlen + i;
                const uint16_t *row = qkv + t * cd;
                double beta, g, sq = 0, sk = 0;
                ref_gdn_gate(sh, proj + t * ld, h, A_log, dt_bias, &beta, &g);
                const double alpha = exp(g);
                for (int d = 0; d < Dk; d++) {
                    q[d] = ref_bf16_to_f32(row[kh * Dk + d]);
                    k[d] = ref_bf16_to_f32(row[Hk * Dk + kh * Dk + d]);
                    sq += q[d] * q[d], sk += k[d] * k[d];
                }
                const double rq = 1.0 / sqrt(sq + 1e-6) / sqrt((double)Dk), rk = 1.0 / sqrt(sk + 1e-6);
                for (int d = 0; d < Dk; d++) q[d] *= rq, k[d] *= rk;
                for (int j = 0; j < Dv; j++) {
                    double ks = 0;
                    for (int d = 0; d < Dk; d++) ks += k[d] * s[(size_t)d * Dv + j];
                    u[j] = beta * (ref_bf16_to_f32(row[2 * Hk * Dk + h * Dv + j]) - alpha * ks);
                }
                for (int j = 0; j < Dv; j++) {
                    double acc = 0;
                    for (int d = 0; d < Dk; d++) {
                        double v = alpha * s[(size_t)d * Dv + j] + k[d] * u[j];
                        acc += q[d] * v;
                        s[(size_t)d * Dv + j] = per_token ? ref_mamba_state_round((float)v, sh.state_dtype) : v;
                    }
                    o[t * Hv * Dv + (size_t)h * Dv + j] = ref_round_bf16((float)acc);
                }
            }
            for (int e = 0; e < Dk * Dv; e++) slot[e] = ref_mamba_state_round((float)s[e], sh.state_dtype);
        }
    free(s), free(q), free(k), free(u);
}

// out[t][h][d] = bf16(bf16(w[d] bf16(o / sqrt(mean_d(o^2) + eps))) silu(z)), z the projection's z.
static void ref_gdn_norm(struct ref_gdn_shape sh, const uint16_t *proj, long ld, const uint16_t *o,
                         const uint16_t *norm_w, float eps, int tokens, float *out) {
    const int Hv = sh.v_heads, Dv = sh.v_dim, cd = ref_gdn_conv_dim(sh);
    for (int t = 0; t < tokens; t++)
        for (int h = 0; h < Hv; h++) {
            const size_t base = (size_t)t * Hv * Dv + (size_t)h * Dv;
            double ss = 0;
            for (int d = 0; d < Dv; d++) {
                double v = ref_bf16_to_f32(o[base + d]);
                ss += v * v;
            }
            const double rstd = 1.0 / sqrt(ss / Dv + eps);
            for (int d = 0; d < Dv; d++) {
                const double z = ref_bf16_to_f32(proj[(size_t)t * ld + cd + (size_t)h * Dv + d]);
                const float n = ref_round_bf16((float)(ref_bf16_to_f32(o[base + d]) * rstd));
                const float w = ref_round_bf16(ref_bf16_to_f32(norm_w[d]) * n);
                out[base + d] = ref_round_bf16((float)(w * (z / (1.0 + exp(-z)))));
            }
        }
}

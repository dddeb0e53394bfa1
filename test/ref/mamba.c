// mamba.c: the C references of kernels/mamba.cu.in (the Mamba2 mixer of Nemotron-H).
//
//   ref_mamba_conv   causal depthwise conv1d + bias + SiLU over xBC, with the conv-state cache
//   ref_mamba_scan   the selective-state recurrence token by token (the reference of both the
//                    chunked CTX kernels and the GEN step: the chunked form is never used here)
//   ref_mamba_norm   gated RMSNorm, norm_before_gate False
//
// Sums in double: the reference must be more exact than the kernels it judges. Values the kernels
// store in bf16 are rounded to bf16 here too; the ssm state is rounded to the cache dtype where
// the kernels store it (at the end for CTX, after every token for GEN).
//
// Tolerances (|got - ref| <= atol + rtol |ref| per element, and a bound on the relative L2 error),
// with inputs x, B, C, z ~ U(-1, 1), dt in [1e-3, 0.1], A = -(1..H), D ~ 1:
//   conv     atol 1e-2, rtol 1e-2, rel_l2 5e-3: one bf16 rounding of an O(1) value (<= 0.4 %) plus
//            fp32 vs double sums of K terms; a wrong tap or channel is off by O(0.1..1).
//   conv state  exact: the kernel copies bf16 inputs.
//   scan y   atol 3e-2, rtol 3e-2, rel_l2 1.5e-2: y is O(1); the CTX kernels round the scaled
//            x (chunk state), the decayed C.B^T and the chunk-start states to bf16 before their
//            tensor-core products (each ~0.2-0.4 % per term, sums of up to Q + N terms with
//            random signs), then y itself to bf16; an indexing error (a wrong token, head, group
//            or chunk boundary) moves y by O(0.1..1).
//   GEN y    atol 1e-2, rtol 1e-2, rel_l2 5e-3: fp32 throughout, one bf16 rounding.
//   state    atol 2e-3, rtol 2e-2 (fp32 / fp16 cache; bf16 cache: atol 4e-3, rtol 3e-2),
//            rel_l2 1e-2: states are O(0.01..0.3); the chunked path builds them from bf16
//            operands in fp32 sums; the cache dtype's own rounding (2^-11 / 2^-8 relative) may
//            land one step apart.
//   norm     atol 2e-2, rtol 2e-2, rel_l2 1e-2: two bf16 roundings (v, then w v) of O(1) values
//            plus fp32 vs double for the group's mean square.
#pragma once
#include <stdlib.h>
#include "ref.h"

#define MAMBA_CONV_ATOL 1e-2
#define MAMBA_CONV_RTOL 1e-2
#define MAMBA_CONV_L2 5e-3
#define MAMBA_Y_ATOL 3e-2
#define MAMBA_Y_RTOL 3e-2
#define MAMBA_Y_L2 1.5e-2
#define MAMBA_STEP_Y_ATOL 1e-2
#define MAMBA_STEP_Y_RTOL 1e-2
#define MAMBA_STEP_Y_L2 5e-3
#define MAMBA_STATE_L2 1e-2
#define MAMBA_NORM_ATOL 2e-2
#define MAMBA_NORM_RTOL 2e-2
#define MAMBA_NORM_L2 1e-2
static double ref_mamba_state_atol(int dtype) { return dtype == 2 ? 4e-3 : 2e-3; }
static double ref_mamba_state_rtol(int dtype) { return dtype == 2 ? 3e-2 : 2e-2; }

struct ref_mamba_shape {
    int heads, head_dim, groups, state, conv_k, norm_group;
    int state_dtype; // 0 fp32, 1 fp16, 2 bf16
};

static int ref_mamba_di(struct ref_mamba_shape s) { return s.heads * s.head_dim; }
static int ref_mamba_conv_dim(struct ref_mamba_shape s) { return s.heads * s.head_dim + 2 * s.groups * s.state; }

// fp16 <-> fp32, round to nearest even (subnormals kept), as cvt.rn.f16.f32 does.
static inline uint16_t ref_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;          // NaN
    if (a >= 0x47800000u) return sign | 0x7c00u;         // overflow (and inf) -> inf
    if (a < 0x38800000u) {                               // fp16 subnormal: multiples of 2^-24
        float v;
        memcpy(&v, &a, 4);
        return sign | (uint16_t)nearbyintf(v * 16777216.0f); // exact scaling; 1024 is the first normal
    }
    uint32_t h = ((((a >> 23) - 127 + 15) << 10) | ((a & 0x7fffffu) >> 13));
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; // a carry may reach inf: correct
    return sign | (uint16_t)h;
}
static inline float ref_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0) {
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) u = sign | 0x7f800000u | (m << 13);
    else u = sign | ((e - 15 + 127) << 23) | (m << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// A state value as a cache of `dtype` holds it.
static inline float ref_mamba_state_round(float v, int dtype) {
    if (dtype == 1) return ref_f16_to_f32(ref_f32_to_f16(v));
    if (dtype == 2) return ref_round_bf16(v);
    return v;
}
// Raw cache bytes <-> floats (n elements).
static void ref_mamba_state_to_f32(const void *raw, int dtype, size_t n, float *out) {
    for (size_t i = 0; i < n; i++)
        out[i] = dtype == 0 ? ((const float *)raw)[i]
                 : dtype == 1 ? ref_f16_to_f32(((const uint16_t *)raw)[i])
                              : ref_bf16_to_f32(((const uint16_t *)raw)[i]);
}
static void ref_mamba_state_from_f32(const float *in, int dtype, size_t n, void *raw) {
    for (size_t i = 0; i < n; i++) {
        if (dtype == 0) ((float *)raw)[i] = in[i];
        else if (dtype == 1) ((uint16_t *)raw)[i] = ref_f32_to_f16(in[i]);
        else ((uint16_t *)raw)[i] = ref_f32_to_bf16(in[i]);
    }
}

static inline float ref_softplus(float v) { return v > 20.f ? v : log1pf(expf(v)); }

// zxbcdt: (batch * qlen, ld) bf16; conv_w (K, conv_dim); conv_b (conv_dim) or NULL;
// conv_state (batch, K-1, conv_dim) bf16, read when has_past and replaced by the last K-1 inputs;
// out (batch * qlen, conv_dim): silu(conv) rounded to bf16.
static void ref_mamba_conv(struct ref_mamba_shape sh, const uint16_t *zxbcdt, long ld, const uint16_t *conv_w,
                           const uint16_t *conv_b, uint16_t *conv_state, int batch, int qlen, int has_past,
                           float *out) {
    const int di = ref_mamba_di(sh), cd = ref_mamba_conv_dim(sh), k = sh.conv_k;
    uint16_t *nstate = malloc(sizeof(uint16_t) * (size_t)(k - 1) * cd);
    for (int b = 0; b < batch; b++) {
        uint16_t *st = conv_state + (size_t)b * (k - 1) * cd;
        // input at request position pos (negative: the cache, or zero)
#define REF_CONV_IN(pos, ch)                                                                      \
    ((pos) >= 0 ? zxbcdt[((size_t)b * qlen + (pos)) * ld + di + (ch)]                              \
                : (has_past ? st[(size_t)(k - 1 + (pos)) * cd + (ch)] : (uint16_t)0))
        for (int i = 0; i < qlen; i++)
            for (int ch = 0; ch < cd; ch++) {
                double acc = conv_b ? ref_bf16_to_f32(conv_b[ch]) : 0.0;
                for (int w = 0; w < k; w++)
                    acc += (double)ref_bf16_to_f32(conv_w[(size_t)w * cd + ch]) *
                           ref_bf16_to_f32(REF_CONV_IN(i - (k - 1) + w, ch));
                out[((size_t)b * qlen + i) * cd + ch] = ref_round_bf16((float)(acc / (1.0 + exp(-acc))));
            }
        for (int j = 0; j < k - 1; j++)
            for (int ch = 0; ch < cd; ch++) nstate[(size_t)j * cd + ch] = REF_CONV_IN(qlen - (k - 1) + j, ch);
#undef REF_CONV_IN
        memcpy(st, nstate, sizeof(uint16_t) * (size_t)(k - 1) * cd);
    }
    free(nstate);
}

// The recurrence, request by request, token by token:
//   dt = softplus(dt_raw + dt_bias[h]), S = exp(dt A[h]) S + dt x (x) B_g, y = S . C_g + D[h] x.
// xbc: (batch * qlen, conv_dim) bf16 (x | B | C); state: (batch, H, P, N) floats as the cache holds
// them, read when has_past (else zero) and replaced by the final state rounded to the cache dtype;
// per_token: round the state to the cache dtype after every token (the GEN step's semantics).
// y: (batch * qlen, H * P), rounded to bf16.
static void ref_mamba_scan(struct ref_mamba_shape sh, const uint16_t *zxbcdt, long ld, const uint16_t *xbc,
                           const float *A, const float *dt_bias, const float *D, float *state, int batch, int qlen,
                           int has_past, int per_token, float *y) {
    const int H = sh.heads, P = sh.head_dim, N = sh.state, G = sh.groups, di = ref_mamba_di(sh);
    const int cd = ref_mamba_conv_dim(sh);
    double *s = malloc(sizeof(double) * (size_t)P * N);
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < H; h++) {
            const int g = h / (H / G);
            float *slot = state + ((size_t)b * H + h) * P * N;
            for (int e = 0; e < P * N; e++) s[e] = has_past ? slot[e] : 0.0;
            for (int i = 0; i < qlen; i++) {
                const size_t t = (size_t)b * qlen + i;
                const float dt = ref_softplus(ref_bf16_to_f32(zxbcdt[t * ld + di + cd + h]) + dt_bias[h]);
                const double da = exp((double)dt * A[h]);
                const uint16_t *row = xbc + t * cd;
                for (int p = 0; p < P; p++) {
                    const double x = ref_bf16_to_f32(row[h * P + p]);
                    double acc = 0;
                    for (int n = 0; n < N; n++) {
                        double v = s[(size_t)p * N + n] * da + dt * x * ref_bf16_to_f32(row[di + g * N + n]);
                        acc += v * ref_bf16_to_f32(row[di + G * N + g * N + n]);
                        s[(size_t)p * N + n] = per_token ? ref_mamba_state_round((float)v, sh.state_dtype) : v;
                    }
                    y[t * di + h * P + p] = ref_round_bf16((float)(acc + D[h] * x));
                }
            }
            for (int e = 0; e < P * N; e++) slot[e] = ref_mamba_state_round((float)s[e], sh.state_dtype);
        }
    free(s);
}

// out[t][c] = bf16(w[c] * bf16(v / sqrt(mean_group(v^2) + eps))), v = y silu(z), z = zxbcdt[t][c].
static void ref_mamba_norm(struct ref_mamba_shape sh, const uint16_t *zxbcdt, long ld, const uint16_t *y,
                           const uint16_t *norm_w, float eps, int tokens, float *out) {
    const int di = ref_mamba_di(sh), ng = sh.norm_group;
    double *v = malloc(sizeof(double) * (size_t)ng);
    for (int t = 0; t < tokens; t++)
        for (int c0 = 0; c0 < di; c0 += ng) {
            double ss = 0;
            for (int i = 0; i < ng; i++) {
                double z = ref_bf16_to_f32(zxbcdt[(size_t)t * ld + c0 + i]);
                v[i] = ref_bf16_to_f32(y[(size_t)t * di + c0 + i]) * (z / (1.0 + exp(-z)));
                ss += v[i] * v[i];
            }
            const double rstd = 1.0 / sqrt(ss / ng + eps);
            for (int i = 0; i < ng; i++)
                out[(size_t)t * di + c0 + i] =
                    ref_round_bf16(ref_bf16_to_f32(norm_w[c0 + i]) * ref_round_bf16((float)(v[i] * rstd)));
        }
    free(v);
}

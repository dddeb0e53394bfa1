// gemm_fp8.c: the C reference of kernels/gemm_fp8.cu.in, and of the 1 x 128 activation
// quantisation (kernels/quant.cu.in and the rmsnorm family's fused variant).
//
// C[r, n] = sum over 128-deep K blocks kb of sa[r][kb] * sb[n / SB][kb] * sum_k A[r, k] B[n, k],
// with A and B e4m3 bytes decoded exactly and the sums taken in double. Epilogues as the
// kernel's: bf16 C, fp32 C, SwiGLU of 64-column gate/up halves of every 128 columns (the fp8
// gate/up layout). The quantisation: per 128 values, q = e4m3(x * 448 / amax) (1 when amax is
// 0), scale = amax / 448 (TensorRT-LLM's fp8_quantize_1x128).
//
// Tolerance: relative L2 <= 1e-2 with atol 2e-2, rtol 2e-2 per element on outputs of O(1): the
// kernel's fp32 sums of exactly representable e4m3 products drift by ~2^-20 relative, the scale
// promotion adds one fp32 rounding per block, and bf16 rounding of C adds 2^-9; a wrong scale,
// block or row is O(1) off.
#pragma once
#include "ref.h"

#define GEMM_FP8_ATOL 2e-2
#define GEMM_FP8_RTOL 2e-2

// e4m3: sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities, S.1111.111 is NaN.
static inline float ref_e4m3_to_f32(uint8_t v) {
    int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    if (e == 15 && m == 7) return NAN;
    float f = e == 0 ? ldexpf((float)m / 8.f, -6) : ldexpf(1.f + (float)m / 8.f, e - 7);
    return s ? -f : f;
}
// Round to the nearest e4m3 (ties to the even code), saturating at +-448, as cvt.rn.satfinite.
static inline uint8_t ref_f32_to_e4m3(float f) {
    if (isnan(f)) return 0x7f;
    uint8_t sign = f < 0 ? 0x80 : 0;
    double a = fabs((double)f);
    if (a >= 448.0) return sign | 0x7e;
    int e;
    frexp(a, &e); // a = m 2^e, m in [0.5, 1): the leading bit is 2^(e-1)
    int ex = e - 1;
    if (ex < -6) ex = -6; // subnormals share the smallest normal exponent's step
    double step = ldexp(1.0, ex - 3), q = a / step; // steps of 1/8 of the leading power
    double r = nearbyint(q);                        // ties to even
    if (fabs(q - floor(q) - 0.5) < 1e-12) r = fmod(floor(q), 2.0) == 0 ? floor(q) : floor(q) + 1;
    long code_val = (long)r; // value = code_val * step
    if (a == 0) return sign;
    int biased;
    long man;
    if (code_val >= 16) { // rounded up into the next power of two
        ex++, code_val /= 2;
    }
    if (ex == -6 && code_val < 8) biased = 0, man = code_val; // subnormal
    else biased = ex + 7, man = code_val - 8;
    if (biased > 15 || (biased == 15 && man > 6)) return sign | 0x7e;
    return sign | (uint8_t)(biased << 3) | (uint8_t)man;
}

// rows x cols (cols a multiple of 128) to e4m3 q and scales s (rows x cols / 128).
static void ref_quant_1x128(const float *x, int rows, int cols, uint8_t *q, float *s) {
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < cols / 128; g++) {
            float amax = 0;
            for (int i = 0; i < 128; i++) amax = fmaxf(amax, fabsf(x[(long)r * cols + g * 128 + i]));
            float mul = amax != 0.f ? 448.f / amax : 1.f;
            s[(long)r * (cols / 128) + g] = 1.f / mul;
            for (int i = 0; i < 128; i++) q[(long)r * cols + g * 128 + i] = ref_f32_to_e4m3(x[(long)r * cols + g * 128 + i] * mul);
        }
}

// A: m x k bytes (row stride lda) with sa (m x k/128); B: n x k (row stride ldb) with sb
// (ceil(n / sb_rows) x k/128). out: m x n floats (epilogue 0: bf16-rounded, 1: fp32) or m x n/2
// (epilogue 3).
static void ref_gemm_fp8(const uint8_t *a, long lda, const float *sa, const uint8_t *b, long ldb, const float *sb,
                         int sb_rows, int m, int n, int k, int epilogue, float *out) {
    const int kb = k / 128;
    double *row = malloc(sizeof(double) * (size_t)n);
    for (int r = 0; r < m; r++) {
        for (int c = 0; c < n; c++) {
            double s = 0;
            for (int blk = 0; blk < kb; blk++) {
                double p = 0;
                for (int i = blk * 128; i < blk * 128 + 128; i++)
                    p += (double)ref_e4m3_to_f32(a[r * lda + i]) * ref_e4m3_to_f32(b[c * ldb + i]);
                s += p * sa[(long)r * kb + blk] * sb[(long)(c / sb_rows) * kb + blk];
            }
            row[c] = s;
        }
        for (int c = 0; c < n; c++) {
            if (epilogue == 0) out[(long)r * n + c] = ref_round_bf16((float)row[c]);
            else if (epilogue == 1) out[(long)r * n + c] = (float)row[c];
            else if (c % 128 < 64) {
                float g = (float)row[c], u = (float)row[c + 64];
                out[(long)r * (n / 2) + (c / 128) * 64 + c % 128] = ref_round_bf16(g / (1.0f + expf(-g)) * u);
            }
        }
    }
    free(row);
}

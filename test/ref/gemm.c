// gemm.c: the C reference of kernels/gemm.cu.in.
//
// C[r, c] = sum_k A[r, k] * B[c, k] over bf16 inputs, accumulated in double; epilogues as the
// kernel's: bf16 C (rounded once), fp32 C, SwiGLU of interleaved (gate, up) column pairs, or relu(C)^2.
//
// Tolerance: atol 2e-2, rtol 2e-2 on outputs normalised to O(1) (inputs uniform in [-1, 1],
// B scaled by 1/sqrt(K)). The kernel's fp32 accumulation over K <= 16384 terms of O(1/sqrt(K))
// drifts by far less than 1e-3 relative; bf16 rounding of C adds 2^-9. SwiGLU multiplies two
// such values (plus the sigmoid's __expf error, ~1e-6), so 2 % covers it, while a wrong tile,
// swizzle or row is O(1) off.
#pragma once
#include "ref.h"

#define GEMM_ATOL 2e-2
#define GEMM_RTOL 2e-2

// A: M x K (row stride lda), B: N x K (row stride ldb). out: M x N floats (or N/2 for SwiGLU).
static void ref_gemm(const uint16_t *a, long lda, const uint16_t *b, long ldb, int m, int n, int k,
                     int epilogue, float *out) {
    for (int r = 0; r < m; r++) {
        for (int c = 0; c < n; c++) {
            double s = 0;
            for (int i = 0; i < k; i++)
                s += (double)ref_bf16_to_f32(a[r * lda + i]) * ref_bf16_to_f32(b[c * ldb + i]);
            if (epilogue == 0) out[(long)r * n + c] = ref_round_bf16((float)s);
            else if (epilogue == 1) out[(long)r * n + c] = (float)s;
            else if (epilogue == 4) out[(long)r * n + c] = ref_round_bf16(s > 0 ? (float)(s * s) : 0.f);
            else if (c % 2 == 1) {
                double g = 0;
                for (int i = 0; i < k; i++)
                    g += (double)ref_bf16_to_f32(a[r * lda + i]) * ref_bf16_to_f32(b[(c - 1) * ldb + i]);
                float gf = (float)g, uf = (float)s;
                out[(long)r * (n / 2) + c / 2] = ref_round_bf16(gf / (1.0f + expf(-gf)) * uf);
            }
        }
    }
}

// rmsnorm.c: the C reference of kernels/rmsnorm.cu.in.
//
// y = (x + r) / sqrt(mean((x + r)^2) + eps) * w per row, the sum (x + r) rounded to bf16 and
// written back to r when `residual` is set. fp64 accumulation: the reference must be more exact
// than the kernel it judges.
//
// Tolerance: atol 1e-2, rtol 1e-2. The kernel rounds its output to bf16 once (relative error
// <= 2^-9 = 0.2 %); fp32 vs fp64 accumulation differs by far less; outputs are O(1) because the
// weights are O(1), so 1 % relative plus 0.01 absolute (for values near zero) bounds one or two
// bf16 rounding steps with margin, while any indexing error (a wrong element) is far larger.
#pragma once
#include "ref.h"

#define RMSNORM_ATOL 1e-2
#define RMSNORM_RTOL 1e-2

static void ref_rmsnorm(const uint16_t *x, long x_stride, uint16_t *residual, long res_stride,
                        const uint16_t *w, float *y, long y_stride, int rows, int hidden, float eps) {
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < hidden; i++) {
            float v = ref_bf16_to_f32(x[r * x_stride + i]);
            if (residual) v = ref_round_bf16(v + ref_bf16_to_f32(residual[r * res_stride + i]));
            ss += (double)v * v;
        }
        double inv = 1.0 / sqrt(ss / hidden + eps);
        for (int i = 0; i < hidden; i++) {
            float v = ref_bf16_to_f32(x[r * x_stride + i]);
            if (residual) v = ref_round_bf16(v + ref_bf16_to_f32(residual[r * res_stride + i]));
            y[r * y_stride + i] = (float)(v * inv * ref_bf16_to_f32(w[i]));
        }
        if (residual)
            for (int i = 0; i < hidden; i++) {
                float v = ref_bf16_to_f32(x[r * x_stride + i]) + ref_bf16_to_f32(residual[r * res_stride + i]);
                residual[r * res_stride + i] = ref_f32_to_bf16(v);
            }
    }
}

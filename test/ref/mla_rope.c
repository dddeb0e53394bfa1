// mla_rope.c: the C reference of kernels/mla_rope.cu.in's rotation (interleaved pairs taken
// apart, then rotated as halves, as transformers' apply_rotary_pos_emb_interleave does).
//
// Tolerance: atol 1e-2, rtol 1e-2 (one bf16 rounding of O(1) values; cos/sin are the same fp32
// tables on both sides).
#pragma once
#include "ref.h"

static void ref_rope64(const uint16_t *x, const float *cs, const float *sn, float *out) {
    for (int i = 0; i < 32; i++) {
        float x0 = ref_bf16_to_f32(x[2 * i]), x1 = ref_bf16_to_f32(x[2 * i + 1]);
        out[i] = x0 * cs[i] - x1 * sn[i];
        out[i + 32] = x1 * cs[i] + x0 * sn[i];
    }
}

// ref.h: shared pieces of the C references: bf16 rounding as the GPU does it, a seeded random
// generator, and the comparison every check uses.
//
// Tolerance rule (one for all families, chosen for bf16 storage with fp32 accumulation): an
// element passes when |got - ref| <= atol + rtol * |ref|; the whole tensor also reports its
// relative L2 error ||got - ref|| / ||ref||. Each family states its atol/rtol next to its
// reference, with how they were chosen.
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static inline float ref_bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
// Round to nearest even, as cvt.rn.bf16.f32 does (NaN stays NaN).
static inline uint16_t ref_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float ref_round_bf16(float f) { return ref_bf16_to_f32(ref_f32_to_bf16(f)); }

// splitmix64: a seeded stream of 64-bit values.
struct ref_rng {
    uint64_t s;
};
static inline uint64_t ref_next(struct ref_rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
// Uniform in [lo, hi).
static inline float ref_uniform(struct ref_rng *r, float lo, float hi) {
    return lo + (hi - lo) * (float)((ref_next(r) >> 40) * (1.0 / 16777216.0));
}
static inline void ref_fill_bf16(struct ref_rng *r, uint16_t *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = ref_f32_to_bf16(ref_uniform(r, lo, hi));
}

struct ref_diff {
    double max_abs, max_rel, rel_l2;
    size_t bad;      // elements outside atol + rtol*|ref|
    size_t nonfinite;
};

// Compare `got` with `ref` (n floats); print the first mismatches with their indices.
static inline struct ref_diff ref_compare(const char *what, const float *got, const float *ref, size_t n,
                                          double atol, double rtol, int print) {
    struct ref_diff d = {0};
    double num = 0, den = 0;
    int shown = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], e = ref[i], ad = fabs(g - e);
        if (!isfinite(g)) {
            d.nonfinite++;
            d.bad++;
            continue;
        }
        num += ad * ad;
        den += e * e;
        if (ad > d.max_abs) d.max_abs = ad;
        if (fabs(e) > 1e-6 && ad / fabs(e) > d.max_rel) d.max_rel = ad / fabs(e);
        if (ad > atol + rtol * fabs(e)) {
            if (print && shown < 10) {
                fprintf(stderr, "  %s[%zu]: got %.6g, expected %.6g\n", what, i, g, e);
                shown++;
            }
            d.bad++;
        }
    }
    d.rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    return d;
}

// moe_route.c: the C reference of kernels/moe_route.cu.in's routing (the permutation and the
// combine are checked by their invariants in test/gpu/check.c).
//
// DeepSeek-V3 routing as transformers' DeepseekV3TopkRouter and DeepSeek's inference code do it:
// s = sigmoid(logit); choice = s + bias; group score = sum of the group's two best choices; keep
// topk_group groups; top_k experts by choice among them; weights = s of the chosen, divided by
// their sum when norm, times the scaling factor. Ties: the lower index first (the kernel's rule).
//
// Qwen's softmax routing (ref_moe_topk_softmax): probabilities = softmax over every expert's logit;
// the top_k by probability; renormalised to sum 1 when norm, times the scaling factor.
//
// Tolerance: expert ids must match exactly; weights within 1e-4 relative (the kernel uses
// __expf, ~2 ulp).
#pragma once
#include "ref.h"

static void ref_moe_topk(const float *logits, const float *bias, int tokens, int experts, int top_k, int groups,
                         int topk_group, int norm, float scaling, int *ids, float *w) {
    float *score = malloc(sizeof(float) * (size_t)experts), *choice = malloc(sizeof(float) * (size_t)experts);
    int epg = experts / groups;
    for (int t = 0; t < tokens; t++) {
        for (int e = 0; e < experts; e++) {
            score[e] = 1.0f / (1.0f + expf(-logits[(size_t)t * experts + e]));
            choice[e] = score[e] + bias[e];
        }
        float gs[64];
        for (int g = 0; g < groups; g++) {
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int e = g * epg; e < (g + 1) * epg; e++) {
                if (choice[e] > b1) b2 = b1, b1 = choice[e];
                else if (choice[e] > b2) b2 = choice[e];
            }
            gs[g] = b1 + b2;
        }
        unsigned long long keep = 0;
        for (int r = 0; r < topk_group; r++) {
            int best = -1;
            for (int g = 0; g < groups; g++)
                if (!(keep >> g & 1) && (best < 0 || gs[g] > gs[best])) best = g;
            keep |= 1ULL << best;
        }
        for (int e = 0; e < experts; e++)
            if (!(keep >> (e / epg) & 1)) choice[e] = -INFINITY;
        float sum = 0;
        for (int k = 0; k < top_k; k++) {
            int best = -1;
            for (int e = 0; e < experts; e++)
                if (best < 0 || choice[e] > choice[best]) best = e;
            ids[t * top_k + k] = best;
            w[t * top_k + k] = score[best];
            sum += score[best];
            choice[best] = -INFINITY;
        }
        for (int k = 0; k < top_k; k++) w[t * top_k + k] *= norm ? scaling / (sum + 1e-20f) : scaling;
    }
    free(score), free(choice);
}

static void ref_moe_topk_softmax(const float *logits, int tokens, int experts, int top_k, int norm, float scaling,
                                 int *ids, float *w) {
    float *p = malloc(sizeof(float) * (size_t)experts);
    for (int t = 0; t < tokens; t++) {
        const float *l = logits + (size_t)t * experts;
        float m = -INFINITY;
        for (int e = 0; e < experts; e++) m = fmaxf(m, l[e]);
        double total = 0;
        for (int e = 0; e < experts; e++) p[e] = expf(l[e] - m), total += p[e];
        double sum = 0;
        for (int k = 0; k < top_k; k++) {
            int best = -1;
            for (int e = 0; e < experts; e++)
                if (best < 0 || p[e] > p[best]) best = e;
            ids[t * top_k + k] = best;
            w[t * top_k + k] = p[best];
            sum += p[best];
            p[best] = -1.f;
        }
        for (int k = 0; k < top_k; k++) w[t * top_k + k] = (float)(w[t * top_k + k] * scaling / (norm ? sum : total));
    }
    free(p);
}

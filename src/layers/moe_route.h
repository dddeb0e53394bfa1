// layers/moe_route.h: host side of the moe_route kernel family (kernels/moe_route.cu.in):
// DeepSeek-V3 expert choice and the permutation around the grouped expert GEMMs.
//
// Defines: struct moe_route_config, moe_route_request, and one enqueue function per kernel:
// moe_topk_enqueue, moe_permute_enqueue (count, plan, scatter), moe_combine_enqueue;
// moe_route_samples.
//
// Does not: compute the gate logits (a gemm with an fp32 epilogue) or the experts (grouped gemm).
// Tested by test/gpu/check.c against test/ref/moe_route.c.
#pragma once

struct moe_route_config {
    int experts, top_k, groups, topk_group, norm, hidden;
};

static void moe_route_request(struct lwb_kreq *r, struct moe_route_config c) {
    *r = (struct lwb_kreq){.family = "moe_route"};
    snprintf(r->label, sizeof r->label, "moe_route_e%d_k%d_g%d_%d_h%d", c.experts, c.top_k, c.groups, c.topk_group,
             c.hidden);
    kreq_set(r, "EXPERTS", c.experts);
    kreq_set(r, "TOP_K", c.top_k);
    kreq_set(r, "GROUPS", c.groups);
    kreq_set(r, "TOPK_GROUP", c.topk_group);
    kreq_set(r, "NORM", c.norm);
    kreq_set(r, "HIDDEN", c.hidden);
    kreq_entry(r, "lwb_moe_topk");
    kreq_entry(r, "lwb_moe_count");
    kreq_entry(r, "lwb_moe_plan");
    kreq_entry(r, "lwb_moe_scatter");
    kreq_entry(r, "lwb_moe_combine");
}

// logits: `splits` slabs of (tokens, experts) fp32, `split_stride` floats apart, that sum to the
// router logits (the gate GEMM's split-K partials); bias: (experts) fp32; override: (tokens,
// top_k) int32 or 0.
static void moe_topk_enqueue(const struct lwb_kreq *r, CUstream s, CUdeviceptr logits, int splits,
                             long long split_stride, CUdeviceptr bias, int tokens, float scaling,
                             CUdeviceptr override_ids, CUdeviceptr ids, CUdeviceptr weights) {
    if (tokens == 0) return;
    void *args[] = {&logits, &splits, &split_stride, &bias, &tokens, &scaling, &override_ids, &ids, &weights};
    cu_launch(kreq_func(r, "lwb_moe_topk"), (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(tokens, 8)}, {256}}, s, args);
}

// Device buffers of the permutation (sizes from moe_permute_sizes).
struct moe_perm {
    CUdeviceptr counts;   // (experts) int
    CUdeviceptr offsets;  // (experts) int
    CUdeviceptr fill;     // (experts) int
    CUdeviceptr tiles_a;  // (max_tiles_a) int4: tile list of the first grouped GEMM
    CUdeviceptr tiles_b;  // (max_tiles_b) int4: of the second
    CUdeviceptr ntiles;   // (2) int
    CUdeviceptr perm_row; // (tokens, top_k) int: row of each (token, slot)
};

static int moe_max_tiles(int tokens, int top_k, int experts, int tile_rows) {
    return LWB_CEIL_DIV(tokens * top_k, tile_rows) + experts;
}

// Count tokens per expert, plan offsets and tile lists (rows_a / rows_b rows per entry), then
// copy every token's hidden state to its rows of x_perm.
static void moe_permute_enqueue(const struct lwb_kreq *r, struct moe_route_config c, CUstream s,
                                struct moe_perm *p, CUdeviceptr ids, int tokens, int rows_a, int rows_b,
                                CUdeviceptr x, CUdeviceptr x_perm) {
    CU_CHECK(lwb_cu.cuMemsetD32Async(p->counts, 0, (size_t)c.experts, s));
    int n = tokens * c.top_k;
    if (n > 0) {
        void *a1[] = {&ids, &n, &p->counts};
        cu_launch(kreq_func(r, "lwb_moe_count"), (struct lwb_launch){{(unsigned)LWB_MIN(LWB_CEIL_DIV(n, 256), 264)}, {256}},
                  s, a1);
    }
    CUdeviceptr na = p->ntiles, nb = p->ntiles + 4;
    void *a2[] = {&p->counts, &rows_a, &rows_b, &p->offsets, &p->tiles_a, &na, &p->tiles_b, &nb, &p->fill};
    cu_launch(kreq_func(r, "lwb_moe_plan"), (struct lwb_launch){{1}, {(unsigned)LWB_CEIL_DIV(c.experts, 32) * 32}}, s, a2);
    if (n > 0) {
        void *a3[] = {&ids, &tokens, &p->offsets, &p->fill, &p->perm_row, &x, &x_perm};
        cu_launch(kreq_func(r, "lwb_moe_scatter"), (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(n, 8)}, {256}}, s, a3);
    }
}

// out[t] = sum_k w[t,k] y[perm_row[t,k]] (+ shared[t]).
static void moe_combine_enqueue(const struct lwb_kreq *r, CUstream s, CUdeviceptr y, struct moe_perm *p,
                                CUdeviceptr weights, CUdeviceptr shared, CUdeviceptr out, int tokens) {
    if (tokens == 0) return;
    void *args[] = {&y, &p->perm_row, &weights, &shared, &out};
    cu_launch(kreq_func(r, "lwb_moe_combine"), (struct lwb_launch){{(unsigned)tokens}, {128}}, s, args);
}

static int moe_route_samples(struct lwb_kreq *out, int max) {
    static const struct moe_route_config s[] = {{256, 8, 8, 4, 1, 7168}, {64, 6, 1, 1, 1, 2048}, {128, 8, 4, 2, 0, 4096}};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(s) && n < max; i++) moe_route_request(&out[n++], s[i]);
    return n;
}

// layers/moe_route.h: host side of the moe_route kernel family (kernels/moe_route.cu.in):
// DeepSeek-V3 expert choice, the permutation around the grouped expert GEMMs (this rank's experts
// only), and the all-to-all exchange's packing and summing.
//
// Defines: struct moe_route_config, moe_route_request, and one enqueue function per kernel:
// moe_topk_enqueue, moe_permute_enqueue (count, plan, scatter), moe_combine_enqueue,
// moe_a2a_count_enqueue, moe_a2a_pack_enqueue, moe_a2a_sum_enqueue; moe_route_samples;
// moe_permute_fp8_enqueue (the permutation writing fp8 rows for fp8 expert GEMMs).
//
// Does not: compute the gate logits (a gemm with an fp32 epilogue) or the experts (grouped gemm).
// Tested by test/gpu/check.c against test/ref/moe_route.c.
#pragma once

struct moe_route_config {
    int experts, top_k, groups, topk_group, norm, hidden;
    int ranks;         // expert-parallel ranks: this rank holds experts / ranks of them
    int quant;         // 1: the permutation writes fp8 rows for fp8 expert GEMMs
    int scoring;       // 0: sigmoid with correction bias (DeepSeek-V3, Nemotron-H); 1: softmax (Qwen)
};

static void moe_route_request(struct lwb_kreq *r, struct moe_route_config c) {
    *r = (struct lwb_kreq){.family = "moe_route"};
    snprintf(r->label, sizeof r->label, "moe_route_e%d_k%d_g%d_%d_h%d_r%d", c.experts, c.top_k, c.groups,
             c.topk_group, c.hidden, c.ranks);
    kreq_set(r, "EXPERTS", c.experts);
    kreq_set(r, "TOP_K", c.top_k);
    kreq_set(r, "GROUPS", c.groups);
    kreq_set(r, "TOPK_GROUP", c.topk_group);
    kreq_set(r, "NORM", c.norm);
    kreq_set(r, "HIDDEN", c.hidden);
    kreq_set(r, "RANKS", c.ranks);
    kreq_set(r, "LOCAL_EXPERTS", c.experts / c.ranks);
    kreq_set(r, "QUANT", c.quant);
    kreq_set(r, "SCORING", c.scoring);
    if (c.quant) snprintf(r->label + strlen(r->label), sizeof r->label - strlen(r->label), "_q8");
    if (c.scoring) snprintf(r->label + strlen(r->label), sizeof r->label - strlen(r->label), "_softmax");
    kreq_entry(r, "lwb_moe_topk");
    kreq_entry(r, "lwb_moe_count");
    kreq_entry(r, "lwb_moe_plan");
    kreq_entry(r, "lwb_moe_scatter");
    kreq_entry(r, "lwb_moe_combine");
    kreq_entry(r, "lwb_moe_a2a_count");
    kreq_entry(r, "lwb_moe_a2a_pack");
    kreq_entry(r, "lwb_moe_a2a_sum");
    if (c.quant) kreq_entry(r, "lwb_moe_scatter_fp8");
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
    CUdeviceptr counts;   // (local experts) int
    CUdeviceptr offsets;  // (local experts) int
    CUdeviceptr fill;     // (local experts) int
    CUdeviceptr tiles_a;  // (max_tiles_a) int4: tile list of the first grouped GEMM
    CUdeviceptr tiles_b;  // (max_tiles_b) int4: of the second
    CUdeviceptr ntiles;   // (2) int
    CUdeviceptr perm_row; // (tokens, top_k) int: row of each (token, slot)
};

static int moe_max_tiles(int tokens, int top_k, int experts, int tile_rows) {
    return LWB_CEIL_DIV(tokens * top_k, tile_rows) + experts;
}

// Count the (token, slot) pairs routed to this rank's experts (from expert e0), plan offsets and
// tile lists (rows_a / rows_b rows per entry), then copy those tokens' hidden states to their
// rows of x_perm.
// Count the routed slots per local expert and plan the permuted buffer and the tile lists.
static void moe_count_plan(const struct lwb_kreq *r, struct moe_route_config c, CUstream s, struct moe_perm *p,
                           CUdeviceptr ids, int n, int e0, int rows_a, int rows_b) {
    const int local = c.experts / c.ranks;
    CU_CHECK(lwb_cu.cuMemsetD32Async(p->counts, 0, (size_t)local, s));
    if (n > 0) {
        void *a1[] = {&ids, &n, &e0, &p->counts};
        cu_launch(kreq_func(r, "lwb_moe_count"), (struct lwb_launch){{(unsigned)LWB_MIN(LWB_CEIL_DIV(n, 256), 264)}, {256}},
                  s, a1);
    }
    CUdeviceptr na = p->ntiles, nb = p->ntiles + 4;
    void *a2[] = {&p->counts, &rows_a, &rows_b, &p->offsets, &p->tiles_a, &na, &p->tiles_b, &nb, &p->fill};
    cu_launch(kreq_func(r, "lwb_moe_plan"), (struct lwb_launch){{1}, {(unsigned)LWB_CEIL_DIV(local, 32) * 32}}, s, a2);
}

static void moe_permute_enqueue(const struct lwb_kreq *r, struct moe_route_config c, CUstream s,
                                struct moe_perm *p, CUdeviceptr ids, int tokens, int e0, int rows_a, int rows_b,
                                CUdeviceptr x, CUdeviceptr x_perm) {
    int n = tokens * c.top_k;
    moe_count_plan(r, c, s, p, ids, n, e0, rows_a, rows_b);
    if (n > 0) {
        void *a3[] = {&ids, &tokens, &e0, &p->offsets, &p->fill, &p->perm_row, &x, &x_perm};
        cu_launch(kreq_func(r, "lwb_moe_scatter"), (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(n, 8)}, {256}}, s, a3);
    }
}

// The same permutation writing fp8 rows: q_perm (rows x hidden e4m3) and s_perm (rows x hidden/128
// fp32 scales) instead of bf16 copies.
static void moe_permute_fp8_enqueue(const struct lwb_kreq *r, struct moe_route_config c, CUstream s,
                                    struct moe_perm *p, CUdeviceptr ids, int tokens, int e0, int rows_a, int rows_b,
                                    CUdeviceptr x, CUdeviceptr q_perm, CUdeviceptr s_perm) {
    if (!c.quant) LWB_BUG("moe: an fp8 permutation from a request without it");
    int n = tokens * c.top_k;
    moe_count_plan(r, c, s, p, ids, n, e0, rows_a, rows_b);
    if (n > 0) {
        void *a3[] = {&ids, &tokens, &e0, &p->offsets, &p->fill, &p->perm_row, &x, &q_perm, &s_perm};
        cu_launch(kreq_func(r, "lwb_moe_scatter_fp8"), (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(n, 8)}, {256}}, s, a3);
    }
}

// out[t] = sum over t's local slots of w[t,k] y[perm_row[t,k]], plus shared[t - shared_first] for
// t in shared_first .. shared_first + shared_rows - 1 (when shared is given), times
// sigmoid(sg_x[t - shared_first] . sg_w) when sg_w is given (Qwen3-Next's gated shared expert).
static void moe_combine_gated_enqueue(const struct lwb_kreq *r, CUstream s, CUdeviceptr y, struct moe_perm *p,
                                      CUdeviceptr weights, CUdeviceptr shared, int shared_first, int shared_rows,
                                      CUdeviceptr sg_x, CUdeviceptr sg_w, CUdeviceptr out, int tokens) {
    if (tokens == 0) return;
    void *args[] = {&y, &p->perm_row, &weights, &shared, &shared_first, &shared_rows, &sg_x, &sg_w, &out};
    cu_launch(kreq_func(r, "lwb_moe_combine"), (struct lwb_launch){{(unsigned)tokens}, {128}}, s, args);
}
static void moe_combine_enqueue(const struct lwb_kreq *r, CUstream s, CUdeviceptr y, struct moe_perm *p,
                                CUdeviceptr weights, CUdeviceptr shared, int shared_first, int shared_rows,
                                CUdeviceptr out, int tokens) {
    moe_combine_gated_enqueue(r, s, y, p, weights, shared, shared_first, shared_rows, 0, 0, out, tokens);
}

// Buffers of the all-to-all exchange (send side).
struct moe_a2a {
    CUdeviceptr mask;       // (tokens) u64: ranks each token reaches
    CUdeviceptr dest_count; // (ranks) int, counted this forward
    CUdeviceptr planned;    // (ranks) int, the counts the sends were planned with
    CUdeviceptr offset;     // (ranks) int, first send row of each destination
    CUdeviceptr fill;       // (ranks) int
    CUdeviceptr changed;    // int: a count differed from the plan
    CUdeviceptr slot;       // (tokens, ranks) int: send row of (token, destination) or -1
};

static void moe_a2a_count_enqueue(const struct lwb_kreq *r, struct moe_route_config c, CUstream s, struct moe_a2a *a,
                                  CUdeviceptr ids, int tokens) {
    CU_CHECK(lwb_cu.cuMemsetD32Async(a->dest_count, 0, (size_t)c.ranks, s));
    if (tokens == 0) return;
    void *args[] = {&ids, &tokens, &a->mask, &a->dest_count};
    cu_launch(kreq_func(r, "lwb_moe_a2a_count"),
              (struct lwb_launch){{(unsigned)LWB_MIN(LWB_CEIL_DIV(tokens, 256), 132)}, {256}}, s, args);
}

static void moe_a2a_pack_enqueue(const struct lwb_kreq *r, struct moe_route_config c, CUstream s, struct moe_a2a *a,
                                 CUdeviceptr ids, CUdeviceptr w, CUdeviceptr x, int tokens, CUdeviceptr send_x,
                                 CUdeviceptr send_ids, CUdeviceptr send_w) {
    CU_CHECK(lwb_cu.cuMemsetD32Async(a->fill, 0, (size_t)c.ranks, s));
    void *args[] = {&ids, &w, &x, &tokens, &a->mask, &a->offset, &a->planned, &a->dest_count, &a->fill, &a->slot,
                    &send_x, &send_ids, &send_w, &a->changed};
    cu_launch(kreq_func(r, "lwb_moe_a2a_pack"), (struct lwb_launch){{(unsigned)LWB_MAX(LWB_CEIL_DIV(tokens, 8), 1)}, {256}},
              s, args);
}

static void moe_a2a_sum_enqueue(const struct lwb_kreq *r, CUstream s, struct moe_a2a *a, CUdeviceptr back,
                                CUdeviceptr shared, CUdeviceptr out, int tokens) {
    if (tokens == 0) return;
    void *args[] = {&back, &a->slot, &shared, &out};
    cu_launch(kreq_func(r, "lwb_moe_a2a_sum"), (struct lwb_launch){{(unsigned)tokens}, {128}}, s, args);
}

static int moe_route_samples(struct lwb_kreq *out, int max) {
    static const struct moe_route_config s[] = {{256, 8, 8, 4, 1, 7168, 1, 0}, {64, 6, 1, 1, 1, 2048, 1, 0},
                                                {128, 8, 4, 2, 0, 4096, 1, 0}, {256, 8, 8, 4, 1, 7168, 8, 0},
                                                {16, 8, 8, 4, 1, 7168, 1, 0}, {32, 8, 8, 4, 1, 7168, 16, 0},
                                                {256, 8, 8, 4, 1, 7168, 8, 1}, {64, 6, 8, 1, 1, 1024, 1, 1},
                                                {512, 10, 1, 1, 1, 2048, 1, 0, 1}, {128, 6, 1, 1, 1, 2688, 1, 0, 0}};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(s) && n < max; i++) moe_route_request(&out[n++], s[i]);
    return n;
}

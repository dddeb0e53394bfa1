// layers/mla_decode.h: host side of the mla_decode kernel family (kernels/mla_decode.cu.in):
// absorbed MLA attention over a paged latent cache, for generation.
//
// Defines: struct mla_decode_config, mla_decode_choose (KV splits from the batch and the
// device), mla_decode_request, mla_decode_bind (tensor maps), mla_decode_enqueue,
// mla_decode_flops / mla_decode_bytes, mla_decode_samples; the sparse form (DeepSeek Sparse
// Attention: each query token attends to the cache rows its top-k selection names):
// mla_sparse_choose, mla_sparse_enqueue, mla_sparse_bytes.
//
// Does not: own the cache or the queries (layers/mla.h does), or apply W_UK / W_UV (gemm).
// Tested by test/gpu/check.c against test/ref/mla_decode.c.
#pragma once

#define MLA_D_LAT 512
#define MLA_D_ALL 576

struct mla_decode_config {
    int heads;      // query heads (any count: blocks take 64 (token, head) rows of a request)
    int page;       // tokens per cache block
    int qlen;       // query tokens per request
    int split_len;  // KV tokens per split (multiple of 64)
    int num_splits; // splits of the longest KV range
    int topk;       // 0: dense; else the sparse form over selections of topk rows (qlen 1: a block per token)
};

struct lwb_mla_decode {
    struct mla_decode_config cfg;
    struct lwb_kreq req;
    CUtensorMap q_map, kv_map;
    int batch;
    unsigned smem;
};

// Blocks per request and split: 64 (token, head) rows each.
static int mla_decode_row_groups(int heads, int qlen) { return LWB_CEIL_DIV(heads * qlen, 64); }

static unsigned mla_decode_smem(bool sparse) {
    return 64 * 576 * 2 * 3 + 64 * 64 * 2 + 3 * 64 * 4 + 5 * 8 + 1024 + (sparse ? 2 * 64 * 4 : 0);
}

// Splits of the KV range: enough blocks to fill the machine in few, even waves, each split at
// least 4 tiles long (the merge costs a pass over fp32 partials).
static struct mla_decode_config mla_decode_choose(int heads, int page, int qlen, int batch, int max_kv,
                                                  int sm_count) {
    struct mla_decode_config c = {.heads = heads, .page = page, .qlen = qlen};
    long long units = (long long)batch * mla_decode_row_groups(heads, qlen);
    int best = 1;
    double best_score = -1;
    for (int s = 1; s <= 64; s++) {
        int len = LWB_CEIL_DIV(LWB_CEIL_DIV(max_kv, s), 64) * 64;
        if (s > 1 && len < 256) break;
        long long blocks = units * s;
        double waves = (double)LWB_CEIL_DIV(blocks, sm_count);
        double eff = (double)blocks / (waves * sm_count); // busy fraction of the machine
        double score = eff - 0.01 * s;                    // merging costs a little per split
        if (score > best_score + 1e-9) best_score = score, best = s;
    }
    c.split_len = LWB_CEIL_DIV(LWB_CEIL_DIV(max_kv, best), 64) * 64;
    c.num_splits = LWB_CEIL_DIV(max_kv, c.split_len);
    return c;
}

static void mla_decode_request(struct lwb_kreq *r, struct mla_decode_config c) {
    *r = (struct lwb_kreq){.family = "mla_decode"};
    snprintf(r->label, sizeof r->label, "mla_decode_h%d_p%d_q%d", c.heads, c.page, c.qlen);
    kreq_set(r, "HEADS", c.heads);
    kreq_set(r, "PAGE", c.page);
    kreq_set(r, "QLEN", c.qlen);
    kreq_set(r, "TOPK", c.topk);
    if (c.topk) snprintf(r->label, sizeof r->label, "mla_sparse_h%d_p%d_k%d", c.heads, c.page, c.topk);
    kreq_entry(r, "lwb_mla_decode");
    kreq_entry(r, "lwb_mla_decode_combine");
}

// q: (tokens, heads, 576) bf16; cache: (blocks, page, 576) bf16.
static void mla_decode_bind(struct lwb_mla_decode *d, CUdeviceptr q, int tokens, CUdeviceptr cache, int blocks) {
    const struct mla_decode_config c = d->cfg;
    struct lwb_operand qo = {q, (long long)tokens * c.heads, MLA_D_ALL, MLA_D_ALL, 1, 0};
    struct lwb_operand ko = {cache, c.page, MLA_D_ALL, MLA_D_ALL, blocks, (long long)c.page * MLA_D_ALL};
    tmap_encode(&d->q_map, &qo, 64, "mla queries");
    tmap_encode(&d->kv_map, &ko, LWB_MIN(c.page, 64), "mla cache");
    d->batch = tokens / c.qlen;
    d->smem = mla_decode_smem(c.topk > 0);
    CU_CHECK(lwb_cu.cuFuncSetAttribute(kreq_func(&d->req, "lwb_mla_decode"),
                                       CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)d->smem));
}

// Bytes of the split partials (fp32 outputs and log-sum-exps); 0 when not split.
static size_t mla_decode_workspace(const struct mla_decode_config *c, int tokens) {
    if (c->num_splits == 1) return 0;
    return (size_t)c->num_splits * tokens * c->heads * (MLA_D_LAT + 1) * sizeof(float);
}

static void mla_decode_launch(struct lwb_mla_decode *d, CUstream s, CUdeviceptr block_table, int max_blocks,
                              CUdeviceptr kv_lens, float sm_scale, CUdeviceptr out, CUdeviceptr ws,
                              CUdeviceptr indices, int tok_qlen, CUdeviceptr cache) {
    const struct mla_decode_config c = d->cfg;
    int tokens = d->batch * c.qlen, rows = tokens * c.heads;
    CUdeviceptr o_part = ws, lse = ws ? ws + (size_t)c.num_splits * rows * MLA_D_LAT * sizeof(float) : 0;
    int split_len = c.split_len, num_splits = c.num_splits;
    void *args[] = {&d->q_map, &d->kv_map, &block_table, &max_blocks, &kv_lens, &sm_scale,
                    &split_len, &num_splits, &out, &o_part, &lse, &indices, &tok_qlen, &cache};
    cu_launch(kreq_func(&d->req, "lwb_mla_decode"),
              (struct lwb_launch){{(unsigned)num_splits, (unsigned)mla_decode_row_groups(c.heads, c.qlen), (unsigned)d->batch},
                                  {384}, d->smem},
              s, args);
    if (num_splits > 1) {
        void *cargs[] = {&o_part, &lse, &num_splits, &rows, &out};
        cu_launch(kreq_func(&d->req, "lwb_mla_decode_combine"),
                  (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(rows, 8)}, {256}}, s, cargs);
    }
}

// out: (tokens, heads, 512) bf16. kv_lens: per request, cache tokens including the new ones.
static void mla_decode_enqueue(struct lwb_mla_decode *d, CUstream s, CUdeviceptr block_table, int max_blocks,
                               CUdeviceptr kv_lens, float sm_scale, CUdeviceptr out, CUdeviceptr ws) {
    if (d->cfg.topk) LWB_BUG("mla_decode_enqueue of a sparse plan");
    mla_decode_launch(d, s, block_table, max_blocks, kv_lens, sm_scale, out, ws, 0, 1, 0);
}

// The sparse form: `tokens` query tokens (qlen per request, bound as a batch of `tokens`), token
// t attending to the rows indices[t][0 .. topk) of its request's pages (-1: none).
static struct mla_decode_config mla_sparse_choose(int heads, int page, int topk, int tokens, int sm_count) {
    struct mla_decode_config c = mla_decode_choose(heads, page, 1, tokens, topk, sm_count);
    c.topk = topk;
    return c;
}
static void mla_sparse_enqueue(struct lwb_mla_decode *d, CUstream s, CUdeviceptr block_table, int max_blocks,
                               CUdeviceptr kv_lens, int qlen, CUdeviceptr indices, CUdeviceptr cache, float sm_scale,
                               CUdeviceptr out, CUdeviceptr ws) {
    if (!d->cfg.topk) LWB_BUG("mla_sparse_enqueue of a dense plan");
    mla_decode_launch(d, s, block_table, max_blocks, kv_lens, sm_scale, out, ws, indices, qlen, cache);
}

// Work: scores (576-long dot products) and the weighted sum (512 wide) for every visible pair.
static double mla_decode_flops(int heads, double visible_pairs) {
    return 2.0 * heads * visible_pairs * (MLA_D_ALL + MLA_D_LAT);
}
// Bytes: each request's cache once, the queries and the outputs.
static double mla_decode_bytes(int heads, int tokens, double cache_tokens) {
    return cache_tokens * MLA_D_ALL * 2 + (double)tokens * heads * (MLA_D_ALL + MLA_D_LAT) * 2;
}

// Bytes of the sparse form: the selected rows once per token, the queries, the outputs, the selections.
static double mla_sparse_bytes(int heads, int tokens, double selected, int topk) {
    return selected * MLA_D_ALL * 2 + (double)tokens * (heads * (MLA_D_ALL + MLA_D_LAT) * 2 + 4.0 * topk);
}

static int mla_decode_samples(struct lwb_kreq *out, int max) {
    static const int shapes[][3] = {{128, 32, 1}, {128, 64, 4}, {64, 16, 2}, {128, 128, 1}, {16, 32, 1}, {8, 64, 4}};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(shapes) && n < max; i++) {
        struct mla_decode_config c = {.heads = shapes[i][0], .page = shapes[i][1], .qlen = shapes[i][2]};
        mla_decode_request(&out[n++], c);
    }
    static const int sparse[][3] = {{128, 64, 2048}, {64, 64, 64}, {16, 64, 128}};
    for (size_t i = 0; i < LWB_ARRAY_LEN(sparse) && n < max; i++) {
        struct mla_decode_config c = {.heads = sparse[i][0], .page = sparse[i][1], .qlen = 1, .topk = sparse[i][2]};
        mla_decode_request(&out[n++], c);
    }
    return n;
}

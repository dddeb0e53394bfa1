// layers/dsa.h: host side of the dsa_index kernel family (kernels/dsa_index.cu.in): DeepSeek-V3.2's
// lightning indexer up to its scores (key and query preparation into the paged indexer cache,
// then the fp8 scores of queries against cached keys).
//
// Defines: struct dsa_config, struct lwb_dsa (one indexer's kernels and tensor maps),
// dsa_choose (queries per block and key splits), dsa_request, dsa_bind, dsa_prep_enqueue,
// dsa_logits_enqueue, dsa_chunk_rows / dsa_chunk_at (the scores in chunks of bounded memory),
// dsa_cache_bytes, dsa_logits_flops / dsa_logits_bytes (floors), dsa_index_samples.
//
// Does not: project (gemm.h: wq_b, wk, weights_proj), select the top-k (dsa_topk.h) or attend
// (mla_decode.h's sparse form).
// Tested by test/gpu/check.c against test/ref/dsa_index.c.
#pragma once

#define DSA_HEADS 64
#define DSA_DIM 128
#define DSA_TOKEN_BYTES 132 // an indexer cache entry: 128 e4m3 bytes and an fp32 scale

struct dsa_config {
    int page;   // tokens per cache block (a multiple of 64)
    int rope;   // roped dims (qk_rope_head_dim)
    int nq;     // query tokens per logits block (1, 2, 4)
    int wg;     // consumer warpgroups per logits block
    int splits; // key splits per query group
};

struct lwb_dsa {
    struct dsa_config cfg;
    struct lwb_kreq req;
    CUtensorMap q_map, k_map;
    unsigned smem;
};

// Bytes of one layer's indexer cache.
static size_t dsa_cache_bytes(long long blocks, int page) { return (size_t)blocks * page * DSA_TOKEN_BYTES; }

static unsigned dsa_logits_smem(const struct dsa_config *c) {
    return (unsigned)(64 * c->nq * DSA_DIM + c->wg * 2 * 64 * DSA_DIM + 64 * c->nq * 4 + (1 + 2 * c->wg) * 8 + 1024);
}

// GEN (few queries per request): as many query tokens of a request per block as it has (up to 4),
// and the keys split so that about four blocks per multiprocessor stream the cache; CTX: 2 queries
// per block (N = 128: two blocks fit a multiprocessor, one's tensor-core work overlapping the
// other's head sums; measured 8% faster than 4 at 32k), one split (the causal triangle gives
// thousands of blocks).
static struct dsa_config dsa_choose(int page, int rope, int qlen, int batch, int max_keys, int sm_count) {
    struct dsa_config c = {.page = page, .rope = rope, .wg = 2};
    c.nq = qlen > 4 ? 2 : qlen >= 3 ? 4 : qlen; // prefill: 2 (64 accumulators a thread, 2 blocks an SM)
    const long long groups = (long long)batch * LWB_CEIL_DIV(qlen, c.nq);
    const int tiles = LWB_CEIL_DIV(max_keys, 64);
    c.splits = (int)LWB_MAX(1, LWB_MIN((long long)LWB_CEIL_DIV(4LL * sm_count, groups), tiles / 8));
    return c;
}

static void dsa_request(struct lwb_dsa *x, struct dsa_config c) {
    x->cfg = c;
    struct lwb_kreq *r = &x->req;
    *r = (struct lwb_kreq){.family = "dsa_index"};
    snprintf(r->label, sizeof r->label, "dsa_index_p%d_q%d_w%d", c.page, c.nq, c.wg);
    kreq_set(r, "PAGE", c.page);
    kreq_set(r, "ROPE", c.rope);
    kreq_set(r, "NQ", c.nq);
    kreq_set(r, "WG", c.wg);
    kreq_entry(r, "lwb_dsa_index_prep");
    kreq_entry(r, "lwb_dsa_logits");
    x->smem = dsa_logits_smem(&c);
}

// q8: (tokens, 64, 128) e4m3 queries; cache: blocks of page x 132 bytes.
static void dsa_bind(struct lwb_dsa *x, CUdeviceptr q8, long long tokens, CUdeviceptr cache, long long blocks) {
    struct lwb_operand qo = {q8, tokens * DSA_HEADS, DSA_DIM, DSA_DIM, 1, 0};
    struct lwb_operand ko = {cache, x->cfg.page, DSA_DIM, DSA_DIM, (int)blocks, (long long)x->cfg.page * DSA_TOKEN_BYTES};
    tmap_encode_es(&x->q_map, &qo, 64, "indexer queries", 1);
    tmap_encode_es(&x->k_map, &ko, 64, "indexer cache", 1);
    CU_CHECK(lwb_cu.cuFuncSetAttribute(kreq_func(&x->req, "lwb_dsa_logits"), CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                       (int)x->smem));
}

struct dsa_prep_args {
    CUdeviceptr q; long long q_stride;   // wq_b output (tokens, 64 x 128) bf16, or 0: keys only
    CUdeviceptr k; long long k_stride;   // wk output (tokens, 128) bf16
    CUdeviceptr w; long long w_stride;   // weights_proj output (tokens, 64) fp32
    CUdeviceptr ln_w, ln_b;              // the key's LayerNorm (fp32)
    float eps;
    CUdeviceptr cos_t, sin_t, kv_lens, block_table, cache, q8, wt;
    int qlen, max_blocks, tokens;
};

static void dsa_prep_enqueue(const struct lwb_dsa *x, CUstream s, struct dsa_prep_args *a) {
    if (a->tokens == 0) return;
    void *args[] = {&a->q, &a->q_stride, &a->k, &a->k_stride, &a->w, &a->w_stride, &a->ln_w, &a->ln_b, &a->eps,
                    &a->cos_t, &a->sin_t, &a->kv_lens, &a->qlen, &a->block_table, &a->max_blocks, &a->cache,
                    &a->q8, &a->wt};
    cu_launch(kreq_func(&x->req, "lwb_dsa_index_prep"), (struct lwb_launch){{(unsigned)a->tokens}, {256}}, s, args);
}

// Scores of queries q0 .. q0 + nql - 1 of requests req0 .. req0 + batch - 1 (qlen tokens each; a
// chunk of whole requests (q0 0, nql qlen) or of one request's queries) into logits rows (ld floats
// apart), the chunk's tokens in order.
static void dsa_logits_enqueue(const struct lwb_dsa *x, CUstream s, CUdeviceptr cache, CUdeviceptr wt,
                               CUdeviceptr block_table, int max_blocks, CUdeviceptr kv_lens, int qlen, int req0,
                               int batch, int q0, int nql, CUdeviceptr logits, long long ld) {
    if (batch == 0 || nql == 0) return;
    if (q0 < 0 || nql < 0 || q0 + nql > qlen || (batch > 1 && nql != qlen))
        LWB_BUG("dsa scores: queries %d..%d of %d for %d requests", q0, q0 + nql, qlen, batch);
    const struct dsa_config *c = &x->cfg;
    void *args[] = {(void *)&x->q_map, (void *)&x->k_map, &cache, &wt, &block_table, &max_blocks, &kv_lens, &qlen,
                    &req0, &q0, &nql, &logits, &ld};
    cu_launch(kreq_func(&x->req, "lwb_dsa_logits"),
              (struct lwb_launch){{(unsigned)c->splits, (unsigned)LWB_CEIL_DIV(nql, c->nq), (unsigned)batch},
                                  {128u * (unsigned)c->wg}, x->smem},
              s, args);
}

// Scores are computed and selected in chunks of at most this many rows of ld floats within `budget`
// bytes (at least 64): whole requests while a request fits, else pieces of one request's queries.
static long long dsa_chunk_rows(long long ld, size_t budget) {
    return LWB_MAX(64, (long long)(budget / ((size_t)ld * 4)) / 64 * 64);
}
struct dsa_chunk {
    int req0, batch, q0, nql; // requests req0 .. req0 + batch - 1, their queries q0 .. q0 + nql - 1
};
// Chunk i (from 0) of a problem of `batch` requests of qlen tokens; false past the last.
static bool dsa_chunk_at(int batch, int qlen, long long rows, int i, struct dsa_chunk *c) {
    if (rows >= qlen) {
        const int per = (int)LWB_MIN((long long)batch, rows / qlen);
        if ((long long)i * per >= batch) return false;
        *c = (struct dsa_chunk){i * per, LWB_MIN(per, batch - i * per), 0, qlen};
        return true;
    }
    const int pieces = (int)LWB_CEIL_DIV((long long)qlen, rows), b = i / pieces;
    if (b >= batch) return false;
    const long long q = (long long)(i % pieces) * rows;
    *c = (struct dsa_chunk){b, 1, (int)q, (int)LWB_MIN(rows, (long long)qlen - q)};
    return true;
}

// Visible (query, key) pairs of a problem: query i of a request with kv_len cached tokens after
// the forward sees kv_len - qlen + i + 1 keys.
static double dsa_pairs(int batch, int qlen, int kv_len) {
    return (double)batch * ((double)qlen * (kv_len - qlen) + (double)qlen * (qlen + 1) / 2);
}
// Scores: a 64-head x 128 fp8 product per pair (fp8 FLOPs).
static double dsa_logits_flops(double pairs) { return 2.0 * DSA_HEADS * DSA_DIM * pairs; }
// Bytes: every request's cached keys once, the queries and weights, the scores written (fp32).
static double dsa_logits_bytes(int batch, int qlen, int kv_len, double pairs) {
    return (double)batch * kv_len * DSA_TOKEN_BYTES + (double)batch * qlen * DSA_HEADS * (DSA_DIM + 4) + 4.0 * pairs;
}

static int dsa_index_samples(struct lwb_kreq *out, int max) {
    static const int s[][2] = {{64, 1}, {64, 2}, {64, 4}, {128, 4}};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(s) && n < max; i++) {
        struct lwb_dsa x;
        dsa_request(&x, (struct dsa_config){.page = s[i][0], .rope = 64, .nq = s[i][1], .wg = 2, .splits = 1});
        out[n++] = x.req;
    }
    return n;
}

// check_dsa.h: gpu_check's DeepSeek-V3.2 families (included by check.c after its helpers):
//   dsa        the indexer's preparation and scores (kernels/dsa_index.cu.in) and the sparse
//              form of mla_decode, each against test/ref/dsa_index.c on fresh random inputs;
//              then benchmarks at DeepSeek-V3.2's 32k shapes next to their floors and next to
//              the dense absorbed attention at the same context.
#pragma once
#include "../ref/dsa_index.c"

// Random e4m3 bytes spread over the range (no NaN encodings), like quantised O(1) values.
static void rand_e4m3(struct check *c, uint8_t *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)(ref_next(&c->rng) & 0xff);
        if ((v & 0x7f) == 0x7f) v ^= 1;
        x[i] = v;
    }
}

// cos/sin tables of `positions` x 32 angles (random frequencies: any table exercises the kernel).
static void rand_rope(struct check *c, int positions, float **cs, float **sn) {
    *cs = xmalloc(sizeof(float) * (size_t)positions * 32), *sn = xmalloc(sizeof(float) * (size_t)positions * 32);
    float f[32];
    for (int i = 0; i < 32; i++) f[i] = powf(10000.f, -(float)i / 32.f) * ref_uniform(&c->rng, 0.5f, 1.5f);
    for (int p = 0; p < positions; p++)
        for (int i = 0; i < 32; i++) (*cs)[p * 32 + i] = cosf(p * f[i]), (*sn)[p * 32 + i] = sinf(p * f[i]);
}

// The indexer cache of a paged layout, gathered per request: keys (batch, max_len, 128), scales.
static void dsa_gather(const uint8_t *cache, const struct paged *pg, int max_len, uint8_t *keys, float *ks) {
    for (int b = 0; b < pg->batch; b++)
        for (int j = 0; j < pg->kv_len[b]; j++) {
            const uint8_t *blk = cache + (size_t)pg->table[b * pg->max_blocks + j / pg->page] * pg->page * 132;
            memcpy(keys + ((size_t)b * max_len + j) * 128, blk + (size_t)(j % pg->page) * 128, 128);
            memcpy(&ks[(size_t)b * max_len + j], blk + (size_t)pg->page * 128 + (size_t)(j % pg->page) * 4, 4);
        }
}

static void check_bytes(struct check *c, const char *what, const uint8_t *got, const uint8_t *want, size_t n) {
    size_t off = 0, far = 0;
    for (size_t i = 0; i < n; i++) {
        off += got[i] != want[i];
        far += !fp8_close(got[i], want[i]);
    }
    bool ok = far == 0 && off * 1000 <= n;
    c->checks++;
    if (!ok) c->failures++;
    printf("%s  check %-44s %zu of %zu bytes differ (%zu by more than one e4m3 step)\n", ok ? "PASS" : "FAIL", what,
           off, n, far);
}

// Preparation: new tokens of `batch` requests (qlen each) with kv_len cached after the forward.
static void check_dsa_prep_case(struct check *c, int batch, int qlen, const int *kv_len, int page) {
    struct paged pg;
    paged_make(c, &pg, batch, page, kv_len);
    const int T = batch * qlen;
    int maxlen = 0;
    for (int b = 0; b < batch; b++) maxlen = LWB_MAX(maxlen, kv_len[b]);
    struct lwb_dsa x;
    dsa_request(&x, dsa_choose(page, 64, qlen, batch, maxlen, c->dev.sm_count));
    jit_build(&c->jit, (struct lwb_kreq *[]){&x.req}, 1);
    uint16_t *q = rand_bf16(c, (size_t)T * 8192, -2.f, 2.f), *k = rand_bf16(c, (size_t)T * 128, -3.f, 5.f);
    float *w = xmalloc(sizeof(float) * (size_t)T * 64), lw[128], lb[128], *cs, *sn;
    for (int i = 0; i < T * 64; i++) w[i] = ref_uniform(&c->rng, -1.f, 1.f);
    for (int i = 0; i < 128; i++) lw[i] = ref_uniform(&c->rng, 0.8f, 1.2f), lb[i] = ref_uniform(&c->rng, -0.1f, 0.1f);
    rand_rope(c, maxlen, &cs, &sn);
    const size_t cbytes = (size_t)pg.blocks * page * 132;
    CUdeviceptr dq = upload(q, (size_t)T * 8192 * 2), dk = upload(k, (size_t)T * 256), dw = upload(w, (size_t)T * 256),
                dlw = upload(lw, 512), dlb = upload(lb, 512), dcs = upload(cs, (size_t)maxlen * 128),
                dsn = upload(sn, (size_t)maxlen * 128), dt = upload(pg.table, sizeof(int) * (size_t)pg.blocks),
                dl = upload(kv_len, sizeof(int) * (size_t)batch), dc = dev_alloc(cbytes, "indexer cache"),
                dq8 = dev_alloc((size_t)T * 8192, "q8"), dwt = dev_alloc((size_t)T * 256, "wt");
    poison(c, dc, cbytes), poison(c, dq8, (size_t)T * 8192), poison(c, dwt, (size_t)T * 256);
    struct dsa_prep_args a = {dq, 8192, dk, 128, dw, 64, dlw, dlb, 1e-6f, dcs, dsn, dl, dt, dc, dq8, dwt,
                              qlen, pg.max_blocks, T};
    dsa_prep_enqueue(&x, c->s, &a);
    stream_wait(c->s, 60, "dsa prep");
    uint8_t *cache = xmalloc(cbytes), *q8 = xmalloc((size_t)T * 8192), *wq8 = xmalloc((size_t)T * 8192);
    uint8_t *kw = xmalloc((size_t)T * 128), *kg = xmalloc((size_t)T * 128);
    float *wt = xmalloc((size_t)T * 256), *wwt = xmalloc((size_t)T * 256), *ks = xmalloc((size_t)T * 4),
          *ksg = xmalloc((size_t)T * 4);
    download(cache, dc, cbytes), download(q8, dq8, (size_t)T * 8192), download(wt, dwt, (size_t)T * 256);
    ref_dsa_prep(q, k, w, lw, lb, 1e-6f, cs, sn, 64, kv_len, qlen, T, kw, ks, wq8, wwt);
    for (int t = 0; t < T; t++) { // the new keys from their pages
        const int b = t / qlen, pos = kv_len[b] - qlen + t % qlen;
        const uint8_t *blk = cache + (size_t)pg.table[b * pg.max_blocks + pos / page] * page * 132;
        memcpy(kg + (size_t)t * 128, blk + (size_t)(pos % page) * 128, 128);
        memcpy(&ksg[t], blk + (size_t)page * 128 + (size_t)(pos % page) * 4, 4);
    }
    char what[128];
    snprintf(what, sizeof what, "dsa_prep keys b=%d q=%d page=%d", batch, qlen, page);
    check_bytes(c, what, kg, kw, (size_t)T * 128);
    snprintf(what, sizeof what, "dsa_prep queries b=%d q=%d", batch, qlen);
    check_bytes(c, what, q8, wq8, (size_t)T * 8192);
    snprintf(what, sizeof what, "dsa_prep key scales b=%d q=%d", batch, qlen);
    verdict(c, what, ref_compare("k_scale", ksg, ks, (size_t)T, 0, 1e-6, 1), 1e-6);
    snprintf(what, sizeof what, "dsa_prep folded weights b=%d q=%d", batch, qlen);
    verdict(c, what, ref_compare("wt", wt, wwt, (size_t)T * 64, 0, 1e-6, 1), 1e-6);
    free(q), free(k), free(w), free(cs), free(sn), free(cache), free(q8), free(wq8), free(kw), free(kg), free(wt);
    free(wwt), free(ks), free(ksg), free(pg.table), free(pg.kv_len);
    CUdeviceptr all[] = {dq, dk, dw, dlw, dlb, dcs, dsn, dt, dl, dc, dq8, dwt};
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++) dev_free(all[i], 0);
}

struct dsa_logits_arg {
    struct lwb_dsa *x;
    CUdeviceptr cache, wt, table, lens, out;
    int max_blocks, qlen, batch;
    long long ld, chunk_rows; // chunk_rows: 0, or scores in chunks of at most this many rows
};
static void dsa_logits_launch(void *p, CUstream s) {
    struct dsa_logits_arg *a = p;
    if (!a->chunk_rows) {
        dsa_logits_enqueue(a->x, s, a->cache, a->wt, a->table, a->max_blocks, a->lens, a->qlen, 0, a->batch, 0, a->qlen,
                           a->out, a->ld);
        return;
    }
    // In chunks, each written at its tokens' rows of the whole buffer (the layout of one launch).
    struct dsa_chunk c;
    for (int i = 0; dsa_chunk_at(a->batch, a->qlen, a->chunk_rows, i, &c); i++)
        dsa_logits_enqueue(a->x, s, a->cache, a->wt, a->table, a->max_blocks, a->lens, a->qlen, c.req0, c.batch, c.q0,
                           c.nql, a->out + (CUdeviceptr)((long long)(c.req0 * a->qlen + c.q0) * a->ld * 4), a->ld);
}

// Scores of random fp8 queries and keys (random power-of-two scales, random folded weights).
static void check_dsa_logits_case(struct check *c, int batch, int qlen, const int *kv_len, int page, int splits,
                                  int nq, long long chunk_rows, bool verify) {
    struct paged pg;
    paged_make(c, &pg, batch, page, kv_len);
    const int T = batch * qlen;
    int maxlen = 0;
    double cached = 0;
    for (int b = 0; b < batch; b++) maxlen = LWB_MAX(maxlen, kv_len[b]), cached += kv_len[b];
    struct lwb_dsa x;
    struct dsa_config cfg = dsa_choose(page, 64, qlen, batch, maxlen, c->dev.sm_count);
    if (splits) cfg.splits = splits;
    if (nq) cfg.nq = nq; // another query group size than lwb's choice (speed comparison)
    dsa_request(&x, cfg);
    jit_build(&c->jit, (struct lwb_kreq *[]){&x.req}, 1);
    const size_t cbytes = (size_t)pg.blocks * page * 132;
    const long long ld = LWB_CEIL_DIV(maxlen, 64) * 64;
    uint8_t *cache = xmalloc(cbytes), *q8 = xmalloc((size_t)T * 8192);
    rand_e4m3(c, cache, cbytes), rand_e4m3(c, q8, (size_t)T * 8192);
    for (int blk = 0; blk < pg.blocks; blk++) // scales: powers of two around 2^-6
        for (int j = 0; j < page; j++) {
            float sc = ldexpf(1.f, -4 - (int)(ref_next(&c->rng) % 5));
            memcpy(cache + (size_t)blk * page * 132 + (size_t)page * 128 + (size_t)j * 4, &sc, 4);
        }
    float *wt = xmalloc((size_t)T * 256);
    for (int i = 0; i < T * 64; i++) wt[i] = ref_uniform(&c->rng, -0.02f, 0.02f);
    CUdeviceptr dc = upload(cache, cbytes), dq8 = upload(q8, (size_t)T * 8192), dwt = upload(wt, (size_t)T * 256),
                dt = upload(pg.table, sizeof(int) * (size_t)pg.blocks), dl = upload(kv_len, sizeof(int) * (size_t)batch),
                dout = dev_alloc((size_t)T * ld * 4, "scores");
    dsa_bind(&x, dq8, T, dc, pg.blocks);
    struct dsa_logits_arg a = {&x, dc, dwt, dt, dl, dout, pg.max_blocks, qlen, batch, ld, chunk_rows};
    char what[160];
    snprintf(what, sizeof what, "dsa_logits b=%d q=%d kv<=%d page=%d nq=%d splits=%d%s", batch, qlen, maxlen, page,
             cfg.nq, cfg.splits, chunk_rows ? " chunked" : "");
    double np = 0;
    for (int b = 0; b < batch; b++) np += dsa_pairs(1, qlen, kv_len[b]);
    if (verify) {
        poison(c, dout, (size_t)T * ld * 4);
        dsa_logits_launch(&a, c->s);
        stream_wait(c->s, 60, "dsa logits");
        float *got = xmalloc((size_t)T * ld * 4), *want = xmalloc((size_t)T * ld * 4);
        download(got, dout, (size_t)T * ld * 4);
        uint8_t *keys = xcalloc((size_t)batch * maxlen, 128);
        float *ks = xcalloc((size_t)batch * maxlen, 4);
        dsa_gather(cache, &pg, maxlen, keys, ks);
        ref_dsa_logits(q8, wt, keys, ks, maxlen, kv_len, batch, qlen, want, ld);
        // Compare the visible keys of each token only (the rest is not written).
        float *g = xmalloc(sizeof(float) * (size_t)np), *w = xmalloc(sizeof(float) * (size_t)np);
        size_t n = 0;
        for (int t = 0; t < T; t++)
            for (int s = 0; s < kv_len[t / qlen] - qlen + t % qlen + 1; s++, n++)
                g[n] = got[(size_t)t * ld + s], w[n] = want[(size_t)t * ld + s];
        double mx = 0;
        for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(w[i]));
        verdict(c, what, ref_compare("scores", g, w, n, DSA_SCORE_ATOL * mx, DSA_SCORE_RTOL, 1), DSA_SCORE_L2);
        free(got), free(want), free(keys), free(ks), free(g), free(w);
    } else {
        double us = time_us(c, dsa_logits_launch, &a, 10);
        // Floor: the cached keys once per request, queries and weights, the scores written.
        bench_line_peak(c, what, us, cached * DSA_TOKEN_BYTES + T * (double)DSA_HEADS * (DSA_DIM + 4) + 4.0 * np,
                        dsa_logits_flops(np), PEAK_FP8_TFLOPS);
    }
    free(cache), free(q8), free(wt), free(pg.table), free(pg.kv_len);
    CUdeviceptr all[] = {dc, dq8, dwt, dt, dl, dout};
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++) dev_free(all[i], 0);
}

struct sparse_arg {
    struct lwb_mla_decode *d;
    CUdeviceptr table, lens, sel, cache, out, ws;
    int max_blocks, qlen;
    float scale;
};
static void sparse_launch(void *p, CUstream s) {
    struct sparse_arg *a = p;
    mla_sparse_enqueue(a->d, s, a->table, a->max_blocks, a->lens, a->qlen, a->sel, a->cache, a->scale, a->out, a->ws);
}

// Sparse attention over random selections: token t picks min(topk, visible) distinct visible keys
// (the valid ones first, -1 after them), as the top-k writes them.
static void check_mla_sparse_case(struct check *c, int batch, int qlen, int heads, int page, const int *kv_len, int topk,
                                  int force_splits, bool verify) {
    struct paged pg;
    paged_make(c, &pg, batch, page, kv_len);
    const int T = batch * qlen;
    struct lwb_mla_decode d = {.cfg = mla_sparse_choose(heads, page, topk, T, c->dev.sm_count)};
    if (force_splits) {
        d.cfg.split_len = LWB_CEIL_DIV(LWB_CEIL_DIV(topk, force_splits), 64) * 64;
        d.cfg.num_splits = LWB_CEIL_DIV(topk, d.cfg.split_len);
    }
    mla_decode_request(&d.req, d.cfg);
    jit_build(&c->jit, (struct lwb_kreq *[]){&d.req}, 1);
    int *sel = xmalloc(sizeof(int) * (size_t)T * topk), maxlen = 0;
    for (int b = 0; b < batch; b++) maxlen = LWB_MAX(maxlen, kv_len[b]);
    int *perm = xmalloc(sizeof(int) * (size_t)maxlen);
    double selected = 0;
    for (int t = 0; t < T; t++) {
        const int n = kv_len[t / qlen] - qlen + t % qlen + 1, m = LWB_MIN(n, topk);
        for (int i = 0; i < n; i++) perm[i] = i;
        for (int i = 0; i < m; i++) { // a partial Fisher-Yates: m distinct keys
            int j = i + (int)(ref_next(&c->rng) % (uint64_t)(n - i)), x = perm[i];
            perm[i] = perm[j], perm[j] = x;
        }
        for (int j = 0; j < topk; j++) sel[(size_t)t * topk + j] = j < m ? perm[j] : -1;
        selected += m;
    }
    size_t nq = (size_t)T * heads * 576, nc = (size_t)pg.blocks * page * 576, no = (size_t)T * heads * 512;
    CUdeviceptr dq = dev_alloc(nq * 2, "q"), dc = dev_alloc(nc * 2, "cache"), dout = dev_alloc(no * 2, "out");
    init_fill_bf16(&c->init, c->s, dq, (long long)nq, 21 + (unsigned)batch, -0.25f, 0.25f);
    init_fill_bf16(&c->init, c->s, dc, (long long)nc, 22 + (unsigned)batch, -1.f, 1.f);
    CUdeviceptr dt = upload(pg.table, sizeof(int) * (size_t)pg.blocks), dl = upload(kv_len, sizeof(int) * (size_t)batch),
                ds = upload(sel, sizeof(int) * (size_t)T * topk);
    size_t wsb = mla_decode_workspace(&d.cfg, T);
    CUdeviceptr ws = wsb ? dev_alloc(wsb, "ws") : 0;
    mla_decode_bind(&d, dq, T, dc, pg.blocks);
    struct sparse_arg a = {&d, dt, dl, ds, dc, dout, ws, pg.max_blocks, qlen, 0.1352f};
    char what[160];
    snprintf(what, sizeof what, "mla_sparse b=%d q=%d h=%d topk=%d kv<=%d splits=%d", batch, qlen, heads, topk, maxlen,
             d.cfg.num_splits);
    if (verify) {
        poison(c, dout, no * 2);
        sparse_launch(&a, c->s);
        stream_wait(c->s, 60, "mla_sparse");
        uint16_t *q = xmalloc(nq * 2), *cache = xmalloc(nc * 2), *got16 = xmalloc(no * 2);
        download(q, dq, nq * 2), download(cache, dc, nc * 2), download(got16, dout, no * 2);
        float *got = bf16_to_f32(got16, no), *want = xmalloc(no * 4);
        ref_mla_sparse(q, cache, pg.table, pg.max_blocks, sel, topk, T, qlen, heads, page, 0.1352f, want);
        verdict(c, what, ref_compare("o", got, want, no, MLA_DECODE_ATOL, MLA_DECODE_RTOL, 1), 1e-2);
        free(q), free(cache), free(got16), free(got), free(want);
    } else {
        double us = time_us(c, sparse_launch, &a, 10);
        bench_line(c, what, us, mla_sparse_bytes(heads, T, selected, topk), mla_decode_flops(heads, selected));
    }
    dev_free(dq, 0), dev_free(dc, 0), dev_free(dout, 0), dev_free(dt, 0), dev_free(dl, 0), dev_free(ds, 0);
    if (ws) dev_free(ws, 0);
    free(sel), free(perm), free(pg.table), free(pg.kv_len);
}

static void check_dsa(struct check *c) {
    static const int lens3[] = {100, 64, 200};
    check_dsa_prep_case(c, 3, 1, lens3, 64);
    check_dsa_prep_case(c, 3, 4, lens3, 128);
    static const int lens1[] = {300};
    check_dsa_prep_case(c, 1, 77, lens1, 64); // a chunk of a prefill
    check_dsa_logits_case(c, 3, 1, lens3, 64, 0, 0, 0, true);
    check_dsa_logits_case(c, 3, 1, lens3, 64, 3, 0, 0, true); // key splits
    check_dsa_logits_case(c, 3, 2, lens3, 64, 0, 0, 0, true);
    check_dsa_logits_case(c, 3, 3, lens3, 128, 2, 4, 0, true); // 3 queries in a block of 4
    check_dsa_logits_case(c, 1, 77, lens1, 64, 0, 4, 0, true);  // prefill with past 223
    check_dsa_logits_case(c, 1, 77, lens1, 64, 0, 2, 0, true);
    static const int lens2[] = {129, 1000};
    check_dsa_logits_case(c, 2, 129, lens2, 64, 0, 0, 0, true);
    // In chunks: pieces of one request's queries (64 rows), and whole requests (two per chunk).
    check_dsa_logits_case(c, 1, 300, lens1, 64, 0, 2, 64, true);
    check_dsa_logits_case(c, 2, 129, lens2, 64, 0, 0, 64, true);
    static const int lens5[] = {200, 150, 90, 300, 64};
    check_dsa_logits_case(c, 5, 40, lens5, 64, 0, 0, 64, true);
    // Sparse attention: short rows (fewer valid keys than topk), splits, MTP, heads per TP rank.
    check_mla_sparse_case(c, 3, 1, 128, 64, lens3, 64, 0, true);
    check_mla_sparse_case(c, 3, 2, 128, 64, lens3, 128, 2, true);
    check_mla_sparse_case(c, 1, 77, 128, 64, lens1, 128, 0, true);
    check_mla_sparse_case(c, 3, 1, 16, 64, lens3, 64, 0, true);
    check_mla_sparse_case(c, 2, 1, 128, 64, lens2, 256, 3, true);
    // DeepSeek-V3.2 at 32k: GEN b=128 past 32769 (one new token each), CTX b=1 q=32769.
    int *big = xmalloc(sizeof(int) * 128);
    for (int b = 0; b < 128; b++) big[b] = 32770;
    check_dsa_logits_case(c, 128, 1, big, 64, 0, 0, 0, false);
    check_dsa_logits_case(c, 64, 2, big, 64, 0, 0, 0, false); // MTP
    check_mla_sparse_case(c, 128, 1, 128, 64, big, 2048, 0, false);
    check_mla_decode_case(c, 128, 1, 128, 64, big, 0, false); // the dense attention at the same context
    for (int b = 0; b < 128; b++) big[b] = 4096 + 1;
    check_mla_sparse_case(c, 128, 1, 128, 64, big, 2048, 0, false);
    check_mla_decode_case(c, 128, 1, 128, 64, big, 0, false);
    big[0] = 32769;
    check_dsa_logits_case(c, 1, 32769, big, 64, 0, 4, 0, false);
    check_dsa_logits_case(c, 1, 32769, big, 64, 0, 2, 0, false);
    check_dsa_logits_case(c, 1, 32769, big, 64, 0, 2, dsa_chunk_rows(LWB_CEIL_DIV(32769, 64) * 64, DS_SCORES_BUDGET),
                          false); // as lwb runs it
    check_mla_sparse_case(c, 1, 32769, 128, 64, big, 2048, 0, false);
    free(big);
}

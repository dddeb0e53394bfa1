// check_gqa.h: gpu_check's grouped-query attention family (kernels/gqa.cu.in; included by
// check.c after its helpers and check_dsa.h, whose rand_rope it uses):
//   gqa   the preparation (split, per-head RMSNorm, partial RoPE, cache writes), the causal
//         prefill and the split-KV decode, each against test/ref/gqa.c on fresh random inputs in
//         shuffled paged caches whose unwritten rows are NaN (a read of them fails the check):
//         Nemotron-H's 32/2 heads of 128 and Qwen3-Next's gated 8/1 and 16/2 heads of 256 with
//         q/k norm and RoPE, pages of 32 and 64, odd query and cache lengths; then benchmarks at
//         the README's CTX and GEN shapes next to their floors (test/gpu/anchors_gqa.py times
//         torch's SDPA on the same shapes). Both prefill kernels (mma: lwb_gqa_prefill, wgmma:
//         lwb_gqa_prefill_wg) are checked on every prefill case and timed on every CTX shape,
//         each line naming its kernel, and a `prefill` line compares the two.
#pragma once
#include "../ref/gqa.c"

static const struct gqa_config GQA_NEMOTRON = {.q_heads = 32, .kv_heads = 2, .head_dim = 128, .page = 64};
static const struct gqa_config GQA_QWEN_TP2 = {.q_heads = 8, .kv_heads = 1, .head_dim = 256, .page = 64,
                                               .rope_dim = 64, .qk_norm = true, .gate = true};
static const struct gqa_config GQA_QWEN = {.q_heads = 16, .kv_heads = 2, .head_dim = 256, .page = 64,
                                           .rope_dim = 64, .qk_norm = true, .gate = true};

static struct ref_gqa_shape gqa_ref_shape(struct gqa_config g) {
    return (struct ref_gqa_shape){g.q_heads, g.kv_heads, g.head_dim, g.rope_dim, g.qk_norm, g.gate};
}

static const char *gqa_name(struct gqa_config g) {
    return g.head_dim == 128 ? "nemotron" : g.q_heads / g.kv_heads == 8 && g.kv_heads == 1 ? "qwen/tp2" : "qwen";
}

struct gqa_arg {
    const struct lwb_kreq *r;
    struct gqa_config cfg;
    struct gqa_decode_plan plan;
    struct gqa_attn_args a;
    struct gqa_prep_args p;
};
static void gqa_prep_launch(void *p, CUstream s) {
    struct gqa_arg *x = p;
    gqa_prep_enqueue(x->r, x->cfg, s, &x->p);
}
static void gqa_prefill_launch(void *p, CUstream s) {
    struct gqa_arg *x = p;
    gqa_prefill_enqueue(x->r, x->cfg, s, &x->a);
}
static void gqa_decode_launch(void *p, CUstream s) {
    struct gqa_arg *x = p;
    gqa_decode_enqueue(x->r, x->cfg, x->plan, s, &x->a);
}

// The prefill kernels, in the order they are checked and timed.
static const int GQA_PREFILL_KERNELS[] = {GQA_PREFILL_MMA, GQA_PREFILL_WGMMA};
static const char *gqa_prefill_tag(int k) { return k == GQA_PREFILL_MMA ? "mma" : "wgmma"; }

static struct gqa_decode_plan gqa_forced_plan(int maxlen, int splits) {
    struct gqa_decode_plan p;
    p.split_len = LWB_CEIL_DIV(LWB_CEIL_DIV(maxlen, splits), GQA_KT) * GQA_KT;
    p.splits = LWB_CEIL_DIV(maxlen, p.split_len);
    return p;
}

#define GQA_PREFILL 1
#define GQA_DECODE 2

// One step of `batch` requests with qlen new tokens after past[b] cached ones: preparation, then
// the attention kernels named in `modes` on its outputs. force_splits: 0 (lwb's choice) or the
// decode's KV splits.
static void check_gqa_case(struct check *c, struct gqa_config cfg, int page, int batch, int qlen, const int *past,
                           int modes, int force_splits) {
    cfg.page = page;
    const int hd = cfg.head_dim, QH = cfg.q_heads, KVH = cfg.kv_heads, T = batch * qlen;
    if (cfg.rope_dim != 0 && cfg.rope_dim != 64) LWB_BUG("check_gqa: rand_rope makes 64-dim tables");
    int *kv_len = xmalloc(sizeof(int) * (size_t)batch), maxlen = 0;
    for (int b = 0; b < batch; b++) kv_len[b] = past[b] + qlen, maxlen = LWB_MAX(maxlen, kv_len[b]);
    struct paged pg;
    paged_make(c, &pg, batch, page, kv_len);
    struct lwb_kreq req;
    gqa_request(&req, cfg);
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);

    // Projection rows with 8 extra columns (a stride that is not the row width).
    const int qwid = QH * hd * (cfg.gate ? 2 : 1), width = qwid + 2 * KVH * hd;
    const long long ld = width + 8;
    uint16_t *qkv = rand_bf16(c, (size_t)T * ld, -2.f, 2.f);
    uint16_t *qnw = rand_bf16(c, (size_t)hd, -0.3f, 0.3f), *knw = rand_bf16(c, (size_t)hd, -0.3f, 0.3f);
    float *cs = NULL, *sn = NULL;
    if (cfg.rope_dim) rand_rope(c, maxlen, &cs, &sn);
    // The cache: random past rows; rows from each request's past on are NaN until written.
    const size_t blk_elems = gqa_cache_block_bytes(cfg) / 2, ncache = (size_t)pg.blocks * blk_elems;
    uint16_t *cache = rand_bf16(c, ncache, -2.f, 2.f);
    for (int b = 0; b < batch; b++)
        for (int j = past[b]; j < pg.max_blocks * page; j++)
            for (int w = 0; w < 2; w++)
                for (int h = 0; h < KVH; h++) {
                    const size_t blk = (size_t)pg.table[b * pg.max_blocks + j / page];
                    memset(cache + ((blk * 2 + w) * KVH + h) * page * hd + (size_t)(j % page) * hd, 0xff, (size_t)hd * 2);
                }
    const size_t nq = (size_t)T * QH * hd;
    CUdeviceptr dqkv = upload(qkv, (size_t)T * ld * 2), dqnw = upload(qnw, (size_t)hd * 2), dknw = upload(knw, (size_t)hd * 2),
                dcs = cs ? upload(cs, sizeof(float) * (size_t)maxlen * 32) : 0,
                dsn = sn ? upload(sn, sizeof(float) * (size_t)maxlen * 32) : 0, dcache = upload(cache, ncache * 2),
                dt = upload(pg.table, sizeof(int) * (size_t)pg.blocks), dl = upload(kv_len, sizeof(int) * (size_t)batch),
                dq = dev_alloc(nq * 2, "q"), dg = cfg.gate ? dev_alloc(nq * 2, "gate") : 0, dout = dev_alloc(nq * 2, "out");
    poison(c, dq, nq * 2);
    if (dg) poison(c, dg, nq * 2);
    struct gqa_arg x = {.r = &req, .cfg = cfg};
    x.p = (struct gqa_prep_args){.qkv = dqkv, .ld = ld, .q_norm_w = cfg.qk_norm ? dqnw : 0,
                                 .k_norm_w = cfg.qk_norm ? dknw : 0, .eps = 1e-6f, .cos_t = dcs, .sin_t = dsn,
                                 .cache = dcache, .block_table = dt, .max_blocks = pg.max_blocks, .kv_lens = dl,
                                 .batch = batch, .qlen = qlen, .q_out = dq, .gate_out = dg};
    gqa_prep_launch(&x, c->s);
    stream_wait(c->s, 60, "gqa prep");

    // Preparation against the reference.
    uint16_t *gq = xmalloc(nq * 2), *gg = xmalloc(nq * 2), *gcache = xmalloc(ncache * 2);
    uint16_t *wq = xmalloc(nq * 2), *wg = xmalloc(nq * 2), *wk = xmalloc((size_t)T * KVH * hd * 2),
             *wv = xmalloc((size_t)T * KVH * hd * 2);
    download(gq, dq, nq * 2), download(gcache, dcache, ncache * 2);
    if (dg) download(gg, dg, nq * 2);
    int *pos = xmalloc(sizeof(int) * (size_t)T);
    for (int t = 0; t < T; t++) pos[t] = kv_len[t / qlen] - qlen + t % qlen;
    ref_gqa_prep(qkv, ld, T, gqa_ref_shape(cfg), qnw, knw, 1e-6f, cs, sn, pos, wq, cfg.gate ? wg : NULL, wk, wv);
    char what[160], tag[96];
    snprintf(tag, sizeof tag, "%s b=%d q=%d past=%d%s page=%d", gqa_name(cfg), batch, qlen, past[0],
             batch > 1 && past[1] != past[0] ? ".." : "", page);
    float *got = bf16_to_f32(gq, nq), *want = bf16_to_f32(wq, nq);
    snprintf(what, sizeof what, "gqa_prep q %s", tag);
    verdict(c, what, ref_compare("q", got, want, nq, GQA_PREP_ATOL, GQA_PREP_RTOL, 1), GQA_PREP_L2);
    free(got), free(want);
    if (cfg.gate) {
        got = bf16_to_f32(gg, nq), want = bf16_to_f32(wg, nq);
        snprintf(what, sizeof what, "gqa_prep gate %s", tag);
        verdict(c, what, ref_compare("gate", got, want, nq, 0, 0, 1), 0);
        free(got), free(want);
    }
    // Every valid cache row: the old ones untouched, the new ones the reference's keys and values.
    size_t nrows = 0;
    for (int b = 0; b < batch; b++) nrows += (size_t)kv_len[b] * 2 * KVH;
    got = xmalloc(sizeof(float) * nrows * hd), want = xmalloc(sizeof(float) * nrows * hd);
    size_t n = 0;
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < kv_len[b]; j++)
            for (int w = 0; w < 2; w++)
                for (int h = 0; h < KVH; h++, n++) {
                    const size_t blk = (size_t)pg.table[b * pg.max_blocks + j / page];
                    const size_t off = ((blk * 2 + w) * KVH + h) * page * hd + (size_t)(j % page) * hd;
                    const int t = j >= past[b] ? b * qlen + (j - past[b]) : -1; // the new token, if any
                    const uint16_t *e = t < 0 ? cache + off : (w ? wv : wk) + ((size_t)t * KVH + h) * hd;
                    for (int d = 0; d < hd; d++)
                        got[n * hd + d] = ref_bf16_to_f32(gcache[off + d]), want[n * hd + d] = ref_bf16_to_f32(e[d]);
                }
    snprintf(what, sizeof what, "gqa_prep cache %s", tag);
    verdict(c, what, ref_compare("cache", got, want, nrows * hd, GQA_PREP_ATOL, GQA_PREP_RTOL, 1), GQA_PREP_L2);
    free(got), free(want);

    // Attention on the kernel's own q and cache (the reference reads the same bf16 values).
    const float scale = 1.0f / sqrtf((float)hd);
    float *ref_out = xmalloc(sizeof(float) * nq);
    ref_gqa_attn(gq, cfg.gate ? gg : NULL, gcache, pg.table, pg.max_blocks, kv_len, batch, qlen, gqa_ref_shape(cfg),
                 page, scale, ref_out);
    x.a = (struct gqa_attn_args){.q = dq, .gate = dg, .cache = dcache, .block_table = dt, .max_blocks = pg.max_blocks,
                                 .kv_lens = dl, .batch = batch, .qlen = qlen, .past = past[0], .sm_scale = scale,
                                 .out = dout};
    uint16_t *go = xmalloc(nq * 2);
    // Runs: each prefill kernel, then the decode.
    for (int run = 0; run < (int)LWB_ARRAY_LEN(GQA_PREFILL_KERNELS) + 1; run++) {
        const int mode = run < (int)LWB_ARRAY_LEN(GQA_PREFILL_KERNELS) ? GQA_PREFILL : GQA_DECODE;
        if (!(modes & mode)) continue;
        if (mode == GQA_PREFILL) x.cfg.prefill = GQA_PREFILL_KERNELS[run];
        CUdeviceptr ws = 0;
        size_t wsb = 0;
        if (mode == GQA_DECODE) {
            if (!gqa_decode_rows(cfg, qlen)) LWB_BUG("check_gqa: decode of %d tokens", qlen);
            x.plan = force_splits ? gqa_forced_plan(maxlen, force_splits)
                                  : gqa_decode_choose(cfg, batch, qlen, maxlen, c->dev.sm_count);
            wsb = gqa_decode_ws_bytes(cfg, x.plan, batch, qlen);
            if (wsb) ws = dev_alloc(wsb, "gqa decode ws"), poison(c, ws, wsb);
        }
        x.a.ws = ws;
        poison(c, dout, nq * 2);
        if (mode == GQA_PREFILL) gqa_prefill_launch(&x, c->s);
        else gqa_decode_launch(&x, c->s);
        stream_wait(c->s, 60, mode == GQA_PREFILL ? "gqa prefill" : "gqa decode");
        download(go, dout, nq * 2);
        got = bf16_to_f32(go, nq);
        if (mode == GQA_PREFILL) snprintf(what, sizeof what, "gqa_prefill[%s] %s", gqa_prefill_tag(x.cfg.prefill), tag);
        else snprintf(what, sizeof what, "gqa_decode %s splits=%d", tag, x.plan.splits);
        verdict(c, what, ref_compare("o", got, ref_out, nq, GQA_ATTN_ATOL, GQA_ATTN_RTOL, 1), GQA_ATTN_L2);
        free(got);
        if (ws) dev_free(ws, wsb);
    }
    free(qkv), free(qnw), free(knw), free(cs), free(sn), free(cache), free(gq), free(gg), free(gcache), free(wq), free(wg);
    free(wk), free(wv), free(pos), free(ref_out), free(go), free(kv_len), free(pg.table), free(pg.kv_len);
    CUdeviceptr all[] = {dqkv, dqnw, dknw, dcs, dsn, dcache, dt, dl, dq, dg, dout};
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++)
        if (all[i]) dev_free(all[i], 0);
}

// Timed at a model's shape: every request has `past` cached tokens and qlen new ones; the
// preparation too when `prep` (CTX).
static void bench_gqa(struct check *c, struct gqa_config cfg, int page, int batch, int qlen, int past, int mode,
                      bool prep) {
    cfg.page = page;
    const int hd = cfg.head_dim, T = batch * qlen, kv = past + qlen;
    int *lens = xmalloc(sizeof(int) * (size_t)batch);
    for (int b = 0; b < batch; b++) lens[b] = kv;
    struct paged pg;
    paged_make(c, &pg, batch, page, lens);
    struct lwb_kreq req;
    gqa_request(&req, cfg);
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);
    const size_t nq = (size_t)T * cfg.q_heads * hd, ncache = (size_t)pg.blocks * gqa_cache_block_bytes(cfg) / 2;
    CUdeviceptr dq = dev_alloc(nq * 2, "q"), dg = cfg.gate ? dev_alloc(nq * 2, "gate") : 0,
                dout = dev_alloc(nq * 2, "out"), dcache = dev_alloc(ncache * 2, "cache"),
                dt = upload(pg.table, sizeof(int) * (size_t)pg.blocks), dl = upload(lens, sizeof(int) * (size_t)batch);
    init_fill_bf16(&c->init, c->s, dq, (long long)nq, 61, -2.f, 2.f);
    if (dg) init_fill_bf16(&c->init, c->s, dg, (long long)nq, 62, -2.f, 2.f);
    init_fill_bf16(&c->init, c->s, dcache, (long long)ncache, 63, -2.f, 2.f);
    struct gqa_arg x = {.r = &req, .cfg = cfg};
    x.a = (struct gqa_attn_args){.q = dq, .gate = dg, .cache = dcache, .block_table = dt, .max_blocks = pg.max_blocks,
                                 .kv_lens = dl, .batch = batch, .qlen = qlen, .past = past,
                                 .sm_scale = 1.0f / sqrtf((float)hd), .out = dout};
    char what[160];
    size_t wsb = 0;
    if (mode == GQA_DECODE) {
        x.plan = gqa_decode_choose(cfg, batch, qlen, kv, c->dev.sm_count);
        wsb = gqa_decode_ws_bytes(cfg, x.plan, batch, qlen);
        if (wsb) x.a.ws = dev_alloc(wsb, "gqa decode ws");
        snprintf(what, sizeof what, "gqa_decode %s b=%d q=%d past=%d p%d s%d", gqa_name(cfg), batch, qlen, past, page,
                 x.plan.splits);
        stream_wait(c->s, 60, "gqa bench fill");
        bench_line(c, what, time_us(c, gqa_decode_launch, &x, 10), gqa_attn_bytes(cfg, batch, qlen, past),
                   gqa_attn_flops(cfg, batch, qlen, past));
    } else {
        stream_wait(c->s, 60, "gqa bench fill");
        double us[LWB_ARRAY_LEN(GQA_PREFILL_KERNELS)];
        for (size_t k = 0; k < LWB_ARRAY_LEN(GQA_PREFILL_KERNELS); k++) {
            x.cfg.prefill = GQA_PREFILL_KERNELS[k];
            snprintf(what, sizeof what, "gqa_prefill[%s] %s b=%d q=%d past=%d p%d", gqa_prefill_tag(x.cfg.prefill),
                     gqa_name(cfg), batch, qlen, past, page);
            us[k] = time_us(c, gqa_prefill_launch, &x, 10);
            bench_line(c, what, us[k], gqa_attn_bytes(cfg, batch, qlen, past), gqa_attn_flops(cfg, batch, qlen, past));
        }
        x.cfg.prefill = GQA_PREFILL_AUTO;
        printf("prefill %s b=%d q=%d past=%d: mma %.1f us, wgmma %.1f us (wgmma %.2fx as fast); default: %s\n",
               gqa_name(cfg), batch, qlen, past, us[0], us[1], us[0] / us[1],
               gqa_prefill_uses_wg(x.cfg) ? "wgmma" : "mma");
        fflush(stdout);
    }
    if (prep) {
        const int qwid = cfg.q_heads * hd * (cfg.gate ? 2 : 1), width = qwid + 2 * cfg.kv_heads * hd;
        CUdeviceptr dqkv = dev_alloc((size_t)T * width * 2, "qkv"), dw = dev_alloc((size_t)hd * 2, "norm w"), dcs = 0,
                    dsn = 0;
        init_fill_bf16(&c->init, c->s, dqkv, (long long)T * width, 64, -2.f, 2.f);
        init_fill_bf16(&c->init, c->s, dw, hd, 65, -0.3f, 0.3f);
        if (cfg.rope_dim) {
            float *cs, *sn;
            rand_rope(c, kv, &cs, &sn);
            dcs = upload(cs, sizeof(float) * (size_t)kv * 32), dsn = upload(sn, sizeof(float) * (size_t)kv * 32);
            free(cs), free(sn);
        }
        x.p = (struct gqa_prep_args){.qkv = dqkv, .ld = width, .q_norm_w = dw, .k_norm_w = dw, .eps = 1e-6f,
                                     .cos_t = dcs, .sin_t = dsn, .cache = dcache, .block_table = dt,
                                     .max_blocks = pg.max_blocks, .kv_lens = dl, .batch = batch, .qlen = qlen,
                                     .q_out = dq, .gate_out = dg};
        stream_wait(c->s, 60, "gqa bench fill");
        snprintf(what, sizeof what, "gqa_prep %s tokens=%d", gqa_name(cfg), T);
        bench_line(c, what, time_us(c, gqa_prep_launch, &x, 10), gqa_prep_bytes(cfg, T), 0);
        dev_free(dqkv, 0), dev_free(dw, 0);
        if (dcs) dev_free(dcs, 0), dev_free(dsn, 0);
    }
    CUdeviceptr all[] = {dq, dg, dout, dcache, dt, dl, x.a.ws};
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++)
        if (all[i]) dev_free(all[i], 0);
    free(lens), free(pg.table), free(pg.kv_len);
}

static void check_gqa(struct check *c) {
    const int PD = GQA_PREFILL | GQA_DECODE;
    // Nemotron-H: 32 query heads over 2 KV heads of 128, no RoPE, no norm, no gate.
    static const int n3[] = {1000, 37, 129}, n2[] = {1000, 511}, z2[] = {0, 0}, k1[] = {1000}, z1[] = {0};
    static const int n5[] = {8, 70, 200, 1, 333}, m2[] = {100, 250};
    check_gqa_case(c, GQA_NEMOTRON, 32, 3, 1, n3, PD, 0);
    check_gqa_case(c, GQA_NEMOTRON, 32, 3, 1, n3, GQA_DECODE, 3);  // KV splits and their merge
    check_gqa_case(c, GQA_NEMOTRON, 64, 5, 1, n5, GQA_DECODE, 0);
    check_gqa_case(c, GQA_NEMOTRON, 64, 2, 3, n2, PD, 2);          // MTP: 48 rows in a block of 64
    check_gqa_case(c, GQA_NEMOTRON, 32, 2, 8, m2, PD, 2);          // 128 rows: 8 warps of 16
    check_gqa_case(c, GQA_NEMOTRON, 32, 2, 77, z2, GQA_PREFILL, 0);
    check_gqa_case(c, GQA_NEMOTRON, 64, 1, 300, k1, GQA_PREFILL, 0); // chunked prefill
    check_gqa_case(c, GQA_NEMOTRON, 32, 1, 300, z1, GQA_PREFILL, 0);
    // Qwen3-Next: gated heads of 256 with q/k norm and RoPE on 64 dims; 8/1 per rank at TP 2, 16/2 whole.
    static const int w4[] = {1000, 3, 64, 555}, w3[] = {1001, 17, 64}, w2[] = {0, 1000}, q2[] = {1000, 77},
                     r2[] = {300, 1000}, h2[] = {1000, 1000};
    check_gqa_case(c, GQA_QWEN_TP2, 64, 4, 1, w4, PD, 0);
    check_gqa_case(c, GQA_QWEN_TP2, 32, 3, 3, w3, PD, 2);          // 24 rows in a block of 32
    check_gqa_case(c, GQA_QWEN_TP2, 32, 2, 77, w2, GQA_PREFILL, 0); // requests with different pasts
    check_gqa_case(c, GQA_QWEN_TP2, 64, 2, 77, h2, GQA_PREFILL, 0);
    check_gqa_case(c, GQA_QWEN_TP2, 64, 1, 300, z1, GQA_PREFILL, 0);
    check_gqa_case(c, GQA_QWEN, 64, 2, 1, q2, PD, 0);
    check_gqa_case(c, GQA_QWEN, 32, 2, 4, r2, PD, 3);              // 64 rows: 4 tokens x 16 heads
    check_gqa_case(c, GQA_QWEN, 64, 1, 300, k1, GQA_PREFILL, 0);

    // CTX: Nemotron b1 q8193; Qwen (8/1 per rank) b4 q8193; a chunk of 1000 after 4096 cached.
    bench_gqa(c, GQA_NEMOTRON, 64, 1, 8193, 0, GQA_PREFILL, true);
    bench_gqa(c, GQA_QWEN_TP2, 64, 4, 8193, 0, GQA_PREFILL, true);
    bench_gqa(c, GQA_NEMOTRON, 64, 1, 1000, 4096, GQA_PREFILL, false);
    bench_gqa(c, GQA_QWEN_TP2, 64, 4, 1000, 4096, GQA_PREFILL, false);
    // GEN: Nemotron b128, Qwen b512 (8/1), 8193 cached tokens; MTP with 2 and 4 new tokens.
    bench_gqa(c, GQA_NEMOTRON, 64, 128, 1, 8193, GQA_DECODE, false);
    bench_gqa(c, GQA_NEMOTRON, 32, 128, 1, 8193, GQA_DECODE, false);
    bench_gqa(c, GQA_QWEN_TP2, 64, 512, 1, 8193, GQA_DECODE, false);
    bench_gqa(c, GQA_NEMOTRON, 64, 128, 2, 8193, GQA_DECODE, false);
    bench_gqa(c, GQA_QWEN_TP2, 64, 512, 4, 8193, GQA_DECODE, false);
}

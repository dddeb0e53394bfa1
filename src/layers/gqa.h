// layers/gqa.h: host side of the gqa kernel family (kernels/gqa.cu.in): grouped-query attention
// over a paged KV cache, for the context phase (causal prefill, chunked or not) and generation
// (split-KV decode with a merge), and the preparation of its inputs (per-head RMSNorm, partial
// RoPE, cache writes).
//
// Defines: struct gqa_config, gqa_request (one request holds every entry point), gqa_prep_enqueue,
// gqa_prefill_enqueue (and gqa_prefill_kernel_name, which of the two prefill kernels it runs),
// gqa_decode_choose / gqa_decode_ws_bytes / gqa_decode_enqueue, gqa_attn_flops / gqa_attn_bytes /
// gqa_prep_bytes, gqa_cache_block_bytes, gqa_samples.
//
// Two prefill kernels: lwb_gqa_prefill (mma.sync, flash-attention 2 style, 256 threads) and
// lwb_gqa_prefill_wg (wgmma, warp-specialised, flash-attention 3 style, 384 threads). Both are in
// every request's module; gqa_config.prefill picks one (0, the default: the wgmma kernel, which
// takes every configuration gqa_validate accepts on Hopper, the only target lwb compiles for).
//
// Tensors (bf16 unless said): projection rows [q part: q_heads x (head_dim, or head_dim query +
// head_dim gate) | k: kv_heads x head_dim | v: kv_heads x head_dim], row stride ld; q, gate and
// out (tokens, q_heads, head_dim) with tokens = batch * qlen, request-major; cache blocks
// [2][kv_heads][page][head_dim] (K then V); block table int32 (batch, max_blocks); kv_lens int32
// (batch): cached tokens after this step's, so request b's new tokens sit at kv_lens[b] - qlen ...
// The attention kernels read the past length from kv_lens (`past` in the arguments only serves
// the floors), so requests may differ in it.
//
// Does not: own the cache, the projections or the rope tables (the model's layer does), or
// handle head dims other than 128 and 256.
// Tested by test/gpu/check_gqa.h against test/ref/gqa.c.
#pragma once

#define GQA_KT 64          // keys per tile (the template's KT)
#define GQA_BM 128         // prefill query rows per block (the template's BM)
#define GQA_SMEM_SM 233472 // shared memory per SM on Hopper (228 KiB), for occupancy estimates

enum gqa_prefill_kernel {
    GQA_PREFILL_AUTO,  // lwb's choice: the mma.sync kernel (measured faster on an H200, see below)
    GQA_PREFILL_MMA,   // lwb_gqa_prefill (mma.sync)
    GQA_PREFILL_WGMMA, // lwb_gqa_prefill_wg
};

struct gqa_config {
    int q_heads, kv_heads, head_dim; // this rank's heads; head_dim 128 or 256 (others refused)
    int page;                        // tokens per cache block
    int rope_dim;                    // 0: no RoPE; else rotary dims at the start of each head (NeoX halves)
    bool qk_norm;                    // Gemma-style RMSNorm on q and k per head (before RoPE)
    bool gate;                       // q rows per head are [query | gate]; attention output *= sigmoid(gate)
    int prefill;                     // enum gqa_prefill_kernel (0: lwb's choice); no effect on the compiled code
};

static void gqa_validate(struct gqa_config c) {
    if (c.head_dim != 128 && c.head_dim != 256)
        lwb_user_error("gqa: head_dim %d is not supported (lwb's attention kernels take 128 or 256)", c.head_dim);
    if (c.q_heads <= 0 || c.kv_heads <= 0 || c.q_heads % c.kv_heads)
        lwb_user_error("gqa: %d query heads do not split into groups over %d KV heads", c.q_heads, c.kv_heads);
    if (c.page < 16 || c.page % 16)
        lwb_user_error("gqa: a KV cache page of %d tokens is not supported (a multiple of 16)", c.page);
    if (c.rope_dim < 0 || c.rope_dim % 64 || c.rope_dim > c.head_dim)
        lwb_user_error("gqa: %d rotary dims are not supported (0, or a multiple of 64 up to head_dim %d)", c.rope_dim,
                       c.head_dim);
}

// Ring depths: the prefill keeps 128 query rows plus its ring (128 KiB at head_dim 128, 192 KiB at
// 256: one block of 8 warps per SM); the decode ring holds three 64-key tiles (96 KiB at 128: two
// blocks per SM; 192 KiB at 256).
static int gqa_prefill_stages(struct gqa_config c) { return c.head_dim <= 128 ? 3 : 2; }
static int gqa_decode_stages(struct gqa_config c) { (void)c; return 3; }

// The wgmma prefill's tiles: 128 keys at head_dim 128 (S and O are 64 x 128 per warpgroup: 64
// fp32 registers each, P 32), 64 at 256 (O takes 128 registers; S 32, P 16). Stages: queries plus
// the rings take 224 KiB with three at 128 (the copies, from cp.async, get two tiles of slack),
// 192 KiB with two at 256 (three would not fit); one block per SM either way.
static int gqa_wg_keys(struct gqa_config c) { return c.head_dim <= 128 ? 128 : 64; }
static int gqa_wg_stages(struct gqa_config c) { return c.head_dim <= 128 ? 3 : 2; }

static void gqa_request(struct lwb_kreq *r, struct gqa_config c) {
    gqa_validate(c);
    *r = (struct lwb_kreq){.family = "gqa"};
    snprintf(r->label, sizeof r->label, "gqa_h%dx%d_d%d_p%d_r%d%s%s", c.q_heads, c.kv_heads, c.head_dim, c.page,
             c.rope_dim, c.qk_norm ? "_norm" : "", c.gate ? "_gate" : "");
    kreq_set(r, "Q_HEADS", c.q_heads);
    kreq_set(r, "KV_HEADS", c.kv_heads);
    kreq_set(r, "HEAD_DIM", c.head_dim);
    kreq_set(r, "PAGE", c.page);
    kreq_set(r, "ROPE_DIM", c.rope_dim);
    kreq_set(r, "QK_NORM", c.qk_norm);
    kreq_set(r, "GATE", c.gate);
    kreq_set(r, "PREFILL_STAGES", gqa_prefill_stages(c));
    kreq_set(r, "DECODE_STAGES", gqa_decode_stages(c));
    kreq_set(r, "WG_KT", gqa_wg_keys(c));
    kreq_set(r, "WG_STAGES", gqa_wg_stages(c));
    kreq_entry(r, "lwb_gqa_prep");
    kreq_entry(r, "lwb_gqa_prefill");
    kreq_entry(r, "lwb_gqa_prefill_wg");
    kreq_entry(r, "lwb_gqa_decode_m16");
    kreq_entry(r, "lwb_gqa_decode_m32");
    kreq_entry(r, "lwb_gqa_decode_m64");
    kreq_entry(r, "lwb_gqa_decode_m128");
    kreq_entry(r, "lwb_gqa_decode_combine");
}

static size_t gqa_cache_block_bytes(struct gqa_config c) { return (size_t)2 * c.kv_heads * c.page * c.head_dim * 2; }

// ---------------------------------------------------------------------------------------------
// Preparation

struct gqa_prep_args {
    CUdeviceptr qkv;                // (tokens, ld) projection rows
    long long ld;                   // elements
    CUdeviceptr q_norm_w, k_norm_w; // (head_dim) each when qk_norm (Gemma style: the kernel adds 1)
    float eps;
    CUdeviceptr cos_t, sin_t;       // (positions, rope_dim/2) fp32 each, 0 without RoPE
    CUdeviceptr cache, block_table; // cache blocks; (batch, max_blocks) int32
    int max_blocks;
    CUdeviceptr kv_lens;            // (batch) int32, including the new tokens
    int batch, qlen;
    CUdeviceptr q_out, gate_out;    // (tokens, q_heads, head_dim) each, or 0 (not written)
};

static void gqa_prep_enqueue(const struct lwb_kreq *r, struct gqa_config c, CUstream s, const struct gqa_prep_args *a) {
    const int tokens = a->batch * a->qlen;
    if (tokens == 0) return;
    if (c.qk_norm && (!a->q_norm_w || !a->k_norm_w)) LWB_BUG("gqa prep: qk_norm without weights");
    if (c.rope_dim && (!a->cos_t || !a->sin_t)) LWB_BUG("gqa prep: rope without tables");
    struct gqa_prep_args x = *a;
    int qlen = a->qlen, max_blocks = a->max_blocks;
    void *args[] = {&x.qkv, &x.ld, &x.q_norm_w, &x.k_norm_w, &x.eps, &x.cos_t, &x.sin_t, &x.cache,
                    &x.block_table, &max_blocks, &x.kv_lens, &qlen, &x.q_out, &x.gate_out};
    cu_launch(kreq_func(r, "lwb_gqa_prep"), (struct lwb_launch){{(unsigned)tokens}, {128}}, s, args);
}

// Bytes: the projection rows read, q, gate, k and v written, the rope tables' rows read.
static double gqa_prep_bytes(struct gqa_config c, int tokens) {
    const double qw = (double)c.q_heads * c.head_dim * (c.gate ? 2 : 1), kv = 2.0 * c.kv_heads * c.head_dim;
    return (double)tokens * (2.0 * (qw + kv) + 2.0 * (qw + kv) + 4.0 * c.rope_dim);
}

// ---------------------------------------------------------------------------------------------
// Attention

struct gqa_attn_args {
    CUdeviceptr q, gate;            // (tokens, q_heads, head_dim); gate only when c.gate
    CUdeviceptr cache, block_table; // cache blocks; (batch, max_blocks) int32
    int max_blocks;
    CUdeviceptr kv_lens;            // (batch) int32 = past + qlen
    int batch, qlen, past;          // past: for the floors (the kernels read kv_lens)
    float sm_scale;
    CUdeviceptr out, ws;            // (tokens, q_heads, head_dim); decode workspace (gqa_decode_ws_bytes)
};

static unsigned gqa_prefill_smem(struct gqa_config c) {
    return (unsigned)(GQA_BM * c.head_dim * 2 + gqa_prefill_stages(c) * 2 * GQA_KT * c.head_dim * 2);
}

static void gqa_set_smem(CUfunction f, unsigned smem) {
    CU_CHECK(lwb_cu.cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem));
}

// Queries, both rings, their barriers, and room to align the tiles to 1024 bytes.
static unsigned gqa_prefill_wg_smem(struct gqa_config c) {
    const int st = gqa_wg_stages(c);
    return (unsigned)(GQA_BM * c.head_dim * 2 + st * 2 * gqa_wg_keys(c) * c.head_dim * 2 + (1 + 4 * st) * 8 + 1024);
}

// Measured on an H200 (test/gpu/check_gqa.h): the wgmma kernel, fed by cp.async, runs at 0.89-0.93x
// the mma.sync kernel's speed on the Nemotron-H and Qwen3-Next prefill shapes, so lwb picks the
// mma.sync one; the wgmma one stays for --tuning and as the start of a TMA-fed version.
static bool gqa_prefill_uses_wg(struct gqa_config c) { return c.prefill == GQA_PREFILL_WGMMA; }

// The entry point gqa_prefill_enqueue launches for c.
static const char *gqa_prefill_kernel_name(struct gqa_config c) {
    return gqa_prefill_uses_wg(c) ? "lwb_gqa_prefill_wg" : "lwb_gqa_prefill";
}

// Both kernels take the same arguments and grid: (q_heads, batch, query tiles of 128).
static void gqa_prefill_enqueue(const struct lwb_kreq *r, struct gqa_config c, CUstream s,
                                const struct gqa_attn_args *a) {
    if (a->batch == 0 || a->qlen == 0) return;
    if (c.gate && !a->gate) LWB_BUG("gqa prefill: gated attention without the gate");
    const bool wg = gqa_prefill_uses_wg(c);
    const unsigned smem = wg ? gqa_prefill_wg_smem(c) : gqa_prefill_smem(c);
    CUfunction f = kreq_func(r, gqa_prefill_kernel_name(c));
    gqa_set_smem(f, smem);
    struct gqa_attn_args x = *a;
    int max_blocks = a->max_blocks, qlen = a->qlen;
    float scale = a->sm_scale;
    void *args[] = {&x.q, &x.gate, &x.cache, &x.block_table, &max_blocks, &x.kv_lens, &qlen, &scale, &x.out};
    cu_launch(f,
              (struct lwb_launch){{(unsigned)c.q_heads, (unsigned)a->batch, (unsigned)LWB_CEIL_DIV(a->qlen, GQA_BM)},
                                  {wg ? 384u : 256u}, smem},
              s, args);
}

// Decode blocks hold 16, 32, 64 or 128 rows (the group's heads times the query tokens): the
// entry's row count, 0 when the rows do not fit (use the prefill).
static int gqa_decode_rows(struct gqa_config c, int qlen) {
    const int rows = c.q_heads / c.kv_heads * qlen;
    const int limit = c.head_dim <= 128 ? 128 : 64; // 128 rows of 256 dims leave no room for the ring
    for (int m = 16; m <= limit; m *= 2)
        if (rows <= m) return m;
    return 0;
}
static unsigned gqa_decode_threads(int mrows) { return mrows == 128 ? 256 : 128; }
static unsigned gqa_decode_smem(struct gqa_config c, int mrows) {
    const int wm = mrows / 16, wk = wm >= 4 ? 1 : 4 / wm, nw = wm * wk;
    const size_t ring = (size_t)gqa_decode_stages(c) * 2 * GQA_KT * c.head_dim * 2;
    const size_t merge = wk > 1 ? (size_t)nw * 16 * (c.head_dim + 8) * 4 + (size_t)nw * 16 * 2 * 4 : 0;
    return (unsigned)((size_t)mrows * c.head_dim * 2 + LWB_MAX(ring, merge));
}

struct gqa_decode_plan {
    int splits, split_len; // KV splits of the longest request; keys per split (a multiple of 64)
};

// Splits of the KV range: enough blocks to fill the machine in few, even waves (blocks per SM
// from the shared memory a block takes), each split at least 4 tiles long (the merge costs a
// pass over fp32 partials).
static struct gqa_decode_plan gqa_decode_choose(struct gqa_config c, int batch, int qlen, int kv_len, int sm_count) {
    gqa_validate(c);
    const int mrows = gqa_decode_rows(c, qlen);
    if (!mrows)
        lwb_user_error("gqa: %d query tokens x %d heads per KV head are too many rows for the decode kernel "
                       "(at most %d); run them through the prefill",
                       qlen, c.q_heads / c.kv_heads, c.head_dim <= 128 ? 128 : 64);
    const int per_sm = LWB_MAX(1, LWB_MIN(GQA_SMEM_SM / ((int)gqa_decode_smem(c, mrows) + 1024),
                                          2048 / (int)gqa_decode_threads(mrows)));
    const long long slots = (long long)sm_count * per_sm, units = (long long)batch * c.kv_heads;
    int best = 1;
    double best_score = -1;
    for (int s = 1; s <= 64; s++) {
        const int len = LWB_CEIL_DIV(LWB_CEIL_DIV(kv_len, s), GQA_KT) * GQA_KT;
        if (s > 1 && len < 4 * GQA_KT) break;
        const long long blocks = units * LWB_CEIL_DIV(kv_len, len);
        const double waves = (double)LWB_CEIL_DIV(blocks, slots);
        const double score = (double)blocks / (waves * slots) - 0.01 * s;
        if (score > best_score + 1e-9) best_score = score, best = s;
    }
    struct gqa_decode_plan p;
    p.split_len = LWB_CEIL_DIV(LWB_CEIL_DIV(LWB_MAX(kv_len, 1), best), GQA_KT) * GQA_KT;
    p.splits = LWB_MAX(1, LWB_CEIL_DIV(kv_len, p.split_len));
    return p;
}

// Partials (splits, tokens, q_heads, head_dim) fp32 then log-sum-exps (splits, tokens, q_heads)
// fp32; 0 with one split.
static size_t gqa_decode_ws_bytes(struct gqa_config c, struct gqa_decode_plan p, int batch, int qlen) {
    if (p.splits <= 1) return 0;
    return (size_t)p.splits * batch * qlen * c.q_heads * (c.head_dim + 1) * sizeof(float);
}

static void gqa_decode_enqueue(const struct lwb_kreq *r, struct gqa_config c, struct gqa_decode_plan p, CUstream s,
                               const struct gqa_attn_args *a) {
    if (a->batch == 0 || a->qlen == 0) return;
    if (c.gate && !a->gate) LWB_BUG("gqa decode: gated attention without the gate");
    if (p.splits > 1 && !a->ws) LWB_BUG("gqa decode: %d splits without a workspace", p.splits);
    if (p.split_len % GQA_KT) LWB_BUG("gqa decode: split length %d is not a multiple of %d", p.split_len, GQA_KT);
    const int mrows = gqa_decode_rows(c, a->qlen);
    if (!mrows) LWB_BUG("gqa decode: qlen %d does not fit a decode block", a->qlen);
    char name[32];
    snprintf(name, sizeof name, "lwb_gqa_decode_m%d", mrows);
    CUfunction f = kreq_func(r, name);
    const unsigned smem = gqa_decode_smem(c, mrows);
    gqa_set_smem(f, smem);
    struct gqa_attn_args x = *a;
    int max_blocks = a->max_blocks, qlen = a->qlen, split_len = p.split_len, splits = p.splits;
    int rows = a->batch * a->qlen * c.q_heads;
    float scale = a->sm_scale;
    CUdeviceptr o_part = splits > 1 ? a->ws : 0;
    CUdeviceptr lse = splits > 1 ? a->ws + (size_t)splits * rows * c.head_dim * sizeof(float) : 0;
    void *args[] = {&x.q, &x.gate, &x.cache, &x.block_table, &max_blocks, &x.kv_lens, &qlen, &scale, &split_len,
                    &x.out, &o_part, &lse};
    cu_launch(f,
              (struct lwb_launch){{(unsigned)splits, (unsigned)c.kv_heads, (unsigned)a->batch},
                                  {gqa_decode_threads(mrows)}, smem},
              s, args);
    if (splits > 1) {
        void *cargs[] = {&o_part, &lse, &splits, &rows, &x.gate, &x.out};
        cu_launch(kreq_func(r, "lwb_gqa_decode_combine"),
                  (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(rows, 8)}, {256}}, s, cargs);
    }
}

// Visible (query, key) pairs of one request: query i sees past + i + 1 keys.
static double gqa_pairs(int qlen, int past) { return (double)qlen * past + (double)qlen * (qlen + 1) / 2; }

// Work: scores and the weighted sum over the causal pairs only.
static double gqa_attn_flops(struct gqa_config c, int batch, int qlen, int past) {
    return 4.0 * c.q_heads * c.head_dim * batch * gqa_pairs(qlen, past);
}
// Bytes: q, out (and the gate) once, every request's K and V once per KV head.
static double gqa_attn_bytes(struct gqa_config c, int batch, int qlen, int past) {
    const double tokens = (double)batch * qlen;
    return tokens * c.q_heads * c.head_dim * 2 * (c.gate ? 3 : 2) +
           (double)batch * (past + qlen) * c.kv_heads * c.head_dim * 2 * 2;
}

static int gqa_samples(struct lwb_kreq *out, int max) {
    static const struct gqa_config s[] = {
        {32, 2, 128, 32, 0, false, false},  // Nemotron-H
        {32, 2, 128, 64, 0, false, false},
        {8, 1, 256, 32, 64, true, true},    // Qwen3-Next, tensor parallel 2
        {16, 2, 256, 64, 64, true, true},   // Qwen3-Next, one rank
    };
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(s) && n < max; i++) gqa_request(&out[n++], s[i]);
    return n;
}

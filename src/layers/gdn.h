// layers/gdn.h: host side of the gdn kernel family (kernels/gdn.cu.in): the Gated DeltaNet mixer of
// Qwen3-Next between its fused projection and out_proj.
//
// Defines: struct gdn_config, gdn_config_error (what the kernels cannot do, as one line),
// gdn_request, the sizes of a slot's caches and of the CTX workspace (gdn_state_bytes,
// gdn_conv_state_bytes, gdn_workspace_bytes, gdn_ws_layout), gdn_conv_dim, gdn_proj_dim,
// struct gdn_args and the enqueue functions (conv, the CTX chunked delta rule, the GEN step, the
// gated norm), the floors (gdn_chunk_flops, gdn_*_bytes), gdn_samples.
//
// Layouts: projection row (ld elements, a multiple of 8) = q (Hk Dk) | k (Hk Dk) | v (Hv Dv) |
// z (Hv Dv) | b (Hv) | a (Hv), bf16; conv weight (K, conv_dim) tap-major; conv state (slots, K-1,
// conv_dim) bf16; recurrent state (slots, Hv, Dk, Dv) in the config's dtype (enum
// mamba_state_dtype); request b (tokens b*qlen ..) uses slot b. Every pointer is 16-byte aligned
// (device allocations are).
//
// Does not: run the projections (gemm), own buffers or caches (the layer does), or handle
// requests of different lengths in one call (every request has qlen new tokens).
// Tested by test/gpu/check_gdn.h against test/ref/gdn.c (the recurrence token by token).
#pragma once

struct gdn_config {
    int k_heads, v_heads;  // Hk, Hv (v-head h uses k-head h / (Hv / Hk))
    int k_dim, v_dim;      // Dk, Dv
    int conv_k;            // conv taps K
    int chunk;             // delta-rule chunk C (tokens)
    int state_dtype;       // enum mamba_state_dtype: the recurrent-state cache
};

static int gdn_conv_dim(struct gdn_config c) { return 2 * c.k_heads * c.k_dim + c.v_heads * c.v_dim; }
static int gdn_proj_dim(struct gdn_config c) { return gdn_conv_dim(c) + c.v_heads * c.v_dim + 2 * c.v_heads; }
static int gdn_state_esize(struct gdn_config c) { return c.state_dtype == MAMBA_STATE_F32 ? 4 : 2; }

// Shared memory of the two chunk kernels; kernels/gdn.cu.in's PREP_SMEM and SCAN_SMEM.
static unsigned gdn_prep_smem(struct gdn_config c) {
    int C = c.chunk;
    return (unsigned)(3 * C * (c.k_dim + 8) * 2 + C * (c.v_dim + 8) * 2 + C * (C + 4) * 4 + C * (C + 8) * 2 + 4 * C * 4 +
                      64);
}
static unsigned gdn_scan_smem(struct gdn_config c, int slice) {
    int C = c.chunk;
    return (unsigned)(3 * C * (c.k_dim + 8) * 2 + C * (C + 8) * 2 + 3 * C * (slice + 8) * 2 + c.k_dim * (slice + 8) * 6 +
                      3 * C * 4);
}

// NULL when the kernels handle `c`; else what they cannot do (for a user error naming the model).
static const char *gdn_config_error(struct gdn_config c) {
    if (c.k_heads <= 0 || c.v_heads <= 0 || c.v_heads % c.k_heads)
        return "linear_num_value_heads must be a positive multiple of linear_num_key_heads";
    if (c.v_heads % 4) return "linear_num_value_heads must be a multiple of 4 (16-byte aligned projection rows)";
    if (c.k_dim <= 0 || c.k_dim % 32 || c.k_dim > 128) return "linear_key_head_dim must be a multiple of 32, at most 128";
    if (c.v_dim <= 0 || c.v_dim % 32 || c.v_dim > 128) return "linear_value_head_dim must be a multiple of 32, at most 128";
    if (c.conv_k < 2 || c.conv_k > 8) return "linear_conv_kernel_dim must be 2..8";
    if (c.chunk != 64) return "the delta rule's chunk must be 64 tokens";
    if (c.state_dtype < MAMBA_STATE_F32 || c.state_dtype > MAMBA_STATE_BF16) return "unknown recurrent state dtype";
    if (gdn_prep_smem(c) > 227 * 1024 || gdn_scan_smem(c, 32) > 227 * 1024) return "chunk tiles exceed shared memory";
    return NULL;
}

static void gdn_request(struct lwb_kreq *r, struct gdn_config c) {
    const char *err = gdn_config_error(c);
    if (err) LWB_BUG("gdn_request: %s (hk%d hv%d dk%d dv%d k%d c%d)", err, c.k_heads, c.v_heads, c.k_dim, c.v_dim,
                     c.conv_k, c.chunk);
    *r = (struct lwb_kreq){.family = "gdn"};
    snprintf(r->label, sizeof r->label, "gdn_hk%d_hv%d_dk%d_dv%d_k%d_%s", c.k_heads, c.v_heads, c.k_dim, c.v_dim,
             c.conv_k, mamba_dtype_name(c.state_dtype));
    kreq_set(r, "K_HEADS", c.k_heads);
    kreq_set(r, "V_HEADS", c.v_heads);
    kreq_set(r, "K_DIM", c.k_dim);
    kreq_set(r, "V_DIM", c.v_dim);
    kreq_set(r, "CONV_K", c.conv_k);
    kreq_set(r, "CHUNK", c.chunk);
    kreq_set(r, "STATE_DTYPE", c.state_dtype);
    kreq_entry(r, "lwb_gdn_conv");
    kreq_entry(r, "lwb_gdn_chunk_prep");
    kreq_entry(r, "lwb_gdn_chunk_scan32");
    kreq_entry(r, "lwb_gdn_chunk_scan16");
    kreq_entry(r, "lwb_gdn_step");
    kreq_entry(r, "lwb_gdn_norm");
}

static size_t gdn_state_bytes(struct gdn_config c) {
    return (size_t)c.v_heads * c.k_dim * c.v_dim * gdn_state_esize(c);
}
static size_t gdn_conv_state_bytes(struct gdn_config c) { return (size_t)(c.conv_k - 1) * gdn_conv_dim(c) * 2; }

// CTX workspace, per (request, chunk, v-head): W (C, Dk) bf16, U (C, Dv) bf16, P (C, C) bf16 and
// the scalars (3, C) fp32 (gamma, q scale, k scale), each array 256-byte aligned.
struct gdn_ws {
    size_t w, u, p, s, bytes; // offsets, total
};
static struct gdn_ws gdn_ws_layout(struct gdn_config c, int batch, int qlen) {
    size_t heads = (size_t)batch * LWB_CEIL_DIV(qlen, c.chunk) * c.v_heads, C = (size_t)c.chunk;
    struct gdn_ws w = {0};
    w.u = LWB_CEIL_DIV(heads * C * c.k_dim * 2, 256) * 256;
    w.p = w.u + LWB_CEIL_DIV(heads * C * c.v_dim * 2, 256) * 256;
    w.s = w.p + LWB_CEIL_DIV(heads * C * C * 2, 256) * 256;
    w.bytes = w.s + LWB_CEIL_DIV(heads * 3 * C * 4, 256) * 256;
    return w;
}
static size_t gdn_workspace_bytes(struct gdn_config c, int batch, int qlen) {
    return qlen > 0 && batch > 0 ? gdn_ws_layout(c, batch, qlen).bytes : 0;
}

struct gdn_args {
    CUdeviceptr proj; long long ld;    // (tokens, ld) bf16 fused projection output
    CUdeviceptr conv_w;                // (K, conv_dim) bf16
    CUdeviceptr A_log, dt_bias;        // (Hv) fp32
    CUdeviceptr norm_w; float eps;     // (Dv) bf16
    CUdeviceptr conv_state, state;     // caches, slot b = request b
    CUdeviceptr qkv;                   // (tokens, conv_dim) bf16: conv output
    CUdeviceptr o;                     // (tokens, Hv*Dv) bf16: delta-rule output
    CUdeviceptr out;                   // (tokens, Hv*Dv) bf16: gated-norm output
    CUdeviceptr ws;                    // gdn_workspace_bytes (CTX)
    int batch, qlen; bool has_past;
};

static void gdn_check_args(struct gdn_config c, const struct gdn_args *a) {
    if (a->ld % 8 || a->ld < gdn_proj_dim(c))
        LWB_BUG("gdn: projection row stride %lld (needs a multiple of 8, at least %d)", a->ld, gdn_proj_dim(c));
}

// Conv segment: enough (channel block, segment, request) blocks to fill the GPU several times
// over, at least 32 tokens (each segment re-reads K-1 inputs) and at least K-1 (only the first
// segment may reach into the conv state, which it alone rewrites).
static int gdn_conv_seg(struct gdn_config c, int batch, int qlen) {
    int cblocks = LWB_CEIL_DIV(gdn_conv_dim(c) / 8, 128);
    long long want = LWB_CEIL_DIV(1024, (long long)cblocks * batch); // segments per request
    int seg = (int)LWB_CEIL_DIV(qlen, LWB_MAX(want, 1));
    return LWB_MAX(seg, LWB_MAX(32, c.conv_k - 1));
}

static void gdn_conv_enqueue(const struct lwb_kreq *r, struct gdn_config c, CUstream s, const struct gdn_args *a) {
    if (a->batch == 0 || a->qlen == 0) return;
    gdn_check_args(c, a);
    int seg = gdn_conv_seg(c, a->batch, a->qlen), qlen = a->qlen, has_past = a->has_past;
    CUdeviceptr in = a->proj, w = a->conv_w, st = a->conv_state, out = a->qkv;
    long long ld = a->ld;
    void *args[] = {&in, &ld, &w, &st, &out, &qlen, &seg, &has_past};
    cu_launch(kreq_func(r, "lwb_gdn_conv"),
              (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(gdn_conv_dim(c) / 8, 128), (unsigned)LWB_CEIL_DIV(qlen, seg),
                                   (unsigned)a->batch},
                                  {128}},
              s, args);
}

// The chunk scan's column slice: 32 unless that leaves most of a large GPU's SMs without a block
// (a block per (slice, v-head, request), two resident per SM).
static int gdn_scan_slice(struct gdn_config c, int batch) {
    return (long long)batch * c.v_heads * (c.v_dim / 32) < 128 ? 16 : 32;
}

// CTX: the chunks' state-independent products, then the state through each request's chunks
// (outputs, final state to the cache).
static void gdn_chunk_enqueue(const struct lwb_kreq *r, struct gdn_config c, CUstream s, const struct gdn_args *a) {
    if (a->batch == 0 || a->qlen == 0) return;
    gdn_check_args(c, a);
    if (!a->ws) LWB_BUG("gdn_chunk_enqueue without a workspace");
    struct gdn_ws w = gdn_ws_layout(c, a->batch, a->qlen);
    int nchunks = LWB_CEIL_DIV(a->qlen, c.chunk), qlen = a->qlen, has_past = a->has_past;
    CUdeviceptr in = a->proj, qkv = a->qkv, alog = a->A_log, bias = a->dt_bias, st = a->state, o = a->o;
    CUdeviceptr ww = a->ws + w.w, wu = a->ws + w.u, wp = a->ws + w.p, wsc = a->ws + w.s;
    long long ld = a->ld;
    int slice = gdn_scan_slice(c, a->batch);
    CUfunction f_prep = kreq_func(r, "lwb_gdn_chunk_prep");
    CUfunction f_scan = kreq_func(r, slice == 16 ? "lwb_gdn_chunk_scan16" : "lwb_gdn_chunk_scan32");
    unsigned prep_smem = gdn_prep_smem(c), scan_smem = gdn_scan_smem(c, slice);
    CU_CHECK(lwb_cu.cuFuncSetAttribute(f_prep, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)prep_smem));
    CU_CHECK(lwb_cu.cuFuncSetAttribute(f_scan, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)scan_smem));
    void *a1[] = {&in, &ld, &qkv, &alog, &bias, &ww, &wu, &wp, &wsc, &qlen, &nchunks};
    cu_launch(f_prep,
              (struct lwb_launch){{(unsigned)nchunks, (unsigned)c.v_heads, (unsigned)a->batch}, {128}, prep_smem}, s,
              a1);
    void *a2[] = {&qkv, &ww, &wu, &wp, &wsc, &o, &st, &qlen, &nchunks, &has_past};
    cu_launch(f_scan,
              (struct lwb_launch){{(unsigned)(c.v_dim / slice), (unsigned)c.v_heads, (unsigned)a->batch}, {128}, scan_smem},
              s, a2);
}

// GEN: the recurrence token by token (qlen of them per request, in order).
static void gdn_step_enqueue(const struct lwb_kreq *r, struct gdn_config c, CUstream s, const struct gdn_args *a) {
    if (a->batch == 0 || a->qlen == 0) return;
    gdn_check_args(c, a);
    int qlen = a->qlen, has_past = a->has_past;
    CUdeviceptr in = a->proj, qkv = a->qkv, alog = a->A_log, bias = a->dt_bias, st = a->state, o = a->o;
    long long ld = a->ld;
    void *args[] = {&in, &ld, &qkv, &alog, &bias, &st, &o, &qlen, &has_past};
    int warps = c.v_dim / 16 % 4 ? 2 : 4; // kernels/gdn.cu.in's STEP_WARPS, 16 columns each
    cu_launch(kreq_func(r, "lwb_gdn_step"),
              (struct lwb_launch){{(unsigned)(c.v_dim / 16 / warps), (unsigned)c.v_heads, (unsigned)a->batch},
                                  {(unsigned)warps * 32}},
              s, args);
}

static void gdn_norm_enqueue(const struct lwb_kreq *r, struct gdn_config c, CUstream s, const struct gdn_args *a) {
    long long tokens = (long long)a->batch * a->qlen;
    if (tokens == 0) return;
    gdn_check_args(c, a);
    int rows = (int)(tokens * c.v_heads);
    CUdeviceptr in = a->proj, o = a->o, w = a->norm_w, out = a->out;
    long long ld = a->ld;
    float eps = a->eps;
    void *args[] = {&in, &ld, &o, &w, &eps, &out, &rows};
    cu_launch(kreq_func(r, "lwb_gdn_norm"), (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(rows, 8)}, {256}}, s, args);
}

// ---------------------------------------------------------------------------------------------
// Floors

// The chunked algorithm's work per v-head and chunk of l tokens (pairs = l(l+1)/2): Q K^T and
// K K^T (causal, over Dk), W and U (T lower triangular, over Dk and Dv), W S0, Q S0 and K^T V_new
// (l x Dk x Dv each), P V_new (causal, over Dv). The triangular solve is not counted.
static double gdn_chunk_flops(struct gdn_config c, int batch, int qlen) {
    double f = 0;
    for (int i0 = 0; i0 < qlen; i0 += c.chunk) {
        double l = LWB_MIN(c.chunk, qlen - i0), pairs = l * (l + 1) / 2;
        f += 2.0 * pairs * (2.0 * c.k_dim + c.k_dim + c.v_dim + c.v_dim) + 6.0 * l * c.k_dim * c.v_dim;
    }
    return f * batch * c.v_heads;
}
// Bytes: q, k, v, b and a once, o written, the state written (and read when there is a past).
static double gdn_chunk_bytes(struct gdn_config c, int batch, int qlen, bool has_past) {
    double tokens = (double)batch * qlen;
    return tokens * 2.0 * (gdn_conv_dim(c) + 2.0 * c.v_heads + (double)c.v_heads * c.v_dim) +
           (double)batch * gdn_state_bytes(c) * (has_past ? 2 : 1);
}
// The state read and written once, q, k, v, b and a read, o written.
static double gdn_step_bytes(struct gdn_config c, int batch, int qlen) {
    double tokens = (double)batch * qlen;
    return tokens * 2.0 * (gdn_conv_dim(c) + 2.0 * c.v_heads + (double)c.v_heads * c.v_dim) +
           2.0 * batch * gdn_state_bytes(c);
}
// q|k|v read, conv output written, weights, the conv state read and written.
static double gdn_conv_bytes(struct gdn_config c, int tokens, int batch) {
    double cd = gdn_conv_dim(c);
    return (double)tokens * cd * 4 + cd * 2 * c.conv_k + 2.0 * batch * gdn_conv_state_bytes(c);
}
// o and z read, the output written, the weight.
static double gdn_norm_bytes(struct gdn_config c, int tokens) {
    return (double)tokens * c.v_heads * c.v_dim * 6 + c.v_dim * 2.0;
}

static int gdn_samples(struct lwb_kreq *out, int max) {
    static const struct gdn_config s[] = {
        {8, 16, 128, 128, 4, 64, MAMBA_STATE_F16},  // Qwen3-Next-80B per rank at TP 2
        {8, 16, 128, 128, 4, 64, MAMBA_STATE_F32},
        {16, 32, 128, 128, 4, 64, MAMBA_STATE_BF16}, // the whole model
        {4, 12, 64, 96, 3, 64, MAMBA_STATE_F32},     // odd: three v-heads per k-head, Dk != Dv, K 3
    };
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(s) && n < max; i++) gdn_request(&out[n++], s[i]);
    return n;
}

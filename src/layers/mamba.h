// layers/mamba.h: host side of the mamba kernel family (kernels/mamba.cu.in): the Mamba2 mixer
// of Nemotron-H between in_proj and out_proj.
//
// Defines: enum mamba_state_dtype, struct mamba_config, mamba_config_error (what the kernels
// cannot do, as one line), mamba_request, the sizes of a slot's caches and of the CTX workspace
// (mamba_state_bytes, mamba_conv_state_bytes, mamba_workspace_bytes, mamba_ws_layout), struct
// mamba_args and the enqueue functions (conv, the CTX chunked scan, the GEN step, the gated
// norm), the floors (mamba_ssd_flops, mamba_*_bytes), mamba_samples.
//
// Layouts: in_proj output row (ld elements, ld a multiple of 8) = z (H*P) | xBC (conv_dim) |
// dt (H), bf16; conv weight (K, conv_dim) tap-major; conv state (slots, K-1, conv_dim) bf16;
// ssm state (slots, H, P, N) in the config's dtype; request b (tokens b*qlen ..) uses slot b.
// Every pointer is 16-byte aligned (device allocations are).
//
// Does not: run in_proj / out_proj (gemm), own buffers or caches (the layer does), or handle
// requests of different lengths in one call (every request has qlen new tokens).
// Tested by test/gpu/check_mamba.h against test/ref/mamba.c (the recurrence token by token).
#pragma once

enum mamba_state_dtype { MAMBA_STATE_F32 = 0, MAMBA_STATE_F16 = 1, MAMBA_STATE_BF16 = 2 };

struct mamba_config {
    int heads, head_dim, groups; // H, P, G (head h uses group h / (H / G))
    int state;                   // N
    int conv_k;                  // conv taps K
    int chunk;                   // SSD chunk Q (tokens)
    int norm_group;              // channels per gated-norm group (H * P / G for Nemotron-H)
    int state_dtype;             // enum mamba_state_dtype: the ssm-state cache
    bool conv_bias;
};

static int mamba_d_inner(struct mamba_config c) { return c.heads * c.head_dim; }
static int mamba_conv_dim(struct mamba_config c) { return c.heads * c.head_dim + 2 * c.groups * c.state; }
static int mamba_state_esize(struct mamba_config c) { return c.state_dtype == MAMBA_STATE_F32 ? 4 : 2; }

// Launch shapes and shared memory of the CTX kernels; kernels/mamba.cu.in's DT_HEADS,
// PASS_SMEM, SCAN_THREADS and SCAN_SMEM (and STEP_THREADS for GEN).
#define MAMBA_DT_HEADS 8
static unsigned mamba_pass_smem(struct mamba_config c) { // 3 stages of x, 32 columns of B, dt, L
    return 3u * (unsigned)(c.chunk * (c.head_dim + 8) * 2 + c.chunk * 40 * 2 + 2 * c.chunk * 4);
}
static unsigned mamba_scan_threads(struct mamba_config c) {
    return (unsigned)(c.chunk / 32 * (c.head_dim % 32 == 0 ? 2 : 1) * 32);
}
static unsigned mamba_scan_smem(struct mamba_config c) { // C tile, C B^T tiles, then B or one head's tiles
    unsigned q16 = (unsigned)c.chunk / 16, tile = (unsigned)(c.chunk * (c.state + 8) * 2);
    unsigned head = (unsigned)(c.chunk * (c.head_dim + 8) * 2 + c.head_dim * (c.state + 8) * 2 + 2 * c.chunk * 4);
    return tile + q16 * (q16 + 1) / 2 * 1024 + LWB_MAX(tile, head);
}
static unsigned mamba_step_threads(struct mamba_config c) { return (unsigned)LWB_MAX(64, c.head_dim * c.state / 32); }

// NULL when the kernels handle `c`; else what they cannot do (for a user error naming the model).
static const char *mamba_config_error(struct mamba_config c) {
    if (c.heads <= 0 || c.groups <= 0 || c.heads % c.groups) return "heads must be a positive multiple of n_groups";
    if (c.head_dim <= 0 || c.head_dim % 16 || c.head_dim > 128) return "mamba_head_dim must be a multiple of 16, at most 128";
    if (c.state != 32 && c.state != 64 && c.state != 128 && c.state != 256) return "ssm_state_size must be 32, 64, 128 or 256";
    if (c.conv_k < 2 || c.conv_k > 8) return "conv_kernel must be 2..8";
    if (c.chunk <= 0 || c.chunk % 32 || c.chunk > 128) return "chunk_size must be a multiple of 32, at most 128";
    int di = mamba_d_inner(c);
    if (c.norm_group <= 0 || c.norm_group % 8 || di % c.norm_group || c.norm_group > 2048)
        return "the gated norm's group size must be a multiple of 8 dividing heads * head_dim, at most 2048";
    if (c.state_dtype < MAMBA_STATE_F32 || c.state_dtype > MAMBA_STATE_BF16) return "unknown ssm state dtype";
    if (mamba_scan_smem(c) > 227 * 1024 || mamba_pass_smem(c) > 227 * 1024)
        return "chunk x (state + head_dim) tiles exceed shared memory";
    return NULL;
}

static const char *mamba_dtype_name(int d) { return d == MAMBA_STATE_F32 ? "f32" : d == MAMBA_STATE_F16 ? "f16" : "bf16"; }

static void mamba_request(struct lwb_kreq *r, struct mamba_config c) {
    const char *err = mamba_config_error(c);
    if (err) LWB_BUG("mamba_request: %s (h%d p%d g%d n%d k%d q%d)", err, c.heads, c.head_dim, c.groups, c.state,
                     c.conv_k, c.chunk);
    *r = (struct lwb_kreq){.family = "mamba"};
    snprintf(r->label, sizeof r->label, "mamba_h%d_p%d_g%d_n%d_q%d_%s", c.heads, c.head_dim, c.groups, c.state, c.chunk,
             mamba_dtype_name(c.state_dtype));
    kreq_set(r, "HEADS", c.heads);
    kreq_set(r, "HEAD_DIM", c.head_dim);
    kreq_set(r, "GROUPS", c.groups);
    kreq_set(r, "STATE", c.state);
    kreq_set(r, "CONV_K", c.conv_k);
    kreq_set(r, "CHUNK", c.chunk);
    kreq_set(r, "NORM_GROUP", c.norm_group);
    kreq_set(r, "STATE_DTYPE", c.state_dtype);
    kreq_entry(r, "lwb_mamba_conv");
    kreq_entry(r, "lwb_mamba_chunk_dt");
    kreq_entry(r, "lwb_mamba_state_pass");
    kreq_entry(r, "lwb_mamba_chunk_scan");
    kreq_entry(r, "lwb_mamba_step");
    kreq_entry(r, "lwb_mamba_norm");
}

static size_t mamba_state_bytes(struct mamba_config c) {
    return (size_t)c.heads * c.head_dim * c.state * mamba_state_esize(c);
}
static size_t mamba_conv_state_bytes(struct mamba_config c) { return (size_t)(c.conv_k - 1) * mamba_conv_dim(c) * 2; }

// CTX workspace: chunk-start states bf16 (batch, chunks, H, P, N), the chunks' dt and cumulative
// log-decays L (batch, chunks, H, Q) fp32 each, each part 256-byte aligned.
struct mamba_ws {
    size_t sstart, dt, lam, bytes; // offsets, total
};
static struct mamba_ws mamba_ws_layout(struct mamba_config c, int batch, int qlen) {
    size_t chunks = (size_t)batch * LWB_CEIL_DIV(qlen, c.chunk);
    size_t states = chunks * c.heads * c.head_dim * c.state, steps = chunks * c.heads * c.chunk;
    struct mamba_ws w = {0};
    w.dt = LWB_CEIL_DIV(states * 2, 256) * 256;
    w.lam = w.dt + LWB_CEIL_DIV(steps * 4, 256) * 256;
    w.bytes = w.lam + LWB_CEIL_DIV(steps * 4, 256) * 256;
    return w;
}
static size_t mamba_workspace_bytes(struct mamba_config c, int batch, int qlen) {
    return qlen > 0 && batch > 0 ? mamba_ws_layout(c, batch, qlen).bytes : 0;
}

struct mamba_args {
    CUdeviceptr zxbcdt; long long ld;      // in_proj output (tokens, ld) bf16
    CUdeviceptr conv_w, conv_b;            // (K, conv_dim) bf16, (conv_dim) bf16 or 0
    CUdeviceptr A, dt_bias, D;             // (H) fp32 each; A = -exp(A_log)
    CUdeviceptr norm_w;                    // (d_inner) bf16
    float eps;
    CUdeviceptr conv_state, ssm_state;     // caches, slot b = request b
    CUdeviceptr xbc;                       // (tokens, conv_dim) bf16: conv output
    CUdeviceptr y;                         // (tokens, d_inner) bf16: scan output
    CUdeviceptr out;                       // (tokens, d_inner) bf16: gated-norm output
    CUdeviceptr ws;                        // mamba_workspace_bytes
    int batch, qlen; bool has_past;
};

static void mamba_check_args(struct mamba_config c, const struct mamba_args *a) {
    if (a->ld % 8 || a->ld < mamba_d_inner(c) + mamba_conv_dim(c) + c.heads)
        LWB_BUG("mamba: in_proj row stride %lld (needs a multiple of 8, at least %d)", a->ld,
                mamba_d_inner(c) + mamba_conv_dim(c) + c.heads);
    if (c.conv_bias != (a->conv_b != 0)) LWB_BUG("mamba: conv bias pointer does not match the config");
}

// Conv segment: enough (channel block, segment, request) blocks for several waves (a short tail),
// at least 32 tokens (each segment re-reads K-1 inputs) and at least K-1 (only the first
// segment may reach into the conv state, which it alone rewrites).
static int mamba_conv_seg(struct mamba_config c, int batch, int qlen) {
    int cblocks = LWB_CEIL_DIV(mamba_conv_dim(c) / 8, 128);
    long long want = LWB_CEIL_DIV(2048, (long long)cblocks * batch); // segments per request
    int seg = (int)LWB_CEIL_DIV(qlen, LWB_MAX(want, 1));
    return LWB_MAX(seg, LWB_MAX(32, c.conv_k - 1));
}

static void mamba_conv_enqueue(const struct lwb_kreq *r, struct mamba_config c, CUstream s, const struct mamba_args *a) {
    if (a->batch == 0 || a->qlen == 0) return;
    mamba_check_args(c, a);
    int seg = mamba_conv_seg(c, a->batch, a->qlen), qlen = a->qlen, has_past = a->has_past;
    CUdeviceptr in = a->zxbcdt, w = a->conv_w, bias = a->conv_b, st = a->conv_state, out = a->xbc;
    long long ld = a->ld;
    void *args[] = {&in, &ld, &w, &bias, &st, &out, &qlen, &seg, &has_past};
    cu_launch(kreq_func(r, "lwb_mamba_conv"),
              (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(mamba_conv_dim(c) / 8, 128), (unsigned)LWB_CEIL_DIV(qlen, seg),
                                   (unsigned)a->batch},
                                  {128}},
              s, args);
}

// CTX: the chunks' dt and L, the state pass (chunk-start states, the final state to the cache),
// the chunk outputs.
static void mamba_ssd_enqueue(const struct lwb_kreq *r, struct mamba_config c, CUstream s, const struct mamba_args *a) {
    if (a->batch == 0 || a->qlen == 0) return;
    mamba_check_args(c, a);
    if (!a->ws) LWB_BUG("mamba_ssd_enqueue without a workspace");
    struct mamba_ws w = mamba_ws_layout(c, a->batch, a->qlen);
    int nchunks = LWB_CEIL_DIV(a->qlen, c.chunk), qlen = a->qlen, has_past = a->has_past;
    CUdeviceptr in = a->zxbcdt, xbc = a->xbc, A = a->A, bias = a->dt_bias, D = a->D, st = a->ssm_state, y = a->y;
    CUdeviceptr ss = a->ws + w.sstart, dt = a->ws + w.dt, lam = a->ws + w.lam;
    long long ld = a->ld;
    CUfunction f_pass = kreq_func(r, "lwb_mamba_state_pass"), f_scan = kreq_func(r, "lwb_mamba_chunk_scan");
    unsigned pass_smem = mamba_pass_smem(c), scan_smem = mamba_scan_smem(c);
    CU_CHECK(lwb_cu.cuFuncSetAttribute(f_pass, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)pass_smem));
    CU_CHECK(lwb_cu.cuFuncSetAttribute(f_scan, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)scan_smem));
    void *a1[] = {&in, &ld, &A, &bias, &dt, &lam, &qlen, &nchunks};
    cu_launch(kreq_func(r, "lwb_mamba_chunk_dt"),
              (struct lwb_launch){{(unsigned)nchunks, (unsigned)LWB_CEIL_DIV(c.heads, MAMBA_DT_HEADS), (unsigned)a->batch},
                                  {(unsigned)c.chunk}},
              s, a1);
    void *a2[] = {&xbc, &dt, &lam, &ss, &st, &qlen, &nchunks, &has_past};
    cu_launch(f_pass, (struct lwb_launch){{(unsigned)c.state / 32, (unsigned)c.heads, (unsigned)a->batch}, {128}, pass_smem},
              s, a2);
    void *a3[] = {&xbc, &D, &ss, &dt, &lam, &y, &qlen, &nchunks};
    cu_launch(f_scan,
              (struct lwb_launch){{(unsigned)c.groups, (unsigned)nchunks, (unsigned)a->batch}, {mamba_scan_threads(c)}, scan_smem},
              s, a3);
}

// Blocks of `f` (at `threads` per block) the whole device holds at once, for persistent grids;
// remembered for the last function asked about.
static int mamba_resident_blocks(CUfunction f, int threads) {
    static CUfunction last_f;
    static int last_threads, last_n;
    if (f == last_f && threads == last_threads) return last_n;
    CUdevice dev;
    int sms = 0, per_sm = 0;
    CU_CHECK(lwb_cu.cuDeviceGet(&dev, LWB_MAX(lwb_proc.device, 0)));
    CU_CHECK(lwb_cu.cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    CU_CHECK(lwb_cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, f, threads, 0));
    last_f = f, last_threads = threads, last_n = LWB_MAX(1, sms * per_sm);
    return last_n;
}

// GEN: the recurrence token by token (qlen of them per request, in order), persistent blocks
// over the (request, head) pairs.
static void mamba_step_enqueue(const struct lwb_kreq *r, struct mamba_config c, CUstream s, const struct mamba_args *a) {
    if (a->batch == 0 || a->qlen == 0) return;
    mamba_check_args(c, a);
    int qlen = a->qlen, batch = a->batch;
    CUdeviceptr in = a->zxbcdt, xbc = a->xbc, A = a->A, bias = a->dt_bias, D = a->D, st = a->ssm_state, y = a->y;
    long long ld = a->ld;
    CUfunction f = kreq_func(r, "lwb_mamba_step");
    unsigned threads = mamba_step_threads(c);
    long long pairs = (long long)batch * c.heads;
    unsigned grid = (unsigned)LWB_MIN(pairs, (long long)mamba_resident_blocks(f, (int)threads));
    void *args[] = {&in, &ld, &xbc, &A, &bias, &D, &st, &y, &qlen, &batch};
    cu_launch(f, (struct lwb_launch){{grid}, {threads}}, s, args);
}

static void mamba_norm_enqueue(const struct lwb_kreq *r, struct mamba_config c, CUstream s, const struct mamba_args *a) {
    long long tokens = (long long)a->batch * a->qlen;
    if (tokens == 0) return;
    mamba_check_args(c, a);
    int rows = (int)(tokens * (mamba_d_inner(c) / c.norm_group));
    CUdeviceptr in = a->zxbcdt, y = a->y, w = a->norm_w, out = a->out;
    long long ld = a->ld;
    float eps = a->eps;
    void *args[] = {&in, &ld, &y, &w, &eps, &out, &rows};
    cu_launch(kreq_func(r, "lwb_mamba_norm"), (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(rows, 8)}, {256}}, s, args);
}

// ---------------------------------------------------------------------------------------------
// Floors

// The chunked algorithm's work: per chunk of L tokens, C B^T once per group (causal: L(L+1)/2
// pairs over N), and per head the causal product with x (over P), the chunk state (L x P x N)
// and the output from the chunk-start state (L x P x N).
static double mamba_ssd_flops(struct mamba_config c, int batch, int qlen) {
    double f = 0;
    for (int i0 = 0; i0 < qlen; i0 += c.chunk) {
        double l = LWB_MIN(c.chunk, qlen - i0), pairs = l * (l + 1) / 2;
        f += 2.0 * pairs * c.state * c.groups + 2.0 * pairs * c.head_dim * c.heads +
             4.0 * l * c.head_dim * c.state * c.heads;
    }
    return f * batch;
}
// Bytes: x, B, C and dt once, y written, the state written (and read when there is a past).
static double mamba_ssd_bytes(struct mamba_config c, int batch, int qlen, bool has_past) {
    double tokens = (double)batch * qlen;
    return tokens * 2.0 * (mamba_conv_dim(c) + c.heads + mamba_d_inner(c)) +
           (double)batch * mamba_state_bytes(c) * (has_past ? 2 : 1);
}
static double mamba_step_bytes(struct mamba_config c, int batch, int qlen) {
    double tokens = (double)batch * qlen;
    return tokens * 2.0 * (mamba_conv_dim(c) + c.heads + mamba_d_inner(c)) + 2.0 * batch * mamba_state_bytes(c);
}
// xBC read, conv output written, weights, the conv state read and written.
static double mamba_conv_bytes(struct mamba_config c, int tokens, int batch) {
    double cd = mamba_conv_dim(c);
    return (double)tokens * cd * 4 + cd * 2 * (c.conv_k + (c.conv_bias ? 1 : 0)) +
           2.0 * batch * mamba_conv_state_bytes(c);
}
// y and z read, the output written, the weight.
static double mamba_norm_bytes(struct mamba_config c, int tokens) {
    return (double)tokens * mamba_d_inner(c) * 6 + mamba_d_inner(c) * 2.0;
}

static int mamba_samples(struct lwb_kreq *out, int max) {
    static const struct mamba_config s[] = {
        {64, 64, 8, 128, 4, 128, 512, MAMBA_STATE_F32, true}, // Nemotron-3-Nano
        {64, 64, 8, 128, 4, 128, 512, MAMBA_STATE_F16, true},
        {64, 64, 8, 128, 4, 128, 512, MAMBA_STATE_BF16, true},
        {12, 32, 3, 64, 3, 64, 128, MAMBA_STATE_F32, false},  // odd: every size different
        {8, 128, 2, 256, 2, 32, 256, MAMBA_STATE_F16, true},  // the largest tiles at a short chunk
        {6, 48, 3, 32, 5, 96, 144, MAMBA_STATE_BF16, true},   // head_dim not a multiple of 32, the smallest state
    };
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(s) && n < max; i++) mamba_request(&out[n++], s[i]);
    return n;
}

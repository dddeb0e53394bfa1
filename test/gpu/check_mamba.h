// check_mamba.h: gpu_check's mamba family (included by check.c after its helpers): the Mamba2
// mixer kernels of kernels/mamba.cu.in against test/ref/mamba.c on fresh random inputs:
//   conv (output and conv state), the CTX chunked scan and the GEN step (y and the final ssm
//   state, against the recurrence token by token), the gated norm; at Nemotron-3-Nano's sizes
//   with short odd lengths (partial chunks, qlen below the conv width, MTP steps), each state
//   dtype, with and without past tokens, more chunks than the state pass's 3-stage ring, and at
//   three odd configurations. Then benchmarks at
//   Nemotron's shapes next to their floors: CTX batch 1 x 8193 tokens (conv, ssd, norm), GEN
//   batch 128 x 1 token with an fp16 state (conv, step, norm).
#pragma once
#include "../ref/mamba.c"

static const struct mamba_config mamba_nemotron = {64, 64, 8, 128, 4, 128, 512, MAMBA_STATE_F16, true};

static struct ref_mamba_shape mamba_ref_shape(struct mamba_config c) {
    return (struct ref_mamba_shape){c.heads, c.head_dim, c.groups, c.state, c.conv_k, c.norm_group, c.state_dtype};
}
static long long mamba_ld(struct mamba_config c) {
    return LWB_CEIL_DIV(mamba_d_inner(c) + mamba_conv_dim(c) + c.heads, 8) * 8;
}

static void mamba_verdict_bf16(struct check *c, const char *what, const char *name, const uint16_t *got,
                               const float *want, size_t n, double atol, double rtol, double l2) {
    float *g = bf16_to_f32(got, n);
    verdict(c, what, ref_compare(name, g, want, n, atol, rtol, 1), l2);
    free(g);
}

// One case: conv, then the scan (CTX: chunked kernels; gen: the step kernel), then the norm.
static void check_mamba_case(struct check *c, struct mamba_config cfg, int batch, int qlen, bool has_past, bool gen) {
    struct lwb_kreq req;
    mamba_request(&req, cfg);
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);
    const struct ref_mamba_shape sh = mamba_ref_shape(cfg);
    const int H = cfg.heads, di = mamba_d_inner(cfg), cd = mamba_conv_dim(cfg), K = cfg.conv_k;
    const long long ld = mamba_ld(cfg);
    const size_t T = (size_t)batch * qlen, nzx = T * ld, nst = (size_t)batch * H * cfg.head_dim * cfg.state;
    const size_t ncs = (size_t)batch * (K - 1) * cd, esz = (size_t)mamba_state_esize(cfg);

    // Inputs: z, xBC ~ U(-1, 1); dt_raw so that softplus(dt_raw + dt_bias) is log-uniform in
    // [1e-3, 0.1]; A = -(1..H) (A_log = log(1..H)); D ~ 1; random caches.
    uint16_t *zx = rand_bf16(c, nzx, -1.f, 1.f);
    float *A = xmalloc(sizeof(float) * H), *dtb = xmalloc(sizeof(float) * H), *D = xmalloc(sizeof(float) * H);
    for (int h = 0; h < H; h++)
        A[h] = -(float)(h + 1), dtb[h] = ref_uniform(&c->rng, -0.5f, 0.5f), D[h] = ref_uniform(&c->rng, 0.5f, 1.5f);
    for (size_t t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const float dt = expf(ref_uniform(&c->rng, logf(1e-3f), logf(0.1f)));
            zx[t * ld + di + cd + h] = ref_f32_to_bf16(logf(expm1f(dt)) - dtb[h]);
        }
    uint16_t *cw = rand_bf16(c, (size_t)K * cd, -0.5f, 0.5f), *cb = rand_bf16(c, cd, -0.2f, 0.2f);
    uint16_t *cstate = rand_bf16(c, ncs, -1.f, 1.f), *nw = rand_bf16(c, di, 0.5f, 1.5f);
    uint16_t *xbc_in = rand_bf16(c, T * cd, -1.f, 1.f);
    float *st0 = xmalloc(sizeof(float) * nst);
    for (size_t i = 0; i < nst; i++) st0[i] = ref_mamba_state_round(ref_uniform(&c->rng, -0.5f, 0.5f), cfg.state_dtype);
    void *st_raw = xmalloc(nst * esz);
    ref_mamba_state_from_f32(st0, cfg.state_dtype, nst, st_raw);

    struct mamba_args a = {
        .zxbcdt = upload(zx, nzx * 2), .ld = ld, .conv_w = upload(cw, (size_t)K * cd * 2),
        .conv_b = cfg.conv_bias ? upload(cb, (size_t)cd * 2) : 0, .A = upload(A, sizeof(float) * H),
        .dt_bias = upload(dtb, sizeof(float) * H), .D = upload(D, sizeof(float) * H), .norm_w = upload(nw, (size_t)di * 2),
        .eps = 1e-5f, .conv_state = upload(cstate, ncs * 2), .ssm_state = upload(st_raw, nst * esz),
        .xbc = dev_alloc(T * cd * 2, "xbc"), .y = dev_alloc(T * di * 2, "y"), .out = dev_alloc(T * di * 2, "out"),
        .batch = batch, .qlen = qlen, .has_past = has_past};
    const size_t wsb = gen ? 0 : mamba_workspace_bytes(cfg, batch, qlen);
    if (wsb) a.ws = dev_alloc(wsb, "mamba workspace");
    char tag[128], what[192];
    snprintf(tag, sizeof tag, "%s %s b=%d q=%d%s", req.label + 6, gen ? "gen" : "ctx", batch, qlen, has_past ? " past" : "");

    // conv
    poison(c, a.xbc, T * cd * 2);
    mamba_conv_enqueue(&req, cfg, c->s, &a);
    stream_wait(c->s, 60, "mamba conv");
    uint16_t *xbc_got = xmalloc(T * cd * 2), *cs_got = xmalloc(ncs * 2);
    download(xbc_got, a.xbc, T * cd * 2);
    download(cs_got, a.conv_state, ncs * 2);
    float *xbc_want = xmalloc(sizeof(float) * T * cd);
    ref_mamba_conv(sh, zx, ld, cw, cfg.conv_bias ? cb : NULL, cstate, batch, qlen, has_past, xbc_want);
    snprintf(what, sizeof what, "mamba conv %s", tag);
    mamba_verdict_bf16(c, what, "xbc", xbc_got, xbc_want, T * cd, MAMBA_CONV_ATOL, MAMBA_CONV_RTOL, MAMBA_CONV_L2);
    float *cs_g = bf16_to_f32(cs_got, ncs), *cs_w = bf16_to_f32(cstate, ncs);
    snprintf(what, sizeof what, "mamba conv state %s", tag);
    verdict(c, what, ref_compare("conv_state", cs_g, cs_w, ncs, 0, 0, 1), 0);

    // scan, on fresh x, B, C ~ U(-1, 1)
    CU_CHECK(lwb_cu.cuMemcpyHtoD(a.xbc, xbc_in, T * cd * 2));
    poison(c, a.y, T * di * 2);
    if (wsb) poison(c, a.ws, wsb);
    if (gen) mamba_step_enqueue(&req, cfg, c->s, &a);
    else mamba_ssd_enqueue(&req, cfg, c->s, &a);
    stream_wait(c->s, 60, "mamba scan");
    uint16_t *y_got = xmalloc(T * di * 2);
    void *st_got_raw = xmalloc(nst * esz);
    download(y_got, a.y, T * di * 2);
    download(st_got_raw, a.ssm_state, nst * esz);
    float *y_want = xmalloc(sizeof(float) * T * di), *st_got = xmalloc(sizeof(float) * nst);
    ref_mamba_scan(sh, zx, ld, xbc_in, A, dtb, D, st0, batch, qlen, gen || has_past, gen, y_want);
    ref_mamba_state_to_f32(st_got_raw, cfg.state_dtype, nst, st_got);
    snprintf(what, sizeof what, "mamba %s y %s", gen ? "step" : "ssd", tag);
    if (gen) mamba_verdict_bf16(c, what, "y", y_got, y_want, T * di, MAMBA_STEP_Y_ATOL, MAMBA_STEP_Y_RTOL, MAMBA_STEP_Y_L2);
    else mamba_verdict_bf16(c, what, "y", y_got, y_want, T * di, MAMBA_Y_ATOL, MAMBA_Y_RTOL, MAMBA_Y_L2);
    snprintf(what, sizeof what, "mamba %s state %s", gen ? "step" : "ssd", tag);
    verdict(c, what,
            ref_compare("state", st_got, st0, nst, ref_mamba_state_atol(cfg.state_dtype),
                        ref_mamba_state_rtol(cfg.state_dtype), 1),
            MAMBA_STATE_L2);

    // gated norm of the kernel's y
    poison(c, a.out, T * di * 2);
    mamba_norm_enqueue(&req, cfg, c->s, &a);
    stream_wait(c->s, 60, "mamba norm");
    uint16_t *out_got = xmalloc(T * di * 2);
    download(out_got, a.out, T * di * 2);
    float *out_want = xmalloc(sizeof(float) * T * di);
    ref_mamba_norm(sh, zx, ld, y_got, nw, a.eps, (int)T, out_want);
    snprintf(what, sizeof what, "mamba norm %s", tag);
    mamba_verdict_bf16(c, what, "out", out_got, out_want, T * di, MAMBA_NORM_ATOL, MAMBA_NORM_RTOL, MAMBA_NORM_L2);

    free(zx), free(A), free(dtb), free(D), free(cw), free(cb), free(cstate), free(nw), free(xbc_in), free(st0);
    free(st_raw), free(xbc_got), free(cs_got), free(xbc_want), free(cs_g), free(cs_w), free(y_got), free(st_got_raw);
    free(y_want), free(st_got), free(out_got), free(out_want);
    CUdeviceptr all[] = {a.zxbcdt, a.conv_w, a.conv_b, a.A, a.dt_bias, a.D, a.norm_w, a.conv_state, a.ssm_state,
                         a.xbc, a.y, a.out, a.ws};
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++) dev_free(all[i], 0);
}

// ---------------------------------------------------------------------------------------------
// Benchmarks

enum { MAMBA_CONV, MAMBA_SSD, MAMBA_STEP, MAMBA_NORM };
struct mamba_bench_arg {
    const struct lwb_kreq *r;
    struct mamba_config cfg;
    struct mamba_args a;
    int which;
};
static void mamba_bench_launch(void *p, CUstream s) {
    struct mamba_bench_arg *b = p;
    switch (b->which) {
    case MAMBA_CONV: mamba_conv_enqueue(b->r, b->cfg, s, &b->a); break;
    case MAMBA_SSD: mamba_ssd_enqueue(b->r, b->cfg, s, &b->a); break;
    case MAMBA_STEP: mamba_step_enqueue(b->r, b->cfg, s, &b->a); break;
    default: mamba_norm_enqueue(b->r, b->cfg, s, &b->a); break;
    }
}

// Device-filled inputs at a real shape (dt_bias -4: dt = softplus(U(-1, 1) - 4) in [0.007, 0.05]).
static void bench_mamba(struct check *c, struct mamba_config cfg, int batch, int qlen, bool gen) {
    struct lwb_kreq req;
    mamba_request(&req, cfg);
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);
    const int H = cfg.heads, di = mamba_d_inner(cfg), cd = mamba_conv_dim(cfg);
    const long long ld = mamba_ld(cfg), T = (long long)batch * qlen;
    const size_t st_bytes = (size_t)batch * mamba_state_bytes(cfg), cs_bytes = (size_t)batch * mamba_conv_state_bytes(cfg);
    float *A = xmalloc(sizeof(float) * H), *dtb = xmalloc(sizeof(float) * H), *D = xmalloc(sizeof(float) * H);
    for (int h = 0; h < H; h++) A[h] = -(float)(h + 1), dtb[h] = -4.f, D[h] = 1.f;
    struct mamba_bench_arg b = {.r = &req, .cfg = cfg};
    struct mamba_args *a = &b.a;
    *a = (struct mamba_args){.zxbcdt = dev_alloc((size_t)T * ld * 2, "zxbcdt"), .ld = ld,
                             .conv_w = dev_alloc((size_t)cfg.conv_k * cd * 2, "conv_w"),
                             .conv_b = cfg.conv_bias ? dev_alloc((size_t)cd * 2, "conv_b") : 0,
                             .A = upload(A, sizeof(float) * H), .dt_bias = upload(dtb, sizeof(float) * H),
                             .D = upload(D, sizeof(float) * H), .norm_w = dev_alloc((size_t)di * 2, "norm_w"),
                             .eps = 1e-5f, .conv_state = dev_alloc(cs_bytes, "conv state"),
                             .ssm_state = dev_alloc(st_bytes, "ssm state"), .xbc = dev_alloc((size_t)T * cd * 2, "xbc"),
                             .y = dev_alloc((size_t)T * di * 2, "y"), .out = dev_alloc((size_t)T * di * 2, "out"),
                             .batch = batch, .qlen = qlen, .has_past = gen};
    const size_t wsb = gen ? 0 : mamba_workspace_bytes(cfg, batch, qlen);
    if (wsb) a->ws = dev_alloc(wsb, "mamba workspace");
    init_fill_bf16(&c->init, c->s, a->zxbcdt, T * ld, 11, -1.f, 1.f);
    init_fill_bf16(&c->init, c->s, a->conv_w, (long long)cfg.conv_k * cd, 12, -0.5f, 0.5f);
    if (a->conv_b) init_fill_bf16(&c->init, c->s, a->conv_b, cd, 13, -0.2f, 0.2f);
    init_fill_bf16(&c->init, c->s, a->norm_w, di, 14, 0.5f, 1.5f);
    init_fill_bf16(&c->init, c->s, a->conv_state, (long long)(cs_bytes / 2), 15, -1.f, 1.f);
    // bf16 patterns of U(-0.5, 0.5) read as fp16 or fp32 are finite and modest too
    init_fill_bf16(&c->init, c->s, a->ssm_state, (long long)(st_bytes / 2), 16, -0.5f, 0.5f);
    if (cfg.state_dtype == MAMBA_STATE_F32) CU_CHECK(lwb_cu.cuMemsetD8Async(a->ssm_state, 0, st_bytes, c->s));
    init_fill_bf16(&c->init, c->s, a->xbc, T * cd, 17, -1.f, 1.f);
    stream_wait(c->s, 60, "mamba bench fills");

    char what[160];
    const char *phase = gen ? "gen" : "ctx";
    b.which = MAMBA_CONV;
    double us = time_us(c, mamba_bench_launch, &b, 10);
    snprintf(what, sizeof what, "mamba conv %s b=%d q=%d", phase, batch, qlen);
    bench_line(c, what, us, mamba_conv_bytes(cfg, (int)T, batch), 2.0 * T * cd * cfg.conv_k);
    b.which = gen ? MAMBA_STEP : MAMBA_SSD;
    us = time_us(c, mamba_bench_launch, &b, 10);
    snprintf(what, sizeof what, "mamba %s %s b=%d q=%d %s", gen ? "step" : "ssd", phase, batch, qlen,
             mamba_dtype_name(cfg.state_dtype));
    double bytes = gen ? mamba_step_bytes(cfg, batch, qlen) : mamba_ssd_bytes(cfg, batch, qlen, false);
    bench_line(c, what, us, bytes, gen ? 0 : mamba_ssd_flops(cfg, batch, qlen));
    if (gen)
        printf("info  mamba step bandwidth %.1f%% of copy bandwidth (target >= 70%%)\n",
               100.0 * bytes / (us * 1e-6) / c->copy_bw);
    b.which = MAMBA_NORM;
    us = time_us(c, mamba_bench_launch, &b, 10);
    snprintf(what, sizeof what, "mamba norm %s b=%d q=%d", phase, batch, qlen);
    bench_line(c, what, us, mamba_norm_bytes(cfg, (int)T), 0);

    free(A), free(dtb), free(D);
    CUdeviceptr all[] = {a->zxbcdt, a->conv_w, a->conv_b, a->A, a->dt_bias, a->D, a->norm_w, a->conv_state,
                         a->ssm_state, a->xbc, a->y, a->out, a->ws};
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++) dev_free(all[i], 0);
}

static void check_mamba(struct check *c) {
    struct mamba_config nf32 = mamba_nemotron, nf16 = mamba_nemotron, nbf16 = mamba_nemotron;
    nf32.state_dtype = MAMBA_STATE_F32, nbf16.state_dtype = MAMBA_STATE_BF16;
    // Nemotron-3-Nano's sizes: CTX with partial chunks, exact chunks, a single token, past or not.
    check_mamba_case(c, nf32, 1, 77, false, false);
    check_mamba_case(c, nf16, 2, 129, true, false);
    check_mamba_case(c, nbf16, 3, 300, true, false);
    check_mamba_case(c, nf32, 1, 256, false, false);
    check_mamba_case(c, nf16, 2, 1, true, false);
    check_mamba_case(c, nbf16, 1, 700, true, false); // 6 chunks: the state pass's ring wraps
    // GEN: one token, MTP steps of 2..4.
    check_mamba_case(c, nf16, 5, 1, true, true);
    check_mamba_case(c, nf32, 3, 3, true, true);
    check_mamba_case(c, nbf16, 2, 2, true, true);
    check_mamba_case(c, nf16, 2, 4, true, true);
    // Odd configurations: every size different (K 3, no conv bias, chunk 64, P 32, N 64), and the
    // largest tiles at a short chunk (P 128, N 256, K 2, chunk 32).
    struct mamba_config odd = {12, 32, 3, 64, 3, 64, 128, MAMBA_STATE_F32, false};
    struct mamba_config wide = {8, 128, 2, 256, 2, 32, 256, MAMBA_STATE_F16, true};
    check_mamba_case(c, odd, 2, 100, true, false);
    check_mamba_case(c, odd, 3, 1, true, false); // fewer new tokens than the conv state holds
    check_mamba_case(c, odd, 2, 1, false, false);
    check_mamba_case(c, odd, 4, 1, true, true);
    check_mamba_case(c, wide, 2, 70, true, false);
    check_mamba_case(c, wide, 3, 2, true, true);
    // head_dim not a multiple of 32 (the scan's warps then take whole rows of P), the smallest
    // state (one pass block per head, 4 threads per state row in the step), chunk 96, K 5, two
    // heads per group.
    struct mamba_config narrow = {6, 48, 3, 32, 5, 96, 144, MAMBA_STATE_BF16, true};
    check_mamba_case(c, narrow, 2, 500, true, false);
    check_mamba_case(c, narrow, 3, 2, true, true);
    // Speed at Nemotron's shapes.
    bench_mamba(c, nf16, 1, 8193, false);
    bench_mamba(c, nf16, 128, 1, true);
}

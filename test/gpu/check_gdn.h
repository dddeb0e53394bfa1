// check_gdn.h: gpu_check's gdn family (included by check.c after its helpers): the Gated DeltaNet
// kernels of kernels/gdn.cu.in against test/ref/gdn.c on fresh random inputs:
//   conv (output and conv state), the CTX chunked delta rule and the GEN step (o and the final
//   recurrent state, against the recurrence token by token), the gated norm; at Qwen3-Next's
//   per-rank sizes (TP 2) with partial and exact chunks, a single token, MTP steps, each state
//   dtype, with and without past tokens, both column slices of the chunk scan, and at the whole
//   model's sizes and an odd configuration. Then benchmarks at the TP 2 shapes next to their
//   floors: CTX batch 4 x 8193 tokens (conv, chunk, norm), GEN batch 512 x 1 token with an fp16
//   state (conv, step, norm).
#pragma once
#include "../ref/gdn.c"

static const struct gdn_config gdn_qwen3next_tp2 = {8, 16, 128, 128, 4, 64, MAMBA_STATE_F16};

static struct ref_gdn_shape gdn_ref_shape(struct gdn_config c) {
    return (struct ref_gdn_shape){c.k_heads, c.v_heads, c.k_dim, c.v_dim, c.conv_k, c.state_dtype};
}
static long long gdn_ld(struct gdn_config c) { return LWB_CEIL_DIV(gdn_proj_dim(c), 8) * 8; }

static void gdn_verdict_bf16(struct check *c, const char *what, const char *name, const uint16_t *got,
                             const float *want, size_t n, double atol, double rtol, double l2) {
    float *g = bf16_to_f32(got, n);
    verdict(c, what, ref_compare(name, g, want, n, atol, rtol, 1), l2);
    free(g);
}

// One case: conv, then the delta rule (CTX: chunked kernels; gen: the step kernel), then the norm.
static void check_gdn_case(struct check *c, struct gdn_config cfg, int batch, int qlen, bool has_past, bool gen) {
    struct lwb_kreq req;
    gdn_request(&req, cfg);
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);
    const struct ref_gdn_shape sh = gdn_ref_shape(cfg);
    const int Hv = cfg.v_heads, cd = gdn_conv_dim(cfg), vd = cfg.v_heads * cfg.v_dim, K = cfg.conv_k;
    const long long ld = gdn_ld(cfg);
    const size_t T = (size_t)batch * qlen, nproj = T * ld, nst = (size_t)batch * Hv * cfg.k_dim * cfg.v_dim;
    const size_t ncs = (size_t)batch * (K - 1) * cd, esz = (size_t)gdn_state_esize(cfg);

    // Inputs: q, k, v, z ~ U(-1, 1); b so that beta = sigmoid(b) is in [0.2, 0.8]; A_log ~
    // U(-1, 1), dt_bias ~ U(-0.5, 0.5) and a per token so that alpha = exp(g) is uniform in
    // [0.5, 0.999]; random caches.
    uint16_t *proj = rand_bf16(c, nproj, -1.f, 1.f);
    float *A_log = xmalloc(sizeof(float) * Hv), *dtb = xmalloc(sizeof(float) * Hv);
    for (int h = 0; h < Hv; h++) A_log[h] = ref_uniform(&c->rng, -1.f, 1.f), dtb[h] = ref_uniform(&c->rng, -0.5f, 0.5f);
    for (size_t t = 0; t < T; t++)
        for (int h = 0; h < Hv; h++) {
            const float g = logf(ref_uniform(&c->rng, 0.5f, 0.999f)), sp = -g / expf(A_log[h]);
            proj[t * ld + cd + vd + h] = ref_f32_to_bf16(ref_uniform(&c->rng, -1.386f, 1.386f));
            proj[t * ld + cd + vd + Hv + h] = ref_f32_to_bf16(logf(expm1f(sp)) - dtb[h]);
        }
    uint16_t *cw = rand_bf16(c, (size_t)K * cd, -0.5f, 0.5f), *cstate = rand_bf16(c, ncs, -1.f, 1.f);
    uint16_t *nw = rand_bf16(c, cfg.v_dim, 0.5f, 1.5f), *qkv_in = rand_bf16(c, T * cd, -1.f, 1.f);
    float *st0 = xmalloc(sizeof(float) * nst);
    for (size_t i = 0; i < nst; i++) st0[i] = ref_mamba_state_round(ref_uniform(&c->rng, -0.5f, 0.5f), cfg.state_dtype);
    void *st_raw = xmalloc(nst * esz);
    ref_mamba_state_from_f32(st0, cfg.state_dtype, nst, st_raw);

    struct gdn_args a = {
        .proj = upload(proj, nproj * 2), .ld = ld, .conv_w = upload(cw, (size_t)K * cd * 2),
        .A_log = upload(A_log, sizeof(float) * Hv), .dt_bias = upload(dtb, sizeof(float) * Hv),
        .norm_w = upload(nw, (size_t)cfg.v_dim * 2), .eps = 1e-6f, .conv_state = upload(cstate, ncs * 2),
        .state = upload(st_raw, nst * esz), .qkv = dev_alloc(T * cd * 2, "qkv"), .o = dev_alloc(T * vd * 2, "o"),
        .out = dev_alloc(T * vd * 2, "out"), .batch = batch, .qlen = qlen, .has_past = has_past};
    const size_t wsb = gen ? 0 : gdn_workspace_bytes(cfg, batch, qlen);
    if (wsb) a.ws = dev_alloc(wsb, "gdn workspace");
    char tag[128], what[192];
    snprintf(tag, sizeof tag, "%s %s b=%d q=%d%s%s", req.label + 4, gen ? "gen" : "ctx", batch, qlen,
             has_past ? " past" : "", gen ? "" : gdn_scan_slice(cfg, batch) == 16 ? " s16" : " s32");

    // conv
    poison(c, a.qkv, T * cd * 2);
    gdn_conv_enqueue(&req, cfg, c->s, &a);
    stream_wait(c->s, 60, "gdn conv");
    uint16_t *qkv_got = xmalloc(T * cd * 2), *cs_got = xmalloc(ncs * 2);
    download(qkv_got, a.qkv, T * cd * 2);
    download(cs_got, a.conv_state, ncs * 2);
    float *qkv_want = xmalloc(sizeof(float) * T * cd);
    ref_gdn_conv(sh, proj, ld, cw, cstate, batch, qlen, has_past, qkv_want);
    snprintf(what, sizeof what, "gdn conv %s", tag);
    gdn_verdict_bf16(c, what, "qkv", qkv_got, qkv_want, T * cd, GDN_CONV_ATOL, GDN_CONV_RTOL, GDN_CONV_L2);
    float *cs_g = bf16_to_f32(cs_got, ncs), *cs_w = bf16_to_f32(cstate, ncs);
    snprintf(what, sizeof what, "gdn conv state %s", tag);
    verdict(c, what, ref_compare("conv_state", cs_g, cs_w, ncs, 0, 0, 1), 0);

    // delta rule, on fresh q, k, v ~ U(-1, 1)
    CU_CHECK(lwb_cu.cuMemcpyHtoD(a.qkv, qkv_in, T * cd * 2));
    poison(c, a.o, T * vd * 2);
    if (wsb) poison(c, a.ws, wsb);
    if (gen) gdn_step_enqueue(&req, cfg, c->s, &a);
    else gdn_chunk_enqueue(&req, cfg, c->s, &a);
    stream_wait(c->s, 60, "gdn delta rule");
    uint16_t *o_got = xmalloc(T * vd * 2);
    void *st_got_raw = xmalloc(nst * esz);
    download(o_got, a.o, T * vd * 2);
    download(st_got_raw, a.state, nst * esz);
    float *o_want = xmalloc(sizeof(float) * T * vd), *st_got = xmalloc(sizeof(float) * nst);
    ref_gdn_rule(sh, proj, ld, qkv_in, A_log, dtb, st0, batch, qlen, has_past, gen, o_want);
    ref_mamba_state_to_f32(st_got_raw, cfg.state_dtype, nst, st_got);
    snprintf(what, sizeof what, "gdn %s o %s", gen ? "step" : "chunk", tag);
    if (gen) gdn_verdict_bf16(c, what, "o", o_got, o_want, T * vd, GDN_STEP_O_ATOL, GDN_STEP_O_RTOL, GDN_STEP_O_L2);
    else gdn_verdict_bf16(c, what, "o", o_got, o_want, T * vd, GDN_O_ATOL, GDN_O_RTOL, GDN_O_L2);
    snprintf(what, sizeof what, "gdn %s state %s", gen ? "step" : "chunk", tag);
    verdict(c, what,
            ref_compare("state", st_got, st0, nst, ref_gdn_state_atol(cfg.state_dtype),
                        ref_gdn_state_rtol(cfg.state_dtype), 1),
            GDN_STATE_L2);

    // gated norm of the kernel's o
    poison(c, a.out, T * vd * 2);
    gdn_norm_enqueue(&req, cfg, c->s, &a);
    stream_wait(c->s, 60, "gdn norm");
    uint16_t *out_got = xmalloc(T * vd * 2);
    download(out_got, a.out, T * vd * 2);
    float *out_want = xmalloc(sizeof(float) * T * vd);
    ref_gdn_norm(sh, proj, ld, o_got, nw, a.eps, (int)T, out_want);
    snprintf(what, sizeof what, "gdn norm %s", tag);
    gdn_verdict_bf16(c, what, "out", out_got, out_want, T * vd, GDN_NORM_ATOL, GDN_NORM_RTOL, GDN_NORM_L2);

    free(proj), free(A_log), free(dtb), free(cw), free(cstate), free(nw), free(qkv_in), free(st0), free(st_raw);
    free(qkv_got), free(cs_got), free(qkv_want), free(cs_g), free(cs_w), free(o_got), free(st_got_raw), free(o_want);
    free(st_got), free(out_got), free(out_want);
    CUdeviceptr all[] = {a.proj, a.conv_w, a.A_log, a.dt_bias, a.norm_w, a.conv_state, a.state, a.qkv, a.o, a.out, a.ws};
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++) dev_free(all[i], 0);
}

// ---------------------------------------------------------------------------------------------
// Benchmarks

enum { GDN_CONV, GDN_CHUNK, GDN_STEP, GDN_NORM };
struct gdn_bench_arg {
    const struct lwb_kreq *r;
    struct gdn_config cfg;
    struct gdn_args a;
    int which;
};
static void gdn_bench_launch(void *p, CUstream s) {
    struct gdn_bench_arg *b = p;
    switch (b->which) {
    case GDN_CONV: gdn_conv_enqueue(b->r, b->cfg, s, &b->a); break;
    case GDN_CHUNK: gdn_chunk_enqueue(b->r, b->cfg, s, &b->a); break;
    case GDN_STEP: gdn_step_enqueue(b->r, b->cfg, s, &b->a); break;
    default: gdn_norm_enqueue(b->r, b->cfg, s, &b->a); break;
    }
}

// Device-filled inputs at a real shape (A_log 0, dt_bias 0: g = -softplus(a), a ~ U(-1, 1)).
static void bench_gdn(struct check *c, struct gdn_config cfg, int batch, int qlen, bool gen) {
    struct lwb_kreq req;
    gdn_request(&req, cfg);
    jit_build(&c->jit, (struct lwb_kreq *[]){&req}, 1);
    const int Hv = cfg.v_heads, cd = gdn_conv_dim(cfg), vd = cfg.v_heads * cfg.v_dim;
    const long long ld = gdn_ld(cfg), T = (long long)batch * qlen;
    const size_t st_bytes = (size_t)batch * gdn_state_bytes(cfg), cs_bytes = (size_t)batch * gdn_conv_state_bytes(cfg);
    float *zeros = xcalloc((size_t)Hv, sizeof(float));
    struct gdn_bench_arg b = {.r = &req, .cfg = cfg};
    struct gdn_args *a = &b.a;
    *a = (struct gdn_args){.proj = dev_alloc((size_t)T * ld * 2, "proj"), .ld = ld,
                           .conv_w = dev_alloc((size_t)cfg.conv_k * cd * 2, "conv_w"),
                           .A_log = upload(zeros, sizeof(float) * Hv), .dt_bias = upload(zeros, sizeof(float) * Hv),
                           .norm_w = dev_alloc((size_t)cfg.v_dim * 2, "norm_w"), .eps = 1e-6f,
                           .conv_state = dev_alloc(cs_bytes, "conv state"), .state = dev_alloc(st_bytes, "state"),
                           .qkv = dev_alloc((size_t)T * cd * 2, "qkv"), .o = dev_alloc((size_t)T * vd * 2, "o"),
                           .out = dev_alloc((size_t)T * vd * 2, "out"), .batch = batch, .qlen = qlen, .has_past = gen};
    const size_t wsb = gen ? 0 : gdn_workspace_bytes(cfg, batch, qlen);
    if (wsb) a->ws = dev_alloc(wsb, "gdn workspace");
    init_fill_bf16(&c->init, c->s, a->proj, T * ld, 21, -1.f, 1.f);
    init_fill_bf16(&c->init, c->s, a->conv_w, (long long)cfg.conv_k * cd, 22, -0.5f, 0.5f);
    init_fill_bf16(&c->init, c->s, a->norm_w, cfg.v_dim, 23, 0.5f, 1.5f);
    init_fill_bf16(&c->init, c->s, a->conv_state, (long long)(cs_bytes / 2), 24, -1.f, 1.f);
    // bf16 patterns of U(-0.5, 0.5) read as fp16 are finite and modest too; fp32 starts at zero
    init_fill_bf16(&c->init, c->s, a->state, (long long)(st_bytes / 2), 25, -0.5f, 0.5f);
    if (cfg.state_dtype == MAMBA_STATE_F32) CU_CHECK(lwb_cu.cuMemsetD8Async(a->state, 0, st_bytes, c->s));
    init_fill_bf16(&c->init, c->s, a->qkv, T * cd, 26, -1.f, 1.f);
    init_fill_bf16(&c->init, c->s, a->o, T * vd, 27, -0.1f, 0.1f);
    stream_wait(c->s, 60, "gdn bench fills");

    char what[160];
    const char *phase = gen ? "gen" : "ctx";
    b.which = GDN_CONV;
    double us = time_us(c, gdn_bench_launch, &b, 10);
    snprintf(what, sizeof what, "gdn conv %s b=%d q=%d", phase, batch, qlen);
    bench_line(c, what, us, gdn_conv_bytes(cfg, (int)T, batch), 2.0 * T * cd * cfg.conv_k);
    b.which = gen ? GDN_STEP : GDN_CHUNK;
    us = time_us(c, gdn_bench_launch, &b, 10);
    snprintf(what, sizeof what, "gdn %s %s b=%d q=%d %s", gen ? "step" : "chunk", phase, batch, qlen,
             mamba_dtype_name(cfg.state_dtype));
    double bytes = gen ? gdn_step_bytes(cfg, batch, qlen) : gdn_chunk_bytes(cfg, batch, qlen, false);
    bench_line(c, what, us, bytes, gen ? 8.0 * T * Hv * cfg.k_dim * cfg.v_dim : gdn_chunk_flops(cfg, batch, qlen));
    if (gen)
        printf("info  gdn step bandwidth %.1f%% of copy bandwidth (target >= 70%%)\n",
               100.0 * bytes / (us * 1e-6) / c->copy_bw);
    b.which = GDN_NORM;
    us = time_us(c, gdn_bench_launch, &b, 10);
    snprintf(what, sizeof what, "gdn norm %s b=%d q=%d", phase, batch, qlen);
    bench_line(c, what, us, gdn_norm_bytes(cfg, (int)T), 0);

    free(zeros);
    CUdeviceptr all[] = {a->proj, a->conv_w, a->A_log, a->dt_bias, a->norm_w, a->conv_state, a->state, a->qkv,
                         a->o, a->out, a->ws};
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++) dev_free(all[i], 0);
}

static void check_gdn(struct check *c) {
    struct gdn_config f32 = gdn_qwen3next_tp2, f16 = gdn_qwen3next_tp2, bf = gdn_qwen3next_tp2;
    f32.state_dtype = MAMBA_STATE_F32, bf.state_dtype = MAMBA_STATE_BF16;
    // TP 2 sizes, CTX: a chunk short, exact, one over, several with a partial last one, a single
    // token and fewer tokens than the conv state holds; batch 1 takes 16-column slices.
    check_gdn_case(c, f32, 1, 63, false, false);
    check_gdn_case(c, f16, 2, 64, true, false);
    check_gdn_case(c, bf, 3, 65, true, false);
    check_gdn_case(c, f32, 2, 200, true, false);
    check_gdn_case(c, f16, 1, 300, false, false);
    check_gdn_case(c, f16, 1, 300, true, false);
    check_gdn_case(c, f16, 2, 1, true, false);
    check_gdn_case(c, f32, 3, 3, true, false);
    // GEN: one token, MTP steps of 2..4, a first token without a past.
    check_gdn_case(c, f16, 5, 1, true, true);
    check_gdn_case(c, f32, 3, 3, true, true);
    check_gdn_case(c, bf, 2, 2, true, true);
    check_gdn_case(c, f16, 2, 4, true, true);
    check_gdn_case(c, f16, 2, 1, false, true);
    // The whole model (Hk 16, Hv 32), and an odd configuration: three v-heads per k-head,
    // Dk 64 != Dv 96, conv width 3.
    struct gdn_config full = {16, 32, 128, 128, 4, 64, MAMBA_STATE_BF16};
    struct gdn_config odd = {4, 12, 64, 96, 3, 64, MAMBA_STATE_F32};
    check_gdn_case(c, full, 2, 130, true, false);
    check_gdn_case(c, full, 3, 1, true, true);
    check_gdn_case(c, odd, 2, 100, true, false);
    check_gdn_case(c, odd, 3, 1, true, false);
    check_gdn_case(c, odd, 2, 2, false, false);
    check_gdn_case(c, odd, 4, 1, true, true);
    odd.state_dtype = MAMBA_STATE_F16;
    check_gdn_case(c, odd, 2, 3, true, true);
    check_gdn_case(c, odd, 3, 130, false, false);
    // Speed at Qwen3-Next's TP 2 shapes.
    bench_gdn(c, gdn_qwen3next_tp2, 4, 8193, false);
    bench_gdn(c, gdn_qwen3next_tp2, 512, 1, true);
}

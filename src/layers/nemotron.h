// layers/nemotron.h: the Nemotron-H family (model_type nemotron_h: NVIDIA-Nemotron-3-Nano and its
// kin): one mixer per decoder layer, chosen by the layer's letter in hybrid_override_pattern:
// M a Mamba2 mixer, * grouped-query attention, E a mixture of experts.
//
// Defines: struct nh_dims (the shapes), struct nh_layer (one layer's weights and caches),
// struct nh_buffers (activations shared by the layers), struct nh_run (one layer's launches for
// one problem), struct nh_family, nh_cost (floors), and the table functions (nh_create ...
// nh_route_read) that src/families.h registers.
//
// A layer, as TensorRT-LLM's NemotronHLayer runs it: the fused residual add and RMSNorm
// (residual += hidden; x = norm(residual), with the layer's own norm), outside every module
// range, then the mixer, whose output is the next layer's hidden; the first selected layer adds
// the problem's hidden and residual inputs. Module ranges are the class names TensorRT-LLM's
// layer-wise mark_utils wraps: `Mamba2Mixer`; `Attention`; `NemotronHMOE` holding
// `DeepseekV3Gate` (the router GEMM) and `MoE` (top-k, permutation, experts, combine), with the
// shared expert (TensorRT-LLM's unmarked MLP) directly inside `NemotronHMOE`.
//
// The Mamba2 mixer: in_proj (z | xBC | dt), the causal conv1d with its cached state, the SSD
// chunked scan (CTX) or the one-step state update (GEN) with the recurrent state cache,
// the gated RMSNorm, out_proj (layers/mamba.h). Attention: the fused q/k/v projection, the new
// keys and values into a paged cache (no positional encoding: Nemotron-H has none), paged
// grouped-query attention (layers/gqa.h), o_proj. MoE: the router in fp32 (sigmoid scores with
// the correction bias choosing, one group, weights normalised and scaled by
// routed_scaling_factor: DeepSeek-V3's kernels with n_group 1), non-gated relu2 experts (the
// up GEMM's epilogue squares the ReLU), the shared relu2 expert added in the combine.
//
// Weights are random (DUMMY): Linear weights uniform with standard deviation 1/sqrt(fan_in), norm
// weights around 1, A_log = log(1..H), D = 1 and dt_bias the inverse softplus of time steps
// spread log-uniformly over [1e-3, 0.1] (transformers' initialisation), each rounded to bf16 so a
// bf16 reference holds the same values. Past tokens are random: the KV cache's keys and values,
// the conv states and the recurrent states (what a prefill would leave is no cheaper or dearer
// to read).
//
// Does not: run on several ranks, fp8 weights, --load-format AUTO or routing replay yet (each is
// refused in nh_create with the fix).
// Tested by test/test_plan.c (plans of the README's commands without a GPU) and on the GPU by
// test/gpu/check_nemotron.py against transformers' NemotronH blocks.
#pragma once

struct nh_dims {
    int hidden, heads, kv_heads, head_dim, page;
    float eps, sm_scale;
    struct mamba_config mc;
    int d_inner, conv_dim, proj;      // Mamba2: heads x head_dim; x, B, C channels; in_proj rows
    int experts, top_k, moe_inter, shared_inter, groups, topk_group, norm_topk;
    float scaling;
    struct gqa_config gc;
    int qkv;                          // fused q/k/v rows
};

struct nh_layer {
    int index;
    char kind;                        // LWB_LAYER_MAMBA, _ATTN or _MOE
    int moe_slot;                     // index among the run's MoE layers, -1
    CUdeviceptr norm;                 // (H) bf16: the layer's own RMSNorm
    // Mamba2
    CUdeviceptr in_proj;              // (proj, H) bf16
    CUdeviceptr conv_w, conv_b;       // (K, conv_dim), (conv_dim) bf16
    CUdeviceptr A, dt_bias, D;        // (heads) fp32: A = -exp(A_log)
    float *A_log_h, *dt_bias_h, *D_h; // the host values (for --dump)
    CUdeviceptr gnorm;                // (d_inner) bf16: the gated norm's weight
    CUdeviceptr out_proj;             // (H, d_inner) bf16
    CUdeviceptr conv_state, ssm_state; // (slots, K-1, conv_dim) bf16; (slots, heads, head_dim, state)
    // attention
    CUdeviceptr wqkv, wo;             // (qkv, H), (H, heads x head_dim) bf16
    CUdeviceptr cache;                // (blocks, 2, kv_heads, page, head_dim) bf16
    int blocks;
    // MoE
    CUdeviceptr gate, bias;           // (E, H) bf16, (E) fp32
    CUdeviceptr up, down;             // (E, I, H), (E, H, I) bf16
    CUdeviceptr s_up, s_down;         // (S, H), (H, S) bf16
};

struct nh_buffers {
    long long max_tokens;
    int max_batch, max_blocks, moe_layers;
    CUdeviceptr hidden_in, residual_in; // (T, H) the problem's inputs, never written
    CUdeviceptr hidden, residual, x;    // (T, H) the stream between layers; the normalised input
    CUdeviceptr zxbcdt, xbc, y, yn;     // Mamba2: (T, proj), (T, conv_dim), (T, d_inner) x2
    CUdeviceptr mamba_ws;
    size_t mamba_ws_bytes;
    CUdeviceptr qkv, q, attn;           // attention: (T, qkv), (T, heads, head_dim), (T, heads x head_dim)
    CUdeviceptr attn_ws;
    size_t attn_ws_bytes;
    CUdeviceptr logits;                 // (logit_splits, T, E) fp32
    int logit_splits;
    CUdeviceptr ids, weights, override, replay_stage;
    struct moe_perm perm;
    CUdeviceptr x_perm, h_perm, y_perm; // (T k, H), (T k, I), (T k, H)
    CUdeviceptr hs, ys;                 // shared expert (T, S), (T, H)
    CUdeviceptr kv_lens, block_table;
    CUdeviceptr gemm_ws;
    size_t gemm_ws_bytes;
};

struct nh_family;

struct nh_run {
    struct nh_family *f;
    const struct nh_layer *L;
    struct lwb_problem p;
    bool first;
    bool use_override;
    struct rmsnorm_config n_in;
    struct lwb_kreq r_in;
    struct lwb_gemm g_in, g_out;       // Mamba2
    struct lwb_kreq r_mamba;
    struct lwb_gemm g_qkv, g_o;        // attention
    struct lwb_kreq r_gqa;
    struct gqa_decode_plan dec;
    struct lwb_gemm g_gate, g_up, g_down, g_sup, g_sdown; // MoE
    struct moe_route_config route_cfg;
    struct lwb_kreq r_route;
};

struct nh_family {
    struct lwb_run_spec spec;
    const struct lwb_shard *sh;
    const struct lwb_model *model;
    struct nh_dims d;
    struct nh_layer *layers;
    int nlayers;
    struct nh_run *runs; // (nproblems, nlayers)
    struct nh_buffers buf;
    const struct lwb_kreq *init;
    unsigned long long seed;
};

#define NH_BF16(rows, cols) ((size_t)(rows) * (size_t)(cols) * 2)

static bool nh_runs(const struct lwb_model *m) { return !strcmp(m->model_type, "nemotron_h"); }

static struct nh_run *nh_run_of(struct nh_family *f, int problem, int layer) {
    return &f->runs[(size_t)problem * f->nlayers + layer];
}

static int nh_state_dtype(const char *name) {
    return !strcmp(name, "float16") ? MAMBA_STATE_F16 : !strcmp(name, "bfloat16") ? MAMBA_STATE_BF16 : MAMBA_STATE_F32;
}

static struct nh_dims nh_dims_from_model(const struct lwb_model *m, int page, const char *ssm_dtype) {
    struct nh_dims d = {.hidden = m->hidden, .heads = m->heads, .kv_heads = m->kv_heads, .head_dim = m->head_dim,
                        .page = page, .eps = (float)m->rms_norm_eps, .sm_scale = (float)(1.0 / sqrt(m->head_dim)),
                        .experts = m->n_experts, .top_k = m->top_k, .moe_inter = m->moe_intermediate,
                        .shared_inter = m->shared_intermediate, .groups = m->n_group, .topk_group = m->topk_group,
                        .norm_topk = m->norm_topk_prob, .scaling = (float)m->routed_scaling_factor};
    d.mc = (struct mamba_config){.heads = m->mamba_heads, .head_dim = m->mamba_head_dim, .groups = m->ssm_groups,
                                 .state = m->ssm_state, .conv_k = m->conv_kernel, .chunk = m->ssm_chunk,
                                 .norm_group = m->mamba_heads * m->mamba_head_dim / m->ssm_groups,
                                 .state_dtype = nh_state_dtype(ssm_dtype), .conv_bias = m->conv_bias};
    d.d_inner = m->mamba_heads * m->mamba_head_dim;
    d.conv_dim = d.d_inner + 2 * m->ssm_groups * m->ssm_state;
    d.proj = d.d_inner + d.conv_dim + m->mamba_heads;
    d.gc = (struct gqa_config){.q_heads = m->heads, .kv_heads = m->kv_heads, .head_dim = m->head_dim, .page = page};
    d.qkv = (m->heads + 2 * m->kv_heads) * m->head_dim;
    return d;
}

// ---------------------------------------------------------------------------------------------
// Costs: floors of each module (weights read once, activations in and out once, caches and
// states read and written as the kernels must)

static struct lwb_cost nh_linear(double m, double n, double k) {
    return (struct lwb_cost){.flops = 2.0 * m * n * k, .bytes = 2.0 * (n * k + m * k + m * n)};
}
static void nh_cost_add(struct lwb_cost *a, struct lwb_cost b) {
    a->flops += b.flops, a->flops8 += b.flops8, a->bytes += b.bytes, a->sent += b.sent, a->received += b.received;
}

static struct lwb_cost nh_cost_mamba(const struct nh_dims *d, const struct lwb_problem *p) {
    const double T = p->tokens;
    struct lwb_cost c = nh_linear(T, d->proj, d->hidden);
    nh_cost_add(&c, (struct lwb_cost){.bytes = mamba_conv_bytes(d->mc, p->tokens, p->batch)});
    if (p->ctx)
        nh_cost_add(&c, (struct lwb_cost){.flops = mamba_ssd_flops(d->mc, p->batch, p->qlen),
                                          .bytes = mamba_ssd_bytes(d->mc, p->batch, p->qlen, p->past > 0)});
    else
        nh_cost_add(&c, (struct lwb_cost){.flops = 6.0 * T * d->d_inner * d->mc.state,
                                          .bytes = mamba_step_bytes(d->mc, p->batch, p->qlen)});
    nh_cost_add(&c, (struct lwb_cost){.bytes = mamba_norm_bytes(d->mc, p->tokens)});
    nh_cost_add(&c, nh_linear(T, d->hidden, d->d_inner));
    return c;
}

static struct lwb_cost nh_cost_attn(const struct nh_dims *d, const struct lwb_problem *p) {
    const double T = p->tokens;
    struct lwb_cost c = nh_linear(T, d->qkv, d->hidden);
    nh_cost_add(&c, (struct lwb_cost){.bytes = gqa_prep_bytes(d->gc, p->tokens)});
    nh_cost_add(&c, (struct lwb_cost){.flops = gqa_attn_flops(d->gc, p->batch, p->qlen, p->past),
                                      .bytes = gqa_attn_bytes(d->gc, p->batch, p->qlen, p->past)});
    nh_cost_add(&c, nh_linear(T, d->hidden, (double)d->heads * d->head_dim));
    return c;
}

struct nh_moe_costs {
    struct lwb_cost moe, shared, gate, experts;
};

// rows: routed (token, slot) pairs; active: experts with at least one.
static struct nh_moe_costs nh_cost_moe(const struct nh_dims *d, const struct lwb_problem *p, double rows,
                                       double active) {
    struct nh_moe_costs c = {0};
    const double T = p->tokens, H = d->hidden, I = d->moe_inter, S = d->shared_inter, E = d->experts;
    if (S) {
        c.shared = nh_linear(T, S, H);
        nh_cost_add(&c.shared, nh_linear(T, H, S));
    }
    c.gate = (struct lwb_cost){.flops = 2.0 * T * E * H, .bytes = 2.0 * E * H + 2.0 * T * H + 4.0 * T * E};
    // Routed experts: the active experts' weights once; the permuted rows, the intermediate and
    // the outputs written and read once; the tokens in, the layer's output out.
    c.experts = (struct lwb_cost){.flops = 2.0 * rows * I * H * 2,
                                  .bytes = 2.0 * active * 2 * I * H + rows * (4.0 * H + 4.0 * I + 4.0 * H) +
                                           4.0 * T * H + 4.0 * T * E + 8.0 * T * d->top_k};
    c.moe = c.shared;
    nh_cost_add(&c.moe, c.gate);
    nh_cost_add(&c.moe, c.experts);
    return c;
}

// ---------------------------------------------------------------------------------------------
// Plan

static void nh_run_plan(struct nh_run *r, struct nh_family *f, const struct nh_layer *L, const struct lwb_problem *p,
                        const struct lwb_device *dev, bool override) {
    const struct nh_dims *d = &f->d;
    memset(r, 0, sizeof *r);
    r->f = f, r->L = L, r->p = *p, r->use_override = override;
    const long long T = p->tokens;
    r->n_in = rmsnorm_choose_config(d->hidden, true);
    rmsnorm_request(&r->r_in, r->n_in);
    if (L->kind == LWB_LAYER_MAMBA) {
        gemm_plan(&r->g_in, "in_proj", T, d->proj, d->hidden, 1, GEMM_EPI_BF16, false, 0, dev);
        gemm_plan(&r->g_out, "out_proj", T, d->hidden, d->d_inner, 1, GEMM_EPI_BF16, false, 0, dev);
        mamba_request(&r->r_mamba, d->mc);
    } else if (L->kind == LWB_LAYER_ATTN) {
        gemm_plan(&r->g_qkv, "qkv_proj", T, d->qkv, d->hidden, 1, GEMM_EPI_BF16, false, 0, dev);
        gemm_plan(&r->g_o, "o_proj", T, d->hidden, d->heads * d->head_dim, 1, GEMM_EPI_BF16, false, 0, dev);
        gqa_request(&r->r_gqa, d->gc);
        if (!p->ctx) r->dec = gqa_decode_choose(d->gc, p->batch, p->qlen, p->kv_len, dev->sm_count);
    } else {
        const double rows = (double)T * d->top_k / d->experts;
        gemm_plan(&r->g_gate, "gate", T, d->experts, d->hidden, 1, GEMM_EPI_F32, false, 0, dev);
        gemm_keep_partials(&r->g_gate);
        gemm_plan(&r->g_up, "experts_up", T * d->top_k, d->moe_inter, d->hidden, 1, GEMM_EPI_RELU2, true, rows, dev);
        gemm_plan(&r->g_down, "experts_down", T * d->top_k, d->hidden, d->moe_inter, 1, GEMM_EPI_BF16, true, rows, dev);
        if (d->shared_inter) {
            gemm_plan(&r->g_sup, "shared_up", T, d->shared_inter, d->hidden, 1, GEMM_EPI_RELU2, false, 0, dev);
            gemm_plan(&r->g_sdown, "shared_down", T, d->hidden, d->shared_inter, 1, GEMM_EPI_BF16, false, 0, dev);
        }
        r->route_cfg = (struct moe_route_config){d->experts, d->top_k, d->groups, d->topk_group, d->norm_topk,
                                                 d->hidden, 1, 0};
        moe_route_request(&r->r_route, r->route_cfg);
    }
}

static int nh_run_gemms(struct nh_run *r, struct lwb_gemm **out) {
    struct lwb_gemm *all[] = {&r->g_in, &r->g_out, &r->g_qkv, &r->g_o, &r->g_gate, &r->g_up, &r->g_down,
                              &r->g_sup, &r->g_sdown};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++)
        if (all[i]->req.family) out[n++] = all[i];
    return n;
}

static void nh_check(const struct nh_family *f) {
    const struct lwb_run_spec *sp = &f->spec;
    const struct nh_dims *d = &f->d;
    for (int i = 0; i < sp->nproblems; i++) {
        const struct lwb_problem *q = &sp->problems[i];
        const long long tiles = LWB_CEIL_DIV((long long)q->tokens * d->top_k, 64) + d->experts;
        if (tiles > 65535)
            lwb_user_error("run: %d tokens x top-%d routed rows are more than lwb's expert GEMMs take in one launch "
                           "(65535 tiles of 64 rows); use fewer tokens per forward", q->tokens, d->top_k);
    }
}

static void *nh_create(const struct lwb_run_spec *spec) {
    struct nh_family *f = xcalloc(1, sizeof *f);
    f->spec = *spec;
    f->sh = spec->shard;
    f->model = spec->model;
    const char *name = f->model->name;
    if (f->sh->world_size > 1 || f->sh->collectives || f->sh->scaled_from)
        lwb_user_error("run: %s runs on one rank in lwb for now (its tensor- and expert-parallel split is not built); "
                       "run without --np, mpirun or --scaled-from", name);
    if (spec->wformat != LWB_WF_BF16)
        lwb_user_error("run: %s runs in bf16 in lwb (its checkpoint's format); give --weight-dtype bf16 or auto", name);
    if (spec->ckpt) LWB_BUG("--load-format AUTO reached the Nemotron-H family (cmd_run refuses it)");
    if (spec->replay)
        lwb_user_error("run: --replay-file-path is not built for %s yet; leave it out (or use a DeepSeek model)", name);
    f->d = nh_dims_from_model(f->model, spec->page, spec->ssm_dtype ? spec->ssm_dtype : f->model->ssm_cache_dtype);
    const char *why = mamba_config_error(f->d.mc);
    if (why) lwb_user_error("run: %s: %s", name, why);
    if (spec->page < 16)
        lwb_user_error("run: %s: --tokens-per-block %d; lwb's attention reads pages of at least 16 tokens (give 16 or "
                       "more)", name, spec->page);
    f->nlayers = spec->nlayers;
    f->layers = xcalloc((size_t)f->nlayers, sizeof *f->layers);
    int nmoe = 0;
    for (int l = 0; l < f->nlayers; l++) {
        struct nh_layer *L = &f->layers[l];
        L->index = spec->layers[l];
        L->kind = model_layer_kind(f->model, L->index);
        if (L->kind == LWB_LAYER_MLP)
            lwb_user_error("run: layer %d of %s is a dense MLP ('-' in hybrid_override_pattern), which lwb does not "
                           "build yet; select Mamba2 (M), attention (*) or MoE (E) layers", L->index, name);
        L->moe_slot = L->kind == LWB_LAYER_MOE ? nmoe++ : -1;
    }
    nh_check(f);
    return f;
}

static void nh_plan(void *fam, const struct lwb_device *dev) {
    struct nh_family *f = fam;
    struct nh_buffers *b = &f->buf;
    const int np = f->spec.nproblems;
    free(f->runs);
    f->runs = xcalloc((size_t)np * f->nlayers, sizeof *f->runs);
    memset(b, 0, sizeof *b);
    b->max_batch = f->spec.max_batch;
    b->max_blocks = LWB_CEIL_DIV(f->spec.max_seq_len, f->spec.page);
    for (int l = 0; l < f->nlayers; l++) b->moe_layers += f->layers[l].kind == LWB_LAYER_MOE;
    for (int i = 0; i < np; i++) {
        const struct lwb_problem *q = &f->spec.problems[i];
        b->max_tokens = LWB_MAX(b->max_tokens, q->tokens);
        for (int l = 0; l < f->nlayers; l++) {
            struct nh_run *r = nh_run_of(f, i, l);
            nh_run_plan(r, f, &f->layers[l], q, dev, f->spec.routing[i].method != LWB_BALANCE_NOT_MODIFIED);
            r->first = l == 0;
            struct lwb_gemm *g[12];
            int ng = nh_run_gemms(r, g);
            for (int j = 0; j < ng; j++) b->gemm_ws_bytes = LWB_MAX(b->gemm_ws_bytes, gemm_workspace_bytes(g[j]));
            if (f->layers[l].kind == LWB_LAYER_MAMBA && q->ctx)
                b->mamba_ws_bytes = LWB_MAX(b->mamba_ws_bytes, mamba_workspace_bytes(f->d.mc, q->batch, q->qlen));
            if (f->layers[l].kind == LWB_LAYER_ATTN && !q->ctx)
                b->attn_ws_bytes =
                    LWB_MAX(b->attn_ws_bytes, gqa_decode_ws_bytes(f->d.gc, r->dec, q->batch, q->qlen));
            if (f->layers[l].kind == LWB_LAYER_MOE) b->logit_splits = LWB_MAX(b->logit_splits, r->g_gate.cfg.splitk);
        }
    }
}

static void nh_requests(void *fam, struct lwb_kreqs *out) {
    struct nh_family *f = fam;
    for (size_t i = 0; i < (size_t)f->spec.nproblems * f->nlayers; i++) {
        struct nh_run *r = &f->runs[i];
        kreqs_add(out, &r->r_in);
        struct lwb_gemm *g[12];
        int ng = nh_run_gemms(r, g);
        for (int j = 0; j < ng; j++) kreqs_add(out, &g[j]->req);
        if (r->r_mamba.family) kreqs_add(out, &r->r_mamba);
        if (r->r_gqa.family) kreqs_add(out, &r->r_gqa);
        if (r->r_route.family) kreqs_add(out, &r->r_route);
    }
}

// ---------------------------------------------------------------------------------------------
// Memory

static void nh_layer_alloc(struct lwb_mem *m, struct nh_layer *L, const struct nh_dims *d, int slots, int blocks) {
    const long long H = d->hidden;
    L->norm = mem_alloc(m, MEM_WEIGHTS, NH_BF16(H, 1), "norm");
    if (L->kind == LWB_LAYER_MAMBA) {
        L->in_proj = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->proj, H), "in_proj");
        L->conv_w = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->mc.conv_k, d->conv_dim), "conv1d");
        L->conv_b = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->conv_dim, 1), "conv1d bias");
        L->A = mem_alloc(m, MEM_WEIGHTS, (size_t)d->mc.heads * 4, "A");
        L->dt_bias = mem_alloc(m, MEM_WEIGHTS, (size_t)d->mc.heads * 4, "dt_bias");
        L->D = mem_alloc(m, MEM_WEIGHTS, (size_t)d->mc.heads * 4, "D");
        L->gnorm = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->d_inner, 1), "gated norm");
        L->out_proj = mem_alloc(m, MEM_WEIGHTS, NH_BF16(H, d->d_inner), "out_proj");
        L->conv_state = mem_alloc(m, MEM_STATE, (size_t)slots * mamba_conv_state_bytes(d->mc), "conv states");
        L->ssm_state = mem_alloc(m, MEM_STATE, (size_t)slots * mamba_state_bytes(d->mc), "recurrent states");
    } else if (L->kind == LWB_LAYER_ATTN) {
        L->wqkv = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->qkv, H), "qkv_proj");
        L->wo = mem_alloc(m, MEM_WEIGHTS, NH_BF16(H, (size_t)d->heads * d->head_dim), "o_proj");
        L->blocks = blocks;
        L->cache = mem_alloc(m, MEM_KV, (size_t)blocks * gqa_cache_block_bytes(d->gc), "KV cache");
    } else {
        const long long E = d->experts, I = d->moe_inter, S = d->shared_inter;
        L->gate = mem_alloc(m, MEM_WEIGHTS, NH_BF16(E, H), "router");
        L->bias = mem_alloc(m, MEM_WEIGHTS, (size_t)E * 4, "correction bias");
        L->up = mem_alloc(m, MEM_WEIGHTS, NH_BF16(E * I, H), "experts up");
        L->down = mem_alloc(m, MEM_WEIGHTS, NH_BF16(E * H, I), "experts down");
        if (S) {
            L->s_up = mem_alloc(m, MEM_WEIGHTS, NH_BF16(S, H), "shared up");
            L->s_down = mem_alloc(m, MEM_WEIGHTS, NH_BF16(H, S), "shared down");
        }
    }
}

static void nh_alloc(void *fam, struct lwb_mem *m) {
    struct nh_family *f = fam;
    const struct nh_dims *d = &f->d;
    struct nh_buffers *b = &f->buf;
    const long long T = b->max_tokens, H = d->hidden;
    bool mamba = false, attn = false, moe = false;
    for (int l = 0; l < f->nlayers; l++) {
        nh_layer_alloc(m, &f->layers[l], d, b->max_batch, b->max_batch * b->max_blocks);
        mamba |= f->layers[l].kind == LWB_LAYER_MAMBA;
        attn |= f->layers[l].kind == LWB_LAYER_ATTN;
        moe |= f->layers[l].kind == LWB_LAYER_MOE;
    }
    b->hidden_in = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "hidden_states input");
    b->residual_in = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "residual input");
    b->hidden = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "hidden_states");
    b->residual = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "residual");
    b->x = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "normalised input");
    if (mamba) {
        b->zxbcdt = mem_alloc(m, MEM_ACT, NH_BF16(T, d->proj), "in_proj output");
        b->xbc = mem_alloc(m, MEM_ACT, NH_BF16(T, d->conv_dim), "conv output");
        b->y = mem_alloc(m, MEM_ACT, NH_BF16(T, d->d_inner), "scan output");
        b->yn = mem_alloc(m, MEM_ACT, NH_BF16(T, d->d_inner), "gated norm output");
        if (b->mamba_ws_bytes) b->mamba_ws = mem_alloc(m, MEM_WS, b->mamba_ws_bytes, "chunk states");
    }
    if (attn) {
        b->qkv = mem_alloc(m, MEM_ACT, NH_BF16(T, d->qkv), "qkv");
        b->q = mem_alloc(m, MEM_ACT, NH_BF16(T, (size_t)d->heads * d->head_dim), "queries");
        b->attn = mem_alloc(m, MEM_ACT, NH_BF16(T, (size_t)d->heads * d->head_dim), "attention output");
        if (b->attn_ws_bytes) b->attn_ws = mem_alloc(m, MEM_WS, b->attn_ws_bytes, "attention split partials");
    }
    if (moe) {
        const int E = d->experts, k = d->top_k;
        b->logits = mem_alloc(m, MEM_ACT, (size_t)LWB_MAX(b->logit_splits, 1) * T * E * 4, "router logits");
        b->ids = mem_alloc(m, MEM_ACT, (size_t)T * k * 4, "expert ids");
        b->weights = mem_alloc(m, MEM_ACT, (size_t)T * k * 4, "expert weights");
        b->override = mem_alloc(m, MEM_ACT, (size_t)T * k * 4, "balance override");
        const int tiles = moe_max_tiles((int)T, k, E, 64);
        b->perm = (struct moe_perm){mem_alloc(m, MEM_WS, (size_t)E * 4, "expert counts"),
                                    mem_alloc(m, MEM_WS, (size_t)E * 4, "expert offsets"),
                                    mem_alloc(m, MEM_WS, (size_t)E * 4, "expert fill"),
                                    mem_alloc(m, MEM_WS, (size_t)tiles * 16, "tile list"),
                                    mem_alloc(m, MEM_WS, (size_t)tiles * 16, "tile list"),
                                    mem_alloc(m, MEM_WS, 64, "tile counts"),
                                    mem_alloc(m, MEM_WS, (size_t)T * k * 4, "token rows")};
        b->x_perm = mem_alloc(m, MEM_ACT, NH_BF16(T * k, H), "permuted tokens");
        b->h_perm = mem_alloc(m, MEM_ACT, NH_BF16(T * k, d->moe_inter), "expert intermediate");
        b->y_perm = mem_alloc(m, MEM_ACT, NH_BF16(T * k, H), "expert outputs");
        if (d->shared_inter) {
            b->hs = mem_alloc(m, MEM_ACT, NH_BF16(T, d->shared_inter), "shared intermediate");
            b->ys = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "shared output");
        }
    }
    b->kv_lens = mem_alloc(m, MEM_WS, (size_t)b->max_batch * 4, "kv lengths");
    b->block_table = mem_alloc(m, MEM_WS, (size_t)b->max_batch * b->max_blocks * 4, "block table");
    if (b->gemm_ws_bytes) b->gemm_ws = mem_alloc(m, MEM_WS, b->gemm_ws_bytes, "split-K partials");
}

// ---------------------------------------------------------------------------------------------
// Weights and state

static uint16_t nh_bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float nh_round_bf16(float f) {
    uint32_t u = (uint32_t)nh_bf16_bits(f) << 16;
    float r;
    memcpy(&r, &u, 4);
    return r;
}
static uint16_t nh_f16_bits(float f) { // round to nearest even; |f| well inside fp16's range
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const int e = (int)((u >> 23) & 0xff) - 127 + 15;
    if (e <= 0) return (uint16_t)sign; // tiny: zero
    uint32_t mant = u & 0x7fffffu, h = ((uint32_t)e << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

// Random recurrent states in the cache's dtype (the init kernels fill bf16 and fp32 only), made on
// the host one slot at a time.
static void nh_fill_states(size_t slot_bytes, int dtype, CUdeviceptr p, int slots, unsigned long long seed,
                           CUstream s) {
    const size_t n = slot_bytes / (dtype == MAMBA_STATE_F32 ? 4 : 2);
    void *h = xmalloc(slot_bytes);
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (int slot = 0; slot < slots; slot++) {
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            const float v = ((float)(x >> 40) / 16777216.0f - 0.5f) * 0.5f; // uniform in [-0.25, 0.25)
            if (dtype == MAMBA_STATE_F32) ((float *)h)[i] = v;
            else if (dtype == MAMBA_STATE_F16) ((uint16_t *)h)[i] = nh_f16_bits(v);
            else ((uint16_t *)h)[i] = nh_bf16_bits(v);
        }
        upload_wait(s, p + (CUdeviceptr)slot * slot_bytes, h, slot_bytes);
    }
    free(h);
}

static void nh_layer_init(struct nh_layer *L, const struct nh_dims *d, const struct lwb_kreq *init, CUstream s,
                          unsigned long long seed, int slots) {
    const long long H = d->hidden;
    unsigned long long k = seed * 1000003ULL + (unsigned long long)L->index * 7919ULL;
#define NH_FILL(p, rows, cols, fan) \
    init_fill_bf16(init, s, p, (long long)(rows) * (cols), ++k, -sqrtf(3.f / (fan)), sqrtf(3.f / (fan)))
    init_fill_bf16(init, s, L->norm, H, ++k, 0.9f, 1.1f);
    if (L->kind == LWB_LAYER_MAMBA) {
        const int nh = d->mc.heads;
        NH_FILL(L->in_proj, d->proj, H, H);
        init_fill_bf16(init, s, L->conv_w, (long long)d->mc.conv_k * d->conv_dim, ++k, -0.5f, 0.5f);
        init_fill_bf16(init, s, L->conv_b, d->conv_dim, ++k, -0.5f, 0.5f);
        init_fill_bf16(init, s, L->gnorm, d->d_inner, ++k, 0.9f, 1.1f);
        NH_FILL(L->out_proj, H, d->d_inner, d->d_inner);
        L->A_log_h = xmalloc(sizeof(float) * (size_t)nh), L->dt_bias_h = xmalloc(sizeof(float) * (size_t)nh);
        L->D_h = xmalloc(sizeof(float) * (size_t)nh);
        float *A = xmalloc(sizeof(float) * (size_t)nh);
        uint64_t x = k * 0x9e3779b97f4a7c15ULL + 3;
        for (int h = 0; h < nh; h++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            const double u = (double)(x >> 11) / 9007199254740992.0;
            const double dt = LWB_MAX(exp(log(1e-3) + u * (log(0.1) - log(1e-3))), 1e-4);
            L->A_log_h[h] = nh_round_bf16((float)log(h + 1.0));
            L->dt_bias_h[h] = nh_round_bf16((float)(dt + log(-expm1(-dt)))); // softplus^-1(dt)
            L->D_h[h] = 1.0f;
            A[h] = -expf(L->A_log_h[h]);
        }
        upload_wait(s, L->A, A, sizeof(float) * (size_t)nh);
        upload_wait(s, L->dt_bias, L->dt_bias_h, sizeof(float) * (size_t)nh);
        upload_wait(s, L->D, L->D_h, sizeof(float) * (size_t)nh);
        free(A);
        init_fill_bf16(init, s, L->conv_state, (long long)slots * (d->mc.conv_k - 1) * d->conv_dim, ++k, -1.f, 1.f);
        nh_fill_states(mamba_state_bytes(d->mc), d->mc.state_dtype, L->ssm_state, slots, ++k, s);
    } else if (L->kind == LWB_LAYER_ATTN) {
        NH_FILL(L->wqkv, d->qkv, H, H);
        NH_FILL(L->wo, H, d->heads * d->head_dim, d->heads * d->head_dim);
        init_fill_bf16(init, s, L->cache, (long long)(gqa_cache_block_bytes(d->gc) / 2) * L->blocks, ++k, -1.f, 1.f);
    } else {
        const long long E = d->experts, I = d->moe_inter, S = d->shared_inter;
        NH_FILL(L->gate, E, H, H);
        init_fill_f32(init, s, L->bias, E, ++k, -0.01f, 0.01f);
        NH_FILL(L->up, E * I, H, H);
        NH_FILL(L->down, E * H, I, I);
        if (S) {
            NH_FILL(L->s_up, S, H, H);
            NH_FILL(L->s_down, H, S, S);
        }
    }
#undef NH_FILL
}

static void nh_init(void *fam, const struct lwb_kreq *init, CUstream s, unsigned long long seed) {
    struct nh_family *f = fam;
    struct nh_buffers *b = &f->buf;
    f->init = init, f->seed = seed;
    for (int l = 0; l < f->nlayers; l++) nh_layer_init(&f->layers[l], &f->d, init, s, seed, b->max_batch);
    block_table_upload(b->block_table, b->max_batch * b->max_blocks, seed, s);
}

// ---------------------------------------------------------------------------------------------
// Binding and the modules

static void nh_run_bind(struct nh_run *r) {
    const struct nh_dims *d = &r->f->d;
    const struct nh_buffers *b = &r->f->buf;
    const struct nh_layer *L = r->L;
    const long long T = r->p.tokens, H = d->hidden;
    struct lwb_operand x = {b->x, T, d->hidden, H, 1, 0};
    if (L->kind == LWB_LAYER_MAMBA) {
        struct lwb_operand w = {L->in_proj, d->proj, d->hidden, H, 1, 0};
        gemm_bind(&r->g_in, &x, &w, b->zxbcdt, d->proj, 0, b->gemm_ws);
        struct lwb_operand yn = {b->yn, T, d->d_inner, d->d_inner, 1, 0};
        struct lwb_operand wo = {L->out_proj, H, d->d_inner, d->d_inner, 1, 0};
        gemm_bind(&r->g_out, &yn, &wo, b->hidden, H, 0, b->gemm_ws);
    } else if (L->kind == LWB_LAYER_ATTN) {
        const int A = d->heads * d->head_dim;
        struct lwb_operand w = {L->wqkv, d->qkv, d->hidden, H, 1, 0};
        gemm_bind(&r->g_qkv, &x, &w, b->qkv, d->qkv, 0, b->gemm_ws);
        struct lwb_operand at = {b->attn, T, A, A, 1, 0};
        struct lwb_operand wo = {L->wo, H, A, A, 1, 0};
        gemm_bind(&r->g_o, &at, &wo, b->hidden, H, 0, b->gemm_ws);
    } else {
        const int E = d->experts, I = d->moe_inter, k = d->top_k;
        struct lwb_operand wg = {L->gate, E, d->hidden, H, 1, 0};
        gemm_bind(&r->g_gate, &x, &wg, b->logits, E, 0, b->gemm_ws);
        struct lwb_operand xp = {b->x_perm, T * k, d->hidden, H, 1, 0};
        struct lwb_operand wu = {L->up, I, d->hidden, H, E, (long long)I * H};
        gemm_bind(&r->g_up, &xp, &wu, b->h_perm, I, 0, 0);
        gemm_bind_tiles(&r->g_up, b->perm.tiles_a, b->perm.ntiles, moe_max_tiles((int)T, k, E, gemm_tile_rows(&r->g_up)));
        struct lwb_operand hp = {b->h_perm, T * k, I, I, 1, 0};
        struct lwb_operand wd = {L->down, H, I, I, E, H * I};
        gemm_bind(&r->g_down, &hp, &wd, b->y_perm, H, 0, 0);
        gemm_bind_tiles(&r->g_down, b->perm.tiles_b, b->perm.ntiles + 4,
                        moe_max_tiles((int)T, k, E, gemm_tile_rows(&r->g_down)));
        if (d->shared_inter) {
            const int S = d->shared_inter;
            struct lwb_operand su = {L->s_up, S, d->hidden, H, 1, 0};
            gemm_bind(&r->g_sup, &x, &su, b->hs, S, 0, b->gemm_ws);
            struct lwb_operand hs = {b->hs, T, S, S, 1, 0};
            struct lwb_operand sd = {L->s_down, H, S, S, 1, 0};
            gemm_bind(&r->g_sdown, &hs, &sd, b->ys, H, 0, b->gemm_ws);
        }
    }
}

// The layer's start: residual += hidden (the first layer: the problem's inputs), x = norm(residual).
static void nh_mod_norm(void *arg, CUstream s) {
    struct nh_run *r = arg;
    const struct nh_buffers *b = &r->f->buf;
    const long long H = r->f->d.hidden;
    rmsnorm_enqueue(&r->r_in, r->n_in, s, r->first ? b->hidden_in : b->hidden, H,
                    r->first ? b->residual_in : b->residual, b->residual, H, r->L->norm, b->x, H, r->p.tokens,
                    r->f->d.eps);
}

static struct mamba_args nh_mamba_args(const struct nh_run *r) {
    const struct nh_buffers *b = &r->f->buf;
    const struct nh_layer *L = r->L;
    return (struct mamba_args){.zxbcdt = b->zxbcdt, .ld = r->f->d.proj, .conv_w = L->conv_w,
                               .conv_b = r->f->d.mc.conv_bias ? L->conv_b : 0, .A = L->A, .dt_bias = L->dt_bias,
                               .D = L->D, .norm_w = L->gnorm, .eps = r->f->d.eps, .conv_state = L->conv_state,
                               .ssm_state = L->ssm_state, .xbc = b->xbc, .y = b->y, .out = b->yn, .ws = b->mamba_ws,
                               .batch = r->p.batch, .qlen = r->p.qlen, .has_past = r->p.past > 0};
}

static void nh_mod_mamba(void *arg, CUstream s) {
    struct nh_run *r = arg;
    const struct mamba_config c = r->f->d.mc;
    const struct mamba_args a = nh_mamba_args(r);
    gemm_enqueue(&r->g_in, s);
    mamba_conv_enqueue(&r->r_mamba, c, s, &a);
    if (r->p.ctx) mamba_ssd_enqueue(&r->r_mamba, c, s, &a);
    else mamba_step_enqueue(&r->r_mamba, c, s, &a);
    mamba_norm_enqueue(&r->r_mamba, c, s, &a);
    gemm_enqueue(&r->g_out, s);
}

static void nh_mod_attn(void *arg, CUstream s) {
    struct nh_run *r = arg;
    const struct nh_dims *d = &r->f->d;
    const struct nh_buffers *b = &r->f->buf;
    const struct lwb_problem *p = &r->p;
    gemm_enqueue(&r->g_qkv, s);
    struct gqa_prep_args pa = {.qkv = b->qkv, .ld = d->qkv, .eps = d->eps, .cache = r->L->cache,
                               .block_table = b->block_table, .max_blocks = b->max_blocks, .kv_lens = b->kv_lens,
                               .batch = p->batch, .qlen = p->qlen, .q_out = b->q};
    gqa_prep_enqueue(&r->r_gqa, d->gc, s, &pa);
    struct gqa_attn_args aa = {.q = b->q, .cache = r->L->cache, .block_table = b->block_table,
                               .max_blocks = b->max_blocks, .kv_lens = b->kv_lens, .batch = p->batch, .qlen = p->qlen,
                               .past = p->past, .sm_scale = d->sm_scale, .out = b->attn, .ws = b->attn_ws};
    if (p->ctx) gqa_prefill_enqueue(&r->r_gqa, d->gc, s, &aa);
    else gqa_decode_enqueue(&r->r_gqa, d->gc, r->dec, s, &aa);
    gemm_enqueue(&r->g_o, s);
}

static void nh_mod_shared(void *arg, CUstream s) {
    struct nh_run *r = arg;
    gemm_enqueue(&r->g_sup, s);
    gemm_enqueue(&r->g_sdown, s);
}

static void nh_mod_gate(void *arg, CUstream s) {
    struct nh_run *r = arg;
    gemm_enqueue(&r->g_gate, s);
}

static void nh_mod_experts(void *arg, CUstream s) {
    struct nh_run *r = arg;
    const struct nh_dims *d = &r->f->d;
    struct nh_buffers *b = &r->f->buf;
    const int T = r->p.tokens;
    moe_topk_enqueue(&r->r_route, s, b->logits, r->g_gate.cfg.splitk, T * (long long)d->experts, r->L->bias, T,
                     d->scaling, r->use_override ? b->override : 0, b->ids, b->weights);
    moe_permute_enqueue(&r->r_route, r->route_cfg, s, &b->perm, b->ids, T, 0, gemm_tile_rows(&r->g_up),
                        gemm_tile_rows(&r->g_down), b->x, b->x_perm);
    gemm_enqueue(&r->g_up, s);
    gemm_enqueue(&r->g_down, s);
    moe_combine_enqueue(&r->r_route, s, b->y_perm, &b->perm, b->weights, d->shared_inter ? b->ys : 0, 0, T, b->hidden,
                        T);
}

// Routed rows and active experts: expected from the balance method, or read back after a forward.
static void nh_route_stats(struct nh_family *f, int pi, bool measured, double *rows, double *active) {
    const struct nh_dims *d = &f->d;
    const int T = f->spec.problems[pi].tokens, E = d->experts, k = d->top_k;
    *rows = (double)T * k;
    if (measured) {
        int *cnt = xmalloc(sizeof(int) * (size_t)E);
        CU_CHECK(lwb_cu.cuMemcpyDtoH(cnt, f->buf.perm.counts, sizeof(int) * (size_t)E));
        *active = 0;
        for (int e = 0; e < E; e++) *active += cnt[e] > 0;
        free(cnt);
        return;
    }
    const struct lwb_routing *ro = &f->spec.routing[pi];
    if (ro->method == LWB_BALANCE_NOT_MODIFIED) {
        *active = E * (1.0 - pow(1.0 - (double)k / E, T));
        return;
    }
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)T * k);
    char *seen = xcalloc((size_t)E, 1);
    routing_select(ro, ids);
    *active = 0;
    for (long long i = 0; i < (long long)T * k; i++)
        if (!seen[ids[i]]) seen[ids[i]] = 1, *active += 1;
    free(ids), free(seen);
}

static void nh_modules(void *fam, int pi, int l, bool measured, struct lwb_modules *out) {
    struct nh_family *f = fam;
    struct nh_run *r = nh_run_of(f, pi, l);
    const struct nh_dims *d = &f->d;
    const struct nh_buffers *b = &f->buf;
    const size_t n = (size_t)r->p.tokens * d->hidden;
    out->n = 0;
    struct lwb_cost cn = {.bytes = rmsnorm_bytes(r->n_in, r->p.tokens)};
    modules_add(out, (struct lwb_module){NULL, "add + RMSNorm", 0, nh_mod_norm, r, cn, "residual", b->residual, n});
    if (r->L->kind == LWB_LAYER_MAMBA) {
        modules_add(out, (struct lwb_module){"Mamba2Mixer", NULL, 0, nh_mod_mamba, r, nh_cost_mamba(d, &r->p),
                                             "Mamba2 output", b->hidden, n});
    } else if (r->L->kind == LWB_LAYER_ATTN) {
        modules_add(out, (struct lwb_module){"Attention", NULL, 0, nh_mod_attn, r, nh_cost_attn(d, &r->p),
                                             "attention output", b->hidden, n});
    } else {
        double rows, active;
        nh_route_stats(f, pi, measured, &rows, &active);
        struct nh_moe_costs c = nh_cost_moe(d, &r->p, rows, active);
        modules_add(out, (struct lwb_module){"NemotronHMOE", NULL, 0, NULL, NULL, c.moe});
        if (d->shared_inter)
            modules_add(out, (struct lwb_module){NULL, "shared expert", 1, nh_mod_shared, r, c.shared});
        modules_add(out, (struct lwb_module){"DeepseekV3Gate", NULL, 1, nh_mod_gate, r, c.gate});
        modules_add(out, (struct lwb_module){"MoE", NULL, 1, nh_mod_experts, r, c.experts, "MoE output", b->hidden, n});
    }
}

// Per-problem state: cache lengths, the balance override, the inputs (torch.rand, as the
// reference's), tensor maps.
static void nh_setup(void *fam, int pi, CUstream s) {
    struct nh_family *f = fam;
    const struct lwb_problem *p = &f->spec.problems[pi];
    struct nh_buffers *b = &f->buf;
    const long long H = f->d.hidden;
    int *lens = xmalloc(sizeof(int) * (size_t)p->batch);
    for (int q = 0; q < p->batch; q++) lens[q] = p->kv_len;
    upload_wait(s, b->kv_lens, lens, sizeof(int) * (size_t)p->batch);
    free(lens);
    const struct lwb_routing *ro = &f->spec.routing[pi];
    if (ro->method != LWB_BALANCE_NOT_MODIFIED && b->override) {
        int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)p->tokens * f->d.top_k);
        if (routing_select(ro, ids)) upload_wait(s, b->override, ids, sizeof(int32_t) * (size_t)p->tokens * f->d.top_k);
        free(ids);
    }
    init_fill_bf16(f->init, s, b->hidden_in, p->tokens * H, f->seed * 31 + 1, 0.f, 1.f);
    init_fill_bf16(f->init, s, b->residual_in, p->tokens * H, f->seed * 31 + 2, 0.f, 1.f);
    for (int l = 0; l < f->nlayers; l++) nh_run_bind(nh_run_of(f, pi, l));
    stream_wait(s, 60, "the problem's inputs");
}

static void nh_describe(void *fam, FILE *out) {
    struct nh_family *f = fam;
    const struct nh_dims *d = &f->d;
    static const char *const dt[] = {"float32", "float16", "bfloat16"};
    fprintf(out, "layers:");
    for (int l = 0; l < f->nlayers; l++) {
        const char k = f->layers[l].kind;
        fprintf(out, " %d (%s)", f->layers[l].index,
                k == LWB_LAYER_MAMBA ? "Mamba2" : k == LWB_LAYER_ATTN ? "attention" : "MoE");
    }
    fprintf(out, "\nweights: bf16\n");
    fprintf(out, "Mamba2: %d heads x %d, %d groups, state %d, chunks of %d; recurrent state cache in %s\n",
            d->mc.heads, d->mc.head_dim, d->mc.groups, d->mc.state, d->mc.chunk, dt[d->mc.state_dtype]);
    fprintf(out, "attention: %d query heads, %d key/value heads, head dim %d, no positional encoding\n", d->heads,
            d->kv_heads, d->head_dim);
    fprintf(out, "MoE: %d experts, top-%d (sigmoid, correction bias, scaled by %g), relu2 experts of %d, shared "
                 "relu2 expert of %d\n",
            d->experts, d->top_k, d->scaling, d->moe_inter, d->shared_inter);
}

static void nh_check_checkpoint(void *fam, struct lwb_ckpt *c) {
    (void)fam, (void)c;
    LWB_BUG("checkpoint check of a family that refuses --load-format AUTO");
}

static bool nh_verify(void *fam, int pi, char *why, size_t n) {
    (void)fam, (void)pi, (void)why, (void)n;
    return true;
}

static bool nh_route_layer(void *fam, int layer) { return ((struct nh_family *)fam)->layers[layer].kind == LWB_LAYER_MOE; }

static void nh_route_stage(void *fam, const struct lwb_replay *rp, CUstream s) {
    (void)fam, (void)rp, (void)s;
    LWB_BUG("routing replay staged for a family that refuses it");
}
static void nh_route_replay(void *fam, int slot, CUstream s) {
    (void)fam, (void)slot, (void)s;
    LWB_BUG("routing replay for a family that refuses it");
}

static void nh_route_read(void *fam, int pi, int layer, int32_t *ids, CUstream s) {
    struct nh_family *f = fam;
    if (f->layers[layer].kind != LWB_LAYER_MOE) LWB_BUG("routing read of layer %d without experts", f->layers[layer].index);
    stream_wait(s, 120, "reading the expert ids back");
    CU_CHECK(lwb_cu.cuMemcpyDtoH(ids, f->buf.ids, sizeof(int32_t) * (size_t)f->spec.problems[pi].tokens * f->d.top_k));
}

// ---------------------------------------------------------------------------------------------
// --dump DIR: the first problem's layers as DIR/layer<i>.safetensors and DIR/meta.json, for
// test/gpu/check_nemotron.py. Each file holds the layer's weights in lwb's layouts (lwb.w.*:
// norm; Mamba2 in_proj (proj, H), conv_w (K, conv_dim) tap-major, conv_b, A_log, dt_bias, D (fp32),
// gnorm, out_proj; attention qkv (q | k | v rows), o; MoE gate, bias (fp32), up (E, I, H),
// down (E, H, I), s_up, s_down), and:
//   lwb.input.hidden_states, lwb.input.residual, lwb.output.hidden_states, lwb.output.residual (T, H)
//   Mamba2: lwb.state.conv_before / _after (batch, K-1, conv_dim) bf16, lwb.state.ssm_before /
//       _after (batch, heads, head_dim, state) in the cache's dtype
//   attention: lwb.past_kv.k, lwb.past_kv.v (batch, kv_heads, past, head_dim) bf16
//   MoE: lwb.moe.topk_ids (T, k) int32, lwb.moe.topk_weights (T, k) fp32

static void nh_dump_dev(struct lwb_st_writer *w, const char *name, const char *dtype, const int64_t *shape, int nd,
                        CUdeviceptr p, void **keep, int *nkeep) {
    size_t bytes = st_dtype_size(dtype);
    for (int i = 0; i < nd; i++) bytes *= (size_t)shape[i];
    void *h = xmalloc(bytes);
    CU_CHECK(lwb_cu.cuMemcpyDtoH(h, p, bytes));
    st_add(w, name, dtype, shape, nd, h, bytes);
    keep[(*nkeep)++] = h;
}

// The past keys and values of `batch` requests (tokens 0 .. past - 1), read through the block
// table of a paged GQA cache: lwb.past_kv.k and lwb.past_kv.v, (batch, kv_heads, past, head_dim) bf16.
static void nh_dump_past_kv(struct lwb_st_writer *w, struct gqa_config g, CUdeviceptr cache, int blocks,
                            CUdeviceptr block_table, int max_blocks, int batch, int past, void **keep, int *nk) {
    const size_t blk = gqa_cache_block_bytes(g), plane = (size_t)g.page * g.head_dim;
    uint16_t *c = xmalloc(blk * (size_t)blocks);
    CU_CHECK(lwb_cu.cuMemcpyDtoH(c, cache, blk * (size_t)blocks));
    int *bt = xmalloc(sizeof(int) * (size_t)batch * max_blocks);
    CU_CHECK(lwb_cu.cuMemcpyDtoH(bt, block_table, sizeof(int) * (size_t)batch * max_blocks));
    const size_t per = (size_t)batch * g.kv_heads * past * g.head_dim;
    uint16_t *k = xmalloc(per * 2), *v = xmalloc(per * 2);
    for (int r = 0; r < batch; r++)
        for (int h = 0; h < g.kv_heads; h++)
            for (int j = 0; j < past; j++) {
                const uint16_t *block = c + (size_t)bt[r * max_blocks + j / g.page] * (blk / 2);
                const size_t src = (size_t)h * plane + (size_t)(j % g.page) * g.head_dim;
                const size_t dst = (((size_t)r * g.kv_heads + h) * past + j) * g.head_dim;
                memcpy(k + dst, block + src, (size_t)g.head_dim * 2);
                memcpy(v + dst, block + (size_t)g.kv_heads * plane + src, (size_t)g.head_dim * 2);
            }
    int64_t ks[4] = {batch, g.kv_heads, past, g.head_dim};
    st_add(w, "lwb.past_kv.k", "BF16", ks, 4, k, per * 2);
    st_add(w, "lwb.past_kv.v", "BF16", ks, 4, v, per * 2);
    keep[(*nk)++] = k, keep[(*nk)++] = v;
    free(c), free(bt);
}

static void nh_dump(void *fam, int pi, CUstream s, const char *dir) {
    struct nh_family *f = fam;
    const struct nh_dims *d = &f->d;
    const struct lwb_problem *q = &f->spec.problems[pi];
    struct nh_buffers *b = &f->buf;
    static const char *const sdt[] = {"F32", "F16", "BF16"};
    output_dir(dir);
    nh_setup(f, pi, s);
    const long long T = q->tokens, H = d->hidden;
    struct lwb_modules mods = {0};
    for (int l = 0; l < f->nlayers; l++) {
        const struct nh_layer *L = &f->layers[l];
        char name[96];
        snprintf(name, sizeof name, "layer%d.safetensors", L->index);
        char *path = lwb_path_join(dir, name);
        struct lwb_st_writer *w = st_writer_begin(path);
        void *keep[64];
        int nk = 0;
        stream_wait(s, 600, "the dump");
        int64_t th[2] = {T, H}, hv[1] = {H};
        nh_dump_dev(w, "lwb.input.hidden_states", "BF16", th, 2, l == 0 ? b->hidden_in : b->hidden, keep, &nk);
        nh_dump_dev(w, "lwb.input.residual", "BF16", th, 2, l == 0 ? b->residual_in : b->residual, keep, &nk);
        nh_dump_dev(w, "lwb.w.norm", "BF16", hv, 1, L->norm, keep, &nk);
        const int slots = q->batch;
        if (L->kind == LWB_LAYER_MAMBA) {
            const int nh = d->mc.heads;
            int64_t ip[2] = {d->proj, H}, cw[2] = {d->mc.conv_k, d->conv_dim}, cb[1] = {d->conv_dim}, hs[1] = {nh},
                    gn[1] = {d->d_inner}, op[2] = {H, d->d_inner},
                    cs[3] = {slots, d->mc.conv_k - 1, d->conv_dim},
                    ss[4] = {slots, nh, d->mc.head_dim, d->mc.state};
            nh_dump_dev(w, "lwb.w.in_proj", "BF16", ip, 2, L->in_proj, keep, &nk);
            nh_dump_dev(w, "lwb.w.conv_w", "BF16", cw, 2, L->conv_w, keep, &nk);
            nh_dump_dev(w, "lwb.w.conv_b", "BF16", cb, 1, L->conv_b, keep, &nk);
            st_add(w, "lwb.w.A_log", "F32", hs, 1, L->A_log_h, sizeof(float) * (size_t)nh);
            st_add(w, "lwb.w.dt_bias", "F32", hs, 1, L->dt_bias_h, sizeof(float) * (size_t)nh);
            st_add(w, "lwb.w.D", "F32", hs, 1, L->D_h, sizeof(float) * (size_t)nh);
            nh_dump_dev(w, "lwb.w.gnorm", "BF16", gn, 1, L->gnorm, keep, &nk);
            nh_dump_dev(w, "lwb.w.out_proj", "BF16", op, 2, L->out_proj, keep, &nk);
            nh_dump_dev(w, "lwb.state.conv_before", "BF16", cs, 3, L->conv_state, keep, &nk);
            nh_dump_dev(w, "lwb.state.ssm_before", sdt[d->mc.state_dtype], ss, 4, L->ssm_state, keep, &nk);
        } else if (L->kind == LWB_LAYER_ATTN) {
            const int A = d->heads * d->head_dim;
            int64_t qk[2] = {d->qkv, H}, o[2] = {H, A};
            nh_dump_dev(w, "lwb.w.qkv", "BF16", qk, 2, L->wqkv, keep, &nk);
            nh_dump_dev(w, "lwb.w.o", "BF16", o, 2, L->wo, keep, &nk);
            if (q->past)
                nh_dump_past_kv(w, d->gc, L->cache, L->blocks, b->block_table, b->max_blocks, slots, q->past, keep, &nk);
        } else {
            const long long E = d->experts, I = d->moe_inter, S = d->shared_inter;
            int64_t g[2] = {E, H}, e1[1] = {E}, up[3] = {E, I, H}, dn[3] = {E, H, I}, su[2] = {S, H}, sd[2] = {H, S};
            nh_dump_dev(w, "lwb.w.gate", "BF16", g, 2, L->gate, keep, &nk);
            nh_dump_dev(w, "lwb.w.bias", "F32", e1, 1, L->bias, keep, &nk);
            nh_dump_dev(w, "lwb.w.up", "BF16", up, 3, L->up, keep, &nk);
            nh_dump_dev(w, "lwb.w.down", "BF16", dn, 3, L->down, keep, &nk);
            if (S) {
                nh_dump_dev(w, "lwb.w.s_up", "BF16", su, 2, L->s_up, keep, &nk);
                nh_dump_dev(w, "lwb.w.s_down", "BF16", sd, 2, L->s_down, keep, &nk);
            }
        }
        nh_modules(f, pi, l, false, &mods);
        modules_run(&mods, 0, mods.n, s);
        stream_wait(s, 600, "the dump");
        nh_dump_dev(w, "lwb.output.hidden_states", "BF16", th, 2, b->hidden, keep, &nk);
        nh_dump_dev(w, "lwb.output.residual", "BF16", th, 2, b->residual, keep, &nk);
        if (L->kind == LWB_LAYER_MAMBA) {
            int64_t cs[3] = {slots, d->mc.conv_k - 1, d->conv_dim}, ss[4] = {slots, d->mc.heads, d->mc.head_dim, d->mc.state};
            nh_dump_dev(w, "lwb.state.conv_after", "BF16", cs, 3, L->conv_state, keep, &nk);
            nh_dump_dev(w, "lwb.state.ssm_after", sdt[d->mc.state_dtype], ss, 4, L->ssm_state, keep, &nk);
        } else if (L->kind == LWB_LAYER_MOE) {
            int64_t tk[2] = {T, d->top_k};
            nh_dump_dev(w, "lwb.moe.topk_ids", "I32", tk, 2, b->ids, keep, &nk);
            nh_dump_dev(w, "lwb.moe.topk_weights", "F32", tk, 2, b->weights, keep, &nk);
        }
        char v[32];
        snprintf(v, sizeof v, "%d", L->index);
        st_metadata(w, "layer", v);
        snprintf(v, sizeof v, "%c", L->kind);
        st_metadata(w, "kind", v);
        st_writer_finish(w);
        printf("dump: %s\n", tesc(path));
        for (int i = 0; i < nk; i++) free(keep[i]);
        free(path);
    }
    free(mods.m);
    static const char *const dtn[] = {"float32", "float16", "bfloat16"};
    json_t *meta = json_pack("{s:o, s:o, s:I, s:s, s:s, s:i, s:s}", "config", model_config_json(f->model), "problem",
                             problem_spec_json(q), "seed", (json_int_t)f->seed, "run_type", q->ctx ? "CTX" : "GEN",
                             "ssm_cache_dtype", dtn[d->mc.state_dtype], "tokens_per_block", d->page, "lwb_version",
                             LWB_VERSION);
    json_object_set_new(meta, "balance_method", json_string(balance_method_name(f->spec.routing[pi].method)));
    json_t *layers = json_array();
    for (int l = 0; l < f->nlayers; l++) json_array_append_new(layers, json_integer(f->layers[l].index));
    json_object_set_new(meta, "layers", layers);
    char *text = json_dumps(meta, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    char *path = lwb_path_join(dir, "meta.json");
    output_write(path, text, strlen(text));
    free(text), free(path);
    json_decref(meta);
}

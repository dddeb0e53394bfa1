// layers/qwen3next.h: the Qwen3-Next family (model_type qwen3_next): a token mixer and an MoE
// block in every decoder layer; the mixer is a Gated DeltaNet (linear attention, layer_types
// "linear_attention") or gated grouped-query attention ("full_attention", every
// full_attention_interval-th layer).
//
// Defines: struct qn_dims, struct qn_layer, struct qn_buffers, struct qn_run, struct qn_family,
// the floors of each module, and the table functions (qn_create ... qn_route_read) that
// src/families.h registers.
//
// A layer: the residual add and input_layernorm (outside every range), the mixer
// (`Qwen3NextGatedDeltaNet` or `Attention`), the add and post_attention_layernorm (outside), then
// `Qwen3NextSparseMoeBlock` holding the router GEMM (unmarked, as in TensorRT-LLM), `GatedMLP` (the
// shared expert, SwiGLU) and `MoE` (softmax top-k, permutation, SwiGLU experts, and the combine,
// which adds the shared expert's output times sigmoid(x . shared_expert_gate): TensorRT-LLM does
// that sigmoid-mul-add directly in the block; here it is fused into the combine, inside `MoE`).
// Qwen3-Next's RMSNorms scale by (1 + w); the layer norms keep 1 + w as their weight (as
// TensorRT-LLM bakes it), the attention's q/k norms take w (layers/gqa.h adds the 1).
//
// Gated DeltaNet (layers/gdn.h): one projection for q | k | v | z | b | a (transformers'
// in_proj_qkvz and in_proj_ba, their rows permuted once into this order as TensorRT-LLM's loader
// does), the causal conv1d with its cached state, the chunked gated delta rule (CTX) or the
// recurrent step (GEN) with the recurrent state cache, the gated RMSNorm, out_proj. Attention:
// q_proj (query and gate per head) with k_proj and v_proj as one product; per-head q/k RMSNorm,
// RoPE on the first partial_rotary_factor x head_dim dims (NeoX halves), the new keys and values
// into a paged cache, paged grouped-query attention with the sigmoid gate on its output
// (layers/gqa.h), o_proj.
//
// Ranks: the reference README runs Qwen3-Next on 2 GPUs with attention TP; one GPU with
// --scaled-from 2 and attention TP builds one rank's share (model_apply_scaled_from: half the
// attention and DeltaNet heads, half the shared expert's width, half the experts), without the
// all-reduces a second GPU would add (as the DeepSeek family under --scaled-from).
//
// Weights are random (DUMMY), scaled like a trained model's (as layers/nemotron.h): A_log =
// log(U(0.01, 16)) and dt_bias = 1 (transformers' initialisation), bf16-exact.
//
// Does not: run on several ranks, fp8 weights, --load-format AUTO or routing replay yet (refused).
// Tested by test/test_plan.c (the README's commands planned without a GPU) and on the GPU by
// test/gpu/check_qwen3next.py against transformers' Qwen3Next modules.
#pragma once

struct qn_dims {
    int hidden, heads, kv_heads, head_dim, page, rope_dim;
    float eps, sm_scale;
    struct gdn_config lc;
    int proj, conv_dim;               // DeltaNet: fused projection rows, conv channels
    int vdim;                         // value heads x value head dim
    int qkv;                          // attention: fused q(+gate)/k/v rows
    int experts, top_k, moe_inter, shared_inter, norm_topk;
};

struct qn_layer {
    int index;
    char kind;                        // LWB_LAYER_LINEAR or LWB_LAYER_FULL
    int moe_slot;
    CUdeviceptr in_norm, post_norm;   // (H) bf16: 1 + w
    // Gated DeltaNet
    CUdeviceptr w_proj;               // (proj, H) bf16: q | k | v | z | b | a rows
    CUdeviceptr conv_w;               // (K, conv_dim) bf16
    CUdeviceptr A_log, dt_bias;       // (Hv) fp32
    float *A_log_h, *dt_bias_h;
    CUdeviceptr gnorm;                // (Dv) bf16
    CUdeviceptr out_proj;             // (H, Hv Dv) bf16
    CUdeviceptr conv_state, state;    // caches: (slots, K-1, conv_dim) bf16; (slots, Hv, Dk, Dv)
    // attention
    CUdeviceptr wqkv, wo;             // (qkv, H): per head [query | gate] rows, then k, v; (H, heads D)
    CUdeviceptr q_norm, k_norm;       // (D) bf16: w of (1 + w)
    CUdeviceptr cache;
    int blocks;
    // MoE
    CUdeviceptr gate;                 // (E, H) bf16
    CUdeviceptr w13, w2;              // (E, 2I, H) interleaved gate/up rows; (E, H, I)
    CUdeviceptr s13, s2, sg;          // (2S, H) interleaved; (H, S); (H) shared_expert_gate
};

struct qn_buffers {
    long long max_tokens;
    int max_batch, max_blocks, positions;
    CUdeviceptr hidden_in, residual_in, hidden, residual, x;
    CUdeviceptr proj, conv_out, o, on, gdn_ws;  // DeltaNet
    size_t gdn_ws_bytes;
    CUdeviceptr qkv, q, gate_out, attn, attn_ws, cos_t, sin_t; // attention
    size_t attn_ws_bytes;
    CUdeviceptr logits, ids, weights, override;
    int logit_splits;
    struct moe_perm perm;
    CUdeviceptr x_perm, h_perm, y_perm, hs, ys;
    CUdeviceptr kv_lens, block_table, gemm_ws;
    size_t gemm_ws_bytes;
};

struct qn_family;

struct qn_run {
    struct qn_family *f;
    const struct qn_layer *L;
    struct lwb_problem p;
    bool first, use_override;
    struct rmsnorm_config n_in, n_post;
    struct lwb_kreq r_in, r_post;
    struct lwb_gemm g_proj, g_out;    // DeltaNet
    struct lwb_kreq r_gdn;
    struct lwb_gemm g_qkv, g_o;       // attention
    struct lwb_kreq r_gqa;
    struct gqa_decode_plan dec;
    struct lwb_gemm g_gate, g_e13, g_e2, g_s13, g_s2;
    struct moe_route_config route_cfg;
    struct lwb_kreq r_route;
};

struct qn_family {
    struct lwb_run_spec spec;
    const struct lwb_shard *sh;
    const struct lwb_model *model;
    struct qn_dims d;
    struct qn_layer *layers;
    int nlayers;
    struct qn_run *runs;
    struct qn_buffers buf;
    const struct lwb_kreq *init;
    unsigned long long seed;
};

static bool qn_runs(const struct lwb_model *m) { return !strcmp(m->model_type, "qwen3_next"); }

static struct qn_run *qn_run_of(struct qn_family *f, int problem, int layer) {
    return &f->runs[(size_t)problem * f->nlayers + layer];
}

static struct qn_dims qn_dims_from_model(const struct lwb_model *m, int page, const char *ssm_dtype) {
    struct qn_dims d = {.hidden = m->hidden, .heads = m->heads, .kv_heads = m->kv_heads, .head_dim = m->head_dim,
                        .page = page, .rope_dim = m->rope_dim, .eps = (float)m->rms_norm_eps,
                        .sm_scale = (float)(1.0 / sqrt(m->head_dim)), .experts = m->n_experts, .top_k = m->top_k,
                        .moe_inter = m->moe_intermediate, .shared_inter = m->shared_intermediate,
                        .norm_topk = m->norm_topk_prob};
    d.lc = (struct gdn_config){.k_heads = m->lin_k_heads, .v_heads = m->lin_v_heads, .k_dim = m->lin_k_dim,
                               .v_dim = m->lin_v_dim, .conv_k = m->conv_kernel, .chunk = m->ssm_chunk,
                               .state_dtype = nh_state_dtype(ssm_dtype)};
    d.proj = gdn_proj_dim(d.lc);
    d.conv_dim = gdn_conv_dim(d.lc);
    d.vdim = m->lin_v_heads * m->lin_v_dim;
    d.qkv = (2 * m->heads + 2 * m->kv_heads) * m->head_dim;
    return d;
}

static struct gqa_config qn_gqa_config(const struct qn_dims *d) {
    return (struct gqa_config){.q_heads = d->heads, .kv_heads = d->kv_heads, .head_dim = d->head_dim, .page = d->page,
                               .rope_dim = d->rope_dim, .qk_norm = true, .gate = true};
}

// ---------------------------------------------------------------------------------------------
// Costs

static struct lwb_cost qn_cost_gdn(const struct qn_dims *d, const struct lwb_problem *p) {
    const double T = p->tokens;
    struct lwb_cost c = nh_linear(T, d->proj, d->hidden);
    nh_cost_add(&c, (struct lwb_cost){.bytes = gdn_conv_bytes(d->lc, p->tokens, p->batch)});
    if (p->ctx)
        nh_cost_add(&c, (struct lwb_cost){.flops = gdn_chunk_flops(d->lc, p->batch, p->qlen),
                                          .bytes = gdn_chunk_bytes(d->lc, p->batch, p->qlen, p->past > 0)});
    else
        nh_cost_add(&c, (struct lwb_cost){.flops = 8.0 * T * d->lc.v_heads * d->lc.k_dim * d->lc.v_dim,
                                          .bytes = gdn_step_bytes(d->lc, p->batch, p->qlen)});
    nh_cost_add(&c, (struct lwb_cost){.bytes = gdn_norm_bytes(d->lc, p->tokens)});
    nh_cost_add(&c, nh_linear(T, d->hidden, d->vdim));
    return c;
}

static struct lwb_cost qn_cost_attn(const struct qn_dims *d, const struct lwb_problem *p) {
    const double T = p->tokens;
    const struct gqa_config g = qn_gqa_config(d);
    struct lwb_cost c = nh_linear(T, d->qkv, d->hidden);
    nh_cost_add(&c, (struct lwb_cost){.bytes = gqa_prep_bytes(g, p->tokens)});
    nh_cost_add(&c, (struct lwb_cost){.flops = gqa_attn_flops(g, p->batch, p->qlen, p->past),
                                      .bytes = gqa_attn_bytes(g, p->batch, p->qlen, p->past)});
    nh_cost_add(&c, nh_linear(T, d->hidden, (double)d->heads * d->head_dim));
    return c;
}

struct qn_moe_costs {
    struct lwb_cost block, router, shared, experts;
};

static struct qn_moe_costs qn_cost_moe(const struct qn_dims *d, const struct lwb_problem *p, double active) {
    struct qn_moe_costs c = {0};
    const double T = p->tokens, H = d->hidden, I = d->moe_inter, S = d->shared_inter, E = d->experts;
    const double rows = T * d->top_k;
    c.router = (struct lwb_cost){.flops = 2.0 * T * E * H, .bytes = 2.0 * E * H + 2.0 * T * H + 4.0 * T * E};
    if (S) {
        c.shared = nh_linear(T, 2 * S, H);
        c.shared.bytes -= 2.0 * T * S; // SwiGLU writes half the columns
        nh_cost_add(&c.shared, nh_linear(T, H, S));
    }
    c.experts = (struct lwb_cost){.flops = 2.0 * rows * 3 * I * H,
                                  .bytes = 2.0 * active * 3 * I * H + rows * (4.0 * H + 4.0 * I + 4.0 * H) +
                                           4.0 * T * H + 2.0 * T * H + 4.0 * T * E + 8.0 * T * d->top_k};
    c.block = c.router;
    nh_cost_add(&c.block, c.shared);
    nh_cost_add(&c.block, c.experts);
    return c;
}

// ---------------------------------------------------------------------------------------------
// Plan

static void qn_run_plan(struct qn_run *r, struct qn_family *f, const struct qn_layer *L, const struct lwb_problem *p,
                        const struct lwb_device *dev, bool override) {
    const struct qn_dims *d = &f->d;
    memset(r, 0, sizeof *r);
    r->f = f, r->L = L, r->p = *p, r->use_override = override;
    const long long T = p->tokens;
    r->n_in = rmsnorm_choose_config(d->hidden, true);
    rmsnorm_request(&r->r_in, r->n_in);
    r->n_post = r->n_in;
    rmsnorm_request(&r->r_post, r->n_post);
    if (L->kind == LWB_LAYER_LINEAR) {
        gemm_plan(&r->g_proj, "in_proj_qkvzba", T, d->proj, d->hidden, 1, GEMM_EPI_BF16, false, 0, dev);
        gemm_plan(&r->g_out, "out_proj", T, d->hidden, d->vdim, 1, GEMM_EPI_BF16, false, 0, dev);
        gdn_request(&r->r_gdn, d->lc);
    } else {
        const struct gqa_config g = qn_gqa_config(d);
        gemm_plan(&r->g_qkv, "qkv_proj", T, d->qkv, d->hidden, 1, GEMM_EPI_BF16, false, 0, dev);
        gemm_plan(&r->g_o, "o_proj", T, d->hidden, d->heads * d->head_dim, 1, GEMM_EPI_BF16, false, 0, dev);
        gqa_request(&r->r_gqa, g);
        if (!p->ctx) r->dec = gqa_decode_choose(g, p->batch, p->qlen, p->kv_len, dev->sm_count);
    }
    const double rows = (double)T * d->top_k / d->experts;
    gemm_plan(&r->g_gate, "gate", T, d->experts, d->hidden, 1, GEMM_EPI_F32, false, 0, dev);
    gemm_keep_partials(&r->g_gate);
    gemm_plan(&r->g_e13, "experts13", T * d->top_k, 2 * d->moe_inter, d->hidden, 1, GEMM_EPI_SWIGLU, true, rows, dev);
    gemm_plan(&r->g_e2, "experts2", T * d->top_k, d->hidden, d->moe_inter, 1, GEMM_EPI_BF16, true, rows, dev);
    if (d->shared_inter) {
        gemm_plan(&r->g_s13, "shared13", T, 2 * d->shared_inter, d->hidden, 1, GEMM_EPI_SWIGLU, false, 0, dev);
        gemm_plan(&r->g_s2, "shared2", T, d->hidden, d->shared_inter, 1, GEMM_EPI_BF16, false, 0, dev);
    }
    r->route_cfg = (struct moe_route_config){d->experts, d->top_k, 1, 1, d->norm_topk, d->hidden, 1, 0, 1};
    moe_route_request(&r->r_route, r->route_cfg);
}

static int qn_run_gemms(struct qn_run *r, struct lwb_gemm **out) {
    struct lwb_gemm *all[] = {&r->g_proj, &r->g_out, &r->g_qkv, &r->g_o, &r->g_gate, &r->g_e13, &r->g_e2, &r->g_s13,
                              &r->g_s2};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++)
        if (all[i]->req.family) out[n++] = all[i];
    return n;
}

static void *qn_create(const struct lwb_run_spec *spec) {
    struct qn_family *f = xcalloc(1, sizeof *f);
    f->spec = *spec;
    f->sh = spec->shard;
    f->model = spec->model;
    const char *name = f->model->name;
    if (f->sh->world_size > 1 || f->sh->collectives)
        lwb_user_error("run: %s runs on one rank in lwb for now (the all-reduces of its tensor-parallel split are not "
                       "built); for the reference's NP=2 shape run one GPU with --scaled-from 2", name);
    if (f->sh->scaled_from && f->sh->attention_dp)
        lwb_user_error("run: %s with --scaled-from and attention DP is not built (Qwen3-Next runs attention TP); add "
                       "--no-enable-attention-dp", name);
    if (spec->wformat != LWB_WF_BF16)
        lwb_user_error("run: %s runs in bf16 in lwb (its checkpoint's format); give --weight-dtype bf16 or auto", name);
    if (spec->ckpt) LWB_BUG("--load-format AUTO reached the Qwen3-Next family (cmd_run refuses it)");
    if (spec->replay)
        lwb_user_error("run: --replay-file-path is not built for %s yet; leave it out (or use a DeepSeek model)", name);
    f->d = qn_dims_from_model(f->model, spec->page, spec->ssm_dtype ? spec->ssm_dtype : f->model->ssm_cache_dtype);
    const char *why = gdn_config_error(f->d.lc);
    if (why) lwb_user_error("run: %s: %s", name, why);
    if (spec->page < 16)
        lwb_user_error("run: %s: --tokens-per-block %d; lwb's attention reads pages of at least 16 tokens (give 16 or "
                       "more)", name, spec->page);
    f->nlayers = spec->nlayers;
    f->layers = xcalloc((size_t)f->nlayers, sizeof *f->layers);
    for (int l = 0; l < f->nlayers; l++) {
        f->layers[l].index = spec->layers[l];
        f->layers[l].kind = model_layer_kind(f->model, spec->layers[l]);
        f->layers[l].moe_slot = l;
    }
    for (int i = 0; i < spec->nproblems; i++) {
        const struct lwb_problem *q = &spec->problems[i];
        if (LWB_CEIL_DIV((long long)q->tokens * f->d.top_k, 64) + f->d.experts > 65535)
            lwb_user_error("run: %d tokens x top-%d routed rows are more than lwb's expert GEMMs take in one launch "
                           "(65535 tiles of 64 rows); use fewer tokens per forward", q->tokens, f->d.top_k);
    }
    return f;
}

static void qn_plan(void *fam, const struct lwb_device *dev) {
    struct qn_family *f = fam;
    struct qn_buffers *b = &f->buf;
    const int np = f->spec.nproblems;
    free(f->runs);
    f->runs = xcalloc((size_t)np * f->nlayers, sizeof *f->runs);
    memset(b, 0, sizeof *b);
    b->max_batch = f->spec.max_batch;
    b->max_blocks = LWB_CEIL_DIV(f->spec.max_seq_len, f->spec.page);
    b->positions = f->spec.max_seq_len;
    for (int i = 0; i < np; i++) {
        const struct lwb_problem *q = &f->spec.problems[i];
        b->max_tokens = LWB_MAX(b->max_tokens, q->tokens);
        for (int l = 0; l < f->nlayers; l++) {
            struct qn_run *r = qn_run_of(f, i, l);
            qn_run_plan(r, f, &f->layers[l], q, dev, f->spec.routing[i].method != LWB_BALANCE_NOT_MODIFIED);
            r->first = l == 0;
            struct lwb_gemm *g[12];
            int ng = qn_run_gemms(r, g);
            for (int j = 0; j < ng; j++) b->gemm_ws_bytes = LWB_MAX(b->gemm_ws_bytes, gemm_workspace_bytes(g[j]));
            if (f->layers[l].kind == LWB_LAYER_LINEAR && q->ctx)
                b->gdn_ws_bytes = LWB_MAX(b->gdn_ws_bytes, gdn_workspace_bytes(f->d.lc, q->batch, q->qlen));
            if (f->layers[l].kind == LWB_LAYER_FULL && !q->ctx)
                b->attn_ws_bytes =
                    LWB_MAX(b->attn_ws_bytes, gqa_decode_ws_bytes(qn_gqa_config(&f->d), r->dec, q->batch, q->qlen));
            b->logit_splits = LWB_MAX(b->logit_splits, r->g_gate.cfg.splitk);
        }
    }
}

static void qn_requests(void *fam, struct lwb_kreqs *out) {
    struct qn_family *f = fam;
    for (size_t i = 0; i < (size_t)f->spec.nproblems * f->nlayers; i++) {
        struct qn_run *r = &f->runs[i];
        kreqs_add(out, &r->r_in), kreqs_add(out, &r->r_post);
        struct lwb_gemm *g[12];
        int ng = qn_run_gemms(r, g);
        for (int j = 0; j < ng; j++) kreqs_add(out, &g[j]->req);
        if (r->r_gdn.family) kreqs_add(out, &r->r_gdn);
        if (r->r_gqa.family) kreqs_add(out, &r->r_gqa);
        kreqs_add(out, &r->r_route);
    }
}

// ---------------------------------------------------------------------------------------------
// Memory, weights, state

static void qn_alloc(void *fam, struct lwb_mem *m) {
    struct qn_family *f = fam;
    const struct qn_dims *d = &f->d;
    struct qn_buffers *b = &f->buf;
    const long long T = b->max_tokens, H = d->hidden, E = d->experts, I = d->moe_inter, S = d->shared_inter;
    const int slots = b->max_batch, k = d->top_k;
    bool lin = false, full = false;
    for (int l = 0; l < f->nlayers; l++) {
        struct qn_layer *L = &f->layers[l];
        L->in_norm = mem_alloc(m, MEM_WEIGHTS, NH_BF16(H, 1), "input_layernorm");
        L->post_norm = mem_alloc(m, MEM_WEIGHTS, NH_BF16(H, 1), "post_attention_layernorm");
        if (L->kind == LWB_LAYER_LINEAR) {
            lin = true;
            L->w_proj = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->proj, H), "in_proj_qkvz + in_proj_ba");
            L->conv_w = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->lc.conv_k, d->conv_dim), "conv1d");
            L->A_log = mem_alloc(m, MEM_WEIGHTS, (size_t)d->lc.v_heads * 4, "A_log");
            L->dt_bias = mem_alloc(m, MEM_WEIGHTS, (size_t)d->lc.v_heads * 4, "dt_bias");
            L->gnorm = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->lc.v_dim, 1), "gated norm");
            L->out_proj = mem_alloc(m, MEM_WEIGHTS, NH_BF16(H, d->vdim), "out_proj");
            L->conv_state = mem_alloc(m, MEM_STATE, (size_t)slots * gdn_conv_state_bytes(d->lc), "conv states");
            L->state = mem_alloc(m, MEM_STATE, (size_t)slots * gdn_state_bytes(d->lc), "recurrent states");
        } else {
            full = true;
            L->wqkv = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->qkv, H), "q_proj + k_proj + v_proj");
            L->wo = mem_alloc(m, MEM_WEIGHTS, NH_BF16(H, (size_t)d->heads * d->head_dim), "o_proj");
            L->q_norm = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->head_dim, 1), "q_norm");
            L->k_norm = mem_alloc(m, MEM_WEIGHTS, NH_BF16(d->head_dim, 1), "k_norm");
            L->blocks = slots * b->max_blocks;
            L->cache = mem_alloc(m, MEM_KV, (size_t)L->blocks * gqa_cache_block_bytes(qn_gqa_config(d)), "KV cache");
        }
        L->gate = mem_alloc(m, MEM_WEIGHTS, NH_BF16(E, H), "router");
        L->w13 = mem_alloc(m, MEM_WEIGHTS, NH_BF16(E * 2 * I, H), "experts gate/up");
        L->w2 = mem_alloc(m, MEM_WEIGHTS, NH_BF16(E * H, I), "experts down");
        if (S) {
            L->s13 = mem_alloc(m, MEM_WEIGHTS, NH_BF16(2 * S, H), "shared gate/up");
            L->s2 = mem_alloc(m, MEM_WEIGHTS, NH_BF16(H, S), "shared down");
            L->sg = mem_alloc(m, MEM_WEIGHTS, NH_BF16(H, 1), "shared_expert_gate");
        }
    }
    b->hidden_in = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "hidden_states input");
    b->residual_in = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "residual input");
    b->hidden = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "hidden_states");
    b->residual = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "residual");
    b->x = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "normalised input");
    if (lin) {
        b->proj = mem_alloc(m, MEM_ACT, NH_BF16(T, d->proj), "DeltaNet projections");
        b->conv_out = mem_alloc(m, MEM_ACT, NH_BF16(T, d->conv_dim), "conv output");
        b->o = mem_alloc(m, MEM_ACT, NH_BF16(T, d->vdim), "delta rule output");
        b->on = mem_alloc(m, MEM_ACT, NH_BF16(T, d->vdim), "gated norm output");
        if (b->gdn_ws_bytes) b->gdn_ws = mem_alloc(m, MEM_WS, b->gdn_ws_bytes, "chunk workspace");
    }
    if (full) {
        const size_t A = (size_t)d->heads * d->head_dim;
        b->qkv = mem_alloc(m, MEM_ACT, NH_BF16(T, d->qkv), "qkv");
        b->q = mem_alloc(m, MEM_ACT, NH_BF16(T, A), "queries");
        b->gate_out = mem_alloc(m, MEM_ACT, NH_BF16(T, A), "output gates");
        b->attn = mem_alloc(m, MEM_ACT, NH_BF16(T, A), "attention output");
        if (b->attn_ws_bytes) b->attn_ws = mem_alloc(m, MEM_WS, b->attn_ws_bytes, "attention split partials");
        b->cos_t = mem_alloc(m, MEM_WS, (size_t)b->positions * (d->rope_dim / 2) * 4, "rope cos");
        b->sin_t = mem_alloc(m, MEM_WS, (size_t)b->positions * (d->rope_dim / 2) * 4, "rope sin");
    }
    b->logits = mem_alloc(m, MEM_ACT, (size_t)LWB_MAX(b->logit_splits, 1) * T * E * 4, "router logits");
    b->ids = mem_alloc(m, MEM_ACT, (size_t)T * k * 4, "expert ids");
    b->weights = mem_alloc(m, MEM_ACT, (size_t)T * k * 4, "expert weights");
    b->override = mem_alloc(m, MEM_ACT, (size_t)T * k * 4, "balance override");
    const int tiles = moe_max_tiles((int)T, k, (int)E, 64);
    b->perm = (struct moe_perm){mem_alloc(m, MEM_WS, (size_t)E * 4, "expert counts"),
                                mem_alloc(m, MEM_WS, (size_t)E * 4, "expert offsets"),
                                mem_alloc(m, MEM_WS, (size_t)E * 4, "expert fill"),
                                mem_alloc(m, MEM_WS, (size_t)tiles * 16, "tile list"),
                                mem_alloc(m, MEM_WS, (size_t)tiles * 16, "tile list"),
                                mem_alloc(m, MEM_WS, 64, "tile counts"),
                                mem_alloc(m, MEM_WS, (size_t)T * k * 4, "token rows")};
    b->x_perm = mem_alloc(m, MEM_ACT, NH_BF16(T * k, H), "permuted tokens");
    b->h_perm = mem_alloc(m, MEM_ACT, NH_BF16(T * k, I), "expert intermediate");
    b->y_perm = mem_alloc(m, MEM_ACT, NH_BF16(T * k, H), "expert outputs");
    if (S) {
        b->hs = mem_alloc(m, MEM_ACT, NH_BF16(T, S), "shared intermediate");
        b->ys = mem_alloc(m, MEM_ACT, NH_BF16(T, H), "shared output");
    }
    b->kv_lens = mem_alloc(m, MEM_WS, (size_t)b->max_batch * 4, "kv lengths");
    b->block_table = mem_alloc(m, MEM_WS, (size_t)b->max_batch * b->max_blocks * 4, "block table");
    if (b->gemm_ws_bytes) b->gemm_ws = mem_alloc(m, MEM_WS, b->gemm_ws_bytes, "split-K partials");
}

static void qn_layer_init(struct qn_layer *L, const struct qn_dims *d, const struct lwb_kreq *init, CUstream s,
                          unsigned long long seed, int slots) {
    const long long H = d->hidden, E = d->experts, I = d->moe_inter, S = d->shared_inter;
    unsigned long long k = seed * 1000003ULL + (unsigned long long)L->index * 7919ULL + 5;
#define QN_FILL(p, rows, cols, fan) \
    init_fill_bf16(init, s, p, (long long)(rows) * (cols), ++k, -sqrtf(3.f / (fan)), sqrtf(3.f / (fan)))
    init_fill_bf16(init, s, L->in_norm, H, ++k, 0.9f, 1.1f);
    init_fill_bf16(init, s, L->post_norm, H, ++k, 0.9f, 1.1f);
    if (L->kind == LWB_LAYER_LINEAR) {
        const int nv = d->lc.v_heads;
        QN_FILL(L->w_proj, d->proj, H, H);
        init_fill_bf16(init, s, L->conv_w, (long long)d->lc.conv_k * d->conv_dim, ++k, -0.5f, 0.5f);
        init_fill_bf16(init, s, L->gnorm, d->lc.v_dim, ++k, 0.9f, 1.1f);
        QN_FILL(L->out_proj, H, d->vdim, d->vdim);
        L->A_log_h = xmalloc(sizeof(float) * (size_t)nv), L->dt_bias_h = xmalloc(sizeof(float) * (size_t)nv);
        uint64_t x = k * 0x9e3779b97f4a7c15ULL + 3;
        for (int h = 0; h < nv; h++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            const double u = (double)(x >> 11) / 9007199254740992.0;
            L->A_log_h[h] = nh_round_bf16((float)log(0.01 + u * (16 - 0.01)));
            L->dt_bias_h[h] = 1.0f;
        }
        upload_wait(s, L->A_log, L->A_log_h, sizeof(float) * (size_t)nv);
        upload_wait(s, L->dt_bias, L->dt_bias_h, sizeof(float) * (size_t)nv);
        init_fill_bf16(init, s, L->conv_state, (long long)slots * (d->lc.conv_k - 1) * d->conv_dim, ++k, -1.f, 1.f);
        nh_fill_states(gdn_state_bytes(d->lc), d->lc.state_dtype, L->state, slots, ++k, s);
    } else {
        QN_FILL(L->wqkv, d->qkv, H, H);
        QN_FILL(L->wo, H, d->heads * d->head_dim, d->heads * d->head_dim);
        init_fill_bf16(init, s, L->q_norm, d->head_dim, ++k, -0.1f, 0.1f);
        init_fill_bf16(init, s, L->k_norm, d->head_dim, ++k, -0.1f, 0.1f);
        init_fill_bf16(init, s, L->cache, (long long)(gqa_cache_block_bytes(qn_gqa_config(d)) / 2) * L->blocks, ++k,
                       -1.f, 1.f);
    }
    QN_FILL(L->gate, E, H, H);
    QN_FILL(L->w13, E * 2 * I, H, H);
    QN_FILL(L->w2, E * H, I, I);
    if (S) {
        QN_FILL(L->s13, 2 * S, H, H);
        QN_FILL(L->s2, H, S, S);
        QN_FILL(L->sg, H, 1, H);
    }
#undef QN_FILL
}

static void qn_init(void *fam, const struct lwb_kreq *init, CUstream s, unsigned long long seed) {
    struct qn_family *f = fam;
    struct qn_buffers *b = &f->buf;
    f->init = init, f->seed = seed;
    bool full = false;
    for (int l = 0; l < f->nlayers; l++) {
        qn_layer_init(&f->layers[l], &f->d, init, s, seed, b->max_batch);
        full |= f->layers[l].kind == LWB_LAYER_FULL;
    }
    if (full) { // RoPE of the first rope_dim dims: inv_freq_i = theta^(-2i / rope_dim)
        const int half = f->d.rope_dim / 2, pos = b->positions;
        double *inv = xmalloc(sizeof(double) * (size_t)half);
        for (int i = 0; i < half; i++) inv[i] = pow(f->model->rope_theta, -2.0 * i / f->d.rope_dim);
        float *cs = xmalloc(sizeof(float) * (size_t)pos * half), *sn = xmalloc(sizeof(float) * (size_t)pos * half);
        mla_rope_tables(inv, half, pos, 1.0, cs, sn);
        upload_wait(s, b->cos_t, cs, sizeof(float) * (size_t)pos * half);
        upload_wait(s, b->sin_t, sn, sizeof(float) * (size_t)pos * half);
        free(inv), free(cs), free(sn);
    }
    block_table_upload(b->block_table, b->max_batch * b->max_blocks, seed, s);
}

// ---------------------------------------------------------------------------------------------
// Binding and the modules

static void qn_run_bind(struct qn_run *r) {
    const struct qn_dims *d = &r->f->d;
    const struct qn_buffers *b = &r->f->buf;
    const struct qn_layer *L = r->L;
    const long long T = r->p.tokens, H = d->hidden;
    struct lwb_operand x = {b->x, T, d->hidden, H, 1, 0};
    if (L->kind == LWB_LAYER_LINEAR) {
        struct lwb_operand w = {L->w_proj, d->proj, d->hidden, H, 1, 0};
        gemm_bind(&r->g_proj, &x, &w, b->proj, d->proj, 0, b->gemm_ws);
        struct lwb_operand on = {b->on, T, d->vdim, d->vdim, 1, 0};
        struct lwb_operand wo = {L->out_proj, H, d->vdim, d->vdim, 1, 0};
        gemm_bind(&r->g_out, &on, &wo, b->hidden, H, 0, b->gemm_ws);
    } else {
        const int A = d->heads * d->head_dim;
        struct lwb_operand w = {L->wqkv, d->qkv, d->hidden, H, 1, 0};
        gemm_bind(&r->g_qkv, &x, &w, b->qkv, d->qkv, 0, b->gemm_ws);
        struct lwb_operand at = {b->attn, T, A, A, 1, 0};
        struct lwb_operand wo = {L->wo, H, A, A, 1, 0};
        gemm_bind(&r->g_o, &at, &wo, b->hidden, H, 0, b->gemm_ws);
    }
    const int E = d->experts, I = d->moe_inter, k = d->top_k;
    struct lwb_operand wg = {L->gate, E, d->hidden, H, 1, 0};
    gemm_bind(&r->g_gate, &x, &wg, b->logits, E, 0, b->gemm_ws);
    struct lwb_operand xp = {b->x_perm, T * k, d->hidden, H, 1, 0};
    struct lwb_operand w13 = {L->w13, 2LL * I, d->hidden, H, E, 2LL * I * H};
    gemm_bind(&r->g_e13, &xp, &w13, b->h_perm, I, 0, 0);
    gemm_bind_tiles(&r->g_e13, b->perm.tiles_a, b->perm.ntiles, moe_max_tiles((int)T, k, E, gemm_tile_rows(&r->g_e13)));
    struct lwb_operand hp = {b->h_perm, T * k, I, I, 1, 0};
    struct lwb_operand w2 = {L->w2, H, I, I, E, H * I};
    gemm_bind(&r->g_e2, &hp, &w2, b->y_perm, H, 0, 0);
    gemm_bind_tiles(&r->g_e2, b->perm.tiles_b, b->perm.ntiles + 4, moe_max_tiles((int)T, k, E, gemm_tile_rows(&r->g_e2)));
    if (d->shared_inter) {
        const int S = d->shared_inter;
        struct lwb_operand s13 = {L->s13, 2LL * S, d->hidden, H, 1, 0};
        gemm_bind(&r->g_s13, &x, &s13, b->hs, S, 0, b->gemm_ws);
        struct lwb_operand hs = {b->hs, T, S, S, 1, 0};
        struct lwb_operand s2 = {L->s2, H, S, S, 1, 0};
        gemm_bind(&r->g_s2, &hs, &s2, b->ys, H, 0, b->gemm_ws);
    }
}

static void qn_mod_in_norm(void *arg, CUstream s) {
    struct qn_run *r = arg;
    const struct qn_buffers *b = &r->f->buf;
    const long long H = r->f->d.hidden;
    rmsnorm_enqueue(&r->r_in, r->n_in, s, r->first ? b->hidden_in : b->hidden, H,
                    r->first ? b->residual_in : b->residual, b->residual, H, r->L->in_norm, b->x, H, r->p.tokens,
                    r->f->d.eps);
}

static void qn_mod_post_norm(void *arg, CUstream s) {
    struct qn_run *r = arg;
    const struct qn_buffers *b = &r->f->buf;
    const long long H = r->f->d.hidden;
    rmsnorm_enqueue(&r->r_post, r->n_post, s, b->hidden, H, b->residual, b->residual, H, r->L->post_norm, b->x, H,
                    r->p.tokens, r->f->d.eps);
}

static struct gdn_args qn_gdn_args(const struct qn_run *r) {
    const struct qn_buffers *b = &r->f->buf;
    const struct qn_layer *L = r->L;
    return (struct gdn_args){.proj = b->proj, .ld = r->f->d.proj, .conv_w = L->conv_w, .A_log = L->A_log,
                             .dt_bias = L->dt_bias, .norm_w = L->gnorm, .eps = r->f->d.eps,
                             .conv_state = L->conv_state, .state = L->state, .qkv = b->conv_out, .o = b->o,
                             .out = b->on, .ws = b->gdn_ws, .batch = r->p.batch, .qlen = r->p.qlen,
                             .has_past = r->p.past > 0};
}

static void qn_mod_gdn(void *arg, CUstream s) {
    struct qn_run *r = arg;
    const struct gdn_config c = r->f->d.lc;
    const struct gdn_args a = qn_gdn_args(r);
    gemm_enqueue(&r->g_proj, s);
    gdn_conv_enqueue(&r->r_gdn, c, s, &a);
    if (r->p.ctx) gdn_chunk_enqueue(&r->r_gdn, c, s, &a);
    else gdn_step_enqueue(&r->r_gdn, c, s, &a);
    gdn_norm_enqueue(&r->r_gdn, c, s, &a);
    gemm_enqueue(&r->g_out, s);
}

static void qn_mod_attn(void *arg, CUstream s) {
    struct qn_run *r = arg;
    const struct qn_dims *d = &r->f->d;
    const struct qn_buffers *b = &r->f->buf;
    const struct lwb_problem *p = &r->p;
    const struct gqa_config g = qn_gqa_config(d);
    gemm_enqueue(&r->g_qkv, s);
    struct gqa_prep_args pa = {.qkv = b->qkv, .ld = d->qkv, .q_norm_w = r->L->q_norm, .k_norm_w = r->L->k_norm,
                               .eps = d->eps, .cos_t = b->cos_t, .sin_t = b->sin_t, .cache = r->L->cache,
                               .block_table = b->block_table, .max_blocks = b->max_blocks, .kv_lens = b->kv_lens,
                               .batch = p->batch, .qlen = p->qlen, .q_out = b->q, .gate_out = b->gate_out};
    gqa_prep_enqueue(&r->r_gqa, g, s, &pa);
    struct gqa_attn_args aa = {.q = b->q, .gate = b->gate_out, .cache = r->L->cache, .block_table = b->block_table,
                               .max_blocks = b->max_blocks, .kv_lens = b->kv_lens, .batch = p->batch, .qlen = p->qlen,
                               .past = p->past, .sm_scale = d->sm_scale, .out = b->attn, .ws = b->attn_ws};
    if (p->ctx) gqa_prefill_enqueue(&r->r_gqa, g, s, &aa);
    else gqa_decode_enqueue(&r->r_gqa, g, r->dec, s, &aa);
    gemm_enqueue(&r->g_o, s);
}

static void qn_mod_router(void *arg, CUstream s) {
    struct qn_run *r = arg;
    gemm_enqueue(&r->g_gate, s);
}

static void qn_mod_shared(void *arg, CUstream s) {
    struct qn_run *r = arg;
    gemm_enqueue(&r->g_s13, s);
    gemm_enqueue(&r->g_s2, s);
}

static void qn_mod_experts(void *arg, CUstream s) {
    struct qn_run *r = arg;
    const struct qn_dims *d = &r->f->d;
    struct qn_buffers *b = &r->f->buf;
    const int T = r->p.tokens;
    moe_topk_enqueue(&r->r_route, s, b->logits, r->g_gate.cfg.splitk, T * (long long)d->experts, 0, T, 1.0f,
                     r->use_override ? b->override : 0, b->ids, b->weights);
    moe_permute_enqueue(&r->r_route, r->route_cfg, s, &b->perm, b->ids, T, 0, gemm_tile_rows(&r->g_e13),
                        gemm_tile_rows(&r->g_e2), b->x, b->x_perm);
    gemm_enqueue(&r->g_e13, s);
    gemm_enqueue(&r->g_e2, s);
    moe_combine_gated_enqueue(&r->r_route, s, b->y_perm, &b->perm, b->weights, d->shared_inter ? b->ys : 0, 0, T,
                              d->shared_inter ? b->x : 0, d->shared_inter ? r->L->sg : 0, b->hidden, T);
}

static void qn_modules(void *fam, int pi, int l, bool measured, struct lwb_modules *out) {
    struct qn_family *f = fam;
    struct qn_run *r = qn_run_of(f, pi, l);
    const struct qn_dims *d = &f->d;
    const struct qn_buffers *b = &f->buf;
    const size_t n = (size_t)r->p.tokens * d->hidden;
    const int E = d->experts, T = r->p.tokens, k = d->top_k;
    double active = E * (1.0 - pow(1.0 - (double)k / E, T));
    if (measured) {
        int *cnt = xmalloc(sizeof(int) * (size_t)E);
        CU_CHECK(lwb_cu.cuMemcpyDtoH(cnt, b->perm.counts, sizeof(int) * (size_t)E));
        active = 0;
        for (int e = 0; e < E; e++) active += cnt[e] > 0;
        free(cnt);
    } else if (f->spec.routing[pi].method != LWB_BALANCE_NOT_MODIFIED) {
        int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)T * k);
        char *seen = xcalloc((size_t)E, 1);
        routing_select(&f->spec.routing[pi], ids);
        active = 0;
        for (long long i = 0; i < (long long)T * k; i++)
            if (!seen[ids[i]]) seen[ids[i]] = 1, active += 1;
        free(ids), free(seen);
    }
    struct qn_moe_costs c = qn_cost_moe(d, &r->p, active);
    struct lwb_cost cn = {.bytes = rmsnorm_bytes(r->n_in, r->p.tokens)};
    out->n = 0;
    modules_add(out, (struct lwb_module){NULL, "add + RMSNorm", 0, qn_mod_in_norm, r, cn, "residual", b->residual, n});
    if (r->L->kind == LWB_LAYER_LINEAR)
        modules_add(out, (struct lwb_module){"Qwen3NextGatedDeltaNet", NULL, 0, qn_mod_gdn, r, qn_cost_gdn(d, &r->p),
                                             "Gated DeltaNet output", b->hidden, n});
    else
        modules_add(out, (struct lwb_module){"Attention", NULL, 0, qn_mod_attn, r, qn_cost_attn(d, &r->p),
                                             "attention output", b->hidden, n});
    modules_add(out, (struct lwb_module){NULL, "add + RMSNorm", 0, qn_mod_post_norm, r, cn, "residual", b->residual, n});
    modules_add(out, (struct lwb_module){"Qwen3NextSparseMoeBlock", NULL, 0, NULL, NULL, c.block});
    modules_add(out, (struct lwb_module){NULL, "router", 1, qn_mod_router, r, c.router});
    if (d->shared_inter) modules_add(out, (struct lwb_module){"GatedMLP", NULL, 1, qn_mod_shared, r, c.shared});
    modules_add(out, (struct lwb_module){"MoE", NULL, 1, qn_mod_experts, r, c.experts, "MoE output", b->hidden, n});
}

static void qn_setup(void *fam, int pi, CUstream s) {
    struct qn_family *f = fam;
    const struct lwb_problem *p = &f->spec.problems[pi];
    struct qn_buffers *b = &f->buf;
    const long long H = f->d.hidden;
    int *lens = xmalloc(sizeof(int) * (size_t)p->batch);
    for (int q = 0; q < p->batch; q++) lens[q] = p->kv_len;
    upload_wait(s, b->kv_lens, lens, sizeof(int) * (size_t)p->batch);
    free(lens);
    const struct lwb_routing *ro = &f->spec.routing[pi];
    if (ro->method != LWB_BALANCE_NOT_MODIFIED) {
        int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)p->tokens * f->d.top_k);
        if (routing_select(ro, ids)) upload_wait(s, b->override, ids, sizeof(int32_t) * (size_t)p->tokens * f->d.top_k);
        free(ids);
    }
    init_fill_bf16(f->init, s, b->hidden_in, p->tokens * H, f->seed * 31 + 1, 0.f, 1.f);
    init_fill_bf16(f->init, s, b->residual_in, p->tokens * H, f->seed * 31 + 2, 0.f, 1.f);
    for (int l = 0; l < f->nlayers; l++) qn_run_bind(qn_run_of(f, pi, l));
    stream_wait(s, 60, "the problem's inputs");
}

static void qn_describe(void *fam, FILE *out) {
    struct qn_family *f = fam;
    const struct qn_dims *d = &f->d;
    static const char *const dt[] = {"float32", "float16", "bfloat16"};
    fprintf(out, "layers:");
    for (int l = 0; l < f->nlayers; l++)
        fprintf(out, " %d (%s + MoE)", f->layers[l].index,
                f->layers[l].kind == LWB_LAYER_LINEAR ? "Gated DeltaNet" : "gated attention");
    fprintf(out, "\nweights: bf16\n");
    fprintf(out, "Gated DeltaNet: %d key heads, %d value heads, %d x %d state, chunks of %d; recurrent state cache in %s\n",
            d->lc.k_heads, d->lc.v_heads, d->lc.k_dim, d->lc.v_dim, d->lc.chunk, dt[d->lc.state_dtype]);
    fprintf(out, "attention: %d query heads, %d key/value heads, head dim %d, RoPE on %d dims, q/k norms, output gate\n",
            d->heads, d->kv_heads, d->head_dim, d->rope_dim);
    fprintf(out, "MoE: %d experts, top-%d (softmax%s), SwiGLU experts of %d, gated shared expert of %d\n", d->experts,
            d->top_k, d->norm_topk ? ", renormalised" : "", d->moe_inter, d->shared_inter);
    if (f->sh->scaled_from)
        fprintf(out, "--scaled-from %d: one rank's share under attention TP (heads, DeltaNet heads and the shared "
                     "expert split, experts %d per GPU); the all-reduces of the split are not run\n",
                f->sh->scaled_from, d->experts);
}

static void qn_check_checkpoint(void *fam, struct lwb_ckpt *c) {
    (void)fam, (void)c;
    LWB_BUG("checkpoint check of a family that refuses --load-format AUTO");
}

static bool qn_route_layer(void *fam, int layer) {
    (void)fam, (void)layer;
    return true;
}

static void qn_route_read(void *fam, int pi, int layer, int32_t *ids, CUstream s) {
    struct qn_family *f = fam;
    (void)layer;
    stream_wait(s, 120, "reading the expert ids back");
    CU_CHECK(lwb_cu.cuMemcpyDtoH(ids, f->buf.ids, sizeof(int32_t) * (size_t)f->spec.problems[pi].tokens * f->d.top_k));
}

// --dump DIR: the first problem's layers for test/gpu/check_qwen3next.py: DIR/layer<i>.safetensors
// (lwb's layouts: lwb.w.in_norm / post_norm (1 + w), DeltaNet proj (q | k | v | z | b | a rows),
// conv_w (K, conv_dim), A_log, dt_bias (fp32), gnorm, out_proj; attention qkv (per head query and
// gate rows, then k, v), o, q_norm, k_norm (w); MoE gate, w13 (E, 2I, H, gate/up rows interleaved),
// w2, s13, s2, sg), the inputs, lwb.mid.residual and lwb.mixer.output (after the mixer),
// lwb.moe.input, lwb.output.hidden_states / residual, lwb.moe.topk_ids / topk_weights; DeltaNet:
// lwb.state.conv_before / _after, lwb.state.rec_before / _after (batch, Hv, Dk, Dv); attention:
// lwb.past_kv.k / v (batch, kv_heads, past, D)), and DIR/meta.json.
static void qn_dump(void *fam, int pi, CUstream s, const char *dir) {
    struct qn_family *f = fam;
    const struct qn_dims *d = &f->d;
    const struct lwb_problem *q = &f->spec.problems[pi];
    struct qn_buffers *b = &f->buf;
    static const char *const sdt[] = {"F32", "F16", "BF16"};
    output_dir(dir);
    qn_setup(f, pi, s);
    const long long T = q->tokens, H = d->hidden, E = d->experts, I = d->moe_inter, S = d->shared_inter;
    const int slots = q->batch;
    struct lwb_modules mods = {0};
    for (int l = 0; l < f->nlayers; l++) {
        const struct qn_layer *L = &f->layers[l];
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
        nh_dump_dev(w, "lwb.w.in_norm", "BF16", hv, 1, L->in_norm, keep, &nk);
        nh_dump_dev(w, "lwb.w.post_norm", "BF16", hv, 1, L->post_norm, keep, &nk);
        int64_t cs[3] = {slots, d->lc.conv_k - 1, d->conv_dim},
                ss[4] = {slots, d->lc.v_heads, d->lc.k_dim, d->lc.v_dim};
        if (L->kind == LWB_LAYER_LINEAR) {
            const int nv = d->lc.v_heads;
            int64_t pj[2] = {d->proj, H}, cw[2] = {d->lc.conv_k, d->conv_dim}, hs[1] = {nv}, gn[1] = {d->lc.v_dim},
                    op[2] = {H, d->vdim};
            nh_dump_dev(w, "lwb.w.proj", "BF16", pj, 2, L->w_proj, keep, &nk);
            nh_dump_dev(w, "lwb.w.conv_w", "BF16", cw, 2, L->conv_w, keep, &nk);
            st_add(w, "lwb.w.A_log", "F32", hs, 1, L->A_log_h, sizeof(float) * (size_t)nv);
            st_add(w, "lwb.w.dt_bias", "F32", hs, 1, L->dt_bias_h, sizeof(float) * (size_t)nv);
            nh_dump_dev(w, "lwb.w.gnorm", "BF16", gn, 1, L->gnorm, keep, &nk);
            nh_dump_dev(w, "lwb.w.out_proj", "BF16", op, 2, L->out_proj, keep, &nk);
            nh_dump_dev(w, "lwb.state.conv_before", "BF16", cs, 3, L->conv_state, keep, &nk);
            nh_dump_dev(w, "lwb.state.rec_before", sdt[d->lc.state_dtype], ss, 4, L->state, keep, &nk);
        } else {
            const int A = d->heads * d->head_dim;
            int64_t qk[2] = {d->qkv, H}, o[2] = {H, A}, hd[1] = {d->head_dim};
            nh_dump_dev(w, "lwb.w.qkv", "BF16", qk, 2, L->wqkv, keep, &nk);
            nh_dump_dev(w, "lwb.w.o", "BF16", o, 2, L->wo, keep, &nk);
            nh_dump_dev(w, "lwb.w.q_norm", "BF16", hd, 1, L->q_norm, keep, &nk);
            nh_dump_dev(w, "lwb.w.k_norm", "BF16", hd, 1, L->k_norm, keep, &nk);
            if (q->past)
                nh_dump_past_kv(w, qn_gqa_config(d), L->cache, L->blocks, b->block_table, b->max_blocks, slots,
                                q->past, keep, &nk);
        }
        int64_t g2[2] = {E, H}, e13[3] = {E, 2 * I, H}, e2[3] = {E, H, I}, s13[2] = {2 * S, H}, s2[2] = {H, S};
        nh_dump_dev(w, "lwb.w.gate", "BF16", g2, 2, L->gate, keep, &nk);
        nh_dump_dev(w, "lwb.w.w13", "BF16", e13, 3, L->w13, keep, &nk);
        nh_dump_dev(w, "lwb.w.w2", "BF16", e2, 3, L->w2, keep, &nk);
        if (S) {
            nh_dump_dev(w, "lwb.w.s13", "BF16", s13, 2, L->s13, keep, &nk);
            nh_dump_dev(w, "lwb.w.s2", "BF16", s2, 2, L->s2, keep, &nk);
            nh_dump_dev(w, "lwb.w.sg", "BF16", hv, 1, L->sg, keep, &nk);
        }
        qn_modules(f, pi, l, false, &mods);
        modules_run(&mods, 0, 2, s); // the add, the norm, the mixer
        stream_wait(s, 600, "the dump");
        nh_dump_dev(w, "lwb.mid.residual", "BF16", th, 2, b->residual, keep, &nk);
        nh_dump_dev(w, "lwb.mixer.output", "BF16", th, 2, b->hidden, keep, &nk);
        modules_run(&mods, 2, mods.n, s);
        stream_wait(s, 600, "the dump");
        int64_t tk[2] = {T, d->top_k};
        nh_dump_dev(w, "lwb.moe.input", "BF16", th, 2, b->x, keep, &nk);
        nh_dump_dev(w, "lwb.output.hidden_states", "BF16", th, 2, b->hidden, keep, &nk);
        nh_dump_dev(w, "lwb.output.residual", "BF16", th, 2, b->residual, keep, &nk);
        nh_dump_dev(w, "lwb.moe.topk_ids", "I32", tk, 2, b->ids, keep, &nk);
        nh_dump_dev(w, "lwb.moe.topk_weights", "F32", tk, 2, b->weights, keep, &nk);
        if (L->kind == LWB_LAYER_LINEAR) {
            nh_dump_dev(w, "lwb.state.conv_after", "BF16", cs, 3, L->conv_state, keep, &nk);
            nh_dump_dev(w, "lwb.state.rec_after", sdt[d->lc.state_dtype], ss, 4, L->state, keep, &nk);
        }
        char v[32];
        snprintf(v, sizeof v, "%d", L->index);
        st_metadata(w, "layer", v);
        st_writer_finish(w);
        printf("dump: %s\n", tesc(path));
        for (int i = 0; i < nk; i++) free(keep[i]);
        free(path);
    }
    free(mods.m);
    static const char *const dtn[] = {"float32", "float16", "bfloat16"};
    json_t *meta = json_pack("{s:o, s:o, s:I, s:s, s:s, s:i, s:s}", "config", model_config_json(f->model), "problem",
                             problem_spec_json(q), "seed", (json_int_t)f->seed, "run_type", q->ctx ? "CTX" : "GEN",
                             "ssm_cache_dtype", dtn[d->lc.state_dtype], "tokens_per_block", d->page, "lwb_version",
                             LWB_VERSION);
    json_t *run = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i}", "heads", d->heads, "kv_heads", d->kv_heads, "k_heads",
                            d->lc.k_heads, "v_heads", d->lc.v_heads, "experts", d->experts, "shared_inter", d->shared_inter);
    json_object_set_new(meta, "as_run", run);
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

// layers/deepseek.h: the DeepSeek-V3/R1 decoder layer: input RMSNorm (fused residual add),
// Multi-head Latent Attention, post-attention RMSNorm, then the MoE block (gate, routing, routed
// experts, shared expert) or, for the first first_k_dense_replace layers, a gated MLP.
//
// Defines: struct ds_dims (the shapes, from the model), struct ds_layer (one layer's weights and
// KV cache), struct ds_buffers (activations and workspaces shared by all layers, sized for the
// largest problem), struct ds_problem (one batch / seq-len-q / past / balance-ratio combination),
// struct ds_run (one layer's launches for one problem: tiles, kernels, tensor maps), and:
//   ds_dims_from_model, ds_layer_alloc / ds_layer_init, ds_buffers_alloc,
//   ds_run_plan (kernels and workspace needs, no device needed), ds_run_bind,
//   ds_forward (the layer, with TensorRT-LLM's NVTX module names), the module functions the
//   runner times alone (ds_module_*), and ds_cost (FLOPs and bytes of each module: floors).
//
// Paths: generation (GEN) uses the absorbed attention (q_nope through W_UK, attention over the
// latent cache, output through W_UV); context (CTX) expands the latents through kv_b_proj and
// runs causal attention with 192-wide queries and keys. Both write the new tokens' latents to a
// paged cache first.
//
// Weights are stored as the kernels want them: q_a_proj and kv_a_proj_with_mqa as one fused
// matrix; each gate_proj/up_proj pair as interleaved rows (the GEMM's SwiGLU epilogue reads a
// pair from adjacent columns); W_UK transposed (derived once from kv_b_proj). The dump writes
// them back under a checkpoint's names and layouts.
//
// Does not: loop over problems, time or profile (runner.h), or choose balance selections
// (routing.h; the runner uploads them).
// Tested by test/test_plan.c (shapes, costs, memory plan, kernels of a plan without a GPU) and on
// the GPU by test/gpu/check_layer.py against transformers' DeepseekV3DecoderLayer.
#pragma once

struct ds_dims {
    int hidden;        // H
    int heads;         // attention heads (after --scaled-from)
    int q_lora, kv_lora;
    int nope, rope, v; // per-head dims
    int qk;            // nope + rope
    int kv_row;        // cached row: kv_lora + rope
    int experts, top_k, groups, topk_group, norm_topk;
    int moe_inter;     // routed expert intermediate
    int shared_inter;  // shared experts' intermediate (n_shared x moe_inter)
    int inter;         // dense MLP intermediate
    float scaling;     // routed_scaling_factor
    float eps;         // rms_norm_eps
    float sm_scale;    // softmax scale (YaRN mscale included)
    int page;          // tokens per KV-cache block
};

static struct ds_dims ds_dims_from_model(const struct lwb_model *m, int page) {
    struct ds_dims d = {
        .hidden = m->hidden, .heads = m->heads, .q_lora = m->q_lora_rank, .kv_lora = m->kv_lora_rank,
        .nope = m->qk_nope_dim, .rope = m->qk_rope_dim, .v = m->v_head_dim, .qk = model_qk_head_dim(m),
        .kv_row = model_kv_cache_dim(m), .experts = m->n_experts, .top_k = m->top_k, .groups = m->n_group,
        .topk_group = m->topk_group, .norm_topk = m->norm_topk_prob, .moe_inter = m->moe_intermediate,
        .shared_inter = m->moe_intermediate * m->n_shared_experts, .inter = m->intermediate,
        .scaling = (float)m->routed_scaling_factor, .eps = (float)m->rms_norm_eps,
        .sm_scale = (float)model_softmax_scale(m), .page = page};
    return d;
}

// The kernels are written for DeepSeek-V3's attention geometry; other values are refused here
// (one line) rather than producing wrong numbers.
static void ds_dims_check(const struct ds_dims *d, const char *model) {
    if (d->nope != 128 || d->rope != 64 || d->v != 128 || d->kv_lora != 512)
        lwb_user_error("model %s: lwb's MLA kernels need qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128 "
                       "and kv_lora_rank 512 (got %d, %d, %d, %d)",
                       model, d->nope, d->rope, d->v, d->kv_lora);
    if (d->heads % 64)
        lwb_user_error("model %s: %d attention heads; lwb's MLA kernels need a multiple of 64 (with --scaled-from, "
                       "choose a size that keeps one)",
                       model, d->heads);
    if (d->hidden % 64 || d->q_lora % 64 || d->moe_inter % 64 || d->inter % 64 || d->shared_inter % 64)
        lwb_user_error("model %s: hidden, q_lora_rank and intermediate sizes must be multiples of 64", model);
    if (d->experts % 32 || d->experts > 1024 || d->top_k > 32 || (d->experts / d->groups) % (d->experts / 32))
        lwb_user_error("model %s: %d experts in %d groups, top-%d: lwb's routing kernel needs a multiple of 32 "
                       "experts (at most 1024), groups aligned to 32-expert warps, top-k at most 32",
                       model, d->experts, d->groups, d->top_k);
}

// ---------------------------------------------------------------------------------------------
// One layer: weights and cache

struct ds_weights {
    CUdeviceptr in_norm, post_norm; // (H)
    CUdeviceptr fused_a;            // (q_lora + kv_lora + rope, H): q_a_proj rows, then kv_a_proj_with_mqa
    CUdeviceptr q_a_norm;           // (q_lora)
    CUdeviceptr kv_a_norm;          // (kv_lora)
    CUdeviceptr q_b;                // (heads * qk, q_lora)
    CUdeviceptr kv_b;               // (heads * (nope + v), kv_lora): per head nope rows then v rows
    CUdeviceptr w_uk_t;             // (heads, kv_lora, nope): the nope rows of kv_b, transposed
    CUdeviceptr o_proj;             // (H, heads * v)
    CUdeviceptr gate;               // (E, H) MoE router
    CUdeviceptr bias;               // (E) fp32 e_score_correction_bias
    CUdeviceptr w13;                // (E, 2 * moe_inter, H): gate/up rows interleaved per expert
    CUdeviceptr w2;                 // (E, H, moe_inter)
    CUdeviceptr s13, s2;            // shared experts: (2 * shared_inter, H), (H, shared_inter)
    CUdeviceptr d13, d2;            // dense MLP: (2 * inter, H), (H, inter)
};

struct ds_layer {
    int index;        // decoder layer index in the model
    bool moe;         // MoE (else dense MLP)
    struct ds_weights w;
    CUdeviceptr cache; // (blocks, page, kv_row) bf16: this layer's paged latent cache
    int blocks;
};

#define DS_BF16(rows, cols) ((size_t)(rows) * (size_t)(cols) * 2)

static void ds_layer_alloc(struct lwb_mem *m, struct ds_layer *L, const struct ds_dims *d, int blocks) {
    const size_t H = d->hidden;
    struct ds_weights *w = &L->w;
    w->in_norm = mem_alloc(m, MEM_WEIGHTS, DS_BF16(H, 1), "input_layernorm");
    w->post_norm = mem_alloc(m, MEM_WEIGHTS, DS_BF16(H, 1), "post_attention_layernorm");
    w->fused_a = mem_alloc(m, MEM_WEIGHTS, DS_BF16(d->q_lora + d->kv_row, H), "q_a/kv_a projections");
    w->q_a_norm = mem_alloc(m, MEM_WEIGHTS, DS_BF16(d->q_lora, 1), "q_a_layernorm");
    w->kv_a_norm = mem_alloc(m, MEM_WEIGHTS, DS_BF16(d->kv_lora, 1), "kv_a_layernorm");
    w->q_b = mem_alloc(m, MEM_WEIGHTS, DS_BF16((size_t)d->heads * d->qk, d->q_lora), "q_b_proj");
    w->kv_b = mem_alloc(m, MEM_WEIGHTS, DS_BF16((size_t)d->heads * (d->nope + d->v), d->kv_lora), "kv_b_proj");
    w->w_uk_t = mem_alloc(m, MEM_WEIGHTS, DS_BF16((size_t)d->heads * d->kv_lora, d->nope), "W_UK transposed");
    w->o_proj = mem_alloc(m, MEM_WEIGHTS, DS_BF16(H, (size_t)d->heads * d->v), "o_proj");
    if (L->moe) {
        w->gate = mem_alloc(m, MEM_WEIGHTS, DS_BF16(d->experts, H), "gate");
        w->bias = mem_alloc(m, MEM_WEIGHTS, (size_t)d->experts * 4, "e_score_correction_bias");
        w->w13 = mem_alloc(m, MEM_WEIGHTS, DS_BF16((size_t)d->experts * 2 * d->moe_inter, H), "experts gate/up");
        w->w2 = mem_alloc(m, MEM_WEIGHTS, DS_BF16((size_t)d->experts * H, d->moe_inter), "experts down");
        if (d->shared_inter) {
            w->s13 = mem_alloc(m, MEM_WEIGHTS, DS_BF16(2 * d->shared_inter, H), "shared experts gate/up");
            w->s2 = mem_alloc(m, MEM_WEIGHTS, DS_BF16(H, d->shared_inter), "shared experts down");
        }
    } else {
        w->d13 = mem_alloc(m, MEM_WEIGHTS, DS_BF16(2 * (size_t)d->inter, H), "mlp gate/up");
        w->d2 = mem_alloc(m, MEM_WEIGHTS, DS_BF16(H, d->inter), "mlp down");
    }
    L->blocks = blocks;
    L->cache = mem_alloc(m, MEM_KV, DS_BF16((size_t)blocks * d->page, d->kv_row), "KV cache");
}

// Random weights scaled like a trained model's: Linear weights uniform with standard deviation
// 1/sqrt(fan_in) (activations keep their scale through each product, router logits are O(1),
// nothing overflows); norm weights around 1; a small correction bias. With the reference's
// torch.rand inputs (all positive, a shared mean), unmodified routing sends most tokens to a few
// experts; the balance methods set the distribution explicitly.
// The cache is filled with finite values everywhere (past tokens are overwritten by ds_fill_cache).
static void ds_layer_init(struct ds_layer *L, const struct ds_dims *d, const struct lwb_kreq *init, CUstream s,
                          unsigned long long seed) {
    const struct ds_weights *w = &L->w;
    unsigned long long k = seed * 1000003ULL + (unsigned long long)L->index * 101;
#define DS_FILL(p, rows, cols, fan_in)                                                                 \
    do {                                                                                               \
        float a_ = sqrtf(3.0f / (float)(fan_in));                                                      \
        init_fill_bf16(init, s, p, (long long)(rows) * (long long)(cols), ++k, -a_, a_);               \
    } while (0)
    const long long H = d->hidden;
    init_fill_bf16(init, s, w->in_norm, H, ++k, 0.8f, 1.2f);
    init_fill_bf16(init, s, w->post_norm, H, ++k, 0.8f, 1.2f);
    init_fill_bf16(init, s, w->q_a_norm, d->q_lora, ++k, 0.8f, 1.2f);
    init_fill_bf16(init, s, w->kv_a_norm, d->kv_lora, ++k, 0.8f, 1.2f);
    DS_FILL(w->fused_a, d->q_lora + d->kv_row, H, H);
    DS_FILL(w->q_b, (long long)d->heads * d->qk, d->q_lora, d->q_lora);
    DS_FILL(w->kv_b, (long long)d->heads * (d->nope + d->v), d->kv_lora, d->kv_lora);
    DS_FILL(w->o_proj, H, (long long)d->heads * d->v, (long long)d->heads * d->v);
    // W_UK^T[h] = (nope rows of kv_b for head h)^T: (kv_lora, nope).
    init_transpose(init, s, w->kv_b, d->kv_lora, (long long)(d->nope + d->v) * d->kv_lora, w->w_uk_t, d->nope,
                   (long long)d->kv_lora * d->nope, d->nope, d->kv_lora, d->heads);
    if (L->moe) {
        DS_FILL(w->gate, d->experts, H, H);
        init_fill_f32(init, s, w->bias, d->experts, ++k, -0.05f, 0.05f);
        DS_FILL(w->w13, (long long)d->experts * 2 * d->moe_inter, H, H);
        DS_FILL(w->w2, (long long)d->experts * H, d->moe_inter, d->moe_inter);
        if (d->shared_inter) {
            DS_FILL(w->s13, 2LL * d->shared_inter, H, H);
            DS_FILL(w->s2, H, d->shared_inter, d->shared_inter);
        }
    } else {
        DS_FILL(w->d13, 2LL * d->inter, H, H);
        DS_FILL(w->d2, H, d->inter, d->inter);
    }
    init_fill_bf16(init, s, L->cache, (long long)L->blocks * d->page * d->kv_row, ++k, -1.f, 1.f);
#undef DS_FILL
}

// ---------------------------------------------------------------------------------------------
// Activations and workspaces, shared by the layers (they run one after another)

struct ds_buffers {
    long long max_tokens; // rows of every (tokens, .) buffer
    long long max_keys;   // rows of the context phase's keys: batch x mla_prefill_pitch(kv_len)
    int max_batch, max_blocks, positions;
    CUdeviceptr hidden_in, residual_in; // (T, H) problem inputs, never written by a forward
    CUdeviceptr hidden, residual;       // (T, H) the stream between layers
    CUdeviceptr x;                      // (T, H) normalised input of attention / MLP
    CUdeviceptr a_out;                  // (T, q_lora + kv_row)
    CUdeviceptr qa_n;                   // (T, q_lora)
    CUdeviceptr latent;                 // (T, kv_lora)
    CUdeviceptr q;                      // (T, heads, qk)
    CUdeviceptr q_abs;                  // (T, heads, kv_row) generation
    CUdeviceptr kv_new;                 // (T, kv_row)
    CUdeviceptr o_lat;                  // (T, heads, kv_lora) generation
    CUdeviceptr kv_all;                 // (K, kv_row) context: every request's rows, pitch apart
                                        // (the rows between are zeroed once and never attended)
    CUdeviceptr kn;                     // (K, heads, nope) context
    CUdeviceptr vt;                     // (heads, v, key_stride) context
    long long key_stride;               // row length of vt (K, a multiple of 8)
    CUdeviceptr attn;                   // (T, heads * v)
    CUdeviceptr attn_out;               // (T, H)
    CUdeviceptr logits;                 // (logit_splits, T, E) fp32: the gate's split-K partials
    int logit_splits;                   // the most partial slabs a gate GEMM writes
    CUdeviceptr ids, weights, override; // (T, top_k) int32, fp32, int32
    struct moe_perm perm;
    CUdeviceptr x_perm, h_perm, y_perm; // (T*k, H), (T*k, moe_inter), (T*k, H)
    CUdeviceptr hs, ys;                 // shared expert (T, shared_inter), (T, H)
    CUdeviceptr hd;                     // dense MLP (T, inter)
    CUdeviceptr kv_lens;                // (max_batch) int: cached tokens after this forward
    CUdeviceptr block_table;            // (max_batch, max_blocks) int
    CUdeviceptr cos_t, sin_t;           // (positions, rope/2) fp32
    CUdeviceptr gemm_ws;                // split-K partials
    size_t gemm_ws_bytes;
    CUdeviceptr mla_ws;                 // decode split partials
    size_t mla_ws_bytes;
};

static void ds_buffers_alloc(struct lwb_mem *m, struct ds_buffers *b, const struct ds_dims *d, bool ctx,
                             bool any_moe, bool any_dense) {
    const long long T = b->max_tokens, H = d->hidden, K = b->max_keys;
    const int kk = d->top_k;
    b->hidden_in = mem_alloc(m, MEM_ACT, DS_BF16(T, H), "hidden_states input");
    b->residual_in = mem_alloc(m, MEM_ACT, DS_BF16(T, H), "residual input");
    b->hidden = mem_alloc(m, MEM_ACT, DS_BF16(T, H), "hidden_states");
    b->residual = mem_alloc(m, MEM_ACT, DS_BF16(T, H), "residual");
    b->x = mem_alloc(m, MEM_ACT, DS_BF16(T, H), "normalised input");
    b->a_out = mem_alloc(m, MEM_ACT, DS_BF16(T, d->q_lora + d->kv_row), "a-projections");
    b->qa_n = mem_alloc(m, MEM_ACT, DS_BF16(T, d->q_lora), "q_a normalised");
    b->latent = mem_alloc(m, MEM_ACT, DS_BF16(T, d->kv_lora), "latent");
    b->q = mem_alloc(m, MEM_ACT, DS_BF16(T * d->heads, d->qk), "queries");
    b->kv_new = mem_alloc(m, MEM_ACT, DS_BF16(T, d->kv_row), "new cache rows");
    if (!ctx) {
        b->q_abs = mem_alloc(m, MEM_ACT, DS_BF16(T * d->heads, d->kv_row), "absorbed queries");
        b->o_lat = mem_alloc(m, MEM_ACT, DS_BF16(T * d->heads, d->kv_lora), "attention latents");
    } else {
        b->key_stride = K;
        b->kv_all = mem_alloc(m, MEM_ACT, DS_BF16(K, d->kv_row), "cached rows");
        b->kn = mem_alloc(m, MEM_ACT, DS_BF16(K * d->heads, d->nope), "keys");
        b->vt = mem_alloc(m, MEM_ACT, DS_BF16((size_t)d->heads * d->v, b->key_stride), "values");
    }
    b->attn = mem_alloc(m, MEM_ACT, DS_BF16(T, (size_t)d->heads * d->v), "attention output");
    b->attn_out = mem_alloc(m, MEM_ACT, DS_BF16(T, H), "o_proj output");
    if (any_moe) {
        const int E = d->experts;
        b->logits = mem_alloc(m, MEM_ACT, (size_t)LWB_MAX(b->logit_splits, 1) * T * E * 4, "router logits");
        b->ids = mem_alloc(m, MEM_ACT, (size_t)T * kk * 4, "expert ids");
        b->weights = mem_alloc(m, MEM_ACT, (size_t)T * kk * 4, "expert weights");
        b->override = mem_alloc(m, MEM_ACT, (size_t)T * kk * 4, "balance override");
        int tiles = moe_max_tiles((int)T, kk, E, 64);
        b->perm = (struct moe_perm){mem_alloc(m, MEM_WS, (size_t)E * 4, "expert counts"),
                                    mem_alloc(m, MEM_WS, (size_t)E * 4, "expert offsets"),
                                    mem_alloc(m, MEM_WS, (size_t)E * 4, "expert fill"),
                                    mem_alloc(m, MEM_WS, (size_t)tiles * 16, "tile list"),
                                    mem_alloc(m, MEM_WS, (size_t)tiles * 16, "tile list"),
                                    mem_alloc(m, MEM_WS, 64, "tile counts"),
                                    mem_alloc(m, MEM_WS, (size_t)T * kk * 4, "token rows")};
        b->x_perm = mem_alloc(m, MEM_ACT, DS_BF16(T * kk, H), "permuted tokens");
        b->h_perm = mem_alloc(m, MEM_ACT, DS_BF16(T * kk, d->moe_inter), "expert intermediate");
        b->y_perm = mem_alloc(m, MEM_ACT, DS_BF16(T * kk, H), "expert outputs");
        if (d->shared_inter) {
            b->hs = mem_alloc(m, MEM_ACT, DS_BF16(T, d->shared_inter), "shared intermediate");
            b->ys = mem_alloc(m, MEM_ACT, DS_BF16(T, H), "shared output");
        }
    }
    if (any_dense) b->hd = mem_alloc(m, MEM_ACT, DS_BF16(T, d->inter), "mlp intermediate");
    b->kv_lens = mem_alloc(m, MEM_WS, (size_t)b->max_batch * 4, "kv lengths");
    b->block_table = mem_alloc(m, MEM_WS, (size_t)b->max_batch * b->max_blocks * 4, "block table");
    b->cos_t = mem_alloc(m, MEM_WS, (size_t)b->positions * (d->rope / 2) * 4, "rope cos");
    b->sin_t = mem_alloc(m, MEM_WS, (size_t)b->positions * (d->rope / 2) * 4, "rope sin");
    if (b->gemm_ws_bytes) b->gemm_ws = mem_alloc(m, MEM_WS, b->gemm_ws_bytes, "split-K partials");
    if (b->mla_ws_bytes) b->mla_ws = mem_alloc(m, MEM_WS, b->mla_ws_bytes, "attention split partials");
}

// ---------------------------------------------------------------------------------------------
// One problem

struct ds_problem {
    int batch, qlen, past; // requests, new tokens per request, cached tokens per request
    int kv_len;            // past + qlen
    int tokens;            // batch x qlen
    bool ctx;              // context phase (else generation)
    bool has_ratio;        // balance ratio given
    double ratio;
};

// One layer's launches for one problem.
struct ds_run {
    const struct ds_layer *L;
    struct ds_problem p;
    struct rmsnorm_config n_in, n_post, n_qa, n_kva; // norms
    struct lwb_kreq r_in, r_post, r_qa, r_kva;
    struct lwb_gemm g_a, g_qb, g_uk, g_uv, g_kn, g_vt, g_o;   // attention products
    struct lwb_gemm g_gate, g_e13, g_e2, g_s13, g_s2;         // MoE
    struct lwb_gemm g_d13, g_d2;                              // dense MLP
    struct mla_rope_config rope_cfg;
    struct lwb_kreq r_rope;
    struct lwb_mla_decode dec;
    struct lwb_mla_prefill pre;
    struct moe_route_config route_cfg;
    struct lwb_kreq r_route;
    bool use_override; // balance override active
};

// Plan the launches (no device memory touched). `dev` gives the SM count and shared memory.
static void ds_run_plan(struct ds_run *r, const struct ds_layer *L, const struct ds_dims *d,
                        const struct ds_problem *p, const struct lwb_device *dev, bool override) {
    memset(r, 0, sizeof *r);
    r->L = L;
    r->p = *p;
    r->use_override = override;
    const long long T = p->tokens;
    r->n_in = rmsnorm_choose_config(d->hidden, true);
    r->n_post = r->n_in;
    r->n_qa = rmsnorm_choose_config(d->q_lora, false);
    r->n_kva = rmsnorm_choose_config(d->kv_lora, false);
    rmsnorm_request(&r->r_in, r->n_in);
    rmsnorm_request(&r->r_post, r->n_post);
    rmsnorm_request(&r->r_qa, r->n_qa);
    rmsnorm_request(&r->r_kva, r->n_kva);
    gemm_plan(&r->g_a, "fused_a", T, d->q_lora + d->kv_row, d->hidden, 1, GEMM_EPI_BF16, false, 0, dev);
    gemm_plan(&r->g_qb, "q_b", T, d->heads * d->qk, d->q_lora, 1, GEMM_EPI_BF16, false, 0, dev);
    if (!p->ctx) {
        gemm_plan(&r->g_uk, "w_uk", T, d->kv_lora, d->nope, d->heads, GEMM_EPI_BF16, false, 0, dev);
        gemm_plan(&r->g_uv, "w_uv", T, d->v, d->kv_lora, d->heads, GEMM_EPI_BF16, false, 0, dev);
        r->dec.cfg = mla_decode_choose(d->heads, d->page, p->qlen, p->batch, p->kv_len, dev->sm_count);
        mla_decode_request(&r->dec.req, r->dec.cfg);
    } else {
        long long keys = (long long)p->batch * mla_prefill_pitch(p->kv_len);
        gemm_plan(&r->g_kn, "k_nope", keys, d->nope, d->kv_lora, d->heads, GEMM_EPI_BF16, false, 0, dev);
        gemm_plan(&r->g_vt, "v_t", d->v, (int)keys, d->kv_lora, d->heads, GEMM_EPI_BF16, false, 0, dev);
        mla_prefill_request(&r->pre, d->heads);
    }
    gemm_plan(&r->g_o, "o_proj", T, d->hidden, d->heads * d->v, 1, GEMM_EPI_BF16, false, 0, dev);
    r->rope_cfg = (struct mla_rope_config){d->heads, d->nope, d->rope, d->kv_lora, d->page};
    mla_rope_request(&r->r_rope, r->rope_cfg);
    if (L->moe) {
        double rows = (double)T * d->top_k / d->experts;
        gemm_plan(&r->g_gate, "gate", T, d->experts, d->hidden, 1, GEMM_EPI_F32, false, 0, dev);
        gemm_keep_partials(&r->g_gate); // the top-k sums them
        gemm_plan(&r->g_e13, "experts13", T * d->top_k, 2 * d->moe_inter, d->hidden, 1, GEMM_EPI_SWIGLU, true, rows, dev);
        gemm_plan(&r->g_e2, "experts2", T * d->top_k, d->hidden, d->moe_inter, 1, GEMM_EPI_BF16, true, rows, dev);
        if (d->shared_inter) {
            gemm_plan(&r->g_s13, "shared13", T, 2 * d->shared_inter, d->hidden, 1, GEMM_EPI_SWIGLU, false, 0, dev);
            gemm_plan(&r->g_s2, "shared2", T, d->hidden, d->shared_inter, 1, GEMM_EPI_BF16, false, 0, dev);
        }
        r->route_cfg = (struct moe_route_config){d->experts, d->top_k, d->groups, d->topk_group, d->norm_topk, d->hidden};
        moe_route_request(&r->r_route, r->route_cfg);
    } else {
        gemm_plan(&r->g_d13, "mlp13", T, 2 * d->inter, d->hidden, 1, GEMM_EPI_SWIGLU, false, 0, dev);
        gemm_plan(&r->g_d2, "mlp2", T, d->hidden, d->inter, 1, GEMM_EPI_BF16, false, 0, dev);
    }
}

// Every GEMM of a run, for workspace sizing and binding loops.
static int ds_run_gemms(struct ds_run *r, struct lwb_gemm **out) {
    struct lwb_gemm *all[] = {&r->g_a, &r->g_qb, &r->g_uk, &r->g_uv, &r->g_kn, &r->g_vt, &r->g_o,
                              &r->g_gate, &r->g_e13, &r->g_e2, &r->g_s13, &r->g_s2, &r->g_d13, &r->g_d2};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++)
        if (all[i]->req.family) out[n++] = all[i];
    return n;
}

// The JIT requests of a run (pointers into it).
static int ds_run_requests(struct ds_run *r, struct lwb_kreq **out) {
    int n = 0;
    out[n++] = &r->r_in, out[n++] = &r->r_post, out[n++] = &r->r_qa, out[n++] = &r->r_kva, out[n++] = &r->r_rope;
    struct lwb_gemm *g[16];
    int ng = ds_run_gemms(r, g);
    for (int i = 0; i < ng; i++) out[n++] = &g[i]->req;
    if (r->dec.req.family) out[n++] = &r->dec.req;
    if (r->pre.req.family) out[n++] = &r->pre.req;
    if (r->r_route.family) out[n++] = &r->r_route;
    return n;
}

// Grow the shared buffers' sizes to what this run needs (split-K workspace, attention split
// partials, the gate's partial slabs).
static void ds_run_workspace(struct ds_run *r, struct ds_buffers *b) {
    struct lwb_gemm *g[16];
    int n = ds_run_gemms(r, g);
    for (int i = 0; i < n; i++) b->gemm_ws_bytes = LWB_MAX(b->gemm_ws_bytes, gemm_workspace_bytes(g[i]));
    if (r->dec.req.family)
        b->mla_ws_bytes = LWB_MAX(b->mla_ws_bytes, mla_decode_workspace(&r->dec.cfg, r->p.tokens));
    if (r->L->moe) b->logit_splits = LWB_MAX(b->logit_splits, r->g_gate.cfg.splitk);
}

// Tensor maps and pointers, once buffers and weights exist (the kernels must be loaded).
static void ds_run_bind(struct ds_run *r, const struct ds_dims *d, const struct ds_buffers *b) {
    const struct ds_weights *w = &r->L->w;
    const struct ds_problem *p = &r->p;
    const long long T = p->tokens, H = d->hidden;
    const int A = d->q_lora + d->kv_row;
    struct lwb_operand x = {b->x, T, d->hidden, H, 1, 0};
    struct lwb_operand wa = {w->fused_a, A, d->hidden, H, 1, 0};
    gemm_bind(&r->g_a, &x, &wa, b->a_out, A, 0, b->gemm_ws);
    struct lwb_operand qa = {b->qa_n, T, d->q_lora, d->q_lora, 1, 0};
    struct lwb_operand wqb = {w->q_b, (long long)d->heads * d->qk, d->q_lora, d->q_lora, 1, 0};
    gemm_bind(&r->g_qb, &qa, &wqb, b->q, (long long)d->heads * d->qk, 0, b->gemm_ws);
    const long long kvb_head = (long long)(d->nope + d->v) * d->kv_lora; // elements per head of kv_b
    if (!p->ctx) {
        // q_abs[:, h, 0:512] = q_nope[:, h] W_UK[h]
        struct lwb_operand qn = {b->q, T, d->nope, (long long)d->heads * d->qk, d->heads, d->qk};
        struct lwb_operand uk = {w->w_uk_t, d->kv_lora, d->nope, d->nope, d->heads, (long long)d->kv_lora * d->nope};
        gemm_bind(&r->g_uk, &qn, &uk, b->q_abs, (long long)d->heads * d->kv_row, d->kv_row, b->gemm_ws);
        // attn[:, h*128 .. +128] = o_lat[:, h] W_UV[h]^T
        struct lwb_operand ol = {b->o_lat, T, d->kv_lora, (long long)d->heads * d->kv_lora, d->heads, d->kv_lora};
        struct lwb_operand uv = {w->kv_b + (CUdeviceptr)d->nope * d->kv_lora * 2, d->v, d->kv_lora, d->kv_lora,
                                 d->heads, kvb_head};
        gemm_bind(&r->g_uv, &ol, &uv, b->attn, (long long)d->heads * d->v, d->v, b->gemm_ws);
        mla_decode_bind(&r->dec, b->q_abs, (int)T, r->L->cache, r->L->blocks);
    } else {
        const long long keys = (long long)p->batch * mla_prefill_pitch(p->kv_len);
        const CUdeviceptr rows = b->kv_all;
        struct lwb_operand lat = {rows, keys, d->kv_lora, d->kv_row, 1, 0};
        struct lwb_operand uk = {w->kv_b, d->nope, d->kv_lora, d->kv_lora, d->heads, kvb_head};
        gemm_bind(&r->g_kn, &lat, &uk, b->kn, (long long)d->heads * d->nope, d->nope, b->gemm_ws);
        struct lwb_operand uv = {w->kv_b + (CUdeviceptr)d->nope * d->kv_lora * 2, d->v, d->kv_lora, d->kv_lora,
                                 d->heads, kvb_head};
        gemm_bind(&r->g_vt, &uv, &lat, b->vt, b->key_stride, (long long)d->v * b->key_stride, b->gemm_ws);
        mla_prefill_bind(&r->pre, b->q, (int)T, b->kn, rows, (int)keys, b->vt, (int)b->key_stride);
    }
    struct lwb_operand at = {b->attn, T, d->heads * d->v, (long long)d->heads * d->v, 1, 0};
    struct lwb_operand wo = {w->o_proj, H, d->heads * d->v, (long long)d->heads * d->v, 1, 0};
    gemm_bind(&r->g_o, &at, &wo, b->attn_out, H, 0, b->gemm_ws);
    if (r->L->moe) {
        const int E = d->experts, kk = d->top_k;
        struct lwb_operand wg = {w->gate, E, d->hidden, H, 1, 0};
        gemm_bind(&r->g_gate, &x, &wg, b->logits, E, 0, b->gemm_ws);
        struct lwb_operand xp = {b->x_perm, T * kk, d->hidden, H, 1, 0};
        struct lwb_operand w13 = {w->w13, 2LL * d->moe_inter, d->hidden, H, E, 2LL * d->moe_inter * H};
        gemm_bind(&r->g_e13, &xp, &w13, b->h_perm, d->moe_inter, 0, 0);
        gemm_bind_tiles(&r->g_e13, b->perm.tiles_a, b->perm.ntiles,
                        moe_max_tiles((int)T, kk, E, gemm_tile_rows(&r->g_e13)));
        struct lwb_operand hp = {b->h_perm, T * kk, d->moe_inter, d->moe_inter, 1, 0};
        struct lwb_operand w2 = {w->w2, H, d->moe_inter, d->moe_inter, E, H * d->moe_inter};
        gemm_bind(&r->g_e2, &hp, &w2, b->y_perm, H, 0, 0);
        gemm_bind_tiles(&r->g_e2, b->perm.tiles_b, b->perm.ntiles + 4,
                        moe_max_tiles((int)T, kk, E, gemm_tile_rows(&r->g_e2)));
        if (d->shared_inter) {
            struct lwb_operand s13 = {w->s13, 2LL * d->shared_inter, d->hidden, H, 1, 0};
            gemm_bind(&r->g_s13, &x, &s13, b->hs, d->shared_inter, 0, b->gemm_ws);
            struct lwb_operand hs = {b->hs, T, d->shared_inter, d->shared_inter, 1, 0};
            struct lwb_operand s2 = {w->s2, H, d->shared_inter, d->shared_inter, 1, 0};
            gemm_bind(&r->g_s2, &hs, &s2, b->ys, H, 0, b->gemm_ws);
        }
    } else {
        struct lwb_operand d13 = {w->d13, 2LL * d->inter, d->hidden, H, 1, 0};
        gemm_bind(&r->g_d13, &x, &d13, b->hd, d->inter, 0, b->gemm_ws);
        struct lwb_operand hd = {b->hd, T, d->inter, d->inter, 1, 0};
        struct lwb_operand d2 = {w->d2, H, d->inter, d->inter, 1, 0};
        gemm_bind(&r->g_d2, &hd, &d2, b->hidden, H, 0, b->gemm_ws);
    }
}

// ---------------------------------------------------------------------------------------------
// The modules. Each enqueues its work on `s`; the layer wraps them in NVTX ranges.

// input_layernorm: the first layer adds the problem's inputs, later ones the running stream.
static void ds_module_input_norm(struct ds_run *r, const struct ds_dims *d, const struct ds_buffers *b, CUstream s,
                                 bool first) {
    const long long H = d->hidden;
    rmsnorm_enqueue(&r->r_in, r->n_in, s, first ? b->hidden_in : b->hidden, H, first ? b->residual_in : b->residual,
                    b->residual, H, r->L->w.in_norm, b->x, H, r->p.tokens, d->eps);
}

static void ds_module_mla(struct ds_run *r, const struct ds_dims *d, const struct ds_buffers *b, CUstream s) {
    const struct ds_problem *p = &r->p;
    const int T = p->tokens, A = d->q_lora + d->kv_row;
    gemm_enqueue(&r->g_a, s);
    rmsnorm_enqueue(&r->r_qa, r->n_qa, s, b->a_out, A, 0, 0, 0, r->L->w.q_a_norm, b->qa_n, d->q_lora, T, d->eps);
    rmsnorm_enqueue(&r->r_kva, r->n_kva, s, b->a_out + (CUdeviceptr)d->q_lora * 2, A, 0, 0, 0, r->L->w.kv_a_norm,
                    b->latent, d->kv_lora, T, d->eps);
    gemm_enqueue(&r->g_qb, s);
    if (!p->ctx) gemm_enqueue(&r->g_uk, s);
    struct mla_rope_args ra = {b->q, p->ctx ? 0 : b->q_abs, b->a_out + (CUdeviceptr)(d->q_lora + d->kv_lora) * 2, A,
                               b->latent, d->kv_lora, b->kv_new, r->L->cache, b->block_table, b->kv_lens,
                               b->cos_t, b->sin_t, b->max_blocks, p->qlen, T};
    mla_rope_enqueue(&r->r_rope, s, &ra);
    if (!p->ctx) {
        mla_decode_enqueue(&r->dec, s, b->block_table, b->max_blocks, b->kv_lens, d->sm_scale, b->o_lat, b->mla_ws);
        gemm_enqueue(&r->g_uv, s);
    } else {
        mla_gather_enqueue(&r->r_rope, s, r->L->cache, b->block_table, b->max_blocks, p->kv_len,
                           mla_prefill_pitch(p->kv_len), p->batch, b->kv_all);
        gemm_enqueue(&r->g_kn, s);
        gemm_enqueue(&r->g_vt, s);
        mla_prefill_enqueue(&r->pre, s, p->batch, p->qlen, p->kv_len, d->sm_scale, b->attn);
    }
    gemm_enqueue(&r->g_o, s);
}

static void ds_module_post_norm(struct ds_run *r, const struct ds_dims *d, const struct ds_buffers *b, CUstream s) {
    const long long H = d->hidden;
    rmsnorm_enqueue(&r->r_post, r->n_post, s, b->attn_out, H, b->residual, b->residual, H, r->L->w.post_norm, b->x, H,
                    r->p.tokens, d->eps);
}

// Deepseekv3MoE > GatedMLP (the shared experts): x -> ys.
static void ds_module_shared(struct ds_run *r, CUstream s) {
    gemm_enqueue(&r->g_s13, s);
    gemm_enqueue(&r->g_s2, s);
}
// Deepseekv3MoE > DeepseekV3Gate: the router logits (as split-K partials), nothing more: as in
// TensorRT-LLM, whose DeepseekV3Gate module computes logits and leaves routing to the MoE.
static void ds_module_gate(struct ds_run *r, CUstream s) { gemm_enqueue(&r->g_gate, s); }
// Deepseekv3MoE > MoE: expert choice (and the balance override), permute, the two grouped expert
// products, combine (adding the shared experts' output) into the layer's hidden output.
static void ds_module_experts(struct ds_run *r, const struct ds_dims *d, struct ds_buffers *b, CUstream s) {
    moe_topk_enqueue(&r->r_route, s, b->logits, r->g_gate.cfg.splitk, r->p.tokens * (long long)d->experts,
                     r->L->w.bias, r->p.tokens, d->scaling, r->use_override ? b->override : 0, b->ids, b->weights);
    moe_permute_enqueue(&r->r_route, r->route_cfg, s, &b->perm, b->ids, r->p.tokens, gemm_tile_rows(&r->g_e13),
                        gemm_tile_rows(&r->g_e2), b->x, b->x_perm);
    gemm_enqueue(&r->g_e13, s);
    gemm_enqueue(&r->g_e2, s);
    moe_combine_enqueue(&r->r_route, s, b->y_perm, &b->perm, b->weights, d->shared_inter ? b->ys : 0, b->hidden,
                        r->p.tokens);
}
// GatedMLP of a dense layer: x -> hidden.
static void ds_module_mlp(struct ds_run *r, CUstream s) {
    gemm_enqueue(&r->g_d13, s);
    gemm_enqueue(&r->g_d2, s);
}

// The whole layer, with the NVTX ranges TensorRT-LLM's mark_ranges() puts on these modules.
static void ds_forward(struct ds_run *r, const struct ds_dims *d, struct ds_buffers *b, CUstream s, bool first) {
    ds_module_input_norm(r, d, b, s, first);
    lwb_nvtx_push("MLA");
    ds_module_mla(r, d, b, s);
    lwb_nvtx_pop();
    ds_module_post_norm(r, d, b, s);
    if (r->L->moe) {
        lwb_nvtx_push("Deepseekv3MoE");
        if (d->shared_inter) {
            lwb_nvtx_push("GatedMLP");
            ds_module_shared(r, s);
            lwb_nvtx_pop();
        }
        lwb_nvtx_push("DeepseekV3Gate");
        ds_module_gate(r, s);
        lwb_nvtx_pop();
        lwb_nvtx_push("MoE");
        ds_module_experts(r, d, b, s);
        lwb_nvtx_pop();
        lwb_nvtx_pop();
    } else {
        lwb_nvtx_push("GatedMLP");
        ds_module_mlp(r, s);
        lwb_nvtx_pop();
    }
}

// ---------------------------------------------------------------------------------------------
// Costs: FLOPs and the bytes each module must move at least (weights read once, activations in
// and out once), for floors. `active_experts`: routed experts that receive tokens.

struct ds_cost {
    const char *module; // NVTX name
    double flops, bytes;
};

static double ds_active_experts_expected(const struct ds_dims *d, int tokens) {
    double miss = pow(1.0 - (double)d->top_k / d->experts, tokens);
    return d->experts * (1.0 - miss);
}

// Fills up to 5 entries: MLA, (Deepseekv3MoE, GatedMLP shared, DeepseekV3Gate, MoE) or GatedMLP.
static int ds_cost(const struct ds_dims *d, const struct ds_problem *p, bool moe, double active_experts,
                   struct ds_cost *out) {
    const double T = p->tokens, H = d->hidden, A = d->q_lora + d->kv_row, nh = d->heads;
    int n = 0;
    // MLA: the projections, attention over the cache, the output projection.
    double f = gemm_flops(T, (int)A, (int)H, 1) + gemm_flops(T, (int)(nh * d->qk), d->q_lora, 1) +
               gemm_flops(T, (int)H, (int)(nh * d->v), 1);
    double bytes = 2.0 * (A * H + nh * d->qk * d->q_lora + H * nh * d->v) // weights
                   + 2.0 * T * (H + A + d->q_lora + nh * d->qk + nh * d->v + H) // activations in and out
                   + 2.0 * T * d->kv_row;                               // new cache rows
    double cached = (double)p->batch * p->kv_len;
    if (!p->ctx) {
        f += gemm_flops(T, d->kv_lora, d->nope, (int)nh) + gemm_flops(T, d->v, d->kv_lora, (int)nh);
        double pairs = 0;
        for (int i = 0; i < p->qlen; i++) pairs += (double)p->batch * (p->kv_len - (p->qlen - 1 - i));
        f += mla_decode_flops((int)nh, pairs);
        bytes += 2.0 * nh * d->kv_lora * (d->nope + d->v) + cached * d->kv_row * 2;
    } else {
        f += gemm_flops(cached, d->nope, d->kv_lora, (int)nh) + gemm_flops(d->v, (int)cached, d->kv_lora, (int)nh);
        f += mla_prefill_flops((int)nh, p->batch, p->qlen, p->kv_len);
        bytes += 2.0 * nh * d->kv_lora * (d->nope + d->v) + cached * d->kv_row * 2;
    }
    out[n++] = (struct ds_cost){"MLA", f, bytes};
    if (moe) {
        double routed_rows = T * d->top_k;
        double sf = d->shared_inter ? gemm_flops(T, 2 * d->shared_inter, (int)H, 1) + gemm_flops(T, (int)H, d->shared_inter, 1) : 0;
        double sb = d->shared_inter ? 2.0 * 3 * H * d->shared_inter + 2.0 * T * (2 * H + d->shared_inter) : 0;
        double gf = gemm_flops(T, d->experts, (int)H, 1);
        double gb = 2.0 * d->experts * H + 2.0 * T * H + 4.0 * T * d->experts;
        double ef = gemm_flops(routed_rows, 2 * d->moe_inter, (int)H, 1) + gemm_flops(routed_rows, (int)H, d->moe_inter, 1);
        double eb = 2.0 * 3 * H * d->moe_inter * active_experts + 2.0 * T * H * 2 + 2.0 * routed_rows * (2 * H + 2 * d->moe_inter)
                    + 4.0 * T * d->experts + 8.0 * routed_rows; // routing: logits in, choices out
        out[n++] = (struct ds_cost){"Deepseekv3MoE", sf + gf + ef, sb + gb + eb};
        if (d->shared_inter) out[n++] = (struct ds_cost){"GatedMLP", sf, sb};
        out[n++] = (struct ds_cost){"DeepseekV3Gate", gf, gb};
        out[n++] = (struct ds_cost){"MoE", ef, eb};
    } else {
        double mf = gemm_flops(T, 2 * d->inter, (int)H, 1) + gemm_flops(T, (int)H, d->inter, 1);
        double mb = 2.0 * 3 * H * d->inter + 2.0 * T * (2 * H + d->inter);
        out[n++] = (struct ds_cost){"GatedMLP", mf, mb};
    }
    return n;
}

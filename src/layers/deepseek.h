// layers/deepseek.h: the DeepSeek-V3/R1 family: its decoder layer (input RMSNorm with the
// residual add, Multi-head Latent Attention, post-attention RMSNorm, then the MoE block: shared
// experts, gate, routing and routed experts; or, for the first first_k_dense_replace layers, a
// gated MLP), cut into this rank's share, with the communication of the reference's mapping.
//
// Defines: struct ds_dims (this rank's shapes), struct ds_layer (one layer's weights and KV
// cache), struct ds_buffers (activations and workspaces shared by the layers, sized for the
// largest problem), struct ds_run (one layer's launches for one problem), struct ds_family (the
// family's state), ds_cost (FLOPs, bytes and bytes on the links of each module: floors), and the
// table functions (ds_create, ds_plan, ... ds_verify) that src/families.h registers.
//
// Ranks (reference §3.1; what TensorRT-LLM's DeepSeek-V3 model does in each case):
// - Routed experts are split over every rank (EP): rank r holds experts [r E/N, (r+1) E/N).
// - Attention data-parallel: every rank has its own requests, cache and whole attention; the
//   router and top-k run on the rank's own tokens; the MoE module then either all-gathers every
//   rank's tokens, expert ids and weights, runs its experts on the slots routed to them and
//   reduce-scatters the weighted sums (the shared expert's output rides along for the rank's own
//   rows), or sends each token only to the ranks of its experts and sums what comes back (the
//   all-to-all); both inside the `MoE` range, as TensorRT-LLM's MoE.forward holds them.
// - Attention tensor-parallel: tokens are replicated; each rank has heads/N heads (q_b and kv_b
//   split by heads, o_proj by its input columns), a 1/N slice of the shared experts' and dense
//   MLPs' intermediate width, and its experts; partial outputs are all-reduced. As TensorRT-LLM
//   fuses those all-reduces with the next RMSNorm in the decoder layer, they sit outside every
//   module range, except the dense layers' attention all-reduce, which o_proj does inside `MLA`.
// Every weight shard holds exactly the values of the whole weight at its positions (seeded by
// global index), and inputs and cache contents by global request, so a run on N ranks computes
// what one GPU computes for the same N x batch requests.
//
// Paths: generation (GEN) uses the absorbed attention (q_nope through W_UK, attention over the
// latent cache, output through W_UV); context (CTX) expands the latents through kv_b_proj and
// runs causal attention with 192-wide queries and keys. Both write the new tokens' latents to a
// paged cache first.
//
// DeepSeek-V3.2 (model_type deepseek_v32) is this layer with DeepSeek Sparse Attention, as
// TensorRT-LLM runs it on Hopper: inside `MLA`, the lightning indexer (wq_b on the q latent, wk
// and weights_proj on the layer's input; layers/dsa.h prepares keys and queries, writes the keys
// to a paged fp8 indexer cache with the latent cache's block table and scores every visible key;
// layers/dsa_topk.h keeps the index_topk best per query token), then the absorbed attention over
// each token's selected latents only (mla_decode's sparse form), in both phases. When no request
// has more than index_topk visible keys the scores are skipped and every key is selected, as
// TensorRT-LLM's short-sequence path does. The indexer is never split over ranks (attention TP
// splits MLA's heads; every rank computes the whole indexer).
//
// Weights are stored as the kernels want them: q_a_proj and kv_a_proj_with_mqa as one fused
// matrix; each gate_proj/up_proj pair as interleaved rows (the GEMM's SwiGLU epilogue reads a
// pair from adjacent columns); W_UK transposed (derived once from kv_b_proj). The dump
// (layers/deepseek_dump.h) writes them back under a checkpoint's names and layouts.
//
// FP8 (--weight-dtype fp8, the default for DeepSeek's FP8 checkpoints), as TensorRT-LLM runs it
// on Hopper: every Linear of attention and the MLPs is e4m3 with one fp32 scale per 128 x 128
// block (the checkpoint's weight_scale_inv), multiplied by fp8 activations quantised per token and
// 128 channels (layers/quant.h says where that is fused); the router gate stays bf16 (fp32
// logits) and kv_b_proj is dequantised to bf16 at load, for the bf16 absorbed products (W_UK,
// W_UV) and the context phase's expansion. fused q_a/kv_a keeps both matrices' scale rows (q_lora
// is a multiple of 128); gate/up pairs are 128-row groups of [64 gate rows | 64 up rows], each
// half with its own block's scale, so a 128-wide GEMM tile holds 64 SwiGLU outputs.
//
// Does not: loop over problems, time or profile (runner.h), or choose balance selections
// (routing.h; setup uploads them).
// Tested by test/test_plan.c (shapes, shards, costs, memory plan, kernels of a plan without a
// GPU) and on the GPU by test/gpu/check_layer.py against transformers' DeepseekV3DecoderLayer.
#pragma once

struct ds_dims {
    int hidden;              // H
    int heads;               // this rank's attention heads
    int heads_total, head0;  // heads of the model as run; this rank's first
    int q_lora, kv_lora;
    int nope, rope, v;       // per-head dims
    int qk;                  // nope + rope
    int kv_row;              // cached row: kv_lora + rope
    int experts;             // routed experts of the model as run (the router's width)
    int experts_local, e0;   // this rank's experts and its first
    int top_k, groups, topk_group, norm_topk;
    int moe_inter;           // routed expert intermediate
    int shared_inter;        // this rank's share of the shared experts' intermediate
    int shared_total, shared0; // their whole width (n_shared x moe_inter); this rank's first column
    int inter, inter_total, inter0; // dense MLP intermediate: this rank's, the whole, the first
    float scaling;           // routed_scaling_factor
    float eps;               // rms_norm_eps
    float sm_scale;          // softmax scale (YaRN mscale included)
    int page;                // tokens per KV-cache block
    bool fp8;                // fp8 weights (e4m3, 128 x 128 block scales) and fp8 projections
    int idx_topk;            // DeepSeek-V3.2: keys each query token attends to; 0: dense attention (V3)
};

static struct ds_dims ds_dims_from_model(const struct lwb_model *m, const struct lwb_shard *sh, int page) {
    const int tp = sh->tp_size, ep = sh->ep_size;
    struct ds_dims d = {
        .hidden = m->hidden, .heads_total = m->heads, .q_lora = m->q_lora_rank, .kv_lora = m->kv_lora_rank,
        .nope = m->qk_nope_dim, .rope = m->qk_rope_dim, .v = m->v_head_dim, .qk = model_qk_head_dim(m),
        .kv_row = model_kv_cache_dim(m), .experts = m->n_experts, .top_k = m->top_k, .groups = m->n_group,
        .topk_group = m->topk_group, .norm_topk = m->norm_topk_prob, .moe_inter = m->moe_intermediate,
        .shared_total = m->moe_intermediate * m->n_shared_experts, .inter_total = m->intermediate,
        .scaling = (float)m->routed_scaling_factor, .eps = (float)m->rms_norm_eps,
        .sm_scale = (float)model_softmax_scale(m), .page = page, .idx_topk = m->index_topk};
    d.heads = d.heads_total / tp, d.head0 = sh->tp_rank * d.heads;
    d.experts_local = d.experts / ep, d.e0 = sh->ep_rank * d.experts_local;
    d.shared_inter = d.shared_total / tp, d.shared0 = sh->tp_rank * d.shared_inter;
    d.inter = d.inter_total / tp, d.inter0 = sh->tp_rank * d.inter;
    return d;
}

// What the kernels and the split cannot run is refused here (one line) rather than producing
// wrong numbers.
static void ds_dims_check(const struct ds_dims *d, const struct lwb_shard *sh, const char *model) {
    if (d->nope != 128 || d->rope != 64 || d->v != 128 || d->kv_lora != 512)
        lwb_user_error("model %s: lwb's MLA kernels need qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128 "
                       "and kv_lora_rank 512 (got %d, %d, %d, %d)",
                       model, d->nope, d->rope, d->v, d->kv_lora);
    const int tp = sh->tp_size, ep = sh->ep_size;
    if (d->heads_total % tp)
        lwb_user_error("model %s: %d attention heads do not split over %d ranks of attention TP; use a number of "
                       "ranks that divides %d, or --enable-attention-dp",
                       model, d->heads_total, tp, d->heads_total);
    // TensorRT-LLM splits a dense or shared MLP over gcd(intermediate / 128, TP) ranks; lwb runs the
    // full split only.
    if ((d->inter_total / 128) % tp || (d->shared_total / 128) % tp || d->inter_total % 128 || d->shared_total % 128)
        lwb_user_error("model %s: the dense MLP (%d) and shared experts (%d) must split into 128-wide slices over %d "
                       "ranks of attention TP; use fewer ranks, or --enable-attention-dp",
                       model, d->inter_total, d->shared_total, tp);
    if (d->hidden % 64 || d->q_lora % 64 || d->moe_inter % 64)
        lwb_user_error("model %s: hidden, q_lora_rank and moe_intermediate_size must be multiples of 64", model);
    if (d->experts % ep || ep > 64)
        lwb_user_error("model %s: %d routed experts do not split over %d ranks (at most 64); use a number of ranks "
                       "that divides %d",
                       model, d->experts, ep, d->experts);
    int per_lane = LWB_CEIL_DIV(d->experts, 32), epg = d->groups ? d->experts / d->groups : 0;
    int lanes = per_lane ? epg / per_lane : 0;
    if (d->experts > 1024 || (d->experts > 32 && d->experts % 32) || d->top_k > 32 || !d->groups ||
        d->experts % d->groups || epg % per_lane || lanes < 1 || lanes > 32 || (lanes & (lanes - 1)))
        lwb_user_error("model %s: %d experts in %d groups, top-%d: lwb's routing kernel needs at most 32 experts or "
                       "a multiple of 32 (at most 1024), groups of a power-of-two number of warp lanes, top-k at "
                       "most 32",
                       model, d->experts, d->groups, d->top_k);
    // fp8: every projection's K is whole 128-deep scale blocks, and each rank's slice of a weight
    // starts on a 128 x 128 block (its scales are whole blocks of the checkpoint's).
    if (d->fp8 && (d->hidden % 128 || d->q_lora % 128 || d->moe_inter % 128 || d->kv_lora % 128 ||
                   (d->shared_total && d->shared_inter % 128) || d->inter % 128 || (d->heads * d->qk) % 128))
        lwb_user_error("model %s: fp8 projections need hidden_size, q_lora_rank, kv_lora_rank, moe_intermediate_size "
                       "and each rank's slices (the MLPs' width, heads x %d query rows) in multiples of 128; give "
                       "--weight-dtype bf16%s",
                       model, d->qk, tp > 1 ? ", or fewer ranks of attention TP" : "");
    if (d->idx_topk && d->page % 64)
        lwb_user_error("model %s: DeepSeek-V3.2's indexer cache keeps whole 64-token tiles per block (TensorRT-LLM "
                       "runs it with 64); give --tokens-per-block 64 (or a multiple of 64)",
                       model);
    if (d->idx_topk && d->rope != 64)
        lwb_user_error("model %s: lwb's indexer ropes 64 dims (qk_rope_head_dim %d)", model, d->rope);
    if ((long long)epg * d->topk_group < d->top_k)
        lwb_user_error("model %s: %d groups kept of %d experts each leave fewer than top-k %d experts to choose; "
                       "with --scaled-from, simulate fewer GPUs",
                       model, d->topk_group, epg, d->top_k);
}

// ---------------------------------------------------------------------------------------------
// One layer: weights and cache

struct ds_weights {
    CUdeviceptr next_norm;          // (H) the next layer's input_layernorm (the last layer's: model.norm)
    CUdeviceptr post_norm;          // (H)
    CUdeviceptr fused_a;            // (q_lora + kv_lora + rope, H): q_a_proj rows, then kv_a_proj_with_mqa
    CUdeviceptr q_a_norm;           // (q_lora)
    CUdeviceptr kv_a_norm;          // (kv_lora)
    CUdeviceptr q_b;                // (heads * qk, q_lora)
    CUdeviceptr kv_b;               // (heads * (nope + v), kv_lora): per head nope rows then v rows
    CUdeviceptr w_uk_t;             // (heads, kv_lora, nope): the nope rows of kv_b, transposed
    CUdeviceptr o_proj;             // (H, heads * v)
    CUdeviceptr gate;               // (E, H) MoE router
    CUdeviceptr bias;               // (E) fp32 e_score_correction_bias
    CUdeviceptr w13;                // (E_local, 2 * moe_inter, H): gate/up rows interleaved per expert
    CUdeviceptr w2;                 // (E_local, H, moe_inter)
    CUdeviceptr s13, s2;            // shared experts: (2 * shared_inter, H), (H, shared_inter)
    CUdeviceptr d13, d2;            // dense MLP: (2 * inter, H), (H, inter)
    // fp8 runs: the projections above hold e4m3 bytes, each with its fp32 scales (one per 128 x
    // 128 block; the gate/up pairs one per 64-row half, see below); kv_b is dequantised to bf16
    // from kv_b8 (kept as loaded, for the dump).
    CUdeviceptr fused_a_s, q_b_s, o_proj_s, w13_s, w2_s, s13_s, s2_s, d13_s, d2_s;
    CUdeviceptr kv_b8, kv_b8_s;
    // DeepSeek-V3.2's indexer (whole on every rank): wq_b (64 x 128, q_lora) and wk (128, H) in the
    // run's format (with block scales in fp8), the key's LayerNorm (fp32), weights_proj (64, H) bf16.
    CUdeviceptr i_wq, i_wq_s, i_wk, i_wk_s, i_ln_w, i_ln_b, i_wp;
};

struct ds_layer {
    int index;        // decoder layer index in the model
    bool moe;         // MoE (else dense MLP)
    int moe_slot;     // its place among the run's MoE layers (replayed routing), -1 for dense
    struct ds_weights w;
    CUdeviceptr cache; // (blocks, page, kv_row) bf16: this layer's paged latent cache
    CUdeviceptr icache; // V3.2: (blocks, page x 132 bytes) the indexer's keys (e4m3) and scales
    int blocks;
};

#define DS_BF16(rows, cols) ((size_t)(rows) * (size_t)(cols) * 2)

// Bytes of a rows x cols projection in the run's format, and of its block scales (fp8).
static size_t ds_wbytes(const struct ds_dims *d, size_t rows, size_t cols) { return rows * cols * (d->fp8 ? 1 : 2); }
static size_t ds_sbytes(size_t rows, size_t cols) { return LWB_CEIL_DIV(rows, 128) * LWB_CEIL_DIV(cols, 128) * 4; }

// A projection (and its scales in fp8; gate/up: the pair's 64-row halves, `pairs` matrices).
static CUdeviceptr ds_alloc_linear(struct lwb_mem *m, const struct ds_dims *d, size_t rows, size_t cols,
                                   const char *what, CUdeviceptr *scales, int gate_up_pairs) {
    CUdeviceptr p = mem_alloc(m, MEM_WEIGHTS, ds_wbytes(d, rows, cols), what);
    if (d->fp8) {
        char label[96];
        snprintf(label, sizeof label, "%s scales", what);
        size_t sb = gate_up_pairs ? (size_t)gate_up_pairs * (rows / gate_up_pairs / 64) * LWB_CEIL_DIV(cols, 128) * 4
                                  : ds_sbytes(rows, cols);
        *scales = mem_alloc(m, MEM_WEIGHTS, sb, label);
    }
    return p;
}

static void ds_layer_alloc(struct lwb_mem *m, struct ds_layer *L, const struct ds_dims *d, int blocks) {
    const size_t H = d->hidden, I = d->moe_inter, EL = d->experts_local;
    struct ds_weights *w = &L->w;
    w->next_norm = mem_alloc(m, MEM_WEIGHTS, DS_BF16(H, 1), "next layer's input_layernorm");
    w->post_norm = mem_alloc(m, MEM_WEIGHTS, DS_BF16(H, 1), "post_attention_layernorm");
    w->fused_a = mem_alloc(m, MEM_WEIGHTS, ds_wbytes(d, d->q_lora + d->kv_row, H), "q_a/kv_a projections");
    if (d->fp8) // q_a's and kv_a's block rows, one after the other
        w->fused_a_s = mem_alloc(m, MEM_WEIGHTS, ds_sbytes(d->q_lora, H) + ds_sbytes(d->kv_row, H),
                                 "q_a/kv_a projections scales");
    w->q_a_norm = mem_alloc(m, MEM_WEIGHTS, DS_BF16(d->q_lora, 1), "q_a_layernorm");
    w->kv_a_norm = mem_alloc(m, MEM_WEIGHTS, DS_BF16(d->kv_lora, 1), "kv_a_layernorm");
    w->q_b = ds_alloc_linear(m, d, (size_t)d->heads * d->qk, d->q_lora, "q_b_proj", &w->q_b_s, 0);
    const size_t kvb_rows = (size_t)d->heads * (d->nope + d->v);
    w->kv_b = mem_alloc(m, MEM_WEIGHTS, DS_BF16(kvb_rows, d->kv_lora), d->fp8 ? "kv_b_proj (dequantised)" : "kv_b_proj");
    if (d->fp8) {
        w->kv_b8 = mem_alloc(m, MEM_WEIGHTS, kvb_rows * d->kv_lora, "kv_b_proj (fp8, as loaded)");
        w->kv_b8_s = mem_alloc(m, MEM_WEIGHTS, ds_sbytes(kvb_rows, d->kv_lora), "kv_b_proj scales");
    }
    w->w_uk_t = mem_alloc(m, MEM_WEIGHTS, DS_BF16((size_t)d->heads * d->kv_lora, d->nope), "W_UK transposed");
    w->o_proj = ds_alloc_linear(m, d, H, (size_t)d->heads * d->v, "o_proj", &w->o_proj_s, 0);
    if (L->moe) {
        w->gate = mem_alloc(m, MEM_WEIGHTS, DS_BF16(d->experts, H), "gate");
        w->bias = mem_alloc(m, MEM_WEIGHTS, (size_t)d->experts * 4, "e_score_correction_bias");
        w->w13 = ds_alloc_linear(m, d, EL * 2 * I, H, "experts gate/up", &w->w13_s, (int)EL);
        w->w2 = ds_alloc_linear(m, d, EL * H, I, "experts down", &w->w2_s, 0);
        if (d->shared_inter) {
            w->s13 = ds_alloc_linear(m, d, 2 * (size_t)d->shared_inter, H, "shared experts gate/up", &w->s13_s, 1);
            w->s2 = ds_alloc_linear(m, d, H, d->shared_inter, "shared experts down", &w->s2_s, 0);
        }
    } else {
        w->d13 = ds_alloc_linear(m, d, 2 * (size_t)d->inter, H, "mlp gate/up", &w->d13_s, 1);
        w->d2 = ds_alloc_linear(m, d, H, d->inter, "mlp down", &w->d2_s, 0);
    }
    if (d->idx_topk) {
        w->i_wq = ds_alloc_linear(m, d, DSA_HEADS * DSA_DIM, d->q_lora, "indexer wq_b", &w->i_wq_s, 0);
        w->i_wk = ds_alloc_linear(m, d, DSA_DIM, H, "indexer wk", &w->i_wk_s, 0);
        w->i_ln_w = mem_alloc(m, MEM_WEIGHTS, DSA_DIM * 4, "indexer k_norm weight");
        w->i_ln_b = mem_alloc(m, MEM_WEIGHTS, DSA_DIM * 4, "indexer k_norm bias");
        w->i_wp = mem_alloc(m, MEM_WEIGHTS, DS_BF16(DSA_HEADS, H), "indexer weights_proj");
    }
    L->blocks = blocks;
    L->cache = mem_alloc(m, MEM_KV, DS_BF16((size_t)blocks * d->page, d->kv_row), "KV cache");
    if (d->idx_topk) L->icache = mem_alloc(m, MEM_IKV, dsa_cache_bytes(blocks, d->page), "indexer K cache");
}

// What lwb derives from the weights as loaded: (fp8) kv_b dequantised to bf16; W_UK^T[h] = (nope
// rows of kv_b for head h)^T: (kv_lora, nope).
static void ds_layer_derive(struct ds_layer *L, const struct ds_dims *d, const struct lwb_kreq *init, CUstream s) {
    const struct ds_weights *w = &L->w;
    if (d->fp8)
        init_dequant_fp8(init, s, w->kv_b8, w->kv_b8_s, (long long)d->heads * (d->nope + d->v), d->kv_lora, w->kv_b);
    init_transpose(init, s, w->kv_b, d->kv_lora, (long long)(d->nope + d->v) * d->kv_lora, w->w_uk_t, d->nope,
                   (long long)d->kv_lora * d->nope, d->nope, d->kv_lora, d->heads);
}

// The fp8 weights: e4m3 values over the whole range times block scales drawn so that each
// weight is about uniform in +-sqrt(3 / fan_in) (as the bf16 fill), each matrix from its own
// seed (q_a and kv_a apart, as a checkpoint stores them); shards at their place in the whole.
static void ds_layer_init_fp8(struct ds_layer *L, const struct ds_dims *d, const struct lwb_kreq *init, CUstream s,
                              unsigned long long k) {
    const struct ds_weights *w = &L->w;
    const long long H = d->hidden, I = d->moe_inter, KB = H / 128;
#define DS_AMAX(fan_in) sqrtf(3.0f / (float)(fan_in))
    init_fill_fp8(init, s, w->fused_a, w->fused_a_s, d->q_lora, H, H, 0, 0, ++k, DS_AMAX(H));
    init_fill_fp8(init, s, w->fused_a + (CUdeviceptr)d->q_lora * H, w->fused_a_s + (CUdeviceptr)(d->q_lora / 128) * KB * 4,
                  d->kv_row, H, H, 0, 0, ++k, DS_AMAX(H));
    init_fill_fp8(init, s, w->q_b, w->q_b_s, (long long)d->heads * d->qk, d->q_lora, d->q_lora,
                  (long long)d->head0 * d->qk, 0, ++k, DS_AMAX(d->q_lora));
    const long long kvb_rows = (long long)d->heads * (d->nope + d->v);
    init_fill_fp8(init, s, w->kv_b8, w->kv_b8_s, kvb_rows, d->kv_lora, d->kv_lora, (long long)d->head0 * (d->nope + d->v),
                  0, ++k, DS_AMAX(d->kv_lora));
    init_fill_fp8(init, s, w->o_proj, w->o_proj_s, H, (long long)d->heads * d->v, (long long)d->heads_total * d->v, 0,
                  (long long)d->head0 * d->v, ++k, DS_AMAX((long long)d->heads_total * d->v));
    if (d->idx_topk) {
        init_fill_fp8(init, s, w->i_wq, w->i_wq_s, DSA_HEADS * DSA_DIM, d->q_lora, d->q_lora, 0, 0, ++k, DS_AMAX(d->q_lora));
        init_fill_fp8(init, s, w->i_wk, w->i_wk_s, DSA_DIM, H, H, 0, 0, ++k, DS_AMAX(H));
    }
    if (L->moe) {
        init_fill_bf16(init, s, w->gate, (long long)d->experts * H, ++k, -DS_AMAX(H), DS_AMAX(H));
        init_fill_f32(init, s, w->bias, d->experts, ++k, -0.05f, 0.05f);
        init_fill_fp8_gateup(init, s, w->w13, w->w13_s, d->experts_local, d->e0, (int)I, 0, (int)I, (int)H, ++k,
                             DS_AMAX(H));
        init_fill_fp8(init, s, w->w2, w->w2_s, (long long)d->experts_local * H, I, I, (long long)d->e0 * H, 0, ++k,
                      DS_AMAX(I));
        if (d->shared_inter) {
            init_fill_fp8_gateup(init, s, w->s13, w->s13_s, 1, 0, d->shared_inter, d->shared0, d->shared_total, (int)H,
                                 ++k, DS_AMAX(H));
            init_fill_fp8(init, s, w->s2, w->s2_s, H, d->shared_inter, d->shared_total, 0, d->shared0, ++k,
                          DS_AMAX(d->shared_total));
        }
    } else {
        init_fill_fp8_gateup(init, s, w->d13, w->d13_s, 1, 0, d->inter, d->inter0, d->inter_total, (int)H, ++k,
                             DS_AMAX(H));
        init_fill_fp8(init, s, w->d2, w->d2_s, H, d->inter, d->inter_total, 0, d->inter0, ++k, DS_AMAX(d->inter_total));
    }
#undef DS_AMAX
}

// Random weights scaled like a trained model's: Linear weights uniform with standard deviation
// 1/sqrt(fan_in) (activations keep their scale through each product, router logits are O(1),
// nothing overflows); norm weights around 1; a small correction bias. With the reference's
// torch.rand inputs (all positive, a shared mean), unmodified routing sends most tokens to a few
// experts; the balance methods set the distribution explicitly. A shard is filled at its place
// in the whole weight (init_fill_bf16_at), with the whole weight's seed and fan-in.
// The cache is filled with finite values everywhere (past tokens are overwritten by the fill).
static void ds_layer_init(struct ds_layer *L, const struct ds_dims *d, const struct lwb_kreq *init, CUstream s,
                          unsigned long long seed) {
    const struct ds_weights *w = &L->w;
    unsigned long long k = seed * 1000003ULL + (unsigned long long)L->index * 101;
#define DS_FILL_AT(p, rows, cols, ld, first, fan_in)                                                   \
    do {                                                                                               \
        float a_ = sqrtf(3.0f / (float)(fan_in));                                                      \
        init_fill_bf16_at(init, s, p, (long long)(rows), (long long)(cols), (long long)(ld), (long long)(first), \
                          ++k, -a_, a_);                                                               \
    } while (0)
#define DS_FILL(p, rows, cols, fan_in) DS_FILL_AT(p, rows, cols, cols, 0, fan_in)
    const long long H = d->hidden, I = d->moe_inter;
    init_fill_bf16(init, s, w->next_norm, H, ++k, 0.8f, 1.2f);
    init_fill_bf16(init, s, w->post_norm, H, ++k, 0.8f, 1.2f);
    init_fill_bf16(init, s, w->q_a_norm, d->q_lora, ++k, 0.8f, 1.2f);
    init_fill_bf16(init, s, w->kv_a_norm, d->kv_lora, ++k, 0.8f, 1.2f);
    if (d->idx_topk) { // the format-independent parts of the indexer; the cache's unused slots zeroed
        init_fill_f32(init, s, w->i_ln_w, DSA_DIM, ++k, 0.8f, 1.2f);
        init_fill_f32(init, s, w->i_ln_b, DSA_DIM, ++k, -0.1f, 0.1f);
        const float a = sqrtf(3.0f / (float)H);
        init_fill_bf16(init, s, w->i_wp, DSA_HEADS * H, ++k, -a, a);
        CU_CHECK(lwb_cu.cuMemsetD8Async(L->icache, 0, dsa_cache_bytes(L->blocks, d->page), s));
    }
    if (d->fp8) {
        ds_layer_init_fp8(L, d, init, s, k);
        ds_layer_derive(L, d, init, s);
        init_fill_bf16(init, s, L->cache, (long long)L->blocks * d->page * d->kv_row, k + 1000, -1.f, 1.f);
        return;
    }
    DS_FILL(w->fused_a, d->q_lora + d->kv_row, H, H);
    DS_FILL_AT(w->q_b, (long long)d->heads * d->qk, d->q_lora, d->q_lora, (long long)d->head0 * d->qk * d->q_lora,
               d->q_lora);
    DS_FILL_AT(w->kv_b, (long long)d->heads * (d->nope + d->v), d->kv_lora, d->kv_lora,
               (long long)d->head0 * (d->nope + d->v) * d->kv_lora, d->kv_lora);
    DS_FILL_AT(w->o_proj, H, (long long)d->heads * d->v, (long long)d->heads_total * d->v, (long long)d->head0 * d->v,
               (long long)d->heads_total * d->v);
    if (d->idx_topk) {
        DS_FILL(w->i_wq, DSA_HEADS * DSA_DIM, d->q_lora, d->q_lora);
        DS_FILL(w->i_wk, DSA_DIM, H, H);
    }
    if (L->moe) {
        DS_FILL(w->gate, d->experts, H, H);
        init_fill_f32(init, s, w->bias, d->experts, ++k, -0.05f, 0.05f);
        DS_FILL_AT(w->w13, (long long)d->experts_local * 2 * I, H, H, (long long)d->e0 * 2 * I * H, H);
        DS_FILL_AT(w->w2, (long long)d->experts_local * H, I, I, (long long)d->e0 * H * I, I);
        if (d->shared_inter) {
            DS_FILL_AT(w->s13, 2LL * d->shared_inter, H, H, 2LL * d->shared0 * H, H);
            DS_FILL_AT(w->s2, H, d->shared_inter, d->shared_total, d->shared0, d->shared_total);
        }
    } else {
        DS_FILL_AT(w->d13, 2LL * d->inter, H, H, 2LL * d->inter0 * H, H);
        DS_FILL_AT(w->d2, H, d->inter, d->inter_total, d->inter0, d->inter_total);
    }
    ds_layer_derive(L, d, init, s);
    init_fill_bf16(init, s, L->cache, (long long)L->blocks * d->page * d->kv_row, ++k, -1.f, 1.f);
#undef DS_FILL
#undef DS_FILL_AT
}

// ---------------------------------------------------------------------------------------------
// Activations and workspaces, shared by the layers (they run one after another)

// Bytes of fp32 indexer scores held at a time (V3.2): a 32k-token prefill's 4.3 GB of scores go in
// three chunks (16320, 16320 and 129 queries); generation batches fit in one.
#define DS_SCORES_BUDGET ((size_t)2 << 30)

struct ds_buffers {
    long long max_tokens; // rows of every (tokens, .) buffer: this rank's tokens
    long long moe_tokens; // tokens whose routed slots this rank may serve (all ranks' with DP comm)
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
    CUdeviceptr ids, weights, override; // (T, top_k) int32, fp32, int32; replay: override per MoE layer
    CUdeviceptr replay_stage;           // replay: (iterations, MoE layers, T, top_k) int32, every recorded choice
    int moe_layers;                     // MoE layers of the run
    CUdeviceptr x_all, ids_all, w_all;  // (TM, H), (TM, top_k) x2: tokens this rank serves (gathered or received)
    CUdeviceptr y_all;                  // (TM, H): their weighted sums over this rank's experts
    CUdeviceptr send_x, send_ids, send_w, back; // all-to-all: (TM, H), (TM, k) x2, (TM, H)
    CUdeviceptr counts_all;             // all-to-all: (ranks, ranks) int, the exchanged counts
    struct moe_a2a a2a;
    struct moe_perm perm;
    CUdeviceptr x_perm, h_perm, y_perm; // (TM*k, H), (TM*k, moe_inter), (TM*k, H)
    CUdeviceptr hs, ys;                 // shared expert (T, shared_inter), (T, H)
    CUdeviceptr hd;                     // dense MLP (T, inter)
    CUdeviceptr kv_lens;                // (max_batch) int: cached tokens after this forward
    CUdeviceptr block_table;            // (max_batch, max_blocks) int
    CUdeviceptr cos_t, sin_t;           // (positions, rope/2) fp32
    CUdeviceptr gemm_ws;                // split-K partials
    size_t gemm_ws_bytes;
    CUdeviceptr mla_ws;                 // decode split partials
    size_t mla_ws_bytes;
    // DeepSeek-V3.2's indexer: wq_b's, wk's and weights_proj's outputs, the prepared queries and
    // folded head weights, the scores (rows of ilog_ld keys), the selections
    CUdeviceptr iq, ik, iw;             // (T, 64 x 128) bf16, (T, 128) bf16, (T, 64) fp32
    CUdeviceptr iq8, iwt;               // (T, 64, 128) e4m3, (T, 64) fp32
    CUdeviceptr ilogits;                // (rows, ilog_ld) fp32, when some problem has more keys than index_topk:
                                        // a chunk of tokens at a time (DS_SCORES_BUDGET)
    long long ilog_ld;
    CUdeviceptr itopk;                  // (T, index_topk) int32
    // fp8 runs: quantised copies (e4m3 rows) and their scales (one per row and 128 columns) of
    // each fp8 projection's input
    struct ds_q8 { CUdeviceptr q, s; } xq, qaq, attnq, x_permq, h_permq, hsq, hdq;
};

// A quantised copy of a rows x cols activation: e4m3 bytes and fp32 scales per 128 columns.
static void ds_q8_alloc(struct lwb_mem *m, struct ds_q8 *q, long long rows, long long cols, const char *what) {
    char label[96];
    snprintf(label, sizeof label, "%s (fp8)", what);
    q->q = mem_alloc(m, MEM_ACT, (size_t)rows * cols, label);
    snprintf(label, sizeof label, "%s (fp8 scales)", what);
    q->s = mem_alloc(m, MEM_ACT, (size_t)rows * (cols / 128) * 4, label);
}

static void ds_buffers_alloc(struct lwb_mem *m, struct ds_buffers *b, const struct ds_dims *d,
                             const struct lwb_shard *sh, bool ctx, bool any_moe, bool any_dense,
                             const struct lwb_replay *replay) {
    const long long T = b->max_tokens, H = d->hidden, K = b->max_keys, TM = b->moe_tokens;
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
    if (!ctx || d->idx_topk) { // V3.2: the absorbed form in both phases
        b->q_abs = mem_alloc(m, MEM_ACT, DS_BF16(T * d->heads, d->kv_row), "absorbed queries");
        b->o_lat = mem_alloc(m, MEM_ACT, DS_BF16(T * d->heads, d->kv_lora), "attention latents");
    } else {
        b->key_stride = K;
        b->kv_all = mem_alloc(m, MEM_ACT, DS_BF16(K, d->kv_row), "cached rows");
        b->kn = mem_alloc(m, MEM_ACT, DS_BF16(K * d->heads, d->nope), "keys");
        b->vt = mem_alloc(m, MEM_ACT, DS_BF16((size_t)d->heads * d->v, b->key_stride), "values");
    }
    if (d->idx_topk) {
        b->iq = mem_alloc(m, MEM_ACT, DS_BF16(T, DSA_HEADS * DSA_DIM), "indexer queries");
        b->ik = mem_alloc(m, MEM_ACT, DS_BF16(T, DSA_DIM), "indexer keys");
        b->iw = mem_alloc(m, MEM_ACT, (size_t)T * DSA_HEADS * 4, "indexer head weights");
        b->iq8 = mem_alloc(m, MEM_ACT, (size_t)T * DSA_HEADS * DSA_DIM, "indexer queries (fp8)");
        b->iwt = mem_alloc(m, MEM_ACT, (size_t)T * DSA_HEADS * 4, "indexer folded weights");
        if (b->ilog_ld) {
            const long long rows = LWB_MIN(T, dsa_chunk_rows(b->ilog_ld, DS_SCORES_BUDGET));
            b->ilogits = mem_alloc(m, MEM_ACT, (size_t)rows * b->ilog_ld * 4, "indexer scores");
        }
        b->itopk = mem_alloc(m, MEM_ACT, (size_t)T * d->idx_topk * 4, "indexer selections");
    }
    b->attn = mem_alloc(m, MEM_ACT, DS_BF16(T, (size_t)d->heads * d->v), "attention output");
    b->attn_out = mem_alloc(m, MEM_ACT, DS_BF16(T, H), "o_proj output");
    if (any_moe) {
        const int E = d->experts, EL = d->experts_local, N = sh->world_size;
        b->logits = mem_alloc(m, MEM_ACT, (size_t)LWB_MAX(b->logit_splits, 1) * T * E * 4, "router logits");
        b->ids = mem_alloc(m, MEM_ACT, (size_t)T * kk * 4, "expert ids");
        b->weights = mem_alloc(m, MEM_ACT, (size_t)T * kk * 4, "expert weights");
        if (!replay) b->override = mem_alloc(m, MEM_ACT, (size_t)T * kk * 4, "balance override");
        else {
            const size_t one = (size_t)T * kk * 4 * (size_t)b->moe_layers;
            b->override = mem_alloc(m, MEM_ACT, one, "replayed expert ids");
            b->replay_stage = mem_alloc(m, MEM_ACT, one * (size_t)replay->nslots, "replay: recorded expert ids");
        }
        if (sh->moe_comm) {
            b->x_all = mem_alloc(m, MEM_ACT, DS_BF16(TM, H), "tokens served");
            b->ids_all = mem_alloc(m, MEM_ACT, (size_t)TM * kk * 4, "their expert ids");
            b->w_all = mem_alloc(m, MEM_ACT, (size_t)TM * kk * 4, "their expert weights");
            b->y_all = mem_alloc(m, MEM_ACT, DS_BF16(TM, H), "their expert outputs");
        }
        if (sh->moe_comm == LWB_MOE_COMM_ALLTOALL) {
            b->send_x = mem_alloc(m, MEM_ACT, DS_BF16(TM, H), "tokens sent");
            b->send_ids = mem_alloc(m, MEM_ACT, (size_t)TM * kk * 4, "expert ids sent");
            b->send_w = mem_alloc(m, MEM_ACT, (size_t)TM * kk * 4, "expert weights sent");
            b->back = mem_alloc(m, MEM_ACT, DS_BF16(TM, H), "expert outputs returned");
            b->counts_all = mem_alloc(m, MEM_WS, (size_t)N * N * 4, "exchanged counts");
            b->a2a = (struct moe_a2a){mem_alloc(m, MEM_WS, (size_t)T * 8, "destination masks"),
                                      mem_alloc(m, MEM_WS, (size_t)N * 4, "destination counts"),
                                      mem_alloc(m, MEM_WS, (size_t)N * 4, "planned counts"),
                                      mem_alloc(m, MEM_WS, (size_t)N * 4, "send offsets"),
                                      mem_alloc(m, MEM_WS, (size_t)N * 4, "send fill"),
                                      mem_alloc(m, MEM_WS, 64, "count changed"),
                                      mem_alloc(m, MEM_WS, (size_t)T * N * 4, "send slots")};
        }
        int tiles = moe_max_tiles((int)TM, kk, EL, 64);
        b->perm = (struct moe_perm){mem_alloc(m, MEM_WS, (size_t)EL * 4, "expert counts"),
                                    mem_alloc(m, MEM_WS, (size_t)EL * 4, "expert offsets"),
                                    mem_alloc(m, MEM_WS, (size_t)EL * 4, "expert fill"),
                                    mem_alloc(m, MEM_WS, (size_t)tiles * 16, "tile list"),
                                    mem_alloc(m, MEM_WS, (size_t)tiles * 16, "tile list"),
                                    mem_alloc(m, MEM_WS, 64, "tile counts"),
                                    mem_alloc(m, MEM_WS, (size_t)TM * kk * 4, "token rows")};
        if (!d->fp8) b->x_perm = mem_alloc(m, MEM_ACT, DS_BF16(TM * kk, H), "permuted tokens"); // fp8: x_permq
        b->h_perm = mem_alloc(m, MEM_ACT, DS_BF16(TM * kk, d->moe_inter), "expert intermediate");
        b->y_perm = mem_alloc(m, MEM_ACT, DS_BF16(TM * kk, H), "expert outputs");
        if (d->shared_inter) {
            b->hs = mem_alloc(m, MEM_ACT, DS_BF16(T, d->shared_inter), "shared intermediate");
            b->ys = mem_alloc(m, MEM_ACT, DS_BF16(T, H), "shared output");
        }
    }
    if (any_dense) b->hd = mem_alloc(m, MEM_ACT, DS_BF16(T, d->inter), "mlp intermediate");
    if (d->fp8) {
        ds_q8_alloc(m, &b->xq, T, H, "normalised input");
        ds_q8_alloc(m, &b->qaq, T, d->q_lora, "q_a normalised");
        ds_q8_alloc(m, &b->attnq, T, (long long)d->heads * d->v, "attention output");
        if (any_moe) {
            ds_q8_alloc(m, &b->x_permq, TM * kk, H, "permuted tokens");
            ds_q8_alloc(m, &b->h_permq, TM * kk, d->moe_inter, "expert intermediate");
            if (d->shared_inter) ds_q8_alloc(m, &b->hsq, T, d->shared_inter, "shared intermediate");
        }
        if (any_dense) ds_q8_alloc(m, &b->hdq, T, d->inter, "mlp intermediate");
    }
    b->kv_lens = mem_alloc(m, MEM_WS, (size_t)b->max_batch * 4, "kv lengths");
    b->block_table = mem_alloc(m, MEM_WS, (size_t)b->max_batch * b->max_blocks * 4, "block table");
    b->cos_t = mem_alloc(m, MEM_WS, (size_t)b->positions * (d->rope / 2) * 4, "rope cos");
    b->sin_t = mem_alloc(m, MEM_WS, (size_t)b->positions * (d->rope / 2) * 4, "rope sin");
    if (b->gemm_ws_bytes) b->gemm_ws = mem_alloc(m, MEM_WS, b->gemm_ws_bytes, "split-K partials");
    if (b->mla_ws_bytes) b->mla_ws = mem_alloc(m, MEM_WS, b->mla_ws_bytes, "attention split partials");
}

// ---------------------------------------------------------------------------------------------
// One layer's launches for one problem

struct ds_family;

// The all-to-all's row counts of one (problem, layer): planned from the first forward's routing
// (the same in every iteration: inputs and weights do not change), then baked into the graph.
struct ds_a2a_plan {
    bool planned;
    int *send_rows, *send_off, *recv_rows, *recv_off; // (ranks) each
    int recv_total;                                   // rows this rank receives and serves
};

struct ds_run {
    struct ds_family *f;
    const struct ds_layer *L;
    struct lwb_problem p;
    bool first, last;                                // the first selected layer (reads the inputs), the last
    struct rmsnorm_config n_in, n_post, n_qa, n_kva; // norms
    struct lwb_kreq r_in, r_post, r_qa, r_kva;
    struct lwb_gemm g_a, g_qb, g_uk, g_uv, g_kn, g_vt, g_o;   // attention products
    struct lwb_gemm g_gate, g_e13, g_e2, g_s13, g_s2;         // MoE
    struct lwb_gemm g_d13, g_d2;                              // dense MLP
    struct mla_rope_config rope_cfg;
    struct lwb_kreq r_rope;
    struct lwb_mla_decode dec;       // GEN; V3.2: the sparse form in both phases
    struct lwb_mla_prefill pre;
    struct lwb_gemm g_iq, g_ik, g_iw; // V3.2's indexer: wq_b, wk, weights_proj
    struct lwb_dsa dsa;
    struct lwb_kreq r_topk;
    bool idx_scores;                 // some request has more visible keys than index_topk
    struct moe_route_config route_cfg;
    struct lwb_kreq r_route;
    struct lwb_kreq r_quant;  // fp8: the quantisation passes (before o_proj and the down projections)
    bool use_override;   // balance override active
    struct ds_a2a_plan a2a;
    char what_gather[96], what_scatter[96], what_attn_ar[96], what_out_ar[96]; // collective labels
};

// Cache fill (past tokens of every request): a chunk of random hidden states through the input
// norm, the kv_a projection, the kv_a norm and RoPE into the cache, as a prefill would.
struct ds_fill {
    int chunk;                 // tokens per launch (0: nothing cached)
    int max_past;
    CUdeviceptr hidden, x, kv, latent, kv_new, lens;
    struct ds_q8 xq;           // fp8 runs: the norm's quantised copy for the fp8 kv_a product
    struct rmsnorm_config n_in, n_kv;
    struct lwb_kreq r_in, r_kv, r_rope;
    struct lwb_gemm *g;        // per layer
    // V3.2: the indexer keys of the cached tokens (wk per layer, then the keys-only preparation)
    struct lwb_gemm *gi;
    struct lwb_dsa dsa;
    CUdeviceptr ik;
};

struct ds_family {
    struct lwb_run_spec spec;
    const struct lwb_run_spec *spec_ptr;
    const struct lwb_shard *sh; // the plan's: its communicator is set once the device is open
    const struct lwb_model *model;
    struct ds_dims d;
    struct ds_layer *layers;
    int nlayers;
    struct ds_run *runs;       // (nproblems, nlayers)
    struct ds_buffers buf;
    struct ds_fill fill;
    const struct lwb_kreq *init;
    unsigned long long seed;
};

static struct ds_run *ds_run_of(struct ds_family *f, int problem, int layer) {
    return &f->runs[(size_t)problem * f->nlayers + layer];
}

// Attention TP with a communicator: partial outputs are all-reduced (a communicator of one rank,
// under --np 1, runs them too).
static bool ds_tp_collectives(const struct lwb_shard *sh) { return !sh->attention_dp && sh->collectives; }

// Tokens whose routed slots this rank may serve in a problem (its own, or every rank's).
static long long ds_moe_tokens(const struct ds_family *f, const struct lwb_problem *p) {
    return f->sh->moe_comm ? (long long)p->tokens * f->sh->world_size : p->tokens;
}

static void ds_run_plan(struct ds_run *r, struct ds_family *f, const struct ds_layer *L, const struct lwb_problem *p,
                        const struct lwb_device *dev, bool override) {
    const struct ds_dims *d = &f->d;
    memset(r, 0, sizeof *r);
    r->f = f;
    r->L = L;
    r->p = *p;
    r->use_override = override;
    const long long T = p->tokens;
    const bool q8 = d->fp8;
    // fp8: the norms before fp8 projections also write the quantised copy.
    r->n_in = rmsnorm_choose_config(d->hidden, true);
    r->n_in.quant = q8;
    r->n_post = rmsnorm_choose_config(d->hidden, true);
    r->n_post.quant = q8 && (!L->moe || d->shared_inter);
    r->n_qa = rmsnorm_choose_config(d->q_lora, false);
    r->n_qa.quant = q8;
    r->n_kva = rmsnorm_choose_config(d->kv_lora, false);
    rmsnorm_request(&r->r_in, r->n_in);
    rmsnorm_request(&r->r_post, r->n_post);
    rmsnorm_request(&r->r_qa, r->n_qa);
    rmsnorm_request(&r->r_kva, r->n_kva);
    if (q8) quant_request(&r->r_quant);
    // The projections run in the weight format; the kv_b products, the router and attention in bf16.
    void (*proj)(struct lwb_gemm *, const char *, long long, int, int, int, int, bool, double,
                 const struct lwb_device *) = q8 ? gemm_plan_fp8 : gemm_plan;
    const int swiglu = q8 ? GEMM_EPI_SWIGLU64 : GEMM_EPI_SWIGLU;
    proj(&r->g_a, "fused_a", T, d->q_lora + d->kv_row, d->hidden, 1, GEMM_EPI_BF16, false, 0, dev);
    proj(&r->g_qb, "q_b", T, d->heads * d->qk, d->q_lora, 1, GEMM_EPI_BF16, false, 0, dev);
    if (d->idx_topk) {
        proj(&r->g_iq, "indexer_wq_b", T, DSA_HEADS * DSA_DIM, d->q_lora, 1, GEMM_EPI_BF16, false, 0, dev);
        proj(&r->g_ik, "indexer_wk", T, DSA_DIM, d->hidden, 1, GEMM_EPI_BF16, false, 0, dev);
        gemm_plan(&r->g_iw, "indexer_weights", T, DSA_HEADS, d->hidden, 1, GEMM_EPI_F32, false, 0, dev);
        dsa_request(&r->dsa, dsa_choose(d->page, d->rope, p->qlen, p->batch, p->kv_len, dev->sm_count));
        dsa_topk_request(&r->r_topk, d->idx_topk);
        r->idx_scores = p->kv_len > d->idx_topk;
        gemm_plan(&r->g_uk, "w_uk", T, d->kv_lora, d->nope, d->heads, GEMM_EPI_BF16, false, 0, dev);
        gemm_plan(&r->g_uv, "w_uv", T, d->v, d->kv_lora, d->heads, GEMM_EPI_BF16, false, 0, dev);
        r->dec.cfg = mla_sparse_choose(d->heads, d->page, d->idx_topk, (int)T, dev->sm_count);
        mla_decode_request(&r->dec.req, r->dec.cfg);
    } else if (!p->ctx) {
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
    proj(&r->g_o, "o_proj", T, d->hidden, d->heads * d->v, 1, GEMM_EPI_BF16, false, 0, dev);
    r->rope_cfg = (struct mla_rope_config){d->heads, d->nope, d->rope, d->kv_lora, d->page};
    mla_rope_request(&r->r_rope, r->rope_cfg);
    if (L->moe) {
        const long long TM = ds_moe_tokens(f, p);
        double rows = (double)T * f->sh->dp_size * d->top_k / d->experts; // expected per expert, balanced
        gemm_plan(&r->g_gate, "gate", T, d->experts, d->hidden, 1, GEMM_EPI_F32, false, 0, dev);
        gemm_keep_partials(&r->g_gate); // the top-k sums them
        proj(&r->g_e13, "experts13", TM * d->top_k, 2 * d->moe_inter, d->hidden, 1, swiglu, true, rows, dev);
        proj(&r->g_e2, "experts2", TM * d->top_k, d->hidden, d->moe_inter, 1, GEMM_EPI_BF16, true, rows, dev);
        if (d->shared_inter) {
            proj(&r->g_s13, "shared13", T, 2 * d->shared_inter, d->hidden, 1, swiglu, false, 0, dev);
            proj(&r->g_s2, "shared2", T, d->hidden, d->shared_inter, 1, GEMM_EPI_BF16, false, 0, dev);
        }
        r->route_cfg = (struct moe_route_config){d->experts, d->top_k, d->groups, d->topk_group, d->norm_topk,
                                                 d->hidden, f->sh->ep_size, q8};
        moe_route_request(&r->r_route, r->route_cfg);
        const int N = f->sh->world_size;
        r->a2a = (struct ds_a2a_plan){.send_rows = xcalloc((size_t)N, sizeof(int)), .send_off = xcalloc((size_t)N, sizeof(int)),
                                      .recv_rows = xcalloc((size_t)N, sizeof(int)), .recv_off = xcalloc((size_t)N, sizeof(int))};
    } else {
        proj(&r->g_d13, "mlp13", T, 2 * d->inter, d->hidden, 1, swiglu, false, 0, dev);
        proj(&r->g_d2, "mlp2", T, d->hidden, d->inter, 1, GEMM_EPI_BF16, false, 0, dev);
    }
    snprintf(r->what_gather, sizeof r->what_gather, "layer %d MoE: all-gather of routed tokens", L->index);
    snprintf(r->what_scatter, sizeof r->what_scatter, "layer %d MoE: reduce-scatter of expert outputs", L->index);
    snprintf(r->what_attn_ar, sizeof r->what_attn_ar, "layer %d: all-reduce of the attention output", L->index);
    snprintf(r->what_out_ar, sizeof r->what_out_ar, "layer %d: all-reduce of the %s output", L->index,
             L->moe ? "MoE" : "MLP");
}

// Every GEMM of a run, for workspace sizing and binding loops.
static int ds_run_gemms(struct ds_run *r, struct lwb_gemm **out) {
    struct lwb_gemm *all[] = {&r->g_a,    &r->g_qb,  &r->g_iq, &r->g_ik, &r->g_iw, &r->g_uk,  &r->g_uv,
                              &r->g_kn,   &r->g_vt,  &r->g_o,  &r->g_gate, &r->g_e13, &r->g_e2, &r->g_s13,
                              &r->g_s2,   &r->g_d13, &r->g_d2};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(all); i++)
        if (all[i]->req.family) out[n++] = all[i];
    return n;
}

// The JIT requests of a run (pointers into it).
static void ds_run_requests(struct ds_run *r, struct lwb_kreqs *out) {
    kreqs_add(out, &r->r_in), kreqs_add(out, &r->r_post), kreqs_add(out, &r->r_qa), kreqs_add(out, &r->r_kva);
    kreqs_add(out, &r->r_rope);
    struct lwb_gemm *g[24];
    int ng = ds_run_gemms(r, g);
    for (int i = 0; i < ng; i++) kreqs_add(out, &g[i]->req);
    if (r->dec.req.family) kreqs_add(out, &r->dec.req);
    if (r->pre.req.family) kreqs_add(out, &r->pre.req);
    if (r->dsa.req.family) kreqs_add(out, &r->dsa.req), kreqs_add(out, &r->r_topk);
    if (r->r_route.family) kreqs_add(out, &r->r_route);
    if (r->r_quant.family) kreqs_add(out, &r->r_quant);
}

// Grow the shared buffers' sizes to what this run needs (split-K workspace, attention split
// partials, the gate's partial slabs).
static void ds_run_workspace(struct ds_run *r, struct ds_buffers *b) {
    struct lwb_gemm *g[24];
    int n = ds_run_gemms(r, g);
    for (int i = 0; i < n; i++) b->gemm_ws_bytes = LWB_MAX(b->gemm_ws_bytes, gemm_workspace_bytes(g[i]));
    if (r->dec.req.family)
        b->mla_ws_bytes = LWB_MAX(b->mla_ws_bytes, mla_decode_workspace(&r->dec.cfg, r->p.tokens));
    if (r->L->moe) b->logit_splits = LWB_MAX(b->logit_splits, r->g_gate.cfg.splitk);
    if (r->idx_scores) b->ilog_ld = LWB_MAX(b->ilog_ld, LWB_CEIL_DIV((long long)r->p.kv_len, 64) * 64);
}

// Bind a projection: its input (the bf16 operand, or in fp8 runs its quantised copy `aq` with the
// same shape) and its weight (with block scales `w_s` in fp8).
static void ds_bind_proj(struct lwb_gemm *g, const struct lwb_operand *a, const struct ds_q8 *aq,
                         const struct lwb_operand *w, CUdeviceptr w_s, CUdeviceptr out, long long ld_out, CUdeviceptr ws) {
    if (!g->fp8) {
        gemm_bind(g, a, w, out, ld_out, 0, ws);
        return;
    }
    struct lwb_operand a8 = {aq->q, a->rows, a->k, a->k, 1, 0};
    gemm_bind_fp8(g, &a8, aq->s, a->rows, w, w_s, out, ld_out, 0, ws);
}

// Tensor maps and pointers, once buffers and weights exist (the kernels must be loaded).
static void ds_run_bind(struct ds_run *r) {
    const struct ds_dims *d = &r->f->d;
    const struct ds_buffers *b = &r->f->buf;
    const struct ds_weights *w = &r->L->w;
    const struct lwb_problem *p = &r->p;
    const long long T = p->tokens, H = d->hidden;
    const int A = d->q_lora + d->kv_row;
    // The attention's input: the first layer's is the problem's (normalised, as TensorRT-LLM's
    // layer input is), the others' the previous layer's closing norm. x: the normalised input of
    // the MoE or MLP (post_attention_layernorm's output).
    struct lwb_operand xa = {r->first ? b->hidden_in : b->x, T, d->hidden, H, 1, 0};
    struct lwb_operand x = {b->x, T, d->hidden, H, 1, 0};
    struct lwb_operand wa = {w->fused_a, A, d->hidden, H, 1, 0};
    ds_bind_proj(&r->g_a, &xa, &b->xq, &wa, w->fused_a_s, b->a_out, A, b->gemm_ws);
    struct lwb_operand qa = {b->qa_n, T, d->q_lora, d->q_lora, 1, 0};
    struct lwb_operand wqb = {w->q_b, (long long)d->heads * d->qk, d->q_lora, d->q_lora, 1, 0};
    ds_bind_proj(&r->g_qb, &qa, &b->qaq, &wqb, w->q_b_s, b->q, (long long)d->heads * d->qk, b->gemm_ws);
    const long long kvb_head = (long long)(d->nope + d->v) * d->kv_lora; // elements per head of kv_b
    if (d->idx_topk) {
        struct lwb_operand wiq = {w->i_wq, DSA_HEADS * DSA_DIM, d->q_lora, d->q_lora, 1, 0};
        ds_bind_proj(&r->g_iq, &qa, &b->qaq, &wiq, w->i_wq_s, b->iq, DSA_HEADS * DSA_DIM, b->gemm_ws);
        struct lwb_operand wik = {w->i_wk, DSA_DIM, d->hidden, H, 1, 0};
        ds_bind_proj(&r->g_ik, &xa, &b->xq, &wik, w->i_wk_s, b->ik, DSA_DIM, b->gemm_ws);
        struct lwb_operand wip = {w->i_wp, DSA_HEADS, d->hidden, H, 1, 0};
        gemm_bind(&r->g_iw, &xa, &wip, b->iw, DSA_HEADS, 0, b->gemm_ws);
        dsa_bind(&r->dsa, b->iq8, T, r->L->icache, r->L->blocks);
    }
    if (!p->ctx || d->idx_topk) {
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
    ds_bind_proj(&r->g_o, &at, &b->attnq, &wo, w->o_proj_s, b->attn_out, H, b->gemm_ws);
    if (r->L->moe) {
        const int E = d->experts, EL = d->experts_local, kk = d->top_k;
        const long long TM = ds_moe_tokens(r->f, p);
        struct lwb_operand wg = {w->gate, E, d->hidden, H, 1, 0};
        gemm_bind(&r->g_gate, &x, &wg, b->logits, E, 0, b->gemm_ws);
        struct lwb_operand xp = {b->x_perm, TM * kk, d->hidden, H, 1, 0};
        struct lwb_operand w13 = {w->w13, 2LL * d->moe_inter, d->hidden, H, EL, 2LL * d->moe_inter * H};
        ds_bind_proj(&r->g_e13, &xp, &b->x_permq, &w13, w->w13_s, b->h_perm, d->moe_inter, 0);
        gemm_bind_tiles(&r->g_e13, b->perm.tiles_a, b->perm.ntiles, moe_max_tiles((int)TM, kk, EL, gemm_tile_rows(&r->g_e13)));
        struct lwb_operand hp = {b->h_perm, TM * kk, d->moe_inter, d->moe_inter, 1, 0};
        struct lwb_operand w2 = {w->w2, H, d->moe_inter, d->moe_inter, EL, H * d->moe_inter};
        ds_bind_proj(&r->g_e2, &hp, &b->h_permq, &w2, w->w2_s, b->y_perm, H, 0);
        gemm_bind_tiles(&r->g_e2, b->perm.tiles_b, b->perm.ntiles + 4, moe_max_tiles((int)TM, kk, EL, gemm_tile_rows(&r->g_e2)));
        if (d->shared_inter) {
            struct lwb_operand s13 = {w->s13, 2LL * d->shared_inter, d->hidden, H, 1, 0};
            ds_bind_proj(&r->g_s13, &x, &b->xq, &s13, w->s13_s, b->hs, d->shared_inter, b->gemm_ws);
            struct lwb_operand hs = {b->hs, T, d->shared_inter, d->shared_inter, 1, 0};
            struct lwb_operand s2 = {w->s2, H, d->shared_inter, d->shared_inter, 1, 0};
            ds_bind_proj(&r->g_s2, &hs, &b->hsq, &s2, w->s2_s, b->ys, H, b->gemm_ws);
        }
    } else {
        struct lwb_operand d13 = {w->d13, 2LL * d->inter, d->hidden, H, 1, 0};
        ds_bind_proj(&r->g_d13, &x, &b->xq, &d13, w->d13_s, b->hd, d->inter, b->gemm_ws);
        struct lwb_operand hd = {b->hd, T, d->inter, d->inter, 1, 0};
        struct lwb_operand d2 = {w->d2, H, d->inter, d->inter, 1, 0};
        ds_bind_proj(&r->g_d2, &hd, &b->hdq, &d2, w->d2_s, b->hidden, H, b->gemm_ws);
    }
}

// ---------------------------------------------------------------------------------------------
// The modules. Each enqueues its work on `s`; ds_modules lists them with their NVTX ranges.

static void ds_quant(struct ds_run *r, CUstream s, CUdeviceptr x, long long rows, int cols, const struct ds_q8 *q);

// The layer's end, as TensorRT-LLM's DeepSeek layer ends: the next layer's input_layernorm fused
// with the residual add (residual += hidden; x = norm(residual)), x being the next layer's input
// (fp8: with its quantised copy, except after the last selected layer).
static void ds_mod_next_norm(void *arg, CUstream s) {
    struct ds_run *r = arg;
    const struct ds_dims *d = &r->f->d;
    const struct ds_buffers *b = &r->f->buf;
    const long long H = d->hidden;
    rmsnorm_enqueue_q8(&r->r_in, r->n_in, s, b->hidden, H, b->residual, b->residual, H, r->L->w.next_norm, b->x, H,
                       r->p.tokens, d->eps, b->xq.q, b->xq.s);
}

// fp8, first layer: its input (the problem's, already normalised) quantised for the a-projections.
static void ds_mod_input_quant(void *arg, CUstream s) {
    struct ds_run *r = arg;
    ds_quant(r, s, r->f->buf.hidden_in, r->p.tokens, (int)r->f->d.hidden, &r->f->buf.xq);
}

// fp8 runs: the quantised copy of a bf16 activation (rows x cols, compact) for the next projection.
static void ds_quant(struct ds_run *r, CUstream s, CUdeviceptr x, long long rows, int cols, const struct ds_q8 *q) {
    quant_enqueue(&r->r_quant, s, x, cols, (int)rows, cols, q->q, cols, q->s, cols / 128);
}

// Attention TP: the o_proj outputs of the ranks' heads summed.
static void ds_mod_attn_allreduce(void *arg, CUstream s) {
    struct ds_run *r = arg;
    if (r->f->sh->comm)
        comm_allreduce(r->f->sh->comm, r->f->buf.attn_out, (size_t)r->p.tokens * r->f->d.hidden, ncclBfloat16, s,
                       r->what_attn_ar);
}

// DeepSeek-V3.2's indexer, inside MLA (TensorRT-LLM has no range of its own for it): its three
// projections, keys and queries prepared (the new keys into the indexer cache), the scores of every
// visible key (skipped when no request has more than index_topk), each token's selection.
static void ds_indexer(struct ds_run *r, CUstream s) {
    const struct ds_buffers *b = &r->f->buf;
    const struct ds_layer *L = r->L;
    const struct lwb_problem *p = &r->p;
    gemm_enqueue(&r->g_iq, s);
    gemm_enqueue(&r->g_ik, s);
    gemm_enqueue(&r->g_iw, s);
    struct dsa_prep_args a = {b->iq, DSA_HEADS * DSA_DIM, b->ik, DSA_DIM, b->iw, DSA_HEADS, L->w.i_ln_w, L->w.i_ln_b,
                              1e-6f, b->cos_t, b->sin_t, b->kv_lens, b->block_table, L->icache, b->iq8, b->iwt,
                              p->qlen, b->max_blocks, p->tokens};
    dsa_prep_enqueue(&r->dsa, s, &a);
    if (!r->idx_scores) { // every key of every token
        dsa_topk_enqueue(&r->r_topk, s, 0, 1, 0, p->tokens, b->kv_lens, p->qlen, b->itopk, p->kv_len);
        return;
    }
    // Scores and selection chunk by chunk (the scores buffer holds DS_SCORES_BUDGET bytes at most).
    const long long rows = dsa_chunk_rows(b->ilog_ld, DS_SCORES_BUDGET);
    struct dsa_chunk c;
    for (int i = 0; dsa_chunk_at(p->batch, p->qlen, rows, i, &c); i++) {
        dsa_logits_enqueue(&r->dsa, s, L->icache, b->iwt, b->block_table, b->max_blocks, b->kv_lens, p->qlen, c.req0,
                           c.batch, c.q0, c.nql, b->ilogits, b->ilog_ld);
        dsa_topk_enqueue(&r->r_topk, s, b->ilogits, b->ilog_ld, c.req0 * p->qlen + c.q0, c.batch * c.nql, b->kv_lens,
                         p->qlen, b->itopk, p->kv_len);
    }
}

static void ds_mod_mla(void *arg, CUstream s) {
    struct ds_run *r = arg;
    const struct ds_dims *d = &r->f->d;
    const struct ds_buffers *b = &r->f->buf;
    const struct lwb_problem *p = &r->p;
    const int T = p->tokens, A = d->q_lora + d->kv_row;
    gemm_enqueue(&r->g_a, s);
    rmsnorm_enqueue_q8(&r->r_qa, r->n_qa, s, b->a_out, A, 0, 0, 0, r->L->w.q_a_norm, b->qa_n, d->q_lora, T, d->eps,
                       b->qaq.q, b->qaq.s);
    rmsnorm_enqueue(&r->r_kva, r->n_kva, s, b->a_out + (CUdeviceptr)d->q_lora * 2, A, 0, 0, 0, r->L->w.kv_a_norm,
                    b->latent, d->kv_lora, T, d->eps);
    gemm_enqueue(&r->g_qb, s);
    const bool absorbed = !p->ctx || d->idx_topk;
    if (d->idx_topk) ds_indexer(r, s);
    if (absorbed) gemm_enqueue(&r->g_uk, s);
    struct mla_rope_args ra = {b->q, absorbed ? b->q_abs : 0, b->a_out + (CUdeviceptr)(d->q_lora + d->kv_lora) * 2, A,
                               b->latent, d->kv_lora, b->kv_new, r->L->cache, b->block_table, b->kv_lens,
                               b->cos_t, b->sin_t, b->max_blocks, p->qlen, T};
    mla_rope_enqueue(&r->r_rope, s, &ra);
    if (d->idx_topk) {
        mla_sparse_enqueue(&r->dec, s, b->block_table, b->max_blocks, b->kv_lens, p->qlen, b->itopk, r->L->cache,
                           d->sm_scale, b->o_lat, b->mla_ws);
        gemm_enqueue(&r->g_uv, s);
    } else if (!p->ctx) {
        mla_decode_enqueue(&r->dec, s, b->block_table, b->max_blocks, b->kv_lens, d->sm_scale, b->o_lat, b->mla_ws);
        gemm_enqueue(&r->g_uv, s);
    } else {
        mla_gather_enqueue(&r->r_rope, s, r->L->cache, b->block_table, b->max_blocks, p->kv_len,
                           mla_prefill_pitch(p->kv_len), p->batch, b->kv_all);
        gemm_enqueue(&r->g_kn, s);
        gemm_enqueue(&r->g_vt, s);
        mla_prefill_enqueue(&r->pre, s, p->batch, p->qlen, p->kv_len, d->sm_scale, b->attn);
    }
    if (d->fp8) ds_quant(r, s, b->attn, T, d->heads * d->v, &b->attnq);
    gemm_enqueue(&r->g_o, s);
    // Dense layers under attention TP: o_proj reduces its own output, inside MLA (TensorRT-LLM
    // fuses the MoE layers' all-reduce with the post-attention norm instead: ds_mod_attn_allreduce).
    if (ds_tp_collectives(r->f->sh) && !r->L->moe) ds_mod_attn_allreduce(r, s);
}

static void ds_mod_post_norm(void *arg, CUstream s) {
    struct ds_run *r = arg;
    const struct ds_dims *d = &r->f->d;
    const struct ds_buffers *b = &r->f->buf;
    const long long H = d->hidden;
    rmsnorm_enqueue_q8(&r->r_post, r->n_post, s, b->attn_out, H, r->first ? b->residual_in : b->residual, b->residual,
                       H, r->L->w.post_norm, b->x, H, r->p.tokens, d->eps, b->xq.q, b->xq.s);
}

// Deepseekv3MoE > GatedMLP (the shared experts, on this rank's tokens): x -> ys.
static void ds_mod_shared(void *arg, CUstream s) {
    struct ds_run *r = arg;
    gemm_enqueue(&r->g_s13, s);
    if (r->f->d.fp8) ds_quant(r, s, r->f->buf.hs, r->p.tokens, r->f->d.shared_inter, &r->f->buf.hsq);
    gemm_enqueue(&r->g_s2, s);
}
// Deepseekv3MoE > DeepseekV3Gate: the router logits (as split-K partials), nothing more: as in
// TensorRT-LLM, whose DeepseekV3Gate module computes logits and leaves routing to the MoE.
static void ds_mod_gate(void *arg, CUstream s) {
    struct ds_run *r = arg;
    gemm_enqueue(&r->g_gate, s);
}

// The all-to-all's counts, from this forward's routing (a host round trip: the first, eager
// forward of a problem only; captured graphs replay the plan).
static void ds_a2a_plan_counts(struct ds_run *r, CUstream s) {
    struct ds_family *f = r->f;
    struct ds_buffers *b = &f->buf;
    const int N = f->sh->world_size, me = f->sh->rank;
    CUstreamCaptureStatus st;
    CU_CHECK(lwb_cu.cuStreamIsCapturing(s, &st));
    if (st != CU_STREAM_CAPTURE_STATUS_NONE) LWB_BUG("all-to-all counts planned inside a graph capture");
    comm_allgather(f->sh->comm, b->a2a.dest_count, b->counts_all, (size_t)N, ncclInt32, s,
                   "MoE: exchange of all-to-all row counts");
    stream_wait(s, 60, "the all-to-all count exchange");
    int *all = xmalloc(sizeof(int) * (size_t)N * N);
    CU_CHECK(lwb_cu.cuMemcpyDtoH(all, b->counts_all, sizeof(int) * (size_t)N * N));
    struct ds_a2a_plan *a = &r->a2a;
    int so = 0, ro = 0;
    for (int j = 0; j < N; j++) {
        a->send_rows[j] = all[(size_t)me * N + j], a->send_off[j] = so, so += a->send_rows[j];
        a->recv_rows[j] = all[(size_t)j * N + me], a->recv_off[j] = ro, ro += a->recv_rows[j];
    }
    a->recv_total = ro;
    a->planned = true;
    free(all);
}

// This rank's experts on `tokens` tokens (x, their expert ids): permute (in fp8 runs quantising
// each routed copy), the gate/up product with its SwiGLU, (fp8: quantise the rows the permutation
// filled), the down product.
static void ds_experts(struct ds_run *r, CUstream s, CUdeviceptr ids, int tokens, CUdeviceptr x) {
    const struct ds_dims *d = &r->f->d;
    struct ds_buffers *b = &r->f->buf;
    const int ra = gemm_tile_rows(&r->g_e13), rb = gemm_tile_rows(&r->g_e2);
    if (!d->fp8) {
        moe_permute_enqueue(&r->r_route, r->route_cfg, s, &b->perm, ids, tokens, d->e0, ra, rb, x, b->x_perm);
        gemm_enqueue(&r->g_e13, s);
    } else {
        moe_permute_fp8_enqueue(&r->r_route, r->route_cfg, s, &b->perm, ids, tokens, d->e0, ra, rb, x, b->x_permq.q,
                                b->x_permq.s);
        gemm_enqueue(&r->g_e13, s);
        const CUdeviceptr last = (CUdeviceptr)(d->experts_local - 1) * 4;
        const int I = d->moe_inter;
        quant_enqueue_used(&r->r_quant, s, b->h_perm, I, (int)(ds_moe_tokens(r->f, &r->p) * d->top_k), I, b->h_permq.q, I,
                           b->h_permq.s, I / 128, b->perm.offsets + last, b->perm.counts + last);
    }
    gemm_enqueue(&r->g_e2, s);
}

// The expert ids a layer's router choice is replaced with: the balance override (the same for
// every layer), or with a replay this layer's slot of the replayed iteration.
static CUdeviceptr ds_override_of(const struct ds_family *f, const struct ds_layer *L) {
    const struct ds_buffers *b = &f->buf;
    if (!f->spec.replay) return b->override;
    return b->override + (CUdeviceptr)L->moe_slot * (CUdeviceptr)b->max_tokens * f->d.top_k * 4;
}

// Deepseekv3MoE > MoE: expert choice (and the balance override) on this rank's tokens, the
// exchange of routed tokens between ranks, permute, the two grouped expert products over this
// rank's experts, combine (adding the shared experts' output) into the layer's hidden output.
static void ds_mod_experts(void *arg, CUstream s) {
    struct ds_run *r = arg;
    struct ds_family *f = r->f;
    const struct ds_dims *d = &f->d;
    struct ds_buffers *b = &f->buf;
    struct lwb_comm *c = f->sh->comm;
    const int T = r->p.tokens, kk = d->top_k, N = f->sh->world_size;
    const long long H = d->hidden;
    const CUdeviceptr shared = d->shared_inter ? b->ys : 0;
    moe_topk_enqueue(&r->r_route, s, b->logits, r->g_gate.cfg.splitk, T * (long long)d->experts, r->L->w.bias, T,
                     d->scaling, r->use_override ? ds_override_of(r->f, r->L) : 0, b->ids, b->weights);
    if (!c || f->sh->moe_comm == LWB_MOE_COMM_NONE) {
        ds_experts(r, s, b->ids, T, b->x);
        moe_combine_enqueue(&r->r_route, s, b->y_perm, &b->perm, b->weights, shared, 0, T, b->hidden, T);
    } else if (f->sh->moe_comm == LWB_MOE_COMM_ALLGATHER) {
        struct comm_gather g[] = {{b->x, b->x_all, (size_t)T * H, ncclBfloat16},
                                  {b->ids, b->ids_all, (size_t)T * kk, ncclInt32},
                                  {b->weights, b->w_all, (size_t)T * kk, ncclFloat32}};
        comm_allgather_group(c, g, 3, s, r->what_gather);
        ds_experts(r, s, b->ids_all, T * N, b->x_all);
        moe_combine_enqueue(&r->r_route, s, b->y_perm, &b->perm, b->w_all, shared, f->sh->rank * T, T, b->y_all, T * N);
        comm_reduce_scatter(c, b->y_all, b->hidden, (size_t)T * H, ncclBfloat16, s, r->what_scatter);
    } else {
        struct ds_a2a_plan *a = &r->a2a;
        moe_a2a_count_enqueue(&r->r_route, r->route_cfg, s, &b->a2a, b->ids, T);
        if (!a->planned) {
            ds_a2a_plan_counts(r, s);
            upload_wait(s, b->a2a.planned, a->send_rows, sizeof(int) * (size_t)N);
            upload_wait(s, b->a2a.offset, a->send_off, sizeof(int) * (size_t)N);
        } else {
            // Another layer or problem may have planned the shared device arrays since.
            CU_CHECK(lwb_cu.cuMemcpyHtoDAsync(b->a2a.planned, a->send_rows, sizeof(int) * (size_t)N, s));
            CU_CHECK(lwb_cu.cuMemcpyHtoDAsync(b->a2a.offset, a->send_off, sizeof(int) * (size_t)N, s));
        }
        moe_a2a_pack_enqueue(&r->r_route, r->route_cfg, s, &b->a2a, b->ids, b->weights, b->x, T, b->send_x,
                             b->send_ids, b->send_w);
        struct comm_part out[] = {{b->send_x, b->x_all, (size_t)H * 2},
                                  {b->send_ids, b->ids_all, (size_t)kk * 4},
                                  {b->send_w, b->w_all, (size_t)kk * 4}};
        comm_alltoallv(c, out, 3, a->send_rows, a->send_off, a->recv_rows, a->recv_off, s, r->what_gather);
        ds_experts(r, s, b->ids_all, a->recv_total, b->x_all);
        moe_combine_enqueue(&r->r_route, s, b->y_perm, &b->perm, b->w_all, 0, 0, 0, b->y_all, a->recv_total);
        struct comm_part back[] = {{b->y_all, b->back, (size_t)H * 2}};
        comm_alltoallv(c, back, 1, a->recv_rows, a->recv_off, a->send_rows, a->send_off, s, r->what_scatter);
        moe_a2a_sum_enqueue(&r->r_route, s, &b->a2a, b->back, shared, b->hidden, T);
    }
}

// GatedMLP of a dense layer: x -> hidden.
static void ds_mod_mlp(void *arg, CUstream s) {
    struct ds_run *r = arg;
    gemm_enqueue(&r->g_d13, s);
    if (r->f->d.fp8) ds_quant(r, s, r->f->buf.hd, r->p.tokens, r->f->d.inter, &r->f->buf.hdq);
    gemm_enqueue(&r->g_d2, s);
}

// Attention TP: the layer's partial outputs (routed and shared experts, or the MLP) summed over
// the ranks; TensorRT-LLM fuses this with the next layer's input norm, outside every range.
static void ds_mod_out_allreduce(void *arg, CUstream s) {
    struct ds_run *r = arg;
    if (r->f->sh->comm)
        comm_allreduce(r->f->sh->comm, r->f->buf.hidden, (size_t)r->p.tokens * r->f->d.hidden, ncclBfloat16, s,
                       r->what_out_ar);
}

// ---------------------------------------------------------------------------------------------
// Routing as the floors see it: how many routed slots this rank's experts serve, how many of them
// are active, and what the all-to-all moves.

struct ds_route_stats {
    double rows;          // routed (token, slot) pairs served by this rank's experts
    double active;        // this rank's experts with at least one
    double sent, received; // all-to-all: tokens this rank sends to / receives from other ranks
    double *rows_of_rank; // (ranks) rows each rank serves
};

// P(a token's k distinct experts miss a set of `own` experts out of E).
static double ds_miss(int E, int own, int k) {
    double p = 1;
    for (int i = 0; i < k; i++) p *= (double)(E - own - i) / (E - i);
    return LWB_MAX(p, 0.0);
}

// From the balance method's own formula (exact: every rank's selection is a function of its dp
// rank), or for NotModified the expectation of uniform routing.
static void ds_route_expect(const struct ds_family *f, int pi, struct ds_route_stats *st) {
    const struct ds_dims *d = &f->d;
    const struct lwb_shard *sh = f->sh;
    const struct lwb_routing *ro = &f->spec.routing[pi];
    const int N = sh->world_size, T = f->spec.problems[pi].tokens, k = d->top_k, EL = d->experts_local;
    memset(st->rows_of_rank, 0, sizeof(double) * (size_t)N);
    st->rows = st->active = st->sent = st->received = 0;
    if (ro->method == LWB_BALANCE_NOT_MODIFIED) {
        const double tokens = (double)T * sh->dp_size;
        for (int j = 0; j < N; j++) st->rows_of_rank[j] = tokens * k / N;
        st->rows = st->rows_of_rank[sh->rank];
        st->active = EL * (1.0 - pow(1.0 - (double)k / d->experts, tokens));
        if (sh->moe_comm == LWB_MOE_COMM_ALLTOALL) st->sent = st->received = (N - 1) * T * (1 - ds_miss(d->experts, EL, k));
        return;
    }
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)T * k);
    char *seen = xcalloc((size_t)EL, 1);
    char *reach = xcalloc((size_t)N, 1);
    for (int q = 0; q < sh->dp_size; q++) {
        struct lwb_routing r = *ro;
        r.dp_rank = q;
        routing_select(&r, ids);
        for (int t = 0; t < T; t++) {
            memset(reach, 0, (size_t)N);
            for (int i = 0; i < k; i++) {
                int e = ids[(size_t)t * k + i], j = e / EL;
                st->rows_of_rank[j] += 1;
                reach[j] = 1;
                if (j == sh->rank) seen[e - d->e0] = 1;
            }
            for (int j = 0; j < N; j++) {
                if (!reach[j] || j == q) continue;
                if (q == sh->dp_rank) st->sent += 1;
                if (j == sh->rank) st->received += 1;
            }
        }
    }
    st->rows = st->rows_of_rank[sh->rank];
    for (int e = 0; e < EL; e++) st->active += seen[e];
    if (sh->moe_comm != LWB_MOE_COMM_ALLTOALL) st->sent = st->received = 0;
    free(ids), free(seen), free(reach);
}

// From the last forward (read back): this rank's experts' counts, and the all-to-all's plan.
static void ds_route_measured(struct ds_family *f, struct ds_run *r, struct ds_route_stats *st) {
    const int EL = f->d.experts_local, N = f->sh->world_size;
    int *cnt = xmalloc(sizeof(int) * (size_t)EL);
    CU_CHECK(lwb_cu.cuMemcpyDtoH(cnt, f->buf.perm.counts, sizeof(int) * (size_t)EL));
    st->rows = st->active = st->sent = st->received = 0;
    for (int e = 0; e < EL; e++) st->rows += cnt[e], st->active += cnt[e] > 0;
    memset(st->rows_of_rank, 0, sizeof(double) * (size_t)N);
    st->rows_of_rank[f->sh->rank] = st->rows;
    if (f->sh->moe_comm == LWB_MOE_COMM_ALLTOALL && r->a2a.planned)
        for (int j = 0; j < N; j++)
            if (j != f->sh->rank) st->sent += r->a2a.send_rows[j], st->received += r->a2a.recv_rows[j];
    free(cnt);
}

// ---------------------------------------------------------------------------------------------
// Costs: FLOPs, the bytes each module must move at least (weights read once, activations in and
// out once), and the bytes it sends and receives over the links, for floors.

struct ds_costs {
    struct lwb_cost mla, attn_ar, moe, shared, gate, experts, mlp, out_ar;
};

static double ds_active_experts_expected(const struct ds_dims *d, int tokens) {
    double miss = pow(1.0 - (double)d->top_k / d->experts, tokens);
    return d->experts * (1.0 - miss);
}

// Bytes a rank sends (and receives) in a ring all-reduce of `bytes` over n ranks.
static double ds_ring_allreduce(double bytes, int n) { return n > 1 ? 2.0 * (n - 1) / n * bytes : 0; }

// A projection's cost: its FLOPs (fp8 or bf16 by the weight format) and weight bytes (1 byte and a
// scale per 128 x 128 block in fp8), plus `act` bytes of activations; in fp8 its input is also
// read as the quantised copy (1 byte and a scale per 128 values) that a quantising producer wrote.
static struct lwb_cost ds_linear(const struct ds_dims *d, double m, double n, double k, double act) {
    struct lwb_cost c = {0};
    double f = 2.0 * m * n * k;
    if (d->fp8) {
        c.flops8 = f;
        c.bytes = n * k * (1 + 4.0 / 16384) + m * k * (1 + 4.0 / 128) * 2 + act; // quantised A written, read
    } else {
        c.flops = f;
        c.bytes = 2.0 * n * k + act;
    }
    return c;
}
static void cost_add(struct lwb_cost *a, struct lwb_cost b) {
    a->flops += b.flops, a->flops8 += b.flops8, a->bytes += b.bytes, a->sent += b.sent, a->received += b.received;
}

// V3.2: (query token, key) pairs the sparse attention attends: each token's visible keys, at most
// index_topk of them.
static double ds_selected(const struct ds_dims *d, const struct lwb_problem *p) {
    double sel = 0;
    const int past = p->kv_len - p->qlen;
    for (int i = 0; i < p->qlen; i++) sel += LWB_MIN(past + i + 1, d->idx_topk);
    return sel * p->batch;
}

static struct ds_costs ds_cost(const struct ds_dims *d, const struct lwb_shard *sh, const struct lwb_problem *p,
                               bool moe, const struct ds_route_stats *rt) {
    struct ds_costs c = {0};
    const double T = p->tokens, H = d->hidden, A = d->q_lora + d->kv_row, nh = d->heads;
    const int N = sh->world_size;
    // MLA: the projections (fp8 in fp8 runs), attention over the cache and the absorbed or expanded
    // kv_b products (bf16: TensorRT-LLM dequantises kv_b_proj on Hopper), the output projection.
    cost_add(&c.mla, ds_linear(d, T, A, H, 2.0 * T * (H + A)));
    cost_add(&c.mla, ds_linear(d, T, nh * d->qk, d->q_lora, 2.0 * T * (d->q_lora + nh * d->qk)));
    cost_add(&c.mla, ds_linear(d, T, H, nh * d->v, 2.0 * T * (nh * d->v + H)));
    double f = 0, bytes = 2.0 * T * d->kv_row; // new cache rows
    double cached = (double)p->batch * p->kv_len;
    if (d->idx_topk) {
        // The indexer: its projections, the preparation (bf16 queries and keys in, fp8 out, the keys
        // into the cache), the scores of every visible pair (fp8 tensor-core work; the cache read
        // once per request, the fp32 scores written) and the selection (scores read, indices
        // written); then the sparse absorbed attention over each token's selected rows.
        cost_add(&c.mla, ds_linear(d, T, DSA_HEADS * DSA_DIM, d->q_lora, 2.0 * T * DSA_HEADS * DSA_DIM));
        cost_add(&c.mla, ds_linear(d, T, DSA_DIM, H, 2.0 * T * DSA_DIM));
        cost_add(&c.mla, (struct lwb_cost){gemm_flops(T, DSA_HEADS, (int)H, 1), 2.0 * DSA_HEADS * H + 4.0 * T * DSA_HEADS,
                                           0, 0, 0});
        cost_add(&c.mla, (struct lwb_cost){.bytes = T * (2.0 * DSA_HEADS * DSA_DIM + 2.0 * DSA_DIM + 4.0 * DSA_HEADS) +
                                                    T * (DSA_HEADS * (DSA_DIM + 4.0) + DSA_TOKEN_BYTES)});
        const double pairs = dsa_pairs(p->batch, p->qlen, p->kv_len), sel = ds_selected(d, p);
        if (p->kv_len > d->idx_topk) {
            cost_add(&c.mla, (struct lwb_cost){.flops8 = dsa_logits_flops(pairs),
                                               .bytes = dsa_logits_bytes(p->batch, p->qlen, p->kv_len, pairs)});
            c.mla.bytes += dsa_topk_bytes(pairs, T, d->idx_topk);
        } else {
            c.mla.bytes += 4.0 * T * d->idx_topk;
        }
        f += gemm_flops(T, d->kv_lora, d->nope, (int)nh) + gemm_flops(T, d->v, d->kv_lora, (int)nh);
        f += mla_decode_flops((int)nh, sel);
        bytes += mla_sparse_bytes((int)nh, (int)T, sel, d->idx_topk) + 2.0 * nh * d->kv_lora * (d->nope + d->v);
        cost_add(&c.mla, (struct lwb_cost){f, bytes, 0, 0, 0});
    } else if (!p->ctx) {
        f += gemm_flops(T, d->kv_lora, d->nope, (int)nh) + gemm_flops(T, d->v, d->kv_lora, (int)nh);
        double pairs = 0;
        for (int i = 0; i < p->qlen; i++) pairs += (double)p->batch * (p->kv_len - (p->qlen - 1 - i));
        f += mla_decode_flops((int)nh, pairs);
    } else {
        f += gemm_flops(cached, d->nope, d->kv_lora, (int)nh) + gemm_flops(d->v, (int)cached, d->kv_lora, (int)nh);
        f += mla_prefill_flops((int)nh, p->batch, p->qlen, p->kv_len);
    }
    if (!d->idx_topk) {
        bytes += 2.0 * nh * d->kv_lora * (d->nope + d->v) + cached * d->kv_row * 2;
        cost_add(&c.mla, (struct lwb_cost){f, bytes, 0, 0, 0});
    }
    const double ar = ds_tp_collectives(sh) ? ds_ring_allreduce(2.0 * T * H, N) : 0;
    if (moe) c.attn_ar = (struct lwb_cost){0, 0, ar, ar, 0};
    else c.mla.sent = c.mla.received = ar;
    if (moe) {
        const double k = d->top_k, rows = rt->rows, I = d->moe_inter;
        if (d->shared_inter) {
            c.shared = ds_linear(d, T, 2 * d->shared_inter, H, 2.0 * T * d->shared_inter);
            cost_add(&c.shared, ds_linear(d, T, H, d->shared_inter, 2.0 * T * (d->shared_inter + H)));
        }
        c.gate = (struct lwb_cost){gemm_flops(T, d->experts, (int)H, 1),
                                   2.0 * d->experts * H + 2.0 * T * H + 4.0 * T * d->experts, 0, 0, 0};
        // Routed experts: only the active experts' weights are read.
        const double wfrac = rt->active;
        // Activations: the permuted copies (bf16, or quantised by the permutation), the
        // intermediate written and read, the outputs written and read by the combine.
        struct lwb_cost e13 = ds_linear(d, rows, 2 * I, H, 2.0 * rows * I + (d->fp8 ? 0 : 4.0 * rows * H)),
                        e2 = ds_linear(d, rows, H, I, 2.0 * rows * (I + 2 * H));
        e13.bytes -= 2 * I * H * (d->fp8 ? 1 + 4.0 / 16384 : 2), e2.bytes -= H * I * (d->fp8 ? 1 + 4.0 / 16384 : 2);
        c.experts = e13;
        cost_add(&c.experts, e2);
        c.experts.bytes += 3.0 * H * I * wfrac * (d->fp8 ? 1 + 4.0 / 16384 : 2) // active experts' weights
                           + 2.0 * T * H * 2 + 4.0 * T * d->experts + 8.0 * T * k; // tokens in and out, routing
        double sent = 0, received = 0;
        if (sh->moe_comm == LWB_MOE_COMM_ALLGATHER) {
            // Ring all-gather of every rank's tokens, ids and weights; ring reduce-scatter of the sums.
            sent = received = (N - 1) * T * (2 * H + 8 * k) + (N - 1) * T * 2 * H;
        } else if (sh->moe_comm == LWB_MOE_COMM_ALLTOALL) {
            sent = rt->sent * (2 * H + 8 * k) + rt->received * 2 * H;
            received = rt->received * (2 * H + 8 * k) + rt->sent * 2 * H;
        }
        c.experts.sent = sent, c.experts.received = received;
        c.moe = c.shared;
        cost_add(&c.moe, c.gate);
        cost_add(&c.moe, c.experts);
    } else {
        c.mlp = ds_linear(d, T, 2 * d->inter, H, 2.0 * T * d->inter);
        cost_add(&c.mlp, ds_linear(d, T, H, d->inter, 2.0 * T * (d->inter + H)));
    }
    if (ds_tp_collectives(sh)) c.out_ar = (struct lwb_cost){0, 0, ar, ar, 0};
    return c;
}

// The layer's modules, with TensorRT-LLM's NVTX names (mark_utils: MLA, Deepseekv3MoE >
// GatedMLP, DeepseekV3Gate, MoE; GatedMLP for dense layers).
static void ds_modules(void *fam, int pi, int l, bool measured, struct lwb_modules *out) {
    struct ds_family *f = fam;
    struct ds_run *r = ds_run_of(f, pi, l);
    const struct ds_dims *d = &f->d;
    const struct ds_buffers *b = &f->buf;
    const size_t n = (size_t)r->p.tokens * d->hidden;
    const bool tp = ds_tp_collectives(f->sh);
    struct ds_route_stats rt = {.rows_of_rank = xcalloc((size_t)f->sh->world_size, sizeof(double))};
    if (r->L->moe) {
        if (measured) ds_route_measured(f, r, &rt);
        else ds_route_expect(f, pi, &rt);
    }
    struct ds_costs c = ds_cost(d, f->sh, &r->p, r->L->moe, &rt);
    free(rt.rows_of_rank);
    out->n = 0;
    if (r->first && d->fp8) modules_add(out, (struct lwb_module){.fn = ds_mod_input_quant, .arg = r});
    modules_add(out, (struct lwb_module){"MLA", NULL, 0, ds_mod_mla, r, c.mla, "attention output", b->attn_out, n});
    if (tp && r->L->moe)
        modules_add(out, (struct lwb_module){NULL, "all-reduce", 0, ds_mod_attn_allreduce, r, c.attn_ar,
                                             "attention output (all-reduced)", b->attn_out, n});
    modules_add(out, (struct lwb_module){.fn = ds_mod_post_norm, .arg = r, .check_what = "residual",
                                         .check_ptr = b->residual, .check_n = n});
    if (r->L->moe) {
        modules_add(out, (struct lwb_module){"Deepseekv3MoE", NULL, 0, NULL, NULL, c.moe});
        if (d->shared_inter) modules_add(out, (struct lwb_module){"GatedMLP", NULL, 1, ds_mod_shared, r, c.shared});
        modules_add(out, (struct lwb_module){"DeepseekV3Gate", NULL, 1, ds_mod_gate, r, c.gate});
        modules_add(out, (struct lwb_module){"MoE", NULL, 1, ds_mod_experts, r, c.experts, "hidden_states", b->hidden, n});
    } else {
        modules_add(out, (struct lwb_module){"GatedMLP", NULL, 0, ds_mod_mlp, r, c.mlp, "hidden_states", b->hidden, n});
    }
    if (tp)
        modules_add(out, (struct lwb_module){NULL, "all-reduce", 0, ds_mod_out_allreduce, r, c.out_ar,
                                             "hidden_states (all-reduced)", b->hidden, n});
    modules_add(out, (struct lwb_module){.fn = ds_mod_next_norm, .arg = r,
                                         .check_what = "the closing norm's output (the next layer's input)",
                                         .check_ptr = b->x, .check_n = n});
}

// ---------------------------------------------------------------------------------------------
// The KV-cache fill

static void ds_fill_plan(struct ds_fill *fl, struct ds_family *f, const struct lwb_device *dev) {
    const struct ds_dims *d = &f->d;
    fl->max_past = 0;
    for (int i = 0; i < f->spec.nproblems; i++) fl->max_past = LWB_MAX(fl->max_past, f->spec.problems[i].past);
    fl->chunk = LWB_MIN(fl->max_past, 4096);
    if (fl->chunk == 0) return;
    fl->n_in = rmsnorm_choose_config(d->hidden, false);
    fl->n_in.quant = d->fp8;
    fl->n_kv = rmsnorm_choose_config(d->kv_lora, false);
    rmsnorm_request(&fl->r_in, fl->n_in);
    rmsnorm_request(&fl->r_kv, fl->n_kv);
    mla_rope_request(&fl->r_rope, (struct mla_rope_config){d->heads, d->nope, d->rope, d->kv_lora, d->page});
    fl->g = xcalloc((size_t)f->nlayers, sizeof *fl->g);
    for (int l = 0; l < f->nlayers; l++)
        (d->fp8 ? gemm_plan_fp8 : gemm_plan)(&fl->g[l], "cache_fill", fl->chunk, d->kv_row, d->hidden, 1, GEMM_EPI_BF16,
                                             false, 0, dev);
    if (!d->idx_topk) return;
    fl->gi = xcalloc((size_t)f->nlayers, sizeof *fl->gi);
    for (int l = 0; l < f->nlayers; l++)
        (d->fp8 ? gemm_plan_fp8 : gemm_plan)(&fl->gi[l], "cache_fill_indexer", fl->chunk, DSA_DIM, d->hidden, 1,
                                             GEMM_EPI_BF16, false, 0, dev);
    dsa_request(&fl->dsa, (struct dsa_config){.page = d->page, .rope = d->rope, .nq = 1, .wg = 2, .splits = 1});
}

static void ds_fill_alloc(struct ds_fill *fl, const struct ds_dims *d, struct lwb_mem *m) {
    if (fl->chunk == 0) return;
    fl->hidden = mem_alloc(m, MEM_WS, DS_BF16(fl->chunk, d->hidden), "cache fill input");
    fl->x = mem_alloc(m, MEM_WS, DS_BF16(fl->chunk, d->hidden), "cache fill norm");
    fl->kv = mem_alloc(m, MEM_WS, DS_BF16(fl->chunk, d->kv_row), "cache fill projection");
    fl->latent = mem_alloc(m, MEM_WS, DS_BF16(fl->chunk, d->kv_lora), "cache fill latent");
    fl->kv_new = mem_alloc(m, MEM_WS, DS_BF16(fl->chunk, d->kv_row), "cache fill rows");
    fl->lens = mem_alloc(m, MEM_WS, (size_t)LWB_CEIL_DIV(fl->max_past, fl->chunk) * 4, "cache fill lengths");
    if (d->idx_topk) fl->ik = mem_alloc(m, MEM_WS, DS_BF16(fl->chunk, DSA_DIM), "cache fill indexer keys");
    if (d->fp8) {
        fl->xq.q = mem_alloc(m, MEM_WS, (size_t)fl->chunk * d->hidden, "cache fill norm (fp8)");
        fl->xq.s = mem_alloc(m, MEM_WS, (size_t)fl->chunk * (d->hidden / 128) * 4, "cache fill norm (fp8 scales)");
    }
}

// Request b of this rank is request dp_rank x max_batch + b of the whole run: its cached tokens
// come from that global index, so a rank's cache holds what one GPU's holds for it. The cached
// tokens are random hidden states through a norm (the layer's closing norm's weights: any norm
// does for random inputs) and the layer's kv_a projection, kv_a_layernorm and RoPE.
static void ds_fill_cache(struct ds_family *f, CUstream s) {
    struct ds_fill *fl = &f->fill;
    if (!fl->chunk) return;
    const struct ds_dims *d = &f->d;
    const struct ds_buffers *b = &f->buf;
    const int nchunks = LWB_CEIL_DIV(fl->max_past, fl->chunk);
    int *lens = xmalloc(sizeof(int) * (size_t)nchunks);
    for (int c = 0; c < nchunks; c++) lens[c] = LWB_MIN(fl->max_past, (c + 1) * fl->chunk);
    upload_wait(s, fl->lens, lens, sizeof(int) * (size_t)nchunks);
    for (int l = 0; l < f->nlayers; l++) {
        const struct ds_layer *L = &f->layers[l];
        // kv_a_proj_with_mqa: the rows after q_a's in the fused weight (and its scale rows).
        struct lwb_operand x = {fl->x, fl->chunk, d->hidden, d->hidden, 1, 0};
        struct lwb_operand w = {L->w.fused_a + (CUdeviceptr)d->q_lora * d->hidden * (d->fp8 ? 1 : 2), d->kv_row,
                                d->hidden, d->hidden, 1, 0};
        ds_bind_proj(&fl->g[l], &x, &fl->xq, &w, L->w.fused_a_s + ds_sbytes(d->q_lora, d->hidden), fl->kv, d->kv_row,
                     b->gemm_ws);
        if (d->idx_topk) {
            struct lwb_operand wk = {L->w.i_wk, DSA_DIM, d->hidden, d->hidden, 1, 0};
            ds_bind_proj(&fl->gi[l], &x, &fl->xq, &wk, L->w.i_wk_s, fl->ik, DSA_DIM, b->gemm_ws);
        }
        for (int q = 0; q < b->max_batch; q++) {
            const unsigned long long req = (unsigned long long)f->sh->dp_rank * b->max_batch + (unsigned long long)q;
            for (int c = 0; c < nchunks; c++) {
                const int n = lens[c] - c * fl->chunk;
                init_fill_bf16(f->init, s, fl->hidden, (long long)n * d->hidden,
                               f->seed * 7919 + req * (unsigned long long)nchunks + (unsigned long long)c, 0.f, 1.f);
                rmsnorm_enqueue_q8(&fl->r_in, fl->n_in, s, fl->hidden, d->hidden, 0, 0, 0, L->w.next_norm, fl->x,
                                   d->hidden, n, d->eps, fl->xq.q, fl->xq.s);
                fl->g[l].m = n;
                gemm_enqueue(&fl->g[l], s);
                rmsnorm_enqueue(&fl->r_kv, fl->n_kv, s, fl->kv, d->kv_row, 0, 0, 0, L->w.kv_a_norm, fl->latent,
                                d->kv_lora, n, d->eps);
                struct mla_rope_args ra = {0, 0, fl->kv + (CUdeviceptr)d->kv_lora * 2, d->kv_row, fl->latent, d->kv_lora,
                                           fl->kv_new, L->cache, b->block_table + (CUdeviceptr)q * b->max_blocks * 4,
                                           fl->lens + (CUdeviceptr)c * 4, b->cos_t, b->sin_t, b->max_blocks, n, n};
                mla_rope_enqueue(&fl->r_rope, s, &ra);
                if (d->idx_topk) {
                    fl->gi[l].m = n;
                    gemm_enqueue(&fl->gi[l], s);
                    struct dsa_prep_args ia = {0, 0, fl->ik, DSA_DIM, 0, 0, L->w.i_ln_w, L->w.i_ln_b, 1e-6f, b->cos_t,
                                               b->sin_t, fl->lens + (CUdeviceptr)c * 4,
                                               b->block_table + (CUdeviceptr)q * b->max_blocks * 4, L->icache, 0, 0, n,
                                               b->max_blocks, n};
                    dsa_prep_enqueue(&fl->dsa, s, &ia);
                }
            }
        }
    }
    stream_wait(s, 600, "the KV-cache fill");
    free(lens);
}

// ---------------------------------------------------------------------------------------------
// The family table's functions

static bool ds_runs(const struct lwb_model *m) {
    return !strcmp(m->model_type, "deepseek_v3") || !strcmp(m->model_type, "deepseek_v32");
}

// Sizes the kernels index with 32-bit integers or launch as grid dimensions (at most 65535 in y
// and z), checked in 64 bits before anything is planned: one line naming what to shrink.
static void ds_check_sizes(const struct ds_family *f) {
    const struct lwb_run_spec *sp = f->spec_ptr;
    const struct ds_dims *d = &f->d;
    const long long blocks = (long long)sp->max_batch * LWB_CEIL_DIV((long long)sp->max_seq_len, sp->page);
    if (blocks > INT_MAX)
        lwb_user_error("run: the KV cache would have %lld blocks (%d slots x %d tokens / %d per block); lwb's block "
                       "tables hold at most %d: a smaller --max-batch-size or --max-seq-len, or larger "
                       "--tokens-per-block",
                       blocks, sp->max_batch, sp->max_seq_len, sp->page, INT_MAX);
    for (int i = 0; i < sp->nproblems; i++) {
        const struct lwb_problem *q = &sp->problems[i];
        const long long keys = (long long)q->batch * mla_prefill_pitch(q->kv_len);
        if (d->idx_topk && q->tokens > 65535)
            lwb_user_error("run: %d tokens in one forward (b=%d x %d) are more than lwb's sparse attention takes "
                           "(65535 query tokens); use fewer requests per CTX forward",
                           q->tokens, q->batch, q->qlen);
        if (q->ctx && !d->idx_topk && keys > 65535LL * 64)
            lwb_user_error("run: b=%d x %d keys of context (%lld in all) is more than lwb's context attention takes in "
                           "one forward (%lld); use fewer requests or a shorter --seq-len-kv-cache",
                           q->batch, q->kv_len, keys, 65535LL * 64);
        if (!q->ctx && mla_decode_row_groups(d->heads, q->qlen) > 65535)
            lwb_user_error("run: seq-len-q %d x %d heads is more than lwb's generation attention takes (65535 x 64 "
                           "rows per request); use a smaller --seq-len-q for GEN",
                           q->qlen, d->heads);
        const long long tm = (long long)q->tokens * (f->sh->moe_comm ? f->sh->world_size : 1);
        const long long tiles = LWB_CEIL_DIV(tm * d->top_k, 64) + d->experts_local;
        if (tm * d->top_k > INT_MAX / 2 || tiles > 65535)
            lwb_user_error("run: %lld routed rows (%d tokens x top-%d%s) are more than lwb's expert GEMMs take in "
                           "one launch (65535 tiles of 64 rows); use fewer tokens per forward",
                           tm * d->top_k, q->tokens, d->top_k, f->sh->moe_comm ? " from every rank" : "");
    }
}

static void *ds_create(const struct lwb_run_spec *spec) {
    struct ds_family *f = xcalloc(1, sizeof *f);
    f->spec = *spec;
    f->spec_ptr = &f->spec;
    f->sh = spec->shard;
    f->model = spec->model;
    if (!f->model->rope_interleave)
        lwb_user_error("run: model %s sets rope_interleave false; lwb's rope kernel takes DeepSeek checkpoints' "
                       "interleaved rope dimensions only",
                       f->model->name);
    f->d = ds_dims_from_model(f->model, f->sh, spec->page);
    f->d.fp8 = spec->wformat == LWB_WF_FP8;
    ds_dims_check(&f->d, f->sh, f->model->name);
    ds_check_sizes(f);
    f->nlayers = spec->nlayers;
    f->layers = xcalloc((size_t)f->nlayers, sizeof *f->layers);
    int nmoe = 0;
    for (int l = 0; l < f->nlayers; l++) {
        f->layers[l].index = spec->layers[l];
        f->layers[l].moe = model_layer_is_moe(f->model, spec->layers[l]);
        f->layers[l].moe_slot = f->layers[l].moe ? nmoe++ : -1;
    }
    return f;
}

static void ds_plan(void *fam, const struct lwb_device *dev) {
    struct ds_family *f = fam;
    struct ds_buffers *b = &f->buf;
    const int np = f->spec.nproblems;
    free(f->runs);
    f->runs = xcalloc((size_t)np * f->nlayers, sizeof *f->runs);
    memset(b, 0, sizeof *b);
    for (int l = 0; l < f->nlayers; l++) b->moe_layers += f->layers[l].moe;
    b->max_batch = f->spec.max_batch;
    b->max_blocks = LWB_CEIL_DIV(f->spec.max_seq_len, f->spec.page);
    b->positions = f->spec.max_seq_len;
    for (int i = 0; i < np; i++) {
        const struct lwb_problem *q = &f->spec.problems[i];
        b->max_tokens = LWB_MAX(b->max_tokens, q->tokens);
        b->moe_tokens = LWB_MAX(b->moe_tokens, ds_moe_tokens(f, q));
        b->max_keys = LWB_MAX(b->max_keys, (long long)q->batch * mla_prefill_pitch(q->kv_len));
        for (int l = 0; l < f->nlayers; l++) {
            struct ds_run *r = ds_run_of(f, i, l);
            ds_run_plan(r, f, &f->layers[l], q, dev,
                        f->spec.routing[i].method != LWB_BALANCE_NOT_MODIFIED || f->spec.replay);
            r->first = l == 0, r->last = l == f->nlayers - 1;
            if (r->last && r->n_in.quant) { // nothing reads the last layer's quantised output
                r->n_in.quant = false;
                rmsnorm_request(&r->r_in, r->n_in);
            }
            ds_run_workspace(r, b);
        }
    }
    ds_fill_plan(&f->fill, f, dev);
    for (int l = 0; f->fill.chunk && l < f->nlayers; l++) {
        b->gemm_ws_bytes = LWB_MAX(b->gemm_ws_bytes, gemm_workspace_bytes(&f->fill.g[l]));
        if (f->fill.gi) b->gemm_ws_bytes = LWB_MAX(b->gemm_ws_bytes, gemm_workspace_bytes(&f->fill.gi[l]));
    }
}

static void ds_requests(void *fam, struct lwb_kreqs *out) {
    struct ds_family *f = fam;
    for (size_t i = 0; i < (size_t)f->spec.nproblems * f->nlayers; i++) ds_run_requests(&f->runs[i], out);
    if (f->fill.chunk) {
        kreqs_add(out, &f->fill.r_in), kreqs_add(out, &f->fill.r_kv), kreqs_add(out, &f->fill.r_rope);
        for (int l = 0; l < f->nlayers; l++) kreqs_add(out, &f->fill.g[l].req);
        if (f->fill.gi) {
            kreqs_add(out, &f->fill.dsa.req);
            for (int l = 0; l < f->nlayers; l++) kreqs_add(out, &f->fill.gi[l].req);
        }
    }
}

static void ds_alloc(void *fam, struct lwb_mem *m) {
    struct ds_family *f = fam;
    bool any_moe = false, any_dense = false;
    for (int l = 0; l < f->nlayers; l++) any_moe |= f->layers[l].moe, any_dense |= !f->layers[l].moe;
    const int blocks = f->buf.max_batch * f->buf.max_blocks;
    for (int l = 0; l < f->nlayers; l++) ds_layer_alloc(m, &f->layers[l], &f->d, blocks);
    ds_fill_alloc(&f->fill, &f->d, m);
    ds_buffers_alloc(m, &f->buf, &f->d, f->sh, f->spec.ctx, any_moe, any_dense, f->spec.replay);
}

static void ds_load_layer(struct lwb_ckpt *c, const struct lwb_model *m, struct ds_layer *L, const struct ds_dims *d,
                          const struct lwb_kreq *init, CUstream s);

// Weights (random, or from the checkpoint), rope tables, block tables (a shuffled page order), the
// cache.
static void ds_init(void *fam, const struct lwb_kreq *init, CUstream s, unsigned long long seed) {
    struct ds_family *f = fam;
    const struct ds_dims *d = &f->d;
    struct ds_buffers *b = &f->buf;
    f->init = init;
    f->seed = seed;
    for (int l = 0; l < f->nlayers; l++) {
        struct ds_layer *L = &f->layers[l];
        if (!f->spec.ckpt) {
            ds_layer_init(L, d, init, s, seed);
            continue;
        }
        ds_load_layer(f->spec.ckpt, f->model, L, d, init, s);
        // Finite values in every slot; the requests' past tokens are written by the fill below.
        init_fill_bf16(init, s, L->cache, (long long)L->blocks * d->page * d->kv_row, seed * 1000003ULL + 7, -1.f, 1.f);
        if (L->icache) CU_CHECK(lwb_cu.cuMemsetD8Async(L->icache, 0, dsa_cache_bytes(L->blocks, d->page), s));
    }
    const int half = d->rope / 2, pos = b->positions;
    double *inv = xmalloc(sizeof(double) * (size_t)half);
    model_rope_inv_freq(f->model, inv);
    float *cs = xmalloc(sizeof(float) * (size_t)pos * half), *sn = xmalloc(sizeof(float) * (size_t)pos * half);
    mla_rope_tables(inv, half, pos, model_rope_attention_factor(f->model), cs, sn);
    upload_wait(s, b->cos_t, cs, sizeof(float) * (size_t)pos * half);
    upload_wait(s, b->sin_t, sn, sizeof(float) * (size_t)pos * half);
    free(inv), free(cs), free(sn);
    block_table_upload(b->block_table, b->max_batch * b->max_blocks, seed, s);
    // Rows between requests' keys in the context phase are never attended; keep them finite.
    if (b->kv_all) CU_CHECK(lwb_cu.cuMemsetD8Async(b->kv_all, 0, (size_t)b->max_keys * d->kv_row * 2, s));
    if (b->a2a.changed) CU_CHECK(lwb_cu.cuMemsetD32Async(b->a2a.changed, 0, 1, s));
    ds_fill_cache(f, s);
}

// Per-problem state: cache lengths, the balance override, the inputs (torch.rand, as the
// reference's run pack; rank r's tokens are rows r T .. of the whole run's), tensor maps.
static void ds_setup(void *fam, int pi, CUstream s) {
    struct ds_family *f = fam;
    const struct lwb_problem *p = &f->spec.problems[pi];
    struct ds_buffers *b = &f->buf;
    const long long H = f->d.hidden, first = (long long)f->sh->dp_rank * p->tokens * H;
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
    init_fill_bf16_at(f->init, s, b->hidden_in, p->tokens, H, H, first, f->seed * 31 + 1, 0.f, 1.f);
    init_fill_bf16_at(f->init, s, b->residual_in, p->tokens, H, H, first, f->seed * 31 + 2, 0.f, 1.f);
    for (int l = 0; l < f->nlayers; l++) ds_run_bind(ds_run_of(f, pi, l));
    stream_wait(s, 60, "the problem's inputs");
}

// The plan lines of this family: layers and this rank's share.
static void ds_describe(void *fam, FILE *out) {
    struct ds_family *f = fam;
    const struct ds_dims *d = &f->d;
    const struct lwb_shard *sh = f->sh;
    fprintf(out, "layers:");
    for (int l = 0; l < f->nlayers; l++)
        fprintf(out, " %d (%s)", f->layers[l].index, f->layers[l].moe ? "MLA + MoE" : "MLA + MLP");
    fprintf(out, "\n");
    if (d->fp8)
        fprintf(out, "weights: fp8 (e4m3, one fp32 scale per 128x128 block; activations quantised per token and 128 "
                     "channels, in the RMSNorms and the MoE permutation and by passes before o_proj and the down "
                     "projections); bf16: the router gate, kv_b_proj (dequantised at load: the absorbed W_UK/W_UV "
                     "products and the context expansion) and attention\n");
    else
        fprintf(out, "weights: bf16\n");
    if (d->idx_topk)
        fprintf(out, "attention: DeepSeek Sparse Attention: a lightning indexer (64 heads x 128, fp8 keys in a paged "
                     "cache of %d bytes per token) keeps the %d best-scoring keys of each query token; absorbed MLA "
                     "over them in both phases\n",
                DSA_TOKEN_BYTES, d->idx_topk);
    if (sh->world_size == 1 && !sh->scaled_from) return;
    fprintf(out, "rank %d of %d: attention %s, heads %d..%d of %d; experts %d..%d of %d", sh->rank, sh->world_size,
            sh->attention_dp ? "data-parallel" : "tensor-parallel", d->head0, d->head0 + d->heads - 1, d->heads_total,
            d->e0, d->e0 + d->experts_local - 1, d->experts);
    if (sh->tp_size > 1) fprintf(out, "; shared experts and dense MLP 1/%d of their width", sh->tp_size);
    if (sh->scaled_from)
        fprintf(out, " (--scaled-from %d: %d experts%s per GPU, as on %d GPUs)", sh->scaled_from, d->experts_local,
                sh->attention_dp ? "" : " and their heads", sh->scaled_from);
    fprintf(out, "\n");
    bool any_moe = false;
    for (int l = 0; l < f->nlayers; l++) any_moe |= f->layers[l].moe;
    if (!any_moe) return;
    fprintf(out, "MoE tokens between ranks: %s\n",
            sh->moe_comm == LWB_MOE_COMM_ALLGATHER ? "all-gather of every rank's tokens, reduce-scatter of the sums"
            : sh->moe_comm == LWB_MOE_COMM_ALLTOALL ? "all-to-all to the ranks of each token's experts, and back"
            : sh->world_size > 1                    ? "replicated (attention TP): partial outputs all-reduced"
                                                    : "none");
    struct ds_route_stats rt = {.rows_of_rank = xcalloc((size_t)sh->world_size, sizeof(double))};
    for (int i = 0; i < f->spec.nproblems; i++) {
        ds_route_expect(f, i, &rt);
        const struct lwb_problem *p = &f->spec.problems[i];
        fprintf(out, "  b=%d s=%d past=%d %s: routed rows per rank", p->batch, p->qlen, p->past,
                balance_method_name(f->spec.routing[i].method));
        for (int j = 0; j < sh->world_size && j < 16; j++) fprintf(out, " %.0f", rt.rows_of_rank[j]);
        if (sh->world_size > 16) fprintf(out, " ...");
        fprintf(out, " (rank %d: %.1f per expert, %.0f of %d experts active", sh->rank, rt.rows / d->experts_local,
                rt.active, d->experts_local);
        if (sh->moe_comm == LWB_MOE_COMM_ALLTOALL) fprintf(out, "; sends %.0f tokens, receives %.0f", rt.sent, rt.received);
        fprintf(out, ")\n");
    }
    free(rt.rows_of_rank);
}

// Routing replay and collection (family.h).
static bool ds_route_layer(void *fam, int layer) { return ((struct ds_family *)fam)->layers[layer].moe; }

// Every replayed iteration's choices to the device: the replay's layout, (iterations, MoE layers,
// tokens, top_k), is the staging buffer's (the replay's tokens are every problem's, so max_tokens).
static void ds_route_stage(void *fam, const struct lwb_replay *rp, CUstream s) {
    struct ds_family *f = fam;
    const struct ds_buffers *b = &f->buf;
    if (rp->nlayers != b->moe_layers || rp->tokens != b->max_tokens || rp->top_k != f->d.top_k)
        LWB_BUG("replay of %d layers x %d tokens x %d for %d x %lld x %d", rp->nlayers, rp->tokens, rp->top_k,
                b->moe_layers, b->max_tokens, f->d.top_k);
    upload_wait(s, b->replay_stage, rp->ids, sizeof(int32_t) * (size_t)rp->nslots * rp->nlayers * rp->tokens * rp->top_k);
}

static void ds_route_replay(void *fam, int slot, CUstream s) {
    struct ds_family *f = fam;
    const struct ds_buffers *b = &f->buf;
    const size_t one = (size_t)b->max_tokens * f->d.top_k * 4 * (size_t)b->moe_layers;
    CU_CHECK(lwb_cu.cuMemcpyDtoDAsync(b->override, b->replay_stage + (CUdeviceptr)slot * one, one, s));
}

// The ids the MoE of `layer` used: the shared ids buffer, right after that layer ran.
static void ds_route_read(void *fam, int pi, int layer, int32_t *ids, CUstream s) {
    struct ds_family *f = fam;
    if (!f->layers[layer].moe) LWB_BUG("routing read of dense layer %d", f->layers[layer].index);
    stream_wait(s, 120, "reading the expert ids back");
    CU_CHECK(lwb_cu.cuMemcpyDtoH(ids, f->buf.ids, sizeof(int32_t) * (size_t)f->spec.problems[pi].tokens * f->d.top_k));
}

static bool ds_verify(void *fam, int pi, char *why, size_t n) {
    struct ds_family *f = fam;
    (void)pi;
    if (!f->buf.a2a.changed) return true;
    int changed = 0;
    CU_CHECK(lwb_cu.cuMemcpyDtoH(&changed, f->buf.a2a.changed, sizeof changed));
    if (!changed) return true;
    snprintf(why, n, "the all-to-all's row counts changed between iterations (routing is not deterministic); the "
             "timed iterations sent rows planned for other counts");
    return false;
}

// layers/deepseek_dump.h: `lwb run --dump DIR` for the DeepSeek family: the first problem's
// layers as safetensors files that a reference implementation can load:
// DIR/layer<i>.safetensors per selected layer and DIR/meta.json; on one rank also DIR/config.json
// and DIR/model.safetensors.index.json, which make the folder a checkpoint that
// `--load-format AUTO --model DIR` loads (the same weights: the same outputs, bit for bit, for the
// same seed). With several ranks, each rank
// writes DIR/layer<i>.rank<r>.safetensors with lwb's tensors only (its inputs, outputs and
// routing: the weights are the one-GPU run's, by construction), for comparison with a one-GPU
// dump of the same requests; rank 0 writes meta.json.
//
// Each file holds the layer's weights under a DeepSeek-V3 checkpoint's own tensor names and
// layouts (model.layers.<i>.self_attn.q_a_proj.weight, ..., mlp.experts.<e>.gate_proj.weight: the
// fused and interleaved forms lwb keeps are split back), and lwb's tensors:
//   lwb.input.hidden_states, lwb.input.residual       (tokens, hidden) the layer's inputs
//   lwb.output.hidden_states, lwb.output.residual     (tokens, hidden) its outputs
//   lwb.attention.residual                            (tokens, hidden) residual + attention output
//   lwb.mlp.output                                    (tokens, hidden) the MoE's (or MLP's) output
// The layer boundary is TensorRT-LLM's (meta.json "layer_boundary": "trtllm"): the input
// hidden_states come normalised (the previous layer's closing norm; the first layer's are the
// problem's), and the layer ends with the next layer's input_layernorm fused with the residual
// add: output.residual = attention.residual + mlp.output, output.hidden_states = its norm.
//   lwb.position_ids                                  (tokens) int64
//   lwb.moe.hidden_states, lwb.moe.topk_ids, lwb.moe.topk_weights  (MoE layers) the routed
//       input (after post_attention_layernorm) and the routing lwb applied
//   lwb.past_kv.latent (batch, past, kv_lora) and lwb.past_kv.k_pe (batch, past, rope): the
//       cached tokens as the layer saw them (after kv_a_layernorm; after RoPE)
// DeepSeek-V3.2 layers add their indexer's weights (self_attn.indexer.*) and:
//   lwb.indexer.topk (tokens, index_topk) int32: each token's selection (request-local positions,
//       the valid ones first, -1 after them)
//   lwb.indexer.k (tokens, 128) uint8 (e4m3 bits), lwb.indexer.k_scale (tokens) fp32: the new
//       tokens' indexer keys as cached; lwb.past_kv.index_k (batch, past, 128) and
//       lwb.past_kv.index_k_scale (batch, past): the past tokens'
// Tensors are streamed from the device one at a time, so a 22 GB MoE layer needs one host
// buffer of its largest tensor, not 22 GB of host memory.
//
// Does not: compare anything (test/gpu/check_layer.py does, against transformers).
// Tested by test/test_plan.c (names and shapes of a dump plan); on the GPU by check_layer.py and
// test/gpu/compare_ranks.py.
#pragma once

// Rows `first + i * step` (i < rows) of a row-major device matrix with `row_bytes` per row; with
// `half` 1 or 2, rows `first + (i / 64) * 128 + (half - 1) * 64 + i % 64` (the gate or up rows of
// lwb's fp8 gate/up layout).
struct dump_src {
    CUdeviceptr base;
    size_t row_bytes;
    long long first, step, rows;
    const void *host; // or host bytes
    int half;
};

// The tensor `s` describes into dst (bytes), reading device memory through `fetch` (the device,
// or the tests' host copy of it). Returns -1 when the sizes disagree.
static int dump_gather(const struct dump_src *s, void *dst, size_t bytes,
                       void (*fetch)(void *ctx, CUdeviceptr src, size_t n, void *dst), void *ctx) {
    if (s->host) {
        memcpy(dst, s->host, bytes);
        return 0;
    }
    if ((size_t)s->rows * s->row_bytes != bytes) return -1;
    const CUdeviceptr first = s->base + (CUdeviceptr)(s->first * (long long)s->row_bytes);
    if (!s->half && s->step == 1) {
        fetch(ctx, first, bytes, dst);
        return 0;
    }
    // Row i of the tensor is row at(i) of the span read.
    size_t span = s->half ? (size_t)LWB_CEIL_DIV(s->rows, 64) * 128 * s->row_bytes
                          : (size_t)((s->rows - 1) * s->step + 1) * s->row_bytes;
    char *tmp = xmalloc(span);
    fetch(ctx, first, span, tmp);
    for (long long i = 0; i < s->rows; i++) {
        long long at = s->half ? (i / 64) * 128 + (s->half - 1) * 64 + i % 64 : i * s->step;
        memcpy((char *)dst + i * s->row_bytes, tmp + (size_t)at * s->row_bytes, s->row_bytes);
    }
    free(tmp);
    return 0;
}

static void dump_fetch_device(void *ctx, CUdeviceptr src, size_t n, void *dst) {
    (void)ctx;
    CU_CHECK(lwb_cu.cuMemcpyDtoH(dst, src, n));
}

static int dump_fill(void *ctx, const char *name, void *dst, size_t bytes) {
    (void)name;
    return dump_gather(ctx, dst, bytes, dump_fetch_device, NULL);
}

// Where a checkpoint tensor of `layer` lives in lwb's weights (bf16 or fp8 runs: an fp8 weight's
// bytes, or with a name ending in _scale_inv its block scales).
static struct dump_src dump_weight_src(const struct ds_layer *L, const struct ds_dims *d, const struct lwb_weight *w) {
    const size_t H = d->hidden, es = d->fp8 ? 1 : 2;
    const struct ds_weights *x = &L->w;
    if (model_is_next_norm(w->name)) return (struct dump_src){x->next_norm, H * 2, 0, 1, 1, NULL, 0};
    // The name after "model.layers.<i>.", without the _scale_inv of a scale.
    const char *n0 = w->name + (str_starts(w->name, "model.layers.") ? strlen("model.layers.") : 0);
    while (isdigit((unsigned char)*n0)) n0++;
    if (*n0 == '.') n0++;
    char n[96];
    snprintf(n, sizeof n, "%s", n0);
    const size_t len = strlen(n), sl = strlen("_scale_inv");
    const bool scale = len > sl && !strcmp(n + len - sl, "_scale_inv");
    if (scale) n[len - sl] = 0;
    // A projection's rows: bytes per row of a cols-wide weight, or of its scales (one per block).
#define RB(cols) (scale ? (size_t)LWB_CEIL_DIV(cols, 128) * 4 : (size_t)(cols) * es)
#define PROJ(wp, sp, cols, f, st, n_) ((struct dump_src){scale ? sp : wp, RB(cols), f, st, n_, NULL, 0})
#define ROWS(b, rb, f, st, n_) ((struct dump_src){b, rb, f, st, n_, NULL, 0})
    // In 128-row blocks for scales.
#define B(rows) (scale ? LWB_CEIL_DIV((long long)(rows), 128) : (long long)(rows))
    if (!strcmp(n, "post_attention_layernorm.weight")) return ROWS(x->post_norm, H * 2, 0, 1, 1);
    if (!strcmp(n, "self_attn.q_a_proj.weight")) return PROJ(x->fused_a, x->fused_a_s, H, 0, 1, B(d->q_lora));
    if (!strcmp(n, "self_attn.kv_a_proj_with_mqa.weight"))
        return PROJ(x->fused_a, x->fused_a_s, H, B(d->q_lora), 1, B(d->kv_row));
    if (!strcmp(n, "self_attn.q_a_layernorm.weight")) return ROWS(x->q_a_norm, (size_t)d->q_lora * 2, 0, 1, 1);
    if (!strcmp(n, "self_attn.kv_a_layernorm.weight")) return ROWS(x->kv_a_norm, (size_t)d->kv_lora * 2, 0, 1, 1);
    if (!strcmp(n, "self_attn.q_b_proj.weight")) return PROJ(x->q_b, x->q_b_s, d->q_lora, 0, 1, B((long long)d->heads * d->qk));
    if (!strcmp(n, "self_attn.kv_b_proj.weight")) // as loaded: fp8 (kept beside the bf16 copy) or bf16
        return PROJ(d->fp8 ? x->kv_b8 : x->kv_b, x->kv_b8_s, d->kv_lora, 0, 1, B((long long)d->heads * (d->nope + d->v)));
    if (!strcmp(n, "self_attn.o_proj.weight")) return PROJ(x->o_proj, x->o_proj_s, (size_t)d->heads * d->v, 0, 1, B(H));
    if (!strcmp(n, "self_attn.indexer.wq_b.weight")) return PROJ(x->i_wq, x->i_wq_s, d->q_lora, 0, 1, B(DSA_HEADS * DSA_DIM));
    if (!strcmp(n, "self_attn.indexer.wk.weight")) return PROJ(x->i_wk, x->i_wk_s, H, 0, 1, B(DSA_DIM));
    if (!strcmp(n, "self_attn.indexer.k_norm.weight")) return ROWS(x->i_ln_w, DSA_DIM * 4, 0, 1, 1);
    if (!strcmp(n, "self_attn.indexer.k_norm.bias")) return ROWS(x->i_ln_b, DSA_DIM * 4, 0, 1, 1);
    if (!strcmp(n, "self_attn.indexer.weights_proj.weight")) return ROWS(x->i_wp, H * 2, 0, 1, DSA_HEADS);
    if (!strcmp(n, "mlp.gate.weight")) return ROWS(x->gate, H * 2, 0, 1, d->experts);
    if (!strcmp(n, "mlp.gate.e_score_correction_bias")) return ROWS(x->bias, (size_t)d->experts * 4, 0, 1, 1);
    if (!strcmp(n, "mlp.shared_experts.down_proj.weight")) return PROJ(x->s2, x->s2_s, d->shared_inter, 0, 1, B(H));
    if (!strcmp(n, "mlp.down_proj.weight")) return PROJ(x->d2, x->d2_s, d->inter, 0, 1, B(H));
    // gate/up pairs: interleaved rows (bf16); 64-row halves, each half a scale row (fp8).
    CUdeviceptr gu = 0, gu_s = 0;
    long long e = 0, I = 0;
    bool up = strstr(n, "up_proj") != NULL;
    if (!strcmp(n, "mlp.shared_experts.gate_proj.weight") || !strcmp(n, "mlp.shared_experts.up_proj.weight"))
        gu = x->s13, gu_s = x->s13_s, I = d->shared_inter;
    else if (!strcmp(n, "mlp.gate_proj.weight") || !strcmp(n, "mlp.up_proj.weight"))
        gu = x->d13, gu_s = x->d13_s, I = d->inter;
    else if (w->expert >= 0 && (strstr(n, "gate_proj") || up))
        gu = x->w13, gu_s = x->w13_s, I = d->moe_inter, e = w->expert;
    if (gu) {
        if (!d->fp8) return ROWS(gu, H * 2, e * 2 * I + up, 2, I);
        // Gate block b's scale is its first half's: half 4b (gate) or 4b + 1 (up) of the expert's.
        if (scale) return ROWS(gu_s, RB(H), e * (2 * I / 64) + up, 4, I / 128);
        return (struct dump_src){gu, H, e * 2 * I, 1, I, NULL, up ? 2 : 1};
    }
    if (w->expert >= 0 && strstr(n, "down_proj"))
        return PROJ(x->w2, x->w2_s, d->moe_inter, B(w->expert * H), 1, B(H));
#undef RB
#undef PROJ
#undef ROWS
#undef B
    LWB_BUG("dump: no source for %s", w->name);
}

static void *dump_download(CUdeviceptr p, size_t bytes) {
    void *h = xmalloc(bytes);
    CU_CHECK(lwb_cu.cuMemcpyDtoH(h, p, bytes));
    return h;
}

// config.json (the model as run, in the format that ran: FP8's quantization_config, or none for
// bf16) and model.safetensors.index.json (the layer files as shards), so that
// `lwb run --load-format AUTO --model DIR` loads the dump.
static void ds_dump_checkpoint(const char *dir, const struct lwb_model *model, bool fp8, json_t *weight_map,
                               json_int_t total) {
    json_t *cfg = model_config_json(model);
    if (fp8) {
        json_object_set_new(cfg, "quantization_config",
                            json_pack("{s:s, s:s, s:[i,i], s:s}", "quant_method", "fp8", "fmt", "e4m3",
                                      "weight_block_size", 128, 128, "activation_scheme", "dynamic"));
    } else {
        json_object_del(cfg, "quantization_config");
    }
    json_object_set_new(cfg, "torch_dtype", json_string("bfloat16"));
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    char *path = lwb_path_join(dir, "config.json");
    output_write(path, text, strlen(text));
    free(text), free(path);
    json_decref(cfg);
    json_t *index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", total, "weight_map", weight_map);
    text = json_dumps(index, JSON_INDENT(2) | JSON_SORT_KEYS);
    path = lwb_path_join(dir, "model.safetensors.index.json");
    output_write(path, text, strlen(text));
    free(text), free(path);
    json_decref(index);
}

static void ds_dump(void *fam, int pi, CUstream s, const char *dir) {
    struct ds_family *f = fam;
    output_dir(dir);
    const struct ds_dims *d = &f->d;
    const struct lwb_problem *q = &f->spec.problems[pi];
    const struct lwb_model *model = f->model;
    const struct lwb_shard *sh = f->sh;
    struct ds_buffers *b = &f->buf;
    const bool whole = sh->world_size == 1; // one rank holds the whole layer: weights too
    const long long T = q->tokens, H = d->hidden;
    const size_t act = (size_t)T * H * 2;
    ds_setup(f, pi, s);
    struct lwb_modules mods = {0};
    json_t *weight_map = json_object(); // a loadable checkpoint: every weight -> its layer file
    json_int_t total = 0;
    for (int l = 0; l < f->nlayers; l++) {
        struct ds_run *run = ds_run_of(f, pi, l);
        const struct ds_layer *L = run->L;
        stream_wait(s, 600, "the dump");
        void *in_h = dump_download(l == 0 ? b->hidden_in : b->x, act);
        void *in_r = dump_download(l == 0 ? b->residual_in : b->residual, act);
        // Everything up to the closing norm, the state inside the layer, then the norm.
        ds_modules(f, pi, l, false, &mods);
        if (mods.m[mods.n - 1].fn != ds_mod_next_norm) LWB_BUG("layer %d does not end with its closing norm", L->index);
        modules_run(&mods, 0, mods.n - 1, s);
        stream_wait(s, 600, "the dump");
        void *mid_r = dump_download(b->residual, act), *mlp_out = dump_download(b->hidden, act);
        void *moe_x = NULL, *ids = NULL, *wts = NULL;
        if (L->moe) {
            moe_x = dump_download(b->x, act);
            ids = dump_download(b->ids, (size_t)T * d->top_k * 4);
            wts = dump_download(b->weights, (size_t)T * d->top_k * 4);
        }
        modules_run(&mods, mods.n - 1, mods.n, s);
        stream_wait(s, 600, "the dump");
        void *out_h = dump_download(b->x, act), *out_r = dump_download(b->residual, act);
        int64_t *pos = xmalloc(sizeof(int64_t) * (size_t)T);
        for (long long t = 0; t < T; t++) pos[t] = q->past + t % q->qlen;
        // Past tokens as cached: gathered per request, split into latent and rope parts.
        void *lat = NULL, *kpe = NULL;
        if (q->past) {
            size_t rows = (size_t)q->batch * q->past;
            CUdeviceptr g = dev_alloc(rows * d->kv_row * 2, "dump gather");
            mla_gather_enqueue(&run->r_rope, s, L->cache, b->block_table, b->max_blocks, q->past, q->past, q->batch, g);
            stream_wait(s, 600, "the dump");
            uint16_t *all = dump_download(g, rows * d->kv_row * 2);
            dev_free(g, rows * d->kv_row * 2);
            lat = xmalloc(rows * d->kv_lora * 2), kpe = xmalloc(rows * d->rope * 2);
            for (size_t i = 0; i < rows; i++) {
                memcpy((uint16_t *)lat + i * d->kv_lora, all + i * d->kv_row, (size_t)d->kv_lora * 2);
                memcpy((uint16_t *)kpe + i * d->rope, all + i * d->kv_row + d->kv_lora, (size_t)d->rope * 2);
            }
            free(all);
        }
        // V3.2: the selections, and the indexer keys of every cached token, read through the block table.
        void *sel = NULL, *ik_new = NULL, *iks_new = NULL, *ik_past = NULL, *iks_past = NULL;
        if (d->idx_topk) {
            sel = dump_download(b->itopk, (size_t)T * d->idx_topk * 4);
            int *bt = dump_download(b->block_table, (size_t)b->max_batch * b->max_blocks * 4);
            const long long past_rows = (long long)q->batch * q->past;
            ik_new = xmalloc((size_t)T * DSA_DIM), iks_new = xmalloc((size_t)T * 4);
            ik_past = xmalloc((size_t)LWB_MAX(past_rows, 1) * DSA_DIM), iks_past = xmalloc((size_t)LWB_MAX(past_rows, 1) * 4);
            for (int rq = 0; rq < q->batch; rq++)
                for (int j = 0; j < q->kv_len; j++) {
                    const CUdeviceptr blk = L->icache + (CUdeviceptr)bt[rq * b->max_blocks + j / d->page] * d->page * DSA_TOKEN_BYTES;
                    const int slot = j % d->page;
                    const long long row = j < q->past ? (long long)rq * q->past + j : (long long)rq * q->qlen + j - q->past;
                    uint8_t *kd = (uint8_t *)(j < q->past ? ik_past : ik_new) + row * DSA_DIM;
                    float *ks = (float *)(j < q->past ? iks_past : iks_new) + row;
                    CU_CHECK(lwb_cu.cuMemcpyDtoH(kd, blk + (CUdeviceptr)slot * DSA_DIM, DSA_DIM));
                    CU_CHECK(lwb_cu.cuMemcpyDtoH(ks, blk + (CUdeviceptr)d->page * DSA_DIM + (CUdeviceptr)slot * 4, 4));
                }
            free(bt);
        }
        char name[96];
        if (whole) snprintf(name, sizeof name, "layer%d.safetensors", L->index);
        else snprintf(name, sizeof name, "layer%d.rank%d.safetensors", L->index, sh->rank);
        char *path = lwb_path_join(dir, name);
        struct lwb_st_writer *w = st_writer_begin(path);
        struct lwb_weight *ws = NULL;
        int nw = whole ? model_layer_weights(model, L->index, d->fp8 ? LWB_WF_FP8 : LWB_WF_BF16, &ws) : 0;
        struct dump_src *src = xcalloc((size_t)nw + 16, sizeof *src);
        for (int i = 0; i < nw; i++) {
            json_object_set_new(weight_map, ws[i].name, json_string(name));
            total += (json_int_t)ws[i].bytes;
            src[i] = dump_weight_src(L, d, &ws[i]);
            int64_t shape[2] = {ws[i].shape[0], ws[i].shape[1]};
            st_add_fill(w, ws[i].name, ws[i].dtype, shape, ws[i].ndim, dump_fill, &src[i]);
        }
        int64_t sh_th[2] = {T, H}, sh_t[1] = {T}, sh_tk[2] = {T, d->top_k};
        st_add(w, "lwb.input.hidden_states", "BF16", sh_th, 2, in_h, act);
        st_add(w, "lwb.input.residual", "BF16", sh_th, 2, in_r, act);
        st_add(w, "lwb.output.hidden_states", "BF16", sh_th, 2, out_h, act);
        st_add(w, "lwb.output.residual", "BF16", sh_th, 2, out_r, act);
        st_add(w, "lwb.attention.residual", "BF16", sh_th, 2, mid_r, act);
        st_add(w, "lwb.mlp.output", "BF16", sh_th, 2, mlp_out, act);
        st_add(w, "lwb.position_ids", "I64", sh_t, 1, pos, sizeof(int64_t) * (size_t)T);
        if (L->moe) {
            st_add(w, "lwb.moe.hidden_states", "BF16", sh_th, 2, moe_x, act);
            st_add(w, "lwb.moe.topk_ids", "I32", sh_tk, 2, ids, (size_t)T * d->top_k * 4);
            st_add(w, "lwb.moe.topk_weights", "F32", sh_tk, 2, wts, (size_t)T * d->top_k * 4);
        }
        if (d->idx_topk) {
            int64_t ss[2] = {T, d->idx_topk}, sk[2] = {T, DSA_DIM}, spk[3] = {q->batch, q->past, DSA_DIM},
                    sps[2] = {q->batch, q->past};
            st_add(w, "lwb.indexer.topk", "I32", ss, 2, sel, (size_t)T * d->idx_topk * 4);
            st_add(w, "lwb.indexer.k", "U8", sk, 2, ik_new, (size_t)T * DSA_DIM);
            st_add(w, "lwb.indexer.k_scale", "F32", sh_t, 1, iks_new, (size_t)T * 4);
            if (q->past) {
                st_add(w, "lwb.past_kv.index_k", "U8", spk, 3, ik_past, (size_t)q->batch * q->past * DSA_DIM);
                st_add(w, "lwb.past_kv.index_k_scale", "F32", sps, 2, iks_past, (size_t)q->batch * q->past * 4);
            }
        }
        if (q->past) {
            int64_t sl[3] = {q->batch, q->past, d->kv_lora}, sk[3] = {q->batch, q->past, d->rope};
            st_add(w, "lwb.past_kv.latent", "BF16", sl, 3, lat, (size_t)q->batch * q->past * d->kv_lora * 2);
            st_add(w, "lwb.past_kv.k_pe", "BF16", sk, 3, kpe, (size_t)q->batch * q->past * d->rope * 2);
        }
        char v[64];
        snprintf(v, sizeof v, "%d", L->index);
        st_metadata(w, "layer", v);
        st_metadata(w, "run_type", q->ctx ? "CTX" : "GEN");
        snprintf(v, sizeof v, "%d", sh->rank);
        st_metadata(w, "rank", v);
        st_writer_finish(w);
        printf("dump: %s (%d weights)\n", tesc(path), nw);
        free(path), free(ws), free(src), free(in_h), free(in_r), free(out_h), free(out_r), free(moe_x), free(ids);
        free(mid_r), free(mlp_out);
        free(wts), free(pos), free(lat), free(kpe);
        free(sel), free(ik_new), free(iks_new), free(ik_past), free(iks_past);
    }
    free(mods.m);
    if (sh->rank != 0) {
        json_decref(weight_map);
        return;
    }
    if (whole) ds_dump_checkpoint(dir, model, d->fp8, weight_map, total);
    else json_decref(weight_map);
    json_t *meta = json_pack("{s:o, s:o, s:I, s:s, s:f, s:i, s:b, s:s}", "config", model_config_json(model),
                             "problem", problem_spec_json(q), "seed", (json_int_t)f->seed, "run_type",
                             q->ctx ? "CTX" : "GEN", "softmax_scale", (double)d->sm_scale, "tokens_per_block", d->page,
                             "rope_interleave", model->rope_interleave, "lwb_version", LWB_VERSION);
    json_object_set_new(meta, "balance_method", json_string(balance_method_name(f->spec.routing[pi].method)));
    // Which layer boundary the inputs and outputs follow (check_layer.py reads it).
    json_object_set_new(meta, "layer_boundary", json_string("trtllm"));
    json_object_set_new(meta, "world_size", json_integer(sh->world_size));
    json_object_set_new(meta, "attention_dp", json_boolean(sh->attention_dp));
    json_object_set_new(meta, "moe_comm", json_string(lwb_moe_comm_names[sh->moe_comm]));
    json_t *layers = json_array();
    for (int l = 0; l < f->nlayers; l++) json_array_append_new(layers, json_integer(f->layers[l].index));
    json_object_set_new(meta, "layers", layers);
    char *text = json_dumps(meta, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    char *path = lwb_path_join(dir, "meta.json");
    output_write(path, text, strlen(text));
    free(text), free(path);
    json_decref(meta);
}

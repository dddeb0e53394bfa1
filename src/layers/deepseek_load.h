// layers/deepseek_load.h: `--load-format AUTO` for the DeepSeek family: which rows and columns of
// each checkpoint tensor this rank holds, and where they go in lwb's layouts (the inverse of the
// dump's mapping, for a shard of the layer).
//
// Defines: ds_check_checkpoint (every tensor of the selected layers, before anything is
// allocated), ds_load_pieces (the copies of one layer for this rank), ds_load_layer (copy, then
// derive what lwb keeps besides: kv_b dequantised, W_UK transposed).
//
// Layouts (see layers/deepseek.h): q_a and kv_a rows one after the other in fused_a (fp8: their
// scale rows too); gate/up pairs interleaved by rows (bf16) or as 128-row groups of 64 gate and 64
// up rows, each half with its block's scale (fp8); q_b and kv_b by this rank's heads (rows),
// o_proj by its heads' columns, the shared experts' and dense MLP's gate/up by this rank's
// intermediate rows and their down projections by its columns; routed experts e0 .. e0 + local.
//
// Does not: read files (ckpt.h does), or allocate.
// Tested by test/test_ckpt.c: for a whole layer, pieces copied into host memory read back through
// the dump's mapping equal every checkpoint tensor; shards of ranks land where the ranks' weights
// are; every bad checkpoint is refused in one line.
#pragma once

// Every tensor the selected layers need, in the checkpoint's format (which is the run's with
// AUTO), checked in the checkpoint; one line on the first problem. (The family table's
// check_checkpoint.)
static void ds_check_checkpoint(void *fam, struct lwb_ckpt *c) {
    struct ds_family *f = fam;
    const enum lwb_wformat fmt = f->d.fp8 ? LWB_WF_FP8 : LWB_WF_BF16;
    char why[160];
    snprintf(why, sizeof why, "config.json: %s weights", fmt == LWB_WF_FP8 ? "FP8 in 128x128 blocks" : "bf16");
    for (int l = 0; l < f->nlayers; l++) {
        struct lwb_weight *w;
        int n = model_layer_weights(f->model, f->layers[l].index, fmt, &w);
        for (int i = 0; i < n; i++) ckpt_expect(c, &w[i], why);
        free(w);
    }
}

struct ds_pieces {
    struct ckpt_piece *p;
    int n, cap;
};

static void ds_piece(struct ds_pieces *ps, const char *name, uint64_t src_off, size_t width, size_t height,
                     size_t src_pitch, CUdeviceptr dst, size_t dst_pitch) {
    if (!height || !width) return;
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 64;
        ps->p = xrealloc(ps->p, sizeof *ps->p * (size_t)ps->cap);
    }
    ps->p[ps->n++] = (struct ckpt_piece){name, src_off, width, height, src_pitch, dst, dst_pitch};
}

// Rows [r0, r0 + nr) of a tensor with `row` bytes per row, contiguous at dst.
static void ds_rows(struct ds_pieces *ps, const char *name, size_t row, long long r0, long long nr, CUdeviceptr dst) {
    ds_piece(ps, name, (uint64_t)r0 * row, row, (size_t)nr, row, dst, row);
}

// Byte columns [c0, c0 + width) of every one of `rows` rows of `row` bytes, packed at dst.
static void ds_cols(struct ds_pieces *ps, const char *name, size_t row, size_t c0, size_t width, long long rows,
                    CUdeviceptr dst) {
    ds_piece(ps, name, c0, width, (size_t)rows, row, dst, width);
}

// A gate or up projection's rows [j0, j0 + nj) (of `cols` columns) into lwb's gate/up layout at
// dst (bf16: row j at 2 j (+1 for up); fp8: 64-row halves of 128-row groups), and in fp8 its
// block scales (rows j0 / 128 ..) into the per-half scales at dst_s (halves 4b, 4b + 2 for gate
// block b, 4b + 1, 4b + 3 for up).
static void ds_gate_up(struct ds_pieces *ps, const struct ds_dims *d, const char *name, bool scale, bool up,
                       long long j0, long long nj, long long cols, CUdeviceptr dst, CUdeviceptr dst_s) {
    if (!d->fp8) {
        const size_t row = (size_t)cols * 2;
        ds_piece(ps, name, (uint64_t)j0 * row, row, (size_t)nj, row, dst + (up ? row : 0), 2 * row);
        return;
    }
    const size_t srow = (size_t)LWB_CEIL_DIV(cols, 128) * 4;
    if (scale) {
        for (int k = 0; k < 2; k++)
            ds_piece(ps, name, (uint64_t)(j0 / 128) * srow, srow, (size_t)(nj / 128), srow,
                     dst_s + (CUdeviceptr)((2 * k + up) * srow), 4 * srow);
        return;
    }
    const size_t half = (size_t)64 * cols;
    ds_piece(ps, name, (uint64_t)j0 * cols, half, (size_t)(nj / 64), half, dst + (up ? half : 0), 2 * half);
}

// The copies of one layer's tensors for this rank.
static void ds_load_pieces(const struct ds_layer *L, const struct ds_dims *d, const struct lwb_weight *w, int n,
                           struct ds_pieces *ps) {
    const struct ds_weights *x = &L->w;
    const long long H = d->hidden, es = d->fp8 ? 1 : 2;
    for (int i = 0; i < n; i++) {
        if (model_is_next_norm(w[i].name)) {
            ds_rows(ps, w[i].name, (size_t)H * 2, 0, 1, x->next_norm);
            continue;
        }
        const char *n0 = w[i].name + strlen("model.layers.");
        while (isdigit((unsigned char)*n0)) n0++;
        n0++;
        char nm[96];
        snprintf(nm, sizeof nm, "%s", n0);
        const size_t len = strlen(nm), sl = strlen("_scale_inv");
        const bool scale = len > sl && !strcmp(nm + len - sl, "_scale_inv");
        if (scale) nm[len - sl] = 0;
        const char *name = w[i].name;
        // Rows of a cols-wide projection (or of its scales: block rows of ceil(cols / 128) floats).
#define ROW(cols) (scale ? (size_t)LWB_CEIL_DIV(cols, 128) * 4 : (size_t)(cols) * (size_t)es)
#define R(rows) (scale ? LWB_CEIL_DIV((long long)(rows), 128) : (long long)(rows))
        if (!strcmp(nm, "post_attention_layernorm.weight")) ds_rows(ps, name, (size_t)H * 2, 0, 1, x->post_norm);
        else if (!strcmp(nm, "self_attn.q_a_layernorm.weight")) ds_rows(ps, name, (size_t)d->q_lora * 2, 0, 1, x->q_a_norm);
        else if (!strcmp(nm, "self_attn.kv_a_layernorm.weight")) ds_rows(ps, name, (size_t)d->kv_lora * 2, 0, 1, x->kv_a_norm);
        else if (!strcmp(nm, "self_attn.q_a_proj.weight"))
            ds_rows(ps, name, ROW(H), 0, R(d->q_lora), scale ? x->fused_a_s : x->fused_a);
        else if (!strcmp(nm, "self_attn.kv_a_proj_with_mqa.weight"))
            ds_rows(ps, name, ROW(H), 0, R(d->kv_row),
                    (scale ? x->fused_a_s : x->fused_a) + (CUdeviceptr)(R(d->q_lora) * ROW(H)));
        else if (!strcmp(nm, "self_attn.q_b_proj.weight"))
            ds_rows(ps, name, ROW(d->q_lora), R((long long)d->head0 * d->qk), R((long long)d->heads * d->qk),
                    scale ? x->q_b_s : x->q_b);
        else if (!strcmp(nm, "self_attn.kv_b_proj.weight"))
            ds_rows(ps, name, ROW(d->kv_lora), R((long long)d->head0 * (d->nope + d->v)),
                    R((long long)d->heads * (d->nope + d->v)), scale ? x->kv_b8_s : d->fp8 ? x->kv_b8 : x->kv_b);
        else if (!strcmp(nm, "self_attn.o_proj.weight")) // this rank's heads' columns
            ds_cols(ps, name, ROW((long long)d->heads_total * d->v), (size_t)(scale ? (long long)d->head0 * d->v / 128 * 4 : (long long)d->head0 * d->v * es),
                    ROW((long long)d->heads * d->v), R(H), scale ? x->o_proj_s : x->o_proj);
        else if (!strcmp(nm, "self_attn.indexer.wq_b.weight")) // V3.2's indexer: whole on every rank
            ds_rows(ps, name, ROW(d->q_lora), 0, R(DSA_HEADS * DSA_DIM), scale ? x->i_wq_s : x->i_wq);
        else if (!strcmp(nm, "self_attn.indexer.wk.weight")) ds_rows(ps, name, ROW(H), 0, R(DSA_DIM), scale ? x->i_wk_s : x->i_wk);
        else if (!strcmp(nm, "self_attn.indexer.k_norm.weight")) ds_rows(ps, name, DSA_DIM * 4, 0, 1, x->i_ln_w);
        else if (!strcmp(nm, "self_attn.indexer.k_norm.bias")) ds_rows(ps, name, DSA_DIM * 4, 0, 1, x->i_ln_b);
        else if (!strcmp(nm, "self_attn.indexer.weights_proj.weight")) ds_rows(ps, name, (size_t)H * 2, 0, DSA_HEADS, x->i_wp);
        else if (!strcmp(nm, "mlp.gate.weight")) ds_rows(ps, name, (size_t)H * 2, 0, d->experts, x->gate);
        else if (!strcmp(nm, "mlp.gate.e_score_correction_bias")) ds_rows(ps, name, (size_t)d->experts * 4, 0, 1, x->bias);
        else if (!strcmp(nm, "mlp.shared_experts.gate_proj.weight") || !strcmp(nm, "mlp.shared_experts.up_proj.weight"))
            ds_gate_up(ps, d, name, scale, strstr(nm, "up_proj") != NULL, d->shared0, d->shared_inter, H, x->s13, x->s13_s);
        else if (!strcmp(nm, "mlp.gate_proj.weight") || !strcmp(nm, "mlp.up_proj.weight"))
            ds_gate_up(ps, d, name, scale, strstr(nm, "up_proj") != NULL, d->inter0, d->inter, H, x->d13, x->d13_s);
        else if (!strcmp(nm, "mlp.shared_experts.down_proj.weight"))
            ds_cols(ps, name, ROW(d->shared_total), (size_t)(scale ? d->shared0 / 128 * 4 : (long long)d->shared0 * es),
                    ROW(d->shared_inter), R(H), scale ? x->s2_s : x->s2);
        else if (!strcmp(nm, "mlp.down_proj.weight"))
            ds_cols(ps, name, ROW(d->inter_total), (size_t)(scale ? d->inter0 / 128 * 4 : (long long)d->inter0 * es),
                    ROW(d->inter), R(H), scale ? x->d2_s : x->d2);
        else if (w[i].expert >= 0) {
            const long long le = w[i].expert - d->e0, I = d->moe_inter;
            if (le < 0 || le >= d->experts_local) continue; // another rank's expert
            if (strstr(nm, "down_proj")) {
                const size_t per = scale ? (size_t)(H / 128) * ROW(I) : (size_t)(H * I * es);
                ds_rows(ps, name, ROW(I), 0, R(H), (scale ? x->w2_s : x->w2) + (CUdeviceptr)(le * (long long)per));
            } else {
                const CUdeviceptr e13 = x->w13 + (CUdeviceptr)(le * 2 * I * H * es);
                const CUdeviceptr e13s = d->fp8 ? x->w13_s + (CUdeviceptr)(le * (2 * I / 64) * (H / 128) * 4) : 0;
                ds_gate_up(ps, d, name, scale, strstr(nm, "up_proj") != NULL, 0, I, H, e13, e13s);
            }
        } else {
            LWB_BUG("load: no place for %s", name);
        }
#undef ROW
#undef R
    }
}

// Copy one layer from the checkpoint, then derive what lwb keeps besides.
static void ds_load_layer(struct lwb_ckpt *c, const struct lwb_model *m, struct ds_layer *L, const struct ds_dims *d,
                          const struct lwb_kreq *init, CUstream s) {
    struct lwb_weight *w;
    int n = model_layer_weights(m, L->index, d->fp8 ? LWB_WF_FP8 : LWB_WF_BF16, &w);
    struct ds_pieces ps = {0};
    ds_load_pieces(L, d, w, n, &ps);
    ckpt_copy_to_device(c, ps.p, ps.n, s);
    ds_layer_derive(L, d, init, s);
    free(ps.p);
    free(w);
}

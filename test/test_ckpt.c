// test_ckpt.c: --load-format AUTO without a GPU. Checkpoints of a reduced DeepSeek-V3 config are
// made on the fly (bf16 and FP8, one file or sharded with an index, odd sizes); then:
//   - a whole layer's pieces, copied into host memory standing for the device, read back through
//     the dump's mapping, equal every checkpoint tensor byte for byte (bf16 and FP8, dense and
//     MoE layers): load and dump are inverse;
//   - a rank's share (attention TP and EP over 2 ranks) lands where that rank's weights are;
//   - every bad checkpoint (missing tensor, wrong dtype or shape, missing or truncated shard, an
//     index naming a file outside the folder, no index at all) and every refused combination is
//     one line naming the tensor and the file, exit 2, before anything is allocated;
//   - a dump's config.json and index make a checkpoint the loader accepts.
#include "test_common.h"

// A reduced DeepSeek-V3: 4 heads, 8 experts (top-2 of one group), 2 shared experts, layer 0
// dense, layer 1 MoE. `hidden` 256 for FP8 (multiples of 128), 320 for bf16 (odd: 5 x 64).
static bool tiny_v32; // a DeepSeek-V3.2 (the indexer's tensors too; index_topk 64)
static json_t *tiny_config(int hidden, bool fp8) {
    json_t *j = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i,"
                          " s:i, s:b, s:f, s:f, s:s, s:i, s:s, s:b}",
                          "architectures", "DeepseekV3ForCausalLM", "model_type", "deepseek_v3", "hidden_size", hidden,
                          "intermediate_size", 512, "moe_intermediate_size", 128, "num_attention_heads", 4,
                          "num_key_value_heads", 4, "q_lora_rank", 128, "kv_lora_rank", 512, "qk_nope_head_dim", 128,
                          "qk_rope_head_dim", 64, "v_head_dim", 128, "n_routed_experts", 8, "num_experts_per_tok", 2,
                          "n_shared_experts", 2, "n_group", 1, "topk_group", 1, "first_k_dense_replace", 1,
                          "norm_topk_prob", true, "routed_scaling_factor", 2.5, "rms_norm_eps", 1e-6, "scoring_func",
                          "sigmoid", "num_hidden_layers", 2, "torch_dtype", "bfloat16", "rope_interleave", true);
    json_object_set_new(j, "max_position_embeddings", json_integer(4096));
    json_object_set_new(j, "rope_theta", json_real(10000));
    if (tiny_v32) {
        json_object_set_new(j, "model_type", json_string("deepseek_v32"));
        json_object_set_new(j, "index_n_heads", json_integer(64));
        json_object_set_new(j, "index_head_dim", json_integer(128));
        json_object_set_new(j, "index_topk", json_integer(64));
    }
    if (fp8)
        json_object_set_new(j, "quantization_config",
                            json_pack("{s:s, s:s, s:[i,i], s:s}", "quant_method", "fp8", "fmt", "e4m3",
                                      "weight_block_size", 128, 128, "activation_scheme", "dynamic"));
    return j;
}

struct tiny {
    char *dir;
    struct lwb_model m;
    enum lwb_wformat fmt;
    struct lwb_weight *w; // layers 0 and 1
    int n;
    unsigned char **data; // each tensor's bytes
};

// Random bytes for a tensor (fp8: any code but NaN; fp32 scales: positive and finite).
static void tiny_fill(unsigned char *p, const struct lwb_weight *w, uint64_t *rng) {
    for (uint64_t i = 0; i < w->bytes; i++) {
        *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (unsigned char)(*rng >> 56);
        if (!strcmp(w->dtype, "F8_E4M3") && (p[i] & 0x7f) == 0x7f) p[i] = 0x3c;
    }
    if (!strcmp(w->dtype, "F32"))
        for (uint64_t i = 0; i < w->bytes / 4; i++) {
            float f = 1e-3f * (float)(1 + i % 97);
            memcpy(p + 4 * i, &f, 4);
        }
}

// Write the checkpoint: `shards` files (1: model.safetensors, no index).
static void tiny_make(struct tiny *t, int hidden, bool fp8, int shards) {
    *t = (struct tiny){.dir = make_tmpdir(), .fmt = fp8 ? LWB_WF_FP8 : LWB_WF_BF16};
    json_t *cfg = tiny_config(hidden, fp8);
    char *cpath = lwb_path_join(t->dir, "config.json");
    char *text = json_dumps(cfg, JSON_INDENT(2));
    FILE *f = fopen(cpath, "w");
    fputs(text, f);
    fclose(f);
    free(text), free(cpath);
    json_decref(cfg);
    model_load(t->dir, &t->m);
    struct lwb_weight *w0, *w1;
    int n0 = model_layer_weights(&t->m, 0, t->fmt, &w0), n1 = model_layer_weights(&t->m, 1, t->fmt, &w1);
    t->n = n0 + n1;
    t->w = xcalloc((size_t)t->n, sizeof *t->w);
    memcpy(t->w, w0, sizeof *w0 * (size_t)n0), memcpy(t->w + n0, w1, sizeof *w1 * (size_t)n1);
    free(w0), free(w1);
    t->data = xcalloc((size_t)t->n, sizeof *t->data);
    uint64_t rng = 12345;
    json_t *map = json_object();
    for (int s = 0; s < shards; s++) {
        char name[64];
        if (shards == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
        char *path = lwb_path_join(t->dir, name);
        struct lwb_st_writer *wr = st_writer_begin(path);
        for (int i = s; i < t->n; i += shards) {
            t->data[i] = xmalloc(t->w[i].bytes);
            tiny_fill(t->data[i], &t->w[i], &rng);
            int64_t shape[2] = {t->w[i].shape[0], t->w[i].shape[1]};
            st_add(wr, t->w[i].name, t->w[i].dtype, shape, t->w[i].ndim, t->data[i], t->w[i].bytes);
            json_object_set_new(map, t->w[i].name, json_string(name));
        }
        st_writer_finish(wr);
        free(path);
    }
    outputs_commit();
    if (shards > 1) {
        json_t *idx = json_pack("{s:{}, s:o}", "metadata", "weight_map", map);
        char *ipath = lwb_path_join(t->dir, "model.safetensors.index.json");
        text = json_dumps(idx, JSON_INDENT(2));
        f = fopen(ipath, "w");
        fputs(text, f);
        fclose(f);
        free(text), free(ipath);
        json_decref(idx);
    } else {
        json_decref(map);
    }
}

static void tiny_free(struct tiny *t) {
    for (int i = 0; i < t->n; i++) free(t->data[i]);
    free(t->data), free(t->w);
    model_free(&t->m);
    rm_rf(t->dir);
    free(t->dir);
}

// The plan of `lwb run CONFIG --model DIR --load-format AUTO EXTRA...` (rank of world).
static void ckpt_plan(struct run_plan *p, struct lwb_args *a, const char *dir, int rank, int world, char **extra,
                      int nextra) {
    char *argv[24] = {"configs/config_gen.yaml", "--model", (char *)dir, "--load-format", "AUTO", "--layer-indices",
                      "0,1", "--batch-size", "4", "--seq-len-kv-cache", "64", "--balance-method", "NotModified"};
    int argc = 13;
    for (int i = 0; i < nextra; i++) argv[argc++] = extra[i];
    args_init(a, "run", run_opts, (int)LWB_ARRAY_LEN(run_opts));
    args_parse(a, &run_help, argc, argv, 1, "CONFIG.yaml");
    config_load(a, a->pos[0]);
    args_apply_defaults(a);
    run_plan_build(p, a, a->pos[0], rank, world, world > 1);
}

// Host memory standing for the device: the dry plan's addresses from `base` on.
struct arena {
    unsigned char *mem;
    CUdeviceptr base;
    size_t bytes;
};
static unsigned char *arena_at(struct arena *a, CUdeviceptr p, size_t n) {
    assert_true(p >= a->base && p + n <= a->base + a->bytes);
    return a->mem + (p - a->base);
}
static void arena_put(void *ctx, const void *rows, size_t width, size_t height, CUdeviceptr dst, size_t dst_pitch) {
    struct arena *a = ctx;
    for (size_t r = 0; r < height; r++)
        memcpy(arena_at(a, dst + r * dst_pitch, width), (const unsigned char *)rows + r * width, width);
}
static void arena_fetch(void *ctx, CUdeviceptr src, size_t n, void *dst) { memcpy(dst, arena_at(ctx, src, n), n); }

static unsigned char *host_stage(void *ctx) {
    static unsigned char buf[65536];
    (void)ctx;
    return buf;
}

// Plan (dry), place every layer's pieces in the arena.
static void load_into_arena(struct run_plan *p, struct arena *ar) {
    struct lwb_device dev = dry_device(gpuspec_find("H100"));
    struct lwb_mem m;
    run_plan_memory(p, &dev, &m);
    struct ds_family *f = p->f;
    ar->base = (CUdeviceptr)1 << 40;
    ar->bytes = (size_t)(m.next_fake - ar->base);
    ar->mem = xcalloc(ar->bytes, 1);
    for (int l = 0; l < f->nlayers; l++) {
        struct lwb_weight *w;
        int n = model_layer_weights(f->model, f->layers[l].index, p->wformat, &w);
        struct ds_pieces ps = {0};
        ds_load_pieces(&f->layers[l], &f->d, w, n, &ps);
        // Odd layers through a small staging buffer (rows gathered in chunks), even ones straight
        // from the mapping.
        if (l % 2) ckpt_copy(p->ckpt, ps.p, ps.n, (struct ckpt_sink){arena_put, NULL, ar}, host_stage, 65536);
        else ckpt_copy(p->ckpt, ps.p, ps.n, (struct ckpt_sink){arena_put, NULL, ar}, NULL, 0);
        free(ps.p), free(w);
    }
}

static unsigned char *find_data(struct tiny *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->w[i].name, name)) return t->data[i];
    fail_msg("no tensor %s", name);
    return NULL;
}

// Load a whole layer, read every tensor back through the dump's mapping: equal.
static void roundtrip(int hidden, bool fp8, int shards, bool v32) {
    struct tiny t;
    tiny_v32 = v32;
    tiny_make(&t, hidden, fp8, shards);
    struct run_plan p;
    struct lwb_args a;
    char *page64[] = {"--tokens-per-block", "64"};
    ckpt_plan(&p, &a, t.dir, 0, 1, v32 ? page64 : NULL, v32 ? 2 : 0);
    assert_int_equal(p.wformat, t.fmt);
    struct arena ar;
    load_into_arena(&p, &ar);
    struct ds_family *f = p.f;
    int checked = 0;
    for (int l = 0; l < f->nlayers; l++) {
        struct lwb_weight *w;
        int n = model_layer_weights(f->model, f->layers[l].index, p.wformat, &w);
        for (int i = 0; i < n; i++) {
            struct dump_src s = dump_weight_src(&f->layers[l], &f->d, &w[i]);
            unsigned char *got = xmalloc(w[i].bytes);
            assert_int_equal(dump_gather(&s, got, w[i].bytes, arena_fetch, &ar), 0);
            if (memcmp(got, find_data(&t, w[i].name), w[i].bytes)) fail_msg("%s differs after load and dump", w[i].name);
            free(got);
            checked++;
        }
        free(w);
    }
    assert_int_equal(checked, t.n);
    assert_true(p.ckpt->bytes_copied >= 0.9 * (double)model_layer_weight_bytes(&t.m, 1, t.fmt));
    free(ar.mem);
    ckpt_close(p.ckpt);
    tiny_free(&t);
    tiny_v32 = false;
}

static void test_roundtrip_bf16(void **state) {
    (void)state;
    roundtrip(320, false, 3, false); // odd hidden, three shards
    roundtrip(320, false, 2, true);  // DeepSeek-V3.2: the indexer's tensors
}
static void test_roundtrip_fp8(void **state) {
    (void)state;
    roundtrip(256, true, 1, false); // one model.safetensors
    roundtrip(256, true, 4, false);
    roundtrip(256, true, 2, true); // DeepSeek-V3.2 in FP8 (wq_b, wk with block scales)
}

// Rank 1 of 2 with attention TP: heads 2 and 3's q_b rows and o_proj columns, the shared experts'
// second half, experts 4..7.
static void test_rank_share(void **state) {
    (void)state;
    struct tiny t;
    tiny_make(&t, 256, true, 2);
    struct run_plan p;
    struct lwb_args a;
    char *extra[] = {"--no-enable-attention-dp"};
    ckpt_plan(&p, &a, t.dir, 1, 2, extra, 1);
    struct arena ar;
    load_into_arena(&p, &ar);
    struct ds_family *f = p.f;
    const struct ds_dims *d = &f->d;
    assert_int_equal(d->heads, 2), assert_int_equal(d->head0, 2), assert_int_equal(d->e0, 4);
    const struct ds_weights *x = &f->layers[1].w;
    const int H = 256, qk = 192;
    // q_b: rows 384..767 of the checkpoint's (768 x 128), and their 3 block rows of scales.
    const unsigned char *qb = find_data(&t, "model.layers.1.self_attn.q_b_proj.weight");
    assert_memory_equal(arena_at(&ar, x->q_b, (size_t)2 * qk * 128), qb + (size_t)2 * qk * 128, (size_t)2 * qk * 128);
    const unsigned char *qbs = find_data(&t, "model.layers.1.self_attn.q_b_proj.weight_scale_inv"); // (6, 1)
    assert_memory_equal(arena_at(&ar, x->q_b_s, 12), qbs + 12, 12);
    // o_proj: columns 256..511 of each of its 256 rows; scale columns 2 and 3 of (2, 4).
    const unsigned char *op = find_data(&t, "model.layers.1.self_attn.o_proj.weight");
    for (int r = 0; r < H; r++) assert_memory_equal(arena_at(&ar, x->o_proj + (CUdeviceptr)r * 256, 256), op + (size_t)r * 512 + 256, 256);
    const unsigned char *ops = find_data(&t, "model.layers.1.self_attn.o_proj.weight_scale_inv");
    assert_memory_equal(arena_at(&ar, x->o_proj_s, 8), ops + 8, 8);
    assert_memory_equal(arena_at(&ar, x->o_proj_s + 8, 8), ops + 24, 8);
    // Local expert 0 is expert 4: its gate rows 0..63 first, then up rows 0..63; its down weight.
    const unsigned char *g4 = find_data(&t, "model.layers.1.mlp.experts.4.gate_proj.weight");
    const unsigned char *u4 = find_data(&t, "model.layers.1.mlp.experts.4.up_proj.weight");
    assert_memory_equal(arena_at(&ar, x->w13, (size_t)64 * H), g4, (size_t)64 * H);
    assert_memory_equal(arena_at(&ar, x->w13 + (CUdeviceptr)64 * H, (size_t)64 * H), u4, (size_t)64 * H);
    assert_memory_equal(arena_at(&ar, x->w13 + (CUdeviceptr)128 * H, (size_t)64 * H), g4 + (size_t)64 * H, (size_t)64 * H);
    const unsigned char *d4 = find_data(&t, "model.layers.1.mlp.experts.4.down_proj.weight");
    assert_memory_equal(arena_at(&ar, x->w2, (size_t)H * 128), d4, (size_t)H * 128);
    // Gate/up scales per half: gate block 0 at halves 0 and 2, up block 0 at 1 and 3 (2 floats each).
    const unsigned char *g4s = find_data(&t, "model.layers.1.mlp.experts.4.gate_proj.weight_scale_inv");
    const unsigned char *u4s = find_data(&t, "model.layers.1.mlp.experts.4.up_proj.weight_scale_inv");
    assert_memory_equal(arena_at(&ar, x->w13_s, 8), g4s, 8);
    assert_memory_equal(arena_at(&ar, x->w13_s + 8, 8), u4s, 8);
    assert_memory_equal(arena_at(&ar, x->w13_s + 16, 8), g4s, 8);
    assert_memory_equal(arena_at(&ar, x->w13_s + 24, 8), u4s, 8);
    // The shared experts (256 wide): this rank's rows 128..255 of gate and up, in 64-row halves,
    // and columns 128..255 of down.
    assert_int_equal(d->shared0, 128), assert_int_equal(d->shared_inter, 128);
    const unsigned char *sg = find_data(&t, "model.layers.1.mlp.shared_experts.gate_proj.weight");
    const unsigned char *su = find_data(&t, "model.layers.1.mlp.shared_experts.up_proj.weight");
    assert_memory_equal(arena_at(&ar, x->s13, (size_t)64 * H), sg + (size_t)128 * H, (size_t)64 * H);
    assert_memory_equal(arena_at(&ar, x->s13 + (CUdeviceptr)64 * H, (size_t)64 * H), su + (size_t)128 * H, (size_t)64 * H);
    const unsigned char *sd = find_data(&t, "model.layers.1.mlp.shared_experts.down_proj.weight");
    for (int r = 0; r < H; r++) assert_memory_equal(arena_at(&ar, x->s2 + (CUdeviceptr)r * 128, 128), sd + (size_t)r * 256 + 128, 128);
    free(ar.mem);
    ckpt_close(p.ckpt);
    tiny_free(&t);
}

// Plans that must fail: exit 2, one line holding every string given.
struct bad_case {
    const char *dir;
    char *extra[4];
    int nextra;
};
static void bad_child(void *arg) {
    struct bad_case *b = arg;
    struct run_plan p;
    struct lwb_args a;
    ckpt_plan(&p, &a, b->dir, 0, 1, b->extra, b->nextra);
    printf("planned\n");
}
static void expect_bad(const char *dir, char **extra, int nextra, const char *s1, const char *s2) {
    static struct child_result r;
    struct bad_case b = {dir, {0}, nextra};
    for (int i = 0; i < nextra; i++) b.extra[i] = extra[i];
    run_child(bad_child, &b, &r);
    if (r.status != 2 || count_lines(r.err) != 1 || !strstr(r.err, s1) || (s2 && !strstr(r.err, s2)))
        fprintf(stderr, "exit %d, stderr: %s (wanted '%s' and '%s')\n", r.status, r.err, s1, s2 ? s2 : "");
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, s1));
    if (s2) assert_non_null(strstr(r.err, s2));
}

// Rewrite shard `file` of t without tensor `drop`, or with `name` given another dtype or shape.
static void rewrite_shard(struct tiny *t, const char *file, const char *drop, const char *retype, int64_t rows) {
    char *path = lwb_path_join(t->dir, file);
    struct lwb_st_file in;
    char err[512];
    assert_int_equal(st_open(path, &in, err, sizeof err), 0);
    unlink(path);
    struct lwb_st_writer *wr = st_writer_begin(path);
    for (int i = 0; i < in.n; i++) {
        const struct lwb_st_tensor *x = &in.t[i];
        if (drop && !strcmp(x->name, drop)) continue;
        size_t bytes = x->end - x->begin;
        unsigned char *buf = xmalloc(bytes ? bytes : 1);
        assert_true(pread(in.fd, buf, bytes, (off_t)(in.data_start + x->begin)) == (ssize_t)bytes);
        int64_t shape[LWB_ST_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        const char *dtype = x->dtype;
        if (retype && !strcmp(x->name, retype)) {
            if (rows) { // another shape: rows x the same columns
                shape[0] = rows;
                bytes = (size_t)rows * (size_t)(x->ndim > 1 ? x->shape[1] : 1) * st_dtype_size(dtype);
                buf = xrealloc(buf, bytes);
                memset(buf, 0, bytes);
            } else { // F16 instead of BF16, same bytes
                dtype = "F16";
            }
        }
        st_add(wr, x->name, dtype, shape, x->ndim, buf, bytes);
        free(buf);
    }
    st_writer_finish(wr);
    outputs_commit();
    st_close(&in);
    free(path);
}

static char *shard_of(struct tiny *t, const char *tensor) {
    struct lwb_ckpt c;
    ckpt_open(t->dir, &c);
    char *name = xstrdup(c.shards[ckpt_find(&c, tensor)->shard].name);
    ckpt_close(&c);
    return name;
}

static void test_bad_checkpoints(void **state) {
    (void)state;
    const char *qb = "model.layers.1.self_attn.q_b_proj.weight";
    // A tensor missing from the shard the index names.
    struct tiny t;
    tiny_make(&t, 320, false, 3);
    char *file = shard_of(&t, qb);
    rewrite_shard(&t, file, qb, NULL, 0);
    expect_bad(t.dir, NULL, 0, qb, file);
    tiny_free(&t);
    free(file);
    // Wrong dtype, wrong shape.
    tiny_make(&t, 320, false, 2);
    file = shard_of(&t, qb);
    rewrite_shard(&t, file, NULL, qb, 0);
    expect_bad(t.dir, NULL, 0, "is F16 [768, 128]; expected BF16 [768, 128]", file);
    rewrite_shard(&t, file, NULL, qb, 200);
    expect_bad(t.dir, NULL, 0, "[200, 128]; expected BF16 [768, 128]", qb);
    free(file);
    // A shard the index names is missing; then one truncated.
    file = shard_of(&t, qb);
    char *path = lwb_path_join(t.dir, file);
    char *saved = xstrdup(path);
    saved = xrealloc(saved, strlen(saved) + 8);
    strcat(saved, ".saved");
    assert_int_equal(rename(path, saved), 0);
    expect_bad(t.dir, NULL, 0, file, "is missing");
    assert_int_equal(rename(saved, path), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size - 100), 0);
    expect_bad(t.dir, NULL, 0, file, "truncated");
    free(path), free(saved), free(file);
    tiny_free(&t);
    // FP8: a missing scale; an index naming a file outside the folder; no index or file at all.
    tiny_make(&t, 256, true, 2);
    const char *qbs = "model.layers.1.self_attn.q_b_proj.weight_scale_inv";
    file = shard_of(&t, qbs);
    rewrite_shard(&t, file, qbs, NULL, 0);
    expect_bad(t.dir, NULL, 0, qbs, "F32 [6, 1]");
    free(file);
    char *ipath = lwb_path_join(t.dir, "model.safetensors.index.json");
    FILE *f = fopen(ipath, "w");
    fprintf(f, "{\"weight_map\": {\"%s\": \"../elsewhere.safetensors\"}}", qb);
    fclose(f);
    expect_bad(t.dir, NULL, 0, "shards must be file names inside the folder", "../elsewhere");
    unlink(ipath);
    expect_bad(t.dir, NULL, 0, "neither model.safetensors.index.json nor model.safetensors", "--load-format DUMMY");
    free(ipath);
    tiny_free(&t);
    // Refused combinations: a preset; another format than the checkpoint's; --scaled-from.
    expect_bad("deepseek-ai/DeepSeek-R1", NULL, 0, "give --model DIR", "built-in preset");
    tiny_make(&t, 256, true, 1);
    char *bf16[] = {"--weight-dtype", "bf16"};
    expect_bad(t.dir, bf16, 2, "runs the checkpoint as stored (FP8 (128x128 blocks))", "--weight-dtype bf16");
    char *scaled[] = {"--scaled-from", "2"};
    expect_bad(t.dir, scaled, 2, "--scaled-from", "--load-format DUMMY");
    tiny_free(&t);
}

// A dump's folder as the dump writes it (layer<i>.safetensors holding the weights and lwb's own
// tensors, config.json and the index from ds_dump_checkpoint) is a checkpoint AUTO loads.
static void test_dump_is_checkpoint(void **state) {
    (void)state;
    struct tiny t;
    tiny_make(&t, 256, true, 1);
    char *dir = make_tmpdir();
    json_t *map = json_object();
    json_int_t total = 0;
    for (int layer = 0; layer < 2; layer++) {
        char name[64];
        snprintf(name, sizeof name, "layer%d.safetensors", layer);
        char *path = lwb_path_join(dir, name);
        struct lwb_st_writer *wr = st_writer_begin(path);
        char prefix[32];
        snprintf(prefix, sizeof prefix, "model.layers.%d.", layer);
        for (int i = 0; i < t.n; i++) {
            // (the final norm, which the last layer ends with, goes with that layer)
            if (!str_starts(t.w[i].name, prefix) && !(layer == 1 && !strcmp(t.w[i].name, "model.norm.weight")))
                continue;
            int64_t shape[2] = {t.w[i].shape[0], t.w[i].shape[1]};
            st_add(wr, t.w[i].name, t.w[i].dtype, shape, t.w[i].ndim, t.data[i], t.w[i].bytes);
            json_object_set_new(map, t.w[i].name, json_string(name));
            total += (json_int_t)t.w[i].bytes;
        }
        uint16_t in[4 * 256] = {0};
        int64_t sh[2] = {4, 256};
        st_add(wr, "lwb.input.hidden_states", "BF16", sh, 2, in, sizeof in);
        st_writer_finish(wr);
        free(path);
    }
    ds_dump_checkpoint(dir, &t.m, true, map, total);
    outputs_commit();
    struct lwb_model m2;
    model_load(dir, &m2);
    assert_int_equal(m2.ckpt, LWB_CKPT_FP8_BLOCK);
    model_free(&m2);
    struct run_plan p;
    struct lwb_args a;
    ckpt_plan(&p, &a, dir, 0, 1, NULL, 0);
    assert_int_equal(p.wformat, LWB_WF_FP8);
    assert_non_null(ckpt_find(p.ckpt, "model.layers.1.mlp.experts.7.down_proj.weight_scale_inv"));
    assert_null(ckpt_find(p.ckpt, "lwb.input.hidden_states")); // the index names weights only
    ckpt_close(p.ckpt);
    rm_rf(dir);
    free(dir);
    tiny_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_bf16),
        cmocka_unit_test(test_roundtrip_fp8),
        cmocka_unit_test(test_rank_share),
        cmocka_unit_test(test_bad_checkpoints),
        cmocka_unit_test(test_dump_is_checkpoint),
    };
    return cmocka_run_group_tests_name("ckpt", tests, NULL, NULL);
}

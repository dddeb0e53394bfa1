// test_model.c: model.h: presets, the DeepSeek-R1 numbers, config.json directories, one-line
// errors for missing, mistyped and contradictory fields, derived values (softmax scale, YaRN),
// --scaled-from arithmetic and the tensors of a layer.
#include "test_common.h"

static const char *R1 = "deepseek-ai/DeepSeek-R1";

// ---------------------------------------------------------------------------------------------
// Helpers: a config.json in a temporary directory, made from the R1 preset with one change.

static json_t *r1_json(void) {
    const struct lwb_embedded *e = embedded_find("configs/models/deepseek-ai__DeepSeek-R1.json");
    assert_non_null(e);
    json_t *j = json_loads(e->data, 0, NULL);
    assert_non_null(j);
    return j;
}

static void write_json(const char *dir, const char *file, json_t *j) {
    char *path = lwb_path_join(dir, file);
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(2)), 0);
    free(path);
}

static void load_child(void *arg) {
    struct lwb_model m;
    model_load(arg, &m);
    printf("loaded %s\n", m.model_type);
}

// Load `dir` (or a name) in a child; it must fail with exit 2 and one line holding every string
// of the NULL-terminated list.
static void expect_error(const char *model_arg, ...) {
    static struct child_result r;
    run_child(load_child, (void *)model_arg, &r);
    if (r.status != 2 || count_lines(r.err) != 1)
        fprintf(stderr, "model %s: exit %d, stderr: %s\n", model_arg, r.status, r.err);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, "lwb: "));
    va_list ap;
    va_start(ap, model_arg);
    for (const char *s; (s = va_arg(ap, const char *));) {
        if (!strstr(r.err, s)) fprintf(stderr, "wanted \"%s\" in: %s", s, r.err);
        assert_non_null(strstr(r.err, s));
    }
    va_end(ap);
}

// model_weight_format(name, want) in a child: exit 2 with one line holding both strings.
struct format_case {
    const char *model, *want;
};
static void format_child(void *arg) {
    const struct format_case *c = arg;
    struct lwb_model m;
    model_load(c->model, &m);
    char note[320];
    model_weight_format(&m, c->want, note, sizeof note);
}
static void expect_format_error(const char *model, const char *want, const char *a, const char *b) {
    static struct child_result r;
    struct format_case c = {model, want};
    run_child(format_child, &c, &r);
    if (r.status != 2 || !strstr(r.err, a) || !strstr(r.err, b)) fprintf(stderr, "exit %d: %s", r.status, r.err);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, a));
    assert_non_null(strstr(r.err, b));
}

// R1 with `key` set to `value` (NULL: removed) at `obj` ("" or "rope_scaling"), written to a
// fresh directory; returns the directory.
static char *r1_dir_with(const char *obj, const char *key, json_t *value) {
    char *dir = make_tmpdir();
    json_t *j = r1_json();
    json_t *o = *obj ? json_object_get(j, obj) : j;
    if (value) json_object_set_new(o, key, value);
    else json_object_del(o, key);
    write_json(dir, "config.json", j);
    json_decref(j);
    return dir;
}

// ---------------------------------------------------------------------------------------------

static void test_presets(void **state) {
    (void)state;
    int n;
    const struct lwb_preset *p = model_presets(&n);
    assert_true(n >= 3);
    int supported = 0;
    for (int i = 0; i < n; i++) {
        if (i) assert_true(strcmp(p[i - 1].name, p[i].name) < 0);
        assert_non_null(strchr(p[i].name, '/'));
        if (p[i].supported) {
            struct lwb_model m;
            model_load(p[i].name, &m);
            assert_true(m.is_preset);
            supported++;
            if (model_is_hybrid(&m)) { // test_hybrid reads them
                assert_true(!strcmp(m.model_type, "nemotron_h") || !strcmp(m.model_type, "qwen3_next"));
                model_free(&m);
                continue;
            }
            assert_true(!strcmp(m.model_type, "deepseek_v3") || !strcmp(m.model_type, "deepseek_v32"));
            // V3.2's indexer: 64 heads of 128, top-2048; V3's have none.
            assert_int_equal(m.index_topk, strcmp(m.model_type, "deepseek_v32") ? 0 : 2048);
            assert_int_equal(m.index_heads, m.index_topk ? 64 : 0);
            assert_int_equal(m.hidden, 7168);
            model_free(&m);
        } else {
            expect_error(p[i].name, "not supported yet", p[i].model_type, "model preset ", NULL);
        }
    }
    assert_int_equal(supported, 6);
    const char *want[] = {"deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-R1", "nvidia/DeepSeek-R1-0528-FP4-v2",
                          "deepseek-ai/DeepSeek-V3.2-Exp", "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
                          "Qwen/Qwen3-Next-80B-A3B-Instruct"};
    for (size_t i = 0; i < LWB_ARRAY_LEN(want); i++) {
        const struct lwb_preset *q = model_preset_find(want[i]);
        assert_non_null(q);
        assert_true(q->supported);
    }
    const struct lwb_preset *q = model_preset_find("Qwen/Qwen3-30B-A3B");
    assert_non_null(q);
    assert_string_equal(q->model_type, "qwen3_moe");
    assert_false(q->supported);
    expect_error("openai/gpt-oss-120b", "model_type 'gpt_oss'", "(GptOssForCausalLM)", "not supported yet",
                 NULL);
}

// ---------------------------------------------------------------------------------------------
// Hybrid models: Nemotron-H and Qwen3-Next

static const char *NEMO = "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16";
static const char *QNEXT = "Qwen/Qwen3-Next-80B-A3B-Instruct";

// A preset's config.json with `key` set to `value` (NULL: removed), in a fresh directory.
static char *preset_dir_with(const char *preset, const char *key, json_t *value) {
    char path[256] = "configs/models/";
    strcat(path, preset);
    *strchr(path + strlen("configs/models/"), '/') = 0;
    snprintf(path + strlen(path), sizeof path - strlen(path), "__%s.json", strchr(preset, '/') + 1);
    const struct lwb_embedded *e = embedded_find(path);
    assert_non_null(e);
    json_t *j = json_loads(e->data, 0, NULL);
    if (value) json_object_set_new(j, key, value);
    else json_object_del(j, key);
    char *dir = make_tmpdir();
    write_json(dir, "config.json", j);
    json_decref(j);
    return dir;
}

static void test_hybrid(void **state) {
    (void)state;
    struct lwb_model m;
    model_load(NEMO, &m);
    assert_true(model_is_hybrid(&m));
    assert_int_equal(m.num_layers, 52);
    assert_int_equal((int)strlen(m.pattern), 52);
    // The README's layers 4, 5, 6: Mamba2, attention, MoE.
    assert_int_equal(model_layer_kind(&m, 4), LWB_LAYER_MAMBA);
    assert_int_equal(model_layer_kind(&m, 5), LWB_LAYER_ATTN);
    assert_int_equal(model_layer_kind(&m, 6), LWB_LAYER_MOE);
    assert_false(model_layer_is_moe(&m, 4));
    assert_true(model_layer_is_moe(&m, 6));
    int count[256] = {0};
    for (int i = 0; i < m.num_layers; i++) count[(unsigned char)m.pattern[i]]++;
    assert_int_equal(count['M'], 23);
    assert_int_equal(count['E'], 23);
    assert_int_equal(count['*'], 6);
    assert_int_equal(m.hidden, 2688);
    assert_int_equal(m.heads, 32);
    assert_int_equal(m.kv_heads, 2);
    assert_int_equal(m.head_dim, 128);
    assert_int_equal(m.rope_dim, 0); // Nemotron-H's attention has no positional encoding
    assert_int_equal(m.mamba_heads, 64);
    assert_int_equal(m.mamba_head_dim, 64);
    assert_int_equal(m.ssm_groups, 8);
    assert_int_equal(m.ssm_state, 128);
    assert_int_equal(m.ssm_chunk, 128);
    assert_true(m.conv_bias);
    assert_string_equal(m.ssm_cache_dtype, "float32");
    assert_int_equal(m.n_experts, 128);
    assert_int_equal(m.top_k, 6);
    assert_int_equal(m.n_group, 1);
    assert_int_equal(m.moe_intermediate, 1856);
    assert_int_equal(m.shared_intermediate, 3712);
    assert_string_equal(m.mlp_act, "relu2");
    assert_true(fabs(m.routed_scaling_factor - 2.5) < 1e-12);
    assert_true(fabs(m.rms_norm_eps - 1e-5) < 1e-15);
    assert_int_equal(m.ckpt, LWB_CKPT_BF16);
    model_free(&m);

    model_load(QNEXT, &m);
    assert_true(model_is_hybrid(&m));
    assert_int_equal(m.num_layers, 48);
    // Full attention every 4th layer (3, 7, ...), Gated DeltaNet elsewhere; MoE in all of them.
    for (int i = 0; i < 48; i++) {
        assert_int_equal(model_layer_kind(&m, i), (i + 1) % 4 ? LWB_LAYER_LINEAR : LWB_LAYER_FULL);
        assert_true(model_layer_is_moe(&m, i));
    }
    assert_int_equal(model_layer_kind(&m, 6), LWB_LAYER_LINEAR);
    assert_int_equal(model_layer_kind(&m, 7), LWB_LAYER_FULL);
    assert_int_equal(m.head_dim, 256);
    assert_int_equal(m.rope_dim, 64); // partial_rotary_factor 0.25
    assert_true(m.attn_gate && m.qk_norm && m.gemma_norm);
    assert_int_equal(m.lin_k_heads, 16);
    assert_int_equal(m.lin_v_heads, 32);
    assert_int_equal(m.lin_k_dim, 128);
    assert_int_equal(m.n_experts, 512);
    assert_int_equal(m.top_k, 10);
    assert_string_equal(m.scoring_func, "softmax");
    assert_int_equal(m.shared_intermediate, 512);
    assert_true(m.shared_gate);
    assert_string_equal(m.ssm_cache_dtype, "bfloat16");
    model_free(&m);

    // layer_types, when given, wins over full_attention_interval.
    json_t *types = json_array();
    for (int i = 0; i < 48; i++) json_array_append_new(types, json_string(i == 0 ? "full_attention" : "linear_attention"));
    char *dir = preset_dir_with(QNEXT, "layer_types", types);
    model_load(dir, &m);
    assert_int_equal(model_layer_kind(&m, 0), LWB_LAYER_FULL);
    assert_int_equal(model_layer_kind(&m, 3), LWB_LAYER_LINEAR);
    model_free(&m);

    // One-line errors naming the field.
    expect_error(preset_dir_with(NEMO, "hybrid_override_pattern", json_string("MEM")), "'hybrid_override_pattern'",
                 "3 letters", "52", NULL);
    expect_error(preset_dir_with(NEMO, "hybrid_override_pattern",
                                 json_string("MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEMX")),
                 "'X' at layer 51", "M (Mamba2)", NULL);
    expect_error(preset_dir_with(NEMO, "hybrid_override_pattern", NULL), "'hybrid_override_pattern' is missing",
                 "Nemotron-H", NULL);
    expect_error(preset_dir_with(NEMO, "n_groups", json_integer(7)), "'n_groups' (7) does not divide", NULL);
    expect_error(preset_dir_with(NEMO, "mlp_hidden_act", json_string("silu")), "'mlp_hidden_act'", "relu2", NULL);
    expect_error(preset_dir_with(NEMO, "mamba_ssm_cache_dtype", json_string("float64")), "'mamba_ssm_cache_dtype'",
                 "float16", NULL);
    expect_error(preset_dir_with(NEMO, "num_key_value_heads", json_integer(3)), "'num_key_value_heads' (3)", NULL);
    expect_error(preset_dir_with(NEMO, "head_dim", json_integer(96)), "'head_dim' is 96", "128 and 256", NULL);
    expect_error(preset_dir_with(QNEXT, "linear_num_value_heads", json_integer(20)), "'linear_num_value_heads' (20)",
                 NULL);
    expect_error(preset_dir_with(QNEXT, "layer_types", json_integer(3)), "'layer_types' must be a list of 48", NULL);
    expect_error(preset_dir_with(QNEXT, "num_experts", NULL), "'num_experts' is missing", "Qwen3-Next", NULL);
    expect_error(preset_dir_with(QNEXT, "decoder_sparse_step", json_integer(2)), "'decoder_sparse_step'", NULL);
    expect_error(preset_dir_with(QNEXT, "rope_scaling", json_pack("{s:s}", "type", "yarn")), "'rope_scaling' is set",
                 NULL);
}

static void test_r1_numbers(void **state) {
    (void)state;
    struct lwb_model m;
    model_load(R1, &m);
    assert_string_equal(m.name, R1);
    assert_string_equal(m.architecture, "DeepseekV3ForCausalLM");
    assert_int_equal(m.hidden, 7168);
    assert_int_equal(m.heads, 128);
    assert_int_equal(m.kv_heads, 128);
    assert_int_equal(m.q_lora_rank, 1536);
    assert_int_equal(m.kv_lora_rank, 512);
    assert_int_equal(m.qk_nope_dim, 128);
    assert_int_equal(m.qk_rope_dim, 64);
    assert_int_equal(m.v_head_dim, 128);
    assert_int_equal(m.n_experts, 256);
    assert_int_equal(m.n_shared_experts, 1);
    assert_int_equal(m.top_k, 8);
    assert_int_equal(m.n_group, 8);
    assert_int_equal(m.topk_group, 4);
    assert_true(m.routed_scaling_factor == 2.5);
    assert_true(m.norm_topk_prob);
    assert_string_equal(m.scoring_func, "sigmoid");
    assert_string_equal(m.topk_method, "noaux_tc");
    assert_int_equal(m.first_k_dense, 3);
    assert_int_equal(m.moe_layer_freq, 1);
    assert_int_equal(m.intermediate, 18432);
    assert_int_equal(m.moe_intermediate, 2048);
    assert_true(m.rms_norm_eps == 1e-6);
    assert_true(m.rope_theta == 10000);
    assert_true(m.rope.yarn);
    assert_true(m.rope.factor == 40);
    assert_int_equal(m.rope.original_max_pos, 4096);
    assert_true(m.rope.beta_fast == 32 && m.rope.beta_slow == 1);
    assert_true(m.rope.mscale == 1.0 && m.rope.mscale_all_dim == 1.0);
    assert_true(m.rope.truncate);
    assert_int_equal(m.max_pos, 163840);
    assert_int_equal(m.num_layers, 61);
    assert_int_equal(m.vocab, 129280);
    assert_string_equal(m.torch_dtype, "bfloat16");
    assert_true(m.rope_interleave);
    // The official R1 checkpoint is FP8 with 128x128 block scales; lwb runs it in bf16.
    assert_true(m.runs_in_bf16);
    assert_string_equal(m.checkpoint_format, "FP8 (128x128 blocks)");
    assert_int_equal(m.ckpt, LWB_CKPT_FP8_BLOCK);
    // --weight-dtype: auto runs the checkpoint's FP8; bf16 says what runs instead.
    char note[320];
    assert_int_equal(model_weight_format(&m, "auto", note, sizeof note), LWB_WF_FP8);
    assert_string_equal(note, "");
    assert_int_equal(model_weight_format(&m, "fp8", note, sizeof note), LWB_WF_FP8);
    assert_string_equal(note, "");
    assert_int_equal(model_weight_format(&m, "bf16", note, sizeof note), LWB_WF_BF16);
    assert_string_equal(note, "deepseek-ai/DeepSeek-R1 stores FP8 (128x128 blocks) weights; --weight-dtype bf16: lwb "
                              "runs and times it in bf16");
    // Derived values.
    assert_int_equal(model_qk_head_dim(&m), 192);
    assert_int_equal(model_kv_cache_dim(&m), 576);
    assert_int_equal(model_experts_per_group(&m), 32);
    for (int l = 0; l < 61; l++) assert_int_equal(model_layer_is_moe(&m, l), l >= 3);
    model_free(&m);

    model_load("nvidia/DeepSeek-R1-0528-FP4-v2", &m);
    assert_true(m.runs_in_bf16);
    assert_string_equal(m.checkpoint_format, "NVFP4 (groups of 16)");
    assert_int_equal(m.ckpt, LWB_CKPT_NVFP4);
    assert_int_equal(model_weight_format(&m, "fp8", note, sizeof note), LWB_WF_FP8);
    assert_string_equal(note, "nvidia/DeepSeek-R1-0528-FP4-v2 stores NVFP4 (groups of 16) weights; --weight-dtype fp8: "
                              "lwb runs and times it in FP8 (128x128 blocks)");
    expect_format_error("nvidia/DeepSeek-R1-0528-FP4-v2", "auto", "need a Blackwell GPU", "--weight-dtype fp8");
    assert_int_equal(m.n_experts, 256);
    assert_int_equal(m.q_lora_rank, 1536);
    model_free(&m);
}

static void test_softmax_scale_and_rope(void **state) {
    (void)state;
    struct lwb_model m;
    model_load(R1, &m);
    // 192^-0.5 * (0.1 ln 40 + 1)^2, as transformers' DeepseekV3Attention computes it.
    assert_true(fabs(model_softmax_scale(&m) - 0.1352337788608801) < 1e-15);
    assert_true(model_rope_attention_factor(&m) == 1.0);
    // YaRN frequencies: correction range [10, 23] for dim 64, theta 1e4, 4096 original positions.
    double f[32];
    model_rope_inv_freq(&m, f);
    const struct {
        int i;
        double v;
    } want[] = {
        {0, 1.0},     {5, 0.23713737056616555},    {10, 0.056234132519034905}, {11, 0.03900692656714386},
        {16, 0.0055}, {22, 0.0001778279410038922}, {23, 3.33380358040831e-05}, {31, 3.33380358040831e-06}};
    for (size_t k = 0; k < LWB_ARRAY_LEN(want); k++) {
        if (fabs(f[want[k].i] - want[k].v) > 1e-12 * want[k].v)
            fprintf(stderr, "inv_freq[%d] = %.17g, wanted %.17g\n", want[k].i, f[want[k].i], want[k].v);
        assert_true(fabs(f[want[k].i] - want[k].v) <= 1e-12 * want[k].v);
    }
    // mscale_all_dim 0 (absent): no softmax correction; mscale 0.707 vs 1.0 changes cos/sin.
    m.rope.mscale_all_dim = 0;
    assert_true(fabs(model_softmax_scale(&m) - 1 / sqrt(192.0)) < 1e-15);
    assert_true(fabs(model_rope_attention_factor(&m) - (0.1 * log(40.0) + 1)) < 1e-12);
    m.rope.mscale_all_dim = 1.0, m.rope.mscale = 0.707;
    assert_true(fabs(model_rope_attention_factor(&m) - (0.0707 * log(40.0) + 1) / (0.1 * log(40.0) + 1)) <
                1e-12);
    // mscale absent: transformers ignores mscale_all_dim for cos/sin (get_mscale(f) alone).
    m.rope.mscale = 0;
    assert_true(fabs(model_rope_attention_factor(&m) - (0.1 * log(40.0) + 1)) < 1e-12);
    // Without truncation the ramp bounds stay fractional (10.47 .. 22.51): inv_freq[11] grows.
    m.rope.truncate = false;
    model_rope_inv_freq(&m, f);
    assert_true(f[11] > 0.03900692656714386 * 1.01);
    m.rope.truncate = true;
    // Without rope_scaling: plain RoPE.
    m.rope.yarn = false;
    model_rope_inv_freq(&m, f);
    assert_true(fabs(f[16] - 0.01) < 1e-15);
    assert_true(model_rope_attention_factor(&m) == 1.0);
    assert_true(fabs(model_softmax_scale(&m) - 1 / sqrt(192.0)) < 1e-15);
    model_free(&m);
}

static void test_directory(void **state) {
    (void)state;
    char *dir = r1_dir_with("", "quantization_config", json_null());
    struct lwb_model m;
    model_load(dir, &m);
    assert_false(m.is_preset);
    assert_int_equal(m.n_experts, 256);
    assert_false(m.runs_in_bf16); // bf16 with no quantization
    assert_string_equal(m.checkpoint_format, "bf16");
    char *path = lwb_path_join(dir, "config.json");
    assert_string_equal(m.source, path);
    model_free(&m);
    // A ModelOpt checkpoint that keeps its quantization in hf_quant_config.json.
    json_t *hq = json_pack("{s:{s:s,s:i,s:n}}", "quantization", "quant_algo", "NVFP4", "group_size", 16,
                           "kv_cache_quant_algo");
    write_json(dir, "hf_quant_config.json", hq);
    json_decref(hq);
    model_load(dir, &m);
    assert_true(m.runs_in_bf16);
    assert_string_equal(m.checkpoint_format, "NVFP4 (groups of 16)");
    model_free(&m);
    // The config file itself may be given.
    model_load(path, &m);
    assert_int_equal(m.hidden, 7168);
    model_free(&m);
    // Optional fields take transformers' defaults.
    rm_rf(dir);
    free(dir);
    dir = r1_dir_with("", "moe_layer_freq", NULL);
    char *p2 = lwb_path_join(dir, "config.json");
    json_t *j = json_load_file(p2, 0, NULL);
    json_object_del(j, "num_key_value_heads");
    json_object_del(j, "scoring_func");
    json_object_del(j, "topk_method");
    json_object_set_new(j, "rope_scaling", json_null());
    json_object_set_new(j, "torch_dtype", json_string("float16"));
    json_object_del(j, "quantization_config");
    json_object_set_new(j, "moe_layer_freq", json_integer(2));
    write_json(dir, "config.json", j);
    json_decref(j);
    model_load(dir, &m);
    assert_int_equal(m.kv_heads, 128);
    assert_string_equal(m.scoring_func, "sigmoid");
    assert_false(m.rope.yarn);
    assert_true(m.runs_in_bf16); // float16 checkpoint
    assert_string_equal(m.checkpoint_format, "float16");
    {
        char note[320];
        assert_int_equal(model_weight_format(&m, "auto", note, sizeof note), LWB_WF_BF16);
        assert_non_null(strstr(note, "stores float16 weights; lwb runs it in bf16"));
    }
    assert_false(model_layer_is_moe(&m, 2));
    assert_true(model_layer_is_moe(&m, 4));
    assert_false(model_layer_is_moe(&m, 5));
    model_free(&m);
    free(p2);
    free(path);
    rm_rf(dir);
    free(dir);
}

static void test_not_found(void **state) {
    (void)state;
    expect_error("deepseek-ai/DeepSeek-R2", "--model deepseek-ai/DeepSeek-R2",
                 "did you mean 'deepseek-ai/DeepSeek-R1'", "lwb run --list-models", NULL);
    expect_error("DeepSeek-V3", "did you mean 'deepseek-ai/DeepSeek-V3'", NULL);
    expect_error("nothing-like-it-at-all", "no such directory and no built-in preset", "--list-models", NULL);
    char *dir = make_tmpdir();
    expect_error(dir, "the directory has no config.json", dir, NULL);
    FILE *f = fopen(lwb_path_join(dir, "config.json"), "w");
    fputs("{\"hidden_size\": 7168,,}", f);
    fclose(f);
    expect_error(dir, "config.json:1:", "not valid JSON", NULL);
    f = fopen(lwb_path_join(dir, "config.json"), "w");
    fputs("[1, 2]", f);
    fclose(f);
    expect_error(dir, "must be a JSON object", NULL);
    rm_rf(dir);
    free(dir);
}

static void check_field_error(const char *obj, const char *key, json_t *value, const char *a, const char *b) {
    char *dir = r1_dir_with(obj, key, value);
    char *path = lwb_path_join(dir, "config.json");
    expect_error(dir, path, a, b, "fix it in config.json", NULL);
    free(path);
    rm_rf(dir);
    free(dir);
}

static void test_field_errors(void **state) {
    (void)state;
    // Missing and mistyped.
    check_field_error("", "hidden_size", NULL, "'hidden_size' is missing", "7168");
    check_field_error("", "kv_lora_rank", NULL, "'kv_lora_rank' is missing", "512");
    check_field_error("", "model_type", NULL, "'model_type' is missing", "deepseek_v3");
    // DeepSeek-V3.2 needs its indexer's fields.
    check_field_error("", "model_type", json_string("deepseek_v32"), "'index_n_heads' is missing", "64");
    check_field_error("", "hidden_size", json_string("7168"), "'hidden_size' must be an integer",
                      "got a string");
    check_field_error("", "n_routed_experts", json_real(256.5), "'n_routed_experts' must be an integer",
                      "got a real number");
    check_field_error("", "num_attention_heads", json_integer(0),
                      "'num_attention_heads' is 0, out of range", "from 1 to 1024");
    check_field_error("", "hidden_size", json_integer(2147483648LL), "'hidden_size' is 2147483648, out of range",
                      "from 1 to 65536");
    check_field_error("", "norm_topk_prob", json_integer(1), "'norm_topk_prob' must be true or false",
                      "integer");
    check_field_error("", "rms_norm_eps", json_string("1e-6"), "'rms_norm_eps' must be a number", "string");
    check_field_error("", "routed_scaling_factor", json_real(-1),
                      "'routed_scaling_factor' must be a positive number", "-1");
    check_field_error("", "q_lora_rank", json_null(), "'q_lora_rank' is null", "q_lora_rank > 0");
    check_field_error("", "v_head_dim", json_null(), "'v_head_dim' is null", "lwb needs a value");
    check_field_error("", "rope_scaling", json_string("yarn"), "'rope_scaling' must be an object or null",
                      "string");
    check_field_error("rope_scaling", "factor", NULL, "'rope_scaling.factor' is missing", "40");
    check_field_error("rope_scaling", "type", json_string("linear"), "'rope_scaling.type' is \"linear\"",
                      "yarn");
    check_field_error("rope_scaling", "beta_fast", json_string("32"),
                      "'rope_scaling.beta_fast' must be a number", "string");
    check_field_error("", "scoring_func", json_string("softmax"), "'scoring_func' is \"softmax\"", "sigmoid");
    check_field_error("", "topk_method", json_string("greedy"), "'topk_method' is \"greedy\"", "noaux_tc");
    check_field_error("", "quantization_config", json_string("fp8"),
                      "'quantization_config' must be an object", "string");
    // Contradictions.
    check_field_error("", "n_group", json_integer(7),
                      "'n_routed_experts' (256) is not a multiple of 'n_group' (7)", "equal groups");
    check_field_error("", "topk_group", json_integer(9), "'topk_group' (9) is larger than 'n_group' (8)",
                      "at most n_group");
    check_field_error("", "num_experts_per_tok", json_integer(300), "'num_experts_per_tok' is 300, out of range",
                      "from 1 to 64");
    char *gdir = r1_dir_with("", "topk_group", json_integer(1));
    char *gpath = lwb_path_join(gdir, "config.json");
    json_t *gj = json_load_file(gpath, 0, NULL);
    json_object_set_new(gj, "n_group", json_integer(64));
    write_json(gdir, "config.json", gj);
    json_decref(gj);
    expect_error(gdir, "'num_experts_per_tok' (8) is more than the experts in 'topk_group' groups (1 x 4)",
                 NULL);
    free(gpath);
    rm_rf(gdir);
    free(gdir);
    check_field_error("", "n_group", json_integer(256), "'n_group' (256) leaves 1 expert per group",
                      "at least 2");
    check_field_error("", "qk_head_dim", json_integer(200),
                      "'qk_head_dim' (200) is not qk_nope_head_dim + qk_rope_head_dim (128 + 64 = 192)", "");
    check_field_error("", "head_dim", json_integer(128), "'head_dim' (128) is neither qk_rope_head_dim (64)",
                      "192");
    check_field_error("", "qk_rope_head_dim", json_integer(63), "'qk_rope_head_dim' (63) must be even",
                      "pairs");
    check_field_error("", "first_k_dense_replace", json_integer(62),
                      "'first_k_dense_replace' (62) is more than 'num_hidden_layers' (61)", "");
    check_field_error("", "num_key_value_heads", json_integer(256),
                      "'num_key_value_heads' (256) is larger than 'num_attention_heads' (128)", "");
    check_field_error("rope_scaling", "beta_slow", json_integer(64),
                      "'rope_scaling.beta_slow' (64) is larger", "");
    char *qdir = r1_dir_with("", "model_type", json_string("qwen3_moe"));
    expect_error(qdir, "model_type 'qwen3_moe' (DeepseekV3ForCausalLM) is not supported yet", "--list-models",
                 NULL);
    rm_rf(qdir);
    free(qdir);
    // Consistent alternatives are accepted.
    struct lwb_model m;
    char *dir = r1_dir_with("", "head_dim", json_integer(192));
    model_load(dir, &m);
    model_free(&m);
    rm_rf(dir);
    free(dir);
    dir = r1_dir_with("", "qk_head_dim", json_integer(192));
    model_load(dir, &m);
    model_free(&m);
    rm_rf(dir);
    free(dir);
}

struct layers_case {
    long long idx[4];
    int n;
};
static void layers_child(void *arg) {
    struct layers_case *c = arg;
    struct lwb_model m;
    model_load(R1, &m);
    model_check_layers(&m, c->idx, c->n, "--layer-indices");
}

static void test_layer_indices(void **state) {
    (void)state;
    struct child_result r;
    struct layers_case ok = {{0, 5, 60}, 3}, big = {{5, 61}, 2}, neg = {{-1}, 1}, twice = {{5, 6, 5}, 3};
    run_child(layers_child, &ok, &r);
    assert_int_equal(r.status, 0);
    run_child(layers_child, &big, &r);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, "--layer-indices: layer 61 does not exist: deepseek-ai/DeepSeek-R1 has 61 "
                                  "decoder layers (0..60)"));
    run_child(layers_child, &neg, &r);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "layer -1 does not exist"));
    run_child(layers_child, &twice, &r);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "layer 5 is listed twice"));
}

struct scaled_case {
    int s, n;
    bool dp;
};
static void scaled_child(void *arg) {
    struct scaled_case *c = arg;
    struct lwb_model m;
    model_load(R1, &m);
    model_apply_scaled_from(&m, c->s, c->n, c->dp);
    printf("experts %d heads %d\n", m.n_experts, m.heads);
}
static void expect_scaled_error(int s, int n, bool dp, const char *a, const char *b) {
    struct scaled_case c = {s, n, dp};
    struct child_result r;
    run_child(scaled_child, &c, &r);
    if (r.status != 2) fprintf(stderr, "scaled %d/%d: exit %d: %s%s\n", s, n, r.status, r.out, r.err);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    if (!strstr(r.err, a) || !strstr(r.err, b)) fprintf(stderr, "got: %s", r.err);
    assert_non_null(strstr(r.err, a));
    assert_non_null(strstr(r.err, b));
}

static void test_scaled_from(void **state) {
    (void)state;
    struct lwb_model m;
    // DEP16 on one GPU (attention DP): 256/16 = 16 experts, heads unchanged.
    model_load(R1, &m);
    model_apply_scaled_from(&m, 16, 1, true);
    assert_int_equal(m.n_experts, 16);
    assert_int_equal(m.heads, 128);
    assert_int_equal(m.n_experts_full, 256);
    assert_int_equal(m.scaled_from, 16);
    assert_int_equal(m.scaled_ranks, 1);
    json_t *j = model_config_json(&m);
    assert_int_equal(json_integer_value(json_object_get(j, "n_routed_experts")), 16);
    assert_int_equal(json_integer_value(json_object_get(m.config, "n_routed_experts")), 256);
    json_decref(j);
    model_free(&m);
    // TEP16 on 4 GPUs (attention TP): experts 256/16*4 = 64, heads 128/16*4 = 32.
    model_load(R1, &m);
    model_apply_scaled_from(&m, 16, 4, false);
    assert_int_equal(m.n_experts, 64);
    assert_int_equal(m.heads, 32);
    assert_int_equal(m.kv_heads, 32);
    assert_int_equal(m.heads_full, 128);
    struct lwb_weight *w;
    int n = model_layer_weights(&m, 5, LWB_WF_BF16, &w);
    assert_int_equal(n, 9 + 2 + 3 + 3 * 64);
    assert_int_equal(w[3].shape[0], 32 * 192); // q_b_proj follows the scaled heads
    free(w);
    model_free(&m);
    // S = N: unchanged; 0: off.
    model_load(R1, &m);
    model_apply_scaled_from(&m, 4, 4, true);
    assert_int_equal(m.n_experts, 256);
    model_free(&m);
    model_load(R1, &m);
    model_apply_scaled_from(&m, 0, 1, true);
    assert_int_equal(m.n_experts, 256);
    assert_int_equal(m.scaled_from, 0);
    model_free(&m);
    // Checked but not applied (one rank: the balance methods follow the simulated EP size).
    model_load(R1, &m);
    model_check_scaled_from(&m, 16, 1, true);
    model_check_scaled_from(&m, 64, 1, true); // 4 experts per GPU: fine when not applied
    assert_int_equal(m.n_experts, 256);
    assert_int_equal(m.scaled_from, 0);
    model_free(&m);
    // Errors.
    expect_scaled_error(2, 4, true, "--scaled-from 2 is smaller than the 4 ranks", "at least 4");
    expect_scaled_error(24, 1, true, "256 routed experts, which do not split evenly over 24 GPUs",
                        "divisor of 256");
    expect_scaled_error(256, 1, false, "128 attention heads", "--enable-attention-dp");
    expect_scaled_error(64, 1, true,
                        "'n_routed_experts' (4 after --scaled-from 64 on 1 rank) is not a multiple",
                        "give a smaller --scaled-from");
    expect_scaled_error(32, 1, true, "leaves 1 expert per group (n_routed_experts 8 after --scaled-from 32",
                        "");
}

static void test_weights(void **state) {
    (void)state;
    struct lwb_model m;
    model_load(R1, &m);
    struct lwb_weight *w;
    int n = model_layer_weights(&m, 5, LWB_WF_BF16, &w);
    assert_int_equal(n, 9 + 2 + 3 + 3 * 256);
    const struct {
        const char *name;
        const char *dtype;
        int64_t r, c;
    } want[] = {
        {"model.layers.6.input_layernorm.weight", "BF16", 7168, 0},
        {"model.layers.5.self_attn.q_a_proj.weight", "BF16", 1536, 7168},
        {"model.layers.5.self_attn.q_a_layernorm.weight", "BF16", 1536, 0},
        {"model.layers.5.self_attn.q_b_proj.weight", "BF16", 128 * 192, 1536},
        {"model.layers.5.self_attn.kv_a_proj_with_mqa.weight", "BF16", 576, 7168},
        {"model.layers.5.self_attn.kv_a_layernorm.weight", "BF16", 512, 0},
        {"model.layers.5.self_attn.kv_b_proj.weight", "BF16", 128 * 256, 512},
        {"model.layers.5.self_attn.o_proj.weight", "BF16", 7168, 128 * 128},
        {"model.layers.5.post_attention_layernorm.weight", "BF16", 7168, 0},
        {"model.layers.5.mlp.gate.weight", "BF16", 256, 7168},
        {"model.layers.5.mlp.gate.e_score_correction_bias", "F32", 256, 0},
        {"model.layers.5.mlp.shared_experts.gate_proj.weight", "BF16", 2048, 7168},
        {"model.layers.5.mlp.shared_experts.up_proj.weight", "BF16", 2048, 7168},
        {"model.layers.5.mlp.shared_experts.down_proj.weight", "BF16", 7168, 2048},
        {"model.layers.5.mlp.experts.0.gate_proj.weight", "BF16", 2048, 7168},
        {"model.layers.5.mlp.experts.0.up_proj.weight", "BF16", 2048, 7168},
        {"model.layers.5.mlp.experts.0.down_proj.weight", "BF16", 7168, 2048},
    };
    for (size_t i = 0; i < LWB_ARRAY_LEN(want); i++) {
        assert_string_equal(w[i].name, want[i].name);
        assert_string_equal(w[i].dtype, want[i].dtype);
        assert_int_equal(w[i].ndim, want[i].c ? 2 : 1);
        assert_int_equal(w[i].shape[0], want[i].r);
        if (want[i].c) assert_int_equal(w[i].shape[1], want[i].c);
        assert_int_equal(w[i].expert, i >= 14 ? 0 : -1);
    }
    assert_string_equal(w[n - 1].name, "model.layers.5.mlp.experts.255.down_proj.weight");
    assert_int_equal(w[n - 1].expert, 255);
    uint64_t total = 0, attn = 0;
    for (int i = 0; i < n; i++) {
        total += w[i].bytes;
        if (i < 9) attn += w[i].bytes;
        for (int j = 0; j < i && i < 20; j++) assert_string_not_equal(w[i].name, w[j].name);
    }
    assert_int_equal(attn, 374243328ULL);
    assert_int_equal(total, 23014573056ULL); // 21.4 GiB: 256 experts dominate
    assert_int_equal(model_layer_weight_bytes(&m, 5, LWB_WF_BF16), total);
    free(w);

    // FP8: every Linear but the router as e4m3 followed by its weight_scale_inv (fp32 per 128 x 128
    // block, ceil-divided: kv_a's 576 rows have 5 block rows), as DeepSeek-R1's checkpoint.
    n = model_layer_weights(&m, 5, LWB_WF_FP8, &w);
    assert_int_equal(n, 9 + 2 + 3 + 3 * 256 + 5 + 3 + 3 * 256);
    assert_string_equal(w[1].name, "model.layers.5.self_attn.q_a_proj.weight");
    assert_string_equal(w[1].dtype, "F8_E4M3");
    assert_int_equal(w[1].bytes, 1536 * 7168);
    assert_string_equal(w[2].name, "model.layers.5.self_attn.q_a_proj.weight_scale_inv");
    assert_string_equal(w[2].dtype, "F32");
    assert_int_equal(w[2].shape[0], 12), assert_int_equal(w[2].shape[1], 56);
    assert_string_equal(w[7].name, "model.layers.5.self_attn.kv_a_proj_with_mqa.weight_scale_inv");
    assert_int_equal(w[7].shape[0], 5), assert_int_equal(w[7].shape[1], 56);
    bool router_bf16 = false;
    for (int i = 0; i < n; i++)
        if (!strcmp(w[i].name, "model.layers.5.mlp.gate.weight")) router_bf16 = !strcmp(w[i].dtype, "BF16");
    assert_true(router_bf16);
    assert_string_equal(w[n - 1].name, "model.layers.5.mlp.experts.255.down_proj.weight_scale_inv");
    assert_int_equal(w[n - 1].shape[0], 56), assert_int_equal(w[n - 1].shape[1], 16);
    assert_int_equal(model_layer_weight_bytes(&m, 5, LWB_WF_FP8), 11511947488ULL); // the "about 11.5 GB"
    free(w);

    n = model_layer_weights(&m, 0, LWB_WF_BF16, &w);
    assert_int_equal(n, 12);
    assert_string_equal(w[9].name, "model.layers.0.mlp.gate_proj.weight");
    assert_int_equal(w[9].shape[0], 18432);
    assert_int_equal(w[9].shape[1], 7168);
    assert_string_equal(w[10].name, "model.layers.0.mlp.up_proj.weight");
    assert_string_equal(w[11].name, "model.layers.0.mlp.down_proj.weight");
    assert_int_equal(w[11].shape[0], 7168);
    assert_int_equal(w[11].shape[1], 18432);
    assert_int_equal(model_layer_weight_bytes(&m, 0, LWB_WF_BF16), 1166966784ULL);
    assert_int_equal(model_layer_weight_bytes(&m, 0, LWB_WF_FP8), 583642336ULL);
    free(w);
    // A layer ends with the next layer's input_layernorm (TensorRT-LLM's next_layer_layernorm);
    // the last layer with the model's final norm.
    n = model_layer_weights(&m, 60, LWB_WF_BF16, &w);
    assert_string_equal(w[0].name, "model.norm.weight");
    assert_true(model_is_next_norm(w[0].name));
    assert_false(model_is_next_norm(w[1].name));
    free(w);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_hybrid),
        cmocka_unit_test(test_r1_numbers),
        cmocka_unit_test(test_softmax_scale_and_rope),
        cmocka_unit_test(test_directory),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_field_errors),
        cmocka_unit_test(test_layer_indices),
        cmocka_unit_test(test_scaled_from),
        cmocka_unit_test(test_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

// model.h: a model's architecture, read from a Hugging Face config.json or a built-in preset.
//
// Defines: struct lwb_model (every number a DeepSeek-V3 decoder layer needs), model_load (a
// directory holding config.json, or a preset name such as deepseek-ai/DeepSeek-R1), model_free,
// model_presets (the built-in presets, for --list-models), model_check_layers, model_layer_is_moe,
// the derived values (q head dim, KV-cache width, softmax scale, YaRN frequencies),
// model_check_scaled_from and model_apply_scaled_from (--scaled-from), model_layer_weights (the
// tensors of one layer under a real checkpoint's names and shapes) and model_config_json (for
// meta.json).
//
// Presets are the files configs/models/<org>__<name>.json, embedded in the binary: the preset
// "deepseek-ai/DeepSeek-R1" is configs/models/deepseek-ai__DeepSeek-R1.json.
//
// Does not: read weights, allocate device memory, or print (errors go through lwb_user_error:
// one line naming the file or preset, the field and the fix).
// Tested by test/test_model.c.
//
// NOTES:
// - model_type deepseek_v3 (DeepSeek-V3, R1 and their quantized checkpoints) and deepseek_v32
//   (DeepSeek-V3.2: V3's layer with DeepSeek Sparse Attention, read from index_n_heads,
//   index_head_dim and index_topk) are built, and the hybrids nemotron_h (hybrid_override_pattern:
//   Mamba2, attention, MoE, MLP letters) and qwen3_next (layer_types or full_attention_interval:
//   Gated DeltaNet or gated attention, each with MoE), read into `pattern` and the hybrid fields.
//   The other presets exist so their names resolve; model_load refuses them with one line.
// - The checkpoint's format is read from quantization_config (or hf_quant_config.json) into
//   `ckpt`; model_weight_format picks what runs from it and --weight-dtype (bf16, or DeepSeek's
//   FP8 with 128x128 block scales). model_load itself is silent.
// - Softmax scale, as transformers' DeepseekV3Attention and DeepSeek's own modeling code:
//   (qk_nope + qk_rope)^-0.5, times mscale^2 where mscale = 0.1 * mscale_all_dim * ln(factor) + 1
//   when rope_scaling is given, mscale_all_dim is nonzero and factor > 1 (otherwise 1). For R1:
//   192^-0.5 * (0.1 * ln 40 + 1)^2 = 0.13523.
// - RoPE (transformers' _compute_yarn_parameters; DeepseekV3Config sets head_dim =
//   qk_rope_head_dim): dim = qk_rope_head_dim; correction range from beta_fast/beta_slow against
//   original_max_position_embeddings, floored/ceiled and clamped to [0, dim-1]; inv_freq blends
//   1/(theta^(2i/dim)) and the same divided by factor with a linear ramp. cos/sin are multiplied
//   by attention_factor = get_mscale(f, mscale) / get_mscale(f, mscale_all_dim) when both are
//   given and nonzero, else get_mscale(f), with f = max_position_embeddings / original_max_...
//   (1.0 for DeepSeek's 1.0/1.0). Current transformers and DeepSeek's own modeling code agree on
//   this; older transformers releases took the correction range from max_position_embeddings
//   and are not a reference here. DeepSeek checkpoints store the rope dims interleaved (pairs
//   2i, 2i+1); transformers de-interleaves them when rope_interleave is true (its default),
//   recorded here.
// - An MoE layer is layer >= first_k_dense_replace and layer % moe_layer_freq == 0 (DeepSeek's
//   modeling code; transformers checks only the first part, the same for moe_layer_freq 1).
// - e_score_correction_bias (and V3.2's indexer.k_norm) is F32 in DeepSeek's checkpoints and inference code; every other
//   tensor of a layer is BF16 here.
#pragma once
#include <jansson.h>

#define LWB_MODEL_PRESET_DIR "configs/models/"

struct lwb_rope_scaling {
    bool yarn;             // rope_scaling given (type "yarn"); false: plain RoPE
    double factor;         // context extension factor (40 for DeepSeek-V3)
    int original_max_pos;  // original_max_position_embeddings (4096)
    double beta_fast;      // YaRN correction bounds, rotations (32)
    double beta_slow;      // (1)
    double mscale;         // (1.0); 0 when absent (transformers then ignores both)
    double mscale_all_dim; // (1.0); 0 when absent: no softmax-scale correction
    bool truncate;         // floor/ceil the correction range (default true)
};

// What a checkpoint stores, for the choice of the format that runs (model_weight_format).
enum lwb_ckpt_kind {
    LWB_CKPT_BF16,      // plain bf16
    LWB_CKPT_FP8_BLOCK, // float8_e4m3fn with one fp32 scale per 128 x 128 block (DeepSeek's)
    LWB_CKPT_FP8_OTHER, // fp8 in another layout (other block sizes, per tensor)
    LWB_CKPT_NVFP4,     // NVFP4 (ModelOpt; Blackwell tensor cores)
    LWB_CKPT_OTHER,     // float16, float32 or another quantization
};

// The weight format lwb runs (--weight-dtype).
enum lwb_wformat { LWB_WF_BF16, LWB_WF_FP8 };

struct lwb_model {
    char name[256];               // the --model argument as given
    char source[PATH_MAX];        // for messages: "model preset X" or DIR/config.json
    bool is_preset;               // --model named a built-in preset
    char model_type[32];          // "deepseek_v3"
    char architecture[64];        // architectures[0], "" when absent
    char torch_dtype[16];         // the checkpoint's dtype ("bfloat16")
    char checkpoint_format[64];   // "bf16", "FP8 (128x128 blocks)", "NVFP4 (groups of 16)", ...
    enum lwb_ckpt_kind ckpt;      // the same, as a kind (what --weight-dtype auto runs)
    bool runs_in_bf16;            // the checkpoint is not plain bf16 (a note unless it runs as stored)
    int hidden;                   // hidden_size
    int heads;                    // num_attention_heads (after --scaled-from with attention TP)
    int kv_heads;                 // num_key_value_heads (recorded; MLA caches one latent per token)
    int q_lora_rank;              // 1536
    int kv_lora_rank;             // 512
    int qk_nope_dim;              // qk_nope_head_dim, 128
    int qk_rope_dim;              // qk_rope_head_dim, 64
    int v_head_dim;               // 128
    int n_experts;                // n_routed_experts (after --scaled-from)
    int n_shared_experts;         // 0 or more; the shared MLP is n_shared x moe_intermediate wide
    int top_k;                    // num_experts_per_tok
    int n_group;                  // expert groups for group-limited routing
    int topk_group;               // groups kept per token
    double routed_scaling_factor; // multiplies the normalised routing weights
    bool norm_topk_prob;          // normalise the top-k weights to sum 1
    char scoring_func[16];        // "sigmoid"
    char topk_method[16];         // "noaux_tc"
    int first_k_dense;            // first_k_dense_replace: layers below are dense
    int moe_layer_freq;           // every n-th layer from first_k_dense is MoE (1)
    int intermediate;             // intermediate_size of dense layers
    int moe_intermediate;         // moe_intermediate_size of each routed expert
    double rms_norm_eps;          // RMSNorm epsilon (1e-6)
    double rope_theta;            // RoPE base (10000)
    bool rope_interleave;         // rope dims stored as interleaved pairs (transformers default true)
    struct lwb_rope_scaling rope; // YaRN settings (rope_scaling)
    int max_pos;                  // max_position_embeddings
    int num_layers;               // num_hidden_layers
    int vocab;                    // vocab_size, 0 when absent (no layer needs it)
    int scaled_from;              // --scaled-from applied (0: not)
    int scaled_ranks;             // ranks it was applied for
    int n_experts_full;           // n_routed_experts of the checkpoint
    int heads_full;               // num_attention_heads of the checkpoint
    int index_heads;              // index_n_heads: the sparse-attention indexer's heads (64); 0: no indexer
    int index_dim;                // index_head_dim (128)
    int index_topk;               // index_topk: keys each query attends to (2048)
    int kv_heads_full;            // num_key_value_heads of the checkpoint
    // Hybrid families (nemotron_h, qwen3_next; model_is_hybrid): every field above that names the
    // same thing is filled (hidden, heads, kv_heads, experts, top_k, routing, norms, RoPE base).
    char *pattern;                // num_layers letters, one per layer (model_layer_kind); NULL: DeepSeek
    int head_dim;                 // attention head_dim (128 Nemotron-H, 256 Qwen3-Next)
    int rope_dim;                 // rotary dims at the start of each head; 0: no positional encoding
    bool attn_gate;               // Qwen3-Next: q_proj gives [query | gate] per head, output * sigmoid(gate)
    bool qk_norm;                 // Qwen3-Next: per-head RMSNorm (1 + w) on q and k
    bool gemma_norm;              // RMSNorm weights are offsets from 1 (Qwen3-Next's (1 + w) x)
    int mamba_heads;              // Mamba2: mamba_num_heads (64)
    int mamba_head_dim;           // mamba_head_dim (64)
    int ssm_groups;               // n_groups (8): heads per group share B and C
    int ssm_state;                // ssm_state_size (128)
    int conv_kernel;              // conv_kernel / linear_conv_kernel_dim (4)
    bool conv_bias;               // use_conv_bias
    int ssm_chunk;                // chunk_size of the chunked scan (128; Qwen3-Next's delta rule: 64)
    int lin_k_heads, lin_v_heads; // Gated DeltaNet: linear_num_key_heads (16), linear_num_value_heads (32)
    int lin_k_dim, lin_v_dim;     // linear_key_head_dim, linear_value_head_dim (128, 128)
    int shared_intermediate;      // the shared expert's width (3712 Nemotron-H, 512 Qwen3-Next)
    bool shared_gate;             // Qwen3-Next: the shared expert's output times sigmoid(x . w)
    char mlp_act[16];             // experts' activation: "relu2" (non-gated) or "silu" (SwiGLU)
    char ssm_cache_dtype[16];     // the recurrent state's dtype by default ("float32", "bfloat16")
    json_t *config;               // the parsed config.json (owned)
};

// What one layer of a hybrid model is (model->pattern's letters).
enum {
    LWB_LAYER_MAMBA = 'M',     // Nemotron-H: Mamba2 mixer
    LWB_LAYER_ATTN = '*',      // Nemotron-H: attention
    LWB_LAYER_MOE = 'E',       // Nemotron-H: MoE
    LWB_LAYER_MLP = '-',       // Nemotron-H: dense MLP
    LWB_LAYER_LINEAR = 'L',    // Qwen3-Next: Gated DeltaNet, then MoE
    LWB_LAYER_FULL = 'A',      // Qwen3-Next: gated attention, then MoE
};

// One tensor of a layer, as a checkpoint names and shapes it.
struct lwb_weight {
    char name[96];     // "model.layers.5.mlp.experts.17.gate_proj.weight"
    const char *dtype; // "BF16" or "F32" (safetensors spelling)
    int ndim;          // 1 or 2
    int64_t shape[2];  // rows, cols (PyTorch Linear: [out, in])
    uint64_t bytes;    // rows x cols x element size
    int expert;        // routed expert index, -1 for every other tensor
};

// ---------------------------------------------------------------------------------------------
// Presets

struct lwb_preset {
    const char *name;    // "deepseek-ai/DeepSeek-R1"
    const char *path;    // embedded path "configs/models/deepseek-ai__DeepSeek-R1.json"
    char model_type[32]; // its config's model_type
    bool supported;      // model_load accepts it
};

static bool model_type_hybrid(const char *t) { return !strcmp(t, "nemotron_h") || !strcmp(t, "qwen3_next"); }
// model_type values lwb builds layers of (--list-models marks their presets).
static bool model_type_supported(const char *t) {
    return !strcmp(t, "deepseek_v3") || !strcmp(t, "deepseek_v32") || model_type_hybrid(t);
}
static bool model_is_hybrid(const struct lwb_model *m) { return m->pattern != NULL; }

// The built-in presets, sorted by name (built once; lives for the process).
static const struct lwb_preset *model_presets(int *n) {
    static struct lwb_preset *list;
    static int count = -1;
    if (count < 0) {
        count = 0;
        size_t cap = 0;
        const size_t plen = strlen(LWB_MODEL_PRESET_DIR);
        for (size_t i = 0; i < LWB_EMBEDDED_COUNT; i++) {
            const char *p = lwb_embedded_files[i].path;
            if (!str_starts(p, LWB_MODEL_PRESET_DIR) || !str_ends(p, ".json")) continue;
            struct lwb_preset pr = {.path = p};
            char *name = xstrndup(p + plen, strlen(p) - plen - 5);
            char *sep = strstr(name, "__");
            if (sep) memmove(sep + 1, sep + 2, strlen(sep + 2) + 1), *sep = '/';
            pr.name = name;
            json_t *j = json_loads(lwb_embedded_files[i].data, 0, NULL);
            const char *t = j ? json_string_value(json_object_get(j, "model_type")) : NULL;
            snprintf(pr.model_type, sizeof pr.model_type, "%s", t ? t : "?");
            pr.supported = model_type_supported(pr.model_type);
            json_decref(j);
            LWB_PUSH(list, count, cap, pr);
        }
        for (int i = 1; i < count; i++) // few entries: insertion sort
            for (int j = i; j > 0 && strcmp(list[j - 1].name, list[j].name) > 0; j--) {
                struct lwb_preset t = list[j];
                list[j] = list[j - 1], list[j - 1] = t;
            }
    }
    *n = count;
    return list;
}

static const struct lwb_preset *model_preset_find(const char *name) {
    int n;
    const struct lwb_preset *p = model_presets(&n);
    for (int i = 0; i < n; i++)
        if (!strcmp(p[i].name, name)) return &p[i];
    return NULL;
}

// The preset a mistyped name most likely meant, or NULL. Tries the whole name, then the part
// after the organisation ("DeepSeek-R1" -> "deepseek-ai/DeepSeek-R1").
static const char *model_preset_nearest(const char *name) {
    int n;
    const struct lwb_preset *p = model_presets(&n);
    const char **full = xcalloc((size_t)n, sizeof *full), **tail = xcalloc((size_t)n, sizeof *tail);
    for (int i = 0; i < n; i++) {
        full[i] = p[i].name;
        const char *s = strchr(p[i].name, '/');
        tail[i] = s ? s + 1 : p[i].name;
    }
    const char *near = lwb_nearest(name, full, (size_t)n);
    if (!near) {
        const char *s = strrchr(name, '/');
        const char *t = lwb_nearest(s ? s + 1 : name, tail, (size_t)n);
        for (int i = 0; t && i < n; i++)
            if (tail[i] == t) near = full[i];
    }
    free(full), free(tail);
    return near;
}

// ---------------------------------------------------------------------------------------------
// Reading config.json

struct model_reader {
    struct lwb_model *m;
    json_t *root;       // the object fields are read from (the config, or rope_scaling)
    const char *prefix; // "" or "rope_scaling." for messages
    const char *fix;    // how to fix it; NULL: edit config.json
};

LWB_PRINTF(3, 4)
__attribute__((noreturn)) static void model_error(const struct model_reader *r, const char *field,
                                                  const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *fix = r->fix            ? r->fix
                      : r->m->is_preset ? "(a built-in preset: please report this)"
                                        : "fix it in config.json";
    lwb_user_error("%s: '%s%s' %s; %s", r->m->source, r->prefix, field, msg, fix);
}

static const char *json_type_text(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

// The value of `key`, or NULL when absent (or null and `null_ok`). `example` completes the
// message for a missing key ("7168 in DeepSeek-V3").
static json_t *mr_get(const struct model_reader *r, const char *key, bool required, const char *example) {
    json_t *v = json_object_get(r->root, key);
    if (v && json_is_null(v) && !required) return NULL;
    const char *t = r->m->model_type;
    const char *family = !strcmp(t, "nemotron_h") ? "Nemotron-H" : !strcmp(t, "qwen3_next") ? "Qwen3-Next" : "DeepSeek-V3";
    if (!v && required)
        model_error(r, key, "is missing (a %s config.json has it%s%s)", family, example ? ": " : "",
                    example ? example : "");
    if (v && json_is_null(v))
        model_error(r, key, "is null; lwb needs a value here (%s%s)", example ? "" : "see ", example ? example : family);
    return v;
}

// An integer from `min` to `max` (the field's range: well beyond any real model, small enough
// that products of fields fit in 64 bits). Absent and not required: `dflt`.
static int mr_int(const struct model_reader *r, const char *key, bool required, int dflt, int min, int max,
                  const char *example) {
    json_t *v = mr_get(r, key, required, example);
    if (!v) return dflt;
    if (!json_is_integer(v)) model_error(r, key, "must be an integer (got %s)", json_type_text(v));
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        model_error(r, key, "is %" JSON_INTEGER_FORMAT ", out of range; give an integer from %d to %d", x, min, max);
    return (int)x;
}

// A number (integer or real); `positive`: > 0, else >= 0.
static double mr_num(const struct model_reader *r, const char *key, bool required, double dflt, bool positive,
                     const char *example) {
    json_t *v = mr_get(r, key, required, example);
    if (!v) return dflt;
    if (!json_is_number(v)) model_error(r, key, "must be a number (got %s)", json_type_text(v));
    double x = json_number_value(v);
    if (!isfinite(x) || (positive ? !(x > 0) : !(x >= 0)))
        model_error(r, key, "must be a %s number (got %g)", positive ? "positive" : "non-negative", x);
    return x;
}

static bool mr_bool(const struct model_reader *r, const char *key, bool required, bool dflt,
                    const char *example) {
    json_t *v = mr_get(r, key, required, example);
    if (!v) return dflt;
    if (!json_is_boolean(v)) model_error(r, key, "must be true or false (got %s)", json_type_text(v));
    return json_is_true(v);
}

static void mr_str(const struct model_reader *r, const char *key, bool required, const char *dflt, char *out,
                   size_t n, const char *example) {
    json_t *v = mr_get(r, key, required, example);
    if (!v) {
        snprintf(out, n, "%s", dflt);
        return;
    }
    if (!json_is_string(v)) model_error(r, key, "must be a string (got %s)", json_type_text(v));
    if (json_string_length(v) >= n)
        model_error(r, key, "is too long (%zu characters)", json_string_length(v));
    snprintf(out, n, "%s", json_string_value(v));
}

// The checkpoint's storage format, from quantization_config (config.json) or, for ModelOpt
// checkpoints that keep it apart, hf_quant_config.json beside it (`hfq`, may be NULL).
static void model_read_quant(struct lwb_model *m, json_t *hfq) {
    struct model_reader r = {m, m->config, ""};
    json_t *q = json_object_get(m->config, "quantization_config");
    if (q && !json_is_null(q) && !json_is_object(q))
        model_error(&r, "quantization_config", "must be an object (got %s)", json_type_text(q));
    if (q && json_is_null(q)) q = NULL;
    const char *method = q ? json_string_value(json_object_get(q, "quant_method")) : NULL;
    const char *algo = q ? json_string_value(json_object_get(q, "quant_algo")) : NULL;
    if (!q && hfq) { // hf_quant_config.json: {"quantization": {"quant_algo": "NVFP4", ...}}
        json_t *hq = json_object_get(hfq, "quantization");
        algo = json_string_value(json_object_get(hq, "quant_algo"));
        if (algo) method = "modelopt", q = hq;
    }
    if (q) {
        m->ckpt = LWB_CKPT_OTHER;
        if (method && !strcmp(method, "fp8")) {
            json_t *bs = json_object_get(q, "weight_block_size");
            const char *fmt = json_string_value(json_object_get(q, "fmt"));
            m->ckpt = LWB_CKPT_FP8_OTHER;
            if (json_array_size(bs) == 2) {
                json_int_t br = json_integer_value(json_array_get(bs, 0)), bc = json_integer_value(json_array_get(bs, 1));
                snprintf(m->checkpoint_format, sizeof m->checkpoint_format,
                         "FP8 (%" JSON_INTEGER_FORMAT "x%" JSON_INTEGER_FORMAT " blocks)", br, bc);
                if (br == 128 && bc == 128 && (!fmt || !strcmp(fmt, "e4m3"))) m->ckpt = LWB_CKPT_FP8_BLOCK;
            } else {
                snprintf(m->checkpoint_format, sizeof m->checkpoint_format, "FP8");
            }
        } else if (algo) {
            if (!strcmp(algo, "NVFP4")) m->ckpt = LWB_CKPT_NVFP4;
            json_t *gs = json_object_get(q, "group_size");
            if (json_is_integer(gs))
                snprintf(m->checkpoint_format, sizeof m->checkpoint_format,
                         "%s (groups of %" JSON_INTEGER_FORMAT ")", algo, json_integer_value(gs));
            else snprintf(m->checkpoint_format, sizeof m->checkpoint_format, "%s", algo);
        } else {
            snprintf(m->checkpoint_format, sizeof m->checkpoint_format, "%s", method ? method : "quantized");
        }
        m->runs_in_bf16 = true;
    } else if (strcmp(m->torch_dtype, "bfloat16")) {
        snprintf(m->checkpoint_format, sizeof m->checkpoint_format, "%s", m->torch_dtype);
        m->runs_in_bf16 = true;
        m->ckpt = LWB_CKPT_OTHER;
    } else {
        snprintf(m->checkpoint_format, sizeof m->checkpoint_format, "bf16");
        m->ckpt = LWB_CKPT_BF16;
    }
}

static void model_read_rope_scaling(struct lwb_model *m) {
    struct model_reader top = {m, m->config, ""};
    json_t *rs = json_object_get(m->config, "rope_scaling");
    m->rope = (struct lwb_rope_scaling){0};
    if (!rs || json_is_null(rs)) return;
    if (!json_is_object(rs))
        model_error(&top, "rope_scaling", "must be an object or null (got %s)", json_type_text(rs));
    struct model_reader r = {m, rs, "rope_scaling."};
    json_t *t = json_object_get(rs, "type");
    if (!t) t = json_object_get(rs, "rope_type");
    if (!json_is_string(t)) model_error(&r, "type", "must name the scaling (\"yarn\" for DeepSeek-V3)");
    if (strcmp(json_string_value(t), "yarn"))
        model_error(&r, "type", "is \"%s\": only \"yarn\" RoPE scaling is supported yet",
                    json_string_value(t));
    m->rope.yarn = true;
    m->rope.factor = mr_num(&r, "factor", true, 1, true, "40");
    m->rope.original_max_pos = mr_int(&r, "original_max_position_embeddings", true, 0, 1, 1073741824, "4096");
    m->rope.beta_fast = mr_num(&r, "beta_fast", false, 32, true, "32");
    m->rope.beta_slow = mr_num(&r, "beta_slow", false, 1, true, "1");
    m->rope.mscale = mr_num(&r, "mscale", false, 0, false, "1.0");
    m->rope.mscale_all_dim = mr_num(&r, "mscale_all_dim", false, 0, false, "1.0");
    m->rope.truncate = mr_bool(&r, "truncate", false, true, NULL);
    if (m->rope.beta_slow > m->rope.beta_fast)
        model_error(&r, "beta_slow", "(%g) is larger than beta_fast (%g); YaRN needs beta_slow <= beta_fast",
                    m->rope.beta_slow, m->rope.beta_fast);
}

// Relations between fields. `after` prefixes messages about a config changed by --scaled-from.
static void model_check_relations(struct lwb_model *m, const char *after) {
    struct model_reader r = {m, m->config, "",
                             after ? "give a smaller --scaled-from or run on more ranks" : NULL};
    const char *a = after ? after : "";
    if (m->n_experts % m->n_group)
        model_error(&r, "n_routed_experts",
                    "(%d%s) is not a multiple of 'n_group' (%d): experts form equal groups", m->n_experts, a,
                    m->n_group);
    if (m->topk_group > m->n_group)
        model_error(&r, "topk_group", "(%d) is larger than 'n_group' (%d); it must be at most n_group",
                    m->topk_group, m->n_group);
    if (m->top_k > m->n_experts)
        model_error(&r, "num_experts_per_tok", "(%d) is larger than 'n_routed_experts' (%d%s)", m->top_k,
                    m->n_experts, a);
    int per_group = m->n_experts / m->n_group;
    if (per_group < 2)
        model_error(&r, "n_group",
                    "(%d) leaves %d expert%s per group (n_routed_experts %d%s); DeepSeek routing "
                    "ranks groups by their top-2 scores, so each group needs at least 2",
                    m->n_group, per_group, per_group == 1 ? "" : "s", m->n_experts, a);
    if (m->top_k > m->topk_group * per_group)
        model_error(&r, "num_experts_per_tok",
                    "(%d) is more than the experts in 'topk_group' groups (%d x %d%s)", m->top_k,
                    m->topk_group, per_group, a);
    if (m->kv_heads > m->heads)
        model_error(&r, "num_key_value_heads", "(%d) is larger than 'num_attention_heads' (%d%s)",
                    m->kv_heads, m->heads, a);
}

// Nemotron-H's hybrid_override_pattern: one letter per layer (M, *, E, -).
static void model_read_nemotron_pattern(struct lwb_model *m, struct model_reader *r) {
    char pat[4096];
    mr_str(r, "hybrid_override_pattern", true, "", pat, sizeof pat, "\"MEMEM*E...\", one letter per layer");
    if ((int)strlen(pat) != m->num_layers)
        model_error(r, "hybrid_override_pattern", "has %zu letters but 'num_hidden_layers' is %d; give one letter "
                    "per layer", strlen(pat), m->num_layers);
    for (int i = 0; pat[i]; i++)
        if (!strchr("ME*-", pat[i]))
            model_error(r, "hybrid_override_pattern", "has '%c' at layer %d; the letters are M (Mamba2), * "
                        "(attention), E (MoE) and - (MLP)", pat[i], i);
    m->pattern = xstrdup(pat);
}

// Qwen3-Next's layer_types (or, when absent, full attention every full_attention_interval-th layer).
static void model_read_qwen3_next_pattern(struct lwb_model *m, struct model_reader *r) {
    m->pattern = xcalloc((size_t)m->num_layers + 1, 1);
    json_t *types = json_object_get(m->config, "layer_types");
    if (types && !json_is_null(types)) {
        if (!json_is_array(types) || (int)json_array_size(types) != m->num_layers)
            model_error(r, "layer_types", "must be a list of %d entries (one per layer)", m->num_layers);
        for (int i = 0; i < m->num_layers; i++) {
            const char *t = json_string_value(json_array_get(types, (size_t)i));
            if (t && !strcmp(t, "linear_attention")) m->pattern[i] = LWB_LAYER_LINEAR;
            else if (t && !strcmp(t, "full_attention")) m->pattern[i] = LWB_LAYER_FULL;
            else
                model_error(r, "layer_types", "entry %d is %s%s%s; give \"linear_attention\" or \"full_attention\"",
                            i, t ? "\"" : "", t ? t : "not a string", t ? "\"" : "");
        }
        return;
    }
    int every = mr_int(r, "full_attention_interval", true, 0, 1, 100000, "4");
    for (int i = 0; i < m->num_layers; i++) m->pattern[i] = (i + 1) % every ? LWB_LAYER_LINEAR : LWB_LAYER_FULL;
}

// The fields both hybrid families share with the others, then each family's mixer.
static void model_parse_hybrid(struct lwb_model *m, struct model_reader *r, json_t *hfq) {
    const bool nemo = !strcmp(m->model_type, "nemotron_h");
    m->hidden = mr_int(r, "hidden_size", true, 0, 1, 65536, nemo ? "2688" : "2048");
    m->num_layers = mr_int(r, "num_hidden_layers", true, 0, 1, 100000, nemo ? "52" : "48");
    m->heads = mr_int(r, "num_attention_heads", true, 0, 1, 1024, nemo ? "32" : "16");
    m->kv_heads = mr_int(r, "num_key_value_heads", true, 0, 1, 1024, "2");
    if (m->heads % m->kv_heads)
        model_error(r, "num_key_value_heads", "(%d) does not divide 'num_attention_heads' (%d): each key/value "
                    "head serves a whole group of query heads", m->kv_heads, m->heads);
    m->head_dim = mr_int(r, "head_dim", false, m->hidden / m->heads, 1, 4096, NULL);
    if (m->head_dim != 128 && m->head_dim != 256)
        model_error(r, "head_dim", "is %d; lwb's attention kernels take head dims 128 and 256", m->head_dim);
    if (mr_bool(r, "attention_bias", false, false, NULL))
        model_error(r, "attention_bias", "is true; lwb builds attention projections without bias (give false)");
    m->rope_theta = mr_num(r, "rope_theta", false, 10000, true, NULL);
    m->max_pos = mr_int(r, "max_position_embeddings", false, 262144, 1, 1073741824, NULL);
    m->vocab = mr_int(r, "vocab_size", false, 0, 1, 1073741824, NULL);
    mr_str(r, "torch_dtype", false, "bfloat16", m->torch_dtype, sizeof m->torch_dtype, NULL);
    m->top_k = mr_int(r, "num_experts_per_tok", true, 0, 1, 64, nemo ? "6" : "10");
    m->norm_topk_prob = mr_bool(r, "norm_topk_prob", false, true, NULL);
    m->moe_intermediate = mr_int(r, "moe_intermediate_size", true, 0, 1, 1048576, nemo ? "1856" : "512");
    m->intermediate = mr_int(r, "intermediate_size", false, m->moe_intermediate, 1, 1048576, NULL);
    m->moe_layer_freq = 1;
    if (nemo) {
        m->rms_norm_eps = mr_num(r, "layer_norm_epsilon", false, mr_num(r, "norm_eps", false, 1e-5, true, NULL), true,
                                 NULL);
        model_read_nemotron_pattern(m, r);
        // Nemotron-H's attention has no positional encoding (transformers' NemotronHAttention and
        // TensorRT-LLM's build it without RoPE), whatever partial_rotary_factor says.
        m->rope_dim = 0;
        m->mamba_heads = mr_int(r, "mamba_num_heads", true, 0, 1, 4096, "64");
        m->mamba_head_dim = mr_int(r, "mamba_head_dim", true, 0, 1, 4096, "64");
        m->ssm_groups = mr_int(r, "n_groups", true, 0, 1, 4096, "8");
        m->ssm_state = mr_int(r, "ssm_state_size", true, 0, 1, 4096, "128");
        m->conv_kernel = mr_int(r, "conv_kernel", true, 0, 1, 64, "4");
        m->conv_bias = mr_bool(r, "use_conv_bias", false, true, NULL);
        m->ssm_chunk = mr_int(r, "chunk_size", true, 0, 1, 4096, "128");
        if (m->mamba_heads % m->ssm_groups)
            model_error(r, "n_groups", "(%d) does not divide 'mamba_num_heads' (%d)", m->ssm_groups, m->mamba_heads);
        char act[32];
        mr_str(r, "mamba_hidden_act", false, "silu", act, sizeof act, NULL);
        if (strcmp(act, "silu"))
            model_error(r, "mamba_hidden_act", "is \"%s\"; lwb's Mamba2 convolution applies silu", act);
        if (mr_bool(r, "mamba_proj_bias", false, false, NULL) || mr_bool(r, "use_bias", false, false, NULL))
            model_error(r, "mamba_proj_bias", "(or 'use_bias') is true; lwb builds the Mamba2 projections without bias");
        mr_str(r, "mamba_ssm_cache_dtype", false, "float32", m->ssm_cache_dtype, sizeof m->ssm_cache_dtype, NULL);
        m->n_experts = mr_int(r, "n_routed_experts", true, 0, 1, 4096, "128");
        m->n_shared_experts = mr_int(r, "n_shared_experts", false, 1, 0, 1, NULL);
        m->shared_intermediate =
            m->n_shared_experts ? mr_int(r, "moe_shared_expert_intermediate_size", true, 0, 1, 1048576, "3712") : 0;
        m->n_group = mr_int(r, "n_group", false, 1, 1, 4096, NULL);
        m->topk_group = mr_int(r, "topk_group", false, 1, 1, 4096, NULL);
        m->routed_scaling_factor = mr_num(r, "routed_scaling_factor", false, 1.0, true, NULL);
        snprintf(m->scoring_func, sizeof m->scoring_func, "sigmoid");
        snprintf(m->topk_method, sizeof m->topk_method, "noaux_tc");
        mr_str(r, "mlp_hidden_act", false, "relu2", m->mlp_act, sizeof m->mlp_act, NULL);
        if (strcmp(m->mlp_act, "relu2"))
            model_error(r, "mlp_hidden_act", "is \"%s\"; lwb builds Nemotron-H's non-gated relu2 experts", m->mlp_act);
        if (mr_bool(r, "mlp_bias", false, false, NULL))
            model_error(r, "mlp_bias", "is true; lwb builds the experts without bias");
        if (json_object_get(m->config, "moe_latent_size") && !json_is_null(json_object_get(m->config, "moe_latent_size")))
            model_error(r, "moe_latent_size", "is set; lwb builds MoE without a latent projection (give null)");
    } else {
        m->rms_norm_eps = mr_num(r, "rms_norm_eps", false, 1e-6, true, NULL);
        m->gemma_norm = m->qk_norm = m->attn_gate = true;
        model_read_qwen3_next_pattern(m, r);
        double frac = mr_num(r, "partial_rotary_factor", false, 1.0, true, NULL);
        m->rope_dim = (int)(frac * m->head_dim + 0.5);
        if (m->rope_dim % 2 || m->rope_dim > m->head_dim || m->rope_dim < 2)
            model_error(r, "partial_rotary_factor", "(%g) gives %d rotary dims of %d; they must be an even count", frac,
                        m->rope_dim, m->head_dim);
        json_t *rs = json_object_get(m->config, "rope_scaling");
        if (rs && !json_is_null(rs))
            model_error(r, "rope_scaling", "is set; lwb builds Qwen3-Next's attention with plain RoPE (give null)");
        m->lin_k_heads = mr_int(r, "linear_num_key_heads", true, 0, 1, 4096, "16");
        m->lin_v_heads = mr_int(r, "linear_num_value_heads", true, 0, 1, 4096, "32");
        m->lin_k_dim = mr_int(r, "linear_key_head_dim", true, 0, 1, 4096, "128");
        m->lin_v_dim = mr_int(r, "linear_value_head_dim", true, 0, 1, 4096, "128");
        m->conv_kernel = mr_int(r, "linear_conv_kernel_dim", true, 0, 1, 64, "4");
        m->ssm_chunk = 64;
        if (m->lin_v_heads % m->lin_k_heads)
            model_error(r, "linear_num_value_heads", "(%d) is not a multiple of 'linear_num_key_heads' (%d)",
                        m->lin_v_heads, m->lin_k_heads);
        snprintf(m->ssm_cache_dtype, sizeof m->ssm_cache_dtype, "%s", m->torch_dtype);
        m->n_experts = mr_int(r, "num_experts", true, 0, 1, 4096, "512");
        m->shared_intermediate = mr_int(r, "shared_expert_intermediate_size", false, 0, 0, 1048576, NULL);
        m->n_shared_experts = m->shared_intermediate > 0;
        m->shared_gate = m->n_shared_experts;
        m->n_group = m->topk_group = 1;
        m->routed_scaling_factor = 1.0;
        snprintf(m->scoring_func, sizeof m->scoring_func, "softmax");
        snprintf(m->topk_method, sizeof m->topk_method, "greedy");
        char act[16];
        mr_str(r, "hidden_act", false, "silu", act, sizeof act, NULL);
        if (strcmp(act, "silu")) model_error(r, "hidden_act", "is \"%s\"; lwb builds SwiGLU experts (silu)", act);
        snprintf(m->mlp_act, sizeof m->mlp_act, "silu");
        if (mr_int(r, "decoder_sparse_step", false, 1, 1, 100000, NULL) != 1)
            model_error(r, "decoder_sparse_step", "is not 1; lwb builds Qwen3-Next with MoE in every layer");
        json_t *only = json_object_get(m->config, "mlp_only_layers");
        if (only && !json_is_null(only) && (!json_is_array(only) || json_array_size(only)))
            model_error(r, "mlp_only_layers", "is not empty; lwb builds Qwen3-Next with MoE in every layer");
    }
    if (strcmp(m->ssm_cache_dtype, "float32") && strcmp(m->ssm_cache_dtype, "float16") &&
        strcmp(m->ssm_cache_dtype, "bfloat16"))
        model_error(r, nemo ? "mamba_ssm_cache_dtype" : "torch_dtype", "is \"%s\"; give float32, float16 or bfloat16",
                    m->ssm_cache_dtype);
    if (m->top_k > m->n_experts)
        model_error(r, "num_experts_per_tok", "(%d) is larger than the routed experts (%d)", m->top_k, m->n_experts);
    if (m->n_experts % m->n_group || m->topk_group > m->n_group)
        model_error(r, "n_group", "(%d, topk_group %d) does not split the %d experts into groups", m->n_group,
                    m->topk_group, m->n_experts);
    model_read_quant(m, hfq);
    m->n_experts_full = m->n_experts;
    m->heads_full = m->heads;
    m->kv_heads_full = m->kv_heads;
}

static void model_parse(struct lwb_model *m, json_t *hfq) {
    struct model_reader r = {m, m->config, ""};
    if (!json_is_object(m->config))
        lwb_user_error("%s: must be a JSON object of model settings (got %s)", m->source,
                       json_type_text(m->config));
    mr_str(&r, "model_type", true, "", m->model_type, sizeof m->model_type, "\"deepseek_v3\"");
    json_t *arch = json_object_get(m->config, "architectures");
    if (json_is_array(arch) && json_is_string(json_array_get(arch, 0)))
        snprintf(m->architecture, sizeof m->architecture, "%s", json_string_value(json_array_get(arch, 0)));
    if (!model_type_supported(m->model_type))
        lwb_user_error("%s: model_type '%s'%s%s%s is not supported yet; lwb builds deepseek_v3, "
                       "deepseek_v32, nemotron_h and qwen3_next layers (DeepSeek-V3, R1, V3.2, Nemotron-H, Qwen3-Next: "
                       "lwb run --list-models)",
                       m->source, m->model_type, m->architecture[0] ? " (" : "", m->architecture,
                       m->architecture[0] ? ")" : "");
    if (model_type_hybrid(m->model_type)) {
        model_parse_hybrid(m, &r, hfq);
        return;
    }
    mr_str(&r, "torch_dtype", false, "bfloat16", m->torch_dtype, sizeof m->torch_dtype, NULL);

    m->hidden = mr_int(&r, "hidden_size", true, 0, 1, 65536, "7168");
    m->heads = mr_int(&r, "num_attention_heads", true, 0, 1, 1024, "128");
    m->kv_heads = mr_int(&r, "num_key_value_heads", false, m->heads, 1, 1024, "128");
    json_t *ql = json_object_get(m->config, "q_lora_rank");
    if (ql && json_is_null(ql))
        model_error(&r, "q_lora_rank",
                    "is null (a model without a q LoRA, like DeepSeek-V2-Lite); lwb "
                    "builds only q_lora_rank > 0 for now");
    m->q_lora_rank = mr_int(&r, "q_lora_rank", true, 0, 1, 65536, "1536");
    m->kv_lora_rank = mr_int(&r, "kv_lora_rank", true, 0, 1, 65536, "512");
    m->qk_nope_dim = mr_int(&r, "qk_nope_head_dim", true, 0, 1, 1024, "128");
    m->qk_rope_dim = mr_int(&r, "qk_rope_head_dim", true, 0, 1, 1024, "64");
    m->v_head_dim = mr_int(&r, "v_head_dim", true, 0, 1, 1024, "128");
    if (m->qk_rope_dim % 2)
        model_error(&r, "qk_rope_head_dim", "(%d) must be even: RoPE rotates pairs of dimensions",
                    m->qk_rope_dim);
    int qk = m->qk_nope_dim + m->qk_rope_dim;
    int given = mr_int(&r, "qk_head_dim", false, qk, 1, 2048, NULL);
    if (given != qk)
        model_error(&r, "qk_head_dim", "(%d) is not qk_nope_head_dim + qk_rope_head_dim (%d + %d = %d)",
                    given, m->qk_nope_dim, m->qk_rope_dim, qk);
    // transformers writes head_dim = qk_rope_head_dim for DeepSeek-V3; some tools write the full
    // q head dim. Anything else contradicts the other two.
    int head_dim = mr_int(&r, "head_dim", false, m->qk_rope_dim, 1, 2048, NULL);
    if (head_dim != m->qk_rope_dim && head_dim != qk)
        model_error(&r, "head_dim",
                    "(%d) is neither qk_rope_head_dim (%d) nor qk_nope_head_dim + "
                    "qk_rope_head_dim (%d)",
                    head_dim, m->qk_rope_dim, qk);

    m->n_experts = mr_int(&r, "n_routed_experts", true, 0, 1, 4096, "256");
    m->n_shared_experts = mr_int(&r, "n_shared_experts", true, 0, 0, 64, "1");
    m->top_k = mr_int(&r, "num_experts_per_tok", true, 0, 1, 64, "8");
    m->n_group = mr_int(&r, "n_group", true, 0, 1, 4096, "8");
    m->topk_group = mr_int(&r, "topk_group", true, 0, 1, 4096, "4");
    m->routed_scaling_factor = mr_num(&r, "routed_scaling_factor", true, 0, true, "2.5");
    m->norm_topk_prob = mr_bool(&r, "norm_topk_prob", true, true, "true");
    mr_str(&r, "scoring_func", false, "sigmoid", m->scoring_func, sizeof m->scoring_func, NULL);
    if (strcmp(m->scoring_func, "sigmoid"))
        model_error(&r, "scoring_func", "is \"%s\": only \"sigmoid\" (DeepSeek-V3 routing) is supported yet",
                    m->scoring_func);
    mr_str(&r, "topk_method", false, "noaux_tc", m->topk_method, sizeof m->topk_method, NULL);
    if (strcmp(m->topk_method, "noaux_tc"))
        model_error(&r, "topk_method", "is \"%s\": only \"noaux_tc\" (DeepSeek-V3 routing) is supported yet",
                    m->topk_method);
    m->first_k_dense = mr_int(&r, "first_k_dense_replace", true, 0, 0, 100000, "3");
    m->moe_layer_freq = mr_int(&r, "moe_layer_freq", false, 1, 1, 100000, "1");
    m->intermediate = mr_int(&r, "intermediate_size", true, 0, 1, 1048576, "18432");
    m->moe_intermediate = mr_int(&r, "moe_intermediate_size", true, 0, 1, 1048576, "2048");
    m->rms_norm_eps = mr_num(&r, "rms_norm_eps", true, 0, true, "1e-06");
    m->rope_theta = mr_num(&r, "rope_theta", true, 0, true, "10000");
    m->rope_interleave = mr_bool(&r, "rope_interleave", false, true, NULL);
    m->max_pos = mr_int(&r, "max_position_embeddings", true, 0, 1, 1073741824, "163840");
    m->num_layers = mr_int(&r, "num_hidden_layers", true, 0, 1, 100000, "61");
    m->vocab = mr_int(&r, "vocab_size", false, 0, 1, 1073741824, NULL);
    model_read_rope_scaling(m);
    if (!strcmp(m->model_type, "deepseek_v32")) {
        // The kernels' shapes: one 128-wide fp8 key per token, 64 heads per query token, selections
        // in 64-token tiles.
        m->index_heads = mr_int(&r, "index_n_heads", true, 0, 1, 1024, "64");
        m->index_dim = mr_int(&r, "index_head_dim", true, 0, 1, 4096, "128");
        m->index_topk = mr_int(&r, "index_topk", true, 0, 1, 1 << 20, "2048");
        if (m->index_heads != 64)
            model_error(&r, "index_n_heads", "(%d): lwb's indexer kernels score 64 heads per query token "
                        "(DeepSeek-V3.2's); give 64", m->index_heads);
        if (m->index_dim != 128)
            model_error(&r, "index_head_dim", "(%d): lwb's indexer keys are one 128-wide fp8 block "
                        "(DeepSeek-V3.2's); give 128", m->index_dim);
        if (m->index_topk % 64 || m->index_topk > 16384)
            model_error(&r, "index_topk", "(%d) must be a multiple of 64, at most 16384 (DeepSeek-V3.2: 2048)",
                        m->index_topk);
        if (m->qk_rope_dim > m->index_dim)
            model_error(&r, "qk_rope_head_dim", "(%d) is wider than 'index_head_dim' (%d): the indexer ropes its "
                        "first qk_rope_head_dim dimensions", m->qk_rope_dim, m->index_dim);
    }
    if (m->first_k_dense > m->num_layers)
        model_error(&r, "first_k_dense_replace", "(%d) is more than 'num_hidden_layers' (%d)",
                    m->first_k_dense, m->num_layers);
    model_check_relations(m, NULL);
    model_read_quant(m, hfq);
    m->n_experts_full = m->n_experts;
    m->heads_full = m->heads;
    m->kv_heads_full = m->kv_heads;
}

static json_t *model_parse_text(const char *source, const char *text) {
    json_error_t e;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (!j) lwb_user_error("%s:%d:%d: not valid JSON: %s", source, e.line, e.column, e.text);
    return j;
}

// Load `model_arg` (a directory with config.json, a config .json file, or a preset name) into
// `m`. Exits with one line when it is none of these or the config is unusable.
static void model_load(const char *model_arg, struct lwb_model *m) {
    *m = (struct lwb_model){0};
    snprintf(m->name, sizeof m->name, "%s", model_arg);
    struct stat st;
    json_t *hfq = NULL;
    const struct lwb_preset *pr;
    if (*model_arg && stat(model_arg, &st) == 0 && S_ISDIR(st.st_mode)) {
        char *path = lwb_path_join(model_arg, "config.json");
        snprintf(m->source, sizeof m->source, "%s", path);
        char why[512];
        if (access(path, F_OK) != 0 && errno == ENOENT)
            lwb_user_error("--model %s: the directory has no config.json; give a directory holding a Hugging "
                           "Face config.json or a preset name (lwb run --list-models)",
                           model_arg);
        char *text = input_read(path, LWB_IN_MODEL, NULL, why, sizeof why);
        if (!text) lwb_user_error("--model %s: %s: %s", model_arg, path, why);
        free(path);
        m->config = model_parse_text(m->source, text);
        free(text);
        char *qpath = lwb_path_join(model_arg, "hf_quant_config.json");
        if (access(qpath, F_OK) == 0) {
            char *qtext = input_read(qpath, LWB_IN_MODEL, NULL, why, sizeof why);
            if (!qtext) lwb_user_error("--model %s: %s: %s", model_arg, qpath, why);
            hfq = model_parse_text(qpath, qtext);
            free(qtext);
        }
        free(qpath);
    } else if ((pr = model_preset_find(model_arg))) {
        m->is_preset = true;
        snprintf(m->source, sizeof m->source, "model preset %s", pr->name);
        m->config = model_parse_text(m->source, embedded_find(pr->path)->data);
    } else if (str_ends(model_arg, ".json") && stat(model_arg, &st) == 0) {
        snprintf(m->source, sizeof m->source, "%s", model_arg);
        char why[512];
        char *text = input_read(model_arg, LWB_IN_MODEL, NULL, why, sizeof why);
        if (!text) lwb_user_error("--model %s: %s", model_arg, why);
        m->config = model_parse_text(m->source, text);
        free(text);
    } else {
        const char *near = model_preset_nearest(model_arg);
        if (near)
            lwb_user_error("--model %s: no such directory and no built-in preset of that name; did you mean "
                           "'%s'? (lwb run --list-models lists the presets)",
                           model_arg, near);
        lwb_user_error("--model %s: no such directory and no built-in preset of that name (lwb run "
                       "--list-models lists the presets; a directory must hold a Hugging Face config.json)",
                       model_arg);
    }
    model_parse(m, hfq);
    json_decref(hfq);
}

static void model_free(struct lwb_model *m) {
    json_decref(m->config);
    free(m->pattern);
    *m = (struct lwb_model){0};
}

// ---------------------------------------------------------------------------------------------
// Layers and derived values

// Every index in `idx` names a layer of the model, once. `where` names the option in messages
// ("--layer-indices", or "configs/x.yaml:3: 'layer_indices'").
static void model_check_layers(const struct lwb_model *m, const long long *idx, int n, const char *where) {
    for (int i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= m->num_layers)
            lwb_user_error("%s: layer %lld does not exist: %s has %d decoder layers (0..%d)", where, idx[i],
                           m->name, m->num_layers, m->num_layers - 1);
        for (int j = 0; j < i; j++)
            if (idx[j] == idx[i])
                lwb_user_error("%s: layer %lld is listed twice; list each layer once", where, idx[i]);
    }
}

static char model_layer_kind(const struct lwb_model *m, int layer) {
    return m->pattern ? m->pattern[layer] : 0;
}

static bool model_layer_is_moe(const struct lwb_model *m, int layer) {
    if (m->pattern) return m->pattern[layer] != LWB_LAYER_MAMBA && m->pattern[layer] != LWB_LAYER_ATTN &&
                           m->pattern[layer] != LWB_LAYER_MLP;
    return m->n_experts > 0 && layer >= m->first_k_dense && layer % m->moe_layer_freq == 0;
}

static int model_qk_head_dim(const struct lwb_model *m) { return m->qk_nope_dim + m->qk_rope_dim; }
// Width of one token's entry in the MLA cache: the compressed KV and the rope key.
static int model_kv_cache_dim(const struct lwb_model *m) { return m->kv_lora_rank + m->qk_rope_dim; }
static int model_experts_per_group(const struct lwb_model *m) { return m->n_experts / m->n_group; }

static double model_yarn_get_mscale(double scale, double mscale) {
    return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

// The attention softmax scale (see NOTES).
static double model_softmax_scale(const struct lwb_model *m) {
    double s = 1.0 / sqrt((double)model_qk_head_dim(m));
    if (m->rope.yarn && m->rope.mscale_all_dim != 0) {
        double ms = model_yarn_get_mscale(m->rope.factor, m->rope.mscale_all_dim);
        s *= ms * ms;
    }
    return s;
}

// transformers derives YaRN's factor from the position counts when both are given.
static double model_yarn_factor(const struct lwb_model *m) {
    return m->rope.original_max_pos > 0 ? (double)m->max_pos / m->rope.original_max_pos : m->rope.factor;
}

// The multiplier of RoPE's cos and sin (1 without YaRN; see NOTES).
static double model_rope_attention_factor(const struct lwb_model *m) {
    if (!m->rope.yarn) return 1.0;
    double f = model_yarn_factor(m);
    if (m->rope.mscale != 0 && m->rope.mscale_all_dim != 0)
        return model_yarn_get_mscale(f, m->rope.mscale) / model_yarn_get_mscale(f, m->rope.mscale_all_dim);
    return model_yarn_get_mscale(f, 1.0);
}

// RoPE inverse frequencies, qk_rope_head_dim / 2 of them, into `out` (see NOTES).
static void model_rope_inv_freq(const struct lwb_model *m, double *out) {
    int dim = m->qk_rope_dim, half = dim / 2;
    double base = m->rope_theta;
    if (!m->rope.yarn) {
        for (int i = 0; i < half; i++) out[i] = 1.0 / pow(base, 2.0 * i / dim);
        return;
    }
    double f = model_yarn_factor(m), orig = m->rope.original_max_pos;
    // Dimension at which a wavelength makes `rot` rotations over the original context.
    double lo_d = dim * log(orig / (m->rope.beta_fast * 2 * M_PI)) / (2 * log(base));
    double hi_d = dim * log(orig / (m->rope.beta_slow * 2 * M_PI)) / (2 * log(base));
    if (m->rope.truncate) lo_d = floor(lo_d), hi_d = ceil(hi_d);
    double lo = LWB_MAX(lo_d, 0.0), hi = LWB_MIN(hi_d, (double)(dim - 1));
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < half; i++) {
        double extra = 1.0 / pow(base, 2.0 * i / dim), inter = extra / f;
        double ramp = LWB_MIN(LWB_MAX((i - lo) / (hi - lo), 0.0), 1.0); // 0: extrapolate, 1: interpolate
        out[i] = inter * ramp + extra * (1 - ramp);
    }
}

static const char *const lwb_wformat_names[] = {"bf16", "fp8"};

// The weight format that runs for --weight-dtype `want` (auto|bf16|fp8): auto is the checkpoint's
// own where lwb runs it (bf16; FP8 in 128 x 128 blocks, as TensorRT-LLM runs DeepSeek on Hopper),
// and bf16 for float16/float32 checkpoints. NVFP4 needs Blackwell's tensor cores and other fp8
// layouts another GEMM: with auto they are refused, naming the choice to make. `note` gets a line
// to print when what runs is not what the checkpoint stores ("" otherwise).
static enum lwb_wformat model_weight_format(const struct lwb_model *m, const char *want, char *note, size_t n) {
    note[0] = 0;
    if (!strcmp(want, "auto")) {
        switch (m->ckpt) {
        case LWB_CKPT_BF16: return LWB_WF_BF16;
        case LWB_CKPT_FP8_BLOCK: return LWB_WF_FP8;
        case LWB_CKPT_NVFP4:
            lwb_user_error("run: %s stores %s weights, which need a Blackwell GPU's fp4 tensor cores; on Hopper give "
                           "--weight-dtype fp8 (DeepSeek's 128x128 blocks) or bf16, and the timings are of that format",
                           m->name, m->checkpoint_format);
        case LWB_CKPT_FP8_OTHER:
            lwb_user_error("run: %s stores %s weights; lwb's fp8 GEMMs take e4m3 in 128x128 blocks only: give "
                           "--weight-dtype fp8 (timed in 128x128 blocks) or bf16",
                           m->name, m->checkpoint_format);
        case LWB_CKPT_OTHER:
            snprintf(note, n, "%s stores %s weights; lwb runs it in bf16", m->name, m->checkpoint_format);
            return LWB_WF_BF16;
        }
    }
    enum lwb_wformat f = !strcmp(want, "fp8") ? LWB_WF_FP8 : LWB_WF_BF16;
    bool same = f == LWB_WF_FP8 ? m->ckpt == LWB_CKPT_FP8_BLOCK : m->ckpt == LWB_CKPT_BF16;
    if (!same)
        snprintf(note, n, "%s stores %s weights; --weight-dtype %s: lwb runs and times it in %s", m->name,
                 m->checkpoint_format, want, f == LWB_WF_FP8 ? "FP8 (128x128 blocks)" : "bf16");
    return f;
}

// ---------------------------------------------------------------------------------------------
// --scaled-from S: simulate the per-GPU shapes of an S-GPU deployment on `ranks` GPUs (the
// reference's weak scaling): experts = n_routed_experts / S * ranks, and with attention TP
// (no attention DP) also heads = heads / S * ranks. MoE is always pure EP across the ranks in
// lwb, so the reference's "MoE TP" refusal cannot arise. S = 0 means off.

// What S must satisfy: at least the ranks of the run, and a divisor of the experts (and of the
// heads with attention TP, which the reference refuses for models with a sparse-attention
// indexer).
static void model_check_scaled_from(const struct lwb_model *m, int scaled_from, int ranks,
                                    bool attention_dp) {
    if (scaled_from <= 0) return;
    if (ranks < 1) LWB_BUG("--scaled-from checked for %d ranks", ranks);
    if (scaled_from < ranks)
        lwb_user_error("--scaled-from %d is smaller than the %d ranks of this run; it names the larger "
                       "deployment to simulate, so give at least %d (or leave it out)",
                       scaled_from, ranks, ranks);
    if (m->n_experts % scaled_from)
        lwb_user_error("--scaled-from %d: %s has %d routed experts, which do not split evenly over %d GPUs; "
                       "give a divisor of %d",
                       scaled_from, m->name, m->n_experts, scaled_from, m->n_experts);
    if (!attention_dp && json_object_get(m->config, "index_n_heads"))
        lwb_user_error("--scaled-from %d with attention TP: %s has a sparse-attention indexer, and the reference "
                       "does not support Indexer TP for weak scaling; use --enable-attention-dp",
                       scaled_from, m->name);
    if (!attention_dp && m->pattern && !strcmp(m->model_type, "qwen3_next") &&
        (m->lin_k_heads % scaled_from || m->shared_intermediate % (64 * scaled_from)))
        lwb_user_error("--scaled-from %d with attention TP: the %d linear-attention key heads or the shared expert's "
                       "%d columns of %s do not split evenly over %d GPUs; give a divisor of %d, or "
                       "--enable-attention-dp",
                       scaled_from, m->lin_k_heads, m->shared_intermediate, m->name, scaled_from, m->lin_k_heads);
    if (!attention_dp && (m->heads % scaled_from || m->kv_heads % scaled_from))
        lwb_user_error(
            "--scaled-from %d with attention TP: the %d attention heads (%d key/value heads) of %s "
            "do not split evenly over %d GPUs; give a divisor of %d, or --enable-attention-dp",
            scaled_from, m->heads, m->kv_heads, m->name, scaled_from, m->heads);
}

// Check S, then shrink the model to the simulated per-GPU shapes; the shrunk config must still
// route (experts a multiple of n_group, at least 2 per group, enough for top_k).
static void model_apply_scaled_from(struct lwb_model *m, int scaled_from, int ranks, bool attention_dp) {
    if (scaled_from <= 0) return;
    if (m->scaled_from) LWB_BUG("--scaled-from applied twice");
    model_check_scaled_from(m, scaled_from, ranks, attention_dp);
    m->n_experts = m->n_experts / scaled_from * ranks;
    if (!attention_dp) {
        m->heads = m->heads / scaled_from * ranks;
        m->kv_heads = m->kv_heads / scaled_from * ranks;
        // Qwen3-Next under attention TP (TensorRT-LLM's mapping): the Gated DeltaNet's heads and
        // the shared expert's width split with the attention heads.
        if (!strcmp(m->model_type, "qwen3_next")) {
            m->lin_k_heads = m->lin_k_heads / scaled_from * ranks;
            m->lin_v_heads = m->lin_v_heads / scaled_from * ranks;
            m->shared_intermediate = m->shared_intermediate / scaled_from * ranks;
        }
    }
    m->scaled_from = scaled_from;
    m->scaled_ranks = ranks;
    char after[128];
    snprintf(after, sizeof after, " after --scaled-from %d on %d rank%s", scaled_from, ranks,
             ranks == 1 ? "" : "s");
    if (!m->pattern) model_check_relations(m, after);
}

// The config as run: config.json with the fields --scaled-from changed (a new reference).
static json_t *model_config_json(const struct lwb_model *m) {
    json_t *j = json_deep_copy(m->config);
    json_object_set_new(j, strcmp(m->model_type, "qwen3_next") ? "n_routed_experts" : "num_experts",
                        json_integer(m->n_experts));
    json_object_set_new(j, "num_attention_heads", json_integer(m->heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(m->kv_heads));
    return j;
}

// ---------------------------------------------------------------------------------------------
// Weights

static void weight_push(struct lwb_weight **w, int *n, size_t *cap, int layer, const char *suffix,
                        const char *dtype, int64_t rows, int64_t cols, int expert) {
    struct lwb_weight x = {.dtype = dtype, .ndim = cols ? 2 : 1, .shape = {rows, cols}, .expert = expert};
    int len = snprintf(x.name, sizeof x.name, "model.layers.%d.%s", layer, suffix);
    if (len >= (int)sizeof x.name) LWB_BUG("weight name too long: %s", suffix);
    uint64_t el = !strcmp(dtype, "F32") ? 4 : !strcmp(dtype, "F8_E4M3") ? 1 : 2;
    x.bytes = (uint64_t)rows * (uint64_t)(cols ? cols : 1) * el;
    LWB_PUSH(*w, *n, *cap, x);
}

// A Linear weight (rows x cols, a name ending in ".weight"): bf16, or fp8 e4m3 followed by its
// weight_scale_inv (one fp32 per 128 x 128 block, ceil-divided), as DeepSeek's FP8 checkpoints
// store it.
static void linear_push(struct lwb_weight **w, int *n, size_t *cap, int layer, const char *suffix, int64_t rows,
                        int64_t cols, int expert, enum lwb_wformat f) {
    if (f == LWB_WF_BF16) {
        weight_push(w, n, cap, layer, suffix, "BF16", rows, cols, expert);
        return;
    }
    weight_push(w, n, cap, layer, suffix, "F8_E4M3", rows, cols, expert);
    char s[96];
    snprintf(s, sizeof s, "%s_scale_inv", suffix);
    weight_push(w, n, cap, layer, s, "F32", (rows + 127) / 128, (cols + 127) / 128, expert);
}

// The norm a layer ends with, as TensorRT-LLM's layers end (their next_layer_layernorm): the next
// layer's input_layernorm, or the model's final norm after the last layer. A layer's own
// input_layernorm is the previous layer's (its input comes normalised), so in a layer's list every
// input_layernorm is the next one.
static bool model_is_next_norm(const char *name) {
    return !strcmp(name, "model.norm.weight") || str_ends(name, ".input_layernorm.weight");
}

// The tensors of decoder layer `layer` as lwb runs it: the norm it ends with (model_is_next_norm),
// then in checkpoint order attention, then the MLP
// (dense) or the gate, shared experts and routed experts (MoE). Returns the count; *out is
// malloc'd (the caller frees it).
static int model_layer_weights(const struct lwb_model *m, int layer, enum lwb_wformat f, struct lwb_weight **out) {
    struct lwb_weight *w = NULL;
    int n = 0;
    size_t cap = 0;
    int64_t H = m->hidden, nh = m->heads, qk = model_qk_head_dim(m);
    if (layer + 1 < m->num_layers) {
        weight_push(&w, &n, &cap, layer + 1, "input_layernorm.weight", "BF16", H, 0, -1);
    } else {
        weight_push(&w, &n, &cap, layer, "-", "BF16", H, 0, -1);
        snprintf(w[0].name, sizeof w[0].name, "model.norm.weight");
    }
    linear_push(&w, &n, &cap, layer, "self_attn.q_a_proj.weight", m->q_lora_rank, H, -1, f);
    weight_push(&w, &n, &cap, layer, "self_attn.q_a_layernorm.weight", "BF16", m->q_lora_rank, 0, -1);
    linear_push(&w, &n, &cap, layer, "self_attn.q_b_proj.weight", nh * qk, m->q_lora_rank, -1, f);
    linear_push(&w, &n, &cap, layer, "self_attn.kv_a_proj_with_mqa.weight", model_kv_cache_dim(m), H, -1, f);
    weight_push(&w, &n, &cap, layer, "self_attn.kv_a_layernorm.weight", "BF16", m->kv_lora_rank, 0, -1);
    linear_push(&w, &n, &cap, layer, "self_attn.kv_b_proj.weight", nh * (m->qk_nope_dim + m->v_head_dim),
                m->kv_lora_rank, -1, f);
    linear_push(&w, &n, &cap, layer, "self_attn.o_proj.weight", H, nh * m->v_head_dim, -1, f);
    if (m->index_heads) {
        // DeepSeek-V3.2's indexer: wq_b and wk in the checkpoint's format, the key norm (a
        // LayerNorm) in fp32, weights_proj in bf16 (never quantised).
        linear_push(&w, &n, &cap, layer, "self_attn.indexer.wq_b.weight", (int64_t)m->index_heads * m->index_dim,
                    m->q_lora_rank, -1, f);
        linear_push(&w, &n, &cap, layer, "self_attn.indexer.wk.weight", m->index_dim, H, -1, f);
        weight_push(&w, &n, &cap, layer, "self_attn.indexer.k_norm.weight", "F32", m->index_dim, 0, -1);
        weight_push(&w, &n, &cap, layer, "self_attn.indexer.k_norm.bias", "F32", m->index_dim, 0, -1);
        weight_push(&w, &n, &cap, layer, "self_attn.indexer.weights_proj.weight", "BF16", m->index_heads, H, -1);
    }
    weight_push(&w, &n, &cap, layer, "post_attention_layernorm.weight", "BF16", H, 0, -1);
    if (!model_layer_is_moe(m, layer)) {
        int64_t I = m->intermediate;
        linear_push(&w, &n, &cap, layer, "mlp.gate_proj.weight", I, H, -1, f);
        linear_push(&w, &n, &cap, layer, "mlp.up_proj.weight", I, H, -1, f);
        linear_push(&w, &n, &cap, layer, "mlp.down_proj.weight", H, I, -1, f);
    } else {
        int64_t I = m->moe_intermediate, S = (int64_t)m->moe_intermediate * m->n_shared_experts;
        weight_push(&w, &n, &cap, layer, "mlp.gate.weight", "BF16", m->n_experts, H, -1); // the router: bf16
        weight_push(&w, &n, &cap, layer, "mlp.gate.e_score_correction_bias", "F32", m->n_experts, 0, -1);
        if (S) {
            linear_push(&w, &n, &cap, layer, "mlp.shared_experts.gate_proj.weight", S, H, -1, f);
            linear_push(&w, &n, &cap, layer, "mlp.shared_experts.up_proj.weight", S, H, -1, f);
            linear_push(&w, &n, &cap, layer, "mlp.shared_experts.down_proj.weight", H, S, -1, f);
        }
        for (int e = 0; e < m->n_experts; e++) {
            char s[64];
            snprintf(s, sizeof s, "mlp.experts.%d.gate_proj.weight", e);
            linear_push(&w, &n, &cap, layer, s, I, H, e, f);
            snprintf(s, sizeof s, "mlp.experts.%d.up_proj.weight", e);
            linear_push(&w, &n, &cap, layer, s, I, H, e, f);
            snprintf(s, sizeof s, "mlp.experts.%d.down_proj.weight", e);
            linear_push(&w, &n, &cap, layer, s, H, I, e, f);
        }
    }
    *out = w;
    return n;
}

static uint64_t model_layer_weight_bytes(const struct lwb_model *m, int layer, enum lwb_wformat f) {
    struct lwb_weight *w;
    int n = model_layer_weights(m, layer, f, &w);
    uint64_t b = 0;
    for (int i = 0; i < n; i++) b += w[i].bytes;
    free(w);
    return b;
}

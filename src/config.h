// config.h: the options of `lwb run`, and a YAML config file merged under the command line.
//
// Defines: run_opts (the option table: every key a config file may hold, and its flag), run_help,
// config_load (read CONFIG.yaml into an lwb_args that already holds the command line; the command
// line wins; unknown keys and bad values are one-line errors naming the file, line and key).
//
// Merge rules (as TensorRT-LLM's run.py, minus its quirks): a key given on the command line is
// never taken from the file; list keys accept a scalar or a list in YAML and a comma list on the
// command line; `null` leaves a key unset (for balance_ratio it is one "none" entry);
// warmup_times and run_times are honoured from YAML (upstream silently ignores them there); a
// key given twice, or a second YAML document, is an error rather than silently dropped.
//
// Does not: check relations between options (the run plan in cmd_run.h does), or read model
// configs (model.h).
// Tested by test/test_config.c.
#pragma once
#include <yaml.h>

static const struct lwb_opt run_opts[] = {
    {"model", LWB_OPT_STR, "NAME|DIR", NULL,
     "built-in model preset (lwb run --list-models) or a directory with a Hugging Face config.json"},
    {"layer_indices", LWB_OPT_INT_LIST, "LIST", NULL, "decoder layers to build, e.g. 5 or 3,4,5",
     NULL, LWB_OPT_NONNEG, .min = 0, .max = 100000LL},
    {"run_type", LWB_OPT_ENUM, NULL, NULL, "context (prefill) or generation (decode) phase",
     "CTX|GEN"},
    {"scaled_from", LWB_OPT_INT, "N", NULL,
     "simulate an N-GPU deployment's per-GPU expert count on this many ranks", NULL, LWB_OPT_POSITIVE, .min = 1, .max = 4096LL},
    {"max_batch_size", LWB_OPT_INT, "N", NULL, "KV-cache slots (default: the largest batch size)",
     NULL, LWB_OPT_POSITIVE, .min = 1, .max = 65535LL},
    {"tokens_per_block", LWB_OPT_INT, "N", "32", "tokens per KV-cache page", NULL, LWB_OPT_POSITIVE, .min = 1, .max = 4096LL},
    {"max_seq_len", LWB_OPT_INT, "N", NULL,
     "longest sequence a slot holds (default: largest seq-len-q + largest seq-len-kv-cache)", NULL,
     LWB_OPT_POSITIVE, .min = 1, .max = 8388608LL},
    {"max_num_tokens", LWB_OPT_INT, "N", NULL,
     "most tokens in one forward (default: max-batch-size x largest seq-len-q)", NULL,
     LWB_OPT_POSITIVE, .min = 1, .max = 1048576LL},
    {"enable_attention_dp", LWB_OPT_BOOL, NULL, "false",
     "attention data-parallel: every rank has its own requests (else heads split over the ranks)"},
    {"moe_comm", LWB_OPT_ENUM, NULL, "auto",
     "how routed tokens reach their experts' ranks with attention DP (auto: all-gather while the EP "
     "size is at most top-k, else all-to-all)",
     "auto|allgather|alltoall"},
    {"kv_cache_dtype", LWB_OPT_ENUM, NULL, "auto", "KV-cache data type (auto: the model's, bf16)",
     "auto|bf16"},
    {"mamba_ssm_cache_dtype", LWB_OPT_ENUM, NULL, "auto",
     "recurrent state cache of Mamba2 and Gated DeltaNet layers: auto (the model's mamba_ssm_cache_dtype, else its "
     "dtype), float16, "
     "bfloat16 or float32 (state math is fp32 either way)",
     "auto|float16|bfloat16|float32"},
    {"weight_dtype", LWB_OPT_ENUM, NULL, "auto",
     "weight format that runs: auto (the checkpoint's: FP8 with 128x128 block scales for DeepSeek-V3/R1, "
     "else bf16), bf16, or fp8 (e4m3 weights with 128x128 block scales, activations quantised per token and "
     "128 channels)",
     "auto|bf16|fp8"},
    {"load_format", LWB_OPT_ENUM, NULL, "DUMMY", "weights: DUMMY (random) or AUTO (from the checkpoint)",
     "AUTO|DUMMY"},
    {"moe_backend", LWB_OPT_STR, "NAME", NULL,
     "accepted for TensorRT-LLM configs and recorded; lwb always runs its own MoE kernels"},
    {"use_cuda_graph", LWB_OPT_BOOL, NULL, "false", "capture one forward and replay it"},
    {"batch_size", LWB_OPT_INT_LIST, "LIST", NULL, "requests per forward (comma list)", NULL,
     LWB_OPT_POSITIVE, .min = 1, .max = 65535LL},
    {"seq_len_q", LWB_OPT_INT_LIST, "LIST", NULL,
     "new tokens per request (GEN: 1, or 1+MTP draft tokens)", NULL, LWB_OPT_POSITIVE, .min = 1, .max = 1048576LL},
    {"seq_len_kv_cache", LWB_OPT_INT_LIST, "LIST", NULL, "tokens already in each request's KV cache",
     NULL, LWB_OPT_NONNEG, .min = 0, .max = 8388608LL},
    {"balance_method", LWB_OPT_ENUM, NULL, "NotModified", "how MoE routing is overridden",
     "NotModified|Balanced|ImbalancedRanks|ImbalancedExperts"},
    {"balance_ratio", LWB_OPT_FLOAT_LIST, "LIST", NULL,
     "share of tokens routed balanced, 0..1 (comma list; none: unset)", NULL, LWB_OPT_NONNEG},
    {"replay_file_path", LWB_OPT_STR, "FILE", NULL,
     "replay the MoE routing recorded in this calibration file (TensorRT-LLM's calibration_data.json; "
     "each rank replays its own records, iteration i of the loop the recorded start + i mod the range)"},
    {"replay_start_iter", LWB_OPT_INT, "N", NULL, "first recorded iteration to replay (default: the file's first; also "
     "--replay-start)", NULL, LWB_OPT_NONNEG, .min = 0, .max = 9223372036854775807LL},
    {"replay_stop_iter", LWB_OPT_INT, "N", NULL, "last recorded iteration to replay (default: the file's last; also "
     "--replay-stop)", NULL, LWB_OPT_NONNEG, .min = 0, .max = 9223372036854775807LL},
    {"replay_start", LWB_OPT_INT, "N", NULL, "same as --replay-start-iter", NULL, LWB_OPT_NONNEG | LWB_OPT_HIDDEN,
     .min = 0, .max = 9223372036854775807LL},
    {"replay_stop", LWB_OPT_INT, "N", NULL, "same as --replay-stop-iter", NULL, LWB_OPT_NONNEG | LWB_OPT_HIDDEN,
     .min = 0, .max = 9223372036854775807LL},
    {"replay_verify_metadata", LWB_OPT_BOOL, NULL, "true",
     "with a replay, one more forward after the timed iterations checks that every MoE layer used the file's "
     "expert ids"},
    {"collect_calibration", LWB_OPT_STR, "FILE", NULL,
     "write the routing of every iteration of the loop (every selected MoE layer, every rank) as a calibration "
     "file that --replay-file-path reads", NULL, LWB_OPT_CLI_ONLY},
    {"warmup_times", LWB_OPT_INT, "N", "20", "untimed iterations per problem", NULL, LWB_OPT_NONNEG, .min = 0, .max = 1000000LL},
    {"run_times", LWB_OPT_INT, "N", "100", "timed iterations per problem", NULL, LWB_OPT_POSITIVE, .min = 1, .max = 1000000LL},
    {"seed", LWB_OPT_INT, "N", "0", "seed of the random weights, inputs and KV cache", NULL,
     LWB_OPT_NONNEG, .min = 0, .max = 9223372036854775807LL},
    {"device", LWB_OPT_INT, "N", "0", "CUDA device of local rank 0 (local rank r takes device N + r)", NULL,
     LWB_OPT_NONNEG, .min = 0, .max = 1023LL},
    {"np", LWB_OPT_INT, "N", NULL,
     "start N ranks on this host, one per GPU (under mpirun or srun leave it out)", NULL,
     LWB_OPT_CLI_ONLY | LWB_OPT_POSITIVE, .min = 1, .max = 64LL},
    {"rendezvous_timeout", LWB_OPT_INT, "SECONDS", "120",
     "how long ranks wait for each other at start (MASTER_ADDR:MASTER_PORT)", NULL, LWB_OPT_POSITIVE, .min = 1, .max = 86400LL},
    {"comm_timeout", LWB_OPT_INT, "SECONDS", "300",
     "how long a rank waits on a collective before it aborts every rank", NULL, LWB_OPT_POSITIVE, .min = 1, .max = 86400LL},
    {"gpu", LWB_OPT_ENUM, NULL, NULL, "GPU whose floors --dry-run prints (default: H100)", "H100|H200"},
    {"dry_run", LWB_OPT_BOOL, NULL, NULL,
     "print the plan (layers, kernels, memory, floors) and exit; needs no GPU", NULL, LWB_OPT_CLI_ONLY},
    {"profile", LWB_OPT_BOOL, NULL, "true",
     "write profiles/report_npN_rankR.sqlite with the built-in profiler (off under nsys; PROFILE=0 in the "
     "environment is --no-profile)"},
    {"profile_dir", LWB_OPT_STR, "DIR", "profiles", "where profiles and logs go"},
    {"nsys", LWB_OPT_BOOL, NULL, NULL,
     "run under Nsight Systems (nsys on the PATH, or LWB_NSYS) with the reference's flags: "
     "DIR/report_npN_rankR.nsys-rep per rank", NULL, LWB_OPT_CLI_ONLY},
    {"gpu_metrics", LWB_OPT_BOOL, NULL, NULL, "with --nsys: also sample GPU metrics (10 kHz) on each rank's GPU", NULL,
     LWB_OPT_CLI_ONLY},
    {"backtrace", LWB_OPT_BOOL, NULL, NULL, "with --nsys: CPU sampling and CUDA API backtraces instead of -s none",
     NULL, LWB_OPT_CLI_ONLY},
    {"output_json", LWB_OPT_STR, "FILE", NULL, "also write the timing and roofline records as JSON",
     NULL, LWB_OPT_CLI_ONLY},
    {"dump", LWB_OPT_STR, "DIR", NULL,
     "write weights, inputs and outputs of the first problem as safetensors (for checks)", NULL,
     LWB_OPT_CLI_ONLY},
    {"list_models", LWB_OPT_BOOL, NULL, NULL, "print the built-in model presets and exit", NULL,
     LWB_OPT_CLI_ONLY},
};

static const struct lwb_cmd_help run_help = {
    "run", "CONFIG.yaml [options]",
    "Build the selected decoder layers of a model, run them on the GPU and time them.",
    "Every option can also be a key of CONFIG.yaml (snake_case: --batch-size is batch_size);\n"
    "the command line wins. Lists are comma-separated here and YAML lists in the file. For each\n"
    "combination of batch size, seq-len-q, seq-len-kv-cache and balance ratio (a problem), lwb\n"
    "runs warmup-times + run-times iterations and prints their statistics in microseconds,\n"
    "then each module's time against its floor on this GPU."};

// YAML scalar text, or NULL for null (~, null, empty plain scalar).
static const char *yaml_scalar_text(const yaml_node_t *n) {
    const char *t = (const char *)n->data.scalar.value;
    if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        (!*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") || !strcmp(t, "NULL")))
        return NULL;
    return t;
}

#define CONFIG_MAX_DEPTH 16   // a config is a mapping of scalars and lists: depth 3 is enough
#define CONFIG_MAX_ALIASES 64  // aliases are allowed, a bomb of them is not

// A pass over the events first: nesting and aliases are bounded before a document is built (a
// deeply nested or alias-heavy file costs the document loader time and memory out of proportion).
static void config_prescan(const char *path, const char *text, size_t size) {
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) lwb_fatal("cannot start the YAML parser");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, size);
    int depth = 0, aliases = 0;
    for (;;) {
        yaml_event_t e;
        if (!yaml_parser_parse(&p, &e)) break; // the loader reports the error with its position
        const yaml_event_type_t t = e.type;
        const size_t line = e.start_mark.line + 1;
        yaml_event_delete(&e);
        if (t == YAML_STREAM_END_EVENT) break;
        if (t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT) depth++;
        if (t == YAML_MAPPING_END_EVENT || t == YAML_SEQUENCE_END_EVENT) depth--;
        if (t == YAML_ALIAS_EVENT) aliases++;
        if (depth > CONFIG_MAX_DEPTH) {
            yaml_parser_delete(&p);
            lwb_user_error("%s:%zu: nested more than %d levels deep; a config is a mapping of values and lists",
                           path, line, CONFIG_MAX_DEPTH);
        }
        if (aliases > CONFIG_MAX_ALIASES) {
            yaml_parser_delete(&p);
            lwb_user_error("%s:%zu: more than %d YAML aliases; a config needs few or none", path, line,
                           CONFIG_MAX_ALIASES);
        }
    }
    yaml_parser_delete(&p);
}

// Read `path` into `a`, which already holds the command line. Exits with one line on any error.
static void config_load(struct lwb_args *a, const char *path) {
    char why[512];
    size_t size;
    char *text = input_read(path, LWB_IN_CONFIG, &size, why, sizeof why);
    if (!text)
        lwb_user_error("%s: %s; give the path of a YAML file such as configs/config_gen.yaml", path, why);
    config_prescan(path, text, size);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) lwb_fatal("cannot start the YAML parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, size);
    if (!yaml_parser_load(&parser, &doc)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s:%zu:%zu: not valid YAML: %s", path, parser.problem_mark.line + 1,
                 parser.problem_mark.column + 1, parser.problem ? parser.problem : "parse error");
        yaml_parser_delete(&parser);
        free(text);
        lwb_user_error("%s", msg);
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) { // a second document ("---") would be silently ignored: refuse it
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next))
            lwb_user_error("%s:%zu:%zu: not valid YAML: %s", path, parser.problem_mark.line + 1,
                           parser.problem_mark.column + 1, parser.problem ? parser.problem : "parse error");
        yaml_node_t *extra = yaml_document_get_root_node(&next);
        if (extra && !(extra->type == YAML_SCALAR_NODE && !yaml_scalar_text(extra)))
            lwb_user_error("%s:%zu: a second YAML document; a config is one mapping of keys to values",
                           path, extra->start_mark.line + 1);
        yaml_document_delete(&next);
    }
    if (!root || (root->type == YAML_SCALAR_NODE && !yaml_scalar_text(root))) { // empty: nothing to merge
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        free(text);
        return;
    }
    if (root->type != YAML_MAPPING_NODE)
        lwb_user_error("%s:%zu: the config must be a mapping of keys to values (key: value lines)", path,
                       root->start_mark.line + 1);
    size_t *seen_line = xcalloc((size_t)a->nopts, sizeof *seen_line); // first line of each key
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&doc, p->value);
        if (k->type != YAML_SCALAR_NODE)
            lwb_user_error("%s:%zu: keys must be plain names", path, k->start_mark.line + 1);
        const char *key = (const char *)k->data.scalar.value;
        int idx = args_find(a, key);
        if (idx < 0 || (a->opts[idx].flags & LWB_OPT_CLI_ONLY)) {
            const char *names[LWB_ARRAY_LEN(run_opts)] = {0};
            size_t n = 0;
            for (int i = 0; i < a->nopts; i++)
                if (!(a->opts[i].flags & LWB_OPT_CLI_ONLY)) names[n++] = a->opts[i].key;
            const char *near = lwb_nearest(key, names, n);
            if (idx >= 0) {
                char flag[128];
                opt_flag_name(&a->opts[idx], flag, sizeof flag);
                lwb_user_error("%s:%zu: '%s' is a command-line option only; pass --%s instead", path,
                               k->start_mark.line + 1, key, flag);
            }
            if (near)
                lwb_user_error("%s:%zu: unknown key '%s'; did you mean '%s'? (lwb run --help lists the "
                               "keys)",
                               path, k->start_mark.line + 1, key, near);
            lwb_user_error("%s:%zu: unknown key '%s' (lwb run --help lists the keys)", path,
                           k->start_mark.line + 1, key);
        }
        if (seen_line[idx])
            lwb_user_error("%s:%zu: '%s' is given twice (first on line %zu); keep one", path,
                           k->start_mark.line + 1, key, seen_line[idx]);
        seen_line[idx] = k->start_mark.line + 1;
        if (a->vals[idx].set) continue; // the command line wins
        // Messages name the file and line: "configs/x.yaml:7: 'batch_size' must be ..."
        struct lwb_str src = {0};
        str_printf(&src, "%s:%zu", path, k->start_mark.line + 1);
        const char *source = str_take(&src); // lives as long as the args (freed at exit)
        const struct lwb_opt *o = &a->opts[idx];
        bool is_list = o->type == LWB_OPT_INT_LIST || o->type == LWB_OPT_FLOAT_LIST;
        char expect[256];
        if (o->type == LWB_OPT_ENUM) {
            snprintf(expect, sizeof expect, "one of %s", o->choices);
            for (char *c = expect; *c; c++)
                if (*c == '|') *c = '/';
        } else {
            snprintf(expect, sizeof expect, "%s", opt_type_text(o));
        }
        if (v->type == YAML_MAPPING_NODE)
            lwb_user_error("%s: '%s' must be %s, not a mapping", source, key, expect);
        if (v->type == YAML_SEQUENCE_NODE) {
            if (!is_list) lwb_user_error("%s: '%s' must be %s, not a list", source, key, expect);
            int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
            const char **items = xcalloc((size_t)n, sizeof *items);
            struct lwb_str whole = {0};
            str_puts(&whole, "[");
            for (int i = 0; i < n; i++) {
                yaml_node_t *it = yaml_document_get_node(&doc, v->data.sequence.items.start[i]);
                if (it->type != YAML_SCALAR_NODE)
                    lwb_user_error("%s: '%s' entries must be plain values", source, key);
                const char *t = yaml_scalar_text(it);
                items[i] = t ? t : "null";
                str_printf(&whole, "%s%s", i ? ", " : "", items[i]);
            }
            str_puts(&whole, "]");
            if (n == 0) lwb_user_error("%s: '%s' is an empty list; give at least one value", source, key);
            args_set_list(a, idx, items, n, source, whole.s);
            str_free(&whole);
            free(items);
            continue;
        }
        const char *t = yaml_scalar_text(v);
        if (!t) {
            if (o->type == LWB_OPT_FLOAT_LIST) {
                const char *none = "null";
                args_set_list(a, idx, &none, 1, source, "null");
            }
            continue; // null: unset
        }
        if (is_list) {
            args_set_list(a, idx, &t, 1, source, t);
        } else {
            args_set_text(a, idx, xstrdup(t), source);
        }
    }
    free(seen_line);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(text);
}

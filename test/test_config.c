// test_config.c: config.h: a YAML config merged under the command line (the command line wins,
// scalars become one-element lists, YAML lists, null unsets, warmup_times and run_times honoured),
// the shipped configs/config_*.yaml, and one-line errors naming file and line (unknown keys
// with a suggestion, command-line-only keys, wrong types, duplicates, non-mapping documents).
#include "test_common.h"

static char *tmp_dir;

static int setup(void **state) {
    (void)state;
    tmp_dir = make_tmpdir();
    return 0;
}
static int teardown(void **state) {
    (void)state;
    rm_rf(tmp_dir);
    free(tmp_dir);
    return 0;
}

// Write `text` to a new file in the temporary folder; returns its path.
static char *write_yaml(const char *text) {
    static int count;
    char name[32];
    snprintf(name, sizeof name, "c%d.yaml", count++);
    char *path = lwb_path_join(tmp_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

// Parse `argv` (argc of them), then the config at `path`, then the defaults.
static void load(struct lwb_args *a, const char *path, int argc, char **argv) {
    args_init(a, "run", run_opts, (int)LWB_ARRAY_LEN(run_opts));
    args_parse(a, &run_help, argc, argv, 1, "CONFIG.yaml");
    config_load(a, path);
    args_apply_defaults(a);
}

static const struct lwb_val *val(const struct lwb_args *a, const char *key) {
    int i = args_find(a, key);
    assert_true(i >= 0);
    return &a->vals[i];
}

static void assert_ints(const struct lwb_args *a, const char *key, int n, ...) {
    const struct lwb_val *v = val(a, key);
    assert_true(v->set);
    assert_int_equal(v->n, n);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) assert_int_equal(v->ints[i], va_arg(ap, int));
    va_end(ap);
}

static void test_shipped_configs(void **state) {
    (void)state;
    struct lwb_args a;
    load(&a, "configs/config_ctx.yaml", 0, NULL);
    assert_string_equal(arg_str(&a, "model"), "deepseek-ai/DeepSeek-R1");
    assert_ints(&a, "layer_indices", 1, 5);
    assert_string_equal(arg_str(&a, "run_type"), "CTX");
    assert_ints(&a, "batch_size", 1, 1);
    assert_ints(&a, "seq_len_q", 1, 8193);
    assert_ints(&a, "seq_len_kv_cache", 1, 0);
    assert_false(arg_bool(&a, "use_cuda_graph"));
    assert_string_equal(val(&a, "use_cuda_graph")->source, "configs/config_ctx.yaml:12");
    assert_true(arg_bool(&a, "enable_attention_dp"));
    assert_int_equal(arg_int(&a, "tokens_per_block"), 32);
    assert_int_equal(arg_int(&a, "max_seq_len"), 9220);
    assert_int_equal(arg_int(&a, "max_num_tokens"), 20480);
    assert_string_equal(arg_str(&a, "moe_backend"), "CUTLASS");
    assert_string_equal(arg_str(&a, "balance_method"), "Balanced");
    const struct lwb_val *r = val(&a, "balance_ratio");
    assert_int_equal(r->n, 1); // null: one "none" entry, as upstream's [None]
    assert_true(r->nulls[0]);
    assert_false(arg_set(&a, "scaled_from"));
    assert_false(arg_set(&a, "max_batch_size"));
    assert_int_equal(arg_int(&a, "warmup_times"), 20);
    assert_int_equal(arg_int(&a, "run_times"), 100);
    assert_string_equal(val(&a, "run_times")->source, "default");
    assert_string_equal(arg_str(&a, "load_format"), "DUMMY");
    args_free(&a);

    load(&a, "configs/config_gen.yaml", 0, NULL);
    assert_string_equal(arg_str(&a, "model"), "deepseek-ai/DeepSeek-R1");
    assert_ints(&a, "layer_indices", 1, 5);
    assert_string_equal(arg_str(&a, "run_type"), "GEN");
    assert_ints(&a, "batch_size", 1, 128);
    assert_ints(&a, "seq_len_q", 1, 1);
    assert_ints(&a, "seq_len_kv_cache", 1, 8193);
    assert_true(arg_bool(&a, "use_cuda_graph"));
    assert_int_equal(arg_int(&a, "max_num_tokens"), 4096);
    assert_int_equal(arg_int(&a, "max_seq_len"), 9220);
    assert_true(val(&a, "balance_ratio")->nulls[0]);
    args_free(&a);
}

static void test_cli_wins(void **state) {
    (void)state;
    char *p = write_yaml("batch_size: [1, 2, 4]\nuse_cuda_graph: true\nrun_type: GEN\nseq_len_q: 1\n"
                         "warmup_times: 3\nmodel: deepseek-ai/DeepSeek-V3\n");
    char *argv[] = {"--batch-size", "8,16", "--no-use-cuda-graph", "--warmup-times=5", "cfg"};
    struct lwb_args a;
    load(&a, p, 5, argv);
    assert_ints(&a, "batch_size", 2, 8, 16);
    assert_string_equal(val(&a, "batch_size")->source, "command line");
    assert_false(arg_bool(&a, "use_cuda_graph"));
    assert_int_equal(arg_int(&a, "warmup_times"), 5);
    // Keys the command line did not give come from the file, with their line.
    assert_string_equal(arg_str(&a, "run_type"), "GEN");
    assert_ints(&a, "seq_len_q", 1, 1);
    char want[PATH_MAX + 8];
    snprintf(want, sizeof want, "%s:4", p);
    assert_string_equal(val(&a, "seq_len_q")->source, want);
    assert_string_equal(arg_str(&a, "model"), "deepseek-ai/DeepSeek-V3");
    args_free(&a);
    free(p);
}

static void test_lists_and_nulls(void **state) {
    (void)state;
    char *p = write_yaml("# a comment\n"
                         "layer_indices: 3\n"           // scalar -> one entry
                         "batch_size:\n  - 1\n  - 64\n" // block list
                         "seq_len_kv_cache: [0, 97, 8193]\n"
                         "balance_ratio: [0.5, null, 1, ~]\n"
                         "scaled_from: null\n" // unset
                         "max_batch_size: ~\n"
                         "model:\n"             // empty: null
                         "warmup_times: null\n" // unset: the default applies
                         "run_times: 7\n"       // honoured (upstream ignores it)
                         "balance_method: 'ImbalancedRanks'\n"
                         "enable_attention_dp: no\n");
    struct lwb_args a;
    load(&a, p, 0, NULL);
    assert_ints(&a, "layer_indices", 1, 3);
    assert_ints(&a, "batch_size", 2, 1, 64);
    assert_ints(&a, "seq_len_kv_cache", 3, 0, 97, 8193);
    const struct lwb_val *r = val(&a, "balance_ratio");
    assert_int_equal(r->n, 4);
    assert_true(r->floats[0] == 0.5 && !r->nulls[0]);
    assert_true(r->nulls[1]);
    assert_true(r->floats[2] == 1.0 && !r->nulls[2]);
    assert_true(r->nulls[3]);
    assert_false(arg_set(&a, "scaled_from"));
    assert_false(arg_set(&a, "max_batch_size"));
    assert_false(arg_set(&a, "model"));
    assert_int_equal(arg_int(&a, "warmup_times"), 20);
    assert_int_equal(arg_int(&a, "run_times"), 7);
    assert_string_equal(arg_str(&a, "balance_method"), "ImbalancedRanks");
    assert_false(arg_bool(&a, "enable_attention_dp"));
    args_free(&a);
    free(p);

    // null in the file does not unset what the command line gave.
    p = write_yaml("scaled_from: null\nbalance_ratio: null\n");
    char *argv[] = {"--scaled-from", "16", "--balance-ratio", "0.25,none"};
    load(&a, p, 4, argv);
    assert_int_equal(arg_int(&a, "scaled_from"), 16);
    r = val(&a, "balance_ratio");
    assert_int_equal(r->n, 2);
    assert_true(r->floats[0] == 0.25);
    assert_true(r->nulls[1]);
    args_free(&a);
    free(p);

    // An empty file and a file of comments merge nothing.
    const char *empties[] = {"", "# only a comment\n\n", "---\n", "---\n# x\n...\n---\n"};
    for (int i = 0; i < 4; i++) {
        p = write_yaml(empties[i]);
        load(&a, p, 0, NULL);
        assert_false(arg_set(&a, "batch_size"));
        assert_false(arg_set(&a, "model"));
        assert_int_equal(arg_int(&a, "warmup_times"), 20);
        args_free(&a);
        free(p);
    }
}

static void load_child(void *arg) {
    struct lwb_args a;
    load(&a, arg, 0, NULL);
}

// The YAML text must be refused with exit 2 and one line holding "FILE:LINE" and `want`.
static void expect_error(const char *yaml, int line, const char *want) {
    char *p = write_yaml(yaml);
    struct child_result r;
    run_child(load_child, p, &r);
    if (r.status != 2 || count_lines(r.err) != 1 || !strstr(r.err, want))
        fprintf(stderr, "yaml \"%s\": exit %d, stderr: %s", yaml, r.status, r.err);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, want));
    if (line) {
        char where[PATH_MAX + 16];
        snprintf(where, sizeof where, "lwb: %s:%d", p, line);
        if (!strstr(r.err, where)) fprintf(stderr, "wanted \"%s\" in: %s", where, r.err);
        assert_non_null(strstr(r.err, where));
    }
    free(p);
}

static void test_errors(void **state) {
    (void)state;
    expect_error("run_type: GEN\nbatch_sise: 4\n", 2,
                 "unknown key 'batch_sise'; did you mean 'batch_size'? (lwb run --help lists the keys)");
    expect_error("zzzzzzzzzz: 1\n", 1, "unknown key 'zzzzzzzzzz' (lwb run --help lists the keys)");
    expect_error("model: x\ndry_run: true\n", 2,
                 "'dry_run' is a command-line option only; pass --dry-run instead");
    expect_error("output_json: a.json\n", 1, "pass --output-json instead");
    expect_error("batch_size: abc\n", 1,
                 "'batch_size' must be a positive integer or a list of them (got \"abc\")");
    expect_error("batch_size: 0\n", 1, "'batch_size': 0 is out of range; give integers from 1 to 65535");
    expect_error("batch_size: 1.5\n", 1, "'batch_size' must be a positive integer");
    expect_error("seq_len_kv_cache: [0, -1]\n", 1,
                 "'seq_len_kv_cache': -1 is out of range; give integers from 0 to 8388608");
    expect_error("balance_ratio: [0.5, abc]\n", 1, "'balance_ratio' must be");
    expect_error("use_cuda_graph: maybe\n", 1, "'use_cuda_graph' must be true or false (got \"maybe\")");
    expect_error("\nrun_type: PREFILL\n", 2, "'run_type' must be one of CTX, GEN (got \"PREFILL\")");
    expect_error("run_type: [CTX]\n", 1, "'run_type' must be one of CTX/GEN, not a list");
    expect_error("warmup_times: [1, 2]\n", 1, "'warmup_times' must be a non-negative integer, not a list");
    expect_error("warmup_times: -1\n", 1, "'warmup_times': -1 is out of range; give an integer from 0 to 1000000");
    expect_error("run_times: true\n", 1, "'run_times' must be a positive integer (got \"true\")");
    expect_error("batch_size: {a: 1}\n", 1,
                 "'batch_size' must be a positive integer or a list of them, not a mapping");
    expect_error("batch_size: [1, [2]]\n", 1, "'batch_size' entries must be plain values");
    expect_error("batch_size: []\n", 1, "'batch_size' is an empty list");
    expect_error("batch_size: 1\nrun_type: CTX\nbatch_size: 2\n", 3,
                 "'batch_size' is given twice (first on line 1)");
    expect_error("- batch_size\n- 1\n", 1, "the config must be a mapping of keys to values");
    expect_error("just text\n", 1, "the config must be a mapping");
    expect_error("batch_size: [1, 2\n", 0, "not valid YAML");
    expect_error("batch_size: 1\n---\nbatch_size: 2\n", 3, "a second YAML document");
    expect_error("? [a, b]\n: 1\n", 1, "keys must be plain names");

    struct child_result r;
    run_child(load_child, "no/such/config.yaml", &r);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, "no/such/config.yaml: cannot open the config file"));
}

// PROFILE=0 in the environment is --no-profile (the reference's run.sh), unless the command line
// says --profile.
static void test_profile_env(void **state) {
    (void)state;
    char *argv1[] = {"configs/config_gen.yaml", NULL};
    char *argv2[] = {"configs/config_gen.yaml", "--profile", NULL};
    struct lwb_args a;
    setenv("PROFILE", "0", 1);
    assert_true(run_options(&a, 1, argv1));
    assert_false(arg_bool(&a, "profile"));
    assert_true(run_options(&a, 2, argv2));
    assert_true(arg_bool(&a, "profile"));
    setenv("PROFILE", "1", 1);
    assert_true(run_options(&a, 1, argv1));
    assert_true(arg_bool(&a, "profile"));
    unsetenv("PROFILE");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_configs),
        cmocka_unit_test(test_cli_wins),
        cmocka_unit_test(test_lists_and_nulls),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_profile_env),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

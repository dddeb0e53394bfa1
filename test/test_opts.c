// test_opts.c: opts.h: parsing, lists, booleans, defaults, errors with suggestions, help.
#include "test_common.h"

static const struct lwb_opt t_opts[] = {
    {"batch_size", LWB_OPT_INT_LIST, "LIST", NULL, "batches", NULL, LWB_OPT_POSITIVE},
    {"balance_ratio", LWB_OPT_FLOAT_LIST, "LIST", NULL, "ratios", NULL, LWB_OPT_NONNEG},
    {"run_type", LWB_OPT_ENUM, NULL, NULL, "phase", "CTX|GEN"},
    {"use_cuda_graph", LWB_OPT_BOOL, NULL, "false", "graph"},
    {"warmup_times", LWB_OPT_INT, "N", "20", "warm-up", NULL, LWB_OPT_NONNEG},
    {"eps", LWB_OPT_FLOAT, "X", NULL, "epsilon"},
    {"output", LWB_OPT_STR, "FILE", NULL, "output", NULL, 0, 'o'},
    {"target", LWB_OPT_STR, "FILE", NULL, "targets", NULL, LWB_OPT_REPEAT},
};
static const struct lwb_cmd_help t_help = {"t", "[options]", "test command", NULL};

struct parse_case {
    int argc;
    char *argv[8];
};

static void parse_child(void *arg) {
    struct parse_case *c = arg;
    struct lwb_args a;
    args_init(&a, "t", t_opts, (int)LWB_ARRAY_LEN(t_opts));
    args_parse(&a, &t_help, c->argc, c->argv, 1, "FILE");
    args_apply_defaults(&a);
    printf("parsed\n");
}

static struct child_result *expect_exit(int code, int argc, ...) {
    static struct child_result r;
    struct parse_case c = {.argc = argc};
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) c.argv[i] = va_arg(ap, char *);
    va_end(ap);
    run_child(parse_child, &c, &r);
    if (r.status != code) fprintf(stderr, "exit %d, stderr: %s\n", r.status, r.err);
    assert_int_equal(r.status, code);
    return &r;
}

static void test_values(void **state) {
    (void)state;
    struct lwb_args a;
    args_init(&a, "t", t_opts, (int)LWB_ARRAY_LEN(t_opts));
    char *argv[] = {"--batch-size", "1,2,64", "--balance-ratio=0.5,none", "--run-type", "GEN",
                    "--use-cuda-graph", "-o", "out.csv", "--target", "a.json", "--target", "b.json",
                    "cfg.yaml", "--eps=1e-6"};
    args_parse(&a, &t_help, (int)LWB_ARRAY_LEN(argv), argv, 1, "FILE");
    args_apply_defaults(&a);
    const struct lwb_val *b = arg_val(&a, "batch_size", LWB_OPT_INT_LIST);
    assert_int_equal(b->n, 3);
    assert_int_equal(b->ints[2], 64);
    const struct lwb_val *r = arg_val(&a, "balance_ratio", LWB_OPT_FLOAT_LIST);
    assert_int_equal(r->n, 2);
    assert_true(fabs(r->floats[0] - 0.5) < 1e-12);
    assert_false(r->nulls[0]);
    assert_true(r->nulls[1]);
    assert_string_equal(arg_str(&a, "run_type"), "GEN");
    assert_true(arg_bool(&a, "use_cuda_graph"));
    assert_int_equal(arg_int(&a, "warmup_times"), 20); // default
    assert_string_equal(arg_val(&a, "warmup_times", LWB_OPT_INT)->source, "default");
    assert_string_equal(arg_str(&a, "output"), "out.csv");
    const struct lwb_val *t = arg_val(&a, "target", LWB_OPT_STR);
    assert_int_equal(t->n, 2);
    assert_string_equal(t->strs[1], "b.json");
    assert_true(fabs(arg_float(&a, "eps") - 1e-6) < 1e-18);
    assert_int_equal(a.npos, 1);
    assert_string_equal(a.pos[0], "cfg.yaml");
    args_free(&a);

    args_init(&a, "t", t_opts, (int)LWB_ARRAY_LEN(t_opts));
    char *argv2[] = {"--no-use-cuda-graph", "--warmup-times", "0"};
    args_parse(&a, &t_help, 3, argv2, 0, NULL);
    assert_false(arg_bool(&a, "use_cuda_graph"));
    assert_true(arg_set(&a, "use_cuda_graph"));
    assert_int_equal(arg_int(&a, "warmup_times"), 0);
    assert_false(arg_set(&a, "eps"));
    args_free(&a);
}

static void test_errors(void **state) {
    (void)state;
    struct child_result *r;
    r = expect_exit(2, 2, "--bach-size", "4");
    assert_non_null(strstr(r->err, "did you mean '--batch-size'"));
    assert_int_equal(count_lines(r->err), 1);
    r = expect_exit(2, 2, "--batch-size", "abc");
    assert_non_null(strstr(r->err, "--batch-size must be a positive integer or a list of them (got \"abc\")"));
    r = expect_exit(2, 2, "--batch-size", "0");
    assert_non_null(strstr(r->err, "positive"));
    r = expect_exit(2, 2, "--batch-size", "1,,2");
    r = expect_exit(2, 2, "--batch-size", "1,");
    r = expect_exit(2, 2, "--run-type", "PREFILL");
    assert_non_null(strstr(r->err, "must be one of CTX, GEN"));
    r = expect_exit(2, 1, "--warmup-times");
    assert_non_null(strstr(r->err, "needs a value"));
    r = expect_exit(2, 2, "--balance-ratio", "-0.5");
    r = expect_exit(2, 4, "--eps", "1", "--eps", "2");
    assert_non_null(strstr(r->err, "given twice"));
    r = expect_exit(2, 2, "a.yaml", "b.yaml");
    assert_non_null(strstr(r->err, "too many arguments"));
    r = expect_exit(2, 1, "--no-use-cuda-graph=1");
    r = expect_exit(0, 1, "--use-cuda-graph=false");
    r = expect_exit(0, 1, "--help");
    assert_non_null(strstr(r->out, "usage: lwb t [options]"));
    assert_non_null(strstr(r->out, "--[no-]use-cuda-graph"));
    assert_non_null(strstr(r->out, "--run-type CTX|GEN"));
    assert_non_null(strstr(r->out, "(default: 20)"));
    assert_non_null(strstr(r->out, "-o, --output FILE"));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_values), cmocka_unit_test(test_errors)};
    return cmocka_run_group_tests_name("opts", tests, NULL, NULL);
}

// test_profiles.c: real profiles of one program made on the GPU machine, once under Nsight
// Systems (nsys 2025.3, --cuda-graph-trace node) and once by lwb's built-in profiler
// (test/gpu/profile_probe.c: the NVTX contract, problem 0 eager, problem 1 a replayed CUDA
// graph). The parser must give both the same module breakdown: the same rows and counts, mean
// durations within 5 % (or 0.5 us, for the 5 us copy), and graph kernels attributed to the ranges open at capture.
#include "test_common.h"

#define NSYS_PROBE "test/data/profiles/probe_nsys2025.3.sqlite"
#define LWB_PROBE "test/data/profiles/probe_lwb.sqlite"

static void open_bd(const char *path, struct lwb_trace *t, struct lwb_breakdown *b) {
    trace_open(t, path);
    struct lwb_bd_opts o = {.module = NULL, .warmup = -1};
    assert_true(breakdown_build(t, &o, b));
}

static void test_same_breakdown(void **state) {
    (void)state;
    struct lwb_trace tn, tl;
    struct lwb_breakdown bn, bl;
    open_bd(NSYS_PROBE, &tn, &bn);
    open_bd(LWB_PROBE, &tl, &bl);
    assert_int_equal(bn.np, 2);
    assert_int_equal(breakdown_compare(&bn, &bl, 0.05, 500, stderr), 0);
    breakdown_free(&bn), breakdown_free(&bl);
    trace_free(&tn), trace_free(&tl);
}

// Both problems (eager and graph) have every kernel under its module.
static void test_graph_paths(void **state) {
    (void)state;
    const char *files[] = {NSYS_PROBE, LWB_PROBE};
    for (int f = 0; f < 2; f++) {
        struct lwb_trace t;
        struct lwb_breakdown b;
        open_bd(files[f], &t, &b);
        for (int p = 0; p < 2; p++) {
            struct lwb_module_row *rows;
            int n = breakdown_module_rows(&b, p, &rows);
            int under_modules = 0;
            for (int i = 0; i < n; i++) {
                if (strstr(rows[i].path, "MLA") || strstr(rows[i].path, "Deepseekv3MoE")) under_modules++;
                assert_int_equal(rows[i].count, 1); // one of each per run
            }
            if (under_modules != 5) fprintf(stderr, "%s problem %d: %d rows under modules\n", files[f], p, under_modules);
            assert_int_equal(under_modules, 5); // 3 norms, a memset and a copy
            free(rows);
        }
        breakdown_free(&b);
        trace_free(&t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_same_breakdown), cmocka_unit_test(test_graph_paths)};
    return cmocka_run_group_tests_name("profiles", tests, NULL, NULL);
}

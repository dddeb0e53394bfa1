// test_e2e.c: `lwb parse --e2e` run whole (in a child) on end-to-end profiles built from
// test/data/e2e.sql (an eager MARK run and a CUDA-graph COLLECT run of one serving schedule):
// stdout against test/data/e2e.stdout, the timeline JSON, both forms of the executor's ranges,
// target filtering and the default target, warm-up, layers numbered from other than 0, every
// error (one line, exit 2, no output left behind), and lwb correlate reading the output. When
// test/data/e2e/ holds real Nsight Systems profiles of test/gpu/e2e_probe.c (made by
// test/gpu/e2e_run.sh), they are parsed too; without them those checks are skipped.
#include "parse_fixture.h"

#define E2E_REAL "test/data/e2e/"

// dir/name built from e2e.sql as a `mode` ('eager' or 'graph') run whose executor writes the
// `form` ('old' or 'new') and marks layers from `first_layer`, then `extra` (may be NULL).
static void e2e_fixture(const char *dir, const char *name, const char *mode, const char *form, int first_layer,
                        const char *extra) {
    char *path = lwb_path_join(dir, name);
    unlink(path);
    char *script = lwb_read_file("test/data/e2e.sql", NULL);
    assert_non_null(script);
    struct lwb_str sql = {0};
    str_printf(&sql, "CREATE TEMP TABLE e2e_cfg AS SELECT '%s' AS mode, '%s' AS form, %d AS first_layer;\n%s\n%s",
               mode, form, first_layer, script, extra ? extra : "");
    sql_run(path, sql.s);
    str_free(&sql);
    free(script), free(path);
}

// A folder with eager.sqlite and graph.sqlite of the default schedule (old form, layers 0..2).
static char *e2e_pair(const char *eager_extra, const char *graph_extra) {
    char *dir = make_tmpdir();
    e2e_fixture(dir, "eager.sqlite", "eager", "old", 0, eager_extra);
    e2e_fixture(dir, "graph.sqlite", "graph", "old", 0, graph_extra);
    return dir;
}

// The table rows of stdout: after the line of dashes, before "Wrote ..." (rotating buffers).
static const char *table_of(const char *out) {
    static char buf[4][4096];
    static int next;
    const char *t = strstr(out, "-----\n");
    assert_non_null(t);
    t += strlen("-----\n");
    const char *w = strstr(t, "Wrote ");
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%.*s", (int)(w ? (size_t)(w - t) : strlen(t)), t);
    return b;
}

// The timeline of an e2e JSON file: its one entry's list.
static json_t *timeline_load(const char *dir, const char *name, json_t **root) {
    char *p = lwb_path_join(dir, name);
    json_error_t err;
    *root = json_load_file(p, 0, &err);
    if (!*root) fail_msg("%s: %s", p, err.text);
    free(p);
    assert_int_equal(json_array_size(*root), 1);
    json_t *o = json_array_get(*root, 0);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "parse_e2e");
    return json_object_get(o, "timeline");
}

// The eager and graph pair: the golden stdout (layers 0 and 2: the graph's kernels, which lack
// the eager run's copies, placed through the alignment), and the JSON with each kernel's layer.
static void test_pair(void **state) {
    (void)state;
    struct child_result r;
    char *dir = e2e_pair(NULL, NULL);
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--graph-trace", "graph.sqlite",
            "--layer-indices", "0,2", "-o", "e2e.json", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_same_text(r.out, "test/data/e2e.stdout");
    assert_string_equal(r.err, ""); // no unknown torch kernel in layers 0 and 2
    json_t *root, *tl = timeline_load(dir, "e2e.json", &root);
    assert_int_equal(json_array_size(tl), 8);
    static const char *const modules[] = {"layer_idx 0", "layer_idx 2"};
    for (size_t i = 0; i < 8; i++) {
        json_t *e = json_array_get(tl, i);
        assert_string_equal(json_string_value(json_object_get(e, "module")), modules[i / 4]);
    }
    json_t *gemm = json_array_get(tl, 5); // layer 2's GEMM: 5 + (16, 17, 18 mod 3) = 6, 7, 5 us
    assert_string_equal(json_string_value(json_object_get(gemm, "name")), "nvjet_hsh_64x32_64x16_4x1_v_bz_TNT");
    assert_true(json_real_value(json_object_get(gemm, "duration")) == 6000.0);
    assert_true(json_real_value(json_object_get(gemm, "end")) == 102000.0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(tl, 3), "name")), "Memset");
    json_decref(root);
    assert_int_equal(files_with(dir, ".tmp."), 0);

    // Without the capture's node events the nodes keep their order (graphNodeId), with a warning.
    rm_rf(dir), free(dir);
    dir = e2e_pair(NULL, "DROP TABLE CUDA_GRAPH_NODE_EVENTS;");
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--graph-trace", "graph.sqlite",
            "--layer-indices", "0,2", "-o", "e2e.json", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_same_text(r.out, "test/data/e2e.stdout");
    assert_non_null(strstr(r.err, "CUDA-graph activities have no node creation event"));
    rm_rf(dir), free(dir);
}

// The eager trace alone (as for context iterations): its own kernels, copies included; the
// unknown torch kernel of layer 1 is warned about, and refused with --error-on-unknown-kernel.
static void test_eager_only(void **state) {
    (void)state;
    struct child_result r;
    char *dir = e2e_pair(NULL, NULL);
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--layer-indices", "1", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_true(str_starts(r.out, "Namespace(eager_trace='eager.sqlite', graph_trace=None, target_ctx_reqs=0, "
                                  "target_gen_reqs=None, layer_indices=[1], warmup_times=5, "
                                  "error_on_unknown_kernel=False, output=None)\n"));
    assert_non_null(strstr(r.out, "Iters (graph) 16 17 18\n#Kernels (eager) 19 19 19\n#Kernels (graph) 19 19 19\n"
                                  "#Kernels (supersequence) 19\n"));
    assert_string_equal(table_of(r.out), "torchCopy                                     1.0      1.0\n"
                                         "rmsNormKernel                                 2.0     12.0\n"
                                         "cuBLASGemm                                    6.0     26.0\n"
                                         "moeTopKKernel                                 4.0     34.0\n"
                                         "elementwise_kernel                            1.0     41.0\n"
                                         "Memset                                        1.0     51.0\n");
    assert_non_null(strstr(r.err, "Not parsed torch kernel name: void at::native::elementwise_kernel<128, 4,"));
    assert_int_equal(files_with(dir, ".json"), 0); // no -o: stdout only
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--layer-indices", "1",
            "--error-on-unknown-kernel", "-o", "x.json", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "1 torch kernel name is not in the short-name table"));
    assert_int_equal(files_with(dir, ".json"), 0);
    rm_rf(dir), free(dir);
}

// The newer executor text ("X ctx reqs, T ctx tokens, Y gen reqs") reads as the older one.
static void test_forms(void **state) {
    (void)state;
    struct child_result old_r, new_r;
    char *dir = make_tmpdir();
    e2e_fixture(dir, "old.sqlite", "eager", "old", 0, NULL);
    e2e_fixture(dir, "new.sqlite", "eager", "new", 0, NULL);
    e2e_fixture(dir, "newg.sqlite", "graph", "new", 0, NULL);
    run_cmd(&old_r, cmd_parse, dir, "--e2e", "--eager-trace", "old.sqlite", "--layer-indices", "2,0", NULL);
    run_cmd(&new_r, cmd_parse, dir, "--e2e", "--eager-trace", "new.sqlite", "--layer-indices", "2,0", NULL);
    assert_int_equal(old_r.status, 0);
    assert_int_equal(new_r.status, 0);
    assert_string_equal(strchr(old_r.out, '\n'), strchr(new_r.out, '\n')); // all but the Namespace line
    run_cmd(&new_r, cmd_parse, dir, "--e2e", "--eager-trace", "new.sqlite", "--graph-trace", "newg.sqlite",
            "--layer-indices", "0,2", NULL);
    if (new_r.status) fail_msg("exit %d: %s", new_r.status, new_r.err);
    char *want = lwb_read_file("test/data/e2e.stdout", NULL);
    assert_string_equal(table_of(new_r.out), table_of(want));
    free(want);
    rm_rf(dir), free(dir);
}

// Targets: the default generation count, explicit counts, context iterations (eager even in
// the graph run), warm-up.
static void test_targets(void **state) {
    (void)state;
    struct child_result r;
    char *dir = e2e_pair(NULL, NULL);
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--graph-trace", "graph.sqlite",
            "--layer-indices", "0", "--target-gen-reqs", "4", "--warmup-times", "1", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "target_ctx_reqs=0 target_gen_reqs=4\nIters (eager) 21 22\n"));
    assert_non_null(strstr(r.out, "Iters (graph) 21 22\n#Kernels (eager) 19 19\n#Kernels (graph) 16 16\n"));
    // 21 and 22 mod 3 = 0 and 1: the GEMM takes 5.5 us.
    assert_non_null(strstr(r.out, "cuBLASGemm                                    5.5     13.5\n"));

    // The mixed iteration 19 runs eagerly in the graph run as well: its copies are there.
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--graph-trace", "graph.sqlite",
            "--layer-indices", "0", "--target-ctx-reqs", "1", "--target-gen-reqs", "3", "--warmup-times", "0", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "target_ctx_reqs=1 target_gen_reqs=3\nIters (eager) 19\n"));
    assert_non_null(strstr(r.out, "#Kernels (graph) 19\n#Kernels (supersequence) 19\n"));
    assert_non_null(strstr(r.out, "torchCopy                                     1.0      1.0\n"));

    // With context requests the default generation count is 0 (the reference's rule).
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--layer-indices", "0",
            "--target-ctx-reqs", "2", "--warmup-times", "0", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "target_ctx_reqs=2 target_gen_reqs=0\nIters (eager) 10\n"));

    // Warm-up: 7 of the 8 iterations dropped leave 18 (18 mod 3 = 0: the GEMM takes 5 us); none
    // dropped leaves all eight.
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--layer-indices", "0",
            "--warmup-times", "7", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "Iters (eager) 18\n"));
    assert_non_null(strstr(r.out, "cuBLASGemm                                    5.0"));
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--layer-indices", "0",
            "--warmup-times", "0", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "Iters (eager) 11 12 13 14 15 16 17 18\n"));
    rm_rf(dir), free(dir);
}

// Layers are found by the number in their range text, not by their place among the marked
// ones; a layer marked twice per iteration contributes both passes.
static void test_layer_numbers(void **state) {
    (void)state;
    struct child_result r, base;
    char *dir = make_tmpdir();
    e2e_fixture(dir, "e0.sqlite", "eager", "old", 0, NULL);
    e2e_fixture(dir, "e4.sqlite", "eager", "old", 4, NULL);
    e2e_fixture(dir, "g4.sqlite", "graph", "old", 4, NULL);
    run_cmd(&base, cmd_parse, dir, "--e2e", "--eager-trace", "e0.sqlite", "--layer-indices", "1", NULL);
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "e4.sqlite", "--layer-indices", "5", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "Layers (eager) 4 5 6\n"));
    assert_string_equal(table_of(r.out), table_of(base.out));
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "e4.sqlite", "--graph-trace", "g4.sqlite",
            "--layer-indices", "4,6", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    char *want = lwb_read_file("test/data/e2e.stdout", NULL);
    assert_string_equal(table_of(r.out), table_of(want));
    free(want);

    e2e_fixture(dir, "twice.sqlite", "eager", "old", 0,
                "UPDATE StringIds SET value = 'layer_wise_benchmarks layer_idx 0' WHERE id = 52;");
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "twice.sqlite", "--layer-indices", "0", "-o", "t.json", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "Layers (eager) 0 1 0\n"));
    json_t *root, *tl = timeline_load(dir, "t.json", &root);
    assert_int_equal(json_array_size(tl), 10); // two passes of copy, norm, GEMM, MoE, memset
    assert_true(json_real_value(json_object_get(json_array_get(tl, 9), "end")) == 151000.0);
    json_decref(root);
    rm_rf(dir), free(dir);
}

// One error: exit 2, one line holding `msg`, and no output file.
static void expect_e2e_error(const char *eager_extra, const char *graph_extra, const char *a1, const char *a2,
                             const char *a3, const char *a4, const char *msg) {
    struct child_result r;
    char *dir = e2e_pair(eager_extra, graph_extra);
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--graph-trace", "graph.sqlite", "-o",
            "out.json", a1, a2, a3, a4, NULL);
    if (r.status != 2 || !strstr(r.err, msg))
        fail_msg("exit %d, stderr: %s (wanted 2 and \"%s\")", r.status, r.err, msg);
    const char *last = r.err, *nl;
    while ((nl = strchr(last, '\n')) && nl[1]) last = nl + 1; // warnings may come first
    assert_non_null(strstr(last, msg));
    assert_int_equal(files_with(dir, "out."), 0);
    assert_int_equal(files_with(dir, ".json"), 0);
    rm_rf(dir), free(dir);
}

static void test_errors(void **state) {
    (void)state;
    const char *all = "--layer-indices", *l0 = "0";
    expect_e2e_error(NULL, NULL, all, l0, "--target-gen-reqs", "9",
                     "no iteration of eager.sqlite (the eager trace) has 0 ctx reqs and 9 gen reqs; its iterations "
                     "have 2 ctx reqs and 0 gen reqs (1), 0 ctx reqs and 3 gen reqs (8), 1 ctx reqs and 3 gen reqs "
                     "(1), 0 ctx reqs and 4 gen reqs (3)");
    expect_e2e_error("DELETE FROM NVTX_EVENTS WHERE domainId = 2 AND textId NOT IN (110, 119);", NULL, all, l0,
                     NULL, NULL,
                     "cannot choose --target-gen-reqs: no iteration of eager.sqlite has 0 ctx reqs (it has 2 ctx "
                     "reqs and 0 gen reqs (1), 1 ctx reqs and 3 gen reqs (1))");
    expect_e2e_error(NULL, NULL, all, l0, "--target-gen-reqs", "4",
                     "eager.sqlite (the eager trace) has 3 iterations with 0 ctx reqs and 4 gen reqs and "
                     "--warmup-times drops 5, so none is left; give --warmup-times less than 3");
    expect_e2e_error(NULL, "DELETE FROM NVTX_EVENTS WHERE textId = 112;", all, l0, NULL, NULL,
                     "the iteration ids differ between the traces: the eager trace keeps 16 17 18, the graph trace "
                     "17 18 (first difference at position 0)");
    expect_e2e_error("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET demangledName = 34 WHERE correlationId = 1709;", NULL,
                     all, l0, NULL, NULL,
                     "eager.sqlite (the eager trace): iteration 17 launches other kernels than iteration 16: kernel 8 "
                     "is \"void tensorrt_llm::kernels::moeTopKKernel<float, 8>(tensorrt_llm::kernels::MoeParams)\" "
                     "instead of \"nvjet_hsh_64x32_64x16_4x1_v_bz_TNT\" (19 and 19 kernels)");
    expect_e2e_error(NULL, "DELETE FROM CUPTI_ACTIVITY_KIND_KERNEL WHERE correlationId = 1899 AND graphNodeId = 318;",
                     all, l0, NULL, NULL,
                     "graph.sqlite (the graph trace): iteration 18 launches other kernels than iteration 16: kernel 14 "
                     "is \"void tensorrt_llm::kernels::samplingTopKKernel<float>");
    expect_e2e_error("DELETE FROM NVTX_EVENTS WHERE textId = 52 AND start = 2710000;", NULL, all, l0, NULL, NULL,
                     "the layer ranges differ across iterations: iteration 18 marks layers 0 1, iteration 16 marks "
                     "0 1 2; every kept iteration must run the same layers");
    expect_e2e_error(NULL, NULL, all, "1,7", NULL, NULL,
                     "--layer-indices: layer 7 is not marked in eager.sqlite (its iterations mark layers 0 1 2)");
    expect_e2e_error(NULL, NULL, all, "1,1", NULL, NULL, "--layer-indices names layer 1 twice");
    expect_e2e_error("DELETE FROM NVTX_EVENTS WHERE textId BETWEEN 50 AND 52;", NULL, all, l0, NULL, NULL,
                     "eager.sqlite has no \"layer_wise_benchmarks layer_idx <i>\" ranges in its kept iterations");
    expect_e2e_error("INSERT INTO StringIds VALUES (60, 'layer_wise_benchmarks layer_idx 5');"
                     "INSERT INTO NVTX_EVENTS (start, end, eventType, textId, globalTid, domainId) "
                     "SELECT start + 150000, start + 160000, 59, 60, globalTid, 0 FROM NVTX_EVENTS WHERE domainId = 2;",
                     NULL, all, "5", NULL, NULL, "layer 5 launches no kernel inside its layer_idx ranges in eager.sqlite");
    expect_e2e_error("DELETE FROM NVTX_EVENTS WHERE domainId = 2;", NULL, all, l0, NULL, NULL,
                     "eager.sqlite (the eager trace) has no \"[Executor] _forward_step N: X ctx reqs, Y gen reqs\" "
                     "ranges");
    expect_e2e_error(NULL,
                     "INSERT INTO NVTX_EVENTS (start, end, eventType, textId, globalTid, domainId) "
                     "VALUES (5000000, 5100000, 59, 111, 281474976710656 + 5152 * 16777216 + 5152, 2);",
                     all, l0, NULL, NULL, "executor ranges come from more than one process (pids 5151 and 5152)");
    // An iteration number no profile holds; iterations that launch nothing.
    expect_e2e_error("UPDATE StringIds SET value = '[Executor] _forward_step 1234567890123456789: 0 ctx reqs, 3 gen "
                     "reqs' WHERE id = 112;",
                     NULL, all, l0, NULL, NULL, "a range's number has more than 18 digits");
    expect_e2e_error(NULL, "DELETE FROM CUPTI_ACTIVITY_KIND_RUNTIME;", all, l0, NULL, NULL,
                     "the graph trace graph.sqlite has no kernel launched inside its kept iterations");
    // NCCL's domain holds no iterations.
    expect_e2e_error("UPDATE NVTX_EVENTS SET domainId = 1 WHERE domainId = 2 AND eventType = 59;", NULL, all, l0, NULL, NULL,
                     "has no \"[Executor] _forward_step");
    // The options of the two modes.
    expect_e2e_error(NULL, NULL, all, l0, "--module", "MoE", "parse: --module does not apply with --e2e");
    expect_e2e_error(NULL, NULL, NULL, NULL, NULL, NULL, "parse --e2e: give --layer-indices LIST");

    struct child_result r;
    char *dir = e2e_pair(NULL, NULL);
    static const char *const cases[][5] = {
        {"--e2e", "--layer-indices", "0", NULL, "parse --e2e: give --eager-trace FILE"},
        {"--e2e", "--eager-trace", "eager.sqlite", "--layer-indices", "--layer-indices needs a value"},
        {"--file-path", "eager.sqlite", "--layer-indices", "0", "parse: --layer-indices belongs to the end-to-end mode; add --e2e"},
        {"--file-path", "eager.sqlite", "-o", "x.json", "parse: --output belongs to the end-to-end mode"},
    };
    for (size_t i = 0; i < LWB_ARRAY_LEN(cases); i++) {
        run_cmd(&r, cmd_parse, dir, cases[i][0], cases[i][1], cases[i][2], cases[i][3], NULL);
        if (r.status != 2 || !strstr(r.err, cases[i][4]) || count_lines(r.err) != 1)
            fail_msg("case %zu: exit %d, stderr: %s (wanted 2 and \"%s\")", i, r.status, r.err, cases[i][4]);
    }
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--layer-indices", "0", "-o", "t.csv", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "--output must name a .json file (got \"t.csv\")"));
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "missing.sqlite", "--layer-indices", "0", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "missing.sqlite"));
    assert_int_equal(files_with(dir, ".json"), 0);
    rm_rf(dir), free(dir);
}

// The timeline feeds lwb correlate, which finds its per-layer modules.
static void test_correlate(void **state) {
    (void)state;
    struct child_result r;
    char *dir = e2e_pair(NULL, NULL);
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--graph-trace", "graph.sqlite",
            "--layer-indices", "0,2", "-o", "graph.json", NULL);
    assert_int_equal(r.status, 0);
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", "eager.sqlite", "--layer-indices", "0,2", "-o", "eager.json",
            NULL);
    assert_int_equal(r.status, 0);
    run_cmd(&r, cmd_correlate, dir, "--reference", "graph.json", "--target", "eager.json", "-o", "c.html", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    // The eager timeline has a copy before each layer's kernels: interpolated in.
    assert_non_null(strstr(r.out, "target 0 timeline 0 x_sup=[None, 1, 2, 3, 4, None, 5, 6, 7, 8]\n"));
    assert_non_null(strstr(r.out, "  module                                   reference us    target us"));
    assert_non_null(strstr(r.out, "layer_idx 2"));
    assert_int_equal(files_with(dir, "c.html"), 1);
    rm_rf(dir), free(dir);
}

// Real profiles of test/gpu/e2e_probe.c (4 layers of lwb's rmsnorm, GEMM and quantisation;
// profiled from iteration 2: 2-12 with 4 generation requests, 13 mixed, 14-19 with 5), when
// test/data/e2e/ holds them.
static void check_real_timeline(const char *dir, const char *name, int nlayers, const char *const *modules) {
    json_t *root, *tl = timeline_load(dir, name, &root);
    size_t n = json_array_size(tl);
    assert_true(n > 0 && n % (size_t)nlayers == 0);
    int rmsnorm = 0, gemm = 0, quant = 0;
    double last_end = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(tl, i);
        const char *kn = json_string_value(json_object_get(e, "name"));
        rmsnorm += !strcmp(kn, "lwb_rmsnorm"), gemm += !strcmp(kn, "lwb_gemm"), quant += !strcmp(kn, "lwb_quant_1x128");
        assert_string_equal(json_string_value(json_object_get(e, "module")), modules[i / (n / (size_t)nlayers)]);
        double d = json_real_value(json_object_get(e, "duration")), end = json_real_value(json_object_get(e, "end"));
        assert_true(d > 0 && end >= d && end > last_end);
        last_end = end;
    }
    assert_int_equal(rmsnorm, nlayers);
    assert_int_equal(gemm, nlayers);
    assert_int_equal(quant, nlayers);
    json_decref(root);
}

static void test_real(void **state) {
    (void)state;
    static const char *const need[] = {E2E_REAL "e2e_eager.sqlite", E2E_REAL "e2e_graph.sqlite",
                                       E2E_REAL "e2e_eager_new.sqlite"};
    for (size_t i = 0; i < LWB_ARRAY_LEN(need); i++)
        if (access(need[i], R_OK) != 0) {
            fprintf(stderr, "test_e2e: %s is absent (test/gpu/e2e_run.sh makes it on the GPU machine): real "
                            "profiles not checked\n", need[i]);
            skip();
        }
    struct child_result r;
    char *dir = make_tmpdir();
    char *eager = realpath(need[0], NULL), *graph = realpath(need[1], NULL), *newer = realpath(need[2], NULL);
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", eager, "--graph-trace", graph, "--layer-indices", "1,2",
            "-o", "pair.json", NULL);
    if (r.status) fail_msg("exit %d: %s\n%s", r.status, r.err, r.out);
    assert_non_null(strstr(r.out, "target_ctx_reqs=0 target_gen_reqs=4\nIters (eager) 7 8 9 10 11 12\n"
                                  "Layers (eager) 0 1 2 3\nIters (graph) 7 8 9 10 11 12\n"));
    static const char *const m12[] = {"layer_idx 1", "layer_idx 2"};
    check_real_timeline(dir, "pair.json", 2, m12);
    // The newer executor text, layers marked from 2; the generation iterations with 5 requests.
    run_cmd(&r, cmd_parse, dir, "--e2e", "--eager-trace", newer, "--layer-indices", "3", "--target-gen-reqs", "5",
            "--warmup-times", "1", "-o", "new.json", NULL);
    if (r.status) fail_msg("exit %d: %s\n%s", r.status, r.err, r.out);
    assert_non_null(strstr(r.out, "Iters (eager) 15 16 17 18 19\nLayers (eager) 2 3 4 5\n"));
    static const char *const m3[] = {"layer_idx 3"};
    check_real_timeline(dir, "new.json", 1, m3);
    run_cmd(&r, cmd_correlate, dir, "--reference", "pair.json", "--target", "new.json", "-o", "c.html", NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    free(eager), free(graph), free(newer);
    rm_rf(dir), free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pair),    cmocka_unit_test(test_eager_only),    cmocka_unit_test(test_forms),
        cmocka_unit_test(test_targets), cmocka_unit_test(test_layer_numbers), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_correlate), cmocka_unit_test(test_real),
    };
    return cmocka_run_group_tests_name("e2e", tests, NULL, NULL);
}

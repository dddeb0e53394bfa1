// test_trace.c: trace.h on real Nsight Systems exports of three versions (counts checked with
// sqlite3 against each file: kernels, launches found, kernels inside an NVTX range), on the
// layer-wise fixture (graph nodes, threads, domains, attribution), on broken profiles, and the
// helpers (short names, shortest common supersequence).
#include "parse_fixture.h"

static size_t kernels_enclosed(const struct lwb_trace *t, enum lwb_act_kind kind) {
    size_t n = 0;
    for (size_t i = 0; i < t->nk; i++) n += t->k[i].kind == kind && t->k[i].range >= 0;
    return n;
}
static int range_depth(const struct lwb_trace *t, int32_t r) {
    int d = 0;
    for (; r >= 0; r = t->r[r].parent) d++;
    return d;
}
static int max_depth(const struct lwb_trace *t) {
    int d = 0;
    for (size_t i = 0; i < t->nk; i++) d = LWB_MAX(d, range_depth(t, t->k[i].range));
    return d;
}
// Every activity's launch (and NVTX site) is on a thread of its own process.
static void assert_launch_in_process(const struct lwb_trace *t) {
    for (size_t i = 0; i < t->nk; i++)
        if (!(t->k[i].flags & LWB_K_NO_LAUNCH)) assert_true((t->k[i].site_tid & LWB_PROC_MASK) == t->k[i].pid);
}
static bool innermost_is(const struct lwb_trace *t, const struct lwb_trace_kernel *k, const char *text) {
    return k->range >= 0 && !strcmp(trace_str(t, t->r[k->range].text), text);
}

// nsys 2024.6: 19 kernels, all launched (cudaLaunchKernel, cuLaunchKernel, cuLaunchKernelEx),
// 2 inside ranges (innermost ExecutorRunFusion::cuLaunchKernel, ...allocateTensor), depth 3.
static void test_nsys_2024_6(void **state) {
    (void)state;
    struct lwb_trace t;
    trace_open(&t, NSYS_MATMUL);
    assert_string_equal(t.product, "NVIDIA Nsight Systems");
    assert_string_equal(t.version, "2024.6.2.25");
    assert_int_equal(t.count[LWB_ACT_KERNEL], 19);
    assert_int_equal(t.count[LWB_ACT_MEMCPY], 1);
    assert_int_equal(t.count[LWB_ACT_MEMSET], 1);
    assert_int_equal(t.no_launch, 0);
    assert_int_equal(t.runtime_rows, 968);
    assert_int_equal(t.nr, 652);
    assert_int_equal(kernels_enclosed(&t, LWB_ACT_KERNEL), 2);
    assert_int_equal(max_depth(&t), 3);
    int a = 0, b = 0;
    for (size_t i = 0; i < t.nk; i++) {
        a += innermost_is(&t, &t.k[i], "ExecutorRunFusion::cuLaunchKernel");
        b += innermost_is(&t, &t.k[i], "fusion_executor::allocations::allocateTensor");
    }
    assert_int_equal(a, 1);
    assert_int_equal(b, 1);
    assert_launch_in_process(&t);
    trace_free(&t);
}

// nsys 2025.1: 18 kernels, 8 inside ranges at depth 8 or 7; runtime rows of two processes
// share correlationIds 1 and 127.
static void test_nsys_2025_1(void **state) {
    (void)state;
    struct lwb_trace t;
    trace_open(&t, NSYS_XENT);
    assert_string_equal(t.version, "2025.1.1.110");
    assert_int_equal(t.count[LWB_ACT_KERNEL], 18);
    assert_int_equal(t.count[LWB_ACT_MEMCPY], 3);
    assert_int_equal(t.count[LWB_ACT_MEMSET], 3);
    assert_int_equal(t.no_launch, 0);
    assert_int_equal(kernels_enclosed(&t, LWB_ACT_KERNEL), 8);
    assert_int_equal(max_depth(&t), 8);
    int deep = 0, launch = 0, inter = 0;
    for (size_t i = 0; i < t.nk; i++) {
        deep += range_depth(&t, t.k[i].range) == 8;
        launch += innermost_is(&t, &t.k[i], "ExecutorRunFusion::cuLaunchKernel");
        inter += innermost_is(&t, &t.k[i], "KernelExecutor::runFusion::intermediates");
    }
    assert_int_equal(deep, 6);
    assert_int_equal(launch, 6);
    assert_int_equal(inter, 2);
    assert_launch_in_process(&t);
    trace_free(&t);
}

// nsys 2022.2: old schema (EXPORT_META_DATA, no ENUM tables, a stray `name` column), 5 kernels
// each inside "saxpy" (inline text, default domain), 15 memcpys outside the MPI-domain ranges
// (registered strings), and 38 backtrace duplicates (eventClass 67) among the 95 runtime rows:
// without the class filter each kernel would join two rows.
static void test_nsys_2022_2(void **state) {
    (void)state;
    struct lwb_trace t;
    trace_open(&t, NSYS_PIPIT);
    assert_string_equal(t.version, "2022.2.1.31");
    assert_int_equal(t.count[LWB_ACT_KERNEL], 5);
    assert_int_equal(t.count[LWB_ACT_MEMCPY], 15);
    assert_int_equal(t.count[LWB_ACT_MEMSET], 0);
    assert_int_equal(t.runtime_rows, 57);
    assert_int_equal(t.runtime_skipped, 38);
    assert_int_equal(t.no_launch, 0);
    assert_int_equal(kernels_enclosed(&t, LWB_ACT_KERNEL), 5);
    assert_int_equal(kernels_enclosed(&t, LWB_ACT_MEMCPY), 0);
    for (size_t i = 0; i < t.nk; i++)
        if (t.k[i].kind == LWB_ACT_KERNEL) assert_true(innermost_is(&t, &t.k[i], "saxpy"));
    int mpi = 0;
    for (size_t i = 0; i < t.nr; i++)
        if (t.r[i].domain >= 0) {
            assert_string_equal(trace_str(&t, t.r[i].domain), "MPI");
            mpi++;
        }
    assert_int_equal(mpi, 17); // MPI_Init, MPI_Send x10, MPI_Recv x5, MPI_Finalize
    trace_free(&t);
}

// The layer-wise fixture: graph kernels get the ranges of their capture, eager kernels those of
// their launch; the other thread's range and the backtrace duplicate are ignored; a runtime row
// of another process with the same correlationId does not capture the kernel.
static void test_fixture_sites(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    char *path = fixture_build(dir, "p.sqlite",
                               "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (6000000, 6000500, 0, "
                               "281474976710656 + 777 * 16777216 + 777, 301, 1, 0, NULL);");
    struct lwb_trace t;
    trace_open(&t, path);
    assert_int_equal(t.count[LWB_ACT_KERNEL], 48);
    assert_int_equal(t.count[LWB_ACT_MEMSET], 8);
    assert_int_equal(t.count[LWB_ACT_MEMCPY], 4);
    assert_int_equal(t.graph_nodes, 21); // 3 replays x (6 kernels + 1 memset)
    assert_int_equal(t.graph_no_node, 0);
    assert_int_equal(t.no_launch, 0);
    assert_int_equal(t.runtime_skipped, 1);
    int graph = 0;
    for (size_t i = 0; i < t.nk; i++) {
        const struct lwb_trace_kernel *k = &t.k[i];
        if (k->corr == 301) assert_int_equal(k->launch, 1302000); // its own process's row
        if (!(k->flags & LWB_K_GRAPH)) continue;
        graph++;
        // Node 2xx was cloned from 1xx, created at the capture (CPU 2100 + offset).
        assert_true(k->site_start >= 2100000 && k->site_start < 2150000);
        assert_true(k->launch >= 2301000);
        if (k->graph_node == 203) assert_true(innermost_is(&t, k, "DeepseekV3Gate"));
        if (k->graph_node == 204) assert_true(innermost_is(&t, k, "MoE"));
        if (k->graph_node == 201) assert_true(innermost_is(&t, k, "MLA"));
    }
    assert_int_equal(graph, 21);
    for (size_t i = 0; i < t.nk; i++) // DataLoader is on another thread
        for (int32_t r = t.k[i].range; r >= 0; r = t.r[r].parent)
            assert_string_not_equal(trace_str(&t, t.r[r].text), "DataLoader");
    trace_free(&t);
    free(path);
    rm_rf(dir);
    free(dir);
}

static void test_breakdown_rows(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    char *path = fixture_build(dir, "p.sqlite", NULL);
    struct lwb_trace t;
    trace_open(&t, path);
    struct lwb_breakdown b;
    struct lwb_bd_opts o = {NULL, -1};
    assert_true(breakdown_build(&t, &o, &b));
    assert_int_equal(b.np, 2);
    assert_int_equal(b.warmup, 1);
    assert_true(b.warmup_from_profile);
    assert_string_equal(b.p[0].text, "b=1 s=1 past=100 NP1");
    assert_string_equal(b.p[1].text, "b=2 s=1 past=100 NP1");
    assert_int_equal(b.p[0].nruns, 3);
    assert_int_equal(b.p[0].nk, 7);
    assert_int_equal(b.p[1].nk, 7);
    assert_true(fabs(b.p[0].total_ns - 75000) < 1e-6);
    assert_true(fabs(b.p[1].total_ns - 79000) < 1e-6);
    assert_true(fabs(b.p[0].overlap_ns + 4000) < 1e-6);
    assert_true(fabs(b.p[0].space_ns - 6000) < 1e-6);
    assert_int_equal(t.unknown_kernels, 1); // the AbsFunctor elementwise kernel
    struct lwb_module_row *rows;
    int n = breakdown_module_rows(&b, 1, &rows);
    assert_int_equal(n, 7);
    assert_string_equal(rows[0].path, "MLA");
    assert_string_equal(rows[0].short_name, "mlaRopeKernel");
    assert_true(fabs(rows[0].mean_ns - 15000) < 1e-6);
    assert_string_equal(rows[1].short_name, "cutlassGemm");
    assert_string_equal(rows[2].path, "Deepseekv3MoE > DeepseekV3Gate");
    assert_string_equal(rows[3].path, "Deepseekv3MoE > MoE");
    assert_string_equal(rows[3].name, "Memset");
    assert_int_equal(rows[4].count, 1);
    assert_string_equal(rows[6].path, "");
    assert_string_equal(rows[6].short_name, "elementwise_kernel");
    free(rows);
    // Merged table: MLA's two different gemms both present, 0 where a problem lacks one.
    assert_int_equal(b.nmerged, 11);
    assert_string_equal(trace_str(&t, b.cat[b.merged[1]].leaf), "cuBLASGemm");
    assert_string_equal(trace_str(&t, b.cat[b.merged[2]].leaf), "cutlassGemm");
    assert_true(b.value[1 * 2 + 1] == 0 && b.value[2 * 2 + 0] == 0);
    assert_true(b.value[1 * 2 + 0] == 20000 && b.value[2 * 2 + 1] == 20000);
    breakdown_free(&b);
    // --module MoE: only MoE's kernels; overlap stays, the gaps do not.
    o.module = "MoE";
    assert_true(breakdown_build(&t, &o, &b));
    assert_int_equal(b.p[0].nk, 3);
    assert_true(fabs(b.p[0].total_ns - 31000) < 1e-6);
    assert_true(fabs(b.p[0].space_ns) < 1e-9);
    breakdown_free(&b);
    trace_free(&t);
    free(path);
    rm_rf(dir);
    free(dir);
}

// Two profiles of one run: equal when names and counts match and means are within 5 %.
static int compare_fixtures(const char *dir, const char *extra) {
    char *pa = fixture_build(dir, "a.sqlite", NULL), *pb = fixture_build(dir, "b.sqlite", extra);
    struct lwb_trace ta, tb;
    trace_open(&ta, pa), trace_open(&tb, pb);
    struct lwb_breakdown a, b;
    struct lwb_bd_opts o = {NULL, -1};
    assert_true(breakdown_build(&ta, &o, &a));
    assert_true(breakdown_build(&tb, &o, &b));
    int n = breakdown_compare(&a, &b, 0.05, 0, stderr);
    breakdown_free(&a), breakdown_free(&b), trace_free(&ta), trace_free(&tb);
    free(pa), free(pb);
    return n;
}
static void test_compare(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    assert_int_equal(compare_fixtures(dir, NULL), 0);
    const char *scale = "UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET end = start + CAST((end - start) * %s AS INTEGER);";
    char sql[256];
    snprintf(sql, sizeof sql, scale, "1.04");
    assert_int_equal(compare_fixtures(dir, sql), 0);
    snprintf(sql, sizeof sql, scale, "1.10");
    assert_int_equal(compare_fixtures(dir, sql), 12); // every kernel row of both problems
    assert_int_equal(compare_fixtures(dir, "UPDATE StringIds SET value = 'other' WHERE id = 13;"), 2);
    rm_rf(dir);
    free(dir);
}

// Profiles that cannot be read: one line, exit 2, never a crash.
struct open_case {
    const char *path;
};
static void open_child(void *arg) {
    struct lwb_trace t;
    trace_open(&t, ((struct open_case *)arg)->path);
    printf("kernels %zu no_launch %zu enclosed %zu graph_no_node %zu\n", t.nk, t.no_launch, t.enclosed,
           t.graph_no_node);
}
static struct child_result *open_expect(const char *path, int status, const char *err) {
    static struct child_result r;
    struct open_case c = {path};
    run_child(open_child, &c, &r);
    if (r.status != status || (err && !strstr(r.err, err)))
        fail_msg("%s: status %d, stderr: %s (wanted %d, \"%s\")", path, r.status, r.err, status, err ? err : "");
    if (status == 2) assert_int_equal(count_lines(r.err), 1);
    return &r;
}

static void test_malformed(void **state) {
    (void)state;
    char *dir = make_tmpdir(), *p;
    p = lwb_path_join(dir, "text.sqlite");
    assert_int_equal(lwb_write_file_atomic(p, "kernel,start,end\n1,2,3\n", 23), 0);
    open_expect(p, 2, "file is not a database");
    free(p);
    p = lwb_path_join(dir, "empty.sqlite");
    assert_int_equal(lwb_write_file_atomic(p, "", 0), 0);
    open_expect(p, 2, "no CUPTI_ACTIVITY_KIND_KERNEL table");
    free(p);
    // Truncated: the header promises pages that are not there.
    p = file_copy(NSYS_XENT, dir, "cut.sqlite");
    assert_int_equal(truncate(p, 600000), 0);
    open_expect(p, 2, "cannot read the profile");
    free(p);
    p = lwb_path_join(dir, "missing.sqlite");
    open_expect(p, 2, "No such file");
    free(p);
    open_expect(dir, 2, "the profile is a folder; give a regular file");

    p = fixture_build(dir, "nokernel.sqlite", "DROP TABLE CUPTI_ACTIVITY_KIND_KERNEL;");
    open_expect(p, 2, "no CUDA kernels (no CUPTI_ACTIVITY_KIND_KERNEL table)");
    free(p);
    p = fixture_build(dir, "nostrings.sqlite", "DROP TABLE StringIds;");
    open_expect(p, 2, "no StringIds table");
    free(p);
    p = fixture_build(dir, "nostart.sqlite", "ALTER TABLE CUPTI_ACTIVITY_KIND_KERNEL DROP COLUMN start;");
    open_expect(p, 2, "table CUPTI_ACTIVITY_KIND_KERNEL has no column 'start'");
    free(p);
    // Absent optional tables: read as empty, with a warning where something is lost.
    struct child_result *r;
    p = fixture_build(dir, "noruntime.sqlite", "DROP TABLE CUPTI_ACTIVITY_KIND_RUNTIME;");
    r = open_expect(p, 0, "60 of 60 GPU activities have no launch call");
    assert_non_null(strstr(r->out, "kernels 60 no_launch 60 enclosed 0"));
    free(p);
    p = fixture_build(dir, "nonvtx.sqlite", "DROP TABLE NVTX_EVENTS; DROP TABLE CUPTI_ACTIVITY_KIND_MEMSET;"
                                            "DROP TABLE CUPTI_ACTIVITY_KIND_MEMCPY; DROP TABLE META_DATA_EXPORT;"
                                            "DROP TABLE ENUM_NSYS_EVENT_TYPE;");
    r = open_expect(p, 0, NULL);
    assert_non_null(strstr(r->out, "kernels 48 no_launch 0 enclosed 0"));
    free(p);
    p = fixture_build(dir, "nographnodes.sqlite", "DROP TABLE CUDA_GRAPH_NODE_EVENTS;");
    r = open_expect(p, 0, "21 CUDA-graph activities have no node creation event");
    assert_non_null(strstr(r->out, "graph_no_node 21"));
    free(p);
    // One launch call missing: a warning naming its correlationId.
    p = fixture_build(dir, "nolaunch.sqlite", "DELETE FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE correlationId = 103;");
    r = open_expect(p, 0, "1 of 60 GPU activities have no launch call in CUPTI_ACTIVITY_KIND_RUNTIME (first: correlationId 103)");
    free(p);
    // NULL text and textId, NULL thread, an open range, a registered string that is missing.
    p = fixture_build(dir, "oddnvtx.sqlite",
                      "INSERT INTO NVTX_EVENTS (start, end, eventType, globalTid) VALUES (1, NULL, 59, NULL);"
                      "INSERT INTO NVTX_EVENTS (start, end, eventType, textId, globalTid) VALUES (5, 9, 59, 999, NULL);"
                      "UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET demangledName = 12345 WHERE rowid = 1;");
    r = open_expect(p, 0, NULL);
    free(p);
    rm_rf(dir);
    free(dir);
}

static void test_short_names(void **state) {
    (void)state;
    static const char *cases[][2] = {
        {"nvjet_hsh_128x64_64x4_2x1_v_bz_TNT", "cuBLASGemm"},
        {"void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<X>>(P)", "cutlassGroupGemm"},
        {"void cutlass::Kernel2<cutlass::gemm::kernel::GemmUniversal<X>>(P)", "cutlassGemm"},
        {"void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::sum_functor<float>>>(R)",
         "torchReduceSum"},
        {"void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MaxOps<float>>>(R)",
         "reduce_kernel"},
        {"void at::native::<unnamed>::where_kernel_impl(at::TensorIterator &)::{lambda()#1}", "torchWhere"},
        {"void tensorrt_llm::kernels::fooKernel<T, 4>(P)", "fooKernel"},
        {"void fooKernel(int)", "void fooKernel"},
        {"k", "k"},
        {"void at::native::<unnamed>::fused_dropout_kernel<float>(int)", "fused_dropout_kernel"},
        {"void ns::<unnamed>::helper(int)", "helper"},
        {"void (anonymous)::helper(int)", "void "}, // cut at the first (, as the reference
        {"void ns::<unnamed>(int)", "<unnamed>"},
        {"Memset", "Memset"},
    };
    char buf[256];
    for (size_t i = 0; i < LWB_ARRAY_LEN(cases); i++) {
        assert_false(kernel_short_name(cases[i][0], buf, sizeof buf));
        if (strcmp(buf, cases[i][1])) fail_msg("%s -> %s (wanted %s)", cases[i][0], buf, cases[i][1]);
    }
    assert_true(kernel_short_name("void at::native::elementwise_kernel<128, 4, F>(int, F)", buf, sizeof buf));
    assert_string_equal(buf, "elementwise_kernel");
    assert_true(kernel_short_name("void at::native::vectorized_elementwise_kernel<4, at::native::AbsFunctor<float>>(int)",
                                  buf, sizeof buf));
    assert_false(kernel_short_name("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>(int)",
                                   buf, sizeof buf));
    assert_string_equal(buf, "torchFill");
}

static void check_scs(const int32_t *a, int m, const int32_t *b, int n, const int32_t *want, int nwant) {
    int32_t *out;
    int k = scs_merge(a, m, b, n, &out);
    assert_int_equal(k, nwant);
    for (int i = 0; i < k; i++)
        if (out[i] != want[i]) fail_msg("scs position %d: %d (wanted %d)", i, out[i], want[i]);
    free(out);
}

// Results as the reference's dynamic program gives them (worked by hand, ties included).
static void test_scs(void **state) {
    (void)state;
    int32_t a[] = {1, 2, 3, 4, 5}, b[] = {1, 9, 2, 3, 5, 6};
    check_scs(a, 5, b, 6, (int32_t[]){1, 9, 2, 3, 4, 5, 6}, 7);
    int32_t c[] = {1, 2, 10, 3}, d[] = {1, 2, 11, 3};
    check_scs(c, 4, d, 4, (int32_t[]){1, 2, 10, 11, 3}, 5); // tie: a's kernel first
    check_scs(NULL, 0, d, 4, d, 4);
    check_scs(c, 4, NULL, 0, c, 4);
    int32_t e[] = {7, 7, 7}, f[] = {7, 7};
    check_scs(e, 3, f, 2, e, 3);
    int32_t g[] = {1, 2}, h[] = {3, 4};
    check_scs(g, 2, h, 2, (int32_t[]){1, 2, 3, 4}, 4);
}

// `test_trace --write-fixture DIR NAME [SQL]` builds the layer-wise fixture (then runs SQL on it,
// to break it on purpose) for test/cli_parse.sh and test/bad_inputs.sh.
int main(int argc, char **argv) {
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "--write-fixture")) {
        free(fixture_build(argv[2], argv[3], argc == 5 ? argv[4] : NULL));
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nsys_2024_6),  cmocka_unit_test(test_nsys_2025_1),
        cmocka_unit_test(test_nsys_2022_2),  cmocka_unit_test(test_fixture_sites),
        cmocka_unit_test(test_breakdown_rows), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_short_names),  cmocka_unit_test(test_scs),
        cmocka_unit_test(test_compare),
    };
    return cmocka_run_group_tests_name("trace", tests, NULL, NULL);
}

// test_report.c: `lwb parse` and `lwb correlate` run whole (in a child) on the layer-wise fixture
// and the real nsys exports: stdout, CSV and JSON against golden files in test/data, options,
// errors (one line, exit 2, no files left behind), HTML escaping, the Chrome trace.
#include "parse_fixture.h"

// The fixture as DIR/report_np1_rank0.sqlite, parsed from DIR with --world-size 1.
static char *parse_fixture(struct child_result *r, const char *extra, const char *a1, const char *a2,
                           const char *a3) {
    char *dir = make_tmpdir();
    free(fixture_build(dir, "report_np1_rank0.sqlite", extra));
    run_cmd(r, cmd_parse, dir, "--world-size", "1", "--profile-dir", ".", a1, a2, a3, NULL);
    return dir;
}

static void test_golden(void **state) {
    (void)state;
    struct child_result r;
    char *dir = parse_fixture(&r, NULL, NULL, NULL, NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_same_text(r.out, "test/data/layerwise.stdout");
    assert_non_null(strstr(r.err, "Not parsed torch kernel name: void at::native::elementwise_kernel<128, 4,"));
    assert_int_equal(count_lines(r.err), 1);
    char *csv = file_text(dir, "report_np1_rank0.csv"), *json = file_text(dir, "report_np1_rank0.json");
    char *html = file_text(dir, "report_np1_rank0.html");
    assert_same_text(csv, "test/data/layerwise.csv");
    assert_same_text(json, "test/data/layerwise.json");
    assert_non_null(html);
    assert_non_null(strstr(html, "b=2 s=1 past=100 NP1"));
    // Self-contained: nothing is fetched.
    assert_null(strstr(html, "src=\"http"));
    assert_null(strstr(html, "<link"));
    assert_null(strstr(html, "@import"));
    assert_int_equal(files_with(dir, ".tmp."), 0);
    free(csv), free(json), free(html);
    rm_rf(dir);
    free(dir);
}

// lwb's own profiles: the nsys 2025.3 names for the subset lwb writes (no ENUM tables, NVTX names
// inline in this older fixture, registered strings in new profiles; META_DATA_EXPORT naming lwb).
// The same breakdown comes out.
static void test_lwb_profile(void **state) {
    (void)state;
    struct child_result r;
    char *dir = parse_fixture(&r,
        "CREATE TABLE k AS SELECT start, end, deviceId, contextId, streamId, correlationId, globalPid,"
        "  demangledName, shortName, mangledName, gridX, gridY, gridZ, blockX, blockY, blockZ,"
        "  registersPerThread, staticSharedMemory, dynamicSharedMemory, graphNodeId FROM CUPTI_ACTIVITY_KIND_KERNEL;"
        "DROP TABLE CUPTI_ACTIVITY_KIND_KERNEL; ALTER TABLE k RENAME TO CUPTI_ACTIVITY_KIND_KERNEL;"
        "CREATE TABLE r AS SELECT start, end, eventClass, globalTid, correlationId, nameId, returnValue"
        "  FROM CUPTI_ACTIVITY_KIND_RUNTIME;"
        "DROP TABLE CUPTI_ACTIVITY_KIND_RUNTIME; ALTER TABLE r RENAME TO CUPTI_ACTIVITY_KIND_RUNTIME;"
        "CREATE TABLE n AS SELECT n.start, n.end, n.eventType, coalesce(n.text, s.value) AS text, n.globalTid,"
        "  0 AS domainId, NULL AS textId FROM NVTX_EVENTS n LEFT JOIN StringIds s ON s.id = n.textId"
        "  WHERE n.eventType = 59 AND n.domainId = 0;"
        "DROP TABLE NVTX_EVENTS; ALTER TABLE n RENAME TO NVTX_EVENTS; DROP TABLE ENUM_NSYS_EVENT_TYPE;"
        "UPDATE META_DATA_EXPORT SET value = 'lwb' WHERE name = 'EXPORT_PRODUCT_NAME';"
        "UPDATE META_DATA_EXPORT SET value = '0.1.0' WHERE name = 'EXPORT_PRODUCT_VERSION';",
        NULL, NULL, NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_true(str_starts(r.out, "lwb parse: ./report_np1_rank0.sqlite (lwb 0.1.0): 48 kernels"));
    char *csv = file_text(dir, "report_np1_rank0.csv"), *json = file_text(dir, "report_np1_rank0.json");
    assert_same_text(csv, "test/data/layerwise.csv");
    assert_same_text(json, "test/data/layerwise.json");
    free(csv), free(json);
    rm_rf(dir), free(dir);
}

static void test_options(void **state) {
    (void)state;
    struct child_result r;
    char *dir = parse_fixture(&r, NULL, "--module", "MoE", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "|--|--cutlassGroupGemm   30.0   30.0\n"));
    assert_non_null(strstr(r.out, "Total                    31.0   31.0\n"));
    assert_null(strstr(r.out, "mlaRopeKernel"));
    rm_rf(dir), free(dir);

    dir = parse_fixture(&r, NULL, "--query", "MoE, MLA", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "Query:\nMoE                      40.0   40.0\nMLA                      31.0   35.0\n"));
    rm_rf(dir), free(dir);

    // No warm-up: run 0's slow first kernel counts (100, 10, 12 -> 40.7; 50, 14, 16 -> 26.7).
    dir = parse_fixture(&r, NULL, "--warmup-times", "0", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "Warm-up: 0 runs dropped per problem (--warmup-times)"));
    assert_non_null(strstr(r.out, "|--mlaRopeKernel         40.7   26.7\n"));
    rm_rf(dir), free(dir);

    // --output-dir and --trace-json.
    char *out = make_tmpdir(), *trace = lwb_path_join(out, "trace.json");
    dir = parse_fixture(&r, NULL, "--output-dir", out, NULL);
    assert_int_equal(r.status, 0);
    assert_int_equal(files_with(out, "report_np1_rank0."), 3);
    assert_int_equal(files_with(dir, ".csv"), 0);
    rm_rf(dir), free(dir);
    dir = parse_fixture(&r, NULL, "--trace-json", trace, NULL);
    assert_int_equal(r.status, 0);
    json_error_t err;
    json_t *j = json_load_file(trace, 0, &err);
    if (!j) fail_msg("trace JSON: %s", err.text);
    json_t *ev = json_object_get(j, "traceEvents");
    int kernels = 0, memsets = 0, nvtx_mla = 0;
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        const char *cat = json_string_value(json_object_get(e, "cat"));
        if (!cat) continue;
        kernels += !strcmp(cat, "kernel");
        memsets += !strcmp(cat, "memset");
        nvtx_mla += !strcmp(cat, "nvtx") && !strcmp(json_string_value(json_object_get(e, "name")), "MLA");
    }
    assert_int_equal(kernels, 48);
    assert_int_equal(memsets, 8);
    assert_int_equal(nvtx_mla, 6); // p1: a forward before the runs and 3 runs; p2: a forward, the capture
    json_decref(j);
    rm_rf(dir), free(dir);
    rm_rf(out), free(out), free(trace);
}

// Errors: one line, exit 2, and no output file (not even a temporary one) left behind.
static void expect_parse_error(const char *extra, const char *a1, const char *a2, const char *a3, const char *msg) {
    struct child_result r;
    char *dir = parse_fixture(&r, extra, a1, a2, a3);
    if (r.status != 2 || !strstr(r.err, msg))
        fail_msg("exit %d, stderr: %s (wanted 2 and \"%s\")", r.status, r.err, msg);
    const char *last = r.err, *nl;
    while ((nl = strchr(last, '\n')) && nl[1]) last = nl + 1; // warnings may come first
    assert_non_null(strstr(last, msg));
    assert_int_equal(files_with(dir, "report_np1_rank0."), 1); // the profile only
    rm_rf(dir), free(dir);
}

static void test_errors(void **state) {
    (void)state;
    expect_parse_error(NULL, "--warmup-times", "3", NULL,
                       "\"b=1 s=1 past=100 NP1\" has 3 runs and warm-up drops 3, so none is left to average");
    expect_parse_error(NULL, "--error-on-unknown-kernel", NULL, NULL,
                       "1 torch kernel name is not in the short-name table");
    expect_parse_error(NULL, "--module", "Nothing", NULL, "no kernel runs inside an NVTX range named \"Nothing\"");
    // A second "MLA" range in run 1 around the last kernel's launch.
    expect_parse_error("INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, domainId) "
                       "SELECT 1341800, 1342900, 59, 'MLA', globalTid, 0 FROM NVTX_EVENTS WHERE text = 'MLA' LIMIT 1;",
                       "--module", "MLA", NULL,
                       "module is ambiguous: \"MLA\" appears 2 times in \"b=1 s=1 past=100 NP1\"'s 2-th run");
    // Runs launching different kernels: where, and which.
    expect_parse_error("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET demangledName = 15 WHERE correlationId = 405;", NULL,
                       NULL, NULL,
                       "the runs of \"b=1 s=1 past=100 NP1\" launch different kernels: run 2 (counting from 0, "
                       "warm-up included) differs from run 0 at kernel 4: \"void at::native::vectorized_elementwise_kernel");
    expect_parse_error("DELETE FROM CUPTI_ACTIVITY_KIND_KERNEL WHERE correlationId = 899 AND graphNodeId = 207;",
                       NULL, NULL, NULL,
                       "run 1 (counting from 0, warm-up included) differs from run 0 at kernel 6: \"(end of run)\" "
                       "instead of \"void at::native::elementwise_kernel");
    expect_parse_error("UPDATE StringIds SET value = 'layer_wise_benchmarks args {\"warmup_times\": 1,' WHERE id = 20;",
                       NULL, NULL, NULL, "the NVTX range 'layer_wise_benchmarks args' does not hold a JSON object");
    expect_parse_error("DELETE FROM NVTX_EVENTS WHERE textId = 20;", NULL, NULL, NULL,
                       "no 'layer_wise_benchmarks args' range); give --warmup-times N");
    expect_parse_error(NULL, "--rank", "1", NULL, "--rank 1 is not a rank of --world-size 1");
    expect_parse_error("INSERT INTO NVTX_EVENTS (start, end, eventType, textId, globalTid, domainId) VALUES "
                       "(1500000, 1500000, 59, 22, 281474976710656 + 4243 * 16777216 + 4243, 0);",
                       NULL, NULL, NULL, "layer-wise markers come from more than one process (pids 4242 and 4243)");
}

// A missing launch call in a dropped forward: a warning, the same breakdown.
static void test_warnings(void **state) {
    (void)state;
    struct child_result r;
    char *dir = parse_fixture(&r, "DELETE FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE correlationId = 102;", NULL, NULL, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "1 of 60 GPU activities have no launch call"));
    char *csv = file_text(dir, "report_np1_rank0.csv");
    assert_same_text(csv, "test/data/layerwise.csv");
    free(csv);
    rm_rf(dir), free(dir);
    // Without node creation events the graph's kernels fall back to the launch's ranges (none
    // but the iteration), so problem 2 has no module rows.
    dir = parse_fixture(&r, "DROP TABLE CUDA_GRAPH_NODE_EVENTS;", NULL, NULL, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "21 CUDA-graph activities have no node creation event"));
    assert_non_null(strstr(r.out, "|--cutlassGroupGemm   30.0    0.0\n"));
    assert_non_null(strstr(r.out, "cutlassGroupGemm          0.0   30.0\n"));
    rm_rf(dir), free(dir);
}

// Profiles without layer-wise markers: kernel time per NVTX range.
static void test_summary(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    char *p = file_copy(NSYS_MATMUL, dir, "m.sqlite");
    struct child_result r;
    run_cmd(&r, cmd_parse, NULL, "--file-path", p, NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "19 kernels, 1 memcpy, 1 memset, 652 NVTX ranges"));
    assert_non_null(strstr(r.out, "No layer_wise_benchmarks markers"));
    assert_non_null(strstr(r.out, "(2 of 21 GPU activities inside a range)"));
    assert_non_null(strstr(r.out, "(outside any NVTX range)\n|--cuBLASGemm "));
    assert_non_null(strstr(r.out, "|--|--ExecutorRunFusion::cuLaunchKernel\n|--|--|--nvfuser_none_f0_c0_r0_g0"));
    assert_null(strstr(r.err, "Not parsed")); // summaries do not nag about short names
    char *csv = file_text(dir, "m.csv");
    assert_true(str_starts(csv, ",Count,Total (us),Mean (us),Min (us),Max (us),Full name\r\n"));
    assert_non_null(strstr(csv, "|--|--|--nvfuser_none_f0_c0_r0_g0,1,135.1,135.1,135.1,135.1,"));
    json_error_t err;
    char *jp = lwb_path_join(dir, "m.json");
    json_t *j = json_load_file(jp, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "nvtx_kernel_summary");
    json_t *rows = json_object_get(j, "rows");
    long long n = 0;
    for (size_t i = 0; i < json_array_size(rows); i++)
        n += json_integer_value(json_object_get(json_array_get(rows, i), "count"));
    assert_int_equal(n, 21);
    json_decref(j);
    free(jp), free(csv), free(p);
    // Old schema, registered strings, domains.
    p = file_copy(NSYS_PIPIT, dir, "pipit.sqlite");
    run_cmd(&r, cmd_parse, NULL, "--file-path", p, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "(NVIDIA Nsight Systems 2022.2.1.31): 5 kernels, 15 memcpys, 0 memsets"));
    assert_non_null(strstr(r.out, "saxpy\n|--saxpy "));
    free(p);
    p = file_copy(NSYS_XENT, dir, "xent.sqlite");
    run_cmd(&r, cmd_parse, NULL, "--file-path", p, "--query", "cuLaunchKernel", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "(8 of 24 GPU activities inside a range)"));
    assert_non_null(strstr(r.out, "Query:\ncuLaunchKernel"));
    assert_non_null(strstr(r.out, "        6     3131.5"));
    free(p);
    rm_rf(dir), free(dir);
}

// Names from a profile cannot break out of the page; the data still round-trips exactly.
static void test_html_escaping(void **state) {
    (void)state;
    const char *evil_range = "MoE</script><script>alert(1)</script>, \"quoted\" & more";
    const char *evil_kernel = "void ns::evil<a></script><img src=x onerror=alert(1)>\"&'<!--(int)";
    char *dir = make_tmpdir();
    struct lwb_str sql = {0};
    str_printf(&sql,
               "UPDATE NVTX_EVENTS SET text = 'MoE</script><script>alert(1)</script>, \"quoted\" & more' "
               "WHERE text = 'MoE';"
               "UPDATE StringIds SET value = 'void ns::evil<a></script><img src=x onerror=alert(1)>\"&''<!--(int)' "
               "WHERE id = 13;");
    char *p = fixture_build(dir, "x<i>&.sqlite", sql.s);
    str_free(&sql);
    struct child_result r;
    run_cmd(&r, cmd_parse, NULL, "--file-path", p, NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    char *html = file_text(dir, "x<i>&.html");
    assert_non_null(html);
    // Exactly our two script elements; no markup from the profile.
    int scripts = 0;
    for (const char *s = html; (s = strstr(s, "</script>")); s++) scripts++;
    assert_int_equal(scripts, 2);
    assert_null(strstr(html, "<img"));
    assert_null(strstr(html, "<script>alert"));
    assert_null(strstr(html, "<!--"));
    assert_non_null(strstr(html, "<title>Kernel breakdown: x&lt;i&gt;&amp;.sqlite</title>"));
    // The embedded JSON parses and holds the names unchanged.
    const char *a = strstr(html, "id=\"lwb-data\">");
    assert_non_null(a);
    a += strlen("id=\"lwb-data\">");
    char *data = xstrndup(a, (size_t)(strstr(a, "</script>") - a));
    json_error_t err;
    json_t *j = json_loads(data, 0, &err);
    if (!j) fail_msg("embedded JSON: %s", err.text);
    char *dump = json_dumps(j, JSON_COMPACT);
    json_t *name = json_string(evil_range);
    char *want = json_dumps(name, JSON_ENCODE_ANY);
    assert_non_null(strstr(dump, want));
    json_decref(name), free(want);
    name = json_string(evil_kernel);
    want = json_dumps(name, JSON_ENCODE_ANY);
    assert_non_null(strstr(dump, want));
    json_decref(name), free(want), free(dump), json_decref(j), free(data), free(html);
    // CSV: quoted, quotes doubled.
    char *csv = file_text(dir, "x<i>&.csv");
    assert_non_null(strstr(csv, "\r\n\"|--MoE</script><script>alert(1)</script>, \"\"quoted\"\" & more\",,\r\n"));
    free(csv), free(p);
    rm_rf(dir), free(dir);
}

static void test_nsys_rep_without_nsys(void **state) {
    (void)state;
    char *dir = make_tmpdir(), *rep = lwb_path_join(dir, "run.nsys-rep");
    assert_int_equal(lwb_write_file_atomic(rep, "not really", 10), 0);
    setenv("PATH", "/nonexistent", 1);
    struct child_result r;
    run_cmd(&r, cmd_parse, NULL, "--file-path", rep, NULL);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, "must be exported to SQLite first and nsys is not on the PATH; run 'nsys export "
                                  "--type sqlite -o"));
    // An older export is used (with a warning) when nsys cannot make a new one.
    char *sq = fixture_build(dir, "run.sqlite", NULL);
    struct timespec old[2] = {{1000000, 0}, {1000000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, sq, old, 0), 0);
    run_cmd(&r, cmd_parse, NULL, "--file-path", rep, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "is older than"));
    assert_non_null(strstr(r.out, "Total"));
    setenv("PATH", "/usr/bin:/bin", 1);
    free(sq), free(rep);
    rm_rf(dir), free(dir);
}

static void test_correlate(void **state) {
    (void)state;
    char *dir = make_tmpdir(), *out = lwb_path_join(dir, "c.html");
    struct child_result r;
    run_cmd(&r, cmd_correlate, NULL, "--reference", "test/data/correlate_ref.json", "--target",
            "test/data/correlate_tgt.json", "-o", out, NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    char *want = lwb_read_file("test/data/correlate.stdout", NULL);
    assert_true(str_starts(r.out, want));
    free(want);
    char *html = file_text(dir, "c.html");
    assert_non_null(html);
    assert_non_null(strstr(html, "target0: serving \\u003cb\\u003e\\u0026\\\"e2e\\\"\\u003c/b\\u003e"));
    assert_null(strstr(html, "<b>&"));
    assert_non_null(strstr(html, "\"reference: reference run\""));
    assert_non_null(strstr(html, "Kernel End Time"));
    free(html);
    // A reference with two timelines is ambiguous.
    run_cmd(&r, cmd_correlate, NULL, "--reference", "test/data/correlate_tgt.json", "--target",
            "test/data/correlate_ref.json", "-o", out, NULL);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, "ambiguous reference data: test/data/correlate_tgt.json holds 2 timelines"));
    // Not a timeline file.
    char *bad = lwb_path_join(dir, "bad.json");
    assert_int_equal(lwb_write_file_atomic(bad, "[{\"name\": \"x\", \"timeline\": [{\"name\": 3}]}]", 42), 0);
    run_cmd(&r, cmd_correlate, NULL, "--reference", "test/data/correlate_ref.json", "--target", bad, "-o", out, NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "timeline \"x\", kernel 0 needs a string \"name\""));
    assert_int_equal(lwb_write_file_atomic(bad, "{\"kind\": \"nvtx_kernel_summary\", \"rows\": []}", 43), 0);
    run_cmd(&r, cmd_correlate, NULL, "--reference", bad, "--target", bad, "-o", out, NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "is a per-range summary"));
    assert_int_equal(lwb_write_file_atomic(bad, "[{", 2), 0);
    run_cmd(&r, cmd_correlate, NULL, "--reference", bad, "--target", bad, "-o", out, NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "bad.json:1: not valid JSON"));
    run_cmd(&r, cmd_correlate, NULL, "--reference", "test/data/correlate_ref.json", NULL);
    assert_int_equal(r.status, 2);
    free(bad), free(out);
    rm_rf(dir), free(dir);
}

// Where the time goes: totals, kernels by gap, one-sided names, on stdout and in --output-json.
static void test_correlate_stats(void **state) {
    (void)state;
    char *dir = make_tmpdir(), *out = lwb_path_join(dir, "c.html"), *js = lwb_path_join(dir, "sub/c.json");
    struct child_result r;
    run_cmd(&r, cmd_correlate, NULL, "--reference", "test/data/correlate_ref.json", "--target",
            "test/data/correlate_tgt.json", "-o", out, "--output-json", js, NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    // The reference's lines come first, untouched; the statistics follow.
    char *want = lwb_read_file("test/data/correlate.stdout", NULL);
    assert_true(str_starts(r.out, want));
    free(want);
    assert_non_null(strstr(r.out, "target0: serving <b>&\"e2e\"</b>: kernels 7.0 us against the reference's 7.5 us "
                                  "(-0.5 us, -6.7%); last kernel ends at 7.3 us against 7.5 us\n"));
    assert_non_null(strstr(r.out, "  kD                                                1.0          0.0       -1.0     0.00\n"));
    assert_non_null(strstr(r.out, "target0: second: kernels 3.6 us against the reference's 7.5 us (-3.9 us, -51.3%)"));
    json_error_t err;
    json_t *doc = json_load_file(js, 0, &err);
    if (!doc) fail_msg("%s: %s", js, err.text);
    assert_string_equal(json_string_value(json_object_get(doc, "reference")), "reference run");
    json_t *targets = json_object_get(doc, "targets");
    assert_int_equal(json_array_size(targets), 2);
    json_t *t0 = json_array_get(targets, 0);
    assert_float_equal(json_number_value(json_object_get(t0, "reference_us")), 7.5, 1e-9);
    assert_float_equal(json_number_value(json_object_get(t0, "target_us")), 7.0, 1e-9);
    assert_float_equal(json_number_value(json_object_get(t0, "gap_us")), -0.5, 1e-9);
    assert_float_equal(json_number_value(json_object_get(t0, "gap_pct")), -100.0 / 15, 1e-6);
    assert_float_equal(json_number_value(json_object_get(t0, "target_end_us")), 7.3, 1e-9);
    // Kernels by absolute gap: kD (-1.0) first, then kF (+0.2); ties broken by name.
    json_t *k = json_object_get(t0, "kernels");
    assert_int_equal(json_array_size(k), 7);
    assert_string_equal(json_string_value(json_object_get(json_array_get(k, 0), "name")), "kD");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(k, 0), "target_count")), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(k, 1), "name")), "kF");
    json_t *only_ref = json_object_get(t0, "only_in_reference"), *only_tgt = json_object_get(t0, "only_in_target");
    assert_int_equal(json_array_size(only_ref), 1);
    assert_string_equal(json_string_value(json_array_get(only_ref, 0)), "kD");
    assert_int_equal(json_array_size(only_tgt), 2);
    assert_int_equal(json_array_size(json_object_get(t0, "modules")), 0); // these timelines carry no modules
    json_t *t1 = json_array_get(targets, 1);
    assert_string_equal(json_string_value(json_object_get(t1, "target")), "target0: second");
    assert_int_equal(json_array_size(json_object_get(t1, "only_in_reference")), 2);
    json_decref(doc);
    // The page carries the same comparison.
    char *html = file_text(dir, "c.html");
    assert_non_null(strstr(html, "\"compare\":[{\"target\":\"target0: serving"));
    assert_non_null(strstr(html, "Where the time goes"));
    free(html);
    // A bad --output-json path is refused before anything is written.
    run_cmd(&r, cmd_correlate, NULL, "--reference", "test/data/correlate_ref.json", "--target",
            "test/data/correlate_tgt.json", "-o", out, "--output-json", "/dev/null", NULL);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    free(out), free(js);
    rm_rf(dir), free(dir);
}

// parse's .json feeds correlate: the fixture's first problem against both.
static void test_parse_then_correlate(void **state) {
    (void)state;
    struct child_result r;
    char *dir = parse_fixture(&r, NULL, NULL, NULL, NULL);
    assert_int_equal(r.status, 0);
    char *j = lwb_path_join(dir, "report_np1_rank0.json"), *ref = lwb_path_join(dir, "ref.json");
    json_t *all = json_load_file(j, 0, NULL), *one = json_array();
    json_array_append(one, json_array_get(all, 0));
    assert_int_equal(json_dump_file(one, ref, 0), 0);
    char *out = lwb_path_join(dir, "c.html");
    run_cmd(&r, cmd_correlate, NULL, "--reference", ref, "--target", j, "-o", out, NULL);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    // Problem 2 swaps the nvjet gemm for a cutlass one: interpolated between its neighbours.
    assert_non_null(strstr(r.out, "target 0 timeline 0 x_tgt=[1, 2, 3, 4, 5, 6, 7]\n"));
    assert_non_null(strstr(r.out, "target 0 timeline 1 x_sup=[1, 2, None, 3, 4, 5, 6, 7]\n"));
    assert_non_null(strstr(r.out, "target 0 timeline 1 x_tgt=[1, 2, 3, 4, 5, 6, 7]\n"));
    // parse's timelines carry modules: the statistics have a per-module table.
    assert_non_null(strstr(r.out, "  module                                   reference us    target us"));
    json_decref(all), json_decref(one);
    free(j), free(ref), free(out);
    rm_rf(dir), free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),          cmocka_unit_test(test_lwb_profile),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_warnings),
        cmocka_unit_test(test_summary),         cmocka_unit_test(test_html_escaping),
        cmocka_unit_test(test_nsys_rep_without_nsys), cmocka_unit_test(test_correlate),
        cmocka_unit_test(test_correlate_stats),
        cmocka_unit_test(test_parse_then_correlate),
    };
    return cmocka_run_group_tests_name("report", tests, NULL, NULL);
}

// test_parse_speed.c: a synthetic layer-wise profile in the nsys schema (generated here: an eager
// problem and a CUDA-graph problem, module ranges, the NVTX contract) run through the whole of
// `lwb parse`. By default a small one whose breakdown is checked exactly; with LWB_SPEED_TEST=1
// one of 1,000,000 kernels, which must parse in under 10 s (time and peak memory printed).
// LWB_SPEED_KEEP=DIR keeps the big profile there (for /usr/bin/time -v ./lwb parse ...).
#include "parse_fixture.h"
#include <sys/resource.h>

// Kernel j of a run lasts dur(j) ns and starts 2000 ns after kernel j-1 started; it is
// launched 1000 ns after kernel j-1. Ranges: "LayerN" around every 20 kernels, inside it
// "Attention" then "MoE" around 10 each.
static int64_t speed_dur(int j) { return 1000 + (j % 7) * 100; }

struct speed_gen {
    sqlite3 *db;
    sqlite3_stmt *kernel, *runtime, *nvtx, *node;
    int64_t corr;
};

static void gen_nvtx(struct speed_gen *g, int64_t start, int64_t end, const char *text, int64_t text_id) {
    sqlite3_reset(g->nvtx);
    sqlite3_bind_int64(g->nvtx, 1, start);
    sqlite3_bind_int64(g->nvtx, 2, end);
    if (text) sqlite3_bind_text(g->nvtx, 3, text, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(g->nvtx, 3);
    if (text_id >= 0) sqlite3_bind_int64(g->nvtx, 4, text_id);
    else sqlite3_bind_null(g->nvtx, 4);
    assert_int_equal(sqlite3_step(g->nvtx), SQLITE_DONE);
}
static void gen_runtime(struct speed_gen *g, int64_t start, int64_t corr, int name) {
    sqlite3_reset(g->runtime);
    sqlite3_bind_int64(g->runtime, 1, start);
    sqlite3_bind_int64(g->runtime, 2, start + 500);
    sqlite3_bind_int64(g->runtime, 3, corr);
    sqlite3_bind_int(g->runtime, 4, name);
    assert_int_equal(sqlite3_step(g->runtime), SQLITE_DONE);
}
static void gen_kernel(struct speed_gen *g, int64_t start, int j, int64_t corr, int64_t node) {
    sqlite3_reset(g->kernel);
    sqlite3_bind_int64(g->kernel, 1, start);
    sqlite3_bind_int64(g->kernel, 2, start + speed_dur(j));
    sqlite3_bind_int64(g->kernel, 3, corr);
    sqlite3_bind_int(g->kernel, 4, 1000 + j);
    if (node >= 0) sqlite3_bind_int64(g->kernel, 5, node);
    else sqlite3_bind_null(g->kernel, 5);
    assert_int_equal(sqlite3_step(g->kernel), SQLITE_DONE);
}
// The module ranges of one forward whose launches start at cpu.
static void gen_modules(struct speed_gen *g, int64_t cpu, int per_run) {
    char name[32];
    for (int j = 0; j < per_run; j += 10) {
        if (j % 20 == 0) {
            snprintf(name, sizeof name, "Layer%d", j / 20);
            gen_nvtx(g, cpu + j * 1000 - 100, cpu + LWB_MIN(j + 20, per_run) * 1000 - 200, name, -1);
        }
        gen_nvtx(g, cpu + j * 1000 - 50, cpu + LWB_MIN(j + 10, per_run) * 1000 - 300,
                 (j / 10) % 2 ? "MoE" : "Attention", -1);
    }
}

// A profile of 2 problems x `runs` runs x `per_run` kernels (per_run a multiple of 20).
static void gen_profile(const char *path, int runs, int per_run) {
    struct speed_gen g = {0};
    char *schema = lwb_read_file("test/data/layerwise.sql", NULL);
    assert_non_null(schema);
    *strstr(schema, "INSERT INTO META_DATA_EXPORT") = 0; // tables only
    unlink(path);
    assert_int_equal(sqlite3_open(path, &g.db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(g.db, schema, NULL, NULL, NULL), SQLITE_OK);
    free(schema);
    sqlite3_exec(g.db, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN;", NULL, NULL, NULL);
    const int64_t pid = 281474976710656LL + 4242LL * 16777216, tid = pid + 4242;
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, correlationId, "
             "globalPid, demangledName, shortName, registersPerThread, gridX, gridY, gridZ, blockX, blockY, blockZ, "
             "staticSharedMemory, dynamicSharedMemory, localMemoryPerThread, localMemoryTotal, gridId, graphNodeId) "
             "VALUES (?1, ?2, 0, 1, 7, ?3, %lld, ?4, ?4, 32, 1, 1, 1, 128, 1, 1, 0, 0, 0, 0, 0, ?5)", (long long)pid);
    sqlite3_prepare_v2(g.db, sql, -1, &g.kernel, NULL);
    snprintf(sql, sizeof sql,
             "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME (start, end, eventClass, globalTid, correlationId, nameId, "
             "returnValue) VALUES (?1, ?2, 0, %lld, ?3, ?4, 0)", (long long)tid);
    sqlite3_prepare_v2(g.db, sql, -1, &g.runtime, NULL);
    snprintf(sql, sizeof sql,
             "INSERT INTO NVTX_EVENTS (start, end, eventType, text, textId, globalTid, domainId) "
             "VALUES (?1, ?2, 59, ?3, ?4, %lld, 0)", (long long)tid);
    sqlite3_prepare_v2(g.db, sql, -1, &g.nvtx, NULL);
    snprintf(sql, sizeof sql,
             "INSERT INTO CUDA_GRAPH_NODE_EVENTS VALUES (?1, ?1 + 500, 77, %lld, 5, ?2, ?3)", (long long)tid);
    sqlite3_prepare_v2(g.db, sql, -1, &g.node, NULL);
    sqlite3_exec(g.db,
                 "INSERT INTO StringIds VALUES (1, 'cudaLaunchKernel_v7000'), (4, 'cudaGraphLaunch_v10000'), "
                 "(5, 'Graph Node Creation'), (20, 'layer_wise_benchmarks args {\"warmup_times\": 2}'), "
                 "(21, 'layer_wise_benchmarks problem_spec {\"batch_size\": 1}'), "
                 "(22, 'layer_wise_benchmarks problem_spec {\"batch_size\": 2}'), "
                 "(23, 'b=1 s=1 past=0 NP1'), (24, 'b=2 s=1 past=0 NP1');",
                 NULL, NULL, NULL);
    for (int j = 0; j < per_run; j++) {
        snprintf(sql, sizeof sql, "INSERT INTO StringIds VALUES (%d, 'void lwb::speed::kernel%d<float, 128>(Params)')",
                 1000 + j, j);
        sqlite3_exec(g.db, sql, NULL, NULL, NULL);
    }
    const int64_t run_ns = (int64_t)per_run * 2000 + 100000; // a run's CPU and GPU period
    gen_nvtx(&g, 1000, 1000, NULL, 20);
    for (int p = 0; p < 2; p++) {
        int64_t base = 10000000 + (int64_t)p * (runs + 4) * run_ns;
        gen_nvtx(&g, base, base, NULL, 21 + p);
        if (p == 1) { // the capture: node creation events inside the module ranges, then the clones
            int64_t cpu = base + run_ns;
            gen_modules(&g, cpu, per_run);
            for (int pass = 0; pass < 2; pass++)
                for (int j = 0; j < per_run; j++) {
                    sqlite3_reset(g.node);
                    sqlite3_bind_int64(g.node, 1, pass ? cpu + run_ns / 2 : cpu + j * 1000);
                    sqlite3_bind_int64(g.node, 2, (pass ? 200000 : 100000) + j);
                    if (pass) sqlite3_bind_int64(g.node, 3, 100000 + j);
                    else sqlite3_bind_null(g.node, 3);
                    assert_int_equal(sqlite3_step(g.node), SQLITE_DONE);
                }
        }
        for (int r = 0; r < runs; r++) {
            int64_t cpu = base + (r + 2) * run_ns, gpu = cpu + 20000;
            gen_nvtx(&g, cpu - 1000, cpu + per_run * 1000, NULL, 23 + p);
            if (p == 0) gen_modules(&g, cpu, per_run);
            else gen_runtime(&g, cpu, ++g.corr, 4);
            for (int j = 0; j < per_run; j++) {
                if (p == 0) gen_runtime(&g, cpu + j * 1000, ++g.corr, 1);
                gen_kernel(&g, gpu + j * 2000, j, g.corr, p ? 200000 + j : -1);
            }
        }
    }
    sqlite3_finalize(g.kernel), sqlite3_finalize(g.runtime), sqlite3_finalize(g.nvtx), sqlite3_finalize(g.node);
    assert_int_equal(sqlite3_exec(g.db, "COMMIT;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(g.db);
}

// Total per run: the span; Space: the gaps between kernels.
static double speed_total(int per_run) { return (per_run - 1) * 2000.0 + (double)speed_dur(per_run - 1); }
static double speed_space(int per_run) {
    double s = 0;
    for (int j = 1; j < per_run; j++) s += 2000 - speed_dur(j - 1);
    return s;
}

static void test_small(void **state) {
    (void)state;
    char *dir = make_tmpdir(), *path = lwb_path_join(dir, "s.sqlite");
    gen_profile(path, 6, 40);
    struct lwb_trace t;
    trace_open(&t, path);
    assert_int_equal(t.count[LWB_ACT_KERNEL], 2 * 6 * 40);
    assert_int_equal(t.graph_nodes, 6 * 40);
    struct lwb_breakdown b;
    struct lwb_bd_opts o = {NULL, -1};
    assert_true(breakdown_build(&t, &o, &b));
    assert_int_equal(b.warmup, 2);
    for (int p = 0; p < 2; p++) {
        assert_int_equal(b.p[p].nk, 40);
        assert_true(fabs(b.p[p].total_ns - speed_total(40)) < 1e-6);
        assert_true(fabs(b.p[p].space_ns - speed_space(40)) < 1e-6);
        assert_true(fabs(b.p[p].k[13].mean_ns - (double)speed_dur(13)) < 1e-9);
    }
    // Both problems have the same paths: Layer0 > Attention, Layer0 > MoE, Layer1 > ...
    struct lwb_module_row *rows;
    int n = breakdown_module_rows(&b, 1, &rows);
    assert_int_equal(n, 40);
    assert_string_equal(rows[0].path, "Layer0 > Attention");
    assert_string_equal(rows[15].path, "Layer0 > MoE");
    assert_string_equal(rows[39].path, "Layer1 > MoE");
    free(rows);
    assert_int_equal(b.nmerged, 43); // 40 kernels + Overlap, Space, Total: both problems alike
    breakdown_free(&b);
    trace_free(&t);
    free(path);
    rm_rf(dir), free(dir);
}

static void test_million(void **state) {
    (void)state;
    if (!lwb_env_flag("LWB_SPEED_TEST")) {
        printf("skip: 1,000,000-kernel parse (set LWB_SPEED_TEST=1)\n");
        return;
    }
    const char *keep = getenv("LWB_SPEED_KEEP");
    char *dir = keep ? xstrdup(keep) : make_tmpdir(), *path = lwb_path_join(dir, "speed.sqlite");
    double t0 = lwb_now();
    gen_profile(path, 1000, 500); // 2 x 1000 x 500 kernels
    printf("generated %s in %.1f s\n", path, lwb_now() - t0);
    struct child_result r;
    t0 = lwb_now();
    run_cmd(&r, cmd_parse, NULL, "--file-path", path, NULL);
    double s = lwb_now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    printf("lwb parse of 1,000,000 kernels: %.2f s, peak memory %.0f MiB\n", s, ru.ru_maxrss / 1024.0);
    if (r.status) fail_msg("exit %d: %s", r.status, r.err);
    char want[64], *csv = file_text(dir, "speed.csv");
    snprintf(want, sizeof want, "\r\nTotal,%.1f,%.1f\r\n", speed_total(500) / 1000, speed_total(500) / 1000);
    assert_true(csv && str_ends(csv, want));
    free(csv);
    assert_true(s < 10.0);
    free(path);
    if (!keep) rm_rf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_small), cmocka_unit_test(test_million)};
    return cmocka_run_group_tests_name("parse_speed", tests, NULL, NULL);
}

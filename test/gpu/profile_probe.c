// profile_probe.c: checks lwb's built-in profiler (src/profile.h, src/nvtx.h) on a GPU, and
// compares its profile with an Nsight Systems export of the same program.
//
// The program follows the layer-wise-benchmarks NVTX contract: after cuProfilerStart an empty
// `layer_wise_benchmarks args {...}` range; per problem an empty `layer_wise_benchmarks
// problem_spec {...}` range; per iteration a `b=<B> s=<Q> past=<P> NP1` range around the work,
// which is: `MLA` around one rmsnorm (4096 x 7168 bf16), `Deepseekv3MoE` > `DeepseekV3Gate`
// around a second, `Deepseekv3MoE` > `MoE` around a third plus a memset and a device copy.
// Problem 1 runs it eagerly; problem 2 runs it once eagerly, captures it into a CUDA graph
// (module ranges pushed during capture) and replays the graph inside each iteration range.
// Each problem has W warm-up and T timed iterations (CUDA events around the timed ones).
// The same loops run once before the profiler starts and once after it stopped, so the timed
// loop with the profiler on is compared with it off.
//
// Build on the development machine, from the repository root, after ./build.sh (the rule the
// Makefile should carry, linked like the tests but without cmocka):
//   build/profile_probe: test/gpu/profile_probe.c lwb.c build/embedded.h
//   	$(CC) $(CFLAGS) -MMD -MP -MF $@.d -o $@ $< $(LDLIBS)
// Usage, on the GPU machine:
//   build/profile_probe OUTDIR [--window loop|run] [--iters W,T]
//       runs everything, writes OUTDIR/report_np1_rank0.sqlite (unless running under nsys),
//       prints the timings and the module breakdown of that file, and checks it (exit 1 when
//       a count is wrong). --window loop (default): one activity window per problem around
//       its warm-up and timed iterations (capture outside it); run: one window from
//       cuProfilerStart to cuProfilerStop, the span nsys -c cudaProfilerApi records.
//   build/profile_probe --check FILE.sqlite [OTHER.sqlite]
//       prints the module breakdown of any profile (lwb's or an nsys export) by the rules the
//       parser uses (launch -> enclosing ranges; graph kernels -> node chain -> ranges at
//       capture); with two files, compares them: same rows and counts, means within 5 %.
#define LWB_NO_MAIN
#include "../../lwb.c"
#include <jansson.h>

struct probe {
    CUstream s;
    struct lwb_kreq req;
    struct rmsnorm_config cfg;
    int rows;
    CUdeviceptr x, w, out1, out2, out3, scratch, copy_src, copy_dst;
    size_t scratch_bytes, copy_bytes;
    int warmup, timed;
};

static void forward(struct probe *pb) {
    const long long h = pb->cfg.hidden;
    lwb_nvtx_push("MLA");
    rmsnorm_enqueue(&pb->req, pb->cfg, pb->s, pb->x, h, 0, 0, 0, pb->w, pb->out1, h, pb->rows, 1e-6f);
    lwb_nvtx_pop();
    lwb_nvtx_push("Deepseekv3MoE");
    lwb_nvtx_push("DeepseekV3Gate");
    rmsnorm_enqueue(&pb->req, pb->cfg, pb->s, pb->out1, h, 0, 0, 0, pb->w, pb->out2, h, pb->rows, 1e-6f);
    lwb_nvtx_pop();
    lwb_nvtx_push("MoE");
    rmsnorm_enqueue(&pb->req, pb->cfg, pb->s, pb->out2, h, 0, 0, 0, pb->w, pb->out3, h, pb->rows, 1e-6f);
    CU_CHECK(lwb_cu.cuMemsetD8Async(pb->scratch, 0, pb->scratch_bytes, pb->s));
    CU_CHECK(lwb_cu.cuMemcpyDtoDAsync(pb->copy_dst, pb->copy_src, pb->copy_bytes, pb->s));
    lwb_nvtx_pop();
    lwb_nvtx_pop();
}

static CUgraphExec capture(struct probe *pb) {
    CUgraph g;
    CUgraphExec ge;
    CU_CHECK(lwb_cu.cuStreamBeginCapture(pb->s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    forward(pb);
    CU_CHECK(lwb_cu.cuStreamEndCapture(pb->s, &g));
    CU_CHECK(lwb_cu.cuGraphInstantiateWithFlags(&ge, g, 0));
    CU_CHECK(lwb_cu.cuGraphDestroy(g));
    return ge;
}

static void marker(const char *kind, json_t *obj) {
    char *js = json_dumps(obj, 0);
    char text[1024];
    snprintf(text, sizeof text, "layer_wise_benchmarks %s %s", kind, js);
    lwb_nvtx_range(text);
    free(js);
    json_decref(obj);
}

// W warm-up then T timed iterations inside iteration ranges; returns us per timed iteration.
static double iterations(struct probe *pb, CUgraphExec ge, int past) {
    char text[128];
    snprintf(text, sizeof text, "b=%d s=1 past=%d NP1", pb->rows, past);
    CUevent e0, e1;
    CU_CHECK(lwb_cu.cuEventCreate(&e0, CU_EVENT_DEFAULT));
    CU_CHECK(lwb_cu.cuEventCreate(&e1, CU_EVENT_DEFAULT));
    for (int i = 0; i < pb->warmup + pb->timed; i++) {
        if (i == pb->warmup) CU_CHECK(lwb_cu.cuEventRecord(e0, pb->s));
        lwb_nvtx_push(text);
        if (ge) CU_CHECK(lwb_cu.cuGraphLaunch(ge, pb->s));
        else forward(pb);
        lwb_nvtx_pop();
    }
    CU_CHECK(lwb_cu.cuEventRecord(e1, pb->s));
    CU_CHECK(lwb_cu.cuEventSynchronize(e1));
    float ms = 0;
    CU_CHECK(lwb_cu.cuEventElapsedTime(&ms, e0, e1));
    CU_CHECK(lwb_cu.cuEventDestroy(e0));
    CU_CHECK(lwb_cu.cuEventDestroy(e1));
    return 1000.0 * ms / pb->timed;
}

static json_t *problem_json(int rows, int past) {
    return json_pack("{s:i, s:i, s:i, s:n}", "batch_size", rows, "seq_len_q", 1,
                     "seq_len_kv_cache", past, "balance_ratio");
}

// Both problems, as the benchmark would run them. `prof` is NULL when nothing is profiled;
// with `run_window` its window spans both problems, else one window per problem's iterations.
static void problems(struct probe *pb, struct lwb_profiler *prof, bool run_window, double us[2]) {
    if (prof && run_window) profile_begin(prof);
    marker("problem_spec", problem_json(pb->rows, 0));
    if (prof && !run_window) profile_begin(prof);
    us[0] = iterations(pb, NULL, 0);
    if (prof && !run_window) profile_end(prof);
    marker("problem_spec", problem_json(pb->rows, 1024));
    forward(pb); // the eager pass before capture, outside any iteration range
    CUgraphExec ge = capture(pb);
    if (prof && !run_window) profile_begin(prof);
    us[1] = iterations(pb, ge, 1024);
    if (prof && !run_window) profile_end(prof);
    CU_CHECK(lwb_cu.cuGraphExecDestroy(ge));
    if (prof && run_window) profile_end(prof);
}

// ---------------------------------------------------------------------------------------------
// Module breakdown of a profile (lwb's or an nsys export), by the rules the parser follows

struct chk_range {
    int64_t start, end; // end: INT64_MAX when the range never ended
    int64_t tid;        // globalTid
    char *text;
};
struct chk_node {
    int64_t id, orig; // orig: -1 for a node created by capture (NULL in the file)
    int64_t start, end, tid;
};
struct chk_api {
    int64_t pid, corr; // pid: globalTid with the thread bits cleared
    int64_t start, end, tid;
};
struct chk_row {
    int problem;
    char *run, *path, *name;
    int64_t count;
    double sum_ns;
};
struct chk_table {
    struct chk_row *rows;
    size_t nrows, caprows;
    int64_t activities, unlaunched, graph, graph_cloned, graph_unresolved;
    int warmup, timed; // from the args marker, -1 when absent
};

static bool chk_has(sqlite3 *db, const char *table, const char *col) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pragma_table_info('%s')%s%s%s", table,
             col ? " WHERE name = '" : "", col ? col : "", col ? "'" : "");
    sqlite3_stmt *st;
    int64_t n = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n > 0;
}

static sqlite3_stmt *chk_query(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        lwb_fatal("check: %s: %s", sqlite3_errmsg(db), sql);
    return st;
}

static int64_t col_i64(sqlite3_stmt *st, int i, int64_t null_value) {
    return sqlite3_column_type(st, i) == SQLITE_NULL ? null_value : sqlite3_column_int64(st, i);
}

static int chk_api_cmp(const void *a, const void *b) {
    const struct chk_api *x = a, *y = b;
    if (x->pid != y->pid) return x->pid < y->pid ? -1 : 1;
    return x->corr < y->corr ? -1 : x->corr > y->corr;
}
static int chk_node_cmp(const void *a, const void *b) {
    const struct chk_node *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}
static int chk_range_cmp(const void *a, const void *b) {
    const struct chk_range *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x->end > y->end ? -1 : x->end < y->end; // outer first
}

static bool is_run(const char *t) { return str_starts(t, "b="); }
static bool is_marker(const char *t) { return str_starts(t, "layer_wise_benchmarks "); }

// The module path ("Deepseekv3MoE/MoE") at [start, end] on thread tid.
static void chk_path(const struct chk_range *r, size_t n, int64_t tid, int64_t start, int64_t end,
                     struct lwb_str *out) {
    str_clear(out);
    for (size_t i = 0; i < n && r[i].start <= start; i++) {
        if (r[i].tid != tid || r[i].end < end || is_run(r[i].text) || is_marker(r[i].text)) continue;
        str_printf(out, "%s%s", out->len ? "/" : "", r[i].text);
    }
    if (!out->len) str_puts(out, "-");
}

static void chk_load(const char *file, struct chk_table *t) {
    sqlite3 *db;
    if (sqlite3_open_v2(file, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        lwb_user_error("check: cannot open %s: %s", file, sqlite3_errmsg(db));
    *t = (struct chk_table){.warmup = -1, .timed = -1};
    // Strings.
    char **str = NULL;
    size_t nstr = 0;
    sqlite3_stmt *st = chk_query(db, "SELECT id, value FROM StringIds");
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        if (id < 0 || id > 50000000) continue;
        if ((size_t)id >= nstr) {
            size_t n = (size_t)id + 1;
            str = xrealloc(str, n * sizeof *str);
            memset(str + nstr, 0, (n - nstr) * sizeof *str);
            nstr = n;
        }
        str[id] = xstrdup((const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
#define STR(id) ((id) >= 0 && (size_t)(id) < nstr && str[id] ? str[id] : "?")
    // Push/pop ranges, and the problem_spec and args markers among them.
    struct chk_range *r = NULL;
    size_t nr = 0, capr = 0;
    int64_t *problems = NULL;
    size_t np = 0, capp = 0;
    st = chk_query(db, "SELECT start, end, globalTid, text, textId FROM NVTX_EVENTS "
                       "WHERE eventType = 59 ORDER BY start");
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 3);
        if (!text) text = STR(col_i64(st, 4, -1));
        struct chk_range x = {sqlite3_column_int64(st, 0), col_i64(st, 1, INT64_MAX),
                              sqlite3_column_int64(st, 2), xstrdup(text)};
        if (str_starts(text, "layer_wise_benchmarks problem_spec")) LWB_PUSH(problems, np, capp, x.start);
        if (str_starts(text, "layer_wise_benchmarks args ")) {
            json_t *a = json_loads(text + strlen("layer_wise_benchmarks args "), 0, NULL);
            if (a) {
                t->warmup = (int)json_integer_value(json_object_get(a, "warmup_times"));
                t->timed = (int)json_integer_value(json_object_get(a, "run_times"));
                json_decref(a);
            }
        }
        LWB_PUSH(r, nr, capr, x);
    }
    sqlite3_finalize(st);
    qsort(r, nr, sizeof *r, chk_range_cmp);
    // Launches.
    struct chk_api *api = NULL;
    size_t na = 0, capa = 0;
    st = chk_query(db, "SELECT correlationId, globalTid, start, end FROM CUPTI_ACTIVITY_KIND_RUNTIME "
                       "WHERE eventClass IN (0, 1)");
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t gtid = sqlite3_column_int64(st, 1);
        struct chk_api a = {gtid & ~(int64_t)0xFFFFFF, sqlite3_column_int64(st, 0),
                            sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3), gtid};
        LWB_PUSH(api, na, capa, a);
    }
    sqlite3_finalize(st);
    qsort(api, na, sizeof *api, chk_api_cmp);
    // Graph nodes.
    struct chk_node *nodes = NULL;
    size_t nn = 0, capn = 0;
    if (chk_has(db, "CUDA_GRAPH_NODE_EVENTS", NULL)) {
        st = chk_query(db, "SELECT graphNodeId, originalGraphNodeId, start, end, globalTid "
                           "FROM CUDA_GRAPH_NODE_EVENTS");
        while (sqlite3_step(st) == SQLITE_ROW) {
            struct chk_node g = {sqlite3_column_int64(st, 0), col_i64(st, 1, -1),
                                 sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
                                 sqlite3_column_int64(st, 4)};
            LWB_PUSH(nodes, nn, capn, g);
        }
        sqlite3_finalize(st);
        qsort(nodes, nn, sizeof *nodes, chk_node_cmp);
    }
    // Kernels, copies, memsets.
    static const struct {
        const char *table, *name;
    } kinds[] = {{"CUPTI_ACTIVITY_KIND_KERNEL", NULL},
                 {"CUPTI_ACTIVITY_KIND_MEMCPY", "[memcpy]"},
                 {"CUPTI_ACTIVITY_KIND_MEMSET", "[memset]"}};
    struct lwb_str path = {0}, sql = {0};
    for (size_t k = 0; k < LWB_ARRAY_LEN(kinds); k++) {
        if (!chk_has(db, kinds[k].table, NULL)) continue;
        bool graph = chk_has(db, kinds[k].table, "graphNodeId");
        str_clear(&sql);
        str_printf(&sql, "SELECT start, end, correlationId, globalPid, %s, %s FROM %s ORDER BY start",
                   graph ? "graphNodeId" : "NULL", kinds[k].name ? "NULL" : "shortName",
                   kinds[k].table);
        st = chk_query(db, sql.s);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int64_t start = sqlite3_column_int64(st, 0), end = sqlite3_column_int64(st, 1);
            struct chk_api key = {col_i64(st, 3, 0), col_i64(st, 2, -1), 0, 0, 0};
            int64_t node = col_i64(st, 4, -1);
            const char *name = kinds[k].name ? kinds[k].name : STR(col_i64(st, 5, -1));
            t->activities++;
            const struct chk_api *a = bsearch(&key, api, na, sizeof *api, chk_api_cmp);
            if (!a) {
                t->unlaunched++;
                continue;
            }
            // The iteration: the run range around the launch.
            const char *run = "(outside runs)";
            for (size_t i = 0; i < nr && r[i].start <= a->start; i++)
                if (r[i].tid == a->tid && r[i].end >= a->end && is_run(r[i].text)) run = r[i].text;
            // The module path: around the launch, or around the node's creation at capture.
            if (node >= 0) {
                t->graph++;
                struct chk_node q = {.id = node};
                const struct chk_node *g = bsearch(&q, nodes, nn, sizeof *nodes, chk_node_cmp);
                if (g && g->orig >= 0) t->graph_cloned++;
                for (int hop = 0; g && g->orig >= 0 && hop < 16; hop++) {
                    q.id = g->orig;
                    g = bsearch(&q, nodes, nn, sizeof *nodes, chk_node_cmp);
                }
                if (!g || g->orig >= 0) {
                    t->graph_unresolved++;
                    str_clear(&path);
                    str_puts(&path, "(node unknown)");
                } else {
                    chk_path(r, nr, g->tid, g->start, g->end, &path);
                }
            } else {
                chk_path(r, nr, a->tid, a->start, a->end, &path);
            }
            int problem = -1;
            for (size_t i = 0; i < np; i++)
                if (problems[i] <= start) problem = (int)i;
            struct chk_row *row = NULL;
            for (size_t i = 0; i < t->nrows && !row; i++) {
                struct chk_row *x = &t->rows[i];
                if (x->problem == problem && !strcmp(x->run, run) && !strcmp(x->path, path.s) &&
                    !strcmp(x->name, name))
                    row = x;
            }
            if (!row) {
                struct chk_row x = {problem, xstrdup(run), xstrdup(path.s), xstrdup(name), 0, 0};
                LWB_PUSH(t->rows, t->nrows, t->caprows, x);
                row = &t->rows[t->nrows - 1];
            }
            row->count++;
            row->sum_ns += (double)(end - start);
        }
        sqlite3_finalize(st);
    }
#undef STR
    str_free(&path), str_free(&sql);
    for (size_t i = 0; i < nr; i++) free(r[i].text);
    for (size_t i = 0; i < nstr; i++) free(str[i]);
    free(r), free(str), free(problems), free(api), free(nodes);
    sqlite3_close(db);
}

static void chk_print(const char *path, const struct chk_table *t) {
    printf("%s: %" PRId64 " kernels/copies/memsets, %" PRId64 " without a launch record; %" PRId64
           " from graphs (%" PRId64 " through cloned nodes, %" PRId64 " unresolved)\n",
           path, t->activities, t->unlaunched, t->graph, t->graph_cloned, t->graph_unresolved);
    printf("  %-7s %-28s %-34s %-14s %6s %10s\n", "problem", "run", "module path", "name", "count",
           "mean us");
    for (size_t i = 0; i < t->nrows; i++) {
        const struct chk_row *x = &t->rows[i];
        printf("  %-7d %-28s %-34s %-14s %6" PRId64 " %10.2f\n", x->problem, x->run, x->path,
               x->name, x->count, x->sum_ns / (double)x->count / 1000.0);
    }
}

static void chk_free(struct chk_table *t) {
    for (size_t i = 0; i < t->nrows; i++) free(t->rows[i].run), free(t->rows[i].path), free(t->rows[i].name);
    free(t->rows);
}

// What the probe's contract says a profile of it holds: per problem, one run name and five
// (path, name) rows of W+T each, every graph kernel resolved to its capture. Returns failures.
static int chk_expect(const struct chk_table *t) {
    int bad = 0;
    if (t->warmup < 0 || t->timed < 0) {
        printf("check: no `layer_wise_benchmarks args` marker with warmup_times and run_times\n");
        return 1;
    }
    static const char *const want[][2] = {
        {"MLA", "lwb_rmsnorm"},
        {"Deepseekv3MoE/DeepseekV3Gate", "lwb_rmsnorm"},
        {"Deepseekv3MoE/MoE", "lwb_rmsnorm"},
        {"Deepseekv3MoE/MoE", "[memset]"},
        {"Deepseekv3MoE/MoE", "[memcpy]"},
    };
    const int64_t n = t->warmup + t->timed;
    for (int problem = 0; problem < 2; problem++)
        for (size_t k = 0; k < LWB_ARRAY_LEN(want); k++) {
            int64_t got = 0;
            for (size_t i = 0; i < t->nrows; i++) {
                const struct chk_row *x = &t->rows[i];
                if (x->problem == problem && is_run(x->run) && !strcmp(x->path, want[k][0]) &&
                    !strcmp(x->name, want[k][1]))
                    got += x->count;
            }
            if (got != n) {
                printf("check: problem %d, %s %s: %" PRId64 " in runs, expected %" PRId64 "\n",
                       problem, want[k][0], want[k][1], got, n);
                bad++;
            }
        }
    if (t->unlaunched) printf("check: %" PRId64 " records without a launch\n", t->unlaunched), bad++;
    if (t->graph != 5 * n) // 3 kernels, a memset and a copy per replay
        printf("check: %" PRId64 " graph records, expected %" PRId64 "\n", t->graph, 5 * n), bad++;
    if (t->graph_unresolved)
        printf("check: %" PRId64 " graph records whose node chain ends nowhere\n", t->graph_unresolved), bad++;
    if (t->graph_cloned != t->graph)
        printf("check: %" PRId64 " of %" PRId64 " graph records ran as nodes that are not clones "
               "(TensorRT-LLM's parser needs exec node -> original)\n",
               t->graph - t->graph_cloned, t->graph), bad++;
    printf("check: %s (%d warm-up + %d timed iterations per problem)\n", bad ? "FAILED" : "ok",
           t->warmup, t->timed);
    return bad;
}

// Same rows (outside-run rows aside: a narrower window legitimately misses them), same counts,
// means within 5 %.
static int chk_compare(const struct chk_table *a, const char *na, const struct chk_table *b,
                       const char *nb) {
    int bad = 0;
    for (int pass = 0; pass < 2; pass++) {
        const struct chk_table *x = pass ? b : a, *y = pass ? a : b;
        for (size_t i = 0; i < x->nrows; i++) {
            const struct chk_row *p = &x->rows[i], *q = NULL;
            if (!is_run(p->run)) continue;
            for (size_t j = 0; j < y->nrows && !q; j++)
                if (y->rows[j].problem == p->problem && !strcmp(y->rows[j].run, p->run) &&
                    !strcmp(y->rows[j].path, p->path) && !strcmp(y->rows[j].name, p->name))
                    q = &y->rows[j];
            if (!q) {
                printf("compare: only in %s: %d %s %s %s\n", pass ? nb : na, p->problem, p->run,
                       p->path, p->name);
                bad++;
                continue;
            }
            if (pass) continue;
            double mp = p->sum_ns / (double)p->count, mq = q->sum_ns / (double)q->count;
            if (p->count != q->count || fabs(mp - mq) > 0.05 * LWB_MAX(mp, mq)) {
                printf("compare: %d %s %s %s: %" PRId64 " x %.2f us vs %" PRId64 " x %.2f us\n",
                       p->problem, p->run, p->path, p->name, p->count, mp / 1000, q->count, mq / 1000);
                bad++;
            }
        }
    }
    printf("compare: %s\n", bad ? "DIFFERENT" : "same rows and counts, means within 5 %");
    return bad;
}

static int check_main(int argc, char **argv) {
    struct chk_table t[2];
    int bad = 0;
    for (int i = 0; i < argc; i++) {
        chk_load(argv[i], &t[i]);
        chk_print(argv[i], &t[i]);
        bad += chk_expect(&t[i]);
    }
    if (argc == 2) bad += chk_compare(&t[0], argv[0], &t[1], argv[1]);
    for (int i = 0; i < argc; i++) chk_free(&t[i]);
    return bad ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------

int main(int argc, char **argv) {
    lwb_proc_init("profile_probe");
    if (argc >= 3 && argc <= 4 && !strcmp(argv[1], "--check")) return check_main(argc - 2, argv + 2);
    const char *outdir = NULL;
    bool run_window = false;
    struct probe pb = {.rows = 4096, .warmup = 5, .timed = 20};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--window") && i + 1 < argc) {
            i++;
            if (strcmp(argv[i], "loop") && strcmp(argv[i], "run"))
                lwb_user_error("--window must be loop or run (got %s)", argv[i]);
            run_window = !strcmp(argv[i], "run");
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            if (sscanf(argv[++i], "%d,%d", &pb.warmup, &pb.timed) != 2 || pb.warmup < 0 || pb.timed < 1)
                lwb_user_error("--iters takes WARMUP,TIMED (got %s)", argv[i]);
        } else if (argv[i][0] != '-' && !outdir) {
            outdir = argv[i];
        } else {
            lwb_user_error("usage: profile_probe OUTDIR [--window loop|run] [--iters W,T] | "
                           "profile_probe --check FILE.sqlite [OTHER.sqlite]");
        }
    }
    if (!outdir) lwb_user_error("usage: profile_probe OUTDIR [--window loop|run] [--iters W,T]");

    struct lwb_device dev;
    device_open(&dev, 0);
    struct lwb_jit jit;
    jit_init(&jit, dev.arch, true);
    pb.cfg = rmsnorm_choose_config(7168, false);
    rmsnorm_request(&pb.req, pb.cfg);
    struct lwb_kreq *reqs[] = {&pb.req};
    jit_build(&jit, reqs, 1);
    CU_CHECK(lwb_cu.cuStreamCreate(&pb.s, CU_STREAM_NON_BLOCKING));
    const size_t elems = (size_t)pb.rows * (size_t)pb.cfg.hidden;
    pb.x = dev_alloc(elems * 2, "x");
    pb.out1 = dev_alloc(elems * 2, "out1");
    pb.out2 = dev_alloc(elems * 2, "out2");
    pb.out3 = dev_alloc(elems * 2, "out3");
    pb.w = dev_alloc((size_t)pb.cfg.hidden * 2, "weight");
    pb.scratch_bytes = elems * 2;
    pb.scratch = dev_alloc(pb.scratch_bytes, "memset target");
    pb.copy_bytes = (size_t)4 << 20;
    pb.copy_src = dev_alloc(pb.copy_bytes, "copy source");
    pb.copy_dst = dev_alloc(pb.copy_bytes, "copy target");
    const unsigned two_ones = 0x3F803F80u; // two bf16 1.0
    CU_CHECK(lwb_cu.cuMemsetD32Async(pb.x, two_ones, elems / 2, pb.s));
    CU_CHECK(lwb_cu.cuMemsetD32Async(pb.w, two_ones, (size_t)pb.cfg.hidden / 2, pb.s));
    CU_CHECK(lwb_cu.cuStreamSynchronize(pb.s));

    const char *nsys = profile_nsys_signal();
    printf("profile_probe: %s, rmsnorm %d x %d bf16, %d warm-up + %d timed iterations per problem\n",
           dev.name, pb.rows, pb.cfg.hidden, pb.warmup, pb.timed);
    if (nsys) printf("under Nsight Systems (%s is set): lwb's profiler stays off\n", nsys);
    else printf("lwb's profiler: on, activity window per %s\n", run_window ? "run" : "problem loop");

    double off1[2], on[2], off2[2];
    problems(&pb, NULL, false, off1);

    struct lwb_profiler prof;
    if (!nsys) profile_init(&prof, &dev, 0, 1);
    CU_CHECK(lwb_cu.cuProfilerStart());
    marker("args", json_pack("{s:i, s:i, s:s, s:s}", "warmup_times", pb.warmup, "run_times", pb.timed,
                             "window", run_window ? "run" : "loop", "profiler", nsys ? "nsys" : "lwb"));
    problems(&pb, nsys ? NULL : &prof, run_window, on);
    CU_CHECK(lwb_cu.cuCtxSynchronize());
    CU_CHECK(lwb_cu.cuProfilerStop());
    char *written = NULL;
    if (!nsys) {
        double t0 = lwb_now();
        const char *path = profile_write(&prof, outdir);
        written = xstrdup(path);
        printf("wrote %s in %.3f s\n", path, lwb_now() - t0);
        profile_free(&prof);
    }

    problems(&pb, NULL, false, off2);

    uint16_t row[8];
    CU_CHECK(lwb_cu.cuMemcpyDtoH(row, pb.out3, sizeof row));
    for (int i = 0; i < 8; i++)
        if (row[i] < 0x3F7F || row[i] > 0x3F81)
            lwb_fatal("rmsnorm output[%d] = bf16 0x%04x, expected about 1.0 (0x3f80)", i, row[i]);

    printf("timed loop, us per iteration:\n  %-6s %12s %12s %12s %8s\n", "", "off before",
           nsys ? "under nsys" : "profiled", "off after", "ratio");
    const char *names[2] = {"eager", "graph"};
    for (int k = 0; k < 2; k++)
        printf("  %-6s %12.2f %12.2f %12.2f %8.4f\n", names[k], off1[k], on[k], off2[k],
               on[k] / (0.5 * (off1[k] + off2[k])));
    int rc = 0;
    if (written) {
        char *args[1] = {written};
        rc = check_main(1, args);
    }
    free(written);
    return rc;
}

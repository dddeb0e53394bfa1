// cmd_parse.h: `lwb parse`: a profile (an nsys export or lwb's own) to a per-module kernel
// breakdown on stdout and in .csv, .json and .html files beside it; for profiles without
// layer-wise markers, kernel time per NVTX range.
//
// Defines: parse_opts, parse_help, cmd_parse, parse_resolve_input (which file to read, exporting
// an .nsys-rep with nsys when needed). With --e2e it checks the options and hands over to
// parse_e2e (parse_e2e.h, included after this file).
//
// Does not: read SQLite (trace.h) or format anything (report.h); it picks the input and the
// outputs and prints the header lines.
// Tested by test/test_report.c (whole runs on the layer-wise fixture against golden files) and
// test/cli_parse.sh (the command line: inputs, errors, exit codes, files written).
#pragma once
#include <sys/wait.h>

static const struct lwb_opt parse_opts[] = {
    {"file_path", LWB_OPT_STR, "FILE", NULL,
     "profile to parse: .sqlite (an nsys export or lwb's own) or .nsys-rep (exported with nsys)"},
    {"profile_dir", LWB_OPT_STR, "DIR", "profiles", "where --world-size looks for report_npN_rankR.*"},
    {"world_size", LWB_OPT_INT, "N", NULL, "parse DIR/report_npN_rankR of a run on N ranks (also --np)",
     NULL, LWB_OPT_POSITIVE, .min = 1, .max = 100000},
    {"np", LWB_OPT_INT, "N", NULL, "same as --world-size", NULL, LWB_OPT_POSITIVE | LWB_OPT_HIDDEN, .min = 1,
     .max = 100000},
    {"rank", LWB_OPT_INT, "R", "0", "rank whose profile to parse (with --world-size)", NULL, LWB_OPT_NONNEG,
     .min = 0, .max = 99999},
    {"module", LWB_OPT_STR, "NAME", NULL,
     "keep only kernels inside NVTX ranges with exactly this name (one per run)"},
    {"warmup_times", LWB_OPT_INT, "N", NULL,
     "runs dropped per problem (default: warmup_times recorded in the profile); --e2e: iterations (5)", NULL,
     LWB_OPT_NONNEG, .min = 0, .max = 1000000},
    {"query", LWB_OPT_STR, "LIST", NULL,
     "comma-separated substrings: print the summed time of the rows whose path contains each"},
    {"error_on_unknown_kernel", LWB_OPT_BOOL, NULL, "false",
     "fail when a torch elementwise kernel is not in the short-name table"},
    {"output_dir", LWB_OPT_STR, "DIR", NULL, "write the .csv, .json and .html here (default: beside the profile)"},
    {"trace_json", LWB_OPT_STR, "FILE", NULL,
     "also write a Chrome/Perfetto trace: GPU activities per stream, NVTX ranges per thread"},
    {"strict", LWB_OPT_BOOL, NULL, "false",
     "refuse a profile with impossible times (end before start, out of range) instead of leaving them out"},
    {"e2e", LWB_OPT_BOOL, NULL, "false",
     "end-to-end mode: the kernel timeline of chosen layers in a serving run (see above)"},
    {"eager_trace", LWB_OPT_STR, "FILE", NULL,
     "--e2e: profile of the run without CUDA graphs, layers marked (.sqlite or .nsys-rep)"},
    {"graph_trace", LWB_OPT_STR, "FILE", NULL,
     "--e2e: profile of the same run with CUDA graphs (default: the eager trace)"},
    {"layer_indices", LWB_OPT_INT_LIST, "LIST", NULL, "--e2e: layers whose kernels make the timeline, e.g. 5,6,7",
     NULL, LWB_OPT_NONNEG, .min = 0, .max = 100000},
    {"target_ctx_reqs", LWB_OPT_INT, "N", NULL, "--e2e: keep iterations with N context requests (default 0)", NULL,
     LWB_OPT_NONNEG, .min = 0, .max = 1000000000},
    {"target_gen_reqs", LWB_OPT_INT, "N", NULL,
     "--e2e: ... and N generation requests (default: with 0 context requests, the count of the first "
     "iteration that has none; else 0)",
     NULL, LWB_OPT_NONNEG, .min = 0, .max = 1000000000},
    {"output", LWB_OPT_STR, "X.json", NULL, "--e2e: write the timeline that lwb correlate reads", NULL, 0, 'o'},
};

// parse_e2e.h: the --e2e mode.
static int parse_e2e(const struct lwb_args *a, const char *eager_path, const char *graph_path);

static const struct lwb_cmd_help parse_help = {
    "parse", "(--file-path FILE | --world-size N [--rank R] | --e2e --eager-trace FILE --layer-indices LIST) [options]",
    "Turn a profile into a per-module kernel breakdown: stdout, CSV, JSON and HTML.",
    "Reads an Nsight Systems SQLite export (any version from 2022.2 on) or a profile written by\n"
    "lwb run. With layer_wise_benchmarks markers (lwb run, or TensorRT-LLM's layer-wise\n"
    "benchmarks under nsys) it prints the mean time of every kernel per problem after warm-up,\n"
    "grouped by the NVTX module ranges around its launch (CUDA-graph kernels by the ranges open\n"
    "when they were captured), plus Overlap, Space and Total. Other profiles get kernel time per\n"
    "NVTX range. Writes STEM.csv, STEM.json (the timeline that lwb correlate reads) and STEM.html\n"
    "(one self-contained page) beside the profile or in --output-dir.\n"
    "An .nsys-rep is exported to .sqlite with 'nsys export' when nsys is on the PATH.\n\n"
    "lwb parse --e2e --eager-trace E --layer-indices LIST [--graph-trace G] [-o X.json] reads a\n"
    "serving run instead (TensorRT-LLM's parse_e2e): iterations are the executor's '[Executor]\n"
    "_forward_step N: ...' ranges with --target-ctx-reqs and --target-gen-reqs requests (the first\n"
    "--warmup-times dropped), layers the 'layer_wise_benchmarks layer_idx <i>' ranges of the eager\n"
    "trace; the graph trace's kernels are mapped to layers by aligning them with the eager trace's.\n"
    "It prints each kernel of the chosen layers with its mean duration and end (us) and writes the\n"
    "timeline, each kernel's layer as its module, for lwb correlate."};

// The directory of `path` ("." when it has none).
static char *parse_dirname(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? xstrndup(path, s == path ? 1 : (size_t)(s - path)) : xstrdup(".");
}
// The file name of `path` without its last extension (".sqlite", ".nsys-rep", ...).
static char *parse_stem(const char *path) {
    const char *base = path_base(path), *dot = strrchr(base, '.');
    return dot && dot != base ? xstrndup(base, (size_t)(dot - base)) : xstrdup(base);
}
static bool parse_exists(const char *path, struct stat *sb) {
    struct stat tmp;
    return stat(path, sb ? sb : &tmp) == 0;
}

static bool parse_on_path(const char *prog) {
    const char *path = getenv("PATH");
    if (!path) return false;
    char *copy = xstrdup(path);
    bool found = false;
    for (char *save = NULL, *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char *p = lwb_path_join(*d ? d : ".", prog);
        found = access(p, X_OK) == 0;
        free(p);
    }
    free(copy);
    return found;
}

// Export an .nsys-rep to `sqlite` when the export is missing or older (as the reference does).
static void parse_export(const char *rep, const char *sqlite) {
    struct stat r, s;
    if (!parse_exists(rep, &r)) lwb_user_error("parse: %s: %s", rep, strerror(errno));
    bool have = parse_exists(sqlite, &s);
    bool stale = have && (s.st_mtim.tv_sec < r.st_mtim.tv_sec ||
                          (s.st_mtim.tv_sec == r.st_mtim.tv_sec && s.st_mtim.tv_nsec < r.st_mtim.tv_nsec));
    if (have && !stale) return;
    if (!parse_on_path("nsys")) {
        if (have) {
            lwb_warn("%s is older than %s and nsys is not on the PATH to export it again; reading it as is",
                     sqlite, rep);
            return;
        }
        lwb_user_error("parse: %s must be exported to SQLite first and nsys is not on the PATH; run "
                       "'nsys export --type sqlite -o %s --force-overwrite=true %s' where nsys is installed, "
                       "then parse the .sqlite",
                       rep, sqlite, rep);
    }
    fprintf(stderr, "lwb: exporting %s with nsys\n", rep);
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) lwb_fatal("parse: cannot start nsys: %s", strerror(errno));
    if (pid == 0) {
        dup2(2, 1); // nsys's chatter goes to stderr; stdout stays the report
        execlp("nsys", "nsys", "export", "--type", "sqlite", "-o", sqlite, "--force-overwrite=true", rep,
               (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !parse_exists(sqlite, NULL))
        lwb_fatal("parse: 'nsys export --type sqlite -o %s --force-overwrite=true %s' failed (%s %d)", sqlite,
                  rep, WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

// The SQLite file to read for `file` (malloc'd): itself, or an .nsys-rep's export beside it.
static char *parse_sqlite_of(const char *file) {
    if (!str_ends(file, ".nsys-rep")) return xstrdup(file);
    struct lwb_str s = {0};
    str_printf(&s, "%.*s.sqlite", (int)(strlen(file) - strlen(".nsys-rep")), file);
    parse_export(file, s.s);
    return str_take(&s);
}

// The SQLite file to read (malloc'd), from --file-path or --profile-dir/--world-size/--rank.
static char *parse_resolve_input(const struct lwb_args *a) {
    const char *file = arg_str(a, "file_path");
    long long ws = arg_set(a, "world_size") ? arg_int(a, "world_size") : arg_set(a, "np") ? arg_int(a, "np") : 0;
    if (arg_set(a, "world_size") && arg_set(a, "np"))
        lwb_user_error("parse: give --world-size or --np, not both (they are the same option)");
    if (!file == !ws)
        lwb_user_error("parse: give exactly one of --file-path FILE and --world-size N (lwb parse --help)");
    if (file) return parse_sqlite_of(file);
    long long rank = arg_int(a, "rank");
    if (rank >= ws)
        lwb_user_error("parse: --rank %lld is not a rank of --world-size %lld (ranks are 0..%lld)", rank, ws, ws - 1);
    struct lwb_str base = {0}, rep = {0}, sql = {0};
    str_printf(&base, "report_np%lld_rank%lld", ws, rank);
    char *b = lwb_path_join(arg_str(a, "profile_dir"), base.s);
    str_printf(&rep, "%s.nsys-rep", b);
    str_printf(&sql, "%s.sqlite", b);
    if (parse_exists(rep.s, NULL)) parse_export(rep.s, sql.s);
    else if (!parse_exists(sql.s, NULL))
        lwb_user_error("parse: no profile for rank %lld of %lld: neither %s nor %s exists (lwb run writes "
                       "them; --profile-dir says where)",
                       rank, ws, sql.s, rep.s);
    free(b), str_free(&base), str_free(&rep);
    return str_take(&sql);
}

static const char *plural(size_t n, const char *one, const char *many) { return n == 1 ? one : many; }

static void parse_print_header(const struct lwb_trace *t) {
    printf("lwb parse: %s", tesc(t->path));
    if (t->product[0] || t->version[0])
        printf(" (%s%s%s)", tesc(t->product[0] ? t->product : "nsys"), t->version[0] ? " " : "", tesc(t->version));
    printf(": %zu %s, %zu %s, %zu %s, %zu NVTX %s\n", t->count[0], plural(t->count[0], "kernel", "kernels"),
           t->count[1], plural(t->count[1], "memcpy", "memcpys"), t->count[2],
           plural(t->count[2], "memset", "memsets"), t->nr, plural(t->nr, "range", "ranges"));
}

static json_t *parse_config_json(const struct lwb_args *a, const char *input, const struct lwb_breakdown *b) {
    json_t *parse = json_object();
    json_object_set_new(parse, "profile", json_str(input));
    for (int i = 0; i < a->nopts; i++) {
        const struct lwb_opt *o = &a->opts[i];
        const struct lwb_val *v = &a->vals[i];
        if (!v->set || (o->flags & LWB_OPT_HIDDEN)) continue;
        json_t *j = o->type == LWB_OPT_BOOL ? json_boolean(v->b)
                    : o->type == LWB_OPT_INT ? json_integer(v->i)
                                             : json_str(v->s);
        json_object_set_new(parse, o->key, j);
    }
    if (b && b->np) {
        json_object_set_new(parse, "warmup_times_used", json_integer(b->warmup));
        json_object_set_new(parse, "problems", json_integer(b->np));
    }
    json_t *c = json_object();
    if (b && b->run_args) json_object_set(c, "run", b->run_args);
    json_object_set_new(c, "parse", parse);
    return c;
}

// An option given on the command line (not a default).
static bool parse_given(const struct lwb_args *a, const char *key) {
    int i = args_find(a, key);
    if (i < 0) LWB_BUG("option '%s' not in the table of '%s'", key, a->cmd);
    return a->vals[i].set && strcmp(a->vals[i].source, "default");
}

// The options of the two modes do not mix. Returns true for --e2e (its options checked).
static bool parse_check_mode(const struct lwb_args *a) {
    static const char *const e2e_only[] = {"eager_trace", "graph_trace", "layer_indices", "target_ctx_reqs",
                                           "target_gen_reqs", "output"};
    static const char *const plain_only[] = {"file_path", "profile_dir", "world_size", "np", "rank",
                                             "module", "query", "output_dir", "trace_json"};
    bool e2e = arg_bool(a, "e2e");
    for (size_t i = 0; i < (e2e ? LWB_ARRAY_LEN(plain_only) : LWB_ARRAY_LEN(e2e_only)); i++) {
        const char *key = e2e ? plain_only[i] : e2e_only[i];
        if (!parse_given(a, key)) continue;
        char flag[128];
        opt_flag_name(&a->opts[args_find(a, key)], flag, sizeof flag);
        if (e2e) lwb_user_error("parse: --%s does not apply with --e2e (lwb parse --help)", flag);
        lwb_user_error("parse: --%s belongs to the end-to-end mode; add --e2e (lwb parse --help)", flag);
    }
    if (!e2e) return false;
    if (!arg_str(a, "eager_trace"))
        lwb_user_error("parse --e2e: give --eager-trace FILE, the profile of the run without CUDA graphs");
    if (!parse_given(a, "layer_indices"))
        lwb_user_error("parse --e2e: give --layer-indices LIST, the layers whose kernels make the timeline");
    const char *out = arg_str(a, "output");
    if (out && (!str_ends(out, ".json") || !strcmp(path_base(out), ".json")))
        lwb_user_error("parse --e2e: --output must name a .json file (got \"%s\")", out);
    return true;
}

static int cmd_parse(int argc, char **argv) {
    struct lwb_args a;
    args_init(&a, "parse", parse_opts, (int)LWB_ARRAY_LEN(parse_opts));
    args_parse(&a, &parse_help, argc, argv, 0, NULL);
    args_apply_defaults(&a);
    if (parse_check_mode(&a)) {
        char *eager = parse_sqlite_of(arg_str(&a, "eager_trace"));
        char *graph = arg_str(&a, "graph_trace") ? parse_sqlite_of(arg_str(&a, "graph_trace")) : NULL;
        int rc = parse_e2e(&a, eager, graph);
        free(eager), free(graph);
        args_free(&a);
        return rc;
    }
    char *input = parse_resolve_input(&a);
    char *outdir = arg_str(&a, "output_dir") ? xstrdup(arg_str(&a, "output_dir")) : parse_dirname(input);

    char why[512];
    if (!input_check(input, LWB_IN_PROFILE, why, sizeof why)) lwb_user_error("%s: %s", input, why);
    // Before any work: no output may replace the profile or a special file.
    char *stem = parse_stem(input), *paths[3];
    static const char *ext[] = {".csv", ".json", ".html"};
    for (int i = 0; i < 3; i++) {
        struct lwb_str name = {0};
        str_printf(&name, "%s%s", stem, ext[i]);
        paths[i] = lwb_path_join(outdir, name.s);
        str_free(&name);
        output_check(paths[i], "parse");
    }
    if (arg_str(&a, "trace_json")) {
        output_check(arg_str(&a, "trace_json"), "--trace-json");
        for (int i = 0; i < 3; i++)
            if (paths_same(paths[i], arg_str(&a, "trace_json")))
                lwb_user_error("--trace-json: %s is also the parse's %s output; give another name", paths[i], ext[i] + 1);
    }
    struct lwb_trace t;
    trace_open(&t, input);
    if (t.bad_times && arg_bool(&a, "strict"))
        lwb_user_error("parse: %s: %zu GPU activities or NVTX ranges have impossible times (end before start, or "
                       "outside 0 .. 2^53 ns); drop --strict to leave them out",
                       input, t.bad_times);
    if (t.bad_times)
        lwb_warn("%s: %zu GPU activities or NVTX ranges have impossible times (end before start, or outside 0 .. "
                 "2^53 ns) and are left out (--strict refuses such profiles)",
                 input, t.bad_times);
    parse_print_header(&t);
    struct lwb_bd_opts bo = {arg_str(&a, "module"), arg_set(&a, "warmup_times") ? (int)arg_int(&a, "warmup_times") : -1};
    struct lwb_breakdown b;
    struct lwb_nvtx_sum s = {0};
    struct lwb_report rep;
    json_t *json;
    if (breakdown_build(&t, &bo, &b)) {
        if (arg_bool(&a, "error_on_unknown_kernel") && t.unknown_kernels)
            lwb_user_error("parse: %d torch kernel %s not in the short-name table (warnings above); drop "
                           "--error-on-unknown-kernel to parse anyway",
                           t.unknown_kernels, plural((size_t)t.unknown_kernels, "name is", "names are"));
        printf("Warm-up: %d %s dropped per problem (%s)\n", b.warmup, plural((size_t)b.warmup, "run", "runs"),
               b.warmup_from_profile ? "warmup_times of the profile" : "--warmup-times");
        printf("Run args:\n");
        if (b.run_args) {
            char *ra = json_dumps(b.run_args, 0);
            printf("%s\n", tesc(ra));
            free(ra);
        } else {
            printf("(none: the profile has no 'layer_wise_benchmarks args' range)\n");
        }
        printf("Problem set:\n");
        for (int i = 0; i < b.np; i++) {
            printf("- \"%s\"    %d runs    Ranges: [", tesc(b.p[i].text), b.p[i].nruns);
            for (int j = 0; j < b.p[i].nranges; j++)
                printf("%s%s", j ? ", " : "", tesc(trace_str(&t, b.p[i].ranges[j])));
            printf("]\n");
        }
        report_from_breakdown(&rep, &b);
        json = report_timeline_json(&b);
    } else {
        if (bo.module || bo.warmup >= 0)
            lwb_warn("--module and --warmup-times apply to layer-wise profiles only; %s has no "
                     "layer_wise_benchmarks markers", input);
        nvtx_sum_build(&t, &s);
        printf("No layer_wise_benchmarks markers: kernel time per NVTX range open at each launch "
               "(%zu of %zu GPU activities inside a range%s)\n",
               t.enclosed, t.nk, t.has_nvtx ? "" : "; the profile has no NVTX_EVENTS table");
        report_from_summary(&rep, &t, &s);
        json = report_summary_json(&t, &s);
    }
    rep.config = parse_config_json(&a, input, &b);
    report_print_table(stdout, &rep);
    if (arg_str(&a, "query")) report_print_query(stdout, &rep, arg_str(&a, "query"));

    // Every output is complete before any is renamed into place; the folder is made only now.
    output_dir(outdir);
    struct lwb_str body = {0};
    for (int i = 0; i < 3; i++) {
        FILE *f = output_open(paths[i]);
        str_clear(&body);
        if (i == 0) report_csv(&rep, &body);
        if (i == 2) report_html(&rep, &body);
        if (i == 1) report_json(json, f);
        else report_out_str(f, &body);
    }
    if (arg_str(&a, "trace_json")) {
        char *tdir = parse_dirname(arg_str(&a, "trace_json"));
        output_dir(tdir);
        free(tdir);
        report_write_trace(&t, output_open(arg_str(&a, "trace_json")));
    }
    outputs_commit();
    printf("Wrote %s, %s, %s%s%s\n", tesc(paths[0]), tesc(paths[1]), tesc(paths[2]),
           arg_str(&a, "trace_json") ? ", " : "", arg_str(&a, "trace_json") ? tesc(arg_str(&a, "trace_json")) : "");
    for (int i = 0; i < 3; i++) free(paths[i]);
    str_free(&body);
    free(stem), free(outdir), free(input);
    json_decref(json);
    report_free(&rep);
    breakdown_free(&b);
    nvtx_sum_free(&s);
    trace_free(&t);
    args_free(&a);
    return 0;
}

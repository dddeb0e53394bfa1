// cmd_correlate.h: `lwb correlate`: align kernel timelines (the .json of lwb parse, or of the
// reference's parse.py / parse_e2e.py) with one reference timeline and draw them in one HTML page
// (reference §8).
//
// Defines: correlate_opts, correlate_help, cmd_correlate, correlate_load (read and check a
// timeline file), correlate_align (x positions of a target's kernels on the reference's axis).
//
// NOTES:
// - Alignment is visual, as in the reference: the reference's kernels sit at x = 1..N; a target
//   kernel matched to one (shortest common supersequence of full names) takes its x; unmatched
//   runs are interpolated linearly between matched neighbours; a leading one goes to
//   min(1, first matched - 1), a trailing one to max(N, last matched + 1).
// - A target that shares no kernel with the reference is spread evenly over [1, N] (the
//   reference fails on it).
//
// Does not: compute statistics (no correlation coefficient, no error metric).
// Tested by test/test_report.c (golden alignments, schema errors) and test/cli_parse.sh.
#pragma once

static const struct lwb_opt correlate_opts[] = {
    {"reference", LWB_OPT_STR, "FILE", NULL, "timeline JSON holding exactly one timeline (lwb parse's .json)"},
    {"target", LWB_OPT_STR, "FILE", NULL, "timeline JSON to align with the reference (every timeline in it)",
     NULL, LWB_OPT_REPEAT},
    {"output", LWB_OPT_STR, "FILE", NULL, "HTML page to write", NULL, 0, 'o'},
};

static const struct lwb_cmd_help correlate_help = {
    "correlate", "--reference A.json --target B.json [--target C.json ...] -o report.html",
    "Align kernel timelines with a reference timeline and chart them in one HTML page.",
    "Timelines are the .json files of lwb parse: [{name, timeline: [{name, duration, end}]}] with\n"
    "times in ns. Kernels are matched by full name (shortest common supersequence); the page has\n"
    "two charts, kernel duration and kernel end time, with one series per timeline and the x axis\n"
    "labelled by the reference's kernels."};

struct lwb_timeline {
    char *name;     // the problem text, e.g. "b=1 s=1 past=100 NP1"
    int n;          // kernels
    char **kernel;  // (n) full names
    double *dur_ns; // (n)
    double *end_ns; // (n)
};

static void timeline_free(struct lwb_timeline *t) {
    for (int i = 0; i < t->n; i++) free(t->kernel[i]);
    free(t->name), free(t->kernel), free(t->dur_ns), free(t->end_ns);
}

// Read a timeline file. Exits with one line naming the file and what is wrong.
static int correlate_load(const char *path, struct lwb_timeline **out) {
    json_error_t err;
    char why[512];
    size_t size;
    char *text = input_read(path, LWB_IN_TIMELINE, &size, why, sizeof why);
    if (!text) lwb_user_error("correlate: %s: %s", path, why);
    json_t *root = json_loadb(text, size, 0, &err);
    free(text);
    if (!root) lwb_user_error("correlate: %s:%d: not valid JSON (%s)", path, err.line, err.text);
    const char *schema = "expected [{\"name\", \"timeline\": [{\"name\", \"duration\", \"end\"}]}] as lwb parse writes";
    if (json_is_object(root) && json_object_get(root, "kind"))
        lwb_user_error("correlate: %s is a per-range summary (its profile had no layer_wise_benchmarks "
                       "markers), not a kernel timeline",
                       path);
    if (!json_is_array(root)) lwb_user_error("correlate: %s: not a list of timelines; %s", path, schema);
    int n = (int)json_array_size(root);
    struct lwb_timeline *tl = xcalloc((size_t)n + 1, sizeof *tl);
    for (int i = 0; i < n; i++) {
        json_t *o = json_array_get(root, (size_t)i), *name = json_object_get(o, "name");
        json_t *list = json_object_get(o, "timeline");
        if (!json_is_string(name) || !json_is_array(list))
            lwb_user_error("correlate: %s: timeline %d lacks a string \"name\" or a list \"timeline\"; %s", path, i,
                           schema);
        tl[i].name = xstrdup(json_string_value(name));
        tl[i].n = (int)json_array_size(list);
        tl[i].kernel = xcalloc((size_t)tl[i].n + 1, sizeof(char *));
        tl[i].dur_ns = xcalloc((size_t)tl[i].n + 1, sizeof(double));
        tl[i].end_ns = xcalloc((size_t)tl[i].n + 1, sizeof(double));
        for (int k = 0; k < tl[i].n; k++) {
            json_t *e = json_array_get(list, (size_t)k), *kn = json_object_get(e, "name");
            json_t *d = json_object_get(e, "duration"), *end = json_object_get(e, "end");
            if (!json_is_string(kn) || !json_is_number(d) || !json_is_number(end))
                lwb_user_error("correlate: %s: timeline \"%s\", kernel %d needs a string \"name\" and numbers "
                               "\"duration\" and \"end\"; %s",
                               path, tl[i].name, k, schema);
            tl[i].kernel[k] = xstrdup(json_string_value(kn));
            tl[i].dur_ns[k] = json_number_value(d), tl[i].end_ns[k] = json_number_value(end);
        }
    }
    json_decref(root);
    *out = tl;
    return n;
}

// x of each target kernel on the reference's axis (reference kernels are 1..nref); x (n) out.
// Returns false when no kernel matched (then x spreads evenly over [1, nref]).
static bool correlate_align(const int32_t *ref, int nref, const int32_t *tgt, int n, double *x, FILE *log,
                            const char *label) {
    int32_t *sup;
    int nsup = scs_merge(ref, nref, tgt, n, &sup);
    int *xsup = xmalloc((size_t)(nsup + 1) * sizeof *xsup); // 0: not a reference kernel
    for (int i = 0, j = 0; i < nsup; i++) xsup[i] = (j < nref && sup[i] == ref[j]) ? ++j : 0;
    if (log) {
        fprintf(log, "%s x_sup=[", tesc(label));
        for (int i = 0; i < nsup; i++) xsup[i] ? fprintf(log, "%s%d", i ? ", " : "", xsup[i]) : fprintf(log, "%sNone", i ? ", " : "");
        fprintf(log, "]\n");
    }
    bool *known = xcalloc((size_t)n + 1, 1);
    int first = -1, last = -1;
    for (int i = 0, j = 0; i < n; i++, j++) {
        while (sup[j] != tgt[i]) j++;
        if (xsup[j]) x[i] = xsup[j], known[i] = true, last = i, first = first < 0 ? i : first;
    }
    bool any = first >= 0;
    if (n && !known[0]) x[0] = any ? LWB_MIN(1.0, x[first] - 1) : 1, known[0] = true;
    if (n > 1 && !known[n - 1]) x[n - 1] = any ? LWB_MAX((double)nref, x[last] + 1) : LWB_MAX(nref, 2), known[n - 1] = true;
    for (int top = 0; top < n - 1;) {
        int next = top + 1;
        while (!known[next]) next++;
        for (int i = top + 1; i < next; i++) x[i] = x[top] + (x[next] - x[top]) * (i - top) / (next - top);
        top = next;
    }
    if (log) {
        fprintf(log, "%s x_tgt=[", tesc(label));
        for (int i = 0; i < n; i++) fprintf(log, "%s%.10g", i ? ", " : "", x[i]);
        fprintf(log, "]\n");
    }
    free(sup), free(xsup), free(known);
    return any;
}

static json_t *correlate_series(const char *label, const struct lwb_timeline *t, const double *x,
                                struct lwb_trace *names) {
    json_t *s = json_object(), *pts = json_array();
    json_object_set_new(s, "series", json_str(label));
    for (int i = 0; i < t->n; i++) {
        json_t *p = json_object();
        json_object_set_new(p, "x", json_real(x ? x[i] : i + 1));
        int32_t id = strtab_intern(&names->str, t->kernel[i]);
        json_object_set_new(p, "name", json_str(trace_str(names, trace_short_name(names, id, true))));
        json_object_set_new(p, "duration", json_real(t->dur_ns[i] / 1000));
        json_object_set_new(p, "end", json_real(t->end_ns[i] / 1000));
        json_array_append_new(pts, p);
    }
    json_object_set_new(s, "points", pts);
    return s;
}

static int cmd_correlate(int argc, char **argv) {
    struct lwb_args a;
    args_init(&a, "correlate", correlate_opts, (int)LWB_ARRAY_LEN(correlate_opts));
    args_parse(&a, &correlate_help, argc, argv, 0, NULL);
    const char *refpath = arg_str(&a, "reference"), *outpath = arg_str(&a, "output");
    const struct lwb_val *targets = arg_val(&a, "target", LWB_OPT_STR);
    if (!refpath || !targets->n || !outpath)
        lwb_user_error("correlate: give --reference FILE, at least one --target FILE and -o OUT.html "
                       "(lwb correlate --help)");
    struct lwb_timeline *ref;
    int nref = correlate_load(refpath, &ref);
    struct lwb_timeline **tls = xcalloc((size_t)targets->n, sizeof *tls);
    int *ntls = xcalloc((size_t)targets->n, sizeof *ntls);
    for (int ti = 0; ti < targets->n; ti++) ntls[ti] = correlate_load(targets->strs[ti], &tls[ti]);
    output_check(outpath, "correlate -o"); // not an input, not a special file
    if (nref != 1)
        lwb_user_error("correlate: ambiguous reference data: %s holds %d timelines and the reference must "
                       "hold exactly one (parse one problem, or copy the wanted entry into its own file)",
                       refpath, nref);
    struct lwb_trace names = {0}; // names and short names, interned once
    int32_t *rid = xmalloc((size_t)(ref->n + 1) * sizeof *rid);
    for (int i = 0; i < ref->n; i++) rid[i] = strtab_intern(&names.str, ref->kernel[i]);
    json_t *series = json_array();
    struct lwb_str label = {0};
    str_printf(&label, "reference: %s", ref->name);
    json_array_append_new(series, correlate_series(label.s, ref, NULL, &names));
    for (int ti = 0; ti < targets->n; ti++) {
        struct lwb_timeline *tl = tls[ti];
        int ntl = ntls[ti];
        for (int j = 0; j < ntl; j++) {
            int32_t *tid = xmalloc((size_t)(tl[j].n + 1) * sizeof *tid);
            double *x = xcalloc((size_t)tl[j].n + 1, sizeof *x);
            for (int i = 0; i < tl[j].n; i++) tid[i] = strtab_intern(&names.str, tl[j].kernel[i]);
            str_clear(&label);
            str_printf(&label, "target %d timeline %d", ti, j);
            if (!correlate_align(rid, ref->n, tid, tl[j].n, x, stdout, label.s) && tl[j].n)
                lwb_warn("target %d (%s) timeline \"%s\" shares no kernel name with the reference; its kernels are "
                         "spread evenly over the reference's axis",
                         ti, targets->strs[ti], tl[j].name);
            str_clear(&label);
            str_printf(&label, "target%d: %s", ti, tl[j].name);
            json_array_append_new(series, correlate_series(label.s, &tl[j], x, &names));
            free(tid), free(x);
            timeline_free(&tl[j]);
        }
        free(tl);
    }
    json_t *d = json_object();
    json_object_set_new(d, "title", json_string("CUDA Kernel Correlation"));
    json_object_set_new(d, "series", series);
    struct lwb_str data = {0}, page = {0};
    json_for_script(d, JSON_COMPACT | JSON_REAL_PRECISION(10), &data);
    const char *keys[] = {"TITLE", "CSS", "DATA", "CHART_JS", "JS"};
    const char *vals[] = {"CUDA Kernel Correlation", asset_text("src/assets/report.css"), data.s,
                          asset_text("src/assets/chart.js"), asset_text("src/assets/correlate.js")};
    report_page("src/assets/correlate.html", keys, vals, 5, &page);
    char *odir = parse_dirname(outpath);
    output_dir(odir);
    free(odir);
    report_out_str(output_open(outpath), &page);
    outputs_commit();
    printf("Wrote %s\n", tesc(outpath));
    json_decref(d);
    str_free(&data), str_free(&page), str_free(&label);
    timeline_free(ref), free(ref), free(rid), free(tls), free(ntls);
    trace_free(&names);
    args_free(&a);
    return 0;
}

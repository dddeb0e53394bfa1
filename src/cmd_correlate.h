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
// - Beyond the reference: for each target, where the time goes against the reference: kernel
//   time in all and the gap (us, %), per module (when both timelines carry lwb's "module") and
//   per kernel short name (reference, target, gap, ratio), the 10 kernels with the largest
//   gaps, and the kernel names found on one side only; on stdout, in the page, and with
//   --output-json as JSON.
//
// Does not: compute a correlation coefficient.
// Tested by test/test_report.c (golden alignments, schema errors) and test/cli_parse.sh.
#pragma once

static const struct lwb_opt correlate_opts[] = {
    {"reference", LWB_OPT_STR, "FILE", NULL, "timeline JSON holding exactly one timeline (lwb parse's .json)"},
    {"target", LWB_OPT_STR, "FILE", NULL, "timeline JSON to align with the reference (every timeline in it)",
     NULL, LWB_OPT_REPEAT},
    {"output", LWB_OPT_STR, "FILE", NULL, "HTML page to write", NULL, 0, 'o'},
    {"output_json", LWB_OPT_STR, "FILE", NULL,
     "also write the comparison (totals, per module, per kernel name, one-sided kernels) as JSON"},
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
    char **module;  // (n) enclosing module ranges ("" outside), or NULL entries where not given
};

static void timeline_free(struct lwb_timeline *t) {
    for (int i = 0; i < t->n; i++) free(t->kernel[i]), free(t->module[i]);
    free(t->name), free(t->kernel), free(t->dur_ns), free(t->end_ns), free(t->module);
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
        tl[i].module = xcalloc((size_t)tl[i].n + 1, sizeof(char *));
        for (int k = 0; k < tl[i].n; k++) {
            json_t *e = json_array_get(list, (size_t)k), *kn = json_object_get(e, "name");
            json_t *d = json_object_get(e, "duration"), *end = json_object_get(e, "end");
            if (!json_is_string(kn) || !json_is_number(d) || !json_is_number(end))
                lwb_user_error("correlate: %s: timeline \"%s\", kernel %d needs a string \"name\" and numbers "
                               "\"duration\" and \"end\"; %s",
                               path, tl[i].name, k, schema);
            tl[i].kernel[k] = xstrdup(json_string_value(kn));
            tl[i].dur_ns[k] = json_number_value(d), tl[i].end_ns[k] = json_number_value(end);
            if (!(fabs(tl[i].dur_ns[k]) < 1e18 && fabs(tl[i].end_ns[k]) < 1e18))
                lwb_user_error("correlate: %s: timeline \"%s\", kernel %d: duration and end must be finite numbers of "
                               "ns below 1e18",
                               path, tesc(tl[i].name), k);
            json_t *mod = json_object_get(e, "module");
            if (json_is_string(mod)) tl[i].module[k] = xstrdup(json_string_value(mod));
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

// ---------------------------------------------------------------------------------------------
// Where the time goes: a target against the reference, in totals, per module and per kernel name.

struct corr_row {
    char *key;
    double ref_ns, tgt_ns;
    int ref_n, tgt_n;
};
struct corr_table {
    struct corr_row *r;
    int n;
    size_t cap;
    struct lwb_map64 index; // interned key id -> row
};

// The row of `key` (interned as `id` in the names' table), made on first sight.
static struct corr_row *corr_row_of(struct corr_table *t, int32_t id, const char *key) {
    int64_t *slot = map64_slot(&t->index, (uint64_t)id);
    if (*slot >= 0) return &t->r[*slot];
    lwb_grow((void **)&t->r, &t->cap, (size_t)t->n + 1, sizeof *t->r);
    t->r[t->n] = (struct corr_row){.key = xstrdup(key)};
    *slot = t->n;
    return &t->r[t->n++];
}

static void corr_table_free(struct corr_table *t) {
    for (int i = 0; i < t->n; i++) free(t->r[i].key);
    free(t->r);
    map64_free(&t->index);
    *t = (struct corr_table){0};
}

struct corr_stats {
    double ref_ns, tgt_ns;         // sums of kernel durations
    double ref_span, tgt_span;     // last kernel end
    bool modules;                  // both timelines carry modules
    struct corr_table by_module, by_kernel;
};

static const char *corr_module_key(const char *m) { return m && *m ? m : "(outside modules)"; }

static void corr_add(struct corr_table *t, struct lwb_trace *names, const char *key, double ns, bool ref) {
    struct corr_row *r = corr_row_of(t, strtab_intern(&names->str, key), key);
    if (ref) r->ref_ns += ns, r->ref_n++;
    else r->tgt_ns += ns, r->tgt_n++;
}

static void correlate_stats(const struct lwb_timeline *ref, const struct lwb_timeline *tgt, struct lwb_trace *names,
                            struct corr_stats *st) {
    *st = (struct corr_stats){0};
    st->modules = (ref->n == 0 || ref->module[0]) && (tgt->n == 0 || tgt->module[0]);
    for (int side = 0; side < 2; side++) {
        const struct lwb_timeline *t = side ? tgt : ref;
        for (int i = 0; i < t->n; i++) {
            const bool is_ref = side == 0;
            *(is_ref ? &st->ref_ns : &st->tgt_ns) += t->dur_ns[i];
            double *span = is_ref ? &st->ref_span : &st->tgt_span;
            *span = LWB_MAX(*span, t->end_ns[i]);
            int32_t id = strtab_intern(&names->str, t->kernel[i]);
            corr_add(&st->by_kernel, names, trace_str(names, trace_short_name(names, id, true)), t->dur_ns[i], is_ref);
            if (st->modules) corr_add(&st->by_module, names, corr_module_key(t->module[i]), t->dur_ns[i], is_ref);
        }
    }
}

static void corr_stats_free(struct corr_stats *st) {
    corr_table_free(&st->by_module);
    corr_table_free(&st->by_kernel);
}

static double corr_gap(const struct corr_row *r) { return r->tgt_ns - r->ref_ns; }
static int corr_by_gap(const void *a, const void *b) {
    double ga = fabs(corr_gap(a)), gb = fabs(corr_gap(b));
    return ga < gb ? 1 : ga > gb ? -1 : strcmp(((const struct corr_row *)a)->key, ((const struct corr_row *)b)->key);
}

static const char *corr_pct(double tgt, double ref, char *buf, size_t n) {
    if (ref > 0) snprintf(buf, n, "%+.1f%%", 100.0 * (tgt - ref) / ref);
    else snprintf(buf, n, "-");
    return buf;
}

static void corr_print_table(FILE *out, const char *what, const struct corr_table *t, int limit) {
    fprintf(out, "  %-40s %12s %12s %10s %8s\n", what, "reference us", "target us", "gap us", "ratio");
    for (int i = 0; i < t->n && i < limit; i++) {
        const struct corr_row *r = &t->r[i];
        char ratio[32];
        if (r->ref_ns > 0) snprintf(ratio, sizeof ratio, "%.2f", r->tgt_ns / r->ref_ns);
        else snprintf(ratio, sizeof ratio, "-");
        fprintf(out, "  %-40.40s %12.1f %12.1f %+10.1f %8s\n", tesc(r->key), r->ref_ns / 1000, r->tgt_ns / 1000,
                corr_gap(r) / 1000, ratio);
    }
}

// The stdout summary of one target timeline, and its JSON record.
static json_t *correlate_report(FILE *out, const char *label, const struct corr_stats *st) {
    char pct[32];
    fprintf(out, "%s: kernels %.1f us against the reference's %.1f us (%+.1f us, %s); last kernel ends at %.1f us "
                 "against %.1f us\n",
            tesc(label), st->tgt_ns / 1000, st->ref_ns / 1000, (st->tgt_ns - st->ref_ns) / 1000,
            corr_pct(st->tgt_ns, st->ref_ns, pct, sizeof pct), st->tgt_span / 1000, st->ref_span / 1000);
    if (st->modules) corr_print_table(out, "module", &st->by_module, st->by_module.n);
    struct corr_table top = st->by_kernel;
    top.r = xmalloc(sizeof *top.r * (size_t)(top.n ? top.n : 1));
    memcpy(top.r, st->by_kernel.r, sizeof *top.r * (size_t)top.n);
    qsort(top.r, (size_t)top.n, sizeof *top.r, corr_by_gap);
    corr_print_table(out, "kernels, largest gaps first", &top, 10);
    json_t *only_ref = json_array(), *only_tgt = json_array(), *kernels = json_array(), *modules = json_array();
    for (int i = 0; i < top.n; i++) {
        const struct corr_row *r = &top.r[i];
        if (!r->tgt_n) json_array_append_new(only_ref, json_str(r->key));
        if (!r->ref_n) json_array_append_new(only_tgt, json_str(r->key));
    }
    if (json_array_size(only_ref) || json_array_size(only_tgt)) {
        fprintf(out, "  kernel names only in the reference: %zu; only in the target: %zu\n", json_array_size(only_ref),
                json_array_size(only_tgt));
        for (size_t i = 0; i < json_array_size(only_ref) && i < 10; i++)
            fprintf(out, "    reference only: %s\n", tesc(json_string_value(json_array_get(only_ref, i))));
        for (size_t i = 0; i < json_array_size(only_tgt) && i < 10; i++)
            fprintf(out, "    target only: %s\n", tesc(json_string_value(json_array_get(only_tgt, i))));
    }
    const struct corr_table *tabs[2] = {&top, &st->by_module};
    json_t *arrs[2] = {kernels, modules};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < tabs[k]->n; i++) {
            const struct corr_row *r = &tabs[k]->r[i];
            json_array_append_new(arrs[k], json_pack("{s:o, s:f, s:f, s:f, s:i, s:i}", "name", json_str(r->key),
                                                     "reference_us", r->ref_ns / 1000, "target_us", r->tgt_ns / 1000,
                                                     "gap_us", corr_gap(r) / 1000, "reference_count", r->ref_n,
                                                     "target_count", r->tgt_n));
        }
    free(top.r);
    json_t *o = json_pack("{s:o, s:f, s:f, s:f, s:f, s:f}", "target", json_str(label), "reference_us", st->ref_ns / 1000,
                          "target_us", st->tgt_ns / 1000, "gap_us", (st->tgt_ns - st->ref_ns) / 1000,
                          "reference_end_us", st->ref_span / 1000, "target_end_us", st->tgt_span / 1000);
    json_object_set_new(o, "gap_pct", st->ref_ns > 0 ? json_real(100.0 * (st->tgt_ns - st->ref_ns) / st->ref_ns) : json_null());
    json_object_set_new(o, "modules", modules);
    json_object_set_new(o, "kernels", kernels); // largest absolute gap first
    json_object_set_new(o, "only_in_reference", only_ref);
    json_object_set_new(o, "only_in_target", only_tgt);
    return o;
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
    const char *jsonpath = arg_str(&a, "output_json");
    if (jsonpath) output_check(jsonpath, "correlate --output-json");
    if (jsonpath && paths_same(jsonpath, outpath))
        lwb_user_error("correlate: -o and --output-json name the same file (%s); give two paths", tesc(outpath));
    if (nref != 1)
        lwb_user_error("correlate: ambiguous reference data: %s holds %d timelines and the reference must "
                       "hold exactly one (parse one problem, or copy the wanted entry into its own file)",
                       refpath, nref);
    struct lwb_trace names = {0}; // names and short names, interned once
    int32_t *rid = xmalloc((size_t)(ref->n + 1) * sizeof *rid);
    for (int i = 0; i < ref->n; i++) rid[i] = strtab_intern(&names.str, ref->kernel[i]);
    json_t *series = json_array(), *compare = json_array();
    struct lwb_str label = {0};
    struct corr_stats *stats = NULL; // printed after the alignments (whose lines are the reference's)
    char **stat_labels = NULL;
    int nstats = 0;
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
            stats = xrealloc(stats, sizeof *stats * (size_t)(nstats + 1));
            stat_labels = xrealloc(stat_labels, sizeof *stat_labels * (size_t)(nstats + 1));
            correlate_stats(ref, &tl[j], &names, &stats[nstats]);
            stat_labels[nstats++] = xstrdup(label.s);
            free(tid), free(x);
            timeline_free(&tl[j]);
        }
        free(tl);
    }
    for (int i = 0; i < nstats; i++) {
        json_array_append_new(compare, correlate_report(stdout, stat_labels[i], &stats[i]));
        corr_stats_free(&stats[i]);
        free(stat_labels[i]);
    }
    free(stats), free(stat_labels);
    json_t *d = json_object();
    json_object_set_new(d, "title", json_string("CUDA Kernel Correlation"));
    json_object_set_new(d, "series", series);
    json_object_set_new(d, "compare", json_incref(compare));
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
    if (jsonpath) {
        json_t *doc = json_pack("{s:o, s:O}", "reference", json_str(ref->name), "targets", compare);
        char *text = json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        char *jdir = parse_dirname(jsonpath);
        output_dir(jdir);
        free(jdir);
        output_write(jsonpath, text, strlen(text));
        free(text);
        json_decref(doc);
    }
    json_decref(compare);
    outputs_commit();
    printf("Wrote %s%s%s\n", tesc(outpath), jsonpath ? " and " : "", jsonpath ? tesc(jsonpath) : "");
    json_decref(d);
    str_free(&data), str_free(&page), str_free(&label);
    timeline_free(ref), free(ref), free(rid), free(tls), free(ntls);
    trace_free(&names);
    args_free(&a);
    return 0;
}

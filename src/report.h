// report.h: the writers of `lwb parse` and `lwb correlate`. One record type, struct lwb_report
// (a tree of rows with one value per column), feeds the stdout table, the CSV and the HTML page;
// the JSON timeline and the Chrome trace are written straight from the breakdown and the trace.
//
// Defines: report_from_breakdown, report_from_summary, report_print_table, report_print_query,
// report_csv, report_html, report_page (an embedded HTML template filled with JSON data),
// report_timeline_json, report_summary_json, report_write_trace, json_str (a JSON string from
// any bytes). Files are opened and committed through files.h.
//
// NOTES:
// - Formats follow the reference (§6.4): stdout leaf lines are "|--" x (level-1) + name[:40]
//   padded, then "%6.1f" per problem; the CSV is Python's csv.writer (QUOTE_MINIMAL, CRLF).
// - Names from a profile reach the HTML only as JSON inside <script type="application/json">,
//   with '<', '>' and '&' written as \u003c, \u003e, \u0026, so no name can close the script;
//   the page's script puts them in the document with textContent, never as markup.
//
// Does not: read profiles (trace.h) or parse the command line (cmd_parse.h, cmd_correlate.h).
// Tested by test/test_report.c (golden CSV/JSON/stdout, HTML escaping) and test/cli_parse.sh.
#pragma once

static void report_out_str(FILE *f, const struct lwb_str *s) {
    if (s->len) fwrite(s->s, 1, s->len, f);
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

// A JSON string of any bytes: invalid UTF-8 becomes '?', since jansson takes only UTF-8.
static json_t *json_str(const char *s) {
    json_t *j = json_string(s ? s : "");
    if (j) return j;
    char *c = xstrdup(s);
    for (char *p = c; *p; p++)
        if ((unsigned char)*p >= 0x80) *p = '?';
    j = json_string(c);
    free(c);
    return j;
}

// JSON text that is safe inside an HTML <script> element.
static void json_for_script(json_t *j, size_t flags, struct lwb_str *out) {
    char *s = json_dumps(j, flags | JSON_ENCODE_ANY);
    if (!s) LWB_BUG("json_dumps failed");
    for (const char *p = s; *p; p++) {
        if (*p == '<') str_puts(out, "\\u003c");
        else if (*p == '>') str_puts(out, "\\u003e");
        else if (*p == '&') str_puts(out, "\\u0026");
        else str_append(out, p, 1);
    }
    free(s);
}

static void html_escape(const char *s, struct lwb_str *out) {
    for (; *s; s++) {
        switch (*s) {
        case '<': str_puts(out, "&lt;"); break;
        case '>': str_puts(out, "&gt;"); break;
        case '&': str_puts(out, "&amp;"); break;
        case '"': str_puts(out, "&quot;"); break;
        case '\'': str_puts(out, "&#39;"); break;
        default: str_append(out, s, 1);
        }
    }
}

// Fill an embedded template: each {{KEY}} becomes its value. Values are not scanned again.
static void report_page(const char *asset, const char *const *keys, const char *const *vals, int n,
                        struct lwb_str *out) {
    const struct lwb_embedded *e = embedded_find(asset);
    if (!e) LWB_BUG("asset %s is not embedded", asset);
    for (const char *p = e->data; *p;) {
        const char *open = strstr(p, "{{");
        if (!open) {
            str_puts(out, p);
            break;
        }
        str_append(out, p, (size_t)(open - p));
        const char *close = strstr(open, "}}");
        int k = 0;
        while (close && k < n && (strlen(keys[k]) != (size_t)(close - open - 2) ||
                                  strncmp(open + 2, keys[k], (size_t)(close - open - 2))))
            k++;
        if (!close || k == n) LWB_BUG("asset %s: unknown placeholder near %.20s", asset, open);
        str_puts(out, vals[k]);
        p = close + 2;
    }
}

static const char *asset_text(const char *path) {
    const struct lwb_embedded *e = embedded_find(path);
    if (!e) LWB_BUG("asset %s is not embedded", path);
    return e->data;
}

// ---------------------------------------------------------------------------------------------
// The report: a tree of rows (groups, then leaves with one value per column)

enum lwb_col_unit { LWB_COL_NS, LWB_COL_COUNT };
enum { LWB_ROW_GROUP = 1, LWB_ROW_TOTAL = 2 };

struct lwb_report_col {
    char *name;             // problem text, or "Total (us)"
    enum lwb_col_unit unit; // nanoseconds (shown in µs) or a count
    bool sum;               // a group's value is the sum of its children (HTML), queries add it up
    bool bar;               // HTML: share-of-column bar in the cells
};

struct lwb_report_row {
    int level;      // 1: top level
    char *name;     // range label, kernel short name, "Overlap", ...
    char *full;     // leaves: full kernel name (tooltip); NULL otherwise
    unsigned flags; // LWB_ROW_*
    double *v;      // (ncols) leaves only
};

struct lwb_report {
    const char *kind; // "breakdown" or "summary"
    char *title;      // page title
    char *source;     // the profile's file name
    int ncols;
    struct lwb_report_col *cols; // (ncols)
    int nrows;
    struct lwb_report_row *rows; // (nrows) depth-first order
    size_t cap;
    bool col_header; // stdout: print a header line with the column names
    json_t *config;  // shown in the HTML's configuration panel
};

static void report_add(struct lwb_report *r, int level, const char *name, const char *full,
                       unsigned flags, const double *v) {
    lwb_grow((void **)&r->rows, &r->cap, (size_t)r->nrows + 1, sizeof *r->rows);
    struct lwb_report_row *row = &r->rows[r->nrows++];
    *row = (struct lwb_report_row){level, xstrdup(name), full ? xstrdup(full) : NULL, flags, NULL};
    if (v) {
        row->v = xmalloc((size_t)r->ncols * sizeof *row->v);
        memcpy(row->v, v, (size_t)r->ncols * sizeof *row->v);
    }
}

static void report_free(struct lwb_report *r) {
    for (int i = 0; i < r->nrows; i++) free(r->rows[i].name), free(r->rows[i].full), free(r->rows[i].v);
    for (int i = 0; i < r->ncols; i++) free(r->cols[i].name);
    free(r->rows), free(r->cols), free(r->title), free(r->source);
    json_decref(r->config);
    *r = (struct lwb_report){0};
}

static const char *path_base(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

// Rows of a layer-wise breakdown: a group line opens each new module path prefix (reference).
static void report_from_breakdown(struct lwb_report *r, const struct lwb_breakdown *b) {
    const struct lwb_trace *t = b->t;
    *r = (struct lwb_report){.kind = "breakdown", .ncols = b->np};
    r->source = xstrdup(path_base(t->path));
    struct lwb_str title = {0};
    str_printf(&title, "Kernel breakdown: %s", r->source);
    r->title = str_take(&title);
    r->cols = xcalloc((size_t)b->np + 1, sizeof *r->cols);
    for (int i = 0; i < b->np; i++)
        r->cols[i] = (struct lwb_report_col){xstrdup(b->p[i].text), LWB_COL_NS, true, true};
    int32_t stack[256];
    int depth = 0;
    for (int m = 0; m < b->nmerged; m++) {
        const struct lwb_bd_cat *c = &b->cat[b->merged[m]];
        const struct lwb_path *p = &b->paths.p[c->path];
        int common = 0;
        while (common < depth && common < p->n && stack[common] == p->id[common]) common++;
        depth = common;
        for (; depth < p->n && depth < 256; depth++) {
            stack[depth] = p->id[depth];
            report_add(r, depth + 1, trace_str(t, p->id[depth]), NULL, LWB_ROW_GROUP, NULL);
        }
        report_add(r, depth + 1, trace_str(t, c->leaf), c->full == c->leaf ? NULL : trace_str(t, c->full),
                   b->merged[m] == b->cat_total ? LWB_ROW_TOTAL : 0, &b->value[(size_t)m * (size_t)b->np]);
    }
}

// Rows of the per-range summary: ranges as groups (the busiest first at each level), kernels as
// leaves with count, total, mean, min and max; kernels outside every range under one group.
struct sum_node {
    int32_t label;         // string id of the range label; -1 for a kernel
    int row;               // kernel: index into the summary's rows
    double total;          // ns, over everything below
    struct sum_node **kid; // (nkid)
    int nkid;
    size_t cap;
};

static struct sum_node *sum_child(struct sum_node *n, int32_t label) {
    for (int i = 0; i < n->nkid; i++)
        if (n->kid[i]->label == label) return n->kid[i];
    struct sum_node *c = xcalloc(1, sizeof *c);
    c->label = label, c->row = -1;
    LWB_PUSH(n->kid, n->nkid, n->cap, c);
    return c;
}
static int sum_node_cmp(const void *x, const void *y) {
    const struct sum_node *a = *(struct sum_node *const *)x, *b = *(struct sum_node *const *)y;
    return (a->total < b->total) - (a->total > b->total);
}
static void sum_node_emit(struct lwb_report *r, struct lwb_trace *t, const struct lwb_nvtx_sum *s,
                          struct sum_node *n, int level) {
    lwb_sort(n->kid, (size_t)n->nkid, sizeof *n->kid, sum_node_cmp);
    for (int i = 0; i < n->nkid; i++) {
        struct sum_node *c = n->kid[i];
        if (c->label >= 0) {
            report_add(r, level, trace_str(t, c->label), NULL, LWB_ROW_GROUP, NULL);
            sum_node_emit(r, t, s, c, level + 1);
        } else {
            const struct lwb_sum_row *row = &s->row[c->row];
            double v[5] = {(double)row->count, (double)row->total_ns,
                           (double)row->total_ns / (double)row->count, (double)row->min_ns,
                           (double)row->max_ns};
            report_add(r, level, trace_str(t, row->short_name), trace_str(t, row->name), 0, v);
        }
        free(c->kid);
        free(c);
    }
}
static double sum_node_total(struct sum_node *n) {
    for (int i = 0; i < n->nkid; i++) n->total += sum_node_total(n->kid[i]);
    return n->total;
}

static void report_from_summary(struct lwb_report *r, struct lwb_trace *t, const struct lwb_nvtx_sum *s) {
    *r = (struct lwb_report){.kind = "summary", .ncols = 5, .col_header = true};
    r->source = xstrdup(path_base(t->path));
    struct lwb_str title = {0};
    str_printf(&title, "Kernels per NVTX range: %s", r->source);
    r->title = str_take(&title);
    static const char *names[] = {"Count", "Total (us)", "Mean (us)", "Min (us)", "Max (us)"};
    r->cols = xcalloc(5, sizeof *r->cols);
    for (int i = 0; i < 5; i++)
        r->cols[i] = (struct lwb_report_col){xstrdup(names[i]), i ? LWB_COL_NS : LWB_COL_COUNT, i < 2, i == 1};
    struct sum_node root = {.label = -2, .row = -1};
    int32_t outside = strtab_intern(&t->str, "(outside any NVTX range)");
    for (int i = 0; i < s->n; i++) {
        const struct lwb_path *p = &s->paths.p[s->row[i].path];
        struct sum_node *n = p->n ? &root : sum_child(&root, outside);
        for (int e = 0; e < p->n; e++) n = sum_child(n, p->id[e]);
        struct sum_node *leaf = xcalloc(1, sizeof *leaf);
        leaf->label = -1, leaf->row = i, leaf->total = (double)s->row[i].total_ns;
        LWB_PUSH(n->kid, n->nkid, n->cap, leaf);
    }
    sum_node_total(&root);
    sum_node_emit(r, t, s, &root, 1);
    free(root.kid);
}

// ---------------------------------------------------------------------------------------------
// stdout

static int report_col_width(const struct lwb_report *r, int c) {
    return r->col_header ? (int)LWB_MAX(9, strlen(r->cols[c].name)) : 6;
}
static void report_fmt_value(const struct lwb_report *r, int c, double v, int width, char *buf, size_t n) {
    if (r->cols[c].unit == LWB_COL_COUNT) snprintf(buf, n, "%*.0f", width, v);
    else snprintf(buf, n, "%*.1f", width, v / 1000 + 0.0);
}

static int report_title_len(const struct lwb_report *r) {
    int w = 0;
    for (int i = 0; i < r->nrows; i++)
        if (!(r->rows[i].flags & LWB_ROW_GROUP))
            w = LWB_MAX(w, (r->rows[i].level - 1) * 3 + (int)LWB_MIN(40, strlen(r->rows[i].name)));
    return w;
}

static void report_print_table(FILE *f, const struct lwb_report *r) {
    int tw = report_title_len(r), width = 0;
    for (int c = 0; c < r->ncols; c++) width += report_col_width(r, c) + (r->col_header ? 1 : 0);
    if (r->col_header) {
        fprintf(f, "%-*s", tw, "");
        for (int c = 0; c < r->ncols; c++) fprintf(f, " %*s", report_col_width(r, c), tesc(r->cols[c].name));
        fprintf(f, "\n");
    } else {
        width = 6 * r->ncols; // the reference's dash line: max_title_len + 1 + 6 per problem
    }
    for (int i = 0; i < tw + 1 + width - (r->col_header ? 1 : 0); i++) fputc('-', f);
    fputc('\n', f);
    for (int i = 0; i < r->nrows; i++) {
        const struct lwb_report_row *row = &r->rows[i];
        for (int l = 1; l < row->level; l++) fputs("|--", f);
        if (row->flags & LWB_ROW_GROUP) {
            fprintf(f, "%s\n", tesc(row->name));
            continue;
        }
        int n = (int)LWB_MIN(40, strlen(row->name));
        char *cut = xstrndup(row->name, (size_t)n);
        fprintf(f, "%s%*s", tesc(cut), tw - (row->level - 1) * 3 - n, "");
        free(cut);
        for (int c = 0; c < r->ncols; c++) {
            char buf[64];
            report_fmt_value(r, c, row->v[c], report_col_width(r, c), buf, sizeof buf);
            fprintf(f, " %s", buf);
        }
        fputc('\n', f);
    }
}

// "Query:" lines: per comma-separated substring, the sum of every leaf whose path joined with
// "." contains it (reference --query).
static void report_print_query(FILE *f, const struct lwb_report *r, const char *query) {
    int tw = report_title_len(r);
    fprintf(f, "Query:\n");
    char *copy = xstrdup(query);
    for (char *save = NULL, *q = strtok_r(copy, ",", &save); q; q = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*q)) q++;
        for (char *e = q + strlen(q); e > q && isspace((unsigned char)e[-1]);) *--e = 0;
        double *sum = xcalloc((size_t)r->ncols + 1, sizeof *sum);
        const char *stack[256];
        struct lwb_str path = {0};
        for (int i = 0; i < r->nrows; i++) {
            const struct lwb_report_row *row = &r->rows[i];
            if (row->level > 256) continue;
            stack[row->level - 1] = row->name;
            if (row->flags & LWB_ROW_GROUP) continue;
            str_clear(&path);
            for (int l = 0; l < row->level; l++) str_printf(&path, "%s%s", l ? "." : "", stack[l]);
            if (strstr(path.s, q))
                for (int c = 0; c < r->ncols; c++) sum[c] += row->v[c];
        }
        str_free(&path);
        fprintf(f, "%-*s", tw, tesc(q));
        for (int c = 0; c < r->ncols; c++) {
            char buf[64] = "";
            if (r->cols[c].sum) report_fmt_value(r, c, sum[c], report_col_width(r, c), buf, sizeof buf);
            else snprintf(buf, sizeof buf, "%*s", report_col_width(r, c), "");
            fprintf(f, " %s", buf);
        }
        fputc('\n', f);
        free(sum);
    }
    free(copy);
}

// ---------------------------------------------------------------------------------------------
// CSV (Python csv.writer, QUOTE_MINIMAL: quote a field holding , " CR or LF; CRLF line ends)

static void csv_field(struct lwb_str *o, const char *s, bool first) {
    if (!first) str_puts(o, ",");
    if (!strpbrk(s, ",\"\r\n")) {
        str_puts(o, s);
        return;
    }
    str_puts(o, "\"");
    for (; *s; s++) str_puts(o, *s == '"' ? "\"\"" : (char[]){*s, 0});
    str_puts(o, "\"");
}

static void report_csv(const struct lwb_report *r, struct lwb_str *o) {
    csv_field(o, "", true);
    for (int c = 0; c < r->ncols; c++) csv_field(o, r->cols[c].name, false);
    if (r->col_header) csv_field(o, "Full name", false);
    str_puts(o, "\r\n");
    struct lwb_str name = {0};
    for (int i = 0; i < r->nrows; i++) {
        const struct lwb_report_row *row = &r->rows[i];
        str_clear(&name);
        for (int l = 1; l < row->level; l++) str_puts(&name, "|--");
        str_puts(&name, row->name);
        csv_field(o, name.s, true);
        for (int c = 0; c < r->ncols; c++) {
            char buf[64] = "";
            if (row->v && r->cols[c].unit == LWB_COL_COUNT) snprintf(buf, sizeof buf, "%.0f", row->v[c]);
            else if (row->v) snprintf(buf, sizeof buf, "%.1f", row->v[c] / 1000 + 0.0);
            csv_field(o, buf, false);
        }
        if (r->col_header) csv_field(o, row->full ? row->full : "", false);
        str_puts(o, "\r\n");
    }
    str_free(&name);
}

// ---------------------------------------------------------------------------------------------
// HTML: one self-contained page (template, style and script embedded from src/assets/)

static json_t *report_tree_json(const struct lwb_report *r, int *at, int level) {
    json_t *list = json_array();
    while (*at < r->nrows && r->rows[*at].level >= level) {
        const struct lwb_report_row *row = &r->rows[*at];
        if (row->level > level) LWB_BUG("report row %d skips a level", *at);
        (*at)++;
        if (row->flags & LWB_ROW_TOTAL) continue; // the page adds up its own Total
        json_t *n = json_object();
        json_object_set_new(n, "name", json_str(row->name));
        if (row->flags & LWB_ROW_GROUP) {
            json_object_set_new(n, "children", report_tree_json(r, at, level + 1));
        } else {
            if (row->full) json_object_set_new(n, "full", json_str(row->full));
            json_t *v = json_array();
            for (int c = 0; c < r->ncols; c++)
                json_array_append_new(v, json_real(r->cols[c].unit == LWB_COL_NS ? row->v[c] / 1000 : row->v[c]));
            json_object_set_new(n, "v", v);
        }
        json_array_append_new(list, n);
    }
    return list;
}

static void report_html(const struct lwb_report *r, struct lwb_str *o) {
    json_t *d = json_object();
    json_object_set_new(d, "kind", json_string(r->kind));
    json_object_set_new(d, "title", json_str(r->title));
    json_object_set_new(d, "source", json_str(r->source));
    json_t *cols = json_array();
    for (int c = 0; c < r->ncols; c++) {
        json_t *col = json_object();
        json_object_set_new(col, "name", json_str(r->cols[c].name));
        json_object_set_new(col, "unit", json_string(r->cols[c].unit == LWB_COL_NS ? "us" : "count"));
        json_object_set_new(col, "sum", json_boolean(r->cols[c].sum));
        json_object_set_new(col, "bar", json_boolean(r->cols[c].bar));
        json_array_append_new(cols, col);
    }
    json_object_set_new(d, "columns", cols);
    int at = 0;
    json_object_set_new(d, "tree", report_tree_json(r, &at, 1));
    if (r->config) json_object_set(d, "config", r->config);
    struct lwb_str data = {0}, title = {0};
    json_for_script(d, JSON_COMPACT | JSON_REAL_PRECISION(10), &data);
    json_decref(d);
    html_escape(r->title, &title);
    const char *keys[] = {"TITLE", "CSS", "DATA", "CHART_JS", "JS"};
    const char *vals[] = {title.s, asset_text("src/assets/report.css"), data.s,
                          asset_text("src/assets/chart.js"), asset_text("src/assets/breakdown.js")};
    report_page("src/assets/breakdown.html", keys, vals, 5, o);
    str_free(&data), str_free(&title);
}

// ---------------------------------------------------------------------------------------------
// JSON: the timeline file `lwb correlate` and the reference's correlation.py read,
// [{name, timeline: [{name, duration, end, module}]}] with times in ns (`module`, the enclosing
// module ranges joined by "/", is lwb's: the reference's readers ignore it); and the per-range
// summary.

static json_t *report_timeline_json(const struct lwb_breakdown *b) {
    json_t *all = json_array();
    for (int i = 0; i < b->np; i++) {
        const struct lwb_bd_problem *p = &b->p[i];
        json_t *tl = json_array();
        for (int k = 0; k < p->nk; k++) {
            json_t *e = json_object();
            json_object_set_new(e, "name", json_str(trace_str(b->t, p->k[k].name)));
            json_object_set_new(e, "duration", json_real(p->k[k].mean_ns));
            json_object_set_new(e, "end", json_real(p->k[k].end_ns));
            // lwb's addition (the reference's readers ignore it): the enclosing module ranges.
            const struct lwb_path *path = &b->paths.p[p->k[k].path];
            struct lwb_str m = {0};
            for (int q = 0; q < path->n; q++) str_printf(&m, "%s%s", q ? "/" : "", trace_str(b->t, path->id[q]));
            json_object_set_new(e, "module", json_str(m.s ? m.s : ""));
            str_free(&m);
            json_array_append_new(tl, e);
        }
        json_t *o = json_object();
        json_object_set_new(o, "name", json_str(p->text));
        json_object_set_new(o, "timeline", tl);
        json_array_append_new(all, o);
    }
    return all;
}

static json_t *report_summary_json(struct lwb_trace *t, const struct lwb_nvtx_sum *s) {
    json_t *rows = json_array();
    for (int i = 0; i < s->n; i++) {
        const struct lwb_sum_row *r = &s->row[i];
        const struct lwb_path *p = &s->paths.p[r->path];
        json_t *o = json_object(), *path = json_array();
        for (int e = 0; e < p->n; e++) json_array_append_new(path, json_str(trace_str(t, p->id[e])));
        json_object_set_new(o, "ranges", path);
        json_object_set_new(o, "kernel", json_str(trace_str(t, r->short_name)));
        json_object_set_new(o, "example_name", json_str(trace_str(t, r->name)));
        json_object_set_new(o, "count", json_integer(r->count));
        json_object_set_new(o, "total_ns", json_integer(r->total_ns));
        json_object_set_new(o, "mean_ns", json_real((double)r->total_ns / (double)r->count));
        json_object_set_new(o, "min_ns", json_integer(r->min_ns));
        json_object_set_new(o, "max_ns", json_integer(r->max_ns));
        json_array_append_new(rows, o);
    }
    json_t *all = json_object();
    json_object_set_new(all, "kind", json_string("nvtx_kernel_summary"));
    json_object_set_new(all, "profile", json_str(path_base(t->path)));
    json_object_set_new(all, "rows", rows);
    return all;
}

static void report_json(json_t *j, FILE *f) {
    if (json_dumpf(j, f, JSON_COMPACT | JSON_ENCODE_ANY) != 0) lwb_fatal("cannot write JSON output");
    fputc('\n', f);
}

// ---------------------------------------------------------------------------------------------
// Chrome / Perfetto trace: GPU activities per (device, stream), NVTX ranges per (process, thread).
// Streamed, since a profile may hold millions of kernels; each distinct name is escaped once.

static const char *trace_json_name(const struct lwb_trace *t, char **esc, int32_t id) {
    if (!esc[id]) {
        json_t *j = json_str(t->str.s[id]);
        esc[id] = json_dumps(j, JSON_ENCODE_ANY);
        json_decref(j);
    }
    return esc[id];
}

static void report_write_trace(struct lwb_trace *t, FILE *f) {
    int32_t nstr = t->str.n;
    char **esc = xcalloc((size_t)nstr + 1, sizeof *esc);
    fprintf(f, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
    bool first = true;
    uint64_t gpu_pid_base = 1000000000ULL; // GPU "processes" stay apart from OS pids
    // Names of the GPU lanes.
    struct lwb_map64 seen = {0};
    for (size_t i = 0; i < t->nk; i++) {
        const struct lwb_trace_kernel *k = &t->k[i];
        int64_t *v = map64_slot(&seen, (uint64_t)(uint16_t)k->device << 32 | (uint32_t)k->stream);
        if (*v >= 0) continue;
        *v = 1;
        fprintf(f, "%s{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%" PRIu64 ",\"args\":{\"name\":\"GPU %d\"}}",
                first ? "" : ",\n", gpu_pid_base + (uint64_t)k->device, k->device);
        first = false;
        fprintf(f, ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%" PRIu64 ",\"tid\":%d,\"args\":{\"name\":\"stream %d\"}}",
                gpu_pid_base + (uint64_t)k->device, k->stream, k->stream);
    }
    map64_free(&seen);
    static const char *cats[] = {"kernel", "memcpy", "memset"};
    for (size_t i = 0; i < t->nk; i++) {
        const struct lwb_trace_kernel *k = &t->k[i];
        fprintf(f, "%s{\"ph\":\"X\",\"cat\":\"%s\",\"name\":%s,\"pid\":%" PRIu64 ",\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f",
                first ? "" : ",\n", cats[k->kind], trace_json_name(t, esc, k->name), gpu_pid_base + (uint64_t)k->device, k->stream,
                (double)k->start / 1000, (double)(k->end - k->start) / 1000);
        first = false;
        if (k->range >= 0) {
            fprintf(f, ",\"args\":{\"range\":%s}", trace_json_name(t, esc, t->r[k->range].text));
        }
        fputc('}', f);
    }
    for (size_t i = 0; i < t->nr; i++) {
        const struct lwb_trace_range *r = &t->r[i];
        if (r->end == INT64_MAX) continue; // never closed
        fprintf(f, "%s{\"ph\":\"X\",\"cat\":\"nvtx\",\"name\":%s,\"pid\":%" PRIu64 ",\"tid\":%" PRIu64
                   ",\"ts\":%.3f,\"dur\":%.3f}",
                first ? "" : ",\n", trace_json_name(t, esc, r->text), (r->tid >> 24) & 0xFFFFFF, r->tid & 0xFFFFFF,
                (double)r->start / 1000, (double)(r->end - r->start) / 1000);
        first = false;
    }
    fprintf(f, "\n]}\n");
    for (int32_t i = 0; i < nstr; i++) free(esc[i]);
    free(esc);
}

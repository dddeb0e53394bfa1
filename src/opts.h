// opts.h: option tables, command-line parsing and generated help.
//
// Defines: struct lwb_opt (one row of a command's option table), struct lwb_val (a parsed value
// with where it came from), struct lwb_args (a parsed command line), args_parse, args_set_text
// and args_set_list (shared with the YAML reader in config.h so both give the same errors),
// args_apply_defaults, the typed getters (arg_int, arg_str, ...), opts_print_help.
//
// A key is snake_case (`batch_size`, the YAML spelling); its flag is kebab-case
// (`--batch-size`). Booleans take `--x` / `--no-x`. Lists are comma-separated on the command line.
//
// Does not: know any command's options (they live with the command) or read files.
// Tested by test/test_opts.c.
#pragma once

enum lwb_opt_type {
    LWB_OPT_BOOL,       // --x / --no-x
    LWB_OPT_INT,        // integer
    LWB_OPT_FLOAT,      // real number
    LWB_OPT_STR,        // text
    LWB_OPT_ENUM,       // one of `choices` ("CTX|GEN"), matched case-sensitively
    LWB_OPT_INT_LIST,   // integers: "1,2,4" on the command line, a list or a scalar in YAML
    LWB_OPT_FLOAT_LIST, // reals; an entry may be null (YAML null or "none")
};

enum {
    LWB_OPT_CLI_ONLY = 1 << 0, // not accepted from a config file
    LWB_OPT_REPEAT = 1 << 1,   // LWB_OPT_STR that may be given several times
    LWB_OPT_POSITIVE = 1 << 2, // numbers (and list entries) must be > 0
    LWB_OPT_NONNEG = 1 << 3,   // numbers (and list entries) must be >= 0
    LWB_OPT_HIDDEN = 1 << 4,   // accepted, not shown in help
};

struct lwb_opt {
    const char *key;     // snake_case name
    enum lwb_opt_type type;
    const char *meta;    // placeholder shown in help ("N", "LIST", "FILE")
    const char *dflt;    // default, written as on the command line; NULL: unset
    const char *help;    // one line
    const char *choices; // LWB_OPT_ENUM: "A|B|C"
    unsigned flags;      // LWB_OPT_*
    char short_name;     // optional one-letter alias ('o' for -o)
    long long min, max;  // integers (and list entries): the range accepted (max 0: any)
};

// Entries a list option takes (the reference's runs use a handful).
#define LWB_LIST_MAX 256

struct lwb_val {
    bool set;           // given, or defaulted
    const char *source; // "command line", "default" or the config file's path
    bool b;             // LWB_OPT_BOOL
    long long i;        // LWB_OPT_INT
    double f;           // LWB_OPT_FLOAT
    const char *s;      // LWB_OPT_STR, LWB_OPT_ENUM (the last one given for REPEAT)
    int n;              // entries in a list or a repeated string
    long long *ints;    // (n) LWB_OPT_INT_LIST
    double *floats;     // (n) LWB_OPT_FLOAT_LIST
    bool *nulls;        // (n) LWB_OPT_FLOAT_LIST: entry is null
    const char **strs;  // (n) LWB_OPT_REPEAT
};

struct lwb_args {
    const char *cmd;            // "run", "parse", ... (for messages)
    const struct lwb_opt *opts; // the table
    int nopts;
    struct lwb_val *vals; // (nopts) parallel to opts
    const char **pos;     // positional arguments
    int npos;
};

// kebab-case flag text of a key, without the dashes.
static void opt_flag_name(const struct lwb_opt *o, char *out, size_t n) {
    snprintf(out, n, "%s", o->key);
    for (char *p = out; *p; p++)
        if (*p == '_') *p = '-';
}

// How an option is named in a message: "--batch-size" on the command line, "'batch_size'" in a
// file (prefixed by the file's path).
static void opt_where(const struct lwb_opt *o, const char *source, char *out, size_t n) {
    char flag[128];
    opt_flag_name(o, flag, sizeof flag);
    if (!source || !strcmp(source, "command line") || !strcmp(source, "default"))
        snprintf(out, n, "--%s", flag);
    else
        snprintf(out, n, "%s: '%s'", source, o->key);
}

static const char *opt_type_text(const struct lwb_opt *o) {
    bool pos = o->flags & LWB_OPT_POSITIVE, nonneg = o->flags & LWB_OPT_NONNEG;
    switch (o->type) {
    case LWB_OPT_BOOL: return "true or false";
    case LWB_OPT_INT:
        return pos ? "a positive integer" : nonneg ? "a non-negative integer" : "an integer";
    case LWB_OPT_FLOAT: return pos ? "a positive number" : nonneg ? "a non-negative number" : "a number";
    case LWB_OPT_STR: return "a string";
    case LWB_OPT_ENUM: return "one of";
    case LWB_OPT_INT_LIST:
        return pos ? "a positive integer or a list of them"
               : nonneg ? "a non-negative integer or a list of them"
                        : "an integer or a list of them";
    case LWB_OPT_FLOAT_LIST:
        return nonneg ? "a non-negative number (or null) or a list of them"
                      : "a number (or null) or a list of them";
    }
    return "?";
}

__attribute__((noreturn)) static void opt_bad_value(const struct lwb_opt *o, const char *source,
                                                   const char *text) {
    char where[512];
    opt_where(o, source, where, sizeof where);
    if (o->type == LWB_OPT_ENUM) {
        struct lwb_str c = {0};
        for (const char *p = o->choices; *p; p++) str_puts(&c, *p == '|' ? ", " : (char[]){*p, 0});
        lwb_user_error("%s must be one of %s (got \"%s\")", where, c.s, text);
    }
    lwb_user_error("%s must be %s (got \"%s\")", where, opt_type_text(o), text);
}

static bool parse_ll(const char *t, long long *v) {
    char *end;
    errno = 0;
    while (isspace((unsigned char)*t)) t++;
    if (!*t) return false;
    long long x = strtoll(t, &end, 10);
    while (isspace((unsigned char)*end)) end++;
    if (errno || *end) return false;
    *v = x;
    return true;
}
static bool parse_double(const char *t, double *v) {
    char *end;
    errno = 0;
    while (isspace((unsigned char)*t)) t++;
    if (!*t) return false;
    double x = strtod(t, &end);
    while (isspace((unsigned char)*end)) end++;
    if (errno || *end || x != x) return false;
    *v = x;
    return true;
}
static bool parse_bool(const char *t, bool *v) {
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(t, yes[i])) return *v = true, true;
        if (!strcasecmp(t, no[i])) return *v = false, true;
    }
    return false;
}
static bool is_null_text(const char *t) {
    return !strcasecmp(t, "none") || !strcasecmp(t, "null") || !strcmp(t, "~");
}

static bool opt_sign_ok(const struct lwb_opt *o, double x) {
    if ((o->flags & LWB_OPT_POSITIVE) && !(x > 0)) return false;
    if ((o->flags & LWB_OPT_NONNEG) && !(x >= 0)) return false;
    return true;
}

// An integer outside the option's range: one line naming the option, the value and the range.
__attribute__((noreturn)) static void opt_out_of_range(const struct lwb_opt *o, const char *source, const char *text) {
    char where[512];
    opt_where(o, source, where, sizeof where);
    lwb_user_error("%s: %s is out of range; give %s from %lld to %lld", where, text,
                   o->type == LWB_OPT_INT_LIST ? "integers" : "an integer", o->min, o->max);
}

// Parse an integer entry of option `o`, in its range. Text that is no integer (or one beyond
// 64 bits) is a bad value; an integer outside the range is out of range.
static long long opt_int(const struct lwb_opt *o, const char *source, const char *entry, const char *whole) {
    long long v;
    if (!parse_ll(entry, &v)) {
        const char *t = entry;
        while (isspace((unsigned char)*t)) t++;
        if (*t == '-') t++;
        bool digits = *t != 0;
        for (; *t; t++) digits &= isdigit((unsigned char)*t) || isspace((unsigned char)*t);
        if (digits && o->max) opt_out_of_range(o, source, entry); // more than 64 bits of digits
        opt_bad_value(o, source, whole);
    }
    if (!opt_sign_ok(o, (double)v) && !o->max) opt_bad_value(o, source, whole);
    if (o->max && (v < o->min || v > o->max)) opt_out_of_range(o, source, entry);
    return v;
}


static bool enum_has(const char *choices, const char *t) {
    size_t n = strlen(t);
    for (const char *p = choices; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t m = bar ? (size_t)(bar - p) : strlen(p);
        if (m == n && !strncmp(p, t, n)) return true;
        p = bar ? bar + 1 : p + m;
    }
    return false;
}

// Set a value from a list of entry texts (a YAML list, or a command-line list split at
// commas). `whole` is what the user wrote, for the message.
static void args_set_list(struct lwb_args *a, int idx, const char *const *items, int n,
                          const char *source, const char *whole) {
    const struct lwb_opt *o = &a->opts[idx];
    struct lwb_val *v = &a->vals[idx];
    if (o->type != LWB_OPT_INT_LIST && o->type != LWB_OPT_FLOAT_LIST)
        LWB_BUG("args_set_list on non-list option %s", o->key);
    if (n == 0) opt_bad_value(o, source, whole);
    if (n > LWB_LIST_MAX) {
        char where[512];
        opt_where(o, source, where, sizeof where);
        lwb_user_error("%s: more than %d entries; a list takes at most %d", where, LWB_LIST_MAX, LWB_LIST_MAX);
    }
    free(v->ints), free(v->floats), free(v->nulls);
    v->ints = NULL, v->floats = NULL, v->nulls = NULL;
    if (o->type == LWB_OPT_INT_LIST) v->ints = xcalloc((size_t)n, sizeof *v->ints);
    else v->floats = xcalloc((size_t)n, sizeof *v->floats), v->nulls = xcalloc((size_t)n, 1);
    for (int k = 0; k < n; k++) {
        const char *t = items[k];
        if (o->type == LWB_OPT_INT_LIST) {
            v->ints[k] = opt_int(o, source, t, whole);
        } else if (is_null_text(t)) {
            v->nulls[k] = true;
        } else if (!parse_double(t, &v->floats[k]) || !opt_sign_ok(o, v->floats[k])) {
            opt_bad_value(o, source, whole);
        }
    }
    v->n = n;
    v->set = true;
    v->source = source;
}

// Set a value from text as written on the command line (lists split at commas).
static void args_set_text(struct lwb_args *a, int idx, const char *text, const char *source) {
    const struct lwb_opt *o = &a->opts[idx];
    struct lwb_val *v = &a->vals[idx];
    switch (o->type) {
    case LWB_OPT_BOOL:
        if (!parse_bool(text, &v->b)) opt_bad_value(o, source, text);
        break;
    case LWB_OPT_INT:
        v->i = opt_int(o, source, text, text);
        break;
    case LWB_OPT_FLOAT:
        if (!parse_double(text, &v->f) || !opt_sign_ok(o, v->f)) opt_bad_value(o, source, text);
        break;
    case LWB_OPT_ENUM:
        if (!enum_has(o->choices, text)) opt_bad_value(o, source, text);
        v->s = text;
        break;
    case LWB_OPT_STR:
        if (!*text) opt_bad_value(o, source, text);
        v->s = text;
        if (o->flags & LWB_OPT_REPEAT) {
            v->strs = xrealloc(v->strs, (size_t)(v->n + 1) * sizeof *v->strs);
            v->strs[v->n++] = text;
        }
        break;
    case LWB_OPT_INT_LIST:
    case LWB_OPT_FLOAT_LIST: {
        char *copy = xstrdup(text);
        const char *items[LWB_LIST_MAX + 1];
        int n = 0;
        for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (n == LWB_LIST_MAX + 1) break; // args_set_list says how many are allowed
            items[n++] = t;
        }
        // A trailing or doubled comma is a typo, not an empty entry to ignore.
        if (text[0] == ',' || str_ends(text, ",") || strstr(text, ",,")) opt_bad_value(o, source, text);
        args_set_list(a, idx, items, n, source, text);
        // The list entries were copied into numbers; `copy` is no longer referenced.
        free(copy);
        return;
    }
    }
    v->set = true;
    v->source = source;
}

static int args_find(const struct lwb_args *a, const char *key) {
    for (int i = 0; i < a->nopts; i++)
        if (!strcmp(a->opts[i].key, key)) return i;
    return -1;
}

static void args_init(struct lwb_args *a, const char *cmd, const struct lwb_opt *opts, int nopts) {
    *a = (struct lwb_args){.cmd = cmd, .opts = opts, .nopts = nopts};
    a->vals = xcalloc((size_t)(nopts ? nopts : 1), sizeof *a->vals);
    a->pos = xcalloc((size_t)1, sizeof *a->pos);
}

static void args_free(struct lwb_args *a) {
    for (int i = 0; i < a->nopts; i++) {
        free(a->vals[i].ints), free(a->vals[i].floats), free(a->vals[i].nulls);
        free(a->vals[i].strs);
    }
    free(a->vals);
    free(a->pos);
    *a = (struct lwb_args){0};
}

// Fill every unset option that has a default.
static void args_apply_defaults(struct lwb_args *a) {
    for (int i = 0; i < a->nopts; i++)
        if (!a->vals[i].set && a->opts[i].dflt) args_set_text(a, i, a->opts[i].dflt, "default");
}

// ---------------------------------------------------------------------------------------------
// Help

struct lwb_cmd_help {
    const char *name;    // "run"
    const char *usage;   // "CONFIG.yaml [options]"
    const char *summary; // one line
    const char *details; // paragraphs after the usage line, or NULL
};

static void opts_print_help(FILE *f, const struct lwb_cmd_help *h, const struct lwb_opt *opts,
                            int nopts) {
    fprintf(f, "usage: lwb %s %s\n\n%s\n", h->name, h->usage, h->summary);
    if (h->details) fprintf(f, "\n%s\n", h->details);
    if (nopts) fprintf(f, "\noptions:\n");
    for (int i = 0; i < nopts; i++) {
        const struct lwb_opt *o = &opts[i];
        if (o->flags & LWB_OPT_HIDDEN) continue;
        char flag[128], left[256];
        opt_flag_name(o, flag, sizeof flag);
        char shortf[8] = "";
        if (o->short_name) snprintf(shortf, sizeof shortf, "-%c, ", o->short_name);
        if (o->type == LWB_OPT_BOOL)
            snprintf(left, sizeof left, "%s--[no-]%s", shortf, flag);
        else if (o->type == LWB_OPT_ENUM)
            snprintf(left, sizeof left, "%s--%s %s", shortf, flag, o->choices);
        else
            snprintf(left, sizeof left, "%s--%s %s", shortf, flag, o->meta ? o->meta : "VALUE");
        fprintf(f, "  %-30s %s", left, o->help);
        if (o->dflt) fprintf(f, " (default: %s)", o->dflt);
        if (o->max && o->max < 1000000000000LL) fprintf(f, " [%lld..%lld]", o->min, o->max);
        if (o->flags & LWB_OPT_REPEAT) fprintf(f, " (repeatable)");
        if (strlen(left) > 30) fprintf(f, "\n");
        fprintf(f, "\n");
    }
    fprintf(f, "  %-30s %s\n", "-h, --help", "print this help and exit");
}

// ---------------------------------------------------------------------------------------------
// Parsing

__attribute__((noreturn)) static void args_unknown(const struct lwb_args *a, const char *arg) {
    const char *names[256];
    char bufs[256][128];
    size_t n = 0;
    for (int i = 0; i < a->nopts && n + 2 < LWB_ARRAY_LEN(names); i++) {
        char flag[120];
        opt_flag_name(&a->opts[i], flag, sizeof flag);
        snprintf(bufs[n], sizeof bufs[n], "--%s", flag);
        names[n] = bufs[n], n++;
        if (a->opts[i].type == LWB_OPT_BOOL) {
            snprintf(bufs[n], sizeof bufs[n], "--no-%s", flag);
            names[n] = bufs[n], n++;
        }
    }
    names[n++] = "--help";
    char key[256];
    snprintf(key, sizeof key, "%s", arg);
    char *eq = strchr(key, '=');
    if (eq) *eq = 0;
    const char *near = lwb_nearest(key, names, n);
    if (near)
        lwb_user_error("%s: unknown option '%s'; did you mean '%s'? (lwb %s --help lists them)", a->cmd,
                       key, near, a->cmd);
    lwb_user_error("%s: unknown option '%s' (lwb %s --help lists the options)", a->cmd, key, a->cmd);
}

// Parse argv (after the command name). Exits on --help (0) and on errors (2). `max_pos` bounds
// the positional arguments; `pos_name` names them in messages.
static void args_parse(struct lwb_args *a, const struct lwb_cmd_help *help, int argc, char **argv,
                       int max_pos, const char *pos_name) {
    bool only_pos = false;
    for (int k = 0; k < argc; k++) {
        const char *arg = argv[k];
        if (only_pos || arg[0] != '-' || !arg[1]) {
            if (a->npos >= max_pos) {
                if (max_pos == 0)
                    lwb_user_error("%s: unexpected argument '%s' (lwb %s --help shows the usage)", a->cmd,
                                   arg, a->cmd);
                lwb_user_error("%s: too many arguments: '%s' after %s (lwb %s --help shows the usage)",
                               a->cmd, arg, pos_name, a->cmd);
            }
            a->pos = xrealloc(a->pos, (size_t)(a->npos + 1) * sizeof *a->pos);
            a->pos[a->npos++] = arg;
            continue;
        }
        if (!strcmp(arg, "--")) {
            only_pos = true;
            continue;
        }
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            opts_print_help(stdout, help, a->opts, a->nopts);
            exit(0);
        }
        int idx = -1;
        bool negated = false;
        const char *inline_val = NULL;
        if (arg[1] != '-') { // -o VALUE
            for (int i = 0; i < a->nopts; i++)
                if (a->opts[i].short_name && arg[1] == a->opts[i].short_name && !arg[2]) idx = i;
        } else {
            char name[256];
            snprintf(name, sizeof name, "%s", arg + 2);
            char *eq = strchr(name, '=');
            if (eq) *eq = 0, inline_val = arg + 2 + (eq - name) + 1;
            for (int i = 0; i < a->nopts && idx < 0; i++) {
                char flag[128];
                opt_flag_name(&a->opts[i], flag, sizeof flag);
                if (!strcmp(name, flag)) idx = i;
                else if (a->opts[i].type == LWB_OPT_BOOL && str_starts(name, "no-") &&
                         !strcmp(name + 3, flag))
                    idx = i, negated = true;
            }
        }
        if (idx < 0) args_unknown(a, arg);
        const struct lwb_opt *o = &a->opts[idx];
        if (o->type == LWB_OPT_BOOL) {
            if (inline_val) {
                if (negated) lwb_user_error("%s: '%s' takes no value", a->cmd, arg);
                args_set_text(a, idx, inline_val, "command line");
            } else {
                a->vals[idx].b = !negated;
                a->vals[idx].set = true;
                a->vals[idx].source = "command line";
            }
            continue;
        }
        const char *val = inline_val;
        if (!val) {
            if (k + 1 >= argc) {
                char flag[128];
                opt_flag_name(o, flag, sizeof flag);
                lwb_user_error("%s: --%s needs a value (%s)", a->cmd, flag, o->meta ? o->meta : "VALUE");
            }
            val = argv[++k];
        }
        if (a->vals[idx].set && !strcmp(a->vals[idx].source, "command line") &&
            !(o->flags & LWB_OPT_REPEAT)) {
            char flag[128];
            opt_flag_name(o, flag, sizeof flag);
            lwb_user_error("%s: --%s given twice; give it once (lists are comma-separated)", a->cmd, flag);
        }
        args_set_text(a, idx, val, "command line");
    }
}

// ---------------------------------------------------------------------------------------------
// Typed getters. Asking for a key the table lacks, or with the wrong type, is a bug.

static const struct lwb_val *arg_val(const struct lwb_args *a, const char *key, enum lwb_opt_type t) {
    int i = args_find(a, key);
    if (i < 0) LWB_BUG("option '%s' not in the table of '%s'", key, a->cmd);
    if (a->opts[i].type != t && !(t == LWB_OPT_STR && a->opts[i].type == LWB_OPT_ENUM))
        LWB_BUG("option '%s' read with the wrong type", key);
    return &a->vals[i];
}
static bool arg_set(const struct lwb_args *a, const char *key) {
    int i = args_find(a, key);
    if (i < 0) LWB_BUG("option '%s' not in the table of '%s'", key, a->cmd);
    return a->vals[i].set;
}
static bool arg_bool(const struct lwb_args *a, const char *key) {
    return arg_val(a, key, LWB_OPT_BOOL)->b;
}
static long long arg_int(const struct lwb_args *a, const char *key) {
    return arg_val(a, key, LWB_OPT_INT)->i;
}
static double arg_float(const struct lwb_args *a, const char *key) {
    return arg_val(a, key, LWB_OPT_FLOAT)->f;
}
static const char *arg_str(const struct lwb_args *a, const char *key) {
    const struct lwb_val *v = arg_val(a, key, LWB_OPT_STR);
    return v->set ? v->s : NULL;
}

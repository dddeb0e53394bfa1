// trace.h: the profile reader. One SQLite profile (an Nsight Systems export of any version from
// 2022.2 on, or lwb's own profile in the same shape) in memory, every kernel placed in the NVTX
// ranges around its launch, and the layer-wise attribution of TensorRT-LLM's parse.py on top.
//
// Defines:
//   struct lwb_strtab (interned strings), struct lwb_paths (interned lists of string ids),
//   scs_merge (shortest common supersequence), kernel_short_name (the reference's naming rules);
//   struct lwb_trace, trace_open, trace_free, trace_enclosing, trace_short_name: kernels,
//     memcpys and memsets with their launch call and the CPU interval and thread whose NVTX stack
//     they get (the launch, or for a CUDA-graph node the node's creation during capture);
//     NVTX ranges nested per thread;
//   struct lwb_breakdown, breakdown_build, breakdown_free, breakdown_module_rows,
//     breakdown_compare (two profiles of one run, e.g. lwb's own and nsys's): problems,
//     runs, per-position mean kernel times, Overlap/Space/Total, all problems merged into one
//     category list (reference §6.3);
//   struct lwb_nvtx_sum, nvtx_sum_build: kernel time per innermost NVTX range, for profiles
//     without layer-wise markers (like nsys's nvtx_kern_sum).
//
// NOTES:
// - Columns are read by name (they move between nsys versions); absent tables read as empty.
//   Only CUPTI_ACTIVITY_KIND_KERNEL and StringIds are required.
// - correlationId is unique per process only, so an activity joins its launch call on (process,
//   correlationId); the process is globalPid, or globalTid without its 24 thread bits.
// - RUNTIME rows count only with eventClass 0/1 (runtime/driver API) when that column exists:
//   nsys 2022.2 wrote backtrace duplicates (class 67) with the same correlationId.
// - A CUDA-graph kernel's NVTX stack is the one open when its node was created: walk
//   CUDA_GRAPH_NODE_EVENTS from the executed node through originalGraphNodeId to the creation
//   event (the reference takes one hop; a clone of a clone needs more).
// - Enclosure is computed in C, not SQL: ranges sorted per thread, parents from a stack, a
//   kernel's innermost range by binary search and a walk up the parents. Push/pop ranges nest;
//   a start/end range that partly overlaps another is attributed as if it nested.
// - Layer-wise module paths are the launching thread's push/pop ranges (reference: any range
//   covering the time, on any thread), minus NCCL-domain, `[DG]`, iteration and marker ranges,
//   restricted to ranges that began inside the kernel's problem, as in the reference.
//
// Does not: write files or know the output formats (report.h), export .nsys-rep (cmd_parse.h).
// Tested by test/test_trace.c: three real nsys exports (2022.2, 2024.6, 2025.1), a layer-wise
// profile built from test/data/layerwise.sql, malformed inputs.
#pragma once
#include <jansson.h>
#include <sqlite3.h>

// ---------------------------------------------------------------------------------------------
// Interned strings: each distinct string once, named by a dense int32 id.

struct lwb_strtab {
    char **s;       // (n) NUL-terminated, owned
    size_t *len;    // (n) bytes
    uint64_t *hash; // (n)
    int32_t n;
    size_t cap;
    int32_t *slot; // (nslot) string id or -1; open addressing, nslot a power of two
    size_t nslot;
};

static uint64_t strtab_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL; // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h;
}

static void strtab_rehash(struct lwb_strtab *t) {
    size_t ns = t->nslot ? t->nslot * 2 : 1024;
    int32_t *slot = xmalloc(ns * sizeof *slot);
    memset(slot, 0xff, ns * sizeof *slot);
    for (int32_t i = 0; i < t->n; i++) {
        size_t j = t->hash[i] & (ns - 1);
        while (slot[j] >= 0) j = (j + 1) & (ns - 1);
        slot[j] = i;
    }
    free(t->slot);
    t->slot = slot, t->nslot = ns;
}

static int32_t strtab_intern_n(struct lwb_strtab *t, const char *s, size_t n) {
    if ((size_t)(t->n + 1) * 2 > t->nslot) strtab_rehash(t);
    uint64_t h = strtab_hash(s, n);
    size_t j = h & (t->nslot - 1);
    for (; t->slot[j] >= 0; j = (j + 1) & (t->nslot - 1)) {
        int32_t i = t->slot[j];
        if (t->hash[i] == h && t->len[i] == n && !memcmp(t->s[i], s, n)) return i;
    }
    if ((size_t)t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 256;
        t->s = xrealloc(t->s, t->cap * sizeof *t->s);
        t->len = xrealloc(t->len, t->cap * sizeof *t->len);
        t->hash = xrealloc(t->hash, t->cap * sizeof *t->hash);
    }
    t->s[t->n] = xstrndup(s, n), t->len[t->n] = n, t->hash[t->n] = h;
    t->slot[j] = t->n;
    return t->n++;
}
static int32_t strtab_intern(struct lwb_strtab *t, const char *s) {
    return strtab_intern_n(t, s, strlen(s));
}
static void strtab_free(struct lwb_strtab *t) {
    for (int32_t i = 0; i < t->n; i++) free(t->s[i]);
    free(t->s), free(t->len), free(t->hash), free(t->slot);
    *t = (struct lwb_strtab){0};
}

// Interned lists of string ids (NVTX paths, outer to inner). Id 0 is always the empty path.
struct lwb_path {
    int n;       // entries
    int32_t *id; // (n) string ids
};
struct lwb_paths {
    struct lwb_strtab keys; // the ids as text, to find a path again
    struct lwb_path *p;     // (n)
    int32_t n;
    size_t cap;
};

static int32_t paths_intern(struct lwb_paths *ps, const int32_t *ids, int n) {
    char key[4096];
    size_t k = 0;
    for (int i = 0; i < n && k + 16 < sizeof key; i++) k += (size_t)snprintf(key + k, 16, "%d,", ids[i]);
    int32_t id = strtab_intern_n(&ps->keys, key, k);
    if (id < ps->n) return id;
    lwb_grow((void **)&ps->p, &ps->cap, (size_t)id + 1, sizeof *ps->p);
    ps->p[id].n = n;
    ps->p[id].id = xmalloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (n) memcpy(ps->p[id].id, ids, (size_t)n * sizeof(int32_t));
    ps->n = id + 1;
    return id;
}
static void paths_init(struct lwb_paths *ps) {
    *ps = (struct lwb_paths){0};
    paths_intern(ps, NULL, 0);
}
static void paths_free(struct lwb_paths *ps) {
    for (int32_t i = 0; i < ps->n; i++) free(ps->p[i].id);
    free(ps->p);
    strtab_free(&ps->keys);
    *ps = (struct lwb_paths){0};
}

// A 64-bit key -> int64 map (open addressing). Values must not be INT64_MIN (the empty mark).
struct lwb_map64 {
    uint64_t *key; // (cap)
    int64_t *val;  // (cap) INT64_MIN: empty
    size_t cap, n;
};
static int64_t *map64_slot(struct lwb_map64 *m, uint64_t key) {
    if ((m->n + 1) * 2 > m->cap) {
        struct lwb_map64 old = *m;
        m->cap = old.cap ? old.cap * 2 : 256, m->n = 0;
        m->key = xmalloc(m->cap * sizeof *m->key);
        m->val = xmalloc(m->cap * sizeof *m->val);
        for (size_t i = 0; i < m->cap; i++) m->val[i] = INT64_MIN;
        for (size_t i = 0; i < old.cap; i++)
            if (old.val[i] != INT64_MIN) *map64_slot(m, old.key[i]) = old.val[i];
        free(old.key), free(old.val);
    }
    size_t j = lwb_mix64(key) & (m->cap - 1);
    while (m->val[j] != INT64_MIN && m->key[j] != key) j = (j + 1) & (m->cap - 1);
    if (m->val[j] == INT64_MIN) m->key[j] = key, m->n++, m->val[j] = -1;
    return &m->val[j];
}
static void map64_free(struct lwb_map64 *m) {
    free(m->key), free(m->val);
    *m = (struct lwb_map64){0};
}

// (a, b) -> row index, sorted for binary search: (process, correlationId), (process, node id).
struct lwb_key2 {
    uint64_t a, b;
    int64_t i;
};
static int key2_cmp(const void *x, const void *y) {
    const struct lwb_key2 *p = x, *q = y;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    if (p->b != q->b) return p->b < q->b ? -1 : 1;
    return (p->i > q->i) - (p->i < q->i);
}
// Position of the first key >= (a, b).
static size_t key2_lower(const struct lwb_key2 *k, size_t n, uint64_t a, uint64_t b) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (k[mid].a < a || (k[mid].a == a && k[mid].b < b)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}
// The first row with key (a, b), or -1.
static int64_t key2_find(const struct lwb_key2 *k, size_t n, uint64_t a, uint64_t b) {
    size_t lo = key2_lower(k, n, a, b);
    return (lo < n && k[lo].a == a && k[lo].b == b) ? k[lo].i : -1;
}

// The CUDA_GRAPH_NODE_EVENTS row of node (process a, node b). Nsight Systems writes an executed
// node twice: when the executable graph creates it (no original) and as the clone of the
// captured node (with its original); the clone row is the one that leads back to the capture.
static int64_t graph_node_row(const bool *has_orig, const struct lwb_key2 *k, size_t n, uint64_t a, uint64_t b) {
    int64_t first = -1;
    for (size_t p = key2_lower(k, n, a, b); p < n && k[p].a == a && k[p].b == b; p++) {
        if (has_orig[k[p].i]) return k[p].i;
        if (first < 0) first = k[p].i;
    }
    return first;
}

// ---------------------------------------------------------------------------------------------
// Shortest common supersequence of two id lists. Ties resolve as the reference's dynamic
// program does (backtrack from the end; on a mismatch take from `a` only when strictly better),
// so merged tables come out in the same order. Returns the length; *out is malloc'd.

static int scs_merge(const int32_t *a, int m, const int32_t *b, int n, int32_t **out) {
    // A common tail is always matched by the backtrack, so it never needs the table.
    int tail = 0;
    while (tail < m && tail < n && a[m - 1 - tail] == b[n - 1 - tail]) tail++;
    m -= tail, n -= tail;
    int32_t *res = xmalloc((size_t)(m + n + tail + 1) * sizeof *res);
    int k = m + n + tail; // fill from the end
    for (int i = 0; i < tail; i++) res[--k] = a[m + tail - 1 - i];
    size_t cells = (size_t)(m + 1) * (size_t)(n + 1);
    if (cells > ((size_t)1 << 26)) {
        // 64 Mi cells (256 MiB) is far beyond any layer; keep both lists whole rather than fail.
        lwb_warn("kernel lists of %d and %d entries are too long to align; concatenating them", m, n);
        for (int j = n - 1; j >= 0; j--) res[--k] = b[j];
        for (int i = m - 1; i >= 0; i--) res[--k] = a[i];
    } else {
        int32_t *dp = xmalloc(cells * sizeof *dp);
#define DP(i, j) dp[(size_t)(i) * (size_t)(n + 1) + (size_t)(j)]
        for (int i = 0; i <= m; i++) DP(i, 0) = i;
        for (int j = 0; j <= n; j++) DP(0, j) = j;
        for (int i = 1; i <= m; i++)
            for (int j = 1; j <= n; j++)
                DP(i, j) = a[i - 1] == b[j - 1] ? DP(i - 1, j - 1) + 1
                                                : LWB_MIN(DP(i - 1, j), DP(i, j - 1)) + 1;
        int i = m, j = n;
        while (i > 0 && j > 0) {
            if (a[i - 1] == b[j - 1]) res[--k] = a[i - 1], i--, j--;
            else if (DP(i - 1, j) < DP(i, j - 1)) res[--k] = a[--i];
            else res[--k] = b[--j];
        }
        while (i > 0) res[--k] = a[--i];
        while (j > 0) res[--k] = b[--j];
#undef DP
        free(dp);
    }
    int len = m + n + tail - k;
    memmove(res, res + k, (size_t)len * sizeof *res);
    *out = res;
    return len;
}

// ---------------------------------------------------------------------------------------------
// Kernel short names (reference §6.5): a keyword table first, then generic demangling.

static const struct {
    const char *name;
    const char *all[2]; // every one must occur (second may be NULL)
} kernel_keywords[] = {
    {"cuBLASGemm", {"nvjet"}},
    {"cutlassGroupGemm", {"cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal"}},
    {"cutlassGemm", {"GemmUniversal"}},
    {"CuteDSLMoePermute", {"cute_dsl::moePermuteKernel"}},
    {"CuteDSLGemm", {"cute_dsl_kernels", "blockscaled_gemm_persistent"}},
    {"CuteDSLGroupedGemmSwiglu",
     {"cute_dsl_kernels", "blockscaled_contiguous_grouped_gemm_swiglu_fusion"}},
    {"CuteDSLGroupedGemmFinalize",
     {"cute_dsl_kernels", "blockscaled_contiguous_grouped_gemm_finalize_fusion"}},
    {"torchAdd", {"at::native::CUDAFunctorOnSelf_add"}},
    {"torchAdd", {"CUDAFunctor_add"}},
    {"torchClamp", {"at::native::<unnamed>::launch_clamp_scalar("}},
    {"torchCompare", {"at::native::<unnamed>::CompareFunctor<"}},
    {"torchCopy", {"at::native::bfloat16_copy_kernel_cuda"}},
    {"torchCopy", {"at::native::direct_copy_kernel_cuda("}},
    {"torchDiv", {"at::native::binary_internal::DivFunctor<"}},
    {"torchFill", {"at::native::FillFunctor"}},
    {"torchIndexPut", {"at::native::index_put_kernel_impl<"}},
    {"torchMul", {"at::native::binary_internal::MulFunctor<"}},
    {"torchPow", {"at::native::<unnamed>::pow_tensor_scalar_kernel_impl<"}},
    {"torchReduceSum", {"at::native::reduce_kernel<", "at::native::sum_functor<"}},
    {"torchScatterGather", {"void at::native::_scatter_gather_elementwise_kernel<"}},
    {"torchSigmoid", {"at::native::sigmoid_kernel_cuda"}},
    {"torchWhere", {"at::native::<unnamed>::where_kernel_impl("}},
};

// Writes the short name of `name` to out. Returns true for a torch elementwise kernel that the
// keyword table does not know (the reference's "Not parsed torch kernel name").
static bool kernel_short_name(const char *name, char *out, size_t size) {
    for (size_t i = 0; i < LWB_ARRAY_LEN(kernel_keywords); i++) {
        bool all = true;
        for (int j = 0; j < 2 && kernel_keywords[i].all[j]; j++)
            all = all && strstr(name, kernel_keywords[i].all[j]);
        if (all) {
            snprintf(out, size, "%s", kernel_keywords[i].name);
            return false;
        }
    }
    const char *ns = strstr(name, "at::native::");
    bool unknown = ns && strstr(ns + strlen("at::native::"), "elementwise_kernel<");
    // Generic: cut at the first '<', then the first '(', keep what follows the last "::";
    // "<unnamed>" (an anonymous namespace) is protected from the cut as one marker byte.
    struct lwb_str s = {0};
    for (const char *p = name; *p;) {
        if (str_starts(p, "<unnamed>")) str_append(&s, "\x01", 1), p += strlen("<unnamed>");
        else str_append(&s, p++, 1);
    }
    char *t = s.s ? s.s : "";
    char *c;
    if ((c = strchr(t, '<'))) *c = 0;
    if ((c = strchr(t, '('))) *c = 0;
    for (char *q = t; (q = strstr(q, "::")); q += 2) t = q + 2;
    size_t k = 0;
    for (; *t && k + 10 < size; t++) {
        if (*t == '\x01') k += (size_t)snprintf(out + k, size - k, "<unnamed>");
        else out[k++] = *t;
    }
    out[k] = 0;
    str_free(&s);
    return unknown;
}

// ---------------------------------------------------------------------------------------------
// The profile in memory

enum lwb_act_kind { LWB_ACT_KERNEL, LWB_ACT_MEMCPY, LWB_ACT_MEMSET };
enum { LWB_K_GRAPH = 1, LWB_K_NO_LAUNCH = 2, LWB_K_NO_NODE = 4 };
enum lwb_range_type { LWB_RANGE_PUSHPOP = 1, LWB_RANGE_STARTEND = 2 };

struct lwb_trace_kernel {
    int64_t start, end;           // ns, GPU
    int64_t launch;               // ns, CPU start of the launching API call (LWB_K_NO_LAUNCH: 0)
    int64_t site_start, site_end; // ns, CPU interval whose NVTX stack the activity gets
    uint64_t site_tid;            // globalTid of that interval's thread
    uint64_t pid;                 // process: globalPid (thread bits zero)
    int64_t graph_node;           // graphNodeId (LWB_K_GRAPH)
    int32_t name;                 // string id: demangled name, or "Memcpy" / "Memset"
    int32_t range;                // innermost enclosing NVTX range, -1: none
    uint32_t corr;                // correlationId
    int32_t stream;               // streamId
    int16_t device;               // deviceId
    uint8_t kind;                 // enum lwb_act_kind
    uint8_t flags;                // LWB_K_*
};

struct lwb_trace_range {
    int64_t start, end; // ns, CPU; end INT64_MAX while still open at the end of the capture
    uint64_t tid;       // globalTid
    int32_t text;       // string id of the label (text, or the registered string of textId)
    int32_t domain;     // string id of the domain's name, -1: the default domain
    int32_t parent;     // the enclosing range of the same thread, -1: none
    uint8_t type;       // enum lwb_range_type
};

struct lwb_trace {
    char *path;
    char product[64];             // EXPORT_PRODUCT_NAME: "NVIDIA Nsight Systems", "lwb"
    char version[64];             // EXPORT_PRODUCT_VERSION
    struct lwb_strtab str;        // every name: kernels, NVTX labels, domains, short names
    struct lwb_trace_kernel *k;   // (nk) kernels, then memcpys, then memsets
    size_t nk;
    struct lwb_trace_range *r;    // (nr) sorted by thread, start, longer first
    size_t nr;
    size_t count[3];              // activities per enum lwb_act_kind
    size_t no_launch;             // activities whose launch call is not in RUNTIME
    size_t graph_nodes;           // activities that ran as CUDA-graph nodes
    size_t graph_no_node;         // ... whose creation event is missing (placed at the launch)
    size_t runtime_rows;          // RUNTIME rows used (eventClass 0/1)
    size_t runtime_skipped;       // RUNTIME rows of other classes (backtrace duplicates)
    size_t enclosed;              // activities inside at least one NVTX range
    bool has_nvtx;                // the NVTX_EVENTS table exists
    int32_t *short_of;            // (short_cap) string id -> short name id, -1: not computed
    uint8_t *short_state;         // (short_cap) 1: an unknown torch kernel, 2: warned about
    size_t short_cap;
    int unknown_kernels;          // names warned as "Not parsed torch kernel name"
    size_t bad_times;             // activities and ranges left out: end before start, or a time
                                  // outside 0 .. LWB_TRACE_MAX_NS (counted, never summed)
};

// Times are nanoseconds from the session's start; beyond 2^53 (104 days) a profile is corrupt,
// and sums of such times would lose exactness or overflow.
#define LWB_TRACE_MAX_NS (1LL << 53)
static bool trace_times_ok(int64_t start, int64_t end, bool open_end) {
    return start >= 0 && start <= LWB_TRACE_MAX_NS &&
           (open_end || (end >= start && end <= LWB_TRACE_MAX_NS));
}

static const char *trace_str(const struct lwb_trace *t, int32_t id) {
    return id >= 0 && id < t->str.n ? t->str.s[id] : "";
}

// The short name of kernel name `id` (an id in t->str). With `warn`, an unknown torch kernel
// gets the reference's "Not parsed torch kernel name" warning, once per name.
static int32_t trace_short_name(struct lwb_trace *t, int32_t id, bool warn) {
    if ((size_t)id >= t->short_cap) {
        size_t old = t->short_cap, cap = old;
        lwb_grow((void **)&t->short_of, &t->short_cap, (size_t)t->str.n + 1, sizeof *t->short_of);
        lwb_grow((void **)&t->short_state, &cap, t->short_cap, 1);
        for (size_t i = old; i < t->short_cap; i++) t->short_of[i] = -1, t->short_state[i] = 0;
    }
    if (t->short_of[id] < 0) {
        char buf[1024];
        t->short_state[id] = kernel_short_name(t->str.s[id], buf, sizeof buf); // 1: unknown
        t->short_of[id] = strtab_intern(&t->str, buf);
    }
    if (warn && t->short_state[id] == 1) {
        lwb_warn("Not parsed torch kernel name: %s", t->str.s[id]);
        t->short_state[id] = 2; // warned
        t->unknown_kernels++;
    }
    return t->short_of[id];
}

// ---------------------------------------------------------------------------------------------
// SQLite access: every failure is the profile's fault (exit 2, one line naming the file).

struct tdb {
    sqlite3 *db;
    const char *path;
};

__attribute__((noreturn)) static void tdb_fail(const struct tdb *d, const char *what) {
    lwb_user_error("%s: cannot read the profile (%s: %s); is it a complete SQLite export of nsys "
                   "or a profile written by lwb?",
                   d->path, what, d->db ? sqlite3_errmsg(d->db) : "out of memory");
}

static sqlite3_stmt *tdb_prepare(const struct tdb *d, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK) tdb_fail(d, "query");
    return st;
}
static bool tdb_step(const struct tdb *d, sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) tdb_fail(d, "read");
    return false;
}
static bool tdb_has_table(const struct tdb *d, const char *table) {
    sqlite3_stmt *st = tdb_prepare(d, "SELECT 1 FROM sqlite_master WHERE type IN ('table','view') AND name=?");
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    bool has = tdb_step(d, st);
    sqlite3_finalize(st);
    return has;
}
static bool tdb_has_column(const struct tdb *d, const char *table, const char *col) {
    sqlite3_stmt *st = tdb_prepare(d, "SELECT 1 FROM pragma_table_info(?) WHERE name=?");
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, col, -1, SQLITE_STATIC);
    bool has = tdb_step(d, st);
    sqlite3_finalize(st);
    return has;
}
// SELECT the named columns of `table` (a missing one reads as NULL; one written "!name" is
// required). `where` may be NULL.
static sqlite3_stmt *tdb_select(const struct tdb *d, const char *table, const char *const *cols,
                                int n, const char *where) {
    struct lwb_str q = {0};
    str_puts(&q, "SELECT ");
    for (int i = 0; i < n; i++) {
        bool req = cols[i][0] == '!';
        const char *c = cols[i] + req;
        if (tdb_has_column(d, table, c)) str_printf(&q, "%s\"%s\"", i ? ", " : "", c);
        else if (req)
            lwb_user_error("%s: table %s has no column '%s'; the profile is not an nsys SQLite export "
                           "that lwb can read (re-export it with nsys export --type sqlite)",
                           d->path, table, c);
        else str_printf(&q, "%sNULL", i ? ", " : "");
    }
    str_printf(&q, " FROM \"%s\"%s%s", table, where ? " WHERE " : "", where ? where : "");
    sqlite3_stmt *st = tdb_prepare(d, q.s);
    str_free(&q);
    return st;
}
static bool col_null(sqlite3_stmt *st, int i) { return sqlite3_column_type(st, i) == SQLITE_NULL; }
static int64_t col_i64(sqlite3_stmt *st, int i, int64_t dflt) {
    return col_null(st, i) ? dflt : (int64_t)sqlite3_column_int64(st, i);
}

// StringIds: id -> interned string id, by binary search over (id, str) pairs sorted by id.
struct trace_sids {
    int64_t *id;  // (n) StringIds.id ascending
    int32_t *str; // (n) string ids
    size_t n;
};
static int32_t sids_get(const struct trace_sids *s, int64_t id) {
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->id[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return (lo < s->n && s->id[lo] == id) ? s->str[lo] : -1;
}

static int range_cmp(const void *x, const void *y) {
    const struct lwb_trace_range *p = x, *q = y;
    if (p->tid != q->tid) return p->tid < q->tid ? -1 : 1;
    if (p->start != q->start) return p->start < q->start ? -1 : 1;
    if (p->end != q->end) return p->end > q->end ? -1 : 1; // the outer of two equal starts first
    return (p->text > q->text) - (p->text < q->text);
}

#define LWB_PROC_MASK (~(uint64_t)0xFFFFFF) // globalTid -> its process (globalPid)

// Innermost range of thread `tid` that holds [a, b], or -1.
static int32_t trace_enclosing(const struct lwb_trace *t, uint64_t tid, int64_t a, int64_t b) {
    size_t lo = 0, hi = t->nr; // first range of a later thread, or later start on this thread
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct lwb_trace_range *r = &t->r[mid];
        if (r->tid < tid || (r->tid == tid && r->start <= a)) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0 || t->r[lo - 1].tid != tid) return -1;
    int32_t i = (int32_t)lo - 1;
    while (i >= 0 && t->r[i].end < b) i = t->r[i].parent;
    return i;
}

static void trace_meta(struct lwb_trace *t, const struct tdb *d) {
    const char *table = tdb_has_table(d, "META_DATA_EXPORT")   ? "META_DATA_EXPORT"
                        : tdb_has_table(d, "EXPORT_META_DATA") ? "EXPORT_META_DATA"
                                                               : NULL;
    if (!table || !tdb_has_column(d, table, "name") || !tdb_has_column(d, table, "value")) return;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT name, value FROM %s WHERE name IN ('EXPORT_PRODUCT_NAME','EXPORT_PRODUCT_VERSION')",
             table);
    sqlite3_stmt *st = tdb_prepare(d, sql);
    while (tdb_step(d, st)) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *value = (const char *)sqlite3_column_text(st, 1);
        if (!name || !value) continue;
        if (!strcmp(name, "EXPORT_PRODUCT_NAME")) snprintf(t->product, sizeof t->product, "%s", value);
        else snprintf(t->version, sizeof t->version, "%s", value);
    }
    sqlite3_finalize(st);
}

// NVTX event type ids by name where the ENUM table exists; the constants have been the same in
// every version (2022.1-2026.2), so they are the fallback.
static void trace_event_types(const struct tdb *d, int *pushpop, int *startend, int *tpushpop,
                              int *tstartend, int *domain) {
    *pushpop = 59, *startend = 60, *tpushpop = 70, *tstartend = 71, *domain = 75;
    if (!tdb_has_table(d, "ENUM_NSYS_EVENT_TYPE")) return;
    sqlite3_stmt *st = tdb_prepare(d, "SELECT id, name FROM ENUM_NSYS_EVENT_TYPE");
    while (tdb_step(d, st)) {
        int id = sqlite3_column_int(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (!name) continue;
        if (!strcmp(name, "NvtxPushPopRange")) *pushpop = id;
        else if (!strcmp(name, "NvtxStartEndRange")) *startend = id;
        else if (!strcmp(name, "NvtxtPushPopRange")) *tpushpop = id;
        else if (!strcmp(name, "NvtxtStartEndRange")) *tstartend = id;
        else if (!strcmp(name, "NvtxDomainCreate")) *domain = id;
    }
    sqlite3_finalize(st);
}

static void trace_load_activities(struct lwb_trace *t, const struct tdb *d,
                                  const struct trace_sids *sids, enum lwb_act_kind kind) {
    static const char *tables[] = {"CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY",
                                   "CUPTI_ACTIVITY_KIND_MEMSET"};
    if (!tdb_has_table(d, tables[kind])) return;
    const char *cols[] = {"!start",   "!end",     "correlationId", "globalPid",    "graphNodeId",
                          "deviceId", "streamId", "demangledName", "shortName"};
    int ncols = kind == LWB_ACT_KERNEL ? 9 : 7;
    if (kind == LWB_ACT_KERNEL && !tdb_has_column(d, tables[kind], "demangledName") &&
        !tdb_has_column(d, tables[kind], "shortName"))
        lwb_user_error("%s: table %s has neither demangledName nor shortName; re-export the profile "
                       "with nsys export --type sqlite",
                       d->path, tables[kind]);
    int32_t fixed = strtab_intern(&t->str, kind == LWB_ACT_MEMCPY ? "Memcpy" : "Memset");
    int32_t unknown = strtab_intern(&t->str, "[unknown kernel name]");
    sqlite3_stmt *st = tdb_select(d, tables[kind], cols, ncols, NULL);
    size_t cap = t->nk;
    while (tdb_step(d, st)) {
        struct lwb_trace_kernel k = {
            .start = col_i64(st, 0, 0),
            .end = col_i64(st, 1, 0),
            .corr = (uint32_t)col_i64(st, 2, 0),
            .pid = (uint64_t)col_i64(st, 3, 0) & LWB_PROC_MASK,
            .graph_node = col_i64(st, 4, 0),
            .flags = col_null(st, 4) ? 0 : LWB_K_GRAPH,
            .device = (int16_t)col_i64(st, 5, 0),
            .stream = (int32_t)col_i64(st, 6, 0),
            .range = -1,
            .kind = (uint8_t)kind,
            .name = fixed,
        };
        if (!trace_times_ok(k.start, k.end, false)) {
            t->bad_times++;
            continue;
        }
        if (kind == LWB_ACT_KERNEL) {
            int64_t id = col_i64(st, col_null(st, 7) ? 8 : 7, -1);
            k.name = id < 0 ? -1 : sids_get(sids, id);
            if (k.name < 0) k.name = unknown;
        }
        if (t->nk == cap) cap = cap ? cap * 2 : 4096, t->k = xrealloc(t->k, cap * sizeof *t->k);
        t->k[t->nk++] = k;
        t->count[kind]++;
    }
    sqlite3_finalize(st);
}

// Kernel -> launch call on (process, correlationId); a graph node -> its creation event.
static void trace_join_launches(struct lwb_trace *t, const struct tdb *d, bool by_process) {
    struct {
        int64_t start, end;
        uint64_t tid;
    } *rt = NULL;
    struct lwb_key2 *keys = NULL;
    size_t n = 0, cap = 0;
    if (tdb_has_table(d, "CUPTI_ACTIVITY_KIND_RUNTIME")) {
        const char *cols[] = {"!start", "!end", "globalTid", "correlationId", "eventClass"};
        sqlite3_stmt *st = tdb_select(d, "CUPTI_ACTIVITY_KIND_RUNTIME", cols, 5, NULL);
        while (tdb_step(d, st)) {
            if (col_null(st, 3)) continue;
            int64_t cls = col_i64(st, 4, 0);
            if (cls != 0 && cls != 1) {
                t->runtime_skipped++;
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 4096;
                rt = xrealloc(rt, cap * sizeof *rt);
                keys = xrealloc(keys, cap * sizeof *keys);
            }
            uint64_t tid = (uint64_t)col_i64(st, 2, 0);
            rt[n].start = col_i64(st, 0, 0), rt[n].end = col_i64(st, 1, 0), rt[n].tid = tid;
            keys[n] = (struct lwb_key2){by_process ? tid & LWB_PROC_MASK : 0,
                                        (uint32_t)col_i64(st, 3, 0), (int64_t)n};
            n++;
        }
        sqlite3_finalize(st);
    }
    t->runtime_rows = n;
    lwb_sort(keys, n, sizeof *keys, key2_cmp);

    // Graph node events: (process, node id) -> (original node id, creation time and thread).
    struct {
        int64_t start, end, orig;
        uint64_t tid;
        bool has_orig;
    } *gn = NULL;
    struct lwb_key2 *gkeys = NULL;
    size_t ng = 0, gcap = 0;
    if (t->graph_nodes && tdb_has_table(d, "CUDA_GRAPH_NODE_EVENTS")) {
        const char *cols[] = {"!start", "end", "globalTid", "!graphNodeId", "originalGraphNodeId"};
        sqlite3_stmt *st = tdb_select(d, "CUDA_GRAPH_NODE_EVENTS", cols, 5, "graphNodeId IS NOT NULL");
        while (tdb_step(d, st)) {
            if (ng == gcap) {
                gcap = gcap ? gcap * 2 : 1024;
                gn = xrealloc(gn, gcap * sizeof *gn);
                gkeys = xrealloc(gkeys, gcap * sizeof *gkeys);
            }
            uint64_t tid = (uint64_t)col_i64(st, 2, 0);
            gn[ng].start = col_i64(st, 0, 0);
            gn[ng].end = col_i64(st, 1, gn[ng].start);
            gn[ng].tid = tid;
            gn[ng].orig = col_i64(st, 4, 0);
            gn[ng].has_orig = !col_null(st, 4);
            gkeys[ng] = (struct lwb_key2){by_process ? tid & LWB_PROC_MASK : 0,
                                          (uint64_t)col_i64(st, 3, 0), (int64_t)ng};
            ng++;
        }
        sqlite3_finalize(st);
        lwb_sort(gkeys, ng, sizeof *gkeys, key2_cmp);
    }
    bool *gn_has_orig = xcalloc(ng ? ng : 1, 1);
    for (size_t i = 0; i < ng; i++) gn_has_orig[i] = gn[i].has_orig;

    for (size_t i = 0; i < t->nk; i++) {
        struct lwb_trace_kernel *k = &t->k[i];
        int64_t r = key2_find(keys, n, by_process ? k->pid : 0, k->corr);
        if (r < 0) {
            k->flags |= LWB_K_NO_LAUNCH;
            t->no_launch++;
            continue;
        }
        k->launch = rt[r].start;
        k->site_start = rt[r].start, k->site_end = rt[r].end, k->site_tid = rt[r].tid;
        if (!(k->flags & LWB_K_GRAPH)) continue;
        int64_t g = graph_node_row(gn_has_orig, gkeys, ng, by_process ? k->pid : 0, (uint64_t)k->graph_node);
        if (g < 0) {
            k->flags |= LWB_K_NO_NODE;
            t->graph_no_node++;
            continue;
        }
        for (int hop = 0; hop < 64 && gn[g].has_orig; hop++) { // clones point at their source
            int64_t o = graph_node_row(gn_has_orig, gkeys, ng, by_process ? k->pid : 0, (uint64_t)gn[g].orig);
            if (o < 0) break;
            g = o;
        }
        k->site_start = gn[g].start, k->site_end = gn[g].end, k->site_tid = gn[g].tid;
    }
    free(rt), free(keys), free(gn), free(gkeys), free(gn_has_orig);
}

static void trace_load_nvtx(struct lwb_trace *t, const struct tdb *d, const struct trace_sids *sids) {
    t->has_nvtx = tdb_has_table(d, "NVTX_EVENTS");
    if (!t->has_nvtx) return;
    int pushpop, startend, tpushpop, tstartend, domain;
    trace_event_types(d, &pushpop, &startend, &tpushpop, &tstartend, &domain);
    const char *cols[] = {"!start", "end", "!eventType", "text", "textId", "globalTid", "domainId",
                          "endGlobalTid"};
    char where[160];
    snprintf(where, sizeof where, "eventType IN (%d, %d, %d, %d, %d)", pushpop, startend, tpushpop,
             tstartend, domain);
    sqlite3_stmt *st = tdb_select(d, "NVTX_EVENTS", cols, 8, where);
    struct {
        uint64_t pid;
        int64_t id;
        int32_t name;
    } *doms = NULL;
    size_t ndom = 0, domcap = 0, cap = 0;
    int64_t *range_dom = NULL; // (nr) domainId of each range, resolved to names below
    while (tdb_step(d, st)) {
        int type = (int)col_i64(st, 2, 0);
        int32_t text = -1;
        if (!col_null(st, 3)) {
            const unsigned char *s = sqlite3_column_text(st, 3);
            text = strtab_intern_n(&t->str, (const char *)s, (size_t)sqlite3_column_bytes(st, 3));
        } else if (!col_null(st, 4)) {
            text = sids_get(sids, col_i64(st, 4, 0));
        }
        if (text < 0) text = strtab_intern(&t->str, "");
        uint64_t tid = (uint64_t)col_i64(st, 5, 0);
        if (type == domain) {
            LWB_PUSH(doms, ndom, domcap, ((__typeof__(*doms)){tid & LWB_PROC_MASK, col_i64(st, 6, 0), text}));
            continue;
        }
        // A start/end range that ended on another thread belongs to no thread's stack.
        if (!col_null(st, 7) && (uint64_t)col_i64(st, 7, 0) != tid) continue;
        if (!trace_times_ok(col_i64(st, 0, 0), col_i64(st, 1, 0), col_null(st, 1))) {
            t->bad_times++;
            continue;
        }
        if (t->nr == cap) {
            cap = cap ? cap * 2 : 4096;
            t->r = xrealloc(t->r, cap * sizeof *t->r);
            range_dom = xrealloc(range_dom, cap * sizeof *range_dom);
        }
        range_dom[t->nr] = col_i64(st, 6, 0);
        t->r[t->nr++] = (struct lwb_trace_range){
            .start = col_i64(st, 0, 0),
            .end = col_i64(st, 1, INT64_MAX),
            .tid = tid,
            .text = text,
            .domain = -1,
            .type = (type == pushpop || type == tpushpop) ? LWB_RANGE_PUSHPOP : LWB_RANGE_STARTEND,
        };
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < t->nr; i++) {
        if (range_dom[i] == 0) continue;
        for (size_t j = 0; j < ndom; j++)
            if (doms[j].id == range_dom[i] && doms[j].pid == (t->r[i].tid & LWB_PROC_MASK))
                t->r[i].domain = doms[j].name;
    }
    free(range_dom), free(doms);

    lwb_sort(t->r, t->nr, sizeof *t->r, range_cmp);
    int32_t *stack = xmalloc((t->nr + 1) * sizeof *stack);
    int depth = 0;
    for (size_t i = 0; i < t->nr; i++) {
        struct lwb_trace_range *r = &t->r[i];
        if (i && t->r[i - 1].tid != r->tid) depth = 0;
        while (depth && !(t->r[stack[depth - 1]].start <= r->start && r->end <= t->r[stack[depth - 1]].end))
            depth--;
        r->parent = depth ? stack[depth - 1] : -1;
        stack[depth++] = (int32_t)i;
    }
    free(stack);
}

static void trace_free(struct lwb_trace *t) {
    free(t->path), free(t->k), free(t->r), free(t->short_of), free(t->short_state);
    strtab_free(&t->str);
    *t = (struct lwb_trace){0};
}

// Read a profile. Exits with one line (status 2) when it is not a readable profile; warns about
// activities it cannot place (no launch call, no graph node creation).
static void trace_open(struct lwb_trace *t, const char *path) {
    *t = (struct lwb_trace){.path = xstrdup(path)};
    char why[512];
    if (!input_check(path, LWB_IN_PROFILE, why, sizeof why))
        lwb_user_error("%s: %s", path, why);
    struct tdb d = {NULL, path};
    if (sqlite3_open_v2(path, &d.db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) tdb_fail(&d, "open");
    sqlite3_exec(d.db, "PRAGMA mmap_size=1073741824", NULL, NULL, NULL);
    trace_meta(t, &d);
    if (!tdb_has_table(&d, "CUPTI_ACTIVITY_KIND_KERNEL"))
        lwb_user_error("%s: the profile has no CUDA kernels (no CUPTI_ACTIVITY_KIND_KERNEL table): CUDA "
                       "was not traced; profile with nsys -t cuda,nvtx (or lwb run --profile)",
                       path);
    if (!tdb_has_table(&d, "StringIds"))
        lwb_user_error("%s: the profile has no StringIds table, so kernel names cannot be read; "
                       "re-export it with nsys export --type sqlite",
                       path);

    struct trace_sids sids = {0};
    size_t scap = 0;
    sqlite3_stmt *st = tdb_prepare(&d, "SELECT id, value FROM StringIds ORDER BY id");
    while (tdb_step(&d, st)) {
        if (sids.n == scap) {
            scap = scap ? scap * 2 : 1024;
            sids.id = xrealloc(sids.id, scap * sizeof *sids.id);
            sids.str = xrealloc(sids.str, scap * sizeof *sids.str);
        }
        const char *v = (const char *)sqlite3_column_text(st, 1);
        sids.id[sids.n] = sqlite3_column_int64(st, 0);
        sids.str[sids.n++] = strtab_intern_n(&t->str, v ? v : "", v ? (size_t)sqlite3_column_bytes(st, 1) : 0);
    }
    sqlite3_finalize(st);

    for (int kind = LWB_ACT_KERNEL; kind <= LWB_ACT_MEMSET; kind++)
        trace_load_activities(t, &d, &sids, (enum lwb_act_kind)kind);
    for (size_t i = 0; i < t->nk; i++) t->graph_nodes += (t->k[i].flags & LWB_K_GRAPH) != 0;
    trace_join_launches(t, &d, tdb_has_column(&d, "CUPTI_ACTIVITY_KIND_KERNEL", "globalPid"));
    trace_load_nvtx(t, &d, &sids);
    free(sids.id), free(sids.str);
    sqlite3_close(d.db);

    for (size_t i = 0; i < t->nk; i++) {
        struct lwb_trace_kernel *k = &t->k[i];
        if (k->flags & LWB_K_NO_LAUNCH) continue;
        k->range = trace_enclosing(t, k->site_tid, k->site_start, k->site_end);
        t->enclosed += k->range >= 0;
    }
    if (t->no_launch) {
        size_t first = 0;
        while (!(t->k[first].flags & LWB_K_NO_LAUNCH)) first++;
        lwb_warn("%s: %zu of %zu GPU activities have no launch call in CUPTI_ACTIVITY_KIND_RUNTIME "
                 "(first: correlationId %u); they are placed in no NVTX range",
                 path, t->no_launch, t->nk, t->k[first].corr);
    }
    if (t->graph_no_node)
        lwb_warn("%s: %zu CUDA-graph activities have no node creation event in "
                 "CUDA_GRAPH_NODE_EVENTS (profile with nsys --cuda-graph-trace node); they are placed "
                 "in the NVTX ranges around the graph launch",
                 path, t->graph_no_node);
}

// ---------------------------------------------------------------------------------------------
// Layer-wise attribution (reference §6.3)

struct lwb_bd_opts {
    const char *module; // keep only kernels under a range with this exact text; NULL: all
    int warmup;         // runs dropped per problem; -1: warmup_times of the args range
};

struct lwb_bd_kernel {  // one kernel position of a problem (the same in every run)
    int32_t name;       // string id: full name
    int32_t short_name; // string id
    int32_t path;       // path id: enclosing module ranges, outer to inner
    int32_t cat;        // category id: (path, short name)
    double mean_ns;     // mean duration over the runs after warm-up
    double end_ns;      // mean end, from the start of its run's first kernel
};

struct lwb_bd_problem {
    char *text;              // the iteration label, "b=1 s=1 past=100 NP1"
    json_t *spec;            // the problem_spec JSON
    int64_t start;           // ns CPU: the problem_spec marker
    int nruns;               // runs, warm-up included
    int64_t *run_start;      // (nruns) ns CPU
    int64_t *run_end;        // (nruns)
    int nk;                  // kernels per run
    struct lwb_bd_kernel *k; // (nk)
    double overlap_ns;       // minus the mean time kernels overlap (<= 0)
    double space_ns;         // mean idle time between kernels
    double total_ns;         // sum of all the above: the mean span of a run
    int32_t *ranges;         // (nranges) labels of the module ranges that end before run 0 ends
    int nranges;
};

struct lwb_bd_cat {
    int32_t path; // path id
    int32_t leaf; // string id: kernel short name, or "Overlap" / "Space" / "Total"
    int32_t full; // string id: the first full kernel name seen (the leaf for the special rows)
};

struct lwb_breakdown {
    struct lwb_trace *t;
    json_t *run_args;          // the args range's JSON; NULL when the profile has none
    int warmup;                // runs dropped per problem
    bool warmup_from_profile;  // warmup came from run_args
    int np;                    // problems
    struct lwb_bd_problem *p;  // (np) in marker order
    struct lwb_paths paths;    // module paths
    struct lwb_bd_cat *cat;    // (ncat)
    int ncat;
    int nmerged;               // rows of the merged table
    int32_t *merged;           // (nmerged) category ids in output order
    double *value;             // (nmerged x np) ns; 0 where a problem lacks the row
    int32_t cat_overlap, cat_space, cat_total;
    size_t used;               // kernel executions attributed to a run (warm-up included)
};

static bool is_iteration_text(const char *s) { // ^b=\d+ s=\d+ (the reference's regex)
    if (!str_starts(s, "b=") || !isdigit((unsigned char)s[2])) return false;
    s += 2;
    while (isdigit((unsigned char)*s)) s++;
    if (!str_starts(s, " s=") || !isdigit((unsigned char)s[3])) return false;
    s += 3;
    while (isdigit((unsigned char)*s)) s++;
    return *s == ' ';
}

#define LWB_MARK "layer_wise_benchmarks "
#define LWB_MARK_IGNORE "layer_wise_benchmarks ignore"

// Ranges the layer-wise attribution looks at: push/pop, not NCCL's domain, not DeepGEMM's [DG].
static bool bd_range_counts(const struct lwb_trace *t, const struct lwb_trace_range *r) {
    return r->type == LWB_RANGE_PUSHPOP && !str_starts(trace_str(t, r->text), "[DG]") &&
           !(r->domain >= 0 && !strcmp(trace_str(t, r->domain), "NCCL"));
}

static int upper_bound_i64(const int64_t *v, int n, int64_t x) { // first index with v[i] > x
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (v[mid] <= x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

// True when the profile holds layer-wise markers (problem_spec ranges).
static bool breakdown_detect(const struct lwb_trace *t) {
    for (size_t i = 0; i < t->nr; i++)
        if (t->r[i].type == LWB_RANGE_PUSHPOP &&
            str_starts(trace_str(t, t->r[i].text), LWB_MARK "problem_spec "))
            return true;
    return false;
}

static json_t *bd_json(const struct lwb_trace *t, const char *text, const char *what) {
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &err);
    if (!j || !json_is_object(j))
        lwb_user_error("%s: the NVTX range '%s%s' does not hold a JSON object (%s at column %d)", t->path,
                       LWB_MARK, what, j ? "not an object" : err.text, err.column);
    return j;
}

struct bd_rec { // one kernel execution attributed to a run
    int32_t problem, run, path;
    uint32_t k; // index into t->k
};

// Working state of one breakdown_build; every array is indexed by range or kernel of the trace.
struct bd_work {
    struct lwb_trace *t;
    int32_t *order;         // (nord) the ranges attribution looks at, by start time
    size_t nord;
    int64_t *pstart;        // (np) problem starts
    int32_t *range_problem; // (nr) problem of each range by its start; -1: before the first
    uint8_t *is_module;     // (nr) a module range (not a marker, not an iteration)
    int32_t *kcount;        // (nr) kernels of runs under each range, for --module
    struct bd_rec *rec;     // (nrec) sorted by problem, run, launch, capture time
    size_t nrec;
};

static int bd_range_start_cmp(const void *x, const void *y, void *arg) {
    const struct lwb_trace *t = arg;
    int32_t i = *(const int32_t *)x, j = *(const int32_t *)y;
    if (t->r[i].start != t->r[j].start) return t->r[i].start < t->r[j].start ? -1 : 1;
    return (i > j) - (i < j);
}
// Launch order: by launch call, then (graph nodes of one launch) by capture time, as the reference.
static int bd_rec_cmp(const void *x, const void *y, void *arg) {
    const struct lwb_trace *t = arg;
    const struct bd_rec *p = x, *q = y;
    if (p->problem != q->problem) return p->problem - q->problem;
    if (p->run != q->run) return p->run - q->run;
    const struct lwb_trace_kernel *a = &t->k[p->k], *b = &t->k[q->k];
    if (a->launch != b->launch) return a->launch < b->launch ? -1 : 1;
    if (a->site_start != b->site_start) return a->site_start < b->site_start ? -1 : 1;
    if (a->start != b->start) return a->start < b->start ? -1 : 1;
    return (p->k > q->k) - (p->k < q->k);
}
static int bd_gpu_start_cmp(const void *x, const void *y, void *arg) {
    const struct lwb_trace *t = arg;
    uint32_t i = *(const uint32_t *)x, j = *(const uint32_t *)y;
    if (t->k[i].start != t->k[j].start) return t->k[i].start < t->k[j].start ? -1 : 1;
    return (i > j) - (i < j);
}

static int32_t bd_cat(struct lwb_breakdown *b, struct lwb_map64 *cats, int32_t path, int32_t leaf,
                      int32_t full) {
    int64_t *v = map64_slot(cats, (uint64_t)(uint32_t)path << 32 | (uint32_t)leaf);
    if (*v < 0) {
        *v = b->ncat;
        b->cat = xrealloc(b->cat, (size_t)(b->ncat + 1) * sizeof *b->cat);
        b->cat[b->ncat++] = (struct lwb_bd_cat){path, leaf, full};
    }
    return (int32_t)*v;
}

static void breakdown_free(struct lwb_breakdown *b) {
    for (int i = 0; i < b->np; i++) {
        struct lwb_bd_problem *p = &b->p[i];
        free(p->text), json_decref(p->spec), free(p->run_start), free(p->run_end), free(p->k);
        free(p->ranges);
    }
    free(b->p), free(b->cat), free(b->merged), free(b->value);
    json_decref(b->run_args);
    paths_free(&b->paths);
    *b = (struct lwb_breakdown){0};
}

// Markers (args, problem_spec), then every range by its start: iterations become runs of their
// problem, the rest module ranges (except markers other than "ignore").
static void bd_ranges(struct lwb_breakdown *b, struct bd_work *w) {
    struct lwb_trace *t = b->t;
    w->order = xmalloc((t->nr + 1) * sizeof *w->order);
    for (size_t i = 0; i < t->nr; i++)
        if (bd_range_counts(t, &t->r[i])) w->order[w->nord++] = (int32_t)i;
    qsort_r(w->order, w->nord, sizeof *w->order, bd_range_start_cmp, t); // threads do not matter
    size_t pcap = 0, first_spec = 0;
    for (size_t j = 0; j < w->nord; j++) {
        const struct lwb_trace_range *r = &t->r[w->order[j]];
        const char *s = trace_str(t, r->text);
        if (str_starts(s, LWB_MARK "args ")) {
            json_decref(b->run_args);
            b->run_args = bd_json(t, s + strlen(LWB_MARK "args "), "args");
        } else if (str_starts(s, LWB_MARK "problem_spec ")) {
            // Ranks profiled into one file would interleave their problems and runs.
            if (b->np && (r->tid & LWB_PROC_MASK) != (t->r[w->order[first_spec]].tid & LWB_PROC_MASK))
                lwb_user_error("%s: layer-wise markers come from more than one process (pids %d and %d); "
                               "profile each rank into its own file (report_npN_rankR, as lwb run does)",
                               t->path, (int)((t->r[w->order[first_spec]].tid >> 24) & 0xFFFFFF),
                               (int)((r->tid >> 24) & 0xFFFFFF));
            if (!b->np) first_spec = j;
            lwb_grow((void **)&b->p, &pcap, (size_t)b->np + 1, sizeof *b->p);
            b->p[b->np++] = (struct lwb_bd_problem){
                .text = xstrdup(""), .spec = bd_json(t, s + strlen(LWB_MARK "problem_spec "), "problem_spec"),
                .start = r->start};
        }
    }
    w->pstart = xmalloc((size_t)b->np * sizeof *w->pstart);
    for (int i = 0; i < b->np; i++) w->pstart[i] = b->p[i].start;

    w->range_problem = xmalloc((t->nr + 1) * sizeof *w->range_problem);
    w->is_module = xcalloc(t->nr + 1, 1);
    for (size_t i = 0; i < t->nr; i++) w->range_problem[i] = -1;
    size_t *rcap = xcalloc((size_t)b->np, sizeof *rcap);
    for (size_t j = 0; j < w->nord; j++) {
        int32_t ri = w->order[j];
        const struct lwb_trace_range *r = &t->r[ri];
        const char *s = trace_str(t, r->text);
        int pi = upper_bound_i64(w->pstart, b->np, r->start) - 1;
        w->range_problem[ri] = pi;
        if (pi < 0 || (str_starts(s, LWB_MARK) && strcmp(s, LWB_MARK_IGNORE))) continue;
        struct lwb_bd_problem *p = &b->p[pi];
        if (!is_iteration_text(s)) {
            w->is_module[ri] = 1;
            continue;
        }
        free(p->text);
        p->text = xstrdup(s);
        lwb_grow((void **)&p->run_start, &rcap[pi], (size_t)p->nruns + 1, sizeof *p->run_start);
        p->run_end = xrealloc(p->run_end, rcap[pi] * sizeof *p->run_end);
        p->run_start[p->nruns] = r->start, p->run_end[p->nruns++] = r->end;
    }
    free(rcap);
    for (int i = 0; i < b->np; i++)
        if (b->p[i].nruns == 0)
            lwb_user_error("%s: problem %d (%s %s) has no iteration ranges (\"b=N s=N ...\"); was the "
                           "profile cut short?",
                           t->path, i, LWB_MARK "problem_spec", json_dumps(b->p[i].spec, JSON_COMPACT));
    // For the "Ranges:" listing: module ranges that end before the first run ends.
    for (size_t j = 0; j < w->nord; j++) {
        int32_t ri = w->order[j];
        if (!w->is_module[ri]) continue;
        struct lwb_bd_problem *p = &b->p[w->range_problem[ri]];
        if (t->r[ri].end > p->run_end[0]) continue;
        p->ranges = xrealloc(p->ranges, (size_t)(p->nranges + 1) * sizeof *p->ranges);
        p->ranges[p->nranges++] = t->r[ri].text;
    }
}

// Kernels -> (problem by GPU start, run by launch time, module path at the launch or capture).
static void bd_attribute(struct lwb_breakdown *b, struct bd_work *w, const char *module) {
    struct lwb_trace *t = b->t;
    int32_t ignore_text = strtab_intern(&t->str, LWB_MARK_IGNORE);
    int32_t module_text = module ? strtab_intern(&t->str, module) : -1;
    int32_t *path_cache = xmalloc((t->nr + 1) * sizeof *path_cache); // innermost module -> path
    for (size_t i = 0; i < t->nr; i++) path_cache[i] = -1;
    w->kcount = xcalloc(t->nr + 1, sizeof *w->kcount);
    w->rec = xmalloc((t->nk + 1) * sizeof *w->rec);
    int32_t chain[256], ids[256];
    for (size_t i = 0; i < t->nk; i++) {
        const struct lwb_trace_kernel *k = &t->k[i];
        if (k->flags & LWB_K_NO_LAUNCH) continue;
        int pi = upper_bound_i64(w->pstart, b->np, k->start) - 1;
        if (pi < 0) continue;
        struct lwb_bd_problem *p = &b->p[pi];
        int run = upper_bound_i64(p->run_start, p->nruns, k->launch) - 1;
        if (run < 0 || k->launch >= p->run_end[run]) continue; // e.g. the capture, an eager warm-up
        int n = 0; // the kernel's module ranges, inner to outer
        for (int32_t r = k->range; r >= 0 && n < (int)LWB_ARRAY_LEN(chain); r = t->r[r].parent)
            if (w->is_module[r] && w->range_problem[r] == pi) chain[n++] = r;
        bool keep = module_text < 0, ignored = false;
        for (int j = 0; j < n; j++) {
            w->kcount[chain[j]]++;
            keep = keep || t->r[chain[j]].text == module_text;
            ignored = ignored || t->r[chain[j]].text == ignore_text;
        }
        b->used++;
        if (!keep || ignored) continue;
        int32_t path = n ? path_cache[chain[0]] : 0;
        if (path < 0) {
            for (int j = 0; j < n; j++) ids[j] = t->r[chain[n - 1 - j]].text;
            path = path_cache[chain[0]] = paths_intern(&b->paths, ids, n);
        }
        w->rec[w->nrec++] = (struct bd_rec){pi, run, path, (uint32_t)i};
    }
    free(path_cache);
    qsort_r(w->rec, w->nrec, sizeof *w->rec, bd_rec_cmp, t);
}

// --module must name one range per run (bucket 0: before the first run, e.g. the capture).
static void bd_check_module(struct lwb_breakdown *b, struct bd_work *w, const char *module) {
    struct lwb_trace *t = b->t;
    int32_t text = strtab_intern(&t->str, module);
    for (int pi = 0; pi < b->np; pi++) {
        struct lwb_bd_problem *p = &b->p[pi];
        int *per_run = xcalloc((size_t)p->nruns + 1, sizeof *per_run);
        for (size_t j = 0; j < w->nord; j++) {
            int32_t ri = w->order[j];
            if (w->range_problem[ri] != pi || !w->is_module[ri] || t->r[ri].text != text || !w->kcount[ri])
                continue;
            int bucket = upper_bound_i64(p->run_start, p->nruns, t->r[ri].start);
            if (++per_run[bucket] > 1)
                lwb_user_error("%s: module is ambiguous: \"%s\" appears %d times in \"%s\"'s %d-th run "
                               "(0-th: before the first run); give --module a range that occurs once per run",
                               t->path, module, per_run[bucket], p->text, bucket);
        }
        free(per_run);
    }
    if (w->nrec == 0)
        lwb_user_error("%s: no kernel runs inside an NVTX range named \"%s\" (--module takes the exact text "
                       "of a module range, e.g. one listed under \"Ranges:\")",
                       t->path, module);
}

static void bd_warmup(struct lwb_breakdown *b, int warmup) {
    const char *path = b->t->path;
    b->warmup = warmup;
    if (warmup < 0) {
        json_t *w = b->run_args ? json_object_get(b->run_args, "warmup_times") : NULL;
        if (!w)
            lwb_user_error("%s: the profile has no warmup_times (%s); give --warmup-times N", path,
                           b->run_args ? "not in its args range" : "no 'layer_wise_benchmarks args' range");
        if (!json_is_integer(w) || json_integer_value(w) < 0 || json_integer_value(w) > 1000000)
            lwb_user_error("%s: warmup_times in the args range is not an integer from 0 to 1000000; give "
                           "--warmup-times N", path);
        b->warmup = (int)json_integer_value(w);
        b->warmup_from_profile = true;
    }
    for (int pi = 0; pi < b->np; pi++)
        if (b->p[pi].nruns <= b->warmup)
            lwb_user_error("%s: \"%s\" has %d runs and warm-up drops %d, so none is left to average; "
                           "give --warmup-times less than %d",
                           path, b->p[pi].text, b->p[pi].nruns, b->warmup, b->p[pi].nruns);
}

// The runs of a problem must launch the same kernels in the same order, since times are averaged
// per position. Says which run differs, where, and with which kernels.
static void bd_check_runs(const struct lwb_breakdown *b, const struct lwb_bd_problem *p,
                          const struct bd_rec *rec, const size_t *run_at, const int *run_n) {
    const struct lwb_trace *t = b->t;
    for (int r = 1; r < p->nruns; r++) {
        int n = LWB_MIN(run_n[0], run_n[r]), i = 0;
        while (i < n && t->k[rec[run_at[0] + i].k].name == t->k[rec[run_at[r] + i].k].name) i++;
        if (i == n && run_n[0] == run_n[r]) continue;
        const char *x = i < run_n[0] ? trace_str(t, t->k[rec[run_at[0] + i].k].name) : "(end of run)";
        const char *y = i < run_n[r] ? trace_str(t, t->k[rec[run_at[r] + i].k].name) : "(end of run)";
        lwb_user_error("%s: the runs of \"%s\" launch different kernels: run %d (counting from 0, "
                       "warm-up included) differs from run 0 at kernel %d: \"%.300s\" instead of "
                       "\"%.300s\" (run 0 has %d kernels, run %d has %d); times are averaged per kernel "
                       "position, so every run must launch the same sequence",
                       t->path, p->text, r, i, y, x, run_n[0], r, run_n[r]);
    }
}

// One problem: per-position means over the runs after warm-up, Overlap, Space, Total. `*at` is
// the problem's first record and moves past its last. Returns its category list (n + 3 entries).
static int32_t *bd_average(struct lwb_breakdown *b, struct bd_work *w, int pi, size_t *at,
                           struct lwb_map64 *cats) {
    struct lwb_trace *t = b->t;
    struct lwb_bd_problem *p = &b->p[pi];
    const struct bd_rec *rec = w->rec;
    size_t *run_at = xcalloc((size_t)p->nruns, sizeof *run_at);
    int *run_n = xcalloc((size_t)p->nruns, sizeof *run_n);
    for (int r = 0; r < p->nruns; r++) {
        run_at[r] = *at;
        while (*at < w->nrec && rec[*at].problem == pi && rec[*at].run == r) (*at)++;
        run_n[r] = (int)(*at - run_at[r]);
    }
    bd_check_runs(b, p, rec, run_at, run_n);
    int kept = p->nruns - b->warmup;
    p->nk = run_n[0];
    p->k = xcalloc((size_t)p->nk + 1, sizeof *p->k);
    int32_t *seq = xmalloc((size_t)(p->nk + 3) * sizeof *seq);
    for (int i = 0; i < p->nk; i++) {
        const struct bd_rec *r0 = &rec[run_at[0] + i];
        struct lwb_bd_kernel *bk = &p->k[i];
        bk->name = t->k[r0->k].name;
        bk->short_name = trace_short_name(t, bk->name, true);
        bk->path = r0->path; // the first run's path, as the reference
        bk->cat = seq[i] = bd_cat(b, cats, bk->path, bk->short_name, bk->name);
        int64_t dur = 0, end = 0; // ns sums: exact
        for (int r = b->warmup; r < p->nruns; r++) {
            const struct lwb_trace_kernel *k = &t->k[rec[run_at[r] + i].k];
            dur += k->end - k->start;
            end += k->end - t->k[rec[run_at[r]].k].start;
        }
        bk->mean_ns = (double)dur / kept, bk->end_ns = (double)end / kept;
    }
    // Overlap and idle time per run, its kernels by GPU start.
    int64_t overlap = 0, space = 0;
    uint32_t *ks = xmalloc((size_t)(p->nk + 1) * sizeof *ks);
    for (int r = b->warmup; r < p->nruns && p->nk; r++) {
        for (int i = 0; i < p->nk; i++) ks[i] = rec[run_at[r] + i].k;
        qsort_r(ks, (size_t)p->nk, sizeof *ks, bd_gpu_start_cmp, t);
        int64_t last_end = t->k[ks[0]].start;
        for (int i = 0; i < p->nk; i++) {
            const struct lwb_trace_kernel *k = &t->k[ks[i]];
            if (k->start > last_end) space += k->start - last_end;
            else overlap += LWB_MIN(last_end, k->end) - k->start;
            last_end = LWB_MAX(last_end, k->end);
        }
    }
    free(ks), free(run_at), free(run_n);
    p->overlap_ns = 0.0 - (double)overlap / kept; // 0.0 - x keeps a zero positive
    p->space_ns = (double)space / kept;
    p->total_ns = p->overlap_ns + p->space_ns;
    for (int i = 0; i < p->nk; i++) p->total_ns += p->k[i].mean_ns;
    seq[p->nk] = b->cat_overlap, seq[p->nk + 1] = b->cat_space, seq[p->nk + 2] = b->cat_total;
    return seq;
}

// Merge the problems' category lists into one; each problem's values land at its own rows.
static void bd_merge(struct lwb_breakdown *b, int32_t **seq) {
    for (int pi = 0; pi < b->np; pi++) {
        int32_t *m;
        int n = scs_merge(b->merged, b->nmerged, seq[pi], b->p[pi].nk + 3, &m);
        free(b->merged);
        b->merged = m, b->nmerged = n;
    }
    b->value = xcalloc((size_t)b->nmerged * (size_t)b->np + 1, sizeof *b->value);
    for (int pi = 0; pi < b->np; pi++) {
        const struct lwb_bd_problem *p = &b->p[pi];
        for (int i = 0, cur = 0; i < p->nk + 3; i++, cur++) {
            while (cur < b->nmerged && b->merged[cur] != seq[pi][i]) cur++;
            if (cur == b->nmerged) LWB_BUG("category %d not in the merged list", seq[pi][i]);
            double v = i < p->nk ? p->k[i].mean_ns : i == p->nk ? p->overlap_ns : i == p->nk + 1 ? p->space_ns : p->total_ns;
            b->value[(size_t)cur * (size_t)b->np + (size_t)pi] = v;
        }
    }
}

// Attribute the kernels of a layer-wise profile. Returns false (and builds nothing) when the
// profile has no problem_spec markers. Exits with one line on contradictory input.
static bool breakdown_build(struct lwb_trace *t, const struct lwb_bd_opts *o, struct lwb_breakdown *b) {
    *b = (struct lwb_breakdown){.t = t};
    if (!breakdown_detect(t)) return false;
    paths_init(&b->paths);
    struct bd_work w = {.t = t};
    bd_ranges(b, &w);
    bd_attribute(b, &w, o->module);
    if (o->module) bd_check_module(b, &w, o->module);
    bd_warmup(b, o->warmup);
    struct lwb_map64 cats = {0};
    int32_t overlap = strtab_intern(&t->str, "Overlap"), space = strtab_intern(&t->str, "Space"),
            total = strtab_intern(&t->str, "Total");
    b->cat_overlap = bd_cat(b, &cats, 0, overlap, overlap);
    b->cat_space = bd_cat(b, &cats, 0, space, space);
    b->cat_total = bd_cat(b, &cats, 0, total, total);
    int32_t **seq = xcalloc((size_t)b->np, sizeof *seq);
    size_t at = 0;
    for (int pi = 0; pi < b->np; pi++) seq[pi] = bd_average(b, &w, pi, &at, &cats);
    bd_merge(b, seq);
    for (int pi = 0; pi < b->np; pi++) free(seq[pi]);
    free(seq);
    map64_free(&cats);
    free(w.order), free(w.pstart), free(w.range_problem), free(w.is_module), free(w.kcount), free(w.rec);
    return true;
}

// Module breakdown rows of one problem: kernels grouped by (module path, full name), in order of
// first appearance. For comparing two profiles of the same run (e.g. lwb's own and nsys's).
struct lwb_module_row {
    const char *path;       // module ranges joined with " > ", "" outside any module
    const char *short_name; // kernel short name
    const char *name;       // full kernel name
    int count;              // kernels per run with this path and name
    double mean_ns;         // mean duration of one of them
    double total_ns;        // count x mean_ns
};

static int breakdown_module_rows(struct lwb_breakdown *b, int problem, struct lwb_module_row **out) {
    const struct lwb_bd_problem *p = &b->p[problem];
    struct lwb_module_row *rows = xcalloc((size_t)p->nk + 1, sizeof *rows);
    int32_t *row_path = xcalloc((size_t)p->nk + 1, sizeof *row_path);
    int n = 0;
    for (int i = 0; i < p->nk; i++) {
        const struct lwb_bd_kernel *k = &p->k[i];
        int j = 0;
        while (j < n && !(row_path[j] == k->path && rows[j].name == trace_str(b->t, k->name))) j++;
        if (j == n) {
            struct lwb_str s = {0};
            const struct lwb_path *pp = &b->paths.p[k->path];
            for (int e = 0; e < pp->n; e++) str_printf(&s, "%s%s", e ? " > " : "", trace_str(b->t, pp->id[e]));
            int32_t ps = strtab_intern(&b->t->str, s.s ? s.s : "");
            str_free(&s);
            row_path[n] = k->path;
            rows[n++] = (struct lwb_module_row){.path = trace_str(b->t, ps),
                                                 .short_name = trace_str(b->t, k->short_name),
                                                 .name = trace_str(b->t, k->name)};
        }
        rows[j].count++;
        rows[j].total_ns += k->mean_ns;
    }
    for (int j = 0; j < n; j++) rows[j].mean_ns = rows[j].total_ns / rows[j].count;
    free(row_path);
    *out = rows;
    return n;
}

// Compare the module breakdowns of two profiles of one run (e.g. lwb's own profile and an nsys
// export of the same run): per problem the same rows (module path, full kernel name, count, in
// the same order) and mean durations within `tol` (relative, 0.05 for 5 %) or `abs_ns`, whichever
// is larger: two runs of the same program differ by more than 5 % on a 5 us copy (seen: 4.94 vs
// 5.21 us), which says nothing about the profiler. Prints up to ten differences to `log`;
// returns how many there are.
static int breakdown_compare(struct lwb_breakdown *a, struct lwb_breakdown *b, double tol, double abs_ns, FILE *log) {
    int diffs = 0;
#define CMP_DIFF(...) (diffs++ < 10 ? (void)fprintf(log, __VA_ARGS__) : (void)0)
    if (a->np != b->np) CMP_DIFF("problems: %d vs %d\n", a->np, b->np);
    for (int pi = 0; pi < LWB_MIN(a->np, b->np); pi++) {
        if (strcmp(a->p[pi].text, b->p[pi].text))
            CMP_DIFF("problem %d: \"%s\" vs \"%s\"\n", pi, a->p[pi].text, b->p[pi].text);
        struct lwb_module_row *ra, *rb;
        int na = breakdown_module_rows(a, pi, &ra), nb = breakdown_module_rows(b, pi, &rb);
        if (na != nb) CMP_DIFF("\"%s\": %d vs %d module rows\n", a->p[pi].text, na, nb);
        for (int i = 0; i < LWB_MIN(na, nb); i++) {
            const struct lwb_module_row *x = &ra[i], *y = &rb[i];
            if (strcmp(x->path, y->path) || strcmp(x->name, y->name) || x->count != y->count)
                CMP_DIFF("\"%s\" row %d: [%s] %s x%d vs [%s] %s x%d\n", a->p[pi].text, i, x->path, x->short_name,
                         x->count, y->path, y->short_name, y->count);
            else if (fabs(x->mean_ns - y->mean_ns) > LWB_MAX(tol * LWB_MAX(x->mean_ns, y->mean_ns), abs_ns))
                CMP_DIFF("\"%s\" row %d: [%s] %s mean %.1f vs %.1f ns (more than %.0f %% apart)\n", a->p[pi].text,
                         i, x->path, x->short_name, x->mean_ns, y->mean_ns, tol * 100);
        }
        free(ra), free(rb);
    }
#undef CMP_DIFF
    return diffs;
}

// ---------------------------------------------------------------------------------------------
// Kernel time per innermost NVTX range (profiles without layer-wise markers)

struct lwb_sum_row {
    int32_t path;       // path id: the NVTX stack at the launch, outer to inner (0: outside any range)
    int32_t short_name; // string id: kernel short name (or Memcpy / Memset), the grouping key
    int32_t name;       // string id: the first full name seen under it
    int64_t count;      // executions
    int64_t total_ns, min_ns, max_ns;
};
struct lwb_nvtx_sum {
    struct lwb_paths paths; // labels are "domain:text" outside the default domain
    struct lwb_sum_row *row;
    int n;
};

static void nvtx_sum_free(struct lwb_nvtx_sum *s) {
    paths_free(&s->paths);
    free(s->row);
    *s = (struct lwb_nvtx_sum){0};
}

static void nvtx_sum_build(struct lwb_trace *t, struct lwb_nvtx_sum *s) {
    *s = (struct lwb_nvtx_sum){0};
    paths_init(&s->paths);
    int32_t *label = xmalloc((t->nr + 1) * sizeof *label); // range -> "domain:text"
    int32_t *path_of = xmalloc((t->nr + 1) * sizeof *path_of);
    for (size_t i = 0; i < t->nr; i++) {
        path_of[i] = -1;
        label[i] = t->r[i].text;
        if (t->r[i].domain >= 0) {
            struct lwb_str l = {0};
            str_printf(&l, "%s:%s", trace_str(t, t->r[i].domain), trace_str(t, t->r[i].text));
            label[i] = strtab_intern(&t->str, l.s);
            str_free(&l);
        }
    }
    struct lwb_map64 idx = {0};
    size_t cap = 0;
    for (size_t i = 0; i < t->nk; i++) {
        const struct lwb_trace_kernel *k = &t->k[i];
        int32_t path = 0;
        if (k->range >= 0) {
            if (path_of[k->range] < 0) {
                int32_t ids[256];
                int n = 0;
                for (int32_t r = k->range; r >= 0 && n < 256; r = t->r[r].parent) ids[n++] = label[r];
                for (int j = 0; j < n / 2; j++) {
                    int32_t x = ids[j];
                    ids[j] = ids[n - 1 - j], ids[n - 1 - j] = x;
                }
                path_of[k->range] = paths_intern(&s->paths, ids, n);
            }
            path = path_of[k->range];
        }
        int32_t sn = trace_short_name(t, k->name, false); // as nsys: grouped by short name
        int64_t *v = map64_slot(&idx, (uint64_t)(uint32_t)path << 32 | (uint32_t)sn);
        if (*v < 0) {
            *v = s->n;
            lwb_grow((void **)&s->row, &cap, (size_t)s->n + 1, sizeof *s->row);
            s->row[s->n++] = (struct lwb_sum_row){path, sn, k->name, 0, 0, INT64_MAX, INT64_MIN};
        }
        struct lwb_sum_row *r = &s->row[*v];
        int64_t d = k->end - k->start;
        r->count++, r->total_ns += d;
        r->min_ns = LWB_MIN(r->min_ns, d), r->max_ns = LWB_MAX(r->max_ns, d);
    }
    map64_free(&idx);
    free(label), free(path_of);
}

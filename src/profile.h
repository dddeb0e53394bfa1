// profile.h: lwb's built-in profiler: CUPTI activity and lwb's NVTX ranges, written as an SQLite
// file shaped like an Nsight Systems 2025.3 export, so one reader serves both.
//
// Defines:
//   profile_under_nsys (is lwb running under Nsight Systems, and which signal said so);
//   the plain records (struct lwb_prof_kernel, _api, _copy, _set, _range, _node, _thread,
//   _gpu) gathered in struct lwb_prof_data with its string table (prof_intern);
//   prof_write_sqlite (records -> file, atomically, one transaction);
//   prof_add_activity (one CUPTI activity record -> plain records), prof_nodes_resolve;
//   the profiler: struct lwb_profiler, profile_init, profile_begin, profile_end, profile_write,
//   profile_free; profile_path.
//
// Use (lwb run, one process per GPU):
//   if (!profile_under_nsys()) profile_init(&p, &dev, rank, world_size); // before any capture
//   ... capture CUDA graphs, warm up ...
//   profile_begin(&p); <warm-up and timed loop>; profile_end(&p);   // may repeat
//   const char *path = profile_write(&p, "profiles");   // profiles/report_np<N>_rank<R>.sqlite
//   profile_free(&p);
// Every call is a no-op on a profiler that is off (under nsys, or another tool owns CUPTI).
// CUPTI's callbacks hold the profiler's address: it stays where profile_init put it until
// profile_free. profile_write is called once.
//
// What is recorded when:
//   - from profile_init until profile_write: lwb's NVTX ranges (nvtx.h's recorder) and CUDA-graph
//     node creation and cloning (CUPTI resource callbacks), so kernels replayed from a graph
//     captured before the timed loop map back to the ranges open while it was captured;
//   - between profile_begin and profile_end: CUPTI activity: kernels (CONCURRENT_KERNEL), copies,
//     memsets, driver and runtime API calls.
// All of them use CUPTI's clock (CLOCK_REALTIME on Linux: cuptiGetTimestamp), and the file's
// times are ns after profile_init (t = 0), as nsys writes times after its session start.
//
// Under Nsight Systems (see profile_under_nsys for the signals) nsys owns CUPTI: lwb's NVTX
// ranges still reach nsys, and lwb does not load CUPTI.
//
// NOTES:
//   Overhead during the timed loop: CUPTI writes records into 8 MiB buffers we hand it zeroed
//   (pre-faulted ones first); the completion callback only queues the buffer. Records are read
//   after profile_end, and SQLite is written by profile_write. NVTX recording costs ~100 ns a
//   push or pop.
//   Graph lineage: CUPTI reports a node created during stream capture (CREATED) and, at
//   instantiation, each executable node twice (CREATED, then CLONED with the node it copies).
//   prof_nodes_resolve keeps one row per node: the clone row when there is one, so the chain
//   exec node -> captured node (originalGraphNodeId NULL) is what nsys's node-mode export has.
//   Kernel names: CUPTI gives the mangled name. lwb's kernels are extern "C", so the name is
//   also the demangled and the short name. C++ names (NCCL's kernels, for one) are demangled
//   with __cxa_demangle, found in the process or in libstdc++.so.6, once per distinct name;
//   without it the demangled name stays mangled and the short name is read from the mangled
//   form.
//   Tables are always created, empty or not (nsys creates them lazily; readers check anyway).
//   NVTX ranges are written as nsys writes the registered strings nvtx.h pushes: eventType 59,
//   text NULL, textId -> StringIds, domainId 0 (the default domain, which has no domain-create
//   row of eventType 75). TensorRT-LLM's parse.py reads range names only through that join, so
//   inline text would leave it with no markers at all.
//   For a parser that follows the layer-wise-benchmarks contract, the caller keeps the file
//   consistent: every iteration range recorded should lie in an activity window (or it is a
//   run without kernels), a problem's problem_spec marker comes before its graph is captured,
//   and the device is idle before the next problem_spec (problems are told apart by the
//   kernels' GPU start times).
//
// Does not: read profiles (trace.h does), trace NCCL or other libraries' NVTX domains, or record
// anything outside the process.
// Tested by test/test_profile.c (writer and record conversion, on the CPU); on the GPU by
// test/gpu/profile_probe.c.
#pragma once
#include <sqlite3.h>

// ---------------------------------------------------------------------------------------------
// Running under Nsight Systems

// Which signal says nsys profiles this process, or NULL. Signals: NSYS_PROFILING_SESSION_ID
// (set by nsys for the processes it launches), or nsys's injection library
// (libToolsInjection*.so, or a path in an Nsight Systems folder) named by NVTX_INJECTION64_PATH,
// CUDA_INJECTION64_PATH or LD_PRELOAD.
static const char *profile_nsys_signal(void) {
    const char *s = getenv("NSYS_PROFILING_SESSION_ID");
    if (s && *s) return "NSYS_PROFILING_SESSION_ID";
    static const char *const vars[] = {"NVTX_INJECTION64_PATH", "CUDA_INJECTION64_PATH",
                                       "LD_PRELOAD"};
    for (size_t i = 0; i < LWB_ARRAY_LEN(vars); i++) {
        const char *v = getenv(vars[i]);
        if (v && (strstr(v, "ToolsInjection") || strstr(v, "nsight-systems") ||
                  strstr(v, "nsight_systems") || strstr(v, "NsightSystems")))
            return vars[i];
    }
    return NULL;
}

static bool profile_under_nsys(void) { return profile_nsys_signal() != NULL; }

// ---------------------------------------------------------------------------------------------
// Plain records. Times are ns after the profile's t = 0; ids are what CUPTI reported.

struct lwb_prof_kernel {
    int64_t start, end;           // ns
    int64_t grid_id;              // unique per launch
    uint64_t graph_node;          // executing graph node, 0 when not launched from a graph
    uint64_t local_total;         // local memory for the whole grid, bytes
    uint32_t device, context, stream, correlation;
    uint32_t demangled, short_name, mangled; // string ids
    int32_t grid[3], block[3];
    int32_t static_smem, dynamic_smem; // bytes
    uint32_t local_per_thread;    // bytes
    uint32_t smem_executed;       // shared memory the driver configured, bytes
    uint16_t regs;                // registers per thread
    uint8_t launch_type;          // nsys numbering: 1 regular, 2/3 cooperative, 0 unknown
    uint8_t cache_config;         // CUfunc_cache executed
    uint8_t smem_limit_config;    // 0 default, 1 opt-in
};

struct lwb_prof_api {
    int64_t start, end; // ns
    uint32_t tid;       // OS thread id
    uint32_t correlation;
    uint32_t name;      // string id ("cuLaunchKernel")
    uint32_t ret;       // CUresult / cudaError_t
    uint8_t driver;     // 1 driver API (eventClass 1), 0 runtime API (eventClass 0)
};

struct lwb_prof_copy {
    int64_t start, end; // ns
    uint64_t bytes, graph_node, count; // count: copies batched in this record (1 normally)
    uint32_t device, context, stream, correlation;
    uint8_t kind;               // CUpti_ActivityMemcpyKind (= nsys ENUM_CUDA_MEMCPY_OPER)
    uint8_t src_kind, dst_kind; // nsys ENUM_CUDA_MEM_KIND numbering
};

struct lwb_prof_set {
    int64_t start, end; // ns
    uint64_t bytes, graph_node;
    uint32_t device, context, stream, correlation;
    uint32_t value;
    uint8_t mem_kind;   // nsys ENUM_CUDA_MEM_KIND numbering
};

struct lwb_prof_range {
    int64_t start, end; // ns; end < 0: still open when recording stopped (end NULL in the file)
    uint32_t tid;       // OS thread id
    const char *text;   // written as a registered string: textId -> StringIds, text NULL
};

struct lwb_prof_node {
    int64_t t;         // ns: when the node was created or cloned
    uint32_t tid;      // OS thread that created it
    uint64_t id;       // graphNodeId
    uint64_t original; // the node it was cloned from, 0 for a node created by capture or add
};

struct lwb_prof_thread {
    uint32_t tid;
    char name[16];
};

struct lwb_prof_gpu {
    int id;                  // device ordinal (TARGET_INFO_GPU.id and cuDevice)
    char name[128];
    int sm_count, cc_major, cc_minor, l2_bytes, smem_optin;
    int64_t total_mem;       // bytes
    int64_t clock_hz;        // SM clock
    int64_t mem_bandwidth;   // bytes/s (memory clock x bus width x 2)
};

// Strings: StringIds rows. Id 0 is "[Unknown]", as in nsys exports.
struct lwb_prof_strings {
    char **s;        // (n) owned
    size_t n, cap;
    uint32_t *slots; // (nslots) open addressing: id + 1, 0 empty
    size_t nslots;
};

struct lwb_prof_data {
    int pid;                 // process id for globalPid/globalTid
    char process[64];        // process name (PROCESSES.name)
    int rank, world_size;
    int64_t utc_epoch_ns;    // wall clock at t = 0
    struct lwb_prof_gpu gpu;
    struct lwb_prof_strings str;
    struct lwb_prof_kernel *kernels; size_t nkernels, capkernels;
    struct lwb_prof_api *apis;       size_t napis, capapis;
    struct lwb_prof_copy *copies;    size_t ncopies, capcopies;
    struct lwb_prof_set *sets;       size_t nsets, capsets;
    struct lwb_prof_range *ranges;   size_t nranges, capranges;
    struct lwb_prof_node *nodes;     size_t nnodes, capnodes;
    struct lwb_prof_thread *threads; size_t nthreads, capthreads;
    char *range_pool;        // owns the ranges' texts when they came from the recorder
    uint64_t dropped;        // records CUPTI could not store
    uint64_t untimed;        // records CUPTI stored without timestamps (not written)
};

static uint64_t prof_hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void prof_strings_rehash(struct lwb_prof_strings *t, size_t nslots) {
    free(t->slots);
    t->slots = xcalloc(nslots, sizeof *t->slots);
    t->nslots = nslots;
    for (size_t i = 0; i < t->n; i++) {
        size_t k = prof_hash_str(t->s[i]) & (nslots - 1);
        while (t->slots[k]) k = (k + 1) & (nslots - 1);
        t->slots[k] = (uint32_t)i + 1;
    }
}

// The id of `s` in the string table, adding it when new.
static uint32_t prof_intern(struct lwb_prof_data *d, const char *s) {
    struct lwb_prof_strings *t = &d->str;
    if (!t->n) { // id 0
        LWB_PUSH(t->s, t->n, t->cap, xstrdup("[Unknown]"));
        prof_strings_rehash(t, 64);
    }
    if (!s) return 0;
    size_t k = prof_hash_str(s) & (t->nslots - 1);
    for (; t->slots[k]; k = (k + 1) & (t->nslots - 1))
        if (!strcmp(t->s[t->slots[k] - 1], s)) return t->slots[k] - 1;
    if (t->n >= UINT32_MAX - 1) LWB_BUG("profile: too many distinct strings");
    LWB_PUSH(t->s, t->n, t->cap, xstrdup(s));
    t->slots[k] = (uint32_t)t->n;
    if (t->n * 2 > t->nslots) prof_strings_rehash(t, t->nslots * 2);
    return (uint32_t)t->n - 1;
}

static void prof_data_free(struct lwb_prof_data *d) {
    for (size_t i = 0; i < d->str.n; i++) free(d->str.s[i]);
    free(d->str.s), free(d->str.slots);
    free(d->kernels), free(d->apis), free(d->copies), free(d->sets);
    free(d->ranges), free(d->nodes), free(d->threads), free(d->range_pool);
    *d = (struct lwb_prof_data){0};
}

// nsys's serialized ids: (vm 1 << 48) | pid << 24 | tid.
static int64_t prof_global_pid(int pid) {
    return (int64_t)((1ull << 48) | ((uint64_t)(pid & 0xFFFFFF) << 24));
}
static int64_t prof_global_tid(int pid, uint32_t tid) {
    return prof_global_pid(pid) | (int64_t)(tid & 0xFFFFFF);
}

// ---------------------------------------------------------------------------------------------
// Kernel names

// The base name (no scope, template arguments, parameters or return type) of a demangled C++
// name: "void at::native::k<4, F<float>>(int, F<float>)" -> "k". Copies `dem` when
// it has no such parts.
static void prof_demangled_base(const char *dem, char *out, size_t n) {
    size_t len = strlen(dem), end = len;
    if (end && dem[end - 1] == ')') { // the parameter list: the (...) the name ends with
        int depth = 0;
        for (size_t i = end; i-- > 0;) {
            if (dem[i] == ')') depth++;
            else if (dem[i] == '(' && --depth == 0) {
                end = i;
                break;
            }
        }
    }
    if (end > 0 && dem[end - 1] == '>') { // trailing template arguments
        int depth = 0;
        for (size_t i = end; i-- > 0;) {
            if (dem[i] == '>') depth++;
            else if (dem[i] == '<' && --depth == 0) {
                end = i;
                break;
            }
        }
    }
    size_t start = 0;
    int nest = 0;
    for (size_t i = 0; i < end; i++) { // after the last "::" or ' ' outside <...> and (...)
        if (dem[i] == '<' || dem[i] == '(') nest++;
        else if ((dem[i] == '>' || dem[i] == ')') && nest > 0) nest--;
        else if (nest == 0 && dem[i] == ':' && i + 1 < end && dem[i + 1] == ':') start = i + 2;
        else if (nest == 0 && dem[i] == ' ') start = i + 1;
    }
    if (start >= end) start = 0, end = len;
    snprintf(out, n, "%.*s", (int)(end - start), dem + start);
}

// Skip one balanced Itanium-mangling group starting at *p, an opener among I N L X J, up to and
// including its E. Source names (<len><chars>) and substitutions are stepped over whole, so the
// letters inside them do not count.
static const char *prof_skip_group(const char *p) {
    int depth = 0;
    while (*p) {
        if (isdigit((unsigned char)*p)) {
            char *e;
            long len = strtol(p, &e, 10);
            if (len <= 0 || (size_t)len > strlen(e)) return NULL;
            p = e + len;
            continue;
        }
        if (*p == 'S' || *p == 'T') { // substitution S<seq>_ / St.., template parameter T<n>_
            if (*p == 'S' && p[1] && strchr("tabsiod", p[1])) {
                p += 2;
                continue;
            }
            const char *u = strchr(p, '_');
            if (!u) return NULL;
            p = u + 1;
            continue;
        }
        if (*p == 'L') { // a literal: L <type> <value> E, or an external name L _Z ... E
            if (p[1] == '_' && p[2] == 'Z') {
                depth++;
                p += 3;
                continue;
            }
            p += p[1] == 'D' ? 3 : 2; // builtin type: one letter, or D and one
            if (*p == 'n') p++;
            while (isdigit((unsigned char)*p) || (*p >= 'a' && *p <= 'f')) p++;
            if (*p != 'E') return NULL;
            if (depth == 0) return p + 1;
            p++;
            continue;
        }
        if (strchr("INXJ", *p)) depth++;
        else if (*p == 'E' && --depth == 0) return p + 1;
        p++;
    }
    return NULL;
}

// The base name of an Itanium-mangled function name: the last source name of its (nested)
// name, before template arguments and parameters. "_ZN2at6native6kernelILi4EEvT_" -> "kernel".
// False when the name is not one this reads.
static bool prof_mangled_base(const char *m, char *out, size_t n) {
    if (strncmp(m, "_Z", 2)) return false;
    const char *p = m + 2, *last = NULL;
    long lastlen = 0;
    bool nested = *p == 'N';
    if (nested)
        for (p++; *p == 'r' || *p == 'V' || *p == 'K'; p++) {}
    for (;;) {
        if (p[0] == 'S' && p[1] == 't') p += 2; // std::
        else if (p[0] == 'S') {                 // a substitution: an earlier prefix
            const char *u = strchr(p, '_');
            if (!u) return false;
            p = u + 1;
            continue;
        }
        if (!isdigit((unsigned char)*p)) break;
        char *e;
        long len = strtol(p, &e, 10);
        if (len <= 0 || (size_t)len > strlen(e)) return false;
        last = e, lastlen = len;
        p = e + len;
        if (*p == 'I') { // template arguments of this component
            p = prof_skip_group(p);
            if (!p) return false;
        }
        if (!nested || *p == 'E') break;
    }
    if (!last) return false;
    snprintf(out, n, "%.*s", (int)lastlen, last);
    return true;
}

typedef char *(*prof_demangler_fn)(const char *, char *, size_t *, int *);

// abi::__cxa_demangle from a library already in the process, else from the system's C++
// runtime when it can be opened, else NULL.
static prof_demangler_fn prof_demangler(void) {
    static int looked;
    static prof_demangler_fn fn;
    if (!looked) {
        looked = 1;
        void *sym = dlsym(RTLD_DEFAULT, "__cxa_demangle");
        if (!sym) {
            void *h = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_LOCAL);
            if (h) sym = dlsym(h, "__cxa_demangle");
        }
        memcpy(&fn, &sym, sizeof fn);
    }
    return fn;
}

// Intern a kernel's three names from the name CUPTI reports.
static void prof_kernel_names(struct lwb_prof_data *d, const char *name, uint32_t *demangled,
                              uint32_t *short_name, uint32_t *mangled) {
    if (!name || !*name) {
        *demangled = *short_name = *mangled = 0;
        return;
    }
    *mangled = prof_intern(d, name);
    if (strncmp(name, "_Z", 2)) { // extern "C" (or already plain): one name for all three
        *demangled = *short_name = *mangled;
        return;
    }
    char base[512];
    char *dem = NULL;
    prof_demangler_fn fn = prof_demangler();
    int status = -1;
    if (fn) dem = fn(name, NULL, NULL, &status);
    if (dem && status == 0) {
        *demangled = prof_intern(d, dem);
        prof_demangled_base(dem, base, sizeof base);
    } else {
        *demangled = *mangled;
        if (!prof_mangled_base(name, base, sizeof base)) snprintf(base, sizeof base, "%s", name);
    }
    free(dem);
    *short_name = prof_intern(d, base);
}

// ---------------------------------------------------------------------------------------------
// The SQLite writer

// Column lists of an Nsight Systems 2025.3 export (schema 3.20.3), for the tables lwb writes.
static const char *const prof_schema[] = {
    "CREATE TABLE StringIds (id INTEGER NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER NOT NULL, end INTEGER NOT NULL, "
    "deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, greenContextId INTEGER, "
    "streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, "
    "demangledName INTEGER NOT NULL, shortName INTEGER NOT NULL, mangledName INTEGER, "
    "launchType INTEGER, cacheConfig INTEGER, registersPerThread INTEGER NOT NULL, "
    "gridX INTEGER NOT NULL, gridY INTEGER NOT NULL, gridZ INTEGER NOT NULL, "
    "blockX INTEGER NOT NULL, blockY INTEGER NOT NULL, blockZ INTEGER NOT NULL, "
    "staticSharedMemory INTEGER NOT NULL, dynamicSharedMemory INTEGER NOT NULL, "
    "localMemoryPerThread INTEGER NOT NULL, localMemoryTotal INTEGER NOT NULL, "
    "gridId INTEGER NOT NULL, sharedMemoryExecuted INTEGER, graphNodeId INTEGER, "
    "sharedMemoryLimitConfig INTEGER)",
    "CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INTEGER NOT NULL, end INTEGER NOT NULL, "
    "eventClass INTEGER NOT NULL, globalTid INTEGER, correlationId INTEGER, "
    "nameId INTEGER NOT NULL, returnValue INTEGER NOT NULL, callchainId INTEGER)",
    "CREATE TABLE CUPTI_ACTIVITY_KIND_MEMCPY (start INTEGER NOT NULL, end INTEGER NOT NULL, "
    "deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, greenContextId INTEGER, "
    "streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, "
    "bytes INTEGER NOT NULL, copyKind INTEGER NOT NULL, deprecatedSrcId INTEGER, "
    "srcKind INTEGER, dstKind INTEGER, srcDeviceId INTEGER, srcContextId INTEGER, "
    "dstDeviceId INTEGER, dstContextId INTEGER, migrationCause INTEGER, graphNodeId INTEGER, "
    "virtualAddress INTEGER, copyCount INTEGER)",
    "CREATE TABLE CUPTI_ACTIVITY_KIND_MEMSET (start INTEGER NOT NULL, end INTEGER NOT NULL, "
    "deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, greenContextId INTEGER, "
    "streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, "
    "value INTEGER NOT NULL, bytes INTEGER NOT NULL, graphNodeId INTEGER, memKind INTEGER)",
    "CREATE TABLE NVTX_EVENTS (start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL, "
    "rangeId INTEGER, category INTEGER, color INTEGER, text TEXT, globalTid INTEGER, "
    "endGlobalTid INTEGER, textId INTEGER, domainId INTEGER, uint64Value INTEGER, "
    "int64Value INTEGER, doubleValue REAL, uint32Value INTEGER, int32Value INTEGER, "
    "floatValue REAL, jsonTextId INTEGER, jsonText TEXT, binaryData TEXT)",
    "CREATE TABLE CUDA_GRAPH_NODE_EVENTS (start INTEGER NOT NULL, end INTEGER NOT NULL, "
    "eventClass INTEGER NOT NULL, globalTid INTEGER, nameId INTEGER NOT NULL, "
    "graphNodeId INTEGER NOT NULL, originalGraphNodeId INTEGER)",
    "CREATE TABLE TARGET_INFO_GPU (vmId INTEGER NOT NULL, id INTEGER NOT NULL, name TEXT, "
    "busLocation TEXT, isDiscrete INTEGER, l2CacheSize INTEGER, totalMemory INTEGER, "
    "memoryBandwidth INTEGER, clockRate INTEGER, smCount INTEGER, pwGpuId INTEGER, uuid TEXT, "
    "luid INTEGER, chipName TEXT, cuDevice INTEGER, ctxswDevPath TEXT, ctrlDevPath TEXT, "
    "revision INTEGER, nodeMask INTEGER, constantMemory INTEGER, maxIPC INTEGER, "
    "maxRegistersPerBlock INTEGER, maxShmemPerBlock INTEGER, maxShmemPerBlockOptin INTEGER, "
    "maxShmemPerSm INTEGER, maxRegistersPerSm INTEGER, threadsPerWarp INTEGER, "
    "asyncEngines INTEGER, maxWarpsPerSm INTEGER, maxBlocksPerSm INTEGER, "
    "maxThreadsPerBlock INTEGER, maxBlockDimX INTEGER, maxBlockDimY INTEGER, "
    "maxBlockDimZ INTEGER, maxGridDimX INTEGER, maxGridDimY INTEGER, maxGridDimZ INTEGER, "
    "computeMajor INTEGER, computeMinor INTEGER, smMajor INTEGER, smMinor INTEGER)",
    "CREATE TABLE TARGET_INFO_SESSION_START_TIME (utcEpochNs INTEGER, utcTime TEXT, "
    "localTime TEXT)",
    "CREATE TABLE ThreadNames (nameId INTEGER NOT NULL, priority INTEGER, globalTid INTEGER)",
    "CREATE TABLE PROCESSES (globalPid INTEGER, pid INTEGER, name TEXT)",
    "CREATE TABLE ENUM_NSYS_EVENT_TYPE (id INTEGER NOT NULL PRIMARY KEY, name TEXT, label TEXT)",
    "CREATE TABLE ENUM_NSYS_EVENT_CLASS (id INTEGER NOT NULL PRIMARY KEY, name TEXT, label TEXT)",
    "CREATE TABLE META_DATA_EXPORT (name TEXT NOT NULL, value TEXT)",
    "CREATE TABLE META_DATA_CAPTURE (name TEXT NOT NULL, value TEXT)",
};

enum {
    PROF_EVENT_NVTX_MARK = 34,
    PROF_EVENT_NVTX_PUSHPOP = 59,
    PROF_EVENT_NVTX_STARTEND = 60,
    PROF_EVENT_NVTX_DOMAIN = 75,
    PROF_CLASS_RUNTIME = 0,
    PROF_CLASS_DRIVER = 1,
    PROF_CLASS_GRAPH_NODE = 77,
};

// A prepared INSERT and the helpers that fill its columns (1-based, in order).
struct prof_ins {
    sqlite3_stmt *st;
    int col;
};
static void ins_i64(struct prof_ins *q, int64_t v) { sqlite3_bind_int64(q->st, ++q->col, v); }
static void ins_null(struct prof_ins *q) { sqlite3_bind_null(q->st, ++q->col); }
static void ins_text(struct prof_ins *q, const char *s) {
    if (s) sqlite3_bind_text(q->st, ++q->col, s, -1, SQLITE_STATIC);
    else ins_null(q);
}
static void ins_opt(struct prof_ins *q, uint64_t v) { // 0 is NULL (graphNodeId, ...)
    if (v) ins_i64(q, (int64_t)v);
    else ins_null(q);
}
static int ins_done(sqlite3 *db, struct prof_ins *q) {
    int rc = sqlite3_step(q->st);
    sqlite3_reset(q->st);
    q->col = 0;
    (void)db;
    return rc == SQLITE_DONE ? 0 : -1;
}

static int prof_prepare(sqlite3 *db, const char *table, int ncols, struct prof_ins *q) {
    struct lwb_str sql = {0};
    str_printf(&sql, "INSERT INTO %s VALUES (", table);
    for (int i = 0; i < ncols; i++) str_puts(&sql, i ? ",?" : "?");
    str_puts(&sql, ")");
    *q = (struct prof_ins){0};
    int rc = sqlite3_prepare_v2(db, sql.s, -1, &q->st, NULL);
    str_free(&sql);
    return rc == SQLITE_OK ? 0 : -1;
}

static void prof_format_time(int64_t epoch_ns, bool local, char *out, size_t n) {
    time_t s = (time_t)(epoch_ns / 1000000000);
    struct tm tm;
    if (local) localtime_r(&s, &tm);
    else gmtime_r(&s, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
}

// Write every table. Returns 0, or -1 with the failing step in `err`.
static int prof_write_tables(sqlite3 *db, struct lwb_prof_data *d, char *err, size_t n) {
    struct prof_ins q = {0};
    const char *step = "schema";
    char buf[64];
    uint32_t *thread_names = NULL;
#define PROF_TRY(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) goto fail;                                                                    \
    } while (0)
    for (size_t i = 0; i < LWB_ARRAY_LEN(prof_schema); i++)
        PROF_TRY(sqlite3_exec(db, prof_schema[i], NULL, NULL, NULL) == SQLITE_OK);

    const int pid = d->pid;
    const int64_t gpid = prof_global_pid(pid);
    prof_intern(d, NULL); // id 0 exists even in an empty profile
    const uint32_t node_created = prof_intern(d, "Graph Node Creation");
    const uint32_t node_cloned = prof_intern(d, "Graph Node Clone");
    thread_names = xcalloc(d->nthreads, sizeof *thread_names);
    for (size_t i = 0; i < d->nthreads; i++)
        thread_names[i] = prof_intern(d, d->threads[i].name[0] ? d->threads[i].name : d->process);

    step = "kernels";
    PROF_TRY(prof_prepare(db, "CUPTI_ACTIVITY_KIND_KERNEL", 28, &q) == 0);
    for (size_t i = 0; i < d->nkernels; i++) {
        const struct lwb_prof_kernel *k = &d->kernels[i];
        ins_i64(&q, k->start), ins_i64(&q, k->end), ins_i64(&q, k->device);
        ins_i64(&q, k->context), ins_null(&q), ins_i64(&q, k->stream);
        ins_i64(&q, k->correlation), ins_i64(&q, gpid);
        ins_i64(&q, k->demangled), ins_i64(&q, k->short_name), ins_i64(&q, k->mangled);
        ins_i64(&q, k->launch_type), ins_i64(&q, k->cache_config), ins_i64(&q, k->regs);
        for (int j = 0; j < 3; j++) ins_i64(&q, k->grid[j]);
        for (int j = 0; j < 3; j++) ins_i64(&q, k->block[j]);
        ins_i64(&q, k->static_smem), ins_i64(&q, k->dynamic_smem);
        ins_i64(&q, k->local_per_thread), ins_i64(&q, (int64_t)k->local_total);
        ins_i64(&q, k->grid_id), ins_i64(&q, k->smem_executed), ins_opt(&q, k->graph_node);
        ins_i64(&q, k->smem_limit_config);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;

    step = "API calls";
    PROF_TRY(prof_prepare(db, "CUPTI_ACTIVITY_KIND_RUNTIME", 8, &q) == 0);
    for (size_t i = 0; i < d->napis; i++) {
        const struct lwb_prof_api *a = &d->apis[i];
        ins_i64(&q, a->start), ins_i64(&q, a->end);
        ins_i64(&q, a->driver ? PROF_CLASS_DRIVER : PROF_CLASS_RUNTIME);
        ins_i64(&q, prof_global_tid(pid, a->tid)), ins_i64(&q, a->correlation);
        ins_i64(&q, a->name), ins_i64(&q, a->ret), ins_null(&q);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;

    step = "copies";
    PROF_TRY(prof_prepare(db, "CUPTI_ACTIVITY_KIND_MEMCPY", 21, &q) == 0);
    for (size_t i = 0; i < d->ncopies; i++) {
        const struct lwb_prof_copy *c = &d->copies[i];
        ins_i64(&q, c->start), ins_i64(&q, c->end), ins_i64(&q, c->device);
        ins_i64(&q, c->context), ins_null(&q), ins_i64(&q, c->stream);
        ins_i64(&q, c->correlation), ins_i64(&q, gpid), ins_i64(&q, (int64_t)c->bytes);
        ins_i64(&q, c->kind), ins_null(&q), ins_i64(&q, c->src_kind), ins_i64(&q, c->dst_kind);
        for (int j = 0; j < 5; j++) ins_null(&q); // src/dst device and context, migrationCause
        ins_opt(&q, c->graph_node), ins_null(&q), ins_i64(&q, (int64_t)c->count);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;

    step = "memsets";
    PROF_TRY(prof_prepare(db, "CUPTI_ACTIVITY_KIND_MEMSET", 12, &q) == 0);
    for (size_t i = 0; i < d->nsets; i++) {
        const struct lwb_prof_set *s = &d->sets[i];
        ins_i64(&q, s->start), ins_i64(&q, s->end), ins_i64(&q, s->device);
        ins_i64(&q, s->context), ins_null(&q), ins_i64(&q, s->stream);
        ins_i64(&q, s->correlation), ins_i64(&q, gpid), ins_i64(&q, s->value);
        ins_i64(&q, (int64_t)s->bytes), ins_opt(&q, s->graph_node), ins_i64(&q, s->mem_kind);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;

    step = "NVTX ranges";
    PROF_TRY(prof_prepare(db, "NVTX_EVENTS", 20, &q) == 0);
    for (size_t i = 0; i < d->nranges; i++) {
        const struct lwb_prof_range *r = &d->ranges[i];
        ins_i64(&q, r->start);
        if (r->end >= 0) ins_i64(&q, r->end);
        else ins_null(&q);
        ins_i64(&q, PROF_EVENT_NVTX_PUSHPOP), ins_null(&q), ins_null(&q), ins_null(&q);
        ins_null(&q), ins_i64(&q, prof_global_tid(pid, r->tid)), ins_null(&q); // text, endGlobalTid
        ins_i64(&q, prof_intern(d, r->text ? r->text : "")), ins_i64(&q, 0); // textId, domainId
        for (int j = 0; j < 9; j++) ins_null(&q);  // payloads, binaryData
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;

    step = "graph nodes";
    PROF_TRY(prof_prepare(db, "CUDA_GRAPH_NODE_EVENTS", 7, &q) == 0);
    for (size_t i = 0; i < d->nnodes; i++) {
        const struct lwb_prof_node *g = &d->nodes[i];
        ins_i64(&q, g->t), ins_i64(&q, g->t), ins_i64(&q, PROF_CLASS_GRAPH_NODE);
        ins_i64(&q, prof_global_tid(pid, g->tid));
        ins_i64(&q, g->original ? node_cloned : node_created);
        ins_i64(&q, (int64_t)g->id), ins_opt(&q, g->original);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;

    step = "GPU";
    PROF_TRY(prof_prepare(db, "TARGET_INFO_GPU", 41, &q) == 0);
    {
        const struct lwb_prof_gpu *g = &d->gpu;
        ins_i64(&q, prof_global_pid(0)), ins_i64(&q, g->id), ins_text(&q, g->name);
        ins_null(&q), ins_i64(&q, 1), ins_i64(&q, g->l2_bytes), ins_i64(&q, g->total_mem);
        ins_i64(&q, g->mem_bandwidth), ins_i64(&q, g->clock_hz), ins_i64(&q, g->sm_count);
        for (int j = 0; j < 4; j++) ins_null(&q); // pwGpuId, uuid, luid, chipName
        ins_i64(&q, g->id);                       // cuDevice
        for (int j = 0; j < 8; j++) ins_null(&q); // ... through maxShmemPerBlock
        ins_i64(&q, g->smem_optin);               // maxShmemPerBlockOptin
        ins_null(&q), ins_null(&q), ins_i64(&q, 32); // maxShmemPerSm, maxRegistersPerSm, warp
        for (int j = 0; j < 10; j++) ins_null(&q); // asyncEngines ... maxGridDimZ
        ins_i64(&q, g->cc_major), ins_i64(&q, g->cc_minor);
        ins_i64(&q, g->cc_major), ins_i64(&q, g->cc_minor);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;

    step = "session";
    PROF_TRY(prof_prepare(db, "TARGET_INFO_SESSION_START_TIME", 3, &q) == 0);
    {
        char utc[32], local[32];
        prof_format_time(d->utc_epoch_ns, false, utc, sizeof utc);
        prof_format_time(d->utc_epoch_ns, true, local, sizeof local);
        ins_i64(&q, d->utc_epoch_ns), ins_text(&q, utc), ins_text(&q, local);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;

    step = "threads";
    PROF_TRY(prof_prepare(db, "ThreadNames", 3, &q) == 0);
    for (size_t i = 0; i < d->nthreads; i++) {
        ins_i64(&q, thread_names[i]), ins_i64(&q, 0);
        ins_i64(&q, prof_global_tid(pid, d->threads[i].tid));
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;
    PROF_TRY(prof_prepare(db, "PROCESSES", 3, &q) == 0);
    ins_i64(&q, gpid), ins_i64(&q, pid), ins_text(&q, d->process);
    PROF_TRY(ins_done(db, &q) == 0);
    sqlite3_finalize(q.st), q.st = NULL;

    step = "enums";
    static const struct {
        int id;
        const char *name, *label;
    } types[] = {
        {33, "NvtxCategory", "NvtxCategory"},         {34, "NvtxMark", "NvtxMark"},
        {35, "NvtxPushRange", "NvtxPushRange"},       {36, "NvtxPopRange", "NvtxPopRange"},
        {37, "NvtxStartRange", "NvtxStartRange"},     {38, "NvtxEndRange", "NvtxEndRange"},
        {39, "NvtxThread", "NvtxThread"},             {59, "NvtxPushPopRange", "NvtxPushPopRange"},
        {60, "NvtxStartEndRange", "NvtxStartEndRange"},
        {75, "NvtxDomainCreate", "NvtxDomainCreate"},
        {76, "NvtxDomainDestroy", "NvtxDomainDestroy"},
    },
      classes[] = {
        {0, "TRACE_PROCESS_EVENT_CUDA_RUNTIME", "CUDA runtime"},
        {1, "TRACE_PROCESS_EVENT_CUDA_DRIVER", "CUDA driver"},
        {77, "TRACE_PROCESS_EVENT_CUDA_GRAPH_NODE_CREATION", "CUDA graph node creation"},
    };
    PROF_TRY(prof_prepare(db, "ENUM_NSYS_EVENT_TYPE", 3, &q) == 0);
    for (size_t i = 0; i < LWB_ARRAY_LEN(types); i++) {
        ins_i64(&q, types[i].id), ins_text(&q, types[i].name), ins_text(&q, types[i].label);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;
    PROF_TRY(prof_prepare(db, "ENUM_NSYS_EVENT_CLASS", 3, &q) == 0);
    for (size_t i = 0; i < LWB_ARRAY_LEN(classes); i++) {
        ins_i64(&q, classes[i].id), ins_text(&q, classes[i].name), ins_text(&q, classes[i].label);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;

    step = "metadata";
    char now[32], rank[16], world[16], dropped[32], untimed[32];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    prof_format_time((int64_t)ts.tv_sec * 1000000000, false, now, sizeof now);
    snprintf(rank, sizeof rank, "%d", d->rank);
    snprintf(world, sizeof world, "%d", d->world_size);
    snprintf(dropped, sizeof dropped, "%" PRIu64, d->dropped);
    snprintf(untimed, sizeof untimed, "%" PRIu64, d->untimed);
    const char *meta[][2] = {
        {"EXPORT_PRODUCT_NAME", "lwb"},
        {"EXPORT_PRODUCT_VERSION", LWB_VERSION},
        {"EXPORT_SCHEMA_VERSION", "3.20.3"},
        {"EXPORT_SCHEMA_VERSION_MAJOR", "3"},
        {"EXPORT_SCHEMA_VERSION_MINOR", "20"},
        {"EXPORT_SCHEMA_VERSION_MICRO", "3"},
        {"EXPORT_TIME_UTC", now},
        {"LWB_RANK", rank},
        {"LWB_WORLD_SIZE", world},
        {"LWB_DROPPED_RECORDS", dropped},
        {"LWB_UNTIMED_RECORDS", untimed},
    };
    PROF_TRY(prof_prepare(db, "META_DATA_EXPORT", 2, &q) == 0);
    for (size_t i = 0; i < LWB_ARRAY_LEN(meta); i++) {
        ins_text(&q, meta[i][0]), ins_text(&q, meta[i][1]);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;
    PROF_TRY(prof_prepare(db, "META_DATA_CAPTURE", 2, &q) == 0);
    snprintf(buf, sizeof buf, "%d", pid);
    ins_text(&q, "PROCESS_0:CUDA_GRAPH_TRACE_OPTIONS:MODE"), ins_text(&q, "Node");
    PROF_TRY(ins_done(db, &q) == 0);
    ins_text(&q, "PROCESS_0:PID"), ins_text(&q, buf);
    PROF_TRY(ins_done(db, &q) == 0);
    sqlite3_finalize(q.st), q.st = NULL;

    step = "strings"; // last: the steps above may add strings
    PROF_TRY(prof_prepare(db, "StringIds", 2, &q) == 0);
    for (size_t i = 0; i < d->str.n; i++) {
        ins_i64(&q, (int64_t)i), ins_text(&q, d->str.s[i]);
        PROF_TRY(ins_done(db, &q) == 0);
    }
    sqlite3_finalize(q.st), q.st = NULL;
    free(thread_names);
    return 0;
fail:
    snprintf(err, n, "writing %s: %s", step, sqlite3_errmsg(db));
    if (q.st) sqlite3_finalize(q.st);
    free(thread_names);
    return -1;
#undef PROF_TRY
}

// Write the profile to `path` atomically: a temporary file beside it, filled in one
// transaction, synced and renamed. On failure nothing is left behind (an older file at `path`
// stays as it was) and `err` says what failed; returns 0 or -1.
static int prof_write_sqlite(struct lwb_prof_data *d, const char *path, char *err, size_t n) {
    char *tmp_owned;
    int tfd = lwb_tmp_beside(path, &tmp_owned); // a new file (O_EXCL) SQLite then opens by name
    if (tfd < 0) {
        snprintf(err, n, "cannot create a file beside %s: %s", path, strerror(errno));
        return -1;
    }
    close(tfd);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", tmp_owned);
    free(tmp_owned);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, n, "cannot create %s: %s", tmp, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto fail;
    }
    // The temporary file is thrown away on any failure, so SQLite's journal buys nothing.
    if (sqlite3_exec(db, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN", NULL, NULL,
                     NULL) != SQLITE_OK) {
        snprintf(err, n, "cannot write %s: %s", tmp, sqlite3_errmsg(db));
        goto fail;
    }
    if (prof_write_tables(db, d, err, n) != 0) goto fail;
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, n, "cannot write %s: %s", tmp, sqlite3_errmsg(db));
        goto fail;
    }
    if (sqlite3_close(db) != SQLITE_OK) {
        snprintf(err, n, "cannot close %s: %s", tmp, sqlite3_errmsg(db));
        goto fail;
    }
    db = NULL;
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        snprintf(err, n, "cannot sync %s: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        goto fail;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(err, n, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    return 0;
fail:
    if (db) sqlite3_close(db);
    unlink(tmp);
    return -1;
}

// <dir>/report_np<world_size>_rank<rank>.sqlite (the caller frees it).
static char *profile_path(const char *dir, int world_size, int rank) {
    char name[64];
    snprintf(name, sizeof name, "report_np%d_rank%d.sqlite", world_size, rank);
    return lwb_path_join(dir, name);
}

// ---------------------------------------------------------------------------------------------
// CUPTI activity records -> plain records

// A map from 64-bit keys to string ids, for names already interned (kernel name pointers,
// API callback ids). Open addressing; key 0 is not stored.
struct prof_idmap {
    uint64_t *keys;
    uint32_t *vals;
    size_t n, cap; // cap: a power of two
};

static uint32_t *prof_idmap_slot(struct prof_idmap *m, uint64_t key, bool *found) {
    if ((m->n + 1) * 2 > m->cap) {
        struct prof_idmap old = *m;
        m->cap = old.cap ? old.cap * 2 : 64;
        m->keys = xcalloc(m->cap, sizeof *m->keys);
        m->vals = xcalloc(m->cap, sizeof *m->vals);
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.keys[i]) {
                bool f;
                *prof_idmap_slot(m, old.keys[i], &f) = old.vals[i];
            }
        free(old.keys), free(old.vals);
    }
    size_t k = (size_t)(lwb_mix64(key) & (m->cap - 1));
    while (m->keys[k] && m->keys[k] != key) k = (k + 1) & (m->cap - 1);
    *found = m->keys[k] == key;
    if (!*found) m->keys[k] = key, m->n++;
    return &m->vals[k];
}

static void prof_idmap_free(struct prof_idmap *m) {
    free(m->keys), free(m->vals);
    *m = (struct prof_idmap){0};
}

// What converting records needs besides the data: t = 0 and the name of an API callback id.
struct prof_conv {
    uint64_t t0;                                      // CUPTI clock at the profile's t = 0
    const char *(*api_name)(bool driver, uint32_t cbid); // NULL name: "[Unknown]"
    struct prof_idmap kernel_names; // name pointer -> index into `knames` + 1
    struct { uint32_t dem, shrt, mang; } *knames;
    size_t nknames, capknames;
    struct prof_idmap api_names;    // (driver << 32 | cbid) + 1 -> string id
};

static void prof_conv_free(struct prof_conv *c) {
    prof_idmap_free(&c->kernel_names);
    prof_idmap_free(&c->api_names);
    free(c->knames);
    c->knames = NULL, c->nknames = c->capknames = 0;
}

// nsys numbers memory kinds from 0 = pageable; CUPTI from 1, with 0 unknown (nsys's 7).
static uint8_t prof_mem_kind(unsigned cupti_kind) {
    return cupti_kind >= 1 && cupti_kind <= 7 ? (uint8_t)(cupti_kind - 1) : 7;
}

// Session time of a CUPTI timestamp.
static int64_t prof_time(const struct prof_conv *c, uint64_t t) { return (int64_t)(t - c->t0); }

// Add one CUPTI activity record (CUDA 13 layouts) to `d`. Records of other kinds are ignored;
// records without timestamps are counted in d->untimed and dropped.
static void prof_add_activity(struct lwb_prof_data *d, struct prof_conv *c,
                              const CUpti_Activity *rec) {
    switch (rec->kind) {
    case CUPTI_ACTIVITY_KIND_KERNEL:
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const CUpti_ActivityKernel10 *r = (const CUpti_ActivityKernel10 *)rec;
        if (!r->start && !r->end) {
            d->untimed++;
            return;
        }
        struct lwb_prof_kernel k = {
            .start = prof_time(c, r->start), .end = prof_time(c, r->end), .grid_id = r->gridId,
            .graph_node = r->graphNodeId, .local_total = r->localMemoryTotal_v2,
            .device = r->deviceId, .context = r->contextId, .stream = r->streamId,
            .correlation = r->correlationId,
            .grid = {r->gridX, r->gridY, r->gridZ}, .block = {r->blockX, r->blockY, r->blockZ},
            .static_smem = r->staticSharedMemory, .dynamic_smem = r->dynamicSharedMemory,
            .local_per_thread = r->localMemoryPerThread, .smem_executed = r->sharedMemoryExecuted,
            .regs = r->registersPerThread,
            .launch_type = r->launchType <= CUPTI_ACTIVITY_LAUNCH_TYPE_COOPERATIVE_MULTI_DEVICE
                               ? (uint8_t)(r->launchType + 1) : 0,
            .cache_config = r->cacheConfig.config.executed,
            .smem_limit_config = r->shmemLimitConfig == CUPTI_FUNC_SHMEM_LIMIT_OPTIN,
        };
        if (!k.local_total) k.local_total = r->localMemoryTotal;
        const char *name = r->name;
        bool found = false;
        uint64_t key = (uint64_t)(uintptr_t)(name ? name : "");
        uint32_t *slot = prof_idmap_slot(&c->kernel_names, key, &found);
        if (!found) {
            __typeof__(*c->knames) kn;
            prof_kernel_names(d, name, &kn.dem, &kn.shrt, &kn.mang);
            LWB_PUSH(c->knames, c->nknames, c->capknames, kn);
            *slot = (uint32_t)c->nknames;
        }
        k.demangled = c->knames[*slot - 1].dem;
        k.short_name = c->knames[*slot - 1].shrt;
        k.mangled = c->knames[*slot - 1].mang;
        LWB_PUSH(d->kernels, d->nkernels, d->capkernels, k);
        return;
    }
    case CUPTI_ACTIVITY_KIND_DRIVER:
    case CUPTI_ACTIVITY_KIND_RUNTIME: {
        const CUpti_ActivityAPI *r = (const CUpti_ActivityAPI *)rec;
        if (!r->start && !r->end) {
            d->untimed++;
            return;
        }
        bool driver = rec->kind == CUPTI_ACTIVITY_KIND_DRIVER, found = false;
        uint64_t key = ((uint64_t)driver << 32 | r->cbid) + 1;
        uint32_t *slot = prof_idmap_slot(&c->api_names, key, &found);
        if (!found) *slot = prof_intern(d, c->api_name ? c->api_name(driver, r->cbid) : NULL);
        struct lwb_prof_api a = {.start = prof_time(c, r->start), .end = prof_time(c, r->end),
                                 .tid = r->threadId, .correlation = r->correlationId,
                                 .name = *slot, .ret = r->returnValue, .driver = driver};
        LWB_PUSH(d->apis, d->napis, d->capapis, a);
        return;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const CUpti_ActivityMemcpy6 *r = (const CUpti_ActivityMemcpy6 *)rec;
        if (!r->start && !r->end) {
            d->untimed++;
            return;
        }
        struct lwb_prof_copy m = {
            .start = prof_time(c, r->start), .end = prof_time(c, r->end), .bytes = r->bytes,
            .graph_node = r->graphNodeId, .count = r->copyCount ? r->copyCount : 1,
            .device = r->deviceId, .context = r->contextId, .stream = r->streamId,
            .correlation = r->correlationId, .kind = r->copyKind,
            .src_kind = prof_mem_kind(r->srcKind), .dst_kind = prof_mem_kind(r->dstKind)};
        LWB_PUSH(d->copies, d->ncopies, d->capcopies, m);
        return;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
        const CUpti_ActivityMemset4 *r = (const CUpti_ActivityMemset4 *)rec;
        if (!r->start && !r->end) {
            d->untimed++;
            return;
        }
        struct lwb_prof_set s = {
            .start = prof_time(c, r->start), .end = prof_time(c, r->end), .bytes = r->bytes,
            .graph_node = r->graphNodeId, .device = r->deviceId, .context = r->contextId,
            .stream = r->streamId, .correlation = r->correlationId, .value = r->value,
            .mem_kind = prof_mem_kind(r->memoryKind)};
        LWB_PUSH(d->sets, d->nsets, d->capsets, s);
        return;
    }
    default:
        return;
    }
}

// A graph-node callback as it came: created (original 0) or cloned from `original`.
struct prof_node_event {
    uint64_t t;        // CUPTI clock
    uint32_t tid;
    uint8_t cloned;    // 1: GRAPHNODE_CLONED, 0: GRAPHNODE_CREATED
    uint64_t id, original;
};

static int prof_node_event_cmp(const void *a, const void *b) {
    const struct prof_node_event *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    if (x->cloned != y->cloned) return x->cloned - y->cloned; // creation first
    return x->t < y->t ? -1 : x->t > y->t;
}
static int prof_node_cmp_time(const void *a, const void *b) {
    const struct lwb_prof_node *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

// One CUDA_GRAPH_NODE_EVENTS row per node id, in time order: a node that was cloned is
// described by its clone event (original set), any other by its creation. Sorts `ev` in place.
static void prof_nodes_resolve(struct lwb_prof_data *d, const struct prof_conv *c,
                               struct prof_node_event *ev, size_t n) {
    lwb_sort(ev, n, sizeof *ev, prof_node_event_cmp);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && ev[j + 1].id == ev[i].id) j++;
        const struct prof_node_event *e = &ev[j]; // a clone sorts after the creation
        struct lwb_prof_node g = {.t = prof_time(c, e->t), .tid = e->tid, .id = e->id,
                                  .original = e->cloned ? e->original : 0};
        LWB_PUSH(d->nodes, d->nnodes, d->capnodes, g);
        i = j + 1;
    }
    lwb_sort(d->nodes, d->nnodes, sizeof *d->nodes, prof_node_cmp_time);
}

// ---------------------------------------------------------------------------------------------
// The profiler

#define PROF_BUFFER_BYTES ((size_t)8 << 20)
#define PROF_PREFAULTED_BUFFERS 4

struct prof_buffer {
    uint8_t *p;
    size_t size, valid; // bytes
};

struct lwb_profiler {
    bool on;                 // profiling this run (false: under nsys, or CUPTI not ours)
    bool in_window;          // between profile_begin and profile_end
    int windows;             // activity windows so far
    CUpti_SubscriberHandle sub;
    struct prof_conv conv;   // t0 and the name caches
    struct lwb_prof_data data;
    char *path;              // written by profile_write
    pthread_mutex_t mu;      // guards the buffer lists, dropped and nodes (CUPTI threads use them)
    struct prof_buffer *done; // completed by CUPTI, not yet read
    size_t ndone, capdone;
    uint8_t **spare;         // zeroed, pre-faulted buffers for CUPTI to take
    size_t nspare, capspare;
    uint64_t dropped;
    int bad_buffers;         // buffers whose records ended early (an incomplete record)
    struct prof_node_event *nodes; // graph-node callbacks, in arrival order
    size_t nnodes, capnodes;
};

// CUPTI's buffer callbacks carry no user pointer.
static struct lwb_profiler *profile_current;

static void CUPTIAPI prof_buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    struct lwb_profiler *p = profile_current;
    uint8_t *b = NULL;
    if (p) {
        pthread_mutex_lock(&p->mu);
        if (p->nspare) b = p->spare[--p->nspare];
        pthread_mutex_unlock(&p->mu);
    }
    // Zeroed (we told CUPTI it need not clear it) and 8-byte aligned, as records require.
    if (!b) b = calloc(1, PROF_BUFFER_BYTES);
    *buffer = b;
    *size = b ? PROF_BUFFER_BYTES : 0;
    *max_records = 0;
}

static void CUPTIAPI prof_buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer,
                                           size_t size, size_t valid) {
    struct lwb_profiler *p = profile_current;
    size_t dropped = 0;
    if (lwb_cupti.cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped) != CUPTI_SUCCESS)
        dropped = 0;
    if (!p) {
        free(buffer);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->dropped += dropped;
    if (buffer && valid) {
        struct prof_buffer b = {buffer, size, valid};
        LWB_PUSH(p->done, p->ndone, p->capdone, b);
    } else {
        free(buffer);
    }
    pthread_mutex_unlock(&p->mu);
}

static void CUPTIAPI prof_callback(void *user, CUpti_CallbackDomain domain, CUpti_CallbackId cbid,
                                   const void *cbdata) {
    struct lwb_profiler *p = user;
    bool created = cbid == CUPTI_CBID_RESOURCE_GRAPHNODE_CREATED;
    bool cloned = cbid == CUPTI_CBID_RESOURCE_GRAPHNODE_CLONED;
    if (domain != CUPTI_CB_DOMAIN_RESOURCE || (!created && !cloned)) return;
    const CUpti_ResourceData *res = cbdata;
    const CUpti_GraphData *g = res ? res->resourceDescriptor : NULL;
    struct prof_node_event e = {.tid = lwb_gettid(), .cloned = cloned};
    if (!g || !g->node || lwb_cupti.cuptiGetGraphNodeId(g->node, &e.id) != CUPTI_SUCCESS) return;
    if (e.cloned && (!g->originalNode ||
                     lwb_cupti.cuptiGetGraphNodeId(g->originalNode, &e.original) != CUPTI_SUCCESS))
        e.cloned = 0; // a clone whose original we cannot name is a creation here
    lwb_cupti.cuptiGetTimestamp(&e.t);
    pthread_mutex_lock(&p->mu);
    LWB_PUSH(p->nodes, p->nnodes, p->capnodes, e);
    pthread_mutex_unlock(&p->mu);
}

static uint64_t prof_cupti_clock(void) {
    uint64_t t = 0;
    lwb_cupti.cuptiGetTimestamp(&t);
    return t;
}

static const char *prof_cupti_api_name(bool driver, uint32_t cbid) {
    const char *name = NULL;
    CUpti_CallbackDomain domain = driver ? CUPTI_CB_DOMAIN_DRIVER_API : CUPTI_CB_DOMAIN_RUNTIME_API;
    if (lwb_cupti.cuptiGetCallbackName(domain, cbid, &name) != CUPTI_SUCCESS)
        return NULL;
    return name;
}

static const CUpti_ActivityKind prof_kinds[] = {
    CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET,
    CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_ACTIVITY_KIND_RUNTIME,
};

static void prof_read_process_name(char *out, size_t n) {
    char *comm = lwb_read_file("/proc/self/comm", NULL);
    snprintf(out, n, "%s", comm ? comm : "lwb");
    free(comm);
    size_t k = strlen(out);
    while (k && out[k - 1] == '\n') out[--k] = 0;
}

// Start profiling this run: load CUPTI, subscribe to graph-node creation, start recording NVTX
// ranges. Call after device_open and before any CUDA graph is captured. Does nothing under
// Nsight Systems; warns and stays off when another tool holds CUPTI.
static void profile_init(struct lwb_profiler *p, const struct lwb_device *dev, int rank,
                         int world_size) {
    *p = (struct lwb_profiler){.mu = PTHREAD_MUTEX_INITIALIZER};
    if (profile_under_nsys()) return;
    if (profile_current) LWB_BUG("profile_init: a profiler is already running");
    cupti_load();
    if (lwb_cupti.version / 10000 != CUPTI_API_VERSION / 10000)
        lwb_fatal("CUPTI %s has API version %u, but lwb reads CUDA %d's activity records; set "
                  "LWB_CUPTI_PATH to CUDA %d's libcupti.so, or run with --no-profile",
                  lwb_cupti.dl.path, lwb_cupti.version, CUPTI_API_VERSION / 10000,
                  CUPTI_API_VERSION / 10000);
    // t = 0 on CUPTI's clock, and the wall clock then (read back to back).
    struct timespec ts;
    p->conv.t0 = prof_cupti_clock();
    clock_gettime(CLOCK_REALTIME, &ts);
    p->data.utc_epoch_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    CUptiResult r = lwb_cupti.cuptiSubscribe(&p->sub, prof_callback, p);
    if (r != CUPTI_SUCCESS) {
        lwb_warn("cannot use CUPTI (%s): another profiling tool may hold it; no built-in profile "
                 "is written (--no-profile turns it off quietly)",
                 cupti_errstr(r));
        return;
    }
    CUPTI_CHECK(lwb_cupti.cuptiEnableCallback(1, p->sub, CUPTI_CB_DOMAIN_RESOURCE,
                                              CUPTI_CBID_RESOURCE_GRAPHNODE_CREATED));
    CUPTI_CHECK(lwb_cupti.cuptiEnableCallback(1, p->sub, CUPTI_CB_DOMAIN_RESOURCE,
                                              CUPTI_CBID_RESOURCE_GRAPHNODE_CLONED));
    // API records carry OS thread ids (gettid), as NVTX ranges do, not pthread_self values.
    CUPTI_CHECK(lwb_cupti.cuptiSetThreadIdType(CUPTI_ACTIVITY_THREAD_ID_TYPE_SYSTEM));
    uint8_t zeroed = 1;
    size_t zsize = sizeof zeroed;
    CUPTI_CHECK(lwb_cupti.cuptiActivitySetAttribute(CUPTI_ACTIVITY_ATTR_ZEROED_OUT_ACTIVITY_BUFFER,
                                                    &zsize, &zeroed));
    CUPTI_CHECK(
        lwb_cupti.cuptiActivityRegisterCallbacks(prof_buffer_requested, prof_buffer_completed));
    profile_current = p;
    p->on = true;

    struct lwb_prof_data *d = &p->data;
    d->pid = (int)getpid();
    d->rank = rank;
    d->world_size = world_size;
    prof_read_process_name(d->process, sizeof d->process);
    d->gpu = (struct lwb_prof_gpu){
        .id = dev->ordinal, .sm_count = dev->sm_count, .cc_major = dev->cc_major,
        .cc_minor = dev->cc_minor, .l2_bytes = dev->l2_bytes, .smem_optin = dev->smem_optin,
        .total_mem = (int64_t)dev->total_mem, .clock_hz = (int64_t)dev->sm_clock_khz * 1000,
        .mem_bandwidth = (int64_t)dev->mem_clock_khz * 1000 * 2 * (dev->mem_bus_bits / 8)};
    snprintf(d->gpu.name, sizeof d->gpu.name, "%s", dev->name);
    prof_intern(d, NULL);
    p->conv.api_name = prof_cupti_api_name;
    nvtx_record_start(prof_cupti_clock);
}

// Open an activity window (the timed loop): kernels, copies, memsets and API calls from here
// to profile_end are recorded.
static void profile_begin(struct lwb_profiler *p) {
    if (!p->on) return;
    if (p->in_window) LWB_BUG("profile_begin: a window is already open");
    // Buffers CUPTI takes during the loop: allocated and touched now, not on its first record.
    pthread_mutex_lock(&p->mu);
    while (p->nspare < PROF_PREFAULTED_BUFFERS) {
        uint8_t *b = xmalloc(PROF_BUFFER_BYTES);
        memset(b, 0, PROF_BUFFER_BYTES);
        LWB_PUSH(p->spare, p->nspare, p->capspare, b);
    }
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < LWB_ARRAY_LEN(prof_kinds); i++)
        CUPTI_CHECK(lwb_cupti.cuptiActivityEnable(prof_kinds[i]));
    p->in_window = true;
    p->windows++;
}

// Close the window: wait for the device, stop activity, collect and convert its records.
static void profile_end(struct lwb_profiler *p) {
    if (!p->on || !p->in_window) return;
    CU_CHECK(lwb_cu.cuCtxSynchronize());
    for (size_t i = 0; i < LWB_ARRAY_LEN(prof_kinds); i++)
        CUPTI_CHECK(lwb_cupti.cuptiActivityDisable(prof_kinds[i]));
    CUPTI_CHECK(lwb_cupti.cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED));
    p->in_window = false;
    pthread_mutex_lock(&p->mu);
    struct prof_buffer *done = p->done;
    size_t ndone = p->ndone;
    p->done = NULL, p->ndone = p->capdone = 0;
    p->data.dropped = p->dropped;
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < ndone; i++) {
        CUpti_Activity *rec = NULL;
        CUptiResult rc;
        while ((rc = lwb_cupti.cuptiActivityGetNextRecord(done[i].p, done[i].valid, &rec)) ==
               CUPTI_SUCCESS)
            prof_add_activity(&p->data, &p->conv, rec);
        if (rc != CUPTI_ERROR_MAX_LIMIT_REACHED) p->bad_buffers++;
        free(done[i].p);
    }
    free(done);
}

// Stop the NVTX recorder and add its ranges and threads to `d` (which then owns the texts).
static void prof_add_recorded(struct lwb_prof_data *d, const struct prof_conv *c) {
    struct lwb_nvtx_range *ranges;
    struct lwb_nvtx_thread *threads;
    size_t nranges, nthreads;
    char *pool;
    nvtx_record_take(&ranges, &nranges, &pool, &threads, &nthreads);
    for (size_t i = 0; i < nranges; i++) {
        struct lwb_prof_range r = {.start = prof_time(c, ranges[i].start),
                                   .end = ranges[i].end ? prof_time(c, ranges[i].end) : -1,
                                   .tid = ranges[i].tid, .text = ranges[i].text};
        LWB_PUSH(d->ranges, d->nranges, d->capranges, r);
    }
    for (size_t i = 0; i < nthreads; i++) {
        struct lwb_prof_thread th = {.tid = threads[i].tid};
        memcpy(th.name, threads[i].name, sizeof th.name);
        LWB_PUSH(d->threads, d->nthreads, d->capthreads, th);
    }
    free(ranges), free(threads);
    if (pool) {
        if (d->range_pool) LWB_BUG("profile: NVTX ranges added twice");
        d->range_pool = pool;
    }
}

// Name the threads that own records but did not record NVTX ranges (from /proc, when alive).
static void prof_name_threads(struct lwb_prof_data *d) {
    for (size_t i = 0; i < d->napis + d->nnodes; i++) {
        uint32_t tid = i < d->napis ? d->apis[i].tid : d->nodes[i - d->napis].tid;
        bool known = false;
        for (size_t k = 0; k < d->nthreads && !known; k++) known = d->threads[k].tid == tid;
        if (known) continue;
        struct lwb_prof_thread th = {.tid = tid};
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%u/comm", tid);
        char *comm = lwb_read_file(path, NULL);
        snprintf(th.name, sizeof th.name, "%s", comm ? comm : "");
        free(comm);
        size_t k = strlen(th.name);
        while (k && th.name[k - 1] == '\n') th.name[--k] = 0;
        LWB_PUSH(d->threads, d->nthreads, d->capthreads, th);
    }
}

// Stop recording and write <dir>/report_np<N>_rank<R>.sqlite (creating dir). Returns the path
// (owned by the profiler), or NULL when the profiler is off. A write failure is fatal.
static const char *profile_write(struct lwb_profiler *p, const char *dir) {
    if (!p->on) return NULL;
    profile_end(p);
    struct lwb_prof_data *d = &p->data;
    prof_add_recorded(d, &p->conv);
    pthread_mutex_lock(&p->mu);
    prof_nodes_resolve(d, &p->conv, p->nodes, p->nnodes);
    pthread_mutex_unlock(&p->mu);
    prof_name_threads(d);

    if (lwb_mkdirs(dir) != 0)
        lwb_fatal("cannot create the profile folder %s: %s", dir, strerror(errno));
    free(p->path);
    p->path = profile_path(dir, d->world_size, d->rank);
    char err[PATH_MAX + 256];
    if (prof_write_sqlite(d, p->path, err, sizeof err) != 0)
        lwb_fatal("cannot write the profile %s: %s", p->path, err);
    if (d->dropped)
        lwb_warn("%s misses %" PRIu64 " activity records that CUPTI dropped (out of buffer space)",
                 p->path, d->dropped);
    if (p->bad_buffers)
        lwb_warn("%s may miss activity records: %d CUPTI buffer%s held an incomplete record",
                 p->path, p->bad_buffers, p->bad_buffers == 1 ? "" : "s");
    if (d->untimed)
        lwb_warn("%s misses %" PRIu64 " activity records that CUPTI could not time", p->path,
                 d->untimed);
    return p->path;
}

// Unsubscribe and free everything. The profiler is off afterwards; profile_init starts anew.
static void profile_free(struct lwb_profiler *p) {
    if (p->on) {
        if (p->in_window) {
            for (size_t i = 0; i < LWB_ARRAY_LEN(prof_kinds); i++)
                lwb_cupti.cuptiActivityDisable(prof_kinds[i]);
        }
        lwb_cupti.cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
        lwb_cupti.cuptiUnsubscribe(p->sub);
        // Whatever the recorder holds when profile_write did not take it.
        struct lwb_nvtx_range *ranges;
        struct lwb_nvtx_thread *threads;
        size_t nranges, nthreads;
        char *pool;
        nvtx_record_take(&ranges, &nranges, &pool, &threads, &nthreads);
        free(ranges), free(pool), free(threads);
        pthread_mutex_lock(&p->mu);
        profile_current = NULL;
        pthread_mutex_unlock(&p->mu);
    }
    for (size_t i = 0; i < p->ndone; i++) free(p->done[i].p);
    for (size_t i = 0; i < p->nspare; i++) free(p->spare[i]);
    free(p->done), free(p->spare), free(p->nodes), free(p->path);
    prof_conv_free(&p->conv);
    prof_data_free(&p->data);
    *p = (struct lwb_profiler){.mu = PTHREAD_MUTEX_INITIALIZER};
}

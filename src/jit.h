// jit.h: kernel specialisation, compilation through NVRTC, the on-disk cubin cache, loading.
//
// Defines: struct lwb_kreq (a kernel request: template family + named constants + entry points;
// after jit_build it holds the module and functions), struct lwb_jit (one JIT session: target,
// cache root, switches, counters), jit_init, jit_source, jit_key, jit_build (look up, compile
// the misses in parallel, install, load), jit_summary.
//
// A request's source is: a comment naming it, one `#define LWB_NAME value` per constant,
// kernels/prelude.cu.in, then kernels/<family>.cu.in. The cache entry for it is
//   <cache root>/<label>.<32 hex digits>/{kernel.cu, kernel.cubin, kernel.log, meta.txt}
// where the digits hash the full source, the NVRTC options, the NVRTC version, the target and
// lwb's version. Entries are built in a private temporary folder and renamed into place, so
// ranks compiling the same kernel at once never see a partial entry; meta.txt records the
// cubin's size and hash, and an entry that does not match is rebuilt, not trusted.
//
// Does not: choose constants or tiles (each family's <family>_choose_config does), or launch.
// Tested by test/test_jit.c: source specialisation, keys, install, corrupt-entry recovery,
// concurrent install from two processes, and compilation of every template for sm_90a.
#pragma once
#include <dirent.h>
#include <pthread.h>

#define LWB_JIT_MAX_CONSTS 48
#define LWB_JIT_MAX_ENTRIES 12

struct lwb_kconst {
    const char *name; // without the LWB_ prefix: "HIDDEN" becomes LWB_HIDDEN
    long long value;
};

struct lwb_kreq {
    const char *family; // template: kernels/<family>.cu.in (NULL: `text` is the template)
    const char *text;   // a template given as text (checks compile their reference kernels so)
    char label[96];     // readable part of the cache folder name ("rmsnorm_h7168")
    struct lwb_kconst consts[LWB_JIT_MAX_CONSTS];
    int nconsts;
    const char *entries[LWB_JIT_MAX_ENTRIES]; // extern "C" names to resolve
    int nentries;
    // Filled by jit_build:
    char key[33];                         // the cache key
    char *source;                         // full source text
    char *cubin;                          // compiled code
    size_t cubin_size;
    char *log;                            // NVRTC's log (warnings; resource usage when verbose)
    bool cached;                          // found in the cache
    const struct lwb_kreq *alias;         // an identical request earlier in the same batch
    long done;                            // or built earlier in this process: index in jit->done, or -1
    CUmodule module;                      // loaded (when a device is open)
    CUfunction funcs[LWB_JIT_MAX_ENTRIES]; // parallel to entries
};

struct lwb_jit {
    char arch[16];           // "sm_90a"
    char root[PATH_MAX - 512]; // cache root (room left for entry names)
    bool no_cache;           // LWB_JIT_NO_CACHE: compile everything, touch no files
    bool debug;              // LWB_JIT_DEBUG: print each source and its options
    bool lineinfo;           // LWB_JIT_LINEINFO: -lineinfo, for profilers
    bool verbose_ptxas;      // LWB_JIT_VERBOSE_PTXAS: keep ptxas's register/spill report in the log
    bool load;               // load modules after building (a device is open)
    int threads;             // parallel compilations
    // Counters for the summary line:
    int nkernels, ncached, ncompiled;
    double compile_s;        // wall time spent compiling
    // Kernels already built in this process (copies: requests may be short-lived), so a
    // repeated request costs nothing.
    struct jit_done *done;
    size_t ndone, capdone;
};

struct jit_done {
    char key[33];
    const char *entries[LWB_JIT_MAX_ENTRIES];
    int nentries;
    CUmodule module;
    CUfunction funcs[LWB_JIT_MAX_ENTRIES];
    char *cubin;
    size_t cubin_size;
};

// Add a constant (by value) to a request.
static void kreq_set(struct lwb_kreq *r, const char *name, long long value) {
    for (int i = 0; i < r->nconsts; i++)
        if (!strcmp(r->consts[i].name, name)) {
            r->consts[i].value = value;
            return;
        }
    if (r->nconsts == LWB_JIT_MAX_CONSTS) LWB_BUG("too many constants for %s", r->family);
    r->consts[r->nconsts++] = (struct lwb_kconst){name, value};
}
static void kreq_entry(struct lwb_kreq *r, const char *name) {
    if (r->nentries == LWB_JIT_MAX_ENTRIES) LWB_BUG("too many entry points for %s", r->family);
    r->entries[r->nentries++] = name;
}
static CUfunction kreq_func(const struct lwb_kreq *r, const char *name) {
    for (int i = 0; i < r->nentries; i++)
        if (!strcmp(r->entries[i], name)) return r->funcs[i];
    LWB_BUG("kernel %s has no entry point %s", r->family, name);
}

// ---------------------------------------------------------------------------------------------
// Templates

static const struct lwb_embedded *embedded_find(const char *path) {
    for (size_t i = 0; i < LWB_EMBEDDED_COUNT; i++)
        if (!strcmp(lwb_embedded_files[i].path, path)) return &lwb_embedded_files[i];
    return NULL;
}

static const char *template_text(const char *family) {
    char path[256];
    snprintf(path, sizeof path, "kernels/%s.cu.in", family);
    const struct lwb_embedded *e = embedded_find(path);
    if (!e) LWB_BUG("no kernel template %s", path);
    return e->data;
}

// The constants a template declares in its NOTES block: lines "//   LWB_NAME: description".
// Returns the count; names (without the LWB_ prefix) go to `names` (each malloc'd).
static int template_constants(const char *text, char **names, int max, char **descs) {
    const char *notes = strstr(text, "// NOTES:");
    int n = 0;
    if (!notes) return 0;
    for (const char *line = notes; line && str_starts(line, "//"); ) {
        const char *p = line + 2;
        while (*p == ' ') p++;
        if (str_starts(p, "LWB_")) {
            const char *name = p + 4, *end = name;
            while (isalnum((unsigned char)*end) || *end == '_') end++;
            if (*end == ':' && n < max) {
                names[n] = xstrndup(name, (size_t)(end - name));
                if (descs) {
                    const char *d = end + 1;
                    while (*d == ' ') d++;
                    const char *e = strchr(d, '\n');
                    descs[n] = xstrndup(d, e ? (size_t)(e - d) : strlen(d));
                }
                n++;
            }
        }
        line = strchr(line, '\n');
        if (line) line++;
    }
    return n;
}

// Check the request names exactly the constants its template declares.
static void kreq_validate(const struct lwb_kreq *r) {
    if (!r->family) return;
    char *names[LWB_JIT_MAX_CONSTS * 2];
    int n = template_constants(template_text(r->family), names, (int)LWB_ARRAY_LEN(names), NULL);
    for (int i = 0; i < n; i++) {
        bool found = false;
        for (int k = 0; k < r->nconsts; k++) found |= !strcmp(r->consts[k].name, names[i]);
        if (!found) LWB_BUG("kernel %s (%s): constant LWB_%s not set", r->family, r->label, names[i]);
    }
    for (int k = 0; k < r->nconsts; k++) {
        bool found = false;
        for (int i = 0; i < n; i++) found |= !strcmp(r->consts[k].name, names[i]);
        if (!found)
            LWB_BUG("kernel %s (%s): constant LWB_%s is not in the template's NOTES", r->family,
                    r->label, r->consts[k].name);
    }
    for (int i = 0; i < n; i++) free(names[i]);
}

// The full source of a request.
static char *jit_source(const struct lwb_kreq *r) {
    struct lwb_str s = {0};
    str_printf(&s, "// lwb %s kernel %s (%s)\n", LWB_VERSION, r->family ? r->family : "-", r->label);
    for (int i = 0; i < r->nconsts; i++)
        str_printf(&s, "#define LWB_%s %lld\n", r->consts[i].name, r->consts[i].value);
    const struct lwb_embedded *prelude = embedded_find("kernels/prelude.cu.in");
    if (!prelude) LWB_BUG("kernels/prelude.cu.in is not embedded");
    str_puts(&s, "#line 1 \"prelude.cu\"\n");
    str_puts(&s, prelude->data);
    str_printf(&s, "#line 1 \"%s.cu\"\n", r->family ? r->family : r->label);
    str_puts(&s, r->family ? template_text(r->family) : r->text);
    return str_take(&s);
}

// NVRTC options for a session; `out` holds up to 8 entries.
static int jit_options(const struct lwb_jit *j, const char **out, char *archbuf, size_t n) {
    int k = 0;
    snprintf(archbuf, n, "--gpu-architecture=%s", j->arch);
    out[k++] = archbuf;
    out[k++] = "--std=c++17";
    out[k++] = "--device-as-default-execution-space";
    if (j->lineinfo) out[k++] = "--generate-line-info";
    if (j->verbose_ptxas) out[k++] = "--ptxas-options=-v";
    return k;
}

static void jit_key(const struct lwb_jit *j, const char *source, char out[33]) {
    const char *opts[8];
    char archbuf[64];
    int nopts = jit_options(j, opts, archbuf, sizeof archbuf);
    struct lwb_hash h = lwb_hash_init();
    lwb_hash_str(&h, source);
    for (int i = 0; i < nopts; i++) lwb_hash_str(&h, opts[i]);
    char ver[64];
    snprintf(ver, sizeof ver, "nvrtc %d.%d", lwb_nvrtc.major, lwb_nvrtc.minor);
    lwb_hash_str(&h, ver);
    lwb_hash_str(&h, j->arch);
    lwb_hash_str(&h, LWB_VERSION);
    lwb_hash_hex(h, out);
}

// ---------------------------------------------------------------------------------------------
// The cache

static void jit_default_root(char *out, size_t n) {
    const char *dir = getenv("LWB_CACHE_DIR");
    if (dir && *dir) {
        snprintf(out, n, "%s", dir);
        return;
    }
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && *xdg) {
        snprintf(out, n, "%s/lwb", xdg);
        return;
    }
    const char *home = getenv("HOME");
    snprintf(out, n, "%s/.cache/lwb", home && *home ? home : "/tmp");
}

static void jit_init(struct lwb_jit *j, const char *arch, bool load) {
    *j = (struct lwb_jit){.load = load};
    snprintf(j->arch, sizeof j->arch, "%s", arch);
    jit_default_root(j->root, sizeof j->root);
    j->no_cache = lwb_env_flag("LWB_JIT_NO_CACHE");
    j->debug = lwb_env_flag("LWB_JIT_DEBUG");
    j->lineinfo = lwb_env_flag("LWB_JIT_LINEINFO");
    j->verbose_ptxas = lwb_env_flag("LWB_JIT_VERBOSE_PTXAS");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    j->threads = (int)LWB_MAX(1, LWB_MIN(cpus, 16));
    nvrtc_load();
}

static void entry_dir(const struct lwb_jit *j, const struct lwb_kreq *r, char *out, size_t n) {
    snprintf(out, n, "%s/%s.%s", j->root, r->label, r->key);
}

static void cubin_digest(const char *cubin, size_t size, char out[33]) {
    struct lwb_hash h = lwb_hash_init();
    lwb_hash_update(&h, cubin, size);
    lwb_hash_hex(h, out);
}

// Remove a flat folder (cache entries hold only files).
static void remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = lwb_path_join(dir, e->d_name);
            unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

// Try the cache. true: r->cubin holds a verified cubin. A present but inconsistent entry is
// moved aside and removed (another process may be reading it, so it is renamed first).
static bool cache_lookup(const struct lwb_jit *j, struct lwb_kreq *r) {
    char dir[PATH_MAX];
    entry_dir(j, r, dir, sizeof dir);
    char *meta_path = lwb_path_join(dir, "meta.txt");
    char *cubin_path = lwb_path_join(dir, "kernel.cubin");
    size_t meta_size = 0, cubin_size = 0;
    char *meta = lwb_read_file(meta_path, &meta_size);
    char *cubin = meta ? lwb_read_file(cubin_path, &cubin_size) : NULL;
    bool ok = false;
    if (meta && cubin) {
        char digest[33], want[128];
        cubin_digest(cubin, cubin_size, digest);
        snprintf(want, sizeof want, "cubin %zu %s\n", cubin_size, digest);
        ok = strstr(meta, want) != NULL;
    }
    if (ok) {
        r->cubin = cubin;
        r->cubin_size = cubin_size;
        char *log_path = lwb_path_join(dir, "kernel.log");
        r->log = lwb_read_file(log_path, NULL);
        free(log_path);
    } else {
        free(cubin);
        struct stat st;
        if (stat(dir, &st) == 0) {
            lwb_warn("jit: cache entry %s is incomplete or corrupt; rebuilding it", dir);
            char aside[PATH_MAX];
            snprintf(aside, sizeof aside, "%s/.bad-%d-%s", j->root, (int)getpid(), r->key);
            if (rename(dir, aside) == 0) remove_flat_dir(aside);
        }
    }
    free(meta);
    free(meta_path);
    free(cubin_path);
    return ok;
}

static int write_in(const char *dir, const char *name, const void *data, size_t size) {
    char *p = lwb_path_join(dir, name);
    unlink(p); // a file or link left there is replaced, never written through
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    free(p);
    if (fd < 0) return -1;
    int rc = lwb_write_all(fd, data, size);
    if (rc == 0) rc = fsync(fd);
    close(fd);
    return rc;
}

// Install a compiled request: build the entry in a private folder, then rename it into place.
// Losing a race to another process is fine: its entry is identical.
static void cache_install(const struct lwb_jit *j, const struct lwb_kreq *r) {
    if (lwb_mkdirs(j->root) != 0) {
        lwb_warn("jit: cannot create the cache folder %s (%s); kernels will be compiled again next "
                 "time (set LWB_CACHE_DIR to a writable folder)",
                 j->root, strerror(errno));
        return;
    }
    static int counter;
    char tmp[PATH_MAX], dir[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.tmp-%d-%lx-%d", j->root, (int)getpid(),
             (unsigned long)pthread_self(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    entry_dir(j, r, dir, sizeof dir);
    if (mkdir(tmp, 0755) != 0) {
        lwb_warn("jit: cannot write to %s (%s)", j->root, strerror(errno));
        return;
    }
    char digest[33];
    cubin_digest(r->cubin, r->cubin_size, digest);
    struct lwb_str meta = {0};
    const char *opts[8];
    char archbuf[64];
    int nopts = jit_options(j, opts, archbuf, sizeof archbuf);
    str_printf(&meta, "%s", r->family ? r->family : r->label);
    for (int i = 0; i < r->nconsts; i++)
        str_printf(&meta, " %s=%lld", r->consts[i].name, r->consts[i].value);
    str_printf(&meta, "\n%s nvrtc-%d.%d lwb-%s\noptions", j->arch, lwb_nvrtc.major, lwb_nvrtc.minor,
               LWB_VERSION);
    for (int i = 0; i < nopts; i++) str_printf(&meta, " %s", opts[i]);
    str_printf(&meta, "\ncubin %zu %s\n", r->cubin_size, digest);
    const char *log = r->log ? r->log : "";
    bool ok = write_in(tmp, "kernel.cu", r->source, strlen(r->source)) == 0 &&
              write_in(tmp, "kernel.cubin", r->cubin, r->cubin_size) == 0 &&
              write_in(tmp, "kernel.log", log, strlen(log)) == 0 &&
              write_in(tmp, "meta.txt", meta.s, meta.len) == 0; // last: its presence means complete
    str_free(&meta);
    if (!ok || rename(tmp, dir) != 0) {
        if (ok && errno != ENOTEMPTY && errno != EEXIST)
            lwb_warn("jit: cannot install %s (%s)", dir, strerror(errno));
        remove_flat_dir(tmp);
    }
}

// ---------------------------------------------------------------------------------------------
// Compilation

struct jit_work {
    const struct lwb_jit *j;
    struct lwb_kreq **reqs;
    int n;
    int next;       // next request to take (atomic)
    char *failure;  // first failure message (set once)
};

static int first_lines(const char *text, int max_lines, char *out, size_t n) {
    size_t k = 0;
    int lines = 0;
    for (const char *p = text; *p && k + 1 < n && lines < max_lines; p++) {
        out[k++] = *p;
        if (*p == '\n') lines++;
    }
    out[k] = 0;
    return lines;
}

// Compile one request. Returns NULL, or a malloc'd message describing the failure.
static char *jit_compile_one(const struct lwb_jit *j, struct lwb_kreq *r) {
    const char *opts[8];
    char archbuf[64];
    int nopts = jit_options(j, opts, archbuf, sizeof archbuf);
    nvrtcProgram prog;
    char name[128];
    snprintf(name, sizeof name, "%s.cu", r->label);
    nvrtcResult rc = lwb_nvrtc.nvrtcCreateProgram(&prog, r->source, name, 0, NULL, NULL);
    if (rc != NVRTC_SUCCESS) {
        struct lwb_str m = {0};
        str_printf(&m, "NVRTC could not create a program for %s: %s", r->label, nvrtc_errstr(rc));
        return str_take(&m);
    }
    rc = lwb_nvrtc.nvrtcCompileProgram(prog, nopts, opts);
    size_t log_size = 0;
    lwb_nvrtc.nvrtcGetProgramLogSize(prog, &log_size);
    r->log = xcalloc(log_size + 1, 1);
    if (log_size) lwb_nvrtc.nvrtcGetProgramLog(prog, r->log);
    if (rc != NVRTC_SUCCESS) {
        // Keep the source and log where the user can read them.
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/failed-%s.%s", j->root, r->label, r->key);
        bool saved = lwb_mkdirs(dir) == 0 && write_in(dir, "kernel.cu", r->source, strlen(r->source)) == 0 &&
                     write_in(dir, "kernel.log", r->log, strlen(r->log)) == 0;
        char head[1200];
        first_lines(r->log, 8, head, sizeof head);
        struct lwb_str m = {0};
        str_printf(&m, "NVRTC %d.%d failed to compile kernel %s for %s (%s)%s%s\n%s", lwb_nvrtc.major,
                   lwb_nvrtc.minor, r->label, j->arch, nvrtc_errstr(rc),
                   saved ? "; source and log in " : "", saved ? dir : "", head);
        lwb_nvrtc.nvrtcDestroyProgram(&prog);
        return str_take(&m);
    }
    NVRTC_CHECK(lwb_nvrtc.nvrtcGetCUBINSize(prog, &r->cubin_size));
    r->cubin = xmalloc(r->cubin_size);
    NVRTC_CHECK(lwb_nvrtc.nvrtcGetCUBIN(prog, r->cubin));
    lwb_nvrtc.nvrtcDestroyProgram(&prog);
    return NULL;
}

static void *jit_worker(void *arg) {
    struct jit_work *w = arg;
    for (;;) {
        int i = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED);
        if (i >= w->n) break;
        char *err = jit_compile_one(w->j, w->reqs[i]);
        if (err) {
            char *expected = NULL;
            if (!__atomic_compare_exchange_n(&w->failure, &expected, err, false, __ATOMIC_SEQ_CST,
                                             __ATOMIC_SEQ_CST))
                free(err);
            continue;
        }
        if (!w->j->no_cache) cache_install(w->j, w->reqs[i]);
    }
    return NULL;
}

static void jit_load(struct lwb_kreq *r) {
    CUresult rc = lwb_cu.cuModuleLoadData(&r->module, r->cubin);
    if (rc != CUDA_SUCCESS)
        lwb_fatal("cannot load kernel %s (%s); if the cached cubin is stale, remove its cache "
                  "entry (%s) or set LWB_JIT_NO_CACHE=1",
                  r->label, cu_errstr(rc), r->key);
    for (int i = 0; i < r->nentries; i++) {
        rc = lwb_cu.cuModuleGetFunction(&r->funcs[i], r->module, r->entries[i]);
        if (rc != CUDA_SUCCESS)
            LWB_BUG("kernel %s has no entry point %s (%s)", r->label, r->entries[i], cu_errstr(rc));
    }
}

// Same source (by key) and the same entry points.
static bool kreq_same_entries(const char *key, const char *const *entries, int n, const struct lwb_kreq *b) {
    if (strcmp(key, b->key) || n != b->nentries) return false;
    for (int i = 0; i < n; i++)
        if (strcmp(entries[i], b->entries[i])) return false;
    return true;
}

// Build every request: specialise, look up the cache, compile the misses on a thread pool,
// install, and load (when j->load). Exits with the compiler's log on failure.
static void jit_build(struct lwb_jit *j, struct lwb_kreq **reqs, int n) {
    struct lwb_kreq **miss = xcalloc((size_t)n, sizeof *miss);
    int nmiss = 0;
    for (int i = 0; i < n; i++) {
        struct lwb_kreq *r = reqs[i];
        kreq_validate(r);
        if (!r->label[0]) snprintf(r->label, sizeof r->label, "%s", r->family);
        free(r->source);
        r->source = jit_source(r);
        jit_key(j, r->source, r->key);
        // The same kernel already built in this process (or earlier in this batch): share it.
        r->alias = NULL;
        r->done = -1;
        for (size_t k = 0; k < j->ndone && r->done < 0; k++)
            if (kreq_same_entries(j->done[k].key, j->done[k].entries, j->done[k].nentries, r)) r->done = (long)k;
        for (int k = 0; k < i && r->done < 0 && !r->alias; k++)
            if (!reqs[k]->alias && reqs[k]->done < 0 &&
                kreq_same_entries(reqs[k]->key, reqs[k]->entries, reqs[k]->nentries, r))
                r->alias = reqs[k];
        if (r->alias || r->done >= 0) continue;
        if (j->debug) {
            const char *opts[8];
            char archbuf[64];
            int nopts = jit_options(j, opts, archbuf, sizeof archbuf);
            fprintf(stderr, "jit: ---- %s (key %s), options:", r->label, r->key);
            for (int k = 0; k < nopts; k++) fprintf(stderr, " %s", opts[k]);
            fprintf(stderr, "\n%s\njit: ---- end of %s\n", r->source, r->label);
        }
        j->nkernels++;
        r->cached = !j->no_cache && cache_lookup(j, r);
        if (r->cached) j->ncached++;
        else miss[nmiss++] = r;
    }
    if (nmiss) {
        double t0 = lwb_now();
        struct jit_work w = {.j = j, .reqs = miss, .n = nmiss};
        int nthreads = LWB_MIN(j->threads, nmiss);
        pthread_t tids[16];
        for (int t = 1; t < nthreads; t++)
            if (pthread_create(&tids[t], NULL, jit_worker, &w) != 0) nthreads = t;
        jit_worker(&w);
        for (int t = 1; t < nthreads; t++) pthread_join(tids[t], NULL);
        j->compile_s += lwb_now() - t0;
        j->ncompiled += nmiss;
        if (w.failure) lwb_fatal("%s", w.failure);
    }
    for (int i = 0; i < n; i++) {
        struct lwb_kreq *r = reqs[i];
        if (r->alias || r->done >= 0) continue;
        if (j->verbose_ptxas && r->log && *r->log) fprintf(stderr, "jit: %s:\n%s", r->label, r->log);
        if (j->load) jit_load(r);
        struct jit_done d = {.nentries = r->nentries, .module = r->module, .cubin_size = r->cubin_size};
        memcpy(d.key, r->key, sizeof d.key);
        memcpy(d.entries, r->entries, sizeof d.entries);
        memcpy(d.funcs, r->funcs, sizeof d.funcs);
        d.cubin = xmalloc(r->cubin_size);
        memcpy(d.cubin, r->cubin, r->cubin_size);
        LWB_PUSH(j->done, j->ndone, j->capdone, d);
    }
    for (int i = 0; i < n; i++) {
        struct lwb_kreq *r = reqs[i];
        if (!r->alias && r->done < 0) continue;
        const struct jit_done *d = r->done >= 0 ? &j->done[r->done] : NULL;
        const char *cubin = r->alias ? r->alias->cubin : d->cubin;
        size_t size = r->alias ? r->alias->cubin_size : d->cubin_size;
        free(r->cubin);
        r->cubin = xmalloc(size);
        memcpy(r->cubin, cubin, size);
        r->cubin_size = size;
        r->module = r->alias ? r->alias->module : d->module;
        memcpy(r->funcs, r->alias ? r->alias->funcs : d->funcs, sizeof r->funcs);
        r->cached = true;
        r->alias = NULL;
        r->done = -1;
    }
    free(miss);
}

static void jit_summary(const struct lwb_jit *j, FILE *f) {
    fprintf(f, "jit: %d kernel%s, %d cached, %d compiled in %.2f s\n", j->nkernels,
            j->nkernels == 1 ? "" : "s", j->ncached, j->ncompiled, j->compile_s);
}

static void kreq_free(struct lwb_kreq *r) {
    free(r->source), free(r->cubin), free(r->log);
    r->source = r->cubin = r->log = NULL;
}

// util.h: the process context, the three kinds of error, memory and string helpers, files,
// hashing and clocks.
//
// Defines: struct lwb_proc (the per-process context: identity for error messages), lwb_user_error
// (bad input, exit 2), lwb_fatal (runtime failure, exit 1), LWB_BUG (a defect in lwb),
// LWB_CHECK_GEN (the generic library-call check the per-library macros build on), x* allocators,
// struct lwb_str (growable string), file helpers (read whole, atomic write, mkdir -p), lwb_hash128,
// lwb_now (monotonic seconds), lwb_edit_distance (for "did you mean").
//
// Does not: print anything on success, or keep state beyond lwb_proc.
// Tested by test/test_util.c.
#pragma once
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define LWB_VERSION "0.1.0"

#define LWB_EXIT_OK 0
#define LWB_EXIT_FAILURE 1 // runtime failure: GPU, library, I/O, a failed check
#define LWB_EXIT_USAGE 2   // bad input: command line, config, model, profile
#define LWB_EXIT_BUG 3     // a defect in lwb

#define LWB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define LWB_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LWB_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LWB_CEIL_DIV(a, b) (((a) + (b) - 1) / (b))
#define LWB_PRINTF(f, a) __attribute__((format(printf, f, a)))

// ---------------------------------------------------------------------------------------------
// Process context

struct lwb_proc {
    int rank;        // this process's rank, 0 when alone
    int world_size;  // number of ranks, 1 when alone
    int device;      // CUDA device ordinal in use, -1 before one is opened
    char host[64];   // short host name, for messages
    const char *cmd; // the subcommand running ("run", "parse", ...), for messages
    // Cleanup hook run before a fatal exit (e.g. abort NCCL communicators so peers do not hang).
    void (*on_fatal)(void *);
    void *on_fatal_arg;
    // Called every ~100 ms by waits on device work (seconds waited, what is awaited): with a
    // communicator, it checks NCCL's asynchronous errors and the comm timeout, and exits on them.
    void (*wait_hook)(double waited_s, const char *what);
    double wait_floor_s; // waits on device work last at least this long before they give up
    // Run on every exit through an error (after on_fatal): remove half-written outputs.
    void (*on_exit_cleanup)(void);
};

static struct lwb_proc lwb_proc = {.world_size = 1, .device = -1};

static void lwb_proc_init(const char *cmd) {
    lwb_proc.cmd = cmd;
    if (gethostname(lwb_proc.host, sizeof lwb_proc.host) != 0)
        snprintf(lwb_proc.host, sizeof lwb_proc.host, "?");
    lwb_proc.host[sizeof lwb_proc.host - 1] = 0;
    char *dot = strchr(lwb_proc.host, '.');
    if (dot) *dot = 0;
}

// ---------------------------------------------------------------------------------------------
// Terminal text: whatever came from input (names, values, paths) is shown with its control
// characters escaped: \n, \r, \t, \x1b, and the C1 controls U+0080..U+009F as \u0080, so no
// input can move the cursor, recolour the terminal or split a message into several lines.

// Escape `s` (n bytes) into out (NUL-terminated, at most cap bytes; cut short with "..." when full).
static void lwb_escape_into(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        const char *rep = NULL;
        if (c == '\n') rep = "\\n";
        else if (c == '\r') rep = "\\r";
        else if (c == '\t') rep = "\\t";
        else if (c < 0x20 || c == 0x7f) snprintf(tmp, sizeof tmp, "\\x%02x", c), rep = tmp;
        else if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9f)
            snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned char)s[++i]), rep = tmp;
        size_t len = rep ? strlen(rep) : 1;
        if (o + len + 4 > cap) {
            if (cap >= 4) memcpy(out + o, "...", 4); // o <= cap - 4: the last step left room
            return;
        }
        if (rep) memcpy(out + o, rep, len);
        else out[o] = (char)c;
        o += len;
    }
    out[o] = 0;
}

// `s` escaped for the terminal, in one of 8 rotating per-thread buffers (valid until 8 more calls).
static const char *tesc(const char *s) {
    static __thread char *ring[8];
    static __thread size_t caps[8];
    static __thread int next;
    if (!s) return "(null)";
    size_t n = strlen(s);
    bool clean = true;
    for (size_t i = 0; i < n && clean; i++) {
        unsigned char c = (unsigned char)s[i];
        clean = c >= 0x20 && c != 0x7f && !(c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] <= 0x9f);
    }
    if (clean) return s;
    int k = next++ % 8;
    size_t need = n * 6 + 8;
    if (caps[k] < need) {
        free(ring[k]);
        ring[k] = malloc(need);
        if (!ring[k]) return "(out of memory)";
        caps[k] = need;
    }
    lwb_escape_into(s, n, ring[k], need);
    return ring[k];
}

// ---------------------------------------------------------------------------------------------
// Errors. User errors and runtime failures print one line prefixed "lwb: " (with the rank when
// there are several); bugs print where they happened and abort. Every message goes through the
// terminal escaper, so it stays one line whatever input it quotes.

static void lwb_vmessage(const char *fmt, va_list ap) {
    char buf[4096], esc[4096];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n') buf[--n] = 0;
    lwb_escape_into(buf, n, esc, sizeof esc);
    fflush(stdout);
    if (lwb_proc.world_size > 1)
        fprintf(stderr, "lwb[rank %d]: %s\n", lwb_proc.rank, esc);
    else
        fprintf(stderr, "lwb: %s\n", esc);
}

static void lwb_run_fatal_hook(void) {
    void (*hook)(void *) = lwb_proc.on_fatal;
    lwb_proc.on_fatal = NULL; // at most once, even if the hook fails
    if (hook) hook(lwb_proc.on_fatal_arg);
    void (*cleanup)(void) = lwb_proc.on_exit_cleanup;
    lwb_proc.on_exit_cleanup = NULL;
    if (cleanup) cleanup();
}

LWB_PRINTF(1, 2) __attribute__((noreturn)) static void lwb_user_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lwb_vmessage(fmt, ap);
    va_end(ap);
    lwb_run_fatal_hook();
    exit(LWB_EXIT_USAGE);
}

LWB_PRINTF(1, 2) __attribute__((noreturn)) static void lwb_fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lwb_vmessage(fmt, ap);
    va_end(ap);
    lwb_run_fatal_hook();
    exit(LWB_EXIT_FAILURE);
}

LWB_PRINTF(1, 2) static void lwb_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char buf[4096], esc[4096];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lwb_escape_into(buf, strlen(buf), esc, sizeof esc);
    fflush(stdout);
    if (lwb_proc.world_size > 1)
        fprintf(stderr, "lwb[rank %d]: warning: %s\n", lwb_proc.rank, esc);
    else
        fprintf(stderr, "lwb: warning: %s\n", esc);
}

LWB_PRINTF(3, 4) __attribute__((noreturn)) static void lwb_bug_at(const char *file, int line,
                                                                 const char *fmt, ...) {
    char buf[2048], esc[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lwb_escape_into(buf, strlen(buf), esc, sizeof esc);
    fflush(stdout);
    fprintf(stderr, "lwb: BUG at %s:%d: %s (please report this; it is not a problem with your input)\n",
            file, line, esc);
    void (*cleanup)(void) = lwb_proc.on_exit_cleanup;
    lwb_proc.on_exit_cleanup = NULL;
    if (cleanup) cleanup();
    exit(LWB_EXIT_BUG);
}
#define LWB_BUG(...) lwb_bug_at(__FILE__, __LINE__, __VA_ARGS__)
#define LWB_ASSERT(c)                                                                              \
    do {                                                                                           \
        if (!(c)) LWB_BUG("assertion failed: %s", #c);                                             \
    } while (0)

// The generic library check. `ok` is the success test on the result `r`; `errstr` turns r into
// the library's own message. Prints rank, host, device, file:line and the call, then exits 1.
__attribute__((noreturn)) static void lwb_check_failed(const char *lib, const char *call,
                                                      const char *file, int line, long long code,
                                                      const char *msg) {
    fflush(stdout);
    char esc[1024];
    lwb_escape_into(msg ? msg : "no message", strlen(msg ? msg : "no message"), esc, sizeof esc);
    fprintf(stderr, "lwb: %s error %lld (%s) in %s at %s:%d, rank %d on %s, device %d\n", lib, code, esc, call,
            file, line, lwb_proc.rank, lwb_proc.host, lwb_proc.device);
    lwb_run_fatal_hook();
    exit(LWB_EXIT_FAILURE);
}
#define LWB_CHECK_GEN(lib, call, ok, errstr)                                                       \
    do {                                                                                           \
        __typeof__(call) r_ = (call);                                                              \
        if (!(ok)) lwb_check_failed(lib, #call, __FILE__, __LINE__, (long long)r_, errstr(r_));    \
    } while (0)

// ---------------------------------------------------------------------------------------------
// Memory

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) lwb_fatal("out of host memory (asked for %zu bytes)", n);
    return p;
}
static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) lwb_fatal("out of host memory (asked for %zu x %zu bytes)", n, size);
    return p;
}
static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) lwb_fatal("out of host memory (asked for %zu bytes)", n);
    return p;
}
static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}
static char *xstrndup(const char *s, size_t n) {
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}
// Grow a dynamic array `*p` of `*cap` items of `size` bytes to hold at least `need` items.
static void lwb_grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    *p = xrealloc(*p, c * size);
    *cap = c;
}
#define LWB_PUSH(arr, n, cap, item)                                                                \
    do {                                                                                           \
        lwb_grow((void **)&(arr), &(cap), (n) + 1, sizeof *(arr));                                 \
        (arr)[(n)++] = (item);                                                                     \
    } while (0)

// qsort that takes an empty (NULL) array: qsort's arguments must not be NULL even for 0 items.
static void lwb_sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *)) {
    if (n > 1) qsort(base, n, size, cmp);
}

// ---------------------------------------------------------------------------------------------
// Strings

struct lwb_str {
    char *s;    // NUL-terminated, never NULL once anything was appended
    size_t len; // bytes before the NUL
    size_t cap; // allocated bytes
};

LWB_PRINTF(2, 3) static void str_printf(struct lwb_str *b, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) LWB_BUG("bad format %s", fmt);
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        lwb_grow((void **)&b->s, &b->cap, b->len + (size_t)n + 1, 1);
    }
}
static void str_append(struct lwb_str *b, const char *s, size_t n) {
    lwb_grow((void **)&b->s, &b->cap, b->len + n + 1, 1);
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void str_puts(struct lwb_str *b, const char *s) { str_append(b, s, strlen(s)); }
static void str_clear(struct lwb_str *b) {
    b->len = 0;
    if (b->s) b->s[0] = 0;
}
static void str_free(struct lwb_str *b) {
    free(b->s);
    *b = (struct lwb_str){0};
}
// Steal the buffer (the caller frees it); the string becomes empty.
static char *str_take(struct lwb_str *b) {
    if (!b->s) str_puts(b, "");
    char *s = b->s;
    *b = (struct lwb_str){0};
    return s;
}

static bool str_starts(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}
static bool str_ends(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

// Levenshtein distance, for "did you mean". Strings are short (option and command names).
static int lwb_edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 64 || m > 64) return 1000;
    int row[65];
    for (size_t j = 0; j <= m; j++) row[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int up = row[j];
            int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            int best = LWB_MIN(row[j] + 1, row[j - 1] + 1);
            row[j] = LWB_MIN(best, diag + cost);
            diag = up;
        }
    }
    return row[m];
}

// Of `names` (n of them), the one closest to `s`, or NULL when none is plausibly meant.
static const char *lwb_nearest(const char *s, const char *const *names, size_t n) {
    const char *best = NULL;
    int best_d = INT_MAX;
    for (size_t i = 0; i < n; i++) {
        int d = lwb_edit_distance(s, names[i]);
        if (str_starts(names[i], s) && strlen(s) >= 3) d = LWB_MIN(d, 1);
        if (d < best_d) best_d = d, best = names[i];
    }
    int limit = (int)LWB_MAX(2, strlen(s) / 3);
    return best_d <= limit ? best : NULL;
}

// ---------------------------------------------------------------------------------------------
// Files

// Read a whole file; NULL with errno set when it cannot be read. Always NUL-terminated.
static char *lwb_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct lwb_str b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) str_append(&b, chunk, n);
    int err = ferror(f);
    fclose(f);
    if (err) {
        str_free(&b);
        errno = EIO;
        return NULL;
    }
    if (size) *size = b.len;
    return str_take(&b);
}

// mkdir -p. Returns 0, or -1 with errno set.
static int lwb_mkdirs(const char *path) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = mkdir(p, 0755);
    free(p);
    return (rc != 0 && errno != EEXIST) ? -1 : 0;
}

static int lwb_write_all(int fd, const void *data, size_t size) {
    const char *p = data;
    while (size) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

// A new temporary file beside `path` (DIR/.NAME.XXXXXX, created with O_EXCL by mkstemp, so no
// planted file or link is followed). Returns the descriptor and the name in `tmp` (freed by the
// caller), or -1 with errno set.
static int lwb_tmp_beside(const char *path, char **tmp) {
    const char *slash = strrchr(path, '/');
    struct lwb_str t = {0};
    if (slash) str_printf(&t, "%.*s/.%s.XXXXXX", (int)(slash - path), path, slash + 1);
    else str_printf(&t, ".%s.XXXXXX", path);
    int fd = mkstemp(t.s);
    if (fd < 0) {
        int e = errno;
        str_free(&t);
        errno = e;
        return -1;
    }
    mode_t m = umask(022);
    umask(m);
    fchmod(fd, 0666 & ~m);
    *tmp = str_take(&t);
    return fd;
}

// Write `path` atomically: a temporary file beside it, fsync, rename. Readers see the old file
// or the new one, never a part. Returns 0, or -1 with errno set. (Commands write their outputs
// through files.h, which also refuses to replace inputs or special files.)
static int lwb_write_file_atomic(const char *path, const void *data, size_t size) {
    char *tmp;
    int fd = lwb_tmp_beside(path, &tmp);
    if (fd < 0) return -1;
    if (lwb_write_all(fd, data, size) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        free(tmp);
        errno = e;
        return -1;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        errno = e;
        return -1;
    }
    free(tmp);
    return 0;
}

// Join a directory and a file name into a new string.
static char *lwb_path_join(const char *dir, const char *name) {
    struct lwb_str b = {0};
    str_printf(&b, "%s%s%s", dir, (*dir && !str_ends(dir, "/")) ? "/" : "", name);
    return str_take(&b);
}

// ---------------------------------------------------------------------------------------------
// Hashing: a 128-bit hash for cache keys (two independent 64-bit lanes, each a multiply-xorshift
// over 8-byte words with a final avalanche). Not cryptographic; collisions are not a concern at
// the number of kernels lwb builds.

struct lwb_hash {
    uint64_t lo, hi;
};

static uint64_t lwb_mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static void lwb_hash_update(struct lwb_hash *h, const void *data, size_t n) {
    const unsigned char *p = data;
    while (n) {
        uint64_t w = 0;
        size_t k = n < 8 ? n : 8;
        memcpy(&w, p, k);
        w ^= (uint64_t)k << 59; // distinguishes a short tail from zero bytes
        h->lo = lwb_mix64(h->lo ^ w) * 0x9e3779b97f4a7c15ULL;
        h->hi = lwb_mix64(h->hi + w + 0x632be59bd9b4e019ULL) ^ (h->hi >> 17);
        p += k;
        n -= k;
    }
}
static struct lwb_hash lwb_hash_init(void) {
    return (struct lwb_hash){0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL};
}
static void lwb_hash_str(struct lwb_hash *h, const char *s) {
    lwb_hash_update(h, s, strlen(s) + 1); // the NUL separates consecutive fields
}
// 32 hex digits.
static void lwb_hash_hex(struct lwb_hash h, char out[33]) {
    snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, lwb_mix64(h.hi ^ h.lo), lwb_mix64(h.lo) ^ h.hi);
}

// ---------------------------------------------------------------------------------------------
// Clocks and environment

static double lwb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// An LWB_* switch: set and not "0"/"false"/"no"/"off"/"".
static bool lwb_env_flag(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return false;
    return strcmp(v, "0") && strcasecmp(v, "false") && strcasecmp(v, "no") && strcasecmp(v, "off");
}

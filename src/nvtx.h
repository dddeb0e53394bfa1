// nvtx.h: lwb's NVTX ranges, and the recorder that lets lwb's own profiler see them.
//
// Defines: lwb_nvtx_push, lwb_nvtx_pop, lwb_nvtx_range (an empty range: a marker), the registered
// strings behind them (struct lwb_nvtx_strings), the recorder (struct lwb_nvtx_recorder,
// nvtx_record_start, nvtx_record_stop, nvtx_record_take) and what it hands over (struct
// lwb_nvtx_range, struct lwb_nvtx_thread), lwb_gettid.
//
// Ranges go to NVTX 3 (header-only: it loads an injection library only when one is configured,
// e.g. by Nsight Systems, and otherwise costs a branch) as push/pop ranges in the default domain
// with registered strings, as the Python `nvtx` package's `nvtx.annotate(msg)` pushes them: each
// distinct text is registered once (nvtxDomainRegisterStringA with the default domain's NULL
// handle) and pushed by its handle. An nsys export then has them as TensorRT-LLM's parse.py reads
// them: NVTX_EVENTS.text NULL, textId -> StringIds, domainId 0, and no domain-create row.
// While lwb's built-in profiler records, every push and pop is also appended, with the
// profiler's clock and the OS thread id, to one process-wide list; the profiler pairs them into
// ranges afterwards (and writes them as nsys writes registered strings).
//
// NOTES:
//   Without a tool, NVTX returns no handle for the first registration; from then on every push
//   is a plain nvtxRangePushA (a predicted branch inside NVTX), with no lookup. With a tool that
//   returns handles, a push looks its text up in a small hash table under a mutex (tens of ns,
//   beside the tool's own cost), registering it on first sight. Texts are never unregistered:
//   NVTX has no call for it; the dynamic ones (the args and problem_spec JSON, the iteration
//   names) are a few per problem. A text the tool gives no handle for is pushed as ASCII.
//   Pushes and pops use one API family for the whole process (the domain calls when strings are
//   registered, the plain ones otherwise), so a tool never sees a pop of the other kind.
//   The table is its own: nvtx.h comes before profile.h's and trace.h's string tables, and it
//   maps texts to tool handles, not to row ids.
//   Recording off costs one relaxed load and a predicted branch per push/pop. Recording on takes
//   a mutex, reads the clock and copies the text: ~100 ns, for ranges that wrap whole modules.
//   The clock is read inside the mutex, so the list is in time order across threads.
//   A pop with nothing pushed on its thread since recording started (a range opened before) is
//   dropped; a push never popped becomes a range with no end, as nsys writes ranges still open.
//
// Does not: create NVTX domains, use categories, colours or payloads, or write anything
// (profile.h does).
// Tested by test/test_profile.c (recording on and off, nesting, two threads; registered strings
// through a tool linked into the test).
#pragma once
#include <nvtx3/nvToolsExt.h>
#include <pthread.h>
#include <sys/syscall.h>

// ---------------------------------------------------------------------------------------------
// The recorder

struct lwb_nvtx_event {
    uint64_t t;    // ns, recorder clock
    uint32_t tid;  // OS thread id
    uint32_t text; // push: 1 + offset of its text in the pool; pop: 0
};

struct lwb_nvtx_thread {
    uint32_t tid;  // OS thread id
    char name[16]; // as pthread_getname_np saw it when the thread first recorded
};

struct lwb_nvtx_recorder {
    int on;                   // read on every push/pop (relaxed atomic), written under mu
    unsigned gen;             // bumped by nvtx_record_start: threads re-register once per session
    pthread_mutex_t mu;       // guards everything below
    uint64_t (*clock)(void);  // ns; the profiler's clock (CUPTI's), CLOCK_REALTIME by default
    struct lwb_nvtx_event *ev; // (nev) in time order
    size_t nev, capev;
    char *pool;               // push texts, each NUL-terminated
    size_t npool, cappool;
    struct lwb_nvtx_thread *threads; // (nthreads) threads that recorded
    size_t nthreads, capthreads;
};

static struct lwb_nvtx_recorder lwb_nvtx_rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
static __thread unsigned lwb_nvtx_tls_gen; // == lwb_nvtx_rec.gen once this thread registered
static __thread uint32_t lwb_tls_tid;

static uint32_t lwb_gettid(void) {
    if (!lwb_tls_tid) lwb_tls_tid = (uint32_t)syscall(SYS_gettid);
    return lwb_tls_tid;
}

static uint64_t nvtx_clock_realtime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// Append one event (text NULL: a pop). Called only while recording.
static void nvtx_record_event(const char *text) {
    struct lwb_nvtx_recorder *r = &lwb_nvtx_rec;
    uint32_t tid = lwb_gettid();
    pthread_mutex_lock(&r->mu);
    if (!r->on) { // stopped between the check and the lock
        pthread_mutex_unlock(&r->mu);
        return;
    }
    if (lwb_nvtx_tls_gen != r->gen) {
        struct lwb_nvtx_thread th = {.tid = tid};
        if (pthread_getname_np(pthread_self(), th.name, sizeof th.name) != 0) th.name[0] = 0;
        LWB_PUSH(r->threads, r->nthreads, r->capthreads, th);
        lwb_nvtx_tls_gen = r->gen;
    }
    uint32_t off = 0;
    if (text) {
        size_t n = strlen(text) + 1;
        if (r->npool + n >= UINT32_MAX) LWB_BUG("NVTX recorder: more than 4 GiB of range names");
        lwb_grow((void **)&r->pool, &r->cappool, r->npool + n, 1);
        memcpy(r->pool + r->npool, text, n);
        off = (uint32_t)r->npool + 1;
        r->npool += n;
    }
    struct lwb_nvtx_event e = {.t = r->clock(), .tid = tid, .text = off};
    LWB_PUSH(r->ev, r->nev, r->capev, e);
    pthread_mutex_unlock(&r->mu);
}

// ---------------------------------------------------------------------------------------------
// Registered strings

enum {
    LWB_NVTX_UNKNOWN,    // nothing pushed yet
    LWB_NVTX_REGISTERED, // a tool registers strings: domain push/pop with handles
    LWB_NVTX_ASCII,      // no tool, or one without registered strings: plain push/pop
};

struct lwb_nvtx_string {
    char *text;                // owned
    uint64_t hash;
    nvtxStringHandle_t handle; // NULL: the tool gave none; the text goes as ASCII
};

struct lwb_nvtx_strings {
    int mode;                  // LWB_NVTX_*: read relaxed on every push/pop, written under mu
    pthread_mutex_t mu;        // guards everything below
    struct lwb_nvtx_string *s; // (n) in registration order
    size_t n, cap;
    uint32_t *slot;            // (nslot) index into s + 1, 0 empty; open addressing
    size_t nslot;              // a power of two, at least twice n
};

static struct lwb_nvtx_strings lwb_nvtx_str = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void nvtx_strings_rehash(struct lwb_nvtx_strings *t) {
    size_t ns = t->nslot ? t->nslot * 2 : 64;
    uint32_t *slot = xcalloc(ns, sizeof *slot);
    for (size_t i = 0; i < t->n; i++) {
        size_t k = t->s[i].hash & (ns - 1);
        while (slot[k]) k = (k + 1) & (ns - 1);
        slot[k] = (uint32_t)i + 1;
    }
    free(t->slot);
    t->slot = slot, t->nslot = ns;
}

// The handle of `text` in the default domain, registered on first sight. The first registration
// of the process decides the mode.
static nvtxStringHandle_t nvtx_string(const char *text) {
    struct lwb_nvtx_strings *t = &lwb_nvtx_str;
    struct lwb_hash h = lwb_hash_init();
    lwb_hash_str(&h, text);
    pthread_mutex_lock(&t->mu);
    if ((t->n + 1) * 2 > t->nslot) nvtx_strings_rehash(t);
    size_t k = h.lo & (t->nslot - 1);
    for (; t->slot[k]; k = (k + 1) & (t->nslot - 1)) {
        const struct lwb_nvtx_string *e = &t->s[t->slot[k] - 1];
        if (e->hash == h.lo && !strcmp(e->text, text)) {
            pthread_mutex_unlock(&t->mu);
            return e->handle;
        }
    }
    if (t->n >= UINT32_MAX - 1) LWB_BUG("NVTX: too many distinct range names");
    struct lwb_nvtx_string e = {xstrdup(text), h.lo, nvtxDomainRegisterStringA(NULL, text)};
    LWB_PUSH(t->s, t->n, t->cap, e);
    t->slot[k] = (uint32_t)t->n;
    if (t->mode == LWB_NVTX_UNKNOWN)
        __atomic_store_n(&t->mode, e.handle ? LWB_NVTX_REGISTERED : LWB_NVTX_ASCII, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&t->mu);
    return e.handle;
}

static void nvtx_push_registered(const char *text) {
    nvtxStringHandle_t handle = nvtx_string(text);
    if (__atomic_load_n(&lwb_nvtx_str.mode, __ATOMIC_RELAXED) != LWB_NVTX_REGISTERED) {
        nvtxRangePushA(text); // the process's first push found no tool
        return;
    }
    nvtxEventAttributes_t a = {.version = NVTX_VERSION, .size = NVTX_EVENT_ATTRIB_STRUCT_SIZE};
    if (handle) a.messageType = NVTX_MESSAGE_TYPE_REGISTERED, a.message.registered = handle;
    else a.messageType = NVTX_MESSAGE_TYPE_ASCII, a.message.ascii = text;
    nvtxDomainRangePushEx(NULL, &a);
}

// ---------------------------------------------------------------------------------------------
// Ranges

static inline void lwb_nvtx_push(const char *text) {
    if (__builtin_expect(__atomic_load_n(&lwb_nvtx_rec.on, __ATOMIC_RELAXED), 0))
        nvtx_record_event(text);
    if (__atomic_load_n(&lwb_nvtx_str.mode, __ATOMIC_RELAXED) == LWB_NVTX_ASCII)
        nvtxRangePushA(text);
    else
        nvtx_push_registered(text);
}

static inline void lwb_nvtx_pop(void) {
    if (__atomic_load_n(&lwb_nvtx_str.mode, __ATOMIC_RELAXED) == LWB_NVTX_REGISTERED)
        nvtxDomainRangePop(NULL);
    else
        nvtxRangePop();
    if (__builtin_expect(__atomic_load_n(&lwb_nvtx_rec.on, __ATOMIC_RELAXED), 0))
        nvtx_record_event(NULL);
}

// An empty range: a marker at this moment that parsers find among the push/pop ranges
// (`layer_wise_benchmarks args {...}`, `layer_wise_benchmarks problem_spec {...}`).
static inline void lwb_nvtx_range(const char *text) {
    lwb_nvtx_push(text);
    lwb_nvtx_pop();
}

// ---------------------------------------------------------------------------------------------
// Recording sessions, for the profiler

// Start recording (dropping anything recorded before). `clock` returns ns on the clock the
// ranges must share with other records; NULL means CLOCK_REALTIME.
static void nvtx_record_start(uint64_t (*clock)(void)) {
    struct lwb_nvtx_recorder *r = &lwb_nvtx_rec;
    pthread_mutex_lock(&r->mu);
    r->clock = clock ? clock : nvtx_clock_realtime;
    r->nev = r->npool = r->nthreads = 0;
    r->gen++;
    __atomic_store_n(&r->on, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&r->mu);
}

static void nvtx_record_stop(void) {
    pthread_mutex_lock(&lwb_nvtx_rec.mu);
    __atomic_store_n(&lwb_nvtx_rec.on, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&lwb_nvtx_rec.mu);
}

// A recorded push/pop range.
struct lwb_nvtx_range {
    uint64_t start;   // ns, recorder clock
    uint64_t end;     // ns; 0 when the range was still open at nvtx_record_take
    uint32_t tid;     // OS thread id
    const char *text; // into the pool handed over with the ranges
};

// Stop recording and hand over what was recorded: the ranges in push order (ordered by start),
// the text pool they point into (the caller frees it and the two arrays), and the threads.
static void nvtx_record_take(struct lwb_nvtx_range **out, size_t *nout, char **pool,
                             struct lwb_nvtx_thread **threads, size_t *nthreads) {
    struct lwb_nvtx_recorder *r = &lwb_nvtx_rec;
    pthread_mutex_lock(&r->mu);
    __atomic_store_n(&r->on, 0, __ATOMIC_RELAXED);
    struct lwb_nvtx_range *ranges = NULL;
    size_t n = 0, cap = 0;
    // Open ranges per thread: a stack of indices into `ranges`, threads found by linear search
    // (a handful of threads record).
    struct open_stack {
        uint32_t tid;
        size_t *idx, n, cap;
    } *stacks = NULL;
    size_t nstacks = 0, capstacks = 0;
    for (size_t i = 0; i < r->nev; i++) {
        const struct lwb_nvtx_event *e = &r->ev[i];
        struct open_stack *s = NULL;
        for (size_t k = 0; k < nstacks && !s; k++)
            if (stacks[k].tid == e->tid) s = &stacks[k];
        if (!s) {
            struct open_stack fresh = {.tid = e->tid};
            LWB_PUSH(stacks, nstacks, capstacks, fresh);
            s = &stacks[nstacks - 1];
        }
        if (e->text) {
            struct lwb_nvtx_range rg = {.start = e->t, .tid = e->tid,
                                        .text = r->pool + (e->text - 1)};
            LWB_PUSH(ranges, n, cap, rg);
            LWB_PUSH(s->idx, s->n, s->cap, n - 1);
        } else if (s->n) {
            ranges[s->idx[--s->n]].end = LWB_MAX(e->t, 1);
        }
    }
    for (size_t k = 0; k < nstacks; k++) free(stacks[k].idx);
    free(stacks);
    *out = ranges;
    *nout = n;
    *pool = r->pool;
    *threads = r->threads;
    *nthreads = r->nthreads;
    free(r->ev);
    r->ev = NULL, r->pool = NULL, r->threads = NULL;
    r->nev = r->capev = r->npool = r->cappool = r->nthreads = r->capthreads = 0;
    pthread_mutex_unlock(&r->mu);
}

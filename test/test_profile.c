// test_profile.c: nvtx.h's recorder and registered strings and profile.h without a GPU:
// detection of Nsight Systems, what an NVTX tool sees of lwb's ranges, kernel short names, CUPTI
// record conversion (records built in memory with CUDA 13 layouts), graph-node lineage, and the
// SQLite writer: every table and column of the nsys 2025.3 subset, row counts, id encodings,
// range names as registered strings, kernel -> launch -> NVTX enclosure for eager kernels, graph
// kernels -> node chain -> capture-time ranges, the queries of TensorRT-LLM's parse.py, and
// atomic writing.

// NVTX attaches a tool linked into the program through this pointer (its static injection) at
// the first NVTX call: the tool below stands in for Nsight Systems in this whole program.
#define NVTX_STATIC_INJECTION_IMPL
#include <stdint.h>
int (*InitializeInjectionNvtx2_fnptr)(const void *(*)(uint32_t));

#include "test_common.h"
#include <dirent.h>
#include <regex.h>

// ---------------------------------------------------------------------------------------------
// An NVTX tool: registers strings (handle = index + 1, none for texts starting "[no handle]")
// and logs the pushes and pops it receives.

struct tool_push {
    bool domain_call;     // nvtxDomainRangePushEx; false: nvtxRangePushA
    bool default_domain;  // the domain handle was NULL
    int type;             // nvtxMessageType_t
    char text[128];       // the message, or the registered string it names
};

static struct {
    pthread_mutex_t mu;
    char **strings;       // (nstrings) registered, in order
    size_t nstrings, capstrings;
    int foreign_domains;  // registrations in a domain other than the default one
    struct tool_push *push; // (npush)
    size_t npush, cappush;
    int domain_pops, plain_pops, foreign_pops;
} tool = {.mu = PTHREAD_MUTEX_INITIALIZER};

static nvtxStringHandle_t tool_register(nvtxDomainHandle_t domain, const char *s) {
    pthread_mutex_lock(&tool.mu);
    tool.foreign_domains += domain != NULL;
    LWB_PUSH(tool.strings, tool.nstrings, tool.capstrings, xstrdup(s));
    uintptr_t h = str_starts(s, "[no handle]") ? 0 : tool.nstrings;
    pthread_mutex_unlock(&tool.mu);
    return (nvtxStringHandle_t)h;
}

static int tool_log_push(bool domain_call, nvtxDomainHandle_t domain, int type, const char *text) {
    struct tool_push p = {.domain_call = domain_call, .default_domain = domain == NULL, .type = type};
    pthread_mutex_lock(&tool.mu);
    if (type == NVTX_MESSAGE_TYPE_REGISTERED) {
        uintptr_t h = (uintptr_t)text;
        text = h >= 1 && h <= tool.nstrings ? tool.strings[h - 1] : "(bad handle)";
    }
    snprintf(p.text, sizeof p.text, "%s", text);
    LWB_PUSH(tool.push, tool.npush, tool.cappush, p);
    pthread_mutex_unlock(&tool.mu);
    return 0;
}

static int tool_domain_push(nvtxDomainHandle_t domain, const nvtxEventAttributes_t *a) {
    const char *text = a->messageType == NVTX_MESSAGE_TYPE_REGISTERED ? (const char *)a->message.registered
                       : a->messageType == NVTX_MESSAGE_TYPE_ASCII    ? a->message.ascii
                                                                      : "(no message)";
    return tool_log_push(true, domain, a->messageType, text);
}
static int tool_push_ascii(const char *text) {
    return tool_log_push(false, NULL, NVTX_MESSAGE_TYPE_ASCII, text);
}
static int tool_domain_pop(nvtxDomainHandle_t domain) {
    pthread_mutex_lock(&tool.mu);
    tool.domain_pops++;
    tool.foreign_pops += domain != NULL;
    pthread_mutex_unlock(&tool.mu);
    return 0;
}
static int tool_pop(void) {
    pthread_mutex_lock(&tool.mu);
    tool.plain_pops++;
    pthread_mutex_unlock(&tool.mu);
    return 0;
}

static int tool_init(NvtxGetExportTableFunc_t get) {
    const NvtxExportTableCallbacks *cb = get(NVTX_ETID_CALLBACKS);
    NvtxFunctionTable core, core2;
    unsigned ncore, ncore2;
    if (!cb || !cb->GetModuleFunctionTable(NVTX_CB_MODULE_CORE, &core, &ncore) ||
        !cb->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &core2, &ncore2) ||
        ncore <= NVTX_CBID_CORE_RangePop || ncore2 <= NVTX_CBID_CORE2_DomainRegisterStringA)
        return 0;
    *core[NVTX_CBID_CORE_RangePushA] = (NvtxFunctionPointer)tool_push_ascii;
    *core[NVTX_CBID_CORE_RangePop] = (NvtxFunctionPointer)tool_pop;
    *core2[NVTX_CBID_CORE2_DomainRangePushEx] = (NvtxFunctionPointer)tool_domain_push;
    *core2[NVTX_CBID_CORE2_DomainRangePop] = (NvtxFunctionPointer)tool_domain_pop;
    *core2[NVTX_CBID_CORE2_DomainRegisterStringA] = (NvtxFunctionPointer)tool_register;
    return 1;
}
int (*InitializeInjectionNvtx2_fnptr)(const void *(*)(uint32_t)) = tool_init;

// How often the tool registered `text`.
static int tool_registrations(const char *text) {
    int n = 0;
    pthread_mutex_lock(&tool.mu);
    for (size_t i = 0; i < tool.nstrings; i++) n += !strcmp(tool.strings[i], text);
    pthread_mutex_unlock(&tool.mu);
    return n;
}

// ---------------------------------------------------------------------------------------------
// Nsight Systems detection

static const char *const nsys_vars[] = {"NSYS_PROFILING_SESSION_ID", "NVTX_INJECTION64_PATH",
                                        "CUDA_INJECTION64_PATH", "LD_PRELOAD"};

static void test_nsys_detection(void **state) {
    (void)state;
    char *saved[4];
    for (int i = 0; i < 4; i++) {
        const char *v = getenv(nsys_vars[i]);
        saved[i] = v ? xstrdup(v) : NULL;
        unsetenv(nsys_vars[i]);
    }
    assert_false(profile_under_nsys());
    assert_null(profile_nsys_signal());
    setenv("NSYS_PROFILING_SESSION_ID", "", 1); // empty is not a session
    assert_false(profile_under_nsys());
    setenv("NSYS_PROFILING_SESSION_ID", "7c1e", 1);
    assert_true(profile_under_nsys());
    assert_string_equal(profile_nsys_signal(), "NSYS_PROFILING_SESSION_ID");
    unsetenv("NSYS_PROFILING_SESSION_ID");
    setenv("NVTX_INJECTION64_PATH", "/usr/local/cuda/lib64/libcupti.so", 1); // CUPTI, not nsys
    assert_false(profile_under_nsys());
    setenv("NVTX_INJECTION64_PATH", "/opt/nvidia/nsys/target-linux-x64/libToolsInjection64.so", 1);
    assert_string_equal(profile_nsys_signal(), "NVTX_INJECTION64_PATH");
    unsetenv("NVTX_INJECTION64_PATH");
    setenv("LD_PRELOAD", "/opt/nvidia/nsight-systems/2025.3/lib/libfoo.so", 1);
    assert_string_equal(profile_nsys_signal(), "LD_PRELOAD");
    unsetenv("LD_PRELOAD");
    setenv("CUDA_INJECTION64_PATH", "/x/libToolsInjection64.so", 1);
    assert_string_equal(profile_nsys_signal(), "CUDA_INJECTION64_PATH");
    unsetenv("CUDA_INJECTION64_PATH");
    assert_false(profile_under_nsys());
    for (int i = 0; i < 4; i++) {
        if (saved[i]) setenv(nsys_vars[i], saved[i], 1);
        free(saved[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// The NVTX recorder

// A clock the test sets: recorded times are exactly what the scenario says.
static uint64_t g_now;
static uint64_t fake_clock(void) { return __atomic_load_n(&g_now, __ATOMIC_SEQ_CST); }
static void at(uint64_t t) { __atomic_store_n(&g_now, t, __ATOMIC_SEQ_CST); }

static void take_all(struct lwb_nvtx_range **r, size_t *n, char **pool) {
    struct lwb_nvtx_thread *th;
    size_t nth;
    nvtx_record_take(r, n, pool, &th, &nth);
    free(th);
}

static void test_nvtx_off(void **state) {
    (void)state;
    lwb_nvtx_push("not recorded");
    lwb_nvtx_range("marker");
    lwb_nvtx_pop();
    struct lwb_nvtx_range *r;
    size_t n;
    char *pool;
    take_all(&r, &n, &pool);
    assert_int_equal(n, 0);
    free(r), free(pool);
    // Recording stops at take: a later push is not recorded either.
    nvtx_record_start(fake_clock);
    take_all(&r, &n, &pool);
    free(r), free(pool);
    lwb_nvtx_push("after");
    lwb_nvtx_pop();
    take_all(&r, &n, &pool);
    assert_int_equal(n, 0);
    free(r), free(pool);
}

struct worker_arg {
    uint32_t tid;
    pthread_barrier_t *go, *done;
};

static void *nvtx_worker(void *arg) {
    struct worker_arg *w = arg;
    pthread_setname_np(pthread_self(), "lwb-worker");
    w->tid = lwb_gettid();
    pthread_barrier_wait(w->go);
    lwb_nvtx_push("worker");      // at 25
    pthread_barrier_wait(w->done);
    pthread_barrier_wait(w->go);
    lwb_nvtx_push("worker inner"); // at 35
    lwb_nvtx_pop();
    lwb_nvtx_pop();
    pthread_barrier_wait(w->done);
    return NULL;
}

static void test_nvtx_record(void **state) {
    (void)state;
    pthread_barrier_t go, done;
    pthread_barrier_init(&go, NULL, 2);
    pthread_barrier_init(&done, NULL, 2);
    struct worker_arg w = {.go = &go, .done = &done};
    pthread_t th;
    at(5);
    lwb_nvtx_pop(); // before recording: nothing
    nvtx_record_start(fake_clock);
    assert_int_equal(pthread_create(&th, NULL, nvtx_worker, &w), 0);
    lwb_nvtx_pop(); // nothing pushed on this thread since recording started: dropped
    at(10);
    lwb_nvtx_push("outer");
    at(20);
    lwb_nvtx_push("inner");
    at(25);
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&done);
    at(30);
    lwb_nvtx_pop(); // inner
    at(35);
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&done);
    at(40);
    lwb_nvtx_range("layer_wise_benchmarks problem_spec {\"batch_size\": 1}");
    at(50);
    lwb_nvtx_pop(); // outer
    at(60);
    lwb_nvtx_push("left open");
    pthread_join(th, NULL);
    struct lwb_nvtx_range *r;
    struct lwb_nvtx_thread *threads;
    size_t n, nthreads;
    char *pool;
    nvtx_record_take(&r, &n, &pool, &threads, &nthreads);
    uint32_t me = lwb_gettid();
    assert_int_equal(n, 6);
    struct {
        const char *text;
        uint64_t start, end;
        uint32_t tid;
    } want[] = {{"outer", 10, 50, me},
                {"inner", 20, 30, me},
                {"worker", 25, 35, w.tid},
                {"worker inner", 35, 35, w.tid},
                {"layer_wise_benchmarks problem_spec {\"batch_size\": 1}", 40, 40, me},
                {"left open", 60, 0, me}};
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(r[i].text, want[i].text);
        assert_int_equal(r[i].start, want[i].start);
        assert_int_equal(r[i].end, want[i].end);
        assert_int_equal(r[i].tid, want[i].tid);
    }
    assert_int_not_equal(me, w.tid);
    assert_int_equal(nthreads, 2);
    bool named = false;
    for (size_t i = 0; i < nthreads; i++)
        if (threads[i].tid == w.tid) named = !strcmp(threads[i].name, "lwb-worker");
    assert_true(named);
    free(r), free(pool), free(threads);
    lwb_nvtx_pop(); // "left open" is popped after recording stopped: not recorded
    pthread_barrier_destroy(&go);
    pthread_barrier_destroy(&done);
}

// With a tool attached (the one above), ranges go to it as registered strings in the default
// domain, each text registered once however many threads push it; a text the tool gives no
// handle for goes as ASCII, still registered only once.
struct registered_arg {
    int id;
    pthread_barrier_t *go;
};

static void *registered_worker(void *arg) {
    const struct registered_arg *a = arg;
    char spec[96];
    snprintf(spec, sizeof spec, "layer_wise_benchmarks problem_spec {\"batch_size\": %d}", 100 + a->id % 2);
    pthread_barrier_wait(a->go);
    for (int i = 0; i < 500; i++) {
        lwb_nvtx_push("reg Deepseekv3MoE");
        lwb_nvtx_push(i % 2 ? "reg MoE" : "reg DeepseekV3Gate");
        lwb_nvtx_pop();
        lwb_nvtx_pop();
        lwb_nvtx_range(spec);
    }
    return NULL;
}

static void test_nvtx_registered(void **state) {
    (void)state;
    lwb_nvtx_range("reg first"); // NVTX is initialised, the tool attached
    assert_int_equal(__atomic_load_n(&lwb_nvtx_str.mode, __ATOMIC_RELAXED), LWB_NVTX_REGISTERED);
    pthread_mutex_lock(&tool.mu);
    tool.npush = 0;
    int domain_pops = tool.domain_pops, plain_pops = tool.plain_pops;
    pthread_mutex_unlock(&tool.mu);

    enum { THREADS = 4 };
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, THREADS);
    pthread_t th[THREADS];
    struct registered_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct registered_arg){i, &go};
        assert_int_equal(pthread_create(&th[i], NULL, registered_worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < 2; i++) lwb_nvtx_range("[no handle] unregistrable");

    static const struct {
        const char *text;
        int pushes, type;
    } want[] = {
        {"reg Deepseekv3MoE", 2000, NVTX_MESSAGE_TYPE_REGISTERED},
        {"reg MoE", 1000, NVTX_MESSAGE_TYPE_REGISTERED},
        {"reg DeepseekV3Gate", 1000, NVTX_MESSAGE_TYPE_REGISTERED},
        {"layer_wise_benchmarks problem_spec {\"batch_size\": 100}", 1000, NVTX_MESSAGE_TYPE_REGISTERED},
        {"layer_wise_benchmarks problem_spec {\"batch_size\": 101}", 1000, NVTX_MESSAGE_TYPE_REGISTERED},
        {"[no handle] unregistrable", 2, NVTX_MESSAGE_TYPE_ASCII},
    };
    // What the tool saw, copied out: a failed assertion must not leave its mutex held.
    pthread_mutex_lock(&tool.mu);
    size_t npush = tool.npush;
    struct tool_push *push = xmalloc(npush * sizeof *push);
    memcpy(push, tool.push, npush * sizeof *push);
    domain_pops = tool.domain_pops - domain_pops, plain_pops = tool.plain_pops - plain_pops;
    int foreign = tool.foreign_domains + tool.foreign_pops;
    pthread_mutex_unlock(&tool.mu);
    assert_int_equal(npush, 6002);
    for (size_t i = 0; i < npush; i++) {
        assert_true(push[i].domain_call);
        assert_true(push[i].default_domain);
    }
    for (size_t k = 0; k < LWB_ARRAY_LEN(want); k++) {
        int n = 0;
        for (size_t i = 0; i < npush; i++)
            if (!strcmp(push[i].text, want[k].text)) {
                assert_int_equal(push[i].type, want[k].type);
                n++;
            }
        assert_int_equal(n, want[k].pushes);
    }
    assert_int_equal(domain_pops, 6002); // every pop is the default domain's
    assert_int_equal(plain_pops, 0);
    assert_int_equal(foreign, 0);
    free(push);
    for (size_t k = 0; k < LWB_ARRAY_LEN(want); k++) assert_int_equal(tool_registrations(want[k].text), 1);
}

// ---------------------------------------------------------------------------------------------
// Kernel names

static void test_kernel_names(void **state) {
    (void)state;
    char out[256];
    struct {
        const char *mangled, *base;
    } m[] = {
        {"_Z6kernelPf", "kernel"},
        {"_Z6kernelIfEvPT_", "kernel"},
        {"_ZN3lwb6detail4gateILi4EEEvPf", "gate"},
        {"_ZN2at6native29vectorized_elementwise_kernelILi4ENS0_11FillFunctorIfEENS_6detail5ArrayIPcLi1EEEEEviT0_T1_",
         "vectorized_elementwise_kernel"},
        {"_ZN3fooIiE3barEv", "bar"},
        {"_ZNSt6vectorIiE4sizeEv", "size"},
        {"_ZN7cutlass13device_kernelIN3gmm6KernelILb1ELi128EEEEEvNT_6ParamsE", "device_kernel"},
    };
    for (size_t i = 0; i < LWB_ARRAY_LEN(m); i++) {
        assert_true(prof_mangled_base(m[i].mangled, out, sizeof out));
        assert_string_equal(out, m[i].base);
    }
    assert_false(prof_mangled_base("lwb_rmsnorm", out, sizeof out));
    assert_false(prof_mangled_base("_Z", out, sizeof out));
    assert_false(prof_mangled_base("_Z99short", out, sizeof out));
    struct {
        const char *dem, *base;
    } d[] = {
        {"void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, "
         "at::detail::Array<char*, 1>>(int, at::native::FillFunctor<float>, at::detail::Array<char*, 1>)",
         "vectorized_elementwise_kernel"},
        {"lwb::detail::gate(float*)", "gate"},
        {"void (anonymous namespace)::softmax<float>(float*, int)", "softmax"},
        {"nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NNN", "nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NNN"},
    };
    for (size_t i = 0; i < LWB_ARRAY_LEN(d); i++) {
        prof_demangled_base(d[i].dem, out, sizeof out);
        assert_string_equal(out, d[i].base);
    }
    struct lwb_prof_data data = {0};
    uint32_t a, b, c;
    prof_kernel_names(&data, "lwb_rmsnorm", &a, &b, &c);
    assert_int_equal(a, b);
    assert_int_equal(b, c);
    assert_string_equal(data.str.s[a], "lwb_rmsnorm");
    prof_kernel_names(&data, "_ZN3lwb6detail4gateILi4EEEvPf", &a, &b, &c);
    assert_string_equal(data.str.s[b], "gate");
    assert_string_equal(data.str.s[c], "_ZN3lwb6detail4gateILi4EEEvPf");
    if (prof_demangler()) assert_string_equal(data.str.s[a], "void lwb::detail::gate<4>(float*)");
    else assert_int_equal(a, c); // no demangler in this process: the mangled name stays
    prof_kernel_names(&data, NULL, &a, &b, &c);
    assert_int_equal(a + b + c, 0);
    assert_string_equal(data.str.s[0], "[Unknown]");
    // Interning: the same text, the same id, however often.
    uint32_t x = prof_intern(&data, "cuLaunchKernel");
    for (int i = 0; i < 1000; i++) {
        char name[32];
        snprintf(name, sizeof name, "name%d", i);
        prof_intern(&data, name);
    }
    assert_int_equal(prof_intern(&data, "cuLaunchKernel"), x);
    assert_string_equal(data.str.s[prof_intern(&data, "name517")], "name517");
    prof_data_free(&data);
}

// ---------------------------------------------------------------------------------------------
// CUPTI records, built as CUPTI 13 lays them out

#define T0 1000000000ull // the fake CUPTI clock at the profile's t = 0

static CUpti_ActivityKernel10 fake_kernel(uint64_t start, uint64_t end, uint32_t corr, const char *name,
                                          uint64_t node) {
    CUpti_ActivityKernel10 k;
    memset(&k, 0, sizeof k);
    k.kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
    k.start = start ? T0 + start : 0;
    k.end = end ? T0 + end : 0;
    k.deviceId = 0, k.contextId = 1, k.streamId = 13;
    k.gridX = 4096, k.gridY = 1, k.gridZ = 1, k.blockX = 128, k.blockY = 1, k.blockZ = 1;
    k.registersPerThread = 40, k.staticSharedMemory = 64, k.dynamicSharedMemory = 0;
    k.localMemoryPerThread = 0, k.localMemoryTotal = 0, k.localMemoryTotal_v2 = 1 << 20;
    k.correlationId = corr, k.gridId = corr + 100;
    k.name = name;
    k.launchType = CUPTI_ACTIVITY_LAUNCH_TYPE_REGULAR;
    k.sharedMemoryExecuted = 32768;
    k.graphNodeId = node;
    k.shmemLimitConfig = CUPTI_FUNC_SHMEM_LIMIT_DEFAULT;
    return k;
}

static CUpti_ActivityAPI fake_api(bool driver, uint32_t cbid, uint64_t start, uint64_t end,
                                  uint32_t tid, uint32_t corr) {
    CUpti_ActivityAPI a;
    memset(&a, 0, sizeof a);
    a.kind = driver ? CUPTI_ACTIVITY_KIND_DRIVER : CUPTI_ACTIVITY_KIND_RUNTIME;
    a.cbid = cbid;
    a.start = T0 + start, a.end = T0 + end;
    a.processId = (uint32_t)getpid(), a.threadId = tid;
    a.correlationId = corr;
    return a;
}

static CUpti_ActivityMemcpy6 fake_copy(uint64_t start, uint64_t end, uint32_t corr, uint8_t kind,
                                       uint64_t node) {
    CUpti_ActivityMemcpy6 m;
    memset(&m, 0, sizeof m);
    m.kind = CUPTI_ACTIVITY_KIND_MEMCPY;
    m.copyKind = kind;
    m.srcKind = kind == CUPTI_ACTIVITY_MEMCPY_KIND_HTOD ? CUPTI_ACTIVITY_MEMORY_KIND_PINNED
                                                         : CUPTI_ACTIVITY_MEMORY_KIND_DEVICE;
    m.dstKind = CUPTI_ACTIVITY_MEMORY_KIND_DEVICE;
    m.bytes = 1 << 20;
    m.start = T0 + start, m.end = T0 + end;
    m.contextId = 1, m.streamId = 13, m.correlationId = corr;
    m.graphNodeId = node;
    m.copyCount = 1;
    return m;
}

static CUpti_ActivityMemset4 fake_set(uint64_t start, uint64_t end, uint32_t corr, uint64_t node) {
    CUpti_ActivityMemset4 s;
    memset(&s, 0, sizeof s);
    s.kind = CUPTI_ACTIVITY_KIND_MEMSET;
    s.value = 0;
    s.bytes = 58720256;
    s.start = T0 + start, s.end = T0 + end;
    s.contextId = 1, s.streamId = 13, s.correlationId = corr;
    s.memoryKind = CUPTI_ACTIVITY_MEMORY_KIND_DEVICE;
    s.graphNodeId = node;
    return s;
}

static int g_api_name_calls;
static const char *fake_api_name(bool driver, uint32_t cbid) {
    g_api_name_calls++;
    if (!driver) return cbid == 1 ? "cudaDeviceSynchronize_v3020" : NULL;
    switch (cbid) {
    case CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel: return "cuLaunchKernel";
    case CUPTI_DRIVER_TRACE_CBID_cuMemsetD8Async: return "cuMemsetD8Async";
    case CUPTI_DRIVER_TRACE_CBID_cuMemcpyDtoDAsync_v2: return "cuMemcpyDtoDAsync_v2";
    case CUPTI_DRIVER_TRACE_CBID_cuMemcpyHtoDAsync_v2: return "cuMemcpyHtoDAsync_v2";
    case CUPTI_DRIVER_TRACE_CBID_cuGraphLaunch: return "cuGraphLaunch";
    default: return NULL;
    }
}

static void add(struct lwb_prof_data *d, struct prof_conv *c, const void *rec) {
    prof_add_activity(d, c, (const CUpti_Activity *)rec);
}

static void test_convert(void **state) {
    (void)state;
    struct lwb_prof_data d = {0};
    struct prof_conv c = {.t0 = T0, .api_name = fake_api_name};
    g_api_name_calls = 0;
    char name[] = "lwb_rmsnorm";
    CUpti_ActivityKernel10 k = fake_kernel(1200, 1300, 1, name, 0);
    add(&d, &c, &k);
    k.correlationId = 2, k.start = T0 + 1300, k.end = T0 + 1400;
    add(&d, &c, &k);
    CUpti_ActivityKernel10 untimed = fake_kernel(0, 0, 3, name, 0);
    add(&d, &c, &untimed);
    k.kind = CUPTI_ACTIVITY_KIND_KERNEL; // the serialized kind has the same record
    k.launchType = CUPTI_ACTIVITY_LAUNCH_TYPE_COOPERATIVE_SINGLE_DEVICE;
    k.shmemLimitConfig = CUPTI_FUNC_SHMEM_LIMIT_OPTIN;
    add(&d, &c, &k);
    assert_int_equal(d.nkernels, 3);
    assert_int_equal(d.untimed, 1);
    const struct lwb_prof_kernel *pk = &d.kernels[0];
    assert_int_equal(pk->start, 1200);
    assert_int_equal(pk->end, 1300);
    assert_int_equal(pk->correlation, 1);
    assert_int_equal(pk->grid[0], 4096);
    assert_int_equal(pk->block[0], 128);
    assert_int_equal(pk->regs, 40);
    assert_int_equal(pk->local_total, 1 << 20);
    assert_int_equal(pk->smem_executed, 32768);
    assert_int_equal(pk->launch_type, 1); // nsys: 1 regular
    assert_int_equal(pk->grid_id, 101);
    assert_int_equal(pk->graph_node, 0);
    assert_int_equal(d.kernels[2].launch_type, 2);
    assert_int_equal(d.kernels[2].smem_limit_config, 1);
    assert_string_equal(d.str.s[pk->short_name], "lwb_rmsnorm");

    CUpti_ActivityAPI a = fake_api(true, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel, 100, 110, 77, 1);
    add(&d, &c, &a);
    a.correlationId = 2;
    add(&d, &c, &a);
    CUpti_ActivityAPI rt = fake_api(false, 1, 120, 130, 77, 9);
    rt.returnValue = 3;
    add(&d, &c, &rt);
    CUpti_ActivityAPI unknown = fake_api(true, 99999, 140, 150, 77, 10);
    add(&d, &c, &unknown);
    assert_int_equal(d.napis, 4);
    assert_int_equal(g_api_name_calls, 3); // once per distinct (domain, cbid)
    assert_string_equal(d.str.s[d.apis[0].name], "cuLaunchKernel");
    assert_int_equal(d.apis[1].name, d.apis[0].name);
    assert_int_equal(d.apis[0].driver, 1);
    assert_int_equal(d.apis[2].driver, 0);
    assert_int_equal(d.apis[2].ret, 3);
    assert_int_equal(d.apis[2].tid, 77);
    assert_string_equal(d.str.s[d.apis[2].name], "cudaDeviceSynchronize_v3020");
    assert_int_equal(d.apis[3].name, 0); // no name: [Unknown]

    CUpti_ActivityMemcpy6 m = fake_copy(500, 600, 4, CUPTI_ACTIVITY_MEMCPY_KIND_HTOD, 0);
    add(&d, &c, &m);
    CUpti_ActivityMemset4 s = fake_set(700, 710, 5, 42);
    s.memoryKind = CUPTI_ACTIVITY_MEMORY_KIND_UNKNOWN;
    add(&d, &c, &s);
    assert_int_equal(d.ncopies, 1);
    assert_int_equal(d.copies[0].kind, 1);     // HtoD
    assert_int_equal(d.copies[0].src_kind, 1); // nsys: pinned
    assert_int_equal(d.copies[0].dst_kind, 2); // nsys: device
    assert_int_equal(d.copies[0].start, 500);
    assert_int_equal(d.copies[0].count, 1);
    assert_int_equal(d.nsets, 1);
    assert_int_equal(d.sets[0].mem_kind, 7); // nsys: unknown
    assert_int_equal(d.sets[0].graph_node, 42);
    assert_int_equal(d.sets[0].bytes, 58720256);

    CUpti_Activity other = {.kind = CUPTI_ACTIVITY_KIND_MARKER};
    add(&d, &c, &other); // ignored
    assert_int_equal(d.nkernels + d.napis + d.ncopies + d.nsets, 9);
    prof_conv_free(&c);
    prof_data_free(&d);
}

static void test_nodes_resolve(void **state) {
    (void)state;
    struct lwb_prof_data d = {0};
    struct prof_conv c = {.t0 = T0};
    // Capture creates 1 and 2; instantiation creates 11 and 12 and reports them cloned from 1
    // and 2; 3 is created by an explicit add and never instantiated; 21 is a clone whose
    // creation callback was missed.
    struct prof_node_event ev[] = {
        {T0 + 500, 7, 0, 11, 0}, {T0 + 501, 7, 1, 11, 1}, {T0 + 100, 7, 0, 1, 0},
        {T0 + 502, 7, 0, 12, 0}, {T0 + 200, 8, 0, 2, 0},  {T0 + 503, 7, 1, 12, 2},
        {T0 + 300, 7, 0, 3, 0},  {T0 + 600, 7, 1, 21, 11},
    };
    prof_nodes_resolve(&d, &c, ev, LWB_ARRAY_LEN(ev));
    struct lwb_prof_node want[] = {{100, 7, 1, 0},   {200, 8, 2, 0},   {300, 7, 3, 0},
                                   {501, 7, 11, 1},  {503, 7, 12, 2},  {600, 7, 21, 11}};
    assert_int_equal(d.nnodes, LWB_ARRAY_LEN(want));
    for (size_t i = 0; i < d.nnodes; i++) {
        assert_int_equal(d.nodes[i].t, want[i].t);
        assert_int_equal(d.nodes[i].tid, want[i].tid);
        assert_int_equal(d.nodes[i].id, want[i].id);
        assert_int_equal(d.nodes[i].original, want[i].original);
    }
    prof_data_free(&d);
}

// ---------------------------------------------------------------------------------------------
// The writer: a profile of the probe's shape, written and read back

// Column lists of the nsys 2025.3 export (schema 3.20.3) for the tables lwb writes.
static const struct {
    const char *table;
    const char *cols;
} nsys_cols[] = {
    {"StringIds", "id,value"},
    {"CUPTI_ACTIVITY_KIND_KERNEL",
     "start,end,deviceId,contextId,greenContextId,streamId,correlationId,globalPid,demangledName,"
     "shortName,mangledName,launchType,cacheConfig,registersPerThread,gridX,gridY,gridZ,blockX,"
     "blockY,blockZ,staticSharedMemory,dynamicSharedMemory,localMemoryPerThread,localMemoryTotal,"
     "gridId,sharedMemoryExecuted,graphNodeId,sharedMemoryLimitConfig"},
    {"CUPTI_ACTIVITY_KIND_RUNTIME",
     "start,end,eventClass,globalTid,correlationId,nameId,returnValue,callchainId"},
    {"CUPTI_ACTIVITY_KIND_MEMCPY",
     "start,end,deviceId,contextId,greenContextId,streamId,correlationId,globalPid,bytes,copyKind,"
     "deprecatedSrcId,srcKind,dstKind,srcDeviceId,srcContextId,dstDeviceId,dstContextId,"
     "migrationCause,graphNodeId,virtualAddress,copyCount"},
    {"CUPTI_ACTIVITY_KIND_MEMSET",
     "start,end,deviceId,contextId,greenContextId,streamId,correlationId,globalPid,value,bytes,"
     "graphNodeId,memKind"},
    {"NVTX_EVENTS",
     "start,end,eventType,rangeId,category,color,text,globalTid,endGlobalTid,textId,domainId,"
     "uint64Value,int64Value,doubleValue,uint32Value,int32Value,floatValue,jsonTextId,jsonText,"
     "binaryData"},
    {"CUDA_GRAPH_NODE_EVENTS",
     "start,end,eventClass,globalTid,nameId,graphNodeId,originalGraphNodeId"},
    {"TARGET_INFO_GPU",
     "vmId,id,name,busLocation,isDiscrete,l2CacheSize,totalMemory,memoryBandwidth,clockRate,"
     "smCount,pwGpuId,uuid,luid,chipName,cuDevice,ctxswDevPath,ctrlDevPath,revision,nodeMask,"
     "constantMemory,maxIPC,maxRegistersPerBlock,maxShmemPerBlock,maxShmemPerBlockOptin,"
     "maxShmemPerSm,maxRegistersPerSm,threadsPerWarp,asyncEngines,maxWarpsPerSm,maxBlocksPerSm,"
     "maxThreadsPerBlock,maxBlockDimX,maxBlockDimY,maxBlockDimZ,maxGridDimX,maxGridDimY,"
     "maxGridDimZ,computeMajor,computeMinor,smMajor,smMinor"},
    {"TARGET_INFO_SESSION_START_TIME", "utcEpochNs,utcTime,localTime"},
    {"ThreadNames", "nameId,priority,globalTid"},
    {"PROCESSES", "globalPid,pid,name"},
    {"ENUM_NSYS_EVENT_TYPE", "id,name,label"},
    {"ENUM_NSYS_EVENT_CLASS", "id,name,label"},
    {"META_DATA_EXPORT", "name,value"},
};

// "a,b,c" of a table's columns, in order ("" when the table is absent).
static void table_cols(sqlite3 *db, const char *table, char *out, size_t n) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT name FROM pragma_table_info('%s')", table);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "bad SQL: %s: %s\n", sqlite3_errmsg(db), sql);
        fail();
    }
    out[0] = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (out[0]) strncat(out, ",", n - strlen(out) - 1);
        strncat(out, (const char *)sqlite3_column_text(st, 0), n - strlen(out) - 1);
    }
    sqlite3_finalize(st);
}

// The first column of the first row of `sql` as an integer (-1 when NULL, -2 when no row).
static int64_t q_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "bad SQL: %s: %s\n", sqlite3_errmsg(db), sql);
        fail();
    }
    int64_t v = -2;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_type(st, 0) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}
static void q_text(sqlite3 *db, const char *sql, char *out, size_t n) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "bad SQL: %s: %s\n", sqlite3_errmsg(db), sql);
        fail();
    }
    out[0] = 0;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}
// NVTX_EVENTS with each row's label: lwb writes range names as registered strings (textId).
#define NVTX_LABELED "(SELECT n.*, s.value AS label FROM NVTX_EVENTS n JOIN StringIds s ON s.id = n.textId)"

static int64_t q_count(sqlite3 *db, const char *table) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    return q_int(db, sql);
}

// What the test profile holds (ns after t = 0):
//   main thread: args marker; problem_spec; capture of a graph: MLA (node 1, kernel),
//     Deepseekv3MoE > DeepseekV3Gate (node 2, kernel), Deepseekv3MoE > MoE (node 3 kernel,
//     node 4 memset); instantiation: nodes 11..14 cloned from 1..4; problem 1 (eager): one
//     iteration with MLA (kernel, corr 1) and Deepseekv3MoE > MoE (kernel corr 2, memset
//     corr 3, copy corr 4); problem 2 (graph): one iteration replaying it (cuGraphLaunch corr 5:
//     kernels on nodes 11..13, memset on node 14); a runtime call (corr 7).
//   worker thread: "worker" around an HtoD copy (corr 6).
struct scenario {
    struct lwb_prof_data d;
    uint32_t main_tid, worker_tid;
};

static void *scenario_worker(void *arg) {
    struct worker_arg *w = arg;
    pthread_setname_np(pthread_self(), "lwb-copy");
    w->tid = lwb_gettid();
    pthread_barrier_wait(w->go);
    lwb_nvtx_push("worker"); // at 3000
    pthread_barrier_wait(w->done);
    pthread_barrier_wait(w->go);
    lwb_nvtx_pop(); // at 3100
    pthread_barrier_wait(w->done);
    return NULL;
}

static void build_scenario(struct scenario *s) {
    struct lwb_prof_data *d = &s->d;
    *s = (struct scenario){0};
    d->pid = 4242;
    snprintf(d->process, sizeof d->process, "lwb");
    d->rank = 1, d->world_size = 2;
    d->utc_epoch_ns = 1763900000123456789LL;
    d->gpu = (struct lwb_prof_gpu){.id = 0, .sm_count = 132, .cc_major = 9, .cc_minor = 0,
                                   .l2_bytes = 52428800, .smem_optin = 232448,
                                   .total_mem = 85045379072LL, .clock_hz = 1980000000,
                                   .mem_bandwidth = 3352320000000LL};
    snprintf(d->gpu.name, sizeof d->gpu.name, "NVIDIA H100 80GB HBM3");
    struct prof_conv c = {.t0 = T0, .api_name = fake_api_name};
    s->main_tid = lwb_gettid();

    pthread_barrier_t go, done;
    pthread_barrier_init(&go, NULL, 2);
    pthread_barrier_init(&done, NULL, 2);
    struct worker_arg w = {.go = &go, .done = &done};
    pthread_t th;
    at(T0 + 50);
    nvtx_record_start(fake_clock);
    assert_int_equal(pthread_create(&th, NULL, scenario_worker, &w), 0);
    at(T0 + 100);
    lwb_nvtx_range("layer_wise_benchmarks args {\"warmup_times\": 0, \"run_times\": 1}");
    at(T0 + 200);
    lwb_nvtx_range("layer_wise_benchmarks problem_spec {\"batch_size\": 4}");
    // Capture (node creation callbacks at the times given below).
    at(T0 + 300), lwb_nvtx_push("MLA");
    at(T0 + 320), lwb_nvtx_pop();
    at(T0 + 400), lwb_nvtx_push("Deepseekv3MoE");
    at(T0 + 410), lwb_nvtx_push("DeepseekV3Gate");
    at(T0 + 430), lwb_nvtx_pop();
    at(T0 + 440), lwb_nvtx_push("MoE");
    at(T0 + 460), lwb_nvtx_pop();
    at(T0 + 470), lwb_nvtx_pop();
    uint32_t me = s->main_tid;
    struct prof_node_event ev[] = {
        {T0 + 310, me, 0, 1, 0}, {T0 + 420, me, 0, 2, 0}, {T0 + 450, me, 0, 3, 0},
        {T0 + 455, me, 0, 4, 0}, {T0 + 500, me, 0, 11, 0}, {T0 + 501, me, 1, 11, 1},
        {T0 + 502, me, 0, 12, 0}, {T0 + 503, me, 1, 12, 2}, {T0 + 504, me, 0, 13, 0},
        {T0 + 505, me, 1, 13, 3}, {T0 + 506, me, 0, 14, 0}, {T0 + 507, me, 1, 14, 4},
    };
    prof_nodes_resolve(d, &c, ev, LWB_ARRAY_LEN(ev));
    // Problem 1, eager.
    at(T0 + 1000);
    lwb_nvtx_range("layer_wise_benchmarks problem_spec {\"batch_size\": 4, \"seq_len_q\": 1}");
    at(T0 + 1100), lwb_nvtx_push("b=4 s=1 past=0 NP2");
    at(T0 + 1110), lwb_nvtx_push("MLA");
    at(T0 + 1120), lwb_nvtx_pop();
    at(T0 + 1130), lwb_nvtx_push("Deepseekv3MoE");
    at(T0 + 1140), lwb_nvtx_push("MoE");
    at(T0 + 1160), lwb_nvtx_pop();
    at(T0 + 1170), lwb_nvtx_pop();
    at(T0 + 1180), lwb_nvtx_pop();
    // Problem 2, graph replay.
    at(T0 + 2000);
    lwb_nvtx_range("layer_wise_benchmarks problem_spec {\"batch_size\": 4, \"seq_len_q\": 2}");
    at(T0 + 2100), lwb_nvtx_push("b=4 s=2 past=0 NP2");
    at(T0 + 2120), lwb_nvtx_pop();
    // The worker's range.
    at(T0 + 3000);
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&done);
    at(T0 + 3100);
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&done);
    pthread_join(th, NULL);
    s->worker_tid = w.tid;
    at(T0 + 4000), lwb_nvtx_push("still open");
    prof_add_recorded(d, &c);
    pthread_barrier_destroy(&go);
    pthread_barrier_destroy(&done);

    // Activity, as CUPTI would hand it over after the window.
    static char eager[] = "lwb_rmsnorm", gate[] = "_ZN3lwb6detail4gateILi4EEEvPf";
    CUpti_ActivityAPI apis[] = {
        fake_api(true, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel, 1115, 1118, me, 1),
        fake_api(true, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel, 1145, 1148, me, 2),
        fake_api(true, CUPTI_DRIVER_TRACE_CBID_cuMemsetD8Async, 1150, 1152, me, 3),
        fake_api(true, CUPTI_DRIVER_TRACE_CBID_cuMemcpyDtoDAsync_v2, 1153, 1155, me, 4),
        fake_api(true, CUPTI_DRIVER_TRACE_CBID_cuGraphLaunch, 2110, 2115, me, 5),
        fake_api(true, CUPTI_DRIVER_TRACE_CBID_cuMemcpyHtoDAsync_v2, 3010, 3020, w.tid, 6),
        fake_api(false, 1, 3500, 3600, me, 7),
    };
    for (size_t i = 0; i < LWB_ARRAY_LEN(apis); i++) add(d, &c, &apis[i]);
    CUpti_ActivityKernel10 ks[] = {
        fake_kernel(1200, 1300, 1, eager, 0), fake_kernel(1300, 1400, 2, eager, 0),
        fake_kernel(2200, 2300, 5, eager, 11), fake_kernel(2300, 2350, 5, gate, 12),
        fake_kernel(2350, 2450, 5, eager, 13),
    };
    for (size_t i = 0; i < LWB_ARRAY_LEN(ks); i++) add(d, &c, &ks[i]);
    CUpti_ActivityMemcpy6 cps[] = {fake_copy(1410, 1420, 4, CUPTI_ACTIVITY_MEMCPY_KIND_DTOD, 0),
                                   fake_copy(3030, 3040, 6, CUPTI_ACTIVITY_MEMCPY_KIND_HTOD, 0)};
    for (size_t i = 0; i < LWB_ARRAY_LEN(cps); i++) add(d, &c, &cps[i]);
    CUpti_ActivityMemset4 sets[] = {fake_set(1400, 1410, 3, 0), fake_set(2450, 2460, 5, 14)};
    for (size_t i = 0; i < LWB_ARRAY_LEN(sets); i++) add(d, &c, &sets[i]);
    d->dropped = 3;
    prof_conv_free(&c);
}

static int count_dir(const char *dir) {
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(dp);
    return n;
}

// The innermost NVTX range (same thread) around the launch of the row with this correlation id
// in `table`: the enclosure of Nsight Systems' nvtx_kern_sum.
static void innermost_of_launch(sqlite3 *db, const char *table, int corr, bool graph, char *out,
                                size_t n) {
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT n.label FROM %s k "
             "JOIN CUPTI_ACTIVITY_KIND_RUNTIME r ON r.correlationId = k.correlationId "
             "  AND (r.globalTid & 0xFFFFFFFFFF000000) = k.globalPid AND r.eventClass IN (0, 1) "
             "JOIN " NVTX_LABELED " n ON n.globalTid = r.globalTid AND n.eventType = 59 "
             "  AND n.start <= r.start AND n.end >= r.end "
             "WHERE k.correlationId = %d AND k.graphNodeId IS %s ORDER BY n.start DESC LIMIT 1",
             table, corr, graph ? "NOT NULL" : "NULL");
    q_text(db, sql, out, n);
}

// The innermost range around the creation of the node a graph kernel (or memset) ran as:
// kernel.graphNodeId -> clone row -> original creation row, as TensorRT-LLM's parser joins.
static void innermost_of_capture(sqlite3 *db, const char *table, int node, char *out, size_t n) {
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT n.label FROM %s k "
             "JOIN CUDA_GRAPH_NODE_EVENTS c1 ON c1.graphNodeId = k.graphNodeId "
             "  AND c1.originalGraphNodeId IS NOT NULL "
             "JOIN CUDA_GRAPH_NODE_EVENTS c2 ON c2.graphNodeId = c1.originalGraphNodeId "
             "  AND c2.originalGraphNodeId IS NULL "
             "JOIN " NVTX_LABELED " n ON n.globalTid = c2.globalTid AND n.eventType = 59 "
             "  AND n.start <= c2.start AND n.end >= c2.end "
             "WHERE k.graphNodeId = %d ORDER BY n.start DESC LIMIT 1",
             table, node);
    q_text(db, sql, out, n);
}

static void check_columns(sqlite3 *db) {
    char cols[2048];
    for (size_t i = 0; i < LWB_ARRAY_LEN(nsys_cols); i++) {
        table_cols(db, nsys_cols[i].table, cols, sizeof cols);
        if (strcmp(cols, nsys_cols[i].cols))
            fprintf(stderr, "%s:\n  got  %s\n  want %s\n", nsys_cols[i].table, cols, nsys_cols[i].cols);
        assert_string_equal(cols, nsys_cols[i].cols);
    }
    // Where a real nsys export is at hand (2025.1: the same lists, but MEMCPY without the
    // copyCount that 2025.3 added), the lists match it too.
    sqlite3 *ref = NULL;
    if (sqlite3_open_v2("../shared/data/nsys/nvfuser_xent_nsys2025.1.sqlite", &ref,
                        SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(ref);
        return;
    }
    char theirs[2048];
    int compared = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(nsys_cols); i++) {
        table_cols(ref, nsys_cols[i].table, theirs, sizeof theirs);
        if (!theirs[0]) continue;
        table_cols(db, nsys_cols[i].table, cols, sizeof cols);
        if (!strcmp(nsys_cols[i].table, "CUPTI_ACTIVITY_KIND_MEMCPY"))
            cols[strlen(cols) - strlen(",copyCount")] = 0;
        assert_string_equal(cols, theirs);
        compared++;
    }
    assert_true(compared >= 12);
    sqlite3_close(ref);
}

static void test_write(void **state) {
    (void)state;
    struct scenario s;
    build_scenario(&s);
    char *dir = make_tmpdir();
    char *path = profile_path(dir, 2, 1);
    assert_true(str_ends(path, "/report_np2_rank1.sqlite"));
    char err[512];
    assert_int_equal(prof_write_sqlite(&s.d, path, err, sizeof err), 0);
    assert_int_equal(count_dir(dir), 1); // no temporary file left
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    q_text(db, "PRAGMA integrity_check", err, sizeof err);
    assert_string_equal(err, "ok");
    check_columns(db);

    // Row counts.
    assert_int_equal(q_count(db, "CUPTI_ACTIVITY_KIND_KERNEL"), 5);
    assert_int_equal(q_count(db, "CUPTI_ACTIVITY_KIND_RUNTIME"), 7);
    assert_int_equal(q_count(db, "CUPTI_ACTIVITY_KIND_MEMCPY"), 2);
    assert_int_equal(q_count(db, "CUPTI_ACTIVITY_KIND_MEMSET"), 2);
    assert_int_equal(q_count(db, "NVTX_EVENTS"), 15);
    assert_int_equal(q_count(db, "CUDA_GRAPH_NODE_EVENTS"), 8);
    assert_int_equal(q_count(db, "TARGET_INFO_GPU"), 1);
    assert_int_equal(q_count(db, "PROCESSES"), 1);
    assert_int_equal(q_count(db, "ThreadNames"), 2);

    // Ids: globalPid = 1<<48 | pid<<24; globalTid adds the thread; decodable as nsys's are.
    const int64_t gpid = (1LL << 48) | (4242LL << 24);
    assert_int_equal(q_int(db, "SELECT DISTINCT globalPid FROM CUPTI_ACTIVITY_KIND_KERNEL"), gpid);
    assert_int_equal(q_int(db, "SELECT count(DISTINCT globalPid) FROM CUPTI_ACTIVITY_KIND_MEMSET"), 1);
    assert_int_equal(q_int(db, "SELECT globalPid FROM CUPTI_ACTIVITY_KIND_MEMCPY LIMIT 1"), gpid);
    assert_int_equal(q_int(db, "SELECT globalPid FROM PROCESSES WHERE pid = 4242"), gpid);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE globalTid / 0x1000000 %% "
             "0x1000000 = 4242 AND globalTid %% 0x1000000 = %u AND globalTid >> 48 = 1",
             s.main_tid);
    assert_int_equal(q_int(db, sql), 6);
    snprintf(sql, sizeof sql, "SELECT globalTid FROM " NVTX_LABELED " WHERE label = 'worker'");
    assert_int_equal(q_int(db, sql), gpid | s.worker_tid);
    snprintf(sql, sizeof sql,
             "SELECT s.value FROM ThreadNames t JOIN StringIds s ON s.id = t.nameId "
             "WHERE t.globalTid = %" PRId64, gpid | s.worker_tid);
    q_text(db, sql, err, sizeof err);
    assert_string_equal(err, "lwb-copy");

    // Strings and names.
    q_text(db, "SELECT value FROM StringIds WHERE id = 0", err, sizeof err);
    assert_string_equal(err, "[Unknown]");
    assert_int_equal(q_int(db, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s "
                               "ON s.id = k.shortName WHERE s.value = 'lwb_rmsnorm' AND "
                               "k.demangledName = k.shortName AND k.mangledName = k.shortName"),
                     4);
    q_text(db, "SELECT s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = "
               "k.shortName WHERE k.graphNodeId = 12", err, sizeof err);
    assert_string_equal(err, "gate");
    q_text(db, "SELECT s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = "
               "k.mangledName WHERE k.graphNodeId = 12", err, sizeof err);
    assert_string_equal(err, "_ZN3lwb6detail4gateILi4EEEvPf");
    assert_int_equal(q_int(db, "SELECT count(*) FROM StringIds s JOIN CUPTI_ACTIVITY_KIND_RUNTIME r "
                               "ON r.nameId = s.id WHERE s.value = 'cuLaunchKernel'"),
                     2);
    assert_int_equal(q_int(db, "SELECT count(*) FROM StringIds"),
                     q_int(db, "SELECT count(DISTINCT value) FROM StringIds"));

    // Event classes and types.
    assert_int_equal(q_int(db, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE eventClass = 1"), 6);
    assert_int_equal(q_int(db, "SELECT eventClass FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE correlationId = 7"), 0);
    // NVTX: registered strings in the default domain, as nsys exports nvtx.annotate's ranges.
    assert_int_equal(q_int(db, "SELECT count(*) FROM NVTX_EVENTS n JOIN StringIds s ON s.id = n.textId "
                               "WHERE n.eventType = 59 AND n.domainId = 0 AND n.text IS NULL"),
                     15);
    assert_int_equal(q_int(db, "SELECT count(DISTINCT textId) FROM NVTX_EVENTS"), 12);
    assert_int_equal(q_int(db, "SELECT count(*) FROM NVTX_EVENTS WHERE eventType = 75"), 0);
    assert_int_equal(q_int(db, "SELECT count(*) FROM ENUM_NSYS_EVENT_TYPE WHERE id IN (34, 59, 60, 75)"), 4);
    q_text(db, "SELECT name FROM ENUM_NSYS_EVENT_TYPE WHERE id = 59", err, sizeof err);
    assert_string_equal(err, "NvtxPushPopRange");
    q_text(db, "SELECT name FROM ENUM_NSYS_EVENT_TYPE WHERE id = 75", err, sizeof err);
    assert_string_equal(err, "NvtxDomainCreate");
    assert_int_equal(q_int(db, "SELECT count(*) FROM ENUM_NSYS_EVENT_CLASS WHERE id IN (0, 1, 77)"), 3);
    q_text(db, "SELECT label FROM ENUM_NSYS_EVENT_CLASS WHERE id = 1", err, sizeof err);
    assert_string_equal(err, "CUDA driver");
    assert_int_equal(q_int(db, "SELECT count(*) FROM CUDA_GRAPH_NODE_EVENTS WHERE eventClass = 77"), 8);

    // NVTX: times after t = 0, nesting, markers, the range still open.
    assert_int_equal(q_int(db, "SELECT start FROM " NVTX_LABELED " WHERE label LIKE 'layer_wise_benchmarks args%'"), 100);
    assert_int_equal(q_int(db, "SELECT end - start FROM " NVTX_LABELED " WHERE label LIKE 'layer_wise_benchmarks args%'"), 0);
    assert_int_equal(q_int(db, "SELECT count(*) FROM " NVTX_LABELED " WHERE label LIKE 'layer_wise_benchmarks problem_spec%'"), 3);
    assert_int_equal(q_int(db, "SELECT end FROM " NVTX_LABELED " WHERE label = 'still open'"), -1);
    assert_int_equal(q_int(db, "SELECT end FROM " NVTX_LABELED " WHERE label = 'b=4 s=1 past=0 NP2'"), 1180);

    // Eager kernels, the memset and both copies: launch -> innermost range on the same thread.
    innermost_of_launch(db, "CUPTI_ACTIVITY_KIND_KERNEL", 1, false, err, sizeof err);
    assert_string_equal(err, "MLA");
    innermost_of_launch(db, "CUPTI_ACTIVITY_KIND_KERNEL", 2, false, err, sizeof err);
    assert_string_equal(err, "MoE");
    innermost_of_launch(db, "CUPTI_ACTIVITY_KIND_MEMSET", 3, false, err, sizeof err);
    assert_string_equal(err, "MoE");
    innermost_of_launch(db, "CUPTI_ACTIVITY_KIND_MEMCPY", 4, false, err, sizeof err);
    assert_string_equal(err, "MoE");
    innermost_of_launch(db, "CUPTI_ACTIVITY_KIND_MEMCPY", 6, false, err, sizeof err);
    assert_string_equal(err, "worker");
    // Graph kernels: the launch is the replay inside the iteration range ...
    innermost_of_launch(db, "CUPTI_ACTIVITY_KIND_KERNEL", 5, true, err, sizeof err);
    assert_string_equal(err, "b=4 s=2 past=0 NP2");
    assert_int_equal(q_int(db, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL WHERE correlationId = 5 "
                               "AND graphNodeId IS NOT NULL"),
                     3);
    // ... and the node chain leads to the capture-time module ranges.
    innermost_of_capture(db, "CUPTI_ACTIVITY_KIND_KERNEL", 11, err, sizeof err);
    assert_string_equal(err, "MLA");
    innermost_of_capture(db, "CUPTI_ACTIVITY_KIND_KERNEL", 12, err, sizeof err);
    assert_string_equal(err, "DeepseekV3Gate");
    innermost_of_capture(db, "CUPTI_ACTIVITY_KIND_KERNEL", 13, err, sizeof err);
    assert_string_equal(err, "MoE");
    innermost_of_capture(db, "CUPTI_ACTIVITY_KIND_MEMSET", 14, err, sizeof err);
    assert_string_equal(err, "MoE");
    assert_int_equal(q_int(db, "SELECT count(*) FROM CUDA_GRAPH_NODE_EVENTS WHERE originalGraphNodeId IS NULL"), 4);
    assert_int_equal(q_int(db, "SELECT originalGraphNodeId FROM CUDA_GRAPH_NODE_EVENTS WHERE graphNodeId = 13"), 3);
    assert_int_equal(q_int(db, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL WHERE graphNodeId = 0"), 0);

    // Values carried over.
    assert_int_equal(q_int(db, "SELECT copyKind FROM CUPTI_ACTIVITY_KIND_MEMCPY WHERE correlationId = 6"), 1);
    assert_int_equal(q_int(db, "SELECT srcKind FROM CUPTI_ACTIVITY_KIND_MEMCPY WHERE correlationId = 6"), 1);
    assert_int_equal(q_int(db, "SELECT copyCount FROM CUPTI_ACTIVITY_KIND_MEMCPY WHERE correlationId = 6"), 1);
    assert_int_equal(q_int(db, "SELECT memKind FROM CUPTI_ACTIVITY_KIND_MEMSET WHERE correlationId = 3"), 2);
    assert_int_equal(q_int(db, "SELECT bytes FROM CUPTI_ACTIVITY_KIND_MEMSET WHERE correlationId = 3"), 58720256);
    assert_int_equal(q_int(db, "SELECT end - start FROM CUPTI_ACTIVITY_KIND_KERNEL WHERE graphNodeId = 12"), 50);
    assert_int_equal(q_int(db, "SELECT gridX * blockX FROM CUPTI_ACTIVITY_KIND_KERNEL LIMIT 1"), 4096 * 128);
    assert_int_equal(q_int(db, "SELECT smCount FROM TARGET_INFO_GPU"), 132);
    assert_int_equal(q_int(db, "SELECT totalMemory FROM TARGET_INFO_GPU"), 85045379072LL);
    assert_int_equal(q_int(db, "SELECT computeMajor * 10 + computeMinor FROM TARGET_INFO_GPU"), 90);
    assert_int_equal(q_int(db, "SELECT vmId FROM TARGET_INFO_GPU"), 1LL << 48);
    q_text(db, "SELECT name FROM TARGET_INFO_GPU", err, sizeof err);
    assert_string_equal(err, "NVIDIA H100 80GB HBM3");
    assert_int_equal(q_int(db, "SELECT utcEpochNs FROM TARGET_INFO_SESSION_START_TIME"), 1763900000123456789LL);
    q_text(db, "SELECT utcTime FROM TARGET_INFO_SESSION_START_TIME", err, sizeof err);
    assert_string_equal(err, "2025-11-23T12:13:20");

    // Metadata: who wrote it and which schema it follows.
    q_text(db, "SELECT value FROM META_DATA_EXPORT WHERE name = 'EXPORT_PRODUCT_NAME'", err, sizeof err);
    assert_string_equal(err, "lwb");
    q_text(db, "SELECT value FROM META_DATA_EXPORT WHERE name = 'EXPORT_PRODUCT_VERSION'", err, sizeof err);
    assert_string_equal(err, LWB_VERSION);
    q_text(db, "SELECT value FROM META_DATA_EXPORT WHERE name = 'EXPORT_SCHEMA_VERSION'", err, sizeof err);
    assert_string_equal(err, "3.20.3");
    q_text(db, "SELECT value FROM META_DATA_EXPORT WHERE name = 'LWB_DROPPED_RECORDS'", err, sizeof err);
    assert_string_equal(err, "3");
    q_text(db, "SELECT value FROM META_DATA_CAPTURE WHERE name = 'PROCESS_0:CUDA_GRAPH_TRACE_OPTIONS:MODE'",
           err, sizeof err);
    assert_string_equal(err, "Node");
    sqlite3_close(db);

    // Writing again replaces the file in one step.
    s.d.rank = 0;
    assert_int_equal(prof_write_sqlite(&s.d, path, err, sizeof err), 0);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    q_text(db, "SELECT value FROM META_DATA_EXPORT WHERE name = 'LWB_RANK'", err, sizeof err);
    assert_string_equal(err, "0");
    sqlite3_close(db);
    assert_int_equal(count_dir(dir), 1);
    free(path);
    rm_rf(dir);
    free(dir);
    prof_data_free(&s.d);
}

// ---------------------------------------------------------------------------------------------
// TensorRT-LLM's parse.py on lwb's file: its queries (examples/layer_wise_benchmarks/parse.py,
// newest version), re-expressed with its attribution. It finds event types by name, the NCCL
// domain by its domain-create row's text, and markers and ranges only through
// NVTX_EVENTS.textId -> StringIds, where domainId is not NULL: with names as inline text it finds
// no problem at all, and indexing that empty list with its first kernel is an IndexError.

static const char ref_markers_sql[] =
    "SELECT T1.start, T2.value AS text FROM NVTX_EVENTS AS T1 JOIN StringIds AS T2 ON T1.textId = T2.id "
    "WHERE eventType = ? AND T2.value LIKE ?";
static const char ref_ranges_sql[] =
    "SELECT T1.start, T1.end, T2.value AS text FROM NVTX_EVENTS AS T1 JOIN StringIds AS T2 ON T1.textId = T2.id "
    "WHERE eventType = ? AND T2.value NOT LIKE ? AND domainId != ?";
// Kernels, copies (name -2) and memsets (name -3) with their launch; the launch's times, or for
// a graph node the times of its creation during capture. Every table lwb writes exists, so the
// query has all its optional parts.
#define REF_UNIFIED                                                                                \
    "(SELECT T1.start, T1.end, T1.demangledName, T1.correlationId, T1.graphNodeId "               \
    "FROM CUPTI_ACTIVITY_KIND_KERNEL AS T1 UNION ALL "                                             \
    "SELECT T2.start, T2.end, -2 AS demangledName, T2.correlationId, T2.graphNodeId "             \
    "FROM CUPTI_ACTIVITY_KIND_MEMCPY AS T2 UNION ALL "                                             \
    "SELECT T3.start, T3.end, -3 AS demangledName, T3.correlationId, T3.graphNodeId "             \
    "FROM CUPTI_ACTIVITY_KIND_MEMSET AS T3) AS unified "
static const char ref_kernels_sql[] =
    "SELECT unified.start, unified.end, unified.demangledName, R.start AS runtime_start, "
    "R.start AS capture_start, R.end AS capture_end FROM " REF_UNIFIED
    "JOIN CUPTI_ACTIVITY_KIND_RUNTIME AS R ON unified.correlationId = R.correlationId "
    "WHERE unified.graphNodeId IS NULL UNION ALL "
    "SELECT unified.start, unified.end, unified.demangledName, R.start AS runtime_start, "
    "CGE2.start AS capture_start, CGE2.end AS capture_end FROM " REF_UNIFIED
    "JOIN CUPTI_ACTIVITY_KIND_RUNTIME AS R ON unified.graphNodeId IS NOT NULL AND "
    "unified.correlationId = R.correlationId "
    "LEFT JOIN CUDA_GRAPH_NODE_EVENTS AS CGE1 ON unified.graphNodeId = CGE1.graphNodeId AND "
    "CGE1.originalGraphNodeId IS NOT NULL "
    "LEFT JOIN CUDA_GRAPH_NODE_EVENTS AS CGE2 ON CGE1.originalGraphNodeId = CGE2.graphNodeId";

static sqlite3_stmt *q_prepare(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "bad SQL: %s: %s\n", sqlite3_errmsg(db), sql);
        fail();
    }
    return st;
}

// Python's bisect.bisect: the number of entries <= x in ascending a.
static int bisect_right(const int64_t *a, int n, int64_t x) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (x < a[mid]) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

static void test_reference_queries(void **state) {
    (void)state;
    struct scenario s;
    build_scenario(&s);
    char *dir = make_tmpdir();
    char *path = profile_path(dir, 2, 1);
    char err[512];
    assert_int_equal(prof_write_sqlite(&s.d, path, err, sizeof err), 0);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);

    // Event types by name (it takes the first match: a missing name is an IndexError), and the
    // NCCL domain (-1 without one).
    int64_t pushpop = q_int(db, "SELECT id FROM ENUM_NSYS_EVENT_TYPE WHERE name = 'NvtxPushPopRange'");
    int64_t domain_create = q_int(db, "SELECT id FROM ENUM_NSYS_EVENT_TYPE WHERE name = 'NvtxDomainCreate'");
    assert_int_equal(pushpop, 59);
    assert_int_equal(domain_create, 75);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT domainId FROM NVTX_EVENTS WHERE eventType = %" PRId64 " AND text = 'NCCL'",
             domain_create);
    int64_t nccl = q_int(db, sql) == -2 ? -1 : q_int(db, sql);
    assert_int_equal(nccl, -1);

    // Markers: the run's arguments and each problem's start.
    sqlite3_stmt *st = q_prepare(db, ref_markers_sql);
    sqlite3_bind_int64(st, 1, pushpop);
    sqlite3_bind_text(st, 2, "layer_wise_benchmarks %", -1, SQLITE_STATIC);
    json_t *run_args = NULL;
    int64_t problem_start[8];
    int np = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 1);
        if (str_starts(text, "layer_wise_benchmarks args {")) {
            json_decref(run_args);
            run_args = json_loads(text + strlen("layer_wise_benchmarks args"), 0, NULL);
            assert_non_null(run_args);
        } else if (str_starts(text, "layer_wise_benchmarks problem_spec {")) {
            json_t *spec = json_loads(text + strlen("layer_wise_benchmarks problem_spec "), 0, NULL);
            assert_non_null(spec);
            json_decref(spec);
            assert_true(np < 8);
            problem_start[np++] = sqlite3_column_int64(st, 0);
        }
    }
    sqlite3_finalize(st);
    assert_non_null(run_args);
    assert_true(json_is_integer(json_object_get(run_args, "warmup_times")));
    json_decref(run_args);
    assert_int_equal(np, 3);
    assert_int_equal(problem_start[0], 200);
    assert_int_equal(problem_start[1], 1000);
    assert_int_equal(problem_start[2], 2000);

    // Ranges: iterations ("b=<B> s=<Q> ...") and module ranges, each in the problem it starts in.
    struct ref_range {
        int64_t start, end; // end -1: open (NULL, which no comparison passes)
        char text[64];
    } ranges[3][8];
    int nranges[3] = {0}, nruns[3] = {0};
    int64_t run_start[3][4], run_end[3][4];
    regex_t iteration;
    assert_int_equal(regcomp(&iteration, "^b=[0-9]+ s=[0-9]+ ", REG_EXTENDED | REG_NOSUB), 0);
    st = q_prepare(db, ref_ranges_sql);
    sqlite3_bind_int64(st, 1, pushpop);
    sqlite3_bind_text(st, 2, "[DG]%", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, nccl);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t start = sqlite3_column_int64(st, 0);
        int64_t end = sqlite3_column_type(st, 1) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 1);
        const char *text = (const char *)sqlite3_column_text(st, 2);
        int p = bisect_right(problem_start, np, start) - 1;
        if (str_starts(text, "layer_wise_benchmarks ") && strcmp(text, "layer_wise_benchmarks ignore")) continue;
        assert_int_not_equal(p, -1);
        if (regexec(&iteration, text, 0, NULL, 0) == 0) {
            assert_true(nruns[p] < 4);
            run_start[p][nruns[p]] = start, run_end[p][nruns[p]++] = end;
        } else {
            assert_true(nranges[p] < 8);
            struct ref_range *r = &ranges[p][nranges[p]++];
            *r = (struct ref_range){start, end, ""};
            snprintf(r->text, sizeof r->text, "%s", text);
        }
    }
    sqlite3_finalize(st);
    regfree(&iteration);
    assert_int_equal(nruns[0], 0), assert_int_equal(nranges[0], 4); // the capture's module ranges
    assert_int_equal(nruns[1], 1), assert_int_equal(nranges[1], 3); // MLA, Deepseekv3MoE > MoE
    assert_int_equal(nruns[2], 1), assert_int_equal(nranges[2], 2); // worker, still open
    assert_int_equal(run_start[1][0], 1100);
    assert_int_equal(run_end[1][0], 1180);

    // Kernels: problem by GPU start, run by launch, module path by the launch (or capture) time
    // inside a range of that problem.
    struct {
        int problem;
        const char *name, *path;
        int64_t capture_start;
        int seen;
    } want[] = {
        {1, "lwb_rmsnorm", "MLA", 1115, 0},
        {1, "lwb_rmsnorm", "Deepseekv3MoE > MoE", 1145, 0},
        {1, "Memset", "Deepseekv3MoE > MoE", 1150, 0},
        {1, "Memcpy", "Deepseekv3MoE > MoE", 1153, 0},
        // The graph was captured under problem 0: its nodes' creation lies in none of problem 2's
        // ranges, and the reference leaves them without a path.
        {2, "lwb_rmsnorm", "", 310, 0},
        {2, "gate", "", 420, 0}, // demangled, where the demangler is at hand
        {2, "lwb_rmsnorm", "", 450, 0},
        {2, "Memset", "", 455, 0},
    };
    st = q_prepare(db, ref_kernels_sql);
    int rows = 0, kept = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        int64_t kstart = sqlite3_column_int64(st, 0), name_id = sqlite3_column_int64(st, 2);
        int64_t runtime_start = sqlite3_column_int64(st, 3);
        assert_int_not_equal(sqlite3_column_type(st, 4), SQLITE_NULL); // the node chain resolved
        int64_t cap_start = sqlite3_column_int64(st, 4), cap_end = sqlite3_column_int64(st, 5);
        int p = bisect_right(problem_start, np, kstart) - 1;
        assert_int_not_equal(p, -1);
        int run = bisect_right(run_start[p], nruns[p], runtime_start) - 1;
        if (run == -1 || runtime_start >= run_end[p][run]) continue;
        kept++;
        char name[64], kpath[256] = "";
        if (name_id == -2 || name_id == -3) {
            snprintf(name, sizeof name, "%s", name_id == -2 ? "Memcpy" : "Memset");
        } else {
            snprintf(sql, sizeof sql, "SELECT value FROM StringIds WHERE id = %" PRId64, name_id);
            q_text(db, sql, name, sizeof name);
        }
        for (int i = 0; i < nranges[p]; i++) {
            const struct ref_range *r = &ranges[p][i];
            if (r->end < 0 || cap_start < r->start || cap_end > r->end) continue;
            if (kpath[0]) strncat(kpath, " > ", sizeof kpath - strlen(kpath) - 1);
            strncat(kpath, r->text, sizeof kpath - strlen(kpath) - 1);
        }
        int found = 0;
        for (size_t k = 0; k < LWB_ARRAY_LEN(want) && !found; k++)
            if (want[k].problem == p && strstr(name, want[k].name) && !strcmp(want[k].path, kpath) &&
                want[k].capture_start == cap_start && !want[k].seen)
                want[k].seen = found = 1;
        if (!found) fprintf(stderr, "unexpected: problem %d, %s under \"%s\", capture at %" PRId64 "\n", p, name,
                            kpath, cap_start);
        assert_true(found);
    }
    sqlite3_finalize(st);
    assert_int_equal(rows, 9); // and the worker's copy, launched after problem 2's only run
    assert_int_equal(kept, (int)LWB_ARRAY_LEN(want));

    sqlite3_close(db);
    free(path);
    rm_rf(dir);
    free(dir);
    prof_data_free(&s.d);
}

static void test_write_empty(void **state) {
    (void)state;
    struct lwb_prof_data d = {.pid = 1, .world_size = 1};
    char *dir = make_tmpdir();
    char *path = profile_path(dir, 1, 0);
    char err[512];
    assert_int_equal(prof_write_sqlite(&d, path, err, sizeof err), 0);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    check_columns(db); // every table exists, empty or not
    assert_int_equal(q_count(db, "CUPTI_ACTIVITY_KIND_KERNEL"), 0);
    assert_int_equal(q_count(db, "NVTX_EVENTS"), 0);
    sqlite3_close(db);
    free(path);
    rm_rf(dir);
    free(dir);
    prof_data_free(&d);
}

// A profiler that is on, with nothing recorded, whose folder cannot be made.
static void write_unwritable(void *arg) {
    struct lwb_profiler p = {.on = true, .mu = PTHREAD_MUTEX_INITIALIZER};
    p.data.world_size = 1;
    profile_write(&p, (const char *)arg);
}

static void test_write_atomic(void **state) {
    (void)state;
    struct scenario s;
    build_scenario(&s);
    char *dir = make_tmpdir();
    char err[512];
    // A folder that cannot exist: its parent is a file. (Tests may run as root, which ignores
    // permission bits, so that is the failure used.)
    char *file = lwb_path_join(dir, "not-a-dir");
    assert_int_equal(lwb_write_file_atomic(file, "x", 1), 0);
    char *bad = lwb_path_join(file, "report_np1_rank0.sqlite");
    assert_int_equal(prof_write_sqlite(&s.d, bad, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
    assert_int_equal(count_dir(dir), 1); // only the file
    // The target is a folder: everything is written, the rename fails, nothing is left.
    char *target = lwb_path_join(dir, "report_np2_rank1.sqlite");
    assert_int_equal(mkdir(target, 0755), 0);
    assert_int_equal(prof_write_sqlite(&s.d, target, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot rename"));
    assert_int_equal(count_dir(dir), 2);
    assert_int_equal(count_dir(target), 0);
    struct stat st;
    assert_int_equal(stat(target, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    // A profile written next to an older one replaces it whole; no temporary file is left.
    char *old = lwb_path_join(dir, "old.sqlite");
    assert_int_equal(lwb_write_file_atomic(old, "older", 5), 0);
    assert_int_equal(prof_write_sqlite(&s.d, old, err, sizeof err), 0);
    assert_int_equal(count_dir(dir), 3);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(old, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(q_count(db, "CUPTI_ACTIVITY_KIND_KERNEL"), 5);
    sqlite3_close(db);
    // profile_write: one line, exit 1.
    struct child_result r;
    run_child(write_unwritable, bad, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "cannot create the profile folder"));
    assert_int_equal(count_lines(r.err), 1);
    free(file), free(bad), free(target), free(old);
    rm_rf(dir);
    free(dir);
    prof_data_free(&s.d);
}

static void test_off(void **state) {
    (void)state;
    // A profiler that is off (under nsys, or never initialised) does nothing and writes nothing.
    struct lwb_profiler p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    profile_begin(&p);
    profile_end(&p);
    assert_null(profile_write(&p, "/nonexistent/never"));
    profile_free(&p);
    // Under nsys, profile_init returns at once: CUPTI is not loaded, nothing is recorded.
    const char *saved = getenv("NSYS_PROFILING_SESSION_ID");
    char *keep = saved ? xstrdup(saved) : NULL;
    setenv("NSYS_PROFILING_SESSION_ID", "1", 1);
    struct lwb_device dev = {0};
    profile_init(&p, &dev, 0, 1);
    assert_false(p.on);
    assert_false(lwb_cupti.loaded);
    assert_int_equal(__atomic_load_n(&lwb_nvtx_rec.on, __ATOMIC_RELAXED), 0);
    profile_free(&p);
    if (keep) setenv("NSYS_PROFILING_SESSION_ID", keep, 1);
    else unsetenv("NSYS_PROFILING_SESSION_ID");
    free(keep);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nsys_detection), cmocka_unit_test(test_nvtx_off),
        cmocka_unit_test(test_nvtx_record),    cmocka_unit_test(test_nvtx_registered),
        cmocka_unit_test(test_kernel_names),
        cmocka_unit_test(test_convert),        cmocka_unit_test(test_nodes_resolve),
        cmocka_unit_test(test_write),          cmocka_unit_test(test_reference_queries),
        cmocka_unit_test(test_write_empty),
        cmocka_unit_test(test_write_atomic),   cmocka_unit_test(test_off),
    };
    return cmocka_run_group_tests_name("profile", tests, NULL, NULL);
}

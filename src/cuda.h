// cuda.h: the CUDA driver API, loaded at run time, and the device lwb runs on.
//
// Defines: struct lwb_cu_api (one pointer per driver entry point lwb uses, typed from the
// toolkit's own header, resolved under the versioned names that header maps to), lwb_cu (the
// table), cu_try_load / cu_load, CU_CHECK, struct lwb_device (properties read once), device_open,
// dev_alloc/dev_free (device memory with a running total), cu_launch, stream_wait, upload_wait,
// time_cold_us (a launch sequence's time from a cold L2).
//
// Does not: link against libcuda (lwb starts on machines without a driver), or use the runtime
// API (libcudart): every call goes through the driver.
// Tested by test/test_libs.c (loading errors); on the GPU by test/gpu/.
#pragma once
#include <cuda.h>
#include <cudaProfiler.h>

// X(name): `name` as written in the toolkit header. Where cuda.h #defines it to a versioned
// symbol (cuMemAlloc -> cuMemAlloc_v2), both the field and the looked-up string follow.
#define LWB_CU_FUNCS(X)                                                                            \
    X(cuInit)                                                                                      \
    X(cuDriverGetVersion)                                                                          \
    X(cuGetErrorString)                                                                            \
    X(cuGetErrorName)                                                                              \
    X(cuDeviceGet)                                                                                 \
    X(cuDeviceGetCount)                                                                            \
    X(cuDeviceGetName)                                                                             \
    X(cuDeviceGetAttribute)                                                                        \
    X(cuDeviceTotalMem)                                                                            \
    X(cuDevicePrimaryCtxRetain)                                                                    \
    X(cuDevicePrimaryCtxRelease)                                                                   \
    X(cuCtxSetCurrent)                                                                             \
    X(cuCtxSynchronize)                                                                            \
    X(cuMemGetInfo)                                                                                \
    X(cuMemAlloc)                                                                                  \
    X(cuMemFree)                                                                                   \
    X(cuMemAllocHost)                                                                              \
    X(cuMemFreeHost)                                                                               \
    X(cuMemcpyHtoD)                                                                                \
    X(cuMemcpyDtoH)                                                                                \
    X(cuMemcpyHtoDAsync)                                                                           \
    X(cuMemcpyDtoHAsync)                                                                           \
    X(cuMemcpyDtoDAsync)                                                                           \
    X(cuMemcpy2DAsync)                                                                             \
    X(cuMemsetD8Async)                                                                             \
    X(cuMemsetD32Async)                                                                            \
    X(cuModuleLoadData)                                                                            \
    X(cuModuleUnload)                                                                              \
    X(cuModuleGetFunction)                                                                         \
    X(cuFuncSetAttribute)                                                                          \
    X(cuFuncGetAttribute)                                                                          \
    X(cuLaunchKernel)                                                                              \
    X(cuLaunchKernelEx)                                                                            \
    X(cuOccupancyMaxActiveBlocksPerMultiprocessor)                                                 \
    X(cuStreamCreate)                                                                              \
    X(cuStreamDestroy)                                                                             \
    X(cuStreamSynchronize)                                                                         \
    X(cuStreamQuery)                                                                               \
    X(cuStreamIsCapturing)                                                                         \
    X(cuStreamWaitEvent)                                                                           \
    X(cuStreamBeginCapture)                                                                        \
    X(cuStreamEndCapture)                                                                          \
    X(cuGraphInstantiateWithFlags)                                                                 \
    X(cuGraphLaunch)                                                                               \
    X(cuGraphDestroy)                                                                              \
    X(cuGraphExecDestroy)                                                                          \
    X(cuEventCreate)                                                                               \
    X(cuEventRecord)                                                                               \
    X(cuEventSynchronize)                                                                          \
    X(cuEventQuery)                                                                                \
    X(cuEventElapsedTime)                                                                          \
    X(cuEventDestroy)                                                                              \
    X(cuProfilerStart)                                                                             \
    X(cuProfilerStop)                                                                              \
    X(cuTensorMapEncodeTiled)

struct lwb_cu_api {
#define LWB_CU_FIELD(f) __typeof__(f) *f;
    LWB_CU_FUNCS(LWB_CU_FIELD)
#undef LWB_CU_FIELD
    struct lwb_dl dl;
    bool loaded;
};

static struct lwb_cu_api lwb_cu;

static const char *cu_errstr(CUresult r) {
    const char *name = NULL, *msg = NULL;
    if (!lwb_cu.loaded) return "driver not loaded";
    lwb_cu.cuGetErrorName(r, &name);
    lwb_cu.cuGetErrorString(r, &msg);
    static __thread char buf[256];
    snprintf(buf, sizeof buf, "%s: %s", name ? name : "?", msg ? msg : "unknown error");
    return buf;
}
#define CU_CHECK(call) LWB_CHECK_GEN("CUDA driver", call, r_ == CUDA_SUCCESS, cu_errstr)

// Load the driver; false with `err` filled (one line: library, what was tried, how to fix).
static bool cu_try_load(char *err, size_t n) {
    if (lwb_cu.loaded) return true;
    static const char *const names[] = {"libcuda.so.1", "libcuda.so", NULL};
    struct lwb_dl *dl = &lwb_cu.dl;
    if (!dl_open(dl, "LWB_CUDA_PATH", names)) {
        snprintf(err, n,
                 "cannot load the CUDA driver library (tried %s: %s); install the NVIDIA driver "
                 "or set LWB_CUDA_PATH to libcuda.so.1",
                 dl->tried, dl->error);
        return false;
    }
#define LWB_CU_RESOLVE(f)                                                                          \
    if (!(lwb_cu.f = (__typeof__(f) *)dl_sym(dl, LWB_XSTR(f)))) {                                  \
        snprintf(err, n, "%s; the driver is too old for lwb (it needs CUDA 12.8 or newer)",        \
                 dl->error);                                                               \
        return false;                                                                              \
    }
    LWB_CU_FUNCS(LWB_CU_RESOLVE)
#undef LWB_CU_RESOLVE
    lwb_cu.loaded = true;
    return true;
}

static void cu_load(void) {
    char err[2048];
    if (!cu_try_load(err, sizeof err)) lwb_fatal("%s", err);
}

// ---------------------------------------------------------------------------------------------
// The device

struct lwb_device {
    int ordinal;
    CUdevice dev;
    CUcontext ctx;             // the primary context
    char name[128];            // "NVIDIA H100 80GB HBM3"
    int cc_major, cc_minor;    // compute capability
    char arch[16];             // NVRTC target: "sm_90a" on Hopper, "sm_XY" otherwise
    int sm_count;              // multiprocessors
    size_t total_mem;          // bytes
    int l2_bytes;              // L2 cache size
    int smem_optin;            // max dynamic shared memory per block after opting in, bytes
    int mem_clock_khz;         // memory clock
    int mem_bus_bits;          // memory bus width
    int sm_clock_khz;          // SM clock
    int driver_version;        // e.g. 13000
};

// Open device `ordinal` (lwb_proc.device is set for messages). Fails with one line when there
// is no GPU or the driver cannot start.
static void device_open(struct lwb_device *d, int ordinal) {
    cu_load();
    CUresult r = lwb_cu.cuInit(0);
    if (r != CUDA_SUCCESS)
        lwb_fatal("the CUDA driver could not start (%s); is there a GPU on this machine? "
                  "(nvidia-smi shows what the driver sees)",
                  cu_errstr(r));
    int count = 0;
    CU_CHECK(lwb_cu.cuDeviceGetCount(&count));
    if (count == 0) lwb_fatal("no CUDA device found (nvidia-smi shows what the driver sees)");
    if (ordinal >= count)
        lwb_fatal("device %d requested but only %d CUDA device%s visible; check CUDA_VISIBLE_DEVICES "
                  "or use fewer ranks",
                  ordinal, count, count == 1 ? " is" : "s are");
    *d = (struct lwb_device){.ordinal = ordinal};
    lwb_proc.device = ordinal;
    CU_CHECK(lwb_cu.cuDeviceGet(&d->dev, ordinal));
    CU_CHECK(lwb_cu.cuDevicePrimaryCtxRetain(&d->ctx, d->dev));
    CU_CHECK(lwb_cu.cuCtxSetCurrent(d->ctx));
    CU_CHECK(lwb_cu.cuDeviceGetName(d->name, sizeof d->name, d->dev));
    CU_CHECK(lwb_cu.cuDeviceTotalMem(&d->total_mem, d->dev));
    CU_CHECK(lwb_cu.cuDriverGetVersion(&d->driver_version));
    struct {
        int *dst;
        CUdevice_attribute attr;
    } attrs[] = {
        {&d->cc_major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR},
        {&d->cc_minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR},
        {&d->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT},
        {&d->l2_bytes, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE},
        {&d->smem_optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN},
        {&d->mem_clock_khz, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE},
        {&d->mem_bus_bits, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH},
        {&d->sm_clock_khz, CU_DEVICE_ATTRIBUTE_CLOCK_RATE},
    };
    for (size_t i = 0; i < LWB_ARRAY_LEN(attrs); i++)
        CU_CHECK(lwb_cu.cuDeviceGetAttribute(attrs[i].dst, attrs[i].attr, d->dev));
    // Hopper's wgmma/setmaxnreg need the architecture-specific target.
    snprintf(d->arch, sizeof d->arch, "sm_%d%d%s", d->cc_major, d->cc_minor,
             d->cc_major == 9 && d->cc_minor == 0 ? "a" : "");
}

// ---------------------------------------------------------------------------------------------
// Device memory with a running total (the memory plan is checked against it).

static size_t lwb_dev_bytes; // bytes lwb holds on the device now

static CUdeviceptr dev_alloc(size_t bytes, const char *what) {
    CUdeviceptr p = 0;
    if (bytes == 0) bytes = 256;
    CUresult r = lwb_cu.cuMemAlloc(&p, bytes);
    if (r != CUDA_SUCCESS) {
        size_t free_b = 0, total_b = 0;
        lwb_cu.cuMemGetInfo(&free_b, &total_b);
        lwb_fatal("cannot allocate %.2f GiB on the device for %s (%s; %.2f GiB free of %.2f GiB, "
                  "lwb holds %.2f GiB)",
                  (double)bytes / (1 << 30), what, cu_errstr(r), (double)free_b / (1 << 30),
                  (double)total_b / (1 << 30), (double)lwb_dev_bytes / (1 << 30));
    }
    lwb_dev_bytes += bytes;
    return p;
}

static void dev_free(CUdeviceptr p, size_t bytes) {
    if (!p) return;
    CU_CHECK(lwb_cu.cuMemFree(p));
    lwb_dev_bytes -= bytes ? bytes : 256;
}

// ---------------------------------------------------------------------------------------------
// Launch helper: grid/block/shared memory and a packed argument list.

struct lwb_launch {
    unsigned grid[3];
    unsigned block[3];
    unsigned smem; // dynamic shared memory, bytes
};

static void cu_launch(CUfunction f, struct lwb_launch l, CUstream s, void **args) {
    CU_CHECK(lwb_cu.cuLaunchKernel(f, l.grid[0], l.grid[1] ? l.grid[1] : 1, l.grid[2] ? l.grid[2] : 1,
                                   l.block[0], l.block[1] ? l.block[1] : 1,
                                   l.block[2] ? l.block[2] : 1, l.smem, s, args, NULL));
}

// Wait for a stream, polling, and fail with a message instead of hanging when the work does not
// finish in `timeout_s` seconds (a deadlocked kernel, a lost peer).
static void stream_wait(CUstream s, double timeout_s, const char *what) {
    double t0 = lwb_now(), next_hook = t0 + 0.1;
    timeout_s = LWB_MAX(timeout_s, lwb_proc.wait_floor_s);
    for (unsigned spin = 0;; spin++) {
        CUresult r = lwb_cu.cuStreamQuery(s);
        if (r == CUDA_SUCCESS) return;
        if (r != CUDA_ERROR_NOT_READY)
            lwb_check_failed("CUDA driver", "cuStreamQuery", __FILE__, __LINE__, r, cu_errstr(r));
        double now = lwb_now();
        if (lwb_proc.wait_hook && now > next_hook) {
            lwb_proc.wait_hook(now - t0, what);
            next_hook = now + 0.1;
        }
        if (now - t0 > timeout_s)
            lwb_fatal("%s did not finish within %.0f s; giving up (a kernel is stuck)", what, timeout_s);
        if (spin > 1000) usleep(spin > 100000 ? 1000 : 50);
    }
}

// Copy host bytes to the device in stream order and wait for them: a plain cuMemcpyHtoD from
// pageable memory may still be in flight when it returns, and lwb's streams do not wait for the
// legacy stream.
static void upload_wait(CUstream s, CUdeviceptr dst, const void *src, size_t bytes) {
    CU_CHECK(lwb_cu.cuMemcpyHtoDAsync(dst, src, bytes, s));
    stream_wait(s, 60, "a host-to-device copy");
}

// ---------------------------------------------------------------------------------------------
// Timing from a cold L2: `fn` enqueues the work on the stream. `reps` flushes of `flush` (at least
// twice the L2), each followed by the work, take this much longer than the same flushes alone:
// that difference per run is one sample, so neither the flush nor the fixed cost of an event pair
// (microseconds: more than a small kernel takes) is charged to the work. Median of `rounds`
// samples, in microseconds.
static double time_flushed_ms(CUstream s, CUdeviceptr flush, size_t flush_bytes, void (*fn)(void *, CUstream),
                              void *arg, int reps, CUevent e0, CUevent e1) {
    CU_CHECK(lwb_cu.cuEventRecord(e0, s));
    for (int i = 0; i < reps; i++) {
        CU_CHECK(lwb_cu.cuMemsetD8Async(flush, (unsigned char)i, flush_bytes, s));
        if (fn) fn(arg, s);
    }
    CU_CHECK(lwb_cu.cuEventRecord(e1, s));
    stream_wait(s, 300, "a timed launch sequence");
    float ms;
    CU_CHECK(lwb_cu.cuEventElapsedTime(&ms, e0, e1));
    return ms;
}

static double time_cold_us(CUstream s, CUdeviceptr flush, size_t flush_bytes, void (*fn)(void *, CUstream), void *arg,
                           int reps, int rounds) {
    CUevent e0, e1;
    CU_CHECK(lwb_cu.cuEventCreate(&e0, CU_EVENT_DEFAULT));
    CU_CHECK(lwb_cu.cuEventCreate(&e1, CU_EVENT_DEFAULT));
    fn(arg, s); // warm (first launches load code)
    double *t = xcalloc((size_t)rounds, sizeof *t);
    for (int i = 0; i < rounds; i++) {
        double base = time_flushed_ms(s, flush, flush_bytes, NULL, NULL, reps, e0, e1);
        double with = time_flushed_ms(s, flush, flush_bytes, fn, arg, reps, e0, e1);
        t[i] = (with - base) * 1e3 / reps;
    }
    for (int i = 1; i < rounds; i++) // insertion sort: rounds is small
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1], t[j - 1] = x;
        }
    double med = t[rounds / 2];
    free(t);
    CU_CHECK(lwb_cu.cuEventDestroy(e0));
    CU_CHECK(lwb_cu.cuEventDestroy(e1));
    return med;
}

// cupti.h: CUPTI (the CUDA profiling interface), loaded at run time for lwb's built-in profiler.
//
// Defines: struct lwb_cupti_api, lwb_cupti (the table), cupti_try_load / cupti_load, CUPTI_CHECK.
//
// Does not: profile anything itself (profile.h turns activity records into an nsys-shaped
// SQLite file), or load when lwb runs under Nsight Systems (which owns CUPTI then).
// Tested by test/test_libs.c (loading); on the GPU by test/gpu/.
#pragma once
#include <cupti.h>

#define LWB_CUPTI_FUNCS(X)                                                                         \
    X(cuptiGetVersion)                                                                             \
    X(cuptiGetResultString)                                                                        \
    X(cuptiActivityEnable)                                                                         \
    X(cuptiActivityDisable)                                                                        \
    X(cuptiActivityRegisterCallbacks)                                                              \
    X(cuptiActivityFlushAll)                                                                       \
    X(cuptiActivityGetNextRecord)                                                                  \
    X(cuptiActivityGetNumDroppedRecords)                                                           \
    X(cuptiGetTimestamp)                                                                           \
    X(cuptiSubscribe)                                                                              \
    X(cuptiUnsubscribe)                                                                            \
    X(cuptiEnableCallback)                                                                         \
    X(cuptiEnableDomain)                                                                           \
    X(cuptiGetCallbackName)                                                                        \
    X(cuptiGetGraphNodeId)                                                                         \
    X(cuptiSetThreadIdType)                                                                        \
    X(cuptiActivitySetAttribute)                                                                   \
    X(cuptiFinalize)

struct lwb_cupti_api {
#define LWB_CUPTI_FIELD(f) __typeof__(f) *f;
    LWB_CUPTI_FUNCS(LWB_CUPTI_FIELD)
#undef LWB_CUPTI_FIELD
    struct lwb_dl dl;
    bool loaded;
    uint32_t version; // cuptiGetVersion: the API version number
};

static struct lwb_cupti_api lwb_cupti;

static const char *cupti_errstr(CUptiResult r) {
    const char *s = NULL;
    if (!lwb_cupti.loaded) return "CUPTI not loaded";
    lwb_cupti.cuptiGetResultString(r, &s);
    return s ? s : "unknown CUPTI error";
}
#define CUPTI_CHECK(call) LWB_CHECK_GEN("CUPTI", call, r_ == CUPTI_SUCCESS, cupti_errstr)

static bool cupti_try_load(char *err, size_t n) {
    if (lwb_cupti.loaded) return true;
    static const char *const names[] = {"libcupti.so.13", "libcupti.so.12", "libcupti.so", NULL};
    struct lwb_dl *dl = &lwb_cupti.dl;
    if (!dl_open(dl, "LWB_CUPTI_PATH", names)) {
        snprintf(err, n,
                 "cannot load CUPTI (tried %s: %s); install the CUDA toolkit's CUPTI, set "
                 "LWB_CUPTI_PATH to libcupti.so, or run with --no-profile",
                 dl->tried, dl->error);
        return false;
    }
#define LWB_CUPTI_RESOLVE(f)                                                                       \
    if (!(lwb_cupti.f = (__typeof__(f) *)dl_sym(dl, LWB_XSTR(f)))) {                               \
        snprintf(err, n, "%s; set LWB_CUPTI_PATH to a CUDA 12.8 or newer libcupti.so", dl->error); \
        return false;                                                                              \
    }
    LWB_CUPTI_FUNCS(LWB_CUPTI_RESOLVE)
#undef LWB_CUPTI_RESOLVE
    lwb_cupti.loaded = true;
    lwb_cupti.cuptiGetVersion(&lwb_cupti.version);
    return true;
}

static void cupti_load(void) {
    char err[2048];
    if (!cupti_try_load(err, sizeof err)) lwb_fatal("%s", err);
}

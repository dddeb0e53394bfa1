// nccl.h: NCCL, loaded at run time (only when more than one rank runs).
//
// Defines: struct lwb_nccl_api, lwb_nccl (the table), nccl_try_load / nccl_load, NCCL_CHECK
// (prints NCCL's own last-error detail as well as the code's text).
//
// Does not: start ranks or rendezvous (dist.h does), or wait on communicators (waits poll with a
// timeout there, so a dead peer ends every rank instead of hanging them).
// Tested by test/test_libs.c (loading); on two GPUs by test/gpu/.
#pragma once
#include <nccl.h>

#define LWB_NCCL_FUNCS(X)                                                                          \
    X(ncclGetVersion)                                                                              \
    X(ncclGetErrorString)                                                                          \
    X(ncclGetLastError)                                                                            \
    X(ncclGetUniqueId)                                                                             \
    X(ncclCommInitRank)                                                                            \
    X(ncclCommDestroy)                                                                             \
    X(ncclCommAbort)                                                                               \
    X(ncclCommGetAsyncError)                                                                       \
    X(ncclAllReduce)                                                                               \
    X(ncclAllGather)                                                                               \
    X(ncclReduceScatter)                                                                           \
    X(ncclSend)                                                                                    \
    X(ncclRecv)                                                                                    \
    X(ncclGroupStart)                                                                              \
    X(ncclGroupEnd)

struct lwb_nccl_api {
#define LWB_NCCL_FIELD(f) __typeof__(f) *f;
    LWB_NCCL_FUNCS(LWB_NCCL_FIELD)
#undef LWB_NCCL_FIELD
    struct lwb_dl dl;
    bool loaded;
    int version; // ncclGetVersion: 22809 is 2.28.9
};

static struct lwb_nccl_api lwb_nccl;

static const char *nccl_errstr(ncclResult_t r) {
    if (!lwb_nccl.loaded) return "NCCL not loaded";
    static __thread char buf[512];
    const char *last = lwb_nccl.ncclGetLastError(NULL);
    snprintf(buf, sizeof buf, "%s%s%s", lwb_nccl.ncclGetErrorString(r), last && *last ? ": " : "",
             last ? last : "");
    return buf;
}
#define NCCL_CHECK(call) LWB_CHECK_GEN("NCCL", call, r_ == ncclSuccess, nccl_errstr)

static bool nccl_try_load(char *err, size_t n) {
    if (lwb_nccl.loaded) return true;
    static const char *const names[] = {"libnccl.so.2", "libnccl.so", NULL};
    struct lwb_dl *dl = &lwb_nccl.dl;
    if (!dl_open(dl, "LWB_NCCL_PATH", names)) {
        snprintf(err, n,
                 "cannot load NCCL (tried %s: %s); install NCCL 2.x or set LWB_NCCL_PATH to "
                 "libnccl.so.2 (NCCL is needed only for more than one rank)",
                 dl->tried, dl->error);
        return false;
    }
#define LWB_NCCL_RESOLVE(f)                                                                        \
    if (!(lwb_nccl.f = (__typeof__(f) *)dl_sym(dl, LWB_XSTR(f)))) {                                \
        snprintf(err, n, "%s; set LWB_NCCL_PATH to NCCL 2.19 or newer", dl->error);                \
        return false;                                                                              \
    }
    LWB_NCCL_FUNCS(LWB_NCCL_RESOLVE)
#undef LWB_NCCL_RESOLVE
    lwb_nccl.loaded = true;
    lwb_nccl.ncclGetVersion(&lwb_nccl.version);
    return true;
}

static void nccl_load(void) {
    char err[2048];
    if (!nccl_try_load(err, sizeof err)) lwb_fatal("%s", err);
}

// "2.28.9" from 22809 (NCCL >= 2.9 encodes major*10000 + minor*100 + patch).
static void nccl_version_text(int v, char *out, size_t n) {
    snprintf(out, n, "%d.%d.%d", v / 10000, (v / 100) % 100, v % 100);
}

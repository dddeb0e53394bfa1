// nvrtc.h: NVRTC (the run-time CUDA compiler), loaded at run time.
//
// Defines: struct lwb_nvrtc_api, lwb_nvrtc (the table), nvrtc_try_load / nvrtc_load, NVRTC_CHECK,
// nvrtc_version_string.
//
// Does not: compile anything itself (jit.h does), or need a GPU: NVRTC is a CPU library, so
// `lwb kernels --compile` runs anywhere the library is.
// Tested by test/test_libs.c and, through jit.h, by test/test_jit.c.
#pragma once
#include <nvrtc.h>

#define LWB_NVRTC_FUNCS(X)                                                                         \
    X(nvrtcVersion)                                                                                \
    X(nvrtcGetErrorString)                                                                         \
    X(nvrtcCreateProgram)                                                                          \
    X(nvrtcDestroyProgram)                                                                         \
    X(nvrtcCompileProgram)                                                                         \
    X(nvrtcGetProgramLogSize)                                                                      \
    X(nvrtcGetProgramLog)                                                                          \
    X(nvrtcGetCUBINSize)                                                                           \
    X(nvrtcGetCUBIN)                                                                               \
    X(nvrtcGetPTXSize)                                                                             \
    X(nvrtcGetPTX)

struct lwb_nvrtc_api {
#define LWB_NVRTC_FIELD(f) __typeof__(f) *f;
    LWB_NVRTC_FUNCS(LWB_NVRTC_FIELD)
#undef LWB_NVRTC_FIELD
    struct lwb_dl dl;
    bool loaded;
    int major, minor; // nvrtcVersion
};

static struct lwb_nvrtc_api lwb_nvrtc;

static const char *nvrtc_errstr(nvrtcResult r) {
    return lwb_nvrtc.loaded ? lwb_nvrtc.nvrtcGetErrorString(r) : "NVRTC not loaded";
}
#define NVRTC_CHECK(call) LWB_CHECK_GEN("NVRTC", call, r_ == NVRTC_SUCCESS, nvrtc_errstr)

static bool nvrtc_try_load(char *err, size_t n) {
    if (lwb_nvrtc.loaded) return true;
    static const char *const names[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", NULL};
    struct lwb_dl *dl = &lwb_nvrtc.dl;
    if (!dl_open(dl, "LWB_NVRTC_PATH", names)) {
        snprintf(err, n,
                 "cannot load NVRTC (tried %s: %s); install the CUDA toolkit's NVRTC (CUDA 12.8 or "
                 "newer) or set LWB_NVRTC_PATH to libnvrtc.so",
                 dl->tried, dl->error);
        return false;
    }
#define LWB_NVRTC_RESOLVE(f)                                                                       \
    if (!(lwb_nvrtc.f = (__typeof__(f) *)dl_sym(dl, LWB_XSTR(f)))) {                               \
        snprintf(err, n, "%s; set LWB_NVRTC_PATH to a CUDA 12.8 or newer libnvrtc.so", dl->error); \
        return false;                                                                              \
    }
    LWB_NVRTC_FUNCS(LWB_NVRTC_RESOLVE)
#undef LWB_NVRTC_RESOLVE
    lwb_nvrtc.loaded = true;
    lwb_nvrtc.nvrtcVersion(&lwb_nvrtc.major, &lwb_nvrtc.minor);
    return true;
}

static void nvrtc_load(void) {
    char err[2048];
    if (!nvrtc_try_load(err, sizeof err)) lwb_fatal("%s", err);
}

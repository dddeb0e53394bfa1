// test_libs.c: run-time loading (dl.h and the four library tables): a missing library or symbol
// is one clear line naming the library, the file tried and the variable that points lwb at it.
#include "test_common.h"

static void test_missing_library(void **state) {
    (void)state;
    char err[2048];
    setenv("LWB_CUDA_PATH", "/nonexistent/libcuda.so.1", 1);
    assert_false(cu_try_load(err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/libcuda.so.1"));
    assert_non_null(strstr(err, "LWB_CUDA_PATH"));
    assert_null(strchr(err, '\n'));
    unsetenv("LWB_CUDA_PATH");
    setenv("LWB_NCCL_PATH", "/nonexistent/libnccl.so.2", 1);
    assert_false(nccl_try_load(err, sizeof err));
    assert_non_null(strstr(err, "LWB_NCCL_PATH"));
    unsetenv("LWB_NCCL_PATH");
}

static void test_missing_symbol(void **state) {
    (void)state;
    // A real library that is not NVRTC: the first NVRTC symbol is missing.
    char err[2048];
    setenv("LWB_NVRTC_PATH", "libm.so.6", 1);
    struct lwb_nvrtc_api saved = lwb_nvrtc;
    lwb_nvrtc.loaded = false;
    assert_false(nvrtc_try_load(err, sizeof err));
    assert_non_null(strstr(err, "has no symbol nvrtcVersion"));
    assert_non_null(strstr(err, "LWB_NVRTC_PATH"));
    lwb_nvrtc = saved;
    unsetenv("LWB_NVRTC_PATH");
}

static void test_versioned_names(void **state) {
    (void)state;
    // The driver table resolves the versioned symbols the toolkit header maps to.
    assert_string_equal(LWB_XSTR(cuMemAlloc), "cuMemAlloc_v2");
    assert_string_equal(LWB_XSTR(cuStreamBeginCapture), "cuStreamBeginCapture_v2");
    assert_string_equal(LWB_XSTR(cuLaunchKernel), "cuLaunchKernel");
}

static void test_nvrtc_loads(void **state) {
    (void)state;
    // This machine and CI have NVRTC (kernels are compiled in the tests).
    char err[2048];
    assert_true(nvrtc_try_load(err, sizeof err));
    assert_true(lwb_nvrtc.major >= 12);
}

static void test_driver_version_line(void **state) {
    (void)state;
    char text[] = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U)\n"
                  "GCC version:  gcc version 12.3.0\n";
    char v[32];
    driver_version_from(text, v, sizeof v);
    assert_string_equal(v, "580.159.04");
    char other[] = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.54.03  Tue Jun  6 22:20:39 UTC 2023\n";
    driver_version_from(other, v, sizeof v);
    assert_string_equal(v, "535.54.03");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_library), cmocka_unit_test(test_missing_symbol),
        cmocka_unit_test(test_versioned_names), cmocka_unit_test(test_nvrtc_loads),
        cmocka_unit_test(test_driver_version_line)};
    return cmocka_run_group_tests_name("libs", tests, NULL, NULL);
}

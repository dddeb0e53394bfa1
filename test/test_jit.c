// test_jit.c: jit.h without a GPU: specialisation, cache keys, install and lookup, corrupt-entry
// recovery, two processes installing the same kernel at once, and every template compiling for
// sm_90a through NVRTC.
#include "test_common.h"

static char *g_dir; // LWB_CACHE_DIR for this test program

static int setup(void **state) {
    (void)state;
    g_dir = make_tmpdir();
    setenv("LWB_CACHE_DIR", g_dir, 1);
    unsetenv("LWB_JIT_NO_CACHE");
    return 0;
}
static int teardown(void **state) {
    (void)state;
    rm_rf(g_dir);
    free(g_dir);
    return 0;
}

static struct lwb_kreq sample_req(int hidden) {
    struct lwb_kreq r;
    rmsnorm_request(&r, rmsnorm_choose_config(hidden, true));
    return r;
}

static void test_source(void **state) {
    (void)state;
    struct lwb_kreq r = sample_req(7168);
    char *src = jit_source(&r);
    assert_non_null(strstr(src, "#define LWB_HIDDEN 7168\n"));
    assert_non_null(strstr(src, "#define LWB_RESIDUAL 1\n"));
    assert_non_null(strstr(src, "#line 1 \"prelude.cu\""));
    assert_non_null(strstr(src, "#line 1 \"rmsnorm.cu\""));
    assert_non_null(strstr(src, "extern \"C\" __global__"));
    // Constants come before the code that uses them.
    assert_true(strstr(src, "#define LWB_HIDDEN") < strstr(src, "lwb_rmsnorm("));
    free(src);
}

static void test_keys(void **state) {
    (void)state;
    struct lwb_jit j;
    jit_init(&j, "sm_90a", false);
    struct lwb_kreq a = sample_req(7168), b = sample_req(7168), c = sample_req(4096);
    char *sa = jit_source(&a), *sb = jit_source(&b), *sc = jit_source(&c);
    char ka[33], kb[33], kc[33], kd[33];
    jit_key(&j, sa, ka);
    jit_key(&j, sb, kb);
    jit_key(&j, sc, kc);
    assert_string_equal(ka, kb);
    assert_string_not_equal(ka, kc);
    struct lwb_jit j2;
    jit_init(&j2, "sm_100a", false);
    jit_key(&j2, sa, kd);
    assert_string_not_equal(ka, kd); // the target is part of the key
    j.lineinfo = true;
    jit_key(&j, sa, kd);
    assert_string_not_equal(ka, kd); // so are the options
    free(sa), free(sb), free(sc);
}

static void missing_const_child(void *arg) {
    (void)arg;
    struct lwb_kreq r = {.family = "rmsnorm"};
    kreq_set(&r, "HIDDEN", 7168);
    kreq_set(&r, "RESIDUAL", 1);
    kreq_validate(&r);
}
static void extra_const_child(void *arg) {
    (void)arg;
    struct lwb_kreq r = sample_req(7168);
    kreq_set(&r, "TOP_K", 8);
    kreq_validate(&r);
}
static void test_validate(void **state) {
    (void)state;
    struct child_result res;
    run_child(missing_const_child, NULL, &res);
    assert_int_equal(res.status, LWB_EXIT_BUG);
    assert_non_null(strstr(res.err, "LWB_THREADS not set"));
    run_child(extra_const_child, NULL, &res);
    assert_int_equal(res.status, LWB_EXIT_BUG);
    assert_non_null(strstr(res.err, "LWB_TOP_K is not in the template"));
}

static char *entry_path(const struct lwb_jit *j, const struct lwb_kreq *r, const char *file) {
    char dir[PATH_MAX];
    entry_dir(j, r, dir, sizeof dir);
    return lwb_path_join(dir, file);
}

static void build_one(struct lwb_jit *j, struct lwb_kreq *r) {
    struct lwb_kreq *p = r;
    jit_build(j, &p, 1);
}

static void test_cache_roundtrip(void **state) {
    (void)state;
    struct lwb_jit j;
    jit_init(&j, "sm_90a", false);
    struct lwb_kreq r = sample_req(2048);
    build_one(&j, &r);
    assert_int_equal(j.ncompiled, 1);
    assert_int_equal(j.ncached, 0);
    assert_true(r.cubin_size > 1000);
    static const char *files[] = {"kernel.cu", "kernel.cubin", "kernel.log", "meta.txt"};
    for (int i = 0; i < 4; i++) {
        char *p = entry_path(&j, &r, files[i]);
        assert_int_equal(access(p, R_OK), 0);
        free(p);
    }
    char *meta_path = entry_path(&j, &r, "meta.txt");
    char *meta = lwb_read_file(meta_path, NULL);
    assert_non_null(strstr(meta, "rmsnorm HIDDEN=2048"));
    assert_non_null(strstr(meta, "sm_90a nvrtc-"));
    free(meta), free(meta_path);

    // A second session finds it, byte for byte.
    struct lwb_jit j2;
    jit_init(&j2, "sm_90a", false);
    struct lwb_kreq r2 = sample_req(2048);
    build_one(&j2, &r2);
    assert_int_equal(j2.ncached, 1);
    assert_int_equal(j2.ncompiled, 0);
    assert_int_equal(r2.cubin_size, r.cubin_size);
    assert_memory_equal(r2.cubin, r.cubin, r.cubin_size);
    // The same request twice in one batch is compiled once.
    struct lwb_jit j3;
    jit_init(&j3, "sm_90a", false);
    j3.no_cache = true;
    struct lwb_kreq x = sample_req(3072), y = sample_req(3072);
    struct lwb_kreq *xy[] = {&x, &y};
    jit_build(&j3, xy, 2);
    assert_int_equal(j3.ncompiled, 1);
    assert_int_equal(y.cubin_size, x.cubin_size);
    char line[256];
    FILE *f = fmemopen(line, sizeof line, "w");
    jit_summary(&j3, f);
    fclose(f);
    assert_true(str_starts(line, "jit: 1 kernel, 0 cached, 1 compiled in "));
    kreq_free(&r), kreq_free(&r2), kreq_free(&x), kreq_free(&y);
}

static void test_corrupt_entry(void **state) {
    (void)state;
    struct lwb_jit j;
    jit_init(&j, "sm_90a", false);
    struct lwb_kreq r = sample_req(1536);
    build_one(&j, &r);
    // Truncate the cubin: the entry must be rebuilt, not trusted.
    char *cubin = entry_path(&j, &r, "kernel.cubin");
    assert_int_equal(truncate(cubin, 100), 0);
    struct lwb_jit j2;
    jit_init(&j2, "sm_90a", false);
    struct lwb_kreq r2 = sample_req(1536);
    build_one(&j2, &r2);
    assert_int_equal(j2.ncompiled, 1);
    assert_int_equal(r2.cubin_size, r.cubin_size);
    struct stat st;
    assert_int_equal(stat(cubin, &st), 0);
    assert_int_equal((size_t)st.st_size, r.cubin_size);
    // A missing meta.txt (an entry cut short) is rebuilt too.
    char *meta = entry_path(&j, &r, "meta.txt");
    assert_int_equal(unlink(meta), 0);
    struct lwb_jit j3;
    jit_init(&j3, "sm_90a", false);
    struct lwb_kreq r3 = sample_req(1536);
    build_one(&j3, &r3);
    assert_int_equal(j3.ncompiled, 1);
    assert_int_equal(access(meta, R_OK), 0);
    free(cubin), free(meta);
    kreq_free(&r), kreq_free(&r2), kreq_free(&r3);
}

static void concurrent_child(void *arg) {
    (void)arg;
    struct lwb_jit j;
    jit_init(&j, "sm_90a", false);
    struct lwb_kreq r = sample_req(5120);
    build_one(&j, &r);
    printf("built %zu\n", r.cubin_size);
}

static void test_concurrent_install(void **state) {
    (void)state;
    // Two processes compile and install the same kernel into an empty cache at once.
    char *dir = make_tmpdir();
    setenv("LWB_CACHE_DIR", dir, 1);
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        fflush(stdout);
        kids[i] = fork();
        if (kids[i] == 0) {
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            concurrent_child(NULL);
            _exit(0);
        }
    }
    for (int i = 0; i < 2; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    // Exactly one entry, complete, and no temporary folders left behind.
    int entries = 0, tmps = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (str_starts(e->d_name, "rmsnorm_h5120_res.")) entries++;
        if (str_starts(e->d_name, ".tmp-")) tmps++;
    }
    closedir(d);
    assert_int_equal(entries, 1);
    assert_int_equal(tmps, 0);
    struct lwb_jit j;
    jit_init(&j, "sm_90a", false);
    struct lwb_kreq r = sample_req(5120);
    build_one(&j, &r);
    assert_int_equal(j.ncached, 1);
    kreq_free(&r);
    setenv("LWB_CACHE_DIR", g_dir, 1);
    rm_rf(dir);
    free(dir);
}

static void test_no_cache(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    setenv("LWB_CACHE_DIR", dir, 1);
    setenv("LWB_JIT_NO_CACHE", "1", 1);
    struct lwb_jit j;
    jit_init(&j, "sm_90a", false);
    struct lwb_kreq r = sample_req(6144);
    build_one(&j, &r);
    assert_int_equal(j.ncompiled, 1);
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(n, 0);
    unsetenv("LWB_JIT_NO_CACHE");
    setenv("LWB_CACHE_DIR", g_dir, 1);
    kreq_free(&r);
    rm_rf(dir);
    free(dir);
}

// Every template compiles for Hopper, with every family's representative constants.
static void test_all_templates(void **state) {
    (void)state;
    kernels_check_table();
    struct lwb_jit j;
    jit_init(&j, "sm_90a", false);
    j.no_cache = true;
    static struct lwb_kreq reqs[256];
    struct lwb_kreq *ptrs[256];
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_kfamilies); i++) {
        int k = lwb_kfamilies[i].samples(reqs + n, 256 - n);
        assert_true(k > 0);
        n += k;
    }
    for (int i = 0; i < n; i++) ptrs[i] = &reqs[i];
    jit_build(&j, ptrs, n);
    for (int i = 0; i < n; i++) {
        assert_true(reqs[i].cubin_size > 0);
        kreq_free(&reqs[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source),         cmocka_unit_test(test_keys),
        cmocka_unit_test(test_validate),       cmocka_unit_test(test_cache_roundtrip),
        cmocka_unit_test(test_corrupt_entry),  cmocka_unit_test(test_concurrent_install),
        cmocka_unit_test(test_no_cache),       cmocka_unit_test(test_all_templates),
    };
    return cmocka_run_group_tests_name("jit", tests, setup, teardown);
}

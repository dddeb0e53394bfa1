// test_util.c: util.h: strings, edit distance, hashing, files.
#include "test_common.h"

static void test_edit_distance(void **state) {
    (void)state;
    assert_int_equal(lwb_edit_distance("run", "run"), 0);
    assert_int_equal(lwb_edit_distance("rn", "run"), 1);
    assert_int_equal(lwb_edit_distance("batch-sise", "batch-size"), 1);
    assert_int_equal(lwb_edit_distance("", "abc"), 3);
    assert_int_equal(lwb_edit_distance("kitten", "sitting"), 3);
}

static void test_nearest(void **state) {
    (void)state;
    const char *names[] = {"run", "parse", "correlate", "kernels", "version", "help"};
    assert_string_equal(lwb_nearest("rn", names, 6), "run");
    assert_string_equal(lwb_nearest("pasre", names, 6), "parse");
    assert_string_equal(lwb_nearest("corr", names, 6), "correlate");
    assert_null(lwb_nearest("zzzzzzzz", names, 6));
}

static void test_str(void **state) {
    (void)state;
    struct lwb_str s = {0};
    for (int i = 0; i < 1000; i++) str_printf(&s, "%d,", i);
    assert_int_equal(s.len, strlen(s.s));
    assert_true(str_starts(s.s, "0,1,2,"));
    assert_true(str_ends(s.s, "998,999,"));
    str_clear(&s);
    assert_int_equal(s.len, 0);
    str_puts(&s, "x");
    char *t = str_take(&s);
    assert_string_equal(t, "x");
    assert_null(s.s);
    free(t);
}

static void test_hash(void **state) {
    (void)state;
    char a[33], b[33], c[33];
    struct lwb_hash h1 = lwb_hash_init(), h2 = lwb_hash_init(), h3 = lwb_hash_init();
    lwb_hash_str(&h1, "source");
    lwb_hash_str(&h1, "sm_90a");
    lwb_hash_str(&h2, "source");
    lwb_hash_str(&h2, "sm_90a");
    lwb_hash_str(&h3, "sourc");
    lwb_hash_str(&h3, "esm_90a"); // same bytes, other field split: must differ
    lwb_hash_hex(h1, a), lwb_hash_hex(h2, b), lwb_hash_hex(h3, c);
    assert_int_equal(strlen(a), 32);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    // One changed byte anywhere in a long text changes the key.
    char text[5000];
    memset(text, 'k', sizeof text);
    text[sizeof text - 1] = 0;
    struct lwb_hash x = lwb_hash_init();
    lwb_hash_str(&x, text);
    lwb_hash_hex(x, a);
    text[2500] = 'j';
    x = lwb_hash_init();
    lwb_hash_str(&x, text);
    lwb_hash_hex(x, b);
    assert_string_not_equal(a, b);
}

static void test_files(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    char *deep = lwb_path_join(dir, "a/b/c");
    assert_int_equal(lwb_mkdirs(deep), 0);
    assert_int_equal(lwb_mkdirs(deep), 0); // exists: fine
    char *f = lwb_path_join(deep, "file.txt");
    assert_int_equal(lwb_write_file_atomic(f, "hello\n", 6), 0);
    size_t n = 0;
    char *back = lwb_read_file(f, &n);
    assert_non_null(back);
    assert_int_equal(n, 6);
    assert_string_equal(back, "hello\n");
    assert_null(lwb_read_file("/nonexistent/x", NULL));
    free(back), free(f), free(deep);
    rm_rf(dir);
    free(dir);
}

static void user_error_child(void *arg) {
    (void)arg;
    lwb_user_error("configs/x.yaml: 'batch_size' must be a positive integer (got \"%s\")", "abc");
}
static void fatal_child(void *arg) {
    (void)arg;
    lwb_fatal("the CUDA driver could not start");
}
static void test_error_kinds(void **state) {
    (void)state;
    struct child_result r;
    run_child(user_error_child, NULL, &r);
    assert_int_equal(r.status, LWB_EXIT_USAGE);
    assert_int_equal(count_lines(r.err), 1);
    assert_true(str_starts(r.err, "lwb: configs/x.yaml: 'batch_size'"));
    run_child(fatal_child, NULL, &r);
    assert_int_equal(r.status, LWB_EXIT_FAILURE);
    assert_int_equal(count_lines(r.err), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edit_distance), cmocka_unit_test(test_nearest),
        cmocka_unit_test(test_str),           cmocka_unit_test(test_hash),
        cmocka_unit_test(test_files),         cmocka_unit_test(test_error_kinds),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}

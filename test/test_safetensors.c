// test_safetensors.c: safetensors.h: a file written and read back (dtypes, shapes, offsets,
// metadata, streamed tensors), the header checked byte by byte against the format, atomic
// writes, a duplicate name, and the reader's refusal of damaged files.
#include "test_common.h"

static uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

// A fill callback: element i of a BF16 tensor is i/4 (exact in bf16).
static int fill_ramp(void *ctx, const char *name, void *dst, size_t bytes) {
    (void)name;
    int *calls = ctx;
    (*calls)++;
    uint16_t *p = dst;
    for (size_t i = 0; i < bytes / 2; i++) p[i] = bf16_of((float)i / 4);
    return 0;
}
static int fill_fail(void *ctx, const char *name, void *dst, size_t bytes) {
    (void)ctx, (void)name, (void)dst, (void)bytes;
    return 1;
}

struct sample {
    uint16_t bf[15]; // BF16 [3, 5]
    float f32[7];    // F32 [7]
    int32_t i32[6];  // I32 [2, 3]
    int64_t i64[3];  // I64 [3]
    float scalar;    // F32 []
};

static void sample_init(struct sample *s) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 15; i++) s->bf[i] = bf16_of((float)i - 7.5f);
    for (int i = 0; i < 7; i++) s->f32[i] = 1.0f / (float)(i + 1);
    for (int i = 0; i < 6; i++) s->i32[i] = -3 + 1000 * i;
    for (int i = 0; i < 3; i++) s->i64[i] = (int64_t)1 << (40 + i);
    s->scalar = 42.5f;
}

// Writes the sample to `path`; returns the number of fill calls.
static int write_sample(const char *path, const struct sample *s) {
    int calls = 0;
    struct lwb_st_writer *w = st_writer_begin(path);
    st_metadata(w, "format", "pt");
    st_metadata(w, "lwb.version", LWB_VERSION);
    st_add(w, "a.bf16", "BF16", (const int64_t[]){3, 5}, 2, s->bf, sizeof s->bf);
    st_add(w, "b.f32", "F32", (const int64_t[]){7}, 1, s->f32, sizeof s->f32);
    st_add_fill(w, "c.streamed", "BF16", (const int64_t[]){5, 5}, 2, fill_ramp, &calls);
    st_add(w, "d.i32", "I32", (const int64_t[]){2, 3}, 2, s->i32, sizeof s->i32);
    st_add(w, "e.i64", "I64", (const int64_t[]){3}, 1, s->i64, sizeof s->i64);
    st_add(w, "f.scalar", "F32", NULL, 0, &s->scalar, sizeof s->scalar);
    st_add(w, "g.empty", "BF16", (const int64_t[]){0, 4}, 2, NULL, 0);
    st_writer_finish(w);
    outputs_commit();
    return calls;
}

static void test_roundtrip(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    char *path = lwb_path_join(dir, "x.safetensors");
    struct sample s;
    sample_init(&s);
    assert_int_equal(write_sample(path, &s), 1);

    struct lwb_st_file f;
    char err[512];
    if (st_open(path, &f, err, sizeof err)) fprintf(stderr, "%s\n", err);
    assert_int_equal(f.n, 7);
    assert_string_equal(st_meta(&f, "format"), "pt");
    assert_string_equal(st_meta(&f, "lwb.version"), LWB_VERSION);
    assert_null(st_meta(&f, "absent"));
    assert_null(st_find(&f, "__metadata__"));
    assert_null(st_find(&f, "nope"));
    // Offsets: 8-byte elements first, then 4-byte ones in the order added, then 2-byte ones.
    const struct {
        const char *name, *dtype;
        int ndim;
        int64_t shape[2];
        uint64_t begin, end;
    } want[] = {
        {"e.i64", "I64", 1, {3}, 0, 24},          {"b.f32", "F32", 1, {7}, 24, 52},
        {"d.i32", "I32", 2, {2, 3}, 52, 76},      {"f.scalar", "F32", 0, {0}, 76, 80},
        {"a.bf16", "BF16", 2, {3, 5}, 80, 110},   {"c.streamed", "BF16", 2, {5, 5}, 110, 160},
        {"g.empty", "BF16", 2, {0, 4}, 160, 160},
    };
    for (size_t i = 0; i < LWB_ARRAY_LEN(want); i++) {
        const struct lwb_st_tensor *t = st_find(&f, want[i].name);
        assert_non_null(t);
        assert_string_equal(t->dtype, want[i].dtype);
        assert_int_equal(t->ndim, want[i].ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], want[i].shape[d]);
        assert_int_equal(t->begin, want[i].begin);
        assert_int_equal(t->end, want[i].end);
        assert_int_equal((f.data_start + t->begin) % st_dtype_size(t->dtype), 0);
    }
    assert_int_equal(f.data_size, 160);
    struct sample r;
    memset(&r, 0, sizeof r);
    assert_int_equal(st_read(&f, st_find(&f, "a.bf16"), r.bf, sizeof r.bf), 0);
    assert_int_equal(st_read(&f, st_find(&f, "b.f32"), r.f32, sizeof r.f32), 0);
    assert_int_equal(st_read(&f, st_find(&f, "d.i32"), r.i32, sizeof r.i32), 0);
    assert_int_equal(st_read(&f, st_find(&f, "e.i64"), r.i64, sizeof r.i64), 0);
    assert_int_equal(st_read(&f, st_find(&f, "f.scalar"), &r.scalar, 4), 0);
    assert_memory_equal(&r, &s, sizeof r);
    uint16_t ramp[25];
    assert_int_equal(st_read(&f, st_find(&f, "c.streamed"), ramp, sizeof ramp), 0);
    for (int i = 0; i < 25; i++) assert_int_equal(ramp[i], bf16_of((float)i / 4));
    assert_int_equal(ramp[7], 0x3fe0); // 1.75 in bf16
    st_close(&f);

    // Rewriting replaces the file whole, and leaves no temporary behind.
    s.f32[0] = -2;
    write_sample(path, &s);
    assert_int_equal(st_open(path, &f, err, sizeof err), 0);
    float v[7];
    assert_int_equal(st_read(&f, st_find(&f, "b.f32"), v, sizeof v), 0);
    assert_true(v[0] == -2);
    st_close(&f);
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) = 1", dir);
    assert_int_equal(system(cmd), 0);
    rm_rf(dir);
    free(path), free(dir);
}

// The bytes on disk, against the format: u64 little-endian N, N bytes of JSON starting with '{'
// and padded with spaces, data starting 8-aligned, offsets tiling the data.
static void test_header_bytes(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    char *path = lwb_path_join(dir, "x.safetensors");
    struct sample s;
    sample_init(&s);
    write_sample(path, &s);
    size_t size;
    char *b = lwb_read_file(path, &size);
    assert_non_null(b);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)(unsigned char)b[i] << (8 * i);
    assert_int_equal(n % 8, 0);
    assert_int_equal(size, 8 + n + 160);
    assert_int_equal(b[8], '{');
    size_t end = 8 + n;
    while (end > 8 && b[end - 1] == ' ') end--;
    assert_int_equal(b[end - 1], '}');
    assert_true(8 + n - end < 8); // at most 7 spaces of padding
    json_error_t je;
    json_t *h = json_loadb(b + 8, end - 8, 0, &je);
    assert_non_null(h);
    // __metadata__ first, all strings; each tensor exactly dtype, shape, data_offsets.
    void *it = json_object_iter(h);
    assert_string_equal(json_object_iter_key(it), "__metadata__");
    assert_int_equal(json_object_size(json_object_get(h, "__metadata__")), 2);
    assert_int_equal(json_object_size(h), 8);
    json_t *t = json_object_get(h, "a.bf16");
    assert_int_equal(json_object_size(t), 3);
    assert_string_equal(json_string_value(json_object_get(t, "dtype")), "BF16");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(t, "shape"), 1)), 5);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0)), 80);
    assert_int_equal(json_array_size(json_object_get(json_object_get(h, "f.scalar"), "shape")), 0);
    // The data of e.i64 (the first tensor) begins right after the header.
    int64_t first;
    memcpy(&first, b + 8 + n, 8);
    assert_true(first == (int64_t)1 << 40);
    json_decref(h);
    free(b);
    rm_rf(dir);
    free(path), free(dir);
}

static void dup_child(void *arg) {
    struct lwb_st_writer *w = st_writer_begin(arg);
    float x = 1;
    st_add(w, "t", "F32", NULL, 0, &x, 4);
    st_add(w, "t", "F32", NULL, 0, &x, 4);
    st_writer_finish(w);
}
static void bad_size_child(void *arg) {
    struct lwb_st_writer *w = st_writer_begin(arg);
    float x[2] = {0};
    st_add(w, "t", "F32", (const int64_t[]){3}, 1, x, sizeof x);
}
static void fail_fill_child(void *arg) {
    struct lwb_st_writer *w = st_writer_begin(arg);
    float x = 1;
    st_add(w, "a", "F32", NULL, 0, &x, 4);
    st_add_fill(w, "b", "BF16", (const int64_t[]){4}, 1, fill_fail, NULL);
    st_writer_finish(w);
}

static void test_writer_errors(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    char *path = lwb_path_join(dir, "x.safetensors");
    struct child_result r;
    // A name added twice is a defect of the caller, not bad input.
    run_child(dup_child, path, &r);
    assert_int_equal(r.status, LWB_EXIT_BUG);
    assert_non_null(strstr(r.err, "tensor t added twice"));
    run_child(bad_size_child, path, &r);
    assert_int_equal(r.status, LWB_EXIT_BUG);
    assert_non_null(strstr(r.err, "t is 8 bytes, its dtype and shape make 12"));
    // A tensor that cannot be produced: exit 1, one line, no file and no temporary left.
    run_child(fail_fill_child, path, &r);
    assert_int_equal(r.status, LWB_EXIT_FAILURE);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, "the data of tensor b could not be produced"));
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", dir);
    assert_int_equal(system(cmd), 0);
    // A folder that does not exist.
    char *bad = lwb_path_join(dir, "missing/x.safetensors");
    run_child(fail_fill_child, bad, &r);
    assert_int_equal(r.status, LWB_EXIT_FAILURE);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, "cannot write"));
    free(bad);
    rm_rf(dir);
    free(path), free(dir);
}

// Write raw bytes: an 8-byte length, the header text, `data` zero bytes.
static void write_raw(const char *path, uint64_t n, const char *header, size_t data) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data; i++) fputc(0, f);
    fclose(f);
}

static void expect_open_error(const char *path, const char *want) {
    struct lwb_st_file f;
    char err[512];
    assert_int_equal(st_open(path, &f, err, sizeof err), -1);
    if (!strstr(err, want)) fprintf(stderr, "got: %s\n", err);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, path));
    assert_null(strchr(err, '\n'));
}

static void test_reader_errors(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    char *p = lwb_path_join(dir, "bad.safetensors");
    expect_open_error(p, "cannot open");
    write_raw(p, 3, "", 0);
    expect_open_error(p, "header length 3");
    const char *h = "[1,2]   ";
    write_raw(p, strlen(h), h, 0);
    expect_open_error(p, "does not start with '{'");
    h = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}";
    write_raw(p, strlen(h), h, 8);
    expect_open_error(p, "not valid JSON");
    h = "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}";
    write_raw(p, strlen(h), h, 8);
    expect_open_error(p, "tensor 't' spans 8 bytes, its dtype and shape make 12");
    h = "{\"t\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    write_raw(p, strlen(h), h, 8);
    expect_open_error(p, "unknown dtype 'Q4'");
    h = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    write_raw(p, strlen(h), h, 4);
    expect_open_error(p, "ends past the end of the file");
    h = "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    write_raw(p, strlen(h), h, 8);
    expect_open_error(p, "gaps or overlap");
    h = "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"u\":{\"dtype\":\"F32\",\"shape\":["
        "1],"
        "\"data_offsets\":[0,4]}}";
    write_raw(p, strlen(h), h, 4);
    expect_open_error(p, "gaps or overlap");
    h = "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"t\":{\"dtype\":\"F32\",\"shape\":["
        "1],"
        "\"data_offsets\":[4,8]}}";
    write_raw(p, strlen(h), h, 8);
    expect_open_error(p, "not valid JSON"); // duplicate keys
    h = "{\"__metadata__\":{\"k\":1}}";
    write_raw(p, strlen(h), h, 0);
    expect_open_error(p, "__metadata__ value 'k' is not a string");
    // A valid file of one tensor, with trailing padding, opens.
    h = "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}      ";
    write_raw(p, strlen(h), h, 4);
    struct lwb_st_file f;
    char err[512];
    assert_int_equal(st_open(p, &f, err, sizeof err), 0);
    assert_int_equal(f.n, 1);
    st_close(&f);
    rm_rf(dir);
    free(p), free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_header_bytes),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_reader_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

// test_calib.c: calib.h: calibration files written by an independent writer from the format's
// description (test/data/calib/make.py: two ranks, MoE chunks, odd shapes), base64 against RFC
// 4648's vectors, the replay plan (range, cycling, chunks joined, layers skipped), every bad file
// and bad replay as a one-line error, and the collect / replay round trip on the CPU side: a file
// lwb writes reads back to the same choices, in the same iterations.
#include "test_common.h"

// The fixture writer's slot formula (make.py).
static int fixture_slot(int rank, int it, int layer, int t, int j, int slots) {
    return (rank * 13 + it * 7 + layer * 5 + t * 3 + j * 11) % slots;
}

static void test_base64(void **state) {
    (void)state;
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *e = base64_encode((const unsigned char *)plain[i], strlen(plain[i]));
        assert_string_equal(e, coded[i]);
        size_t n = 99;
        unsigned char *d = base64_decode(coded[i], strlen(coded[i]), &n);
        assert_non_null(d);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(d, plain[i], n);
        free(e), free(d);
    }
    unsigned char all[256];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)(255 - i);
    char *e = base64_encode(all, 256);
    size_t n;
    unsigned char *d = base64_decode(e, strlen(e), &n);
    assert_int_equal(n, 256);
    assert_memory_equal(d, all, 256);
    free(e), free(d);
    const char *bad[] = {"Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "Zm=v", "Zm9 ", "Zg==x"};
    for (int i = 0; i < 7; i++) assert_null(base64_decode(bad[i], strlen(bad[i]), &n));
    // Line-wrapped base64 (as MIME writes it) is read, as Python's b64decode reads it.
    d = base64_decode("Zm9v\nYmFy\r\n", 11, &n);
    assert_non_null(d);
    assert_int_equal(n, 6);
    assert_memory_equal(d, "foobar", 6);
    free(d);
}

static void test_load_two_ranks(void **state) {
    (void)state;
    struct lwb_calib c;
    calib_load("test/data/calib/two_ranks.json", &c);
    assert_int_equal(c.world_size, 2);
    assert_int_equal(c.nrec[0], 3);
    assert_int_equal(c.nrec[1], 3);
    assert_int_equal(c.rec[1][0].iteration, 42);
    struct lwb_calib_record *r = &c.rec[1][1]; // rank 1, iteration 40
    assert_int_equal(r->iteration, 40);
    assert_null(r->data); // raw_data is decoded when a replay needs the record
    calib_inflate(&c, 1, r);
    assert_int_equal(r->n, 4);
    const int layer[4] = {4, 3, 1, 3}, t0[4] = {0, 0, 0, 3}, nt[4] = {5, 3, 5, 2};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(r->e[k].layer, layer[k]);
        assert_int_equal(r->e[k].slots, 64);
        assert_int_equal(r->e[k].tokens, nt[k]);
        assert_int_equal(r->e[k].top_k, 6);
        for (int t = 0; t < nt[k]; t++)
            for (int j = 0; j < 6; j++)
                assert_int_equal(r->e[k].ids[t * 6 + j], fixture_slot(1, 40, layer[k], t0[k] + t, j, 64));
    }
    // Rank 1's replay of layers 3 (chunks joined) and 4, with a dense layer 2 between that the file
    // leaves alone; layer 1's entries are skipped.
    const struct lwb_replay_layer ls[3] = {{3, true}, {2, false}, {4, true}};
    struct lwb_replay rp;
    replay_plan(&c, 1, 2, ls, 3, 5, 6, 64, 120, -1, -1, &rp);
    assert_int_equal(rp.start, 40);
    assert_int_equal(rp.stop, 42);
    assert_int_equal(rp.niter, 3);
    assert_int_equal(rp.nlayers, 2);
    for (int it = 0; it < 3; it++)
        for (int m = 0; m < 2; m++)
            for (int t = 0; t < 5; t++)
                for (int j = 0; j < 6; j++)
                    assert_int_equal(rp.ids[((it * 2 + m) * 5 + t) * 6 + j],
                                     fixture_slot(1, 40 + it, m ? 4 : 3, t, j, 64));
    // The cycle: loop iteration i replays recorded start + i mod 3.
    assert_int_equal(replay_slot(&rp, 0), 0);
    assert_int_equal(replay_slot(&rp, 4), 1);
    assert_int_equal(replay_slot(&rp, 119), 2);
    replay_free(&rp);
    // A range inside the file.
    replay_plan(&c, 0, 2, ls, 3, 5, 6, 64, 120, 41, 41, &rp);
    assert_int_equal(rp.niter, 1);
    assert_int_equal(rp.ids[0], fixture_slot(0, 41, 3, 0, 0, 64));
    replay_free(&rp);
    // A loop of 2 iterations reaches only the range's first 2: only those are kept.
    replay_plan(&c, 1, 2, ls, 3, 5, 6, 64, 2, -1, -1, &rp);
    assert_int_equal(rp.niter, 3);
    assert_int_equal(rp.nslots, 2);
    assert_int_equal(rp.ids[5 * 6 * 2], fixture_slot(1, 41, 3, 0, 0, 64));
    replay_free(&rp);
    calib_free(&c);
}

static void test_load_odd(void **state) {
    (void)state;
    struct lwb_calib c;
    calib_load("test/data/calib/odd.json", &c);
    assert_int_equal(c.world_size, 1);
    assert_int_equal(c.rec[0][0].n, 2);
    assert_int_equal(c.rec[0][0].e[0].tokens, 0);
    const struct lwb_replay_layer ls[1] = {{2, true}};
    struct lwb_replay rp;
    replay_plan(&c, 0, 1, ls, 1, 3, 1, 5, 120, -1, -1, &rp);
    for (int t = 0; t < 3; t++) assert_int_equal(rp.ids[t], fixture_slot(0, 7, 2, t, 0, 5));
    replay_free(&rp);
    calib_free(&c);
}

// ---------------------------------------------------------------------------------------------
// Bad files and bad replays: one line on stderr, exit 2

struct bad_case {
    const char *text;        // the file (NULL: use `path`)
    const char *path;
    int rank, world, tokens, top_k, experts;
    long long start, stop;
    struct lwb_replay_layer layers[3];
    int nlayers;
    const char *dir;
};

static void bad_child(void *arg) {
    const struct bad_case *b = arg;
    const char *path = b->path;
    char file[PATH_MAX];
    if (b->text) {
        snprintf(file, sizeof file, "%s/bad.json", b->dir);
        if (lwb_write_file_atomic(file, b->text, strlen(b->text)) != 0) _exit(99);
        path = file;
    }
    struct lwb_calib c;
    calib_load(path, &c);
    struct lwb_replay rp;
    replay_plan(&c, b->rank, b->world, b->layers, b->nlayers, b->tokens, b->top_k, b->experts, 120, b->start, b->stop,
                &rp);
}

static void expect_bad(struct bad_case b, const char *dir, const char *want) {
    b.dir = dir;
    if (!b.nlayers) b.layers[0] = (struct lwb_replay_layer){3, true}, b.nlayers = 1;
    if (!b.world) b.world = 2;
    if (!b.tokens) b.tokens = 5;
    if (!b.top_k) b.top_k = 6;
    if (!b.experts) b.experts = 64;
    if (!b.start && !b.stop) b.start = b.stop = -1;
    if (!b.path) b.path = "test/data/calib/two_ranks.json";
    struct child_result r;
    run_child(bad_child, &b, &r);
    if (r.status != 2 || !strstr(r.err, want) || count_lines(r.err) != 1)
        fail_msg("wanted exit 2 and \"%s\", got exit %d: %s", want, r.status, r.err);
}

// A record with one entry of layer 3: 1 token, top-2 of 4 slots, raw_data as given.
#define ONE_REC(raw) "{\"world_size\": 1, \"all_ranks_records\": [[{\"iteration\": 5, \"metadata\": " \
    "[{\"layer_idx\": 3, \"num_slots\": 4, \"token_selected_slots_shape\": [1, 2]}], \"raw_data\": \"" raw "\"}]]}"

static void test_bad_files(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    // zlib of int32 {1, 2} and of {1, 7} (slot 7 of 4), {1, 2, 3} (one more), {1} (one fewer),
    // made with Python's zlib.compress.
    struct bad_case one = {.world = 1, .tokens = 1, .top_k = 2, .experts = 4};
    struct bad_case b = one;
    b.text = ONE_REC("eJxjZGBgYAJiAAAYAAQ=");
    struct child_result r;
    b.dir = dir, b.path = NULL, b.start = b.stop = -1, b.layers[0] = (struct lwb_replay_layer){3, true}, b.nlayers = 1;
    run_child(bad_child, &b, &r);
    if (r.status) fail_msg("the good one-record file: exit %d: %s", r.status, r.err);
    // Records a replay does not reach are never decoded: a corrupt one there passes.
    b = one, b.start = b.stop = 5;
    b.text = "{\"world_size\": 1, \"all_ranks_records\": [[{\"iteration\": 5, \"metadata\": [{\"layer_idx\": 3, "
             "\"num_slots\": 4, \"token_selected_slots_shape\": [1, 2]}], \"raw_data\": \"eJxjZGBgYAJiAAAYAAQ=\"}, "
             "{\"iteration\": 6, \"metadata\": [{\"layer_idx\": 3, \"num_slots\": 4, \"token_selected_slots_shape\": "
             "[1, 2]}], \"raw_data\": \"AAAAAAAA\"}]]}";
    b.dir = dir, b.path = NULL, b.layers[0] = (struct lwb_replay_layer){3, true}, b.nlayers = 1;
    run_child(bad_child, &b, &r);
    if (r.status) fail_msg("a corrupt record outside the replay: exit %d: %s", r.status, r.err);
    b.start = 5, b.stop = 6;
    expect_bad(b, dir, "rank 0 iteration 6: raw_data is not a zlib stream");
    b = one, b.text = ONE_REC("eJxjZGBgYAdiAAAsAAk=");
    expect_bad(b, dir, "bad.json: rank 0 iteration 5 metadata entry 0 (layer 3): slot 7 of token 0 is outside 0 .. 3");
    b = one, b.text = ONE_REC("eJxjZGBgYAJiZiAGAAA0AAc=");
    expect_bad(b, dir, "raw_data holds more than the 2 slots its metadata declares");
    b = one, b.text = ONE_REC("eJxjZGBgAAAACAAC");
    expect_bad(b, dir, "raw_data holds 4 bytes, its metadata declares 2 slots (8 bytes)");
    b = one, b.text = ONE_REC("eJxjZGBgYAJi");
    expect_bad(b, dir, "raw_data holds more than the 2 slots its metadata declares (or is cut short)");
    b = one, b.text = ONE_REC("not base64!");
    expect_bad(b, dir, "raw_data is not base64");
    b = one, b.text = ONE_REC("AAAAAAAA");
    expect_bad(b, dir, "raw_data is not a zlib stream");
    b = one, b.text = "{\"world_size\": 2, \"all_ranks_records\": [[]]}";
    expect_bad(b, dir, "\"all_ranks_records\" must be a list of 2 lists");
    b = one, b.text = "{\"all_ranks_records\": [[]]}";
    expect_bad(b, dir, "the file needs an integer \"world_size\"");
    b = one, b.text = "[1, 2]";
    expect_bad(b, dir, "a calibration file is an object");
    b = one, b.text = "{\"world_size\": 1, \"all_ranks_records\": [[{\"iteration\": 1, \"metadata\": [], \"raw_data\": "
                      "\"eJwDAAAAAAE=\"}, {\"iteration\": 1, \"metadata\": [], \"raw_data\": \"eJwDAAAAAAE=\"}]]}";
    expect_bad(b, dir, "rank 0 records iteration 1 twice (records 0 and 1)");
    b = one, b.text = "{\"world_size\": 1, \"all_ranks_records\": [[{\"iteration\": 1, \"metadata\": [{\"layer_idx\": 3, "
                      "\"num_slots\": 4, \"token_selected_slots_shape\": [1]}], \"raw_data\": \"\"}]]}";
    expect_bad(b, dir, "metadata entry 0 needs \"token_selected_slots_shape\": [tokens, top_k]");
    b = one, b.text = "{\"world_size\": 1, \"all_ranks_records\": [[{\"iteration\": -3, \"metadata\": [], "
                      "\"raw_data\": \"\"}]]}";
    expect_bad(b, dir, "rank 0 record 0 has \"iteration\": -3");
    b = one, b.text = "{\"world_size\": 1, \"all_ranks_records\": [[{\"iteration\": 1, \"metadata\": []}]]}";
    expect_bad(b, dir, "rank 0 iteration 1 needs a \"raw_data\" string");
    b = one, b.text = "{\"world_size\": 1,";
    expect_bad(b, dir, "bad.json:1: not valid JSON");
    b = one, b.text = "{\"world_size\": 1, \"world_size\": 1, \"all_ranks_records\": [[]]}";
    expect_bad(b, dir, "not valid JSON: duplicate object key");
    // Replays the file cannot give.
    expect_bad((struct bad_case){.world = 4}, dir, "recorded on 2 ranks, this run has 4; replay it with 2 ranks");
    expect_bad((struct bad_case){.start = 39, .stop = 41}, dir,
               "iterations 39 .. 41 are asked for, the file records 40 .. 42");
    expect_bad((struct bad_case){.start = 42, .stop = 41}, dir, "--replay-start-iter 42 is after --replay-stop-iter 41");
    expect_bad((struct bad_case){.tokens = 4}, dir,
               "rank 0 iteration 40 layer 3 routes 5 tokens, this rank runs 4 (batch size x seq-len-q, its own "
               "requests)");
    expect_bad((struct bad_case){.top_k = 8}, dir,
               "rank 0 iteration 40 layer 3 chooses 6 experts per token, the model's top-k is 8");
    expect_bad((struct bad_case){.experts = 256}, dir,
               "rank 0 iteration 40 layer 3 has num_slots 64, the layer as run has 256 routed experts");
    expect_bad((struct bad_case){.layers = {{3, true}, {5, true}}, .nlayers = 2}, dir,
               "rank 0 iteration 40 has no routing of layer 5");
    expect_bad((struct bad_case){.layers = {{4, false}}, .nlayers = 1}, dir,
               "unused replay data: rank 0 iteration 40 routes layer 4, which is a dense layer");
    expect_bad((struct bad_case){.rank = 1, .layers = {{3, true}, {1, false}}, .nlayers = 2}, dir,
               "unused replay data: rank 1 iteration 40 routes layer 1");
    // Ranks that recorded different iterations; a gap in the default range.
    b = (struct bad_case){0};
    b.text = "{\"world_size\": 2, \"all_ranks_records\": [[{\"iteration\": 1, \"metadata\": [], \"raw_data\": "
             "\"eJwDAAAAAAE=\"}], [{\"iteration\": 2, \"metadata\": [], \"raw_data\": \"eJwDAAAAAAE=\"}]]}";
    expect_bad(b, dir, "rank 1 has no record of iteration 1, which rank 0 records");
    b.text = "{\"world_size\": 2, \"all_ranks_records\": [[{\"iteration\": 1, \"metadata\": [], \"raw_data\": "
             "\"eJwDAAAAAAE=\"}], [{\"iteration\": 1, \"metadata\": [], \"raw_data\": \"eJwDAAAAAAE=\"}, "
             "{\"iteration\": 2, \"metadata\": [], \"raw_data\": \"eJwDAAAAAAE=\"}]]}";
    expect_bad(b, dir, "rank 1 records iteration 2, which rank 0 does not");
    b.text = "{\"world_size\": 1, \"all_ranks_records\": [[{\"iteration\": 1, \"metadata\": [], \"raw_data\": "
             "\"eJwDAAAAAAE=\"}, {\"iteration\": 3, \"metadata\": [], \"raw_data\": \"eJwDAAAAAAE=\"}]]}";
    b.world = 1;
    expect_bad(b, dir, "the recorded iterations 1 .. 3 have a gap after 1; replay a contiguous part");
    b.start = 2, b.stop = 3;
    expect_bad(b, dir, "rank 0 has no record of iteration 2");
    b.text = "{\"world_size\": 1, \"all_ranks_records\": [[]]}";
    b.start = b.stop = 0;
    expect_bad(b, dir, "rank 0 has no recorded iterations");
    // Not a regular file; too deep a path is input_read's.
    b = (struct bad_case){.path = "/dev/null", .world = 1};
    expect_bad(b, dir, "/dev/null");
    rm_rf(dir), free(dir);
}

// ---------------------------------------------------------------------------------------------
// Collect, then replay: what lwb writes reads back to the same choices in the same iterations

static void test_round_trip(void **state) {
    (void)state;
    char *dir = make_tmpdir(), *path = lwb_path_join(dir, "collected.json");
    // Three ranks, iterations 0..9, two MoE layers (5 and 7) of 11 tokens, top-8 of 256.
    enum { W = 3, N = 10, L = 2, T = 11, K = 8, E = 256 };
    int32_t *ids = xmalloc(sizeof(int32_t) * W * N * L * T * K);
    for (int i = 0; i < W * N * L * T * K; i++) ids[i] = (int32_t)((i * 2654435761u) >> 8) % E;
    struct lwb_calib c = {.path = xstrdup(path), .world_size = W};
    c.nrec = xcalloc(W, sizeof *c.nrec);
    c.rec = xcalloc(W, sizeof *c.rec);
    for (int q = 0; q < W; q++) {
        c.nrec[q] = N;
        c.rec[q] = xcalloc(N, sizeof *c.rec[q]);
        for (int g = 0; g < N; g++) {
            c.rec[q][g] = (struct lwb_calib_record){.iteration = g, .n = L, .e = xcalloc(L, sizeof(struct lwb_calib_entry))};
            for (int m = 0; m < L; m++)
                c.rec[q][g].e[m] = (struct lwb_calib_entry){m ? 7 : 5, E, T, K, ids + (((q * N + g) * L + m) * T * K)};
        }
    }
    calib_save(path, &c);
    outputs_commit();
    calib_free(&c);
    struct lwb_calib back;
    calib_load(path, &back);
    const struct lwb_replay_layer ls[3] = {{5, true}, {6, false}, {7, true}};
    for (int q = 0; q < W; q++) {
        struct lwb_replay rp;
        replay_plan(&back, q, W, ls, 3, T, K, E, N, -1, -1, &rp);
        assert_int_equal(rp.start, 0);
        assert_int_equal(rp.niter, N);
        assert_memory_equal(rp.ids, ids + (size_t)q * N * L * T * K, sizeof(int32_t) * N * L * T * K);
        replay_free(&rp);
    }
    calib_free(&back);
    // The file is the reference's format: keys and types as its calibrator writes them.
    json_t *root = json_load_file(path, 0, NULL);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "world_size")), W);
    json_t *r0 = json_array_get(json_array_get(json_object_get(root, "all_ranks_records"), 0), 3);
    assert_int_equal(json_integer_value(json_object_get(r0, "iteration")), 3);
    json_t *m1 = json_array_get(json_object_get(r0, "metadata"), 1);
    assert_int_equal(json_integer_value(json_object_get(m1, "layer_idx")), 7);
    assert_int_equal(json_integer_value(json_object_get(m1, "num_slots")), E);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(m1, "token_selected_slots_shape"), 1)), K);
    assert_true(json_is_string(json_object_get(r0, "raw_data")));
    json_decref(root);
    free(ids), free(path);
    rm_rf(dir), free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),       cmocka_unit_test(test_load_two_ranks), cmocka_unit_test(test_load_odd),
        cmocka_unit_test(test_bad_files),    cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests_name("calib", tests, NULL, NULL);
}

// calib.h: recorded MoE routing in TensorRT-LLM's calibration file format, read for replay
// (--replay-file-path) and written by --collect-calibration.
//
// Defines: struct lwb_calib (a decoded file) with calib_load (one-line errors naming the file,
// the rank, the record and the field), calib_save and calib_free; struct lwb_replay and
// replay_plan (one rank's recorded iterations in a range, checked against the run), base64_encode
// and base64_decode.
//
// The file (the reference's calibrator):
//   {"world_size": N,
//    "all_ranks_records": [                      one list per rank, rank order
//      [ {"iteration": I,                        the executor's iteration number
//         "metadata": [ {"layer_idx": L, "num_slots": S, "token_selected_slots_shape": [T, K]}, ...],
//         "raw_data": "<base64 of the zlib stream of every entry's T x K int32 slots (little
//                      endian), concatenated in metadata order>"}, ... ], ... ]}
// A layer has one entry per MoE call of the iteration: several when the serving engine chunks
// the MoE (their tokens follow each other), none for dense layers.
//
// Replay (the reference's REPLAY mode, minus its quirks): iteration i of a problem's loop
// (warm-up included) takes the recorded iteration start + i mod (stop - start + 1); the range
// defaults to the file's, which must then be contiguous. Checked before any allocation: the world
// size; every rank has the same iterations; the range against them; every selected MoE layer has
// entries in every replayed iteration whose tokens add up to the problem's tokens on this rank,
// with the model's top-k and experts, and slots inside 0 .. experts - 1; no entries for selected
// dense layers ("unused replay data"). Entries of layers that are not selected are skipped. Unlike
// the reference, the selected layers need not be contiguous, and top-k and the experts need not
// allow its `arange % 32` placeholders (lwb warms up with the first replayed iteration).
//
// Does not: touch the device (the family stages the choices, runner.h copies them in before each
// iteration), or decide which layers route (the run plan says).
// Tested by test/test_calib.c (files built from the format's description: several ranks, chunks,
// odd shapes; every bad case; the collect / replay round trip on the CPU side).
#pragma once
#include <zlib.h>

// ---------------------------------------------------------------------------------------------
// base64 (RFC 4648, with padding), as Python's base64.b64encode writes it

static const char lwb_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const unsigned char *p, size_t n) {
    char *out = xmalloc((n + 2) / 3 * 4 + 1), *o = out;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        *o++ = lwb_b64[v >> 18 & 63], *o++ = lwb_b64[v >> 12 & 63];
        *o++ = i + 1 < n ? lwb_b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? lwb_b64[v & 63] : '=';
    }
    *o = 0;
    return out;
}

static bool b64_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// Decodes s (n characters) into out (room for n / 4 * 3 bytes), *k bytes; false when s is not
// base64: padding required, ASCII whitespace (line-wrapped base64) skipped.
static bool b64_decode_into(const char *s, size_t n, unsigned char *out, size_t *k) {
    uint32_t v = 0;
    int got = 0, pad = 0; // characters of the current quantum, '=' among them
    size_t i = 0;
    for (; i < n; i++) {
        const char c = s[i];
        if (b64_space(c)) continue;
        const char *at = c && c != '=' ? strchr(lwb_b64, c) : NULL;
        if (c == '=' && got >= 2) pad++, v <<= 6;
        else if (at && !pad) v = v << 6 | (uint32_t)(at - lwb_b64);
        else return false; // not the alphabet, '=' too early, or data after '='
        if (++got < 4) continue;
        out[(*k)++] = (unsigned char)(v >> 16);
        if (pad < 2) out[(*k)++] = (unsigned char)(v >> 8);
        if (pad < 1) out[(*k)++] = (unsigned char)v;
        got = 0, v = 0;
        if (pad) break; // padding ends the data
    }
    for (i++; i < n; i++)
        if (!b64_space(s[i])) return false;
    return got == 0;
}

// The bytes s (n characters) encodes (*len of them), or NULL when s is not base64.
static unsigned char *base64_decode(const char *s, size_t n, size_t *len) {
    unsigned char *out = xmalloc(n / 4 * 3 + 3);
    *len = 0;
    if (b64_decode_into(s, n, out, len)) return out;
    free(out);
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// The file

struct lwb_calib_entry {
    int layer, slots;  // layer_idx, num_slots
    int tokens, top_k; // token_selected_slots_shape
    int32_t *ids;      // (tokens, top_k), inside the record's data; NULL until inflated
};

struct lwb_calib_record {
    long long iteration;
    int n;                       // metadata entries
    struct lwb_calib_entry *e;   // (n) in call order
    long long slots;             // declared by the metadata: every entry's tokens x top_k
    char *raw;                   // raw_data (base64 of the zlib stream), as in the file
    size_t raw_len;
    int32_t *data;               // every entry's slots once inflated (calib_inflate), else NULL
};

struct lwb_calib {
    char *path;
    int world_size;
    int *nrec;                       // (world_size) records per rank
    struct lwb_calib_record **rec;   // (world_size) (nrec[r]) in file order
    int **order;                     // (world_size) (nrec[r]) record indices by iteration
};

// Most slots one record may declare (2 GiB of int32 once inflated), and most records per rank:
// bounds on what a small file can claim. Records are inflated one at a time, and only the ones
// a rank replays.
#define LWB_CALIB_MAX_SLOTS (1ll << 29)
#define LWB_CALIB_MAX_RECORDS 1000000

static void calib_free(struct lwb_calib *c) {
    for (int r = 0; c->rec && r < c->world_size; r++) {
        for (int i = 0; i < c->nrec[r]; i++) free(c->rec[r][i].e), free(c->rec[r][i].data), free(c->rec[r][i].raw);
        free(c->rec[r]);
        if (c->order) free(c->order[r]);
    }
    free(c->rec), free(c->nrec), free(c->order), free(c->path);
    memset(c, 0, sizeof *c);
}

// An integer member of `o` within lo..hi, or a one-line error naming where.
static long long calib_int(const struct lwb_calib *c, json_t *o, const char *key, long long lo, long long hi,
                           const char *where) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        lwb_user_error("%s: %s needs an integer \"%s\" (the calibration file format of TensorRT-LLM's layer-wise "
                       "benchmarks)",
                       c->path, where, key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        lwb_user_error("%s: %s has \"%s\": %lld, outside %lld .. %lld", c->path, where, key, x, lo, hi);
    return x;
}

// One record's metadata, checked; raw_data kept as text until the record is needed.
static void calib_record(struct lwb_calib *c, json_t *o, int rank, int index, struct lwb_calib_record *rec) {
    char where[96];
    snprintf(where, sizeof where, "rank %d record %d", rank, index);
    if (!json_is_object(o)) lwb_user_error("%s: %s is not an object", c->path, where);
    rec->iteration = calib_int(c, o, "iteration", 0, INT64_MAX, where);
    snprintf(where, sizeof where, "rank %d iteration %lld", rank, rec->iteration);
    json_t *meta = json_object_get(o, "metadata"), *raw = json_object_get(o, "raw_data");
    if (!json_is_array(meta)) lwb_user_error("%s: %s needs a \"metadata\" list", c->path, where);
    if (!json_is_string(raw)) lwb_user_error("%s: %s needs a \"raw_data\" string (base64)", c->path, where);
    if (json_array_size(meta) > 1000000)
        lwb_user_error("%s: %s has %zu metadata entries; lwb reads at most 1000000", c->path, where,
                       json_array_size(meta));
    rec->n = (int)json_array_size(meta);
    rec->e = xcalloc((size_t)rec->n + 1, sizeof *rec->e);
    for (int k = 0; k < rec->n; k++) {
        json_t *m = json_array_get(meta, (size_t)k);
        char mw[160];
        snprintf(mw, sizeof mw, "%s metadata entry %d", where, k);
        if (!json_is_object(m)) lwb_user_error("%s: %s is not an object", c->path, mw);
        struct lwb_calib_entry *e = &rec->e[k];
        e->layer = (int)calib_int(c, m, "layer_idx", 0, 100000, mw);
        e->slots = (int)calib_int(c, m, "num_slots", 1, 1 << 20, mw);
        json_t *sh = json_object_get(m, "token_selected_slots_shape");
        if (!json_is_array(sh) || json_array_size(sh) != 2 || !json_is_integer(json_array_get(sh, 0)) ||
            !json_is_integer(json_array_get(sh, 1)))
            lwb_user_error("%s: %s needs \"token_selected_slots_shape\": [tokens, top_k]", c->path, mw);
        long long t = json_integer_value(json_array_get(sh, 0)), kk = json_integer_value(json_array_get(sh, 1));
        if (t < 0 || t > (1 << 24) || kk < 1 || kk > 1024)
            lwb_user_error("%s: %s has token_selected_slots_shape [%lld, %lld]: tokens must be 0 .. %d and top_k 1 .. "
                           "1024",
                           c->path, mw, t, kk, 1 << 24);
        e->tokens = (int)t, e->top_k = (int)kk;
        rec->slots += t * kk;
        if (rec->slots > LWB_CALIB_MAX_SLOTS)
            lwb_user_error("%s: %s declares more than %lld slots in one iteration", c->path, where,
                           (long long)LWB_CALIB_MAX_SLOTS);
    }
    rec->raw_len = json_string_length(raw);
    rec->raw = xstrndup(json_string_value(raw), rec->raw_len);
}

// A record's slots, decoded and inflated to exactly what its metadata declares, each in range.
static void calib_inflate(const struct lwb_calib *c, int rank, struct lwb_calib_record *rec) {
    if (rec->data) return;
    char where[96];
    snprintf(where, sizeof where, "rank %d iteration %lld", rank, rec->iteration);
    size_t zlen = 0;
    unsigned char *z = base64_decode(rec->raw, rec->raw_len, &zlen);
    if (!z) lwb_user_error("%s: %s: raw_data is not base64", c->path, where);
    const long long total = rec->slots;
    rec->data = xmalloc((size_t)total * 4 + 4);
    uLongf got = (uLongf)total * 4;
    int zr = uncompress((Bytef *)rec->data, &got, z, (uLong)zlen);
    free(z);
    if (zr == Z_BUF_ERROR)
        lwb_user_error("%s: %s: raw_data holds more than the %lld slots its metadata declares (or is cut short)",
                       c->path, where, total);
    if (zr != Z_OK)
        lwb_user_error("%s: %s: raw_data is not a zlib stream (%s)", c->path, where,
                       zr == Z_DATA_ERROR ? "corrupt data" : "zlib error");
    if (got != (uLongf)total * 4)
        lwb_user_error("%s: %s: raw_data holds %lu bytes, its metadata declares %lld slots (%lld bytes)", c->path, where,
                       (unsigned long)got, total, total * 4);
    long long at = 0;
    for (int k = 0; k < rec->n; k++) {
        struct lwb_calib_entry *e = &rec->e[k];
        e->ids = rec->data + at;
        const long long n = (long long)e->tokens * e->top_k;
        for (long long i = 0; i < n; i++) {
            // little-endian int32 on disk; lwb runs on little-endian hosts only (x86-64, aarch64 LE)
            if (e->ids[i] < 0 || e->ids[i] >= e->slots)
                lwb_user_error("%s: %s metadata entry %d (layer %d): slot %d of token %lld is outside 0 .. %d "
                               "(num_slots %d)",
                               c->path, where, k, e->layer, (int)e->ids[i], i / e->top_k, e->slots - 1, e->slots);
        }
        at += n;
    }
}

// Drops an inflated record's slots (calib_inflate makes them again).
static void calib_release(struct lwb_calib_record *rec) {
    free(rec->data);
    rec->data = NULL;
    for (int k = 0; k < rec->n; k++) rec->e[k].ids = NULL;
}

static const struct lwb_calib_record *calib_order_base; // for the sort below (one thread)
static int calib_by_iteration(const void *a, const void *b) {
    long long x = calib_order_base[*(const int *)a].iteration, y = calib_order_base[*(const int *)b].iteration;
    return (x > y) - (x < y);
}

// Reads and checks a whole calibration file's structure and metadata (raw_data is decoded per
// record when a replay needs it: calib_inflate). Exits with one line naming what is wrong.
static void calib_load(const char *path, struct lwb_calib *c) {
    memset(c, 0, sizeof *c);
    c->path = xstrdup(path);
    char why[512];
    size_t size;
    char *text = input_read(path, LWB_IN_CALIB, &size, why, sizeof why);
    if (!text) lwb_user_error("--replay-file-path %s: %s", path, why);
    json_error_t err;
    json_t *root = json_loadb(text, size, JSON_REJECT_DUPLICATES, &err);
    free(text);
    if (!root) lwb_user_error("%s:%d: not valid JSON: %s", path, err.line, err.text);
    if (!json_is_object(root))
        lwb_user_error("%s: a calibration file is an object with \"world_size\" and \"all_ranks_records\"", path);
    c->world_size = (int)calib_int(c, root, "world_size", 1, 65536, "the file");
    json_t *all = json_object_get(root, "all_ranks_records");
    if (!json_is_array(all) || json_array_size(all) != (size_t)c->world_size)
        lwb_user_error("%s: \"all_ranks_records\" must be a list of %d lists (one per rank of world_size %d)%s", path,
                       c->world_size, c->world_size, json_is_array(all) ? "" : "; it is missing or not a list");
    c->nrec = xcalloc((size_t)c->world_size, sizeof *c->nrec);
    c->rec = xcalloc((size_t)c->world_size, sizeof *c->rec);
    c->order = xcalloc((size_t)c->world_size, sizeof *c->order);
    for (int r = 0; r < c->world_size; r++) {
        json_t *list = json_array_get(all, (size_t)r);
        if (!json_is_array(list)) lwb_user_error("%s: the records of rank %d are not a list", path, r);
        if (json_array_size(list) > LWB_CALIB_MAX_RECORDS)
            lwb_user_error("%s: rank %d has %zu records; lwb reads at most %d per rank", path, r, json_array_size(list),
                           LWB_CALIB_MAX_RECORDS);
        c->nrec[r] = (int)json_array_size(list);
        c->rec[r] = xcalloc((size_t)c->nrec[r] + 1, sizeof *c->rec[r]);
        c->order[r] = xcalloc((size_t)c->nrec[r] + 1, sizeof *c->order[r]);
        for (int i = 0; i < c->nrec[r]; i++) {
            calib_record(c, json_array_get(list, (size_t)i), r, i, &c->rec[r][i]);
            c->order[r][i] = i;
        }
        calib_order_base = c->rec[r];
        qsort(c->order[r], (size_t)c->nrec[r], sizeof *c->order[r], calib_by_iteration);
        for (int i = 1; i < c->nrec[r]; i++) {
            const int a = c->order[r][i - 1], b = c->order[r][i];
            if (c->rec[r][a].iteration == c->rec[r][b].iteration)
                lwb_user_error("%s: rank %d records iteration %lld twice (records %d and %d)", path, r,
                               c->rec[r][a].iteration, LWB_MIN(a, b), LWB_MAX(a, b));
        }
    }
    json_decref(root);
}

// Writes `c` (every record's entries, in order) as the reference writes it. Through the output
// machinery: complete or not at all.
static void calib_save(const char *path, const struct lwb_calib *c) {
    json_t *all = json_array();
    for (int r = 0; r < c->world_size; r++) {
        json_t *list = json_array();
        for (int i = 0; i < c->nrec[r]; i++) {
            const struct lwb_calib_record *rec = &c->rec[r][i];
            json_t *meta = json_array();
            size_t bytes = 0;
            for (int k = 0; k < rec->n; k++) {
                const struct lwb_calib_entry *e = &rec->e[k];
                json_array_append_new(meta, json_pack("{s:i, s:i, s:[i, i]}", "layer_idx", e->layer, "num_slots",
                                                      e->slots, "token_selected_slots_shape", e->tokens, e->top_k));
                bytes += (size_t)e->tokens * e->top_k * 4;
            }
            unsigned char *plain = xmalloc(bytes + 1), *at = plain;
            for (int k = 0; k < rec->n; k++) { // entries need not be adjacent in memory
                const size_t n = (size_t)rec->e[k].tokens * rec->e[k].top_k * 4;
                memcpy(at, rec->e[k].ids, n), at += n;
            }
            uLongf zlen = compressBound((uLong)bytes);
            unsigned char *z = xmalloc(zlen);
            if (compress2(z, &zlen, plain, (uLong)bytes, Z_DEFAULT_COMPRESSION) != Z_OK)
                lwb_fatal("%s: zlib could not compress %zu bytes of routing", path, bytes);
            char *b64 = base64_encode(z, zlen);
            json_array_append_new(list, json_pack("{s:I, s:o, s:s}", "iteration", (json_int_t)rec->iteration,
                                                  "metadata", meta, "raw_data", b64));
            free(b64), free(z), free(plain);
        }
        json_array_append_new(all, list);
    }
    json_t *root = json_pack("{s:i, s:o}", "world_size", c->world_size, "all_ranks_records", all);
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    output_write(path, text, strlen(text));
    free(text);
    json_decref(root);
}

// ---------------------------------------------------------------------------------------------
// Replay: one rank's iterations in a range, checked against the run

struct lwb_replay_layer {
    int index;  // model layer index
    bool moe;   // has routed experts (else it must have no entries)
};

struct lwb_replay {
    long long start, stop; // recorded iterations replayed, cycled
    int niter;             // stop - start + 1
    int nslots;            // iterations a problem's loop reaches: min(niter, loop iterations)
    int nlayers;           // routed layers of the run, in run order
    int tokens, top_k;     // per layer and iteration
    int32_t *ids;          // (nslots, nlayers, tokens, top_k): chunks joined
};

// The index of rank's record of iteration `it`, or -1 (binary search of the iteration order).
static int replay_find(const struct lwb_calib *c, int rank, long long it) {
    int lo = 0, hi = c->nrec[rank];
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        const long long x = c->rec[rank][c->order[rank][mid]].iteration;
        if (x == it) return c->order[rank][mid];
        if (x < it) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static long long calib_iteration(const struct lwb_calib *c, int rank, int i) {
    return c->rec[rank][c->order[rank][i]].iteration;
}

// One recorded iteration's entries against the run (no data read): every selected MoE layer routes
// `tokens` tokens with the model's top-k over its experts, no selected dense layer is routed.
static void replay_check_record(const struct lwb_calib *c, int rank, const struct lwb_calib_record *rec,
                                const struct lwb_replay_layer *layers, int n, int tokens, int top_k, int experts,
                                int world_size) {
    const char *path = c->path;
    const long long it = rec->iteration;
    for (int l = 0; l < n; l++) {
        long long got = 0;
        for (int k = 0; k < rec->n; k++) {
            const struct lwb_calib_entry *e = &rec->e[k];
            if (e->layer != layers[l].index) continue;
            if (!layers[l].moe)
                lwb_user_error("%s: unused replay data: rank %d iteration %lld routes layer %d, which is a dense "
                               "layer of this model (no routed experts); check the file's layer_idx against "
                               "--layer-indices",
                               path, rank, it, e->layer);
            if (e->slots != experts)
                lwb_user_error("%s: rank %d iteration %lld layer %d has num_slots %d, the layer as run has %d "
                               "routed experts (lwb has no redundant expert slots; with --scaled-from the experts "
                               "shrink: replay without it)",
                               path, rank, it, e->layer, e->slots, experts);
            if (e->top_k != top_k)
                lwb_user_error("%s: rank %d iteration %lld layer %d chooses %d experts per token, the model's "
                               "top-k is %d; the file is of another model",
                               path, rank, it, e->layer, e->top_k, top_k);
            got += e->tokens;
        }
        if (!layers[l].moe) continue;
        if (got == 0)
            lwb_user_error("%s: rank %d iteration %lld has no routing of layer %d; record every selected MoE layer "
                           "(or select the layers the file records)",
                           path, rank, it, layers[l].index);
        if (got != tokens)
            lwb_user_error("%s: rank %d iteration %lld layer %d routes %lld tokens, this rank runs %d (batch size x "
                           "seq-len-q%s); replay with the shape the file was recorded at",
                           path, rank, it, layers[l].index, got, tokens, world_size > 1 ? ", its own requests" : "");
    }
}

// Rank `rank`'s replay of `c` for a run of `world_size` ranks over `layers` (n of them), `tokens`
// tokens per forward on this rank, the model's `top_k` and `experts`, `loop` iterations per
// problem. start/stop < 0: the file's range. Every iteration of the range is checked; the first
// min(range, loop) are inflated (one record at a time) and kept. Exits with one line naming the
// file, the rank, the iteration or layer and the fix.
static void replay_plan(struct lwb_calib *c, int rank, int world_size, const struct lwb_replay_layer *layers, int n,
                        int tokens, int top_k, int experts, int loop, long long start, long long stop,
                        struct lwb_replay *out) {
    memset(out, 0, sizeof *out);
    const char *path = c->path;
    if (c->world_size != world_size)
        lwb_user_error("%s: recorded on %d ranks, this run has %d; replay it with %d ranks (each rank replays its own "
                       "records)",
                       path, c->world_size, world_size, c->world_size);
    // Every rank must hold the same iterations (the orders are sorted: compare them in step).
    const int nit = c->nrec[0];
    for (int r = 1; r < c->world_size; r++)
        for (int i = 0; i < LWB_MAX(nit, c->nrec[r]); i++) {
            if (i < nit && (i >= c->nrec[r] || calib_iteration(c, r, i) != calib_iteration(c, 0, i)))
                lwb_user_error("%s: rank %d has no record of iteration %lld, which rank 0 records; every rank must "
                               "record the same iterations",
                               path, r, calib_iteration(c, 0, i));
            if (i >= nit)
                lwb_user_error("%s: rank %d records iteration %lld, which rank 0 does not; every rank must record the "
                               "same iterations",
                               path, r, calib_iteration(c, r, i));
        }
    if (!nit) lwb_user_error("%s: rank %d has no recorded iterations", path, rank);
    const long long lo = calib_iteration(c, 0, 0), hi = calib_iteration(c, 0, nit - 1);
    if (start < 0) {
        for (int i = 1; i < nit; i++)
            if (calib_iteration(c, 0, i) != calib_iteration(c, 0, i - 1) + 1)
                lwb_user_error("%s: the recorded iterations %lld .. %lld have a gap after %lld; replay a contiguous part "
                               "with --replay-start-iter and --replay-stop-iter",
                               path, lo, hi, calib_iteration(c, 0, i - 1));
        start = lo, stop = hi;
    }
    if (start > stop)
        lwb_user_error("--replay-start-iter %lld is after --replay-stop-iter %lld", start, stop);
    if (start < lo || stop > hi)
        lwb_user_error("%s: iterations %lld .. %lld are asked for, the file records %lld .. %lld; give "
                       "--replay-start-iter and --replay-stop-iter inside that range",
                       path, start, stop, lo, hi);
    if (stop - start >= 100000)
        lwb_user_error("%s: %lld iterations asked for; lwb replays at most 100000", path, stop - start + 1);
    out->start = start, out->stop = stop, out->niter = (int)(stop - start + 1);
    out->nslots = LWB_MIN(out->niter, LWB_MAX(loop, 1));
    out->tokens = tokens, out->top_k = top_k;
    for (int l = 0; l < n; l++) out->nlayers += layers[l].moe;
    for (long long it = start; it <= stop; it++) {
        const int ri = replay_find(c, rank, it);
        if (ri < 0)
            lwb_user_error("%s: rank %d has no record of iteration %lld (inside --replay-start-iter %lld .. "
                           "--replay-stop-iter %lld); pick a range the file records",
                           path, rank, it, start, stop);
        replay_check_record(c, rank, &c->rec[rank][ri], layers, n, tokens, top_k, experts, world_size);
    }
    const size_t per = (size_t)tokens * top_k;
    out->ids = xmalloc(sizeof(int32_t) * (per * (size_t)out->nslots * (size_t)out->nlayers + 1));
    for (int slot = 0; slot < out->nslots; slot++) {
        struct lwb_calib_record *rec = &c->rec[rank][replay_find(c, rank, start + slot)];
        calib_inflate(c, rank, rec);
        for (int l = 0, moe_at = 0; l < n; l++) {
            if (!layers[l].moe) continue;
            int32_t *dst = out->ids + ((size_t)slot * out->nlayers + moe_at++) * per;
            for (int k = 0; k < rec->n; k++) { // chunks of the layer follow each other
                const struct lwb_calib_entry *e = &rec->e[k];
                if (e->layer != layers[l].index) continue;
                memcpy(dst, e->ids, sizeof(int32_t) * (size_t)e->tokens * top_k);
                dst += (size_t)e->tokens * top_k;
            }
        }
        calib_release(rec);
    }
}

static void replay_free(struct lwb_replay *r) {
    free(r->ids);
    memset(r, 0, sizeof *r);
}

// The recorded iteration that iteration i of a problem's loop replays (the reference's cycle).
static int replay_slot(const struct lwb_replay *r, int i) { return i % r->niter; }

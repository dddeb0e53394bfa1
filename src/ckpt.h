// ckpt.h: a Hugging Face checkpoint folder, for `lwb run --load-format AUTO`: config.json beside
// model.safetensors.index.json and the shards its weight_map names, or beside one
// model.safetensors.
//
// Defines: struct lwb_ckpt with ckpt_open (reads the index and the headers of the shards that
// hold the named tensors: nothing else), ckpt_expect (one tensor a run needs: present, in the
// shard the index names, with the dtype and shape the model says; one line naming tensor, file
// and expectation otherwise), ckpt_close; struct ckpt_piece (a block of rows of a tensor, or of
// byte columns of its rows, and where it goes on the device) and ckpt_copy (pieces to the device
// through two pinned staging buffers, or to any ckpt_sink: the tests' host memory), ckpt_rate.
//
// NOTES:
// - Shards are memory-mapped (read-only, MADV_SEQUENTIAL); a piece's rows are gathered from the
//   mapping into a pinned buffer while the other buffer's copy runs, then placed with one
//   cuMemcpy2DAsync (destination pitch: interleaved or strided layouts cost nothing extra).
// - Everything a run reads is checked by ckpt_expect before any device memory is allocated; a
//   shard's header is checked by st_open (a truncated shard fails there: its tensors must tile
//   the data to the end of the file).
//
// Does not: know a model's tensor names or lwb's layouts (the layer families plan the pieces),
// convert dtypes, or quantise.
// Tested by test/test_ckpt.c (good checkpoints made on the fly, bf16 and FP8, sharded, with odd
// sizes; and every bad case).
#pragma once
#include <sys/mman.h>

struct ckpt_shard {
    char *name;                // file name inside the folder
    struct lwb_st_file st;     // header (fd open)
    const unsigned char *map;  // the whole file, mapped on first copy (NULL before)
    size_t map_bytes;
};

struct ckpt_entry {
    const char *name;          // tensor name (in the index or the single file's header)
    int shard;                 // index into shards
    const struct lwb_st_tensor *t; // NULL until the shard is opened
};

struct lwb_ckpt {
    char *dir;
    char *index_path;          // model.safetensors.index.json, or NULL (one model.safetensors)
    json_t *index;             // the parsed index
    struct ckpt_shard *shards;
    int nshards;
    struct ckpt_entry *ents;   // sorted by name
    int nents;
    double bytes_copied, seconds; // ckpt_copy's totals
};

static int ckpt_entry_cmp(const void *a, const void *b) {
    return strcmp(((const struct ckpt_entry *)a)->name, ((const struct ckpt_entry *)b)->name);
}

static struct ckpt_entry *ckpt_find(const struct lwb_ckpt *c, const char *name) {
    struct ckpt_entry key = {.name = name};
    return c->nents ? bsearch(&key, c->ents, (size_t)c->nents, sizeof key, ckpt_entry_cmp) : NULL;
}

static int ckpt_shard_of(struct lwb_ckpt *c, const char *file) {
    for (int i = 0; i < c->nshards; i++)
        if (!strcmp(c->shards[i].name, file)) return i;
    c->shards = xrealloc(c->shards, sizeof *c->shards * (size_t)(c->nshards + 1));
    c->shards[c->nshards] = (struct ckpt_shard){.name = xstrdup(file), .st = {.fd = -1}};
    return c->nshards++;
}

// Open the shard if it is not yet, checking it is a regular safetensors file inside the folder.
static void ckpt_open_shard(struct lwb_ckpt *c, int i, const char *for_tensor) {
    struct ckpt_shard *s = &c->shards[i];
    if (s->st.fd >= 0) return;
    char *path = lwb_path_join(c->dir, s->name), err[1024];
    if (access(path, F_OK) != 0)
        lwb_user_error("checkpoint %s: %s, which %s names for %s, is missing; copy the whole checkpoint", c->dir,
                       s->name, c->index_path ? "model.safetensors.index.json" : "the folder", for_tensor);
    if (!input_check(path, LWB_IN_CHECKPOINT, err, sizeof err))
        lwb_user_error("checkpoint %s: %s: %s", c->dir, s->name, err);
    if (st_open(path, &s->st, err, sizeof err) != 0)
        lwb_user_error("checkpoint %s: %s (a damaged or truncated shard: copy it again)", c->dir, err);
    free(path);
    // Point the shard's entries at their headers.
    for (int k = 0; k < s->st.n; k++) {
        struct ckpt_entry *e = ckpt_find(c, s->st.t[k].name);
        if (e && e->shard == i) e->t = &s->st.t[k];
    }
}

// The folder's index (or its single model.safetensors). Shards are opened as tensors are asked
// for. Errors are one line naming the folder and the file.
static void ckpt_open(const char *dir, struct lwb_ckpt *c) {
    *c = (struct lwb_ckpt){.dir = xstrdup(dir)};
    char *ipath = lwb_path_join(dir, "model.safetensors.index.json"), err[1024];
    if (access(ipath, F_OK) == 0) {
        size_t n;
        char *text = input_read(ipath, LWB_IN_MODEL, &n, err, sizeof err);
        if (!text) lwb_user_error("checkpoint %s: model.safetensors.index.json: %s", dir, err);
        json_error_t je;
        c->index = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
        free(text);
        json_t *wm = c->index ? json_object_get(c->index, "weight_map") : NULL;
        if (!c->index)
            lwb_user_error("checkpoint %s: model.safetensors.index.json is not valid JSON (line %d: %s)", dir, je.line,
                           je.text);
        if (!json_is_object(wm))
            lwb_user_error("checkpoint %s: model.safetensors.index.json has no \"weight_map\" object (tensor name -> "
                           "shard file)",
                           dir);
        c->index_path = ipath;
        c->ents = xcalloc(json_object_size(wm) + 1, sizeof *c->ents);
        const char *name;
        json_t *v;
        json_object_foreach(wm, name, v) {
            const char *file = json_string_value(v);
            if (!file || !*file || strchr(file, '/') || !strcmp(file, "..") || !strcmp(file, "."))
                lwb_user_error("checkpoint %s: model.safetensors.index.json maps %s to %s; shards must be file names "
                               "inside the folder",
                               dir, tesc(name), file ? tesc(file) : "a non-string");
            c->ents[c->nents++] = (struct ckpt_entry){name, ckpt_shard_of(c, file), NULL};
        }
    } else {
        free(ipath);
        char *one = lwb_path_join(dir, "model.safetensors");
        if (access(one, F_OK) != 0)
            lwb_user_error("checkpoint %s: neither model.safetensors.index.json nor model.safetensors is there; "
                           "--load-format AUTO needs a Hugging Face checkpoint folder (or give --load-format DUMMY "
                           "for random weights)",
                           dir);
        free(one);
        int s = ckpt_shard_of(c, "model.safetensors");
        ckpt_open_shard(c, s, "every tensor");
        c->ents = xcalloc((size_t)c->shards[s].st.n + 1, sizeof *c->ents);
        for (int k = 0; k < c->shards[s].st.n; k++)
            c->ents[c->nents++] = (struct ckpt_entry){c->shards[s].st.t[k].name, s, &c->shards[s].st.t[k]};
    }
    qsort(c->ents, (size_t)c->nents, sizeof *c->ents, ckpt_entry_cmp);
    for (int i = 1; i < c->nents; i++)
        if (!strcmp(c->ents[i - 1].name, c->ents[i].name))
            lwb_user_error("checkpoint %s: tensor %s appears twice", dir, tesc(c->ents[i].name));
}

static void ckpt_shape_text(const int64_t *shape, int ndim, char *out, size_t n) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(out + k, n - k, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (k < n) snprintf(out + k, n - k, "]");
}

// The tensor `w` names, checked against what `w` says it must be (dtype, shape); `why` tells the
// user where the expectation comes from ("config.json of DIR, FP8 checkpoint").
static const struct lwb_st_tensor *ckpt_expect(struct lwb_ckpt *c, const struct lwb_weight *w, const char *why) {
    struct ckpt_entry *e = ckpt_find(c, w->name);
    char want[96], got[96];
    ckpt_shape_text(w->shape, w->ndim, want, sizeof want);
    if (!e)
        lwb_user_error("checkpoint %s: tensor %s (%s %s) is missing from %s; is this the checkpoint of the model "
                       "(%s)?",
                       c->dir, w->name, w->dtype, want, c->index_path ? "model.safetensors.index.json" : "model.safetensors",
                       why);
    ckpt_open_shard(c, e->shard, w->name);
    const char *file = c->shards[e->shard].name;
    if (!e->t)
        lwb_user_error("checkpoint %s: %s does not hold tensor %s (%s %s), though model.safetensors.index.json says it "
                       "does; the index and the shards disagree",
                       c->dir, file, w->name, w->dtype, want);
    ckpt_shape_text(e->t->shape, e->t->ndim, got, sizeof got);
    bool shape_ok = e->t->ndim == w->ndim;
    for (int d = 0; shape_ok && d < w->ndim; d++) shape_ok = e->t->shape[d] == w->shape[d];
    if (strcmp(e->t->dtype, w->dtype) || !shape_ok)
        lwb_user_error("checkpoint %s: tensor %s in %s is %s %s; expected %s %s (%s)", c->dir, w->name, file,
                       tesc(e->t->dtype), got, w->dtype, want, why);
    return e->t;
}

static void ckpt_close(struct lwb_ckpt *c) {
    for (int i = 0; i < c->nshards; i++) {
        if (c->shards[i].map) munmap((void *)c->shards[i].map, c->shards[i].map_bytes);
        if (c->shards[i].st.fd >= 0) st_close(&c->shards[i].st);
        free(c->shards[i].name);
    }
    free(c->shards), free(c->ents), free(c->dir), free(c->index_path);
    json_decref(c->index);
    *c = (struct lwb_ckpt){0};
}

// ---------------------------------------------------------------------------------------------
// Copies

// `height` rows of `width` bytes of tensor `name`, the first at byte `src_off` of the tensor and
// the next `src_pitch` bytes on, to `dst` with rows `dst_pitch` bytes apart.
struct ckpt_piece {
    const char *name;
    uint64_t src_off;
    size_t width, height, src_pitch;
    CUdeviceptr dst;
    size_t dst_pitch;
};

// Where pieces go: `put` receives packed rows (host memory, `width` bytes each) for dst.
struct ckpt_sink {
    void (*put)(void *ctx, const void *rows, size_t width, size_t height, CUdeviceptr dst, size_t dst_pitch);
    void (*flush)(void *ctx); // after the last piece: every put complete
    void *ctx;
};

// The device: two pinned staging buffers; a put waits until its buffer's last copy is done,
// gathers into it (the caller already did: rows arrive packed in the buffer), copies async.
struct ckpt_device_sink {
    CUstream s;
    unsigned char *stage[2];
    size_t stage_bytes;
    CUevent done[2];
    int next;
    bool used[2];
};

static void ckpt_device_put(void *ctx, const void *rows, size_t width, size_t height, CUdeviceptr dst,
                            size_t dst_pitch) {
    struct ckpt_device_sink *d = ctx;
    (void)rows; // already in d->stage[d->next] (ckpt_copy gathers into the sink's buffer)
    const int b = d->next;
    CUDA_MEMCPY2D m = {.srcMemoryType = CU_MEMORYTYPE_HOST, .srcHost = d->stage[b], .srcPitch = width,
                       .dstMemoryType = CU_MEMORYTYPE_DEVICE, .dstDevice = dst, .dstPitch = dst_pitch,
                       .WidthInBytes = width, .Height = height};
    CU_CHECK(lwb_cu.cuMemcpy2DAsync(&m, d->s));
    CU_CHECK(lwb_cu.cuEventRecord(d->done[b], d->s));
    d->used[b] = true;
    d->next = 1 - b;
}

static void ckpt_device_flush(void *ctx) {
    struct ckpt_device_sink *d = ctx;
    CU_CHECK(lwb_cu.cuStreamSynchronize(d->s));
}

// The staging buffer the next put fills (waiting for its previous copy).
static unsigned char *ckpt_device_buffer(struct ckpt_device_sink *d) {
    if (d->used[d->next]) CU_CHECK(lwb_cu.cuEventSynchronize(d->done[d->next]));
    return d->stage[d->next];
}

static void ckpt_device_sink_init(struct ckpt_device_sink *d, CUstream s, size_t bytes) {
    *d = (struct ckpt_device_sink){.s = s, .stage_bytes = bytes};
    for (int i = 0; i < 2; i++) {
        void *p;
        CU_CHECK(lwb_cu.cuMemAllocHost(&p, bytes));
        d->stage[i] = p;
        CU_CHECK(lwb_cu.cuEventCreate(&d->done[i], 0));
    }
}

static void ckpt_device_sink_free(struct ckpt_device_sink *d) {
    for (int i = 0; i < 2; i++) {
        CU_CHECK(lwb_cu.cuMemFreeHost(d->stage[i]));
        CU_CHECK(lwb_cu.cuEventDestroy(d->done[i]));
    }
}

static const unsigned char *ckpt_map(struct lwb_ckpt *c, int i) {
    struct ckpt_shard *s = &c->shards[i];
    if (!s->map) {
        struct stat st;
        if (fstat(s->st.fd, &st) != 0) lwb_fatal("checkpoint %s: %s: %s", c->dir, s->name, strerror(errno));
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, s->st.fd, 0);
        if (m == MAP_FAILED) lwb_fatal("checkpoint %s: cannot map %s: %s", c->dir, s->name, strerror(errno));
        madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
        s->map = m, s->map_bytes = (size_t)st.st_size;
    }
    return s->map;
}

// Copy every piece: rows gathered from the mapped shards into `buffer(ctx)` (at most
// `stage_bytes` at a time; NULL buffer: the sink takes rows straight from the mapping), then put.
static void ckpt_copy(struct lwb_ckpt *c, const struct ckpt_piece *p, int n, struct ckpt_sink sink,
                      unsigned char *(*buffer)(void *ctx), size_t stage_bytes) {
    double t0 = lwb_now(), bytes = 0;
    for (int i = 0; i < n; i++) {
        struct ckpt_entry *e = ckpt_find(c, p[i].name);
        if (!e || !e->t) LWB_BUG("checkpoint: %s was not checked before the copy", p[i].name);
        const uint64_t size = e->t->end - e->t->begin;
        if (p[i].height && p[i].src_off + (p[i].height - 1) * p[i].src_pitch + p[i].width > size)
            LWB_BUG("checkpoint: a piece of %s reads past its %" PRIu64 " bytes", p[i].name, size);
        const unsigned char *src = ckpt_map(c, e->shard) + c->shards[e->shard].st.data_start + e->t->begin + p[i].src_off;
        size_t rows_per = p[i].width ? LWB_MAX((size_t)1, stage_bytes / p[i].width) : 1;
        if (buffer && p[i].width > stage_bytes) LWB_BUG("checkpoint: %s rows of %zu bytes exceed staging", p[i].name, p[i].width);
        for (size_t r = 0; r < p[i].height; r += rows_per) {
            size_t h = LWB_MIN(rows_per, p[i].height - r);
            const unsigned char *rows = src + r * p[i].src_pitch;
            if (buffer) {
                unsigned char *b = buffer(sink.ctx);
                if (p[i].src_pitch == p[i].width) memcpy(b, rows, h * p[i].width);
                else
                    for (size_t k = 0; k < h; k++) memcpy(b + k * p[i].width, rows + k * p[i].src_pitch, p[i].width);
                rows = b;
            }
            sink.put(sink.ctx, rows, p[i].width, h, p[i].dst + (CUdeviceptr)(r * p[i].dst_pitch), p[i].dst_pitch);
        }
        bytes += (double)p[i].width * (double)p[i].height;
    }
    if (sink.flush) sink.flush(sink.ctx);
    c->bytes_copied += bytes;
    c->seconds += lwb_now() - t0;
}

// Copy to the device on stream s through 2 x 64 MB of pinned staging.
static void ckpt_copy_to_device(struct lwb_ckpt *c, const struct ckpt_piece *p, int n, CUstream s) {
    struct ckpt_device_sink d;
    ckpt_device_sink_init(&d, s, (size_t)64 << 20);
    ckpt_copy(c, p, n, (struct ckpt_sink){ckpt_device_put, ckpt_device_flush, &d},
              (unsigned char *(*)(void *))ckpt_device_buffer, d.stage_bytes);
    ckpt_device_sink_free(&d);
}

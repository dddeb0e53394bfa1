// safetensors.h: write and read the safetensors format (Hugging Face's tensor files).
//
// Defines: struct lwb_st_writer with st_writer_begin, st_add (bytes copied now), st_add_fill
// (bytes produced by a callback while the file is written, so large device tensors stream through
// one host buffer), st_metadata, st_writer_finish (an output of files.h: in place at
// outputs_commit) and st_writer_abort;
// struct lwb_st_file with st_open, st_find, st_read, st_meta and st_close; st_dtype_size.
//
// The format: an 8-byte little-endian header length N, N bytes of JSON
// {"__metadata__": {str: str}, name: {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...}
// (padded with spaces), then the data; offsets are relative to the first data byte and the
// tensors tile the data with no gaps. The writer pads the header so the data starts 8-aligned,
// and orders the tensors by element size (largest first, otherwise in the order added), so every
// tensor starts aligned to its element size without gaps, as the reference implementation does.
//
// Does not: convert dtypes, or map files (st_read copies with pread).
// Tested by test/test_safetensors.c.
#pragma once
#include <jansson.h>

#define LWB_ST_MAX_DIMS 8
#define LWB_ST_MAX_HEADER (100u << 20) // the reference loader's limit on N

// Element size of a safetensors dtype, 0 when unknown.
static size_t st_dtype_size(const char *dtype) {
    static const struct {
        const char *name;
        size_t size;
    } t[] = {{"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
             {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
             {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
    for (size_t i = 0; i < LWB_ARRAY_LEN(t); i++)
        if (!strcmp(dtype, t[i].name)) return t[i].size;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Writer

// Produce `bytes` bytes of tensor `name` into `dst`; return 0, or nonzero to abandon the file.
typedef int (*lwb_st_fill_fn)(void *ctx, const char *name, void *dst, size_t bytes);

struct lwb_st_entry {
    char *name;                     // tensor name (owned)
    char dtype[8];                  // "BF16", "F32", ...
    int ndim;                       // 0 (a scalar) .. LWB_ST_MAX_DIMS
    int64_t shape[LWB_ST_MAX_DIMS]; // (ndim)
    uint64_t bytes;                 // product of shape x element size
    void *data;                     // copied bytes (st_add), or NULL
    lwb_st_fill_fn fill;            // or the producer (st_add_fill)
    void *ctx;                      // passed to fill
    uint64_t begin;                 // data offset, assigned at finish
};

struct lwb_st_writer {
    char *path;             // the file to create
    struct lwb_st_entry *e; // (n) in the order added
    int n;                  // tensors added
    size_t cap;             // allocated entries
    json_t *meta;           // "__metadata__" strings
};

static struct lwb_st_writer *st_writer_begin(const char *path) {
    struct lwb_st_writer *w = xcalloc(1, sizeof *w);
    w->path = xstrdup(path);
    w->meta = json_object();
    return w;
}

static struct lwb_st_entry *st_entry_new(struct lwb_st_writer *w, const char *name, const char *dtype,
                                         const int64_t *shape, int ndim) {
    size_t el = st_dtype_size(dtype);
    if (!el) LWB_BUG("safetensors: unknown dtype %s for %s", dtype, name);
    if (ndim < 0 || ndim > LWB_ST_MAX_DIMS) LWB_BUG("safetensors: %s has %d dimensions", name, ndim);
    if (!*name || !strcmp(name, "__metadata__")) LWB_BUG("safetensors: bad tensor name '%s'", name);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->e[i].name, name)) LWB_BUG("safetensors: tensor %s added twice to %s", name, w->path);
    struct lwb_st_entry x = {.name = xstrdup(name), .ndim = ndim};
    snprintf(x.dtype, sizeof x.dtype, "%s", dtype);
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) LWB_BUG("safetensors: %s has a negative dimension", name);
        x.shape[i] = shape[i];
        count *= (uint64_t)shape[i];
    }
    x.bytes = count * el;
    LWB_PUSH(w->e, w->n, w->cap, x);
    return &w->e[w->n - 1];
}

// Add a tensor; its `bytes` bytes at `data` are copied now. `bytes` must match dtype and shape.
static void st_add(struct lwb_st_writer *w, const char *name, const char *dtype, const int64_t *shape,
                   int ndim, const void *data, size_t bytes) {
    struct lwb_st_entry *x = st_entry_new(w, name, dtype, shape, ndim);
    if (x->bytes != bytes)
        LWB_BUG("safetensors: %s is %zu bytes, its dtype and shape make %" PRIu64, name, bytes, x->bytes);
    x->data = xmalloc(bytes);
    if (bytes) memcpy(x->data, data, bytes);
}

// Add a tensor whose bytes `fill` produces while st_writer_finish writes the file.
static void st_add_fill(struct lwb_st_writer *w, const char *name, const char *dtype, const int64_t *shape,
                        int ndim, lwb_st_fill_fn fill, void *ctx) {
    struct lwb_st_entry *x = st_entry_new(w, name, dtype, shape, ndim);
    x->fill = fill;
    x->ctx = ctx;
}

// A "__metadata__" entry (a later value for the same key replaces the earlier one).
static void st_metadata(struct lwb_st_writer *w, const char *key, const char *value) {
    json_object_set_new(w->meta, key, json_string(value));
}

static void st_writer_free(struct lwb_st_writer *w) {
    for (int i = 0; i < w->n; i++) free(w->e[i].name), free(w->e[i].data);
    free(w->e);
    json_decref(w->meta);
    free(w->path);
    free(w);
}

static void st_writer_abort(struct lwb_st_writer *w) { st_writer_free(w); }

// The header: JSON padded with spaces so that 8 + its length is a multiple of 8. Assigns the
// data offsets (element size descending, stable) and returns the order in `order`.
static char *st_header(struct lwb_st_writer *w, int *order, size_t *len) {
    for (int i = 0; i < w->n; i++) order[i] = i;
    for (int i = 1; i < w->n; i++) // stable insertion sort by element size, largest first
        for (int j = i;
             j > 0 && st_dtype_size(w->e[order[j - 1]].dtype) < st_dtype_size(w->e[order[j]].dtype); j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    json_t *h = json_object();
    if (json_object_size(w->meta)) json_object_set(h, "__metadata__", w->meta);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        struct lwb_st_entry *x = &w->e[order[i]];
        x->begin = off;
        json_t *shape = json_array();
        for (int d = 0; d < x->ndim; d++) json_array_append_new(shape, json_integer(x->shape[d]));
        json_t *t = json_object();
        json_object_set_new(t, "dtype", json_string(x->dtype));
        json_object_set_new(t, "shape", shape);
        json_object_set_new(t, "data_offsets",
                            json_pack("[II]", (json_int_t)off, (json_int_t)(off + x->bytes)));
        json_object_set_new(h, x->name, t);
        off += x->bytes;
    }
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(h);
    if (!text) LWB_BUG("safetensors: cannot encode the header of %s", w->path);
    size_t n = strlen(text), padded = (n + 7) / 8 * 8;
    char *buf = xmalloc(padded + 1);
    memcpy(buf, text, n);
    memset(buf + n, ' ', padded - n);
    buf[padded] = 0;
    free(text);
    *len = padded;
    return buf;
}

// Write the file as one of the command's outputs (files.h: a temporary beside it, renamed into
// place by outputs_commit once every output is complete) and free the writer. A failed write or
// a fill callback that fails leaves no file behind and exits with one line.
static void st_writer_finish(struct lwb_st_writer *w) {
    int *order = xcalloc((size_t)(w->n ? w->n : 1), sizeof *order);
    size_t hlen;
    char *header = st_header(w, order, &hlen);
    struct lwb_output *out = output_new(w->path);
    int fd = out->fd;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    const char *failed = NULL;
    if (lwb_write_all(fd, len8, 8) || lwb_write_all(fd, header, hlen)) failed = strerror(errno);
    void *buf = NULL;
    size_t buf_cap = 0;
    for (int i = 0; i < w->n && !failed; i++) {
        struct lwb_st_entry *x = &w->e[order[i]];
        const void *src = x->data;
        if (x->fill) {
            if (x->bytes > buf_cap) {
                free(buf);
                buf_cap = x->bytes;
                buf = xmalloc(buf_cap);
            }
            if (x->fill(x->ctx, x->name, buf, x->bytes))
                lwb_fatal("cannot write %s: the data of tensor %s could not be produced", w->path, x->name);
            src = buf;
        }
        if (x->bytes && lwb_write_all(fd, src, x->bytes)) failed = strerror(errno);
    }
    free(buf);
    if (failed) lwb_fatal("cannot write %s: %s", w->path, failed);
    output_close(out);
    free(header);
    free(order);
    st_writer_free(w);
}

// ---------------------------------------------------------------------------------------------
// Reader

struct lwb_st_tensor {
    const char *name;               // key in the header
    const char *dtype;              // "BF16", ...
    int ndim;                       // 0 for a scalar
    int64_t shape[LWB_ST_MAX_DIMS]; // (ndim)
    uint64_t begin, end;            // data offsets (relative to the data start)
};

struct lwb_st_file {
    char *path;              // as opened
    int fd;                  // open for reading, -1 after st_close
    uint64_t data_start;     // 8 + header length
    uint64_t data_size;      // bytes after the header
    json_t *header;          // the parsed header (names point into it)
    struct lwb_st_tensor *t; // (n) in header order
    int n;                   // tensors
};

static void st_close(struct lwb_st_file *f);

// Open and check `path`. Returns 0, or -1 with a one-line reason in `err` (the caller decides
// whose fault it is).
static int st_open(const char *path, struct lwb_st_file *f, char *err, size_t errlen) {
    *f = (struct lwb_st_file){.fd = -1};
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot open (%s)", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    f->fd = fd;
    f->path = xstrdup(path);
    unsigned char len8[8];
    uint64_t hlen = 0;
    char *text = NULL;
#define ST_FAIL(...)                                                                                         \
    do {                                                                                                     \
        int k_ = snprintf(err, errlen, "%s: ", path);                                                        \
        if (k_ >= 0 && (size_t)k_ < errlen) snprintf(err + k_, errlen - (size_t)k_, __VA_ARGS__);            \
        free(text);                                                                                          \
        st_close(f);                                                                                         \
        return -1;                                                                                           \
    } while (0)
    if (st.st_size < 8 || pread(fd, len8, 8, 0) != 8)
        ST_FAIL("not a safetensors file (shorter than 8 bytes)");
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)len8[i] << (8 * i);
    if (hlen > LWB_ST_MAX_HEADER || hlen > (uint64_t)st.st_size - 8)
        ST_FAIL("not a safetensors file (header length %" PRIu64 " for a file of %lld bytes)", hlen,
                (long long)st.st_size);
    text = xmalloc(hlen + 1);
    if (pread(fd, text, hlen, 8) != (ssize_t)hlen) ST_FAIL("cannot read the header (%s)", strerror(errno));
    text[hlen] = 0;
    if (hlen == 0 || text[0] != '{') ST_FAIL("the header does not start with '{'");
    json_error_t je;
    f->header = json_loadb(text, hlen, JSON_REJECT_DUPLICATES, &je);
    if (!f->header) ST_FAIL("the header is not valid JSON (%s)", je.text);
    if (!json_is_object(f->header)) ST_FAIL("the header is not a JSON object");
    f->data_start = 8 + hlen;
    f->data_size = (uint64_t)st.st_size - f->data_start;
    size_t cap = json_object_size(f->header);
    f->t = xcalloc(cap ? cap : 1, sizeof *f->t);
    const char *key;
    json_t *v;
    json_object_foreach(f->header, key, v) {
        if (!strcmp(key, "__metadata__")) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(v)) ST_FAIL("__metadata__ is not an object");
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) ST_FAIL("__metadata__ value '%s' is not a string", mk);
            }
            continue;
        }
        struct lwb_st_tensor *t = &f->t[f->n];
        t->name = key;
        json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
               *off = json_object_get(v, "data_offsets");
        if (!json_is_object(v) || !json_is_string(dt) || !json_is_array(sh) || !json_is_array(off) ||
            json_array_size(off) != 2)
            ST_FAIL("tensor '%s' lacks dtype, shape or data_offsets", key);
        t->dtype = json_string_value(dt);
        size_t el = st_dtype_size(t->dtype);
        if (!el) ST_FAIL("tensor '%s' has unknown dtype '%s'", key, t->dtype);
        if (json_array_size(sh) > LWB_ST_MAX_DIMS) ST_FAIL("tensor '%s' has too many dimensions", key);
        t->ndim = (int)json_array_size(sh);
        uint64_t count = 1;
        for (int d = 0; d < t->ndim; d++) {
            json_t *x = json_array_get(sh, (size_t)d);
            if (!json_is_integer(x) || json_integer_value(x) < 0) ST_FAIL("tensor '%s' has a bad shape", key);
            t->shape[d] = json_integer_value(x);
            count *= (uint64_t)t->shape[d];
        }
        json_t *b = json_array_get(off, 0), *e = json_array_get(off, 1);
        if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
            json_integer_value(e) < json_integer_value(b))
            ST_FAIL("tensor '%s' has bad data_offsets", key);
        t->begin = (uint64_t)json_integer_value(b);
        t->end = (uint64_t)json_integer_value(e);
        if (t->end - t->begin != count * el)
            ST_FAIL("tensor '%s' spans %" PRIu64 " bytes, its dtype and shape make %" PRIu64, key,
                    t->end - t->begin, count * el);
        if (t->end > f->data_size) ST_FAIL("tensor '%s' ends past the end of the file", key);
        f->n++;
    }
    // The tensors must tile the data exactly: sort the offsets and walk them.
    uint64_t *spans = xcalloc((size_t)(f->n ? f->n : 1), 2 * sizeof *spans);
    for (int i = 0; i < f->n; i++) spans[2 * i] = f->t[i].begin, spans[2 * i + 1] = f->t[i].end;
    for (int i = 1; i < f->n; i++)
        for (int j = i; j > 0 && spans[2 * (j - 1)] > spans[2 * j]; j--) {
            uint64_t b0 = spans[2 * j], e0 = spans[2 * j + 1];
            spans[2 * j] = spans[2 * (j - 1)], spans[2 * j + 1] = spans[2 * (j - 1) + 1];
            spans[2 * (j - 1)] = b0, spans[2 * (j - 1) + 1] = e0;
        }
    uint64_t pos = 0;
    bool tiled = true;
    for (int i = 0; i < f->n; i++) {
        if (spans[2 * i] != pos) tiled = false;
        pos = spans[2 * i + 1];
    }
    free(spans);
    if (!tiled || pos != f->data_size) ST_FAIL("the tensors' data_offsets leave gaps or overlap");
#undef ST_FAIL
    free(text);
    return 0;
}

static const struct lwb_st_tensor *st_find(const struct lwb_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

// Copy tensor `t` into `dst` (`bytes` must be its size). Returns 0, or -1 with errno set.
static int st_read(const struct lwb_st_file *f, const struct lwb_st_tensor *t, void *dst, size_t bytes) {
    if (bytes != t->end - t->begin)
        LWB_BUG("st_read %s: %zu bytes for a tensor of %" PRIu64, t->name, bytes, t->end - t->begin);
    char *p = dst;
    uint64_t off = f->data_start + t->begin;
    while (bytes) {
        ssize_t n = pread(f->fd, p, bytes, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = EIO;
            return -1;
        }
        p += n, off += (uint64_t)n, bytes -= (size_t)n;
    }
    return 0;
}

// A "__metadata__" value, or NULL.
static const char *st_meta(const struct lwb_st_file *f, const char *key) {
    return json_string_value(json_object_get(json_object_get(f->header, "__metadata__"), key));
}

static void st_close(struct lwb_st_file *f) {
    if (f->fd >= 0) close(f->fd);
    json_decref(f->header);
    free(f->t);
    free(f->path);
    *f = (struct lwb_st_file){.fd = -1};
}

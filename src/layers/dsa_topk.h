// layers/dsa_topk.h: host side of the dsa_topk kernel family (kernels/dsa_topk.cu.in): the top-k
// selection of DeepSeek-V3.2's sparse-attention indexer. Every query token keeps the `topk` keys
// of its row of indexer scores with the largest values (ties to the lower index), written as
// ascending key indices; a token with n <= topk keys keeps 0 .. n - 1, then -1.
//
// Defines: dsa_topk_request, dsa_topk_enqueue, dsa_topk_max_keys (longest row a launch takes),
// dsa_topk_keys_read / dsa_topk_bytes (floor), dsa_topk_samples.
//
// NOTES: one block of 1024 threads per row. A launch with a row longer than topk takes all the
// shared memory a Hopper block may opt in to (227 KB): rows up to about 48k keys are copied there
// once, longer ones are read again from global memory (L2); both paths give the same result.
// Does not: compute the scores (dsa.h), own buffers, or gather the selected keys (the sparse
// attention does). Tested by test/gpu/check.c against test/ref/dsa_topk.c.
#pragma once

#define DSA_TOPK_SMEM_OPTIN 232448 // bytes of shared memory a Hopper block may use (static + dynamic)
#define DSA_TOPK_CAND_MIN 1024     // candidate room the kernel needs besides its histograms and bitmaps

static void dsa_topk_request(struct lwb_kreq *r, int topk) {
    if (topk < 1) LWB_BUG("dsa_topk: top-k %d", topk);
    *r = (struct lwb_kreq){.family = "dsa_topk"};
    snprintf(r->label, sizeof r->label, "dsa_topk_k%d", topk);
    kreq_set(r, "TOPK", topk);
    kreq_entry(r, "lwb_dsa_topk");
}

static int dsa_topk_k(const struct lwb_kreq *r) {
    for (int i = 0; i < r->nconsts; i++)
        if (!strcmp(r->consts[i].name, "TOPK")) return (int)r->consts[i].value;
    LWB_BUG("dsa_topk: request %s has no TOPK", r->label);
}

// Dynamic shared memory of a launch with rows longer than topk (the kernel lays its row out in
// whatever it is given).
static unsigned dsa_topk_smem(const struct lwb_kreq *r) {
    int static_bytes = 0;
    CU_CHECK(lwb_cu.cuFuncGetAttribute(&static_bytes, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, kreq_func(r, "lwb_dsa_topk")));
    return (unsigned)(DSA_TOPK_SMEM_OPTIN - static_bytes);
}

// The longest row a launch can take: two 2048-bin histograms, two bitmaps of the row and the
// minimum candidate list in `smem` bytes.
static long long dsa_topk_max_keys(unsigned smem) {
    long long words = ((long long)smem - 2 * 2048 * 4 - DSA_TOPK_CAND_MIN * 8) / 8; // per bitmap
    return words < 4 ? 0 : (words & ~3LL) * 32;
}

// logits: rows x (at least the row's keys) fp32, ld floats apart; row j is token row0 + j, query
// (row0 + j) % qlen of request (row0 + j) / qlen, with kv_lens[request] - (qlen - 1 - query) keys
// (at least 1). out: int32, token t's topk entries at out + t * topk (rows row0 .. row0 + rows - 1
// written). max_row_keys: at least the longest row's keys; rows all at most topk need no shared
// memory (the kernel only writes 0 .. n - 1, -1).
static void dsa_topk_enqueue(const struct lwb_kreq *r, CUstream s, CUdeviceptr logits, long long ld, int row0, int rows,
                             CUdeviceptr kv_lens, int qlen, CUdeviceptr out, long long max_row_keys) {
    if (rows < 0 || row0 < 0 || qlen < 1 || ld < 1) LWB_BUG("dsa_topk: rows %d from %d, qlen %d, ld %lld", rows, row0, qlen, ld);
    if (rows == 0) return;
    CUfunction f = kreq_func(r, "lwb_dsa_topk");
    unsigned smem = 0;
    if (max_row_keys > dsa_topk_k(r)) {
        smem = dsa_topk_smem(r);
        if (max_row_keys > dsa_topk_max_keys(smem))
            LWB_BUG("dsa_topk: rows of %lld keys; a launch takes at most %lld", max_row_keys, dsa_topk_max_keys(smem));
        CU_CHECK(lwb_cu.cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem));
    }
    void *args[] = {&logits, &ld, &row0, &rows, &kv_lens, &qlen, &out};
    cu_launch(f, (struct lwb_launch){{(unsigned)rows}, {1024}, smem}, s, args);
}

// Scores a launch reads: the keys of its rows longer than topk (shorter rows read none). kv_lens
// on the host, as for the launch.
static double dsa_topk_keys_read(int topk, int row0, int rows, const int *kv_lens, int qlen) {
    double keys = 0;
    for (long long t = row0; t < (long long)row0 + rows; t++) {
        int n = kv_lens[t / qlen] - (qlen - 1 - (int)(t % qlen));
        if (n > topk) keys += n;
    }
    return keys;
}
// Bytes: `keys` scores read once (fp32; dsa_topk_keys_read, or every visible pair as a bound) and
// every token's topk indices written (int32).
static double dsa_topk_bytes(double keys, double tokens, int topk) { return 4.0 * keys + 4.0 * tokens * topk; }

static int dsa_topk_samples(struct lwb_kreq *out, int max) {
    static const int ks[] = {2048, 64};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(ks) && n < max; i++) dsa_topk_request(&out[n++], ks[i]);
    return n;
}

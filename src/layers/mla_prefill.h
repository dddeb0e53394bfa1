// layers/mla_prefill.h: host side of the mla_prefill kernel family (kernels/mla_prefill.cu.in):
// causal MLA attention of the context phase over expanded keys and values.
//
// Defines: struct lwb_mla_prefill, mla_prefill_request, mla_prefill_bind (tensor maps),
// mla_prefill_enqueue, mla_prefill_flops / mla_prefill_bytes, mla_prefill_samples.
//
// Tensors (bf16): q (tokens, heads, 192); k_nope (keys, heads, 128); k_rope: rows of 576 whose
// columns 512..575 are the roped key (the gathered cache rows); v^T (heads, 128, key_stride).
// Request b's keys are rows (columns of v^T) b * key_pitch ..; key_pitch and key_stride are
// multiples of 8 (mla_prefill_pitch). Output (tokens, heads, 128).
//
// Does not: expand the latent (two gemm products do) or write the cache.
// Tested by test/gpu/check.c against test/ref/mla_prefill.c.
#pragma once

struct lwb_mla_prefill {
    int heads;
    struct lwb_kreq req;
    CUtensorMap q_map, kn_map, kr_map, vt_map;
    unsigned smem;
};

static void mla_prefill_request(struct lwb_mla_prefill *p, int heads) {
    p->heads = heads;
    struct lwb_kreq *r = &p->req;
    *r = (struct lwb_kreq){.family = "mla_prefill"};
    snprintf(r->label, sizeof r->label, "mla_prefill_h%d", heads);
    kreq_set(r, "HEADS", heads);
    kreq_entry(r, "lwb_mla_prefill");
    p->smem = 128 * 192 * 2 * 3 + 128 * 128 * 2 * 2 + 5 * 8 + 1024;
}

static void mla_prefill_bind(struct lwb_mla_prefill *p, CUdeviceptr q, int tokens, CUdeviceptr k_nope,
                             CUdeviceptr kv_rows, int keys, CUdeviceptr vt, int key_stride) {
    const int h = p->heads;
    struct lwb_operand qo = {q, tokens, 192, (long long)h * 192, h, 192};
    struct lwb_operand ko = {k_nope, keys, 128, (long long)h * 128, h, 128};
    struct lwb_operand ro = {kv_rows + 512 * 2, keys, 64, 576, 1, 0};
    struct lwb_operand vo = {vt, 128, keys, key_stride, h, 128LL * key_stride};
    tmap_encode(&p->q_map, &qo, 128, "prefill queries");
    tmap_encode(&p->kn_map, &ko, 128, "prefill keys");
    tmap_encode(&p->kr_map, &ro, 128, "prefill rope keys");
    tmap_encode(&p->vt_map, &vo, 128, "prefill values");
    CU_CHECK(lwb_cu.cuFuncSetAttribute(kreq_func(&p->req, "lwb_mla_prefill"),
                                       CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)p->smem));
}

// Rows between requests' keys: TMA boxes along the keys of v^T must start 16-byte aligned.
static int mla_prefill_pitch(int kv_len) { return LWB_CEIL_DIV(kv_len, 8) * 8; }

static void mla_prefill_enqueue(struct lwb_mla_prefill *p, CUstream s, int batch, int qlen, int kv_len,
                                float sm_scale, CUdeviceptr out) {
    int pitch = mla_prefill_pitch(kv_len);
    void *args[] = {&p->q_map, &p->kn_map, &p->kr_map, &p->vt_map, &qlen, &kv_len, &pitch, &sm_scale, &out};
    cu_launch(kreq_func(&p->req, "lwb_mla_prefill"),
              (struct lwb_launch){{(unsigned)LWB_CEIL_DIV(qlen, 128), (unsigned)p->heads, (unsigned)batch}, {384}, p->smem},
              s, args);
}

// Visible (query, key) pairs of one request: query i sees past + i + 1 keys.
static double mla_prefill_pairs(int qlen, int kv_len) {
    double past = kv_len - qlen;
    return qlen * past + (double)qlen * (qlen + 1) / 2;
}
static double mla_prefill_flops(int heads, int batch, int qlen, int kv_len) {
    return 2.0 * heads * batch * mla_prefill_pairs(qlen, kv_len) * (192 + 128);
}
static double mla_prefill_bytes(int heads, int batch, int qlen, int kv_len) {
    return 2.0 * batch * ((double)qlen * heads * (192 + 128) + (double)kv_len * (heads * 256 + 64));
}

static int mla_prefill_samples(struct lwb_kreq *out, int max) {
    static const int heads[] = {128, 16};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(heads) && n < max; i++) {
        struct lwb_mla_prefill p;
        mla_prefill_request(&p, heads[i]);
        out[n++] = p.req;
    }
    return n;
}

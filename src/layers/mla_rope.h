// layers/mla_rope.h: host side of the mla_rope kernel family (kernels/mla_rope.cu.in): rotary
// embedding of MLA's rope parts, cache writes, and the gather of cached rows.
//
// Defines: struct mla_rope_config, mla_rope_request, mla_rope_tables (YaRN cos/sin on the host),
// mla_rope_enqueue, mla_gather_enqueue, mla_rope_samples.
//
// Does not: normalise the latent (rmsnorm does, into the rows this kernel reads).
// Tested by test/gpu/check.c against test/ref/mla_rope.c.
#pragma once

struct mla_rope_config {
    int heads, nope, rope, latent, page;
};

static void mla_rope_request(struct lwb_kreq *r, struct mla_rope_config c) {
    *r = (struct lwb_kreq){.family = "mla_rope"};
    snprintf(r->label, sizeof r->label, "mla_rope_h%d_p%d", c.heads, c.page);
    kreq_set(r, "HEADS", c.heads);
    kreq_set(r, "NOPE", c.nope);
    kreq_set(r, "ROPE", c.rope);
    kreq_set(r, "LATENT", c.latent);
    kreq_set(r, "PAGE", c.page);
    kreq_entry(r, "lwb_mla_rope");
    kreq_entry(r, "lwb_mla_gather");
}

// cos/sin of position p and frequency i: (positions, rope/2) each, fp32, from inv_freq (rope/2
// values) and the attention factor, computed in double.
static void mla_rope_tables(const double *inv_freq, int half, int positions, double factor, float *cos_t,
                            float *sin_t) {
    for (int p = 0; p < positions; p++)
        for (int i = 0; i < half; i++) {
            double a = (double)p * inv_freq[i];
            cos_t[(size_t)p * half + i] = (float)(cos(a) * factor);
            sin_t[(size_t)p * half + i] = (float)(sin(a) * factor);
        }
}

struct mla_rope_args {
    CUdeviceptr q, q_abs;         // (tokens, heads, 192) rotated in place; (tokens, heads, 576) or 0
    CUdeviceptr k_rope;           // key rope parts, rows k_rope_stride apart
    long long k_rope_stride;
    CUdeviceptr latent;           // normalised latents, rows latent_stride apart
    long long latent_stride;
    CUdeviceptr kv_new;           // (tokens, 576) out
    CUdeviceptr cache, block_table, kv_lens, cos_t, sin_t;
    int max_blocks, qlen, tokens;
};

static void mla_rope_enqueue(const struct lwb_kreq *r, CUstream s, struct mla_rope_args *a) {
    if (a->tokens == 0) return;
    void *args[] = {&a->q, &a->q_abs, &a->k_rope, &a->k_rope_stride, &a->latent, &a->latent_stride, &a->kv_new,
                    &a->cache, &a->block_table, &a->max_blocks, &a->kv_lens, &a->qlen, &a->cos_t, &a->sin_t};
    cu_launch(kreq_func(r, "lwb_mla_rope"), (struct lwb_launch){{(unsigned)a->tokens}, {128}}, s, args);
}

// out: (batch * pitch, 576): request b's first kv_len cached rows at rows b * pitch ...
static void mla_gather_enqueue(const struct lwb_kreq *r, CUstream s, CUdeviceptr cache, CUdeviceptr block_table,
                               int max_blocks, int kv_len, int pitch, int batch, CUdeviceptr out) {
    if (kv_len == 0 || batch == 0) return;
    if (pitch < kv_len) LWB_BUG("gather: pitch %d below %d rows", pitch, kv_len);
    void *args[] = {&cache, &block_table, &max_blocks, &pitch, &out};
    cu_launch(kreq_func(r, "lwb_mla_gather"), (struct lwb_launch){{(unsigned)kv_len, (unsigned)batch}, {96}}, s, args);
}

static int mla_rope_samples(struct lwb_kreq *out, int max) {
    static const int s[][2] = {{128, 32}, {128, 64}, {16, 16}};
    int n = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(s) && n < max; i++)
        mla_rope_request(&out[n++], (struct mla_rope_config){s[i][0], 128, 64, 512, s[i][1]});
    return n;
}

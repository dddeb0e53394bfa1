// layers/gemm.h: host side of the gemm kernel family (kernels/gemm.cu.in): every matrix product
// of the layers (projections, expert GEMMs, attention's per-head products).
//
// Defines: struct lwb_operand (a bf16 matrix, or a batch of them, in device memory),
// struct gemm_config and gemm_choose_config (tiles, pipeline depth, split-K from the shape and the
// device), struct lwb_gemm (one planned product: config, JIT request, tensor maps, output),
// gemm_plan / gemm_bind / gemm_enqueue, gemm_flops / gemm_bytes (for floors), gemm_samples.
//
// C = A * B^T: A is (batch x) M x K, B is (batch or expert x) N x K, both K-contiguous bf16.
// Grouped products (MoE) read their row tiles from a device tile list written by the routing
// kernels: entry t = (expert, first row, end row) in the permuted activation buffer.
//
// Does not: allocate operands (the layer owns them) or choose what to multiply.
// Tested by test/test_kernels.c (config choice) and on the GPU by test/gpu/check.c against
// test/ref/gemm.c and cuBLAS.
#pragma once

struct lwb_operand {
    CUdeviceptr ptr;      // first element (bf16)
    long long rows;       // rows per batch: M for A, N for B
    int k;                // elements per row taken part in the product (K)
    long long row_stride; // elements between rows
    int z;                // batches (experts, heads); 1 when there are none
    long long z_stride;   // elements between batches
};

enum { GEMM_EPI_BF16 = 0, GEMM_EPI_F32 = 1, GEMM_EPI_SWIGLU = 2, GEMM_EPI_SWIGLU64 = 3, GEMM_EPI_RELU2 = 4 };

struct gemm_config {
    int bm, bn;     // block tile
    int stages;     // pipeline depth
    int splitk;     // K splits (1: none)
    int min_blocks; // blocks per SM the register budget allows
    int overlap;    // fp8: two K blocks' products in flight per warpgroup (registers permitting)
};

struct lwb_gemm {
    char name[48];          // label for kernels and reports ("q_b_proj")
    long long m;            // rows of C (GROUPED: rows of the permuted buffer, for sizing)
    int n, k;               // columns of the product (before SwiGLU halves them), reduction
    int batch;              // z count of A and C (1 when not batched)
    int epilogue;           // GEMM_EPI_*
    bool grouped;           // rows from a tile list, B's z from the tile's expert
    int max_tiles;          // GROUPED: upper bound of tile-list entries (grid size)
    struct gemm_config cfg;
    struct lwb_kreq req;    // lwb_gemm and lwb_gemm_reduce
    CUtensorMap a_map, b_map, c_map; // c_map: TMA stores of full tiles (when tma_store)
    int tma_store;          // C's layout allows TMA stores
    CUdeviceptr out;        // C
    long long ld_out;       // elements between rows of C
    long long z_stride_out; // elements between batches of C
    CUdeviceptr ws;         // split-K partials (gemm_workspace_bytes), owned by the caller
    bool partials_out;      // split-K partials are the output (at `out`): the consumer sums them
    CUdeviceptr tiles, num_tiles; // GROUPED: int4 tile list and its length, on the device
    int a_zmul, b_zmul;     // 1: the operand has one matrix per batch; 0: one for all batches
    unsigned smem;          // dynamic shared memory per block
    // fp8 (the gemm_fp8 family): e4m3 operands with DeepSeek's block scales
    bool fp8;
    CUdeviceptr sa, sb;     // fp32 scales: A per row and 128 columns, B per 128 x 128 block
    long long a_rows;       // rows of A per batch (the scale rows)
    int kblk;               // K / 128 of the whole product (scale columns)
};

static unsigned gemm_smem_bytes(struct gemm_config c) {
    return (unsigned)(c.stages * (c.bm + c.bn) * 128 + 2 * c.stages * 8 + 1024);
}

// Tiles: BM 64 when there are few rows (decode), else 128; BN 256 for compute-bound shapes, 128
// otherwise. While the grid fills less than three quarters of the machine, halve BN (down to
// 64); with only a handful of tiles of at most 128 rows, use 64-row tiles. Then split K (fp32
// partials, summed by a second kernel or by the consumer) while the grid still fits in one wave
// and each split keeps at least 4 steps of 64 (8 once the grid is a quarter full). Stages: 3 for 128 x 256 tiles (measured fastest on an H100: deeper pipelines
// were slower), else as many as fit in the shared memory of the blocks that share a
// multiprocessor, up to 6.
static struct gemm_config gemm_choose_config(long long m, int n, int k, int batch, bool grouped,
                                             double rows_per_group, int sm_count, int smem_optin) {
    struct gemm_config c = {.splitk = 1, .min_blocks = 1};
    double rows = grouped ? rows_per_group : (double)m;
    c.bm = rows <= 64 ? 64 : 128;
    bool compute_bound = grouped ? rows >= 192 : rows >= 1024;
    c.bn = compute_bound && n >= 256 ? 256 : 128;
    if (n <= 64) c.bn = n <= 16 ? 16 : n <= 32 ? 32 : 64;
    if (c.bm == 64) c.min_blocks = 2;
    if (!grouped) {
        long long tiles = LWB_CEIL_DIV(m, c.bm) * LWB_CEIL_DIV(n, c.bn) * (long long)batch;
        while (tiles * 4 < sm_count * 3LL && c.bn > 64 && n > 64) {
            c.bn /= 2;
            tiles = LWB_CEIL_DIV(m, c.bm) * LWB_CEIL_DIV(n, c.bn) * (long long)batch;
        }
        // A handful of tiles (the decode router: 4): 64-row tiles double them before K is split
        // (measured on an H100 for 128 x 256 x 7168: 6.6 us against 7.2 with 128-row tiles).
        if (tiles * 4 < sm_count && c.bm == 128 && m <= 128) {
            c.bm = 64, c.min_blocks = 2;
            tiles = LWB_CEIL_DIV(m, c.bm) * LWB_CEIL_DIV(n, c.bn) * (long long)batch;
        }
        int steps = k / 64, min_steps = tiles * 4 < sm_count ? 4 : 8;
        while (tiles * c.splitk * 2 <= sm_count && steps % (c.splitk * 2) == 0 &&
               steps / (c.splitk * 2) >= min_steps)
            c.splitk *= 2;
    }
    int budget = smem_optin / c.min_blocks - 2048;
    int stage = (c.bm + c.bn) * 128;
    c.stages = LWB_MAX(2, LWB_MIN(c.bn == 256 ? 3 : 6, budget / stage));
    if (c.stages > (k / 64) / c.splitk) c.stages = LWB_MAX(2, (k / 64) / c.splitk);
    return c;
}

// Whether a consumer thread can hold two K blocks' products next to its accumulators: 3 x BN / 2
// floats plus about 40 registers of addresses and scales, within the registers a thread gets
// (232 with two consumer warpgroups, which take the producer's; else 64 K over the block's
// threads times the blocks per multiprocessor, at most 255).
static int gemm_fp8_overlap_fits(struct gemm_config c) {
    int threads = 128 * (c.bm / 64 + 1);
    int budget = c.bm == 128 ? 232 : LWB_MIN(255, 65536 / (threads * c.min_blocks));
    return 3 * c.bn / 2 + 40 <= budget;
}

// The fp8 family's tiles: the bf16 choice for half the K (one 128-deep fp8 block per stage holds
// the bytes of a 64-deep bf16 one), with columns capped at 128 (a tile inside one B scale block;
// the promoted accumulators hold two sets of registers).
static struct gemm_config gemm_choose_config_fp8(long long m, int n, int k, int batch, bool grouped,
                                                 double rows_per_group, int epilogue, int sm_count, int smem_optin) {
    struct gemm_config c = gemm_choose_config(m, n, k / 2, batch, grouped, rows_per_group, sm_count, smem_optin);
    if (c.bn > 128 || (epilogue == GEMM_EPI_SWIGLU64 && c.bn != 128)) c.bn = 128;
    // One block per multiprocessor for 64-row tiles: two would leave a thread 128 registers, and a
    // 64 x 128 tile's promoted and running accumulators alone take that (they spilled, and the
    // decode expert GEMMs read their weights at half the bandwidth, measured on an H200). The
    // deeper pipeline the shared memory then holds keeps the weights streaming.
    if (c.bm == 64 && c.bn == 128) c.min_blocks = 1;
    int budget = smem_optin / c.min_blocks - 2048, stage = (c.bm + c.bn) * 128;
    c.stages = LWB_MAX(2, LWB_MIN(c.bm == 64 ? 8 : 6, budget / stage));
    if (c.stages > (k / 128) / c.splitk) c.stages = LWB_MAX(2, (k / 128) / c.splitk);
    c.overlap = gemm_fp8_overlap_fits(c);
    return c;
}

// Rows of C one tile-list entry covers (grouped products).
static int gemm_tile_rows(const struct lwb_gemm *g) { return g->cfg.bm; }

// Plan a product with a given configuration (tuning and checks); gemm_plan chooses one.
static void gemm_plan_config_as(struct lwb_gemm *g, const char *name, long long m, int n, int k, int batch,
                                int epilogue, bool grouped, struct gemm_config c, bool fp8) {
    *g = (struct lwb_gemm){.m = m, .n = n, .k = k, .batch = batch, .epilogue = epilogue,
                           .grouped = grouped, .cfg = c, .fp8 = fp8, .kblk = k / 128};
    snprintf(g->name, sizeof g->name, "%s", name);
    if (k % (fp8 ? 128 : 64) || n % 8)
        LWB_BUG("gemm %s: K=%d must be a multiple of %d and N=%d of 8", name, k, fp8 ? 128 : 64, n);
    if (fp8 && (c.bn > 128 || (k / c.splitk) % 128)) LWB_BUG("gemm %s: fp8 tiles %d wide, K splits of %d", name, c.bn, k / c.splitk);
    if (!grouped && (LWB_CEIL_DIV(m, c.bm) > 65535 || (long long)batch * c.splitk > 65535))
        lwb_user_error("run: the product %s has %lld rows, more than one launch covers (65535 tiles of %d rows); use "
                       "fewer tokens or a shorter context",
                       name, m, c.bm);
    struct lwb_kreq *r = &g->req;
    *r = (struct lwb_kreq){.family = fp8 ? "gemm_fp8" : "gemm"};
    snprintf(r->label, sizeof r->label, "gemm%s_%s_bm%d_bn%d_s%d_k%d_x%d_e%d%s%s", fp8 ? "8" : "", name, c.bm, c.bn,
             c.stages, k / c.splitk, c.splitk, epilogue, grouped ? "_g" : "", fp8 && c.overlap ? "_ov" : "");
    kreq_set(r, "BM", c.bm);
    kreq_set(r, "BN", c.bn);
    kreq_set(r, "STAGES", c.stages);
    kreq_set(r, "K", k / c.splitk);
    kreq_set(r, "SPLITK", c.splitk);
    kreq_set(r, "EPILOGUE", epilogue);
    kreq_set(r, "GROUPED", grouped);
    kreq_set(r, "MIN_BLOCKS", c.min_blocks);
    if (fp8) {
        kreq_set(r, "SB_ROWS", epilogue == GEMM_EPI_SWIGLU64 ? 64 : 128);
        kreq_set(r, "OVERLAP", c.overlap);
    }
    kreq_entry(r, fp8 ? "lwb_gemm_fp8" : "lwb_gemm");
    kreq_entry(r, fp8 ? "lwb_gemm_fp8_reduce" : "lwb_gemm_reduce");
    g->smem = gemm_smem_bytes(c);
}
static void gemm_plan_config(struct lwb_gemm *g, const char *name, long long m, int n, int k, int batch,
                             int epilogue, bool grouped, struct gemm_config c) {
    gemm_plan_config_as(g, name, m, n, k, batch, epilogue, grouped, c, false);
}

// LWB_GEMM_TILES="name=BM,BN,STAGES,SPLITK;name=..." replaces the chosen tiles of the products
// so named (the names in kernel labels: gate, q_b, experts13, ...), for tuning without a rebuild.
// Returns true when `spec` names `name`; a malformed or impossible entry is a user error.
static bool gemm_tiles_from_spec(const char *spec, const char *name, int n, int k, int epilogue, bool grouped,
                                 int smem_optin, bool fp8, struct gemm_config *c) {
    for (const char *e = spec; e && *e; e = strchr(e, ';') ? strchr(e, ';') + 1 : NULL) {
        const char *eq = strchr(e, '=');
        size_t len = strlen(name);
        if (!eq || (size_t)(eq - e) != len || strncmp(e, name, len)) continue;
        struct gemm_config t = {0};
        int used = 0;
        if (sscanf(eq + 1, "%d,%d,%d,%d%n", &t.bm, &t.bn, &t.stages, &t.splitk, &used) != 4 ||
            (eq[1 + used] && eq[1 + used] != ';'))
            lwb_user_error("LWB_GEMM_TILES: entry for %s must read %s=BM,BN,STAGES,SPLITK", name, name);
        t.min_blocks = t.bm == 64 && !(fp8 && t.bn == 128) ? 2 : 1; // as the choices above
        const char *why = t.bm != 64 && t.bm != 128                            ? "BM must be 64 or 128"
                          : t.bn < 16 || t.bn > 256 || t.bn & (t.bn - 1)      ? "BN must be 16, 32, 64, 128 or 256"
                          : fp8 && t.bn > 128                                  ? "fp8 tiles are at most 128 wide"
                          : fp8 && epilogue == GEMM_EPI_SWIGLU64 && t.bn != 128 ? "the fp8 SwiGLU needs 128-wide tiles"
                          : t.splitk < 1 || (k / (fp8 ? 128 : 64)) % t.splitk  ? "SPLITK must divide the K blocks"
                          : grouped && t.splitk > 1                           ? "grouped products are not split"
                          : t.stages < 2                                      ? "STAGES must be at least 2"
                          : (int)gemm_smem_bytes(t) * t.min_blocks > smem_optin ? "the stages do not fit in shared memory"
                          : t.stages * (t.bm + t.bn) < (t.bm / 64) * (epilogue == GEMM_EPI_SWIGLU ? t.bn / 2 : t.bn) ? "too few stages for the epilogue"
                                                                                    : NULL;
        if (why) lwb_user_error("LWB_GEMM_TILES: %s=%d,%d,%d,%d (N %d, K %d): %s", name, t.bm, t.bn, t.stages,
                                t.splitk, n, k, why);
        if (fp8) t.overlap = gemm_fp8_overlap_fits(t);
        *c = t;
        return true;
    }
    return false;
}

// Plan a product; the request is built here, the tensor maps once the operands exist (gemm_bind).
static void gemm_plan(struct lwb_gemm *g, const char *name, long long m, int n, int k, int batch,
                      int epilogue, bool grouped, double rows_per_group, const struct lwb_device *dev) {
    struct gemm_config c = gemm_choose_config(m, n, k, batch, grouped, rows_per_group, dev->sm_count, dev->smem_optin);
    gemm_tiles_from_spec(getenv("LWB_GEMM_TILES"), name, n, k, epilogue, grouped, dev->smem_optin, false, &c);
    gemm_plan_config(g, name, m, n, k, batch, epilogue, grouped, c);
}

// The same product with fp8 operands and block scales (bind with gemm_bind_fp8).
static void gemm_plan_fp8(struct lwb_gemm *g, const char *name, long long m, int n, int k, int batch,
                          int epilogue, bool grouped, double rows_per_group, const struct lwb_device *dev) {
    struct gemm_config c = gemm_choose_config_fp8(m, n, k, batch, grouped, rows_per_group, epilogue, dev->sm_count,
                                                  dev->smem_optin);
    gemm_tiles_from_spec(getenv("LWB_GEMM_TILES"), name, n, k, epilogue, grouped, dev->smem_optin, true, &c);
    const char *ov = getenv("LWB_FP8_OVERLAP"); // 0 or 1: force (timing both in test/gpu)
    if (ov && (ov[0] == '0' || ov[0] == '1') && !ov[1]) c.overlap = ov[0] - '0';
    gemm_plan_config_as(g, name, m, n, k, batch, epilogue, grouped, c, true);
}

// Leave the split-K partials as the product's output (fp32 epilogue only): `out` holds
// cfg.splitk slabs of m x n floats, m * n apart, and whoever reads them sums them (the router's
// top-k does), which saves the reduce kernel's launch. Call between plan and bind.
static void gemm_keep_partials(struct lwb_gemm *g) {
    if (g->epilogue != GEMM_EPI_F32 || g->batch != 1) LWB_BUG("gemm %s: only fp32 products keep partials", g->name);
    g->partials_out = g->cfg.splitk > 1;
}

// Bytes of the output buffer (all partial slabs when they are the output).
static size_t gemm_output_bytes(const struct lwb_gemm *g) {
    size_t slabs = g->partials_out ? (size_t)g->cfg.splitk : 1;
    return slabs * g->batch * g->m * g->n * (g->epilogue == GEMM_EPI_F32 ? 4 : 2);
}

static size_t gemm_workspace_bytes(const struct lwb_gemm *g) {
    if (g->cfg.splitk == 1 || g->partials_out) return 0;
    return (size_t)g->cfg.splitk * g->batch * g->m * g->n * sizeof(float);
}

// A 3-D tensor map over an operand of `esize`-byte elements (2: bf16, 1: fp8) with a box of 128
// bytes by box_rows rows and 128-byte swizzle.
static void tmap_encode_es(CUtensorMap *map, const struct lwb_operand *o, int box_rows, const char *what, int esize) {
    if (o->ptr % 16 || (o->row_stride * esize) % 16 || (o->z > 1 && (o->z_stride * esize) % 16))
        LWB_BUG("%s: TMA needs 16-byte aligned rows (stride %lld elements)", what, o->row_stride);
    cuuint64_t dims[3] = {(cuuint64_t)o->k, (cuuint64_t)o->rows, (cuuint64_t)LWB_MAX(o->z, 1)};
    cuuint64_t strides[2] = {(cuuint64_t)o->row_stride * esize,
                             (cuuint64_t)(o->z > 1 ? o->z_stride : o->row_stride * o->rows) * esize};
    cuuint32_t box[3] = {(cuuint32_t)(128 / esize), (cuuint32_t)box_rows, 1};
    cuuint32_t estride[3] = {1, 1, 1};
    CU_CHECK(lwb_cu.cuTensorMapEncodeTiled(map, esize == 2 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_UINT8,
                                           3, (void *)o->ptr, dims, strides, box, estride,
                                           CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                           CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
}
// A bf16 operand: box (64, box_rows, 1).
static void tmap_encode(CUtensorMap *map, const struct lwb_operand *o, int box_rows, const char *what) {
    tmap_encode_es(map, o, box_rows, what, 2);
}

// Bind operands and output (after jit_build loaded the kernels). C rows are `ld_out` elements
// apart, batches `z_stride_out`. `ws` is the split-K workspace (NULL when not split).
static void gemm_bind(struct lwb_gemm *g, const struct lwb_operand *a, const struct lwb_operand *b,
                      CUdeviceptr out, long long ld_out, long long z_stride_out, CUdeviceptr ws) {
    if (a->k != g->k || b->k != g->k || b->rows < g->n) LWB_BUG("gemm %s: operand shapes do not match", g->name);
    tmap_encode(&g->a_map, a, g->cfg.bm, g->name);
    tmap_encode(&g->b_map, b, g->cfg.bn, g->name);
    g->out = out;
    g->ld_out = ld_out;
    g->z_stride_out = z_stride_out;
    g->ws = ws;
    g->a_zmul = a->z > 1;
    g->b_zmul = b->z > 1;
    if ((a->z > 1 && a->z != g->batch && !g->grouped) || (b->z > 1 && b->z != g->batch && !g->grouped))
        LWB_BUG("gemm %s: batch %d but operands hold %d and %d matrices", g->name, g->batch, a->z, b->z);
    if (g->cfg.splitk > 1 && !ws && !g->partials_out) LWB_BUG("gemm %s: split-K needs a workspace", g->name);
    // bf16 outputs whose rows are 16-byte aligned leave full tiles through TMA stores.
    int out_cols = g->epilogue == GEMM_EPI_SWIGLU ? g->n / 2 : g->n;
    int tile_cols = g->epilogue == GEMM_EPI_SWIGLU ? g->cfg.bn / 2 : g->cfg.bn;
    g->tma_store = g->epilogue != GEMM_EPI_F32 && g->cfg.splitk == 1 && tile_cols % 64 == 0 && out % 16 == 0 &&
                   (ld_out * 2) % 16 == 0 && (g->batch == 1 || (z_stride_out * 2) % 16 == 0);
    if (g->tma_store) {
        struct lwb_operand c = {out, g->m, out_cols, ld_out, g->batch, z_stride_out};
        tmap_encode(&g->c_map, &c, 64, g->name);
    }
    CUfunction f = kreq_func(&g->req, "lwb_gemm");
    CU_CHECK(lwb_cu.cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)g->smem));
}

// Bind an fp8 product: A and B are e4m3 operands (elements are bytes); sa holds A's scales per
// row and 128 columns (a_rows rows per batch), sb B's per 128 x 128 block (ceil(N/128) x K/128 per
// batch or expert). C and the workspace as gemm_bind.
static void gemm_bind_fp8(struct lwb_gemm *g, const struct lwb_operand *a, CUdeviceptr sa, long long a_rows,
                          const struct lwb_operand *b, CUdeviceptr sb, CUdeviceptr out, long long ld_out,
                          long long z_stride_out, CUdeviceptr ws) {
    if (!g->fp8 || a->k != g->k || b->k != g->k || b->rows < g->n) LWB_BUG("gemm %s: operand shapes do not match", g->name);
    tmap_encode_es(&g->a_map, a, g->cfg.bm, g->name, 1);
    tmap_encode_es(&g->b_map, b, g->cfg.bn, g->name, 1);
    g->out = out, g->ld_out = ld_out, g->z_stride_out = z_stride_out, g->ws = ws;
    g->sa = sa, g->sb = sb, g->a_rows = a_rows;
    g->a_zmul = a->z > 1;
    g->b_zmul = b->z > 1;
    if (g->cfg.splitk > 1 && !ws) LWB_BUG("gemm %s: split-K needs a workspace", g->name);
    g->tma_store = 0;
    CU_CHECK(lwb_cu.cuFuncSetAttribute(kreq_func(&g->req, "lwb_gemm_fp8"), CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                       (int)g->smem));
}

// GROUPED: the device tile list and its length, and the most entries it can hold.
static void gemm_bind_tiles(struct lwb_gemm *g, CUdeviceptr tiles, CUdeviceptr num_tiles, int max_tiles) {
    g->tiles = tiles;
    g->num_tiles = num_tiles;
    g->max_tiles = max_tiles;
}

static void gemm_enqueue(struct lwb_gemm *g, CUstream s) {
    const struct gemm_config c = g->cfg;
    unsigned gx = (unsigned)LWB_CEIL_DIV(g->n, c.bn);
    unsigned gy = g->grouped ? (unsigned)g->max_tiles : (unsigned)LWB_CEIL_DIV(g->m, c.bm);
    unsigned gz = (unsigned)(g->batch * c.splitk);
    int M = (int)g->m, N = g->n;
    const bool reduce = c.splitk > 1 && !g->partials_out;
    CUdeviceptr out = reduce ? g->ws : g->out;
    long long ld = c.splitk > 1 ? g->n : g->ld_out;
    long long split_stride = (long long)g->m * g->n;
    const struct lwb_launch l = {{gx, gy, gz}, {(unsigned)(128 * (c.bm / 64 + 1))}, g->smem};
    if (g->fp8) {
        long long a_rows = g->a_rows;
        int kblk = g->kblk;
        void *args[] = {&g->a_map, &g->b_map, &out, &ld, &g->z_stride_out, &M, &N, &g->tiles, &g->num_tiles,
                        &split_stride, &g->a_zmul, &g->b_zmul, &g->sa, &a_rows, &g->sb, &kblk};
        cu_launch(kreq_func(&g->req, "lwb_gemm_fp8"), l, s, args);
    } else {
        void *args[] = {&g->a_map, &g->b_map, &g->c_map, &g->tma_store, &out, &ld, &g->z_stride_out, &M, &N,
                        &g->tiles, &g->num_tiles, &split_stride, &g->a_zmul, &g->b_zmul};
        cu_launch(kreq_func(&g->req, "lwb_gemm"), l, s, args);
    }
    if (reduce) {
        int splits = c.splitk, batch = g->batch;
        unsigned blocks = (unsigned)LWB_CEIL_DIV((long long)M * (N / 2), 256);
        void *rargs[] = {&g->ws, &split_stride, &splits, &M, &N, &g->out, &g->ld_out, &g->z_stride_out, &batch};
        cu_launch(kreq_func(&g->req, g->fp8 ? "lwb_gemm_fp8_reduce" : "lwb_gemm_reduce"),
                  (struct lwb_launch){{blocks, (unsigned)batch}, {256}}, s, rargs);
    }
}

// Work of a product with `m` rows of C (for grouped products: rows actually routed).
static double gemm_flops(double m, int n, int k, int batch) { return 2.0 * m * n * k * batch; }
// Bytes it must move at least: A and B once, C once (in the epilogue's type and width).
static double gemm_bytes(double m, int n, int k, int batch, int b_batches, int epilogue) {
    double c_bytes = epilogue == GEMM_EPI_F32 ? 4.0 * n : epilogue == GEMM_EPI_SWIGLU ? 1.0 * n : 2.0 * n;
    return batch * (2.0 * m * k + m * c_bytes) + 2.0 * n * k * b_batches;
}

// Bytes of an fp8 product: A and B one byte each, their scales, C as the epilogue writes it.
static double gemm_bytes_fp8(double m, int n, int k, int batch, int b_batches, int epilogue) {
    double c_bytes = epilogue == GEMM_EPI_F32 ? 4.0 * n : epilogue == GEMM_EPI_SWIGLU ? 1.0 * n : 2.0 * n;
    double kb = k / 128.0;
    return batch * (m * k + 4.0 * m * kb + m * c_bytes) + (double)b_batches * ((double)n * k + 4.0 * ceil(n / 128.0) * kb);
}

// Sample products for `lwb kernels --compile` and the tests: DeepSeek-V3 shapes on an H100-like
// device, planned by `plan` (bf16 or fp8).
struct gemm_sample {
    const char *name;
    long long m;
    int n, k, batch, epi;
    bool grouped;
    double rows;
};

static int gemm_plan_samples(const struct gemm_sample *s, int ns, struct lwb_kreq *out, int max,
                             void (*plan)(struct lwb_gemm *, const char *, long long, int, int, int, int, bool,
                                          double, const struct lwb_device *)) {
    const struct lwb_device dev = {.sm_count = 132, .smem_optin = 232448};
    int n = 0;
    for (int i = 0; i < ns && n < max; i++) {
        struct lwb_gemm g;
        plan(&g, s[i].name, s[i].m, s[i].n, s[i].k, s[i].batch, s[i].epi, s[i].grouped, s[i].rows, &dev);
        out[n++] = g.req;
    }
    return n;
}

static int gemm_fp8_samples(struct lwb_kreq *out, int max) {
    static const struct gemm_sample s[] = {
        {"fused_a", 128, 2112, 7168, 1, GEMM_EPI_BF16, false, 0},
        {"q_b", 8193, 24576, 1536, 1, GEMM_EPI_BF16, false, 0},
        {"experts13", 1024 + 64 * 256, 4096, 7168, 1, GEMM_EPI_SWIGLU64, true, 4},
        {"experts2", 65544 + 128 * 256, 7168, 2048, 1, GEMM_EPI_BF16, true, 256},
        {"shared13", 128, 4096, 7168, 1, GEMM_EPI_SWIGLU64, false, 0},
        {"w_uk", 128, 512, 128, 128, GEMM_EPI_BF16, false, 0},
        {"odd", 77, 200, 384, 3, GEMM_EPI_F32, false, 0},
    };
    return gemm_plan_samples(s, (int)LWB_ARRAY_LEN(s), out, max, gemm_plan_fp8);
}

static int gemm_samples(struct lwb_kreq *out, int max) {
    // Decode and prefill projections, grouped expert products, a split-K gate, a batched per-head
    // product.
    static const struct gemm_sample s[] = {
        {"fused_a", 128, 2112, 7168, 1, GEMM_EPI_BF16, false, 0},
        {"q_b", 8193, 24576, 1536, 1, GEMM_EPI_BF16, false, 0},
        {"gate", 128, 256, 7168, 1, GEMM_EPI_F32, false, 0},
        {"experts13", 1024 + 64 * 256, 4096, 7168, 1, GEMM_EPI_SWIGLU, true, 4},
        {"experts13", 65544 + 128 * 256, 4096, 7168, 1, GEMM_EPI_SWIGLU, true, 256},
        {"experts2", 1024 + 64 * 256, 7168, 2048, 1, GEMM_EPI_BF16, true, 4},
        {"w_uk", 128, 512, 128, 128, GEMM_EPI_BF16, false, 0},
        {"odd", 77, 200, 448, 3, GEMM_EPI_BF16, false, 0},
        {"experts_up", 768 + 64 * 128, 1856, 2688, 1, GEMM_EPI_RELU2, true, 6},  // Nemotron-H's relu2 experts
        {"shared_up", 128, 3712, 2688, 1, GEMM_EPI_RELU2, false, 0},
    };
    return gemm_plan_samples(s, (int)LWB_ARRAY_LEN(s), out, max, gemm_plan);
}

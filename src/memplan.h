// memplan.h: device memory by category, planned before anything large is allocated.
//
// Defines: struct lwb_mem (a plan: bytes per category, and the allocations when real),
// mem_alloc (in a dry plan: count the bytes and hand out placeholder addresses, so the same
// planning code sizes a run without a GPU; in a real one: allocate), mem_free_all,
// mem_check_fits (refuse a plan that cannot fit, saying by how much and which flags shrink it),
// mem_print.
//
// Does not: decide sizes (the layers ask for what they need).
// Tested by test/test_plan.c.
#pragma once

enum { MEM_WEIGHTS, MEM_KV, MEM_IKV, MEM_STATE, MEM_ACT, MEM_WS, MEM_CATS };
static const char *const mem_cat_names[MEM_CATS] = {"weights", "KV cache", "indexer cache", "state cache", "activations",
                                                    "workspaces"};

struct lwb_mem {
    bool dry;               // count only (placeholder addresses)
    size_t bytes[MEM_CATS]; // planned bytes per category
    CUdeviceptr next_fake;  // next placeholder address (dry)
    struct lwb_mem_block {
        CUdeviceptr p;
        size_t bytes;
    } *blocks;              // real allocations, for mem_free_all
    size_t nblocks, capblocks;
};

#define LWB_MEM_ALIGN 1024 // every buffer starts 1024-byte aligned (TMA, vector access)

static void mem_init(struct lwb_mem *m, bool dry) {
    *m = (struct lwb_mem){.dry = dry, .next_fake = (CUdeviceptr)1 << 40};
}

static CUdeviceptr mem_alloc(struct lwb_mem *m, int cat, size_t bytes, const char *what) {
    bytes = LWB_CEIL_DIV(LWB_MAX(bytes, 1), LWB_MEM_ALIGN) * LWB_MEM_ALIGN;
    m->bytes[cat] += bytes;
    if (m->dry) {
        CUdeviceptr p = m->next_fake;
        m->next_fake += bytes;
        return p;
    }
    CUdeviceptr p = dev_alloc(bytes, what);
    struct lwb_mem_block b = {p, bytes};
    LWB_PUSH(m->blocks, m->nblocks, m->capblocks, b);
    return p;
}

static void mem_free_all(struct lwb_mem *m) {
    for (size_t i = 0; i < m->nblocks; i++) dev_free(m->blocks[i].p, m->blocks[i].bytes);
    free(m->blocks);
    m->blocks = NULL;
    m->nblocks = m->capblocks = 0;
}

static size_t mem_total(const struct lwb_mem *m) {
    size_t t = 0;
    for (int i = 0; i < MEM_CATS; i++) t += m->bytes[i];
    return t;
}

static double gib(size_t b) { return (double)b / 1073741824.0; }

static void mem_print(const struct lwb_mem *m, FILE *f, const char *indent) {
    for (int i = 0; i < MEM_CATS; i++)
        if (i != MEM_IKV || m->bytes[i]) // only models with a sparse-attention indexer have one
            fprintf(f, "%s%-13s %9.2f GiB\n", indent, mem_cat_names[i], gib(m->bytes[i]));
    fprintf(f, "%s%-13s %9.2f GiB\n", indent, "total", gib(mem_total(m)));
}

// Refuse a plan larger than `avail` bytes (what the device has free, less a reserve for the
// context, modules and graphs), with one line saying by how much and what shrinks it.
static void mem_check_fits(const struct lwb_mem *m, size_t avail, const char *device) {
    size_t need = mem_total(m);
    if (need <= avail) return;
    lwb_user_error("the plan needs %.2f GiB of device memory but %s has %.2f GiB available (%.2f GiB short: "
                   "weights %.2f, KV cache %.2f, activations %.2f, workspaces %.2f GiB); fewer --layer-indices, "
                   "a smaller --max-batch-size or --max-seq-len (KV cache), or smaller batch sizes / "
                   "--max-num-tokens (activations) shrink it",
                   gib(need), device, gib(avail), gib(need - avail), gib(m->bytes[MEM_WEIGHTS]),
                   gib(m->bytes[MEM_KV] + m->bytes[MEM_IKV]), gib(m->bytes[MEM_ACT]), gib(m->bytes[MEM_WS]));
}

// family.h: what the runner knows of a model family: the problems it runs, how a rank's share of
// the model is cut, the modules of a layer, and the table of functions a family fills.
//
// Defines: struct lwb_problem (one batch / seq-len-q / past / balance-ratio combination),
// enum lwb_moe_comm and struct lwb_shard (this rank's share: attention data- or tensor-parallel,
// experts, the communicator), shard_make (the reference's mapping, §3.1), struct lwb_cost,
// struct lwb_module and struct lwb_modules (a layer's work in order, with its NVTX ranges, floors
// and warm-up checks), modules_add, module_end (where a module's range closes), struct
// lwb_run_spec (what a family plans from), struct lwb_family (the table), struct lwb_kreqs (a
// growable list of kernel requests), lwb_families and family_for_model.
//
// A layer is a list of modules in execution order. A module with work (`fn`) is a leaf; one
// without is a range around the modules that follow it one level deeper. Work outside every
// module range (a norm between attention and MoE, say) is a module with no name. The runner
// drives every family through this table: the forward, the warm-up checks, the module timings
// of the roofline and the costs all come from the same list, so adding a family is a header
// under src/layers/ with its kernels, registered in lwb_families.
//
// Does not: launch anything itself (runner.h walks the lists) or parse options.
// Tested by test/test_plan.c (module lists, costs, shards) through the DeepSeek family.
#pragma once

struct lwb_problem {
    int batch, qlen, past; // requests, new tokens per request, cached tokens per request (this rank)
    int kv_len;            // past + qlen
    int tokens;            // batch x qlen
    bool ctx;              // context phase (else generation)
    bool has_ratio;        // balance ratio given
    double ratio;
};

// How routed tokens reach the ranks that own their experts with attention data parallelism.
enum lwb_moe_comm {
    LWB_MOE_COMM_NONE = 0,      // one rank, or attention TP (tokens are replicated; outputs all-reduced)
    LWB_MOE_COMM_ALLGATHER = 1, // every rank gathers every rank's tokens, then reduce-scatters outputs
    LWB_MOE_COMM_ALLTOALL = 2,  // each token goes to the ranks of its experts and comes back (send/recv)
};
static const char *const lwb_moe_comm_names[] = {"none", "allgather", "alltoall"};

struct lwb_comm;

struct lwb_shard {
    int rank, world_size;
    bool attention_dp;        // attention data-parallel: own requests per rank
    int dp_rank, dp_size;     // attention DP: (rank, world); TP: (0, 1)
    int tp_rank, tp_size;     // attention TP: (rank, world) for heads, dense MLP, shared experts; DP: (0, 1)
    int ep_rank, ep_size;     // routed experts: always split over every rank
    int scaled_from;          // --scaled-from S (0: off)
    bool collectives;         // the run has a communicator (more than one rank, or --np 1)
    enum lwb_moe_comm moe_comm;
    struct lwb_comm *comm;    // NULL: no communicator (plain one-rank run, or a dry run)
};

// The reference's mapping (§3.1): MoE is pure EP over all ranks; attention is DP (dp = world) or
// TP (tp = world). With a communicator (`collectives`: more than one rank, or `--np 1`, whose one
// rank runs every collective on a communicator of one), the MoE's token exchange under attention
// DP is `forced` (allgather / alltoall), else chosen as TensorRT-LLM's WideEP and CUTLASS MoE
// (before it moved to one-sided NVLink kernels) choose it: all-gather + reduce-scatter while the
// EP size is at most top_k, an all-to-all above; with --scaled-from the simulated EP size S
// decides, as the reference's patch makes it.
static struct lwb_shard shard_make(int rank, int world_size, bool collectives, bool attention_dp, int scaled_from,
                                   int top_k, enum lwb_moe_comm forced) {
    struct lwb_shard s = {.rank = rank, .world_size = world_size, .attention_dp = attention_dp,
                          .dp_rank = attention_dp ? rank : 0, .dp_size = attention_dp ? world_size : 1,
                          .tp_rank = attention_dp ? 0 : rank, .tp_size = attention_dp ? 1 : world_size,
                          .ep_rank = rank, .ep_size = world_size, .scaled_from = scaled_from,
                          .collectives = collectives || world_size > 1};
    if (attention_dp && s.collectives) {
        int ep = scaled_from > 0 ? scaled_from : world_size;
        s.moe_comm = forced ? forced : ep <= top_k ? LWB_MOE_COMM_ALLGATHER : LWB_MOE_COMM_ALLTOALL;
    }
    return s;
}

// Floors of a module on one rank: FLOPs, bytes to and from device memory, bytes this rank sends
// to and receives from the others.
struct lwb_cost {
    double flops, bytes, sent, received;
    double flops8; // FLOPs on fp8 tensor cores (twice the bf16 rate on Hopper); `flops` are bf16
};

struct lwb_module {
    const char *name;                 // NVTX range; NULL: work outside every module range
    const char *label;                // in reports, for work outside the ranges that has a floor
    int depth;                        // 0: top level; d: inside the last module of depth d - 1 before it
    void (*fn)(void *arg, CUstream s); // the work; NULL: a range around the modules after it
    void *arg;
    struct lwb_cost cost;             // a range's cost covers everything inside it
    // Checked after the module in the warm-up forward (NaN, Inf, mostly zero): what and where.
    const char *check_what;
    CUdeviceptr check_ptr;            // bf16
    size_t check_n;
};

struct lwb_modules {
    struct lwb_module *m;
    int n;
    size_t cap;
};

static struct lwb_module *modules_add(struct lwb_modules *l, struct lwb_module m) {
    LWB_PUSH(l->m, l->n, l->cap, m);
    return &l->m[l->n - 1];
}

// One past the last module inside module i (its range closes there).
static int module_end(const struct lwb_modules *l, int i) {
    int j = i + 1;
    while (j < l->n && l->m[j].depth > l->m[i].depth) j++;
    return j;
}

// Enqueue modules [from, to) of a layer with their NVTX ranges: a range opens at its module and
// closes after the last module inside it.
static void modules_run(const struct lwb_modules *l, int from, int to, CUstream s) {
    int open_depth[16], nopen = 0; // depths of the ranges now open
    for (int i = from; i < to; i++) {
        const struct lwb_module *m = &l->m[i];
        while (nopen && open_depth[nopen - 1] >= m->depth) lwb_nvtx_pop(), nopen--;
        if (m->name) {
            if (nopen == (int)LWB_ARRAY_LEN(open_depth)) LWB_BUG("module ranges nested too deep");
            lwb_nvtx_push(m->name);
            open_depth[nopen++] = m->depth;
        }
        if (m->fn) m->fn(m->arg, s);
        if (m->name && m->fn) lwb_nvtx_pop(), nopen--;
    }
    while (nopen) lwb_nvtx_pop(), nopen--;
}

// "b=128 s=1 past=8193 NP1", with " balance=0.5" (%.2g) when a ratio is given: the reference's
// iteration range text.
static void iteration_text(const struct lwb_problem *p, int world_size, char *out, size_t n) {
    char bal[32] = "";
    if (p->has_ratio) snprintf(bal, sizeof bal, " balance=%.2g", p->ratio);
    snprintf(out, n, "b=%d s=%d past=%d%s NP%d", p->batch, p->qlen, p->past, bal, world_size);
}

// A paged cache's block table (n entries) in a shuffled order from `seed`, as a cache in use has
// its pages, uploaded to `table`.
static void block_table_upload(CUdeviceptr table, int n, unsigned long long seed, CUstream s) {
    int *t = xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) t[i] = i;
    uint64_t rng = seed * 2654435761ULL + 1;
    for (int i = n - 1; i > 0; i--) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        int j = (int)((rng >> 33) % (uint64_t)(i + 1)), x = t[i];
        t[i] = t[j], t[j] = x;
    }
    upload_wait(s, table, t, sizeof(int) * (size_t)n);
    free(t);
}

static json_t *problem_spec_json(const struct lwb_problem *p) {
    json_t *o = json_object();
    json_object_set_new(o, "batch_size", json_integer(p->batch));
    json_object_set_new(o, "seq_len_q", json_integer(p->qlen));
    json_object_set_new(o, "seq_len_kv_cache", json_integer(p->past));
    json_object_set_new(o, "balance_ratio", p->has_ratio ? json_real(p->ratio) : json_null());
    return o;
}

// Every kernel a run needs (pointers into the family's plans).
struct lwb_kreqs {
    struct lwb_kreq **r;
    int n;
    size_t cap;
};
static void kreqs_add(struct lwb_kreqs *l, struct lwb_kreq *r) { LWB_PUSH(l->r, l->n, l->cap, r); }

struct lwb_routing;

// What a family plans from: the model as run (after --scaled-from), this rank's shard, the
// selected layers and the problems (each with its balance override).
struct lwb_run_spec {
    const struct lwb_model *model;
    const struct lwb_shard *shard;
    const int *layers;            // model layer indices
    int nlayers;
    const struct lwb_problem *problems;
    const struct lwb_routing *routing; // per problem
    int nproblems;
    int page;                     // tokens per KV-cache block
    int max_batch, max_seq_len;   // KV-cache slots and their length
    bool ctx;                     // the run's phase
    enum lwb_wformat wformat;     // the weight format that runs (--weight-dtype, resolved)
    struct lwb_ckpt *ckpt;        // --load-format AUTO: the checkpoint (checked), else NULL
    const struct lwb_replay *replay; // --replay-file-path: the recorded routing (checked), else NULL
    const char *ssm_dtype;        // --mamba-ssm-cache-dtype (float16|bfloat16|float32), NULL: the model's
};

struct lwb_family {
    const char *name;                                   // "DeepSeek-V3"
    bool (*runs)(const struct lwb_model *m);            // this family builds m's layers
    // Shapes and checks (one-line user errors for what the kernels cannot run); no device.
    void *(*create)(const struct lwb_run_spec *spec);
    // Launch plans of every (problem, layer): kernels, tiles and workspace sizes; no memory.
    void (*plan)(void *f, const struct lwb_device *dev);
    void (*requests)(void *f, struct lwb_kreqs *out);   // every kernel of the run
    void (*alloc)(void *f, struct lwb_mem *m);          // all device memory (dry: sizes only)
    // Weights, tables, inputs and KV caches, seeded; kernels are loaded.
    void (*init)(void *f, const struct lwb_kreq *init, CUstream s, unsigned long long seed);
    void (*setup)(void *f, int problem, CUstream s);    // one problem's device state and bindings
    // A layer's modules for a problem, in order. `measured`: costs from the last forward's
    // routing (read back), else from the balance method's expectation.
    void (*modules)(void *f, int problem, int layer, bool measured, struct lwb_modules *out);
    void (*describe)(void *f, FILE *out);               // plan lines: layers, shard, communication
    // --load-format AUTO: every tensor the run reads, checked in the checkpoint (no device).
    void (*check_checkpoint)(void *f, struct lwb_ckpt *c);
    void (*dump)(void *f, int problem, CUstream s, const char *dir); // --dump of one problem
    // After the timed iterations: false (with a message) when something that the graph baked in
    // changed between iterations (the all-to-all's row counts, say).
    bool (*verify)(void *f, int problem, char *why, size_t n);
    // Routing replay and collection (NULL in a family without routed experts). route_layer: the
    // layer routes tokens to experts. route_stage: every replayed iteration's choices to the device
    // (spec.replay's layout). route_replay: enqueue the copy of replayed iteration `slot`'s choices
    // into what each MoE layer reads instead of its router's choice. route_read: the expert ids
    // (tokens x top_k) the layer's MoE used, read right after a forward ran that layer.
    bool (*route_layer)(void *f, int layer);
    void (*route_stage)(void *f, const struct lwb_replay *rp, CUstream s);
    void (*route_replay)(void *f, int slot, CUstream s);
    void (*route_read)(void *f, int problem, int layer, int32_t *ids, CUstream s);
};

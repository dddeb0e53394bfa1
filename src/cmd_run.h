// cmd_run.h: `lwb run CONFIG.yaml [flags]`: the run plan (problems, layers, kernels, memory),
// --dry-run, and the run itself: allocate, compile, initialise, warm up with checks, time every
// problem inside cuProfilerStart/Stop with the layer-wise NVTX contract, profile, print the
// statistics and the roofline table, optionally write JSON and a dump for checks.
//
// Defines: cmd_run and the plan helpers (struct run_plan, run_plan_build) the tests use.
//
// Does not: implement layers (layers/deepseek.h), timing loops (runner.h) or profiles
// (profile.h).
// Tested by test/test_plan.c (plan, errors, dry-run) and test/cli.sh; on the GPU by
// test/gpu/run_lwb.sh.
#pragma once

struct run_plan {
    const char *config_path;
    struct lwb_args *a;
    struct lwb_model model;
    struct ds_dims d;
    bool ctx;                  // run_type CTX
    int nlayers;
    struct ds_layer *layers;
    int nproblems;
    struct ds_problem *problems;
    struct lwb_routing *routing; // per problem
    int max_batch, max_seq_len, max_num_tokens, page, blocks_per_request;
    bool graph;
    int warmup, timed;
};

// A required integer list.
static const struct lwb_val *run_list(struct lwb_args *a, const char *key, const char *config_path) {
    const struct lwb_val *v = arg_val(a, key, LWB_OPT_INT_LIST);
    if (!v->set) {
        char flag[64];
        opt_flag_name(&a->opts[args_find(a, key)], flag, sizeof flag);
        lwb_user_error("run: '%s' is required: give --%s or set it in %s", key, flag, config_path);
    }
    return v;
}

static long long list_max(const struct lwb_val *v) {
    long long m = v->ints[0];
    for (int i = 1; i < v->n; i++) m = LWB_MAX(m, v->ints[i]);
    return m;
}

// Everything a run needs decided, without a GPU. Exits with one line on any inconsistency.
static void run_plan_build(struct run_plan *p, struct lwb_args *a, const char *config_path) {
    memset(p, 0, sizeof *p);
    p->a = a;
    p->config_path = config_path;
    const char *model = arg_str(a, "model");
    if (!model) lwb_user_error("run: 'model' is required: give --model or set it in %s", config_path);
    if (!strcmp(arg_str(a, "load_format"), "AUTO"))
        lwb_user_error("run: --load-format AUTO (weights from a checkpoint) is not supported yet; use DUMMY "
                       "(random weights scaled like a trained model's)");
    if (!arg_set(a, "run_type")) lwb_user_error("run: 'run_type' is required: give --run-type CTX|GEN or set it in %s",
                                               config_path);
    p->ctx = !strcmp(arg_str(a, "run_type"), "CTX");
    model_load(model, &p->model);
    const struct lwb_val *li = run_list(a, "layer_indices", config_path);
    model_check_layers(&p->model, li->ints, li->n, li->source);
    int scaled = arg_set(a, "scaled_from") ? (int)arg_int(a, "scaled_from") : 0;
    if (scaled) model_check_scaled_from(&p->model, scaled, 1, arg_bool(a, "enable_attention_dp"));
    if (!p->model.rope_interleave)
        lwb_user_error("run: model %s sets rope_interleave false; lwb's rope kernel takes DeepSeek checkpoints' "
                       "interleaved rope dimensions only",
                       p->model.name);
    p->page = (int)arg_int(a, "tokens_per_block");
    if (p->page < 8 || p->page > 256 || (p->page & (p->page - 1)))
        lwb_user_error("run: --tokens-per-block must be a power of two from 8 to 256 (got %d)", p->page);
    p->d = ds_dims_from_model(&p->model, p->page);
    ds_dims_check(&p->d, p->model.name);

    const struct lwb_val *bs = run_list(a, "batch_size", config_path), *sq = run_list(a, "seq_len_q", config_path),
                         *sk = run_list(a, "seq_len_kv_cache", config_path);
    const struct lwb_val *br = arg_val(a, "balance_ratio", LWB_OPT_FLOAT_LIST);
    p->max_batch = arg_set(a, "max_batch_size") ? (int)arg_int(a, "max_batch_size") : (int)list_max(bs);
    p->max_seq_len = arg_set(a, "max_seq_len") ? (int)arg_int(a, "max_seq_len") : (int)(list_max(sq) + list_max(sk));
    p->max_num_tokens = arg_set(a, "max_num_tokens") ? (int)arg_int(a, "max_num_tokens")
                                                     : (int)((long long)p->max_batch * list_max(sq));
    enum lwb_balance method = balance_method_parse(arg_str(a, "balance_method"));
    int nratio = br->set ? br->n : 1;
    p->nproblems = bs->n * sq->n * sk->n * nratio;
    p->problems = xcalloc((size_t)p->nproblems, sizeof *p->problems);
    p->routing = xcalloc((size_t)p->nproblems, sizeof *p->routing);
    int k = 0;
    // The reference's order: batch outermost, balance ratio innermost.
    for (int ib = 0; ib < bs->n; ib++)
        for (int iq = 0; iq < sq->n; iq++)
            for (int ik = 0; ik < sk->n; ik++)
                for (int ir = 0; ir < nratio; ir++, k++) {
                    struct ds_problem *q = &p->problems[k];
                    q->batch = (int)bs->ints[ib], q->qlen = (int)sq->ints[iq], q->past = (int)sk->ints[ik];
                    q->kv_len = q->past + q->qlen, q->tokens = q->batch * q->qlen, q->ctx = p->ctx;
                    q->has_ratio = br->set && !br->nulls[ir];
                    q->ratio = q->has_ratio ? br->floats[ir] : 0;
                    if (q->batch > p->max_batch)
                        lwb_user_error("run: batch size %d is larger than --max-batch-size %d", q->batch, p->max_batch);
                    if (q->kv_len > p->max_seq_len)
                        lwb_user_error("run: seq-len-q %d + seq-len-kv-cache %d is longer than --max-seq-len %d",
                                       q->qlen, q->past, p->max_seq_len);
                    if ((long long)q->batch * q->qlen > p->max_num_tokens)
                        lwb_user_error("run: batch size %d x seq-len-q %d = %lld tokens, more than --max-num-tokens %d",
                                       q->batch, q->qlen, (long long)q->batch * q->qlen, p->max_num_tokens);
                    if (q->has_ratio && q->ratio > 1)
                        lwb_user_error("run: balance ratio %g is outside 0..1", q->ratio);
                    if ((method == LWB_BALANCE_IMBALANCED_RANKS || method == LWB_BALANCE_IMBALANCED_EXPERTS) &&
                        !q->has_ratio)
                        lwb_user_error("run: --balance-method %s needs a --balance-ratio (0..1)",
                                       balance_method_name(method));
                    struct lwb_routing *ro = &p->routing[k];
                    *ro = (struct lwb_routing){.method = method, .has_ratio = q->has_ratio, .ratio = q->ratio,
                                               .tokens = q->tokens, .top_k = p->d.top_k, .experts = p->d.experts,
                                               .ep_size = routing_ep_size(1, scaled), .dp_size = 1, .dp_rank = 0};
                    routing_check(ro);
                }
    p->blocks_per_request = LWB_CEIL_DIV(p->max_seq_len, p->page);
    p->nlayers = li->n;
    p->layers = xcalloc((size_t)p->nlayers, sizeof *p->layers);
    for (int i = 0; i < p->nlayers; i++) {
        p->layers[i].index = (int)li->ints[i];
        p->layers[i].moe = model_layer_is_moe(&p->model, (int)li->ints[i]);
    }
    p->graph = arg_bool(a, "use_cuda_graph");
    p->warmup = (int)arg_int(a, "warmup_times");
    p->timed = (int)arg_int(a, "run_times");
}

// The device a dry run plans for (no GPU touched).
static struct lwb_device dry_device(const struct lwb_gpuspec *g) {
    struct lwb_device d = {.ordinal = -1, .cc_major = 9, .cc_minor = 0, .sm_count = g->sm_count,
                           .total_mem = (size_t)(g->mem_gib * 1073741824.0), .l2_bytes = 50 << 20,
                           .smem_optin = 232448};
    snprintf(d.name, sizeof d.name, "%s", g->name);
    snprintf(d.arch, sizeof d.arch, "sm_90a");
    return d;
}

// Launch plans for every (problem, layer), sizes of the shared buffers and workspaces.
static struct ds_run *plan_runs(struct run_plan *p, const struct lwb_device *dev, struct ds_buffers *b) {
    struct ds_run *runs = xcalloc((size_t)p->nproblems * p->nlayers, sizeof *runs);
    memset(b, 0, sizeof *b);
    b->max_batch = p->max_batch;
    b->max_blocks = p->blocks_per_request;
    b->positions = p->max_seq_len;
    for (int i = 0; i < p->nproblems; i++) {
        const struct ds_problem *q = &p->problems[i];
        b->max_tokens = LWB_MAX(b->max_tokens, q->tokens);
        b->max_keys = LWB_MAX(b->max_keys, (long long)q->batch * mla_prefill_pitch(q->kv_len));
        for (int l = 0; l < p->nlayers; l++) {
            struct ds_run *r = &runs[(size_t)i * p->nlayers + l];
            ds_run_plan(r, &p->layers[l], &p->d, q, dev, p->routing[i].method != LWB_BALANCE_NOT_MODIFIED);
            ds_run_workspace(r, b);
        }
    }
    return runs;
}

// Cache fill (past tokens of every request): a chunk of random hidden states through the input
// norm, the kv_a projection, the kv_a norm and RoPE into the cache, as a prefill would.
struct fill_plan {
    int chunk;                 // tokens per launch
    CUdeviceptr hidden, x, kv, latent, kv_new, lens;
    struct rmsnorm_config n_in, n_kv;
    struct lwb_kreq r_in, r_kv, r_rope;
    struct lwb_gemm *g;        // per layer
};

// Kernels of the fill (once, before compiling); buffers come from fill_alloc in both passes.
static void fill_plan_kernels(struct fill_plan *f, struct run_plan *p, const struct lwb_device *dev, int max_past) {
    const struct ds_dims *d = &p->d;
    f->chunk = LWB_MIN(max_past, 4096);
    if (f->chunk == 0) return;
    f->n_in = rmsnorm_choose_config(d->hidden, false);
    f->n_kv = rmsnorm_choose_config(d->kv_lora, false);
    rmsnorm_request(&f->r_in, f->n_in);
    rmsnorm_request(&f->r_kv, f->n_kv);
    mla_rope_request(&f->r_rope, (struct mla_rope_config){d->heads, d->nope, d->rope, d->kv_lora, d->page});
    f->g = xcalloc((size_t)p->nlayers, sizeof *f->g);
    for (int l = 0; l < p->nlayers; l++)
        gemm_plan(&f->g[l], "cache_fill", f->chunk, d->kv_row, d->hidden, 1, GEMM_EPI_BF16, false, 0, dev);
}

static void fill_alloc(struct fill_plan *f, const struct ds_dims *d, struct lwb_mem *m, int max_past) {
    if (f->chunk == 0) return;
    f->hidden = mem_alloc(m, MEM_WS, DS_BF16(f->chunk, d->hidden), "cache fill input");
    f->x = mem_alloc(m, MEM_WS, DS_BF16(f->chunk, d->hidden), "cache fill norm");
    f->kv = mem_alloc(m, MEM_WS, DS_BF16(f->chunk, d->kv_row), "cache fill projection");
    f->latent = mem_alloc(m, MEM_WS, DS_BF16(f->chunk, d->kv_lora), "cache fill latent");
    f->kv_new = mem_alloc(m, MEM_WS, DS_BF16(f->chunk, d->kv_row), "cache fill rows");
    f->lens = mem_alloc(m, MEM_WS, (size_t)LWB_CEIL_DIV(max_past, f->chunk) * 4, "cache fill lengths");
}

static void fill_cache(struct fill_plan *f, struct lwb_runner *r, int max_past, unsigned long long seed) {
    if (!f->chunk) return;
    const struct ds_dims *d = &r->d;
    const int nchunks = LWB_CEIL_DIV(max_past, f->chunk);
    int *lens = xmalloc(sizeof(int) * (size_t)nchunks);
    for (int c = 0; c < nchunks; c++) lens[c] = LWB_MIN(max_past, (c + 1) * f->chunk);
    upload_wait(r->s, f->lens, lens, sizeof(int) * (size_t)nchunks);
    for (int l = 0; l < r->nlayers; l++) {
        const struct ds_layer *L = &r->layers[l];
        struct lwb_operand x = {f->x, f->chunk, d->hidden, d->hidden, 1, 0};
        struct lwb_operand w = {L->w.fused_a + (CUdeviceptr)d->q_lora * d->hidden * 2, d->kv_row, d->hidden, d->hidden, 1, 0};
        gemm_bind(&f->g[l], &x, &w, f->kv, d->kv_row, 0, r->buf.gemm_ws);
        for (int b = 0; b < r->buf.max_batch; b++)
            for (int c = 0; c < nchunks; c++) {
                const int n = lens[c] - c * f->chunk;
                init_fill_bf16(&r->init, r->s, f->hidden, (long long)n * d->hidden,
                               seed * 7919 + (unsigned long long)(b * nchunks + c), 0.f, 1.f);
                rmsnorm_enqueue(&f->r_in, f->n_in, r->s, f->hidden, d->hidden, 0, 0, 0, L->w.in_norm, f->x, d->hidden,
                                n, d->eps);
                f->g[l].m = n;
                gemm_enqueue(&f->g[l], r->s);
                rmsnorm_enqueue(&f->r_kv, f->n_kv, r->s, f->kv, d->kv_row, 0, 0, 0, L->w.kv_a_norm, f->latent,
                                d->kv_lora, n, d->eps);
                struct mla_rope_args ra = {0, 0, f->kv + (CUdeviceptr)d->kv_lora * 2, d->kv_row, f->latent, d->kv_lora,
                                           f->kv_new, L->cache, r->buf.block_table + (CUdeviceptr)b * r->buf.max_blocks * 4,
                                           f->lens + (CUdeviceptr)c * 4, r->buf.cos_t, r->buf.sin_t,
                                           r->buf.max_blocks, n, n};
                mla_rope_enqueue(&f->r_rope, r->s, &ra);
            }
    }
    stream_wait(r->s, 600, "the KV-cache fill");
    free(lens);
}

static int max_past_of(const struct run_plan *p) {
    int m = 0;
    for (int i = 0; i < p->nproblems; i++) m = LWB_MAX(m, p->problems[i].past);
    return m;
}

// All planning that sizes memory: the same calls in a dry plan and in the real one.
static void plan_memory(struct run_plan *p, struct lwb_mem *m, struct ds_buffers *b, struct fill_plan *f) {
    bool any_moe = false, any_dense = false;
    for (int l = 0; l < p->nlayers; l++) any_moe |= p->layers[l].moe, any_dense |= !p->layers[l].moe;
    int blocks = p->max_batch * p->blocks_per_request;
    for (int l = 0; l < p->nlayers; l++) ds_layer_alloc(m, &p->layers[l], &p->d, blocks);
    fill_alloc(f, &p->d, m, max_past_of(p));
    for (int l = 0; f->chunk && l < p->nlayers; l++) b->gemm_ws_bytes = LWB_MAX(b->gemm_ws_bytes, gemm_workspace_bytes(&f->g[l]));
    ds_buffers_alloc(m, b, &p->d, p->ctx, any_moe, any_dense);
}

// ---------------------------------------------------------------------------------------------
// Output

static void print_problem_line(int rank, const struct ds_problem *q, struct lwb_stats st) {
    printf("[RANK %d]  batch_size %d  seq_len_q %d  seq_len_kv_cache %d", rank, q->batch, q->qlen, q->past);
    if (q->has_ratio) printf("  balance_ratio %.2g", q->ratio);
    printf("  mean %.1f  median %.1f  min %.1f  max %.1f  P90 %.1f  (us)\n", st.mean, st.median, st.min, st.max, st.p90);
    fflush(stdout);
}

struct floor_of {
    double us;        // max of the two
    bool memory;      // the memory term is the larger
};
static struct floor_of floor_us(double flops, double bytes, double peak_tflops, double bw) {
    double tm = bytes / bw * 1e6, tc = flops / (peak_tflops * 1e12) * 1e6;
    return (struct floor_of){LWB_MAX(tm, tc), tm >= tc};
}

static void print_roofline(const struct lwb_module_time *t, int n, double peak, double bw, bool measured) {
    if (measured)
        printf("  %-6s %-16s %10s %10s %7s %9s %9s\n", "layer", "module", "time us", "floor us", "bound", "TFLOP/s",
               "of floor");
    else
        printf("  %-6s %-16s %10s %7s %10s %10s\n", "layer", "module", "floor us", "bound", "GFLOP", "GB");
    for (int i = 0; i < n; i++) {
        struct floor_of f = floor_us(t[i].flops, t[i].bytes, peak, bw);
        if (measured)
            printf("  %-6d %-16s %10.1f %10.1f %7s %9.1f %8.1f%%\n", t[i].layer, t[i].module, t[i].us, f.us,
                   f.memory ? "memory" : "math", t[i].flops / t[i].us * 1e-6, 100 * f.us / t[i].us);
        else
            printf("  %-6d %-16s %10.1f %7s %10.2f %10.3f\n", t[i].layer, t[i].module, f.us, f.memory ? "memory" : "math",
                   t[i].flops * 1e-9, t[i].bytes * 1e-9);
    }
}

static json_t *args_json(struct lwb_args *a) {
    json_t *o = json_object();
    for (int i = 0; i < a->nopts; i++) {
        const struct lwb_opt *op = &a->opts[i];
        const struct lwb_val *v = &a->vals[i];
        if (op->flags & LWB_OPT_CLI_ONLY) continue;
        char key[96];
        bool list = op->type == LWB_OPT_INT_LIST || op->type == LWB_OPT_FLOAT_LIST;
        snprintf(key, sizeof key, "%s%s", op->key, list ? "_list" : "");
        json_t *x;
        if (!v->set) x = json_null();
        else if (op->type == LWB_OPT_BOOL) x = json_boolean(v->b);
        else if (op->type == LWB_OPT_INT) x = json_integer(v->i);
        else if (op->type == LWB_OPT_FLOAT) x = json_real(v->f);
        else if (op->type == LWB_OPT_STR || op->type == LWB_OPT_ENUM) x = json_string(v->s);
        else {
            x = json_array();
            for (int k = 0; k < v->n; k++)
                json_array_append_new(x, op->type == LWB_OPT_INT_LIST ? json_integer(v->ints[k])
                                         : v->nulls[k]                 ? json_null()
                                                                       : json_real(v->floats[k]));
        }
        json_object_set_new(o, key, x);
    }
    if (!arg_set(a, "balance_ratio")) json_object_set_new(o, "balance_ratio_list", json_pack("[n]"));
    return o;
}

// ---------------------------------------------------------------------------------------------

static void print_plan(struct run_plan *p, struct ds_run *runs, const struct lwb_mem *m, const struct lwb_device *dev,
                       const struct lwb_gpuspec *spec) {
    printf("model: %s (%s), %s phase\n", p->model.name, p->model.source, p->ctx ? "context" : "generation");
    printf("layers:");
    for (int l = 0; l < p->nlayers; l++) printf(" %d (%s)", p->layers[l].index, p->layers[l].moe ? "MLA + MoE" : "MLA + MLP");
    printf("\nproblems: %d; KV cache: %d slots x %d tokens, %d per block; max %d tokens per forward; %s\n",
           p->nproblems, p->max_batch, p->max_seq_len, p->page, p->max_num_tokens,
           p->graph ? "CUDA graph replay" : "eager");
    printf("device memory (%s):\n", dev->name);
    mem_print(m, stdout, "  ");
    printf("kernels (first problem):\n");
    struct lwb_kreq *reqs[64];
    int seen = 0;
    for (int l = 0; l < p->nlayers; l++) {
        int n = ds_run_requests(&runs[l], reqs);
        for (int i = 0; i < n; i++) {
            bool dup = false;
            for (int j = 0; j < i; j++) dup |= !strcmp(reqs[j]->label, reqs[i]->label);
            if (dup) continue;
            printf("  %-44s", reqs[i]->label);
            for (int c = 0; c < reqs[i]->nconsts; c++) printf(" %s=%lld", reqs[i]->consts[c].name, reqs[i]->consts[c].value);
            printf("\n");
            seen++;
        }
    }
    for (int i = 0; i < p->nproblems; i++) {
        const struct ds_problem *q = &p->problems[i];
        char text[128];
        iteration_text(q, 1, text, sizeof text);
        printf("floors on %s (%.0f TFLOP/s bf16, %.2f TB/s), problem %s:\n", spec->name, spec->bf16_tflops,
               spec->hbm_tbs, text);
        struct lwb_module_time t[64];
        int n = 0;
        for (int l = 0; l < p->nlayers; l++) {
            struct ds_cost c[5];
            int nc = ds_cost(&p->d, q, p->layers[l].moe, ds_active_experts_expected(&p->d, q->tokens), c);
            for (int k = 0; k < nc; k++) t[n++] = (struct lwb_module_time){p->layers[l].index, c[k].module, 0, c[k].flops, c[k].bytes};
        }
        print_roofline(t, n, spec->bf16_tflops, spec->hbm_tbs * 1e12, false);
    }
}

static int cmd_run(int argc, char **argv) {
    struct lwb_args a;
    args_init(&a, "run", run_opts, (int)LWB_ARRAY_LEN(run_opts));
    args_parse(&a, &run_help, argc, argv, 1, "CONFIG.yaml");
    if (arg_bool(&a, "list_models")) {
        int n;
        const struct lwb_preset *pr = model_presets(&n);
        for (int i = 0; i < n; i++)
            printf("%-45s %s\n", pr[i].name, pr[i].supported ? pr[i].model_type : "(not supported yet)");
        return 0;
    }
    if (a.npos != 1) lwb_user_error("run: needs a config file: lwb run CONFIG.yaml [options] (e.g. configs/config_gen.yaml)");
    config_load(&a, a.pos[0]);
    args_apply_defaults(&a);
    struct run_plan p;
    run_plan_build(&p, &a, a.pos[0]);
    char note[256];
    model_bf16_note(&p.model, note, sizeof note);
    if (p.model.runs_in_bf16 && note[0]) printf("%s\n", note);
    if (arg_set(&a, "moe_backend"))
        printf("moe_backend %s is recorded; lwb runs its own MoE kernels\n", arg_str(&a, "moe_backend"));

    const bool dry = arg_bool(&a, "dry_run");
    struct lwb_runner r = {.d = p.d, .layers = p.layers, .nlayers = p.nlayers, .problems = p.problems,
                           .nproblems = p.nproblems, .routing = p.routing, .world_size = 1};
    const struct lwb_gpuspec *named = gpuspec_find(arg_set(&a, "gpu") ? arg_str(&a, "gpu") : "H100");
    if (dry) r.dev = dry_device(named);
    else device_open(&r.dev, (int)arg_int(&a, "device"));
    struct ds_buffers plan_buf;
    r.runs = plan_runs(&p, &r.dev, &plan_buf);
    struct lwb_mem m;
    mem_init(&m, true);
    struct fill_plan fill = {0};
    fill_plan_kernels(&fill, &p, &r.dev, max_past_of(&p));
    r.buf = plan_buf;
    plan_memory(&p, &m, &r.buf, &fill);
    if (dry) {
        print_plan(&p, r.runs, &m, &r.dev, named);
        mem_check_fits(&m, (size_t)(named->mem_gib * 1073741824.0) - ((size_t)2 << 30), named->name);
        printf("the plan fits in %s\n", named->name);
        return 0;
    }

    // Refuse before allocating anything large.
    size_t free_b = 0, total_b = 0;
    CU_CHECK(lwb_cu.cuMemGetInfo(&free_b, &total_b));
    const size_t reserve = (size_t)3 << 30; // context, modules, graphs, profiler buffers
    mem_check_fits(&m, free_b > reserve ? free_b - reserve : 0, r.dev.name);
    r.spec = gpuspec_for_device(&r.dev);
    CU_CHECK(lwb_cu.cuStreamCreate(&r.s, CU_STREAM_NON_BLOCKING));
    r.copy_bw = measure_copy_bw(r.s);
    printf("device %d: %s (%s, %d SMs, %.1f GiB); copy bandwidth %.2f TB/s measured; bf16 peak %.1f TFLOP/s\n",
           r.dev.ordinal, r.dev.name, r.dev.arch, r.dev.sm_count, gib(r.dev.total_mem), r.copy_bw * 1e-12,
           r.spec.bf16_tflops);

    // Compile every kernel of every problem at once (in parallel), then allocate and bind.
    struct lwb_jit jit;
    jit_init(&jit, r.dev.arch, true);
    init_request(&r.init);
    struct lwb_kreq **reqs = xcalloc((size_t)p.nproblems * p.nlayers * 40 + 8 + p.nlayers, sizeof *reqs);
    int nreq = 0;
    reqs[nreq++] = &r.init;
    for (size_t i = 0; i < (size_t)p.nproblems * p.nlayers; i++) nreq += ds_run_requests(&r.runs[i], reqs + nreq);
    if (fill.chunk) {
        reqs[nreq++] = &fill.r_in, reqs[nreq++] = &fill.r_kv, reqs[nreq++] = &fill.r_rope;
        for (int l = 0; l < p.nlayers; l++) reqs[nreq++] = &fill.g[l].req;
    }
    double t0 = lwb_now();
    jit_build(&jit, reqs, nreq);
    jit_summary(&jit, stdout);

    struct lwb_mem real;
    mem_init(&real, false);
    r.buf = plan_buf;
    plan_memory(&p, &real, &r.buf, &fill);
    r.flush_bytes = (size_t)r.dev.l2_bytes * 2;
    r.flush = dev_alloc(r.flush_bytes, "L2 flush");

    // Weights, rope tables, block tables (a shuffled page order per layer pool), inputs, cache.
    unsigned long long seed = (unsigned long long)arg_int(&a, "seed");
    for (int l = 0; l < p.nlayers; l++) ds_layer_init(&p.layers[l], &p.d, &r.init, r.s, seed);
    {
        int half = p.d.rope / 2;
        double *inv = xmalloc(sizeof(double) * (size_t)half);
        model_rope_inv_freq(&p.model, inv);
        float *cs = xmalloc(sizeof(float) * (size_t)p.max_seq_len * half), *sn = xmalloc(sizeof(float) * (size_t)p.max_seq_len * half);
        mla_rope_tables(inv, half, p.max_seq_len, model_rope_attention_factor(&p.model), cs, sn);
        upload_wait(r.s, r.buf.cos_t, cs, sizeof(float) * (size_t)p.max_seq_len * half);
        upload_wait(r.s, r.buf.sin_t, sn, sizeof(float) * (size_t)p.max_seq_len * half);
        free(inv), free(cs), free(sn);
        int nb = p.max_batch * p.blocks_per_request;
        int *table = xmalloc(sizeof(int) * (size_t)nb);
        for (int i = 0; i < nb; i++) table[i] = i;
        struct { uint64_t s; } rng = {seed * 2654435761ULL + 1};
        for (int i = nb - 1; i > 0; i--) {
            rng.s = rng.s * 6364136223846793005ULL + 1442695040888963407ULL;
            int j = (int)((rng.s >> 33) % (uint64_t)(i + 1)), t = table[i];
            table[i] = table[j], table[j] = t;
        }
        upload_wait(r.s, r.buf.block_table, table, sizeof(int) * (size_t)nb);
        // Rows between requests' keys in the context phase are never attended; keep them finite.
        if (r.buf.kv_all)
            CU_CHECK(lwb_cu.cuMemsetD8Async(r.buf.kv_all, 0, (size_t)r.buf.max_keys * p.d.kv_row * 2, r.s));
        free(table);
        // torch.rand inputs, as the reference's run pack has.
        init_fill_bf16(&r.init, r.s, r.buf.hidden_in, r.buf.max_tokens * p.d.hidden, seed * 31 + 1, 0.f, 1.f);
        init_fill_bf16(&r.init, r.s, r.buf.residual_in, r.buf.max_tokens * p.d.hidden, seed * 31 + 2, 0.f, 1.f);
    }
    fill_cache(&fill, &r, max_past_of(&p), seed);
    printf("ready in %.2f s (compile, %.2f GiB allocated, weights and KV cache initialised)\n", lwb_now() - t0,
           gib(mem_total(&real)));
    fflush(stdout);

    // The profiled region: the reference's markers, then every problem.
    bool profiling = arg_bool(&a, "profile") && !profile_under_nsys();
    if (arg_bool(&a, "profile") && profile_under_nsys())
        printf("running under Nsight Systems (%s): lwb's own profiler stays off\n", profile_nsys_signal());
    struct lwb_profiler prof;
    if (profiling) profile_init(&prof, &r.dev, 0, 1);
    CU_CHECK(lwb_cu.cuProfilerStart());
    if (profiling) profile_begin(&prof);
    marker_json("args", args_json(&a));
    struct lwb_stats *stats = xcalloc((size_t)p.nproblems, sizeof *stats);
    double *us = xcalloc((size_t)p.timed, sizeof *us);
    for (int i = 0; i < p.nproblems; i++) {
        marker_json("problem_spec", problem_spec_json(&p.problems[i]));
        runner_setup_problem(&r, i);
        runner_warmup_check(&r, i);
        runner_time_problem(&r, i, p.graph, p.warmup, p.timed, us);
        stats[i] = stats_compute(us, p.timed);
        print_problem_line(0, &p.problems[i], stats[i]);
    }
    CU_CHECK(lwb_cu.cuCtxSynchronize());
    if (profiling) profile_end(&prof);
    CU_CHECK(lwb_cu.cuProfilerStop());
    if (profiling) {
        const char *dir = arg_str(&a, "profile_dir");
        if (lwb_mkdirs(dir) != 0) lwb_fatal("cannot create the profile folder %s: %s", dir, strerror(errno));
        const char *path = profile_write(&prof, dir);
        if (path) printf("profile: %s (lwb parse --file-path it)\n", path);
        profile_free(&prof);
    }

    // Roofline: every module alone, against its floor on this device.
    json_t *records = json_array();
    const double launch_us = p.nproblems ? runner_launch_cost(&r) : 0;
    for (int i = 0; i < p.nproblems; i++) {
        struct lwb_module_time t[64];
        int n = runner_module_times(&r, i, 10, t);
        char text[128];
        iteration_text(&p.problems[i], 1, text, sizeof text);
        printf("roofline %s (each module alone; floor = max(bytes / %.2f TB/s, FLOPs / %.0f TFLOP/s)):\n", text,
               r.copy_bw * 1e-12, r.spec.bf16_tflops);
        print_roofline(t, n, r.spec.bf16_tflops, r.copy_bw, true);
        printf("  (memory floors use the copy bandwidth, bytes read + written; traffic that is mostly reads can "
               "run a little faster than that; a one-element kernel takes %.1f us when timed this way, which bounds "
               "how close a module of small kernels can come to its floor)\n",
               launch_us);
        json_t *rec = problem_spec_json(&p.problems[i]);
        json_object_set_new(rec, "rank", json_integer(0));
        json_object_set_new(rec, "launch_us", json_real(launch_us));
        json_object_set_new(rec, "mean_us", json_real(stats[i].mean));
        json_object_set_new(rec, "median_us", json_real(stats[i].median));
        json_object_set_new(rec, "min_us", json_real(stats[i].min));
        json_object_set_new(rec, "max_us", json_real(stats[i].max));
        json_object_set_new(rec, "p90_us", json_real(stats[i].p90));
        json_t *mods = json_array();
        for (int k = 0; k < n; k++) {
            struct floor_of f = floor_us(t[k].flops, t[k].bytes, r.spec.bf16_tflops, r.copy_bw);
            json_array_append_new(mods, json_pack("{s:i, s:s, s:f, s:f, s:f, s:f, s:s}", "layer", t[k].layer, "module",
                                                  t[k].module, "time_us", t[k].us, "floor_us", f.us, "flops", t[k].flops,
                                                  "bytes", t[k].bytes, "bound", f.memory ? "memory" : "math"));
        }
        json_object_set_new(rec, "modules", mods);
        json_array_append_new(records, rec);
    }
    if (arg_set(&a, "output_json")) {
        json_t *doc = json_pack("{s:o, s:s, s:f, s:f, s:o}", "args", args_json(&a), "device", r.dev.name,
                                "copy_bandwidth_tbs", r.copy_bw * 1e-12, "bf16_peak_tflops", r.spec.bf16_tflops,
                                "problems", records);
        char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (lwb_write_file_atomic(arg_str(&a, "output_json"), text, strlen(text)) != 0)
            lwb_fatal("cannot write %s: %s", arg_str(&a, "output_json"), strerror(errno));
        free(text);
        json_decref(doc);
    } else {
        json_decref(records);
    }
    if (arg_set(&a, "dump")) dump_first_problem(&r, &p.model, arg_int(&a, "seed"), arg_str(&a, "dump"));
    free(us), free(stats), free(reqs);
    mem_free_all(&real);
    return 0;
}

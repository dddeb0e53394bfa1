// cmd_run.h: `lwb run CONFIG.yaml [flags]`, in named phases: options, ranks (this process's
// place among them; `--np N` starts them), plan (problems, model, this rank's shard, the family's
// launches, memory), rendezvous (every rank's plan the same), then on the GPU: device, compile,
// allocate, initialise, warm up with checks, time every problem inside cuProfilerStart/Stop with
// the layer-wise NVTX contract, profile, report (statistics, roofline, JSON), dump.
//
// Defines: cmd_run and the plan helpers the tests use (struct run_plan, run_plan_build,
// run_plan_memory, dry_device, print_plan, floor_of).
//
// Does not: implement layers (src/layers/), timing loops (runner.h), ranks (dist.h) or profiles
// (profile.h).
// Tested by test/test_plan.c (plan, errors, dry-run), test/test_dist.c and test/cli*.sh; on the
// GPU by test/gpu/run_lwb.sh and test/gpu/run_ranks.sh.
#pragma once

#define LWB_MAX_PROBLEMS 65536

struct run_plan {
    const char *config_path;
    struct lwb_args *a;
    struct lwb_model model;      // as run: after --scaled-from
    bool ctx;                    // run_type CTX
    int nlayers;
    int *layer_index;            // (nlayers) model layer indices
    int nproblems;
    struct lwb_problem *problems;
    struct lwb_routing *routing; // per problem
    int max_batch, max_seq_len, max_num_tokens, page;
    bool graph;
    int warmup, timed;
    struct lwb_shard shard;
    struct lwb_ckpt *ckpt;       // --load-format AUTO: the checkpoint (opened and checked)
    enum lwb_wformat wformat;    // the weight format that runs
    struct lwb_replay replay;    // --replay-file-path: this rank's recorded routing (niter 0: none)
    const char *collect;         // --collect-calibration FILE, or NULL
    char wnote[320];             // what runs, when it is not what the checkpoint stores ("" else)
    const struct lwb_family *fam;
    void *f;                     // the family's state
};

// --load-format AUTO: what it can load today (a checkpoint folder, in its own format, whole).
static void run_check_auto(const struct run_plan *p, const struct lwb_args *a) {
    const struct lwb_model *m = &p->model;
    if (model_is_hybrid(m))
        lwb_user_error("run: --load-format AUTO is not built for %s (model_type %s) yet; give --load-format DUMMY "
                       "(random weights)", m->name, m->model_type);
    if (m->is_preset)
        lwb_user_error("run: --load-format AUTO reads a checkpoint folder: give --model DIR (config.json with "
                       "model.safetensors.index.json and its shards, or model.safetensors); %s is a built-in preset "
                       "(its weights are not here)",
                       m->name);
    if (p->wnote[0])
        lwb_user_error("run: --load-format AUTO runs the checkpoint as stored (%s); --weight-dtype %s would need the "
                       "weights converted at load, which lwb does not do yet: leave --weight-dtype auto, or time that "
                       "format with --load-format DUMMY",
                       m->checkpoint_format, arg_str(a, "weight_dtype"));
    if (arg_set(a, "scaled_from"))
        lwb_user_error("run: --scaled-from simulates another deployment's share of the experts with random weights; with "
                       "--load-format AUTO run on the ranks themselves (--np N) or use --load-format DUMMY");
}

// A calibration file, read once per process (under --np the parent plans every rank).
static struct lwb_calib *calib_cached(const char *path) {
    static struct lwb_calib c;
    if (c.path && !strcmp(c.path, path)) return &c;
    if (c.path) calib_free(&c);
    calib_load(path, &c);
    return &c;
}

// An iteration bound given as --replay-X-iter or the README's --replay-X; -1 when neither. The
// command line wins over the config file; two different values from the same place are refused.
static long long replay_bound(struct lwb_args *a, const char *key, const char *alias) {
    const struct lwb_val *k = arg_val(a, key, LWB_OPT_INT), *s = arg_val(a, alias, LWB_OPT_INT);
    if (k->set && s->set && k->i != s->i) {
        const bool k_cli = !strcmp(k->source, "command line"), s_cli = !strcmp(s->source, "command line");
        if (k_cli != s_cli) return k_cli ? k->i : s->i;
        char f1[64], f2[64];
        opt_flag_name(&a->opts[args_find(a, key)], f1, sizeof f1);
        opt_flag_name(&a->opts[args_find(a, alias)], f2, sizeof f2);
        lwb_user_error("run: --%s %lld and --%s %lld (both from %s) disagree; give one", f1, k->i, f2, s->i, k->source);
    }
    return k->set ? k->i : s->set ? s->i : -1;
}

// --replay-file-path (this rank's records, checked against every problem) and --collect-calibration.
static void run_plan_routing_files(struct run_plan *p, struct lwb_args *a, enum lwb_balance method) {
    const long long start = replay_bound(a, "replay_start_iter", "replay_start");
    const long long stop = replay_bound(a, "replay_stop_iter", "replay_stop");
    const char *path = arg_str(a, "replay_file_path");
    p->collect = arg_str(a, "collect_calibration");
    bool any_moe = false;
    for (int l = 0; l < p->nlayers; l++) any_moe |= model_layer_is_moe(&p->model, p->layer_index[l]);
    if ((path || p->collect) && !p->fam->route_layer)
        lwb_user_error("run: the %s family has no routed experts to replay or collect", p->fam->name);
    if (p->collect && arg_bool(a, "dry_run"))
        lwb_user_error("run: --collect-calibration records a run's routing and --dry-run runs nothing; leave one out");
    if (p->collect && !any_moe)
        lwb_user_error("run: --collect-calibration records MoE routing and the selected layers are all dense (the first "
                       "%d layers of %s); select MoE layers",
                       p->model.first_k_dense, p->model.name);
    if (p->collect && path && paths_same(p->collect, path))
        lwb_user_error("run: --collect-calibration %s would overwrite the file being replayed; give another path",
                       p->collect);
    if (p->collect && arg_set(a, "output_json") && paths_same(p->collect, arg_str(a, "output_json")))
        lwb_user_error("run: --collect-calibration and --output-json name the same file; give two paths");
    const struct lwb_val *verify = arg_val(a, "replay_verify_metadata", LWB_OPT_BOOL);
    if (!path && verify->set && strcmp(verify->source, "default"))
        lwb_user_error("run: --[no-]replay-verify-metadata checks a replay; give --replay-file-path too");
    if (p->collect && p->nproblems > 1)
        lwb_user_error("run: --collect-calibration records one problem's routing and this run has %d; give one batch "
                       "size, seq-len-q, seq-len-kv-cache and balance ratio",
                       p->nproblems);
    if (!path) {
        if (start >= 0 || stop >= 0)
            lwb_user_error("run: --replay-start-iter and --replay-stop-iter choose iterations of --replay-file-path; "
                           "give the file too");
        return;
    }
    if ((start >= 0) != (stop >= 0))
        lwb_user_error("run: give both --replay-start-iter and --replay-stop-iter, or neither (the file's range)");
    if (method != LWB_BALANCE_NOT_MODIFIED)
        lwb_user_error("run: --replay-file-path replaces the router's choice with the recorded one, and "
                       "--balance-method %s would replace it too; give --balance-method NotModified",
                       balance_method_name(method));
    if (!any_moe)
        lwb_user_error("run: --replay-file-path replays MoE routing and the selected layers are all dense (the first %d "
                       "layers of %s); select MoE layers",
                       p->model.first_k_dense, p->model.name);
    struct lwb_replay_layer *ls = xcalloc((size_t)p->nlayers, sizeof *ls);
    for (int l = 0; l < p->nlayers; l++)
        ls[l] = (struct lwb_replay_layer){p->layer_index[l], model_layer_is_moe(&p->model, p->layer_index[l])};
    const struct lwb_problem *q0 = &p->problems[0];
    for (int i = 1; i < p->nproblems; i++)
        if (p->problems[i].tokens != q0->tokens)
            lwb_user_error("run: --replay-file-path replays one shape: batch size x seq-len-q is %d for the first "
                           "problem and %d for b=%d s=%d; give one batch size and seq-len-q",
                           q0->tokens, p->problems[i].tokens, p->problems[i].batch, p->problems[i].qlen);
    replay_plan(calib_cached(path), p->shard.rank, p->shard.world_size, ls, p->nlayers, q0->tokens, p->model.top_k,
                p->model.n_experts, p->warmup + p->timed, start, stop, &p->replay);
    if (p->shard.moe_comm == LWB_MOE_COMM_ALLTOALL && p->replay.nslots > 1)
        lwb_user_error("run: --replay-file-path with the all-to-all token exchange: its row counts are planned once, in "
                       "the warm-up forward, and %d recorded iterations route differently; give --moe-comm allgather, "
                       "or --replay-start-iter = --replay-stop-iter to replay one iteration",
                       p->replay.nslots);
    free(ls);
}

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

static enum lwb_moe_comm moe_comm_forced(const struct lwb_args *a) {
    const char *m = arg_str(a, "moe_comm");
    return !strcmp(m, "allgather") ? LWB_MOE_COMM_ALLGATHER : !strcmp(m, "alltoall") ? LWB_MOE_COMM_ALLTOALL
                                                                                       : LWB_MOE_COMM_NONE;
}

// Everything a run needs decided, without a GPU, for rank `rank` of `world_size` (`collectives`:
// with a communicator, as under --np). Exits with one line on any inconsistency.
static void run_plan_build(struct run_plan *p, struct lwb_args *a, const char *config_path, int rank,
                           int world_size, bool collectives) {
    memset(p, 0, sizeof *p);
    p->a = a;
    p->config_path = config_path;
    const char *model = arg_str(a, "model");
    if (!model) lwb_user_error("run: 'model' is required: give --model or set it in %s", config_path);
    if (!arg_set(a, "run_type")) lwb_user_error("run: 'run_type' is required: give --run-type CTX|GEN or set it in %s",
                                               config_path);
    p->ctx = !strcmp(arg_str(a, "run_type"), "CTX");
    const bool dp = arg_bool(a, "enable_attention_dp");
    model_load(model, &p->model);
    p->wformat = model_weight_format(&p->model, arg_str(a, "weight_dtype"), p->wnote, sizeof p->wnote);
    const bool load = !strcmp(arg_str(a, "load_format"), "AUTO");
    if (load) run_check_auto(p, a);
    const struct lwb_val *li = run_list(a, "layer_indices", config_path);
    model_check_layers(&p->model, li->ints, li->n, li->source);
    const int scaled = arg_set(a, "scaled_from") ? (int)arg_int(a, "scaled_from") : 0;
    model_apply_scaled_from(&p->model, scaled, world_size, dp);
    p->fam = family_for_model(&p->model);
    p->page = (int)arg_int(a, "tokens_per_block");
    if (p->page < 8 || p->page > 256 || (p->page & (p->page - 1)))
        lwb_user_error("run: --tokens-per-block must be a power of two from 8 to 256 (got %d)", p->page);
    p->shard = shard_make(rank, world_size, collectives, dp, scaled, p->model.top_k, moe_comm_forced(a));
    if (moe_comm_forced(a) && !p->shard.moe_comm)
        lwb_user_error("run: --moe-comm %s moves tokens between ranks with attention DP; it needs "
                       "--enable-attention-dp and ranks (--np N, mpirun or srun; --np 1 runs it on one GPU)",
                       arg_str(a, "moe_comm"));

    const struct lwb_val *bs = run_list(a, "batch_size", config_path), *sq = run_list(a, "seq_len_q", config_path),
                         *sk = run_list(a, "seq_len_kv_cache", config_path);
    const struct lwb_val *br = arg_val(a, "balance_ratio", LWB_OPT_FLOAT_LIST);
    p->max_batch = arg_set(a, "max_batch_size") ? (int)arg_int(a, "max_batch_size") : (int)list_max(bs);
    // Each term is in its option's range, so sums and products below fit in 64 bits.
    p->max_seq_len = arg_set(a, "max_seq_len") ? (int)arg_int(a, "max_seq_len") : (int)(list_max(sq) + list_max(sk));
    const long long tokens_default = (long long)p->max_batch * list_max(sq);
    if (!arg_set(a, "max_num_tokens") && tokens_default > 1048576)
        lwb_user_error("run: --max-batch-size %d x seq-len-q %lld = %lld tokens per forward, more than lwb runs "
                       "(1048576); give smaller batch sizes or seq-len-q",
                       p->max_batch, list_max(sq), tokens_default);
    p->max_num_tokens = arg_set(a, "max_num_tokens") ? (int)arg_int(a, "max_num_tokens") : (int)tokens_default;
    enum lwb_balance method = balance_method_parse(arg_str(a, "balance_method"));
    int nratio = br->set ? br->n : 1;
    const long long nprob = (long long)bs->n * sq->n * sk->n * nratio;
    if (nprob > LWB_MAX_PROBLEMS)
        lwb_user_error("run: %d batch sizes x %d seq-len-q x %d seq-len-kv-cache x %d balance ratios make %lld "
                       "problems; a run takes at most %d (split it into several runs)",
                       bs->n, sq->n, sk->n, nratio, nprob, LWB_MAX_PROBLEMS);
    p->nproblems = (int)nprob;
    p->problems = xcalloc((size_t)p->nproblems, sizeof *p->problems);
    p->routing = xcalloc((size_t)p->nproblems, sizeof *p->routing);
    int k = 0;
    // The reference's order: batch outermost, balance ratio innermost.
    for (int ib = 0; ib < bs->n; ib++)
        for (int iq = 0; iq < sq->n; iq++)
            for (int ik = 0; ik < sk->n; ik++)
                for (int ir = 0; ir < nratio; ir++, k++) {
                    struct lwb_problem *q = &p->problems[k];
                    q->batch = (int)bs->ints[ib], q->qlen = (int)sq->ints[iq], q->past = (int)sk->ints[ik];
                    q->kv_len = q->past + q->qlen, q->ctx = p->ctx;
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
                    q->tokens = q->batch * q->qlen; // at most max_num_tokens
                    if (q->has_ratio && q->ratio > 1)
                        lwb_user_error("run: balance ratio %g is outside 0..1", q->ratio);
                    if ((method == LWB_BALANCE_IMBALANCED_RANKS || method == LWB_BALANCE_IMBALANCED_EXPERTS) &&
                        !q->has_ratio)
                        lwb_user_error("run: --balance-method %s needs a --balance-ratio (0..1)",
                                       balance_method_name(method));
                    struct lwb_routing *ro = &p->routing[k];
                    *ro = (struct lwb_routing){.method = method, .has_ratio = q->has_ratio, .ratio = q->ratio,
                                               .tokens = q->tokens, .top_k = p->model.top_k,
                                               .experts = p->model.n_experts, .ep_size = p->shard.ep_size,
                                               .dp_size = p->shard.dp_size, .dp_rank = p->shard.dp_rank};
                    routing_check(ro);
                }
    p->nlayers = li->n;
    p->layer_index = xcalloc((size_t)p->nlayers, sizeof *p->layer_index);
    for (int i = 0; i < p->nlayers; i++) p->layer_index[i] = (int)li->ints[i];
    p->graph = arg_bool(a, "use_cuda_graph");
    p->warmup = (int)arg_int(a, "warmup_times");
    p->timed = (int)arg_int(a, "run_times");
    run_plan_routing_files(p, a, method);
    struct lwb_run_spec spec = {&p->model, &p->shard, p->layer_index, p->nlayers, p->problems, p->routing,
                                p->nproblems, p->page, p->max_batch, p->max_seq_len, p->ctx, p->wformat, NULL,
                                p->replay.niter ? &p->replay : NULL};
    const char *ssm = arg_str(a, "mamba_ssm_cache_dtype");
    if (strcmp(ssm, "auto")) {
        if (!p->model.pattern || (!strchr(p->model.pattern, LWB_LAYER_MAMBA) && !strchr(p->model.pattern, LWB_LAYER_LINEAR)))
            lwb_user_error("run: --mamba-ssm-cache-dtype %s: %s has no Mamba2 or linear-attention layers, so there is "
                           "no recurrent state to store; leave it out", ssm, p->model.name);
        spec.ssm_dtype = ssm;
    }
    if (load) {
        // Every tensor checked before anything is allocated (and by --dry-run).
        p->ckpt = xcalloc(1, sizeof *p->ckpt);
        ckpt_open(model, p->ckpt);
        spec.ckpt = p->ckpt;
    }
    p->f = p->fam->create(&spec);
    if (load) p->fam->check_checkpoint(p->f, p->ckpt);
}

// What every rank must agree on (the rendezvous compares it): lwb's version, the options that
// shape the run, the model as run, the world size.
static json_t *run_plan_json(const struct run_plan *p, json_t *args) {
    return json_pack("{s:s, s:o, s:o, s:i, s:b, s:s}", "lwb_version", LWB_VERSION, "args", args, "model",
                     model_config_json(&p->model), "world_size", p->shard.world_size, "dry_run",
                     arg_bool(p->a, "dry_run"), "weight_format", lwb_wformat_names[p->wformat]);
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

// The family's launches for a device, then every buffer's size (dry: no memory touched).
static void run_plan_memory(struct run_plan *p, const struct lwb_device *dev, struct lwb_mem *m) {
    p->fam->plan(p->f, dev);
    mem_init(m, true);
    p->fam->alloc(p->f, m);
}

// ---------------------------------------------------------------------------------------------
// Output

static void print_problem_line(int rank, const struct lwb_problem *q, struct lwb_stats st) {
    printf("[RANK %d]  batch_size %d  seq_len_q %d  seq_len_kv_cache %d", rank, q->batch, q->qlen, q->past);
    if (q->has_ratio) printf("  balance_ratio %.2g", q->ratio);
    printf("  mean %.1f  median %.1f  min %.1f  max %.1f  P90 %.1f  (us)\n", st.mean, st.median, st.min, st.max, st.p90);
    fflush(stdout);
}

struct floor_of {
    double us;         // the largest of the three
    double link_us;    // bytes sent or received over the links
    const char *bound; // "memory", "math" or "link"
};
// bw: device memory bytes/s; link: bytes/s per direction (0: unknown, no link floor).
// peak_tflops: bf16; fp8 FLOPs count at twice that (Hopper's dense fp8 rate: 1979 TFLOP/s).
static struct floor_of floor_us(struct lwb_cost c, double peak_tflops, double bw, double link) {
    double tm = c.bytes / bw * 1e6, tc = (c.flops + c.flops8 / 2) / (peak_tflops * 1e12) * 1e6;
    double tl = link > 0 ? LWB_MAX(c.sent, c.received) / link * 1e6 : 0;
    struct floor_of f = {tm, tl, "memory"};
    if (tc > f.us) f.us = tc, f.bound = "math";
    if (tl > f.us) f.us = tl, f.bound = "link";
    return f;
}

// One row per module; the link columns appear with more than one rank (links > 0).
static void print_roofline(const struct lwb_module_time *t, int n, double peak, double bw, double link,
                           bool measured, bool links) {
    int w = 16; // the module column fits the longest name (Qwen3NextSparseMoeBlock)
    for (int i = 0; i < n; i++) w = LWB_MAX(w, (int)strlen(t[i].module));
    if (measured) {
        printf("  %-6s %-*s %10s %10s", "layer", w, "module", "time us", "floor us");
        if (links) printf(" %9s", "link us");
        printf(" %7s %9s %9s\n", "bound", "TFLOP/s", "of floor");
    } else {
        printf("  %-6s %-*s %10s", "layer", w, "module", "floor us");
        if (links) printf(" %9s", "link us");
        printf(" %7s %10s %10s", "bound", "GFLOP", "GB");
        if (links) printf(" %10s", "link MB");
        printf("\n");
    }
    for (int i = 0; i < n; i++) {
        struct floor_of f = floor_us(t[i].cost, peak, bw, link);
        printf("  %-6d %-*s", t[i].layer, w, t[i].module);
        if (measured) printf(" %10.1f", t[i].us);
        printf(" %10.1f", f.us);
        if (links) printf(" %9.1f", f.link_us);
        if (measured) {
            printf(" %7s %9.1f %8.1f%%\n", f.bound, (t[i].cost.flops + t[i].cost.flops8) / t[i].us * 1e-6,
                   100 * f.us / t[i].us);
        } else {
            printf(" %7s %10.2f %10.3f", f.bound, (t[i].cost.flops + t[i].cost.flops8) * 1e-9, t[i].cost.bytes * 1e-9);
            if (links) printf(" %10.2f", LWB_MAX(t[i].cost.sent, t[i].cost.received) * 1e-6);
            printf("\n");
        }
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

// Every module with a floor of every layer of problem `pi`, from the family's module lists (the
// expected routing: no device).
static void plan_module_costs(struct run_plan *p, int pi, struct lwb_module_times *out) {
    out->n = 0;
    struct lwb_modules ml = {0};
    for (int l = 0; l < p->nlayers; l++) {
        p->fam->modules(p->f, pi, l, false, &ml);
        for (int i = 0; i < ml.n; i++) {
            const struct lwb_module *m = &ml.m[i];
            if (!m->name && !(m->label && (m->cost.sent || m->cost.received))) continue;
            struct lwb_module_time t = {p->layer_index[l], m->name ? m->name : m->label, 0, m->cost};
            LWB_PUSH(out->t, out->n, out->cap, t);
        }
    }
    free(ml.m);
}

// ---------------------------------------------------------------------------------------------

static void print_plan(struct run_plan *p, const struct lwb_mem *m, const struct lwb_device *dev,
                       const struct lwb_gpuspec *spec) {
    const struct lwb_shard *sh = &p->shard;
    if (sh->world_size > 1) printf("== rank %d of %d ==\n", sh->rank, sh->world_size);
    printf("model: %s (%s), %s phase\n", tesc(p->model.name), tesc(p->model.source), p->ctx ? "context" : "generation");
    p->fam->describe(p->f, stdout);
    printf("problems: %d; KV cache: %d slots x %d tokens, %d per block; max %d tokens per forward; %s\n",
           p->nproblems, p->max_batch, p->max_seq_len, p->page, p->max_num_tokens,
           p->graph ? "CUDA graph replay" : "eager");
    printf("device memory (%s%s):\n", dev->name, sh->world_size > 1 ? ", this rank" : "");
    mem_print(m, stdout, "  ");
    printf("kernels (first problem):\n");
    struct lwb_kreqs reqs = {0};
    p->fam->requests(p->f, &reqs);
    for (int i = 0; i < reqs.n; i++) {
        bool dup = false;
        for (int j = 0; j < i && !dup; j++) dup = !strcmp(reqs.r[j]->label, reqs.r[i]->label);
        if (dup) continue;
        printf("  %-44s", reqs.r[i]->label);
        for (int c = 0; c < reqs.r[i]->nconsts; c++) printf(" %s=%lld", reqs.r[i]->consts[c].name, reqs.r[i]->consts[c].value);
        printf("\n");
    }
    free(reqs.r);
    struct lwb_module_times t = {0};
    for (int i = 0; i < p->nproblems; i++) {
        char text[128];
        iteration_text(&p->problems[i], sh->world_size, text, sizeof text);
        printf("floors on %s (%.0f TFLOP/s bf16%s, %.2f TB/s", spec->name, spec->bf16_tflops,
               p->wformat == LWB_WF_FP8 ? ", twice that fp8" : "", spec->hbm_tbs);
        if (sh->world_size > 1) printf(", NVLink %.0f GB/s per direction", spec->link_gbs);
        printf("), problem %s:\n", text);
        plan_module_costs(p, i, &t);
        print_roofline(t.t, t.n, spec->bf16_tflops, spec->hbm_tbs * 1e12, spec->link_gbs * 1e9, false,
                       sh->world_size > 1);
    }
    free(t.t);
    fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// The phases

// Where this process stands: `--np N` (the launcher starts the ranks), a launcher's variables, or
// alone.
static void run_ranks(struct lwb_args *a, struct lwb_dist *d, bool *launch) {
    struct lwb_rank_env env;
    dist_rank_from_env(dist_getenv_process, NULL, &env);
    *d = (struct lwb_dist){.world_size = 1, .local_rank = 0, .fd = -1,
                           .rendezvous_timeout_s = (double)arg_int(a, "rendezvous_timeout"),
                           .comm_timeout_s = (double)arg_int(a, "comm_timeout")};
    *launch = arg_set(a, "np");
    if (*launch) {
        if (env.found && env.world_size > 1)
            lwb_user_error("run: --np starts the ranks itself, but this process is rank %d of %d of a launcher (%s); "
                           "leave --np out under mpirun or srun",
                           env.rank, env.world_size, env.source);
        long long np = arg_int(a, "np");
        if (np > 64) lwb_user_error("run: --np %lld: lwb starts at most 64 ranks on one host", np);
        d->world_size = (int)np;
        return;
    }
    if (env.found && env.world_size > 1) {
        d->rank = env.rank, d->world_size = env.world_size, d->local_rank = env.local_rank;
        d->master = dist_master_from_env(dist_getenv_process, NULL);
        const char *np_rank = getenv("LWB_NP_RANK"); // a rank of --np re-run under nsys (run_under_nsys)
        d->launched = np_rank && !strcmp(np_rank, "1");
    }
}

static void fault_on_iteration(int i) {
    static int first_timed = -1;
    if (first_timed < 0) first_timed = i;
    if (i != first_timed) return;
    if (dist_fault(lwb_proc.rank, "kill")) raise(SIGKILL);
    if (dist_fault(lwb_proc.rank, "hang")) {
        dist_activity(dist_current, "a test fault: stopped in the first timed iteration", 0);
        for (;;) pause();
    }
}

static void run_report(struct run_plan *p, struct lwb_runner *r, struct lwb_stats *stats, struct lwb_comm *comm) {
    const int rank = p->shard.rank, world = p->shard.world_size;
    // Every rank's statistics, for rank 0's JSON.
    double *mine = xcalloc((size_t)p->nproblems * 5, sizeof(double)), *all = NULL;
    for (int i = 0; i < p->nproblems; i++) {
        double v[5] = {stats[i].mean, stats[i].median, stats[i].min, stats[i].max, stats[i].p90};
        memcpy(mine + (size_t)i * 5, v, sizeof v);
    }
    if (comm) {
        size_t bytes = sizeof(double) * (size_t)p->nproblems * 5;
        CUdeviceptr dm = dev_alloc(bytes, "statistics"), da = dev_alloc(bytes * (size_t)world, "statistics");
        CU_CHECK(lwb_cu.cuMemcpyHtoDAsync(dm, mine, bytes, r->s));
        comm_allgather(comm, dm, da, (size_t)p->nproblems * 5, ncclFloat64, r->s, "gathering every rank's statistics");
        stream_wait(r->s, 60, "the statistics gather");
        all = xmalloc(bytes * (size_t)world);
        CU_CHECK(lwb_cu.cuMemcpyDtoH(all, da, bytes * (size_t)world));
        dev_free(dm, bytes), dev_free(da, bytes * (size_t)world);
    }
    // Roofline: every module alone, against its floor on this device (all ranks time, rank 0 prints).
    json_t *records = json_array();
    const double launch_us = p->nproblems ? runner_launch_cost(r) : 0;
    const double link = r->spec.link_gbs * 1e9;
    struct lwb_module_times t = {0};
    for (int i = 0; i < p->nproblems; i++) {
        dist_activity(dist_current, "timing modules alone for the roofline", 0);
        runner_module_times(r, i, p->layer_index, 10, &t);
        if (rank != 0) continue;
        char text[128];
        iteration_text(&p->problems[i], world, text, sizeof text);
        printf("roofline %s (each module alone; floor = max(bytes / %.2f TB/s, FLOPs / %.0f TFLOP/s%s", text,
               r->copy_bw * 1e-12, r->spec.bf16_tflops, p->wformat == LWB_WF_FP8 ? " bf16 + fp8 FLOPs / twice that" : "");
        if (world > 1) printf(", bytes on the links / %.0f GB/s", r->spec.link_gbs);
        printf(")%s):\n", world > 1 ? "; rank 0" : "");
        print_roofline(t.t, t.n, r->spec.bf16_tflops, r->copy_bw, link, true, world > 1);
        printf("  (memory floors use the copy bandwidth, bytes read + written; traffic that is mostly reads can "
               "run a little faster than that; a one-element kernel takes %.1f us when timed this way, which bounds "
               "how close a module of small kernels can come to its floor)\n",
               launch_us);
        json_t *rec = problem_spec_json(&p->problems[i]);
        json_object_set_new(rec, "rank", json_integer(0));
        json_object_set_new(rec, "launch_us", json_real(launch_us));
        const char *keys[5] = {"mean_us", "median_us", "min_us", "max_us", "p90_us"};
        for (int k = 0; k < 5; k++) json_object_set_new(rec, keys[k], json_real(mine[(size_t)i * 5 + k]));
        if (all) {
            json_t *ranks = json_array();
            for (int q = 0; q < world; q++) {
                json_t *o = json_pack("{s:i}", "rank", q);
                for (int k = 0; k < 5; k++)
                    json_object_set_new(o, keys[k], json_real(all[((size_t)q * p->nproblems + i) * 5 + k]));
                json_array_append_new(ranks, o);
            }
            json_object_set_new(rec, "ranks", ranks);
        }
        json_t *mods = json_array();
        for (int k = 0; k < t.n; k++) {
            struct floor_of f = floor_us(t.t[k].cost, r->spec.bf16_tflops, r->copy_bw, link);
            json_array_append_new(mods, json_pack("{s:i, s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:s}", "layer",
                                                  t.t[k].layer, "module", t.t[k].module, "time_us", t.t[k].us,
                                                  "floor_us", f.us, "link_floor_us", f.link_us, "flops",
                                                  t.t[k].cost.flops + t.t[k].cost.flops8, "bytes", t.t[k].cost.bytes, "bytes_sent",
                                                  t.t[k].cost.sent, "bytes_received", t.t[k].cost.received, "bound",
                                                  f.bound));
        }
        json_object_set_new(rec, "modules", mods);
        json_array_append_new(records, rec);
    }
    free(t.t);
    if (rank == 0 && arg_set(p->a, "output_json")) {
        json_t *doc = json_pack("{s:o, s:s, s:f, s:f, s:i, s:s, s:o}", "args", args_json(p->a), "device", r->dev.name,
                                "copy_bandwidth_tbs", r->copy_bw * 1e-12, "bf16_peak_tflops", r->spec.bf16_tflops,
                                "world_size", world, "moe_comm", lwb_moe_comm_names[p->shard.moe_comm], "problems",
                                records);
        json_object_set_new(doc, "link_gbs", json_real(r->spec.link_gbs));
        json_object_set_new(doc, "weight_format", json_string(lwb_wformat_names[p->wformat]));
        char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        output_write(arg_str(p->a, "output_json"), text, strlen(text));
        free(text);
        json_decref(doc);
    } else {
        json_decref(records);
    }
    free(mine), free(all);
}

static char *nsys_path(void);

// Options: the command line over the config file, defaults applied. Returns false when the
// command was --list-models (done).
static bool run_options(struct lwb_args *a, int argc, char **argv) {
    args_init(a, "run", run_opts, (int)LWB_ARRAY_LEN(run_opts));
    args_parse(a, &run_help, argc, argv, 1, "CONFIG.yaml");
    if (arg_bool(a, "list_models")) {
        int n;
        const struct lwb_preset *pr = model_presets(&n);
        for (int i = 0; i < n; i++)
            printf("%-45s %s\n", pr[i].name, pr[i].supported ? pr[i].model_type : "(not supported yet)");
        return false;
    }
    if (a->npos != 1) lwb_user_error("run: needs a config file: lwb run CONFIG.yaml [options] (e.g. configs/config_gen.yaml)");
    config_load(a, a->pos[0]);
    // The reference's run.sh: PROFILE=0 turns profiling off; the command line still wins.
    const char *env = getenv("PROFILE");
    const struct lwb_val *prof = arg_val(a, "profile", LWB_OPT_BOOL);
    if (env && !strcmp(env, "0") && !(prof->set && !strcmp(prof->source, "command line")))
        args_set_text(a, args_find(a, "profile"), "false", "the environment (PROFILE=0)");
    args_apply_defaults(a);
    if (arg_set(a, "output_json")) output_check(arg_str(a, "output_json"), "--output-json");
    if (arg_set(a, "collect_calibration")) output_check(arg_str(a, "collect_calibration"), "--collect-calibration");
    if ((arg_bool(a, "gpu_metrics") || arg_bool(a, "backtrace")) && !arg_bool(a, "nsys"))
        lwb_user_error("run: --gpu-metrics and --backtrace are Nsight Systems settings: add --nsys");
    if (arg_bool(a, "nsys")) { // checked once, before any rank starts
        if (arg_bool(a, "dry_run"))
            lwb_user_error("run: --nsys profiles a run on the GPU and --dry-run runs nothing; leave one out");
        if (!arg_bool(a, "profile"))
            lwb_user_error("run: --nsys profiles the run and %s turns profiling off; leave one out",
                           env && !strcmp(env, "0") ? "PROFILE=0" : "--no-profile");
        if (profile_under_nsys())
            lwb_user_error("run: --nsys starts Nsight Systems, and this process already runs under it (%s); leave "
                           "--nsys out",
                           profile_nsys_signal());
        free(nsys_path());
    }
    if (arg_set(a, "dump")) {
        struct stat st;
        if (lstat(arg_str(a, "dump"), &st) == 0 && !S_ISDIR(st.st_mode))
            lwb_user_error("--dump: %s exists and is not a folder; give a folder", arg_str(a, "dump"));
    }
    return true;
}

// The device of this rank (local rank r on --device + r), the plan's memory checked against what
// it has free before anything large is allocated, a stream, the measured copy bandwidth.
static void run_device(struct run_plan *p, const struct lwb_dist *dist, struct lwb_runner *r, struct lwb_mem *m) {
    int ordinal = (int)arg_int(p->a, "device") + LWB_MAX(dist->local_rank, 0);
    if (dist->local_rank < 0) { // the launcher gave no local rank: spread the ranks over the GPUs
        cu_load();
        int count = 0;
        if (lwb_cu.cuInit(0) == CUDA_SUCCESS && lwb_cu.cuDeviceGetCount(&count) == CUDA_SUCCESS && count > 0)
            ordinal = (int)arg_int(p->a, "device") + dist->rank % count;
    }
    device_open(&r->dev, ordinal);
    if (strcmp(r->dev.arch, "sm_90a"))
        lwb_fatal("device %d: %s is compute capability %d.%d; lwb's kernels run on Hopper GPUs (compute capability "
                  "9.0, sm_90a: H100, H200, H800, H20) only; use --device to pick one, or --dry-run --gpu H100|H200 "
                  "to plan without a GPU",
                  r->dev.ordinal, r->dev.name, r->dev.cc_major, r->dev.cc_minor);
    run_plan_memory(p, &r->dev, m);
    if (dist->rank == 0 && (dist->world_size > 1 || p->shard.scaled_from)) p->fam->describe(p->f, stdout);
    size_t free_b = 0, total_b = 0;
    CU_CHECK(lwb_cu.cuMemGetInfo(&free_b, &total_b));
    const size_t reserve = (size_t)3 << 30; // context, modules, graphs, profiler buffers, NCCL
    mem_check_fits(m, free_b > reserve ? free_b - reserve : 0, r->dev.name);
    r->spec = gpuspec_for_device(&r->dev);
    CU_CHECK(lwb_cu.cuStreamCreate(&r->s, CU_STREAM_NON_BLOCKING));
    r->copy_bw = measure_copy_bw(r->s);
    printf("device %d: %s (%s, %d SMs, %.1f GiB); copy bandwidth %.2f TB/s measured; bf16 peak %.1f TFLOP/s\n",
           r->dev.ordinal, r->dev.name, r->dev.arch, r->dev.sm_count, gib(r->dev.total_mem), r->copy_bw * 1e-12,
           r->spec.bf16_tflops);
}

// Compile every kernel of every problem at once (in parallel), allocate, initialise.
static void run_build(struct run_plan *p, const struct lwb_dist *dist, struct lwb_runner *r, struct lwb_mem *real,
                      struct lwb_kreqs *reqs) {
    struct lwb_jit jit;
    jit_init(&jit, r->dev.arch, true);
    init_request(&r->init);
    kreqs_add(reqs, &r->init);
    p->fam->requests(p->f, reqs);
    double t0 = lwb_now();
    jit_build(&jit, reqs->r, reqs->n);
    if (dist->rank == 0) jit_summary(&jit, stdout);
    mem_init(real, false);
    p->fam->alloc(p->f, real);
    r->flush_bytes = (size_t)r->dev.l2_bytes * 2;
    r->flush = dev_alloc(r->flush_bytes, "L2 flush");
    p->fam->init(p->f, &r->init, r->s, (unsigned long long)arg_int(p->a, "seed"));
    if (dist->rank == 0 && p->ckpt)
        printf("weights: %.2f GB from %s in %.2f s (%.2f GB/s)\n", p->ckpt->bytes_copied * 1e-9, tesc(p->ckpt->dir),
               p->ckpt->seconds, p->ckpt->seconds > 0 ? p->ckpt->bytes_copied * 1e-9 / p->ckpt->seconds : 0.0);
    if (dist->rank == 0)
        printf("ready in %.2f s (compile, %.2f GiB allocated%s, %s and KV cache initialised)\n", lwb_now() - t0,
               gib(mem_total(real)), dist->world_size > 1 ? " per rank" : "", p->ckpt ? "weights loaded" : "weights");
    fflush(stdout);
}

// --collect-calibration: every iteration of the loop (warm-up included, numbered from 0), every
// MoE layer, every rank, as a calibration file written by rank 0. `mine` holds this rank's
// choices: one iteration's (MoE layers, per), or with a replay every replayed iteration's.
static void run_collect(struct run_plan *p, struct lwb_runner *r, const int32_t *mine, size_t per, int nmoe) {
    const int world = p->shard.world_size, n = p->warmup + p->timed;
    const int kinds = p->replay.niter ? p->replay.nslots : 1; // distinct iterations this rank holds
    const size_t count = (size_t)kinds * nmoe * per;
    int32_t *all = xmalloc(sizeof(int32_t) * (count * (size_t)world + 1));
    if (p->shard.comm) {
        CUdeviceptr dm = dev_alloc(count * 4, "collected routing"), da = dev_alloc(count * 4 * (size_t)world, "collected routing");
        CU_CHECK(lwb_cu.cuMemcpyHtoDAsync(dm, mine, count * 4, r->s));
        comm_allgather(p->shard.comm, dm, da, count, ncclInt32, r->s, "gathering every rank's routing");
        stream_wait(r->s, 120, "the routing gather");
        CU_CHECK(lwb_cu.cuMemcpyDtoH(all, da, count * 4 * (size_t)world));
        dev_free(dm, count * 4), dev_free(da, count * 4 * (size_t)world);
    } else {
        memcpy(all, mine, count * 4);
    }
    if (p->shard.rank == 0) {
        struct lwb_calib c = {.path = xstrdup(p->collect), .world_size = world};
        c.nrec = xcalloc((size_t)world, sizeof *c.nrec);
        c.rec = xcalloc((size_t)world, sizeof *c.rec);
        for (int q = 0; q < world; q++) {
            c.nrec[q] = n;
            c.rec[q] = xcalloc((size_t)n, sizeof *c.rec[q]);
            for (int g = 0; g < n; g++) {
                struct lwb_calib_record *rec = &c.rec[q][g];
                const int kind = p->replay.niter ? replay_slot(&p->replay, g) : 0;
                rec->iteration = g, rec->n = nmoe;
                rec->e = xcalloc((size_t)nmoe, sizeof *rec->e);
                for (int l = 0, m = 0; l < p->nlayers; l++) {
                    if (!p->fam->route_layer(p->f, l)) continue;
                    rec->e[m] = (struct lwb_calib_entry){p->layer_index[l], p->model.n_experts, (int)(per / p->model.top_k),
                                                         p->model.top_k,
                                                         all + (size_t)q * count + ((size_t)kind * nmoe + m) * per};
                    m++;
                }
            }
        }
        calib_save(p->collect, &c);
        printf("routing of %d iterations x %d MoE layers%s collected into %s\n", n, nmoe, world > 1 ? " of every rank" : "",
               tesc(p->collect));
        calib_free(&c);
    }
    free(all);
}

// After a problem's loop, when asked: one more forward reads back the expert ids every MoE layer
// used; with a replay (and --replay-verify-metadata) they must be the recorded ids of the
// iteration loaded last; with --collect-calibration they are written.
static void run_routing_after(struct run_plan *p, struct lwb_runner *r, int pi) {
    const bool verify = p->replay.niter && arg_bool(p->a, "replay_verify_metadata");
    if (!verify && !p->collect) return;
    const size_t per = (size_t)p->problems[pi].tokens * p->model.top_k;
    int nmoe = 0;
    for (int l = 0; l < p->nlayers; l++) nmoe += p->fam->route_layer(p->f, l);
    int32_t *used = xmalloc(sizeof(int32_t) * (per * (size_t)nmoe + 1));
    runner_route_forward(r, pi, per, used);
    if (verify) {
        const int slot = replay_slot(&p->replay, p->warmup + p->timed - 1);
        const int32_t *want = p->replay.ids + (size_t)slot * nmoe * per;
        for (size_t j = 0; j < per * (size_t)nmoe; j++) {
            if (used[j] == want[j]) continue;
            int m = (int)(j / per), layer = -1;
            for (int l = 0, at = 0; l < p->nlayers && layer < 0; l++)
                if (p->fam->route_layer(p->f, l) && at++ == m) layer = p->layer_index[l];
            lwb_fatal("replay check: layer %d, token %zu, choice %zu used expert %d, and %s records %d for iteration "
                      "%lld; the MoE did not run the replayed routing (a defect in lwb)",
                      layer, j % per / (size_t)p->model.top_k, j % (size_t)p->model.top_k, used[j],
                      tesc(arg_str(p->a, "replay_file_path")), want[j], p->replay.start + slot);
        }
    }
    if (p->collect) run_collect(p, r, p->replay.niter ? p->replay.ids : used, per, nmoe);
    free(used);
}

// The profiled region: the reference's markers, then every problem (warm-up forward with checks,
// the timed iterations, the statistics line).
static void run_time(struct run_plan *p, struct lwb_dist *dist, struct lwb_runner *r, bool ranked,
                     struct lwb_stats *stats) {
    struct lwb_args *a = p->a;
    bool profiling = arg_bool(a, "profile") && !profile_under_nsys();
    if (dist->rank == 0 && arg_bool(a, "profile") && profile_under_nsys())
        printf("running under Nsight Systems (%s): lwb's own profiler stays off\n", profile_nsys_signal());
    struct lwb_profiler prof;
    if (profiling) profile_init(&prof, &r->dev, dist->rank, dist->world_size);
    CU_CHECK(lwb_cu.cuProfilerStart());
    if (profiling) profile_begin(&prof);
    json_t *aj = args_json(a);
    json_object_set_new(aj, "weight_format", json_string(lwb_wformat_names[p->wformat])); // what auto resolved to
    marker_json("args", aj);
    double *us = xcalloc((size_t)p->timed, sizeof *us);
    for (int i = 0; i < p->nproblems; i++) {
        char text[160], act[256];
        iteration_text(&p->problems[i], dist->world_size, text, sizeof text);
        marker_json("problem_spec", problem_spec_json(&p->problems[i]));
        runner_setup_problem(r, i);
        if (r->replay) { // the warm-up forward (and a graph's capture) see the first replayed iteration
            if (i == 0) p->fam->route_stage(p->f, r->replay, r->s);
            p->fam->route_replay(p->f, 0, r->s);
        }
        snprintf(act, sizeof act, "the warm-up forward of %s", text);
        dist_activity(dist, act, 0);
        runner_warmup_check(r, i, p->layer_index);
        snprintf(act, sizeof act, "the timed iterations of %s", text);
        dist_activity(dist, act, 0);
        runner_time_problem(r, i, p->graph, p->warmup, p->timed, us, ranked ? fault_on_iteration : NULL);
        char why[256];
        if (!p->fam->verify(p->f, i, why, sizeof why)) lwb_fatal("problem %s: %s", text, why);
        stats[i] = stats_compute(us, p->timed);
        print_problem_line(dist->rank, &p->problems[i], stats[i]);
        run_routing_after(p, r, i);
    }
    free(us);
    CU_CHECK(lwb_cu.cuCtxSynchronize());
    if (profiling) profile_end(&prof);
    CU_CHECK(lwb_cu.cuProfilerStop());
    if (profiling) {
        const char *dir = arg_str(a, "profile_dir");
        if (lwb_mkdirs(dir) != 0) lwb_fatal("cannot create the profile folder %s: %s", dir, strerror(errno));
        const char *path = profile_write(&prof, dir);
        if (path && dist->rank == 0)
            printf("profile: %s%s (lwb parse --file-path it)\n", tesc(path),
                   dist->world_size > 1 ? " and one per rank beside it" : "");
        profile_free(&prof);
    }
}

// --nsys: the nsys binary (LWB_NSYS, else the PATH), or one line naming the fix.
static char *nsys_path(void) {
    const char *env = getenv("LWB_NSYS");
    if (env && *env) {
        if (access(env, X_OK) != 0)
            lwb_user_error("run: --nsys: LWB_NSYS=%s is not an executable (%s); point it at Nsight Systems' nsys", env,
                           strerror(errno));
        return xstrdup(env);
    }
    const char *path = getenv("PATH");
    for (const char *p = path ? path : ""; *p;) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        struct lwb_str s = {0};
        str_printf(&s, "%.*s/nsys", (int)n, p);
        struct stat st;
        if (n && access(s.s, X_OK) == 0 && stat(s.s, &st) == 0 && S_ISREG(st.st_mode)) return s.s;
        str_free(&s);
        p += n + (end != NULL);
    }
    lwb_user_error("run: --nsys needs Nsight Systems: nsys is not on the PATH; install it, add it to the PATH, or set "
                   "LWB_NSYS=/path/to/nsys");
}

// --nsys: this rank re-runs itself under Nsight Systems with the reference's run.sh flags, its
// report named by rank (DIR/report_npN_rankR.nsys-rep); the command line loses --nsys,
// --gpu-metrics, --backtrace and --np (a rank started by --np finds its place in the variables
// set here, as under a launcher). Does not return.
static void run_under_nsys(const struct lwb_args *a, const struct lwb_dist *d, int argc, char **argv) {
    char *nsys = nsys_path();
    const char *dir = arg_str(a, "profile_dir");
    if (lwb_mkdirs(dir) != 0) lwb_fatal("cannot create the profile folder %s: %s", dir, strerror(errno));
    char exe[PATH_MAX], out[PATH_MAX + 64], num[4][32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) lwb_fatal("--nsys: cannot find lwb's own executable: %s", strerror(errno));
    exe[n] = 0;
    snprintf(out, sizeof out, "%s/report_np%d_rank%d.nsys-rep", dir, d->world_size, d->rank);
    if (d->launched) { // a rank of --np: tell the re-run which one
        snprintf(num[0], sizeof num[0], "%d", d->rank), setenv("RANK", num[0], 1);
        snprintf(num[1], sizeof num[1], "%d", d->world_size), setenv("WORLD_SIZE", num[1], 1);
        snprintf(num[2], sizeof num[2], "%d", d->local_rank), setenv("LOCAL_RANK", num[2], 1);
        snprintf(num[3], sizeof num[3], "%d", d->master.port), setenv("MASTER_PORT", num[3], 1);
        setenv("MASTER_ADDR", d->master.addr, 1);
        setenv("LWB_NP_RANK", "1", 1); // the --np parent serves the rendezvous, not this rank
        // A launcher's own variables (a world of one around --np) would outrank RANK and WORLD_SIZE.
        static const char *const launcher[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                                               "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "PMIX_RANK",
                                               "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"};
        for (size_t i = 0; i < LWB_ARRAY_LEN(launcher); i++) unsetenv(launcher[i]);
    }
    char gpu[32];
    snprintf(gpu, sizeof gpu, "%d", (int)arg_int(a, "device") + LWB_MAX(d->local_rank, 0));
    const char *head[] = {nsys, "profile", "-t", "cuda,nvtx", "--cpuctxsw", "none", "--cuda-event-trace", "false",
                          "--cuda-graph-trace", "node", "-c", "cudaProfilerApi", "--capture-range-end", "stop", "-o",
                          out, "--force-overwrite", "true"};
    const char **av = xcalloc(LWB_ARRAY_LEN(head) + 8 + (size_t)argc + 1, sizeof *av);
    int k = 0;
    for (size_t i = 0; i < LWB_ARRAY_LEN(head); i++) av[k++] = head[i];
    if (arg_bool(a, "backtrace")) av[k++] = "--cudabacktrace", av[k++] = "all";
    else av[k++] = "-s", av[k++] = "none";
    if (arg_bool(a, "gpu_metrics"))
        av[k++] = "--gpu-metrics-devices", av[k++] = gpu, av[k++] = "--gpu-metrics-frequency", av[k++] = "10000";
    av[k++] = exe, av[k++] = "run";
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        static const char *const drop[] = {"nsys", "gpu-metrics", "backtrace", "np"}; // with --no- and =value forms
        bool dropped = false;
        for (size_t j = 0; j < LWB_ARRAY_LEN(drop) && !dropped && str_starts(s, "--"); j++) {
            const char *name = s + 2 + (str_starts(s, "--no-") ? 3 : 0);
            const size_t n = strlen(drop[j]);
            dropped = !strncmp(name, drop[j], n) && (name[n] == 0 || name[n] == '=');
            if (dropped && j == 3 && name[n] == 0) i++; // --np N
        }
        if (!dropped) av[k++] = s;
    }
    av[k] = NULL;
    if (d->rank == 0) printf("running under Nsight Systems: %s\n", tesc(out));
    fflush(stdout), fflush(stderr);
    execv(nsys, (char *const *)av);
    lwb_fatal("--nsys: cannot run %s: %s", nsys, strerror(errno));
}

static int cmd_run(int argc, char **argv) {
    struct lwb_args a;
    if (!run_options(&a, argc, argv)) return 0;
    const bool dry = arg_bool(&a, "dry_run");

    // Ranks. Under --np the parent checks every rank's plan first (bad input is one line, once),
    // then forks the ranks and never returns; each rank continues here.
    struct lwb_dist dist;
    bool launch;
    run_ranks(&a, &dist, &launch);
    struct run_plan p;
    if (launch) {
        for (int r = 0; r < dist.world_size; r++) {
            run_plan_build(&p, &a, a.pos[0], r, dist.world_size, true);
            replay_free(&p.replay); // each rank plans its own again
        }
        dist_launch(&dist, dist.world_size, dry, dry);
    }
    lwb_proc.rank = dist.rank, lwb_proc.world_size = dist.world_size;
    if (arg_bool(&a, "nsys")) run_under_nsys(&a, &dist, argc, argv);
    if (dist_fault(dist.rank, "plan")) lwb_user_error("a test fault: rank %d fails while planning", dist.rank);

    // Plan (this rank's share), then the rendezvous: every rank's plan must be the same.
    const bool ranked = launch || dist.world_size > 1;
    run_plan_build(&p, &a, a.pos[0], dist.rank, dist.world_size, ranked);
    if (ranked) {
        json_t *pj = run_plan_json(&p, args_json(&a));
        dist_join(&dist, pj, dry);
        json_decref(pj);
    }
    if (dist_fault(dist.rank, "exit")) lwb_fatal("a test fault: rank %d exits after the rendezvous", dist.rank);
    if (dist.rank == 0 && p.wnote[0]) printf("%s\n", tesc(p.wnote));
    if (dist.rank == 0 && arg_set(&a, "moe_backend"))
        printf("moe_backend %s is recorded; lwb runs its own MoE kernels\n", tesc(arg_str(&a, "moe_backend")));

    struct lwb_runner r = {.fam = p.fam, .f = p.f, .nlayers = p.nlayers, .problems = p.problems,
                           .nproblems = p.nproblems, .world_size = dist.world_size, .mods_problem = -1,
                           .replay = p.replay.niter ? &p.replay : NULL};
    if (dist.rank == 0 && p.replay.niter)
        printf("routing replayed from %s: recorded iterations %lld..%lld (%d), cycled over the %d iterations of each "
               "problem's loop, %d MoE layers x %d tokens%s\n",
               tesc(arg_str(&a, "replay_file_path")), p.replay.start, p.replay.stop, p.replay.niter, p.warmup + p.timed,
               p.replay.nlayers, p.replay.tokens, dist.world_size > 1 ? " per rank (each rank its own records)" : "");
    struct lwb_mem m;
    if (dry) {
        const struct lwb_gpuspec *named = gpuspec_find(arg_set(&a, "gpu") ? arg_str(&a, "gpu") : "H100");
        r.dev = dry_device(named);
        run_plan_memory(&p, &r.dev, &m);
        print_plan(&p, &m, &r.dev, named);
        mem_check_fits(&m, (size_t)(named->mem_gib * 1073741824.0) - ((size_t)2 << 30), named->name);
        printf("the plan fits in %s%s\n", named->name, dist.world_size > 1 ? " (this rank)" : "");
        fflush(stdout);
        dist_finish(&dist);
        return 0;
    }

    dist_activity(&dist, "opening the device", 0);
    run_device(&p, &dist, &r, &m);
    struct lwb_comm comm = {0};
    if (ranked) {
        comm_init(&comm, &dist);
        p.shard.comm = &comm; // the family reads the shard through the plan
    }
    dist_activity(&dist, "compiling, allocating and initialising", 0);
    struct lwb_mem real;
    struct lwb_kreqs reqs = {0};
    run_build(&p, &dist, &r, &real, &reqs);
    struct lwb_stats *stats = xcalloc((size_t)p.nproblems, sizeof *stats);
    run_time(&p, &dist, &r, ranked, stats);
    run_report(&p, &r, stats, p.shard.comm);
    if (arg_set(&a, "dump")) p.fam->dump(p.f, 0, r.s, arg_str(&a, "dump"));
    outputs_commit(); // --output-json and the dump, once all of them are complete
    dist_activity(&dist, "finishing", 0);
    if (p.shard.comm) {
        stream_wait(r.s, 60, "the last collectives");
        comm_destroy(&comm);
    }
    dist_finish(&dist);
    free(stats), free(reqs.r);
    mem_free_all(&real);
    return 0;
}

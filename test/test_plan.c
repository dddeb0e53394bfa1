// test_plan.c: `lwb run` without a GPU: the run plan (problems, defaults, errors), the memory
// plan, the kernels a plan asks for (they must compile), statistics, the NVTX texts, the
// roofline costs, and the dump's mapping from checkpoint names to lwb's weights.
#include "test_common.h"

// Parse a command line (after "run") plus its config into rank `rank` of `world`'s plan. argv
// must outlive the plan.
static void plan_from_rank(struct run_plan *p, struct lwb_args *a, int argc, char **argv, int rank, int world) {
    args_init(a, "run", run_opts, (int)LWB_ARRAY_LEN(run_opts));
    args_parse(a, &run_help, argc, argv, 1, "CONFIG.yaml");
    config_load(a, a->pos[0]);
    args_apply_defaults(a);
    run_plan_build(p, a, a->pos[0], rank, world, world > 1);
}
static void plan_from(struct run_plan *p, struct lwb_args *a, int argc, char **argv) {
    plan_from_rank(p, a, argc, argv, 0, 1);
}
static struct ds_family *fam_of(struct run_plan *p) { return p->f; }

static void test_gen_defaults(void **state) {
    (void)state;
    struct run_plan p;
    struct lwb_args a;
    char *argv[] = {"configs/config_gen.yaml"};
    plan_from(&p, &a, 1, argv);
    assert_false(p.ctx);
    assert_int_equal(p.nproblems, 1);
    assert_int_equal(p.problems[0].batch, 128);
    assert_int_equal(p.problems[0].qlen, 1);
    assert_int_equal(p.problems[0].past, 8193);
    assert_int_equal(p.problems[0].kv_len, 8194);
    assert_int_equal(p.max_batch, 128);     // largest batch
    assert_int_equal(p.max_seq_len, 9220);  // from the YAML
    assert_int_equal(p.max_num_tokens, 4096);
    assert_true(p.graph);
    assert_int_equal(p.warmup, 20);
    assert_int_equal(p.timed, 100);
    assert_int_equal(p.nlayers, 1);
    struct ds_family *f = fam_of(&p);
    assert_int_equal(f->layers[0].index, 5);
    assert_true(f->layers[0].moe);
    assert_int_equal(p.routing[0].method, LWB_BALANCE_BALANCED);
    assert_int_equal(f->d.hidden, 7168);
    assert_int_equal(f->d.experts, 256);
    assert_int_equal(f->d.experts_local, 256);
    assert_true(fabsf(f->d.sm_scale - 0.13523f) < 1e-4f);
    assert_string_equal(p.fam->name, "DeepSeek-V3");
}

// The reference's product order: batch outermost, balance ratio innermost.
static void test_problem_order(void **state) {
    (void)state;
    struct run_plan p;
    struct lwb_args a;
    char *argv[] = {"configs/config_gen.yaml", "--batch-size", "1,4", "--seq-len-q", "1,2", "--seq-len-kv-cache",
                    "100,200", "--balance-method", "ImbalancedExperts", "--balance-ratio", "0,0.5"};
    plan_from(&p, &a, (int)LWB_ARRAY_LEN(argv), argv);
    assert_int_equal(p.nproblems, 16);
    assert_int_equal(p.problems[0].batch, 1);
    assert_int_equal(p.problems[1].ratio * 10, 5);
    assert_int_equal(p.problems[2].past, 200);
    assert_int_equal(p.problems[4].qlen, 2);
    assert_int_equal(p.problems[8].batch, 4);
    assert_int_equal(p.max_batch, 4);
    assert_int_equal(p.max_num_tokens, 4096); // from the YAML, not recomputed
    for (int i = 0; i < 16; i++) assert_true(p.problems[i].has_ratio);
}

struct plan_case {
    int argc;
    char *argv[16];
};
static void plan_child(void *arg) {
    struct plan_case *c = arg;
    struct run_plan p;
    struct lwb_args a;
    plan_from(&p, &a, c->argc, c->argv);
}
static struct child_result *plan_exit(int code, int argc, ...) {
    static struct child_result r;
    struct plan_case c = {.argc = argc};
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) c.argv[i] = va_arg(ap, char *);
    va_end(ap);
    run_child(plan_child, &c, &r);
    if (r.status != code) fprintf(stderr, "exit %d, stderr: %s\n", r.status, r.err);
    assert_int_equal(r.status, code);
    assert_int_equal(count_lines(r.err), 1);
    return &r;
}

static void test_plan_errors(void **state) {
    (void)state;
    struct child_result *r;
    r = plan_exit(2, 3, "configs/config_gen.yaml", "--load-format", "AUTO");
    assert_non_null(strstr(r->err, "AUTO"));
    r = plan_exit(2, 5, "configs/config_gen.yaml", "--batch-size", "200", "--max-batch-size", "128");
    assert_non_null(strstr(r->err, "larger than --max-batch-size 128"));
    r = plan_exit(2, 3, "configs/config_gen.yaml", "--seq-len-kv-cache", "9300");
    assert_non_null(strstr(r->err, "--max-seq-len 9220"));
    r = plan_exit(2, 3, "configs/config_ctx.yaml", "--batch-size", "3");
    assert_non_null(strstr(r->err, "--max-num-tokens 20480"));
    r = plan_exit(2, 3, "configs/config_gen.yaml", "--balance-method", "ImbalancedRanks");
    assert_non_null(strstr(r->err, "needs a --balance-ratio"));
    r = plan_exit(2, 3, "configs/config_gen.yaml", "--tokens-per-block", "48");
    assert_non_null(strstr(r->err, "power of two"));
    r = plan_exit(2, 3, "configs/config_gen.yaml", "--layer-indices", "61");
    r = plan_exit(2, 3, "configs/config_gen.yaml", "--model", "deepseek-ai/DeepSeek-R2");
    assert_non_null(strstr(r->err, "deepseek-ai/DeepSeek-R1"));
    r = plan_exit(2, 3, "configs/config_gen.yaml", "--balance-ratio", "1.5");
    assert_non_null(strstr(r->err, "outside 0..1"));
}

// The dry memory plan: weights exactly the checkpoint's bytes of the layer plus the transposed
// W_UK lwb keeps; the KV cache as many blocks as the slots need.
static void test_memory_plan(void **state) {
    (void)state;
    struct run_plan p;
    struct lwb_args a;
    char *argv[] = {"configs/config_gen.yaml"};
    plan_from(&p, &a, 1, argv);
    struct lwb_device dev = dry_device(gpuspec_find("H100"));
    struct lwb_mem m;
    run_plan_memory(&p, &dev, &m);
    const struct ds_dims *d = &fam_of(&p)->d;
    // R1 runs its checkpoint's FP8 by default; lwb adds the bf16 copy of kv_b_proj it dequantises.
    assert_int_equal(p.wformat, LWB_WF_FP8);
    assert_true(d->fp8);
    size_t w_uk = (size_t)d->heads * d->kv_lora * d->nope * 2;
    size_t kv_b16 = (size_t)d->heads * (d->nope + d->v) * d->kv_lora * 2;
    // The gate/up pairs keep a scale per 64-row half: twice the checkpoint's 2 x 16 x 56 per expert.
    size_t gu_scales = (size_t)(256 + 1) * 2 * 16 * 56 * 4;
    size_t want = model_layer_weight_bytes(&p.model, 5, LWB_WF_FP8) + w_uk + kv_b16 + gu_scales;
    assert_true(m.bytes[MEM_WEIGHTS] >= want);
    if (m.bytes[MEM_WEIGHTS] - want >= 32 * LWB_MEM_ALIGN) fail_msg("weights %zu, want %zu", m.bytes[MEM_WEIGHTS], want);
    {
        struct run_plan pb;
        struct lwb_args ab;
        char *argv_b[] = {"configs/config_gen.yaml", "--weight-dtype", "bf16"};
        plan_from(&pb, &ab, 3, argv_b);
        struct lwb_mem mb;
        run_plan_memory(&pb, &dev, &mb);
        size_t want_b = model_layer_weight_bytes(&pb.model, 5, LWB_WF_BF16) + w_uk;
        assert_true(mb.bytes[MEM_WEIGHTS] >= want_b && mb.bytes[MEM_WEIGHTS] - want_b < 32 * LWB_MEM_ALIGN);
        assert_true(mb.bytes[MEM_WEIGHTS] > 1.9 * m.bytes[MEM_WEIGHTS]); // fp8 holds about half the bytes
    }
    size_t kv = (size_t)128 * LWB_CEIL_DIV(9220, 32) * 32 * 576 * 2;
    assert_int_equal(m.bytes[MEM_KV], LWB_CEIL_DIV(kv, LWB_MEM_ALIGN) * LWB_MEM_ALIGN);
    // A real plan must allocate identically: a second dry pass gives the same numbers.
    struct lwb_mem m2;
    run_plan_memory(&p, &dev, &m2);
    assert_memory_equal(m.bytes, m2.bytes, sizeof m.bytes);
}

// Every kernel a plan asks for compiles (GEN and CTX, dense and MoE layers, MTP).
static void test_plan_kernels_compile(void **state) {
    (void)state;
    // R1 in its FP8 and in bf16; the reduced test model (dense layer 0, MoE layer 2) in fp8.
    char *gen[] = {"configs/config_gen.yaml", "--layer-indices", "2,3", "--seq-len-q", "1,4", "--weight-dtype", "auto"};
    char *ctx[] = {"configs/config_ctx.yaml", "--layer-indices", "2,3", "--seq-len-kv-cache", "0,100", "--weight-dtype", "auto"};
    char *gen16[] = {"configs/config_gen.yaml", "--layer-indices", "2,3", "--seq-len-q", "1,4", "--weight-dtype", "bf16"};
    char *small_gen[] = {"configs/config_gen.yaml", "--model", "test/gpu/small_deepseek", "--layer-indices", "0,2",
                         "--weight-dtype", "fp8"};
    char *small_ctx[] = {"configs/config_ctx.yaml", "--model", "test/gpu/small_deepseek", "--layer-indices", "0,2",
                         "--weight-dtype", "fp8"};
    // DeepSeek-V3.2's reduced model (index_topk 64: the scores and the selection run) in both phases.
    char *v32_gen[] = {"configs/config_gen.yaml", "--model", "test/gpu/small_deepseek_v32", "--layer-indices", "0,2",
                       "--tokens-per-block", "64"};
    char *v32_ctx[] = {"configs/config_ctx.yaml", "--model", "test/gpu/small_deepseek_v32", "--layer-indices", "0,2",
                       "--tokens-per-block", "64"};
    char **cases[] = {gen, ctx, gen16, small_gen, small_ctx, v32_gen, v32_ctx};
    struct lwb_jit j;
    jit_init(&j, "sm_90a", false);
    j.no_cache = true;
    for (int c = 0; c < 7; c++) {
        struct run_plan p;
        struct lwb_args a;
        plan_from(&p, &a, 7, cases[c]);
        struct lwb_device dev = dry_device(gpuspec_find("H100"));
        struct lwb_mem m;
        run_plan_memory(&p, &dev, &m);
        struct lwb_kreqs reqs = {0};
        p.fam->requests(p.f, &reqs);
        jit_build(&j, reqs.r, reqs.n);
        for (int i = 0; i < reqs.n; i++) assert_true(reqs.r[i]->cubin_size > 0);
        free(reqs.r);
    }
}

static void test_stats(void **state) {
    (void)state;
    double v[10] = {10, 1, 9, 2, 8, 3, 7, 4, 6, 5};
    struct lwb_stats s = stats_compute(v, 10);
    assert_true(fabs(s.mean - 5.5) < 1e-12);
    assert_true(fabs(s.median - 5.5) < 1e-12);
    assert_true(fabs(s.p90 - 9.1) < 1e-12); // numpy.percentile([1..10], 90)
    assert_true(s.min == 1 && s.max == 10);
    double one = 3;
    s = stats_compute(&one, 1);
    assert_true(s.p90 == 3 && s.median == 3);
}

static void test_nvtx_texts(void **state) {
    (void)state;
    char t[128];
    struct lwb_problem p = {.batch = 128, .qlen = 1, .past = 8193};
    iteration_text(&p, 1, t, sizeof t);
    assert_string_equal(t, "b=128 s=1 past=8193 NP1");
    p = (struct lwb_problem){.batch = 32, .qlen = 1, .past = 2090, .has_ratio = true, .ratio = 0.5};
    iteration_text(&p, 4, t, sizeof t);
    assert_string_equal(t, "b=32 s=1 past=2090 balance=0.5 NP4");
    json_t *j = problem_spec_json(&p);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(s, "{\"batch_size\":32,\"seq_len_q\":1,\"seq_len_kv_cache\":2090,\"balance_ratio\":0.5}");
    free(s);
    json_decref(j);
    // The args marker carries the reference's list spellings and warmup_times (the parser reads it).
    struct run_plan pl;
    struct lwb_args a;
    char *argv[] = {"configs/config_gen.yaml", "--warmup-times", "3"};
    plan_from(&pl, &a, 3, argv);
    json_t *args = args_json(&a);
    assert_int_equal(json_integer_value(json_object_get(args, "warmup_times")), 3);
    assert_true(json_is_array(json_object_get(args, "batch_size_list")));
    assert_true(json_is_null(json_array_get(json_object_get(args, "balance_ratio_list"), 0)));
    json_decref(args);
}

// Floors: the MLA of a decode problem is memory-bound by its weights and the cache; the MoE
// by the active experts' weights.
static void test_costs(void **state) {
    (void)state;
    struct run_plan p;
    struct lwb_args a;
    char *argv[] = {"configs/config_gen.yaml", "--weight-dtype", "bf16"};
    plan_from(&p, &a, 3, argv);
    const struct ds_dims *d = &fam_of(&p)->d;
    double rows_of_rank[1];
    struct ds_route_stats rt = {.rows = 128 * 8, .active = 256, .rows_of_rank = rows_of_rank};
    struct ds_costs c = ds_cost(d, &p.shard, &p.problems[0], true, &rt);
    // The cache, plus fused_a, q_b, kv_b and o_proj weights (374,210,560 bytes), plus activations.
    double cache = 128.0 * 8194 * 576 * 2, weights = 2.0 * (2112 * 7168 + 24576 * 1536 + 32768 * 512 + 7168 * 16384);
    assert_true(c.mla.bytes > cache + weights && c.mla.bytes < cache + weights + 30e6);
    double experts = 256.0 * 3 * 7168 * 2048 * 2;
    assert_true(c.experts.bytes > experts && c.experts.bytes < experts * 1.01);
    assert_true(c.experts.sent == 0 && c.mla.sent == 0); // one rank: nothing on the links
    // Every active expert's weights; half the experts, half the bytes (about).
    rt.active = 128;
    struct ds_costs h = ds_cost(d, &p.shard, &p.problems[0], true, &rt);
    assert_true(fabs(h.experts.bytes / c.experts.bytes - 0.5) < 0.01);
    assert_true(fabs(ds_active_experts_expected(d, 128) - 256 * (1 - pow(1 - 8.0 / 256, 128))) < 1e-9);
    assert_true(c.mla.flops8 == 0 && c.experts.flops8 == 0);
    // FP8: the projections' weights at one byte (and a scale per block), their FLOPs on the fp8
    // tensor cores; kv_b stays bf16, attention's FLOPs bf16.
    {
        struct run_plan p8;
        struct lwb_args a8;
        char *argv8[] = {"configs/config_gen.yaml"};
        plan_from(&p8, &a8, 1, argv8);
        const struct ds_dims *d8 = &fam_of(&p8)->d;
        assert_true(d8->fp8);
        rt.active = 256;
        struct ds_costs c8 = ds_cost(d8, &p8.shard, &p8.problems[0], true, &rt);
        double w8 = (2112.0 * 7168 + 24576 * 1536 + 7168 * 16384) * (1 + 4.0 / 16384) + 2.0 * 32768 * 512;
        assert_true(c8.mla.bytes > cache + w8 && c8.mla.bytes < cache + w8 + 30e6);
        double e8 = 256.0 * 3 * 7168 * 2048 * (1 + 4.0 / 16384);
        assert_true(c8.experts.bytes > e8 && c8.experts.bytes < e8 * 1.01);
        assert_true(fabs(c8.experts.flops8 - c.experts.flops) < 1 && c8.experts.flops == 0);
        assert_true(c8.mla.flops > 0 && c8.mla.flops8 > 0 && fabs(c8.mla.flops + c8.mla.flops8 - c.mla.flops) < 1);
        assert_true(c8.gate.flops8 == 0); // the router stays bf16
    }
    // The module list: the reference's ranges, nested as mark_ranges() nests them, in TensorRT-LLM's
    // layer order: attention first (the input comes normalised), the post-attention norm, the MoE,
    // then the next layer's input_layernorm with the residual add.
    struct lwb_device dev = dry_device(gpuspec_find("H100"));
    struct lwb_mem m;
    run_plan_memory(&p, &dev, &m);
    struct lwb_modules ml = {0};
    p.fam->modules(p.f, 0, 0, false, &ml);
    const char *names[] = {"MLA", NULL, "Deepseekv3MoE", "GatedMLP", "DeepseekV3Gate", "MoE", NULL};
    const int depth[] = {0, 0, 0, 1, 1, 1, 0};
    assert_int_equal(ml.n, 7);
    for (int i = 0; i < ml.n; i++) {
        if (names[i]) assert_string_equal(ml.m[i].name, names[i]);
        else assert_null(ml.m[i].name);
        assert_int_equal(ml.m[i].depth, depth[i]);
    }
    assert_int_equal(module_end(&ml, 2), 6);
    assert_null(ml.m[2].fn);
    assert_true(ml.m[6].fn == ds_mod_next_norm);
    // Balanced routing of 128 tokens x 8 over 256 experts: every expert active, 4 rows each.
    assert_true(fabs(ml.m[5].cost.bytes - c.experts.bytes) < 1);
    free(ml.m);
    ml = (struct lwb_modules){0};
    // FP8: the first layer quantises its input (the problem's) for the a-projections first.
    {
        struct run_plan p8;
        struct lwb_args a8;
        char *argv8[] = {"configs/config_gen.yaml", "--layer-indices", "5,6"};
        plan_from(&p8, &a8, 3, argv8);
        run_plan_memory(&p8, &dev, &m);
        p8.fam->modules(p8.f, 0, 0, false, &ml);
        assert_true(ml.m[0].fn == ds_mod_input_quant && !ml.m[0].name);
        assert_string_equal(ml.m[1].name, "MLA");
        p8.fam->modules(p8.f, 0, 1, false, &ml);
        assert_string_equal(ml.m[0].name, "MLA");
        free(ml.m);
    }
}

// DeepSeek-V3.2: the plan of a 32k GEN problem (sparse attention, the indexer's kernels, both
// caches, floors with the indexer's fp8 scores and the selected pairs only), its weights, and what
// it refuses.
// The reference README's Nemotron-H commands (layers 4, 5, 6: Mamba2, attention, MoE; recurrent
// states in float16), GEN and CTX: layers, memory (state caches to the byte), kernels (compiled),
// module ranges and floors.
static void test_nemotron_plan(void **state) {
    (void)state;
    const char *nemo = "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16";
    struct lwb_jit j;
    jit_init(&j, "sm_90a", false);
    j.no_cache = true;
    for (int ctx = 0; ctx < 2; ctx++) {
        struct run_plan p;
        struct lwb_args a;
        char *argv[] = {ctx ? "configs/config_ctx.yaml" : "configs/config_gen.yaml", "--model", (char *)nemo,
                        "--layer-indices", "4,5,6", "--mamba-ssm-cache-dtype", "float16"};
        plan_from(&p, &a, 7, argv);
        assert_string_equal(p.fam->name, "Nemotron-H");
        struct nh_family *f = p.f;
        assert_int_equal(f->layers[0].kind, LWB_LAYER_MAMBA);
        assert_int_equal(f->layers[1].kind, LWB_LAYER_ATTN);
        assert_int_equal(f->layers[2].kind, LWB_LAYER_MOE);
        assert_int_equal(f->d.mc.state_dtype, MAMBA_STATE_F16);
        assert_int_equal(f->d.proj, 10304);
        assert_int_equal(f->d.conv_dim, 6144);
        assert_int_equal(f->d.qkv, 4608);
        struct lwb_device dev = dry_device(gpuspec_find("H200"));
        struct lwb_mem m;
        run_plan_memory(&p, &dev, &m);
        const size_t slots = ctx ? 1 : 128;
        // One slot: a 64 x 64 x 128 recurrent state in fp16 (1 MiB) and 3 x 6144 conv inputs in bf16.
        assert_int_equal(mamba_state_bytes(f->d.mc), 1048576);
        assert_int_equal(mamba_conv_state_bytes(f->d.mc), 3 * 6144 * 2);
        assert_int_equal(m.bytes[MEM_STATE], LWB_CEIL_DIV(slots * 1048576, LWB_MEM_ALIGN) * LWB_MEM_ALIGN +
                                                 LWB_CEIL_DIV(slots * 3 * 6144 * 2, LWB_MEM_ALIGN) * LWB_MEM_ALIGN);
        const size_t blocks = slots * LWB_CEIL_DIV(9220, 32); // 2 x 2 heads x 32 tokens x 128 per block
        assert_int_equal(m.bytes[MEM_KV], LWB_CEIL_DIV(blocks * 2 * 2 * 32 * 128 * 2, LWB_MEM_ALIGN) * LWB_MEM_ALIGN);
        struct lwb_kreqs reqs = {0};
        p.fam->requests(p.f, &reqs);
        bool mamba = false, gqa = false, relu2 = false, route = false;
        for (int i = 0; i < reqs.n; i++) {
            mamba |= !strcmp(reqs.r[i]->family, "mamba");
            gqa |= !strcmp(reqs.r[i]->family, "gqa");
            relu2 |= !strcmp(reqs.r[i]->family, "gemm") && strstr(reqs.r[i]->label, "_e4") != NULL;
            route |= !strcmp(reqs.r[i]->family, "moe_route");
        }
        assert_true(mamba && gqa && relu2 && route);
        jit_build(&j, reqs.r, reqs.n);
        for (int i = 0; i < reqs.n; i++) assert_true(reqs.r[i]->cubin_size > 0);
        free(reqs.r);
        // Module ranges, as TensorRT-LLM's layer-wise marks name them.
        struct lwb_modules mods = {0};
        const char *want[3][4] = {{"Mamba2Mixer"}, {"Attention"}, {"NemotronHMOE", "DeepseekV3Gate", "MoE"}};
        for (int l = 0; l < 3; l++) {
            p.fam->modules(p.f, 0, l, false, &mods);
            int k = 0;
            for (int i = 0; i < mods.n; i++)
                if (mods.m[i].name) assert_string_equal(mods.m[i].name, want[l][k++]);
            assert_int_equal(k, l == 2 ? 3 : 1);
            assert_null(mods.m[0].name); // the residual add and norm: outside every range
            if (l == 0 && !ctx) // GEN: every recurrent state read and written once (128 x 1 MiB each way)
                assert_true(mods.m[1].cost.bytes > 2.0 * 128 * 1048576);
            if (l == 1 && ctx) // CTX attention: the causal pairs' FLOPs (4 x 128 per pair and head)
                assert_true(mods.m[1].cost.flops > 4.0 * 128 * 32 * 8193.0 * 8194 / 2);
        }
        free(mods.m);
    }
    struct child_result *r;
    r = plan_exit(2, 5, "configs/config_gen.yaml", "--model", (char *)nemo, "--weight-dtype", "fp8");
    assert_non_null(strstr(r->err, "bf16"));
    r = plan_exit(2, 5, "configs/config_gen.yaml", "--model", (char *)nemo, "--load-format", "AUTO");
    assert_non_null(strstr(r->err, "DUMMY"));
    // What the Mamba2 kernels cannot run is refused when the run is planned, naming the field.
    char *dir = make_tmpdir();
    json_t *cfg = json_loads(embedded_find("configs/models/nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.json")->data, 0,
                             NULL);
    json_object_set_new(cfg, "ssm_state_size", json_integer(100));
    char *cpath = lwb_path_join(dir, "config.json");
    assert_int_equal(json_dump_file(cfg, cpath, 0), 0);
    json_decref(cfg);
    r = plan_exit(2, 3, "configs/config_gen.yaml", "--model", dir);
    assert_non_null(strstr(r->err, "ssm_state_size must be 32, 64, 128 or 256"));
    free(cpath);
    r = plan_exit(2, 3, "configs/config_gen.yaml", "--mamba-ssm-cache-dtype", "float16");
    assert_non_null(strstr(r->err, "no Mamba2 or linear-attention layers"));
}

// The reference README's Qwen3-Next commands on one GPU as one rank of NP=2 (--scaled-from 2,
// attention TP): layers 6 (Gated DeltaNet + MoE) and 7 (gated attention + MoE), float16 states;
// GEN b=512 and CTX b=4 (which needs --max-num-tokens 32772, as the reference's own check).
static void test_qwen3next_plan(void **state) {
    (void)state;
    const char *qn = "Qwen/Qwen3-Next-80B-A3B-Instruct";
    struct lwb_jit j;
    jit_init(&j, "sm_90a", false);
    j.no_cache = true;
    for (int ctx = 0; ctx < 2; ctx++) {
        struct run_plan p;
        struct lwb_args a;
        char *argv[] = {ctx ? "configs/config_ctx.yaml" : "configs/config_gen.yaml", "--model", (char *)qn,
                        "--layer-indices", "6,7", "--no-enable-attention-dp", "--scaled-from", "2",
                        "--mamba-ssm-cache-dtype", "float16", "--batch-size", ctx ? "4" : "512", "--max-num-tokens",
                        "32772"};
        plan_from(&p, &a, 14, argv);
        assert_string_equal(p.fam->name, "Qwen3-Next");
        struct qn_family *f = p.f;
        assert_int_equal(f->layers[0].kind, LWB_LAYER_LINEAR);
        assert_int_equal(f->layers[1].kind, LWB_LAYER_FULL);
        // One rank of two: half of every head count, of the experts and of the shared expert.
        assert_int_equal(f->d.heads, 8);
        assert_int_equal(f->d.kv_heads, 1);
        assert_int_equal(f->d.lc.k_heads, 8);
        assert_int_equal(f->d.lc.v_heads, 16);
        assert_int_equal(f->d.experts, 256);
        assert_int_equal(f->d.shared_inter, 256);
        assert_int_equal(f->d.rope_dim, 64);
        assert_int_equal(f->d.lc.state_dtype, MAMBA_STATE_F16);
        assert_int_equal(f->d.proj, 2 * 8 * 128 + 2 * 16 * 128 + 2 * 16);
        assert_int_equal(f->d.qkv, (2 * 8 + 2) * 256);
        struct lwb_device dev = dry_device(gpuspec_find("H200"));
        struct lwb_mem m;
        run_plan_memory(&p, &dev, &m);
        const size_t slots = ctx ? 4 : 512;
        // One slot: a 16 x 128 x 128 recurrent state in fp16 (512 KiB) and 3 x 4096 conv inputs.
        assert_int_equal(gdn_state_bytes(f->d.lc), 524288);
        assert_int_equal(gdn_conv_state_bytes(f->d.lc), 3 * 4096 * 2);
        assert_int_equal(m.bytes[MEM_STATE], LWB_CEIL_DIV(slots * 524288, LWB_MEM_ALIGN) * LWB_MEM_ALIGN +
                                                 LWB_CEIL_DIV(slots * 3 * 4096 * 2, LWB_MEM_ALIGN) * LWB_MEM_ALIGN);
        struct lwb_kreqs reqs = {0};
        p.fam->requests(p.f, &reqs);
        bool gdn = false, gqa = false, softmax = false;
        for (int i = 0; i < reqs.n; i++) {
            gdn |= !strcmp(reqs.r[i]->family, "gdn");
            gqa |= !strcmp(reqs.r[i]->family, "gqa") && strstr(reqs.r[i]->label, "norm_gate") != NULL;
            softmax |= !strcmp(reqs.r[i]->family, "moe_route") && strstr(reqs.r[i]->label, "softmax") != NULL;
        }
        assert_true(gdn && gqa && softmax);
        jit_build(&j, reqs.r, reqs.n);
        for (int i = 0; i < reqs.n; i++) assert_true(reqs.r[i]->cubin_size > 0);
        free(reqs.r);
        struct lwb_modules mods = {0};
        const char *mixer[2] = {"Qwen3NextGatedDeltaNet", "Attention"};
        for (int l = 0; l < 2; l++) {
            p.fam->modules(p.f, 0, l, false, &mods);
            const char *want[] = {mixer[l], "Qwen3NextSparseMoeBlock", "GatedMLP", "MoE"};
            int k = 0;
            for (int i = 0; i < mods.n; i++)
                if (mods.m[i].name) assert_string_equal(mods.m[i].name, want[k++]);
            assert_int_equal(k, 4);
            if (l == 0 && !ctx) // GEN: every recurrent state read and written once (512 x 512 KiB each way)
                assert_true(mods.m[1].cost.bytes > 2.0 * 512 * 524288);
        }
        free(mods.m);
    }
    // The reference's own limit: 4 x 8193 tokens are more than config_ctx.yaml's max_num_tokens.
    struct child_result *r = plan_exit(2, 12, "configs/config_ctx.yaml", "--model", (char *)qn, "--layer-indices", "6,7",
                                       "--no-enable-attention-dp", "--scaled-from", "2", "--mamba-ssm-cache-dtype",
                                       "float16", "--batch-size", "4");
    assert_non_null(strstr(r->err, "--max-num-tokens 20480"));
}

static void test_v32_plan(void **state) {
    (void)state;
    struct run_plan p;
    struct lwb_args a;
    char *argv[] = {"configs/config_gen.yaml", "--model", "deepseek-ai/DeepSeek-V3.2-Exp", "--tokens-per-block", "64",
                    "--seq-len-kv-cache", "32769", "--max-seq-len", "32800"};
    plan_from(&p, &a, 9, argv);
    const struct ds_dims *d = &fam_of(&p)->d;
    assert_int_equal(d->idx_topk, 2048);
    assert_true(d->fp8); // the checkpoint's FP8
    struct lwb_device dev = dry_device(gpuspec_find("H100"));
    struct lwb_mem m;
    run_plan_memory(&p, &dev, &m);
    const size_t blocks = (size_t)128 * LWB_CEIL_DIV(32800, 64);
    assert_int_equal(m.bytes[MEM_KV], LWB_CEIL_DIV(blocks * 64 * 576 * 2, LWB_MEM_ALIGN) * LWB_MEM_ALIGN);
    assert_int_equal(m.bytes[MEM_IKV], LWB_CEIL_DIV(blocks * 64 * 132, LWB_MEM_ALIGN) * LWB_MEM_ALIGN);
    // The kernels: the indexer's, the top-k, the sparse attention (no dense attention).
    struct lwb_kreqs reqs = {0};
    p.fam->requests(p.f, &reqs);
    bool idx = false, topk = false, sparse = false, dense = false;
    for (int i = 0; i < reqs.n; i++) {
        const struct lwb_kreq *r = reqs.r[i];
        idx |= !strcmp(r->family, "dsa_index");
        topk |= !strcmp(r->family, "dsa_topk");
        if (!strcmp(r->family, "mla_decode")) {
            if (strstr(r->label, "mla_sparse_h128_p64_k2048")) sparse = true;
            else dense = true;
        }
        assert_null(strstr(r->family, "mla_prefill"));
    }
    assert_true(idx && topk && sparse && !dense);
    free(reqs.r);
    // Floors: the scores of every visible pair on the fp8 tensor cores, attention over 2048
    // selected keys per token, the indexer cache read once.
    const struct lwb_problem *q = &p.problems[0];
    double rows_of_rank[1];
    struct ds_route_stats rt = {.rows = 128 * 8, .active = 256, .rows_of_rank = rows_of_rank};
    struct ds_costs c = ds_cost(d, &p.shard, q, true, &rt);
    const double pairs = 128.0 * 32770, logits = 2.0 * 64 * 128 * pairs;
    assert_true(fabs(dsa_pairs(128, 1, 32770) - pairs) < 1);
    // fp8: the scores and the projections (fused q_a/kv_a, q_b, o_proj, the indexer's wq_b and wk).
    const double proj = 2.0 * 128 * (2112.0 * 7168 + 24576.0 * 1536 + 7168.0 * 16384 + 8192.0 * 1536 + 128.0 * 7168);
    assert_true(fabs(c.mla.flops8 - logits - proj) < 1e3);
    const double attn = 2.0 * 128 * 128 * 2048 * (576 + 512);
    // bf16: the attention, W_UK and W_UV (128 tokens x 128 heads x 512 x 128 each), weights_proj.
    const double bf = attn + 2 * (2.0 * 128 * 128 * 512 * 128) + 2.0 * 128 * 64 * 7168;
    assert_true(fabs(c.mla.flops - bf) < 1e3);
    assert_true(c.mla.bytes > 128.0 * 32770 * 132 + 4.0 * pairs * 2);
    // The dense V3 layer at the same context: its attention's FLOPs about 16x the sparse's.
    struct run_plan pd;
    struct lwb_args ad;
    char *argv_d[] = {"configs/config_gen.yaml", "--model", "deepseek-ai/DeepSeek-V3", "--tokens-per-block", "64",
                      "--seq-len-kv-cache", "32769", "--max-seq-len", "32800"};
    plan_from(&pd, &ad, 9, argv_d);
    struct ds_costs cd = ds_cost(&fam_of(&pd)->d, &pd.shard, &pd.problems[0], true, &rt);
    assert_true(cd.mla.flops > 15 * attn);
    // The weights of a layer: the indexer's five tensors (wq_b and wk with block scales).
    struct lwb_weight *w;
    int n = model_layer_weights(&p.model, 5, LWB_WF_FP8, &w), found = 0;
    for (int i = 0; i < n; i++)
        if (strstr(w[i].name, "self_attn.indexer.")) {
            found++;
            if (strstr(w[i].name, "wq_b.weight_scale_inv")) assert_true(w[i].shape[0] == 64 && w[i].shape[1] == 12);
            if (strstr(w[i].name, "k_norm.bias")) assert_string_equal(w[i].dtype, "F32");
            if (strstr(w[i].name, "weights_proj")) assert_string_equal(w[i].dtype, "BF16");
        }
    assert_int_equal(found, 7);
    free(w);
    // The scores in chunks of bounded memory: the chunks tile every token in order, each within the
    // budget's rows, whole requests or pieces of one request. A 32k prefill: two chunks.
    static const int shapes[][3] = {{1, 32769, 16320}, {128, 1, 16320}, {5, 40, 64}, {3, 129, 64}, {7, 3, 64}};
    for (size_t k = 0; k < LWB_ARRAY_LEN(shapes); k++) {
        const int nb = shapes[k][0], ql = shapes[k][1], rows_max = shapes[k][2];
        long long next = 0;
        struct dsa_chunk ch;
        int i = 0;
        for (; dsa_chunk_at(nb, ql, rows_max, i, &ch); i++) {
            assert_int_equal((long long)ch.req0 * ql + ch.q0, next);
            assert_true((long long)ch.batch * ch.nql <= rows_max);
            assert_true(ch.batch == 1 || (ch.q0 == 0 && ch.nql == ql));
            next += (long long)ch.batch * ch.nql;
            if (ch.nql < ql) assert_true(ch.q0 + ch.nql <= ql);
        }
        assert_int_equal(next, (long long)nb * ql);
        if (k == 0) assert_int_equal(i, 3);
    }
    assert_int_equal(dsa_chunk_rows(32832, DS_SCORES_BUDGET), 16320);
    // Refusals: cache blocks that do not hold whole 64-token tiles; weak scaling with attention TP.
    struct child_result *r = plan_exit(2, 3, "configs/config_gen.yaml", "--model", "deepseek-ai/DeepSeek-V3.2-Exp");
    assert_non_null(strstr(r->err, "--tokens-per-block 64"));
    r = plan_exit(2, 8, "configs/config_gen.yaml", "--model", "deepseek-ai/DeepSeek-V3.2-Exp", "--tokens-per-block", "64",
                  "--scaled-from", "8", "--no-enable-attention-dp");
    assert_non_null(strstr(r->err, "Indexer TP for weak scaling"));
    r = plan_exit(2, 13, "configs/config_ctx.yaml", "--model", "deepseek-ai/DeepSeek-V3.2-Exp", "--tokens-per-block",
                  "64", "--batch-size", "2", "--seq-len-q", "40000", "--max-num-tokens", "80000", "--max-seq-len", "40100");
    assert_non_null(strstr(r->err, "65535 query tokens"));
}

// GEMM tiles on a 132-multiprocessor device: few tiles get narrower columns, then K splits; the
// LWB_GEMM_TILES override replaces the choice of the product it names.

// An fp8 LWB_GEMM_TILES entry for product "x" that must be refused (exit 2, one line with `want`).
struct tiles_case {
    const char *spec;
    int k, epi;
};
static void tiles_child(void *arg) {
    const struct tiles_case *t = arg;
    struct gemm_config c;
    gemm_tiles_from_spec(t->spec, "x", 4096, t->k, t->epi, false, 232448, true, &c);
}
static void expect_fp8_tiles_error(const char *spec, int k, int epi, const char *want) {
    static struct child_result r;
    struct tiles_case t = {spec, k, epi};
    run_child(tiles_child, &t, &r);
    if (r.status != 2 || !strstr(r.err, want)) fprintf(stderr, "%s: exit %d: %s\n", spec, r.status, r.err);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, want));
}
static void test_gemm_tiles(void **state) {
    (void)state;
    const int sms = 132, smem = 232448;
    struct gemm_config c = gemm_choose_config(128, 256, 7168, 1, false, 0, sms, smem); // decode router
    assert_int_equal(c.bm, 64), assert_int_equal(c.bn, 64), assert_int_equal(c.splitk, 16);
    c = gemm_choose_config(8193, 256, 7168, 1, false, 0, sms, smem); // prefill router: 130 tiles, no split
    assert_int_equal(c.bn, 128), assert_int_equal(c.splitk, 1);
    c = gemm_choose_config(8193, 24576, 1536, 1, false, 0, sms, smem); // q_b prefill
    assert_int_equal(c.bm, 128), assert_int_equal(c.bn, 256), assert_int_equal(c.stages, 3);
    c = gemm_choose_config(128, 2112, 7168, 1, false, 0, sms, smem); // fused_a decode: 33 tiles, 4 splits
    assert_int_equal(c.bn, 64), assert_int_equal(c.splitk, 4);
    struct gemm_config t = {0};
    assert_false(gemm_tiles_from_spec(NULL, "gate", 256, 7168, GEMM_EPI_F32, false, smem, false, &t));
    assert_false(gemm_tiles_from_spec("gate2=64,64,4,16", "gate", 256, 7168, GEMM_EPI_F32, false, smem, false, &t));
    assert_true(gemm_tiles_from_spec("q_b=128,256,3,1;gate=64,32,6,8", "gate", 256, 7168, GEMM_EPI_F32, false, smem, false, &t));
    assert_int_equal(t.bm, 64), assert_int_equal(t.bn, 32), assert_int_equal(t.stages, 6);
    assert_int_equal(t.splitk, 8), assert_int_equal(t.min_blocks, 2);
    // fp8: tiles at most 128 wide, 128 wide for the SwiGLU of 64-row halves; splits of whole K blocks.
    c = gemm_choose_config_fp8(8192, 24576, 1536, 1, false, 0, GEMM_EPI_BF16, sms, smem);
    assert_int_equal(c.bm, 128), assert_int_equal(c.bn, 128), assert_true(c.overlap);
    c = gemm_choose_config_fp8(1024, 4096, 7168, 1, true, 4, GEMM_EPI_SWIGLU64, sms, smem); // decode experts
    assert_int_equal(c.bm, 64), assert_int_equal(c.bn, 128);
    assert_int_equal(c.min_blocks, 1); // 2 x 64 accumulators and addresses spill in 128 registers
    assert_int_equal(c.stages, 8), assert_true(c.overlap);
    assert_true(gemm_tiles_from_spec("experts13=64,128,4,1", "experts13", 4096, 7168, GEMM_EPI_SWIGLU64, true, smem, true, &t));
    assert_int_equal(t.bn, 128), assert_int_equal(t.min_blocks, 1), assert_true(t.overlap);
    expect_fp8_tiles_error("x=128,256,3,1", 7168, GEMM_EPI_BF16, "fp8 tiles are at most 128 wide");
    expect_fp8_tiles_error("x=128,64,3,1", 7168, GEMM_EPI_SWIGLU64, "the fp8 SwiGLU needs 128-wide tiles");
    expect_fp8_tiles_error("x=128,128,3,3", 512, GEMM_EPI_BF16, "SPLITK must divide the K blocks");
    // Kept partials: no workspace, the output holds every slab.
    struct lwb_gemm g;
    c = gemm_choose_config(128, 256, 7168, 1, false, 0, sms, smem);
    gemm_plan_config(&g, "gate", 128, 256, 7168, 1, GEMM_EPI_F32, false, c);
    assert_int_equal(gemm_workspace_bytes(&g), 16 * 128 * 256 * 4);
    gemm_keep_partials(&g);
    assert_int_equal(gemm_workspace_bytes(&g), 0);
    assert_int_equal(gemm_output_bytes(&g), 16 * 128 * 256 * 4);
}

// Every checkpoint tensor of a layer maps to lwb's weights with the right number of bytes.
static void test_dump_mapping(void **state) {
    (void)state;
    struct run_plan p;
    struct lwb_args a;
    for (int fmt = 0; fmt < 2; fmt++) {
        char *argv[] = {"configs/config_gen.yaml", "--layer-indices", "2,5", "--weight-dtype", fmt ? "fp8" : "bf16"};
        plan_from(&p, &a, 5, argv);
        struct lwb_mem m;
        mem_init(&m, true);
        struct ds_family *f = fam_of(&p);
        assert_int_equal(f->d.fp8, fmt);
        for (int l = 0; l < 2; l++) {
            struct ds_layer *L = &f->layers[l];
            ds_layer_alloc(&m, L, &f->d, 4);
            struct lwb_weight *w;
            int n = model_layer_weights(&p.model, L->index, p.wformat, &w);
            for (int i = 0; i < n; i++) {
                struct dump_src s = dump_weight_src(L, &f->d, &w[i]);
                if ((uint64_t)s.rows * s.row_bytes != w[i].bytes)
                    fail_msg("%s: %lld rows of %zu bytes for %" PRIu64 " bytes", w[i].name, s.rows, s.row_bytes,
                             w[i].bytes);
                assert_true(s.base != 0);
            }
            free(w);
        }
    }
}

static void test_gpuspec(void **state) {
    (void)state;
    assert_string_equal(gpuspec_find("H200")->key, "H200");
    assert_string_equal(gpuspec_find("NVIDIA H100 80GB HBM3")->key, "H100");
    assert_null(gpuspec_find("A100"));
    struct lwb_device d = {.sm_count = 100, .sm_clock_khz = 1500000};
    snprintf(d.name, sizeof d.name, "NVIDIA Future");
    struct lwb_gpuspec g = gpuspec_for_device(&d);
    assert_true(fabs(g.bf16_tflops - 4096.0 * 100 * 1.5e9 / 1e12) < 1e-6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gen_defaults),  cmocka_unit_test(test_problem_order),
        cmocka_unit_test(test_plan_errors),   cmocka_unit_test(test_memory_plan),
        cmocka_unit_test(test_plan_kernels_compile), cmocka_unit_test(test_stats),
        cmocka_unit_test(test_nvtx_texts),    cmocka_unit_test(test_costs),
        cmocka_unit_test(test_dump_mapping),  cmocka_unit_test(test_gpuspec),
        cmocka_unit_test(test_gemm_tiles),    cmocka_unit_test(test_v32_plan),
        cmocka_unit_test(test_nemotron_plan), cmocka_unit_test(test_qwen3next_plan),
    };
    return cmocka_run_group_tests_name("plan", tests, NULL, NULL);
}

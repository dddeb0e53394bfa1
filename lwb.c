// lwb: layer-wise benchmarks for LLM inference.
//
// This file is the table of contents: every module is a header under src/ and is included here
// once, so lwb builds as one translation unit. Each include says what it defines.
#include "src/util.h"        // defines: lwb_proc, lwb_user_error, lwb_fatal, LWB_BUG, lwb_str, hashing
#include "src/files.h"       // defines: input_open, input_read, output_check, output_open, outputs_commit
#include "build/embedded.h"  // defines: lwb_embedded_files (kernel templates, model presets, assets)
#include "src/opts.h"        // defines: lwb_opt, lwb_args, args_parse, opts_print_help
#include "src/dl.h"          // defines: dl_open, dl_sym
#include "src/cuda.h"        // defines: lwb_cu, CU_CHECK, lwb_device, device_open, dev_alloc
#include "src/nvrtc.h"       // defines: lwb_nvrtc, NVRTC_CHECK
#include "src/nccl.h"        // defines: lwb_nccl, NCCL_CHECK
#include "src/cupti.h"       // defines: lwb_cupti, CUPTI_CHECK
#include "src/nvtx.h"        // defines: lwb_nvtx_push, lwb_nvtx_pop, lwb_nvtx_range (NVTX + own profiler)
#include "src/jit.h"         // defines: lwb_kreq, lwb_jit, jit_build, jit_summary
#include "src/safetensors.h" // defines: safetensors writer (--dump) and reader
#include "src/model.h"       // defines: lwb_model, model_load (HF config.json / presets)
#include "src/ckpt.h"        // defines: lwb_ckpt, ckpt_open, ckpt_expect, ckpt_copy (--load-format AUTO)
#include "src/routing.h"     // defines: balance methods (expert selection on the CPU)
#include "src/calib.h"       // defines: lwb_calib (calibration files: read, write), lwb_replay
#include "src/layers/rmsnorm.h" // defines: rmsnorm_choose_config, rmsnorm_request, rmsnorm_enqueue
#include "src/gpuspec.h"     // defines: datasheet peaks of known GPUs
#include "src/memplan.h"     // defines: lwb_mem, mem_alloc (dry or real), mem_check_fits
#include "src/layers/init.h"  // defines: init_request, init_fill_bf16 (seeded device fills)
#include "src/layers/gemm.h"  // defines: lwb_operand, lwb_gemm, gemm_plan(_fp8), gemm_bind(_fp8), gemm_enqueue
#include "src/layers/quant.h" // defines: quant_request, quant_enqueue (bf16 -> fp8 1 x 128)
#include "src/layers/mla_decode.h" // defines: absorbed MLA attention over the paged cache
#include "src/layers/mla_prefill.h" // defines: causal MLA attention of the context phase
#include "src/layers/mla_rope.h" // defines: MLA rotary embedding, cache writes and gathers
#include "src/layers/moe_route.h" // defines: DeepSeek-V3 routing, the expert permutation, the all-to-all
#include "src/layers/dsa.h" // defines: DeepSeek-V3.2's indexer: key/query preparation, fp8 scores
#include "src/layers/dsa_topk.h" // defines: DeepSeek-V3.2's indexer top-k (radix select per token)
#include "src/layers/mamba.h" // defines: Mamba2 mixer kernels (conv1d, SSD chunked scan, state update, gated norm)
#include "src/layers/gdn.h" // defines: Gated DeltaNet kernels (conv1d, chunked delta rule, recurrent step, gated norm)
#include "src/layers/gqa.h" // defines: grouped-query attention over a paged KV cache (prefill, decode)
#include "src/dist.h"        // defines: rank variables, rendezvous, watchdog, --np launcher, lwb_comm
#include "src/family.h"      // defines: lwb_problem, lwb_shard, lwb_module, lwb_family (the table)
#include "src/layers/deepseek.h" // defines: the DeepSeek-V3 family (MLA, MoE, MLP, ranks, costs)
#include "src/layers/deepseek_load.h" // defines: ds_check_checkpoint, ds_load_layer (checkpoint -> lwb layouts)
#include "src/kernels.h"     // defines: lwb_kfamilies
#include "src/profile.h"     // defines: built-in profiler (CUPTI -> nsys-shaped SQLite)
#include "src/trace.h"       // defines: profile reader (nsys or lwb SQLite: kernels, NVTX, attribution)
#include "src/report.h"      // defines: breakdown writers (stdout, CSV, JSON, HTML, trace JSON)
#include "src/cmd_kernels.h" // defines: cmd_kernels
#include "src/cmd_version.h" // defines: cmd_version
#include "src/config.h"      // defines: run_opts, config_load (YAML + flags)
#include "src/layers/deepseek_dump.h" // defines: ds_dump (--dump of the DeepSeek family)
#include "src/layers/nemotron.h" // defines: the Nemotron-H family (Mamba2, attention, MoE layers)
#include "src/layers/qwen3next.h" // defines: the Qwen3-Next family (Gated DeltaNet, gated attention, MoE)
#include "src/families.h"    // defines: lwb_families, family_for_model
#include "src/runner.h"      // defines: problem loop, warm-up checks, graphs, timing, module timings
#include "src/cmd_run.h"     // defines: cmd_run, run_plan_build
#include "src/cmd_parse.h"   // defines: cmd_parse
#include "src/parse_e2e.h"   // defines: parse_e2e (lwb parse --e2e: layer timelines of a serving run)
#include "src/cmd_correlate.h" // defines: cmd_correlate

// Libraries a command may load (for `lwb help CMD`; each command loads them only when it gets
// to the work that needs them, so `--help` and `--dry-run` never do).
enum { NEED_CUDA = 1, NEED_NVRTC = 2, NEED_NCCL = 4, NEED_CUPTI = 8 };

struct lwb_cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const struct lwb_cmd_help *help;
    const struct lwb_opt *opts;
    int nopts;
    unsigned needs; // NEED_*
};

static int cmd_help(int argc, char **argv);

static const struct lwb_cmd_help help_help = {"help", "[COMMAND]", "Print help for lwb or a command.",
                                              NULL};

#define LWB_CMD(name, fn, help, opts, needs) {name, fn, help, opts, (int)LWB_ARRAY_LEN(opts), needs}
static const struct lwb_cmd lwb_cmds[] = {
    LWB_CMD("run", cmd_run, &run_help, run_opts, NEED_CUDA | NEED_NVRTC | NEED_NCCL | NEED_CUPTI),
    LWB_CMD("parse", cmd_parse, &parse_help, parse_opts, 0),
    LWB_CMD("correlate", cmd_correlate, &correlate_help, correlate_opts, 0),
    LWB_CMD("kernels", cmd_kernels, &kernels_help, kernels_opts, NEED_NVRTC),
    {"version", cmd_version, &version_help, NULL, 0, NEED_CUDA | NEED_NVRTC | NEED_NCCL | NEED_CUPTI},
    {"help", cmd_help, &help_help, NULL, 0, 0},
};

static const struct lwb_cmd *cmd_find(const char *name) {
    for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_cmds); i++)
        if (!strcmp(lwb_cmds[i].name, name)) return &lwb_cmds[i];
    return NULL;
}

static void print_usage(FILE *f) {
    fprintf(f, "usage: lwb COMMAND [options]\n\n"
               "lwb %s: layer-wise benchmarks for LLM inference. It builds selected decoder layers of\n"
               "a real model at the exact shapes you ask for, runs them on the GPU with kernels\n"
               "compiled for those shapes, times them, and turns profiles into per-module reports.\n\n"
               "commands:\n",
            LWB_VERSION);
    for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_cmds); i++)
        fprintf(f, "  %-10s %s\n", lwb_cmds[i].name, lwb_cmds[i].help->summary);
    fprintf(f, "\n'lwb help COMMAND' or 'lwb COMMAND --help' describes a command.\n"
               "Main job: lwb run configs/config_gen.yaml\n");
}

static const char *needs_text(unsigned needs) {
    static char buf[128];
    buf[0] = 0;
    const char *names[] = {"the CUDA driver", "NVRTC", "NCCL (more than one rank)",
                           "CUPTI (built-in profiler)"};
    for (int i = 0; i < 4; i++)
        if (needs & (1u << i)) {
            if (buf[0]) strcat(buf, ", ");
            strcat(buf, names[i]);
        }
    return buf;
}

__attribute__((noreturn)) static void unknown_command(const char *name) {
    const char *names[LWB_ARRAY_LEN(lwb_cmds)];
    for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_cmds); i++) names[i] = lwb_cmds[i].name;
    const char *near = lwb_nearest(name, names, LWB_ARRAY_LEN(names));
    if (near)
        lwb_user_error("unknown command '%s'; did you mean '%s'? (lwb --help lists the commands)", name,
                       near);
    lwb_user_error("unknown command '%s' (lwb --help lists the commands)", name);
}

static int cmd_help(int argc, char **argv) {
    if (argc == 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        opts_print_help(stdout, &help_help, NULL, 0);
        return 0;
    }
    if (argc == 0) {
        print_usage(stdout);
        return 0;
    }
    if (argc > 1) lwb_user_error("help: takes one command name (got %d arguments)", argc);
    const struct lwb_cmd *c = cmd_find(argv[0]);
    if (!c) unknown_command(argv[0]);
    opts_print_help(stdout, c->help, c->opts, c->nopts);
    if (c->needs) printf("\nat run time: %s\n", needs_text(c->needs));
    return 0;
}

#ifndef LWB_NO_MAIN
int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return LWB_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "-h") || !strcmp(name, "--help")) return cmd_help(0, NULL);
    if (!strcmp(name, "--version")) name = "version";
    else if (name[0] == '-') lwb_user_error("unknown option '%s' before the command (lwb --help)", name);
    const struct lwb_cmd *c = cmd_find(name);
    if (!c) unknown_command(name);
    lwb_proc_init(c->name);
    return c->fn(argc - 2, argv + 2);
}
#endif

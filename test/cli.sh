#!/usr/bin/env bash
# cli.sh: the command line as a user meets it: help, version, errors (one line, right exit
# code, a suggestion), and `lwb run` on a machine without a GPU. Ends with "N passed, N failed".
# shellcheck source=test/lib_cli.sh
source "$(dirname "$0")/lib_cli.sh"

expect 0 "help" -- "$lwb" --help
has out "usage: lwb COMMAND"; has out "correlate"; has out "lwb run configs/config_gen.yaml"
done_case "lwb --help lists the commands"

expect 2 "no command" -- "$lwb"
has err "usage: lwb COMMAND"
done_case "lwb alone prints the usage and exits 2"

expect 2 "typo" -- "$lwb" rn
has err "did you mean 'run'"; one_line_err
done_case "unknown command suggests the nearest"

expect 2 "bad flag" -- "$lwb" run configs/config_gen.yaml --bach-size 3
has err "did you mean '--batch-size'"; one_line_err
done_case "unknown flag suggests the nearest"

for cmd in run parse correlate kernels version help; do
    expect 0 "help $cmd" -- "$lwb" help $cmd
    has out "usage: lwb $cmd"
    done_case "lwb help $cmd"
    expect 0 "$cmd --help" -- "$lwb" $cmd --help
    has out "usage: lwb $cmd"
    done_case "lwb $cmd --help"
done

expect 0 "version" -- "$lwb" version
has out "lwb 0.1.0"; has out "nvrtc"; has out "driver"
done_case "lwb version prints the libraries (and says which are missing)"

# Commands that need no GPU never load the CUDA libraries.
expect 0 "no libraries" -- env LWB_CUDA_PATH=/nonexistent/libcuda.so.1 \
    LWB_NVRTC_PATH=/nonexistent/libnvrtc.so "$lwb" kernels --list
has out "rmsnorm"
done_case "kernels --list loads no CUDA library"

# Config errors: one line naming the file, the line and the key.
printf 'model: deepseek-ai/DeepSeek-R1\nbatch_sizes: 4\n' >"$tmp/bad1.yaml"
expect 2 "unknown key" -- "$lwb" run "$tmp/bad1.yaml"
has err "bad1.yaml:2: unknown key 'batch_sizes'; did you mean 'batch_size'?"; one_line_err
done_case "unknown YAML key is named with file and line"

printf 'batch_size: [1, abc]\n' >"$tmp/bad2.yaml"
expect 2 "bad value" -- "$lwb" run "$tmp/bad2.yaml"
has err "bad2.yaml:1: 'batch_size' must be a positive integer or a list of them (got \"[1, abc]\")"
one_line_err
done_case "bad YAML value is named with file, line and what is expected"

printf 'batch_size: [1\n' >"$tmp/bad3.yaml"
expect 2 "bad yaml" -- "$lwb" run "$tmp/bad3.yaml"
has err "not valid YAML"; one_line_err
done_case "malformed YAML is one line"

expect 2 "missing config" -- "$lwb" run "$tmp/none.yaml"
has err "cannot open the config file"; one_line_err
done_case "missing config file"

# --dry-run needs no GPU: the plan, the kernels, memory by category and floors.
expect 0 "dry run gen" -- "$lwb" run configs/config_gen.yaml --dry-run
has out "layers: 5 (MLA + MoE)"; has out "mla_decode_h128_p32_q1"; has out "KV cache"; has out "Deepseekv3MoE"
has out "the plan fits in NVIDIA H100"
done_case "lwb run configs/config_gen.yaml --dry-run prints the plan"

expect 0 "dry run ctx" -- "$lwb" run configs/config_ctx.yaml --dry-run --gpu H200
has out "context phase"; has out "mla_prefill_h128"; has out "floors on NVIDIA H200"
done_case "lwb run configs/config_ctx.yaml --dry-run --gpu H200"

expect 0 "tiles override" -- env LWB_GEMM_TILES="gate=64,64,6,16" "$lwb" run configs/config_gen.yaml --dry-run
has out "gemm_gate_bm64_bn64_s6_k448_x16_e1"
done_case "LWB_GEMM_TILES replaces a product's tiles"

expect 2 "bad tiles" -- env LWB_GEMM_TILES="gate=64,48,6,16" "$lwb" run configs/config_gen.yaml --dry-run
has err "LWB_GEMM_TILES: gate=64,48,6,16"; has err "BN must be"; one_line_err
done_case "an impossible LWB_GEMM_TILES entry is refused in one line"

expect 2 "plan too big" -- "$lwb" run configs/config_gen.yaml --dry-run --layer-indices 3,4,5,6,7,8,9,10
has err "GiB short"; one_line_err
done_case "a plan larger than the GPU is refused, saying by how much"

expect 0 "list models" -- "$lwb" run --list-models
has out "deepseek-ai/DeepSeek-R1"; has out "nvidia/DeepSeek-R1-0528-FP4-v2"
done_case "lwb run --list-models"

# The main job on a machine without a GPU: one clear line, exit 1, no crash.
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    echo "skip lwb run without a GPU (this machine has one)"
else
    expect 1 "run without GPU" -- "$lwb" run configs/config_gen.yaml
    one_line_err; has err "lwb: "
    done_case "lwb run configs/config_gen.yaml without a GPU fails with one line"
fi

cli_finish

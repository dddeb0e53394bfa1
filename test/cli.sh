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

# DeepSeek-V3.2 at 32k: the indexer's kernels, the sparse attention, both caches, the floors.
expect 0 "dry run v3.2" -- "$lwb" run configs/config_gen.yaml --model deepseek-ai/DeepSeek-V3.2-Exp \
    --tokens-per-block 64 --seq-len-kv-cache 32769 --max-seq-len 32800 --dry-run --gpu H200
has out "DeepSeek Sparse Attention"; has out "dsa_index_p64_q1_w2"; has out "dsa_topk_k2048"
has out "mla_sparse_h128_p64_k2048"; has out "KV cache"; has out "indexer cache"; has out "floors on NVIDIA H200"
done_case "lwb run --model deepseek-ai/DeepSeek-V3.2-Exp --dry-run (32k context)"
expect 2 "v3.2 page" -- "$lwb" run configs/config_gen.yaml --model deepseek-ai/DeepSeek-V3.2-Exp --dry-run
has err "--tokens-per-block 64"; one_line_err
done_case "V3.2 with 32-token cache blocks is refused, naming the fix"

# The reference README's Nemotron-H commands: Mamba2, attention and MoE layers, float16 states.
nemo=nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16
for cfg in ctx gen; do
    expect 0 "dry run nemotron $cfg" -- "$lwb" run configs/config_$cfg.yaml --model $nemo --layer-indices 4,5,6 \
        --mamba-ssm-cache-dtype float16 --dry-run --gpu H200
    has out "layers: 4 (Mamba2) 5 (attention) 6 (MoE)"
    has out "recurrent state cache in float16"
    has out "state cache"
    has out "mamba_h64_p64_g8_n128_q128_f16"
    has out "gqa_h32x2_d128"
    has out "Mamba2Mixer"
    has out "NemotronHMOE"
    done_case "lwb run configs/config_$cfg.yaml --model $nemo --layer-indices 4,5,6 --mamba-ssm-cache-dtype float16 --dry-run"
done
# The reference README's Qwen3-Next commands, as one rank of NP=2 on one GPU (--scaled-from 2).
qn=(--model Qwen/Qwen3-Next-80B-A3B-Instruct --layer-indices 6,7 --no-enable-attention-dp --scaled-from 2
    --mamba-ssm-cache-dtype float16)
expect 0 "dry run qwen3-next gen" -- "$lwb" run configs/config_gen.yaml "${qn[@]}" --batch-size 512 --dry-run --gpu H200
has out "layers: 6 (Gated DeltaNet + MoE) 7 (gated attention + MoE)"
has out "gdn_hk8_hv16_dk128_dv128_k4_f16"; has out "gqa_h8x1_d256"; has out "_softmax"
has out "Qwen3NextGatedDeltaNet"; has out "Qwen3NextSparseMoeBlock"; has out "state cache"
done_case "lwb run configs/config_gen.yaml (Qwen3-Next 6,7, --scaled-from 2) --batch-size 512 --dry-run"
expect 0 "dry run qwen3-next ctx" -- "$lwb" run configs/config_ctx.yaml "${qn[@]}" --batch-size 4 \
    --max-num-tokens 32772 --dry-run --gpu H200
has out "max 32772 tokens per forward"
done_case "lwb run configs/config_ctx.yaml (Qwen3-Next 6,7, --scaled-from 2) --batch-size 4 --max-num-tokens 32772 --dry-run"
expect 2 "qwen3-next ctx tokens" -- "$lwb" run configs/config_ctx.yaml "${qn[@]}" --batch-size 4 --dry-run
has err "--max-num-tokens 20480"; one_line_err
done_case "Qwen3-Next CTX b=4 without --max-num-tokens is refused as the reference refuses it"
expect 2 "ssm dtype on deepseek" -- "$lwb" run configs/config_gen.yaml --mamba-ssm-cache-dtype float16 --dry-run
has err "--mamba-ssm-cache-dtype"
done_case "--mamba-ssm-cache-dtype is refused for a model without recurrent state"

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

# Routing replay: the reference's calibration file, checked in the plan (no GPU).
small=(--model test/gpu/small_deepseek --layer-indices 0,1,2 --balance-method NotModified)
python3 - "$tmp/cal.json" <<'PY'
import base64, json, struct, sys, zlib
def rec(it):
    meta, raw = [], b""
    for layer in (1, 2):
        meta.append({"layer_idx": layer, "num_slots": 64, "token_selected_slots_shape": [4, 6]})
        raw += struct.pack("<24i", *[(it + layer + t * 7 + j * 9) % 64 for t in range(4) for j in range(6)])
    return {"iteration": it, "metadata": meta, "raw_data": base64.b64encode(zlib.compress(raw)).decode()}
json.dump({"world_size": 1, "all_ranks_records": [[rec(i) for i in range(30, 36)]]}, open(sys.argv[1], "w"))
PY
sed 's/^balance_method:.*/balance_method: NotModified/' configs/config_gen.yaml > "$tmp/replay.yaml"
printf 'replay_start_iter: 30\nreplay_stop_iter: 35\n' >> "$tmp/replay.yaml"
expect 0 "replay plan" -- "$lwb" run configs/config_gen.yaml "${small[@]}" --batch-size 4 --dry-run \
    --replay-file-path "$tmp/cal.json" --replay-start 31 --replay-stop 34
has out "routing replayed from $tmp/cal.json: recorded iterations 31..34 (4)"; has out "2 MoE layers x 4 tokens"
done_case "--replay-file-path is read and checked by --dry-run (README's --replay-start/--replay-stop)"

expect 2 "replay balanced" -- "$lwb" run configs/config_gen.yaml --model test/gpu/small_deepseek --layer-indices 1 \
    --batch-size 4 --dry-run --replay-file-path "$tmp/cal.json"
has err "give --balance-method NotModified"; one_line_err
done_case "a replay with a balance method is refused"

expect 2 "replay range" -- "$lwb" run configs/config_gen.yaml "${small[@]}" --batch-size 4 --dry-run \
    --replay-file-path "$tmp/cal.json" --replay-start-iter 29 --replay-stop-iter 33
has err "iterations 29 .. 33 are asked for, the file records 30 .. 35"; one_line_err
done_case "a replay range outside the file is refused naming both ranges"

expect 2 "replay half range" -- "$lwb" run configs/config_gen.yaml "${small[@]}" --batch-size 4 --dry-run \
    --replay-file-path "$tmp/cal.json" --replay-start-iter 31
has err "give both --replay-start-iter and --replay-stop-iter"; one_line_err
done_case "a replay range needs both ends"

expect 2 "replay tokens" -- "$lwb" run configs/config_gen.yaml "${small[@]}" --batch-size 8 --dry-run \
    --replay-file-path "$tmp/cal.json"
has err "iteration 30 layer 1 routes 4 tokens, this rank runs 8"; one_line_err
done_case "a replay of another shape is refused"

expect 2 "replay world" -- "$lwb" run configs/config_gen.yaml "${small[@]}" --batch-size 4 --dry-run --np 2 \
    --replay-file-path "$tmp/cal.json"
has err "recorded on 1 ranks, this run has 2"; one_line_err
done_case "a replay on another number of ranks is refused once, before the ranks start"

expect 2 "collect problems" -- "$lwb" run configs/config_gen.yaml "${small[@]}" --batch-size 4,8 \
    --collect-calibration "$tmp/out.json"
has err "--collect-calibration records one problem's routing and this run has 2"; one_line_err
done_case "--collect-calibration takes one problem"

expect 2 "collect over replay" -- "$lwb" run configs/config_gen.yaml "${small[@]}" --batch-size 4 \
    --replay-file-path "$tmp/cal.json" --collect-calibration "$tmp/./cal.json"
has err "would overwrite the file being replayed"; one_line_err
done_case "--collect-calibration cannot overwrite the replayed file"

# --nsys re-runs lwb under Nsight Systems (a stand-in nsys prints what it was given).
printf '#!/bin/sh\necho "nsys RANK=$RANK WORLD_SIZE=$WORLD_SIZE LWB_NP_RANK=$LWB_NP_RANK: $*"\n' > "$tmp/nsys"
chmod +x "$tmp/nsys"
expect 0 "nsys" -- env LWB_NSYS="$tmp/nsys" "$lwb" run configs/config_gen.yaml --nsys --batch-size 4 --profile-dir "$tmp/p"
has out "profile -t cuda,nvtx --cpuctxsw none --cuda-event-trace false --cuda-graph-trace node -c cudaProfilerApi --capture-range-end stop -o $tmp/p/report_np1_rank0.nsys-rep --force-overwrite true -s none"
has out "lwb run configs/config_gen.yaml --batch-size 4 --profile-dir $tmp/p"
done_case "--nsys runs lwb under nsys with the reference's flags and a per-rank report name"

expect 0 "nsys np" -- env LWB_NSYS="$tmp/nsys" "$lwb" run configs/config_gen.yaml --nsys --np 2 --gpu-metrics --backtrace
has out "nsys RANK=1 WORLD_SIZE=2 LWB_NP_RANK=1: profile"; has out "report_np2_rank1.nsys-rep"
has out "--cudabacktrace all --gpu-metrics-devices 1 --gpu-metrics-frequency 10000"
check "--np, --nsys and its settings are not passed on" "! grep -q -- ' --np\\| --nsys\\| --backtrace' '$tmp/out'"
done_case "--nsys --np N: each rank under its own nsys, knowing its place"

expect 2 "no nsys" -- env PATH=/usr/bin:/bin "$lwb" run configs/config_gen.yaml --nsys
has err "nsys is not on the PATH"; one_line_err
done_case "--nsys without Nsight Systems is one line naming the fix"

expect 2 "metrics without nsys" -- "$lwb" run configs/config_gen.yaml --gpu-metrics
has err "add --nsys"; one_line_err
done_case "--gpu-metrics without --nsys is refused"

expect 0 "PROFILE=0" -- env PROFILE=0 "$lwb" run configs/config_gen.yaml --dry-run --output-json "$tmp/p0.json"
done_case "PROFILE=0 is accepted"

expect 2 "collect dry" -- "$lwb" run configs/config_gen.yaml "${small[@]}" --batch-size 4 --dry-run \
    --collect-calibration "$tmp/out.json"
has err "--dry-run runs nothing"; one_line_err
done_case "--collect-calibration with --dry-run is refused"

expect 2 "verify without replay" -- "$lwb" run configs/config_gen.yaml "${small[@]}" --batch-size 4 --dry-run \
    --no-replay-verify-metadata
has err "give --replay-file-path too"; one_line_err
done_case "--replay-verify-metadata without a replay is refused"

expect 0 "replay bounds from config and command line" -- "$lwb" run "$tmp/replay.yaml" "${small[@]}" --batch-size 4 \
    --dry-run --replay-file-path "$tmp/cal.json" --replay-start 32 --replay-stop 33
has out "recorded iterations 32..33 (2)"
done_case "the command line's --replay-start/--replay-stop win over the config's replay_start_iter/replay_stop_iter"

expect 2 "nsys dry" -- "$lwb" run configs/config_gen.yaml --nsys --dry-run
has err "--dry-run runs nothing"; one_line_err
done_case "--nsys with --dry-run is refused"

expect 2 "nsys PROFILE=0" -- env PROFILE=0 LWB_NSYS="$tmp/nsys" "$lwb" run configs/config_gen.yaml --nsys
has err "PROFILE=0 turns profiling off"; one_line_err
done_case "--nsys with PROFILE=0 is refused"

expect 0 "nsys flags with values" -- env LWB_NSYS="$tmp/nsys" "$lwb" run configs/config_gen.yaml --nsys=true --backtrace=1
check "no --nsys or --backtrace passed on" "! grep -q -- ' --nsys\\| --backtrace' '$tmp/out'"
done_case "--nsys=true and --backtrace=1 are not passed to the run under nsys"

expect 2 "nsys np once" -- env PATH=/usr/bin:/bin "$lwb" run configs/config_gen.yaml --nsys --np 2
has err "nsys is not on the PATH"; one_line_err
done_case "--nsys --np 2 without nsys: one line, once"

# The main job on a machine without a GPU: one clear line, exit 1, no crash.
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    echo "skip lwb run without a GPU (this machine has one)"
else
    expect 1 "run without GPU" -- "$lwb" run configs/config_gen.yaml
    one_line_err; has err "lwb: "
    done_case "lwb run configs/config_gen.yaml without a GPU fails with one line"
fi

cli_finish

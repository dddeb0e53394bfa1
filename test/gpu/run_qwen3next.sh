#!/usr/bin/env bash
# run_qwen3next.sh: Qwen3-Next (Gated DeltaNet, gated attention, MoE) on the GPU machine.
#   test/gpu/run_qwen3next.sh OUTDIR [kernels] [layers] [speed]
# kernels: gpu_check gdn gqa moe_route (each kernel against its C reference, then its speed at
#   the README's shapes next to its floor).
# layers: dumps of layers 6 (Gated DeltaNet + MoE) and 7 (gated attention + MoE) at the real
#   dimensions of one rank under --scaled-from 2 (attention TP), checked by check_qwen3next.py
#   against transformers' Qwen3Next modules: CTX b=2 q=150 (no past), a chunked prefill (past 300),
#   GEN b=4 past 300 and MTP q=2; recurrent states in float16 (as the README runs them) and bfloat16.
# speed: the README's commands on one GPU with --scaled-from 2 (CTX b=4 q=8193 with
#   --max-num-tokens 32772; GEN b=512 past 8193), float16 states, with the roofline.
# Writes OUTDIR/qwen3next.log.
set -u
out=${1:?usage: test/gpu/run_qwen3next.sh OUTDIR [kernels] [layers] [speed]}
shift
what=" ${*:-kernels layers speed} "
mkdir -p "$out"
exec > >(tee "$out/qwen3next.log") 2>&1
export LWB_CACHE_DIR=${LWB_CACHE_DIR:-/tmp/lwb-cache}
qn=Qwen/Qwen3-Next-80B-A3B-Instruct
base=(--model $qn --layer-indices 6,7 --no-enable-attention-dp --scaled-from 2)
quick=("${base[@]}" --warmup-times 1 --run-times 2 --no-profile --balance-method NotModified)
run() { echo "\$ $*"; timeout -s KILL 400 "$@"; echo "(exit $?)"; }
lwb_quiet() { echo "\$ lwb $*"; timeout -s KILL 400 ./lwb "$@" > /tmp/run.txt 2>&1; echo "(exit $?)";
    grep -E "RANK|^  [0-9]|lwb:|^roofline|dump|error" /tmp/run.txt | head -30; }
case "$what" in *" kernels "*)
    run build/gpu_check gdn moe_route ;;
esac
case "$what" in *" layers "*)
    for args in "configs/config_ctx.yaml --batch-size 2 --seq-len-q 150 --seq-len-kv-cache 0 --mamba-ssm-cache-dtype float16" \
                "configs/config_ctx.yaml --batch-size 1 --seq-len-q 130 --seq-len-kv-cache 300 --mamba-ssm-cache-dtype float16" \
                "configs/config_gen.yaml --batch-size 4 --seq-len-kv-cache 300 --mamba-ssm-cache-dtype float16" \
                "configs/config_gen.yaml --batch-size 3 --seq-len-q 2 --seq-len-kv-cache 301 --mamba-ssm-cache-dtype bfloat16"; do
        # shellcheck disable=SC2086
        lwb_quiet run $args "${quick[@]}" --dump /tmp/dqn
        run python3 test/gpu/check_qwen3next.py /tmp/dqn; rm -rf /tmp/dqn
    done ;;
esac
case "$what" in *" speed "*)
    echo "\$ lwb run configs/config_ctx.yaml ${base[*]} --mamba-ssm-cache-dtype float16 --batch-size 4 --max-num-tokens 32772 --no-profile"
    timeout -s KILL 400 ./lwb run configs/config_ctx.yaml "${base[@]}" --mamba-ssm-cache-dtype float16 --batch-size 4 \
        --max-num-tokens 32772 --no-profile 2>&1 | tail -14
    echo "\$ lwb run configs/config_gen.yaml ${base[*]} --mamba-ssm-cache-dtype float16 --batch-size 512 --no-profile"
    timeout -s KILL 400 ./lwb run configs/config_gen.yaml "${base[@]}" --mamba-ssm-cache-dtype float16 --batch-size 512 \
        --no-profile 2>&1 | tail -14 ;;
esac

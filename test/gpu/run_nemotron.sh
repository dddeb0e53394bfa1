#!/usr/bin/env bash
# run_nemotron.sh: Nemotron-H (Mamba2, attention, MoE layers) on the GPU machine.
#   test/gpu/run_nemotron.sh OUTDIR [kernels] [layers] [speed]
# kernels: gpu_check mamba gqa (each kernel against its C reference at odd sizes, then its speed
#   at the README's shapes next to its floor) and torch's SDPA backends on the same attention
#   shapes (test/gpu/anchors_gqa.py).
# layers: dumps of layers 4, 5, 6 (Mamba2, attention, MoE) at the model's real dimensions, checked
#   by check_nemotron.py against transformers' NemotronH mixers: CTX b=2 q=300 (no past), a chunked
#   prefill (past 500), GEN b=4 past 300 and MTP q=3; recurrent states in float16 (as the README
#   runs them), float32 and bfloat16.
# speed: the README's commands (CTX b=1 q=8193, GEN b=128 past 8193; float16 states) with the
#   roofline, each module's time next to its floor.
# Writes OUTDIR/nemotron.log.
set -u
out=${1:?usage: test/gpu/run_nemotron.sh OUTDIR [kernels] [layers] [speed]}
shift
what=" ${*:-kernels layers speed} "
mkdir -p "$out"
exec > >(tee "$out/nemotron.log") 2>&1
export LWB_CACHE_DIR=${LWB_CACHE_DIR:-/tmp/lwb-cache}
nemo=nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16
quick=(--model $nemo --layer-indices 4,5,6 --warmup-times 1 --run-times 2 --no-profile --balance-method NotModified)
run() { echo "\$ $*"; timeout -s KILL 400 "$@"; echo "(exit $?)"; }
lwb_quiet() { echo "\$ lwb $*"; timeout -s KILL 400 ./lwb "$@" > /tmp/run.txt 2>&1; echo "(exit $?)";
    grep -E "RANK|^  [0-9]|lwb:|^roofline|Mamba|Attention|MoE|dump|error" /tmp/run.txt | head -30; }
case "$what" in *" kernels "*)
    run build/gpu_check mamba gqa
    PYTHONUNBUFFERED=1 run python3 test/gpu/anchors_gqa.py ;;
esac
case "$what" in *" layers "*)
    for args in "configs/config_ctx.yaml --batch-size 2 --seq-len-q 300 --seq-len-kv-cache 0 --mamba-ssm-cache-dtype float16" \
                "configs/config_ctx.yaml --batch-size 1 --seq-len-q 200 --seq-len-kv-cache 500 --mamba-ssm-cache-dtype float16" \
                "configs/config_gen.yaml --batch-size 4 --seq-len-kv-cache 300 --mamba-ssm-cache-dtype float16" \
                "configs/config_gen.yaml --batch-size 3 --seq-len-q 3 --seq-len-kv-cache 301 --mamba-ssm-cache-dtype float16" \
                "configs/config_gen.yaml --batch-size 4 --seq-len-kv-cache 300 --mamba-ssm-cache-dtype float32" \
                "configs/config_ctx.yaml --batch-size 1 --seq-len-q 129 --seq-len-kv-cache 64 --mamba-ssm-cache-dtype bfloat16"; do
        # shellcheck disable=SC2086
        lwb_quiet run $args "${quick[@]}" --dump /tmp/dnh
        run python3 test/gpu/check_nemotron.py /tmp/dnh; rm -rf /tmp/dnh
    done ;;
esac
case "$what" in *" speed "*)
    for cfg in configs/config_ctx.yaml configs/config_gen.yaml; do
        echo "\$ lwb run $cfg --model $nemo --layer-indices 4,5,6 --mamba-ssm-cache-dtype float16 --no-profile"
        timeout -s KILL 400 ./lwb run $cfg --model $nemo --layer-indices 4,5,6 --mamba-ssm-cache-dtype float16 \
            --no-profile 2>&1 | tail -30
    done ;;
esac

#!/usr/bin/env bash
# run_dsa.sh: DeepSeek-V3.2 (DeepSeek Sparse Attention) on the GPU machine.
#   test/gpu/run_dsa.sh OUTDIR [kernels] [layers] [speed]
# kernels: gpu_check dsa dsa_topk mla_decode: the indexer's preparation and scores, the top-k
#   and the sparse attention against their C references, then their speed at the 32k shapes
#   next to their floors and the dense attention at the same context.
# layers: dumps of the reduced V3.2 model (index_topk 64, so that the selection matters at small
#   sizes: GEN q=1 and 4 with 97 and 300 cached tokens, CTX past 0 and 97) and of DeepSeek-V3.2's
#   real dimensions at 32k context (dense layer 2: GEN b=2 past 32769, CTX a 512-token chunk after
#   32257 cached tokens) checked by check_layer.py (transformers' layer with the attention limited
#   to lwb's selection; the indexer against a reference written from DeepSeek's code).
# speed: the README's 32k cases (CTX b=1 q=32769; GEN b=1..128 past 32769) with the roofline,
#   DeepSeek-V3's dense MLA next to V3.2's sparse one (GEN b=128, dense layer 2) at 2k..32k cached
#   tokens: where the sparse path starts to pay.
# Writes OUTDIR/dsa.log.
set -u
out=${1:?usage: test/gpu/run_dsa.sh OUTDIR [kernels] [layers] [speed]}
shift
what=" ${*:-kernels layers speed} "
mkdir -p "$out"
exec > >(tee "$out/dsa.log") 2>&1
export LWB_CACHE_DIR=${LWB_CACHE_DIR:-/tmp/lwb-cache}
small=test/gpu/small_deepseek_v32
v32=deepseek-ai/DeepSeek-V3.2-Exp
quick=(--warmup-times 1 --run-times 2 --no-profile --balance-method NotModified --tokens-per-block 64)
run() { echo "\$ $*"; timeout -s KILL 400 "$@"; echo "(exit $?)"; }
lwb_quiet() { echo "\$ lwb $*"; timeout -s KILL 400 ./lwb "$@" > /tmp/run.txt 2>&1; echo "(exit $?)";
    grep -E "RANK|^  [0-9]|lwb:|^roofline|MLA|^ready" /tmp/run.txt | head -24; }
case "$what" in *" kernels "*)
    run build/gpu_check dsa dsa_topk ;;
esac
case "$what" in *" layers "*)
    for w in bf16 fp8; do
        for args in "configs/config_gen.yaml --batch-size 5 --seq-len-kv-cache 97" \
                    "configs/config_gen.yaml --batch-size 3 --seq-len-q 4 --seq-len-kv-cache 300" \
                    "configs/config_ctx.yaml --batch-size 2 --seq-len-q 77 --seq-len-kv-cache 0" \
                    "configs/config_ctx.yaml --batch-size 3 --seq-len-q 50 --seq-len-kv-cache 97"; do
            # shellcheck disable=SC2086
            lwb_quiet run $args --model "$small" --layer-indices 0,2 "${quick[@]}" --weight-dtype $w --dump /tmp/d32
            run python3 test/gpu/check_layer.py /tmp/d32; rm -rf /tmp/d32
        done
    done
    lwb_quiet run configs/config_gen.yaml --model $v32 --layer-indices 2 "${quick[@]}" --batch-size 2 \
        --seq-len-kv-cache 32769 --max-seq-len 32800 --dump /tmp/d32
    run python3 test/gpu/check_layer.py /tmp/d32; rm -rf /tmp/d32
    lwb_quiet run configs/config_ctx.yaml --model $v32 --layer-indices 2 "${quick[@]}" --batch-size 1 \
        --seq-len-q 512 --seq-len-kv-cache 32257 --max-seq-len 32800 --dump /tmp/d32
    run python3 test/gpu/check_layer.py /tmp/d32; rm -rf /tmp/d32 ;;
esac
case "$what" in *" speed "*)
    sp=(--no-profile --tokens-per-block 64 --max-seq-len 32800)
    lwb_quiet run configs/config_ctx.yaml --model $v32 "${sp[@]}" --batch-size 1 --seq-len-q 32769 \
        --max-num-tokens 32769 --output-json "$out/v32_ctx.json"
    lwb_quiet run configs/config_gen.yaml --model $v32 "${sp[@]}" --batch-size 1,8,32,128 --seq-len-kv-cache 32769 \
        --output-json "$out/v32_gen.json"
    for past in 2048 4096 8192 16384 32769; do
        for m in $v32 deepseek-ai/DeepSeek-V3; do
            lwb_quiet run configs/config_gen.yaml --model $m "${sp[@]}" --layer-indices 2 --batch-size 128 \
                --seq-len-kv-cache $past
        done
    done ;;
esac

#!/usr/bin/env bash
# run_fp8.sh: the FP8 and --load-format AUTO checks on the GPU machine.
#   test/gpu/run_fp8.sh OUTDIR [kernels] [layers] [auto] [speed]
# kernels: gpu_check fp8 and moe_route (fp8 GEMMs, quantisation, fp8 permutation against their C
#   references; fp8 GEMM speed next to lwb's bf16 kernel) and torch's fp8 anchors.
# layers: fp8 dumps of the reduced model (GEN q=1 and 4, CTX past 0 and 97) and of DeepSeek-R1's
#   dimensions (--scaled-from 8, GEN and CTX) against transformers with the dequantised weights
#   (check_layer.py: the quantising reference and its spread under bf16 nudges); and a bf16 dump of
#   R1's dimensions (dense layer 2, MoE layer 3) against transformers.
# auto: load round trips: a DUMMY run's dump loaded with --load-format AUTO reproduces its
#   outputs bit for bit (reduced model in fp8 and bf16; one DeepSeek-R1 MoE layer at its real
#   FP8 layout, about 11.5 GB, with the load rate); a hand-made bf16 checkpoint of the reduced
#   model (the dump of a bf16 run) loaded and checked against transformers.
# speed: both default configs in FP8 next to --weight-dtype bf16 (statistics and roofline).
# Writes OUTDIR/fp8.log.
set -u
out=${1:?usage: test/gpu/run_fp8.sh OUTDIR [kernels] [layers] [auto] [speed]}
shift
what=" ${*:-kernels layers auto speed} "
mkdir -p "$out"
exec > >(tee "$out/fp8.log") 2>&1
export LWB_CACHE_DIR=${LWB_CACHE_DIR:-/tmp/lwb-cache}
small=test/gpu/small_deepseek
quick=(--warmup-times 1 --run-times 2 --no-profile --balance-method NotModified)
run() { echo "\$ $*"; timeout -s KILL 400 "$@"; echo "(exit $?)"; }
lwb_quiet() { echo "\$ lwb $*"; timeout -s KILL 400 ./lwb "$@" > /tmp/run.txt 2>&1; echo "(exit $?)";
    grep -E "RANK|^  [0-9]|lwb:|weights|stores|^roofline|^ready" /tmp/run.txt | head -16; }
case "$what" in *" kernels "*)
    run build/gpu_check fp8 moe_route
    run python3 test/gpu/anchors.py fp8 ;;
esac
case "$what" in *" layers "*)
    for args in "configs/config_gen.yaml --batch-size 5 --seq-len-kv-cache 97" \
                "configs/config_gen.yaml --batch-size 3 --seq-len-q 4 --seq-len-kv-cache 97" \
                "configs/config_ctx.yaml --batch-size 2 --seq-len-q 77 --seq-len-kv-cache 0" \
                "configs/config_ctx.yaml --batch-size 3 --seq-len-q 50 --seq-len-kv-cache 97"; do
        # shellcheck disable=SC2086
        lwb_quiet run $args --model "$small" --layer-indices 0,2 "${quick[@]}" --weight-dtype fp8 --dump /tmp/f8
        run python3 test/gpu/check_layer.py /tmp/f8; rm -rf /tmp/f8
    done
    lwb_quiet run configs/config_gen.yaml "${quick[@]}" --scaled-from 8 --batch-size 8 --seq-len-kv-cache 301 --dump /tmp/f8
    run python3 test/gpu/check_layer.py /tmp/f8; rm -rf /tmp/f8
    lwb_quiet run configs/config_ctx.yaml "${quick[@]}" --scaled-from 8 --batch-size 2 --seq-len-q 77 --seq-len-kv-cache 97 --dump /tmp/f8
    run python3 test/gpu/check_layer.py /tmp/f8; rm -rf /tmp/f8
    # bf16 at R1's dimensions: a dense first layer, then an MoE layer after the closing norm between.
    lwb_quiet run configs/config_gen.yaml "${quick[@]}" --weight-dtype bf16 --scaled-from 8 --layer-indices 2,3 \
        --batch-size 8 --seq-len-kv-cache 301 --dump /tmp/f8
    run python3 test/gpu/check_layer.py /tmp/f8; rm -rf /tmp/f8 ;;
esac
case "$what" in *" auto "*)
    for w in fp8 bf16; do
        lwb_quiet run configs/config_gen.yaml --model "$small" --layer-indices 0,2 "${quick[@]}" --weight-dtype $w \
            --batch-size 5 --seq-len-kv-cache 97 --dump /tmp/a_$w
        lwb_quiet run configs/config_gen.yaml --model /tmp/a_$w --load-format AUTO --layer-indices 0,2 "${quick[@]}" \
            --batch-size 5 --seq-len-kv-cache 97 --dump /tmp/b_$w
        run python3 test/gpu/compare_dumps.py /tmp/a_$w /tmp/b_$w --exact
    done
    # The bf16 dump is a hand-made bf16 checkpoint of the reduced model: loaded, against transformers.
    run python3 test/gpu/check_layer.py /tmp/b_bf16
    rm -rf /tmp/a_fp8 /tmp/b_fp8 /tmp/a_bf16 /tmp/b_bf16
    # DeepSeek-R1 layer 5 in its real FP8 layout (256 experts): dump, then load it twice (the second
    # from the page cache) and compare.
    lwb_quiet run configs/config_gen.yaml --layer-indices 5 "${quick[@]}" --batch-size 8 --seq-len-kv-cache 301 \
        --no-use-cuda-graph --dump /tmp/r1a
    du -sh /tmp/r1a
    for i in 1 2; do
        lwb_quiet run configs/config_gen.yaml --model /tmp/r1a --load-format AUTO --layer-indices 5 "${quick[@]}" \
            --batch-size 8 --seq-len-kv-cache 301 --no-use-cuda-graph --dump /tmp/r1b
        [ $i = 1 ] && rm -rf /tmp/r1b
    done
    run python3 test/gpu/compare_dumps.py /tmp/r1a /tmp/r1b --exact
    rm -rf /tmp/r1a /tmp/r1b ;;
esac
case "$what" in *" speed "*)
    for c in gen ctx; do
        for w in auto bf16; do
            lwb_quiet run configs/config_$c.yaml --no-profile --weight-dtype $w --output-json "$out/${c}_$w.json"
        done
    done ;;
esac

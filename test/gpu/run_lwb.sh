#!/usr/bin/env bash
# run_lwb.sh: `lwb run` on the GPU machine: both default configs (statistics, roofline table,
# profile and its breakdown), then the transformers comparison at a reduced size.
#   test/gpu/run_lwb.sh OUTDIR [gen] [ctx] [check] [full]
set -u
out=${1:?usage: test/gpu/run_lwb.sh OUTDIR [gen] [ctx] [check] [full]}
shift
what=" ${*:-gen ctx check} "
mkdir -p "$out"
export LWB_CACHE_DIR=${LWB_CACHE_DIR:-/tmp/lwb-cache}
small=test/gpu/small_deepseek
run() { echo "\$ $*"; timeout -s KILL 400 "$@"; echo "(exit $?)"; }
case "$what" in *" gen "*)
    run ./lwb run configs/config_gen.yaml --output-json "$out/gen.json" --profile-dir /tmp/prof_gen
    run ./lwb parse --file-path /tmp/prof_gen/report_np1_rank0.sqlite --output-dir /tmp/prof_gen ;;
esac
case "$what" in *" ctx "*)
    run ./lwb run configs/config_ctx.yaml --output-json "$out/ctx.json" --profile-dir /tmp/prof_ctx
    run ./lwb parse --file-path /tmp/prof_ctx/report_np1_rank0.sqlite --output-dir /tmp/prof_ctx ;;
esac
case "$what" in *" check "*)
    common=(--model "$small" --layer-indices 0,2 --warmup-times 1 --run-times 2 --no-profile --balance-method NotModified)
    run ./lwb run configs/config_gen.yaml "${common[@]}" --batch-size 7 --seq-len-q 1 --seq-len-kv-cache 97 --dump /tmp/d_gen1 >/dev/null
    run python3 test/gpu/check_layer.py /tmp/d_gen1
    run ./lwb run configs/config_gen.yaml "${common[@]}" --batch-size 7 --seq-len-q 4 --seq-len-kv-cache 97 --dump /tmp/d_gen4 >/dev/null
    run python3 test/gpu/check_layer.py /tmp/d_gen4
    run ./lwb run configs/config_ctx.yaml "${common[@]}" --batch-size 2 --seq-len-q 77 --seq-len-kv-cache 0 --dump /tmp/d_ctx0 >/dev/null
    run python3 test/gpu/check_layer.py /tmp/d_ctx0
    run ./lwb run configs/config_ctx.yaml "${common[@]}" --batch-size 3 --seq-len-q 50 --seq-len-kv-cache 97 --dump /tmp/d_ctx97 >/dev/null
    run python3 test/gpu/check_layer.py /tmp/d_ctx97 ;;
esac
case "$what" in *" full "*)
    run ./lwb run configs/config_gen.yaml --model deepseek-ai/DeepSeek-V3 --balance-method NotModified --batch-size 8 \
        --seq-len-kv-cache 301 --no-use-cuda-graph --warmup-times 1 --run-times 2 --no-profile --dump /tmp/d_full >/dev/null
    run python3 test/gpu/check_layer.py /tmp/d_full
    rm -rf /tmp/d_full ;;
esac

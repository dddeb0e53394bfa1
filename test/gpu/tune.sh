#!/usr/bin/env bash
# tune.sh: time one module of `lwb run` under several tile choices of one product (through
# LWB_GEMM_TILES), side by side in one run of this script; "-" is lwb's own choice.
#   test/gpu/tune.sh CONFIG PRODUCT MODULE TILES... [-- LWB RUN FLAGS...]
#   e.g. test/gpu/tune.sh configs/config_gen.yaml gate DeepseekV3Gate - 64,64,6,16 128,64,6,16
# Prints, per choice, the kernel label lwb built and the module's roofline line.
set -u
config=${1:?usage: test/gpu/tune.sh CONFIG PRODUCT MODULE TILES... [-- FLAGS...]}
product=${2:?product name (gate, q_b, experts13, ...)}
module=${3:?module name as in the roofline table (MLA, DeepseekV3Gate, MoE, ...)}
shift 3
tiles=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do tiles+=("$1"); shift; done
[ $# -gt 0 ] && shift
export LWB_CACHE_DIR=${LWB_CACHE_DIR:-/tmp/lwb-cache}
for t in "${tiles[@]}"; do
    if [ "$t" = - ]; then spec=; else spec="$product=$t"; fi
    log=$(LWB_GEMM_TILES=$spec timeout -s KILL 300 ./lwb run "$config" --no-profile --warmup-times 2 --run-times 10 "$@" 2>&1)
    rc=$?
    label=$(LWB_GEMM_TILES=$spec ./lwb run "$config" --dry-run "$@" 2>/dev/null | grep -o "gemm_${product}_bm[0-9a-z_]*" | head -1)
    line=$(printf '%s\n' "$log" | grep -E "^ +[0-9]+ +$module " | head -1)
    printf '%-16s %-44s exit %d |%s\n' "${t}" "${label:-?}" "$rc" "$line"
    [ "$rc" = 0 ] || printf '%s\n' "$log" | tail -3
done

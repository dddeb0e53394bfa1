#!/usr/bin/env bash
# run.sh: the GPU checks, on the GPU machine, from the repository root, with ./lwb and
# build/gpu_check built on the development machine (./build.sh gpu) and carried over.
#   test/gpu/run.sh OUTDIR [FAMILY...]
# Writes OUTDIR/check.log (lwb's checks and benchmarks) and OUTDIR/anchors.log (torch).
set -u
out=${1:?usage: test/gpu/run.sh OUTDIR [FAMILY...]}
shift
mkdir -p "$out"
export LWB_CACHE_DIR=${LWB_CACHE_DIR:-/tmp/lwb-cache}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
./lwb version | tee -a "$out/gpu.txt"
set -o pipefail
timeout -s KILL 400 build/gpu_check "$@" 2>&1 | tee "$out/check.log"
rc=$?
if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx gemm; then
    PYTHONUNBUFFERED=1 python3 test/gpu/anchors.py gemm 2>&1 | tee "$out/anchors.log"
fi
if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx fp8; then
    PYTHONUNBUFFERED=1 python3 test/gpu/anchors.py fp8 2>&1 | tee "$out/anchors_fp8.log"
fi
exit $rc

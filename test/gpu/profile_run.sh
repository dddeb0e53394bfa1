#!/usr/bin/env bash
# profile_run.sh: the built-in profiler against Nsight Systems on the GPU machine.
#   test/gpu/profile_run.sh OUTDIR
# Needs build/profile_probe; the Nsight Systems part runs when .dev/nsys-env.sh exists and exports
# NSYS (the nsys binary, with any libraries its importer lacks on the library path).
set -u
out=${1:?usage: test/gpu/profile_run.sh OUTDIR}
mkdir -p "$out/loop" "$out/run" "$out/nsys"
timeout -s KILL 120 build/profile_probe "$out/loop" 2>&1 | tee "$out/probe_loop.log" | tail -40
timeout -s KILL 120 build/profile_probe "$out/run" --window run 2>&1 | tee "$out/probe_run.log" | tail -25
if [ -f .dev/nsys-env.sh ]; then
    # shellcheck disable=SC1091
    source .dev/nsys-env.sh
    timeout -s KILL 180 "$NSYS" profile -t cuda,nvtx --cuda-graph-trace node -c cudaProfilerApi \
        --capture-range-end stop -s none --cpuctxsw none -o "$out/nsys/report" --force-overwrite true \
        build/profile_probe "$out/nsys" 2>&1 | tail -15
    timeout -s KILL 120 "$NSYS" export --type sqlite -o "$out/nsys/report.sqlite" "$out/nsys/report.nsys-rep" 2>&1 | tail -3
    build/profile_probe --check "$out/nsys/report.sqlite" "$out/run/report_np1_rank0.sqlite" 2>&1 | tail -30
fi

#!/usr/bin/env bash
# run_replay.sh: routing replay and collection on the GPU machine.
#   test/gpu/run_replay.sh OUTDIR
# 1. A run of the reduced model collects its routing; a replay of that file (CUDA graph, with the
#    in-run check of the ids the MoE used) collects again: both files hold the same choices.
# 2. A file written from the format's description (calib_file.py: different routing every
#    iteration, two MoE chunks per layer) replayed eagerly and with a graph: the collected routing
#    is the file's, iteration by iteration (the cycle of the reference), and the tokens per expert
#    equal the file's.
# 3. DeepSeek-R1 layers 5,6 at batch 128 (GEN, CUDA graph): a skewed recorded routing (every
#    token on 16 experts) against Balanced, with the roofline; then the profile of the replay run
#    parsed, and lwb correlate of the replay against the Balanced run.
# Writes OUTDIR/replay.log and the correlate page.
set -u
out=${1:?usage: test/gpu/run_replay.sh OUTDIR}
mkdir -p "$out"
exec > >(tee "$out/replay.log") 2>&1
export LWB_CACHE_DIR=${LWB_CACHE_DIR:-/tmp/lwb-cache}
small=(--model test/gpu/small_deepseek --layer-indices 0,1,2 --balance-method NotModified --batch-size 5)
quick=(--warmup-times 2 --run-times 5 --no-profile)
t=/tmp/replay
rm -rf "$t" && mkdir -p "$t"
run() { echo "\$ $*"; timeout -s KILL 300 "$@"; echo "(exit $?)"; }
lwb_quiet() { echo "\$ lwb $*"; timeout -s KILL 300 ./lwb "$@" > "$t/run.txt" 2>&1; echo "(exit $?)";
    grep -E "RANK|routing|lwb:|replay" "$t/run.txt" | head -12; }

echo "== 1. collect, replay, collect again"
lwb_quiet run configs/config_gen.yaml "${small[@]}" "${quick[@]}" --collect-calibration "$t/c1.json"
lwb_quiet run configs/config_gen.yaml "${small[@]}" "${quick[@]}" --replay-file-path "$t/c1.json" \
    --collect-calibration "$t/c2.json"
run python3 test/gpu/calib_file.py compare "$t/c1.json" "$t/c2.json"

echo "== 2. a file from the format's description, replayed eagerly and with a graph"
run python3 test/gpu/calib_file.py make "$t/f.json" --iterations 100 104 --layers 1 2 --tokens 5 --top-k 6 \
    --experts 64 --chunks 2
for g in --no-use-cuda-graph --use-cuda-graph; do
    lwb_quiet run configs/config_gen.yaml "${small[@]}" "${quick[@]}" $g --replay-file-path "$t/f.json" \
        --replay-start-iter 101 --replay-stop-iter 103 --collect-calibration "$t/g.json"
    run python3 test/gpu/calib_file.py replayed "$t/f.json" "$t/g.json" --start 101 --stop 103
done
# The in-run check fails loudly when the MoE did not use the file (this must pass quietly).
lwb_quiet run configs/config_gen.yaml "${small[@]}" --warmup-times 0 --run-times 1 --no-profile \
    --replay-file-path "$t/f.json" --replay-verify-metadata

echo "== 3. DeepSeek-R1 layers 5,6, batch 128: recorded skewed routing against Balanced"
run python3 test/gpu/calib_file.py make "$t/r1.json" --iterations 0 9 --layers 5 6 --tokens 128 --top-k 8 \
    --experts 256 --skew 16
lwb_quiet run configs/config_gen.yaml --layer-indices 5,6 --batch-size 128 --profile-dir "$t/bal" \
    --balance-method Balanced --output-json "$t/bal.json"
grep -E "^  [0-9]|roofline" "$t/run.txt" | head -20
lwb_quiet run configs/config_gen.yaml --layer-indices 5,6 --batch-size 128 --profile-dir "$t/rep" \
    --balance-method NotModified --replay-file-path "$t/r1.json" --output-json "$t/rep.json"
grep -E "^  [0-9]|roofline" "$t/run.txt" | head -20
run ./lwb parse --file-path "$t/bal/report_np1_rank0.sqlite"
run ./lwb parse --file-path "$t/rep/report_np1_rank0.sqlite"
run ./lwb correlate --reference "$t/bal/report_np1_rank0.json" --target "$t/rep/report_np1_rank0.json" \
    -o "$out/correlate_replay.html" --output-json "$out/correlate_replay.json"

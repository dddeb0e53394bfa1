#!/usr/bin/env bash
# run_ranks.sh: `lwb run` across ranks on the GPU machine: correctness of every rank's layer
# against a one-GPU run of the same weights and requests, NCCL's own bandwidth next to lwb's
# exchange, faults (a killed rank, a rank with another plan, a rank that never starts), the
# default configs' statistics and roofline per rank count, every rank's profile parsed and
# correlated, and routing collected and replayed across ranks (each rank its own records).
#   test/gpu/run_ranks.sh OUTDIR [N...]      (default: 2 4 8, as many as there are GPUs; 1 with one GPU)
# With one GPU only the --np 1 parts run (a communicator of one rank). Writes OUTDIR/ranks.log.
set -u
out=${1:?usage: test/gpu/run_ranks.sh OUTDIR [N...]}
shift
mkdir -p "$out"
export LWB_CACHE_DIR=${LWB_CACHE_DIR:-/tmp/lwb-cache}
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if [ $# -gt 0 ]; then sizes="$*"; else
    sizes=""
    for n in 2 4 8; do [ "$n" -le "$gpus" ] && sizes="$sizes $n"; done
    [ -n "$sizes" ] || sizes=1
fi
small=test/gpu/small_deepseek
tmp=$(mktemp -d)
log=$out/ranks.log
exec > >(tee "$log") 2>&1
run() { echo "\$ $*"; timeout -s KILL 500 "$@"; local rc=$?; echo "(exit $rc)"; return $rc; }
quiet=(--warmup-times 1 --run-times 2 --no-profile --balance-method NotModified)
echo "GPUs: $gpus; rank counts: $sizes"

# 1. Correctness: every rank's output against one GPU with the same weights and requests.
# Attention DP: N ranks of B requests against one GPU with N*B; TP: N ranks against one GPU with B.
# MOE_COMM=alltoall|allgather forces the ranked run's MoE exchange (in DP mode).
check_case() { # check_case N MODEL LAYERS CONFIG B Q PAST [FLAGS...]
    local n=$1 model=$2 layers=$3 cfg=$4 b=$5 q=$6 past=$7
    shift 7
    local common=(--model "$model" --layer-indices "$layers" "${quiet[@]}" --seq-len-q "$q" --seq-len-kv-cache "$past")
    for mode in dp tp; do
        local flag=--enable-attention-dp refb=$((n * b))
        if [ $mode = tp ]; then
            [ -n "${MOE_COMM:-}" ] && continue # an exchange of attention DP only
            flag=--no-enable-attention-dp refb=$b
        fi
        local ref=$tmp/ref_${mode}_${n}_${b}_${q}_${past} ours=$tmp/np${n}_${mode}_${b}_${q}_${past}
        rm -rf "$ref" "$ours"
        run ./lwb run "$cfg" "${common[@]}" "$flag" --batch-size "$refb" --max-batch-size "$refb" \
            --max-num-tokens $((refb * q)) --dump "$ref" "$@" >/dev/null || continue
        run ./lwb run "$cfg" "${common[@]}" "$flag" --batch-size "$b" --max-batch-size "$b" \
            --max-num-tokens $((b * q)) --np "$n" --dump "$ours" ${MOE_COMM:+--moe-comm $MOE_COMM} "$@" \
            >/dev/null || continue
        # One rank through NCCL computes what the plain path computes, bit for bit, except the
        # all-to-all, whose returned rows are rounded to bf16 before the shared expert is added.
        if [ "$n" = 1 ] && [ -z "${MOE_COMM:-}" ]; then
            run python3 test/gpu/compare_dumps.py "$ref" "$ours" --exact
        else
            run python3 test/gpu/compare_dumps.py "$ref" "$ours" --tol 1e-2
        fi
        rm -rf "$ref" "$ours"
    done
}
for n in $sizes; do
    echo "== correctness at --np $n"
    check_case "$n" "$small" 0,2 configs/config_gen.yaml 5 1 97
    check_case "$n" "$small" 0,2 configs/config_gen.yaml 3 4 97
    check_case "$n" "$small" 0,2 configs/config_ctx.yaml 2 77 0
    check_case "$n" "$small" 2 configs/config_ctx.yaml 3 50 97
    check_case "$n" deepseek-ai/DeepSeek-R1 5 configs/config_gen.yaml 8 1 301 --no-use-cuda-graph
    # The all-to-all exchange (TensorRT-LLM's choice above top-k ranks), forced on the ranked run.
    MOE_COMM=alltoall check_case "$n" "$small" 2 configs/config_gen.yaml 5 1 97
    MOE_COMM=alltoall check_case "$n" "$small" 0,2 configs/config_ctx.yaml 2 77 0
done

# 2. Communication: NCCL's own bandwidth on this machine, then lwb's exchange inside its layers.
for n in $sizes; do
    [ "$n" -gt 1 ] || continue
    echo "== NCCL bandwidth, $n ranks"
    run python3 -m torch.distributed.run --standalone --nproc_per_node "$n" test/gpu/nccl_bw.py
done

# 3. Scaling: the default configs at each rank count, and --scaled-from 16.
for n in $sizes; do
    for cfg in gen ctx; do
        echo "== configs/config_$cfg.yaml --np $n"
        run ./lwb run configs/config_$cfg.yaml --np "$n" --profile-dir "$tmp/prof_${cfg}_$n" \
            --output-json "$out/${cfg}_np$n.json"
        run ./lwb run configs/config_$cfg.yaml --np "$n" --scaled-from 16 --no-profile
        # 5. Profiles: every rank's parsed, the share of NCCL kernels, rank 0 against the others.
        for ((r = 0; r < n; r++)); do
            run ./lwb parse --world-size "$n" --rank "$r" --profile-dir "$tmp/prof_${cfg}_$n" --query nccl,MoE
        done
        if [ "$n" -gt 1 ]; then
            others=()
            for ((r = 1; r < n; r++)); do others+=("$tmp/prof_${cfg}_$n/report_np${n}_rank$r.json"); done
            run ./lwb correlate --reference "$tmp/prof_${cfg}_$n/report_np${n}_rank0.json" --target "${others[@]}" \
                -o "$out/correlate_${cfg}_np$n.html"
        fi
    done
done

# 4. Routing across ranks: each rank collects its own routing, each rank replays its own records
# (the collected file, then a file from the format's description), collected again: the same.
for n in $sizes; do
    [ "$n" -gt 1 ] || continue
    echo "== replay, $n ranks"
    small=(--model test/gpu/small_deepseek --layer-indices 0,1,2 --balance-method NotModified --batch-size 5
           --warmup-times 2 --run-times 5 --no-profile --moe-comm allgather)
    run ./lwb run configs/config_gen.yaml --np "$n" "${small[@]}" --collect-calibration "$tmp/c1.json"
    run ./lwb run configs/config_gen.yaml --np "$n" "${small[@]}" --replay-file-path "$tmp/c1.json" \
        --collect-calibration "$tmp/c2.json"
    run python3 test/gpu/calib_file.py compare "$tmp/c1.json" "$tmp/c2.json"
done

# 5. Faults (two ranks at least).
for n in $sizes; do
    [ "$n" -gt 1 ] || continue
    echo "== faults, $n ranks"
    t0=$(date +%s)
    LWB_TEST_FAULT=1:kill run ./lwb run configs/config_gen.yaml --np "$n" --no-profile
    echo "a rank killed in the timed loop under --np: the job ended in $(($(date +%s) - t0)) s"
    if command -v mpirun >/dev/null; then
        t0=$(date +%s)
        run mpirun --allow-run-as-root --np "$n" -x LWB_TEST_FAULT=1:kill -x NCCL_NVLS_ENABLE \
            ./lwb run configs/config_gen.yaml --no-profile
        echo "a rank killed in the timed loop under mpirun: the job ended in $(($(date +%s) - t0)) s"
    fi
    # A rank with another plan is refused before anything is allocated.
    (RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 MASTER_PORT=29655 ./lwb run configs/config_gen.yaml --batch-size 64 \
        --max-batch-size 128 2>&1 | sed 's/^/  rank 1: /') &
    RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_PORT=29655 run ./lwb run configs/config_gen.yaml
    wait
    t0=$(date +%s)
    LWB_TEST_FAULT=1:absent run ./lwb run configs/config_gen.yaml --np "$n" --rendezvous-timeout 10
    echo "a rank that never joined: the job ended in $(($(date +%s) - t0)) s"
    LWB_TEST_FAULT=1:hang run ./lwb run configs/config_gen.yaml --np "$n" --no-profile --comm-timeout 20
done
rm -rf "$tmp"

#!/usr/bin/env bash
# cli_ranks.sh: `lwb run` with ranks on a machine without a GPU: `--np N --dry-run` (every rank's
# plan, in rank order, the parent's exit code), the test fault switch (a rank that fails while
# planning, one that never joins, one that exits after the rendezvous: the parent ends the others
# and names it), refusals, and a plan of 58 MoE layers (tables that grow). Ends with "N passed, N failed".
# shellcheck source=test/lib_cli.sh
source "$(dirname "$0")/lib_cli.sh"

expect 0 "np 2 dry" -- "$lwb" run configs/config_gen.yaml --np 2 --dry-run
has out "== rank 0 of 2 =="; has out "== rank 1 of 2 =="; has out "experts 128..255 of 256"
has out "all-gather of every rank's tokens"; has out "link MB"
check "rank 0's plan comes first" '[ "$(grep -n "== rank 0" "$tmp/out" | cut -d: -f1)" -lt "$(grep -n "== rank 1" "$tmp/out" | cut -d: -f1)" ]'
check "both plans fit" '[ "$(grep -c "the plan fits" "$tmp/out")" = 2 ]'
done_case "--np 2 --dry-run prints both ranks' plans in rank order"

expect 0 "np 4 tp dry" -- "$lwb" run configs/config_gen.yaml --np 4 --dry-run --no-enable-attention-dp --scaled-from 16
has out "rank 3 of 4: attention tensor-parallel, heads 24..31 of 32; experts 48..63 of 64"
has out "all-reduce"
done_case "--np 4 --no-enable-attention-dp --scaled-from 16: heads and experts per rank, all-reduces"

expect 0 "np 1 scaled" -- "$lwb" run configs/config_gen.yaml --np 1 --dry-run --scaled-from 16
has out "experts 0..15 of 16"; has out "all-to-all"
done_case "--scaled-from 16 on one rank: 16 experts, the all-to-all of EP 16"

LWB_TEST_FAULT=1:plan expect 2 "fault plan" -- "$lwb" run configs/config_gen.yaml --np 2 --dry-run
has err "lwb: rank 1 of 2 exited with code 2; its last error: lwb[rank 1]: a test fault"
done_case "a rank that fails while planning: the parent names it and exits with its code"

t0=$(date +%s)
LWB_TEST_FAULT=2:absent expect 2 "fault absent" -- "$lwb" run configs/config_gen.yaml --np 4 --dry-run --rendezvous-timeout 1
has err "rank 2 did not join within 1 s (--rendezvous-timeout)"
check "ended within the timeout" '[ $(($(date +%s) - t0)) -lt 10 ]'
done_case "a rank that never joins: the others stop after --rendezvous-timeout, naming it"

LWB_TEST_FAULT=0:exit expect 1 "fault exit" -- "$lwb" run configs/config_gen.yaml --np 2 --dry-run
has err "lwb: rank 0 of 2 exited with code 1"
done_case "a rank that exits after the rendezvous ends the job"

OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=2 expect 2 "np under mpirun" -- "$lwb" run configs/config_gen.yaml --np 2 --dry-run
has err "leave --np out under mpirun or srun"; one_line_err
done_case "--np under a launcher is refused"

expect 2 "np too many" -- "$lwb" run configs/config_gen.yaml --np 65 --dry-run
has err "--np: 65 is out of range; give an integer from 1 to 64"; one_line_err
done_case "--np 65 is refused"

expect 2 "moe comm alone" -- "$lwb" run configs/config_gen.yaml --moe-comm alltoall --dry-run
has err "--moe-comm alltoall"; has err "--np 1"; one_line_err
done_case "--moe-comm without ranks is refused, naming the fix"

expect 2 "tp split" -- "$lwb" run configs/config_gen.yaml --np 3 --dry-run --no-enable-attention-dp --balance-method NotModified
has err "do not split"; one_line_err
done_case "heads or experts that do not split over the ranks are refused"

expect 2 "scaled below ranks" -- "$lwb" run configs/config_gen.yaml --np 4 --scaled-from 2 --dry-run
has err "--scaled-from 2 is smaller than the 4 ranks"; one_line_err
done_case "--scaled-from below the rank count is refused"

# 58 MoE layers: the plan's tables grow (a fixed table of 64 rows overflowed at 13 MoE layers).
layers=$(seq -s, 3 60)
expect 2 "58 layers" -- "$lwb" run configs/config_gen.yaml --dry-run --layer-indices "$layers"
has out "60     MoE"; has out "3      Deepseekv3MoE"; has err "GiB short"; one_line_err
done_case "--layer-indices 3..60: every layer's floors, then the memory refusal"

RANK=1 WORLD_SIZE=2 MASTER_PORT=1 expect 2 "rank 1 no server" -- "$lwb" run configs/config_gen.yaml --dry-run --rendezvous-timeout 1
has err "rank 1 cannot reach 127.0.0.1:1 within 1 s"; one_line_err
done_case "a rank that cannot reach rank 0 says where it looked"

cli_finish

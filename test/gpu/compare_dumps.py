# compare_dumps.py: two `lwb run --dump` folders of the same layers, weights and requests: a
# one-GPU run (REF) and another run (OTHER): the same run through a communicator of one rank
# (`--np 1`), or a run on N ranks whose ranks each dumped their share.
#
#   python3 test/gpu/compare_dumps.py REF OTHER [--tol 1e-2] [--exact]
#
# With N ranks and attention DP, rank r's requests are requests r*B .. (r+1)*B-1 of REF (run with
# N*B requests), so its rows are REF's rows r*T .. (r+1)*T-1; with attention TP every rank holds
# every token, and each rank's output must equal REF's whole output. Inputs must be equal bit for
# bit (they are seeded by global request); outputs within relative L2 `--tol` (the ranks' partial
# sums are added in another order, in bf16), or bit for bit with --exact. With NotModified routing
# the expert ids must match too, except near-ties. Exit 1 on any failure.
import json
import sys

import torch
from safetensors.torch import load_file


def rel_l2(got, want):
    got, want = got.float(), want.float()
    return (torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want)).item()


def main():
    ref_dir, other_dir = sys.argv[1], sys.argv[2]
    tol = float(sys.argv[sys.argv.index("--tol") + 1]) if "--tol" in sys.argv else 1e-2
    exact = "--exact" in sys.argv
    ref_meta = json.load(open(f"{ref_dir}/meta.json"))
    meta = json.load(open(f"{other_dir}/meta.json"))
    n = meta.get("world_size", 1)
    dp = meta.get("attention_dp", True)
    b = meta["problem"]["batch_size"]
    q = meta["problem"]["seq_len_q"]
    t = b * q
    print(f"{other_dir} ({n} rank{'s' if n > 1 else ''}, attention {'DP' if dp else 'TP'}, MoE exchange "
          f"{meta.get('moe_comm', 'none')}) against {ref_dir} (b={ref_meta['problem']['batch_size']})")
    failures = 0
    for layer in meta["layers"]:
        ref = load_file(f"{ref_dir}/layer{layer}.safetensors")
        for r in range(n):
            name = f"layer{layer}.safetensors" if n == 1 else f"layer{layer}.rank{r}.safetensors"
            got = load_file(f"{other_dir}/{name}")
            rows = slice(r * t, (r + 1) * t) if dp and n > 1 else slice(0, ref["lwb.output.hidden_states"].shape[0])
            ok = True
            parts = []
            for key in ("lwb.input.hidden_states", "lwb.input.residual"):
                same = torch.equal(got[key], ref[key][rows])
                ok &= same
                if not same:
                    parts.append(f"{key} differs (inputs must be equal)")
            for key in ("lwb.output.hidden_states", "lwb.output.residual"):
                want = ref[key][rows]
                if exact:
                    diff = (got[key].float() - want.float()).abs().max().item()
                    ok &= diff == 0
                    parts.append(f"{key.split('.')[-1]} max |diff| {diff:.3g}")
                else:
                    e = rel_l2(got[key], want)
                    ok &= e <= tol
                    parts.append(f"{key.split('.')[-1]} rel L2 {e:.2e}")
            if "lwb.moe.topk_ids" in got and meta.get("balance_method") == "NotModified":
                a = got["lwb.moe.topk_ids"].sort(dim=-1).values
                w = ref["lwb.moe.topk_ids"][rows].sort(dim=-1).values
                same = int((a == w).all(dim=-1).sum())
                parts.append(f"expert sets {same}/{a.shape[0]} equal")
                # Near-ties may flip when the inputs differ at bf16 level; allow 1 %.
                ok &= same >= 0.99 * a.shape[0] if not exact else same == a.shape[0]
            print(("PASS  " if ok else "FAIL  ") + f"layer {layer} rank {r}: " + ", ".join(parts), flush=True)
            failures += not ok
    print(f"{failures} failed ({'exact' if exact else f'tolerance {tol}'})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# make.py: writes the calibration-file fixtures of test/test_calib.c from the format's description
# (TensorRT-LLM's layer-wise benchmarks calibrator: per rank a list of records {iteration,
# metadata [{layer_idx, num_slots, token_selected_slots_shape}], raw_data = base64(zlib(int32 LE
# slots of every entry, in metadata order))}), independently of lwb's own writer.
#   python3 test/data/calib/make.py test/data/calib
import base64, json, struct, sys, zlib


def slot(rank, it, layer, t, j, slots):
    return (rank * 13 + it * 7 + layer * 5 + t * 3 + j * 11) % slots


def record(rank, it, entries, slots, top_k):
    """entries: (layer, first token, tokens) in call order."""
    meta, raw = [], b""
    for layer, t0, n in entries:
        meta.append({"layer_idx": layer, "num_slots": slots, "token_selected_slots_shape": [n, top_k]})
        ids = [slot(rank, it, layer, t0 + t, j, slots) for t in range(n) for j in range(top_k)]
        raw += struct.pack("<%di" % len(ids), *ids)
    return {"iteration": it, "metadata": meta, "raw_data": base64.b64encode(zlib.compress(raw)).decode()}


out = sys.argv[1] if len(sys.argv) > 1 else "."
# Two ranks, iterations 40..42 (rank 1 lists them in another order), 64 slots, top-6, 5 tokens per
# layer: layer 4 first, layer 3 in two chunks (3 + 2 tokens), layer 1 (not replayed by the tests).
two = {"world_size": 2, "all_ranks_records": []}
for rank, its in ((0, (40, 41, 42)), (1, (42, 40, 41))):
    two["all_ranks_records"].append(
        [record(rank, it, [(4, 0, 5), (3, 0, 3), (1, 0, 5), (3, 3, 2)], 64, 6) for it in its])
with open(f"{out}/two_ranks.json", "w") as f:
    json.dump(two, f)
# Odd shapes: one rank, iteration 7, 5 slots, top-1, 3 tokens in an empty chunk then a chunk of 3;
# pretty-printed, keys in another order.
odd = {"all_ranks_records": [[record(0, 7, [(2, 0, 0), (2, 0, 3)], 5, 1)]], "world_size": 1}
odd["all_ranks_records"][0][0] = dict(reversed(list(odd["all_ranks_records"][0][0].items())))
with open(f"{out}/odd.json", "w") as f:
    json.dump(odd, f, indent=2)

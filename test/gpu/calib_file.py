#!/usr/bin/env python3
"""calib_file.py: calibration files (TensorRT-LLM's layer-wise benchmarks format) for the replay
checks, written and read from the format's description, independently of lwb:
  {"world_size": N, "all_ranks_records": [[{"iteration", "metadata": [{"layer_idx", "num_slots",
   "token_selected_slots_shape": [tokens, top_k]}], "raw_data": base64(zlib(int32 LE))}]]}

  calib_file.py make FILE --iterations A B --layers L... --tokens T --top-k K --experts E
                [--chunks C] [--skew S] [--seed N]
      random distinct experts per token, different in every iteration; --skew S: only experts
      0..S-1; --chunks C: each layer's tokens split over C entries.
  calib_file.py compare A B          same iterations, layers and choices (exit 1 otherwise)
  calib_file.py replayed SRC GOT --start A --stop B
      GOT (collected by a replaying run, iterations 0..n-1) holds SRC's iteration
      A + i mod (B - A + 1) at iteration i; also compares tokens per expert.
"""
import argparse
import base64
import json
import random
import struct
import sys
import zlib


def decode(rec):
    raw = zlib.decompress(base64.b64decode(rec["raw_data"]))
    vals = struct.unpack("<%di" % (len(raw) // 4), raw)
    out, at = {}, 0
    for m in rec["metadata"]:
        t, k = m["token_selected_slots_shape"]
        rows = [list(vals[at + i * k: at + (i + 1) * k]) for i in range(t)]
        out.setdefault(m["layer_idx"], []).extend(rows)
        at += t * k
    assert at == len(vals), "raw_data longer than the metadata"
    return out


def load(path):
    with open(path) as f:
        d = json.load(f)
    return d["world_size"], [{r["iteration"]: decode(r) for r in recs} for recs in d["all_ranks_records"]]


def make(a):
    rng = random.Random(a.seed)
    pool = list(range(a.skew if a.skew else a.experts))
    records = []
    for it in range(a.iterations[0], a.iterations[1] + 1):
        meta, raw = [], b""
        for layer in a.layers:
            rows = [rng.sample(pool, a.top_k) for _ in range(a.tokens)]
            bounds = [a.tokens * c // a.chunks for c in range(a.chunks + 1)]
            for c in range(a.chunks):
                part = rows[bounds[c]:bounds[c + 1]]
                meta.append({"layer_idx": layer, "num_slots": a.experts,
                             "token_selected_slots_shape": [len(part), a.top_k]})
                flat = [x for r in part for x in r]
                raw += struct.pack("<%di" % len(flat), *flat)
        records.append({"iteration": it, "metadata": meta,
                        "raw_data": base64.b64encode(zlib.compress(raw)).decode()})
    with open(a.file, "w") as f:
        json.dump({"world_size": 1, "all_ranks_records": [records]}, f)
    print(f"{a.file}: iterations {a.iterations[0]}..{a.iterations[1]}, layers {a.layers}, {a.tokens} tokens, "
          f"top-{a.top_k} of {a.experts}{' (skewed to %d experts)' % a.skew if a.skew else ''}, {a.chunks} chunks")


def counts(rows, experts):
    c = [0] * experts
    for r in rows:
        for e in r:
            c[e] += 1
    return c


def compare(a):
    wa, ra = load(a.a)
    wb, rb = load(a.b)
    ok = wa == wb and all(x == y for x, y in zip(ra, rb))
    n = sum(len(r) for r in ra)
    print(f"{'same' if ok else 'DIFFERENT'}: {n} records of {wa} ranks ({a.a} against {a.b})")
    return 0 if ok else 1


def replayed(a):
    _, src = load(a.src)
    _, got = load(a.got)
    span = a.stop - a.start + 1
    bad, checked = 0, 0
    for rank, recs in enumerate(got):
        total_src, total_got = {}, {}
        for i in sorted(recs):
            want = src[rank][a.start + i % span]
            for layer, rows in recs[i].items():
                checked += 1
                if rows != want[layer]:
                    bad += 1
                    print(f"rank {rank} iteration {i} layer {layer}: not the file's iteration {a.start + i % span}")
                experts = max(max(r) for r in rows) + 1
                for e, c in enumerate(counts(rows, experts)):
                    total_got[(layer, e)] = total_got.get((layer, e), 0) + c
                for e, c in enumerate(counts(want[layer], experts)):
                    total_src[(layer, e)] = total_src.get((layer, e), 0) + c
        same_counts = all(total_got.get(k, 0) == v for k, v in total_src.items())
        print(f"rank {rank}: {len(recs)} iterations replayed; tokens per expert over them "
              f"{'equal' if same_counts else 'DIFFER from'} the file's")
        bad += not same_counts
    print(f"{'PASS' if not bad else 'FAIL'}: {checked} (iteration, layer) choices checked, {bad} wrong")
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("file")
    m.add_argument("--iterations", type=int, nargs=2, required=True)
    m.add_argument("--layers", type=int, nargs="+", required=True)
    m.add_argument("--tokens", type=int, required=True)
    m.add_argument("--top-k", type=int, required=True)
    m.add_argument("--experts", type=int, required=True)
    m.add_argument("--chunks", type=int, default=1)
    m.add_argument("--skew", type=int, default=0)
    m.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    r = sub.add_parser("replayed")
    r.add_argument("src")
    r.add_argument("got")
    r.add_argument("--start", type=int, required=True)
    r.add_argument("--stop", type=int, required=True)
    a = p.parse_args()
    return {"make": make, "compare": compare, "replayed": replayed}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

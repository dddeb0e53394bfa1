#!/usr/bin/env bash
# e2e_run.sh: real Nsight Systems profiles of a serving loop's markers for `lwb parse --e2e`.
#   test/gpu/e2e_run.sh OUTDIR
# Run on the GPU machine from the repository root, with ./lwb, build/e2e_probe (make
# build/e2e_probe, or ./build.sh gpu) and .dev/nsys-env.sh (it exports NSYS: the nsys binary,
# with the libraries its importer lacks on the library path). Profiles build/e2e_probe three
# times and exports each to SQLite:
#   OUTDIR/e2e_eager.sqlite      --mode eager (MARK: layer ranges, no CUDA graphs)
#   OUTDIR/e2e_graph.sqlite      --mode graph (COLLECT: generation iterations replay CUDA graphs)
#   OUTDIR/e2e_eager_new.sqlite  --mode eager --form new --first-layer 2 (the newer executor text,
#                                layers 2..5)
# then scrubs the capturing machine's metadata from them (environment, command lines, other
# processes, strings nothing refers to; VACUUM) and parses them with lwb parse --e2e and lwb
# correlate. The three .sqlite files are the fixtures test/test_e2e.c reads from test/data/e2e/.
set -u
out=${1:?usage: test/gpu/e2e_run.sh OUTDIR}
mkdir -p "$out"
for f in ./lwb build/e2e_probe .dev/nsys-env.sh; do
    [ -e "$f" ] || { echo "e2e_run: $f is missing (see the header of this script)" >&2; exit 2; }
done
# shellcheck disable=SC1091
source .dev/nsys-env.sh
[ -x "${NSYS:-}" ] || { echo "e2e_run: nsys not found (NSYS is not set by .dev/nsys-env.sh)" >&2; exit 1; }

scrub() { # FILE.sqlite
    python3 - "$1" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
def cols(t):
    return {r[1] for r in db.execute(f'PRAGMA table_info("{t}")')}
for t in ("TARGET_INFO_SYSTEM_ENV", "ANALYSIS_FILE", "DIAGNOSTIC_EVENT"):
    if t in tables:
        db.execute(f'DELETE FROM "{t}"')
if "META_DATA_CAPTURE" in tables:
    db.execute("DELETE FROM META_DATA_CAPTURE WHERE name <> 'CAPTURE_EVENT_TYPE' "
               "AND name NOT LIKE '%CUDA_GRAPH_TRACE_OPTIONS%'")
if "META_DATA_EXPORT" in tables:
    db.execute("DELETE FROM META_DATA_EXPORT WHERE name NOT LIKE 'EXPORT_PRODUCT_%' "
               "AND name NOT LIKE 'EXPORT_SCHEMA_%'")
pid = db.execute("SELECT globalPid FROM CUPTI_ACTIVITY_KIND_KERNEL LIMIT 1").fetchone()[0]
if "PROCESSES" in tables:
    db.execute("DELETE FROM PROCESSES WHERE globalPid <> ?", (pid,))
if "ThreadNames" in tables:
    db.execute("DELETE FROM ThreadNames WHERE globalTid - globalTid % 16777216 <> ?", (pid,))
used = set()
for t in tables:
    for c in cols(t) & {"demangledName", "shortName", "mangledName", "nameId", "textId", "jsonTextId"}:
        used.update(r[0] for r in db.execute(f'SELECT DISTINCT "{c}" FROM "{t}" WHERE "{c}" IS NOT NULL'))
for (i,) in db.execute("SELECT id FROM StringIds").fetchall():
    if i not in used:
        db.execute("UPDATE StringIds SET value = '' WHERE id = ?", (i,))
db.commit()
db.execute("PRAGMA secure_delete = 1")
db.execute("VACUUM")
db.close()
EOF
}

profile() { # NAME PROBE-OPTIONS...
    local name=$1
    shift
    echo "== $name: build/e2e_probe $*"
    rm -f "$out/$name.nsys-rep" "$out/$name.sqlite"
    timeout -s KILL 180 "$NSYS" profile -t cuda,nvtx --cuda-graph-trace node -c cudaProfilerApi \
        --capture-range-end stop -s none --cpuctxsw none -o "$out/$name" --force-overwrite true \
        build/e2e_probe "$@" 2>&1 | tail -8
    timeout -s KILL 120 "$NSYS" export --type sqlite -o "$out/$name.sqlite" --force-overwrite true \
        "$out/$name.nsys-rep" 2>&1 | tail -3
    [ -f "$out/$name.sqlite" ] || { echo "e2e_run: no $out/$name.sqlite" >&2; return 1; }
    scrub "$out/$name.sqlite"
}

profile e2e_eager --mode eager
profile e2e_graph --mode graph
profile e2e_eager_new --mode eager --form new --first-layer 2
ls -l "$out"/*.sqlite

set -x
./lwb parse --e2e --eager-trace "$out/e2e_eager.sqlite" --graph-trace "$out/e2e_graph.sqlite" \
    --layer-indices 1,2 -o "$out/e2e_pair.json"
./lwb parse --e2e --eager-trace "$out/e2e_eager.sqlite" --layer-indices 1,2 -o "$out/e2e_eager.json"
./lwb parse --e2e --eager-trace "$out/e2e_eager_new.sqlite" --layer-indices 3 --target-gen-reqs 5 \
    --warmup-times 1 -o "$out/e2e_new.json"
./lwb correlate --reference "$out/e2e_pair.json" --target "$out/e2e_eager.json" -o "$out/e2e_correlation.html"

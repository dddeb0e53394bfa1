#!/usr/bin/env bash
# ref_parse.sh: TensorRT-LLM's own parse.py on the profiles lwb makes, each next to `lwb parse` of
# the same file, on the GPU machine.
#   test/gpu/ref_parse.sh REF_DIR OUTDIR [PROFILE.sqlite...]
# REF_DIR holds the reference's examples/layer_wise_benchmarks/parse.py with parser_utils.py and
# breakdown_template.html; they stay outside the repository. Profiles: `./lwb run
# configs/config_gen.yaml` by lwb's built-in profiler (profiles/report_np1_rank0.sqlite), the same
# run under Nsight Systems when .dev/nsys-env.sh exports NSYS, then each PROFILE.sqlite given.
# Each is parsed from OUTDIR, as parse.py writes its .csv, .html and .json beside its input.
# parse.py takes an .nsys-rep and runs `nsys export` unless the .sqlite beside it is newer: lwb's
# own profiles have none, so an empty one dated 1970 stands in. It needs python3 with numpy,
# pandas and jinja2 (numba is optional). Exit status: how many profiles parse.py failed on (or
# that were not made).
set -u
usage="usage: test/gpu/ref_parse.sh REF_DIR OUTDIR [PROFILE.sqlite...]"
ref=${1:?$usage}
out=${2:?$usage}
shift 2
[ -f "$ref/parse.py" ] || { echo "ref_parse: $ref has no parse.py" >&2; exit 2; }
ref=$(cd "$ref" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
export LWB_CACHE_DIR=${LWB_CACHE_DIR:-/tmp/lwb-cache}
failed=0

python3 - <<'EOF'
import importlib
for name in ["numpy", "pandas", "jinja2", "numba"]:
    try:
        print(f"python3: {name} {importlib.import_module(name).__version__}")
    except ImportError:
        print(f"python3: {name} missing" + (" (optional)" if name == "numba" else ""))
EOF

# How a profile stores NVTX names: inline text or registered strings, in which domains.
nvtx_rows() {
    python3 - "$1" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print("NVTX_EVENTS by eventType, domainId, text, textId:")
for t, dom, text, tid, n in db.execute(
        "SELECT eventType, domainId, text IS NOT NULL, textId IS NOT NULL, count(*) FROM NVTX_EVENTS "
        "GROUP BY 1, 2, 3, 4"):
    print(f"  eventType {t}  domainId {dom}  text {'set' if text else 'NULL'}  "
          f"textId {'set' if tid else 'NULL'}  rows {n}")
for dom, text, tid in db.execute("SELECT domainId, text, textId FROM NVTX_EVENTS WHERE eventType = 75"):
    print(f"  domain create: domainId {dom}  text {text!r}  textId {tid}")
names = db.execute("SELECT coalesce(n.text, s.value) FROM NVTX_EVENTS n LEFT JOIN StringIds s "
                   "ON s.id = n.textId WHERE n.eventType = 59 ORDER BY n.start LIMIT 3").fetchall()
print("  first ranges:", [r[0][:60] for r in names])
EOF
}

# both DIR: parse.py and lwb parse on the one DIR/*.sqlite.
both() {
    local dir=$1 db rep rc
    db=$(ls "$dir"/*.sqlite | head -1)
    rep=${db%.sqlite}.nsys-rep
    if [ ! -f "$rep" ]; then
        : >"$rep"
        touch -d @0 "$rep"
    fi
    echo
    echo "=================== $db"
    nvtx_rows "$db"
    echo "------------------- TensorRT-LLM parse.py --file-path $(basename "$rep")"
    (cd "$dir" && timeout -s KILL 600 python3 "$ref/parse.py" --file-path "$(basename "$rep")") \
        >"$dir/parse_py.log" 2>&1
    rc=$?
    cat "$dir/parse_py.log"
    echo "(parse.py exit $rc)"
    [ $rc -eq 0 ] || failed=$((failed + 1))
    echo "------------------- lwb parse --file-path $db"
    mkdir -p "$dir/lwb_parse"
    timeout -s KILL 300 ./lwb parse --file-path "$db" --output-dir "$dir/lwb_parse" 2>&1 | tee "$dir/lwb_parse.log"
    echo "(lwb parse exit ${PIPESTATUS[0]})"
}

echo "\$ ./lwb run configs/config_gen.yaml"
timeout -s KILL 600 ./lwb run configs/config_gen.yaml >"$out/lwb_run.log" 2>&1
echo "(exit $?)"
tail -5 "$out/lwb_run.log"
mkdir -p "$out/lwb"
if cp profiles/report_np1_rank0.sqlite "$out/lwb/"; then both "$out/lwb"; else failed=$((failed + 1)); fi

if [ -f .dev/nsys-env.sh ]; then
    # shellcheck disable=SC1091
    source .dev/nsys-env.sh
    if [ -x "${NSYS:-}" ]; then
        PATH=$(dirname "$NSYS"):$PATH # parse.py calls nsys export if the .sqlite is older
        mkdir -p "$out/nsys"
        echo "\$ nsys profile ... ./lwb run configs/config_gen.yaml"
        timeout -s KILL 600 "$NSYS" profile -t cuda,nvtx --cuda-graph-trace node -c cudaProfilerApi \
            --capture-range-end stop -s none --cpuctxsw none -o "$out/nsys/report_np1_rank0" \
            --force-overwrite true ./lwb run configs/config_gen.yaml >"$out/nsys_run.log" 2>&1
        echo "(exit $?)"
        tail -5 "$out/nsys_run.log"
        timeout -s KILL 300 "$NSYS" export --type sqlite -o "$out/nsys/report_np1_rank0.sqlite" \
            --force-overwrite=true "$out/nsys/report_np1_rank0.nsys-rep" 2>&1 | tr '\r' '\n' | tail -2
        if [ -f "$out/nsys/report_np1_rank0.sqlite" ]; then both "$out/nsys"; else failed=$((failed + 1)); fi
    fi
fi

k=0
for f in "$@"; do
    k=$((k + 1))
    mkdir -p "$out/given$k"
    cp "$f" "$out/given$k/" && both "$out/given$k"
done
echo
echo "ref_parse: $failed parse.py run(s) failed"
exit $failed

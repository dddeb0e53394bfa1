#!/usr/bin/env bash
# bad_inputs.sh [LWB]: lwb as a hostile user meets it, without a GPU: several hundred bad inputs
# of six kinds, each run in a folder of its own, each checked for
#   - an exit code of 0, 1 or 2 (3 is a defect, 128 and up a crash), within 20 s (else a hang);
#   - exactly one line on stderr when it fails, and no raw control character in any output;
#   - no file left behind in the case's folder and no input changed (a clobbered file).
# Kinds: integers (options, YAML values, config.json fields), tables (many layers, long lists,
# many problems), profiles (broken fields, impossible times, corrupt files), special files
# (FIFOs, devices, folders, huge or deeply nested files), outputs (an output that is an input, a
# link, a device, a folder), text (newlines and terminal escapes in names and values), routing
# (calibration files: every field broken, corrupt or oversized raw_data, replay ranges).
# LWB is the binary to try (default ./lwb; CI runs the sanitizer build too). Prints a table of
# counts per kind and ends with "N passed, M failed" (a case with any fault fails).
set -u
cd "$(dirname "$0")/.."
root=$PWD
LWB=$(readlink -f "${1:-./lwb}")
FIX=$root/build/test_trace # writes the layer-wise profile fixture, optionally broken by SQL
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ESC=$'\e'
declare -A tried clean crash hang clobber lines raw
kinds="integers tables profiles special outputs text routing"
for k in $kinds; do tried[$k]=0 clean[$k]=0 crash[$k]=0 hang[$k]=0 clobber[$k]=0 lines[$k]=0 raw[$k]=0; done
n=0
failed=0
case_dir=""

# new_case: a fresh folder with the standard inputs (configs, a copy of the R1 preset as a model dir).
new_case() {
    n=$((n + 1))
    case_dir=$work/c$n
    mkdir -p "$case_dir"
    cp configs/config_gen.yaml configs/config_ctx.yaml "$case_dir/"
}
# snapshot: every file under the case folder with its checksum (device nodes and FIFOs by type).
snapshot() {
    (cd "$case_dir" && find . -mindepth 1 \( -type f -exec md5sum {} + \) -o \( ! -type f -printf '%y %p\n' \) | sort)
}
# try KIND [--ok FILE...] -- ARGS...: run lwb ARGS in the case folder; FILEs may appear on success.
try() {
    local kind=$1
    shift
    local allowed=()
    while [ "$1" != -- ]; do
        [ "$1" = --ok ] || allowed+=("$1")
        shift
    done
    shift
    local before after rc fault=""
    before=$(snapshot)
    (cd "$case_dir" && timeout -s KILL 20 "$LWB" "$@" >"$work/out" 2>"$work/err" </dev/null)
    rc=$?
    after=$(snapshot)
    tried[$kind]=$((tried[$kind] + 1))
    if [ $rc = 137 ]; then
        hang[$kind]=$((hang[$kind] + 1)); fault="hang"
    elif [ $rc -ge 3 ]; then
        crash[$kind]=$((crash[$kind] + 1)); fault="exit $rc"
    fi
    # Every message is one line of its own ("lwb: ..."; warnings may precede the error).
    if [ $rc != 0 ] && [ $rc != 137 ] && { [ ! -s "$work/err" ] || grep -qv '^lwb[:[]' "$work/err"; }; then
        lines[$kind]=$((lines[$kind] + 1)); fault="$fault, a message spans lines (or none was printed)"
    fi
    if LC_ALL=C grep -q "[$ESC]" "$work/out" "$work/err" 2>/dev/null; then
        raw[$kind]=$((raw[$kind] + 1)); fault="$fault, raw escape printed"
    fi
    if [ "$before" != "$after" ]; then
        # On success the declared outputs may appear; nothing else may change.
        local extra
        extra=$(diff <(echo "$before") <(echo "$after") | grep '^[<>]')
        local bad=""
        while read -r line; do
            [ -n "$line" ] || continue
            local ok=0
            if [ $rc = 0 ] && [ "${line:0:1}" = ">" ]; then
                for f in "${allowed[@]}"; do [[ "$line" == *" ./$f" ]] && ok=1; done
            fi
            [ $ok = 1 ] || bad="$bad $line"
        done <<<"$extra"
        if [ -n "$bad" ]; then
            clobber[$kind]=$((clobber[$kind] + 1)); fault="$fault, files changed:$bad"
        fi
    fi
    if [ -n "$fault" ]; then
        failed=$((failed + 1))
        echo "FAIL [$kind] lwb $(printf '%q ' "$@" | cut -c1-200): ${fault#, }"
        head -c 300 "$work/err" | sed 's/^/    /'
    else
        clean[$kind]=$((clean[$kind] + 1))
    fi
}

# --- 1. integers: options, YAML values, config.json fields ------------------------------------
values=(-1 0 1 2147483648 4294967297 9223372036854775808 99999999999999999999999 1e3 0x10 abc "" " " "1,,2" ",1"
        "1," 3.5 "1 2" "+5" "-0" "007")
for opt in batch-size seq-len-q seq-len-kv-cache max-batch-size max-seq-len max-num-tokens tokens-per-block \
    layer-indices scaled-from warmup-times run-times seed device np rendezvous-timeout comm-timeout; do
    for v in "${values[@]}"; do
        new_case
        try integers -- run config_gen.yaml --dry-run "--$opt" "$v"
    done
done
for key in batch_size seq_len_kv_cache max_seq_len warmup_times scaled_from layer_indices tokens_per_block; do
    for v in -1 0 2147483648 9223372036854775808 "[1, 2147483648]" "[1, abc]" "{a: 1}" "[]" "[[1]]" "1e3" "null"; do
        new_case
        grep -v "^$key:" configs/config_gen.yaml >"$case_dir/c.yaml"
        echo "$key: $v" >>"$case_dir/c.yaml"
        try integers -- run c.yaml --dry-run
    done
done
for field in hidden_size num_attention_heads n_routed_experts num_experts_per_tok n_group topk_group \
    moe_intermediate_size num_hidden_layers kv_lora_rank max_position_embeddings first_k_dense_replace; do
    for v in -1 0 2147483648 1e30 '"x"' null 3.5 99999999999999999999; do
        new_case
        mkdir "$case_dir/m"
        sed -E "s/(\"$field\": )[^,]*/\1$v/" configs/models/deepseek-ai__DeepSeek-R1.json >"$case_dir/m/config.json"
        try integers -- run config_gen.yaml --dry-run --model m
    done
done

# --- 2. tables: many layers, long lists, many problems ----------------------------------------
new_case
try tables -- run config_gen.yaml --dry-run --layer-indices "$(seq -s, 3 60)"
new_case
mkdir "$case_dir/m"
sed -E 's/("num_hidden_layers": )[0-9]+/\161/; s/("first_k_dense_replace": )[0-9]+/\11/' \
    test/gpu/small_deepseek/config.json >"$case_dir/m/config.json"
try tables -- run config_gen.yaml --dry-run --model m --layer-indices "$(seq -s, 0 60)"
new_case
try tables -- run config_gen.yaml --dry-run --model "$root/test/gpu/small_deepseek" --layer-indices 0,1,2,3,0
for lists in 256 257 1000; do
    new_case
    try tables -- run config_gen.yaml --dry-run --batch-size "$(seq -s, 1 $lists)"
done
new_case
l=$(seq -s, 1 256)
try tables -- run config_gen.yaml --dry-run --batch-size "$l" --seq-len-q "$l" --seq-len-kv-cache "$l" --balance-ratio "$l"
new_case
{ echo "batch_size:"; seq 1 70000 | sed 's/^/- /'; } >"$case_dir/big.yaml"
try tables -- run big.yaml --dry-run --model deepseek-ai/DeepSeek-R1
new_case
try tables -- run config_gen.yaml --dry-run --seq-len-kv-cache 8388608 --max-batch-size 65535 --batch-size 65535 \
    --max-num-tokens 1048576
new_case
try tables -- run config_ctx.yaml --dry-run --seq-len-q 1048576 --max-num-tokens 1048576 --max-seq-len 8388608
new_case
try tables -- run config_ctx.yaml --dry-run --batch-size 16 --seq-len-q 65536 --max-num-tokens 1048576
new_case
try tables -- run config_gen.yaml --dry-run --np 64 --batch-size 65535 --max-num-tokens 1048576

# --- 3. profiles: broken fields, impossible times, corrupt files ------------------------------
prof_case() { # prof_case SQL: a fixture profile p.sqlite broken by SQL
    new_case
    "$FIX" --write-fixture "$case_dir" p.sqlite "$1" >/dev/null 2>&1
}
out3=(--ok p.csv --ok p.json --ok p.html)
for w in 2147483648 4294967295 -1 '"x"' 1e20 9223372036854775807 null '[1]'; do
    prof_case "UPDATE StringIds SET value = replace(value, '\"warmup_times\": 1', '\"warmup_times\": $w') WHERE value LIKE 'layer_wise_benchmarks args%';"
    try profiles "${out3[@]}" -- parse --file-path p.sqlite
done
for upd in "end = start - 5" "start = -10" "end = 9223372036854775807" "start = -9223372036854775808" \
    "start = 9223372036854775807, end = -9223372036854775808" "end = NULL" "start = NULL" "start = 'x'" \
    "demangledName = 999999" "demangledName = NULL, shortName = NULL" "correlationId = NULL" "streamId = -1" \
    "deviceId = 70000" "globalPid = -1"; do
    prof_case "UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET $upd WHERE rowid % 2 = 0;"
    try profiles "${out3[@]}" -- parse --file-path p.sqlite
    prof_case "UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET $upd WHERE rowid % 2 = 0;"
    try profiles "${out3[@]}" -- parse --file-path p.sqlite --strict
done
for upd in "end = start - 1" "start = -1" "end = 9223372036854775807" "text = NULL, textId = 999999" "globalTid = NULL" \
    "eventType = 999"; do
    prof_case "UPDATE NVTX_EVENTS SET $upd WHERE rowid % 3 = 0;"
    try profiles "${out3[@]}" -- parse --file-path p.sqlite
done
for t in StringIds CUPTI_ACTIVITY_KIND_KERNEL NVTX_EVENTS CUPTI_ACTIVITY_KIND_RUNTIME META_DATA_EXPORT; do
    prof_case "DROP TABLE $t;"
    try profiles "${out3[@]}" -- parse --file-path p.sqlite
done
prof_case "UPDATE StringIds SET value = 'b=1 s=1 past=100' || char(10) || 'NP1' WHERE value = 'b=1 s=1 past=100 NP1';"
try profiles "${out3[@]}" -- parse --file-path p.sqlite
new_case
head -c 100000 /dev/urandom >"$case_dir/p.sqlite"
try profiles -- parse --file-path p.sqlite
new_case
: >"$case_dir/p.sqlite"
try profiles -- parse --file-path p.sqlite
new_case
"$FIX" --write-fixture "$case_dir" full.sqlite >/dev/null 2>&1
head -c 8192 "$case_dir/full.sqlite" >"$case_dir/p.sqlite"
try profiles -- parse --file-path p.sqlite
new_case
echo "not a database" >"$case_dir/p.sqlite"
try profiles -- parse --file-path p.sqlite
new_case
try profiles -- parse --np 3 --rank 7 --profile-dir .
for w in -1 2147483648 1000001; do
    prof_case ""
    try profiles -- parse --file-path p.sqlite --warmup-times "$w"
done

# --- 4. special files: FIFOs, devices, folders, huge and deeply nested files ------------------
new_case
mkfifo "$case_dir/f.yaml"
try special -- run f.yaml --dry-run
new_case
try special -- run /dev/null --dry-run
new_case
try special -- run /dev/zero --dry-run
new_case
mkdir "$case_dir/d.yaml"
try special -- run d.yaml --dry-run
new_case
mkdir "$case_dir/m" && mkfifo "$case_dir/m/config.json"
try special -- run config_gen.yaml --dry-run --model m
new_case
mkdir "$case_dir/m" && ln -s /dev/zero "$case_dir/m/config.json"
try special -- run config_gen.yaml --dry-run --model m
new_case
mkdir -p "$case_dir/m/config.json"
try special -- run config_gen.yaml --dry-run --model m
new_case
mkdir "$case_dir/m" && cp configs/models/deepseek-ai__DeepSeek-R1.json "$case_dir/m/config.json" &&
    mkfifo "$case_dir/m/hf_quant_config.json"
try special -- run config_gen.yaml --dry-run --model m
new_case
mkdir "$case_dir/m" && { printf '{"hidden_size": 7168, "pad": "'; head -c 20000000 /dev/zero | tr '\0' x; echo '"}'; } >"$case_dir/m/config.json"
try special -- run config_gen.yaml --dry-run --model m
new_case
{ cat configs/config_gen.yaml; printf '# '; head -c 2000000 /dev/zero | tr '\0' x; echo; } >"$case_dir/huge.yaml"
try special -- run huge.yaml --dry-run
new_case
{ printf 'batch_size: '; head -c 100000 /dev/zero | tr '\0' '['; echo; } >"$case_dir/deep.yaml"
try special -- run deep.yaml --dry-run
new_case
{ echo "a: &a [1, 2]"; for i in $(seq 1 20000); do echo "k$i: *a"; done; } >"$case_dir/alias.yaml"
try special -- run alias.yaml --dry-run
new_case
{ echo "x: &x [1]"; echo "batch_size: *x"; echo "seq_len_q: *x"; } >"$case_dir/few.yaml"
try special -- run few.yaml --dry-run --model deepseek-ai/DeepSeek-R1 --layer-indices 5 --run-type GEN \
    --seq-len-kv-cache 10
new_case
mkfifo "$case_dir/ref.json"
echo '[{"name": "t", "timeline": []}]' >"$case_dir/tgt.json"
try special -- correlate --reference ref.json --target tgt.json -o out.html
new_case
echo '[{"name": "t", "timeline": []}]' >"$case_dir/ref.json"
mkfifo "$case_dir/tgt.json"
try special -- correlate --reference ref.json --target tgt.json -o out.html
new_case
mkfifo "$case_dir/p.sqlite"
try special -- parse --file-path p.sqlite
new_case
try special -- parse --file-path /dev/zero
new_case
try special -- correlate --reference /dev/zero --target /dev/zero -o out.html
new_case
{ printf '['; head -c 3000000 /dev/zero | tr '\0' '['; } >"$case_dir/deep.json"
try special -- correlate --reference deep.json --target deep.json -o out.html

# --- 5. outputs: an input, a link, a device, a folder ------------------------------------------
# A device node of the case's own (a copy of /dev/null's when root may make one, else a FIFO):
# the system's /dev/null is never offered to a binary under test.
devnode() { mknod "$case_dir/null" c 1 3 2>/dev/null || mkfifo "$case_dir/null"; }
new_case
"$FIX" --write-fixture "$case_dir" report.json >/dev/null 2>&1
try outputs -- parse --file-path report.json
new_case
"$FIX" --write-fixture "$case_dir" p.sqlite >/dev/null 2>&1
try outputs -- parse --file-path p.sqlite --trace-json p.sqlite
new_case
"$FIX" --write-fixture "$case_dir" p.sqlite >/dev/null 2>&1
echo victim >"$case_dir/victim"
ln -s victim "$case_dir/trace.json"
try outputs -- parse --file-path p.sqlite --trace-json trace.json
new_case
"$FIX" --write-fixture "$case_dir" p.sqlite >/dev/null 2>&1
echo victim >"$case_dir/victim"
ln -s victim "$case_dir/p.csv"
try outputs -- parse --file-path p.sqlite
new_case
"$FIX" --write-fixture "$case_dir" p.sqlite >/dev/null 2>&1
devnode
try outputs -- parse --file-path p.sqlite --trace-json null
new_case
"$FIX" --write-fixture "$case_dir" p.sqlite >/dev/null 2>&1
try outputs -- parse --file-path p.sqlite --trace-json p.csv
new_case
"$FIX" --write-fixture "$case_dir" p.sqlite >/dev/null 2>&1
mkdir "$case_dir/p.json"
try outputs -- parse --file-path p.sqlite
new_case
"$FIX" --write-fixture "$case_dir" p.sqlite >/dev/null 2>&1
mkfifo "$case_dir/t.json"
try outputs -- parse --file-path p.sqlite --trace-json t.json
new_case
echo broken >"$case_dir/p.sqlite"
try outputs -- parse --file-path p.sqlite --output-dir new/folder
new_case
"$FIX" --write-fixture "$case_dir" p.sqlite >/dev/null 2>&1
try outputs --ok new --ok new/folder --ok new/folder/p.csv --ok new/folder/p.json --ok new/folder/p.html -- \
    parse --file-path p.sqlite --output-dir new/folder
new_case
echo '[{"name": "r", "timeline": [{"name": "k", "duration": 1, "end": 1}]}]' >"$case_dir/ref.json"
cp "$case_dir/ref.json" "$case_dir/tgt.json"
try outputs -- correlate --reference ref.json --target tgt.json -o ref.json
try outputs -- correlate --reference ref.json --target tgt.json -o tgt.json
devnode
try outputs -- correlate --reference ref.json --target tgt.json -o null
ln -s ref.json "$case_dir/link.html"
try outputs -- correlate --reference ref.json --target tgt.json -o link.html
mkdir "$case_dir/d.html"
try outputs -- correlate --reference ref.json --target tgt.json -o d.html
try outputs -- correlate --reference ref.json --target tgt.json -o ""
try outputs --ok out.html -- correlate --reference ref.json --target tgt.json -o out.html
new_case
try outputs -- run config_gen.yaml --dry-run --output-json config_gen.yaml
new_case
mkdir "$case_dir/o.json"
try outputs -- run config_gen.yaml --dry-run --output-json o.json
new_case
devnode
try outputs -- run config_gen.yaml --dry-run --output-json null
new_case
echo x >"$case_dir/d"
try outputs -- run config_gen.yaml --dry-run --dump d

# --- 6. text: newlines and terminal escapes in names and values -------------------------------
evil=$'a\nb\e[31m\e]0;title\a'
new_case
try text -- run config_gen.yaml --dry-run --model "$evil"
new_case
try text -- run "$evil.yaml" --dry-run
new_case
printf 'model: deepseek-ai/DeepSeek-R1\n"bad\\x1b[31mkey": 1\n' >"$case_dir/k.yaml"
try text -- run k.yaml --dry-run
new_case
printf 'batch_size: "1\\e[31m"\n' >"$case_dir/v.yaml"
try text -- run v.yaml --dry-run --model deepseek-ai/DeepSeek-R1
new_case
try text -- run config_gen.yaml --dry-run --moe-backend "$evil"
new_case
try text -- run config_gen.yaml --dry-run --balance-method "$evil"
new_case
try text -- run config_gen.yaml --dry-run "--$evil"
new_case
try text -- "$evil"
prof_case "UPDATE StringIds SET value = 'k' || char(27) || '[2J' || char(10) || 'x' WHERE id IN (SELECT demangledName FROM CUPTI_ACTIVITY_KIND_KERNEL LIMIT 1);"
try text "${out3[@]}" -- parse --file-path p.sqlite
prof_case "UPDATE StringIds SET value = 'MLA' || char(27) || ']0;x' || char(7) WHERE value = 'MLA';"
try text "${out3[@]}" -- parse --file-path p.sqlite
prof_case ""
try text "${out3[@]}" -- parse --file-path p.sqlite --query "$evil"
prof_case ""
try text "${out3[@]}" -- parse --file-path p.sqlite --module "$evil"
new_case
printf '[{"name": "r\\u001b[31m\\n", "timeline": [{"name": "k\\u001b]0;t\\u0007", "duration": 1, "end": 1}]}]' \
    >"$case_dir/ref.json"
cp "$case_dir/ref.json" "$case_dir/tgt.json"
try text --ok out.html -- correlate --reference ref.json --target tgt.json -o out.html
new_case
printf '[{"name": "r", "timeline": [{"name": "k", "duration": "x\\u001b[31m", "end": 1}]}]' >"$case_dir/ref.json"
try text -- correlate --reference ref.json --target ref.json -o out.html

# --- 7. routing: calibration files for --replay-file-path ---------------------------------------
# A good file (two MoE layers of the reduced model, 4 tokens, top-6 of 64), then each field broken.
small=(--model "$root/test/gpu/small_deepseek" --layer-indices 0,1,2 --batch-size 4 --balance-method NotModified)
calib_cases=$work/calib_cases
mkdir -p "$calib_cases"
python3 - "$calib_cases" <<'PY'
import base64, json, os, struct, sys, zlib
out = sys.argv[1]
def raw(vals):
    return base64.b64encode(zlib.compress(struct.pack("<%di" % len(vals), *vals))).decode()
def rec(it, layers=(1, 2), tokens=4, k=6, slots=64):
    meta, vals = [], []
    for l in layers:
        meta.append({"layer_idx": l, "num_slots": slots, "token_selected_slots_shape": [tokens, k]})
        vals += [(t * 7 + j * 5 + l) % slots for t in range(tokens) for j in range(k)]
    return {"iteration": it, "metadata": meta, "raw_data": raw(vals)}
good = {"world_size": 1, "all_ranks_records": [[rec(i) for i in range(3)]]}
cases = {}
def mutate(name, f):
    d = json.loads(json.dumps(good)); f(d); cases[name] = json.dumps(d)
for v in (-1, 0, 2, 1e9, "1", None, [], 99999999999999999999):
    mutate(f"ws_{v!r}", lambda d, v=v: d.__setitem__("world_size", v))
for v in (None, {}, "x", [], [[], []], [{}]):
    mutate(f"all_{v!r}", lambda d, v=v: d.__setitem__("all_ranks_records", v))
R = lambda d: d["all_ranks_records"][0][0]
for v in (-1, "3", 1.5, None, 2 ** 63, 1):
    mutate(f"it_{v!r}", lambda d, v=v: R(d).__setitem__("iteration", v))
for v in (None, {}, "m", [1], [[]], [{}]):
    mutate(f"meta_{v!r}", lambda d, v=v: R(d).__setitem__("metadata", v))
M = lambda d: R(d)["metadata"][0]
for key, vals in (("layer_idx", (-1, 10 ** 9, "1", None)), ("num_slots", (0, -5, 2 ** 40, 63, 65)),
                  ("token_selected_slots_shape", ([4], [4, 6, 1], [-1, 6], [4, 0], [4, 2000], [2 ** 30, 6],
                                                  ["4", 6], None, [3, 6], [5, 6], [4, 5]))):
    for v in vals:
        mutate(f"m_{key}_{v!r}", lambda d, key=key, v=v: M(d).__setitem__(key, v))
bomb = base64.b64encode(zlib.compress(b"\0" * (64 << 20))).decode()
for name, v in (("empty", ""), ("notb64", "!!!!"), ("short", R(good)["raw_data"][:-4]), ("nozlib", "AAAAAAAA"),
                ("more", raw(list(range(4 * 6 * 2 + 1)))), ("fewer", raw([1, 2, 3])), ("range", raw([64] * 48)),
                ("neg", raw([-1] * 48)), ("num", 5), ("bomb", bomb)):
    mutate(f"raw_{name}", lambda d, v=v: R(d).__setitem__("raw_data", v))
mutate("dup_iteration", lambda d: d["all_ranks_records"][0].append(rec(0)))
mutate("gap", lambda d: d["all_ranks_records"][0].append(rec(7)))
mutate("dense_layer", lambda d: d["all_ranks_records"][0].__setitem__(0, rec(0, layers=(0, 1, 2))))
mutate("missing_layer", lambda d: d["all_ranks_records"][0].__setitem__(0, rec(0, layers=(1,))))
mutate("top_k", lambda d: d["all_ranks_records"][0].__setitem__(0, rec(0, k=8)))
mutate("declared_huge", lambda d: M(d).__setitem__("token_selected_slots_shape", [1 << 24, 1024]))
cases["many_entries"] = json.dumps({"world_size": 1, "all_ranks_records": [[{"iteration": 0, "metadata": [
    {"layer_idx": 1, "num_slots": 64, "token_selected_slots_shape": [0, 6]}] * 200000, "raw_data": raw([])}]]})
cases["not_json"] = '{"world_size": 1, "all_ranks_records": [[{'
cases["dup_key"] = '{"world_size": 1, "world_size": 1, "all_ranks_records": [[]]}'
for i, (name, text) in enumerate(sorted(cases.items())):
    with open(os.path.join(out, "%03d.json" % i), "w") as f:
        f.write(text)
with open(os.path.join(out, "good.json"), "w") as f:
    json.dump(good, f)
PY
for f in "$calib_cases"/[0-9]*.json; do
    new_case
    cp "$f" "$case_dir/cal.json"
    try routing -- run config_gen.yaml "${small[@]}" --dry-run --replay-file-path cal.json
done
for range in "0 0" "2 0" "0 3" "-1 2" "1 99999999999999999999" "9223372036854775807 9223372036854775807" "x 1"; do
    read -r a b <<<"$range"
    new_case
    cp "$calib_cases/good.json" "$case_dir/cal.json"
    try routing -- run config_gen.yaml "${small[@]}" --dry-run --replay-file-path cal.json \
        --replay-start-iter "$a" --replay-stop-iter "$b"
done
new_case
cp "$calib_cases/good.json" "$case_dir/cal.json"
try routing -- run config_gen.yaml "${small[@]}" --replay-file-path cal.json --collect-calibration cal.json
devnode
try routing -- run config_gen.yaml "${small[@]}" --collect-calibration null
mkdir "$case_dir/dir.json"
try routing -- run config_gen.yaml "${small[@]}" --collect-calibration dir.json
try routing -- run config_gen.yaml "${small[@]}" --dry-run --replay-file-path null

# --- the counts ---------------------------------------------------------------------------------
printf '%-10s %6s %8s %8s %6s %10s %10s %8s\n' kind tried clean crashes hangs clobbered multiline escapes
total=0
for k in $kinds; do
    printf '%-10s %6d %8d %8d %6d %10d %10d %8d\n' "$k" "${tried[$k]}" "${clean[$k]}" "${crash[$k]}" "${hang[$k]}" \
        "${clobber[$k]}" "${lines[$k]}" "${raw[$k]}"
    total=$((total + tried[$k]))
done
echo "$((total - failed)) passed, $failed failed"
[ "$failed" = 0 ]

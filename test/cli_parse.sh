#!/usr/bin/env bash
# cli_parse.sh: `lwb parse` and `lwb correlate` as a user meets them: inputs (--file-path,
# --profile-dir/--np/--rank, .nsys-rep with and without nsys on the PATH), outputs, errors (one
# line, right exit code, nothing half-written). Ends with "N passed, M failed".
# shellcheck source=test/lib_cli.sh
source "$(dirname "$0")/lib_cli.sh"

expect 0 "parse help" -- "$lwb" parse --help
has "$tmp/out" "--file-path FILE"; has "$tmp/out" "--world-size N"; has "$tmp/out" "--[no-]error-on-unknown-kernel"
has "$tmp/out" "--trace-json FILE"
done_case "parse --help lists the options"

expect 2 "parse without input" -- "$lwb" parse
has "$tmp/err" "give exactly one of --file-path FILE and --world-size N"; one_line_err
done_case "parse needs an input"

expect 2 "two inputs" -- "$lwb" parse --file-path x.sqlite --np 2
has "$tmp/err" "exactly one of"; one_line_err
done_case "parse refuses --file-path with --np"

expect 2 "missing file" -- "$lwb" parse --file-path "$tmp/none.sqlite"
has "$tmp/err" "none.sqlite: cannot open the profile"; one_line_err
done_case "a missing profile is one line"

# The real nsys exports, each in a folder of its own; outputs land beside them.
for f in test/data/nsys/*.sqlite; do
    name=$(basename "$f" .sqlite)
    mkdir -p "$tmp/$name"
    cp "$f" "$tmp/$name/"
    chmod u+w "$tmp/$name/$name.sqlite"
    expect 0 "parse $name" -- "$lwb" parse --file-path "$tmp/$name/$name.sqlite"
    has "$tmp/out" "No layer_wise_benchmarks markers"
    check "$name: .csv .json .html written" \
        "[ -s '$tmp/$name/$name.csv' ] && [ -s '$tmp/$name/$name.json' ] && [ -s '$tmp/$name/$name.html' ]"
    done_case "parse $name (per-range summary, three files)"
done

# The layer-wise fixture through --profile-dir / --np / --rank, against the golden stdout.
mkdir -p "$tmp/lw/profiles"
build/test_trace --write-fixture "$tmp/lw/profiles" report_np2_rank1.sqlite
expect 0 "layer-wise" -- bash -c "cd '$tmp/lw/profiles' && '$lwb' parse --np 2 --rank 1 --profile-dir ."
sed 's/report_np1_rank0/report_np2_rank1/g' test/data/layerwise.stdout >"$tmp/golden"
check "stdout equals test/data/layerwise.stdout" "cmp -s '$tmp/out' '$tmp/golden'"
check "CSV equals test/data/layerwise.csv" "cmp -s '$tmp/lw/profiles/report_np2_rank1.csv' test/data/layerwise.csv"
done_case "parse --np 2 --rank 1 --profile-dir: the golden breakdown"

expect 2 "no such rank" -- "$lwb" parse --np 2 --rank 0 --profile-dir "$tmp/lw/profiles"
has "$tmp/err" "no profile for rank 0 of 2"; one_line_err
done_case "a missing rank's profile is one line"

expect 0 "trace json" -- "$lwb" parse --np 2 --rank 1 --profile-dir "$tmp/lw/profiles" --output-dir "$tmp/lw/out" \
    --trace-json "$tmp/lw/trace.json"
check "trace written" "grep -q '\"traceEvents\"' '$tmp/lw/trace.json'"
check "outputs in --output-dir" "[ -s '$tmp/lw/out/report_np2_rank1.html' ]"
done_case "parse --output-dir --trace-json"

# Errors leave nothing behind.
rm -f "$tmp"/lw/profiles/report_np2_rank1.{csv,json,html}
expect 2 "warm-up too long" -- "$lwb" parse --np 2 --rank 1 --profile-dir "$tmp/lw/profiles" --warmup-times 5
has "$tmp/err" "has 3 runs and warm-up drops 5"
check "no output files" "[ \$(ls '$tmp/lw/profiles' | wc -l) = 1 ]"
done_case "a failed parse writes no file"

# .nsys-rep: exported by nsys from the PATH; without nsys, one line saying how.
mkdir -p "$tmp/rep" "$tmp/bin"
echo "not a real report" >"$tmp/rep/run.nsys-rep"
expect 2 "no nsys" -- env PATH=/nonexistent "$lwb" parse --file-path "$tmp/rep/run.nsys-rep"
has "$tmp/err" "nsys is not on the PATH; run 'nsys export --type sqlite -o $tmp/rep/run.sqlite --force-overwrite=true $tmp/rep/run.nsys-rep'"
one_line_err
done_case ".nsys-rep without nsys: one line with the export command"

cat >"$tmp/bin/nsys" <<EOS
#!/bin/sh
# A stand-in for nsys: "export --type sqlite -o OUT --force-overwrite=true IN" copies a fixture.
[ "\$1 \$2 \$3 \$4" = "export --type sqlite -o" ] && [ "\$6" = "--force-overwrite=true" ] || exit 3
cp "$PWD/test/data/nsys/nvfuser_matmul_nsys2024.6.sqlite" "\$5" && chmod u+w "\$5"
EOS
chmod +x "$tmp/bin/nsys"
expect 0 "fake nsys" -- env PATH="$tmp/bin:$PATH" "$lwb" parse --file-path "$tmp/rep/run.nsys-rep"
has "$tmp/err" "exporting $tmp/rep/run.nsys-rep with nsys"
has "$tmp/out" "19 kernels, 1 memcpy, 1 memset"
check "run.sqlite and run.csv written" "[ -s '$tmp/rep/run.sqlite' ] && [ -s '$tmp/rep/run.csv' ]"
done_case ".nsys-rep exported with nsys when the .sqlite is missing"

printf '#!/bin/sh\necho "nsys: failed" >&2\nexit 1\n' >"$tmp/bin/nsys"
touch "$tmp/rep/run.nsys-rep"
sleep 0.01
touch "$tmp/rep/run.nsys-rep"
expect 1 "nsys fails" -- env PATH="$tmp/bin:$PATH" "$lwb" parse --file-path "$tmp/rep/run.nsys-rep"
has "$tmp/err" "failed (exit 1)"
done_case "a failing nsys export is reported"

# correlate
expect 0 "correlate" -- "$lwb" correlate --reference test/data/correlate_ref.json \
    --target test/data/correlate_tgt.json -o "$tmp/corr.html"
check "stdout starts with test/data/correlate.stdout" "head -4 '$tmp/out' | cmp -s - test/data/correlate.stdout"
check "page written" "grep -q 'Kernel Duration' '$tmp/corr.html'"
done_case "correlate aligns targets and writes the page"

expect 2 "ambiguous" -- "$lwb" correlate --reference test/data/correlate_tgt.json \
    --target test/data/correlate_ref.json -o "$tmp/corr2.html"
has "$tmp/err" "ambiguous reference data"; one_line_err
check "no page" "[ ! -e '$tmp/corr2.html' ]"
done_case "correlate refuses a reference with two timelines"

cli_finish

#!/usr/bin/env bash
# Runs every test that needs no GPU: the cmocka programs (build/test_*), the command-line
# scripts (test/cli*.sh), the bad-input suite (test/bad_inputs.sh) and the kernel compile check;
# then, when the sanitizer build exists (make asan: build/asan/), the same programs, scripts and
# suite again under AddressSanitizer and UBSan. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
pass=0
fail=0
failed=()
count() { # count NAME LOG STATUS: add the log's test counts (cmocka or "N passed, N failed")
    local p f
    p=$(grep -hoE '\[  PASSED  \] [0-9]+' "$2" | grep -oE '[0-9]+$' | awk '{s+=$1} END{if (NR) print s}')
    f=$(grep -hoE '\[  FAILED  \] [0-9]+' "$2" | grep -oE '[0-9]+$' | awk '{s+=$1} END{if (NR) print s}')
    if [ -z "$p$f" ]; then
        p=$(grep -oE '^[0-9]+ passed' "$2" | tail -1 | grep -oE '^[0-9]+')
        f=$(grep -oE ', [0-9]+ failed' "$2" | tail -1 | grep -oE '[0-9]+')
    fi
    p=${p:-0}
    f=${f:-0}
    # A program that crashed or exited nonzero without reporting counts as one failure; so does
    # a sanitizer report (its exit code is set apart from lwb's).
    if [ "$3" != 0 ] && [ "$f" = 0 ]; then f=1; fi
    if grep -q "ERROR: AddressSanitizer\|runtime error:" "$2"; then f=$((f + 1)); fi
    pass=$((pass + p))
    fail=$((fail + f))
    [ "$f" != 0 ] && failed+=("$1")
    return 0
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# One pass: the cmocka programs in $1 (a folder), the scripts with LWB_BIN=$2, the suite.
run_pass() {
    local bindir=$1 bin=$2 tag=$3
    for t in "$bindir"/test_*; do
        case "$t" in *.d) continue ;; esac
        [ -x "$t" ] || continue
        echo "== $t"
        "$t" >"$log" 2>&1
        local st=$?
        cat "$log"
        count "$t" "$log" $st
    done
    for s in test/cli*.sh test/bad_inputs.sh; do
        echo "== $s$tag"
        if [ "$s" = test/bad_inputs.sh ]; then bash "$s" "$bin" >"$log" 2>&1; else LWB_BIN=$bin bash "$s" >"$log" 2>&1; fi
        local st=$?
        cat "$log"
        count "$s$tag" "$log" $st
    done
}

run_pass build "$PWD/lwb" ""
echo "== kernel templates (lwb kernels --compile --arch sm_90a)"
if ./lwb kernels --compile --arch sm_90a >"$log" 2>&1; then
    cat "$log"
    pass=$((pass + $(grep -c '^ok ' "$log")))
else
    cat "$log"
    fail=$((fail + 1))
    failed+=("kernels --compile")
fi
if [ -x build/asan/lwb ]; then
    # Leaks are not checked (lwb frees at exit by design); sanitizer reports get exit codes of
    # their own so no test mistakes them for lwb's.
    export ASAN_OPTIONS=detect_leaks=0:exitcode=86:abort_on_error=0
    export UBSAN_OPTIONS=halt_on_error=1:exitcode=87:print_stacktrace=1
    echo "== sanitizer pass (AddressSanitizer, UBSan)"
    run_pass build/asan "$PWD/build/asan/lwb" " (sanitizers)"
fi
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]

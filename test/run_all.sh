#!/usr/bin/env bash
# Runs every test that needs no GPU: the cmocka programs (build/test_*), the command-line
# scripts (test/cli*.sh) and the kernel compile check. Ends with "N passed, N failed".
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
    # A program that crashed or exited nonzero without reporting counts as one failure.
    if [ "$3" != 0 ] && [ "$f" = 0 ]; then f=1; fi
    pass=$((pass + p))
    fail=$((fail + f))
    [ "$f" != 0 ] && failed+=("$1")
    return 0
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in build/test_*; do
    case "$t" in *.d) continue ;; esac
    [ -x "$t" ] || continue
    echo "== $t"
    "$t" >"$log" 2>&1
    st=$?
    cat "$log"
    count "$t" "$log" $st
done
for s in test/cli*.sh; do
    echo "== $s"
    bash "$s" >"$log" 2>&1
    st=$?
    cat "$log"
    count "$s" "$log" $st
done
echo "== kernel templates (lwb kernels --compile --arch sm_90a)"
if ./lwb kernels --compile --arch sm_90a >"$log" 2>&1; then
    cat "$log"
    pass=$((pass + $(grep -c '^ok ' "$log")))
else
    cat "$log"
    fail=$((fail + 1))
    failed+=("kernels --compile")
fi
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]

# lib_cli.sh: what the command-line test scripts share (sourced, not run): a temporary folder,
# counters, and the checks. Each case: `expect RC DESC -- CMD...`, then checks, then
# `done_case NAME`. The script ends with `cli_finish` ("N passed, M failed", nonzero on failure).
set -u
cd "$(dirname "$0")/.."
pass=0
fail=0
last_ok=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
lwb=${LWB_BIN:-$PWD/lwb} # LWB_BIN: another build to try (the sanitizer build)

# expect RC DESCRIPTION -- CMD...: run CMD, check its exit code; output in $tmp/out, $tmp/err.
expect() {
    local rc=$1 what=$2
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    if [ "$got" = "$rc" ]; then
        last_ok=1
    else
        last_ok=0
        echo "FAIL $what: exit $got, wanted $rc"
        sed 's/^/    /' "$tmp/err" | head -5
    fi
}
# has FILE TEXT: FILE (out, err, or a path) contains TEXT.
has() {
    local f=$1
    [ -e "$f" ] || f=$tmp/$1
    if [ "$last_ok" = 1 ] && ! grep -qF -- "$2" "$f"; then
        last_ok=0
        echo "FAIL: $1 lacks \"$2\""
        sed 's/^/    /' "$f" | head -8
    fi
}
# check DESCRIPTION CONDITION: a shell condition that must hold.
check() {
    if [ "$last_ok" = 1 ] && ! eval "$2"; then
        last_ok=0
        echo "FAIL: $1"
    fi
}
one_line_err() {
    if [ "$last_ok" = 1 ] && [ "$(wc -l <"$tmp/err")" != 1 ]; then
        last_ok=0
        echo "FAIL: stderr is not one line:"
        sed 's/^/    /' "$tmp/err" | head -5
    fi
}
done_case() {
    if [ "$last_ok" = 1 ]; then
        pass=$((pass + 1))
        echo "ok   $1"
    else
        fail=$((fail + 1))
    fi
}
cli_finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" = 0 ]
}

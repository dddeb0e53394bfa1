#!/usr/bin/env bash
# build.sh: check build dependencies (installing what is missing), embed the kernel
# templates, build ./lwb.
#
#   ./build.sh          build ./lwb
#   ./build.sh test     build, then run every test that needs no GPU
#   ./build.sh gpu      also build the GPU checks (build/gpu_check), run on a GPU machine
#   ./build.sh clean    remove build outputs
#
# Environment: CUDA_HOME (default /usr/local/cuda), CC (default cc), VERBOSE=1.
set -euo pipefail
cd "$(dirname "$0")"

CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
CC=${CC:-cc}
export CUDA_HOME CC

if [ "${1:-}" = clean ]; then
    rm -rf build lwb
    exit 0
fi

# --- dependencies ---------------------------------------------------------------------------
missing=()
have_header() { [ -f "/usr/include/$1" ] || [ -f "/usr/include/x86_64-linux-gnu/$1" ]; }
have_lib() { [ "$("$CC" -print-file-name="$1")" != "$1" ]; }
dep() { # dep NAME HEADER LIBFILE PACKAGE
    if have_header "$2" && have_lib "$3"; then
        [ "${QUIET:-}" ] || echo "ok      $1 ($3)"
    else
        echo "missing $1: apt-get install $4"
        missing+=("$4")
    fi
}
check_deps() {
    missing=()
    dep libyaml yaml.h libyaml.a libyaml-dev
    dep jansson jansson.h libjansson.a libjansson-dev
    dep sqlite3 sqlite3.h libsqlite3.a libsqlite3-dev
    dep zlib zlib.h libz.a zlib1g-dev
    dep cmocka cmocka.h libcmocka.so libcmocka-dev
}
QUIET=1 check_deps >/dev/null
if [ ${#missing[@]} -gt 0 ]; then
    check_deps
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    echo "installing: ${missing[*]}"
    $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
        { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
    QUIET=1 check_deps >/dev/null
    if [ ${#missing[@]} -gt 0 ]; then
        echo "build.sh: could not install ${missing[*]}; install them and run ./build.sh again" >&2
        exit 1
    fi
fi
[ "${VERBOSE:-}" ] && check_deps

for h in cuda.h nvrtc.h nccl.h cupti_activity.h nvtx3/nvToolsExt.h; do
    if [ ! -f "$CUDA_HOME/include/$h" ]; then
        echo "build.sh: $CUDA_HOME/include/$h not found; set CUDA_HOME to a CUDA 13 toolkit" \
             "(headers only are needed to build)" >&2
        exit 1
    fi
done
[ "${VERBOSE:-}" ] && echo "ok      CUDA headers ($CUDA_HOME/include)"

# --- build ------------------------------------------------------------------------------------
jobs=$(nproc 2>/dev/null || echo 2)
mk() { make --no-print-directory -j"$jobs" ${VERBOSE:+V=1} "$@"; }

case "${1:-}" in
    "") mk all ;;
    test) mk all tests asan && exec test/run_all.sh ;;
    gpu) mk all gpu ;;
    *) echo "usage: ./build.sh [test|gpu|clean]" >&2; exit 2 ;;
esac

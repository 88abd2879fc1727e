#!/bin/sh
# Runs the aarch64 cross-built test suite under qemu-user (`make test-arm`).
#
#   sh tests/run_arm.sh BUILD TEST...
#
# The kernel here may have no binfmt_misc entry for aarch64, and tests start
# build binaries themselves (system(), execv() of $ES_BUILD/edgeseek and
# $ES_BUILD/gen_model), so every aarch64 executable gets a wrapper script in
# BUILD/qemu/ that execs it under qemu; ES_BUILD points there.  The
# wrappers read the CPU model and the library prefix from QEMU_CPU and
# QEMU_LD_PREFIX (qemu-user's own variables), which this script exports.
#
# ARM_RUNS lists CPU:PATH pairs, each one run of the whole suite: a qemu CPU
# model and an EDGESEEK_SIMD value (default = the dispatcher's choice).
# cortex-a72 is the Raspberry Pi 4 (armv8.0 NEON, no dotprod), neoverse-n1
# adds dotprod, max adds i8mm.  test_kernels checks every path the CPU can
# run whatever the choice.  QEMU names the emulator, ARM_SYSROOT the aarch64
# libraries (Debian's libc6-dev-arm64-cross).
set -u
build=$1
shift
: "${QEMU:=qemu-aarch64}"
: "${ARM_SYSROOT:=/usr/aarch64-linux-gnu}"
: "${ARM_RUNS:=max:default max:generic cortex-a72:default neoverse-n1:default}"
export QEMU_LD_PREFIX="$ARM_SYSROOT"

if ! command -v "$QEMU" >/dev/null 2>&1; then
    echo "run_arm.sh: $QEMU not found (Debian: apt-get install qemu-user)"
    echo "0 passed, 1 failed"
    exit 1
fi

root=$(cd "$build" && pwd)
wrap=$root/qemu
mkdir -p "$wrap/tests"
# $1: the aarch64 executable, $2: its wrapper
make_wrapper() {
    printf '#!/bin/sh\nexec "${QEMU:-qemu-aarch64}" "%s" "$@"\n' "$1" >"$2"
    chmod +x "$2"
}
for f in "$root"/*; do
    [ -f "$f" ] && [ -x "$f" ] && make_wrapper "$f" "$wrap/$(basename "$f")"
done
tests=
for t in "$@"; do
    make_wrapper "$(cd "$(dirname "$t")" && pwd)/$(basename "$t")" "$wrap/tests/$(basename "$t")"
    tests="$tests $wrap/tests/$(basename "$t")"
done

total_pass=0
total_fail=0
for run in $ARM_RUNS; do
    cpu=${run%%:*}
    path=${run#*:}
    echo "== qemu-aarch64 -cpu $cpu, EDGESEEK_SIMD=$path"
    start=$(date +%s)
    if [ "$path" = default ]; then
        out=$(env -u EDGESEEK_SIMD QEMU_CPU="$cpu" ES_BUILD="$wrap" sh tests/run_tests.sh $tests)
    else
        out=$(QEMU_CPU="$cpu" EDGESEEK_SIMD="$path" ES_BUILD="$wrap" sh tests/run_tests.sh $tests)
    fi
    printf '%s\n' "$out"
    last=$(printf '%s\n' "$out" | tail -n 1) # run_tests.sh's "N passed, M failed"
    case "$last" in
    [0-9]*' passed, '[0-9]*' failed') p=${last%% passed*} f=${last#*passed, } f=${f% failed} ;;
    *) p=0 f=1 ;;
    esac
    echo "== -cpu $cpu, $path: $p passed, $f failed ($(($(date +%s) - start)) s)"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]

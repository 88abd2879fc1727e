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
# ARM_RUNS lists runs CPU:PATH[:TESTS]: a qemu CPU model, an EDGESEEK_SIMD
# value (default = the dispatcher's choice) and the tests (all, simd = those
# in ARM_SIMD_TESTS, or names separated by commas).  cortex-a72 is the
# Raspberry Pi 4 (armv8.0 NEON, no dotprod), neoverse-n1 adds dotprod, max
# adds i8mm.  The default is the whole suite on the Pi's CPU and the tests
# whose results depend on the kernels on the others (about 7 minutes on 2
# idle cores, as CI has); the whole matrix is
#   ARM_RUNS="cortex-a72:default max:default max:generic neoverse-n1:default"
# test_kernels and test_simd_slots check every path and neon variant the CPU
# can run whatever EDGESEEK_SIMD says.  QEMU names the emulator, ARM_SYSROOT
# the aarch64 libraries (Debian's libc6-dev-arm64-cross).
set -u
build=$1
shift
: "${QEMU:=qemu-aarch64}"
: "${ARM_SYSROOT:=/usr/aarch64-linux-gnu}"
: "${ARM_SIMD_TESTS:=test_golden,test_determinism,test_kernels,test_kquants,test_simd_slots}"
: "${ARM_RUNS:=cortex-a72:default max:default:simd max:generic:test_golden,test_determinism neoverse-n1:default:simd}"
export QEMU QEMU_LD_PREFIX="$ARM_SYSROOT"
# the tests skip their few timing and memory-growth checks under emulation
export ES_EMULATED=1

if ! command -v "$QEMU" >/dev/null 2>&1; then
    echo "run_arm.sh: $QEMU not found (Debian: apt-get install qemu-user)"
    echo "0 passed, 1 failed, 0 skipped"
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
for t in "$@"; do
    make_wrapper "$(cd "$(dirname "$t")" && pwd)/$(basename "$t")" "$wrap/tests/$(basename "$t")"
done

# the wrappers of the tests a run names (all: every TEST given)
select_tests() {
    list=$1
    shift
    [ "$list" = simd ] && list=$ARM_SIMD_TESTS
    for t in "$@"; do
        name=$(basename "$t")
        case ",$list," in ,all, | *",$name,"*) printf ' %s' "$wrap/tests/$name" ;; esac
    done
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
total_pass=0
total_fail=0
total_skip=0
for run in $ARM_RUNS; do
    IFS=: read -r cpu path which <<EOF
$run
EOF
    tests=$(select_tests "${which:-all}" "$@")
    echo "== qemu-aarch64 -cpu $cpu, EDGESEEK_SIMD=$path, tests: ${which:-all}"
    start=$(date +%s)
    if [ "$path" = default ]; then
        env -u EDGESEEK_SIMD QEMU_CPU="$cpu" ES_BUILD="$wrap" sh tests/run_tests.sh $tests | tee "$log"
    else
        QEMU_CPU="$cpu" EDGESEEK_SIMD="$path" ES_BUILD="$wrap" sh tests/run_tests.sh $tests | tee "$log"
    fi
    last=$(tail -n 1 "$log") # run_tests.sh's "N passed, N failed, N skipped"
    case "$last" in
    [0-9]*' passed, '[0-9]*' failed, '[0-9]*' skipped')
        p=${last%% passed*} f=${last#*passed, } f=${f%% failed*} s=${last#*failed, } s=${s% skipped} ;;
    *) p=0 f=1 s=0 ;;
    esac
    [ -n "$tests" ] || { echo "no test matches '$which'"; f=$((f + 1)); }
    echo "== -cpu $cpu, $path: $p passed, $f failed, $s skipped ($(($(date +%s) - start)) s)"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    total_skip=$((total_skip + s))
done
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]

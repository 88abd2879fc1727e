#!/bin/sh
# mpi_bench.sh — prompt and generation speed of edgeseek-mpi (make MPI=1)
# against the single process, configurations interleaved round by round,
# medians printed, with the bytes rank 0 sent into the exchanges per token.
#
# usage: sh bench/mpi_bench.sh -m MODEL [-r ROUNDS] [-p N] [-n N] [-t T]
#                              [--cap BYTES] [--io RATE] [CONFIG ...]
#   -m MODEL   the model (e.g. build/gen_model --preset v2lite --type q4_0)
#   -r ROUNDS  rounds (default 3); each runs every configuration once
#   -p N, -n N prompt tokens (ppN) and generated tokens (tgN) (default 64, 32)
#   -t T       threads per rank (default 1)
#   --cap B    memory cap per process for cap1/cap2 (bytes, or NN% of the
#              model file; default 60%)
#   --io RATE  storage as a small board's: every process (the single one,
#              each rank) reads the model's disk through a throttle of its own
#              at RATE bytes/s (200M: a USB 3 / SATA disk; 50M an SD card;
#              bench/iolimit, blkio cgroup; root), and the model's pages are
#              dropped from the page cache before every run (a cold start:
#              the load and warm-up read what they need at RATE)
#   CONFIG     1      edgeseek, one process
#              mpiN   N ranks on this machine, MPI's own transport (shared memory)
#              tcpN   N ranks on this machine over TCP loopback
#              ns2    2 ranks in two network namespaces over a shaped veth
#                     link (tests/mpi_netns.sh; root)
#              cap1   edgeseek, one process under tests/memlimit --cap
#              cap2   2 ranks, each under tests/memlimit --cap
#              (default: 1 mpi1 mpi2 mpi3 mpi4 tcp2 ns2)
#              CONFIG:reduce or CONFIG:gather runs edgeseek-mpi with that
#              --exchange (e.g. ns2:reduce ns2:gather); plain: its default
# Each run is `bench -p N -n N -d 0 -r 1 -t T --no-bw` (its untimed warm-up
# first).  Prints a row per configuration: median pp and tg tokens/s, their
# range, and rank 0's exchange payload per generated and per prompt token.
set -u
BUILD=${ES_BUILD:-build}
model= rounds=3 np=64 ng=32 thr=1 cap=60% io=
while [ $# -gt 0 ]; do
    case "$1" in
    -m) model=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    -p) np=$2; shift 2 ;;
    -n) ng=$2; shift 2 ;;
    -t) thr=$2; shift 2 ;;
    --cap) cap=$2; shift 2 ;;
    --io) io=$2; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "mpi_bench.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -gt 0 ] || set -- 1 mpi1 mpi2 mpi3 mpi4 tcp2 ns2
[ -r "$model" ] || { echo "mpi_bench.sh: cannot read model '$model' (-m)" >&2; exit 1; }
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")
here=$(pwd)
case $BUILD in /*) ;; *) BUILD=$here/$BUILD ;; esac
case $cap in
*%) cap=$(($(stat -c %s "$model") * ${cap%\%} / 100)) ;;
esac
# --io: each process behind a throttle of its own (bench/iolimit), checked here
IOW=
if [ -n "$io" ]; then
    [ "$(id -u)" = 0 ] || { echo "mpi_bench.sh: --io needs root (block-I/O cgroups, dropping the page cache)" >&2; exit 2; }
    "$here/bench/iolimit" "$io" "$model" true || { echo "mpi_bench.sh: --io $io cannot be applied here" >&2; exit 2; }
    IOW="$here/bench/iolimit $io $model"
fi
OPTS=
if mpirun --version 2>&1 | grep -q "Open MPI"; then
    OPTS="--oversubscribe"
    [ "$(id -u)" = 0 ] && OPTS="$OPTS --allow-run-as-root"
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpi_bench.XXXXXX") || exit 1
. "$here/tests/mpi_netns.sh"
trap 'netns_down; rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM
for c in "$@"; do
    if [ "${c%%:*}" = ns2 ] && [ -z "$NS_A" ]; then
        netns_up "$tmp" || { echo "mpi_bench.sh: no namespaces: $NS_WHY" >&2; exit 1; }
        [ "$NS_SHAPE" = netem ] || echo "ns2: the link is shaped by $NS_SHAPE${NS_WHY:+ ($NS_WHY)}: 1 Gbit/s, no added delay"
        NS_MPIRUN_OPTS=$OPTS
    fi
done

B="bench -m $model -p $np -n $ng -d 0 -r 1 -t $thr --no-bw --json"
# run CONFIG: one benchmark, its JSON on stdout, --traffic on stderr
run() {
    X=
    case $1 in *:*) X="--exchange ${1#*:}" ;; esac
    # a cold start: the model's pages that no process maps leave the cache
    [ -z "$io" ] || dd if="$model" iflag=nocache count=0 2> /dev/null
    ES1="$IOW $BUILD/edgeseek" ESM="$IOW $BUILD/edgeseek-mpi --traffic $X"
    c0=${1%%:*}
    # shellcheck disable=SC2086 # the commands are word lists
    case $c0 in
    1) $ES1 $B ;;
    cap1) "$here/tests/memlimit" "$cap" $ES1 $B ;;
    cap2) mpirun $OPTS -np 2 "$here/tests/memlimit" "$cap" $ESM $B ;;
    mpi*) mpirun $OPTS -np "${c0#mpi}" $ESM $B ;;
    tcp*) mpirun $OPTS --mca btl tcp,self --mca btl_tcp_if_include lo -np "${c0#tcp}" $ESM $B ;;
    ns2) netns_mpirun 900 $ESM $B ;;
    *) echo "mpi_bench.sh: unknown configuration $1" >&2; return 2 ;;
    esac
}
ts_of() { # ts_of TEST FILE: avg_ts of that test in the JSON
    sed -n "s/.*\"test\": \"$1\".*\"avg_ts\": \([0-9.]*\).*/\1/p" "$2" | head -1
}
median() { sort -g | awk '{v[NR]=$1} END {if (NR) print (NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2); else print "-"}'; }
range() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {if (NR) printf "%s-%s", lo, hi; else print "-"}'; }

echo "model $model ($(stat -c %s "$model") bytes); pp$np, tg$ng, -t $thr per rank; cap $cap bytes;${io:+ reads throttled to $io bytes/s per process, cold page cache;} CPU: $(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1), $(nproc) CPUs"
for r in $(seq 1 "$rounds"); do
    echo "round $r, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    for c in "$@"; do
        if run "$c" > "$tmp/out.json" 2> "$tmp/err"; then
            ts_of "pp$np" "$tmp/out.json" >> "$tmp/$c.pp"
            ts_of "tg$ng" "$tmp/out.json" >> "$tmp/$c.tg"
            grep '^\[mpi\]' "$tmp/err" | tail -1 > "$tmp/$c.traffic"
        else
            # the ranks' own messages first (the launcher's banner ends the output)
            why=$(grep -m3 -E 'edgeseek|rank|signal|exit' "$tmp/err" | tr '\n' ' ')
            echo "  $c failed: ${why:-$(tail -2 "$tmp/err" | tr '\n' ' ')}"
        fi
    done
done
printf '%-12s %10s %16s %10s %16s  %s\n' config "pp$np t/s" range "tg$ng t/s" range "rank 0's exchange payload"
for c in "$@"; do
    [ -f "$tmp/$c.pp" ] || continue
    tr=$(sed -n 's/.*decode [0-9]* tokens, [0-9]* bytes in [0-9]* [a-z]* (\([0-9]*\) bytes per token).*prefill [0-9]* tokens, [0-9]* bytes in [0-9]* [a-z]* (\([0-9]*\) bytes per token).*/\1 B per generated token, \2 B per prompt token/p' "$tmp/$c.traffic" 2>/dev/null)
    printf '%-12s %10s %16s %10s %16s  %s\n' "$c" "$(median < "$tmp/$c.pp")" "$(range < "$tmp/$c.pp")" \
        "$(median < "$tmp/$c.tg")" "$(range < "$tmp/$c.tg")" "${tr:--}"
done
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"

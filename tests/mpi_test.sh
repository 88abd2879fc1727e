#!/bin/sh
# mpi_test.sh — edgeseek-mpi (dist/, `make MPI=1`) against the single
# process, over real MPI ranks on this machine:
#   - logits of the golden cases (tests/data/golden), the default model and
#     a generated V3-shaped model (256 experts, 8 used, groups) bit-identical
#     to `edgeseek logits` for 1, 2, 3 and 4 ranks, with either exchange
#     (--exchange gather, the default, and reduce);
#   - greedy and seeded sampled text identical to `edgeseek run`, also with
#     every rank paging its share under a small budget;
#   - a rank that cannot load is named by rank 0; a rank killed mid-run
#     (SIGKILL) ends every rank with a non-zero status and a message (Open
#     MPI's names the rank; MPICH's hydra only says a process was killed)
#     within a bounded time, no rank left running; a rank that stops
#     answering (SIGSTOP) ends the run through the others' timeout;
#   - as root, where network namespaces can be made: two namespaces joined
#     by a veth pair with a shaped link (tc netem rate 1gbit delay 0.2ms, or
#     tbf for the rate alone where the kernel lacks netem: counted as a
#     skip), one rank in each (mpirun in the first, its daemon started in the
#     second through an rsh agent), the same identity checks, the bytes sent
#     over the link per token, and a link taken down mid-run ending the run.
# Every run is bounded by `timeout`.  Without edgeseek-mpi or mpirun the
# whole script is one skip.  The last line reads "N passed, N failed, N
# skipped".
#
# usage: tests/mpi_test.sh [BUILD]   (default $ES_BUILD, else build)
#   ES_MPI_NPS   rank counts (default "1 2 3 4")
#   ES_MPI_BIN   the program (default BUILD/edgeseek-mpi; MPICH's build:
#                BUILD/edgeseek-mpi-mpich)
#   ES_MPIRUN    its launcher (default mpirun; MPICH's: mpirun.mpich)
set -u
BUILD=${1:-${ES_BUILD:-build}}
MPI=${ES_MPI_BIN:-$BUILD/edgeseek-mpi}
MPIRUN=${ES_MPIRUN:-mpirun}
ES=$BUILD/edgeseek
NPS=${ES_MPI_NPS:-1 2 3 4}
pass=0 fail=0 skip=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
skp() { skip=$((skip + 1)); echo "SKIP $*"; }
summary() { echo "$pass passed, $fail failed, $skip skipped"; [ "$fail" -eq 0 ]; }

if [ ! -x "$MPI" ]; then skp "mpi_test: $MPI is not built (make MPI=1; Debian: libopenmpi-dev)"; summary; exit 0; fi
if ! command -v "$MPIRUN" >/dev/null 2>&1; then skp "mpi_test: no $MPIRUN"; summary; exit 0; fi
# Open MPI wants --oversubscribe for more ranks than cores, and
# --allow-run-as-root as root; MPICH's mpirun (hydra) takes neither
OPTS=
if "$MPIRUN" --version 2>&1 | grep -q "Open MPI"; then
    OPTS="--oversubscribe"
    [ "$(id -u)" = 0 ] && OPTS="$OPTS --allow-run-as-root"
fi

tmp=$(mktemp -d)
. "$(dirname "$0")/mpi_netns.sh"
cleanup() {
    netns_down
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# mpi NP ARGS...: edgeseek-mpi on NP ranks, bounded
mpi() {
    np=$1
    shift
    # shellcheck disable=SC2086
    timeout 120 "$MPIRUN" $OPTS -np "$np" "$MPI" --timeout 60 "$@"
}

V3_ARGS="--preset v3 --layers 4 --dense-layers 1 --dim 128 --ffn 256 --expert-ffn 32 --experts 256 --experts-used 8
 --groups 8 --groups-used 4 --heads 2 --q-lora 64 --kv-lora 32 --nope-dim 32 --rope-dim 16 --v-dim 32 --type q8_0
 --seed 5 --quiet"
v3=$tmp/v3.gguf
# shellcheck disable=SC2086
"$BUILD/gen_model" $V3_ARGS --ctx 4096 -o "$v3" || bad "gen_model $V3_ARGS"
DEFAULT=models/edgeseek-default.gguf

# logits_case NAME MODEL TOKENS [LAUNCH...]: the single process's logits,
# then edgeseek-mpi's through LAUNCH (default: mpi NP for each NP)
logits_same() { # logits_same LABEL MODEL TOKENS REF LAUNCHER...
    label=$1 model=$2 toks=$3 ref=$4
    shift 4
    rm -f "$tmp/out.f32"
    if "$@" logits -m "$model" --tokens "$toks" -o "$tmp/out.f32" > "$tmp/log" 2>&1 &&
        cmp -s "$ref" "$tmp/out.f32"; then
        ok
    else
        bad "$label: logits differ from the single process's or the run failed: $(tail -3 "$tmp/log" | tr '\n' ' ')"
    fi
}
logits_case() {
    name=$1 model=$2 toks=$3
    if ! "$ES" logits -m "$model" --tokens "$toks" -o "$tmp/ref.f32" > "$tmp/log" 2>&1; then
        bad "$name: edgeseek logits: $(tail -1 "$tmp/log")"
        return
    fi
    for np in $NPS; do
        logits_same "$name, $np ranks" "$model" "$toks" "$tmp/ref.f32" mpi "$np"
        [ "$np" -gt 1 ] &&
            logits_same "$name, $np ranks, --exchange reduce" "$model" "$toks" "$tmp/ref.f32" mpi "$np" --exchange reduce
    done
}

for c in tests/data/golden/*/; do
    [ -f "$c/model.gguf" ] || continue
    logits_case "golden $(basename "$c")" "$c/model.gguf" "$(tr -d ' \n' < "$c/tokens.txt")"
done
logits_case "default model" "$DEFAULT" 0,15,27,42,100,7,8,250,3,3,91
[ -f "$v3" ] && logits_case "generated V3-shaped model" "$v3" 1,17,300,42,5,999,64,3,250,11,77,512,600,2

# text_case NAME ARGS...: `run` output identical for every rank count
text_case() {
    name=$1
    shift
    if ! "$ES" run "$@" > "$tmp/ref.txt" 2> "$tmp/log"; then
        bad "$name: edgeseek run: $(tail -1 "$tmp/log")"
        return
    fi
    for np in $NPS; do
        if mpi "$np" run "$@" > "$tmp/out.txt" 2> "$tmp/log" && cmp -s "$tmp/ref.txt" "$tmp/out.txt"; then
            ok
        else
            bad "$name, $np ranks: text differs or the run failed: $(tail -3 "$tmp/log" | tr '\n' ' ')"
        fi
    done
}
text_case "default model, greedy chat" -m "$DEFAULT" --chat --temp 0 -p "What is 487 + 356?" -n 64 -t 1
text_case "default model, sampled" -m "$DEFAULT" --chat --temp 0.8 --seed 3 -p "What is 613 - 278?" -n 48 -t 1
[ -f "$v3" ] && text_case "generated V3-shaped model, greedy" -m "$v3" --temp 0 -p "Once upon a time" -n 40 -t 1
# every rank pages its share under a budget far below it (pread, 1 MiB)
[ -f "$v3" ] && text_case "generated V3-shaped model, greedy, pread under 1 MiB per rank" -m "$v3" --temp 0 \
    -p "Once upon a time" -n 40 -t 1 --experts pread --mem-budget 1M

# ---- failures -------------------------------------------------------------------
# a rank that cannot load (its machine has too little memory: rank 1 alone
# under a 64 MiB cap) is named by rank 0, and the run exits 1
if [ "$(id -u)" = 0 ] && [ -f "$v3" ] && [ -d /sys/fs/cgroup/memory -o -f /sys/fs/cgroup/cgroup.controllers ]; then
    big=$tmp/big.gguf
    # shellcheck disable=SC2086
    "$BUILD/gen_model" --preset v2lite --layers 2 --vocab 32000 --type q4_0 --seed 3 --quiet -o "$big"
    # shellcheck disable=SC2086
    timeout 120 "$MPIRUN" $OPTS -np 1 "$MPI" run -m "$big" -p hi -n 2 -t 1 : \
        -np 1 tests/memlimit 64M "$MPI" run -m "$big" -p hi -n 2 -t 1 > /dev/null 2> "$tmp/log"
    rc=$?
    [ "$rc" -ne 0 ] && grep -q "rank 1: .*available" "$tmp/log" && ok ||
        bad "a rank that cannot load: exit $rc, $(tr '\n' ' ' < "$tmp/log")"
    rm -f "$big"
else
    skp "a rank that cannot load: needs root and a memory cgroup (tests/memlimit)"
fi
# rank_pid R: the pid of rank R of the edgeseek-mpi run on $fmodel
rank_pid() {
    for p in $(pgrep -f "edgeseek-mpi[-a-z]* .*$fmodel" 2>/dev/null); do
        if { tr '\0' '\n' < "/proc/$p/environ"; } 2>/dev/null | grep -qE "^(OMPI_COMM_WORLD_RANK|PMI_RANK)=$1\$"; then
            echo "$p"
            return
        fi
    done
}
# a long run on a copy of the model with a name of its own (to find its ranks)
fmodel=$tmp/fail-$$.gguf
[ -f "$v3" ] && cp "$v3" "$fmodel"
long_run() { # long_run NP TIMEOUT: in the background, output in $tmp/fail.*
    (
        "$MPIRUN" $OPTS -np "$1" "$MPI" --timeout "$2" bench -m "$fmodel" -p 16 -n 128 -r 1000 -t 1 \
            --no-bw > "$tmp/fail.out" 2> "$tmp/fail.err"
        echo $? > "$tmp/fail.rc"
    ) &
}
# wait_ranks NP: until rank NP-1 is up (and evaluating), at most 30 s
wait_ranks() {
    i=0
    while [ $i -lt 300 ] && [ -z "$(rank_pid $(($1 - 1)))" ]; do sleep 0.1; i=$((i + 1)); done
    sleep 2
}
# wait_end SECONDS: until the background run ended; 0 if it did in time
wait_end() {
    i=0
    while [ $i -lt $(($1 * 10)) ] && [ ! -f "$tmp/fail.rc" ]; do sleep 0.1; i=$((i + 1)); done
    [ -f "$tmp/fail.rc" ]
}

# fault SIG TIMEOUT: 3 ranks with that timeout, rank 1 sent SIG mid-run;
# sets rc (mpirun's status) and dt (seconds to the end); 1 if it did not end
fault() {
    rm -f "$tmp/fail.rc"
    rc= dt=
    long_run 3 "$2"
    wait_ranks 3
    victim=$(rank_pid 1)
    if [ -z "$victim" ]; then
        bad "rank 1 sent SIG$1: rank 1 not found"
    else
        t0=$(date +%s)
        kill -"$1" "$victim"
        if wait_end 60; then
            rc=$(cat "$tmp/fail.rc")
            dt=$(($(date +%s) - t0))
        else
            bad "rank 1 sent SIG$1: the run did not end within 60 s"
        fi
        kill -9 "$victim" 2>/dev/null
    fi
    # ranks still running once the launcher returned (none should be)
    left=
    for r in 0 2; do left=$left$(rank_pid $r); done
    for r in 0 1 2; do p=$(rank_pid $r); [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
    wait
    [ -n "$rc" ]
}
if [ -f "$fmodel" ] && fault KILL 60; then
    [ "$rc" -ne 0 ] && ok || bad "rank 1 killed: mpirun exited 0"
    if [ -n "$OPTS" ]; then
        # Open MPI's mpirun names the rank; the survivors, ended by its
        # SIGTERM, say so (it may end one before its message is forwarded)
        grep -q "rank 1" "$tmp/fail.err" && ok ||
            bad "rank 1 killed: no message names rank 1: $(tr '\n' ' ' < "$tmp/fail.err")"
        grep -qE "rank [02] of 3: stopped" "$tmp/fail.err" && ok ||
            bad "rank 1 killed: no survivor said it stopped: $(tr '\n' ' ' < "$tmp/fail.err")"
    else
        # MPICH's hydra says (on stdout) that a process ended by signal 9,
        # naming a pid of the job but not the rank (here not even the
        # killed one's), and ends the survivors with SIGKILL, which leaves
        # them nothing to say
        cat "$tmp/fail.out" "$tmp/fail.err" > "$tmp/fail.all"
        grep -q "BAD TERMINATION" "$tmp/fail.all" && grep -q "EXIT CODE: 9" "$tmp/fail.all" && ok ||
            bad "rank 1 killed: no message from the launcher: $(tail -c 600 "$tmp/fail.all" | tr '\n' ' ')"
    fi
    [ -z "$left" ] && ok || bad "rank 1 killed: ranks 0 or 2 still running after the launcher returned"
    echo "rank 1 killed: every rank ended in $dt s (exit status $rc)"
fi
if [ -f "$fmodel" ] && fault STOP 3; then
    [ "$rc" -ne 0 ] && ok || bad "rank 1 stopped: mpirun exited 0"
    grep -q "no answer from the other ranks for 3 s" "$tmp/fail.err" && ok ||
        bad "rank 1 stopped: no timeout message: $(tr '\n' ' ' < "$tmp/fail.err")"
    echo "rank 1 stopped: every rank ended in $dt s (exit status $rc, timeout 3 s)"
fi

# ---- two network namespaces and a shaped link -------------------------------------
netns_tests() {
    if ! netns_up "$tmp"; then
        skp "network namespaces: cannot be made here: $NS_WHY"
        return
    fi
    case $NS_SHAPE in
    netem) echo "namespaces: link shaped with netem, 1 Gbit/s and 0.2 ms each way" ;;
    tbf) skp "namespaces: $NS_WHY: link shaped to 1 Gbit/s with tbf, no added delay" ;;
    *) skp "namespaces: no traffic control here: link not shaped" ;;
    esac
    here=$(pwd)
    NS_MPIRUN_OPTS=$OPTS
    nsmpi() { netns_mpirun 120 "$here/$MPI" --timeout 30 "$@"; }
    "$ES" logits -m "$DEFAULT" --tokens 0,15,27,42,100,7,8,250,3,3,91 -o "$tmp/ref.f32" > /dev/null 2>&1
    logits_same "namespaces, default model" "$here/$DEFAULT" 0,15,27,42,100,7,8,250,3,3,91 "$tmp/ref.f32" nsmpi
    toks=1,17,300,42,5,999,64,3,250,11,77,512,600,2
    "$ES" logits -m "$v3" --tokens $toks -o "$tmp/ref.f32" > /dev/null 2>&1
    logits_same "namespaces, generated V3-shaped model" "$v3" $toks "$tmp/ref.f32" nsmpi
    c=tests/data/golden/v3-stress
    "$ES" logits -m "$c/model.gguf" --tokens "$(tr -d ' \n' < "$c/tokens.txt")" -o "$tmp/ref.f32" > /dev/null 2>&1
    logits_same "namespaces, golden v3-stress" "$here/$c/model.gguf" "$(tr -d ' \n' < "$c/tokens.txt")" \
        "$tmp/ref.f32" nsmpi
    "$ES" run -m "$DEFAULT" --chat --temp 0 -p "What is 487 + 356?" -n 64 -t 1 > "$tmp/ref.txt" 2> /dev/null
    for x in gather reduce; do
        tx0=$(ip netns exec "$NS_A" cat "/sys/class/net/$NS_VA/statistics/tx_bytes")
        if nsmpi --traffic --exchange $x run -m "$here/$DEFAULT" --chat --temp 0 -p "What is 487 + 356?" -n 64 -t 1 \
            > "$tmp/out.txt" 2> "$tmp/log" && cmp -s "$tmp/ref.txt" "$tmp/out.txt"; then
            ok
        else
            bad "namespaces, --exchange $x: greedy text differs or the run failed: $(tail -3 "$tmp/log" | tr '\n' ' ')"
        fi
        tx1=$(ip netns exec "$NS_A" cat "/sys/class/net/$NS_VA/statistics/tx_bytes")
        echo "namespaces, --exchange $x: greedy run sent $((tx1 - tx0)) bytes from rank 0's namespace;" \
            "$(grep '^\[mpi\]' "$tmp/log")"
    done

    # the link goes down mid-run: both ranks stop within their timeout
    # (mpirun itself may wait longer for its daemon behind the link: the
    # launcher's affair, bounded here by timeout)
    rm -f "$tmp/fail.rc"
    (
        netns_mpirun 40 "$here/$MPI" --timeout 3 bench -m "$fmodel" -p 16 -n 128 -r 1000 -t 1 --no-bw \
            > "$tmp/fail.out" 2> "$tmp/fail.err"
        echo $? > "$tmp/fail.rc"
    ) &
    wait_ranks 2
    t0=$(date +%s)
    ip -n "$NS_B" link set "$NS_VB" down
    i=0
    while [ $i -lt 300 ] && [ -n "$(rank_pid 0)$(rank_pid 1)" ]; do sleep 0.1; i=$((i + 1)); done
    dt=$(($(date +%s) - t0))
    if [ -z "$(rank_pid 0)$(rank_pid 1)" ]; then
        ok
        echo "namespaces, link down: both ranks ended in $dt s (timeout 3 s)"
    else
        bad "namespaces, link down: a rank still runs after 30 s"
    fi
    wait_end 60
    [ "$(cat "$tmp/fail.rc" 2>/dev/null)" != 0 ] && ok || bad "namespaces, link down: mpirun exited 0"
    # rank 1's message stays behind the link; rank 0's or the launcher's comes through
    grep -qE "rank 0 of 2: no answer from the other ranks|lost communication" "$tmp/fail.err" && ok ||
        bad "namespaces, link down: no message: $(tr '\n' ' ' < "$tmp/fail.err")"
    for r in 0 1; do p=$(rank_pid $r); [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
    wait
}
if [ -z "$OPTS" ]; then
    skp "network namespaces: the launch through an rsh agent is written for Open MPI's mpirun"
elif [ "$(id -u)" != 0 ]; then
    skp "network namespaces: needs root"
elif ! command -v ip >/dev/null 2>&1; then
    skp "network namespaces: no ip command (Debian: iproute2)"
elif [ ! -f "$v3" ]; then
    skp "network namespaces: no generated model"
else
    netns_tests
fi
summary

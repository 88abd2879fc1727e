#!/bin/sh
# compare_server.sh — edgeseek serve against llama.cpp's llama-server on the same
# GGUF files, same slot count, same prompts, on loopback: aggregate generated
# tokens/s with 1, 2, 4 and 8 concurrent streams, and the time to the first
# token of a long prompt alone and while 3 other streams decode.  The engines
# take turns round by round (each round starts each server afresh, one at a
# time, so they never share the memory); the table gives medians.
#
#   bench/compare_server.sh [-t THREADS] [-r ROUNDS] [-n TOKENS] [-c CTX] [-L LONG]
#                           [-s STREAMS] [--kv-type T] [--llama-server PATH] MODEL...
#
#   -t      threads of both servers (default 2)
#   -r      rounds (default 3)
#   -n      tokens each aggregate stream generates (default 32)
#   -c      context per slot (default 1280; llama-server gets 8 times it, its -c
#           being the total that its 8 slots share)
#   -L      tokens of the long prompt (default 1000; cut to fit the context; 0: none)
#   -s      the concurrent stream counts, a comma list (default 1,2,4,8)
#   --kv-type T  edgeseek's cache type (default its own, f16); llama-server gets
#           -ctk/-ctv of the same name (f32, f16, bf16, q8_0) when it is given
#   --llama-server PATH (or LLAMA_SERVER): llama.cpp's server binary, built
#           separately (never in this tree); without it edgeseek runs alone.
#   --llama-args ARGS (or LLAMA_ARGS): more options for llama-server (the
#           default model, F16, needs --no-repack: its repacking asserts)
# Both servers get -np 8, temperature 0 and ignore_eos requests, so every
# stream makes exactly the tokens asked for.  Needs node (the load client is
# bench/server_load.cjs) and a build of edgeseek with server support.  Raw
# lines go to build/compare_server.jsonl.
set -eu
cd "$(dirname "$0")/.."
T=2 R=3 N=32 C=1280 L=1000 S=1,2,4,8 KV=
LS=${LLAMA_SERVER:-}
LA=${LLAMA_ARGS:-}
while [ $# -gt 0 ]; do
    case $1 in
        -t) T=$2; shift 2 ;;
        -r) R=$2; shift 2 ;;
        -n) N=$2; shift 2 ;;
        -c) C=$2; shift 2 ;;
        -L) L=$2; shift 2 ;;
        -s) S=$2; shift 2 ;;
        --kv-type) KV=$2; shift 2 ;;
        --llama-server) LS=$2; shift 2 ;;
        --llama-args) LA=$2; shift 2 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        -*) echo "compare_server.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "usage: bench/compare_server.sh [options] MODEL..." >&2; exit 2; }
E=${ES_BUILD:-build}/edgeseek
[ -x "$E" ] || { echo "compare_server.sh: build edgeseek first (make)" >&2; exit 1; }
command -v node >/dev/null || { echo "compare_server.sh: needs node" >&2; exit 1; }
if [ -n "$LS" ] && [ ! -x "$LS" ]; then echo "compare_server.sh: $LS is not executable" >&2; exit 1; fi
[ -n "$LS" ] || echo "(no llama-server given: edgeseek alone)"
OUT=${ES_BUILD:-build}/compare_server.jsonl
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
LOG=$(mktemp)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -f "$LOG"' EXIT INT TERM

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# waits (at most 10 minutes) until the server's /health says 200
wait_ready() {
    i=0
    while [ $i -lt 3000 ]; do
        kill -0 $PID 2>/dev/null || { echo "the server exited:"; tail -5 "$LOG"; return 1; }
        if node -e 'fetch(process.argv[1]+"/health").then(r=>process.exit(r.status===200?0:1)).catch(()=>process.exit(1))' \
            "$1"; then return 0; fi
        sleep 0.2
        i=$((i + 1))
    done
    return 1
}

# one engine, one round: start, load, measure, stop
one() {
    engine=$1 model=$2 round=$3 ctx=$4 long=$5
    port=$(free_port)
    if [ "$engine" = edgeseek ]; then
        $E serve -m "$model" --host 127.0.0.1 --port "$port" -np 8 -c "$ctx" -t "$T" ${KV:+--kv-type "$KV"} >"$LOG" 2>&1 &
    else
        # shellcheck disable=SC2086 # LA is a list of options
        "$LS" -m "$model" --host 127.0.0.1 --port "$port" -np 8 -c $((ctx * 8)) -t "$T" ${KV:+-ctk "$KV" -ctv "$KV"} $LA \
            >"$LOG" 2>&1 &
    fi
    PID=$!
    url=http://127.0.0.1:$port
    if wait_ready "$url"; then
        node bench/server_load.cjs run "$url" "$engine" "$S" "$N" "$long" |
            sed "s|^{|{\"engine\":\"$engine\",\"model\":\"$(basename "$model")\",\"round\":$round,|" | tee -a "$OUT"
    fi
    kill -INT $PID 2>/dev/null || true
    wait $PID 2>/dev/null || true
    PID=
}

for model in "$@"; do
    # the long prompt fits the slot: a model trained on a shorter context gets less
    ctx=$C
    train=$($E info -m "$model" 2>/dev/null | sed -n 's/.*n_ctx_train \([0-9]*\).*/\1/p' | head -n 1)
    [ -n "$train" ] && [ "$train" -lt "$ctx" ] && ctx=$train
    long=$L
    [ "$long" -gt $((ctx - 16)) ] && long=$((ctx - 16))
    echo "== $(basename "$model"): -np 8, -c $ctx per slot, $N tokens per stream, long prompt $long tokens, -t $T," \
         "streams $S, KV cache ${KV:-default}"
    r=1
    while [ $r -le "$R" ]; do
        # alternate who goes first
        if [ -n "$LS" ] && [ $((r % 2)) -eq 0 ]; then
            one llama-server "$model" $r "$ctx" "$long"; one edgeseek "$model" $r "$ctx" "$long"
        else
            one edgeseek "$model" $r "$ctx" "$long"
            [ -z "$LS" ] || one llama-server "$model" $r "$ctx" "$long"
        fi
        r=$((r + 1))
    done
done
echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
node bench/server_load.cjs table "$OUT"

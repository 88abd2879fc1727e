#!/bin/sh
# server_cpu.sh — the CPU time `edgeseek serve` spends per generated token with 1 and
# with S concurrent requests (non-streamed /v1/completions, ignore_eos, N tokens each,
# R rounds): the server process's user + system time (/proc/PID/stat) over the
# requests, divided by the tokens.  A figure that a busy machine disturbs less than
# wall-clock tokens/s (it counts only the server's own work, however long it waited for
# a CPU), at the resolution of the clock tick (10 ms: use enough rounds).
#
#   bench/server_cpu.sh MODEL [STREAMS (4)] [ROUNDS (12)] [TOKENS (128)] [THREADS (1)]
#
# ES_BUILD (default build) names the build; needs curl; the server listens on a free
# loopback port and is stopped at the end.
set -eu
M=${1:?usage: bench/server_cpu.sh MODEL [STREAMS] [ROUNDS] [TOKENS] [THREADS]}
S=${2:-4} R=${3:-12} N=${4:-128} T=${5:-1}
E=${ES_BUILD:-build}/edgeseek
[ -x "$E" ] || { echo "server_cpu.sh: build edgeseek first (make)" >&2; exit 1; }
command -v curl >/dev/null || { echo "server_cpu.sh: needs curl" >&2; exit 1; }
PORT=$(( 20000 + $$ % 20000 ))
"$E" serve -m "$M" --port "$PORT" -np 8 -c 512 -t "$T" >/dev/null 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true' EXIT INT TERM
URL=http://127.0.0.1:$PORT
i=0
until curl -sf -o /dev/null "$URL/health"; do
    i=$((i + 1)); [ $i -lt 300 ] || { echo "server_cpu.sh: the server did not start" >&2; exit 1; }
    sleep 0.1
done
ask() { curl -s -o /dev/null "$URL/v1/completions" \
    -d "{\"prompt\":\"The history of the river $1\",\"max_tokens\":$N,\"temperature\":0,\"ignore_eos\":true}"; }
ask warm
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TCK=$(getconf CLK_TCK)
lscpu 2>/dev/null | grep 'Model name' || true
echo "($(uptime | sed 's/.*load/load/'))"
for c in 1 "$S"; do
    a=$(cpu)
    r=0
    while [ $r -lt "$R" ]; do
        P=
        k=0
        while [ $k -lt "$c" ]; do ask "$r $k" & P="$P $!"; k=$((k + 1)); done
        # shellcheck disable=SC2086
        wait $P
        r=$((r + 1))
    done
    b=$(cpu)
    awk -v d=$((b - a)) -v t="$TCK" -v n=$((R * c * N)) -v c="$c" \
        'BEGIN { printf "%d stream%s: %.4f ms of server CPU per generated token\n", c, (c > 1) ? "s" : "", d * 1000 / t / n }'
done

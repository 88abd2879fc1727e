#!/bin/sh
# bench_paging.sh — a model larger than memory: time to first token and
# generation speed of each edgeseek paging mode, and of llama.cpp with plain
# mmap (-nr: no repacking into anonymous memory) when a llama.cpp build is
# given, under memory caps (tests/memlimit), each run from a cold
# page cache; with edgeseek's expert hit rate, prefetch accuracy, I/O stall
# per token and the group's peak memory.
#
# usage: bench/bench_paging.sh [-t THREADS] [-n TOKENS] [-c "CAPS"] [-m "MODES"]
#                              [-p PROMPT] [-r REPS] MODEL.gguf
#   defaults: -t 2, -n 16, -c "4G 6G", -m "mmap pread mmap-plain", -r 1
#   LLAMA_CPP_DIR  a llama.cpp build directory with llama-completion or
#                  llama-cli in it or its bin/ (built outside this tree);
#                  unset: the llama.cpp rows are skipped
#   EDGESEEK       the edgeseek binary (default build/edgeseek of this checkout)
#   ES_ARGS        more edgeseek run options, e.g. "--policy lfu"
# Needs root (cgroups, drop_caches).  Full logs stay in $BENCH_LOG (default
# a temporary directory, removed at the end).
set -eu

threads=2 ngen=16 caps="4G 6G" modes="mmap pread mmap-plain" reps=1
prompt="Explain in one paragraph why the sky is blue, for a curious ten-year-old."
while [ $# -gt 0 ]; do
    case "$1" in
    -t) threads=$2; shift 2 ;;
    -n) ngen=$2; shift 2 ;;
    -c) caps=$2; shift 2 ;;
    -m) modes=$2; shift 2 ;;
    -p) prompt=$2; shift 2 ;;
    -r) reps=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "bench_paging.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "bench_paging.sh: give one model (see --help)" >&2; exit 2; }
model=$1
[ -r "$model" ] || { echo "bench_paging.sh: cannot read $model" >&2; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
ES=${EDGESEEK:-$here/build/edgeseek}
ML=$here/tests/memlimit
[ -x "$ES" ] || { echo "bench_paging.sh: $ES is not built (make)" >&2; exit 2; }
[ -x "$ML" ] || { echo "bench_paging.sh: no $ML" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench_paging.sh: needs root (memory cgroups, drop_caches)" >&2; exit 2; }

LC=""
if [ -n "${LLAMA_CPP_DIR:-}" ]; then
    for d in "$LLAMA_CPP_DIR/bin" "$LLAMA_CPP_DIR"; do
        for b in llama-completion llama-cli; do
            [ -z "$LC" ] && [ -x "$d/$b" ] && LC=$d/$b
        done
    done
    [ -n "$LC" ] || echo "bench_paging.sh: no llama-completion or llama-cli under $LLAMA_CPP_DIR: llama.cpp skipped" >&2
fi

if [ -n "${BENCH_LOG:-}" ]; then log=$BENCH_LOG; mkdir -p "$log"
else log=$(mktemp -d); trap 'rm -rf "$log"' EXIT; fi

cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
# the n-th field of the first line matching a pattern, or "-"
field() { v=$(sed -n "$2" "$1" | head -n 1); echo "${v:--}"; }

echo "model: $model ($(du -h "$model" | cut -f1)); $(nproc) CPUs; $threads threads; prompt of $(printf '%s' "$prompt" | wc -w) words, $ngen tokens generated"
printf '%-5s %-12s %-22s %8s %9s %8s %6s %12s %9s %9s %5s\n' cap engine mode "ttft-s" "prompt-t/s" "gen-t/s" "hit%" "prec/rec%" "stall-s/t" "peak-MiB" load
for cap in $caps; do
    for mode in $modes ${LC:+llama.cpp}; do
        r=1
        while [ "$r" -le "$reps" ]; do
            base=$log/$cap.$mode.$r
            la=$(loadavg)
            cold
            if [ "$mode" = llama.cpp ]; then
                # llama.cpp: plain mmap of the file as it is (-nr), greedy
                "$ML" "$cap" "$LC" -m "$model" -p "$prompt" -n "$ngen" -t "$threads" --temp 0 -nr -no-cnv \
                    --ignore-eos --no-warmup -c 512 < /dev/null > "$base.out" 2> "$base.err" || true
                # llama.cpp's "load time" runs from the context's creation to the
                # end of the first evaluation (the prompt): its time to first token
                ld=$(field "$base.err" 's/.*load time = *\([0-9.]*\) ms.*/\1/p')
                pt=$(field "$base.err" 's/.*prompt eval time.* \([0-9.]*\) tokens per second.*/\1/p')
                gt=$(field "$base.err" 's/.* eval time.*runs.* \([0-9.]*\) tokens per second.*/\1/p')
                ttft=$(awk -v a="$ld" 'BEGIN { if (a == "-") print "-"; else printf "%.1f", a / 1000 }')
                hit=- pr=- st=-
                engine=llama.cpp; m="-nr (plain mmap)"
            else
                # shellcheck disable=SC2086
                "$ML" "$cap" "$ES" run -m "$model" -p "$prompt" -n "$ngen" -t "$threads" --temp 0 \
                    --experts "$mode" --stats ${ES_ARGS:-} > "$base.out" 2> "$base.err" || true
                ttft=$(field "$base.err" 's/.*first token \([0-9.]*\) s.*/\1/p')
                pt=$(field "$base.err" 's/.*prompt [0-9]* tokens, \([0-9.]*\) tokens\/s.*/\1/p')
                gt=$(field "$base.err" 's/.*generated [0-9]* tokens, \([0-9.]*\) tokens\/s.*/\1/p')
                hit=$(field "$base.err" 's/^\[paging\] expert accesses [0-9]*: hit \([0-9.]*\)%.*/\1/p')
                pr=$(field "$base.err" 's/^\[paging\] prefetch: .* precision \([0-9.]*\)%, recall \([0-9.]*\)%.*/\1\/\2/p')
                st=$(field "$base.err" 's/^\[paging\] I\/O stall .*(\([0-9.]*\) s\/token).*/\1/p')
                engine=edgeseek; m="$mode${ES_ARGS:+ $ES_ARGS}"
            fi
            peak=$(field "$base.err" 's/^memlimit: limit [0-9]* bytes, peak \([0-9]*\) bytes$/\1/p')
            [ "$peak" != - ] && peak=$((peak / 1048576))
            printf '%-5s %-12s %-22s %8s %9s %8s %6s %12s %9s %9s %5s\n' "$cap" "$engine" "$m" "$ttft" "$pt" "$gt" \
                "$hit" "$pr" "$st" "$peak" "$la"
            r=$((r + 1))
        done
    done
done

#!/bin/sh
# fuzz/run.sh — builds the GGUF reader's libFuzzer harness with clang
# (-fsanitize=fuzzer,address,undefined) and runs it.
#
#   sh fuzz/run.sh [SECONDS] [extra libFuzzer flags...]     (default 60 s)
#
# Seeds: the header region (first 16 KiB) of every golden model in
# tests/data/golden: inputs stay small, so the fuzzer spends its time on the
# metadata and tensor directory rather than on megabytes of weights it cannot
# reach.  Crashes are written to
# fuzz/out/ (crash-*); the corpus it grows is kept in fuzz/out/corpus.
# Reproduce one with: fuzz/out/fuzz_gguf fuzz/out/crash-...
set -eu
cd "$(dirname "$0")/.."
SECS=${1:-60}
[ $# -gt 0 ] && shift
CC=${FUZZ_CC:-clang}
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "fuzz/run.sh: $CC not found (install clang)" >&2
    exit 2
fi
OUT=fuzz/out
mkdir -p "$OUT/corpus" "$OUT/seeds"
"$CC" -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Iformat -Isimd fuzz/fuzz_gguf.c format/gguf.c simd/quant.c -o "$OUT/fuzz_gguf"
for m in tests/data/golden/*/*.gguf; do
    [ -f "$m" ] || continue
    name=$(basename "$(dirname "$m")")-$(basename "$m" .gguf)
    head -c 16384 "$m" > "$OUT/seeds/$name"
done
exec "$OUT/fuzz_gguf" -max_total_time="$SECS" -max_len=20000 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$OUT/" -print_final_stats=1 "$@" "$OUT/corpus" "$OUT/seeds"

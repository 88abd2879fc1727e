#!/bin/sh
# fuzz/run.sh — builds one libFuzzer harness with clang
# (-fsanitize=fuzzer,address,undefined) and runs it.
#
#   sh fuzz/run.sh [TARGET] [SECONDS] [extra libFuzzer flags...]
#
# TARGET (default gguf; default time 60 s):
#   gguf       the GGUF reader (fuzz_gguf.c); seeds: the first 16 KiB of
#              every golden model, so the time goes on the metadata and the
#              tensor directory rather than on weights it cannot reach
#   tokenizer  the tokenizer on arbitrary bytes, every vocabulary and
#              pre-tokenizer of fuzz_vocab.c (fuzz_tokenizer.c)
#   chat       the chat renderer, both flavours (fuzz_chat.c)
#   numbers    the CLI's integer and float parsers and the size strings
#              (fuzz_numbers.c)
#   request    the server's request parser (fuzz_request.c; needs cJSON):
#              seeds are chat and completion bodies, good and bad
#   imatrix    llama.cpp's importance matrix reader (fuzz_imatrix.c); seed:
#              the first 20000 bytes of tests/data/llama/*.imatrix.gguf
# The text targets' seeds are the strings of tests/data/golden/tokenizer/
# texts.json (and, for numbers, the sizes and numbers the tests use).
# For compatibility, a first argument that is a number is the time of the
# gguf target: `sh fuzz/run.sh 600`.
# Crashes are written to fuzz/out/TARGET/ (crash-*); the corpus it grows is
# kept in fuzz/out/TARGET/corpus.  Reproduce one with:
#   fuzz/out/fuzz_TARGET fuzz/out/TARGET/crash-...
set -eu
cd "$(dirname "$0")/.."
TARGET=gguf
case "${1:-}" in
    gguf|tokenizer|chat|numbers|request|imatrix) TARGET=$1; shift ;;
    ''|[0-9]*) ;;
    *) echo "fuzz/run.sh: unknown target '$1' (gguf, tokenizer, chat, numbers, request, imatrix)" >&2; exit 2 ;;
esac
SECS=${1:-60}
[ $# -gt 0 ] && shift
CC=${FUZZ_CC:-clang}
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "fuzz/run.sh: $CC not found (install clang)" >&2
    exit 2
fi
OUT=fuzz/out
DIR=$OUT/$TARGET
mkdir -p "$DIR/corpus" "$DIR/seeds"
FLAGS="-std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
TEXT_SRC="fuzz/fuzz_vocab.c text/tokenizer.c text/unicode.c text/unicode_tables.c format/gguf.c simd/quant.c"
TEXT_INC="-Ifuzz -Itext -Iinclude -Iformat -Isimd -Iplatform"

# Seeds from texts.json, each after a selector byte 0..$1-1 (the harness's
# first byte): the strings as they are, and for chat ($2 = 1) the message
# lists in the harness's form (role byte, NUL, content, NUL, ...), roles
# given as their index in fuzz_chat.c's list.  python3 reads the JSON.
json_seeds() {
    command -v python3 >/dev/null 2>&1 || return 0
    python3 - "$1" "$2" "$DIR/seeds" <<'PY'
import json, sys
sel, chat, out = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
roles = ["system", "user", "assistant", "tool"]
for i, s in enumerate(json.load(open("tests/data/golden/tokenizer/texts.json", encoding="utf-8"))):
    if isinstance(s, str):
        body = s.encode("utf-8").replace(b"\0", b"")
    elif chat:
        body = b"".join(bytes([roles.index(m["role"])]) + b"\0" + m["content"].encode("utf-8") + b"\0"
                        for m in s["messages"])
    else:
        continue
    for k in range(sel):
        gen = 128 if chat and isinstance(s, dict) and s.get("add_generation_prompt") else 0
        with open(f"{out}/text-{i}-{k}", "wb") as f:
            f.write(bytes([k | gen]) + body)
PY
}

LEN=4096
case $TARGET in
gguf)
    "$CC" $FLAGS -Iformat -Isimd fuzz/fuzz_gguf.c format/gguf.c simd/quant.c -o "$OUT/fuzz_gguf"
    for m in tests/data/golden/*/*.gguf; do
        [ -f "$m" ] || continue
        name=$(basename "$(dirname "$m")")-$(basename "$m" .gguf)
        head -c 16384 "$m" > "$DIR/seeds/$name"
    done
    LEN=20000 ;;
tokenizer)
    "$CC" $FLAGS $TEXT_INC fuzz/fuzz_tokenizer.c $TEXT_SRC -o "$OUT/fuzz_tokenizer"
    json_seeds 5 0 ;;
chat)
    "$CC" $FLAGS $TEXT_INC fuzz/fuzz_chat.c $TEXT_SRC -o "$OUT/fuzz_chat"
    # system, user, assistant, tool turns (one-byte roles pick from the
    # harness's list) around a few of the texts
    for k in 0 1 2 3 4 128 129; do
        printf "$(printf '\\%03o' $k)\001\000You are terse.\000\002\000What is 2+2?\000\003\0004\000\004\000{\"r\": 4}\000\003\000Done." \
            > "$DIR/seeds/turns-$k"
    done
    json_seeds 5 1 ;;
numbers)
    "$CC" $FLAGS -Icli -Iinclude -Immap fuzz/fuzz_numbers.c cli/common.c mmap/budget.c -o "$OUT/fuzz_numbers"
    k=0
    for s in 0 4096 4K 4k 512M 4G 1.5G 2GiB 3MB 1T -1 4X 1.5 0x10 1e9 inf nan "4 G" 99999999T \
             " 7" +3 -0 9223372036854775807 -9223372036854775808 9223372036854775808 0.7 1e-6 2.5e-310; do
        for sel in 0 1 2 3 4 5 6; do printf "$(printf '\\%03o' $sel)%s" "$s" > "$DIR/seeds/n-$k-$sel"; done
        k=$((k + 1))
    done
    LEN=256 ;;
request)
    "$CC" $FLAGS -Iserver fuzz/fuzz_request.c server/request.c -lcjson -o "$OUT/fuzz_request"
    k=0
    for b in '{"messages":[{"role":"user","content":"What is 2+2?"}]}' \
             '{"model":"m","messages":[{"role":"system","content":"terse"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":"4","reasoning_content":"r"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":16,"temperature":0,"top_p":0.9,"top_k":5,"min_p":0.1,"seed":7,"stop":["x","\\n\\n"],"n":1}' \
             '{"messages":[],"n":2}' '{"messages":"x"}' '{"messages":[{"role":"bot","content":1}]}' \
             '{"prompt":"Once","max_completion_tokens":3,"stop":"."}' '{"prompt":["a"],"logprobs":false,"tools":[]}' \
             '{"temperature":"hot"}' '[1,2' '{"response_format":{"type":"json_object"}}'; do
        for sel in 0 1; do printf "$(printf '\\%03o' $sel)%s" "$b" > "$DIR/seeds/r-$k-$sel"; done
        k=$((k + 1))
    done
    LEN=8192 ;;
imatrix)
    "$CC" $FLAGS -Iformat -Isimd -Iplatform fuzz/fuzz_imatrix.c format/imatrix.c format/gguf.c platform/fault.c simd/quant.c \
        -o "$OUT/fuzz_imatrix"
    for m in tests/data/llama/*.imatrix.gguf; do
        [ -f "$m" ] && head -c 20000 "$m" > "$DIR/seeds/$(basename "$m" .gguf)"
    done
    LEN=20000 ;;
esac
exec "$OUT/fuzz_$TARGET" -max_total_time="$SECS" -max_len=$LEN -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$DIR/" -print_final_stats=1 "$@" "$DIR/corpus" "$DIR/seeds"

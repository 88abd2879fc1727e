#!/bin/sh
# test_cli_stdio.sh — standard descriptors: a closed stderr/stdin does not capture a file
# opened later (quantize used to write its log into the model), and a failed write on
# standard output (/dev/full, closed) is exit 1 with "write error on standard output".
. "$(dirname "$0")/cli_lib.sh"

# quantize with stderr closed: exit 0 and the same model as with the log elsewhere
timeout 20 $E quantize $M "$T/want.gguf" q8_0 2>/dev/null
timeout 20 $E quantize $M "$T/closed.gguf" q8_0 2>&-
check "quantize 2>&-: exit 0" [ $? -eq 0 ]
check "quantize 2>&-: the same model as with a log" cmp -s "$T/want.gguf" "$T/closed.gguf"
expect 0 "" "$E info -m $T/closed.gguf >/dev/null"
# stdin closed too: still nothing lands on descriptors 0-2
timeout 20 $E quantize $M "$T/closed2.gguf" q8_0 <&- 2>&-
check "quantize <&- 2>&-: the same model" cmp -s "$T/want.gguf" "$T/closed2.gguf"
expect 0 "" "$E tokenize -m $M -p hi <&-"
# and -f - on a closed stdin is an error, not a hang or an empty prompt
expect 1 "cannot read standard input" "$E tokenize -m $M -f - <&-"

# every command that writes to standard output: /dev/full and a closed stdout fail
for c in "run -m $M -p hi -n 4 --no-stats" "run -m $M --chat -p hi -n 4 --no-stats" "tokenize -m $M -p hi" \
         "info -m $M" "eval -m $M --n 5" "eval --list --n 5" "--help" "run --help" "quantize --help"; do
    expect 1 "write error on standard output: No space left on device" "$E $c >/dev/full"
    expect 1 "write error on standard output: Bad file descriptor" "$E $c >&-"
done
# the same commands succeed into a pipe
expect 0 "" "$E tokenize -m $M -p hi | cat >/dev/null"
summary

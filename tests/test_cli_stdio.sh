#!/bin/sh
# test_cli_stdio.sh — standard descriptors: a closed stderr/stdin does not capture a file
# opened later (quantize used to write its log into the model).
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

summary

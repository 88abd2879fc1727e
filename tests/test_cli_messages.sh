#!/bin/sh
# test_cli_messages.sh — messages that say what is wrong: quantize of a vocabulary-only file
# (no tensors) is refused instead of "succeeding"; a prompt too long for the model's maximum
# context does not suggest -c.
. "$(dirname "$0")/cli_lib.sh"

expect 1 "has no tensors" "$E quantize tests/data/golden/tokenizer/dsv3-vocab.gguf $T/v.gguf q8_0"
check "vocabulary-only quantize: no output" [ ! -e "$T/v.gguf" ]

# the default model's training context is 512 tokens; 600 words are more
i=0
while [ $i -lt 600 ]; do printf 'word '; i=$((i + 1)); done > "$T/long.txt"
expect 1 "too long for the model's maximum context of 512 tokens" "$E run -m $M -f $T/long.txt -n 1"
expect 1 "too long for the model's maximum context of 512 tokens" "$E run -m $M -f $T/long.txt -n 1 -c 512"
no_advice() { ! grep -q "use -c" "$T/err"; }
check "no -c advice at the maximum" no_advice
expect 1 "use -c to enlarge it, up to the model's maximum of 512" "$E run -m $M -f $T/long.txt -n 1 -c 64"
summary

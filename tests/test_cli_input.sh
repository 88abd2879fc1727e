#!/bin/sh
# test_cli_input.sh — what edgeseek refuses to read: a model that is not a regular file
# (refused at once: a FIFO never hangs).
. "$(dirname "$0")/cli_lib.sh"

mkfifo "$T/fifo" || { skip "mkfifo"; summary; exit; }
# a FIFO as the model: "not a regular file" at once, for every command that opens one
for c in "info -m $T/fifo" "tokenize -m $T/fifo -p hi" "run -m $T/fifo -p hi" \
         "logits -m $T/fifo --tokens 1 -o $T/l.f32" "quantize $T/fifo $T/q.gguf q8_0" "eval -m $T/fifo --n 1"; do
    expect 1 "not a regular file" "$E $c"
done
expect 1 "not a regular file" "$E info -m /dev/null"
expect 1 "not a regular file" "$E info -m $T"

summary

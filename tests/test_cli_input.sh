#!/bin/sh
# test_cli_input.sh — what edgeseek refuses to read: a model or a prompt file that is not a
# regular file (refused at once: a FIFO never hangs), a prompt with a NUL byte (-f for run,
# tokenize and --chat alike), a prompt file over 64 MiB; and -f - reads standard input.
. "$(dirname "$0")/cli_lib.sh"

mkfifo "$T/fifo" || { skip "mkfifo"; summary; exit; }
# a FIFO as the model: "not a regular file" at once, for every command that opens one
for c in "info -m $T/fifo" "tokenize -m $T/fifo -p hi" "run -m $T/fifo -p hi" \
         "logits -m $T/fifo --tokens 1 -o $T/l.f32" "quantize $T/fifo $T/q.gguf q8_0" "eval -m $T/fifo --n 1"; do
    expect 1 "not a regular file" "$E $c"
done
expect 1 "not a regular file" "$E info -m /dev/null"
expect 1 "directory without config.json" "$E info -m $T"

# prompt files: a FIFO, a device, a directory are refused at once
expect 1 "is a FIFO" "$E tokenize -m $M -f $T/fifo"
expect 1 "is a FIFO" "$E run -m $M -f $T/fifo -n 1"
expect 1 "is a character device" "$E run -m $M -f /dev/zero -n 1"
expect 1 "is a character device" "$E tokenize -m $M -f /dev/zero"
expect 1 "is a directory" "$E tokenize -m $M -f $T"
expect 1 "cannot open" "$E tokenize -m $M -f $T/missing.txt"

# a NUL byte: the same refusal everywhere (tokenize used to read past it, run to stop at it)
printf 'What is 1 + 2?\000 and more' > "$T/nul.txt"
expect 1 "contains a NUL byte (at byte 14)" "$E tokenize -m $M -f $T/nul.txt"
expect 1 "contains a NUL byte (at byte 14)" "$E run -m $M -f $T/nul.txt -n 1"
expect 1 "contains a NUL byte (at byte 14)" "$E run -m $M --chat -f $T/nul.txt -n 1"
printf '\000' | { expect 1 "standard input contains a NUL byte" "$E tokenize -m $M -f -"; }

# the size cap: 64 MiB (a sparse file, refused from its size; and a stream, read bounded)
truncate -s 67108865 "$T/huge.txt" && expect 1 "a prompt may have at most 67108864" "$E tokenize -m $M -f $T/huge.txt"
head -c 67108865 /dev/zero | tr '\000' a | { expect 1 "more than 67108864 bytes" "$E tokenize -m $M -f -"; }

# what is accepted: a regular file, standard input, both as -p would give
printf 'Hello world' > "$T/p.txt"
timeout 20 $E tokenize -m $M -p 'Hello world' > "$T/want" 2>&1
timeout 20 $E tokenize -m $M -f "$T/p.txt" > "$T/got1" 2>&1
printf 'Hello world' | timeout 20 $E tokenize -m $M -f - > "$T/got2" 2>&1
check "tokenize -f FILE = -p TEXT" cmp -s "$T/want" "$T/got1"
check "tokenize -f - = -p TEXT" cmp -s "$T/want" "$T/got2"
check "-p gives ids" grep -q '^[0-9]' "$T/want"
summary

#!/bin/sh
# test_cli_chat.sh — `edgeseek chat` with standard input not a terminal (a script's
# pipe), the default model at temperature 0: answers line by line, no escape codes,
# thinking between <think> tags (left out with --hide-thinking), the second turn
# reusing the cache (--verbose), commands, the oldest turns dropped when the context
# is full, a line with a NUL byte skipped, end of input exits 0, bad options exit 2;
# --session FILE and --kv-type.
. "$(dirname "$0")/cli_lib.sh"
C="$E chat -m $M --temp 0 -t 2"
esc=$(printf '\033')

# two turns and the commands, from a pipe
printf 'What is 487 + 356?\n\n/help\nWhat is 613 - 278?\n/save %s\n/reset\nWhat is 613 - 278?\n' "$T/conv.json" |
    { expect 0 "" "$C --verbose"; }
check "answers, one a line" grep -qx 843 "$T/out"
check "the answer after /reset" sh -c "grep -x 335 '$T/out' | grep -q ."
check "thinking between <think> tags" grep -qx '<think>' "$T/out"
check "thinking text" grep -qx '7+6+0=13' "$T/out"
check "/help on stdout" grep -q '/save FILE' "$T/out"
check "no escape codes on a pipe" sh -c "! grep -q '$esc' '$T/out' '$T/err'"
check "notes on stderr" grep -q 'the conversation is reset' "$T/err"
# turn 2 keeps turn 1's prompt in the cache (16 tokens) and evaluates only what follows
check "turn 2 reuses the cache" grep -q 'prompt [0-9]* tokens: 16 reused' "$T/err"
check "/save wrote the conversation" grep -q '"content": "843", "reasoning_content": "7+6+0=13' "$T/conv.json"
check "/save: both turns" sh -c "grep -c '\"role\": \"user\"' '$T/conv.json' | grep -qx 2"

# --hide-thinking: the answers alone
printf 'What is 487 + 356?\n' | { expect 0 "" "$C --hide-thinking"; }
check "--hide-thinking: the answer" grep -qx 843 "$T/out"
check "--hide-thinking: no thinking" sh -c "! grep -q 'think\|7+6+0' '$T/out'"

# a small context: the oldest turns are dropped, with a note, and the chat goes on
printf 'What is 487 + 356?\nWhat is 613 - 278?\nWhat is 111 + 222?\nWhat is 487 + 356?\n' |
    { expect 0 "oldest turn" "$C -c 96"; }
check "a small context: four answers" sh -c "grep -c '^-\{0,1\}[0-9][0-9]*\$' '$T/out' | grep -qx 4"
# a message that cannot fit at all is refused, and the chat goes on
long=$(awk 'BEGIN { for (i = 0; i < 60; i++) printf "What is 1 + 2? "; }')
printf '%s\nWhat is 487 + 356?\n' "$long" | { expect 0 "the message is too long" "$C -c 96"; }
check "after a refused message" grep -qx 843 "$T/out"

# a line with a NUL byte is skipped; an empty input ends at once with 0
printf 'What is\000 1 + 2?\nWhat is 487 + 356?\n' | { expect 0 "NUL byte" "$C"; }
check "after a NUL line" grep -qx 843 "$T/out"
expect 0 "" "$C < /dev/null"
check "no input: nothing written" test ! -s "$T/out"

# /save into a directory that does not exist: a message, the chat goes on
printf '/save %s\nWhat is 487 + 356?\n' "$T/no/such/dir/x.json" | { expect 0 "$T/no/such/dir" "$C"; }
check "after a failed /save" grep -qx 843 "$T/out"

# --session FILE: the cache saved at exit and restored at the next start, where the
# prompt but its last token comes from it, with the answer of a chat without the file;
# another cache type is refused (and replaced at exit), a file that is not a session is
# never loaded nor overwritten, --kv-type picks the cache's type
S="$T/chat.session"
B="Be brief."
printf 'What is 487 + 356?\n' | { expect 0 "" "$C --system '$B' --verbose --session $S"; }
check "--session: saved at exit" [ -s "$S" ]
check "--session: nothing to restore at first" grep -q 'tokens: 0 reused' "$T/err"
check "--verbose: the cache's type and bytes" grep -q 'KV cache f16, [1-9][0-9]* bytes' "$T/err"
printf 'What is 487 + 356?\n' | { expect 0 "tokens of cache restored from" "$C --system '$B' --verbose --session $S"; }
cp "$T/out" "$T/restored"
check "--session: all but the last prompt token from the file" \
    sh -c "sed -n 's/.*prompt \([0-9]*\) tokens: \([0-9]*\) reused.*/\1 \2/p' '$T/err' | awk '{ exit !(\$2 > 0 && \$2 == \$1 - 1) }'"
printf 'What is 487 + 356?\n' | { expect 0 "" "$C --system '$B'"; }
check "--session: the same answer as without the file" cmp -s "$T/out" "$T/restored"
printf 'What is 487 + 356?\n' | { expect 0 "holds a f16 KV cache; this session's is q8_0" "$C --system '$B' --kv-type q8_0 --verbose --session $S"; }
check "--session: a refused file is not loaded" grep -q 'tokens: 0 reused' "$T/err"
printf 'What is 487 + 356?\n' | { expect 0 "tokens of cache restored from" "$C --system '$B' --kv-type q8_0 --session $S"; }
printf 'my notes\n' >"$T/notes.txt"
printf 'What is 487 + 356?\n' | { expect 1 "not an edgeseek session file" "$C --session $T/notes.txt"; }
check "--session: a file that is not a session is left alone" [ "$(cat "$T/notes.txt")" = "my notes" ]
printf 'What is 487 + 356?\n' | { expect 1 "$T/no/such" "$C --session $T/no/such/s.session"; }
check "--session: the answer before the failed save" grep -qx 843 "$T/out"
expect 2 "unknown KV cache type 'q4_0'" "$C --kv-type q4_0 < /dev/null"

# usage
expect 2 "-m MODEL is required" "$E chat"
expect 2 "unknown option" "$E chat -m $M --bogus"
expect 2 "--temp expects" "$E chat -m $M --temp x"
expect 1 "cannot open" "$E chat -m $T/missing.gguf < /dev/null"
expect 2 "EDGESEEK_CHAT_STEP_MS expects milliseconds" "env EDGESEEK_CHAT_STEP_MS=soon $E chat -m $M < /dev/null"
expect 0 "" "$E chat --help"
check "--help lists /save" grep -q '/save FILE' "$T/out"
summary

#!/bin/sh
# test_cli_session.sh — `run --session FILE` and `--kv-type`: the first run prefills and saves,
# the second takes the prompt from the file and prints the same text, a longer prompt reuses
# the common prefix, a file of another cache type is replaced with a message, a file that is
# not a session file is never overwritten, and an unknown --kv-type is bad usage.
. "$(dirname "$0")/cli_lib.sh"

P="What is 487 + 356?"
R="$E run -m $M --chat --temp 0 -n 40 -t 1"
expect 0 "(0 from the session file)" "$R -p '$P' --session $T/s.session"
cp "$T/out" "$T/first"
check "the session file was written" [ -s "$T/s.session" ]
expect 0 "from the session file)" "$R -p '$P' --session $T/s.session"
check "a loaded prompt prints the same text" cmp -s "$T/out" "$T/first"
check "it took all but the last prompt token from the file" sh -c "! grep -q '(0 from the session file)' '$T/err'"
expect 0 "" "$R -p '$P' --no-stats"
check "a run without --session prints the same text" cmp -s "$T/out" "$T/first"
# a longer prompt keeps the common prefix and saves its own state
expect 0 "from the session file)" "$R --system 'Be brief.' -p '$P' --session $T/s.session"
# another cache type: replaced, with a message naming both
expect 0 "holds a f16 KV cache; this session's is q8_0" "$R -p '$P' --kv-type q8_0 --session $T/s.session"
expect 0 "from the session file)" "$R -p '$P' --kv-type q8_0 --session $T/s.session"
# not a session file: an error, and the file is left alone
printf 'my notes\n' > "$T/notes.txt"
expect 1 "not an edgeseek session file" "$R -p '$P' --session $T/notes.txt"
check "a file that is not a session file is not overwritten" [ "$(cat "$T/notes.txt")" = "my notes" ]
# the stats line names the cache type and its bytes per token
expect 0 "KV cache q8_0, 400 bytes/token" "$R -p '$P' --kv-type q8_0"
expect 0 "KV cache f16, 640 bytes/token" "$R -p '$P'"
expect 2 "unknown KV cache type 'q4_0'" "$R -p '$P' --kv-type q4_0"
expect 0 "" "$E info -m $M"
check "info gives the bytes per token of each cache type" grep -q "f16 640 (default), bf16 640, q8_0 400 bytes per token" "$T/out"
summary

#!/bin/sh
# test_cli_mtp.sh — `--mtp` on run, chat and bench, on a model that build/gen_model writes
# with a random MTP block: at temperature 0 the text is the text without --mtp (run, and
# chat over two turns), the stats line and bench --json report the drafts; sampling with
# --mtp runs; a model without the block refuses --mtp with a message; --session with --mtp
# on the default MTP model: the run that loads the file repeats the run that wrote it.
. "$(dirname "$0")/cli_lib.sh"
G=$B/gen_model
if [ ! -x "$G" ]; then
    skip "$G not built"
    summary
    exit $?
fi
X=$T/mtp.gguf
check "gen_model --mtp" sh -c "'$G' --preset tiny --type q8_0 --seed 61 --mtp --experts 16 --experts-used 4 --quiet --threads 1 -o '$X' >/dev/null 2>&1"

# run: the same text, and the stats
expect 0 "" "$E run -m $X -p 'one two three' -n 48 --temp 0 -t 2"
cp "$T/out" "$T/plain"
expect 0 "MTP:" "$E run -m $X -p 'one two three' -n 48 --temp 0 -t 2 --mtp"
check "run --mtp: the text of plain decoding" cmp -s "$T/out" "$T/plain"
check "run --mtp: tokens per forward pass" grep -q 'tokens per forward pass' "$T/err"
expect 0 "MTP:" "$E run -m $X -p 'one two three' -n 48 --temp 0.8 --seed 3 -t 2 --mtp"

# chat: two turns
printf 'hello there\nand then?\n' > "$T/in"
expect 0 "" "$E chat -m $X --temp 0 -n 24 -t 2 < '$T/in'"
cp "$T/out" "$T/chat_plain"
expect 0 "MTP:" "$E chat -m $X --temp 0 -n 24 -t 2 --mtp --verbose < '$T/in'"
check "chat --mtp: the answers of plain decoding" cmp -s "$T/out" "$T/chat_plain"

# bench --mtp --json
expect 0 "" "$E bench -m $X -p 0 -n 16 -d 0 -r 2 -t 2 --no-bw --mtp --json"
check "bench --mtp: tgN greedy" grep -q '"test": "tg16 greedy"' "$T/out"
check "bench --mtp: acceptance and tokens per pass" grep -q '"mtp_acceptance": .*"mtp_tokens_per_pass"' "$T/out"

# the trained module of the default model (models/edgeseek-default-mtp.gguf): the same
# answers with and without --mtp, and at least the issue's 70% of the drafts accepted
# (temperature 0: the count is a property of the file, not of the machine)
D=models/edgeseek-default-mtp.gguf
if [ -f "$D" ]; then
    for q in "What is 613 - 278?" "What is 487 + 356?" "What is 7 * 86?"; do
        expect 0 "" "$E run -m $D --chat -p '$q' --temp 0 -t 2"
        cp "$T/out" "$T/dplain"
        expect 0 "MTP:" "$E run -m $D --chat -p '$q' --temp 0 -t 2 --mtp"
        check "default model, '$q': --mtp gives the same answer" cmp -s "$T/out" "$T/dplain"
        pct=$(sed -n 's/.*accepted (\([0-9]*\)\.[0-9]*%).*/\1/p' "$T/err")
        check "default model, '$q': at least 70% of the drafts accepted (${pct:-?}%)" test "${pct:-0}" -ge 70
    done
    # --session with --mtp: the file keeps the MTP block's rows; the run that loads it
    # gives the text of the run that wrote it (sampling too: the drafts' distributions
    # decide tokens, so they must be the same bit for bit)
    S=$T/mtp.session
    for temp in "0" "0.7 --seed 5"; do
        rm -f "$S"
        expect 0 "MTP:" "$E run -m $D --chat -p 'What is 487 + 356?' --temp $temp -t 2 --mtp --session $S"
        cp "$T/out" "$T/first"
        sed -n 's/.*MTP: \([0-9]* drafted, [0-9]* accepted\).*/\1/p' "$T/err" > "$T/first_mtp"
        expect 0 "MTP:" "$E run -m $D --chat -p 'What is 487 + 356?' --temp $temp -t 2 --mtp --session $S"
        check "--mtp --session (temp $temp): the run from the file gives the text of the run that wrote it" cmp -s "$T/out" "$T/first"
        check "--mtp --session (temp $temp): the prompt came from the file" grep -q "from the session file" "$T/err"
        sed -n 's/.*MTP: \([0-9]* drafted, [0-9]* accepted\).*/\1/p' "$T/err" > "$T/second_mtp"
        check "--mtp --session (temp $temp): the same drafts kept ($(cat "$T/first_mtp") / $(cat "$T/second_mtp"))" \
            sh -c "test -s '$T/first_mtp' && cmp -s '$T/first_mtp' '$T/second_mtp'"
    done
else
    skip "$D missing"
fi

# a model without the block
expect 1 "no MTP (next-n) block" "$E run -m $M -p hi -n 4 --mtp"
expect 1 "no MTP (next-n) block" "$E chat -m $M --mtp < /dev/null"
summary

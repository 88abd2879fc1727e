#!/bin/sh
# Runs each test binary given as an argument.  Every binary prints its own
# "N passed, N failed, N skipped" as its last line (a binary printing only
# "N passed, N failed" is read as 0 skipped); this prints one such line per
# binary and their sum as the last line.  A binary that crashes or prints no
# summary counts as one failure.  The failures are repeated just above the
# last line, so that a log cut to its tail still says what failed.
total_pass=0
failures=""
total_fail=0
total_skip=0
for t in "$@"; do
    name=$(basename "$t")
    out=$("$t" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -E '^(FAIL|SKIP)' | sed "s/^/[$name] /"
    failed_lines=$(printf '%s\n' "$out" | grep -E '^FAIL' | sed "s/^/[$name] /")
    # "P F S" from the last line, S empty when the binary does not count skips
    counts=$(printf '%s\n' "$out" | tail -n 1 |
        sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed\(, \([0-9][0-9]*\) skipped\)\{0,1\}$/\1 \2 \4/p')
    read -r p f s <<EOC
$counts
EOC
    if [ -z "$p" ]; then
        echo "[$name] crashed or printed no summary (exit $rc); last lines:"
        printf '%s\n' "$out" | tail -n 15
        p=0; f=1
        failed_lines="[$name] crashed or printed no summary (exit $rc)"
    elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "[$name] exit status $rc"
        f=1
        failed_lines="[$name] exit status $rc after its summary"
    fi
    [ -n "$failed_lines" ] && failures="$failures$failed_lines
"
    s=${s:-0}
    echo "$name: $p passed, $f failed, $s skipped"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    total_skip=$((total_skip + s))
done
if [ -n "$failures" ]; then
    echo "failures (the first 20):"
    printf '%s' "$failures" | head -n 20
fi
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]

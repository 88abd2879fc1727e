#!/bin/sh
# Runs each test binary given as an argument.  Every binary prints its own
# "N passed, N failed, N skipped" as its last line (a binary printing only
# "N passed, N failed" is read as 0 skipped); this prints one such line per
# binary and their sum as the last line.  A binary that crashes or prints no
# summary counts as one failure.
total_pass=0
total_fail=0
total_skip=0
for t in "$@"; do
    name=$(basename "$t")
    out=$("$t" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -E '^(FAIL|SKIP)' | sed "s/^/[$name] /"
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
    elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "[$name] exit status $rc"
        f=1
    fi
    s=${s:-0}
    echo "$name: $p passed, $f failed, $s skipped"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    total_skip=$((total_skip + s))
done
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]

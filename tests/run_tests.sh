#!/bin/sh
# Runs each test binary given as an argument.  Every binary prints its own
# "N passed, N failed" as its last line; this sums them and prints the total.
# A binary that crashes or prints no summary counts as one failure.
total_pass=0
total_fail=0
for t in "$@"; do
    name=$(basename "$t")
    out=$("$t" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -E '^(FAIL|SKIP)' | sed "s/^/[$name] /"
    summary=$(printf '%s\n' "$out" | tail -n 1)
    p=$(printf '%s\n' "$summary" | sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed.*$/\1/p')
    f=$(printf '%s\n' "$summary" | sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed.*$/\2/p')
    if [ -z "$p" ]; then
        echo "[$name] crashed or printed no summary (exit $rc); last lines:"
        printf '%s\n' "$out" | tail -n 15
        p=0; f=1
    elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "[$name] exit status $rc"
        f=1
    fi
    echo "$name: $p passed, $f failed"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]

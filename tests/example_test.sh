#!/bin/sh
# examples/generate (built by `make` as a user would build it: edgeseek.h
# and the library only) answers the question `make run` asks of the default
# model, and fails with a message and exit status 1 on a missing model.
# The last line is "N passed, N failed", as tests/run_tests.sh expects.
BUILD=${ES_BUILD:-build}
EXAMPLE=$BUILD/examples/generate
MODEL=models/edgeseek-default.gguf
pass=0
fail=0
check() { # check NAME CONDITION-EXIT-STATUS [DETAIL]
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1${3:+: $3}"; fi
}

out=$("$EXAMPLE" "$MODEL" "What is 487 + 356?" 2>&1)
rc=$?
check "generate exits 0 on the default model" "$rc" "exit status $rc"
# the answer follows the reasoning: the first line after </think> with text
answer=$(printf '%s\n' "$out" | sed -n '/<\/think>/,$p' | sed '1d' | grep -m1 -v '^[[:space:]]*$' | tr -d '[:space:]')
[ "$answer" = "843" ]
check "generate answers 487 + 356 with 843" $? "answer '$answer'; output: $(printf '%s' "$out" | tr '\n' ' ')"

out=$("$EXAMPLE" "$BUILD/no-such-model.gguf" "hello" 2>&1)
rc=$?
[ "$rc" -eq 1 ] && printf '%s' "$out" | grep -q 'no-such-model.gguf'
check "a missing model: exit status 1 and a message naming the file" $? "exit status $rc, '$out'"

"$EXAMPLE" >/dev/null 2>&1
rc=$?
[ "$rc" -eq 2 ]
check "no arguments: usage, exit status 2" $? "exit status $rc"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

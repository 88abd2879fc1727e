#!/bin/sh
# test_server.sh — `edgeseek serve` end to end on loopback with the default model:
# the official openai npm client (non-streamed and streamed chat: the arithmetic
# answer, reasoning_content holding the trace and content not; a second turn
# reusing the rewritten cache; completions; models), 8 concurrent clients at
# temperature 0 answering as sequential requests, every bad request (malformed
# JSON, wrong types, n=2, empty messages, oversized body and headers, a slow
# client, bad keys) answered while the server keeps serving; then a slowed server
# (EDGESEEK_SERVE_STEP_MS): SSE keep-alive during a long prefill, a mid-stream
# disconnect freeing the slot at once, a full queue's 503 with Retry-After, and
# SIGTERM mid-stream (cancelled, [DONE], exit 0); /health 503 while the model loads
# (EDGESEEK_SERVE_LOAD_MS), 200 when ready; a server with --kv-type q8_0 and
# --slot-save-path: slot save, erase, restore (the restored cache reused), names
# confined to the directory, a busy slot's 503, and --max-conn's 503; --mtp on the
# MTP model: the text of the server without it, alone and 8 at once.  The client is
# tests/server_client.cjs (node); the openai package is looked for in
# tests/node_deps (.ci/run installs it; so does this script when npm is there).
# Every wait is bounded.  Without server support in the build, or without node,
# the checks are counted as skipped.
. "$(dirname "$0")/cli_lib.sh"

if timeout 20 $E serve -m "$M" --port 1 2>&1 | grep -q "no server support"; then
    skip "this build has no server support (libcivetweb-dev, libcjson-dev)"
    summary; exit
fi
if ! command -v node >/dev/null 2>&1; then
    skip "node is not installed (Debian: nodejs); the server tests need it"
    summary; exit
fi
DEPS=${ES_NODE_DEPS:-tests/node_deps}
if [ ! -d "$DEPS/node_modules/openai" ] && command -v npm >/dev/null 2>&1; then
    timeout 120 npm install --prefix "$DEPS" --no-save --no-package-lock --no-audit --no-fund openai@4 \
        >"$T/npm.log" 2>&1 || echo "(npm could not install openai; its checks are skipped)"
fi

# start_server LOG ARGS...: starts the server on a free port (--port 0), waits (at
# most 20 s) for /health to say ready; sets PID and URL
start_server() {
    log=$1; shift
    $E serve -m "$M" --port 0 -t 1 "$@" >"$log" 2>&1 &
    PID=$!
    URL=
    i=0
    while [ $i -lt 200 ]; do
        URL=$(sed -n 's|^edgeseek serve: listening on \(http://[^/]*\)/.*|\1|p' "$log" 2>/dev/null)
        if [ -n "$URL" ] && grep -q "ready:" "$log"; then return 0; fi
        kill -0 $PID 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    fail "the server did not start: $(cat "$log")"
    kill $PID 2>/dev/null
    return 1
}

# wait_exit PID SECONDS: the exit status, or 124 after SECONDS (then killed)
wait_exit() {
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$1" 2>/dev/null; then kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null; return 124; fi
    wait "$1"
}

# stop_server WHAT: SIGTERM to the server in $PID, which must exit 0 within 20 s
stop_server() {
    kill -TERM $PID
    wait_exit $PID 20
    rc=$?
    check "$1: exit 0 (got $rc)" [ "$rc" -eq 0 ]
}

# count the client's PASS/FAIL/SKIP lines
run_client() {
    timeout 300 node tests/server_client.cjs "$@" >"$T/client.out" 2>&1
    grep -E '^(FAIL|SKIP)' "$T/client.out"
    n_pass=$((n_pass + $(grep -c '^PASS' "$T/client.out")))
    n_fail=$((n_fail + $(grep -c '^FAIL' "$T/client.out")))
    n_skip=$((n_skip + $(grep -c '^SKIP' "$T/client.out")))
    if ! grep -qE '^(PASS|FAIL|SKIP)' "$T/client.out"; then fail "the client printed nothing: $(tail -5 "$T/client.out")"; fi
}

# the key from a file; the fast server with small limits
printf 'sk-test-%s\n' "$$" >"$T/key"
KEY=$(head -n 1 "$T/key")
if start_server "$T/a.log" -np 4 --api-key-file "$T/key" --max-body 64K --max-header 8192 --idle-timeout 2; then
    # /health answers without the key; the rest wants it
    run_client main "$URL" "$KEY"
    stop_server "SIGTERM on an idle server"
    check "the server said it stopped" grep -q "SIGTERM: stopping" "$T/a.log"
fi

# the slowed server: one slot, a queue of one, 20 ms a step, 4 prompt tokens a step,
# 4 s of generation at most per request
if EDGESEEK_SERVE_STEP_MS=20 start_server "$T/b.log" -np 1 --queue 1 --keepalive 1 --prefill-chunk 4 \
        --request-timeout 4; then
    run_client slow "$URL" "$PID"
    wait_exit $PID 20
    rc=$?
    check "SIGTERM mid-stream: exit 0 (got $rc)" [ "$rc" -eq 0 ]
fi

# slot files and --max-conn: two slots, a q8_0 cache, a save directory, three
# connections at most, a slowed step (a stream lasts while the checks run)
mkdir "$T/slots"
if EDGESEEK_SERVE_STEP_MS=20 start_server "$T/d.log" -np 2 --kv-type q8_0 --slot-save-path "$T/slots" --max-conn 3; then
    check "the ready line names the cache type" grep -q "KV cache q8_0 (400 bytes/token)" "$T/d.log"
    run_client slots "$URL" "$T/slots"
    stop_server "the slots server"
fi
# --mtp on the model with a trained MTP block, beside the same model without it:
# the same text at temperature 0, alone and among concurrent requests
MTP_M=models/edgeseek-default-mtp.gguf
if start_server "$T/p.log" -np 4 -m $MTP_M; then
    PLAIN_URL=$URL PLAIN_PID=$PID
    if start_server "$T/q.log" -np 4 -m $MTP_M --mtp; then
        check "the ready line says MTP" grep -q "MTP drafts" "$T/q.log"
        run_client mtp "$URL" "$PLAIN_URL"
        stop_server "the --mtp server"
    fi
    kill -TERM $PLAIN_PID
    wait_exit $PLAIN_PID 20
fi
expect 1 "no MTP (next-n) block" "$E serve -m $M --mtp --port 0"
expect 1 "--slot-save-path $T/nowhere" "$E serve -m $M --slot-save-path $T/nowhere"
expect 2 "unknown KV cache type" "$E serve -m $M --kv-type f8"

# /health while the model loads (EDGESEEK_SERVE_LOAD_MS holds the load back 5 s): 503
# with the error shape at once, then 200 when ready; no key needed for either
health() { # URL: the status code of GET URL/health, 000 when no answer
    timeout 10 node -e 'fetch(process.argv[1] + "/health").then(r => console.log(r.status), () => console.log("000"))' "$1"
}
EDGESEEK_SERVE_LOAD_MS=5000 $E serve -m "$M" --port 0 -t 1 --api-key k >"$T/c.log" 2>&1 &
PID=$!
URL=
i=0
while [ -z "$URL" ] && [ $i -lt 100 ] && kill -0 $PID 2>/dev/null; do
    URL=$(sed -n 's|^edgeseek serve: listening on \(http://[^/]*\)/.*|\1|p' "$T/c.log")
    [ -n "$URL" ] || sleep 0.1
    i=$((i + 1))
done
if [ -n "$URL" ]; then
    code=$(health "$URL")
    check "/health while loading: 503 (got $code)" [ "$code" = 503 ]
    i=0
    while [ $i -lt 200 ] && ! grep -q "ready:" "$T/c.log"; do sleep 0.1; i=$((i + 1)); done
    code=$(health "$URL")
    check "/health when ready: 200 (got $code)" [ "$code" = 200 ]
else
    fail "the server did not listen: $(cat "$T/c.log")"
fi
kill -TERM $PID 2>/dev/null
wait_exit $PID 20
expect 2 "EDGESEEK_SERVE_LOAD_MS expects milliseconds" "env EDGESEEK_SERVE_LOAD_MS=soon $E serve -m $M --port 0"

# usage errors need no network
expect 2 "-m MODEL is required" "$E serve"
expect 2 "--reasoning-format expects" "$E serve -m $M --reasoning-format xml"
expect 2 "not both" "$E serve -m $M --api-key a --api-key-file $T/key"
expect 1 "cannot listen" "$E serve -m $M --host 203.0.113.1 --port 1"
summary

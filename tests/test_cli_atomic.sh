#!/bin/sh
# test_cli_atomic.sh — files edgeseek writes (quantize, logits -o, gen_model) replace their
# target only when complete: a failed write (the file size limit, a full disk) or an
# interruption (SIGINT, SIGTERM, SIGHUP in the middle of a quantize) leaves the old content
# and no temporary; the output is opened before the computation, and every failed write is
# reported with the system's reason.
. "$(dirname "$0")/cli_lib.sh"

no_temps() { ! ls -A "$T" | grep -q '\.tmp\.'; }
# (the helper script below is not a temporary: no ".tmp." in its name)
old() { printf 'old content\n' > "$1"; }
is_old() { [ "$(cat "$1")" = "old content" ]; }

# success replaces the target, keeping its permissions
old "$T/q.gguf"; chmod 640 "$T/q.gguf"
expect 0 "" "$E quantize --quiet $M $T/q.gguf q8_0"
expect 0 "" "$E info -m $T/q.gguf >/dev/null"
check "quantize keeps the replaced file's mode" [ "$(stat -c %a "$T/q.gguf")" = 640 ]
# a symbolic link stays a link; the file it names is replaced
old "$T/real.f32"; ln -s real.f32 "$T/link.f32"
expect 0 "" "$E logits -m $M --tokens 1,2,3 -o $T/link.f32"
check "logits -o LINK: still a link" [ -L "$T/link.f32" ]
check "logits -o LINK: the file it names is replaced" [ "$(stat -c %s "$T/real.f32")" -eq $((3 * 377 * 4)) ]
check "no temporary after success" no_temps

# a write that fails half-way (the file size limit, SIGXFSZ ignored: EFBIG)
printf '#!/bin/sh\nulimit -f 8; trap "" XFSZ; exec "$@"\n' > "$T/limited"
L="sh $T/limited"
old "$T/q.gguf"
expect 1 "File too large" "$L $E quantize --quiet $M $T/q.gguf q8_0"
check "quantize failure: the old content survives" is_old "$T/q.gguf"
old "$T/l.f32"
expect 1 "cannot write '$T/l.f32': File too large" \
    "$L $E logits -m $M --tokens $(seq -s, 1 40) -o $T/l.f32"
check "logits failure: the old content survives" is_old "$T/l.f32"
old "$T/g.gguf"
expect 1 "File too large" "$L $B/gen_model --quiet -o $T/g.gguf"
check "gen_model failure: the old content survives" is_old "$T/g.gguf"
check "no temporary after failures" no_temps

# a full disk is reported with its reason; an unwritable path before any computation
expect 1 "cannot write '/dev/full': No space left on device" "$E logits -m $M --tokens 1,2,3 -o /dev/full"
expect 1 "cannot create '$T/no/such/dir.f32'" "$E logits -m $T/missing.gguf --tokens 1 -o $T/no/such/dir.f32"
# a device is written in place, never replaced
expect 0 "" "$E logits -m $M --tokens 1 -o /dev/null"
check "/dev/null is still a device" [ -c /dev/null ]

# interrupted in the middle: an 80 MB f32 model quantized on one thread takes ~1 s
if timeout 20 $B/gen_model --quiet -o "$T/big.gguf" --type f32 --dim 512 --ffn 1024 --expert-ffn 512 \
        --layers 3 --threads 2; then
    for sig in TERM HUP INT; do
        old "$T/target.gguf"
        # a background job of a script starts with SIGINT ignored (then it stays ignored,
        # as it should); env --default-signal gives it the default action back
        pre=
        [ $sig = INT ] && pre="env --default-signal=INT"
        $pre timeout 20 $E quantize -t 1 --quiet "$T/big.gguf" "$T/target.gguf" q4_k_m &
        pid=$!
        i=0
        while [ $i -lt 200 ] && ! ls -A "$T" | grep -q '^\.target\.gguf\.tmp\.'; do sleep 0.02; i=$((i + 1)); done
        if ls -A "$T" | grep -q '^\.target\.gguf\.tmp\.'; then
            kill -$sig $pid
            wait $pid 2>/dev/null
            rc=$?
            check "SIG$sig in the middle: killed by it (exit $rc)" [ $rc -ge 128 ]
            check "SIG$sig in the middle: the old content survives" is_old "$T/target.gguf"
            check "SIG$sig in the middle: no temporary remains" no_temps
        else
            wait $pid
            skip "SIG$sig: the quantize ended before it could be interrupted"
        fi
    done
else
    fail "gen_model could not write the model to interrupt"
fi
summary

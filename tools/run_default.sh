#!/bin/sh
# `make run`: the main job on the default model.  The trained default model
# ships in models/; until it exists, a small random-weight model is generated
# and run, and this says so plainly.
set -eu
BUILD=${1:-build}
MODEL=models/edgeseek-default.gguf
if [ -f "$MODEL" ]; then
    echo "== edgeseek: default model $MODEL"
    exec "$BUILD/edgeseek" run -m "$MODEL" --chat --temp 0 -n 256 -p "What is 487 + 356?"
fi
MODEL="$BUILD/random-tiny.gguf"
if [ ! -f "$MODEL" ]; then
    "$BUILD/gen_model" --preset tiny --type q8_0 --seed 1 -o "$MODEL"
fi
echo "== edgeseek: no trained default model yet; running a generated model with RANDOM weights"
echo "== (its text is meaningless; it shows the runtime working end to end)"
exec "$BUILD/edgeseek" run -m "$MODEL" -p "Hello" -n 48 --seed 1

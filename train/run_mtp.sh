#!/bin/bash
# Trains the MTP (multi-token prediction, "next-n") module of a trained default model on the
# CPU and exports the model with it: the main model is read from BASE's GGUF (its next-n
# block, if it has one, left out first) and kept frozen; the module (mtp.py) is trained for
# MTP_MIN minutes on the task data, exported as the GGUF's next-n block (the main tensors
# copied byte for byte), and its acceptance measured from the exported weights on the held-out
# problems (OUT/acceptance.json).  train/README.md ("MTP module") has the figures.
#
# Output goes to build/mtp/ (OUT) and leaves models/ alone; INSTALL=1 writes the result as
# models/edgeseek-default-mtp.gguf (the default model itself stays without the block: llama.cpp
# refuses deepseek2 files with one).  BASE: the model to extend (models/edgeseek-default.gguf);
# MTP_MIN: the training time cap in minutes (25); SEED (1); SMOKE=1: a few steps of every stage.
# Needs Debian's PyTorch (apt-get install -y python3-torch libopenblas0-pthread); PY=... to
# choose another python.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-/usr/bin/python3}
OUT=${OUT:-../build/mtp}
BASE=${BASE:-../models/edgeseek-default.gguf}
if [ "${INSTALL:-0}" = 1 ]; then
    MODEL=${MODEL:-../models/edgeseek-default-mtp.gguf}
fi
MODEL=${MODEL:-$OUT/edgeseek-mtp.gguf}
MTP_MIN=${MTP_MIN:-25} SEED=${SEED:-1}
if ! $PY -c 'import torch' 2>/dev/null; then
    echo "run_mtp.sh: $PY has no torch; apt-get install -y python3-torch libopenblas0-pthread" >&2
    exit 1
fi
. ./blas_env.sh
if [ "${SMOKE:-0}" = 1 ]; then
    ARGS="--steps 5 --eval-n 2" ACC_N=2
else
    ARGS="--minutes $MTP_MIN --eval-n 0" ACC_N=100
fi
mkdir -p "$OUT" "$(dirname "$MODEL")"
t0=$(date +%s)
$PY mtp.py strip "$BASE" "$OUT/main.gguf"
$PY mtp.py train "$OUT/main.gguf" "$OUT/mtp.pt" --seed "$SEED" $ARGS 2>&1 | tee "$OUT/mtp.log"
$PY mtp.py export "$OUT/main.gguf" "$OUT/mtp.pt" "$MODEL"
$PY mtp.py accept "$MODEL" --n $ACC_N > "$OUT/acceptance.json"
cat "$OUT/acceptance.json"
echo "run_mtp.sh: done in $(( $(date +%s) - t0 )) s; model $MODEL"

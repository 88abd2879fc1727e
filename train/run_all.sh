#!/bin/bash
# Retrains the default model from scratch: the CPU recipe behind `make model`, sized to finish
# within about an hour on a 2-core machine.  Stages: supervised training on reasoning traces
# (with aux-loss-free expert balancing), the balancing ablation (bias updates off, short),
# GRPO reinforcement learning, GGUF export to models/, the reference logits for
# tests/test_default_model.c, and a JSON summary of the figures.
#
# Needs Debian's PyTorch: apt-get install -y python3-torch libopenblas0-pthread
# (without OpenBLAS, Debian's torch falls back to the reference BLAS and runs ~3x slower).
# It runs Debian's python explicitly, /usr/bin/python3: a python3 earlier on PATH (pyenv, venv)
# usually lacks Debian's packages.  Override with PY=..., DEVICE=cuda on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-/usr/bin/python3}
DEVICE=${DEVICE:-cpu}
OUT=${OUT:-../build/train}
MODEL=${MODEL:-../models/edgeseek-default.gguf}
REF=${REF:-../tests/data/default_model_ref.txt}
NICE=${NICE:-nice -n 10}
if ! $PY -c 'import torch' 2>/dev/null; then
    echo "run_all.sh: $PY has no torch; apt-get install -y python3-torch libopenblas0-pthread" >&2
    exit 1
fi
mkdir -p "$OUT" "$(dirname "$MODEL")" "$(dirname "$REF")"
# model size (the CPU recipe): about 2.4M parameters, 1.0M active per token
SIZE="--dim 128 --inter-dim 384 --moe-inter-dim 96 --q-lora-rank 64 --kv-lora-rank 48"
t0=$(date +%s)
$NICE $PY sft.py $SIZE --device "$DEVICE" --steps 1000 --batch 48 --lr 3e-3 --gamma 0.003 \
    --balance-at 150 --minutes 32 --out "$OUT/sft.pt" 2>&1 | tee "$OUT/sft.log"
$NICE $PY sft.py $SIZE --device "$DEVICE" --steps 150 --batch 48 --lr 3e-3 --gamma 0 \
    --eval-n 0 --out "$OUT/sft_nobias.pt" 2>&1 | tee "$OUT/ablation.log"
$NICE $PY grpo.py --device "$DEVICE" --init "$OUT/sft.pt" --steps 40 --prompts 16 --group 8 \
    --lr 2e-5 --minutes 12 --out "$OUT/rl.pt" 2>&1 | tee "$OUT/rl.log"
$PY export_gguf.py "$OUT/sft.pt" "$OUT/sft.gguf"   # the supervised-only model, for comparison
$PY export_gguf.py "$OUT/rl.pt" "$MODEL"
$PY make_ref.py "$MODEL" "$REF"
$PY summary.py "$OUT" > "$OUT/summary.json"
cat "$OUT/summary.json"
echo "run_all.sh: done in $(( $(date +%s) - t0 )) s; model $MODEL"

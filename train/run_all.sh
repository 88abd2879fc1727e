#!/bin/bash
# Retrains the model from scratch on the CPU: the recipe behind `make model`, sized to finish
# within the hour on a 2-core machine.  Stages: supervised training on reasoning traces
# (with aux-loss-free expert balancing), the balancing ablation (bias updates off, short),
# GRPO reinforcement learning, GGUF export, the reference logits for
# tests/test_default_model.c, and a JSON summary of the figures (OUT/summary.json).
#
# Measured (train/README.md, "CPU recipe"): 45 min 41 s wall on the idle 2-core development
# machine; SFT 4206 steps x 64 = 269k examples in its 42-minute cap, GRPO 40 steps; held-out
# accuracy (edgeseek eval --n 500) after SFT 100% add / 100% sub / 100% mul, after GRPO the same
# (98.6% sub over 1000).  On a busy machine (load ~6, 60% of one CPU) the same caps gave 130k
# examples and a much weaker model (add 71%, sub 65%).  Each process uses one thread (two lose
# several-fold on shared cores); the balancing ablation runs beside the main training as a second process;
# OpenBLAS is told its kernel family (it falls back to generic SSE3 kernels on unrecognised CPUs).
# Output goes to build/train/ and leaves models/ alone; INSTALL=1 replaces the shipped model
# and its reference logits with it.  SMOKE=1: every stage for a few steps (about a minute).
# SFT_MIN, RL_MIN: the stages' time caps in minutes (42, 7); THREADS: threads per process (1);
# SEED: the supervised run's seed (1: initial weights and the training problems' stream).
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
if [ "${INSTALL:-0}" = 1 ]; then
    MODEL=${MODEL:-../models/edgeseek-default.gguf}
    REF=${REF:-../tests/data/default_model_ref.txt}
fi
MODEL=${MODEL:-$OUT/edgeseek-cpu.gguf}
REF=${REF:-$OUT/edgeseek-cpu-ref.txt}
NICE=${NICE:-}
if ! $PY -c 'import torch' 2>/dev/null; then
    echo "run_all.sh: $PY has no torch; apt-get install -y python3-torch libopenblas0-pthread" >&2
    exit 1
fi
# OpenBLAS kernel family and one thread per process (the second core runs the ablation)
. ./blas_env.sh
THREADS=${THREADS:-1}
mkdir -p "$OUT" "$(dirname "$MODEL")" "$(dirname "$REF")"
# model size (the CPU recipe): about 2.4M parameters, 1.0M active per token
SIZE="--dim 128 --inter-dim 384 --moe-inter-dim 96 --q-lora-rank 64 --kv-lora-rank 48"
# SMOKE=1: a few steps of every stage, to check the pipeline end to end in minutes
if [ "${SMOKE:-0}" = 1 ]; then
    SFT_STEPS=6 ABL_STEPS=3 BAL_AT=3 RL_STEPS=1 RL_PROMPTS=2 EVAL_N=2
else
    SFT_STEPS=8000 ABL_STEPS=150 BAL_AT=150 RL_STEPS=40 RL_PROMPTS=16 EVAL_N=100
fi
SFT_MIN=${SFT_MIN:-42} RL_MIN=${RL_MIN:-7} SEED=${SEED:-1}
t0=$(date +%s)
# the balancing ablation (bias updates off, short) runs beside the main training, on the other core
$NICE $PY sft.py $SIZE --device "$DEVICE" --threads $THREADS --steps $ABL_STEPS --batch 64 --lr 3e-3 --gamma 0 \
    --eval-n 0 --out "$OUT/sft_nobias.pt" > "$OUT/ablation.log" 2>&1 &
abl=$!
# --minutes caps each stage, so a slower or busier machine still ends near the hour
# (with fewer steps; the learning-rate schedule follows the time then)
$NICE $PY sft.py $SIZE --device "$DEVICE" --threads $THREADS --steps $SFT_STEPS --batch 64 --lr 3e-3 \
    --seed $SEED --gamma 0.003 --balance-at $BAL_AT --eval-n $EVAL_N --minutes $SFT_MIN --log-every 100 \
    --out "$OUT/sft.pt" 2>&1 | tee "$OUT/sft.log"
wait $abl || { echo "run_all.sh: the ablation failed, see $OUT/ablation.log" >&2; exit 1; }
$NICE $PY grpo.py --device "$DEVICE" --threads $THREADS --init "$OUT/sft.pt" --steps $RL_STEPS \
    --prompts $RL_PROMPTS --group 8 --lr 3e-5 --eval-n $EVAL_N --minutes $RL_MIN --out "$OUT/rl.pt" 2>&1 | tee "$OUT/rl.log"
$PY export_gguf.py "$OUT/sft.pt" "$OUT/sft.gguf"   # the supervised-only model, for comparison
$PY export_gguf.py "$OUT/rl.pt" "$MODEL"
$PY make_ref.py "$MODEL" "$REF"
$PY summary.py "$OUT" > "$OUT/summary.json"
cat "$OUT/summary.json"
echo "run_all.sh: done in $(( $(date +%s) - t0 )) s; model $MODEL"

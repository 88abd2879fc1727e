#!/bin/bash
# Optional GPU recipe: the same pipeline for a larger model (dim 192, 16 experts of 128,
# about 4.6M parameters), large batches and data generated in worker processes; then the CPU
# recipe (run_all.sh) replayed on the GPU with identical settings, to check what `make model`
# reaches without waiting an hour.  Usage: run_gpu.sh OUTDIR  (run from anywhere; needs a
# python3 with a CUDA torch, PY=... to choose it).  Writes OUTDIR/run.log with every stage's
# output, big_{sft,rl}.gguf and big_ref.txt (the shipped models/edgeseek-default.gguf and its
# tests/data/default_model_ref.txt came from this script, run when the training mix was the
# earlier one and subtraction used the borrow-first trace: add --sub-trace borrow-first to the
# big model's sft.py line for that form) and small_{sft,rl}.gguf.
set -euo pipefail
OUT=$(realpath "$1")
cd "$(dirname "$0")"
PY=${PY:-python3}
W=${TMPDIR:-/tmp}/edgeseek-train
mkdir -p "$W" "$OUT"
exec >"$OUT/run.log" 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi -L || true
t0=$(date +%s)
BIG="--device cuda --workers 12 --batch 512 --lr 2e-3 --gamma 0.001 --log-every 200"
$PY sft.py $BIG --steps 100000 --minutes 2.6 --balance-at 400 --out "$W/big_sft.pt"
$PY export_gguf.py "$W/big_sft.pt" "$OUT/big_sft.gguf"
$PY grpo.py --device cuda --init "$W/big_sft.pt" --steps 1000 --minutes 1.4 --prompts 64 --group 8 \
    --lr 2e-5 --out "$W/big_rl.pt"
$PY export_gguf.py "$W/big_rl.pt" "$OUT/big_rl.gguf"
$PY make_ref.py "$OUT/big_rl.gguf" "$OUT/big_ref.txt"
echo "== big model done at $(( $(date +%s) - t0 )) s"
PY=$PY DEVICE=cuda NICE= OUT="$W/small" MODEL="$OUT/small_rl.gguf" REF="$OUT/small_ref.txt" \
    bash run_all.sh
cp "$W/small/sft.gguf" "$OUT/small_sft.gguf"
echo "== small (CPU recipe) done at $(( $(date +%s) - t0 )) s"
$PY sft.py $BIG --steps 400 --gamma 0 --eval-n 0 --out "$W/big_sft_nobias.pt"
cp "$W/big_sft.pt" "$W/sft.pt"; cp "$W/big_sft_nobias.pt" "$W/sft_nobias.pt"; cp "$W/big_rl.pt" "$W/rl.pt"
$PY summary.py "$W"
echo "== all done at $(( $(date +%s) - t0 )) s"

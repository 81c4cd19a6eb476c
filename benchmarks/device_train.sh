#!/usr/bin/env bash
# GHN-2 training on a lent GPU (one call of the device tool), continued later on the CPU with --resume.
# Expects .devdata/ (carried, git-ignored): fmnist/*.gz (Fashion-MNIST idx files) and archs/ (a generated
# DeepNets1M train split). Writes the training checkpoint, the GHN, the log and the console output to $OUT.
#   TIME_LIMIT=400 bash benchmarks/device_train.sh
#   INIT=pyg_ghn/checkpoints/ghn2_fmnist.pt TIME_LIMIT=400 bash benchmarks/device_train.sh   # train the shipped
#       GHN-2 on, with a fresh schedule (its own 12-epoch schedule is finished)
set -uo pipefail
OUT=${OUT:-runs/device}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, torch_geometric; print('torch', torch.__version__, 'pyg', torch_geometric.__version__, 'cuda', torch.cuda.is_available())"
ARGS=(--config ghn2 --data fashion_mnist --data-root .devdata/fmnist --arch-root .devdata/archs --archs 20000
      --meta-batch 8 --batch-size 64 --epochs 40 --steps-per-epoch 100 --lr 1e-3 --seed 1111 --device cuda
      --workers 14 --ckpt "$OUT/trainer.pt" --ckpt-every 100 --log "$OUT/log.json" ${INIT:+--init "$INIT"})
# 1. sanity: two steps, so that a broken set-up costs seconds, not the whole lease
[ -n "${SKIP_SANITY:-}" ] || python3 -m pyg_ghn.cli train "${ARGS[@]}" --epochs 1 --steps-per-epoch 2 --ckpt "$OUT/sanity.pt" --log "$OUT/sanity.json" 2>&1 | tail -3 || exit 1
rm -f "$OUT/sanity.pt" "$OUT/sanity.json"
# 2. the run, stopped after TIME_LIMIT seconds with a resumable checkpoint
python3 -m pyg_ghn.cli train "${ARGS[@]}" --time-limit "${TIME_LIMIT:-400}" --out "$OUT/ghn2_fmnist.pt" 2>&1 \
  | tr '\r' '\n' | grep -v '^epoch.*it/s\]$' | tee "$OUT/train.txt" | tail -20

#!/usr/bin/env bash
# Ground-truth properties (issue 7) of DeepNets-1M val and test networks on a lent GPU, in one call of the
# device tool: WORKERS processes per split share the GPU, each measuring a contiguous range of networks into
# its own file (files are written after every network, so a run cut short keeps what it measured).
# Inference time is then GPU time (as in the paper), so these files form their own dataset: each records its
# device, and pyg_ghn.properties.ArchPropertyDataset refuses to merge them with files measured on the CPU.
#   NUM_NETS=100 WORKERS=6 TIME_LIMIT=480 bash benchmarks/device_properties.sh
# Expects .devdata/fmnist/*.gz (Fashion-MNIST idx files, carried, git-ignored).
set -uo pipefail
OUT=${OUT:-runs/device}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
NUM_NETS=${NUM_NETS:-100}; WORKERS=${WORKERS:-6}; TIME_LIMIT=${TIME_LIMIT:-480}
per=$(( (NUM_NETS + WORKERS - 1) / WORKERS ))
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for split in val test; do
  for k in $(seq 0 $((WORKERS - 1))); do
    start=$((k * per)); n=$(( per < NUM_NETS - start ? per : NUM_NETS - start ))
    [ "$n" -gt 0 ] || continue
    timeout "$TIME_LIMIT" python3 -m pyg_ghn.properties.measure --split "$split" --start "$start" --num-nets "$n" \
      --device cuda --data-root .devdata/fmnist --no-progress --out "$OUT/properties_${split}_gpu_$k.json" \
      > "$OUT/properties_${split}_$k.log" 2>&1 &
  done
done
wait
for f in "$OUT"/properties_*_gpu_*.json; do
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1], len(d['results']))" "$f"
done

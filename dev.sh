#!/usr/bin/env bash
# Set-up and entry points. Every command installs what it needs first and is safe to run again.
#   bash dev.sh demo    the main job: a demo on embedded defaults
#   bash dev.sh test    the test suite (what CI runs)
#   bash dev.sh setup   only install
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

setup() {
  # torch/torchvision pinned: pip takes these two from local disk on this machine.
  if ! $PY -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')" 2>/dev/null; then
    $PY -m pip install -q torch==2.14.1 torchvision==0.29.1
  fi
  if ! $PY -c "import pyg_ghn, torch_geometric, pytest, h5py, sklearn" 2>/dev/null; then
    $PY -m pip install -q -e '.[test]'
  fi
  # Fashion-MNIST, the offline default image data (idx files in /usr/share/datasets/fashion-mnist).
  if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null
    else
      echo "warning: Fashion-MNIST missing; run: sudo apt-get install -y dataset-fashion-mnist" >&2
    fi
  fi
}

case "${1:-}" in
  setup) setup ;;
  demo) setup; shift; exec $PY examples/demo.py "$@" ;;
  test) setup; shift; exec $PY -m pytest -q "$@" ;;
  *) echo "usage: bash dev.sh {demo|test|setup} [args]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Set-up and entry points. Every command installs what it needs first and is safe to run again.
#   bash dev.sh demo    the main job: a demo on embedded defaults
#   bash dev.sh test    the test suite (what CI runs)
#   bash dev.sh setup   only install
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

# Runs one install step quietly: a line saying what, then one saying how long. pip's output goes to a log
# that is shown in full only if the step fails, so real errors stay visible; on success only its warnings
# and errors are kept (pip's WARNING/ERROR/DEPRECATION, apt's W:/E:), minus the "Location 'file:///...' is
# ignored" lines that this machine's local package indexes print for every package they do not hold
# (harmless: pip takes the package from the next index; ~40 lines on a fresh install).
install_step() {
  local what=$1 t0=$SECONDS log
  shift
  log=$(mktemp)
  echo "setup: installing $what ..."
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "setup: FAILED to install $what (the output above is the installer's)" >&2
    exit 1
  fi
  grep -E '^(WARNING|ERROR|DEPRECATION|W:|E:)' "$log" | grep -v "^WARNING: Location '.*' is ignored" >&2 || true
  rm -f "$log"
  echo "setup: installed $what in $((SECONDS - t0)) s"
}

setup() {
  local did=0
  # torch/torchvision pinned: pip takes these two from local disk on this machine.
  if ! $PY -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')" 2>/dev/null; then
    install_step 'torch 2.14.1, torchvision 0.29.1' $PY -m pip install -q torch==2.14.1 torchvision==0.29.1
    did=1
  fi
  if ! $PY -c "import pyg_ghn, torch_geometric, pytest, h5py, sklearn" 2>/dev/null; then
    install_step 'pyg_ghn (editable) with torch_geometric, pytest, h5py, scikit-learn' $PY -m pip install -q -e '.[test]'
    did=1
  fi
  # Fashion-MNIST, the offline default image data (idx files in /usr/share/datasets/fashion-mnist).
  if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      install_step 'Fashion-MNIST (Debian package dataset-fashion-mnist)' \
        sh -c 'apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist'
      did=1
    else
      echo "setup: warning: Fashion-MNIST missing; run: sudo apt-get install -y dataset-fashion-mnist" >&2
    fi
  fi
  if [ $did = 0 ]; then
    echo "setup: all installed (torch 2.14.1, torchvision 0.29.1, pyg_ghn with its test extra, Fashion-MNIST)"
  fi
}

case "${1:-}" in
  setup) setup ;;
  demo) setup; shift; exec $PY examples/demo.py "$@" ;;
  test) setup; shift; exec $PY -m pytest -q "$@" ;;
  *) echo "usage: bash dev.sh {demo|test|setup} [args]" >&2; exit 2 ;;
esac

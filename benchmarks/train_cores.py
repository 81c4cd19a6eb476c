"""What a second CPU core buys a training run: one process with 1 thread, one process with 2 threads, and two
``torch.distributed`` processes (gloo) with 1 thread each, on the same steps of the same run.

    python benchmarks/train_cores.py [--recipe cpu] [--steps 12] [--archs 100000]

Each configuration is ``pyg-ghn train --recipe R`` from scratch for ``--steps`` steps (the same architectures
and images: with 2 ranks each takes half of every meta-batch and the gradients are averaged, so the update
is the single-process one). The wall time of the steps after the first two (warm-up) is read from the
checkpoints the run writes after every step (``--ckpt-every 1``: the state's ``cpu_seconds`` and the file's
modification time), so process start-up and data generation are excluded. Run it on a quiet machine: it
measures wall time.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _watch(ckpt: str, stamps: dict, stop: threading.Event) -> None:
    # the step a checkpoint holds and when it appeared; torch.load on a file being replaced is avoided by
    # reading only after os.replace (the trainer writes atomically)
    import torch
    last = None
    while not stop.is_set():
        try:
            m = os.stat(ckpt).st_mtime_ns
        except FileNotFoundError:
            time.sleep(0.05)
            continue
        if m != last:
            last = m
            try:
                state = torch.load(ckpt, weights_only=True, map_location='cpu')['state']
                stamps.setdefault(state['global_step'], (time.perf_counter(), state['cpu_seconds']))
            except Exception:  # replaced while reading: the next change is read
                pass
        time.sleep(0.05)


def run(config: str, a: argparse.Namespace, work: str) -> dict:
    ckpt = os.path.join(work, config, 'trainer.pt')
    flags = ['train', '--recipe', a.recipe, '--archs', str(a.archs), '--arch-root', a.arch_root, '--ckpt', ckpt,
             '--max-steps', str(a.steps), '--ckpt-every', '1', '--threads', '2' if config == '1 process, 2 threads'
             else '1', '--device', 'cpu']
    if config == '2 processes (gloo)':
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
               '-m', 'pyg_ghn.cli', *flags]
    else:
        cmd = [sys.executable, '-m', 'pyg_ghn.cli', *flags]
    env = {**os.environ, 'PYTHONPATH': REPO, 'OMP_NUM_THREADS': '2' if '2 threads' in config else '1'}
    stamps, stop = {}, threading.Event()
    watcher = threading.Thread(target=_watch, args=(ckpt, stamps, stop), daemon=True)
    watcher.start()
    subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop.set()
    watcher.join()
    steps = sorted(k for k in stamps if k >= 2)
    first, last = steps[0], steps[-1]
    wall = stamps[last][0] - stamps[first][0]
    cpu = stamps[last][1] - stamps[first][1]
    return {'config': config, 'steps': last - first, 'wall_per_step': wall / (last - first),
            'cpu_per_step': cpu / (last - first)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--recipe', default='cpu')
    p.add_argument('--steps', type=int, default=12)
    p.add_argument('--archs', type=int, default=100_000)
    p.add_argument('--arch-root', default='data/deepnets1m')
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix='train_cores_')
    try:
        rows = [run(c, a, work) for c in ('1 process, 1 thread', '1 process, 2 threads', '2 processes (gloo)')]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]['wall_per_step']
    print(f'recipe {a.recipe}: wall seconds per step over steps 2..{a.steps} (after warm-up), core-seconds per '
          'step (all threads and ranks), speed-up over one core')
    print(f'{"configuration":<24}{"steps":>6}{"wall s/step":>13}{"core-s/step":>13}{"speed-up":>10}')
    for r in rows:
        print(f'{r["config"]:<24}{r["steps"]:>6}{r["wall_per_step"]:>13.2f}{r["cpu_per_step"]:>13.2f}'
              f'{base / r["wall_per_step"]:>10.2f}')


if __name__ == '__main__':
    main()

"""Helpers shared by the tests of pyg_ghn.properties."""
import json
import os
import os.path as osp
import subprocess
import sys

import torch

from pyg_ghn.deepnets.generator import generate_split


def write_property_file(path: str, splits=(('val', 5), ('test', 3)), C: int = 8, seed: int = 0,
                        device: str = None, **config) -> dict:
    """A property file in the measurement format with real DeepNets-1M architectures and made-up targets
    (a deterministic function of split and index), for tests that read, not measure. ``config``: more
    measurement settings; ``device``: recorded when given (older files have none)."""
    g = torch.Generator().manual_seed(seed)
    results = []
    for split, n in splits:
        for i, args in enumerate(generate_split(split, n)):
            args = {k: v for k, v in args.items() if k != 'num_params'}
            args['C'] = C
            v = torch.rand(4, generator=g).tolist()
            results.append(dict(split=split, idx=i, net_args=args, clean_acc=50 + 40 * v[0],
                                noise_acc=30 + 40 * v[1], time=5 + 100 * v[2],
                                converge_time=int(10 + 100 * v[3]), converged=True))
    state = dict(version=1, config=dict(C=C, **config), results=results)
    if device is not None:
        state['device'] = device
    with open(path, 'w') as f:
        json.dump(state, f)
    return state


ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def run_example(script: str, *args: str, timeout: int = 300) -> str:
    """Runs ``examples/<script> --tiny <args>`` in a subprocess (one thread, warnings off); returns stdout."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'examples', script), '--tiny', *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout

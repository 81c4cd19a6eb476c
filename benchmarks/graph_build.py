"""Time to build architecture graphs (virtual edges included), single-threaded.

    python benchmarks/graph_build.py [--repeats 7]

Prints a table: the median over repeats of ``pyg_ghn.from_module`` (tracing included) for torchvision's
ResNet-50 at 32x32 and 224x224, the DARTS network of DeepNets-1M (794 nodes) and the same network written
as other code bases write it (``tests/graph/user_style_nets.py``: the DARTS repository's ``NetworkCIFAR``
with heads that flatten by ``x.view(x.size(0), -1)``, ``x.reshape(x.shape[0], -1)``, ``x.mean([2, 3])``,
``squeeze``, and the original DeepNets-1M ViT cell with einsum), and ResNet-50 and DARTS built on ``meta``,
split into the tracing forward pass and the rest; ``vs ours`` is the time over that of pyg_ghn's own network of the same architecture. The original
builder's times on one core of this machine (spec) are printed beside them for scale.
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import torch
import torchvision

import pyg_ghn.graph.builder as builder
from pyg_ghn.deepnets.predefined import darts, vit
from pyg_ghn.graph import from_module

# The networks in other styles are those the graph tests check against the original's graphs.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'graph'))
from user_style_nets import DartsNetworkCIFAR, original_vit  # noqa: E402

ORIGINAL_MS = {'resnet50 @32': 60, 'darts-794 @32': 320}
TARGET_MS = {'resnet50 @32': 12, 'darts-794 @32': 65}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--repeats', type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter('ignore')

    trace_times = []
    original_trace = builder.trace_autograd

    def timed_trace(*a, **k):
        t = time.perf_counter()
        out = original_trace(*a, **k)
        trace_times.append(time.perf_counter() - t)
        return out

    builder.trace_autograd = timed_trace
    cases = [('resnet50 @32', torchvision.models.resnet50(), (3, 32, 32)),
             ('resnet50 @224', torchvision.models.resnet50(), (3, 224, 224)),
             ('darts-794 @32', darts(), (3, 32, 32)),
             *[(f'darts-repo {head}', DartsNetworkCIFAR(head=head), (3, 32, 32))
               for head in ('view', 'reshape', 'mean', 'squeeze')],
             ('vit @32', vit(), (3, 32, 32)),
             ('vit-original @32', original_vit(), (3, 32, 32))]
    with torch.device('meta'):  # built without memory (as big models are): traced on CPU stand-ins
        cases += [('meta resnet50 @224', torchvision.models.resnet50(), (3, 224, 224)),
                  ('meta darts-794 @32', darts(), (3, 32, 32))]
    ours = {'darts-repo': 'darts-794 @32', 'vit-original': 'vit @32',
            'meta resnet50 @224': 'resnet50 @224', 'meta darts-794 @32': 'darts-794 @32'}
    print(f'{"network":<19}{"nodes":>6}{"virtual":>9}{"total ms":>10}{"trace ms":>10}{"rest ms":>9}'
          f'{"vs ours":>9}{"original ms":>13}{"target ms":>11}')
    totals_ms = {}
    for name, model, size in cases:
        totals, traces = [], []
        for _ in range(args.repeats + 1):
            t = time.perf_counter()
            g = from_module(model, size)
            totals.append(time.perf_counter() - t)
            traces.append(trace_times[-1])
        total, trace = statistics.median(totals[1:]) * 1e3, statistics.median(traces[1:]) * 1e3
        totals_ms[name] = total
        ref = ours.get(name) or ours.get(name.split()[0])
        ratio = f'{total / totals_ms[ref]:.2f}x' if ref else ''
        print(f'{name:<19}{g.num_nodes:>6}{g.edge_index_sp.size(1):>9}{total:>10.1f}{trace:>10.1f}'
              f'{total - trace:>9.1f}{ratio:>9}{ORIGINAL_MS.get(name, float("nan")):>13.0f}'
              f'{TARGET_MS.get(name, float("nan")):>11.0f}')


if __name__ == '__main__':
    main()

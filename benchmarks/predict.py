"""Parameter prediction speed, single-threaded.

    python benchmarks/predict.py [--repeats 5] [--skip-sequential]

Prints a table:
* end to end from an ``nn.Module`` (graph building included), ``ghn(model)`` with the CIFAR-10 GHN-2 for
  torchvision's ResNet-50 (10 classes, 32x32) and the DARTS network of DeepNets-1M (794 nodes);
* the whole GHN's forward and forward+backward (encoder and decoder, not the target networks) on a
  meta-batch of 8 DeepNets-1M training architectures;
each with the level-wise GHN2Conv and with a sequential node-by-node version of the same layer (from
``benchmarks/layer_bench.py``) for comparison. The original code's figures on one core of this machine (spec
and issue) are printed for scale.
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import torch
import torchvision
from torch_geometric.data import Batch

sys.path.insert(0, os.path.dirname(__file__))
from layer_bench import SequentialGHN2  # noqa: E402

from pyg_ghn.datasets.deepnets1m import DeepNets1M  # noqa: E402
from pyg_ghn.deepnets.predefined import darts  # noqa: E402
from pyg_ghn.nn import GHN  # noqa: E402
from pyg_ghn.train.meta_batch import MetaBatchSampler  # noqa: E402

ORIGINAL_MS = {'resnet50 end-to-end': 190, 'darts-794 end-to-end': 2800}
TARGET_MS = {'resnet50 end-to-end': 50, 'darts-794 end-to-end': 300, 'meta-batch 8 fwd+bwd': 400}


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def use_sequential(ghn: GHN) -> None:
    seq = SequentialGHN2(ghn.gnn)
    ghn.gnn.forward = lambda x, ei, lf, lb, ei_sp, d_sp: seq(x, ei, ei_sp, d_sp)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--skip-sequential', action='store_true')
    parser.add_argument('--root', default='data/deepnets1m')
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter('ignore')
    torch.manual_seed(0)

    archs = DeepNets1M(args.root, 'train', num_nets=1000, log=False)
    graphs = [archs[pair] for pair in MetaBatchSampler(len(archs), 8, seed=0).draw(0)]
    batch = Batch.from_data_list(graphs)
    models = {'resnet50 end-to-end': torchvision.models.resnet50(num_classes=10),
              'darts-794 end-to-end': darts()}

    rows = []
    for layer in ['level-wise'] + ([] if args.skip_sequential else ['sequential']):
        ghn = GHN.from_config('ghn2', 'cifar10').eval()
        if layer == 'sequential':
            use_sequential(ghn)
        reps = args.repeats if layer == 'level-wise' else max(1, args.repeats // 2)
        for name, model in models.items():
            rows.append((name, layer, median_ms(lambda: ghn(model, input_size=(3, 32, 32)), reps)))

        def forward():
            with torch.no_grad():
                ghn.predict_parameters(batch)

        def forward_backward():
            params = ghn.predict_parameters(batch)
            sum(p.square().sum() for d in params for p in d.values()).backward()

        ghn.train()
        rows.append(('meta-batch 8 forward', layer, median_ms(forward, reps)))
        rows.append(('meta-batch 8 fwd+bwd', layer, median_ms(forward_backward, reps)))

    print(f'meta-batch: {batch.num_graphs} graphs, {batch.num_nodes} nodes, {batch.edge_index.size(1)} real and '
          f'{batch.edge_index_sp.size(1)} virtual edges')
    print(f'{"case":<24}{"layer":<12}{"ms":>10}{"original ms":>13}{"target ms":>11}')
    for name, layer, ms in rows:
        print(f'{name:<24}{layer:<12}{ms:>10.1f}{ORIGINAL_MS.get(name, float("nan")):>13.0f}'
              f'{TARGET_MS.get(name, float("nan")):>11.0f}')


if __name__ == '__main__':
    main()

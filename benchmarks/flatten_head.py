"""Networks without global pooling: what GHN-2's tiling leaves of their first classifier layer (issue 16).

    python benchmarks/flatten_head.py                                   # shipped GHN, every split
    python benchmarks/flatten_head.py --splits train test --results benchmarks/results_fmnist_id.json

About 2% of DeepNets-1M networks (``glob_avg=False``) feed the last feature map, flattened, to the
classifier: its first ``Linear`` has ``in = C * H * W`` inputs, input ``c * HW + p`` being channel ``c`` at
position ``p``. GHN-2 decodes at most 64 x 64 values for a 2-D weight and tiles them cyclically
(``W[o, i] = P[o mod 64, i mod 64]``, the original code's ``_tile_params``), so two inputs whose indices
differ by a multiple of 64 get the same weight. With ``HW = 64`` (an 8 x 8 map, 32 x 32 images without a
stem that downsamples) that is every channel at the same position: the layer sees only the sum over
channels, ``sum_c x[c, p]``; with ``HW = 16`` channels repeat with period 4. This is inherent to the method
(the original code does the same), not a bug of ours; GAP networks do not have it, since their classifier
reads one value per channel.

For every network without global pooling in the splits asked, the table gives the final map's size, the
first classifier layer's shape, how many distinct per-channel weight slices ``W[:, c, :]`` the GHN
predicts, measured on the prediction (not derived), the predicted weight's rank, the GHN's top-1 (the
reproduce.py protocol: first ``--max-batches`` x 64 Fashion-MNIST test images, BatchNorm on batch
statistics) and, from ``--results`` (a ``benchmarks/reproduce.py`` file), SGD-100's where it was run.
"""
import argparse
import os
import sys
from collections import Counter
from typing import Tuple

import torch
from torch import nn

from pyg_ghn.datasets import image_loaders
from pyg_ghn.datasets.deepnets1m import DeepNets1M
from pyg_ghn.deepnets.network import _final_resolution
from pyg_ghn.graph import from_module
from pyg_ghn.nn import GHN
from pyg_ghn.train import evaluate

# The result-file helpers live beside this script (benchmarks/paired.py); benchmarks/ is not a package.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired import by_net, records  # noqa: E402


def first_linear(net: nn.Module) -> Tuple[str, nn.Linear]:
    """The head's first ``Linear`` and its name in ``net.classifier``."""
    return next((name, m) for name, m in net.classifier.named_children() if isinstance(m, nn.Linear))


def final_map(net: nn.Module) -> torch.Size:
    """Shape of the tensor the head flattens, on one 3 x 32 x 32 image."""
    shapes = []
    handle = net.cells[-1].register_forward_hook(lambda m, i, o: shapes.append(o.shape[1:]))
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, 32, 32))
    handle.remove()
    return shapes[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--ghn', default='pretrained', help="'pretrained' or a GHN file")
    ap.add_argument('--splits', nargs='*', default=['test', 'wide', 'deep', 'dense', 'bnfree'])
    ap.add_argument('--root', default='data/deepnets1m')
    ap.add_argument('--max-nets', type=int, default=10, help='networks without global pooling listed per split')
    ap.add_argument('--results', default=None,
                    help="reproduce.py results: SGD-100's top-1 on the same test images (same --max-batches)")
    ap.add_argument('--max-batches', type=int, default=20)
    ap.add_argument('--sgd-method', default='SGD 100 steps')
    ap.add_argument('--train-nets', type=int, default=100000, help='size of the train split (the recipe: 100,000)')
    args = ap.parse_args()
    torch.manual_seed(0)

    ghn = (GHN.from_pretrained() if args.ghn == 'pretrained' else GHN.load(args.ghn)).eval()
    loaders = image_loaders('fashion_mnist', split='test', batch_size=64, test_batch_size=64)
    results = records(args.results) if args.results and os.path.exists(args.results) else []
    print(f"{'split':8s} {'net':>6s} {'nets w/o GAP':>13s} {'map C x H x W':>14s} {'linear':>12s} "
          f"{'channel slices':>15s} {'rank':>5s} {'GHN':>6s} {'SGD-100':>8s}")
    for split in args.splits:
        ds = DeepNets1M(args.root, split, num_nets=args.train_nets if split == 'train' else None, log=False)
        flat = [i for i, a in enumerate(ds.nets) if not a['glob_avg']]
        # the final map's side of every one of them, from its arguments (the listed ones are also measured)
        counts = Counter(_final_resolution(False, ds.nets[i]['stem_type'], ds.nets[i]['stem_pool'], False)
                         for i in flat)
        sgd = {net: acc for net, (acc, mb) in by_net(results, args.sgd_method, split).items()
               if mb == args.max_batches}
        for k, i in enumerate(flat[:args.max_nets]):
            net = ds.network(i)
            c, h, w = final_map(net)
            name, lin = first_linear(net)
            with torch.no_grad():
                params = ghn.predict_parameters(from_module(net, warn=False))[0]
            W = params[f'classifier.{name}.weight']
            slices = W.view(W.shape[0], c, h * w).transpose(0, 1).reshape(c, -1)
            distinct = torch.unique(slices, dim=0).shape[0]
            ghn_acc = evaluate(net, loaders.eval, topk=(1,), bn_mode='batch', params=params,
                               max_batches=args.max_batches)['top1']
            sgd_acc = sgd.get(str(i))
            fmt = lambda v: '–' if v is None else f'{v:.1f}'  # noqa: E731
            print(f"{split:8s} {i:6d} {f'{len(flat)} of {len(ds.nets)}' if k == 0 else '':>13s} "
                  f"{f'{c} x {h} x {w}':>14s} {f'{lin.out_features} x {lin.in_features}':>12s} "
                  f"{f'{distinct} of {c}':>15s} {torch.linalg.matrix_rank(W).item():5d} "
                  f"{fmt(ghn_acc):>6s} {fmt(sgd_acc):>8s}")
        if not flat:
            print(f"{split:8s} {'–':>6s} {f'0 of {len(ds.nets)}':>13s}")
        else:
            print(f"{split:8s} all {len(flat)} without global pooling, by final map: "
                  + ', '.join(f'{s} x {s}: {n}' for s, n in sorted(counts.items(), reverse=True)))


if __name__ == '__main__':
    main()

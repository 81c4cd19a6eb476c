r"""Comparing neural architectures with GHN graph embeddings (paper appendix C.2.4).

* Table 10: the l2 distance between the graph embedding of ResNet-50 and those of ResNet-34, ResNet-50
  without skip connections and ViT (all adapted to 32x32 images), per GHN, with the Hungarian assignment
  cost between the graphs' nodes as a reference graph distance. A GHN that reads structure should find
  ViT the farthest and ResNet-34 closer than ResNet-50-No-Skip.
* Table 11: the Fréchet distance between the embeddings of TRAIN architectures and of each test split
  (ID-TEST, WIDE, DEEP, DENSE, BN-FREE) of DeepNets-1M, with the mean Hungarian cost between graphs of the
  two sets for reference. The paper uses 5000 TRAIN architectures and all of each test split.

    python examples/compare_architectures.py --ghn ghn2=runs/ghn2/ghn.pt --ghn mlp=runs/mlp/ghn.pt
    python examples/compare_architectures.py --tiny
"""
import argparse
import json
import os
import os.path as osp
import time
import warnings

import torch
from torch import nn

from pyg_ghn.datasets.deepnets1m import build_network
from pyg_ghn.deepnets.generator import generate_split
from pyg_ghn.deepnets.predefined import adjust_net, vit
from pyg_ghn.graph.builder import from_module
from pyg_ghn.properties import (embed_graphs, frechet_distance, hungarian_distance, l2_distance,
                                load_ghns, mean_hungarian_distance, parse_ghn_specs)

TEST_SPLITS = ('test', 'wide', 'deep', 'dense', 'bnfree')


class NoSkipBlock(nn.Module):
    """A torchvision ResNet block (BasicBlock or Bottleneck) without its skip connection: the main branch
    only, conv -> bn -> relu for each of its convolutions. The downsampling branch is dropped."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        for i in (1, 2, 3):
            if hasattr(block, f'conv{i}'):
                setattr(self, f'conv{i}', getattr(block, f'conv{i}'))
                setattr(self, f'bn{i}', getattr(block, f'bn{i}'))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        for i in (1, 2, 3):
            if hasattr(self, f'conv{i}'):
                x = self.relu(getattr(self, f'bn{i}')(getattr(self, f'conv{i}')(x)))
        return x


def resnet_without_skip(model: nn.Module) -> nn.Module:
    """Replaces every block of a torchvision ResNet by a :class:`NoSkipBlock`, in place."""
    for name in ('layer1', 'layer2', 'layer3', 'layer4'):
        layer = getattr(model, name)
        for i, block in enumerate(layer):
            layer[i] = NoSkipBlock(block)
    return model


def reference_networks(tiny: bool = False):
    """ResNet-50, ResNet-34, ResNet-50-No-Skip and ViT for 32x32 images (``tiny``: one block per stage for
    the ResNets, a 4-cell ViT; same families, far smaller graphs)."""
    import torchvision
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
    if tiny:
        r50 = lambda: ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10)  # noqa: E731
        r34 = lambda: ResNet(BasicBlock, [1, 1, 2, 1], num_classes=10)  # noqa: E731
        v = vit(C=32, n_cells=4)
    else:
        r50 = lambda: torchvision.models.resnet50(num_classes=10)  # noqa: E731
        r34 = lambda: torchvision.models.resnet34(num_classes=10)  # noqa: E731
        v = vit()
    return {'ResNet-50': adjust_net(r50()), 'ResNet-34': adjust_net(r34()),
            'ResNet-50-No-Skip': resnet_without_skip(adjust_net(r50())), 'ViT': v}


def split_graphs(split: str, n: int, max_sp_dist: int = 50):
    # Networks at the widths the split defines (WIDE: x4 channels), as DeepNets-1M evaluates them.
    from tqdm import tqdm
    return [from_module(build_network(a, wide=split == 'wide'), max_sp_dist=max_sp_dist, warn=False)
            for a in tqdm(generate_split(split, n), desc=f'{split} graphs', leave=False)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--ghn', action='append', help="NAME=PATH or PATH (repeatable); PATH 'random' = a random GHN "
                   "of config NAME (default: one random GHN-2, with a warning)")
    p.add_argument('--num-train', type=int, default=1000, help='TRAIN architectures (paper: 5000)')
    p.add_argument('--num-test', type=int, default=100, help='architectures per test split (paper: 500/100)')
    p.add_argument('--hungarian-pairs', type=int, default=200, help='graph pairs for the mean Hungarian cost')
    p.add_argument('--shape-weight', type=float, default=0.0,
                   help='Hungarian cost of a shape mismatch (0: shapes ignored, as the paper)')
    p.add_argument('--out', default='runs/compare_architectures')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--tiny', action='store_true', help='small networks and splits: an end-to-end check')
    a = p.parse_args(argv)
    try:
        parse_ghn_specs(a.ghn)  # before any long work: two GHNs with one name would overwrite each other's rows
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(a.threads)
    if a.tiny:
        a.num_train, a.num_test, a.hungarian_pairs = 8, 4, 6
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter('always')  # the random-GHN warning, every time
        ghns = load_ghns(a.ghn)

    # Table 10 ---------------------------------------------------------------------------------------------
    nets = reference_networks(a.tiny)
    graphs = {k: from_module(m, max_sp_dist=50, warn=False) for k, m in nets.items()}
    others = [k for k in graphs if k != 'ResNet-50']
    table10 = {'Hungarian': {k: hungarian_distance(graphs['ResNet-50'], graphs[k], a.shape_weight) for k in others}}
    for name, ghn in ghns:
        e = dict(zip(graphs, embed_graphs(ghn, list(graphs.values()))))
        table10[name] = {k: l2_distance(e['ResNet-50'], e[k]) for k in others}
    print('Table 10: distance to ResNet-50 (' + ', '.join(f'{k}: {g.num_nodes} nodes' for k, g in graphs.items()) + ')')
    width = max(len(r) for r in table10) + 2
    print(' ' * width + ''.join(f'{k:>20}' for k in others))
    for row, d in table10.items():
        print(f'{row:<{width}}' + ''.join(f'{d[k]:>20.2f}' for k in others))

    # Table 11 ---------------------------------------------------------------------------------------------
    train = split_graphs('train', a.num_train)
    tests = {s: split_graphs(s, a.num_test) for s in TEST_SPLITS}
    table11 = {'Hungarian': {s: mean_hungarian_distance(train, g, a.hungarian_pairs, seed=0,
                                                        shape_weight=a.shape_weight) for s, g in tests.items()}}
    for name, ghn in ghns:
        e_train = embed_graphs(ghn, train)
        table11[name] = {s: frechet_distance(e_train, embed_graphs(ghn, g)) for s, g in tests.items()}
    print(f'\nTable 11: Fréchet distance to {len(train)} TRAIN architectures ({a.num_test} per split; '
          f'Hungarian: mean over {a.hungarian_pairs} pairs)')
    print(' ' * width + ''.join(f'{s.upper():>12}' for s in TEST_SPLITS))
    for row, d in table11.items():
        print(f'{row:<{width}}' + ''.join(f'{d[s]:>12.2f}' for s in TEST_SPLITS))

    with open(osp.join(a.out, 'results.json'), 'w') as f:
        json.dump(dict(table10=table10, table11=table11, num_train=a.num_train, num_test=a.num_test,
                       nodes={k: g.num_nodes for k, g in graphs.items()}), f, indent=1)
    print(f"\nsaved {osp.join(a.out, 'results.json')} ({time.time() - t0:.0f} s)")
    return table10, table11


if __name__ == '__main__':
    main()

"""DeepNets-1M statistics (Table 1 of the paper) for our generated splits, beside the paper's values.

For each split: number of cells, width C, number of graph nodes |V|, fraction of networks without
BatchNorm, number of parameters (CIFAR-10 networks, 10 classes), average node degree and average shortest
path length; and the primitive frequencies of TRAIN. Also the generation speed (accepted architectures per
second, one core) and the graph-building speed (``from_module``, one core).

Widths: TRAIN uses training-time widths (``sample_train_width`` with seed = index, as
``DeepNets1M[(idx, seed)]``), with C from 32-128 (the original loader's default, used by ``DeepNets1M``)
and, on the "C16" rows, from 16-128 (the range of the paper's Table 1). The evaluation splits are shown
both at the generation width C=32 (the ``DeepNets1M`` default) and with ``fit_eval_width`` (the smallest
C in 32, 48, ... giving >= 2.5M parameters, ``DeepNets1M(eval_min_params=2.5e6)``) on the "fit" rows;
WIDE multiplies C by 4.

Graph properties follow the original code's ``Graph.properties()`` (``undirected=True``): on the graph of
real edges without direction, degree = 2|E|/|V| and the average shortest path is networkx's
``average_shortest_path_length``. These reproduce the paper's 2.3 and 14.5 (in-distribution) and give
exactly its 2.2/2.3 and 11.2/10.7 for ResNet-50/ViT. With ``--directed`` the mean directed path length
over connected (ancestor -> descendant) pairs is printed as well; it is about 10% longer (16.5 in
distribution, 12.5/11.9 for ResNet-50/ViT), so it is not the paper's definition.

The paper's "#nodes" of ResNet-50/ViT (161/114) are their numbers of parameter tensors, which we print
in brackets; their graphs have 126/129 nodes (spec §1.7).

Usage: python benchmarks/deepnets_stats.py [--train 100] [--eval 100] [--directed]
"""
import argparse
import time
import warnings
from typing import Any, Dict, List

import networkx as nx
import numpy as np
import torch

from pyg_ghn.datasets.deepnets1m import build_network, fit_eval_width
from pyg_ghn.deepnets.generator import generate_split, sample_train_width
from pyg_ghn.deepnets.network import count_params
from pyg_ghn.deepnets.predefined import resnet50, vit
from pyg_ghn.graph import from_module
from pyg_ghn.primitives import PRIMITIVES
from pyg_ghn.transforms.add_shortest_path_edges import shortest_path_edges

SPLITS = ['train', 'val', 'test', 'wide', 'deep', 'dense', 'bnfree']

# Table 1 of the paper (VAL/TEST share a column; the last column is ResNet-50/ViT).
PAPER: Dict[str, Dict[str, str]] = {
    '#graphs': dict(train='10^6', val='500', test='500', wide='100', deep='100', dense='100', bnfree='100',
                    predefined='1/1'),
    '#cells': dict(train='4-18', val='4-18', test='4-18', wide='4-18', deep='10-36', dense='4-18', bnfree='4-18',
                   predefined='16/12'),
    '#channels': dict(train='16-128', val='32-128', test='32-128', wide='128-1216', deep='32-208', dense='32-240',
                      bnfree='32-336', predefined='64/128'),
    '#nodes': dict(train='21-827', val='33-579', test='33-579', wide='33-579', deep='74-1017', dense='57-993',
                   bnfree='33-503', predefined='161/114'),
    '% w/o BN': dict(train='3.5', val='4.1', test='4.1', wide='4.1', deep='2.0', dense='5.0', bnfree='100',
                     predefined='0/100'),
    '#params(M)': dict(train='0.01-3.1', val='2.5-35', test='2.5-35', wide='39-101', deep='2.5-15.3',
                       dense='2.5-8.8', bnfree='2.5-7.7', predefined='23.5/1.0'),
    'avg degree': dict(train='2.3±0.1', val='2.3±0.1', test='2.3±0.1', wide='2.3±0.1', deep='2.3±0.1',
                       dense='2.4±0.1', bnfree='2.4±0.1', predefined='2.2/2.3'),
    'avg path': dict(train='14.5±4.8', val='14.5±4.9', test='14.5±4.9', wide='14.7±4.9', deep='26.2±9.3',
                     dense='15.1±4.1', bnfree='10.0±2.8', predefined='11.2/10.7'),
}
PAPER_TRAIN_PRIMITIVES = {'conv': 36.3, 'bn': 25.5, 'sum': 11.1, 'bias': 6.5, 'sep_conv': 5.1, 'concat': 3.8,
                          'dil_conv': 2.5, 'ln': 2.5, 'max_pool': 1.8, 'avg_pool': 1.7, 'msa': 1.2, 'cse': 1.0,
                          'input': 0.5, 'glob_avg': 0.5, 'pos_enc': 0.2}


def graph_properties(graph: Any, directed: bool) -> Dict[str, float]:
    """Average degree and shortest path on the undirected graph of real edges (the original's
    ``Graph.properties()``), and optionally the directed mean path length over connected pairs."""
    n = graph.num_nodes
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(graph.edge_index.t().tolist())
    props = {'degree': 2 * g.number_of_edges() / n, 'path': nx.average_shortest_path_length(g)}
    if directed:
        _, dist = shortest_path_edges(graph.edge_index, n, n)
        e = graph.edge_index.size(1)
        props['dpath'] = (dist.sum().item() + e) / (dist.numel() + e)
    return props


def rng_(values: List[float], fmt: str = '{:g}') -> str:
    return f'{fmt.format(min(values))}-{fmt.format(max(values))}'


def mean_std(values: List[float], digits: int = 1) -> str:
    return f'{np.mean(values):.{digits}f}±{np.std(values):.{digits}f}'


def split_stats(split: str, num: int, directed: bool) -> Dict[str, Any]:
    t = time.perf_counter()
    nets = generate_split(split, num)
    gen_speed = num / (time.perf_counter() - t)
    factor = 4 if split == 'wide' else 1
    if split == 'train':
        train_args = [sample_train_width(a, np.random.default_rng(i)) for i, a in enumerate(nets)]
        gen_C = [a['C'] for a in train_args]
        params = [count_params(a, 10, False) for a in train_args]
        # the paper's range, C from 16 (the fitted rows of the evaluation splits show these for TRAIN)
        train16 = [sample_train_width(a, np.random.default_rng(i), num_ch=(16, 128)) for i, a in enumerate(nets)]
        fit_C = [a['C'] for a in train16]
        fit_params = [count_params(a, 10, False) for a in train16]
    else:
        gen_C = [32 * factor] * num
        params = [count_params(a, 10, False, C=32 * factor) for a in nets]
        fit_C = [factor * fit_eval_width(a)['C'] for a in nets]
        fit_params = [count_params(a, 10, False, C=C) for a, C in zip(nets, fit_C)]

    # The graph structure does not depend on the width: build it at the generation width C=32.
    graphs, t = [], time.perf_counter()
    for a in nets:
        graphs.append(from_module(build_network(a), max_sp_dist=None, warn=False))
    graph_speed = num / (time.perf_counter() - t)
    props = [graph_properties(g, directed) for g in graphs]
    prim = np.zeros(len(PRIMITIVES))
    for g in graphs:
        prim += np.bincount(g.x.numpy(), minlength=len(PRIMITIVES))
    return dict(
        nets=num, cells=[a['n_cells'] for a in nets], C=gen_C, fit_C=fit_C,
        nodes=[g.num_nodes for g in graphs], no_bn=100 * np.mean([a['norm'] is None for a in nets]),
        params=params, fit_params=fit_params, degree=[p['degree'] for p in props], path=[p['path'] for p in props],
        dpath=[p['dpath'] for p in props] if directed else None, primitives=prim / prim.sum() * 100,
        gen_speed=gen_speed, graph_speed=graph_speed)


def predefined_stats(directed: bool) -> Dict[str, Any]:
    torch.manual_seed(0)
    nets = {'resnet50': resnet50(10), 'vit': vit(10)}
    out = {}
    for name, net in nets.items():
        g = from_module(net, max_sp_dist=None, warn=False)
        has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        out[name] = dict(nodes=g.num_nodes, tensors=len(list(net.parameters())), no_bn=0 if has_bn else 100,
                         params=sum(p.numel() for p in net.parameters()), **graph_properties(g, directed))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--train', type=int, default=100, help='TRAIN networks (the paper has 10^6)')
    parser.add_argument('--eval', type=int, default=100, help='networks per evaluation split')
    parser.add_argument('--splits', nargs='+', default=SPLITS, choices=SPLITS)
    parser.add_argument('--directed', action='store_true', help='also the directed mean path length')
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings('ignore')  # unexecuted DeepNets ops have no graph node, by design

    stats = {}
    for split in args.splits:
        stats[split] = split_stats(split, args.train if split == 'train' else args.eval, args.directed)
        s = stats[split]
        print(f'{split:>7}: {s["nets"]} nets, generation {s["gen_speed"]:.0f} nets/s, '
              f'graph building {s["graph_speed"]:.1f} graphs/s (one core)', flush=True)
    pre = predefined_stats(args.directed)

    rows = [
        ('#graphs', lambda s: str(s['nets'])),
        ('#cells', lambda s: rng_(s['cells'])),
        ('#channels', lambda s: rng_(s['C'])),
        ('#channels fit/C16', lambda s: rng_(s['fit_C'])),
        ('#nodes', lambda s: rng_(s['nodes'])),
        ('% w/o BN', lambda s: f'{s["no_bn"]:.1f}'),
        ('#params(M)', lambda s: rng_([p / 1e6 for p in s['params']], '{:.3g}')),
        ('#params(M) fit/C16', lambda s: rng_([p / 1e6 for p in s['fit_params']], '{:.3g}')),
        ('avg degree', lambda s: mean_std(s['degree'])),
        ('avg path', lambda s: mean_std(s['path'])),
    ]
    if args.directed:
        rows.append(('avg path (directed)', lambda s: mean_std(s['dpath'])))
    r, v = pre['resnet50'], pre['vit']
    pre_col = {'#graphs': '1/1', '#cells': '16/12', '#channels': '64/128', '#channels fit/C16': '',
               '#nodes': f'{r["nodes"]}/{v["nodes"]} ({r["tensors"]}/{v["tensors"]})',
               '% w/o BN': f'{r["no_bn"]}/{v["no_bn"]}',
               '#params(M)': f'{r["params"] / 1e6:.1f}/{v["params"] / 1e6:.1f}',
               '#params(M) fit/C16': '', 'avg degree': f'{r["degree"]:.1f}/{v["degree"]:.1f}',
               'avg path': f'{r["path"]:.1f}/{v["path"]:.1f}',
               'avg path (directed)': f'{r.get("dpath", 0):.1f}/{v.get("dpath", 0):.1f}'}

    cols = args.splits + ['predefined']
    width = 19
    print('\nTable 1, ours (first line) and the paper (second line). "fit/C16" rows: evaluation splits with '
          'fit_eval_width (smallest C >= 32 with >= 2.5M params; WIDE x4), TRAIN with C from 16-128. '
          'PREDEFINED #nodes: graph nodes (parameter tensors).')
    print(f'{"":<20}' + ''.join(f'{c.upper():>{width}}' for c in cols))
    for name, fn in rows:
        ours = [fn(stats[c]) for c in args.splits] + [pre_col[name]]
        print(f'{name:<20}' + ''.join(f'{o:>{width}}' for o in ours))
        paper_key = name.replace(' fit/C16', '').replace(' (directed)', '')
        if paper_key == name and paper_key in PAPER:
            print(f'{"  paper":<20}' + ''.join(f'{PAPER[paper_key][c]:>{width}}' for c in cols))

    if 'train' in stats:
        fr = dict(zip(PRIMITIVES, stats['train']['primitives']))
        print('\nprimitive frequencies in TRAIN (%), ours vs paper')
        for name, paper in PAPER_TRAIN_PRIMITIVES.items():
            print(f'{name:>10} {fr[name]:6.1f} {paper:6.1f}')


if __name__ == '__main__':
    main()

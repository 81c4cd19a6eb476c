"""Our DeepNets-1M modules give the graphs of the original code (spec §1.7) under pyg_ghn's builder."""
from collections import Counter

import numpy as np
import pytest
import torch

from pyg_ghn.deepnets.generator import SPLITS, is_connected, op_rejection, propose_net_args, sample_net_args
from pyg_ghn.deepnets.genotypes import Genotype
from pyg_ghn.deepnets.network import Network
from pyg_ghn.deepnets.predefined import darts, resnet50, vit
from pyg_ghn.primitives import PRIMITIVES

builder = pytest.importorskip('pyg_ghn.graph.builder')
# DeepNets-1M networks do hold ops that never run (nodes that are neither concatenated nor read, inputs no
# op reads); their parameters have no graph node, as in the original, and the builder says so.
pytestmark = pytest.mark.filterwarnings('ignore::pyg_ghn.graph.builder.UnpredictedParametersWarning')


def stats(net):
    g = builder.from_module(net)
    return g.x.numel(), g.edge_index.shape[1], Counter(PRIMITIVES[i] for i in g.x.tolist())


@pytest.mark.parametrize('name,make,nodes,edges,hist', [
    ('resnet50_32', lambda: resnet50(10), 126, 141, {'conv': 54, 'bn': 53, 'sum': 16, 'max_pool': 0}),
    ('vit', lambda: vit(10), 129, 148, {'conv': 42, 'bias': 31, 'sum': 21, 'ln': 20, 'msa': 10, 'avg_pool': 2,
                                       'pos_enc': 1}),
    ('darts', lambda: darts(10), 794, 935, {'conv': 242, 'bn': 239, 'sep_conv': 180, 'sum': 80, 'concat': 22,
                                            'dil_conv': 18, 'max_pool': 10}),
    ('darts_imagenet', lambda: darts(1000, True), 548, 648, {'conv': 167, 'bn': 163, 'sep_conv': 120,
                                                              'sum': 56, 'concat': 17}),
])
def test_predefined_graphs_match_original(name, make, nodes, edges, hist):
    torch.manual_seed(0)
    n, e, h = stats(make())
    assert (n, e) == (nodes, edges)
    assert {k: h.get(k, 0) for k in hist} == hist


def test_sampled_networks_build_graphs():
    for split in SPLITS:
        for i in range(3):
            net_args = sample_net_args(split, np.random.default_rng([i, 30]))
            n, e, h = stats(Network.from_net_args(net_args, C=16))
            assert h['input'] == 1 and n > 10 and e >= n - 1


def test_connectivity_hook_agrees_with_builder():
    rng = np.random.default_rng(11)
    seen = {True: 0, False: 0}
    while min(seen.values()) < 3:
        net_args = propose_net_args('dense', rng)
        g = Genotype.from_json(net_args['genotype'])
        if op_rejection(g) or 'none' not in g.ops() or net_args['n_cells'] > 10:
            continue
        expected = is_connected(net_args)
        if seen[expected] >= 3:
            continue
        net = Network.from_net_args(net_args, C=8)
        if expected:
            builder.from_module(net)
        else:
            with pytest.raises(builder.GraphBuildError):
                builder.from_module(net)
        seen[expected] += 1

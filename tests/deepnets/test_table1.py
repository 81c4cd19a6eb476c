"""The generated DeepNets-1M splits against the paper's Table 1 (Knyazev et al. 2021, p. 4): the node
range, the share of networks without BatchNorm, the average degree and the average shortest path.

The paper's numbers are copied here from the paper, not from our generator or benchmarks. Both sides are
samples (the paper: 500 VAL/TEST and 100 WIDE/DEEP/DENSE/BN-FREE networks; we: a few hundred at most), so
every check is a statistical test of "same generation rules" whose tolerance follows from the two sample
sizes, at a false-alarm rate ALPHA per check. The networks are seeded, so a test that passes once always
passes; ALPHA bounds the chance that a generator following the paper's rules would have been refused.
"""
import math
import warnings

import networkx as nx
import numpy as np
import pytest
from scipy.stats import norm

from pyg_ghn.datasets.deepnets1m import build_network
from pyg_ghn.deepnets.generator import generate_split
from pyg_ghn.graph import from_module

# (networks in the paper's split, #nodes range, % without BN, avg degree (mean, std), avg path (mean, std)).
# VAL and TEST share a column (500 networks each); the paper's WIDE is TEST at 4x the width.
PAPER_TABLE1 = {
    'train': (10 ** 6, (21, 827), 3.5, (2.3, 0.1), (14.5, 4.8)),
    'val': (500, (33, 579), 4.1, (2.3, 0.1), (14.5, 4.9)),
    'test': (500, (33, 579), 4.1, (2.3, 0.1), (14.5, 4.9)),
    'wide': (100, (33, 579), 4.1, (2.3, 0.1), (14.7, 4.9)),
    'deep': (100, (74, 1017), 2.0, (2.3, 0.1), (26.2, 9.3)),
    'dense': (100, (57, 993), 5.0, (2.4, 0.1), (15.1, 4.1)),
    'bnfree': (100, (33, 503), 100., (2.4, 0.1), (10.0, 2.8)),
}
# 49 checks run on the 7 splits together (2 range ends, 2 moments of 2 properties and the BN share per
# split); at 2e-4 each, a generator that follows the paper's rules passes all of them with probability
# >= 99% (union bound).
ALPHA = 2e-4
Z = norm.isf(ALPHA / 2)  # two-sided: 3.7 standard errors
HALF_DIGIT = 0.05  # the paper prints one decimal: its 14.5 is anything in [14.45, 14.55]

# Graphs per split for the graph statistics: ~0.1-0.3 s each to build. TEST runs in the default suite,
# the other splits with the slow tests; 100 is the size of the paper's OOD splits.
GRAPH_NETS = 100
# The BN share needs no graph: 2,000 networks per split are generated in ~2 s.
BN_NETS = 2000


def p_beyond(ours: int, theirs: int, k: int) -> float:
    r"""P(at least ``k`` of ``ours`` networks fall beyond the most extreme of ``theirs``) when both are
    samples of one distribution: the top ``k`` of all ``ours + theirs`` exchangeable draws must all be ours,
    :math:`\binom{ours}{k} / \binom{ours + theirs}{k}`. Distribution-free; ties (integer node counts) only
    make "strictly beyond" rarer, so the test stays conservative."""
    return math.prod((ours - i) / (ours + theirs - i) for i in range(k))


def graph_properties(net_args):
    """Nodes, average degree and average shortest path of the undirected graph of real edges, as the
    original code's ``Graph.properties()`` (which gives exactly the paper's 2.2/2.3 and 11.2/10.7 for
    ResNet-50/ViT, ``benchmarks/deepnets_stats.py``)."""
    graph = from_module(build_network(net_args), max_sp_dist=None, warn=False)
    g = nx.Graph()
    g.add_nodes_from(range(graph.num_nodes))
    g.add_edges_from(graph.edge_index.t().tolist())
    return graph.num_nodes, 2 * g.number_of_edges() / graph.num_nodes, nx.average_shortest_path_length(g)


def assert_mean_std(ours, paper, n_paper, what):
    """Mean and standard deviation of a per-network property against the paper's ``mean ± std``."""
    ours = np.asarray(ours, dtype=float)
    n, mean, std = len(ours), ours.mean(), ours.std(ddof=1)
    p_mean, p_std = paper
    # Standard error of the difference of two sample means.
    se = math.sqrt(std ** 2 / n + p_std ** 2 / n_paper)
    assert abs(mean - p_mean) <= Z * se + HALF_DIGIT, f'{what}: mean {mean:.2f} vs paper {p_mean} (se {se:.2f})'
    # Standard error of a sample standard deviation, s * sqrt((kurtosis - 1) / (4 n)) (delta method; 1/sqrt(2n)
    # relative for a normal distribution), with the kurtosis of our sample standing in for both.
    kurt = ((ours - mean) ** 4).mean() / ours.var() ** 2
    se = math.sqrt((kurt - 1) / 4 * (std ** 2 / n + p_std ** 2 / n_paper))
    assert abs(std - p_std) <= Z * se + HALF_DIGIT, f'{what}: std {std:.2f} vs paper {p_std} (se {se:.2f})'


@pytest.mark.parametrize('split', list(PAPER_TABLE1))
def test_share_without_bn(split):
    n_paper, _, paper_pct, _, _ = PAPER_TABLE1[split]
    nets = generate_split(split, BN_NETS)
    share = np.mean([a['norm'] is None for a in nets])
    p = paper_pct / 100
    if p == 1.:  # BN-FREE: by definition, every network
        assert share == 1.
        return
    # Two-proportion test: binomial standard errors of both samples at the paper's rate.
    se = math.sqrt(p * (1 - p) * (1 / BN_NETS + 1 / n_paper))
    assert abs(share - p) <= Z * se + HALF_DIGIT / 100, f'{100 * share:.2f}% vs paper {paper_pct}%'


@pytest.mark.parametrize('split', [s if s == 'test' else pytest.param(s, marks=pytest.mark.slow)
                                   for s in PAPER_TABLE1])
def test_graph_statistics(split):
    n_paper, (lo, hi), _, degree, path = PAPER_TABLE1[split]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # ops a cell never uses have no node, by design
        props = np.array([graph_properties(a) for a in generate_split(split, GRAPH_NETS)])
    nodes = props[:, 0]

    # Node range. A range is the min and max of a sample, so ours (100 networks) and the paper's (100 to
    # 10^6) differ by chance; what is tested is how many of ours fall beyond the paper's extremes, which for
    # one distribution is unlikely to be many (p_beyond). TRAIN's range is from 10^6 networks: none of ours
    # may leave it. That one of ours reaches the paper's extreme cannot be asked: with 100 networks on each
    # side, ours stop short of the paper's max with probability 1/2 (DENSE: 49-789 here vs 57-993), and on
    # N of ours still with probability 100 / (100 + N), 9% for N = 1,000 (benchmarks/README.md, DeepNets-1M).
    for k, side in ((int((nodes > hi).sum()), f'above {hi}'), (int((nodes < lo).sum()), f'below {lo}')):
        assert k == 0 or p_beyond(GRAPH_NETS, n_paper, k) >= ALPHA, \
            f'{k} of {GRAPH_NETS} networks have {side} nodes (paper: {lo}-{hi} on {n_paper})'

    assert_mean_std(props[:, 1], degree, n_paper, 'average degree')
    assert_mean_std(props[:, 2], path, n_paper, 'average shortest path')


def test_the_tolerances_tell_splits_apart():
    """The tolerances are not so wide that anything passes: a sample with DEEP's path statistics (the paper's
    26.2 ± 9.3) is refused as TEST (14.5 ± 4.9), one with TEST's own is accepted; one network outside
    TRAIN's range of 10^6 networks is refused, and 13 of 100 beyond a range of 100 are (3 are not)."""
    rng = np.random.default_rng(0)
    with pytest.raises(AssertionError, match='mean'):
        assert_mean_std(rng.normal(26.2, 9.3, GRAPH_NETS), (14.5, 4.9), 500, 'average shortest path')
    assert_mean_std(rng.normal(14.5, 4.9, GRAPH_NETS), (14.5, 4.9), 500, 'average shortest path')
    with pytest.raises(AssertionError, match='std'):  # same mean, twice the spread
        assert_mean_std(rng.normal(14.5, 9.8, GRAPH_NETS), (14.5, 4.9), 500, 'average shortest path')
    assert p_beyond(GRAPH_NETS, 10 ** 6, 1) < ALPHA
    assert p_beyond(GRAPH_NETS, 100, 13) < ALPHA < p_beyond(GRAPH_NETS, 100, 3)

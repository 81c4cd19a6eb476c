import itertools

import numpy as np
import pytest
import torch

from pyg_ghn import PRIMITIVE_IDS
from pyg_ghn.datasets.deepnets1m import build_network
from pyg_ghn.deepnets.generator import generate_split
from pyg_ghn.graph.arch_graph import ArchGraph
from pyg_ghn.graph.builder import from_module
from pyg_ghn.properties import (frechet_distance, hungarian_distance, l2_distance, mean_hungarian_distance,
                                node_cost_matrix, pairwise_l2)


def test_l2():
    assert l2_distance([0, 3], torch.tensor([4., 0])) == pytest.approx(5)
    x = np.array([[0., 0], [3, 4], [1, 1]])
    d = pairwise_l2(x)
    assert d[0, 1] == pytest.approx(5) and np.allclose(d, d.T) and np.allclose(np.diag(d), 0)


def test_frechet_identical_sets():
    x = np.random.RandomState(0).normal(size=(200, 8))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-6)


def test_frechet_one_dimensional_closed_form():
    # For 1-D Gaussians, FD = (m1 - m2)^2 + (s1 - s2)^2 (sample mean and unbiased std of each set).
    rng = np.random.RandomState(1)
    a, b = rng.normal(0, 1, 500), rng.normal(2, 3, 700)
    ref = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, b) == pytest.approx(4 + 4, rel=0.15)  # population value


def test_frechet_diagonal_gaussians_and_symmetry():
    rng = np.random.RandomState(2)
    a = rng.normal(0, 1, (4000, 3)) * np.array([1, 2, 0.5])
    b = rng.normal(0, 1, (4000, 3)) * np.array([2, 2, 1.5]) + np.array([1, 0, 0])
    # Sum over dimensions of (mu1 - mu2)^2 + (s1 - s2)^2: 1 + 1 + 0 + 1 = 3.
    assert frechet_distance(a, b) == pytest.approx(3, rel=0.1)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)


def test_frechet_few_samples_is_finite():
    rng = np.random.RandomState(3)
    d = frechet_distance(rng.normal(size=(5, 32)), rng.normal(size=(6, 32)) + 1)
    assert np.isfinite(d) and d > 0


def _toy(prims, shapes=None):
    n = len(prims)
    shape = torch.ones(n, 4, dtype=torch.long)
    ndim = torch.zeros(n, dtype=torch.long)
    for i, s in enumerate(shapes or []):
        if s:
            shape[i, :len(s)] = torch.tensor(s)
            ndim[i] = len(s)
    return ArchGraph(x=torch.tensor([PRIMITIVE_IDS[p] for p in prims]), edge_index=torch.empty(2, 0, dtype=torch.long),
                     shape=shape, ndim=ndim, num_nodes=n)


def _brute_force(g1, g2, w):
    # Every assignment of the padded node sets: an independent reference for tiny graphs.
    c = node_cost_matrix(g1, g2, w)
    return min(sum(c[i, p[i]] for i in range(len(c))) for p in itertools.permutations(range(len(c))))


def test_hungarian_toy_graphs_against_brute_force():
    g1 = _toy(['input', 'conv', 'bn', 'sum', 'conv'], [None, (8, 3, 3, 3), (8,), None, (8, 8, 1, 1)])
    g2 = _toy(['input', 'conv', 'conv', 'bn'], [None, (16, 3, 3, 3), (8, 8, 1, 1), (16,)])
    # Primitive counts: conv 2/2, bn 1/1, input 1/1, sum 1/0 -> max(5, 4) - 4 = 1.
    assert hungarian_distance(g1, g2) == pytest.approx(1)
    for w in (0.0, 1.0, 0.5):
        assert hungarian_distance(g1, g2, w) == pytest.approx(_brute_force(g1, g2, w))
        assert hungarian_distance(g2, g1, w) == pytest.approx(hungarian_distance(g1, g2, w))
    # With shapes: conv (8,3,3,3)->(16,3,3,3) and bn (8,)->(16,) differ; the deleted sum costs 1 + w.
    assert hungarian_distance(g1, g2, 1.0) == pytest.approx(2 + 2)


def test_hungarian_deepnets_graphs():
    graphs = [from_module(build_network(dict(a, C=8)), warn=False) for a in generate_split('test', 4)]
    for g in graphs:
        assert hungarian_distance(g, g) == 0 and hungarian_distance(g, g, 1.0) == 0
    for g1, g2 in itertools.combinations(graphs, 2):
        d = hungarian_distance(g1, g2)
        assert d == pytest.approx(hungarian_distance(g2, g1))
        # Closed form without shapes: max(n1, n2) - sum_p min(count1(p), count2(p)).
        c1, c2 = (torch.bincount(g.x, minlength=15) for g in (g1, g2))
        assert d == max(g1.num_nodes, g2.num_nodes) - int(torch.minimum(c1, c2).sum())
        assert hungarian_distance(g1, g2, 1.0) >= d
    wide = from_module(build_network(dict(generate_split('test', 1)[0], C=32)), warn=False)
    assert hungarian_distance(graphs[0], wide) == 0 and hungarian_distance(graphs[0], wide, 1.0) > 0
    m = mean_hungarian_distance(graphs[:2], graphs[2:])
    ref = np.mean([hungarian_distance(a, b) for a in graphs[:2] for b in graphs[2:]])
    assert m == pytest.approx(ref)
    assert mean_hungarian_distance(graphs[:2], graphs[2:], num_pairs=3, seed=0) >= 0

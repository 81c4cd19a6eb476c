"""The synthetic DAG task of examples/dag_regression.py against brute-force references."""
import importlib.util
import itertools
import os.path as osp
import sys

import networkx as nx
import numpy as np
import pytest
import torch

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'examples'))
import dag_regression as dr  # noqa: E402


def _all_paths_max(g, weighted):
    G = nx.DiGraph()
    G.add_nodes_from(range(g.num_nodes))
    G.add_edges_from(g.edge_index.t().tolist())
    w = (g.x[:, 0] + 1).tolist()
    best = 0
    for s, t in itertools.product(G.nodes, G.nodes):
        for path in (nx.all_simple_paths(G, s, t) if s != t else [[s]]):
            best = max(best, sum(w[v] for v in path) if weighted else len(path) - 1)
    return best


def test_random_dag_and_targets():
    rng = np.random.RandomState(0)
    for _ in range(10):
        g = dr.random_dag(rng, rng.randint(3, 9))
        assert (g.edge_index[0] < g.edge_index[1]).all()  # a topological order, hence acyclic
        assert set(g.edge_index[1].tolist()) == set(range(1, g.num_nodes))  # every node but 0 has a parent
        assert dr.longest_path(g, True) == _all_paths_max(g, True)
        assert dr.longest_path(g, False) == _all_paths_max(g, False)


def test_synthetic_graphs_have_levels_and_virtual_edges():
    gs = dr.synthetic(5, 'depth', seed=1)
    for g in gs:
        assert g.level_fw.max().item() == g.y.item()  # depth = the largest forward level
        assert g.edge_index_sp.size(1) == g.edge_dist_sp.numel() and (g.edge_dist_sp > 1).all()


@pytest.mark.parametrize('encoder', dr.ENCODERS)
def test_dag_regressor_forward(encoder):
    from torch_geometric.data import Batch
    torch.manual_seed(0)
    gs = dr.synthetic(4, 'longest_path', seed=2)
    m = dr.DAGRegressor(encoder, [4], hidden=16).eval()
    with torch.no_grad():
        out = m(Batch.from_data_list(gs))
        alone = torch.cat([m(Batch.from_data_list([g])) for g in gs])
    assert out.shape == (4, 1) and torch.allclose(out, alone, atol=1e-5)


def test_dag_regressor_two_feature_columns():
    # ogbg-code2 nodes carry (type, attribute) ids: one embedding table per column, summed.
    from torch_geometric.data import Batch
    torch.manual_seed(0)
    gs = dr.synthetic(3, 'depth', seed=3)
    for g in gs:
        g.x = torch.cat([g.x, (g.x * 7 + 1) % 50], 1)
    out = dr.DAGRegressor('ghn2', [4, 50], hidden=8)(Batch.from_data_list(gs))
    assert out.shape == (3, 1)


@pytest.mark.skipif(importlib.util.find_spec('ogb') is not None, reason='ogb is installed: no guard to test')
def test_code2_without_ogb_says_how_to_install(tmp_path):
    with pytest.raises(SystemExit, match=r"pip install 'pyg_ghn\[ogb\]'"):
        dr.code2(str(tmp_path), 1)

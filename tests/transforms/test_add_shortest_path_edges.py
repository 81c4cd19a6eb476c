import networkx as nx
import pytest
import torch
from torch_geometric.data import Data

from pyg_ghn.transforms import AddShortestPathEdges, AddTopologicalLevels


def random_dag(n, p, seed):
    g = torch.Generator().manual_seed(seed)
    edges = [(i, j) for i in range(n) for j in range(i + 1, n) if torch.rand(1, generator=g) < p]
    return torch.tensor(edges, dtype=torch.long).t()


def test_virtual_edges_equal_networkx_bfs():
    ei = random_dag(60, 0.06, seed=0)
    data = AddShortestPathEdges(max_dist=5)(Data(edge_index=ei, num_nodes=60, edge_attr=torch.ones(ei.size(1))))
    g = nx.DiGraph(ei.t().tolist())
    lengths = dict(nx.all_pairs_shortest_path_length(g, cutoff=5))
    expected = sorted((u, v, d) for u, t in lengths.items() for v, d in t.items() if 1 < d <= 5)
    got = list(zip(*data.edge_index_sp.tolist(), data.edge_dist_sp.tolist()))
    assert got == expected  # also sorted by source then target
    assert torch.equal(data.edge_index, ei) and data.edge_attr.numel() == ei.size(1)  # real edges untouched
    assert repr(AddShortestPathEdges(7)) == 'AddShortestPathEdges(max_dist=7)'


def test_no_virtual_edges_below_two():
    data = AddShortestPathEdges(max_dist=1)(Data(edge_index=random_dag(10, 0.3, 1), num_nodes=10))
    assert data.edge_index_sp.shape == (2, 0) and data.edge_dist_sp.shape == (0,)


def test_levels_transform():
    data = AddTopologicalLevels()(Data(edge_index=torch.tensor([[0, 1, 0], [1, 2, 2]]), num_nodes=4))
    assert data.level_fw.tolist() == [0, 1, 2, 0] and data.level_bw.tolist() == [2, 1, 0, 0]


def test_cyclic_graphs_use_breadth_first_search():
    ei = torch.tensor([[0, 1, 2, 2], [1, 2, 0, 3]])  # 0 -> 1 -> 2 -> 0 and 2 -> 3
    data = AddShortestPathEdges(max_dist=3)(Data(edge_index=ei, num_nodes=4))
    got = list(zip(*data.edge_index_sp.tolist(), data.edge_dist_sp.tolist()))
    assert got == [(0, 2, 2), (0, 3, 3), (1, 0, 2), (1, 3, 2), (2, 1, 2)]


def test_large_cut_offs_keep_only_reachable_pairs():
    # Unreachable pairs carry a sentinel (or inf) in the distance matrix: a cut-off at or above it must
    # not turn them into virtual edges (backward pairs, pairs with an isolated node).
    dag = Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=4)  # 0 -> 1 -> 2, node 3 isolated
    for max_dist in (3, 50, 16383, 20000, 10 ** 9):
        data = AddShortestPathEdges(max_dist)(dag.clone())
        assert data.edge_index_sp.tolist() == [[0], [2]] and data.edge_dist_sp.tolist() == [2], max_dist
    cyc = Data(edge_index=torch.tensor([[0, 1, 2], [1, 2, 0]]), num_nodes=4)  # a cycle and isolated node 3
    data = AddShortestPathEdges(10 ** 9)(cyc)
    assert list(zip(*data.edge_index_sp.tolist(), data.edge_dist_sp.tolist())) == [(0, 2, 2), (1, 0, 2), (2, 1, 2)]
    with pytest.raises(TypeError, match='max_dist must be an int'):
        AddShortestPathEdges(float('inf'))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_transforms_keep_the_graph_on_its_device():
    data = Data(edge_index=random_dag(12, 0.3, 2).cuda(), num_nodes=12)
    data = AddShortestPathEdges(5)(AddTopologicalLevels()(data))
    assert {t.device.type for t in (data.level_fw, data.level_bw, data.edge_index_sp, data.edge_dist_sp)} == {'cuda'}

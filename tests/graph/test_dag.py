import pytest
import torch

from pyg_ghn.graph import CyclicGraphError, topological_levels, topological_order


def longest_paths(edges, n):
    """Reference: longest path from a source, by repeated relaxation (Bellman-Ford style)."""
    level = [0] * n
    for _ in range(n):
        for u, v in edges:
            level[v] = max(level[v], level[u] + 1)
    return level


@pytest.mark.parametrize('seed', range(5))
def test_levels_equal_longest_paths_on_random_dags(seed):
    g = torch.Generator().manual_seed(seed)
    n = 40
    perm = torch.randperm(n, generator=g)  # node ids in a shuffled order, so ids are not topological
    edges = [(int(perm[i]), int(perm[j])) for i in range(n) for j in range(i + 1, n)
             if torch.rand(1, generator=g) < 0.08]
    ei = torch.tensor(edges).t()
    fw, bw = topological_levels(ei, n)
    assert fw.tolist() == longest_paths(edges, n)
    assert bw.tolist() == longest_paths([(v, u) for u, v in edges], n)
    order = topological_order(ei, n).tolist()
    pos = {v: i for i, v in enumerate(order)}
    assert sorted(order) == list(range(n)) and all(pos[u] < pos[v] for u, v in edges)


def test_cycles_and_self_loops_are_refused():
    with pytest.raises(CyclicGraphError, match='not a directed acyclic graph'):
        topological_levels(torch.tensor([[0, 1, 2], [1, 2, 1]]), 3)
    with pytest.raises(CyclicGraphError):
        topological_levels(torch.tensor([[1], [1]]), 2)


def test_isolated_nodes_and_empty_graph():
    fw, bw = topological_levels(torch.empty(2, 0, dtype=torch.long), 3)
    assert fw.tolist() == [0, 0, 0] and bw.tolist() == [0, 0, 0]

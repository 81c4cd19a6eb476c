"""Directed-acyclic-graph utilities shared by graph building, transforms and the GHN layer.

Everything here works on a plain ``edge_index`` (source -> target), so it applies to any DAG, not only to
architecture graphs.
"""
from typing import List, Tuple

import torch
from torch import Tensor

__all__ = ['CyclicGraphError', 'topological_levels', 'topological_order']


class CyclicGraphError(ValueError):
    """Raised when a graph that must be a directed acyclic graph has a cycle."""


def _kahn_levels(src: List[int], dst: List[int], num_nodes: int) -> List[int]:
    # Longest-path depth from the sources by Kahn's algorithm: a node's level is final once all of its
    # predecessors have been popped. Plain Python lists: graphs have 10^2-10^3 nodes, where this is several
    # times faster than vectorised numpy with its per-level call overhead.
    succ: List[List[int]] = [[] for _ in range(num_nodes)]
    indeg = [0] * num_nodes
    for u, v in zip(src, dst):
        succ[u].append(v)
        indeg[v] += 1
    level = [0] * num_nodes
    stack = [v for v in range(num_nodes) if indeg[v] == 0]
    seen = 0
    while stack:
        u = stack.pop()
        seen += 1
        lu = level[u] + 1
        for v in succ[u]:
            if level[v] < lu:
                level[v] = lu
            indeg[v] -= 1
            if indeg[v] == 0:
                stack.append(v)
    if seen != num_nodes:
        cyclic = [v for v in range(num_nodes) if indeg[v] > 0]
        raise CyclicGraphError(
            f'The graph is not a directed acyclic graph: {num_nodes - seen} of {num_nodes} nodes lie on '
            f'or after a cycle (e.g. nodes {cyclic[:8]}).')
    return level


def topological_levels(edge_index: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    r"""Forward and backward topological levels of a DAG.

    ``level_fw[v]`` is the length of the longest path from any source to ``v`` and ``level_bw[v]`` the
    length of the longest path from ``v`` to any sink. Every edge ``u -> v`` satisfies
    ``level_fw[u] < level_fw[v]`` and ``level_bw[u] > level_bw[v]``, so all nodes of one level can be updated
    together in a sweep that respects the edge order.

    Raises:
        CyclicGraphError: if the graph has a cycle (a self-loop included).
    """
    src, dst = edge_index.detach().cpu().tolist()
    # On the graph's device: a level-wise sweep compares them with the node features' indices there.
    level_fw = torch.tensor(_kahn_levels(src, dst, num_nodes), dtype=torch.long, device=edge_index.device)
    level_bw = torch.tensor(_kahn_levels(dst, src, num_nodes), dtype=torch.long, device=edge_index.device)
    return level_fw, level_bw


def topological_order(edge_index: Tensor, num_nodes: int) -> Tensor:
    """A topological order: nodes sorted by forward level, ties kept in index order (as networkx >= 2.6's
    ``topological_generations`` lists them)."""
    level_fw, _ = topological_levels(edge_index, num_nodes)
    return torch.argsort(level_fw, stable=True)

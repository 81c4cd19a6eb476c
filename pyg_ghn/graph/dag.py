"""Directed-acyclic-graph utilities shared by graph building, transforms and the GHN layer.

Everything here works on a plain ``edge_index`` (source -> target), so it applies to any DAG, not only to
architecture graphs.
"""
from typing import Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ['CyclicGraphError', 'topological_levels', 'topological_order']


class CyclicGraphError(ValueError):
    """Raised when a graph that must be a directed acyclic graph has a cycle."""


def _kahn_levels(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> np.ndarray:
    # Longest-path depth from the sources, computed frontier by frontier (Kahn's algorithm): a node's
    # level is fixed once all of its predecessors have been popped.
    indeg = np.bincount(dst, minlength=num_nodes)
    order = np.argsort(src, kind='stable')
    src_sorted, dst_sorted = src[order], dst[order]
    ptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=num_nodes), out=ptr[1:])
    level = np.zeros(num_nodes, dtype=np.int64)
    frontier = np.flatnonzero(indeg == 0)
    seen, depth = 0, 0
    while frontier.size:
        level[frontier] = depth
        seen += frontier.size
        # All out-edges of the frontier, gathered with one vectorised range expansion.
        counts = ptr[frontier + 1] - ptr[frontier]
        starts = np.repeat(ptr[frontier] - np.cumsum(counts) + counts, counts)
        targets = dst_sorted[starts + np.arange(counts.sum())]
        np.subtract.at(indeg, targets, 1)
        frontier = np.unique(targets[indeg[targets] == 0])
        depth += 1
    if seen != num_nodes:
        cyclic = np.flatnonzero(indeg > 0)
        raise CyclicGraphError(
            f'The graph is not a directed acyclic graph: {num_nodes - seen} of {num_nodes} nodes lie on '
            f'or after a cycle (e.g. nodes {cyclic[:8].tolist()}).')
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
    ei = edge_index.detach().cpu().numpy().astype(np.int64, copy=False)
    src, dst = ei[0], ei[1]
    level_fw = _kahn_levels(src, dst, num_nodes)
    level_bw = _kahn_levels(dst, src, num_nodes)
    return torch.from_numpy(level_fw), torch.from_numpy(level_bw)


def topological_order(edge_index: Tensor, num_nodes: int) -> Tensor:
    """A topological order: nodes sorted by forward level, ties kept in index order (as networkx >= 2.6's
    ``topological_generations`` lists them)."""
    level_fw, _ = topological_levels(edge_index, num_nodes)
    return torch.from_numpy(np.argsort(level_fw.numpy(), kind='stable'))

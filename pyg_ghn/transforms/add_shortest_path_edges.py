from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import shortest_path
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from ..graph.dag import CyclicGraphError, _kahn_levels

__all__ = ['AddShortestPathEdges', 'shortest_path_edges']


def _dag_distances(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> np.ndarray:
    """All-pairs directed shortest-path lengths of a DAG, ``dist[u, v]`` (a large value when v is not
    reachable), by dynamic programming over topological levels: the distances into ``v`` are one more than
    the smallest distances into its predecessors, which all lie on lower levels. One vectorised step per
    level, so it costs O(levels) NumPy calls instead of a search from every node."""
    level = np.asarray(_kahn_levels(src.tolist(), dst.tolist(), num_nodes))
    dtype = np.int16 if num_nodes < np.iinfo(np.int16).max // 2 else np.int32  # half the memory traffic
    unreachable = np.iinfo(dtype).max // 2  # path lengths stay below this, and +1 cannot overflow
    into = np.full((num_nodes, num_nodes), unreachable, dtype=dtype)  # into[v, u] = dist(u -> v)
    np.fill_diagonal(into, 0)
    order = np.lexsort((dst, level[dst]))  # edges grouped by target, targets by level
    src, dst = src[order], dst[order]
    # Group boundaries computed once: where the target changes, and where its level changes.
    new_target = np.flatnonzero(np.r_[True, dst[1:] != dst[:-1]])
    targets = dst[new_target]
    level_bounds = np.flatnonzero(np.r_[True, np.diff(level[targets]) != 0, True])
    for a, b in zip(level_bounds[:-1], level_bounds[1:]):
        e0 = new_target[a]
        e1 = new_target[b] if b < len(new_target) else len(dst)
        t = targets[a:b]
        # Every predecessor of a target lies on a lower level, so its row is final; a target has no other
        # finite entries yet than its own zero.
        into[t] = np.minimum.reduceat(into[src[e0:e1]], new_target[a:b] - e0, axis=0) + 1
        into[t, t] = 0
    return into.T


def _check_max_dist(max_dist: Any) -> None:
    if isinstance(max_dist, bool) or not isinstance(max_dist, (int, np.integer)):
        raise TypeError(f'max_dist must be an int (the longest path kept), got {max_dist!r}')


def shortest_path_edges(edge_index: torch.Tensor, num_nodes: int, max_dist: int):
    r"""Virtual edges ``u -> v`` for every pair whose directed shortest-path length :math:`s` over the
    real edges satisfies :math:`1 < s \le` ``max_dist``.

    Returns ``(edge_index_sp, edge_dist_sp)``, sorted by source then target. On a DAG the lengths come from a
    level-by-level dynamic programme; on any other graph from breadth-first search in compiled code
    (:func:`scipy.sparse.csgraph.shortest_path` with unit weights).
    """
    device = edge_index.device
    _check_max_dist(max_dist)
    if max_dist < 2 or edge_index.numel() == 0:
        return (torch.empty(2, 0, dtype=torch.long, device=device),
                torch.empty(0, dtype=torch.long, device=device))
    ei = edge_index.detach().cpu().numpy().astype(np.int64)
    try:
        dist = _dag_distances(ei[0], ei[1], num_nodes)
    except CyclicGraphError:
        adj = sp.csr_matrix((np.ones(ei.shape[1], dtype=np.float32), (ei[0], ei[1])),
                            shape=(num_nodes, num_nodes))
        adj.sum_duplicates()
        dist = shortest_path(adj, method='D', directed=True, unweighted=True)
    # A path visits each node at most once, so no finite length exceeds num_nodes - 1, and the cut-off
    # clamped to it separates reachable pairs from the sentinel of unreachable ones (which grows by one per
    # level in the dynamic programme) and from inf, whatever max_dist a user asks for.
    src, dst = np.nonzero((dist > 1) & (dist <= min(max_dist, num_nodes - 1)))
    edge_index_sp = torch.from_numpy(np.stack([src, dst]).astype(np.int64)).to(device)
    edge_dist_sp = torch.from_numpy(dist[src, dst].astype(np.int64)).to(device)
    return edge_index_sp, edge_dist_sp


class AddShortestPathEdges(BaseTransform):
    r"""Adds GHN-2's shortest-path virtual edges as a separate edge type (paper §4.2).

    For every ordered pair of nodes :math:`(u, v)` with a directed path from :math:`u` to :math:`v` of
    shortest length :math:`1 < s_{uv} \le s_{max}`, adds ``u -> v`` to ``data.edge_index_sp`` and
    :math:`s_{uv}` to ``data.edge_dist_sp``, and :math:`s_{max}` to ``data.max_sp_dist``. Real edges
    (:math:`s = 1`) stay in ``data.edge_index`` only.
    Works on any directed ``Data``; on a DAG the virtual edges go from ancestors to descendants.

    Args:
        max_dist (int, optional): the largest path length :math:`s_{max}` kept. (default: :obj:`50`,
            GHN-2's cut-off)
    """
    def __init__(self, max_dist: int = 50) -> None:
        _check_max_dist(max_dist)  # at construction: a bad cut-off fails before any graph is seen
        self.max_dist = int(max_dist)

    def forward(self, data: Data) -> Data:
        data.edge_index_sp, data.edge_dist_sp = shortest_path_edges(data.edge_index, data.num_nodes,
                                                                    self.max_dist)
        data.max_sp_dist = int(self.max_dist)  # the cut-off, so that a model with a longer one can tell
        return data

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(max_dist={self.max_dist})'

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import shortest_path
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

__all__ = ['AddShortestPathEdges', 'shortest_path_edges']


def shortest_path_edges(edge_index: torch.Tensor, num_nodes: int, max_dist: int):
    r"""Virtual edges ``u -> v`` for every pair whose directed shortest-path length :math:`s` over the
    real edges satisfies :math:`1 < s \le` ``max_dist``.

    Returns ``(edge_index_sp, edge_dist_sp)``, sorted by source then target. Breadth-first search from every
    node runs in compiled code (:func:`scipy.sparse.csgraph.shortest_path` with unit weights).
    """
    device = edge_index.device
    if max_dist < 2 or edge_index.numel() == 0:
        return (torch.empty(2, 0, dtype=torch.long, device=device),
                torch.empty(0, dtype=torch.long, device=device))
    ei = edge_index.detach().cpu().numpy()
    adj = sp.csr_matrix((np.ones(ei.shape[1], dtype=np.float32), (ei[0], ei[1])),
                        shape=(num_nodes, num_nodes))
    adj.sum_duplicates()
    dist = shortest_path(adj, method='D', directed=True, unweighted=True)
    src, dst = np.nonzero((dist > 1) & (dist <= max_dist))  # inf (unreachable) fails both tests
    edge_index_sp = torch.from_numpy(np.stack([src, dst]).astype(np.int64)).to(device)
    edge_dist_sp = torch.from_numpy(dist[src, dst].astype(np.int64)).to(device)
    return edge_index_sp, edge_dist_sp


class AddShortestPathEdges(BaseTransform):
    r"""Adds GHN-2's shortest-path virtual edges as a separate edge type (paper §4.2).

    For every ordered pair of nodes :math:`(u, v)` with a directed path from :math:`u` to :math:`v` of
    shortest length :math:`1 < s_{uv} \le s_{max}`, adds ``u -> v`` to ``data.edge_index_sp`` and
    :math:`s_{uv}` to ``data.edge_dist_sp``. Real edges (:math:`s = 1`) stay in ``data.edge_index`` only.
    Works on any directed ``Data``; on a DAG the virtual edges go from ancestors to descendants.

    Args:
        max_dist (int, optional): the largest path length :math:`s_{max}` kept. (default: :obj:`50`,
            GHN-2's cut-off)
    """
    def __init__(self, max_dist: int = 50) -> None:
        self.max_dist = max_dist

    def forward(self, data: Data) -> Data:
        data.edge_index_sp, data.edge_dist_sp = shortest_path_edges(data.edge_index, data.num_nodes,
                                                                    self.max_dist)
        return data

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(max_dist={self.max_dist})'

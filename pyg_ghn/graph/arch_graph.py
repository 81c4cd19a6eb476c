"""`ArchGraph`: the computational graph of a neural network as a PyG `Data` object."""
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data

from ..primitives import PRIMITIVES, Role

__all__ = ['ArchGraph']


class ArchGraph(Data):
    r"""The computational graph of a neural network, as GHNs read it (paper §2.2, appendix A).

    Nodes are operations; node ``0`` is the network input. Attributes (:math:`N` nodes):

    * ``x`` (LongTensor ``[N]``): primitive id, an index into :data:`pyg_ghn.PRIMITIVES`.
    * ``edge_index`` (LongTensor ``[2, E]``): real edges, producer -> consumer.
    * ``edge_index_sp`` / ``edge_dist_sp`` (``[2, E_sp]`` / ``[E_sp]``): shortest-path virtual edges,
      ancestor -> descendant, with their path length :math:`1 < s \le s_{max}`.
    * ``max_sp_dist`` (int): :math:`s_{max}`, the cut-off they were built with (a GHN with a longer one
      recomputes them rather than miss edges).
    * ``level_fw`` / ``level_bw`` (LongTensor ``[N]``): longest path from a source / to a sink over the real
      edges. Not offset by batching.
    * ``shape`` (LongTensor ``[N, 4]``) and ``ndim`` (LongTensor ``[N]``): the raw shape of the tensor a node
      predicts, padded with ones to 4 entries; pooling nodes hold ``(1, 1, k, k)``; ``ndim == 0`` marks a
      node without a shape.
    * ``role`` (LongTensor ``[N]``): a :class:`pyg_ghn.Role`.
    * ``cell`` (LongTensor ``[N]``): the cell a node belongs to (DeepNets-1M networks; 0 otherwise).
    * ``param_names`` (``List[List[str]]``): per node, the qualified names of the parameters it predicts
      (a norm node holds its weight then its bias).
    * ``node_names`` (``List[str]``): a readable name per node (a parameter name, or the autograd op).

    Batching with :class:`torch_geometric.loader.DataLoader` offsets ``edge_index`` and ``edge_index_sp``,
    keeps levels local, and returns ``param_names``/``node_names`` as one list per graph.
    """

    @property
    def num_params_predicted(self) -> int:
        """Number of parameter tensors this graph binds to nodes."""
        return sum(len(p) for p in self.param_names)

    @property
    def primitive_names(self) -> List[str]:
        return [PRIMITIVES[i] for i in self.x.view(-1).tolist()]

    def primitive_counts(self) -> Dict[str, int]:
        counts = torch.bincount(self.x.view(-1), minlength=len(PRIMITIVES)).tolist()
        return {name: c for name, c in zip(PRIMITIVES, counts) if c > 0}

    def param_shape(self, node: int) -> Tuple[int, ...]:
        """The raw (unpadded) shape stored for ``node``; ``()`` if it has none."""
        return tuple(self.shape[node, :int(self.ndim[node])].tolist())

    def bindings(self) -> List[Tuple[int, Role, List[str]]]:
        """``(node, role, parameter names)`` for every node that predicts parameters."""
        return [(i, Role(int(r)), names)
                for i, (r, names) in enumerate(zip(self.role.tolist(), self.param_names)) if names]

    def to_networkx(self, virtual_edges: bool = False) -> Any:
        """A :class:`networkx.DiGraph` with node attributes ``primitive``, ``name`` and ``shape``; edges carry
        ``dist`` (1 for real edges; the path length for virtual edges when ``virtual_edges``)."""
        import networkx as nx
        g = nx.DiGraph()
        for i, (prim, name) in enumerate(zip(self.primitive_names, self.node_names)):
            g.add_node(i, primitive=prim, name=name, shape=self.param_shape(i))
        g.add_edges_from(self.edge_index.t().tolist(), dist=1)
        if virtual_edges and getattr(self, 'edge_index_sp', None) is not None:
            for (u, v), s in zip(self.edge_index_sp.t().tolist(), self.edge_dist_sp.tolist()):
                g.add_edge(u, v, dist=s)
        return g

    def plot(self, path: Optional[str] = None, **kwargs: Any) -> Any:
        """Draws the graph with markers and colours by primitive (see :func:`pyg_ghn.graph.plot_graph`)."""
        from .plot import plot_graph
        return plot_graph(self, path, **kwargs)

    def summary(self) -> str:
        n_sp = 0 if getattr(self, 'edge_index_sp', None) is None else self.edge_index_sp.size(1)
        counts = ', '.join(f'{k} {v}' for k, v in sorted(self.primitive_counts().items(),
                                                          key=lambda kv: -kv[1]))
        return (f'{self.num_nodes} nodes, {self.edge_index.size(1)} real and {n_sp} virtual edges, '
                f'{self.num_params_predicted} parameter tensors; {counts}')

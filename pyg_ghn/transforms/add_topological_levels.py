from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from ..graph.dag import topological_levels

__all__ = ['AddTopologicalLevels']


class AddTopologicalLevels(BaseTransform):
    r"""Stores the forward and backward topological levels of a DAG: ``data.level_fw`` (longest path
    from a source) and ``data.level_bw`` (longest path to a sink), both computed over ``data.edge_index``.

    The names contain no ``index``, so :class:`~torch_geometric.data.Batch` collation keeps the values as
    they are: levels stay local to each graph, which is what a level-by-level sweep over a batch needs.

    Raises:
        pyg_ghn.graph.CyclicGraphError: if the graph has a cycle.
    """
    def forward(self, data: Data) -> Data:
        data.level_fw, data.level_bw = topological_levels(data.edge_index, data.num_nodes)
        return data

from .add_shortest_path_edges import AddShortestPathEdges, shortest_path_edges
from .add_topological_levels import AddTopologicalLevels

__all__ = ['AddShortestPathEdges', 'AddTopologicalLevels', 'shortest_path_edges']

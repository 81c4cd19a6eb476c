from .arch_graph import ArchGraph
from .dag import CyclicGraphError, topological_levels, topological_order

__all__ = ['ArchGraph', 'CyclicGraphError', 'topological_levels', 'topological_order']
from .builder import GraphBuildError, UnpredictedParametersWarning, WeightSharingError, from_module

__all__ += ['from_module', 'GraphBuildError', 'WeightSharingError', 'UnpredictedParametersWarning']

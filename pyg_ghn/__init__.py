"""pyg_ghn: Graph HyperNetworks for PyTorch Geometric.

Data flow: ``nn.Module`` -> :class:`ArchGraph` (:mod:`pyg_ghn.graph`) -> PyG ``Batch`` -> :class:`GHN`
(:mod:`pyg_ghn.nn`) -> predicted parameters -> network.
"""
import warnings

with warnings.catch_warnings():
    # torch_geometric scripts a pooling helper when imported, which this torch reports as deprecated on every
    # run; nothing a pyg_ghn user can act on, so it is silenced here only, not globally.
    warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
    import torch_geometric  # noqa: F401

from .primitives import PRIMITIVES, PRIMITIVE_IDS, Role
from .graph import ArchGraph, CyclicGraphError, from_module
from .nn import GHN, GHN2Conv

__version__ = '0.1.0'

__all__ = ['PRIMITIVES', 'PRIMITIVE_IDS', 'Role', 'ArchGraph', 'CyclicGraphError', 'from_module', 'GHN', 'GHN2Conv']

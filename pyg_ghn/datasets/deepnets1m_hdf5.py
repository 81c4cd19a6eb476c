"""Reader of the official DeepNets-1M files (``deepnets1m_{train,eval,search}.hdf5`` + ``*_meta.json``).

The files store one graph per network (spec §4.3):

* ``f[split][str(idx)]['adj']``: uint8 ``(N, N)``, ``0`` (no edge), ``1`` (real edge, row = source) or the
  shortest-path length ``2 <= s <= 250`` (virtual edge, ancestor -> descendant);
* ``f[split][str(idx)]['nodes']``: uint16 ``(N, 3)`` = ``[primitive_ext_id, cell_ind, op_name_id]``;
* the meta JSON ``{split: {'nets': [net_args, ...], 'meta': {'primitives_ext': {id: name},
  'unique_op_names': {id: name}}}}``, whose ids are specific to each split (first-seen order).

Parameter shapes are not stored: as the original code does, they come from the network itself, built from
the split's ``net_args``. Node names (``'cells.<cell>.<op_name>'``) are matched to the parameter names of
:class:`pyg_ghn.deepnets.Network`, which follow the original module naming.
"""
import json
import os
import re
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..deepnets.generator import sample_train_width
from .deepnets1m import ArchitectureDataset
from .net_args_list import NetArgsList
from ..deepnets.network import Network
from ..graph.arch_graph import ArchGraph
from ..graph.dag import topological_levels
from ..primitives import PRIMITIVE_IDS, Role

__all__ = ['DeepNets1MHDF5', 'graph_from_hdf5', 'primitive_from_ext_name', 'resolve_node_name',
           'HDF5_SPLITS', 'UnmatchedNodesWarning']

#: Split -> file stem. The eval file merges the six evaluation splits.
HDF5_SPLITS: Dict[str, str] = {'train': 'train', 'search': 'search', 'val': 'eval', 'test': 'eval',
                               'wide': 'eval', 'deep': 'eval', 'dense': 'eval', 'bnfree': 'eval'}

# Primitives whose nodes hold parameters; the others (input, sum, concat, pools, msa, cse, glob_avg) do not.
_PARAM_PRIMITIVES = frozenset({'conv', 'sep_conv', 'dil_conv', 'bias', 'bn', 'ln', 'pos_enc'})
_NORM_PRIMITIVES = frozenset({'bn', 'ln'})
_KS_SUFFIX = re.compile(r'^(.+?)_\d+x\d+$')
_LEGACY_OPS = re.compile(r'(^|\.)_ops\.([^.]+)\.(\d+)(?=\.|$)')


class UnmatchedNodesWarning(UserWarning):
    """Some parameter nodes of a stored graph name no parameter of the network built from its ``net_args``."""


def _require_h5py() -> Any:
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is installed in the test environment
        raise ImportError('Reading the DeepNets-1M HDF5 files needs h5py: pip install pyg_ghn[h5]') from e
    return h5py


def primitive_from_ext_name(name: str) -> str:
    r"""Maps a name of the files' ``primitives_ext`` vocabulary to one of :data:`pyg_ghn.PRIMITIVES`.

    ``conv_1x1`` and every ``conv_*`` (``conv_3x3``, ``conv_7x1_1x7``, ...) are ``conv``; a kernel-size
    suffix of the legacy names is dropped (``sep_conv_3x3`` -> ``sep_conv``, ``max_pool_3x3`` ->
    ``max_pool``); ``fc-b`` (a linear bias) is ``bias``; other names must be primitives already.
    """
    if name in PRIMITIVE_IDS:
        return name
    if name.startswith('conv_'):
        return 'conv'
    if name == 'fc-b':
        return 'bias'
    m = _KS_SUFFIX.match(name)
    if m and m.group(1) in PRIMITIVE_IDS:
        return m.group(1)
    raise ValueError(f'unknown primitive name {name!r} in the DeepNets-1M meta file')


def resolve_node_name(op_name: str, cell: int) -> str:
    r"""The full name of a stored node, as the original loader derives it from the file's ``op_name``.

    ``classifier*`` names are kept; otherwise the name is prefixed with ``cells.<cell>.`` after fixing
    the naming of older code versions (an empty name is the input; ``...to_out.0.`` lacks its
    ``weight``; ``_ops.<j>.<i>`` is ``_ops.<j>.op.<i>``), and stem and positional-encoding names are
    re-rooted (``cells.0.stem.0.weight`` -> ``stem.0.weight``).
    """
    if op_name.startswith('classifier'):
        return op_name
    if op_name == '':
        op_name = 'input'
    elif op_name.endswith('to_out.0.'):
        op_name += 'weight'
    else:
        op_name = _LEGACY_OPS.sub(r'\1_ops.\2.op.\3', op_name, count=1)
    name = f'cells.{cell}.{op_name}'
    for root in ('stem', 'pos_enc'):
        pos = name.find(root)
        if pos >= 0:
            return name[pos:]
    return name


def _param_key(name: str) -> str:
    # The original looks names up as they are when they end in a parameter name, else as the weight.
    return name if name.endswith(('.weight', '.bias')) else name + '.weight'


def graph_from_hdf5(adj: np.ndarray, nodes: np.ndarray, primitives_ext: Dict[int, str],
                    op_names: Dict[int, str], network: nn.Module, max_sp_dist: int = 50) -> ArchGraph:
    r"""An :class:`ArchGraph` from one stored graph and the network its ``net_args`` describe.

    Args:
        adj (np.ndarray): the ``(N, N)`` ``adj`` matrix (``1`` real edges, ``s > 1`` virtual edges).
        nodes (np.ndarray): the ``(N, 3)`` ``nodes`` matrix ``[primitive_ext_id, cell_ind, op_name_id]``.
        primitives_ext, op_names: the split's id -> name maps (``int`` keys).
        network: the network; only its parameter names and shapes are read (a ``meta`` module will do).
        max_sp_dist (int): virtual edges longer than this are dropped (GHN-2: 50).

    Node order and edges are those of the file. Parameter nodes are matched by name to ``network``'s
    parameters (a norm node binds its weight and bias); pooling nodes get the shape ``(1, 1, 3, 3)``
    (all DeepNets-1M pools are 3x3), except a pool whose name is re-rooted at the stem, which the
    original loader leaves without a shape. The classification roles go to the last two nodes, by
    position, as in the original. Names that match no parameter are listed in ``graph.unmatched``;
    parameters without a node in ``graph.unpredicted``.
    """
    adj = np.asarray(adj)
    nodes = np.asarray(nodes).astype(np.int64)
    n = adj.shape[0]
    if adj.shape != (n, n) or nodes.shape != (n, 3):
        raise ValueError(f'inconsistent graph: adj {adj.shape}, nodes {nodes.shape}')
    if np.any(np.diagonal(adj)):
        raise ValueError('the stored graph has self-loops')

    params = dict(network.named_parameters())
    used: set = set()
    x = torch.empty(n, dtype=torch.long)
    shape = torch.ones(n, 4, dtype=torch.long)
    ndim = torch.zeros(n, dtype=torch.long)
    role = torch.zeros(n, dtype=torch.long)
    param_names: List[List[str]] = []
    node_names: List[str] = []
    unmatched: List[str] = []
    for i, (prim_id, cell, op_id) in enumerate(nodes.tolist()):
        prim = primitive_from_ext_name(primitives_ext[prim_id])
        x[i] = PRIMITIVE_IDS[prim]
        op_name = op_names[op_id]
        name = resolve_node_name(op_name, cell)
        bound: List[str] = []
        if prim in _PARAM_PRIMITIVES:
            key = _param_key(name)
            if prim in _NORM_PRIMITIVES:
                prefix = key.rsplit('.', 1)[0]
                bound = [p for p in (prefix + '.weight', prefix + '.bias') if p in params]
            elif key in params:
                bound = [key]
            if not bound or used.intersection(bound):
                unmatched.append(name)
                bound = []
            else:
                used.update(bound)
                sz = tuple(params[bound[0]].shape)
                if len(sz) > 4:
                    raise ValueError(f'{bound[0]} has a {len(sz)}-D shape; GHNs predict up to 4-D tensors')
                shape[i, :len(sz)] = torch.tensor(sz)
                ndim[i] = len(sz)
                role[i] = Role.NORM if prim in _NORM_PRIMITIVES else Role.BIAS if prim == 'bias' else Role.WEIGHT
            node_names.append(bound[0] if bound else name)
        else:
            if prim in ('max_pool', 'avg_pool') and name.startswith('cells.'):
                shape[i] = torch.tensor((1, 1, 3, 3))
                ndim[i] = 4
            node_names.append(op_name if op_name and prim != 'input' else prim)
        param_names.append(bound)

    # Classification layers by position (spec §7.5): the last node's 1-D tensor, the 2nd-last's weight.
    if param_names[-1] and ndim[-1] == 1:
        role[-1] = Role.CLS_BIAS
    if n > 1 and param_names[-2] and ndim[-2] > 1:
        role[-2] = Role.CLS_WEIGHT

    adj_t = torch.from_numpy(adj.astype(np.int64))
    edge_index = (adj_t == 1).nonzero().t().contiguous()  # row-major: sorted by source, then target
    sp = (adj_t > 1) & (adj_t <= max_sp_dist)
    edge_index_sp = sp.nonzero().t().contiguous()
    edge_dist_sp = adj_t[sp]
    level_fw, level_bw = topological_levels(edge_index, n)

    unpredicted = [p for p in params if p not in used]
    return ArchGraph(x=x, edge_index=edge_index, num_nodes=n, shape=shape, ndim=ndim, role=role,
                     cell=torch.from_numpy(nodes[:, 1].copy()), param_names=param_names, node_names=node_names,
                     unpredicted=unpredicted, unmatched=unmatched, level_fw=level_fw, level_bw=level_bw,
                     edge_index_sp=edge_index_sp, edge_dist_sp=edge_dist_sp, max_sp_dist=int(max_sp_dist))


class DeepNets1MHDF5(ArchitectureDataset):
    r"""The official DeepNets-1M files of the paper (§3, appendix A) as a PyG dataset.

    ``root`` is the folder holding the downloaded files (``raw_file_names``): ``deepnets1m_train.hdf5``,
    ``deepnets1m_search.hdf5`` or ``deepnets1m_eval.hdf5`` (which holds ``val``, ``test``, ``wide``,
    ``deep``, ``dense`` and ``bnfree``), each with its ``*_meta.json``. They are read in place; nothing
    is processed or written. Each item is an :class:`~pyg_ghn.ArchGraph` read from the file (node order,
    edges and virtual edges as stored), with parameter names and shapes from the network described by
    the split's ``net_args`` (built on the ``meta`` device), plus ``net_args`` (a JSON string of the
    arguments of that very network, widened ``C`` included: ``build_network(json.loads(graph.net_args))``
    rebuilds it) and ``net_idx``.

    The width ``C`` of evaluation networks comes from the meta file where present (32 otherwise); ``wide``
    networks are 4x (2x for ImageNet) wider, as in the original loader. For ``train``, indexing with a pair
    ``(idx, seed)`` draws the training-time width from ``seed`` (see
    :func:`pyg_ghn.deepnets.sample_train_width`).

    Args:
        root (str): folder with the files.
        split (str): one of :data:`HDF5_SPLITS`.
        num_nets (int, optional): use only the first ``num_nets`` networks.
        num_classes (int): classes of the networks' heads. (default: 10)
        large_images (bool): ImageNet-style networks. (default: False)
        max_sp_dist (int): virtual-edge cut-off; the files store lengths up to 250. (default: 50)
        attach_network (bool): also return the network (on the ``meta`` device) as ``graph.network``.
        transform, pre_transform: as in PyG (``pre_transform`` applies to each read graph).

    Requires ``h5py`` (``pip install pyg_ghn[h5]``).
    """

    def __init__(self, root: str, split: str = 'test', num_nets: Optional[int] = None, num_classes: int = 10,
                 large_images: bool = False, max_sp_dist: int = 50, attach_network: bool = False,
                 transform: Optional[Callable] = None, pre_transform: Optional[Callable] = None,
                 log: bool = True) -> None:
        if split not in HDF5_SPLITS:
            raise ValueError(f'Unknown split {split!r}; choose one of {sorted(HDF5_SPLITS)}.')
        if max_sp_dist is None or int(max_sp_dist) < 1:
            raise ValueError(f'max_sp_dist must be an int >= 1 (1: no virtual edges), got {max_sp_dist!r}')
        _require_h5py()
        self.split = split
        self.net_classes, self.large_images = num_classes, large_images
        self.max_sp_dist, self.attach_network = max_sp_dist, attach_network
        self._h5: Any = None
        self._h5_pid: Optional[int] = None
        super().__init__(root, transform, pre_transform, log=log)
        with open(self.raw_paths[1]) as f:
            meta = json.load(f)
        if split not in meta:
            raise KeyError(f'split {split!r} is not in {self.raw_paths[1]} (it has {sorted(meta)})')
        meta = meta[split]
        self.nets = NetArgsList(meta['nets'][:num_nets])  # not a list of dicts: see NetArgsList
        self.primitives_ext = {int(k): v for k, v in meta['meta']['primitives_ext'].items()}
        self.op_names = {int(k): v for k, v in meta['meta']['unique_op_names'].items()}

    @property
    def raw_dir(self) -> str:
        return self.root  # the files are used where they were downloaded

    @property
    def raw_file_names(self) -> List[str]:
        stem = f'deepnets1m_{HDF5_SPLITS[self.split]}'
        return [f'{stem}.hdf5', f'{stem}_meta.json']

    @property
    def processed_file_names(self) -> List[str]:
        return []

    def download(self) -> None:
        raise FileNotFoundError(
            f'{self.raw_file_names} not found in {self.raw_dir}. Download them with the original GHN-2 '
            f"release's data/download.sh (they are not redistributed with pyg_ghn), or generate "
            f'architectures with pyg_ghn.datasets.deepnets1m.DeepNets1M.')

    def _file(self) -> Any:
        # One handle per process: h5py handles must not cross a fork (DataLoader workers).
        if self._h5 is None or self._h5_pid != os.getpid():
            self._h5 = _require_h5py().File(self.raw_paths[0], 'r')
            self._h5_pid = os.getpid()
        return self._h5

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state['_h5'] = state['_h5_pid'] = None
        return state

    def len(self) -> int:
        return len(self.nets)

    def net_args(self, idx: int, seed: Optional[int] = None) -> Dict[str, Any]:
        """The stored ``net_args`` of network ``idx``; for ``train`` with a ``seed``, with a sampled width."""
        args = dict(self.nets[idx])
        if self.split == 'train' and seed is not None:
            args = sample_train_width(args, np.random.default_rng(seed), large_images=self.large_images)
        return args

    def network(self, idx: int, seed: Optional[int] = None, device: Union[str, torch.device, None] = None) -> Network:
        """The network of ``net_args(idx, seed)`` (``wide``: with the widened ``C``)."""
        from .deepnets1m import build_network
        with torch.device(device or 'cpu'):
            return build_network(self.net_args(idx, seed), self.net_classes, self.large_images,
                                 wide=self.split == 'wide')

    def raw_graph(self, idx: int) -> Tuple[np.ndarray, np.ndarray]:
        """The stored ``(adj, nodes)`` arrays of network ``idx``."""
        g = self._file()[self.split][str(idx)]
        return g['adj'][()], g['nodes'][()]

    def get(self, idx: Union[int, Tuple[int, int]]) -> ArchGraph:
        idx, seed = (int(idx[0]), int(idx[1])) if isinstance(idx, tuple) else (int(idx), None)
        args = self.net_args(idx, seed)
        net = self.network(idx, seed, device='meta')
        adj, nodes = self.raw_graph(idx)
        graph = graph_from_hdf5(adj, nodes, self.primitives_ext, self.op_names, net, self.max_sp_dist)
        if graph.unmatched:
            warnings.warn(f'{self.split} network {idx}: {len(graph.unmatched)} node(s) name no parameter of '
                          f'the network, e.g. {graph.unmatched[:3]}', UnmatchedNodesWarning, stacklevel=2)
        # The arguments of the network the graph describes (for ``wide``, the widened C), so that
        # ``build_network(json.loads(graph.net_args))`` rebuilds it.
        graph.net_args = json.dumps({**args, 'C': net.C}, separators=(',', ':'))
        graph.net_idx = idx
        if self.attach_network:
            graph.network = net
        if self.pre_transform is not None:
            graph = self.pre_transform(graph)
        return graph


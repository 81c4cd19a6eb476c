"""The Graph HyperNetwork GHN-2 (and GHN-1 / MLP variants) around the message-passing layer."""
import warnings
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from ..graph.dag import topological_levels
from ..primitives import PRIMITIVE_IDS, PRIMITIVES, Role
from ..transforms.add_shortest_path_edges import shortest_path_edges
from .configs import DATASETS
from .decoder import MLP, ConvDecoder, bias_class_head, decoder_1d
from .normalize import (copy_tiled_, crop_to_shape, normalize_bias, normalize_norm_weight, normalize_weight,
                        tile_to_shape)
from .shape_encoder import ShapeEncoder

__all__ = ['GHN', 'GraphInput']

GraphInput = Union[Data, Batch, Sequence[Data]]

_NORM_PRIMITIVES = (PRIMITIVE_IDS['bn'], PRIMITIVE_IDS['ln'])
_POS_ENC = PRIMITIVE_IDS['pos_enc']


class GHN(nn.Module):
    r"""The Graph HyperNetwork of `"Parameter Prediction for Unseen Deep Architectures"
    <https://arxiv.org/abs/2110.13100>`_ (GHN-2; GHN-1 and the MLP baseline by configuration).

    For a batch of architecture graphs (:class:`~pyg_ghn.ArchGraph`), node features are

    .. math::
        \mathbf{h}^0_v = \mathbf{E}[\mathrm{op}_v] + \mathrm{ShapeEnc}(\mathrm{shape}_v),\qquad
        \mathbf{h}_v = \mathrm{LN}\big(\mathrm{GNN}(\mathbf{h}^0, \mathcal{G})_v\big)

    with the GNN a :class:`~pyg_ghn.nn.conv.GHN2Conv` (``hypernet='gatedgnn'``) or a per-node
    ``Linear -> ReLU -> Linear -> ReLU`` (``hypernet='mlp'``). Each node then predicts its parameters by
    role (:class:`pyg_ghn.Role`):

    * ``WEIGHT``: :class:`ConvDecoder` at the target's kernel size (1 x 1 for 2-D weights; 3-D ``(a,b,c)``
      counts as ``(a,b,c,1)``), then :func:`~pyg_ghn.nn.normalize.tile_to_shape` and the fan-in rule;
    * ``CLS_WEIGHT``: :meth:`ConvDecoder.classifier` (:math:`K \times M_1`), tiled, fan-in;
    * ``NORM``: rows 0 (weight, :math:`2\,\mathrm{sigmoid}(\cdot/2)`) and 1 (bias, :math:`\tanh(\cdot/5)`)
      of ``decoder_1d``; ``BIAS``: row 1; ``CLS_BIAS``: ``bias_class`` applied to both rows, row 1 for a
      classifier bias, rows 0 and 1 when the last node is a BN/LN layer.

    Decoder calls are batched: weights are grouped by the channel block they use (``min(c, M)``) and kernel
    size, so that the :math:`1 \times 1` layers run once per block; all 1-D nodes share one call; tiling and
    normalisation run once per distinct target shape. Every channel count works: values are those of
    the full :math:`M_0 \times M_1` decoding, sliced (spec §2.7). Kernels larger than :math:`S` are tiled
    spatially (see :func:`~pyg_ghn.nn.normalize.tile_to_shape`).

    Args:
        max_shape (tuple): :math:`(M_0, M_1, S, S)`. (default: :obj:`(64, 64, 11, 11)`, CIFAR-10)
        num_classes (int): :math:`K`. (default: :obj:`10`)
        hypernet (str): ``'gatedgnn'`` or ``'mlp'``. (default: :obj:`'gatedgnn'`)
        decoder (str): only ``'conv'`` is supported. (default: :obj:`'conv'`)
        weight_norm (bool): apply the normalisation of paper §4.1. (default: :obj:`True`)
        ve (bool): use shortest-path virtual edges (paper §4.2). (default: :obj:`True`)
        layernorm (bool): LayerNorm after the GNN. (default: :obj:`True`)
        hid (int): node feature size :math:`d`. (default: :obj:`32`)
        num_rounds (int): :math:`T`, forward-backward sweeps. (default: :obj:`1`)
        backward (bool): run the backward sweep. (default: :obj:`True`)
        sp_on_real_edges (bool): 1-hop edges also feed the virtual-edge MLP, as in the original.
            (default: :obj:`True`)
        max_sp_dist (int): :math:`s^{(max)}`; longer virtual edges in the input are ignored.
            (default: :obj:`50`)
    """
    def __init__(self, max_shape: Sequence[int] = (64, 64, 11, 11), num_classes: int = 10,
                 hypernet: str = 'gatedgnn', decoder: str = 'conv', weight_norm: bool = True,
                 ve: bool = True, layernorm: bool = True, hid: int = 32, *, num_rounds: int = 1,
                 backward: bool = True, sp_on_real_edges: bool = True, max_sp_dist: int = 50) -> None:
        super().__init__()
        max_shape = tuple(int(s) for s in max_shape)
        if len(max_shape) != 4 or max_shape[2] != max_shape[3]:
            raise ValueError(f'max_shape must be (M0, M1, S, S), got {max_shape}')
        if hypernet not in ('gatedgnn', 'mlp'):
            raise ValueError(f"hypernet must be 'gatedgnn' or 'mlp', got {hypernet!r}")
        if decoder != 'conv':
            raise ValueError(f"only decoder='conv' is supported (GHN-1/GHN-2), got {decoder!r}")
        self.config: Dict[str, Any] = dict(
            max_shape=max_shape, num_classes=num_classes, hypernet=hypernet, decoder=decoder,
            weight_norm=weight_norm, ve=ve, layernorm=layernorm, hid=hid, num_rounds=num_rounds,
            backward=backward, sp_on_real_edges=sp_on_real_edges, max_sp_dist=max_sp_dist)
        self.max_shape, self.num_classes, self.hypernet = max_shape, num_classes, hypernet
        self.weight_norm, self.ve, self.layernorm, self.hid = weight_norm, ve, layernorm, hid
        self.max_sp_dist = max_sp_dist
        self.metadata: Dict[str, Any] = {}  # filled by GHN.load (epoch, source format, ...)

        # Creation order = the original state-dict order (ln first).
        if layernorm:
            self.ln = nn.LayerNorm(hid)
        self.op_embed = nn.Embedding(len(PRIMITIVES), hid)
        self.shape_enc = ShapeEncoder(hid, num_classes, max_shape)
        if hypernet == 'gatedgnn':
            from .conv import GHN2Conv  # written separately; imported here so the rest works without it
            self.gnn = GHN2Conv(hid, virtual_edges=ve, num_rounds=num_rounds, backward=backward,
                                sp_on_real_edges=sp_on_real_edges)
        else:
            self.gnn = MLP((hid, hid, hid), last_activation=True)
        self.decoder = ConvDecoder(hid, (4 * hid, 8 * hid), max_shape, num_classes)
        max_ch = max(max_shape[:2])
        self.decoder_1d = decoder_1d(hid, max_ch)
        self.bias_class = bias_class_head(max_ch, num_classes)

    def reset_parameters(self) -> None:
        for module in (self.op_embed, self.shape_enc, self.gnn, self.decoder, self.decoder_1d, self.bias_class):
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()
            else:
                for m in module.modules():
                    if isinstance(m, nn.Linear):
                        m.reset_parameters()
        if self.layernorm:
            self.ln.reset_parameters()

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, dataset: str = 'cifar10', **overrides: Any) -> 'GHN':
        """A GHN of a named configuration (:mod:`pyg_ghn.nn.configs`), e.g. ``GHN.from_config('ghn2',
        'imagenet')``, randomly initialised."""
        from .configs import get_config
        return cls(**get_config(name, dataset, **overrides))

    @classmethod
    def from_pretrained(cls, weights: Any = None, map_location: Any = 'cpu') -> 'GHN':
        """A GHN shipped with pyg_ghn (:class:`pyg_ghn.nn.GHNWeights`; default: GHN-2 trained on
        Fashion-MNIST), loaded without any download, in eval mode."""
        from .pretrained import from_pretrained
        return from_pretrained(weights, map_location)

    @classmethod
    def load(cls, path: str, map_location: Any = 'cpu') -> 'GHN':
        """Loads a GHN from an original release file or a ``pyg_ghn`` checkpoint, in eval mode
        (:func:`pyg_ghn.nn.checkpoint.load_ghn`)."""
        from .checkpoint import load_ghn
        return load_ghn(path, map_location=map_location)

    def save(self, path: str, **kwargs: Any) -> None:
        """Saves this GHN atomically (:func:`pyg_ghn.nn.checkpoint.save_ghn`)."""
        from .checkpoint import save_ghn
        save_ghn(self, path, **kwargs)

    @property
    def input_size(self) -> Tuple[int, int, int]:
        """The input size ``ghn(model)`` builds graphs at when neither the call nor the model
        (``expected_input_sz``) gives one: the image size of the data the configuration is for,
        3x224x224 for an ImageNet-style GHN (kernels up to 16x16, the ``'imagenet'`` configuration) and
        3x32x32 for a CIFAR-style one (11x11). ImageNet models such as AlexNet or the ViTs cannot run on
        32x32 images."""
        return (3, 224, 224) if self.max_shape[2] >= DATASETS['imagenet']['max_shape'][2] else (3, 32, 32)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------------------------
    def _prepare(self, graphs: GraphInput) -> Batch:
        if isinstance(graphs, Batch):
            batch = graphs
        elif isinstance(graphs, Data):
            batch = Batch.from_data_list([graphs])
        elif isinstance(graphs, (list, tuple)) and all(isinstance(g, Data) for g in graphs) and graphs:
            batch = Batch.from_data_list(list(graphs))
        else:
            raise TypeError(f'Expected an ArchGraph, a list of them or a PyG Batch, got {type(graphs)}')
        for key in ('x', 'edge_index', 'shape', 'ndim', 'role', 'param_names'):
            if getattr(batch, key, None) is None:
                raise ValueError(f"The graphs lack the attribute '{key}' (see pyg_ghn.ArchGraph)")
        device = self.op_embed.weight.device
        return batch if batch.x.device == device else batch.to(device)

    def _edges(self, batch: Batch) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        # Levels and virtual edges are computed here when a graph was built without the transforms; on a
        # disjoint union of graphs both equal the per-graph values.
        n, device = batch.num_nodes, batch.x.device
        level_fw, level_bw = getattr(batch, 'level_fw', None), getattr(batch, 'level_bw', None)
        if level_fw is None or level_bw is None:
            level_fw, level_bw = (t.to(device) for t in topological_levels(batch.edge_index, n))
        ei_sp = dist_sp = None
        if self.ve and self.hypernet == 'gatedgnn':
            ei_sp, dist_sp = getattr(batch, 'edge_index_sp', None), getattr(batch, 'edge_dist_sp', None)
            cut = getattr(batch, 'max_sp_dist', None)  # the cut-off the graphs were built with, if known
            if ei_sp is None or dist_sp is None or (
                    cut is not None and int(torch.as_tensor(cut).min()) < self.max_sp_dist):
                # none, or cut shorter than this GHN's (e.g. from_module(..., max_sp_dist=1)): using them
                # would silently drop virtual edges, so they are recomputed
                ei_sp, dist_sp = shortest_path_edges(batch.edge_index, n, self.max_sp_dist)
            elif dist_sp.numel() and int(dist_sp.max()) > self.max_sp_dist:
                keep = dist_sp <= self.max_sp_dist  # e.g. DeepNets-1M files store s <= 250
                ei_sp, dist_sp = ei_sp[:, keep], dist_sp[keep]
        return level_fw, level_bw, ei_sp, dist_sp

    def node_features(self, batch: Batch) -> Tensor:
        """Node features after the GNN and LayerNorm, :math:`(N, d)`, for a prepared ``Batch``."""
        x = self.op_embed(batch.x.view(-1)) + self.shape_enc(batch.shape, batch.ndim)
        if self.hypernet == 'mlp':
            x = self.gnn(x)  # edges ignored
        else:
            level_fw, level_bw, ei_sp, dist_sp = self._edges(batch)
            x = self.gnn(x, batch.edge_index, level_fw, level_bw, ei_sp, dist_sp)
        return self.ln(x) if self.layernorm else x

    def embed(self, graphs: GraphInput) -> Tuple[Tensor, Tensor]:
        """Post-LayerNorm node features :math:`(N, d)` and graph embeddings :math:`(B, d)`, the mean over
        each graph's nodes (the architecture representation of paper §5.2)."""
        batch = self._prepare(graphs)
        x = self.node_features(batch)
        index = batch.batch if batch.batch is not None else x.new_zeros(x.size(0), dtype=torch.long)
        return x, scatter(x, index, dim=0, dim_size=batch.num_graphs, reduce='mean')

    # ------------------------------------------------------------------------------------------------
    def predict_parameters(self, graphs: GraphInput, return_embeddings: bool = False
                           ) -> Union[List[Dict[str, Tensor]], Tuple[List[Dict[str, Tensor]], Tensor]]:
        """Predicts the parameters of every graph: one ``{parameter name: tensor}`` per graph, in node
        order, each tensor tiled to its target shape and (with ``weight_norm``) normalised, and
        differentiable w.r.t. the GHN. Use with :func:`torch.func.functional_call` to train.
        With ``return_embeddings``, also returns the post-LayerNorm node features :math:`(N, d)`."""
        batch = self._prepare(graphs)
        x = self.node_features(batch)
        params = self._decode(batch, x)
        return (params, x) if return_embeddings else params

    def _decode(self, batch: Batch, h: Tensor, tile: bool = True) -> List[Dict[str, Tensor]]:
        # tile=False returns the cropped blocks that tiling repeats (for copy_tiled_ into existing tensors).
        tile_to = tile_to_shape if tile else crop_to_shape
        m0, m1, s_max = self.max_shape[:3]
        roles, ndims, prims = batch.role.tolist(), batch.ndim.tolist(), batch.x.view(-1).tolist()
        shapes = batch.shape.tolist()
        n_graphs = batch.num_graphs
        graph_of, ptr = batch.batch.tolist(), batch.ptr.tolist()
        names_of = batch.param_names  # one list per graph, one list of names per node

        # Group nodes: weights by decoded channel block (c_out, c_in) <= (M0, M1), then by decoded kernel size,
        # then by target shape; 1-D nodes by head, target shape and rows.
        w_groups: Dict[Tuple[int, int], Dict[Tuple[int, int], Dict[Tuple, List[int]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list)))
        cls_groups: Dict[Tuple[int, ...], List[int]] = defaultdict(list)
        d1_groups: Dict[Tuple, List[int]] = defaultdict(list)
        node_names: Dict[int, List[str]] = {}
        for v, r in enumerate(roles):
            if r == Role.NONE:
                continue
            g = graph_of[v]
            names = names_of[g][v - ptr[g]]
            if not names:
                continue
            nd = ndims[v]
            t = tuple(shapes[v][:nd])
            if nd == 0:
                raise ValueError(f'Node {v - ptr[g]} of graph {g} ({names}) has role {Role(r).name} but no '
                                 f'shape (ndim == 0)')
            if r in (Role.NORM, Role.BIAS, Role.CLS_BIAS):
                norm_like = r == Role.NORM or (r == Role.CLS_BIAS and prims[v] in _NORM_PRIMITIVES)
                rows = (0, 1)[:len(names)] if norm_like else (1,)
                if len(rows) != len(names):
                    raise ValueError(f'Node {v - ptr[g]} of graph {g} has role {Role(r).name} and '
                                     f'{len(names)} parameter names {names}')
                d1_groups[(r == Role.CLS_BIAS, t, rows)].append(v)
            elif r in (Role.WEIGHT, Role.CLS_WEIGHT):
                if nd < 2 or len(names) != 1:
                    raise ValueError(f'Node {v - ptr[g]} of graph {g} has role {Role(r).name} with shape '
                                     f'{t} and names {names}; expected one tensor of 2 to 4 dimensions')
                if r == Role.CLS_WEIGHT:
                    cls_groups[t].append(v)
                else:
                    kh, kw = (t + (1, 1))[2], (t + (1, 1, 1))[3]
                    w_groups[(min(t[0], m0), min(t[1], m1))][(min(kh, s_max), min(kw, s_max))][
                        (t, prims[v] == _POS_ENC)].append(v)
            else:
                raise ValueError(f'Unknown role {r} at node {v - ptr[g]} of graph {g}')
            node_names[v] = names

        out: Dict[int, List[Tensor]] = {}
        device = h.device

        def index(nodes: List[int]) -> Tensor:
            return torch.tensor(nodes, dtype=torch.long, device=device)

        for (c_out, c_in), by_kernel in w_groups.items():
            kernels = list(by_kernel)
            xs = [h[index([v for vs in by_kernel[k].values() for v in vs])] for k in kernels]
            for k, p_all in zip(kernels, self.decoder.forward_multi(xs, kernels, c_out, c_in)):
                groups = by_kernel[k]
                for ((t, pos_enc), vs), p in zip(groups.items(),
                                                 p_all.split([len(vs) for vs in groups.values()])):
                    if self.weight_norm:  # a scale set by the target shape; cheaper before tiling
                        p = normalize_weight(p, t, pos_enc=pos_enc)
                    w = tile_to(p, t)
                    out.update((v, [wv]) for v, wv in zip(vs, w.unbind(0)))

        if cls_groups:
            nodes = [v for vs in cls_groups.values() for v in vs]
            p_all = self.decoder.classifier(h[index(nodes)])  # (n, K, M1)
            for (t, vs), p in zip(cls_groups.items(), p_all.split([len(vs) for vs in cls_groups.values()])):
                if self.weight_norm:
                    p = normalize_weight(p, t)
                w = tile_to(p, t)
                out.update((v, [wv]) for v, wv in zip(vs, w.unbind(0)))

        for cls in (False, True):  # 1-D decoder; the classifier-bias head on top for last nodes
            keys = [k for k in d1_groups if k[0] == cls]
            if not keys:
                continue
            v_all = self.decoder_1d(h[index([v for k in keys for v in d1_groups[k]])])
            v_all = v_all.view(v_all.size(0), 2, -1)  # (n, 2, max_ch): row 0 weight, row 1 bias
            if cls:
                v_all = self.bias_class(v_all)  # (n, 2, K)
            for (_, t, rows), v in zip(keys, v_all.split([len(d1_groups[k]) for k in keys])):
                tensors = []
                for r in rows:
                    p = v[:, r]
                    if self.weight_norm:  # elementwise, so it commutes with tiling
                        p = normalize_norm_weight(p) if r == 0 else normalize_bias(p)
                    tensors.append(tile_to(p, t).unbind(0))
                out.update((node, [tr[i] for tr in tensors])
                           for i, node in enumerate(d1_groups[(cls, t, rows)]))

        params: List[Dict[str, Tensor]] = [dict() for _ in range(n_graphs)]
        for v in sorted(out):
            g, d = graph_of[v], params[graph_of[v]]
            for name, tensor in zip(node_names[v], out[v]):
                if name in d:
                    raise ValueError(f'Parameter {name!r} is bound to two nodes of graph {g}')
                d[name] = tensor
        return params

    # ------------------------------------------------------------------------------------------------
    def forward(self, inp: Union[nn.Module, GraphInput], graphs: Optional[GraphInput] = None,
                **kwargs: Any) -> Any:
        """``ghn(model, ...)`` predicts and sets ``model``'s parameters (:meth:`predict_into`);
        ``ghn(graphs, ...)`` returns :meth:`predict_parameters`."""
        if isinstance(inp, nn.Module):
            graph = kwargs.pop('graph', None) if graphs is None else graphs
            return self.predict_into(inp, graph, **kwargs)
        if graphs is not None:
            raise TypeError('ghn(graphs) takes the graphs as its first argument')
        return self.predict_parameters(inp, **kwargs)

    def predict_into(self, model: nn.Module, graph: Optional[Data] = None, *, bn_train: bool = True,
                     calibrate: Optional[Iterable] = None, n_batches: int = 200,
                     input_size: Optional[Union[int, Sequence[int]]] = None,
                     return_embeddings: bool = False) -> Any:
        r"""Predicts ``model``'s parameters and copies them into it in place.

        Args:
            model (nn.Module): the network; its graph is built with
                :func:`pyg_ghn.graph.builder.from_module` unless ``graph`` is given.
            graph (ArchGraph, optional): a prebuilt graph of ``model``.
            bn_train (bool): switch every ``BatchNorm2d`` to batch statistics
                (``track_running_stats=False; training=True``), as the original evaluates predicted
                networks (other norm layers are left as they are, as in the original). Calling
                ``model.eval()`` afterwards would bring back the (initial) running statistics.
                (default: :obj:`True`)
            calibrate (iterable, optional): a data loader; if given, BN running statistics are instead
                estimated as a cumulative average over ``n_batches`` batches (paper appendix C.1), and the
                model is returned in eval mode.
            n_batches (int): batches used by ``calibrate``. (default: :obj:`200`)
            input_size (int or tuple, optional): input size for graph building (see
                :func:`~pyg_ghn.graph.builder.from_module`; defaults to ``model.expected_input_sz`` when set,
                else to :attr:`input_size`: 3x224x224 for an ImageNet GHN, 3x32x32 for a CIFAR one).
            return_embeddings (bool): also return the node features.

        Parameters without a graph node keep their values and are listed in a warning.
        """
        from ..graph.builder import UnpredictedParametersWarning, from_module
        if graph is None:
            if input_size is None and getattr(model, 'expected_input_sz', None) is None \
                    and getattr(model, 'expected_image_sz', None) is None:
                input_size = self.input_size  # the images this GHN is for, when the model does not say
            graph = from_module(model, input_size, max_sp_dist=self.max_sp_dist if self.ve else 1,
                                warn=False)  # the warning below covers given graphs too
        with torch.no_grad():
            batch = self._prepare(graph)
            x = self.node_features(batch)
            params = self._decode(batch, x, tile=False)[0]  # blocks, tiled straight into the model below
            named = dict(model.named_parameters(remove_duplicate=False))
            unknown = [n for n in params if n not in named]
            if unknown:
                raise ValueError(f'The graph binds parameters that {type(model).__name__} does not have: '
                                 f'{unknown[:10]}')
            shapes = {}  # the shape the graph says each tensor has
            for names, sh, nd in zip(batch.param_names[0], batch.shape.tolist(), batch.ndim.tolist()):
                shapes.update((n, tuple(sh[:nd])) for n in names)
            for name, block in params.items():
                target = named[name]
                if shapes[name] != tuple(target.shape):
                    raise ValueError(f'The graph gives {name} the shape {shapes[name]}, the model has '
                                     f'{tuple(target.shape)}: was the graph built from another model?')
                copy_tiled_(target, block.to(target.dtype))
        covered = {id(named[n]) for n in params}
        missing = [n for n, p in model.named_parameters() if id(p) not in covered]
        if missing:
            warnings.warn(f'{len(missing)} parameter tensor(s) of {type(model).__name__} have no graph node '
                          f'and keep their values: {missing}', UnpredictedParametersWarning, stacklevel=2)
        if calibrate is not None:
            calibrate_bn(model, calibrate, n_batches)
        elif bn_train:
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.track_running_stats = False
                    m.training = True
        return (model, x) if return_embeddings else model

    def extra_repr(self) -> str:
        c = self.config
        return (f"max_shape={c['max_shape']}, num_classes={c['num_classes']}, hypernet={c['hypernet']!r}, "
                f"weight_norm={c['weight_norm']}, ve={c['ve']}, layernorm={c['layernorm']}, hid={c['hid']}")


def calibrate_bn(model: nn.Module, loader: Iterable, n_batches: int = 200) -> nn.Module:
    """Estimates the running statistics of every BatchNorm layer as the cumulative average over
    ``n_batches`` batches of ``loader`` (items are inputs or ``(inputs, targets)``), without gradients;
    other modules run in eval mode. Returns ``model`` in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    device = next((p.device for p in model.parameters()), torch.device('cpu'))
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        if m.running_mean is None:  # created with track_running_stats=False
            m.register_buffer('running_mean', torch.zeros(m.num_features, device=device))
            m.register_buffer('running_var', torch.ones(m.num_features, device=device))
            m.register_buffer('num_batches_tracked', torch.tensor(0, dtype=torch.long, device=device))
        m.track_running_stats = True
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    with torch.no_grad():
        for i, item in enumerate(loader):
            if i >= n_batches:
                break
            xb = item[0] if isinstance(item, (list, tuple)) else item
            model(xb.to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return model.eval()

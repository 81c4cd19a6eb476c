"""DeepNets-1M networks: a stem, ``n_cells`` DARTS-style cells and a classification head.

The structure (channel plan, reduction positions, module names, the order of operations in
``forward``) follows the original GHN-2 code, so that the graphs built from these modules and the
parameter names match the DeepNets-1M files and the released checkpoints:

* stems: ``stem`` (simple), ``stem0``/``stem1`` (DARTS ImageNet style), or ``stem0`` + ``pos_enc`` (ViT);
* cells: ``cells.<k>`` with ``preprocess0``, ``preprocess1`` and ``_ops.<j>``; each cell carries
  ``_cell_ind = k``;
* head: ``global_pooling`` (``AdaptiveAvgPool2d(1)``) unless ``glob_avg=False``, then ``classifier``,
  an ``nn.Sequential`` whose last ``Linear`` is the classification layer.

The channel plan is computed once by :func:`cell_specs`, shared by :class:`Network` and by
:func:`network_num_params`, which counts the parameters of a network without building it.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from .genotypes import Genotype
from .ops import (FactorizedReduce, PosEnc, ReLUConvBN, Stride, Zero, drop_path, make_op, norm_layer,
                  norm_params, op_num_params)

__all__ = ['Network', 'Cell', 'CellSpec', 'cell_specs', 'network_num_params', 'count_params',
           'has_output', 'NETWORK_ARGS']

#: The keyword arguments of :class:`Network` that DeepNets-1M ``net_args`` may hold.
NETWORK_ARGS = ('C', 'genotype', 'n_cells', 'ks', 'is_imagenet_input', 'stem_pool', 'stem_type', 'is_vit',
                'norm', 'preproc', 'C_mult', 'fc_layers', 'fc_dim', 'glob_avg', 'auxiliary', 'num_classes')


@dataclass(frozen=True)
class CellSpec:
    r"""Channel widths and reduction flags of one cell.

    ``C_prev_prev``/``C_prev``: widths of the two cell inputs; ``C_in``: width seen by ops on the cell
    inputs (``C_out`` with preprocessing, else ``C_prev``); ``C_out``: width of every intermediate node;
    ``multiplier``: number of concatenated nodes, so the cell outputs ``multiplier * C_out`` channels.
    """
    cell_ind: int
    C_prev_prev: int
    C_prev: int
    C_in: int
    C_out: int
    reduction: bool
    reduction_prev: bool
    multiplier: int


def is_reduction(cell_ind: int, n_cells: int) -> bool:
    r"""Reduction cells sit at 1/3 and 2/3 of the depth (never at cell 0)."""
    return cell_ind > 0 and cell_ind in (n_cells // 3, 2 * n_cells // 3)


def stem_channels(C: int, preproc: bool, is_imagenet_input: bool, stem_type: int, is_vit: bool) -> int:
    r"""Output width of the stem. The simple CIFAR stem with preprocessing is 3x wider."""
    if not is_vit and stem_type == 0 and preproc and not is_imagenet_input:
        return 3 * C
    return C


def cell_specs(genotype: Genotype, C: int, n_cells: int, C_mult: int = 2, preproc: bool = True,
               stem_type: int = 0, is_vit: bool = False,
               is_imagenet_input: bool = False) -> Tuple[List[CellSpec], int]:
    r"""The channel plan of a network: one :class:`CellSpec` per cell and the width of the last cell's
    output."""
    C_prev_prev = C_prev = stem_channels(C, preproc, is_imagenet_input, stem_type, is_vit)
    C_curr = C
    reduction_prev = stem_type == 1 and not is_vit  # stem1 halves the resolution of stem0's output
    specs = []
    for k in range(n_cells):
        reduction = is_reduction(k, n_cells)
        if reduction:
            C_curr *= C_mult
        multiplier = len(genotype.reduce_concat if reduction else genotype.normal_concat)
        # Without preprocessing the cell inputs are used as they are; the constructor guarantees then
        # that widths never change (C_mult == 1 and a single concatenated node).
        specs.append(CellSpec(k, C_prev_prev, C_prev, C_curr if preproc else C_prev, C_curr, reduction,
                              reduction_prev, multiplier))
        reduction_prev = reduction
        C_prev_prev, C_prev = C_prev, multiplier * C_curr
    return specs, C_prev


def _cell_ops(genotype: Genotype, spec: CellSpec, is_vit: bool) -> List[Tuple[str, int, int, int]]:
    r"""``(op, C_in, C_out, stride)`` of every op of a cell, in ``_ops`` order."""
    edges = genotype.reduce if spec.reduction else genotype.normal
    out = []
    for op, j in edges:
        stride = 2 if (spec.reduction and j < 2 and not is_vit) else 1  # ViTs never downsample
        out.append((op, spec.C_in if j < 2 else spec.C_out, spec.C_out, stride))
    return out


def _preprocess_params(spec: CellSpec, preproc: bool, is_vit: bool, norm: Optional[str]) -> int:
    if not preproc:
        return 0
    if spec.reduction_prev and not is_vit:
        p0 = FactorizedReduce.num_params(spec.C_prev_prev, spec.C_out, norm)
    else:
        p0 = ReLUConvBN.num_params(spec.C_prev_prev, spec.C_out, 1, norm)
    return p0 + ReLUConvBN.num_params(spec.C_prev, spec.C_out, 1, norm)


def _final_resolution(is_imagenet_input: bool, stem_type: int, stem_pool: bool, is_vit: bool) -> int:
    r"""Spatial size of the last cell's output (for the flattening head of ``glob_avg=False``)."""
    if is_vit:
        return 14 if is_imagenet_input else 11
    small = stem_type == 1 or stem_pool
    if is_imagenet_input:
        return 7 if small else 14
    return 4 if small else 8


def _has_cell_output(genotype: Genotype, reduction: bool, s0: bool, s1: bool) -> bool:
    r"""Mirrors :meth:`Cell.forward` on "is this tensor defined" flags: an intermediate node is defined
    if at least one of its non-``none`` ops has a defined input; the cell output is defined if at least
    one concatenated node is."""
    edges = genotype.reduce if reduction else genotype.normal
    concat = genotype.reduce_concat if reduction else genotype.normal_concat
    states = [s0, s1]
    for i in range(len(edges) // 2):
        states.append(any(op != 'none' and states[j] for op, j in edges[2 * i:2 * i + 2]))
    return any(states[i] for i in concat)


def has_output(genotype: Union[Genotype, dict, list], n_cells: int) -> bool:
    r"""Whether a network's output is defined, i.e. ``none`` ops do not disconnect it from the input.

    When it is not, :meth:`Network.forward` raises and the original generator's graph construction
    fails, so such networks are rejected. Every other op of the network is an ancestor of the output by
    construction of the autograd graph, so this is the only way ``none`` ops break a graph.
    """
    genotype = Genotype.from_json(genotype)
    s0 = s1 = True  # every stem defines both cell inputs
    for k in range(n_cells):
        s0, s1 = s1, _has_cell_output(genotype, is_reduction(k, n_cells), s0, s1)
    return s1


class Cell(nn.Module):
    r"""A DARTS cell: two preprocessed inputs, ``steps`` sum nodes, and a concatenation.

    Intermediate node :math:`i` computes :math:`s_i = o_{2i}(s_{j_{2i}}) + o_{2i+1}(s_{j_{2i+1}})`; ``none``
    ops and undefined (``None``) inputs are skipped, and a node with no defined term is ``None``. Nodes
    of the concatenation that are ``None`` are replaced by zeros shaped like a defined one; if none is
    defined the cell returns ``None``.
    """

    def __init__(self, genotype: Genotype, spec: CellSpec, norm: Optional[str] = 'bnorm',
                 preproc: bool = True, is_vit: bool = False):
        super().__init__()
        self._cell_ind = spec.cell_ind
        self._is_vit = is_vit
        self.reduction = spec.reduction
        self.genotype = genotype
        self._has_none = 'none' in genotype.ops()

        if preproc:
            if spec.reduction_prev and not is_vit:
                self.preprocess0 = FactorizedReduce(spec.C_prev_prev, spec.C_out, norm=norm)
            else:
                self.preprocess0 = ReLUConvBN(spec.C_prev_prev, spec.C_out, 1, 1, 0, norm)
            self.preprocess1 = ReLUConvBN(spec.C_prev, spec.C_out, 1, 1, 0, norm)
        else:
            self.preprocess0 = Stride(2) if (spec.reduction_prev and not is_vit) else nn.Identity()
            self.preprocess1 = nn.Identity()

        edges = genotype.reduce if spec.reduction else genotype.normal
        self._indices = [j for _, j in edges]
        self._concat = list(genotype.reduce_concat if spec.reduction else genotype.normal_concat)
        self._steps = len(edges) // 2
        self.multiplier = len(self._concat)
        self._ops = nn.ModuleList(
            make_op(op, C_in, C_out, stride, norm) for op, C_in, C_out, stride in _cell_ops(genotype, spec, is_vit))
        # States the output depends on: a state no live node reads is never computed, so its parameters are
        # unused (and have no graph node, as in the original, which never executes such ops).
        ops = [op for op, _ in edges]
        live = set(self._concat)
        for i in reversed(range(self._steps)):
            if i + 2 in live:
                live.update(j for op, j in zip(ops[2 * i:2 * i + 2], self._indices[2 * i:2 * i + 2]) if op != 'none')
        self._live = frozenset(live)

    def forward(self, s0: Optional[Tensor], s1: Optional[Tensor], drop_path_prob: float = 0.) -> Optional[Tensor]:
        states = [None if s0 is None or 0 not in self._live else self.preprocess0(s0),
                  None if s1 is None or 1 not in self._live else self.preprocess1(s1)]
        for i in range(self._steps):
            s = None
            if i + 2 not in self._live:
                states.append(None)
                continue
            for op, j in zip(self._ops[2 * i:2 * i + 2], self._indices[2 * i:2 * i + 2]):
                h = states[j]
                if isinstance(op, Zero) or h is None:
                    continue
                h = op(h)
                if self.training and drop_path_prob > 0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_path_prob)
                s = h if s is None else s + h
            states.append(s)

        out = [states[i] for i in self._concat]
        if any(s is None for s in out):
            defined = [s for s in out if s is not None]
            if not defined:
                return None
            # `* 0` (not zeros_like) keeps the autograd edge from a defined node, as in the original
            # code, so that the concat node of the graph has the same inputs.
            dummy = defined[0] * 0
            out = [dummy if s is None else s for s in out]
        return torch.cat(out, dim=1)

    def extra_repr(self) -> str:
        return f'cell_ind={self._cell_ind}, reduction={self.reduction}'


class AuxiliaryHead(nn.Module):
    r"""DARTS auxiliary classifier on the output of cell ``2 n_cells // 3`` (training only).

    ``features`` = ReLU, AvgPool, 1x1 conv (C -> 128), norm, ReLU, 2x2 conv (128 -> 768), [norm,] ReLU;
    then ``classifier`` = Linear(768, num_classes). The ImageNet version has no second norm (as DARTS).
    It assumes an 8x8 (CIFAR, pool 5/3), 4x4 (CIFAR with a downsampling stem, pool 2/2) or 7x7
    (ImageNet, pool 5/2) input.
    """

    def __init__(self, C: int, num_classes: int, norm: Optional[str] = 'bnorm', imagenet: bool = False,
                 pool_sz: int = 5):
        super().__init__()
        pool = nn.AvgPool2d(5, stride=2, count_include_pad=False) if imagenet else \
            nn.AvgPool2d(pool_sz, stride=min(pool_sz, 3), count_include_pad=False)
        layers = [nn.ReLU(inplace=True), pool, nn.Conv2d(C, 128, 1, bias=False), norm_layer(norm, 128),
                  nn.ReLU(inplace=True), nn.Conv2d(128, 768, 2, bias=False)]
        if not imagenet:
            layers.append(norm_layer(norm, 768))
        layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        return self.classifier(x.flatten(1))

    @staticmethod
    def num_params(C: int, num_classes: int, norm: Optional[str], imagenet: bool) -> int:
        return (C * 128 + norm_params(norm, 128) + 128 * 768 * 4 + (0 if imagenet else norm_params(norm, 768)) +
                768 * num_classes + num_classes)


class Network(nn.Module):
    r"""A DeepNets-1M / DARTS network.

    Args:
        C (int): width of the first cells (doubled at each reduction if ``C_mult=2``).
        num_classes (int): number of classes.
        genotype (Genotype or dict or list or str): the cells (see :class:`Genotype.from_json`).
        n_cells (int): number of cells; reductions at ``n_cells // 3`` and ``2 * n_cells // 3``.
        ks (int): kernel size of the first stem conv. (default: 3)
        is_imagenet_input (bool): 224x224 inputs (strided stems, ViT patch 16) instead of 32x32.
            (default: False)
        stem_pool (bool): 3x3/2 max pooling after the simple stem. (default: False)
        stem_type (int): 0 = simple stem (conv, norm), 1 = DARTS ImageNet stem (``stem0``, ``stem1``).
            Ignored for ViTs. (default: 0)
        is_vit (bool, optional): ViT stem (patchify conv ``stem0`` + :class:`PosEnc` ``pos_enc``) and no
            striding in cells; by default, whether the genotype has an ``msa`` op.
        norm (str, optional): ``'bnorm'`` (BatchNorm with batch statistics only, DeepNets-1M),
            ``'bn-track'`` (BatchNorm with running statistics, DARTS) or ``None``. (default: ``'bnorm'``)
        preproc (bool): 1x1 conv (or FactorizedReduce) on both cell inputs. Required when the cells
            concatenate more than one node or ``C_mult > 1``. (default: True)
        C_mult (int): width multiplier at reductions. (default: 2)
        fc_layers (int): number of Linear layers of the head (0 behaves as 1). (default: 0)
        fc_dim (int): hidden width of the head when ``fc_layers > 1``. (default: 256)
        glob_avg (bool): global average pooling before the head; otherwise the last feature map is
            flattened. (default: True)
        auxiliary (bool): DARTS auxiliary head; then training-mode ``forward`` returns
            ``(logits, aux_logits)``. (default: False)

    ``forward`` returns the logits ``[B, num_classes]``.
    """

    def __init__(self, C: int, num_classes: int, genotype: Any, n_cells: int, *, ks: int = 3,
                 is_imagenet_input: bool = False, stem_pool: bool = False, stem_type: int = 0,
                 is_vit: Optional[bool] = None, norm: Optional[str] = 'bnorm', preproc: bool = True,
                 C_mult: int = 2, fc_layers: int = 0, fc_dim: int = 256, glob_avg: bool = True,
                 auxiliary: bool = False):
        super().__init__()
        genotype = Genotype.from_json(genotype)
        _check_args(genotype, preproc, C_mult, stem_type, fc_layers, fc_dim)
        self.genotype = genotype
        self.C, self.num_classes = C, num_classes
        self._n_cells = n_cells
        self._is_vit = genotype.is_vit if is_vit is None else bool(is_vit)
        self._stem_type = stem_type
        self._glob_avg = glob_avg
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.
        self.expected_input_sz = 224 if is_imagenet_input else 32

        # Stem -----------------------------------------------------------------------------------------
        C_stem = stem_channels(C, preproc, is_imagenet_input, stem_type, self._is_vit)
        if self._is_vit:
            patch = 16 if is_imagenet_input else 3
            self.stem0 = nn.Conv2d(3, C, patch, stride=patch, padding=int(patch < 4), bias=False)
            self.pos_enc = PosEnc(C, 14 if is_imagenet_input else 11)
        elif stem_type == 0:
            self.stem = nn.Sequential(
                nn.Conv2d(3, C_stem, ks, stride=4 if is_imagenet_input else 1, padding=ks // 2, bias=False),
                norm_layer(norm, C_stem),
                nn.MaxPool2d(3, stride=2, padding=1) if stem_pool else nn.Identity())
        else:
            s = 2 if is_imagenet_input else 1
            self.stem0 = nn.Sequential(
                nn.Conv2d(3, C // 2, ks, stride=s, padding=ks // 2, bias=False), norm_layer(norm, C // 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(C // 2, C, 3, stride=s, padding=1, bias=False), norm_layer(norm, C))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                                       norm_layer(norm, C))

        # Cells ----------------------------------------------------------------------------------------
        specs, C_last = cell_specs(genotype, C, n_cells, C_mult, preproc, stem_type, self._is_vit,
                                   is_imagenet_input)
        self.cells = nn.ModuleList(Cell(genotype, s, norm, preproc, self._is_vit) for s in specs)
        self._auxiliary_cell_ind = 2 * n_cells // 3
        # Network-level liveness: state t (-2, -1 = stems, k = cell k) is live when a live cell reads it
        # (cell k reads states k-2 and k-1). Dead cells are not computed, so every parameter that is used
        # has a node in the graph (the original never executes such ops either).
        live = {n_cells - 1} | ({self._auxiliary_cell_ind} if auxiliary else set())
        for k in reversed(range(n_cells)):
            if k in live:
                live.update(k - 2 + j for j in (0, 1) if j in self.cells[k]._live)
        self._live_states = frozenset(live)
        if auxiliary:
            C_aux = specs[self._auxiliary_cell_ind].multiplier * specs[self._auxiliary_cell_ind].C_out
            self.auxiliary_head = AuxiliaryHead(C_aux, num_classes, norm, is_imagenet_input,
                                                pool_sz=2 if (stem_type == 1 or stem_pool) else 5)

        # Head -----------------------------------------------------------------------------------------
        if glob_avg:
            self.global_pooling = nn.AdaptiveAvgPool2d(1)
            C_head = C_last
        else:
            C_head = C_last * _final_resolution(is_imagenet_input, stem_type, stem_pool, self._is_vit) ** 2
        fc = [nn.Linear(C_head, fc_dim if fc_layers > 1 else num_classes)]
        for i in range(fc_layers - 1):
            fc += [nn.ReLU(inplace=True), nn.Dropout(p=0.5),
                   nn.Linear(fc_dim, fc_dim if i < fc_layers - 2 else num_classes)]
        self.classifier = nn.Sequential(*fc)

    @classmethod
    def from_net_args(cls, net_args: Dict[str, Any], num_classes: int = 10, is_imagenet_input: bool = False,
                      **overrides: Any) -> 'Network':
        r"""Builds a network from a DeepNets-1M ``net_args`` dict (extra keys such as ``num_params`` are
        ignored); ``C`` defaults to 32, the width used to generate the dataset."""
        kwargs = {k: v for k, v in net_args.items() if k in NETWORK_ARGS}
        kwargs.setdefault('C', 32)
        kwargs.update(num_classes=num_classes, is_imagenet_input=is_imagenet_input)
        kwargs.update(overrides)
        return cls(**kwargs)

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        if self._is_vit:
            s0 = s1 = self.pos_enc(self.stem0(x))
        elif self._stem_type == 1:
            s0 = self.stem0(x)
            s1 = self.stem1(s0) if -1 in self._live_states else None
        else:
            s0 = s1 = self.stem(x)

        logits_aux = None
        for k, cell in enumerate(self.cells):
            s0, s1 = s1, (cell(s0, s1, self.drop_path_prob) if k in self._live_states else None)
            if self._auxiliary and self.training and k == self._auxiliary_cell_ind:
                if s1 is None:
                    raise ValueError('the auxiliary head input is undefined')
                aux_in = nn.functional.adaptive_avg_pool2d(s1, 8) if (
                    self._is_vit and self.expected_input_sz == 32) else s1
                logits_aux = self.auxiliary_head(aux_in)
        if s1 is None:
            raise ValueError('invalid network: `none` ops disconnect the output from the input')
        out = self.global_pooling(s1) if self._glob_avg else s1
        logits = self.classifier(out.flatten(1))
        return (logits, logits_aux) if logits_aux is not None else logits


def _check_args(genotype: Genotype, preproc: bool, C_mult: int, stem_type: int, fc_layers: int,
                fc_dim: int) -> None:
    if (len(genotype.normal_concat) > 1 or C_mult > 1) and not preproc:
        raise ValueError('preproc=True is required when cells concatenate several nodes or C_mult > 1')
    if stem_type not in (0, 1):
        raise ValueError(f'stem_type must be 0 (simple) or 1 (DARTS ImageNet), got {stem_type}')
    if fc_layers > 1 and fc_dim <= 0:
        raise ValueError(f'fc_dim must be positive with fc_layers={fc_layers}')


def network_num_params(C: int, num_classes: int, genotype: Any, n_cells: int, *, ks: int = 3,
                       is_imagenet_input: bool = False, stem_pool: bool = False, stem_type: int = 0,
                       is_vit: Optional[bool] = None, norm: Optional[str] = 'bnorm', preproc: bool = True,
                       C_mult: int = 2, fc_layers: int = 0, fc_dim: int = 256, glob_avg: bool = True,
                       auxiliary: bool = False) -> int:
    r"""Number of parameters of ``Network(...)`` with the same arguments, counted from the channel plan
    without building any module (a few microseconds instead of milliseconds)."""
    genotype = Genotype.from_json(genotype)
    _check_args(genotype, preproc, C_mult, stem_type, fc_layers, fc_dim)
    is_vit = genotype.is_vit if is_vit is None else bool(is_vit)

    if is_vit:
        patch = 16 if is_imagenet_input else 3
        n = 3 * C * patch * patch + PosEnc.num_params(C, 14 if is_imagenet_input else 11)
    elif stem_type == 0:
        C_stem = stem_channels(C, preproc, is_imagenet_input, stem_type, is_vit)
        n = 3 * C_stem * ks * ks + norm_params(norm, C_stem)
    else:
        n = (3 * (C // 2) * ks * ks + norm_params(norm, C // 2) + (C // 2) * C * 9 + norm_params(norm, C) +
             C * C * 9 + norm_params(norm, C))

    specs, C_last = cell_specs(genotype, C, n_cells, C_mult, preproc, stem_type, is_vit, is_imagenet_input)
    for spec in specs:
        n += _preprocess_params(spec, preproc, is_vit, norm)
        n += sum(op_num_params(op, C_in, C_out, stride, norm) for op, C_in, C_out, stride in
                 _cell_ops(genotype, spec, is_vit))
    if auxiliary:
        s = specs[2 * n_cells // 3]
        n += AuxiliaryHead.num_params(s.multiplier * s.C_out, num_classes, norm, is_imagenet_input)

    C_head = C_last if glob_avg else C_last * _final_resolution(is_imagenet_input, stem_type, stem_pool, is_vit) ** 2
    dims = [C_head] + [fc_dim] * max(fc_layers - 1, 0) + [num_classes]
    n += sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
    return n


def count_params(net_args: Dict[str, Any], num_classes: int = 10, is_imagenet_input: bool = False,
                 method: str = 'analytic', **overrides: Any) -> int:
    r"""Parameter count of the network described by ``net_args``.

    ``method='analytic'`` uses :func:`network_num_params`; ``method='meta'`` builds the network on the
    ``meta`` device (shapes only, no memory, no initialisation) and sums ``numel``.
    """
    kwargs = {k: v for k, v in net_args.items() if k in NETWORK_ARGS}
    kwargs.setdefault('C', 32)
    kwargs.update(num_classes=num_classes, is_imagenet_input=is_imagenet_input, **overrides)
    if method == 'analytic':
        return network_num_params(**kwargs)
    if method == 'meta':
        with torch.device('meta'):
            net = Network(**kwargs)
        return sum(p.numel() for p in net.parameters())
    raise ValueError(f'unknown method: {method!r}')

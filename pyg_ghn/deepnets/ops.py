"""Cell operations of DeepNets-1M networks.

Module and attribute names (``op.<i>``, ``conv_1``/``conv_2``/``bn``, ``to_qkv``, ``to_out.0``, ``ln1``,
``ln2``, ``ff.net.<i>``, ``fc1``/``fc2``) and the order of layers inside each op follow the original
GHN-2 code, because parameter names identify nodes in the DeepNets-1M files and the order of autograd
operations shapes the computational graph. Every op ``X`` has a parameter count ``num_params_X`` used
to count a network's parameters without building it (checked against the modules in the tests).
"""
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from .genotypes import parse_op_ks

__all__ = [
    'norm_layer', 'norm_params', 'ReLUConvBN', 'SepConv', 'DilConv', 'FactorizedReduce', 'Zero', 'Stride',
    'PosEnc', 'ChannelSE', 'FeedForward', 'Transformer', 'make_op', 'op_num_params', 'drop_path'
]


def norm_layer(norm: Optional[str], C: int) -> nn.Module:
    r"""``None``/``''``/``'none'`` -> ``nn.Identity`` (keeps the index of the following layers);
    ``'bn*'`` -> ``BatchNorm2d(C)`` with running statistics only if the string contains ``'track'``
    (so DeepNets-1M's ``'bnorm'`` always normalises with batch statistics, ``'bn-track'`` is DARTS')."""
    if norm in (None, '', 'none'):
        return nn.Identity()
    if norm.startswith('bn'):
        return nn.BatchNorm2d(C, track_running_stats='track' in norm)
    raise ValueError(f'unsupported norm: {norm!r}')


def norm_params(norm: Optional[str], C: int) -> int:
    r"""Number of parameters of :func:`norm_layer` (weight and bias of an affine BatchNorm)."""
    return 0 if norm in (None, '', 'none') else 2 * C


class ReLUConvBN(nn.Module):
    r"""ReLU -> conv -> norm, as ``op = Sequential(ReLU, Conv2d, norm)``.

    With ``double=True`` the conv is factorised into a :math:`1 \times k` conv (``C_in -> C_in``)
    followed by a :math:`k \times 1` conv (``C_in -> C_out``), the ``conv_7x1_1x7`` op.
    """

    def __init__(self, C_in: int, C_out: int, ks: int = 1, stride: int = 1, padding: int = 0,
                 norm: Optional[str] = 'bnorm', double: bool = False):
        super().__init__()
        self.stride = stride
        if double:
            convs = [
                nn.Conv2d(C_in, C_in, (1, ks), stride=(1, stride), padding=(0, padding), bias=False),
                nn.Conv2d(C_in, C_out, (ks, 1), stride=(stride, 1), padding=(padding, 0), bias=False)
            ]
        else:
            convs = [nn.Conv2d(C_in, C_out, ks, stride=stride, padding=padding, bias=False)]
        self.op = nn.Sequential(nn.ReLU(inplace=False), *convs, norm_layer(norm, C_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

    @staticmethod
    def num_params(C_in: int, C_out: int, ks: int, norm: Optional[str], double: bool = False) -> int:
        conv = C_in * C_in * ks + C_in * C_out * ks if double else C_in * C_out * ks * ks
        return conv + norm_params(norm, C_out)


class SepConv(nn.Module):
    r"""DARTS separable convolution: (ReLU, depthwise :math:`k \times k`, pointwise, norm) twice; only
    the first depthwise conv is strided and only the last pointwise conv changes the width."""

    def __init__(self, C_in: int, C_out: int, ks: int, stride: int, padding: int,
                 norm: Optional[str] = 'bnorm'):
        super().__init__()
        self.stride = stride
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, ks, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            norm_layer(norm, C_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, ks, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            norm_layer(norm, C_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

    @staticmethod
    def num_params(C_in: int, C_out: int, ks: int, norm: Optional[str]) -> int:
        return (2 * C_in * ks * ks + C_in * C_in + C_in * C_out + norm_params(norm, C_in) +
                norm_params(norm, C_out))


class DilConv(nn.Module):
    r"""Dilated separable convolution: ReLU, depthwise :math:`k \times k` with dilation, pointwise, norm."""

    def __init__(self, C_in: int, C_out: int, ks: int, stride: int, padding: int, dilation: int,
                 norm: Optional[str] = 'bnorm'):
        super().__init__()
        self.stride = stride
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, ks, stride=stride, padding=padding, dilation=dilation, groups=C_in,
                      bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            norm_layer(norm, C_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

    @staticmethod
    def num_params(C_in: int, C_out: int, ks: int, norm: Optional[str]) -> int:
        return C_in * ks * ks + C_in * C_out + norm_params(norm, C_out)


class FactorizedReduce(nn.Module):
    r"""Halves the resolution without losing every other pixel: ReLU, then two strided :math:`1 \times 1`
    convs (``C_out/2`` channels each) on the input and on the input shifted by one pixel, concatenated,
    then norm."""

    def __init__(self, C_in: int, C_out: int, norm: Optional[str] = 'bnorm', stride: int = 2):
        super().__init__()
        if C_out % 2:
            raise ValueError(f'FactorizedReduce needs an even C_out, got {C_out}')
        self.stride = stride
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=stride, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=stride, bias=False)
        self.bn = norm_layer(norm, C_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:] if self.stride > 1 else x
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))

    @staticmethod
    def num_params(C_in: int, C_out: int, norm: Optional[str]) -> int:
        return 2 * C_in * (C_out // 2) + norm_params(norm, C_out)


class Zero(nn.Module):
    r"""The ``none`` op. Cells skip it (so it never enters the computational graph); its forward returns
    zeros of the strided input's shape for completeness."""

    def __init__(self, stride: int = 1):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, ::self.stride, ::self.stride].mul(0.)

    def extra_repr(self) -> str:
        return f'stride={self.stride}'


class Stride(nn.Module):
    r"""Subsamples every ``stride``-th pixel (the cell input after a reduction when there is no 1x1
    preprocessing)."""

    def __init__(self, stride: int = 2):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x if self.stride == 1 else x[:, :, ::self.stride, ::self.stride]

    def extra_repr(self) -> str:
        return f'stride={self.stride}'


class PosEnc(nn.Module):
    r"""Learnable positional encoding added to a feature map: :math:`y = x + P`,
    :math:`P \in \mathbb{R}^{1 \times C \times s \times s}`, initialised from :math:`\mathcal{N}(0, 1)`.

    Args:
        C (int): channels.
        size (int): spatial size ``s`` of the feature map (11 for 32x32 inputs, 14 for 224x224).
    """

    def __init__(self, C: int, size: int):
        super().__init__()
        self.C, self.size = C, size
        self.weight = nn.Parameter(torch.empty(1, C, size, size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.weight

    def extra_repr(self) -> str:
        return f'C={self.C}, size={self.size}'

    @staticmethod
    def num_params(C: int, size: int) -> int:
        return C * size * size


class ChannelSE(nn.Module):
    r"""Channel squeeze-and-excitation (the ``cse`` op, Hu et al. 2018):

    .. math::
        z = \mathrm{mean}_{h,w}(x), \quad
        g = \mathrm{hardswish}(W_2\, \mathrm{ReLU}(W_1 z + b_1) + b_2), \quad
        y = x \odot g

    with :math:`W_1 \in \mathbb{R}^{C/2 \times C}`. The gate is a Hardswish, not a sigmoid: this is what
    DeepNets-1M networks use, and the graph builder recognises the ``cse`` node by it. A stride > 1
    subsamples the output.
    """

    def __init__(self, C: int, C_out: Optional[int] = None, stride: int = 1, reduction_ratio: int = 2):
        super().__init__()
        if C_out is not None and C_out != C:
            raise ValueError(f'ChannelSE keeps the width: C_out={C_out} != C={C}')
        self.C, self.stride, self.reduction_ratio = C, stride, reduction_ratio
        self.fc1 = nn.Linear(C, C // reduction_ratio)
        self.fc2 = nn.Linear(C // reduction_ratio, C)
        self.relu = nn.ReLU()
        self.gate = nn.Hardswish()

    def forward(self, x: Tensor) -> Tensor:
        B, C = x.shape[:2]
        z = x.flatten(2).mean(dim=2)  # [B, C]
        g = self.gate(self.fc2(self.relu(self.fc1(z))))
        out = torch.mul(x, g.view(B, C, 1, 1))
        return out if self.stride == 1 else out[:, :, ::self.stride, ::self.stride]

    def extra_repr(self) -> str:
        return f'C={self.C}, reduction_ratio={self.reduction_ratio}, stride={self.stride}'

    @staticmethod
    def num_params(C: int, reduction_ratio: int = 2) -> int:
        Cr = C // reduction_ratio
        return 2 * C * Cr + Cr + C


class FeedForward(nn.Module):
    r"""Transformer MLP ``net = Sequential(Linear(dim, hidden), GELU, Dropout, Linear(hidden, dim),
    Dropout)``."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Transformer(nn.Module):
    r"""A pre-norm Transformer block on a feature map (the ``msa`` op; after vit-pytorch):

    .. math::
        X &= \mathrm{tokens}(x) \in \mathbb{R}^{B \times HW \times C} \\
        [Q, K, V] &= \mathrm{LN}_1(X)\, W_{qkv}, \quad
        A_h = \mathrm{softmax}\big(Q_h K_h^\top / \sqrt{d}\big) \\
        Y &= [A_1 V_1, \dots, A_H V_H]\, W_o + b_o + X \\
        \mathrm{out} &= \mathrm{FF}(\mathrm{LN}_2(Y)) + Y

    with ``heads`` heads of size :math:`d = C / \mathrm{heads}` and ``FF`` = Linear(C, C) -> GELU ->
    Linear(C, C) (the hidden width is ``dim_out``, equal to ``dim``, as in DeepNets-1M). The output is
    reshaped back to ``[B, C, H, W]``.

    Multi-head reshapes use ``reshape``/``permute``, not einops. The original graph builder recognised
    ``msa`` nodes by the distance between a ``Softmax`` and a ``Clone`` autograd node, which depends on
    the einops version (spec §1.8); ``pyg_ghn``'s graph builder marks ``msa`` nodes explicitly
    (``ln1 -> to_qkv.weight -> msa -> to_out.0.weight``) instead of relying on the autograd layout.
    """

    def __init__(self, dim: int, dim_out: Optional[int] = None, heads: int = 8,
                 dim_head: Optional[int] = None, dropout: float = 0., stride: int = 1):
        super().__init__()
        dim_out = dim if dim_out is None else dim_out
        if dim_out != dim:
            raise ValueError(f'the residual connections need dim_out == dim, got {dim_out} != {dim}')
        dim_head = dim // heads if dim_head is None else dim_head
        inner_dim = dim_head * heads
        self.dim, self.heads, self.dim_head, self.stride = dim, heads, dim_head, stride
        self.scale = dim_head ** -0.5
        # Creation order = original state-dict order.
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim_out), nn.Dropout(dropout))
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim_out)
        self.ff = FeedForward(dim, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        sz = x.shape
        if x.dim() == 4:
            x = x.flatten(2).permute(0, 2, 1)  # [B, HW, C]
        B, N, _ = x.shape
        x_in = x
        # to_qkv's output is laid out as (3, heads, dim_head) along the last dim.
        qkv = self.to_qkv(self.ln1(x)).reshape(B, N, 3, self.heads, self.dim_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, dim_head]
        attn = (torch.matmul(q, k.transpose(-1, -2)) * self.scale).softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(B, N, self.heads * self.dim_head)
        out = self.to_out(out) + x_in
        out = self.ff(self.ln2(out)) + out
        if len(sz) == 4:
            out = out.permute(0, 2, 1).reshape(sz)
            if self.stride > 1:
                out = out[:, :, ::self.stride, ::self.stride]
        return out

    def extra_repr(self) -> str:
        return f'dim={self.dim}, heads={self.heads}, stride={self.stride}'

    @staticmethod
    def num_params(dim: int, heads: int = 8) -> int:
        inner = (dim // heads) * heads
        return dim * inner * 3 + (inner * dim + dim) + 4 * dim + 2 * (dim * dim + dim)


def make_op(op: str, C_in: int, C_out: int, stride: int = 1, norm: Optional[str] = 'bnorm') -> nn.Module:
    r"""Builds the cell operation named ``op`` (one of ``PRIMITIVES_DARTS_EXT``) mapping ``C_in`` to
    ``C_out`` channels with the given stride."""
    name, ks = parse_op_ks(op)
    if name == 'none':
        return Zero(stride)
    if name == 'skip_connect':
        return nn.Identity() if stride == 1 else FactorizedReduce(C_in, C_out, norm=norm)
    if name == 'avg_pool':
        return nn.AvgPool2d(ks, stride=stride, padding=ks // 2, count_include_pad=False)
    if name == 'max_pool':
        return nn.MaxPool2d(ks, stride=stride, padding=ks // 2)
    if name == 'conv':
        return ReLUConvBN(C_in, C_out, ks, stride, ks // 2, norm)
    if name == 'conv2':
        return ReLUConvBN(C_in, C_out, ks, stride, ks // 2, norm, double=True)
    if name == 'sep_conv':
        return SepConv(C_in, C_out, ks, stride, ks // 2, norm)
    if name == 'dil_conv':
        return DilConv(C_in, C_out, ks, stride, ks - ks % 2, 2, norm)
    if name == 'msa':
        return Transformer(C_in, dim_out=C_out, stride=stride)
    if name == 'cse':
        return ChannelSE(C_in, C_out, stride=stride)
    raise ValueError(f'unknown op: {op!r}')


def op_num_params(op: str, C_in: int, C_out: int, stride: int = 1, norm: Optional[str] = 'bnorm') -> int:
    r"""Number of parameters of ``make_op(op, C_in, C_out, stride, norm)`` without building it."""
    name, ks = parse_op_ks(op)
    if name in ('none', 'avg_pool', 'max_pool'):
        return 0
    if name == 'skip_connect':
        return 0 if stride == 1 else FactorizedReduce.num_params(C_in, C_out, norm)
    if name in ('conv', 'conv2'):
        return ReLUConvBN.num_params(C_in, C_out, ks, norm, double=name == 'conv2')
    if name == 'sep_conv':
        return SepConv.num_params(C_in, C_out, ks, norm)
    if name == 'dil_conv':
        return DilConv.num_params(C_in, C_out, ks, norm)
    if name == 'msa':
        return Transformer.num_params(C_in)
    if name == 'cse':
        return ChannelSE.num_params(C_in)
    raise ValueError(f'unknown op: {op!r}')


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    r"""Drops whole samples of a path with probability ``drop_prob`` and rescales the kept ones
    (DARTS' regularisation; only used in training)."""
    if drop_prob <= 0.:
        return x
    keep = 1. - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


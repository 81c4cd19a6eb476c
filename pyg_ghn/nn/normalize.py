r"""From max-sized predictions to the target tensors: tiling (spec §2.5 step 7) and the differentiable
normalisation of GHN-2 (paper §4.1, Table 2; spec §2.5 step 8).

All functions take a leading batch dimension, so that every node predicting a tensor of the same target
shape is tiled and normalised by one call.
"""
import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ['tile_to_shape', 'crop_to_shape', 'copy_tiled_', 'fan_in_beta', 'normalize_weight', 'normalize_norm_weight', 'normalize_bias',
           'is_pos_enc_shape']


def tile_to_shape(p: Tensor, shape: Sequence[int]) -> Tensor:
    r"""Crops or cyclically tiles a batch of predictions ``p`` ``(B, *s)`` to ``(B, *shape)``:

    .. math::
        \mathbf{W}[o, i, y, x] = \mathbf{P}[o \bmod s_0,\ i \bmod s_1,\ y \bmod s_2,\ x \bmod s_3]

    This is the original ``repeat``-then-crop along the out and in dimensions (e.g. ResNet-50's
    2048-channel BN holds 64 distinct values, repeated). When ``p`` has more dimensions than the target,
    the extra trailing ones are indexed at 0 (a 2-D target takes ``p[:, :, 0, 0]``); when it has fewer,
    trailing dimensions of size 1 are added (a 2-D classifier prediction for a 4-D classifier weight).

    **Kernels larger than** :math:`S`: the original never tiles spatial dimensions and asserts. Here the
    spatial dimensions are tiled like the channel ones, which is what the original's 2023 "light" decoder
    does (it repeats the :math:`S \times S` kernel 2x2 and crops), so for instance a :math:`13 \times 13`
    kernel predicted by the CIFAR-10 GHN (:math:`S = 11`) has ``W[..., 11:, :] == W[..., :2, :]``.
    """
    t = tuple(int(d) for d in shape)
    p = crop_to_shape(p, t)  # crop first, so that only what is used gets tiled
    reps = [1] + [-(-td // p.size(d + 1)) for d, td in enumerate(t)]  # ceil(t/s) copies per dimension
    if p.requires_grad and torch.is_grad_enabled():
        # One dimension at a time: the backward of each repeat is then a fast single-dimension sum.
        for d, r in enumerate(reps[1:]):
            if r > 1:
                one = [1] * p.dim()
                one[d + 1] = r
                p = p.repeat(*one)
    elif any(r > 1 for r in reps):
        p = p.repeat(*reps)  # without autograd, one pass over the output is cheaper
    for d, td in enumerate(t):
        if p.size(d + 1) != td:
            p = p.narrow(d + 1, 0, td)
    return p


def crop_to_shape(p: Tensor, shape: Sequence[int]) -> Tensor:
    """The part of a batch of predictions ``p`` that :func:`tile_to_shape` repeats: dimensions matched to
    ``shape`` (extra trailing ones indexed at 0, missing ones added) and each cropped to at most the target."""
    t = tuple(int(d) for d in shape)
    while p.dim() - 1 > len(t):
        p = p.select(-1, 0)
    while p.dim() - 1 < len(t):
        p = p.unsqueeze(-1)
    for d, td in enumerate(t):
        if p.size(d + 1) > td:
            p = p.narrow(d + 1, 0, td)
    return p


@torch.no_grad()
def copy_tiled_(dest: Tensor, p: Tensor) -> Tensor:
    """Writes the cyclic tiling of ``p`` (one cropped prediction, as :func:`crop_to_shape` gives) into
    ``dest`` in place, equal to ``dest.copy_(tile_to_shape(p[None], dest.shape)[0])``. When every target
    size is a multiple of the block, ``dest`` is viewed as (copies, block) per dimension and filled from an
    expanded view of ``p``: one pass over ``dest`` and no temporary tensor, which matters for the tens of
    millions of parameters of ImageNet models."""
    t, s = tuple(dest.shape), tuple(p.shape)
    if dest.is_contiguous() and len(t) == len(s) and all(td % sd == 0 for td, sd in zip(t, s)):
        blocks = [x for td, sd in zip(t, s) for x in (td // sd, sd)]
        inner = [x for sd in s for x in (1, sd)]
        dest.view(blocks).copy_(p.reshape(inner).expand(blocks))
    else:
        dest.copy_(tile_to_shape(p.unsqueeze(0), t)[0])
    return dest


def is_pos_enc_shape(shape: Sequence[int]) -> bool:
    """The original's test for a position encoding, which is left unnormalised: three or more dimensions,
    ``shape[0] == 1`` and ``shape[2] >= 11``."""
    return len(shape) > 2 and shape[0] == 1 and shape[2] >= 11


def fan_in_beta(shape: Sequence[int]) -> float:
    r""":math:`\beta` of the fan-in rule: 1 for layers not followed by a ReLU in DARTS-style cells, i.e.
    depthwise weights (``shape[1] == 1``) and :math:`1 \times k` kernels (``shape[2] < shape[3]``); 2 for
    every other weight, all 2-D (linear and classifier) weights included. 3-D shapes count as
    ``(a, b, c, 1)``."""
    if len(shape) > 2:
        s = tuple(shape) + (1,) * (4 - len(shape))
        if s[1] == 1 or s[2] < s[3]:
            return 1.0
    return 2.0


def normalize_weight(p: Tensor, shape: Sequence[int], pos_enc: bool = False) -> Tensor:
    r"""Fan-in normalisation of weights whose *tiled target* shape is ``shape`` (paper Table 2):
    :math:`\hat{\mathbf{w}} \sqrt{\beta / (C_{in} \mathcal{H} \mathcal{W})}`, the fan-in and
    :math:`\beta` taken from the target shape (tiling first, then normalising, spec §0.5). The scale is one
    number, so ``p`` may equally be the untiled prediction: scaling commutes with tiling, and scaling the
    small tensor is cheaper. A position encoding (``pos_enc`` and :func:`is_pos_enc_shape`) is returned
    unchanged."""
    if pos_enc and is_pos_enc_shape(shape):
        return p
    fan_in = math.prod(int(d) for d in shape[1:])
    return p * (fan_in_beta(shape) / fan_in) ** 0.5  # the original's float expression, for parity


def normalize_norm_weight(p: Tensor) -> Tensor:
    r"""BN/LN weights: :math:`2\,\mathrm{sigmoid}(\hat{\mathbf{w}} / 2) \in (0, 2)` (:math:`T = 2`)."""
    return 2 * torch.sigmoid(0.5 * p)


def normalize_bias(p: Tensor) -> Tensor:
    r"""All biases (conv, linear, BN/LN, classifier): :math:`\tanh(\hat{\mathbf{w}} / 5) \in (-1, 1)`
    (:math:`T = 5`)."""
    return torch.tanh(0.2 * p)

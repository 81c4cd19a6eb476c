"""Which modules and autograd operations become graph nodes, and as which primitive.

These are the rules of the original GHN-2 graph builder (spec §1.3), recognised by ``isinstance`` and by
structure instead of exact types and list positions, so that subclasses of ``nn.Conv2d``, ``nn.Linear``
and the norms (e.g. timm's) are predicted too, where the original would leave them out; the one subclass
kept out is ``nn.MultiheadAttention``'s ``out_proj``, as the original. ``extended=True`` adds modules the
original leaves unpredicted, mapped onto the closest primitive.
"""
from typing import Optional

from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from ..primitives import PRIMITIVES

__all__ = ['param_primitive', 'op_primitive', 'is_norm', 'ALWAYS_KEPT_OPS']


def _is_pos_enc(module: nn.Module) -> bool:
    # Modules may declare themselves a primitive; DeepNets' positional encoding is recognised by name so that
    # user-defined classes of the same name (the original's convention) work too.
    return getattr(module, 'ghn_primitive', None) == 'pos_enc' or type(module).__name__ == 'PosEnc'


_EXTENDED_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def is_norm(module: nn.Module, extended: bool = False) -> bool:
    """Norm layers predict weight and bias from one node (the bias is never a node of its own)."""
    if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
        return True
    return extended and isinstance(module, _EXTENDED_NORMS)


def param_primitive(module: nn.Module, param_name: str, extended: bool = False) -> Optional[str]:
    """The primitive of a node holding parameter ``param_name`` (qualified) of ``module``, or ``None`` when
    the parameter is not predicted."""
    declared = getattr(module, 'ghn_primitive', None)
    if _is_pos_enc(module):
        return 'pos_enc'
    if declared is not None:
        if declared not in PRIMITIVES:
            raise ValueError(f'{type(module).__name__}.ghn_primitive = {declared!r} is not one of the GHN '
                             f'primitives {list(PRIMITIVES)}')
        return declared
    if isinstance(module, nn.Conv2d) or (extended and isinstance(module, nn.Conv1d)):
        if 'bias' in param_name.rsplit('.', 1)[-1]:
            return 'bias'
        if module.groups > 1:
            return 'dil_conv' if min(module.dilation) > 1 else 'sep_conv'
        return 'conv'
    if isinstance(module, NonDynamicallyQuantizableLinear):
        # nn.MultiheadAttention's out_proj: a Linear subclass, but the original predicts no parameter of
        # nn.MultiheadAttention (spec §7.10), so only the extended mode maps it, as the packed projections.
        return ('bias' if 'bias' in param_name.rsplit('.', 1)[-1] else 'conv') if extended else None
    if isinstance(module, nn.Linear):
        return 'bias' if 'bias' in param_name.rsplit('.', 1)[-1] else 'conv'
    if isinstance(module, nn.BatchNorm2d):
        return 'bn'
    if isinstance(module, nn.LayerNorm):
        return 'ln'
    if extended:
        return _extended_primitive(module, param_name)
    return None


_SCALE_NAMES = ('scale', 'gamma')


def _extended_primitive(module: nn.Module, param_name: str) -> str:
    # Modules and tensors the original leaves unpredicted, mapped onto the closest primitive so that every
    # tensor of a network gets a prediction.
    leaf = param_name.rsplit('.', 1)[-1]
    if isinstance(module, _EXTENDED_NORMS):
        return 'bn'
    if isinstance(module, nn.MultiheadAttention):  # packed q/k/v projections: a linear layer
        return 'bias' if 'bias' in leaf else 'conv'
    p = module._parameters[leaf]
    if p.dim() == 0:
        return None  # a scalar has no shape a decoder can produce (left unpredicted)
    scale = any(k in leaf.lower() for k in _SCALE_NAMES)
    if p.dim() == 1:  # a per-channel scale behaves like a norm weight, anything else like a bias
        return 'bn' if scale else 'bias'
    if type(module).__module__.startswith('torch.nn.'):
        # Other torch layers (ConvTranspose, Embedding, RNNs...) transform their input: treating their
        # weights as free tensors would make them sources and reroute the data into a sum (left unpredicted).
        return None
    # Free tensors of a model's own modules: multiplicative ones (ConvNeXt layer_scale, Swin-V2 logit_scale)
    # as channel scalings; additive ones (ViT class token and position embedding, Swin relative position
    # bias tables) as positional encodings, which the graph makes sources feeding a sum.
    return 'cse' if scale else 'pos_enc'


# Autograd operations (the name before "Backward") that are graph nodes whenever they appear.
ALWAYS_KEPT_OPS = {
    'MaxPool2DWithIndices': 'max_pool',
    'AvgPool2D': 'avg_pool',
    'AdaptiveAvgPool2D': 'glob_avg',
}


def op_primitive(op: str) -> Optional[str]:
    """Primitive of an operation node kept by the conditional rules (see ``builder``)."""
    if op in ALWAYS_KEPT_OPS:
        return ALWAYS_KEPT_OPS[op]
    return {'Mean': 'glob_avg', 'Add': 'sum', 'Cat': 'concat', 'Mul': 'cse'}.get(op)

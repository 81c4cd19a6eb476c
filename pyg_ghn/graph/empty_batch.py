"""Tracing on an empty batch: the autograd graph of a forward pass without its compute.

A forward pass on a batch of size 0 records an autograd node for every operation, like a pass on data, but
computes nothing: ResNet-50 at 32x32 traces in 2 ms instead of 20. It is not the same graph for every
operation, though, because some kernels take shortcuts on empty tensors (``batch_norm`` returns
``input.clone() * weight + bias``, ``dropout`` returns its input, ``linear`` and ``matmul`` pick their
algorithm by contiguity and every empty tensor counts as contiguous, attention picks another backend).
So the empty pass runs under :class:`EmptyBatchGuard`, which lets through only functions known to record
the same nodes on an empty batch, rewrites BatchNorm and dropout into calls that record what data would,
lets linear and matmul through only where their algorithm does not depend on the layout, resolves the
sizes ``view``/``reshape`` cannot infer without elements (``x.view(x.size(0), -1)``), and stops the
pass with :class:`UnsafeOnEmptyBatch` at anything else; the
tracer then traces on data as before. ``tests/graph/test_empty_batch.py`` checks that the graphs are equal
for torchvision's models and DeepNets-1M networks.
"""
import functools
import math
from typing import Any, Callable, Dict, FrozenSet, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ['EmptyBatchGuard', 'UnsafeOnEmptyBatch', 'SAFE_ON_EMPTY']


class UnsafeOnEmptyBatch(Exception):
    """The forward pass called a function whose autograd graph may differ on an empty batch."""


# Functions that record the same autograd nodes on an empty batch as on data (checked on the models of
# tests/graph/test_empty_batch.py): metadata, element-wise maths, shape and layout operations (an empty
# tensor may take the ``view`` path where data takes ``clone`` + ``view``; the graph builder passes through
# both), convolutions, pooling, LayerNorm, concatenation.
SAFE_ON_EMPTY: FrozenSet[str] = frozenset({
    'torch.Tensor.dim', 'torch.Tensor.size', 'torch.Tensor.shape.__get__', 'torch.Tensor.ndim.__get__',
    'torch.Tensor.dtype.__get__', 'torch.Tensor.device.__get__', 'torch.Tensor.is_nested.__get__',
    'torch._assert',
    'torch.Tensor.add', 'torch.Tensor.add_', 'torch.Tensor.__add__', 'torch.Tensor.__iadd__',
    'torch.Tensor.__radd__', 'torch.add', 'torch.Tensor.mul', 'torch.Tensor.mul_', 'torch.Tensor.__mul__',
    'torch.Tensor.__rmul__', 'torch.Tensor.__imul__', 'torch.mul', 'torch.Tensor.sub', 'torch.Tensor.__sub__',
    'torch.Tensor.div', 'torch.Tensor.div_', 'torch.Tensor.__truediv__', 'torch.Tensor.exp', 'torch.clamp',
    'torch.Tensor.clamp', 'torch.sigmoid', 'torch.Tensor.sigmoid', 'torch.tanh', 'torch.Tensor.tanh',
    'torch.Tensor.relu', 'torch.relu', 'torch.Tensor.softmax', 'torch.softmax', 'torch.Tensor.mean',
    'torch.mean', 'torch.Tensor.sum',
    'torch.nn.functional.relu', 'torch.nn.functional.relu6', 'torch.nn.functional.gelu',
    'torch.nn.functional.silu', 'torch.nn.functional.hardswish', 'torch.nn.functional.hardsigmoid',
    'torch.nn.functional.hardtanh', 'torch.nn.functional.softmax', 'torch.nn.functional.sigmoid',
    'torch.nn.functional.tanh',
    'torch.Tensor.__getitem__', 'torch.Tensor.flatten', 'torch.flatten', 'torch.Tensor.permute', 'torch.permute',
    'torch.Tensor.transpose',
    'torch.transpose', 'torch.swapaxes', 'torch.Tensor.unsqueeze', 'torch.Tensor.squeeze',
    'torch.Tensor.chunk', 'torch.chunk', 'torch.Tensor.unbind', 'torch.Tensor.contiguous',
    'torch.Tensor.expand', 'torch.cat', 'torch.concat',
    # stochastic depth: a random per-sample mask multiplied in, a Mul node either way
    'torch.empty', 'torch.Tensor.bernoulli_',
    'torch.bmm', 'torch.Tensor.bmm',  # one kernel on 3-D operands, whatever their layout
    'torch.nn.functional.conv1d', 'torch.nn.functional.conv2d', 'torch.nn.functional.conv_transpose2d',
    'torch.nn.functional.max_pool2d', 'torch.nn.functional.avg_pool2d',
    'torch.nn.functional.adaptive_avg_pool2d', 'torch.nn.functional.adaptive_max_pool2d',
    'torch.nn.functional.layer_norm', 'torch.nn.functional.group_norm',
})


def _batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
                momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    # aten::batch_norm short-cuts empty inputs to clone * weight + bias (an Add node that would become a
    # 'sum'); the kernel in its inference form accepts them and records the BatchNorm node data gives.
    if input.dim() < 2:
        raise UnsafeOnEmptyBatch('batch_norm of a tensor with fewer than 2 dimensions')
    return torch.native_batch_norm(input, weight, bias, running_mean, running_var, False, momentum, eps)[0]


def _dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    # On data, training-mode dropout multiplies by a random mask (a Mul node) unless p == 0; on an empty
    # tensor it returns the input.
    if not training or p == 0:
        return input
    return input * torch.empty_like(input)


def _contiguous_on_data(t: Tensor) -> bool:
    # ``is_contiguous()`` is True for every empty tensor; the strides tell what it would be with data
    # (the empty batch dimension counts as size 1, as in a batch-1 trace).
    expected = 1
    for size, stride in zip(reversed(t.shape), reversed(t.stride())):
        if size > 1:
            if stride != expected:
                return False
            expected *= size
    return True


def _linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    # aten::linear folds 3-D contiguous inputs into one addmm, others go through matmul + add.
    if input.dim() > 2 and not _contiguous_on_data(input):
        raise UnsafeOnEmptyBatch('linear of a non-contiguous tensor')
    return torch.nn.functional.linear(input, weight, bias)


def _matmul(input: Tensor, other: Tensor) -> Tensor:
    # Two batched operands always go through bmm (only the reshapes around it, which the graph builder
    # passes through, depend on the layout). A batched operand times a matrix is folded into one mm
    # depending on contiguity, and always on an empty tensor.
    if max(input.dim(), other.dim()) >= 3 and min(input.dim(), other.dim()) <= 2 \
            and not (_contiguous_on_data(input) and _contiguous_on_data(other)):
        raise UnsafeOnEmptyBatch('matmul of a non-contiguous tensor and a matrix')
    return torch.matmul(input, other)


def _shape_on_data(t: Tensor, shape: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """The shape a ``view``/``reshape`` of ``t`` resolves to on data, with the empty batch kept empty.

    ``x.view(x.size(0), -1)`` on an empty batch asks for ``(0, -1)``, which torch refuses: with no
    elements, -1 could be anything. On data of any batch size B the -1 is the size of one sample's
    elements over the other requested sizes (B cancels out when the batch dimension appears once on each
    side), so it is computed with B = 1. Shapes that are not ambiguous are returned as they are."""
    dims = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)) else shape
    if t.numel() != 0 or not all(isinstance(d, int) for d in dims) or -1 not in dims or 0 not in dims:
        return shape  # a dtype view, or sizes torch resolves itself
    if list(t.shape).count(0) != 1 or dims.count(0) != 1 or dims.count(-1) != 1:
        raise UnsafeOnEmptyBatch(f'view/reshape of a {tuple(t.shape)} tensor to {dims}')
    per_sample = math.prod(s for s in t.shape if s != 0)
    known = math.prod(d for d in dims if d not in (0, -1))
    if per_sample % known:
        raise UnsafeOnEmptyBatch(f'view/reshape of a {tuple(t.shape)} tensor to {dims}')
    return tuple(per_sample // known if d == -1 else d for d in dims)


def _view(self: Tensor, *shape: Any) -> Tensor:
    return Tensor.view(self, *_shape_on_data(self, shape))


def _reshape(self: Tensor, *shape: Any) -> Tensor:
    return Tensor.reshape(self, *_shape_on_data(self, shape))


def _torch_reshape(input: Tensor, shape: Sequence[int]) -> Tensor:
    return torch.reshape(input, _shape_on_data(input, tuple(shape)))


def _einsum(equation: str, *operands: Any) -> Tensor:
    # A product of two operands is always one bmm between reshapes, on any sizes (only whether a reshape
    # is a view differs, and the graph builder passes through both); for more operands the contraction
    # order is chosen from the sizes, which the empty batch changes.
    tensors = operands[0] if len(operands) == 1 and isinstance(operands[0], (list, tuple)) else operands
    if len(tensors) > 2:
        raise UnsafeOnEmptyBatch('einsum of more than two operands')
    return torch.einsum(equation, *operands)


_REWRITES: Dict[str, Callable[..., Any]] = {
    'torch.einsum': _einsum,
    'torch.functional.einsum': _einsum,
    'torch.Tensor.view': _view,
    'torch.Tensor.reshape': _reshape,
    'torch.reshape': _torch_reshape,
    'torch.nn.functional.batch_norm': _batch_norm,
    'torch.nn.functional.dropout': _dropout,
    'torch.nn.functional.linear': _linear,
    'torch.matmul': _matmul,
    'torch.Tensor.matmul': _matmul,
    'torch.Tensor.__matmul__': _matmul,
}

@functools.lru_cache(maxsize=None)
def _tables() -> Tuple[FrozenSet[Any], Dict[Any, Callable[..., Any]]]:
    # The safe function objects and the rewrites by function object, from torch's table of overridable
    # functions (``Tensor.shape.__get__`` hashes and compares equal across accesses), built once.
    from torch.overrides import _get_overridable_functions
    names = _get_overridable_functions()[1]
    safe = frozenset([f for f, n in names.items() if n in SAFE_ON_EMPTY] + [torch._assert])  # not in that table
    return safe, {f: _REWRITES[n] for f, n in names.items() if n in _REWRITES}


class EmptyBatchGuard(TorchFunctionMode):
    """A :class:`~torch.overrides.TorchFunctionMode` for a forward pass on an empty batch: lets through the
    functions of :data:`SAFE_ON_EMPTY`, rewrites BatchNorm, dropout, linear, matmul, view and reshape so
    that they record what a pass on data records, and raises :class:`UnsafeOnEmptyBatch` for any other
    function."""

    def __init__(self) -> None:
        super().__init__()
        self._safe, self._rewrite = _tables()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rewrite = self._rewrite.get(func)
        if rewrite is not None:
            return rewrite(*args, **kwargs)
        if func not in self._safe:
            from torch.overrides import resolve_name
            raise UnsafeOnEmptyBatch(resolve_name(func) or repr(func))
        return func(*args, **kwargs)

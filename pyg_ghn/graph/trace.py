"""Stage 1 of graph building: trace one forward pass and read the autograd graph.

The model runs with fresh leaf tensors standing in for its parameters and copies of its buffers, on an
empty batch where the model allows it (the autograd graph without the compute), else on its own device for
small inputs and on the ``meta`` device for large ones. So tracing works under the user's
``torch.no_grad()``, with frozen parameters and on any device, and it never touches the user's model: not its
parameters, not its BatchNorm statistics, not the global random state.
"""
import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import Tensor, nn

from .empty_batch import EmptyBatchGuard

__all__ = ['GraphBuildError', 'WeightSharingError', 'AutogradGraph', 'trace_autograd']


class GraphBuildError(RuntimeError):
    """A network could not be turned into a graph; the message says why and what to do."""


class WeightSharingError(GraphBuildError):
    """A parameter is used by several operations, so one node cannot represent it."""


@dataclass
class AutogradGraph:
    """The autograd graph of one forward pass, as plain Python data.

    ``fns`` lists the autograd function nodes in execution order (producers before consumers);
    ``inputs[i]`` holds the positions of the functions feeding ``fns[i]`` (non-leaf children),
    ``leaves[i]`` the leaf tensors it consumes directly: ``('input', None)`` or ``('param', name)``.
    """
    fns: List[Any] = field(default_factory=list)
    names: List[str] = field(default_factory=list)  # type(fn).__name__
    inputs: List[List[int]] = field(default_factory=list)
    leaves: List[List[Tuple[str, Optional[str]]]] = field(default_factory=list)


def _first_tensor(out: Any) -> Tensor:
    # The original uses out[0] for tuple outputs; dicts (segmentation-style) give 'out' or their first value.
    while not isinstance(out, Tensor):
        if isinstance(out, dict) and out:
            out = out['out'] if 'out' in out else next(iter(out.values()))
        elif isinstance(out, (tuple, list)) and len(out) > 0:
            out = out[0]
        elif hasattr(out, 'logits'):
            out = out.logits
        else:
            raise GraphBuildError(f'The model returned {type(out).__name__}, which holds no tensor to trace.')
    return out


def _output_tensors(out: Any) -> List[Tensor]:
    """The main output (:func:`_first_tensor`) first, then every other tensor the model returned that
    depends on something (e.g. GoogLeNet's and Inception's auxiliary logits in training mode)."""
    main = _first_tensor(out)
    found, stack = [main], [out]
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            if o.grad_fn is not None and all(o is not t for t in found):
                found.append(o)
        elif isinstance(o, dict):
            stack.extend(reversed(list(o.values())))
        elif isinstance(o, (tuple, list)):
            stack.extend(reversed(o))
    return found


# After an empty batch fails, inputs up to this many elements trace faster on the CPU than on ``meta``,
# whose kernels for some ops (BatchNorm) are Python decompositions; beyond it real compute dominates
# (measured: benchmarks/graph_build.py).
_SMALL_INPUT = 3 * 64 * 64


# A meta model's CPU stand-ins are allocated but never touched on an empty batch; beyond this many bytes of
# parameters and buffers (a model built on meta because it does not fit) it traces on meta only.
_MAX_STAND_IN_BYTES = 2 ** 30


def _attempts(devices: Set[torch.device], input_size: Sequence[int], device,
              nbytes: int = 0) -> List[Tuple[torch.device, int]]:
    # An empty batch (batch size 0) comes first: under ``EmptyBatchGuard`` it records the autograd graph of
    # data without computing anything (ResNet-50: 2 ms instead of 20). A function the guard does not know,
    # or code that infers a dimension from the element count (``x.view(x.size(0), -1)``), stops it, and
    # batch 1 follows; batch 2 is the fallback for BatchNorm without running statistics at
    # 1x1 resolution (deep nets at 32x32), which needs two values per channel. On meta the batch size is free.
    def plan(dev: torch.device) -> List[Tuple[torch.device, int]]:
        return [(dev, 2)] if dev.type == 'meta' else [(dev, 1), (dev, 2)]
    if device is not None:
        dev = torch.device(device)
        return [(dev, 0)] + plan(dev)
    if len(devices) != 1:  # tensors on several devices: only the meta device can run them together
        return [(torch.device('meta'), 0)] + plan(torch.device('meta'))
    own = next(iter(devices))
    small = math.prod(input_size) <= _SMALL_INPUT
    if own.type == 'meta' and nbytes <= _MAX_STAND_IN_BYTES:
        # A meta model (nothing allocated) traces fastest on uninitialised CPU stand-ins on an empty batch, which
        # compute nothing whatever the input size (ResNet-50 at 224: 6 ms; 39 ms on an empty batch on meta, 62 on
        # data on meta, whose kernels are Python decompositions; DeepNets-1M networks, whose BatchNorm keeps no
        # running statistics, cannot take an empty batch on meta at all). Data comes next, as for other models.
        cpu = torch.device('cpu')
        return [(cpu, 0)] + (plan(cpu) + plan(own) if small else plan(own))
    small = small and own.type == 'cpu'
    first, second = (own, torch.device('meta')) if small else (torch.device('meta'), own)
    return [(own, 0)] + plan(first) + plan(second)


@contextlib.contextmanager
def _running_stats_mode(model: nn.Module):
    """BatchNorm layers that keep running statistics trace in eval mode: same autograd graph, no batch-size
    constraint (so batch 1 works), and the statistics are read from our buffer copies. Their ``training``
    flags are restored on exit, so the model is left as it was."""
    flipped = [m for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    for m in flipped:
        m.training = False
    try:
        yield
    finally:
        for m in flipped:
            m.training = True


@contextlib.contextmanager
def _stand_ins(slots: List[Tuple[nn.Module, str, str, Tensor]], replace: Dict[int, Tensor]):
    """Puts stand-in tensors in the model's parameter and buffer slots for one call and puts the originals
    back afterwards, whatever happens (what ``torch.func.functional_call`` does, without its per-call
    bookkeeping, which costs more than tracing a small network)."""
    try:
        for module, kind, key, t in slots:
            getattr(module, kind)[key] = replace[id(t)]
        yield
    finally:
        for module, kind, key, t in slots:
            getattr(module, kind)[key] = t


def trace_autograd(model: nn.Module, input_size: Sequence[int],
                   device: Union[str, torch.device, None] = None, all_outputs: bool = False
                   ) -> Tuple[AutogradGraph, Dict[str, Tuple[Tensor, nn.Module]]]:
    """Runs ``model`` once on a random input of shape ``(batch, *input_size)`` and returns its autograd
    graph and, per distinct parameter, its first qualified name, the tensor and the module that owns it.
    ``device=None`` traces on an empty batch on the model's own device (:mod:`.empty_batch`), then on data
    on the faster of that device and ``meta`` (no memory, no compute; faster for big inputs), then on the
    other, moving on when the forward pass fails (e.g. no meta kernel); a ``meta`` model's empty batch runs on
    uninitialised CPU stand-ins. The graph is that of the first output (the original's
    rule), or with ``all_outputs`` of every tensor the model returns, the first one's operations first."""
    slots: List[Tuple[nn.Module, str, str, Tensor]] = []
    names: Dict[int, str] = {}  # parameter id -> first qualified name (tied tensors keep one name)
    params: Dict[str, Tuple[Tensor, nn.Module]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for kind in ('_parameters', '_buffers'):
            for key, t in getattr(module, kind).items():
                if t is not None:
                    slots.append((module, kind, key, t))
                    if kind == '_parameters' and id(t) not in names:
                        names[id(t)] = f'{mod_name}.{key}' if mod_name else key
                        params[names[id(t)]] = (t, module)
    if not names:
        raise GraphBuildError(f'{type(model).__name__} has no parameters: there is nothing to predict.')

    errors = []
    devices = {t.device for _, _, _, t in slots}
    # The input takes the model's floating dtype (a half or bfloat16 model rejects a float32 input).
    dtype = next((t.dtype for _, kind, _, t in slots if kind == '_parameters' and t.is_floating_point()),
                 torch.get_default_dtype())
    nbytes = sum(t.numel() * t.element_size() for t in {id(t): t for _, _, _, t in slots}.values())
    for target, batch_size in _attempts(devices, input_size, device, nbytes):
        on_meta = target.type == 'meta'
        rng_devices = [target] if target.type == 'cuda' else []
        try:
            # Parameters: fresh leaves (detach() shares storage, so no copy), one per distinct tensor so that
            # tied parameters stay tied. Buffers: copies, so BatchNorm statistics of the model stay as they are.
            replace: Dict[int, Tensor] = {}
            for _, kind, _, t in slots:
                if id(t) not in replace:
                    if on_meta or t.is_meta:  # no data to copy (or none needed): uninitialised stand-ins
                        # (torch.empty, not empty_like: from a meta tensor empty_like runs a Python
                        # decomposition, ~0.1 ms a tensor, as long as tracing a small network's whole layer)
                        new = torch.empty(t.shape, dtype=t.dtype, device=target)
                    else:
                        new = t.detach().to(target) if kind == '_parameters' else t.detach().to(target).clone()
                    # Integer or boolean parameters cannot require grad: they get no node (left unpredicted).
                    track = kind == '_parameters' and (new.is_floating_point() or new.is_complex())
                    replace[id(t)] = new.requires_grad_(True) if track else new
            with torch.random.fork_rng(devices=rng_devices):  # the user's random state stays as it is
                x = torch.empty(batch_size, *input_size, device=target, dtype=dtype) if on_meta else \
                    torch.randn(batch_size, *input_size, device=target, dtype=dtype)
                x.requires_grad_(True)  # marks the input's entry point in the autograd graph
                guard = EmptyBatchGuard() if batch_size == 0 else contextlib.nullcontext()
                with torch.enable_grad(), _stand_ins(slots, replace), _running_stats_mode(model), guard:
                    out = model(x)
            outs = _output_tensors(out)  # outside the guard, which would refuse reading grad_fn
            outs = outs if all_outputs else outs[:1]
            break
        except GraphBuildError:
            raise
        except Exception as e:  # any failure of the user's forward pass
            errors.append((target, batch_size, e))
    else:
        real = [err for err in errors if err[0].type != 'meta']  # more telling than a missing meta kernel
        target, batch_size, e = (real or errors)[-1]
        raise GraphBuildError(
            f'The forward pass of {type(model).__name__} failed on a random input of shape '
            f'{(batch_size, *input_size)} on {target}: {type(e).__name__}: {e}. Pass the input size the model '
            f'expects, e.g. from_module(model, input_size=(3, 224, 224)), or (in_features,) for an MLP.') from e

    if outs[0].grad_fn is None:
        raise GraphBuildError(f'The output of {type(model).__name__} does not depend on its parameters.')
    leaf_names = {id(replace[pid]): name for pid, name in names.items()}
    graph = _read_autograd([o.grad_fn for o in outs], x, leaf_names)
    return graph, params


def _read_autograd(roots: List[Any], x: Tensor, leaf_names: Dict[int, str]) -> AutogradGraph:
    # Iterative depth-first post-order from the outputs: children before parents, i.e. execution order.
    g = AutogradGraph()
    pos: Dict[Any, int] = {}
    stack = [(root, False) for root in reversed(roots)]
    while stack:
        fn, expanded = stack.pop()
        if fn in pos:
            continue
        if expanded:
            children, leaves = [], []
            for child, _ in fn.next_functions:
                if child is None:
                    continue
                var = getattr(child, 'variable', None)
                if var is not None:
                    if var is x:
                        leaves.append(('input', None))
                    elif id(var) in leaf_names:
                        leaves.append(('param', leaf_names[id(var)]))
                    continue
                children.append(pos[child])
            pos[fn] = len(g.fns)
            g.fns.append(fn)
            g.names.append(type(fn).__name__)
            g.inputs.append(children)
            g.leaves.append(leaves)
            continue
        stack.append((fn, True))
        for child, _ in reversed(fn.next_functions):
            if child is not None and not hasattr(child, 'variable') and child not in pos:
                stack.append((child, False))
    return g

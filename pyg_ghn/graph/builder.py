"""``from_module``: any ``nn.Module`` becomes an :class:`ArchGraph`.

Three stages (spec §1.2-1.5): trace the autograd graph (:mod:`.trace`), turn its functions into raw
vertices (parameter chains, operations, the input), then drop the operations GHNs do not model and rewire
their edges, keeping the rules of the original builder so that released checkpoints see the graphs they were
trained on.
"""
import re
import warnings
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from ..primitives import PRIMITIVE_IDS, Role
from ..transforms.add_shortest_path_edges import shortest_path_edges
from .arch_graph import ArchGraph
from .dag import topological_levels
from .rules import ALWAYS_KEPT_OPS, is_norm, param_primitive
from .trace import AutogradGraph, GraphBuildError, WeightSharingError, trace_autograd

__all__ = ['from_module', 'GraphBuildError', 'WeightSharingError', 'UnpredictedParametersWarning']


class UnpredictedParametersWarning(UserWarning):
    """Some parameters of a model have no node in its graph, so a GHN leaves them as they are."""


class _Vertex:
    __slots__ = ('kind', 'prim', 'op', 'fn', 'params', 'name')

    def __init__(self, kind: str, prim: Optional[str] = None, op: str = '', fn=None,
                 params: Tuple[str, ...] = (), name: str = ''):
        self.kind, self.prim, self.op, self.fn = kind, prim, op, fn
        self.params, self.name = params, name


class _RawGraph:
    """A small mutable DAG with predecessor and successor sets."""

    def __init__(self) -> None:
        self.v: List[_Vertex] = []
        self.pred: List[Set[int]] = []
        self.succ: List[Set[int]] = []

    def add(self, vertex: _Vertex) -> int:
        self.v.append(vertex)
        self.pred.append(set())
        self.succ.append(set())
        return len(self.v) - 1

    def edge(self, u: int, w: int) -> None:
        if u != w:
            self.succ[u].add(w)
            self.pred[w].add(u)

    def cut(self, u: int, w: int) -> None:
        self.succ[u].discard(w)
        self.pred[w].discard(u)


def _op_prefix(fn_name: str) -> str:
    i = fn_name.find('Backward')
    return fn_name[:i] if i >= 0 else fn_name


_MATMUL_OPS = {'Bmm', 'Mm', 'Matmul'}
# Operations that only move, copy, cast or mask the attention weights between the softmax and ``attn @ v``:
# reshapes and layout changes (einsum and einops-style rearranges put several of them there, e.g. Softmax ->
# Unsqueeze -> Permute -> Permute -> View -> Bmm for ``torch.einsum``), dtype casts (softmax in float32),
# and dropout (a product with a constant mask, or the fused kernel).
_LAYOUT_OPS = {'View', 'UnsafeView', 'Reshape', 'ReshapeAlias', '_ReshapeAlias', 'Permute', 'Transpose', 'T',
               'Unsqueeze', 'Squeeze', 'Expand', 'Clone', 'AsStrided', 'Alias', 'ToCopy', 'NativeDropout'}


def _passes_weights_on(ag: AutogradGraph, j: int) -> bool:
    op = _op_prefix(ag.names[j])
    # A product with nothing traced on the other side: a dropout mask or a constant.
    return op in _LAYOUT_OPS or (op == 'Mul' and len(ag.inputs[j]) == 1 and not ag.leaves[j])


def _is_attention_core(ag: AutogradGraph, i: int) -> bool:
    """``attn @ v`` of a self-attention, or a fused scaled-dot-product attention: the op GHN graphs mark as
    ``msa``. The original finds it by a positional heuristic that depends on the einops version (spec §1.8);
    we find it by structure: a matrix product one of whose operands is a softmax's output, reached through
    any number of operations that only reshape, copy, cast or mask it (:data:`_LAYOUT_OPS`), however
    the attention is written (``@`` with permutes, ``einsum``, einops, ``nn.MultiheadAttention``)."""
    name = ag.names[i]
    if name.startswith('ScaledDotProduct'):
        return True
    if _op_prefix(name) not in _MATMUL_OPS:
        return False
    stack, seen = list(ag.inputs[i]), set()
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        if 'Softmax' in ag.names[j]:  # Softmax, _Softmax, SafeSoftmax
            return True
        if _passes_weights_on(ag, j):
            stack.extend(ag.inputs[j])
    return False


def _is_gated_mul(ag: AutogradGraph, i: int) -> bool:
    """Channel squeeze-and-excitation: a product whose gate is a hard activation reshaped once before the
    product (``x * gate.view(b, c, 1, 1)``), where the original looks two positions back for ``Hard*``. A
    gate used without a reshape (torchvision's SqueezeExcitation) is not a ``cse`` node there either."""
    for j in ag.inputs[i]:
        if not ag.names[j].startswith('Hard') and len(ag.inputs[j]) == 1 \
                and ag.names[ag.inputs[j][0]].startswith('Hard'):
            return True
    return False


def _raw_graph(ag: AutogradGraph, params: Dict[str, Tuple[torch.Tensor, nn.Module]],
               extended: bool) -> Tuple[_RawGraph, Set[str]]:
    g = _RawGraph()
    inp = g.add(_Vertex('input', prim='input', name='input'))
    span: List[Tuple[int, int]] = []  # (first, last) vertex of each autograd function
    used_by: Dict[str, int] = {}  # parameter name -> number of operations using it as a node
    linear_weights: List[int] = []
    covered: Set[str] = set()
    for i, leaves in enumerate(ag.leaves):
        chain = []
        feeds_input = False
        for kind, name in leaves:
            if kind == 'input':
                feeds_input = True
                continue
            module = params[name][1]
            prim = param_primitive(module, name, extended)
            if prim is None:
                continue
            if is_norm(module, extended):
                if name.rsplit('.', 1)[-1] != 'weight':
                    continue  # a norm bias is predicted with its weight, never as a node of its own
                prefix = name[:-len('weight')]
                bound = (name,) + ((prefix + 'bias',) if getattr(module, 'bias', None) is not None else ())
            else:
                bound = (name,)
            used_by[name] = used_by.get(name, 0) + 1
            covered.update(bound)
            vid = g.add(_Vertex('param', prim=prim, params=bound, name=name))
            if isinstance(module, (nn.Linear, nn.MultiheadAttention)) and prim == 'conv':
                linear_weights.append(vid)
            chain.append(vid)
        if not chain:
            chain = [g.add(_Vertex('op', op=_op_prefix(ag.names[i]), fn=i, name=ag.names[i]))]
        for a, b in zip(chain[:-1], chain[1:]):
            g.edge(a, b)
        span.append((chain[0], chain[-1]))
        for j in ag.inputs[i]:
            g.edge(span[j][1], chain[0])
        if feeds_input:
            g.edge(inp, chain[0])

    shared = sorted(n for n, c in used_by.items() if c > 1)
    if shared:
        raise WeightSharingError(
            f'{len(shared)} parameter(s) are used by several operations (weight sharing), e.g. {shared[:5]}. '
            f'A GHN predicts one tensor per node, so a shared parameter has no single node. Untie the weights '
            f'(e.g. copy.deepcopy the reused module) before building the graph.')

    # Linear weights hang under a transpose, so their input arrives at the bias: rewire to
    # input -> weight -> bias -> consumer, as the original does.
    for w in linear_weights:
        for j in list(g.succ[w]):
            for p in list(g.pred[j]):
                g.cut(p, j)
                g.edge(p, w)
            g.edge(w, j)

    # A positional encoding becomes a pure source feeding a new sum node, which takes over its edges.
    for vid in range(len(g.v)):
        if g.v[vid].prim == 'pos_enc':
            s = g.add(_Vertex('op', op='Add', name='AddBackward0'))
            for p in list(g.pred[vid]):
                g.cut(p, vid)
                g.edge(p, s)
            for c in list(g.succ[vid]):
                g.cut(vid, c)
                g.edge(s, c)
            g.edge(vid, s)
    return g, covered


def _topo_order(g: _RawGraph, alive: Sequence[int]) -> List[int]:
    alive_set = set(alive)
    indeg = {v: sum(1 for p in g.pred[v] if p in alive_set) for v in alive}
    stack = sorted((v for v in alive if indeg[v] == 0), reverse=True)
    order = []
    while stack:
        v = stack.pop()
        order.append(v)
        for c in sorted(g.succ[v], reverse=True):
            if c in alive_set:
                indeg[c] -= 1
                if indeg[c] == 0:
                    stack.append(c)
    if len(order) != len(alive):
        raise GraphBuildError('The traced graph has a cycle; please report this model.')
    return order


def _remove(g: _RawGraph, alive: List[int], drop: Set[int]) -> List[int]:
    """Removes ``drop`` from the graph on ``alive`` vertices, linking each kept predecessor of a removed
    vertex to its kept successors (any removal order gives the same graph)."""
    if not drop:
        return alive
    kept_pred: Dict[int, Set[int]] = {}
    for v in _topo_order(g, alive):
        reach = set()
        for p in g.pred[v]:
            if p in kept_pred:
                reach |= kept_pred[p] if p in drop else {p}
        kept_pred[v] = reach
    for v in alive:
        for c in list(g.succ[v]):
            g.cut(v, c)
    new_alive = [v for v in alive if v not in drop]
    for v in new_alive:
        for p in kept_pred[v]:
            g.edge(p, v)
    return new_alive


def _filter(g: _RawGraph, ag: AutogradGraph) -> List[int]:
    """The original's pattern passes (spec §1.3): operations GHNs do not model go first, then single-input
    sums, then single-input concatenations."""
    alive = list(range(len(g.v)))
    drop = set()
    for vid, v in enumerate(g.v):
        if v.kind != 'op':
            continue
        if v.op in ALWAYS_KEPT_OPS:
            v.prim = ALWAYS_KEPT_OPS[v.op]
        elif v.op == 'Mean' and v.fn is not None and getattr(ag.fns[v.fn], '_saved_keepdim', False) is True:
            v.prim = 'glob_avg'
        elif v.op == 'Mul' and v.fn is not None and _is_gated_mul(ag, v.fn):
            v.prim = 'cse'
        elif v.fn is not None and _is_attention_core(ag, v.fn):
            v.prim = 'msa'
        elif v.op in ('Add', 'Cat'):
            v.prim = 'sum' if v.op == 'Add' else 'concat'
        else:
            drop.add(vid)
    alive = _remove(g, alive, drop)
    for prim in ('sum', 'concat'):
        alive = _remove(g, alive, {v for v in alive
                                   if g.v[v].kind == 'op' and g.v[v].prim == prim and len(g.pred[v]) <= 1})
    return alive


_CELL = re.compile(r'(?:^|\.)cells\.(\d+)\.')


def _cell_indices(names: List[str], n_cells: int) -> List[int]:
    # spec §1.5: cells.<k>. gives k, the classifier the last cell, stems the first; other nodes carry over.
    cells, prev = [], 0
    for name in names:
        m = _CELL.search(name)
        if n_cells <= 1 or name.startswith(('stem', 'pos_enc')):
            prev = 0
        elif m:
            prev = int(m.group(1))
        elif name.startswith(('classifier', 'auxiliary')):
            prev = n_cells - 1
        cells.append(prev)
    return cells


def _pool_shape(ag: AutogradGraph, fn: Optional[int]) -> Tuple[int, int, int, int]:
    k = getattr(ag.fns[fn], '_saved_kernel_size', None) if fn is not None else None
    if not k:
        return (1, 1, 3, 3)
    k = tuple(k) if isinstance(k, (tuple, list)) else (k, k)
    return (1, 1, int(k[0]), int(k[-1]))


def from_module(model: nn.Module, input_size: Optional[Union[int, Sequence[int]]] = None,
                max_sp_dist: Optional[int] = 50, *, extended: bool = False,
                device: Union[str, torch.device, None] = None, warn: bool = True) -> ArchGraph:
    r"""Builds the computational graph of ``model`` as GHNs read it.

    One forward pass is traced through autograd; parameters of convolutions, linear layers, BatchNorm2d,
    LayerNorm and positional encodings become nodes, so do pooling, global averaging, sums, concatenations,
    squeeze-and-excitation products and self-attention; everything else (activations, reshapes, ...) is
    removed and its edges rewired (spec §1). The user's model is not modified.

    Args:
        model: the network.
        input_size: the shape of one input without the batch dimension: ``(3, 32, 32)``, ``(in_features,)``
            for an MLP, or an int ``s`` for ``(3, s, s)``. Defaults to ``model.expected_input_sz`` when the model
            has it (DeepNets-1M networks), else ``(3, 32, 32)``.
        max_sp_dist: the longest shortest path kept as a virtual edge (GHN-2: 50); ``None`` or ``1`` for none.
        extended: also map what the original leaves unpredicted onto the closest primitive: other batch
            norms, GroupNorm and InstanceNorm as ``bn``; Conv1d and ``nn.MultiheadAttention``'s packed
            projections as ``conv``/``bias``; free tensors of a model's own modules as ``pos_enc`` (additive:
            class tokens, position embeddings, position-bias tables) or ``cse`` (multiplicative: layer and
            logit scales), 1-D ones as ``bn`` (scales) or ``bias``; and trace every tensor the model returns,
            not only the first (GoogLeNet's and Inception's auxiliary heads in training mode), the main
            classifier staying the last nodes. Graphs of models without such tensors or outputs are the same
            either way.
        device: where to trace; ``None`` traces on an empty batch on the model's device (no compute), falling
            back to data there or on ``meta``, whichever is faster for the input size. A model on ``meta``
            (up to 1 GiB of parameters and buffers) traces on uninitialised CPU stand-ins first: an empty
            batch allocates them but computes nothing.
        warn: warn about parameters left without a node (they are listed in ``graph.unpredicted``).

    Raises:
        GraphBuildError: the model has no parameters, its forward pass fails on the given input size, ...
        WeightSharingError: a parameter is used by several operations.
    """
    if input_size is None:
        input_size = getattr(model, 'expected_input_sz', None) or getattr(model, 'expected_image_sz', None) \
            or (3, 32, 32)
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    input_size = tuple(int(s) for s in input_size)

    ag, params = trace_autograd(model, input_size, device=device, all_outputs=extended)
    g, covered = _raw_graph(ag, params, extended)
    alive = _filter(g, ag)

    if not g.succ[0]:
        raise GraphBuildError(f'The output of {type(model).__name__} does not depend on its input.')
    # Parameter-only branches (e.g. Swin-V2's position-bias MLP on a constant table) have no path from the
    # input; root them at it so that the graph has a single source, as GHNs expect.
    for v in alive:
        if not g.pred[v] and g.v[v].kind == 'param' and g.v[v].prim != 'pos_enc':
            g.edge(0, v)

    # Final node order: by forward level, ties in execution order (what networkx>=2.6 sorting gives).
    index = {v: i for i, v in enumerate(alive)}
    edges = [(index[u], index[w]) for u in alive for w in g.succ[u]]
    edge_index = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
    level_fw, level_bw = topological_levels(edge_index, len(alive))
    fw = level_fw.tolist()
    order = torch.tensor(sorted(range(len(alive)), key=lambda i: (fw[i], alive[i])))
    perm = torch.empty(len(alive), dtype=torch.long)
    perm[order] = torch.arange(len(alive))
    edge_index = perm[edge_index]
    edge_index = edge_index[:, torch.argsort(edge_index[0] * len(alive) + edge_index[1])]
    verts = [g.v[alive[i]] for i in order]
    n = len(verts)

    x = torch.tensor([PRIMITIVE_IDS[v.prim] for v in verts], dtype=torch.long)
    shapes, ndims, roles = [], [], []
    for v in verts:
        if v.kind == 'param':
            sz = tuple(params[v.params[0]][0].shape)
            role = Role.NORM if v.prim in ('bn', 'ln') else Role.BIAS if v.prim == 'bias' else Role.WEIGHT
        elif v.prim in ('max_pool', 'avg_pool'):
            sz, role = _pool_shape(ag, v.fn), Role.NONE
        else:
            sz, role = (), Role.NONE
        if len(sz) > 4:
            raise GraphBuildError(f'{v.name} has a {len(sz)}-D shape {sz}; GHNs predict tensors of up to 4 '
                                  f'dimensions.')
        shapes.append(sz + (1,) * (4 - len(sz)))
        ndims.append(len(sz))
        roles.append(int(role))
    shape = torch.tensor(shapes, dtype=torch.long).view(n, 4)
    ndim = torch.tensor(ndims, dtype=torch.long)
    role = torch.tensor(roles, dtype=torch.long)
    sinks = (level_bw[order] == 0).nonzero().view(-1).tolist()  # no path onwards: no out-edges
    if len(sinks) > 1 and not extended:
        # The original asserts a single output; several (e.g. two heads combined by an operation that is
        # not a node) leave the classifier roles on whichever sink comes last. (The extended mode traces
        # auxiliary outputs on purpose, the main one last.)
        warnings.warn(f'{type(model).__name__}: its graph has {len(sinks)} sinks '
                      f'({[verts[i].name for i in sinks][:4]}); GHNs expect one output, and the classifier '
                      f'roles go to the last node by level, {verts[-1].name}', stacklevel=2)
    # Classification layers are found by position, as in the original (spec §7.5).
    if verts[-1].kind == 'param' and ndim[-1] == 1:
        role[-1] = Role.CLS_BIAS
    if n > 1 and verts[-2].kind == 'param' and ndim[-2] > 1:
        role[-2] = Role.CLS_WEIGHT

    node_names = [v.name if v.kind == 'param' else (v.prim if v.prim in ('input',) else v.name) for v in verts]
    all_params = list(params)
    unpredicted = [name for name in all_params if name not in covered]
    if unpredicted and warn:
        warnings.warn(f'{len(unpredicted)} of {len(all_params)} parameter tensors of {type(model).__name__} have '
                      f'no node in its graph and will not be predicted: {unpredicted[:8]}'
                      f'{" ..." if len(unpredicted) > 8 else ""} (see graph.unpredicted; from_module(..., '
                      f'extended=True) covers more module types).', UnpredictedParametersWarning, stacklevel=2)

    data = ArchGraph(
        x=x, edge_index=edge_index, num_nodes=n, shape=shape, ndim=ndim, role=role,
        cell=torch.tensor(_cell_indices(node_names, int(getattr(model, '_n_cells', 1) or 1)), dtype=torch.long),
        param_names=[list(v.params) for v in verts], node_names=node_names, unpredicted=unpredicted,
    )
    data.level_fw, data.level_bw = level_fw[order], level_bw[order]
    data.edge_index_sp, data.edge_dist_sp = shortest_path_edges(edge_index, n, max_sp_dist or 1)
    data.max_sp_dist = int(max_sp_dist or 1)  # the cut-off, so that a GHN with a longer one can tell
    return data

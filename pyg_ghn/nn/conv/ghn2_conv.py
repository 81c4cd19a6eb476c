from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import GRUCell, Linear, ReLU, Sequential
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.inits import reset

__all__ = ['GHN2Conv']


class _Sweep(NamedTuple):
    """Per-level buckets of one sweep direction, built once per forward call and shared by all rounds.

    Nodes are visited in ``perm`` order (sorted by level); ``sizes[l]`` nodes belong to level ``l``.
    For the edges into level ``l``: ``src[l]`` indexes rows of the flattened message buffer
    (``position * num_slots + slot``), ``dst[l]`` is the receiving node's offset inside the level and
    ``coef[l]`` the factor the message is scaled by (``None`` when every factor is 1).
    """
    perm: Tensor
    inv: Tensor
    sizes: List[int]
    src: Tuple[Tensor, ...]
    dst: Tuple[Tensor, ...]
    coef: Optional[Tuple[Tensor, ...]]


class _MessageBuffer:
    """The MLP outputs of the nodes a sweep has updated so far, in visiting order, kept outside autograd,
    and during backward the gradient w.r.t. them.

    Level ``l`` reads rows written by levels ``< l``. Through autograd (a buffer written in place, or
    per-level copies) every level would cost :math:`O(|\mathcal{V}|)` in backward; with `_Read` and
    `_Write` a level costs :math:`O(\text{its edges} + \text{its nodes})` in both directions.
    """
    def __init__(self, num_nodes: int, num_slots: int, channels: int, like: Tensor) -> None:
        self.data = like.new_zeros(num_nodes, num_slots * channels)
        self.flat = self.data.view(num_nodes * num_slots, channels)  # one row per (node, slot)
        self.grad: Optional[Tensor] = None


class _Write(torch.autograd.Function):
    """Stores one level's MLP outputs at rows ``start:start + n`` of the buffer.

    Returns a new (empty) token that the following `_Read`/`_Write` take as input, so that in backward
    this node runs only after every later `_Read` has added its gradient to the buffer; it then hands the
    accumulated gradient of its rows to ``value`` and clears them (so that ``retain_graph`` works).
    """
    @staticmethod
    def forward(ctx, token: Tensor, value: Tensor, buf: _MessageBuffer, start: int) -> Tensor:
        buf.data[start:start + value.size(0)] = value
        ctx.buf, ctx.rows = buf, (start, value.size(0))
        return token.new_empty(0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_token: Tensor):
        buf, (start, n) = ctx.buf, ctx.rows
        if buf.grad is None:  # no later level read anything
            return grad_token, buf.data.new_zeros(n, buf.data.size(1)), None, None
        rows = buf.grad[start:start + n]
        grad = rows.clone()
        rows.zero_()
        return grad_token, grad, None, None


class _Read(torch.autograd.Function):
    """``m[dst[e]] += coef[e] * buffer_flat[src[e]]`` for one level's edges, where ``buffer_flat`` views
    the buffer as one row per (node, slot). Backward scatters the messages' gradient into the buffer's
    gradient, whose rows the matching `_Write` collects."""
    @staticmethod
    def forward(ctx, token: Tensor, buf: _MessageBuffer, src: Tensor, dst: Tensor,
                coef: Optional[Tensor], n: int) -> Tensor:
        msg = buf.flat.index_select(0, src)
        if coef is not None:
            msg = msg * coef.unsqueeze(-1)
        ctx.buf, ctx.save = buf, (src, dst, coef)
        return msg.new_zeros(n, msg.size(1)).index_add_(0, dst, msg)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_m: Tensor):
        buf, (src, dst, coef) = ctx.buf, ctx.save
        if buf.grad is None:
            buf.grad = torch.zeros_like(buf.data)
        grad = grad_m.index_select(0, dst)
        if coef is not None:
            grad = grad * coef.unsqueeze(-1)
        buf.grad.view_as(buf.flat).index_add_(0, src, grad)
        return grad_m.new_empty(0), None, None, None, None, None


class GHN2Conv(MessagePassing):
    r"""The gated message passing of Graph HyperNetworks, which updates nodes asynchronously in the
    directed order of a DAG, from the `"Graph HyperNetworks for Neural Architecture Search"
    <https://arxiv.org/abs/1810.05749>`_ paper (GHN-1), with the shortest-path virtual edges of the
    `"Parameter Prediction for Unseen Deep Architectures" <https://arxiv.org/abs/2110.13100>`_ paper
    (GHN-2, Eq. 3-4).

    Each of the :math:`T` rounds is a forward sweep over the nodes in topological order followed by a
    backward sweep in reverse order. When node :math:`v` is visited it receives

    .. math::
        \mathbf{m}_v = \sum_{u \in \mathcal{N}^{\pi}_v} \mathrm{MLP}(\mathbf{h}_u)
        + \sum_{u \in \mathcal{N}^{(sp)}_v} \frac{1}{s_{uv}} \mathrm{MLP}_{sp}(\mathbf{h}_u)
        + [\text{sp_on_real_edges}] \sum_{u \in \mathcal{N}^{\pi}_v} \mathrm{MLP}_{sp}(\mathbf{h}_u)

        \mathbf{h}_v \leftarrow \mathrm{GRU}(\mathbf{m}_v, \mathbf{h}_v)

    where :math:`\mathcal{N}^{\pi}_v` are the real in-neighbours of :math:`v` in the forward sweep and
    its out-neighbours in the backward sweep, :math:`\mathcal{N}^{(sp)}_v` the same for the virtual
    edges (path length :math:`1 < s_{uv} \le s_{max}`), and :math:`\mathbf{h}_u` is the state :math:`u`
    already has in the current sweep. Every node is updated, also with :math:`\mathbf{m}_v = 0`.
    The last sum reproduces the original GHN-2 code, whose virtual-edge sum also runs over the real
    edges (:math:`s = 1`); the trained GHN-2 checkpoints need it.

    Because every message source of a node has a strictly smaller level (longest-path depth in the
    forward sweep, height in the backward sweep), updating all nodes of one level at once, across all
    graphs of a batch, is exactly the sequential algorithm. The layer does so: one vectorised step per
    level, and the MLPs are evaluated once per node and sweep.

    Args:
        channels (int): Size of the node states :math:`\mathbf{h}_v` (input and output).
        virtual_edges (bool, optional): If set to :obj:`False`, only real edges and :math:`\mathrm{MLP}`
            are used (GHN-1) and :obj:`mlp_sp` is not created. (default: :obj:`True`)
        num_rounds (int, optional): The number of forward(-backward) rounds :math:`T`.
            (default: :obj:`1`)
        backward (bool, optional): If set to :obj:`False`, a round is only the forward sweep.
            (default: :obj:`True`)
        sp_on_real_edges (bool, optional): If set to :obj:`True`, every real edge also sends
            :math:`\mathrm{MLP}_{sp}(\mathbf{h}_u)`, as in the original GHN-2 code. (default: :obj:`True`)
        mlp_hidden (int, optional): Hidden size of :math:`\mathrm{MLP}`. (default: :obj:`channels // 2`
            with virtual edges, else :obj:`channels`, which keeps GHN-1 and GHN-2 equally large)

    Shapes:
        - **input:**
          node states :math:`(|\mathcal{V}|, C)`,
          edge indices :math:`(2, |\mathcal{E}|)`,
          levels :obj:`level_fw`, :obj:`level_bw` :math:`(|\mathcal{V}|)` (per graph, not offset by
          batching),
          virtual edge indices :math:`(2, |\mathcal{E}_{sp}|)` and path lengths
          :math:`(|\mathcal{E}_{sp}|)` *(optional)*
        - **output:** node states :math:`(|\mathcal{V}|, C)`
    """
    def __init__(self, channels: int, virtual_edges: bool = True, num_rounds: int = 1,
                 backward: bool = True, sp_on_real_edges: bool = True,
                 mlp_hidden: Optional[int] = None) -> None:
        super().__init__(aggr='add')
        if num_rounds < 1:
            raise ValueError(f"'num_rounds' must be at least 1 (got {num_rounds})")
        self.channels = channels
        self.virtual_edges = virtual_edges
        self.num_rounds = num_rounds
        self.backward = backward
        self.sp_on_real_edges = sp_on_real_edges
        self.mlp_hidden = mlp_hidden or (channels // 2 if virtual_edges else channels)
        hidden = self.mlp_hidden
        self.mlp = Sequential(Linear(channels, hidden), ReLU(), Linear(hidden, channels), ReLU())
        self.mlp_sp = (Sequential(Linear(channels, channels // 2), ReLU(),
                                  Linear(channels // 2, channels), ReLU()) if virtual_edges else None)
        self.gru = GRUCell(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        reset(self.mlp)
        if self.mlp_sp is not None:
            reset(self.mlp_sp)
        self.gru.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, level_fw: Tensor, level_bw: Tensor,
                edge_index_sp: Optional[Tensor] = None,
                edge_dist_sp: Optional[Tensor] = None) -> Tensor:
        num_nodes = x.size(0)
        if x.dim() != 2 or x.size(1) != self.channels:
            raise ValueError(f"'x' must have shape [num_nodes, {self.channels}] "
                             f"(got {list(x.shape)})")
        if not self.virtual_edges:
            edge_index_sp = edge_dist_sp = None  # GHN-1 ignores virtual edges
        level_fw, level_bw = level_fw.to(edge_index.device), level_bw.to(edge_index.device)
        self._check(num_nodes, edge_index, level_fw, level_bw, edge_index_sp, edge_dist_sp)
        if num_nodes == 0:
            return x

        # One list of messages: (sender, receiver, buffer slot, factor). Slot 0 holds MLP(h), slot 1
        # MLP_sp(h) of the sender.
        src, dst = edge_index[0], edge_index[1]
        if self.virtual_edges:
            senders, receivers, slots, coefs = [src], [dst], [torch.zeros_like(src)], [
                x.new_ones(src.numel())]
            if self.sp_on_real_edges:
                senders.append(src), receivers.append(dst)
                slots.append(torch.ones_like(src)), coefs.append(x.new_ones(src.numel()))
            if edge_index_sp is not None:
                senders.append(edge_index_sp[0]), receivers.append(edge_index_sp[1])
                slots.append(torch.ones_like(edge_index_sp[0]))
                coefs.append(1.0 / edge_dist_sp.to(x.dtype))
            send, recv, slot, coef = (torch.cat(senders), torch.cat(receivers), torch.cat(slots),
                                      torch.cat(coefs))
            num_slots = 2
        else:
            send, recv, slot, coef, num_slots = src, dst, None, None, 1

        sweep_fw = self._buckets(level_fw, send, recv, slot, coef, num_slots)
        sweep_bw = (self._buckets(level_bw, recv, send, slot, coef, num_slots)
                    if self.backward else None)

        # Both MLPs as one: first layers stacked, second layers block-diagonal, so that a level costs
        # four ops instead of eight. Output columns: [MLP(h) | MLP_sp(h)], matching the slots above.
        if self.mlp_sp is not None:
            w1 = torch.cat([self.mlp[0].weight, self.mlp_sp[0].weight], dim=0)
            b1 = torch.cat([self.mlp[0].bias, self.mlp_sp[0].bias], dim=0)
            w2 = torch.block_diag(self.mlp[2].weight, self.mlp_sp[2].weight)
            b2 = torch.cat([self.mlp[2].bias, self.mlp_sp[2].bias], dim=0)
        else:
            w1, b1, w2, b2 = self.mlp[0].weight, self.mlp[0].bias, self.mlp[2].weight, self.mlp[2].bias

        h = x
        for _ in range(self.num_rounds):
            h = self._sweep(h, sweep_fw, num_slots, (w1, b1, w2, b2))
            if sweep_bw is not None:
                h = self._sweep(h, sweep_bw, num_slots, (w1, b1, w2, b2))
        return h

    def _sweep(self, h: Tensor, sweep: _Sweep, num_slots: int,
               mlp: Tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        c = self.channels
        w1, b1, w2, b2 = mlp
        # States before the sweep, in visiting order, one chunk per level (one SplitBackward in total).
        h_prev = h.index_select(0, sweep.perm).split(sweep.sizes)
        buf = _MessageBuffer(h.size(0), num_slots, c, h)
        token = h.new_empty(0)  # orders the buffer's writes and reads for autograd (see `_Write`)
        outs: List[Tensor] = []
        start, last = 0, len(sweep.sizes) - 1
        for lvl, h_l in enumerate(h_prev):
            n = h_l.size(0)
            if n == 0:  # only if levels skip values
                continue
            if sweep.src[lvl].numel() > 0:
                m = _Read.apply(token, buf, sweep.src[lvl], sweep.dst[lvl],
                                None if sweep.coef is None else sweep.coef[lvl], n)
            else:
                m = h_l.new_zeros(n, c)
            h_l = self.gru(m, h_l)
            outs.append(h_l)
            if lvl < last:  # nobody reads the last level's messages
                out = F.relu(F.linear(F.relu(F.linear(h_l, w1, b1)), w2, b2))
                token = _Write.apply(token, out, buf, start)
            start += n
        return torch.cat(outs, dim=0).index_select(0, sweep.inv)

    @staticmethod
    def _buckets(level: Tensor, send: Tensor, recv: Tensor, slot: Optional[Tensor],
                 coef: Optional[Tensor], num_slots: int) -> _Sweep:
        level = level.to(send.device)
        num_levels = int(level.max()) + 1
        perm = torch.argsort(level, stable=True)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=perm.device)
        counts = torch.bincount(level, minlength=num_levels)
        ptr = torch.cumsum(counts, 0) - counts

        # Edges sorted by the level of the node that receives them.
        elevel = level[recv]
        order = torch.argsort(elevel, stable=True)
        elevel, send, recv = elevel[order], send[order], recv[order]
        ecounts = torch.bincount(elevel, minlength=num_levels)
        src = inv[send] * num_slots + (slot[order] if slot is not None else 0)
        dst = inv[recv] - ptr[elevel]
        sizes, esizes = torch.stack([counts, ecounts]).tolist()  # the one host sync per sweep
        return _Sweep(perm, inv, sizes, src.split(esizes), dst.split(esizes),
                      coef[order].split(esizes) if coef is not None else None)

    def _check(self, num_nodes: int, edge_index: Tensor, level_fw: Tensor, level_bw: Tensor,
               edge_index_sp: Optional[Tensor], edge_dist_sp: Optional[Tensor]) -> None:
        for name, level in (('level_fw', level_fw), ('level_bw', level_bw)):
            if level.dim() != 1 or level.numel() != num_nodes:
                raise ValueError(f"'{name}' must have one entry per node ({num_nodes}), got shape "
                                 f"{list(level.shape)}; were levels computed for another graph?")
            if level.dtype.is_floating_point or level.dtype == torch.bool:
                raise ValueError(f"'{name}' must be an integer tensor (got {level.dtype})")
            if num_nodes > 0 and int(level.min()) < 0:
                raise ValueError(f"'{name}' must be non-negative")
        edges = [('edge_index', edge_index)]
        if edge_index_sp is not None:
            if edge_dist_sp is None or edge_dist_sp.numel() != edge_index_sp.size(1):
                raise ValueError("'edge_dist_sp' must hold one path length per virtual edge in "
                                 "'edge_index_sp'")
            if edge_dist_sp.numel() > 0 and bool((edge_dist_sp <= 0).any()):
                raise ValueError("'edge_dist_sp' must be positive")
            edges.append(('edge_index_sp', edge_index_sp))
        for name, ei in edges:
            if ei.dim() != 2 or ei.size(0) != 2:
                raise ValueError(f"'{name}' must have shape [2, num_edges] (got {list(ei.shape)})")
            if ei.numel() == 0:
                continue
            if int(ei.min()) < 0 or int(ei.max()) >= num_nodes:
                raise ValueError(f"'{name}' refers to nodes outside [0, {num_nodes})")
            # Sweeps are exact only if every message source is visited before its receiver.
            bad = ((level_fw[ei[0]] >= level_fw[ei[1]]) | (level_bw[ei[0]] <= level_bw[ei[1]]))
            if bool(bad.any()):
                e = int(bad.nonzero()[0, 0])
                u, v = int(ei[0, e]), int(ei[1, e])
                raise ValueError(
                    f"Edge {u} -> {v} in '{name}' goes against the level order (level_fw "
                    f"{int(level_fw[u])} -> {int(level_fw[v])}, level_bw {int(level_bw[u])} -> "
                    f"{int(level_bw[v])}): the graph is not a DAG or 'level_fw'/'level_bw' are stale "
                    f"(recompute them with pyg_ghn.transforms.AddTopologicalLevels)")

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, virtual_edges={self.virtual_edges}, '
                f'num_rounds={self.num_rounds}, backward={self.backward}, '
                f'sp_on_real_edges={self.sp_on_real_edges}, mlp_hidden={self.mlp_hidden})')

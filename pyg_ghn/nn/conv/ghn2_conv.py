import warnings
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
    """One sweep direction, prepared once per forward call and shared by all rounds.

    Nodes are visited in ``perm`` order (by level); ``sizes[l]`` nodes belong to level ``l`` and ``inv``
    maps a node to its position. ``adj_in[l]`` is the sparse CSR matrix ``[sizes[l], num_slots * N]``
    that sums the messages of level ``l`` from the message buffer's rows (``position * num_slots +
    slot``), with the factors ``1`` or ``1/s`` as values; ``adj_out[l]``, ``[num_slots * sizes[l], N]``,
    maps the messages' gradients (rows by receiver position) back to the rows level ``l`` wrote.
    ``None`` where a level has no edges (or no gradient is needed).
    """
    perm: Tensor
    inv: Tensor
    sizes: List[int]
    adj_in: List[Optional[Tensor]]
    adj_out: List[Optional[Tensor]]


def _level_buckets(level: Tensor, send: Tensor, recv: Tensor, slot: Tensor, coef: Tensor,
                   num_slots: int, need_grad: bool) -> _Sweep:
    """Sorts nodes by level and builds the per-level message matrices of one sweep direction, for
    messages ``send -> recv`` with buffer slot ``slot`` and factor ``coef``."""
    num_nodes, device = level.numel(), level.device
    width = num_slots * num_nodes
    # 32-bit indices sort twice as fast and spare the sparse kernels a conversion on every call.
    itype = torch.int32 if num_nodes * width < 2**31 else torch.int64
    perm = torch.argsort(level, stable=True)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(num_nodes, device=device)
    counts = torch.bincount(level)
    num_levels = counts.numel()
    ptr = F.pad(torch.cumsum(counts, 0), (1, 0))

    pos = inv.to(itype)
    row = pos.index_select(0, recv)  # receiver position
    col = pos.index_select(0, send) * num_slots + slot.to(itype)  # buffer row of the sender's message

    def csr(r: Tensor, c: Tensor, num_rows: int, num_cols: int) -> Tuple[Tensor, Tensor, Tensor]:
        order = torch.argsort(r * num_cols + c)  # row-major, sorted columns
        crow = F.pad(torch.cumsum(torch.bincount(r, minlength=num_rows), 0), (1, 0))
        return crow.to(itype), c.index_select(0, order), coef.index_select(0, order)

    # One host sync: level sizes and where each level's entries start in both matrices.
    crow_in, col_in, val_in = csr(row, col, num_nodes, width)
    bounds = [counts, crow_in.index_select(0, ptr)]
    if need_grad:
        crow_out, col_out, val_out = csr(col, row, width, num_nodes)
        bounds.append(crow_out.index_select(0, ptr * num_slots))
    bounds = torch.cat(bounds).tolist()
    sizes, e_in = bounds[:num_levels], bounds[num_levels:2 * num_levels + 1]

    with warnings.catch_warnings():
        # The sparse layout's beta notice and, in some versions, a note on skipped invariant checks.
        warnings.filterwarnings('ignore', message='.*[Ss]parse CSR tensor support is in beta')
        warnings.filterwarnings('ignore', message='.*[Ss]parse invariant checks are implicitly')
        adj_in = _split_csr(crow_in, col_in, val_in, sizes, e_in, 1, width)
        if need_grad:
            e_out = bounds[2 * num_levels + 1:]
            adj_out = _split_csr(crow_out, col_out, val_out, sizes, e_out, num_slots, num_nodes)
        else:
            adj_out = [None] * num_levels
    return _Sweep(perm, inv, sizes, adj_in, adj_out)


def _split_csr(crow: Tensor, col: Tensor, val: Tensor, sizes: List[int], bounds: List[int],
               rows_per_node: int, num_cols: int) -> List[Optional[Tensor]]:
    """Cuts a CSR matrix whose rows are grouped by level (``rows_per_node * sizes[l]`` rows each) into one
    CSR matrix per level (``None`` for a level without entries)."""
    num_rows = [rows_per_node * n for n in sizes]
    nnz = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    # Each level's row pointers, rebased to start at 0, in one gather: level l takes the crow entries
    # first[l] .. first[l] + num_rows[l] (inclusive).
    lengths = torch.tensor([r + 1 for r in num_rows])
    lvl = torch.repeat_interleave(torch.arange(len(sizes)), lengths)
    first = F.pad(torch.tensor(num_rows[:-1], dtype=torch.long).cumsum(0), (1, 0))
    idx = first[lvl] + torch.arange(int(lengths.sum())) - (torch.cumsum(lengths, 0) - lengths)[lvl]
    idx, first, lvl = idx.to(crow.device), first.to(crow.device), lvl.to(crow.device)
    local = (crow.index_select(0, idx) - crow.index_select(0, first).index_select(0, lvl)).split(
        lengths.tolist())
    cols, vals = col.split(nnz), val.split(nnz)
    return [torch.sparse_csr_tensor(local[l], cols[l], vals[l], (num_rows[l], num_cols),
                                    check_invariants=False) if nnz[l] > 0 else None
            for l in range(len(sizes))]


class _SweepFunction(torch.autograd.Function):
    r"""One sweep (all levels) with a hand-written backward.

    Through autograd, every level would add about 15 small nodes, and reading earlier levels' messages
    from a buffer would cost :math:`O(|\mathcal{V}|)` per level in backward. Here the forward writes every
    intermediate into preallocated ``[N, .]`` tensors (rows in visiting order), and the backward loops
    over the levels in reverse only for what is sequential (message gradient -> MLP -> GRU gates);
    weight gradients are then a few products over all nodes at once.

    Per level, with ``P`` the previous states, ``gh = P W_hh^T + b_hh`` (all nodes at once),
    ``A_l`` the level's sparse message matrix and ``B`` the buffer of earlier levels' MLP outputs:
    ``m = A_l B``, ``gi = m W_ih^T + b_ih``, ``[r, z] = sigmoid(gi_rz + gh_rz)``,
    ``n = tanh(gi_n + r * gh_n)``, ``h = n + z * (P - n)`` (:class:`torch.nn.GRUCell`), then
    ``B_l = relu(relu(h W1^T + b1) W2^T + b2)``.
    """
    @staticmethod
    def forward(ctx, h: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor, w1: Tensor,
                b1: Tensor, w2: Tensor, b2: Tensor, sweep: '_Sweep') -> Tensor:
        num_nodes, c = h.shape
        sizes, last = sweep.sizes, len(sweep.sizes) - 1
        prev = h.index_select(0, sweep.perm)
        gh = torch.addmm(b_hh, prev, w_hh.t())
        msg = h.new_zeros(num_nodes, c)  # rows of levels without in-edges stay 0
        gi = h.new_empty(num_nodes, 3 * c)
        rz = h.new_empty(num_nodes, 2 * c)
        cand = h.new_empty(num_nodes, c)  # n, the candidate state
        new = h.new_empty(num_nodes, c)
        hid = h.new_zeros(num_nodes, w1.size(0))
        buf = h.new_zeros(num_nodes, w2.size(0))  # [MLP(h) | MLP_sp(h)] per node
        flat = buf.view(-1, c)  # one row per (node, slot), as the message matrices index it

        views = [t.split(sizes) for t in (prev, gh[:, :2 * c], gh[:, 2 * c:], msg, gi, gi[:, :2 * c],
                                          gi[:, 2 * c:], rz, rz[:, :c], rz[:, c:], cand, new, hid, buf)]
        w_ih_t, w1_t, w2_t = w_ih.t(), w1.t(), w2.t()
        for lvl, (p, gh_rz, gh_n, m, gi_l, gi_rz, gi_n, rz_l, r, z, n, h_l, a, out) in enumerate(
                zip(*views)):
            if p.size(0) == 0:  # only if levels skip values
                continue
            if sweep.adj_in[lvl] is not None:
                torch.mm(sweep.adj_in[lvl], flat, out=m)
            torch.addmm(b_ih, m, w_ih_t, out=gi_l)
            torch.add(gi_rz, gh_rz, out=rz_l).sigmoid_()
            torch.addcmul(gi_n, r, gh_n, out=n).tanh_()
            torch.lerp(n, p, z, out=h_l)
            if lvl < last:  # nobody reads the last level's messages
                torch.addmm(b1, h_l, w1_t, out=a).relu_()
                torch.addmm(b2, a, w2_t, out=out).relu_()
        ctx.sweep = sweep
        ctx.save_for_backward(w_ih, w_hh, w1, w2, prev, gh, msg, rz, cand, new, hid, buf)
        return new.index_select(0, sweep.inv)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        sweep = ctx.sweep
        w_ih, w_hh, w1, w2, prev, gh, msg, rz, cand, new, hid, buf = ctx.saved_tensors
        c, sizes = prev.size(1), sweep.sizes
        r, z = rz[:, :c], rz[:, c:]
        # Gate derivatives of all nodes at once: dL/d(gi_n) = g (1 - z)(1 - n^2),
        # dL/d(z_pre) = g (P - n) z (1 - z), dL/d(r_pre) = dL/d(gi_n) gh_n r (1 - r), g = dL/dh.
        k_n = (1 - z) * (1 - cand * cand)
        k_z = (prev - cand) * z * (1 - z)
        k_r = gh[:, 2 * c:] * r * (1 - r)
        mask_hid, mask_out = hid > 0, buf > 0

        grad_new = grad_out.index_select(0, sweep.perm)  # dL/dh, completed level by level
        grad_msg = torch.zeros_like(msg)
        grad_gi = torch.empty_like(gh)  # [dL/d(r_pre) | dL/d(z_pre) | dL/d(gi_n)]
        grad_hid = torch.zeros_like(hid)
        grad_buf = torch.zeros_like(buf)
        views = [t.split(sizes) for t in (grad_new, grad_msg, grad_gi, grad_gi[:, :c],
                                          grad_gi[:, c:2 * c], grad_gi[:, 2 * c:], grad_hid,
                                          grad_buf, k_n, k_z, k_r, mask_hid, mask_out)]
        for lvl, (g, g_m, g_gi, g_r, g_z, g_n, g_a, g_o, kn, kz, kr, mh, mo) in reversed(
                list(enumerate(zip(*views)))):
            if g.size(0) == 0:
                continue
            adj_out = sweep.adj_out[lvl]
            if adj_out is not None:  # later levels read this level's MLP outputs
                torch.mul(torch.mm(adj_out, grad_msg).view_as(g_o), mo, out=g_o)
                torch.mul(torch.mm(g_o, w2), mh, out=g_a)
                g.addmm_(g_a, w1)
            torch.mul(g, kn, out=g_n)
            torch.mul(g, kz, out=g_z)
            torch.mul(g_n, kr, out=g_r)
            if sweep.adj_in[lvl] is not None:  # only then do earlier levels need dL/dm
                torch.mm(g_gi, w_ih, out=g_m)

        grad_gh = grad_gi.clone()
        grad_gh[:, 2 * c:].mul_(r)  # gh_n enters as r * gh_n
        grad_prev = torch.addmm(grad_new * z, grad_gh, w_hh)
        return (grad_prev.index_select(0, sweep.inv),
                grad_gi.t() @ msg, grad_gi.sum(0),  # w_ih, b_ih
                grad_gh.t() @ prev, grad_gh.sum(0),  # w_hh, b_hh
                grad_hid.t() @ new, grad_hid.sum(0),  # w1, b1
                grad_buf.t() @ hid, grad_buf.sum(0),  # w2, b2
                None)


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

    Because every message source of a node lies on a strictly smaller level (longest-path depth in the
    forward sweep, height in the backward sweep), updating all nodes of one level at once, across all
    graphs of a batch, is exactly the sequential algorithm. The layer does so: one vectorised step per
    level, with the messages summed by one sparse product per level and the MLPs evaluated once per
    node and sweep. It does not go through :meth:`propagate`; its backward pass is written by hand, so
    it supports first-order gradients only (no double backward).

    Any integer levels work if every edge ``u -> v`` (real or virtual) has
    ``level_fw[u] < level_fw[v]`` and ``level_bw[u] > level_bw[v]``; this is checked, and a violation
    (a cycle, or levels computed before edges changed) raises a :class:`ValueError`.

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
        edge_index, level_fw, level_bw = (t.to(x.device) for t in (edge_index, level_fw, level_bw))
        if edge_index_sp is not None:
            edge_index_sp = edge_index_sp.to(x.device)
            edge_dist_sp = edge_dist_sp.to(x.device) if edge_dist_sp is not None else None
        self._check(num_nodes, edge_index, level_fw, level_bw, edge_index_sp, edge_dist_sp)
        if num_nodes == 0:
            return x
        out_dtype = x.dtype
        # CPU sparse products have no float16/bfloat16 kernels: a half-precision layer computes in float32
        # there and returns its input's dtype (on CUDA it stays in half precision).
        upcast = x.device.type == 'cpu' and x.dtype in (torch.float16, torch.bfloat16)
        if upcast:
            x = x.float()

        # All messages as (sender, receiver, buffer slot, factor); slot 0 carries MLP(h) of the sender,
        # slot 1 MLP_sp(h).
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
        else:
            send, recv, slot, coef = src, dst, torch.zeros_like(src), x.new_ones(src.numel())
        num_slots = 2 if self.virtual_edges else 1

        # Transposed matrices are needed only to backpropagate through the message sums.
        need_grad = torch.is_grad_enabled() and (x.requires_grad or any(
            p.requires_grad for p in self.parameters()))
        sweeps = [_level_buckets(level_fw, send, recv, slot, coef, num_slots, need_grad)]
        if self.backward:
            sweeps.append(_level_buckets(level_bw, recv, send, slot, coef, num_slots, need_grad))

        # Both MLPs as one: first layers stacked, second layers block-diagonal, so that a level costs
        # two products instead of four. Output columns: [MLP(h) | MLP_sp(h)], the slots above.
        if self.mlp_sp is not None:
            w1 = torch.cat([self.mlp[0].weight, self.mlp_sp[0].weight], dim=0)
            b1 = torch.cat([self.mlp[0].bias, self.mlp_sp[0].bias], dim=0)
            w2 = torch.block_diag(self.mlp[2].weight, self.mlp_sp[2].weight)
            b2 = torch.cat([self.mlp[2].bias, self.mlp_sp[2].bias], dim=0)
        else:
            w1, b1, w2, b2 = self.mlp[0].weight, self.mlp[0].bias, self.mlp[2].weight, self.mlp[2].bias
        gru = self.gru
        weights = [gru.weight_ih, gru.bias_ih, gru.weight_hh, gru.bias_hh, w1, b1, w2, b2]
        if upcast:
            weights = [w.float() for w in weights]

        h = x
        for _ in range(self.num_rounds):
            for sweep in sweeps:
                h = _SweepFunction.apply(h, *weights, sweep)
        return h.to(out_dtype)

    @staticmethod
    def _check(num_nodes: int, edge_index: Tensor, level_fw: Tensor, level_bw: Tensor,
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
            if edge_dist_sp.numel() > 0 and bool((edge_dist_sp < 2).any()):
                raise ValueError("'edge_dist_sp' must be >= 2: virtual edges join nodes 2 or more real edges "
                                 "apart (length-1 paths are the real edges, counted once)")
            edges.append(('edge_index_sp', edge_index_sp))
        for name, ei in edges:
            if ei.dim() != 2 or ei.size(0) != 2:
                raise ValueError(f"'{name}' must have shape [2, num_edges] (got {list(ei.shape)})")
            if ei.numel() == 0:
                continue
            if int(ei.min()) < 0 or int(ei.max()) >= num_nodes:
                raise ValueError(f"'{name}' refers to nodes outside [0, {num_nodes})")
            # Sweeps are exact only if every message source is visited before its receiver.
            lf = level_fw.index_select(0, ei.reshape(-1)).view(2, -1)
            lb = level_bw.index_select(0, ei.reshape(-1)).view(2, -1)
            bad = (lf[0] >= lf[1]) | (lb[0] <= lb[1])
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

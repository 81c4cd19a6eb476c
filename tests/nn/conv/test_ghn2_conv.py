import copy
import random
from typing import List, Optional

import pytest
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from pyg_ghn.graph.dag import topological_levels
from pyg_ghn.nn.conv import GHN2Conv
from pyg_ghn.transforms import shortest_path_edges

C = 8  # state size of the test layers


def random_dag(num_nodes: int, seed: int, p_skip: float = 0.3, max_dist: int = 50) -> Data:
    """A random chain-like DAG (like architecture graphs) with shuffled node ids, some extra sources,
    skip edges, real levels and shortest-path virtual edges."""
    g = torch.Generator().manual_seed(seed)
    edges = set()
    for j in range(1, num_nodes):
        if torch.rand(1, generator=g).item() > 0.1:  # else j is another source
            edges.add((j - 1 - int(torch.randint(0, min(j, 3), (1,), generator=g)), j))
        if torch.rand(1, generator=g).item() < p_skip:
            edges.add((int(torch.randint(0, j, (1,), generator=g)), j))
    # Relabel so that node ids are not a topological order.
    new_id = torch.randperm(num_nodes, generator=g)
    edge_index = new_id[torch.tensor(sorted(edges)).t()]
    level_fw, level_bw = topological_levels(edge_index, num_nodes)
    edge_index_sp, edge_dist_sp = shortest_path_edges(edge_index, num_nodes, max_dist)
    x = torch.randn(num_nodes, C, generator=g, dtype=torch.float64)
    return Data(x=x, edge_index=edge_index, level_fw=level_fw, level_bw=level_bw,
                edge_index_sp=edge_index_sp, edge_dist_sp=edge_dist_sp, num_nodes=num_nodes)


def random_topological_order(edge_index: Tensor, num_nodes: int, seed: int) -> List[int]:
    """Kahn's algorithm popping a random ready node each time: a different valid order than levels."""
    rng = random.Random(seed)
    indeg = [0] * num_nodes
    succ: List[List[int]] = [[] for _ in range(num_nodes)]
    for u, v in edge_index.t().tolist():
        succ[u].append(v)
        indeg[v] += 1
    ready = [v for v in range(num_nodes) if indeg[v] == 0]
    order = []
    while ready:
        v = ready.pop(rng.randrange(len(ready)))
        order.append(v)
        for w in succ[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    assert len(order) == num_nodes
    return order


def sequential_reference(conv: GHN2Conv, x: Tensor, edge_index: Tensor,
                         edge_index_sp: Optional[Tensor] = None, edge_dist_sp: Optional[Tensor] = None,
                         order_seed: int = 0) -> Tensor:
    """The original algorithm, node by node, with its own per-node messages and conv's submodules."""
    n = x.size(0)
    real_in: List[List[int]] = [[] for _ in range(n)]
    real_out: List[List[int]] = [[] for _ in range(n)]
    for u, v in edge_index.t().tolist():
        real_in[v].append(u)
        real_out[u].append(v)
    sp_in: List[List] = [[] for _ in range(n)]
    sp_out: List[List] = [[] for _ in range(n)]
    if conv.virtual_edges and edge_index_sp is not None:
        for (u, v), s in zip(edge_index_sp.t().tolist(), edge_dist_sp.tolist()):
            sp_in[v].append((u, s))
            sp_out[u].append((v, s))
    order = random_topological_order(edge_index, n, order_seed)

    h = list(x.unbind(0))
    for _ in range(conv.num_rounds):
        sweeps = [(order, real_in, sp_in)]
        if conv.backward:
            sweeps.append((order[::-1], real_out, sp_out))
        for nodes, real_nb, sp_nb in sweeps:
            for v in nodes:
                m = x.new_zeros(conv.channels)
                for u in real_nb[v]:
                    m = m + conv.mlp(h[u])
                    if conv.virtual_edges and conv.sp_on_real_edges:
                        m = m + conv.mlp_sp(h[u]) / 1
                for u, s in sp_nb[v]:
                    m = m + conv.mlp_sp(h[u]) / s
                h[v] = conv.gru(m.unsqueeze(0), h[v].unsqueeze(0)).squeeze(0)
    return torch.stack(h)


def make_conv(seed: int = 0, **kwargs) -> GHN2Conv:
    torch.manual_seed(seed)
    return GHN2Conv(C, **kwargs).double()


def run(conv: GHN2Conv, data: Data) -> Tensor:
    return conv(data.x, data.edge_index, data.level_fw, data.level_bw, data.edge_index_sp,
                data.edge_dist_sp)


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('virtual_edges,sp_on_real_edges', [(True, True), (True, False), (False, False)])
def test_matches_sequential_reference(seed, virtual_edges, sp_on_real_edges):
    data = random_dag(30 + 7 * seed, seed, max_dist=6 if seed == 1 else 50)
    assert data.edge_index_sp.numel() > 0
    conv = make_conv(seed, virtual_edges=virtual_edges, sp_on_real_edges=sp_on_real_edges,
                     num_rounds=2)
    out = run(conv, data)
    ref = sequential_reference(conv, data.x, data.edge_index, data.edge_index_sp, data.edge_dist_sp,
                               order_seed=seed)
    assert out.shape == (data.num_nodes, C)
    assert (out - data.x).abs().min(dim=1).values.gt(0).all()  # every node was updated
    assert torch.allclose(out, ref, atol=1e-10, rtol=0)


def test_forward_only_and_without_sp_edges():
    data = random_dag(25, 5)
    conv = make_conv(1, backward=False)
    ref = sequential_reference(conv, data.x, data.edge_index, data.edge_index_sp, data.edge_dist_sp)
    assert torch.allclose(run(conv, data), ref, atol=1e-10, rtol=0)
    # The backward sweep does matter: the full layer gives something else.
    assert not torch.allclose(run(make_conv(1), data), ref, atol=1e-3)

    # Virtual edges enabled but none given: only the real-edge terms (both MLPs on real edges).
    conv = make_conv(2)
    out = conv(data.x, data.edge_index, data.level_fw, data.level_bw)
    ref = sequential_reference(conv, data.x, data.edge_index)
    assert torch.allclose(out, ref, atol=1e-10, rtol=0)


def test_sp_on_real_edges_changes_messages():
    data = random_dag(20, 3)
    out_on, out_off = (run(make_conv(0, sp_on_real_edges=flag), data) for flag in (True, False))
    assert (out_on - out_off).abs().max() > 1e-3


def test_no_edges_every_node_updated_with_zero_message():
    x = torch.randn(6, C, dtype=torch.float64)
    level = torch.zeros(6, dtype=torch.long)
    conv = make_conv(3)
    out = conv(x, torch.empty(2, 0, dtype=torch.long), level, level)
    zero = torch.zeros_like(x)
    assert torch.allclose(out, conv.gru(zero, conv.gru(zero, x)), atol=1e-12, rtol=0)


def test_any_valid_levels_and_duplicate_edges():
    data = random_dag(20, 4)
    edge_index = torch.cat([data.edge_index, data.edge_index[:, :3]], dim=1)  # each copy sends too
    conv = make_conv(8, num_rounds=2)
    # Levels with gaps and offsets still order every edge; the result must not change.
    out = conv(data.x, edge_index, 3 * data.level_fw + 1, 2 * data.level_bw, data.edge_index_sp,
               data.edge_dist_sp)
    ref = sequential_reference(conv, data.x, edge_index, data.edge_index_sp, data.edge_dist_sp)
    assert torch.allclose(out, ref, atol=1e-10, rtol=0)


def test_batch_equals_one_by_one():
    graphs = [random_dag(n, seed) for seed, n in enumerate([18, 33, 7])]
    batch = Batch.from_data_list(graphs)
    assert batch.level_fw.max() < batch.num_nodes // 3  # levels stay local to each graph
    conv = make_conv(4, num_rounds=2)
    out = run(conv, batch)
    expected = torch.cat([run(conv, g) for g in graphs])
    assert torch.allclose(out, expected, atol=1e-12, rtol=0)
    with torch.no_grad():  # the inference path skips the transposed message matrices
        assert torch.equal(run(conv, batch), out)


def test_gradients_match_reference():
    data = random_dag(24, 7)
    conv = make_conv(5, num_rounds=2)
    x = data.x.clone().requires_grad_()
    weight = torch.randn(data.num_nodes, C, dtype=torch.float64)

    (run(conv, data.clone().update({'x': x})) * weight).sum().backward()
    grads = {name: p.grad.clone() for name, p in conv.named_parameters()}
    grad_x = x.grad.clone()
    conv.zero_grad()
    x.grad = None
    ref = sequential_reference(conv, x, data.edge_index, data.edge_index_sp, data.edge_dist_sp)
    (ref * weight).sum().backward()

    assert set(grads) == {n for n, _ in conv.named_parameters()}
    for name, p in conv.named_parameters():
        assert grads[name].abs().sum() > 0, name  # every parameter receives a gradient
        assert torch.allclose(grads[name], p.grad, atol=1e-10, rtol=0), name
    assert torch.allclose(grad_x, x.grad, atol=1e-10, rtol=0)


def test_gradcheck():
    data = random_dag(9, 1, max_dist=4)
    torch.manual_seed(0)
    conv = GHN2Conv(4, num_rounds=2).double()
    names = [n for n, _ in conv.named_parameters()]
    x = torch.randn(data.num_nodes, 4, dtype=torch.float64, requires_grad=True)

    def f(x, *params):
        return torch.func.functional_call(conv, dict(zip(names, params)), (
            x, data.edge_index, data.level_fw, data.level_bw, data.edge_index_sp, data.edge_dist_sp))

    params = [p.detach().clone().requires_grad_() for p in conv.parameters()]
    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


def test_node_order_invariance():
    data = random_dag(40, 11)
    conv = make_conv(6)
    out = run(conv, data)
    perm = torch.randperm(data.num_nodes, generator=torch.Generator().manual_seed(0))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    out_perm = conv(data.x[perm], inv[data.edge_index], data.level_fw[perm], data.level_bw[perm],
                    inv[data.edge_index_sp], data.edge_dist_sp)
    assert torch.allclose(out_perm, out[perm], atol=1e-12, rtol=0)


def test_parameters_and_repr():
    conv = GHN2Conv(32)
    shapes = {k: tuple(v.shape) for k, v in conv.state_dict().items()}
    assert shapes == {  # the original GHN-2 `gnn` (spec §2.2)
        'mlp.0.weight': (16, 32), 'mlp.0.bias': (16,), 'mlp.2.weight': (32, 16), 'mlp.2.bias': (32,),
        'mlp_sp.0.weight': (16, 32), 'mlp_sp.0.bias': (16,), 'mlp_sp.2.weight': (32, 16),
        'mlp_sp.2.bias': (32,), 'gru.weight_ih': (96, 32), 'gru.weight_hh': (96, 32),
        'gru.bias_ih': (96,), 'gru.bias_hh': (96,)}
    assert str(conv) == ('GHN2Conv(32, virtual_edges=True, num_rounds=1, backward=True, '
                         'sp_on_real_edges=True, mlp_hidden=16)')
    ghn1 = GHN2Conv(32, virtual_edges=False, num_rounds=2, backward=False)
    assert ghn1.mlp_sp is None and ghn1.mlp[0].weight.shape == (32, 32)
    assert str(ghn1) == ('GHN2Conv(32, virtual_edges=False, num_rounds=2, backward=False, '
                         'sp_on_real_edges=True, mlp_hidden=32)')

    before = [p.clone() for p in conv.parameters()]
    torch.manual_seed(123)
    conv.reset_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, conv.parameters()))


def test_invalid_inputs():
    data = random_dag(15, 2)
    conv = make_conv()
    u, v = data.edge_index[:, 0].tolist()
    with pytest.raises(ValueError, match='not a DAG'):  # a back edge with the old (stale) levels
        back = torch.cat([data.edge_index, torch.tensor([[v], [u]])], dim=1)
        conv(data.x, back, data.level_fw, data.level_bw)
    with pytest.raises(ValueError, match='not a DAG'):  # a virtual edge against the order
        conv(data.x, data.edge_index, data.level_fw, data.level_bw, torch.tensor([[v], [u]]),
             torch.tensor([2]))
    with pytest.raises(ValueError, match='one entry per node'):
        conv(data.x, data.edge_index, data.level_fw[:-1], data.level_bw)
    with pytest.raises(ValueError, match='edge_dist_sp'):
        conv(data.x, data.edge_index, data.level_fw, data.level_bw, data.edge_index_sp)
    with pytest.raises(ValueError, match='shape'):
        conv(data.x[:, :4], data.edge_index, data.level_fw, data.level_bw)
    with pytest.raises(ValueError, match=r"'edge_dist_sp' must be >= 2.*counted once"):  # a real edge again
        conv(data.x, data.edge_index, data.level_fw, data.level_bw, data.edge_index[:, :1], torch.tensor([1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    data = random_dag(50, 9)
    conv = make_conv(7, num_rounds=2)
    conv_cuda = copy.deepcopy(conv).cuda()
    weight = torch.randn(data.num_nodes, C, dtype=torch.float64)
    out_cpu = run(conv, data)
    (out_cpu * weight).sum().backward()
    out = run(conv_cuda, data.clone().to('cuda'))  # Data.cuda() would move `data` itself
    assert out.device.type == 'cuda'
    (out * weight.cuda()).sum().backward()
    assert torch.allclose(out.cpu(), out_cpu, atol=1e-10, rtol=0)
    for (name, p), p_cuda in zip(conv.named_parameters(), conv_cuda.parameters()):
        assert torch.allclose(p_cuda.grad.cpu(), p.grad, atol=1e-10, rtol=0), name

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch_geometric.loader import DataLoader

from pyg_ghn import PRIMITIVES, Role
from pyg_ghn.graph import (ArchGraph, GraphBuildError, UnpredictedParametersWarning, WeightSharingError,
                           from_module)


def named_edges(g: ArchGraph):
    """Edges as (source name, target name) pairs, independent of node order."""
    label = [n if n else p for n, p in zip(g.node_names, g.primitive_names)]
    return sorted((label[u], label[v]) for u, v in g.edge_index.t().tolist())


class SmallNet(nn.Module):
    """conv(+bias) -> bn -> relu -> maxpool -> conv -> bn, plus a skip sum, avgpool, global pool, linear."""
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv2 = nn.Conv2d(8, 8, 5, padding=2, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = x + self.bn2(self.conv2(x))
        x = self.avg(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def test_small_net_node_by_node():
    g = from_module(SmallNet(), (3, 32, 32))
    assert g.num_nodes == 12
    assert g.node_names[0] == 'input' and g.primitive_names[0] == 'input'
    by_name = {n: i for i, n in enumerate(g.node_names)}
    expect = {
        'conv1.weight': ('conv', (8, 3, 3, 3), Role.WEIGHT, ['conv1.weight']),
        'conv1.bias': ('bias', (8,), Role.BIAS, ['conv1.bias']),
        'bn1.weight': ('bn', (8,), Role.NORM, ['bn1.weight', 'bn1.bias']),
        'conv2.weight': ('conv', (8, 8, 5, 5), Role.WEIGHT, ['conv2.weight']),
        'bn2.weight': ('bn', (8,), Role.NORM, ['bn2.weight', 'bn2.bias']),
        'fc.weight': ('conv', (10, 8), Role.CLS_WEIGHT, ['fc.weight']),
        'fc.bias': ('bias', (10,), Role.CLS_BIAS, ['fc.bias']),
    }
    for name, (prim, shape, role, params) in expect.items():
        i = by_name[name]
        assert g.primitive_names[i] == prim, name
        assert g.param_shape(i) == shape, name
        assert g.role[i] == role, name
        assert g.param_names[i] == params, name
    ops = sorted(p for p, n in zip(g.primitive_names, g.param_names) if not n)
    assert ops == ['avg_pool', 'glob_avg', 'input', 'max_pool', 'sum']
    pools = {g.primitive_names[i]: g.param_shape(i) for i in range(g.num_nodes)
             if g.primitive_names[i] in ('max_pool', 'avg_pool')}
    assert pools == {'max_pool': (1, 1, 3, 3), 'avg_pool': (1, 1, 2, 2)}
    assert named_edges(g) == sorted([
        ('input', 'conv1.weight'), ('conv1.weight', 'conv1.bias'), ('conv1.bias', 'bn1.weight'),
        ('bn1.weight', 'MaxPool2DWithIndicesBackward0'), ('MaxPool2DWithIndicesBackward0', 'conv2.weight'),
        ('MaxPool2DWithIndicesBackward0', 'AddBackward0'), ('conv2.weight', 'bn2.weight'),
        ('bn2.weight', 'AddBackward0'), ('AddBackward0', 'AvgPool2DBackward0'),
        ('AvgPool2DBackward0', 'MeanBackward1'), ('MeanBackward1', 'fc.weight'), ('fc.weight', 'fc.bias'),
    ])
    assert g.unpredicted == []


def test_edges_respect_levels_and_virtual_edges_are_shortest_paths():
    import networkx as nx
    g = from_module(SmallNet(), (3, 32, 32), max_sp_dist=3)
    src, dst = g.edge_index
    assert bool((g.level_fw[src] < g.level_fw[dst]).all()) and bool((g.level_bw[src] > g.level_bw[dst]).all())
    lengths = dict(nx.all_pairs_shortest_path_length(g.to_networkx()))
    expected = sorted((u, v, d) for u, t in lengths.items() for v, d in t.items() if 1 < d <= 3)
    got = sorted(zip(*g.edge_index_sp.tolist(), g.edge_dist_sp.tolist()))
    assert got == expected and len(got) > 0


def test_resnet50_matches_original_graph():
    g = from_module(torchvision.models.resnet50(), (3, 224, 224))
    assert g.num_nodes == 127
    assert g.primitive_counts() == {'conv': 54, 'bn': 53, 'sum': 16, 'max_pool': 1, 'glob_avg': 1, 'bias': 1,
                                    'input': 1}
    assert g.edge_index.size(1) == 142
    assert g.edge_index_sp.size(1) == 7811 and int(g.edge_dist_sp.max()) == 32
    assert g.node_names[:3] == ['input', 'conv1.weight', 'bn1.weight']
    assert g.node_names[-2:] == ['fc.weight', 'fc.bias']
    assert g.role[-2] == Role.CLS_WEIGHT and g.role[-1] == Role.CLS_BIAS
    assert g.num_params_predicted == 161 and g.unpredicted == []


def test_batching_matches_graphs_one_by_one():
    graphs = [from_module(SmallNet()), from_module(torchvision.models.resnet18(num_classes=10)),
              from_module(SmallNet(), max_sp_dist=2)]
    batch = next(iter(DataLoader(graphs, batch_size=3)))
    assert batch.num_graphs == 3
    for i, g in enumerate(graphs):
        lo, hi = int(batch.ptr[i]), int(batch.ptr[i + 1])
        assert torch.equal(batch.x[lo:hi], g.x)
        assert torch.equal(batch.level_fw[lo:hi], g.level_fw)  # levels are not offset
        assert torch.equal(batch.level_bw[lo:hi], g.level_bw)
        mask = (batch.edge_index[0] >= lo) & (batch.edge_index[0] < hi)
        assert torch.equal(batch.edge_index[:, mask] - lo, g.edge_index)
        mask = (batch.edge_index_sp[0] >= lo) & (batch.edge_index_sp[0] < hi)
        assert torch.equal(batch.edge_index_sp[:, mask] - lo, g.edge_index_sp)
        assert torch.equal(batch.edge_dist_sp[mask], g.edge_dist_sp)
        assert batch.param_names[i] == g.param_names
        assert batch.get_example(i).node_names == g.node_names


def test_user_model_untouched():
    torch.manual_seed(0)
    model = SmallNet().train()
    model.conv2.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with torch.no_grad():  # the user's context must not matter
        g = from_module(model, (3, 32, 32))
    assert g.num_nodes == 12
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and not model.conv2.weight.requires_grad and model.conv1.weight.requires_grad
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # incl. BatchNorm running statistics
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize('device', ['meta', 'cpu'])
def test_meta_and_real_tracing_agree(device):
    model = torchvision.models.mobilenet_v2(num_classes=10)
    a = from_module(model, (3, 32, 32), device=device)
    b = from_module(model, (3, 32, 32))
    assert named_edges(a) == named_edges(b)
    assert torch.equal(a.x, b.x) and torch.equal(a.shape, b.shape)


def _deepnets_train_net():  # BatchNorm without running statistics, as DeepNets-1M networks train
    from pyg_ghn.datasets.deepnets1m import build_network
    from pyg_ghn.deepnets.generator import generate_net
    return build_network({**generate_net('train', 3), 'C': 24})


@pytest.mark.parametrize('builder, size', [
    (lambda: torchvision.models.resnet18(num_classes=10), 64),       # BatchNorm with running statistics
    (_deepnets_train_net, 32),
    (lambda: torchvision.models.VisionTransformer(32, 8, 2, 2, 64, 64, num_classes=10), 32),  # no empty batch
])
def test_meta_model_traces_like_the_real_one(builder, size):
    # A model built on meta (nothing allocated) traces on uninitialised CPU stand-ins or, where an empty batch
    # cannot run (attention), on meta data: the graph is the real model's, the model stays on meta, untouched.
    torch.manual_seed(0)
    real = builder()
    with torch.device('meta'):
        meta = builder()
    # (Operation nodes' labels name the autograd function, which depends on the backend: attention is
    # ScaledDotProductFlashAttentionForCpuBackward0 on the CPU, BmmBackward0 on meta; both are `msa`.)
    def same(a, b):
        assert a.param_names == b.param_names and torch.equal(a.x, b.x) and torch.equal(a.shape, b.shape)
        assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.edge_index_sp, b.edge_index_sp)
    b = from_module(real, size, warn=False)
    same(from_module(meta, size, warn=False), b)
    same(from_module(meta, size, device='cpu', warn=False), b)   # explicitly on the CPU: no copy out of meta
    assert all(t.is_meta for t in meta.state_dict().values())


def test_large_meta_model_never_allocates_on_the_cpu():
    # Stand-ins are uninitialised and untouched on an empty batch, but a model built on meta because it does
    # not fit in memory must not get them: above the limit it traces on meta only, as before.
    from pyg_ghn.graph import trace
    meta, cpu = torch.device('meta'), torch.device('cpu')
    assert trace._attempts({meta}, (3, 32, 32), None, nbytes=10 ** 6)[0] == (cpu, 0)
    big = trace._attempts({meta}, (3, 32, 32), None, nbytes=trace._MAX_STAND_IN_BYTES + 1)
    assert big and all(dev == meta for dev, _ in big)
    assert all(dev == meta for dev, _ in trace._attempts({meta}, (3, 224, 224), None, nbytes=2 ** 40))


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(20, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        h = self.body(x)
        return {'logits': self.head(h), 'features': h}


def test_mlp_input_spec_and_dict_output():
    g = from_module(DictOut(), input_size=(20,))
    assert g.node_names == ['input', 'body.weight', 'body.bias', 'head.weight', 'head.bias']
    assert named_edges(g) == sorted([('input', 'body.weight'), ('body.weight', 'body.bias'),
                                     ('body.bias', 'head.weight'), ('head.weight', 'head.bias')])
    tup = nn.Sequential(nn.Linear(20, 4))
    tup.forward = lambda x, _m=tup: (_m[0](x), x)  # tuple output: the first element is traced
    assert from_module(tup, (20,)).num_nodes == 3


class AuxOut(nn.Module):
    """A main head and an auxiliary head on an earlier feature, returned as a namedtuple (GoogLeNet-style)."""
    Out = __import__('collections').namedtuple('Out', ['logits', 'aux_logits'])

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(20, 16)
        self.deep = nn.Linear(16, 16)
        self.aux = nn.Linear(16, 4)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return self.Out(self.head(torch.relu(self.deep(h))), self.aux(h))


def test_auxiliary_outputs_are_reported_by_default_and_predicted_in_extended_mode():
    with pytest.warns(UnpredictedParametersWarning, match='aux.weight'):
        g = from_module(AuxOut(), (20,))
    assert g.unpredicted == ['aux.weight', 'aux.bias'] and 'aux.weight' not in g.node_names
    ext = from_module(AuxOut(), (20,), extended=True)
    assert ext.unpredicted == []
    assert named_edges(ext) == sorted(named_edges(g) + [('body.bias', 'aux.weight'), ('aux.weight', 'aux.bias')])
    # The main classifier stays last, with the classifier roles; the auxiliary head is an ordinary layer.
    assert ext.node_names[-2:] == ['head.weight', 'head.bias']
    assert ext.role[-2:].tolist() == [Role.CLS_WEIGHT, Role.CLS_BIAS]
    assert ext.role[ext.node_names.index('aux.weight')] == Role.WEIGHT


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_models_of_other_dtypes_and_integer_parameters(dtype):
    ref = from_module(torchvision.models.resnet18(num_classes=10), (3, 32, 32))
    g = from_module(torchvision.models.resnet18(num_classes=10).to(dtype), (3, 32, 32))
    assert g.node_names == ref.node_names and torch.equal(g.edge_index, ref.edge_index)

    class WithIndex(nn.Module):  # an integer parameter cannot require grad: left unpredicted, no error
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.idx = nn.Parameter(torch.arange(4), requires_grad=False)

        def forward(self, x):
            return self.fc(x[:, self.idx])

    with pytest.warns(UnpredictedParametersWarning, match='idx'):
        assert from_module(WithIndex(), (4,)).unpredicted == ['idx']


def test_extended_mode_leaves_scalars_and_other_torch_layers_unpredicted():
    from pyg_ghn.nn import GHN

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
            self.alpha = nn.Parameter(torch.tensor(0.5))
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.alpha * self.up(self.conv(x)).mean((2, 3)))

    g = from_module(Odd(), (3, 8, 8), extended=True, warn=False)
    assert set(g.unpredicted) == {'alpha', 'up.weight'}  # no fake source or sum for them
    assert 'pos_enc' not in g.primitive_names and 'up.bias' in g.node_names
    model = Odd()
    with pytest.warns(UnpredictedParametersWarning, match='alpha'):
        GHN.from_config('ghn2', 'cifar10').eval()(model, graph=g)  # predicts what has a node
    assert torch.isfinite(model(torch.randn(2, 3, 8, 8))).all()


def test_several_sinks_and_bad_declared_primitives_are_reported():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 3), nn.Linear(6, 3)

        def forward(self, x):
            return self.a(x) * self.b(x)  # the product is not a node: two sinks

    with pytest.warns(UserWarning, match=r'TwoHeads: its graph has 2 sinks .*GHNs expect one output'):
        from_module(TwoHeads(), (6,))
    m = nn.Sequential(nn.Linear(6, 3))
    m[0].ghn_primitive = 'deconv'
    with pytest.raises(ValueError, match=r"ghn_primitive = 'deconv' is not one of the GHN primitives"):
        from_module(m, (6,))


def test_linear_without_bias_is_in_the_chain():
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3))
    g = from_module(model, (6,))
    assert named_edges(g) == sorted([('input', '0.weight'), ('0.weight', '2.weight'),
                                     ('2.weight', '2.bias')])


def test_subclasses_are_recognised():
    class MyConv(nn.Conv2d):
        pass

    model = nn.Sequential(MyConv(3, 4, 3, groups=1), nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 4, 3, groups=4,
                                                                                            dilation=2))
    g = from_module(model, (3, 16, 16))
    assert g.primitive_names == ['input', 'conv', 'bias', 'sep_conv', 'bias', 'dil_conv', 'bias']


def test_unpredicted_parameters_are_reported_and_extended_mode_covers_them():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(2)
                          if False else nn.Linear(4 * 14 * 14, 2))
    with pytest.warns(UnpredictedParametersWarning, match='1.weight'):
        g = from_module(model, (3, 16, 16))
    assert g.unpredicted == ['1.weight', '1.bias']
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        ext = from_module(model, (3, 16, 16), extended=True)
    assert ext.unpredicted == [] and 'bn' in ext.primitive_names


def test_weight_sharing_is_a_clear_error():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x)).mean((2, 3))

    with pytest.raises(WeightSharingError, match='conv.weight'):
        from_module(Shared(), (3, 8, 8))


def test_bad_inputs_give_clear_errors():
    with pytest.raises(GraphBuildError, match='no parameters'):
        from_module(nn.ReLU())
    with pytest.raises(GraphBuildError, match='input size'):
        from_module(nn.Linear(10, 2), (3, 32, 32))

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Linear(2, 2)

        def forward(self, x):
            return self.w(torch.ones(1, 2, device=x.device))

    with pytest.raises(GraphBuildError, match='does not depend on its input'):
        from_module(Constant(), (2,))


class SE(nn.Module):
    """DeepNets-style channel SE: the gate is reshaped once before the product."""
    def __init__(self, c):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, c // 2), nn.Linear(c // 2, c)

    def forward(self, x):
        gate = F.hardswish(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * gate.view(x.size(0), -1, 1, 1)


def test_channel_se_is_a_cse_node_and_torchvision_se_is_not():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), SE(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    g = from_module(model, (3, 16, 16))
    assert g.primitive_counts()['cse'] == 1
    i = g.primitive_names.index('cse')
    preds = sorted(g.node_names[u] for u, v in g.edge_index.t().tolist() if v == i)
    assert preds == ['0.bias', '1.fc2.bias']  # the features and the gate
    mbv3 = from_module(torchvision.models.mobilenet_v3_small(num_classes=10), (3, 32, 32))
    assert 'cse' not in mbv3.primitive_counts()  # as the original builds it (spec §1.7)


class Attention(nn.Module):
    def __init__(self, dim, heads=2):
        super().__init__()
        self.heads = heads
        self.ln = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.to_qkv(self.ln(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return x + self.to_out(out)


def test_self_attention_is_an_msa_node_between_qkv_and_out():
    model = nn.Sequential(nn.Linear(4, 8), Attention(8))
    g = from_module(model, (5, 4))
    assert g.primitive_counts()['msa'] == 1
    edges = named_edges(g)
    msa = g.node_names[g.primitive_names.index('msa')]
    assert ('1.to_qkv.weight', msa) in edges and (msa, '1.to_out.0.weight') in edges
    assert ('1.to_out.0.bias', 'AddBackward0') in edges


class PosEnc(nn.Module):
    def __init__(self, c, s):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, c, s, s))

    def forward(self, x):
        return x + self.weight


def test_positional_encoding_is_a_source_feeding_a_sum():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 3, bias=False), PosEnc(4, 5), nn.Conv2d(4, 4, 1))
    g = from_module(model, (3, 15, 15))
    assert named_edges(g) == sorted([('input', '0.weight'), ('0.weight', 'AddBackward0'),
                                     ('1.weight', 'AddBackward0'), ('AddBackward0', '2.weight'),
                                     ('2.weight', '2.bias')])
    i = g.node_names.index('1.weight')
    assert g.primitive_names[i] == 'pos_enc' and g.level_fw[i] == 0


def test_primitive_ids_are_the_originals():
    assert PRIMITIVES.index('conv') == 4 and PRIMITIVES.index('glob_avg') == 14 and len(PRIMITIVES) == 15


class TinyViT(nn.Module):
    """torchvision-style transformer pieces the original cannot predict: a class token and a position
    embedding (free tensors), nn.MultiheadAttention's packed projection, and a ConvNeXt-style layer scale."""
    def __init__(self, d=8):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, d))
        self.ln = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.layer_scale = nn.Parameter(torch.full((d,), 1e-2))
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.size(0), -1, -1), x], 1) + self.pos_embedding
        h = self.ln(x)
        x = x + self.layer_scale * self.attn(h, h, h, need_weights=False)[0]
        return self.head(x[:, 0])


def test_extended_mode_gives_every_tensor_a_node():
    from pyg_ghn.nn import GHN
    model = TinyViT()
    with pytest.warns(UnpredictedParametersWarning, match='class_token'):
        default = from_module(model, (3, 8, 8))
    # As the original, no parameter of nn.MultiheadAttention, not even out_proj (an nn.Linear subclass).
    assert set(default.unpredicted) == {'class_token', 'pos_embedding', 'attn.in_proj_weight',
                                        'attn.in_proj_bias', 'attn.out_proj.weight', 'attn.out_proj.bias',
                                        'layer_scale'}
    g = from_module(model, (3, 8, 8), extended=True)
    assert g.unpredicted == []
    prim = dict(zip(g.node_names, g.primitive_names))
    assert prim['class_token'] == prim['pos_embedding'] == 'pos_enc'
    assert (prim['attn.in_proj_weight'], prim['attn.in_proj_bias'], prim['layer_scale']) == ('conv', 'bias', 'bn')
    assert (prim['attn.out_proj.weight'], prim['attn.out_proj.bias']) == ('conv', 'bias')
    edges = named_edges(g)
    assert ('attn.in_proj_weight', 'attn.in_proj_bias') in edges  # the linear chain, as for nn.Linear
    sources = set(range(g.num_nodes)) - set(g.edge_index[1].tolist())
    assert {g.primitive_names[i] for i in sources} == {'input', 'pos_enc'}
    ghn = GHN.from_config('ghn2', 'cifar10').eval()
    ghn(model, graph=g)
    assert torch.isfinite(model(torch.randn(2, 3, 8, 8))).all()

import warnings

import pytest
import torch
import torchvision
from torch import nn

import pyg_ghn.graph.trace as trace
from pyg_ghn.datasets.deepnets1m import build_network
from pyg_ghn.deepnets.generator import generate_net
from pyg_ghn.deepnets.predefined import darts, vit
from pyg_ghn.graph import from_module
from pyg_ghn.graph.empty_batch import EmptyBatchGuard, UnsafeOnEmptyBatch
from user_style_nets import HEADS, DartsNetworkCIFAR, original_vit

FIELDS = ['x', 'edge_index', 'edge_index_sp', 'edge_dist_sp', 'shape', 'role', 'cell', 'level_fw', 'level_bw']


def build(model, size, batch_sizes, monkeypatch, extended=False):
    """from_module with only the trace attempts of the given batch sizes."""
    attempts = trace._attempts
    monkeypatch.setattr(trace, '_attempts', lambda *a, **k: [p for p in attempts(*a, **k) if p[1] in batch_sizes])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return from_module(model, size, extended=extended, warn=False)
    finally:
        monkeypatch.setattr(trace, '_attempts', attempts)


def assert_same_graph(a, b):
    for key in FIELDS:
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert a.param_names == b.param_names
    assert a.node_names == b.node_names
    assert a.unpredicted == b.unpredicted


def autograd_names(t):
    out, stack, seen = [], [t.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        out.append(type(fn).__name__)
        stack += [c for c, _ in fn.next_functions]
    return sorted(out)


def on_empty_and_data(module, shape):
    x0 = torch.randn(0, *shape, requires_grad=True)
    with EmptyBatchGuard():
        y0 = module(x0)
    y2 = module(torch.randn(2, *shape, requires_grad=True))
    return autograd_names(y0), autograd_names(y2)


@pytest.mark.parametrize('module', [nn.BatchNorm2d(4), nn.BatchNorm2d(4).eval(),
                                    nn.BatchNorm2d(4, track_running_stats=False), nn.Dropout(0.3),
                                    nn.Dropout(0.0), nn.Dropout(0.3).eval(), nn.Conv2d(4, 4, 3, groups=2)])
def test_guard_records_the_nodes_of_data(module):
    # Without the guard, BatchNorm records clone/mul/add and dropout nothing on an empty batch.
    empty, data = on_empty_and_data(module, (4, 5, 5))
    assert empty == data


def test_guard_stops_at_functions_it_does_not_know():
    x = torch.randn(0, 4, 5, 5)
    with pytest.raises(UnsafeOnEmptyBatch, match='local_response_norm'), EmptyBatchGuard():
        nn.LocalResponseNorm(2)(x)
    lin = nn.Linear(4, 3)
    x = torch.randn(0, 4, 5).transpose(1, 2)  # non-contiguous with data: another linear algorithm
    with pytest.raises(UnsafeOnEmptyBatch, match='linear'), EmptyBatchGuard():
        lin(x)
    x = torch.randn(0, 5, 4)
    with EmptyBatchGuard():  # contiguous 3-D input: the same folded addmm as with data
        assert lin(x).shape == (0, 5, 3)


def test_unsafe_model_falls_back_to_data(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LocalResponseNorm(2), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    with pytest.raises(Exception):
        build(model, (3, 8, 8), {0}, monkeypatch)
    g = from_module(model, (3, 8, 8), warn=False)
    assert_same_graph(g, build(model, (3, 8, 8), {1, 2}, monkeypatch))


def test_sizes_inferred_from_elements_are_resolved_as_on_data():
    x = torch.randn(0, 4, 3, 3)
    with EmptyBatchGuard():
        assert x.view(x.size(0), -1).shape == (0, 36)  # torch alone: "-1 can be any value"
        assert x.reshape(x.shape[0], 2, -1).shape == (0, 2, 18)
        assert torch.reshape(x, [0, -1, 9]).shape == (0, 4, 9)
        assert x.view(-1, 36).shape == (0, 36)  # torch resolves this one itself
        with pytest.raises(UnsafeOnEmptyBatch, match='view/reshape'):
            x.view(0, 5, -1)  # no size fits one sample's 36 elements: data would fail too


# The DARTS repository's network: heads that flatten with x.view(x.size(0), -1) and other idioms, a tuple
# output, an auxiliary head (training mode), dropout; the original DeepNets-1M ViT cell (einsum,
# einops-style rearranges).
STYLES = [pytest.param(head, mode, marks=[] if (head, mode) in {('view', 'train'), ('squeeze', 'eval')}
                       else [pytest.mark.slow]) for head in HEADS for mode in ('train', 'eval')]


@pytest.mark.parametrize('head,mode', STYLES)
def test_models_written_in_other_styles_take_the_fast_path(head, mode, monkeypatch):
    model = getattr(DartsNetworkCIFAR(C=8, layers=5, head=head, drop_prob=0.2), mode)()
    empty = build(model, (3, 32, 32), {0}, monkeypatch)  # raises if the guard refused
    assert_same_graph(empty, build(model, (3, 32, 32), {1, 2}, monkeypatch))


def test_original_vit_cell_takes_the_fast_path(monkeypatch):
    model = original_vit()
    assert_same_graph(build(model, (3, 32, 32), {0}, monkeypatch), build(model, (3, 32, 32), {1}, monkeypatch))


def test_darts_repository_network_gives_the_original_graph(monkeypatch):
    g = build(DartsNetworkCIFAR().eval(), (3, 32, 32), {0}, monkeypatch)
    # spec §1.7, DARTS CIFAR (C=36, 20 cells): 794 nodes, 935 real edges, 293,941 edges in all.
    assert g.num_nodes == 794 and g.edge_index.size(1) == 935
    assert g.edge_index.size(1) + g.edge_index_sp.size(1) == 293941
    assert g.primitive_counts() == {'conv': 242, 'bn': 239, 'sep_conv': 180, 'sum': 80, 'concat': 22,
                                    'dil_conv': 18, 'max_pool': 10, 'input': 1, 'glob_avg': 1, 'bias': 1}


def _deepnets(split, i):
    return build_network(generate_net(split, i), wide=split == 'wide')


CASES = {
    'darts': darts, 'vit': vit,
    **{f'{split}{i}': (lambda s=split, i=i: _deepnets(s, i))
       for split in ('train', 'test', 'wide', 'deep', 'dense', 'bnfree') for i in range(3)},
    **{name: (lambda n=name: torchvision.models.get_model(n, num_classes=10))
       for name in ('resnet18', 'densenet121', 'mobilenet_v3_small', 'efficientnet_b0', 'regnet_y_400mf',
                    'convnext_tiny', 'squeezenet1_0', 'shufflenet_v2_x0_5', 'googlenet', 'mnasnet0_5')},
}


@pytest.mark.parametrize('name', list(CASES))
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_empty_batch_graph_equals_the_graph_on_data(name, mode, monkeypatch):
    torch.manual_seed(0)
    model = getattr(CASES[name](), mode)()
    size = (3, 64, 64) if name == 'googlenet' else (3, 32, 32)
    empty = build(model, size, {0}, monkeypatch)  # raises if the guard refused: these must take the fast path
    assert_same_graph(empty, build(model, size, {1, 2}, monkeypatch))

import json

import numpy as np
import pytest
import torch

from pyg_ghn.deepnets.generator import SPLITS, propose_net_args, op_rejection, sample_net_args
from pyg_ghn.deepnets.genotypes import DARTS, Genotype, ViT
from pyg_ghn.deepnets.network import Cell, Network, cell_specs, count_params, has_output, network_num_params


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope='module')
def sampled():
    """20 accepted architectures per split (same seeds every run)."""
    return {s: [sample_net_args(s, np.random.default_rng([i, 20])) for i in range(20)] for s in SPLITS}


@pytest.mark.parametrize('split', list(SPLITS))
def test_sampled_networks_forward(sampled, split):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for i, net_args in enumerate(sampled[split]):
        net = Network.from_net_args(net_args, num_classes=10, C=8)
        assert net.expected_input_sz == 32 and net._n_cells == net_args['n_cells']
        assert [c._cell_ind for c in net.cells] == list(range(net_args['n_cells']))
        y = net(x)
        assert y.shape == (2, 10) and torch.isfinite(y).all()
        if i % 5 == 0:
            y.sum().backward()
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.cells.parameters())
        has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        if split == 'bnfree':
            assert not has_bn and net_args['norm'] is None
        elif net_args['norm'] == 'bnorm' and not Genotype.from_json(net_args['genotype']).is_vit:
            assert has_bn  # every non-ViT stem has a norm layer
        if split == 'deep':
            assert net_args['n_cells'] >= 10


@pytest.mark.parametrize('split', ['train', 'deep', 'dense'])
def test_stored_num_params_match_modules(sampled, split):
    # the analytic count stored in net_args equals the parameters of the built modules (meta device:
    # real shapes, no memory); a few CIFAR networks are also built for real
    for i, net_args in enumerate(sampled[split][:10]):
        for dset, imagenet in (('cifar10', False), ('imagenet', True)):
            with torch.device('meta'):
                net = Network.from_net_args(net_args, num_classes=10, is_imagenet_input=imagenet)
            assert n_params(net) == net_args['num_params'][dset], (dset, net_args)
        if i < 2:
            assert n_params(Network.from_net_args(net_args, num_classes=10)) == net_args['num_params']['cifar10']


def test_count_params_other_configs():
    rng = np.random.default_rng(0)
    for i in range(30):
        net_args = sample_net_args('train', rng)
        kw = dict(C=int(rng.choice([16, 48])), num_classes=int(rng.choice([10, 100])),
                  is_imagenet_input=bool(i % 2), fc_dim=128, fc_layers=int(rng.integers(0, 4)),
                  auxiliary=bool(i % 3 == 0) and not Genotype.from_json(net_args['genotype']).is_vit)
        with torch.device('meta'):
            net = Network.from_net_args(net_args, **kw)
        assert count_params(net_args, **kw) == n_params(net)
        assert count_params(net_args, method='meta', **kw) == n_params(net)


@pytest.mark.parametrize('imagenet', [False, True])
@pytest.mark.parametrize('stem_type,stem_pool,vit', [(0, False, False), (0, True, False), (1, False, False),
                                                     (0, False, True)])
def test_stems(imagenet, stem_type, stem_pool, vit):
    torch.manual_seed(0)
    C = 8
    net = Network(C, 10, ViT if vit else DARTS, 4, ks=5, is_imagenet_input=imagenet, stem_type=stem_type,
                  stem_pool=stem_pool, preproc=True, C_mult=1 if vit else 2)
    s = 224 if imagenet else 32
    x = torch.randn(2, 3, s, s, requires_grad=True)
    if vit:
        assert not hasattr(net, 'stem') and net.stem0.weight.shape == (C, 3, 16 if imagenet else 3) + (
            (16, ) if imagenet else (3, ))
        h = net.pos_enc(net.stem0(x))
        assert h.shape == (2, C, 14 if imagenet else 11, 14 if imagenet else 11)
    elif stem_type == 0:
        C_stem = C if imagenet else 3 * C  # the CIFAR stem is 3x wider when cells preprocess their inputs
        assert net.stem[0].weight.shape == (C_stem, 3, 5, 5)
        h = net.stem(x)
        r = (56 if imagenet else 32) // (2 if stem_pool else 1)
        assert h.shape == (2, C_stem, r, r)
        assert isinstance(net.stem[2], torch.nn.MaxPool2d if stem_pool else torch.nn.Identity)
    else:
        h0 = net.stem0(x)
        h = net.stem1(h0)
        assert net.stem0[0].weight.shape == (C // 2, 3, 5, 5)
        assert h0.shape == (2, C, 56 if imagenet else 32, 56 if imagenet else 32)
        assert h.shape == (2, C, 28 if imagenet else 16, 28 if imagenet else 16)
    h.square().sum().backward()
    assert x.grad is not None
    assert net(x[:, :, :, :].detach()).shape == (2, 10)


@pytest.mark.parametrize('imagenet', [False, True])
@pytest.mark.parametrize('stem_type,stem_pool', [(0, False), (0, True), (1, False)])
def test_flatten_head(imagenet, stem_type, stem_pool):
    # glob_avg=False flattens the last feature map: 8x8/4x4 (CIFAR) or 14x14/7x7 (ImageNet)
    g = Genotype.make([('conv_3x3', 0), ('sep_conv_3x3', 1)], [2], [('max_pool_3x3', 0), ('conv_1x1', 1)], [2])
    net = Network(8, 10, g, 4, glob_avg=False, fc_layers=2, fc_dim=16, stem_type=stem_type, stem_pool=stem_pool,
                  is_imagenet_input=imagenet)
    s = 224 if imagenet else 32
    side = (7 if stem_type or stem_pool else 14) if imagenet else (4 if stem_type or stem_pool else 8)
    assert net.classifier[0].in_features == 8 * 2 * 2 * side * side  # C * C_mult^2 * side^2
    assert not hasattr(net, 'global_pooling')
    assert net(torch.randn(2, 3, s, s)).shape == (2, 10)


def test_classifier_layout_and_names():
    net = Network(8, 7, DARTS, 5, fc_layers=3, fc_dim=32, norm='bnorm')
    kinds = [type(m).__name__ for m in net.classifier]
    assert kinds == ['Linear', 'ReLU', 'Dropout', 'Linear', 'ReLU', 'Dropout', 'Linear']
    assert net.classifier[-1].out_features == 7 and net.classifier[3].in_features == 32
    names = dict(net.named_parameters())
    for name in ('stem.0.weight', 'stem.1.weight', 'cells.0.preprocess0.op.1.weight',
                 'cells.0._ops.0.op.1.weight', 'cells.0._ops.7.op.2.weight', 'cells.2.preprocess0.conv_1.weight',
                 'classifier.0.weight', 'classifier.6.bias'):
        assert name in names, name
    vit = Network(16, 10, ViT, 3, preproc=False, C_mult=1)
    names = dict(vit.named_parameters())
    for name in ('stem0.weight', 'pos_enc.weight', 'cells.0._ops.1.to_qkv.weight', 'cells.0._ops.1.to_out.0.weight',
                 'cells.0._ops.1.to_out.0.bias', 'cells.0._ops.1.ln1.weight', 'cells.0._ops.1.ff.net.3.bias',
                 'classifier.0.weight'):
        assert name in names, name
    # the `none` op stays in the module list so that op indices (and names) follow the genotype
    assert type(vit.cells[0]._ops[0]).__name__ == 'Zero'


def test_cell_undefined_nodes():
    # node 2 has only `none` ops; it is concatenated, so it becomes zeros shaped like node 3
    g = Genotype.make([('none', 0), ('none', 1), ('conv_3x3', 1), ('skip_connect', 0)], [2, 3],
                      [('none', 0), ('none', 1), ('max_pool_3x3', 1), ('skip_connect', 0)], [2, 3])
    net = Network(8, 10, g, 4).eval()
    cell = net.cells[0]
    s = torch.randn(2, 24, 32, 32)
    out = cell(s, s)
    assert out.shape == (2, 16, 32, 32) and torch.equal(out[:, :8], torch.zeros(2, 8, 32, 32))
    assert has_output(g, 4)
    # both concatenated nodes undefined: the cell (and the network) has no output
    g2 = Genotype.make([('none', 0), ('none', 1), ('none', 2), ('none', 0)], [3],
                       [('none', 0), ('none', 1), ('max_pool_3x3', 1), ('skip_connect', 0)], [3])
    assert Cell(g2, cell_specs(g2, 8, 4)[0][0]).forward(s, s) is None
    assert not has_output(g2, 4)
    with pytest.raises(ValueError):
        Network(8, 10, g2, 4)(torch.randn(2, 3, 32, 32))


def test_has_output_matches_forward():
    # Among unfiltered proposals with `none` ops, the genotype-level check agrees with running the network.
    rng = np.random.default_rng(11)
    x = torch.randn(1, 3, 32, 32)
    n_false = n_true = 0
    while n_false < 4 or n_true < 4:
        net_args = propose_net_args('dense', rng)
        g = Genotype.from_json(net_args['genotype'])
        if op_rejection(g) or 'none' not in g.ops() or net_args['n_cells'] > 8:
            continue
        expected = has_output(g, net_args['n_cells'])
        if expected and n_true >= 4:
            continue
        net = Network.from_net_args(net_args, C=8, norm=None).eval()
        try:
            net(x)
            ok = True
        except ValueError:
            ok = False
        assert ok == expected, net_args
        n_true, n_false = n_true + ok, n_false + (not ok)


def test_auxiliary_head():
    torch.manual_seed(0)
    net = Network(8, 10, DARTS, 8, auxiliary=True)
    assert net.auxiliary_head.classifier.in_features == 768
    out = net(torch.randn(2, 3, 32, 32))
    assert isinstance(out, tuple) and out[0].shape == out[1].shape == (2, 10)
    assert net.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # no auxiliary output in eval
    assert n_params(net) == network_num_params(8, 10, DARTS, 8, auxiliary=True)


def test_trains_and_evaluates():
    torch.manual_seed(0)
    net = Network(8, 4, DARTS, 4, norm='bn-track')
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.running_mean.abs().sum() > 0  # 'bn-track' keeps running statistics for eval
    net.eval()
    assert torch.allclose(net(x[:1]), net(x)[:1], atol=1e-5)  # eval does not depend on the batch


def test_invalid_args():
    with pytest.raises(ValueError):
        Network(8, 10, DARTS, 4, preproc=False)  # 4 concatenated nodes need 1x1 preprocessing
    with pytest.raises(ValueError):
        Network(8, 10, DARTS, 4, stem_type=2)


def test_from_net_args_json():
    net_args = sample_net_args('val', np.random.default_rng(3))
    net_args2 = json.loads(json.dumps(net_args))
    torch.manual_seed(0)
    a = Network.from_net_args(net_args, C=8)
    torch.manual_seed(0)
    b = Network.from_net_args(net_args2, C=8)
    assert a.genotype == b.genotype
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

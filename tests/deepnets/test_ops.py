import pytest
import torch
import torch.nn.functional as F

from pyg_ghn.deepnets.genotypes import PRIMITIVES_DARTS_EXT
from pyg_ghn.deepnets.ops import (ChannelSE, DilConv, FactorizedReduce, PosEnc, ReLUConvBN, SepConv, Stride,
                                  Transformer, Zero, make_op, norm_layer, op_num_params)


def bn_ref(x, bn):
    """Batch-statistics BatchNorm computed by hand."""
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


def test_norm_layer():
    assert isinstance(norm_layer(None, 4), torch.nn.Identity)
    assert isinstance(norm_layer('none', 4), torch.nn.Identity)
    bn = norm_layer('bnorm', 4)
    assert isinstance(bn, torch.nn.BatchNorm2d) and not bn.track_running_stats and bn.running_mean is None
    assert norm_layer('bn-track', 4).track_running_stats
    with pytest.raises(ValueError):
        norm_layer('ln', 4)


@pytest.mark.parametrize('stride', [1, 2])
def test_relu_conv_bn(stride):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 8)
    m = randomize(ReLUConvBN(4, 6, 3, stride, 1, 'bnorm'))
    ref = bn_ref(F.conv2d(F.relu(x), m.op[1].weight, stride=stride, padding=1), m.op[2])
    assert torch.allclose(m(x), ref, atol=1e-5)
    m2 = randomize(ReLUConvBN(4, 6, 7, stride, 3, None, double=True))
    assert [tuple(c.weight.shape) for c in m2.op[1:3]] == [(4, 4, 1, 7), (6, 4, 7, 1)]
    ref = F.conv2d(F.conv2d(F.relu(x), m2.op[1].weight, stride=(1, stride), padding=(0, 3)), m2.op[2].weight,
                   stride=(stride, 1), padding=(3, 0))
    assert torch.allclose(m2(x), ref, atol=1e-5)
    assert isinstance(m2.op[3], torch.nn.Identity)


@pytest.mark.parametrize('stride', [1, 2])
def test_sep_and_dil_conv(stride):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    m = randomize(SepConv(4, 6, 5, stride, 2, 'bnorm'))
    o = m.op
    h = bn_ref(F.conv2d(F.conv2d(F.relu(x), o[1].weight, stride=stride, padding=2, groups=4), o[2].weight), o[3])
    ref = bn_ref(F.conv2d(F.conv2d(F.relu(h), o[5].weight, padding=2, groups=4), o[6].weight), o[7])
    assert torch.allclose(m(x), ref, atol=1e-4)

    m = randomize(DilConv(4, 6, 3, stride, 2, 2, 'bnorm'))
    o = m.op
    ref = bn_ref(F.conv2d(F.conv2d(F.relu(x), o[1].weight, stride=stride, padding=2, dilation=2, groups=4),
                          o[2].weight), o[3])
    assert torch.allclose(m(x), ref, atol=1e-4)


def test_factorized_reduce():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    m = randomize(FactorizedReduce(4, 6, 'bnorm'))
    r = F.relu(x)
    ref = bn_ref(torch.cat([F.conv2d(r, m.conv_1.weight, stride=2), F.conv2d(r[:, :, 1:, 1:], m.conv_2.weight,
                                                                          stride=2)], 1), m.bn)
    assert torch.allclose(m(x), ref, atol=1e-5)
    with pytest.raises(ValueError):
        FactorizedReduce(4, 5)


def test_zero_stride_posenc():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(Zero(1)(x), torch.zeros(2, 3, 8, 8))
    assert torch.equal(Zero(2)(x), torch.zeros(2, 3, 4, 4))
    assert torch.equal(Stride(2)(x), x[:, :, ::2, ::2])
    pe = PosEnc(3, 8)
    assert pe.weight.shape == (1, 3, 8, 8)
    assert torch.equal(pe(x), x + pe.weight)
    assert 'size=8' in repr(pe)


@pytest.mark.parametrize('stride', [1, 2])
def test_channel_se(stride):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, 8)
    m = randomize(ChannelSE(6, stride=stride))
    assert m.fc1.weight.shape == (3, 6) and m.fc2.weight.shape == (6, 3)
    z = x.mean((2, 3))
    g = F.hardswish(F.linear(F.relu(F.linear(z, m.fc1.weight, m.fc1.bias)), m.fc2.weight, m.fc2.bias))
    ref = (x * g[:, :, None, None])[:, :, ::stride, ::stride]
    assert torch.allclose(m(x), ref, atol=1e-6)
    with pytest.raises(ValueError):
        ChannelSE(6, 8)


def test_transformer_matches_reference():
    torch.manual_seed(0)
    C, H, heads = 16, 3, 8
    x = torch.randn(2, C, H, H)
    m = randomize(Transformer(C))
    assert m.to_qkv.bias is None and m.to_out[0].bias is not None
    assert m.ff.net[0].weight.shape == (C, C) and m.ff.net[3].weight.shape == (C, C)
    # reference: per-head attention with the (q | k | v) x (head, dim_head) layout of to_qkv's output
    t = x.flatten(2).transpose(1, 2)  # [B, N, C]
    h = F.layer_norm(t, (C,), m.ln1.weight, m.ln1.bias)
    q, k, v = (h @ m.to_qkv.weight.T).chunk(3, dim=-1)
    split = lambda a: a.reshape(2, H * H, heads, C // heads).transpose(1, 2)  # noqa: E731
    att = F.scaled_dot_product_attention(split(q), split(k), split(v))
    y = att.transpose(1, 2).reshape(2, H * H, C) @ m.to_out[0].weight.T + m.to_out[0].bias + t
    h2 = F.layer_norm(y, (C,), m.ln2.weight, m.ln2.bias)
    y = F.linear(F.gelu(F.linear(h2, m.ff.net[0].weight, m.ff.net[0].bias)), m.ff.net[3].weight, m.ff.net[3].bias) + y
    ref = y.transpose(1, 2).reshape(2, C, H, H)
    assert torch.allclose(m(x), ref, atol=1e-5)
    assert torch.allclose(m(t), y, atol=1e-5)  # token input stays tokens
    with pytest.raises(ValueError):
        Transformer(16, 32)


def test_no_einops_in_ops():
    import inspect

    import pyg_ghn.deepnets.ops as ops
    src = inspect.getsource(ops)
    assert 'import einops' not in src and 'from einops' not in src


@pytest.mark.parametrize('op', PRIMITIVES_DARTS_EXT)
@pytest.mark.parametrize('stride', [1, 2])
def test_every_op_forward_backward(op, stride):
    torch.manual_seed(0)
    C = 16
    m = make_op(op, C, C, stride, 'bnorm')
    assert sum(p.numel() for p in m.parameters()) == op_num_params(op, C, C, stride, 'bnorm')
    assert sum(p.numel() for p in make_op(op, C, C, stride, None).parameters()) == op_num_params(op, C, C, stride, None)
    x = torch.randn(2, C, 8, 8, requires_grad=True)
    y = m(x)
    assert y.shape == (2, C, 8 // stride, 8 // stride)
    if op == 'none':
        assert torch.equal(y, torch.zeros_like(y))
        return
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None, name


def test_op_channel_change_and_pool_padding():
    x = torch.randn(2, 8, 8, 8)
    for op in ('conv_3x3', 'conv_1x1', 'conv_7x1_1x7', 'sep_conv_5x5', 'dil_conv_5x5'):
        assert make_op(op, 8, 12, 2)(x).shape == (2, 12, 4, 4)
    assert make_op('skip_connect', 8, 12, 2)(x).shape == (2, 12, 4, 4)
    assert isinstance(make_op('skip_connect', 8, 8, 1), torch.nn.Identity)
    # average pooling excludes the padding: a corner of a stride-1 3x3 pool averages 4 pixels
    x = torch.randn(1, 1, 4, 4)
    y = make_op('avg_pool_3x3', 1, 1, 1)(x)
    assert torch.allclose(y[0, 0, 0, 0], x[0, 0, :2, :2].mean())
    with pytest.raises(ValueError):
        make_op('conv_9x9_bogus', 1, 1)

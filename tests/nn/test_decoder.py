import pytest
import torch
import torch.nn.functional as F

from pyg_ghn.nn import MLP, ConvDecoder
from pyg_ghn.nn.decoder import bias_class_head, decoder_1d


def _reference_full(dec: ConvDecoder, h: torch.Tensor) -> torch.Tensor:
    """The original ConvDecoder: fc -> view (c0, S, S) -> Conv2d 1x1 -> ReLU -> Conv2d 1x1 -> view
    (N, M0, M1, S, S), with the Linear weights used as 1x1 convolution kernels."""
    m0, m1, s, _ = dec.out_shape
    y = torch.relu(h @ dec.fc[0].weight.t() + dec.fc[0].bias).view(h.size(0), -1, s, s)
    y = torch.relu(F.conv2d(y, dec.conv[0].weight[:, :, None, None], dec.conv[0].bias))
    z = F.conv2d(y, dec.conv[2].weight[:, :, None, None], dec.conv[2].bias)
    return z.view(h.size(0), m0, m1, s, s)


@pytest.fixture
def dec():
    torch.manual_seed(0)
    return ConvDecoder(32, (128, 256), (64, 64, 11, 11), 10).double()


def test_structure(dec):
    shapes = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert shapes == {'fc.0.weight': (15488, 32), 'fc.0.bias': (15488,), 'conv.0.weight': (256, 128),
                      'conv.0.bias': (256,), 'conv.2.weight': (4096, 256), 'conv.2.bias': (4096,),
                      'class_layer_predictor.1.weight': (10, 64), 'class_layer_predictor.1.bias': (10,)}
    assert 'out_shape=(64, 64, 11, 11)' in repr(dec)


@pytest.mark.parametrize('kh,kw', [(1, 1), (3, 3), (1, 7), (7, 1), (5, 2), (11, 11)])
def test_crop_of_full_decoding(dec, kh, kw):
    h = torch.randn(3, 32, dtype=torch.double)
    full = _reference_full(dec, h)
    out = dec(h, kh, kw)
    assert out.shape == (3, 64, 64, kh, kw)
    assert torch.allclose(out, full[..., :kh, :kw], atol=1e-12)  # top-left crop
    # Only the rows of a smaller channel block are evaluated: same values as slicing the full tensor.
    for c_out, c_in in [(10, 14), (1, 64), (64, 1), (33, 20)]:
        part = dec(h, kh, kw, out_channels=c_out, in_channels=c_in)
        assert part.shape == (3, c_out, c_in, kh, kw)
        assert torch.allclose(part, full[:, :c_out, :c_in, :kh, :kw], atol=1e-12)


def test_out_major_layout(dec):
    # Output channel c of the last 1x1 convolution is P[o, i] with c = o * 64 + i.
    h = torch.randn(2, 32, dtype=torch.double)
    y = torch.relu(h @ dec.fc[0].weight.t() + dec.fc[0].bias).view(2, 128, 11, 11)[:, :, 0, 0]
    z = torch.relu(y @ dec.conv[0].weight.t() + dec.conv[0].bias) @ dec.conv[2].weight.t() + dec.conv[2].bias
    p = dec(h, 1, 1)[..., 0, 0]
    for o, i in [(0, 0), (0, 63), (1, 0), (17, 42), (63, 63)]:
        assert torch.allclose(p[:, o, i], z[:, o * 64 + i], atol=1e-12)


def test_forward_multi(dec):
    xs = [torch.randn(n, 32, dtype=torch.double) for n in (2, 1, 3)]
    kernels = [(3, 3), (1, 1), (1, 7)]
    outs = dec.forward_multi(xs, kernels, 48, 32)
    for x, (kh, kw), out in zip(xs, kernels, outs):
        assert torch.allclose(out, dec(x, kh, kw)[:, :48, :32], atol=1e-12)


def test_classifier_formula(dec):
    # W_cls[k, i] = sum_o Wc[k, o] ReLU(D[o, i]) + bc[k], D = the 1x1 decoding (the out axis is mixed).
    h = torch.randn(4, 32, dtype=torch.double)
    d = _reference_full(dec, h)[:, :, :, 0, 0]
    wc, bc = dec.class_layer_predictor[1].weight, dec.class_layer_predictor[1].bias
    expected = torch.einsum('ko,noi->nki', wc, torch.relu(d)) + bc.view(1, -1, 1)
    out = dec.classifier(h)
    assert out.shape == (4, 10, 64)
    assert torch.allclose(out, expected, atol=1e-12)


def test_kernel_too_large(dec):
    with pytest.raises(ValueError, match='tiled'):
        dec(torch.randn(1, 32, dtype=torch.double), 12, 3)


def test_gradients(dec):
    h = torch.randn(2, 32, dtype=torch.double, requires_grad=True)
    dec(h, 3, 3, 20, 10).sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    # Only the evaluated rows of fc / conv.2 receive gradient.
    g_fc = dec.fc[0].weight.grad.view(128, 11, 11, 32)
    assert g_fc[:, :3, :3].abs().sum() > 0 and g_fc[:, 3:].abs().sum() == 0
    g2 = dec.conv[2].weight.grad.view(64, 64, 256)
    assert g2[:20, :10].abs().sum() > 0 and g2[20:].abs().sum() == 0 and g2[:, 10:].abs().sum() == 0


def test_mlp_and_heads():
    torch.manual_seed(0)
    mlp = MLP((32, 16, 32))
    assert [type(m).__name__ for m in mlp] == ['Linear', 'ReLU', 'Linear', 'ReLU']
    x = torch.randn(5, 32)
    assert torch.equal(mlp(x), torch.relu(mlp[2](torch.relu(mlp[0](x)))))
    d1 = decoder_1d(32, 64)
    assert [tuple(p.shape) for p in d1.parameters()] == [(64, 32), (64,), (128, 64), (128,)]
    assert isinstance(d1[-1], torch.nn.Linear)  # no final activation
    bc = bias_class_head(64, 1000)
    v = torch.randn(3, 2, 64)
    assert torch.equal(bc(v), torch.relu(v) @ bc[1].weight.t() + bc[1].bias)

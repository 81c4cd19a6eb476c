import math

import pytest
import torch

from pyg_ghn.nn import fan_in_beta, normalize_bias, normalize_norm_weight, normalize_weight, tile_to_shape
from pyg_ghn.nn.normalize import copy_tiled_, crop_to_shape, is_pos_enc_shape


def _tile_by_index(p: torch.Tensor, t) -> torch.Tensor:
    # W[o, i, y, x] = P[o mod s0, i mod s1, y mod s2, x mod s3], one element at a time.
    out = torch.empty(t, dtype=p.dtype)
    for idx in torch.cartesian_prod(*[torch.arange(d) for d in t]).view(-1, len(t)).tolist():
        out[tuple(idx)] = p[tuple(i % s for i, s in zip(idx, p.shape))]
    return out


@pytest.mark.parametrize('t', [(128, 256), (70, 3), (64, 64), (10, 14), (130, 1), (1, 64)])
def test_tile_2d(t):
    torch.manual_seed(0)
    p = torch.randn(64, 64)
    out = tile_to_shape(p.unsqueeze(0), t)[0]
    assert out.shape == t
    assert torch.equal(out, _tile_by_index(p, t))


@pytest.mark.parametrize("t", [(70, 90, 3, 3), (20, 22, 1, 7), (65, 1, 5, 5), (3, 2, 13, 13), (8, 8, 1, 17)])
def test_tile_4d(t):
    torch.manual_seed(1)
    p = torch.randn(64, 64, min(t[2], 11), min(t[3], 11))  # decoded at most S = 11 per spatial dim
    out = tile_to_shape(p.unsqueeze(0), t)[0]
    assert out.shape == t
    assert torch.equal(out, _tile_by_index(p, t))


def test_tile_matches_original_repeat():
    # The original: crop to min(t, s), repeat by t // s + 1, crop to t (out and in dims).
    torch.manual_seed(2)
    p = torch.randn(64, 64, 3, 3)
    t = (200, 100, 3, 3)
    w = p[:min(t[0], 64), :min(t[1], 64)]
    w = w.repeat(t[0] // 64 + 1, 1, 1, 1)[:t[0]]
    w = w.repeat(1, t[1] // 64 + 1, 1, 1)[:, :t[1]]
    assert torch.equal(tile_to_shape(p.unsqueeze(0), t)[0], w)


def test_tile_dimension_changes():
    p = torch.randn(2, 64, 64, 3, 3)
    assert torch.equal(tile_to_shape(p, (10, 20)), p[:, :10, :20, 0, 0])  # 2-D target from 4-D
    assert torch.equal(tile_to_shape(p, (10, 20, 2)), p[:, :10, :20, :2, 0])  # 3-D target
    q = torch.randn(2, 10, 64)  # classifier (K, 64) for a 4-D (K, C, 1, 1) target
    assert torch.equal(tile_to_shape(q, (10, 100, 1, 1))[..., 0, 0], tile_to_shape(q, (10, 100)))
    v = torch.randn(3, 64)
    assert torch.equal(tile_to_shape(v, (2048,)), v.repeat(1, 32))  # 64 distinct values, repeated


def test_tile_gradient():
    p = torch.randn(1, 64, 64, 3, 3, dtype=torch.double, requires_grad=True)
    g = torch.randn(1, 150, 70, 3, 3, dtype=torch.double)
    (tile_to_shape(p, (150, 70, 3, 3)) * g).sum().backward()
    expected = torch.zeros_like(p)
    for o in range(150):
        for i in range(70):
            expected[0, o % 64, i % 64] += g[0, o, i]
    assert torch.allclose(p.grad, expected)


@pytest.mark.parametrize('shape,beta', [
    ((64, 1, 3, 3), 1.0),  # depthwise
    ((64, 64, 1, 7), 1.0),  # 1 x k
    ((64, 64, 7, 1), 2.0),
    ((64, 64, 3, 3), 2.0),
    ((10, 512), 2.0),  # linear / classifier
    ((64, 1), 2.0),  # 2-D never gets beta = 1
    ((4, 1, 5), 1.0), ((4, 2, 5), 2.0),  # 3-D as (a, b, c, 1)
])
def test_beta(shape, beta):
    assert fan_in_beta(shape) == beta


def test_fan_in_after_tiling():
    torch.manual_seed(3)
    p = torch.randn(1, 64, 64, 3, 3)
    t = (256, 128, 3, 3)  # fan-in of the target: 128 * 9, not 64 * 9
    w = normalize_weight(tile_to_shape(p, t), t)
    assert torch.equal(w, tile_to_shape(p, t) * (2.0 / (128 * 9)) ** 0.5)
    # Scaling commutes with tiling (the GHN scales before tiling).
    assert torch.equal(tile_to_shape(normalize_weight(p, t), t), w)
    dw = (64, 1, 5, 5)
    assert torch.allclose(normalize_weight(p[:, :, :1, :3, :3], (64, 1, 3, 3)), p[:, :, :1] / 3.0)
    assert math.isclose(float(normalize_weight(torch.ones(1, *dw), dw)[0, 0, 0, 0, 0]), (1 / 25) ** 0.5,
                        rel_tol=1e-6)


def test_pos_enc_exception():
    p = torch.randn(1, 1, 64, 11, 11)
    assert is_pos_enc_shape((1, 64, 11, 11)) and not is_pos_enc_shape((1, 64, 7, 7))
    assert normalize_weight(p, (1, 64, 11, 11), pos_enc=True) is p
    # Without the pos_enc flag (a conv that happens to have this shape) the fan-in rule applies.
    assert torch.allclose(normalize_weight(p, (1, 64, 11, 11)), p * (2 / (64 * 121)) ** 0.5)
    # A small position encoding is normalised, as in the original.
    q = torch.randn(1, 1, 64, 7, 7)
    assert not torch.equal(normalize_weight(q, (1, 64, 7, 7), pos_enc=True), q)


def test_squashing():
    x = torch.linspace(-50, 50, 1001, dtype=torch.double)
    g, b = normalize_norm_weight(x), normalize_bias(x)
    assert torch.allclose(g, 2 / (1 + torch.exp(-x / 2)))
    assert torch.allclose(b, torch.tanh(x / 5))
    assert g.min() >= 0 and g.max() <= 2 and b.min() >= -1 and b.max() <= 1
    assert float(normalize_norm_weight(torch.zeros(1))) == 1.0 and float(normalize_bias(torch.zeros(1))) == 0.0


@pytest.mark.parametrize('target', [(128, 192, 3, 3), (100, 70, 5, 5), (1000, 2048), (2048,), (64, 3, 13, 13)])
def test_copy_tiled_equals_materialised_tiling(target):
    torch.manual_seed(0)
    p = torch.randn((1,) + tuple(min(t, 64 if i < 2 else 11) for i, t in enumerate(target)))
    block = crop_to_shape(p, target)[0]
    dest = torch.empty(target)
    copy_tiled_(dest, block)
    assert torch.equal(dest, tile_to_shape(p, target)[0])

"""The GHN's normalisation on real module shapes against the original's ``_normalize`` (spec §2.5 step 8,
§7.8), written out here independently of :mod:`pyg_ghn.nn.normalize` (issue 16, question 1).

The raw prediction of every tensor comes from a twin GHN with ``weight_norm=False`` (the same weights):
the normalised tensor must equal ``raw * sqrt(beta / fan_in)`` for weights, with ``fan_in = p[0].numel()``
of the *tiled target* and ``beta = 1`` iff the weight is 4-D and depthwise-shaped (``shape[1] == 1``) or
1 x k (``shape[2] < shape[3]``); ``2 * sigmoid(raw / 2)`` for BN/LN weights; ``tanh(raw / 5)`` for every
bias; a position encoding unchanged.
"""
import warnings

import torch
from torch import nn

from pyg_ghn.deepnets.ops import PosEnc
from pyg_ghn.graph import from_module
from pyg_ghn.nn import GHN


def _spec_normalize(p: torch.Tensor, is_w: bool, pos_enc: bool = False) -> torch.Tensor:
    # The original's _normalize, applied to the tiled target tensor.
    if p.dim() > 1:
        sz = p.shape
        if len(sz) > 2 and sz[2] >= 11 and sz[0] == 1:
            assert pos_enc
            return p
        no_relu = len(sz) > 2 and (sz[1] == 1 or sz[2] < sz[3])
        beta = 1. if no_relu else 2.
        return p * (beta / p[0].numel()) ** 0.5
    return 2 * torch.sigmoid(0.5 * p) if is_w else torch.tanh(0.2 * p)


class _Zoo(nn.Module):
    """Every weight kind of the issue: stem, depthwise, pointwise, 1 x k / k x 1, grouped, dilated
    depthwise, a wide conv tiled beyond 64 x 64 (fan-in of the target), BN, LayerNorm, a position encoding,
    a hidden Linear with bias and the classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.pos = PosEnc(32, 11)
        self.dw = nn.Conv2d(32, 32, 5, padding=2, groups=32, bias=False)
        self.pw = nn.Conv2d(32, 96, 1, bias=False)
        self.bn = nn.BatchNorm2d(96)
        self.c1x7 = nn.Conv2d(96, 96, (1, 7), padding=(0, 3), bias=False)
        self.c7x1 = nn.Conv2d(96, 96, (7, 1), padding=(3, 0), bias=False)
        self.grouped = nn.Conv2d(96, 96, 3, padding=1, groups=4, bias=False)
        self.dil = nn.Conv2d(96, 96, 3, padding=2, dilation=2, groups=96, bias=False)
        self.wide = nn.Conv2d(96, 160, 3, padding=1)
        self.ln = nn.LayerNorm(160)
        self.fc = nn.Linear(160, 200)
        self.classifier = nn.Linear(200, 10)

    def forward(self, x):
        x = self.pos(self.stem(x)[..., :11, :11])
        x = torch.relu(self.pw(self.dw(x)))
        x = torch.relu(self.bn(x))
        x = self.dil(self.grouped(self.c7x1(self.c1x7(x))))
        x = self.wide(torch.relu(x)).mean((2, 3))
        return self.classifier(torch.relu(self.fc(self.ln(x))))


def test_normalisation_matches_the_original_on_real_shapes():
    torch.manual_seed(0)
    ghn = GHN.from_config('ghn2', 'cifar10').eval()
    raw = GHN(**{**ghn.config, 'weight_norm': False}).eval()
    raw.load_state_dict(ghn.state_dict())
    model = _Zoo()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        graph = from_module(model, (3, 32, 32), max_sp_dist=50, warn=False)
    with torch.no_grad():
        pn, pr = ghn.predict_parameters(graph)[0], raw.predict_parameters(graph)[0]
    expected_names = {n for n, _ in model.named_parameters()}
    assert set(pn) == expected_names, expected_names ^ set(pn)
    norm_weights = {'bn.weight', 'ln.weight'}
    seen_beta1 = set()
    for name, p in model.named_parameters():
        assert pn[name].shape == p.shape, name
        is_w = name.endswith('weight') and (p.dim() > 1 or name in norm_weights)
        want = _spec_normalize(pr[name], is_w, pos_enc=name == 'pos.weight')
        torch.testing.assert_close(pn[name], want, rtol=1e-6, atol=1e-7, msg=name)
        if p.dim() == 4 and (p.shape[1] == 1 or p.shape[2] < p.shape[3]):
            seen_beta1.add(name)
    assert seen_beta1 == {'dw.weight', 'c1x7.weight', 'dil.weight'}
    # The fan-in is the tiled target's: the 160 x 96 x 3 x 3 conv is decoded as 64 x 64 x 3 x 3, tiled,
    # and scaled by sqrt(2 / (96 * 9)), not sqrt(2 / (64 * 9)).
    torch.testing.assert_close(pn['wide.weight'], pr['wide.weight'] * (2 / (96 * 9)) ** 0.5)
    torch.testing.assert_close(pn['grouped.weight'], pr['grouped.weight'] * (2 / (24 * 9)) ** 0.5)
    # ... and the normalised weight's std is its raw std times He's std: norm / He == raw std, exactly.
    he = (2 / (96 * 9)) ** 0.5
    assert abs(float(pn['wide.weight'].std()) / he - float(pr['wide.weight'].std())) < 1e-5

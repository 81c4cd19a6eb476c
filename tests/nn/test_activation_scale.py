"""Activations of a predicted BN-free network keep their scale through depth (issue 16).

:func:`depth_decay` is the measurement a future fix must pass: the std of the last cell's output over the
std of the first cell's input, on one batch of 64 Fashion-MNIST test images (random images where the data
is not installed), BatchNorm-free networks of the BN-FREE split, parameters predicted by the shipped GHN.

Status (benchmarks/README.md, "Why BN-free networks and ViT sit at chance"): it does not hold yet. The
normalisation matches the original exactly (tests/nn/test_normalize_real_shapes.py); the GHNs shipped up to
session 8 had raw decoder outputs of std 0.1-0.3 where the fan-in rule needs about 1, so every conv/linear
weight was 0.1-0.3x He's scale, each layer shrank the signal, and over the 11-13 cells of these networks the
activations fell by 1e-5 to 1e-8 and every image got the classifier bias's class. The raw scale is learned only
from the ~3.3% BN-free training networks (4-5 cells) and layers not followed by BN; an untrained GHN gives
0.11, the GHN shipped until session 7 (1,148 steps) 0.1-0.25, the one of session 7 (6,000 steps) 0.12-0.17,
the one of session 8 (9,800 steps) 0.17-0.30, the one shipped since session 11 (16,600 steps, after both LR
drops) 0.31-0.41: the scale rises with steps. Net 0 now keeps its scale (x0.36 from the first cell to the
last), net 1 overshoots (x16, outside the bound the other way). The GHN shipped since session 13 (that run at
18,157 steps + 2,000 with BN-free training networks oversampled to 25%, + 1,000 at 50%) is alike: 0.35-0.43,
x0.54 and x25, and net 2 (18 cells) still falls to x0.02: the oversampled networks are all 4-5 cells deep. The test is
therefore a strict xfail: when a longer-trained GHN (or a fix) makes it pass, strict mode fails and the marker
must go.
"""
import warnings

import pytest
import torch
from torch import nn

from pyg_ghn.graph import from_module
from pyg_ghn.nn import GHN

NETS = (0, 1)  # BN-FREE architectures with 11 and 13 cells
BOUND = 10.0  # the scale may change by at most 10x either way from the first cell to the last


def _images(n: int = 64) -> torch.Tensor:
    try:
        from pyg_ghn.datasets import image_loaders
        x, _ = next(iter(image_loaders('fashion_mnist', split='test', load_train=False,
                                       test_batch_size=n).eval))
        return x
    except Exception:  # data not installed: the scale question does not depend on the images
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, 3, 32, 32, generator=g)


@torch.no_grad()
def depth_decay(ghn: GHN, net: nn.Module, x: torch.Tensor):
    """(last cell output std / first cell input std, std of the logits across the images) of ``net`` with
    parameters predicted by ``ghn``, BatchNorm (if any) on batch statistics."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        graph = from_module(net, max_sp_dist=ghn.max_sp_dist, warn=False)
    params = ghn.predict_parameters(graph)[0]
    named = dict(net.named_parameters())
    for name, p in params.items():
        named[name].copy_(p)
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats, m.training = False, True
    stds = {}
    cells = list(net.cells)
    def first(m, i, o):  # hooks return None: a returned value would replace the cell's output
        stds.setdefault('first_in', float(i[0].std()))

    def last(m, i, o):
        stds.setdefault('last_out', float(o.std()))

    hooks = [cells[0].register_forward_hook(first), cells[-1].register_forward_hook(last)]
    try:
        out = net(x)
    finally:
        for h in hooks:
            h.remove()
    out = out[0] if isinstance(out, tuple) else out
    return stds['last_out'] / stds['first_in'], float(out.std(0).mean())


@pytest.fixture(scope='module')
def bnfree_nets(tmp_path_factory):
    from pyg_ghn.datasets.deepnets1m import DeepNets1M
    ds = DeepNets1M(str(tmp_path_factory.mktemp('deepnets1m')), 'bnfree', num_nets=2, log=False)  # = the split's first 2
    return [(i, ds.network(i)) for i in NETS]


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    'Predicted BN-free networks do not yet keep their scale through depth: the shipped GHN (18,157 + 2,000 + '
    '1,000 steps, BN-free training nets oversampled to 25% then 50%) predicts raw weights of std 0.35-0.43, so '
    'BN-FREE net 0 (11 cells) keeps its scale (x0.54 from the first cell to the last) but net 1 (13 cells) '
    'overshoots it (x25) and net 2 (18 cells) loses it (x0.02). The normalisation matches the original; the raw '
    'scale is learned only from BN-free training nets, all 4-5 cells deep. See benchmarks/README.md, "Why '
    'BN-free networks and ViT sit at chance".'))
def test_bnfree_activations_keep_scale_through_depth(bnfree_nets):
    ghn = GHN.from_pretrained()
    x = _images()
    for i, net in bnfree_nets:
        assert all(not isinstance(m, nn.BatchNorm2d) for m in net.modules())
        decay, spread = depth_decay(ghn, net, x)
        assert 1 / BOUND < decay < BOUND, f'BN-FREE net {i}: activation std x{decay:.3g} from first to last cell'
        assert spread > 1e-3, f'BN-FREE net {i}: logits std across images {spread:.3g}'


def test_depth_decay_measures_a_known_scale():
    # The measurement itself, on a plain ReLU-conv chain: an untrained GHN predicts weights below He's scale
    # (raw std ~0.1), so a deeper chain decays more, and the network runs unchanged under the hooks.
    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)

        def forward(self, x):
            return self.conv(torch.relu(x))

    class Net(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            self.cells = nn.ModuleList(Cell() for _ in range(n))
            self.classifier = nn.Linear(16, 10)

        def forward(self, x):
            x = self.stem(x)
            for c in self.cells:
                x = c(x)
            return self.classifier(x.mean((2, 3)))

    torch.manual_seed(0)
    ghn = GHN.from_config('ghn2', 'cifar10').eval()
    x = torch.randn(8, 3, 32, 32)
    d2, _ = depth_decay(ghn, Net(2), x)
    d6, _ = depth_decay(ghn, Net(6), x)
    assert d6 < d2 < 1
    net = Net(3)
    _, spread = depth_decay(ghn, net, x)
    assert torch.isfinite(net(x)).all() and net(x).shape == (8, 10)

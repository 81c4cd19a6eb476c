import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from pyg_ghn.train.baselines import DivergedError, he_init_, train_sgd
from pyg_ghn.train.evaluate import bn_eval_mode, calibrate_bn, evaluate, mean_sem

K = 10


def _labels(n=203, seed=0):
    # Imbalanced labels, so that class frequencies are distinguishable.
    g = torch.Generator().manual_seed(seed)
    probs = torch.arange(1, K + 1, dtype=torch.float)
    return torch.multinomial(probs / probs.sum(), n, replacement=True, generator=g)


def _onehot_loader(y, scale=3.0, batch_size=32):
    return DataLoader(TensorDataset(F.one_hot(y, K).float() * scale, y), batch_size=batch_size)


# ---------------------------------------------------------------- accuracy and loss by construction

def test_evaluate_perfect_linear_model():
    y = _labels()
    lin = nn.Linear(K, K)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(K))
        lin.bias.zero_()
    out = evaluate(lin, _onehot_loader(y), topk=(1, 5))
    assert out['top1'] == 100.0 and out['top5'] == 100.0 and out['n'] == len(y)
    ref_loss = -math.log(math.exp(3) / (math.exp(3) + K - 1))
    assert out['loss'] == pytest.approx(ref_loss, rel=1e-5)


class _Constant(nn.Module):
    def __init__(self, logits, as_tuple=False):
        super().__init__()
        self.register_buffer('logits', logits)
        self.as_tuple = as_tuple

    def forward(self, x):
        out = self.logits.expand(x.size(0), -1)
        return (out, None) if self.as_tuple else out


@pytest.mark.parametrize('as_tuple', [False, True])
def test_evaluate_constant_model_gives_class_frequencies(as_tuple):
    y = _labels()
    c = torch.arange(K, dtype=torch.float) * 0.5          # ranking 9 > 8 > ... > 0
    out = evaluate(_Constant(c, as_tuple), _onehot_loader(y), topk=(1, 5, 20))
    counts = np.bincount(y.numpy(), minlength=K)
    assert out['top1'] == pytest.approx(100 * counts[9] / len(y))
    assert out['top5'] == pytest.approx(100 * counts[5:].sum() / len(y))
    assert out['top20'] == 100.0                          # k > number of classes
    log_p = c.numpy() - np.log(np.exp(c.numpy()).sum())
    assert out['loss'] == pytest.approx(-log_p[y.numpy()].mean(), rel=1e-6)
    assert evaluate(_Constant(c), _onehot_loader(y), max_batches=2)['n'] == 64


def test_evaluate_with_functional_params_leaves_model_alone():
    y = _labels()
    lin = nn.Linear(K, K)
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    params = {'weight': torch.eye(K), 'bias': torch.zeros(K)}
    assert evaluate(lin, _onehot_loader(y), params=params)['top1'] == 100.0
    assert all(torch.equal(before[k], v) for k, v in lin.state_dict().items())


# ---------------------------------------------------------------- BatchNorm protocols

class _BNNet(nn.Module):
    def __init__(self, track=True):
        super().__init__()
        self.bn = nn.BatchNorm2d(3, track_running_stats=track)
        self.bn1d = nn.BatchNorm1d(3)
        self.drop = nn.Dropout(0.9)
        self.fc = nn.Linear(3, K)
        with torch.no_grad():
            self.bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
            self.bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
            if track:
                self.bn.running_mean.fill_(5.0)
                self.bn.running_var.fill_(100.0)
            self.bn1d.running_mean.copy_(torch.tensor([0.3, -0.1, 0.2]))
            self.bn1d.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
        self.seen = []
        self.bn.register_forward_hook(lambda m, inp, out: self.seen.append((inp[0].clone(), out.clone())))
        self.bn1d.register_forward_hook(lambda m, inp, out: self.seen.append((inp[0].clone(), out.clone())))

    def forward(self, x):
        return self.fc(self.drop(self.bn1d(self.bn(x).mean((2, 3)))))


def _image_loader(n=96, batch_size=16, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 6, 6, generator=g) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1) + shift
    x = x + torch.arange(n).view(n, 1, 1, 1) / n                # batches differ in their mean
    return DataLoader(TensorDataset(x, torch.randint(0, K, (n,), generator=g)), batch_size=batch_size)


def _snapshot(model):
    return ([m.training for m in model.modules()],
            {k: v.clone() for k, v in model.state_dict().items()},
            [(m.track_running_stats, m.momentum) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)])


def _same(a, b):
    return a[0] == b[0] and a[2] == b[2] and a[1].keys() == b[1].keys() and \
        all(torch.equal(a[1][k], b[1][k]) for k in a[1])


@pytest.mark.parametrize('train_mode', [True, False])
def test_bn_batch_mode_uses_batch_statistics_and_restores(train_mode):
    model = _BNNet().train(train_mode)
    before = _snapshot(model)
    loader = _image_loader()
    res = evaluate(model, loader, bn_mode='batch')
    assert _same(before, _snapshot(model))
    bn_calls, bn1d_calls = model.seen[0::2], model.seen[1::2]
    assert len(bn_calls) == len(loader)
    for x, out in bn_calls:   # BatchNorm2d: statistics of the test batch, buffers not used
        ref = F.batch_norm(x, None, None, model.bn.weight, model.bn.bias, training=True, eps=model.bn.eps)
        assert torch.allclose(out, ref, atol=1e-5)
        assert not torch.allclose(out, F.batch_norm(x, model.bn.running_mean, model.bn.running_var,
                                                    model.bn.weight, model.bn.bias, False), atol=1e-2)
    for x, out in bn1d_calls:  # BatchNorm1d untouched, as the original: eval mode, running statistics
        ref = F.batch_norm(x, model.bn1d.running_mean, model.bn1d.running_var, model.bn1d.weight,
                           model.bn1d.bias, False, eps=model.bn1d.eps)
        assert torch.allclose(out, ref, atol=1e-5)
    # Dropout(0.9) is off: a second run gives the same loss, whatever the module's own mode.
    assert evaluate(model, loader, bn_mode='batch')['loss'] == pytest.approx(res['loss'], abs=1e-6)


def test_bn_as_is_mode_keeps_norm_modes():
    model = _BNNet().eval()
    loader = _image_loader()
    evaluate(model, loader, bn_mode='as_is')
    for x, out in model.seen[0::2]:     # eval-mode BN: running statistics
        ref = F.batch_norm(x, model.bn.running_mean, model.bn.running_var, model.bn.weight, model.bn.bias,
                           False, eps=model.bn.eps)
        assert torch.allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError, match='bn_mode'):
        evaluate(model, loader, bn_mode='foo')


@pytest.mark.parametrize('track', [True, False])
def test_bn_running_mode_calibrates_cumulative_average(track):
    model = _BNNet(track=track).train()
    before = _snapshot(model)
    calib = _image_loader(n=80, batch_size=16, seed=1, shift=2.0)
    batches = [x for x, _ in calib][:3]
    mu = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in batches]).mean(0)

    with pytest.raises(ValueError, match='calibrate_loader'):
        evaluate(model, _image_loader(), bn_mode='running')
    evaluate(model, _image_loader(), bn_mode='running', calibrate_loader=calib, calibrate_batches=3)
    assert _same(before, _snapshot(model))                       # restored, buffers included
    if not track:
        assert model.bn.running_mean is None and model.bn.running_var is None
    evals = model.seen[6:]                                       # 3 calibration forwards x 2 BN layers
    for x, out in evals[0::2]:
        assert torch.allclose(out, F.batch_norm(x, mu, var, model.bn.weight, model.bn.bias, False,
                                                eps=model.bn.eps), atol=1e-4)

    # restore=False keeps the calibrated statistics in the model (and its training flags as they were).
    evaluate(model, _image_loader(), bn_mode='running', calibrate_loader=calib, calibrate_batches=3,
             restore=False)
    assert torch.allclose(model.bn.running_mean, mu, atol=1e-5)
    assert torch.allclose(model.bn.running_var, var, atol=1e-5)
    assert int(model.bn.num_batches_tracked) == 3 and model.bn.momentum is None and model.training
    assert torch.equal(model.bn1d.running_mean, torch.tensor([0.3, -0.1, 0.2]))  # not in bn_types


def test_calibrate_bn_directly_and_bn_eval_mode_context():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Dropout(0.5))
    calib = _image_loader(n=32, batch_size=8, seed=2)
    calibrate_bn(model, calib, num_batches=100)                  # fewer batches than asked: uses all 4
    x_all = torch.cat([x for x, _ in calib])
    batches = x_all.split(8)
    assert torch.allclose(model[0].running_mean, torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0),
                          atol=1e-5)
    assert model.training and model[0].training                 # modes as they were
    with bn_eval_mode(model, 'batch'):
        assert model[0].training and not model[0].track_running_stats and not model[1].training
    assert model[0].track_running_stats and model[1].training


# ---------------------------------------------------------------- mean and standard error

def test_mean_sem():
    assert mean_sem([1, 2, 3, 4]) == pytest.approx((2.5, math.sqrt(5 / 3) / 2))
    scipy_stats = pytest.importorskip('scipy.stats')
    v = np.random.RandomState(0).rand(37) * 100
    m, s = mean_sem(v)
    assert m == pytest.approx(v.mean()) and s == pytest.approx(scipy_stats.sem(v))
    m, s = mean_sem([66.9])
    assert m == 66.9 and math.isnan(s)
    with pytest.raises(ValueError):
        mean_sem([])


# ---------------------------------------------------------------- baselines

def test_he_init_pytorch_mode():
    model = nn.Sequential(nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.Flatten(), nn.Linear(256, 128))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
        model[1].running_mean.fill_(3.0)
    rng = torch.get_rng_state()
    he_init_(model, seed=0)
    assert torch.equal(rng, torch.get_rng_state())              # the global RNG is not consumed
    for lin, fan_in in ((model[0], 16 * 9), (model[3], 256)):
        bound = 1 / math.sqrt(fan_in)
        assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
        assert lin.bias.abs().max() <= bound
    assert torch.equal(model[1].weight, torch.ones(32)) and torch.equal(model[1].bias, torch.zeros(32))
    assert torch.equal(model[1].running_mean, torch.zeros(32))
    w0 = model[0].weight.clone()
    assert torch.equal(he_init_(model, seed=0)[0].weight, w0)
    assert not torch.equal(he_init_(model, seed=1)[0].weight, w0)


def test_he_init_fan_in_mode_and_warning():
    model = nn.Sequential(nn.Linear(1024, 512), nn.Conv2d(64, 64, 3))
    he_init_(model, seed=0, mode='fan_in')
    assert model[0].weight.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.01)
    assert model[1].weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.02)
    assert torch.equal(model[0].bias, torch.zeros(512))

    class PosEnc(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.full((4,), 3.0))

    with pytest.warns(UserWarning, match='no reset_parameters'):
        m = he_init_(nn.Sequential(PosEnc(), nn.Linear(4, 4)), seed=0)
    assert torch.equal(m[0].weight, torch.full((4,), 3.0))


FMNIST = '/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz'


def _tiny_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(256, 10))


@pytest.mark.skipif(not osp.isfile(FMNIST), reason='apt-get install -y dataset-fashion-mnist')
def test_train_sgd_on_fashion_mnist_slice():
    from pyg_ghn.datasets.images import FashionMNIST
    train = Subset(FashionMNIST(split='train', augment=False), range(1920))
    val = DataLoader(Subset(FashionMNIST(split='val'), range(640)), batch_size=64)

    def run():
        model = he_init_(_tiny_cnn(), seed=0)
        loader = DataLoader(train, batch_size=96, shuffle=True, generator=torch.Generator())
        acc0 = evaluate(model, val)['top1']
        losses = train_sgd(model, loader, steps=40, seed=0)   # paper defaults; 2 passes over 20 batches
        return model, losses, acc0

    model, losses, acc0 = run()
    assert len(losses) == 40 and model.training                 # mode restored
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert first > 2.0 and last < 1.3, (first, last)              # measured: 2.24 -> 0.97
    acc = evaluate(model, val)['top1']
    assert acc0 < 25 and acc > 65, (acc0, acc)                   # measured: 7.2% -> 75.0%
    _, losses2, _ = run()
    assert losses2 == losses                                    # deterministic with a seed


def test_train_sgd_schedule_and_errors():
    x = torch.randn(64, 4)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)
    lin = nn.Linear(4, 2)
    with pytest.raises(ValueError, match='schedule'):
        train_sgd(lin, loader, 3, schedule='step')
    # Constant lr without momentum/decay/clipping: one step = w - lr * grad, checked by hand.
    w0 = lin.weight.detach().clone().requires_grad_()
    b0 = lin.bias.detach().clone().requires_grad_()
    xb, yb = next(iter(loader))
    gw, gb = torch.autograd.grad(F.cross_entropy(xb @ w0.t() + b0, yb), [w0, b0])
    train_sgd(lin, loader, 1, lr=0.1, momentum=0, weight_decay=0, grad_clip=None, schedule='constant')
    assert torch.allclose(lin.weight, w0 - 0.1 * gw, atol=1e-6)
    assert torch.allclose(lin.bias, b0 - 0.1 * gb, atol=1e-6)

    class Bad(nn.Module):
        def forward(self, x):
            return torch.full((x.size(0), 2), float('nan'), requires_grad=True)

    bad = Bad()
    bad.p = nn.Parameter(torch.zeros(1))
    with pytest.raises(DivergedError, match='the loss is nan at step 0'):
        train_sgd(bad, loader, 2)
    assert issubclass(DivergedError, RuntimeError)  # what the original raised; callers catching it still do


def test_train_sgd_callback_gives_every_budget_of_one_constant_run():
    # The SGD baselines of reproduce.py read 100 steps, 500 steps and 1 epoch off one constant-LR run: the
    # model after t updates of a long run must be the model of a t-step run, even when the callback
    # evaluates on a shuffled DataLoader (which draws from the global RNG) and switches modes.
    x = torch.randn(96, 4)
    data = TensorDataset(x, (x[:, 0] + 0.5 * x[:, 1] > 0).long())

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))

    def loader():
        return DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator())

    probe = DataLoader(data, batch_size=32, shuffle=True)   # global-RNG shuffling, as an evaluation would
    snapshots, seen = {}, []

    def callback(t):
        seen.append(t)
        with torch.random.fork_rng():
            evaluate(net, probe)
        if t in (3, 8):
            snapshots[t] = {k: v.clone() for k, v in net.state_dict().items()}

    net = model()
    losses = train_sgd(net, loader(), 10, schedule='constant', seed=1, callback=callback)
    assert seen == list(range(1, 11)) and len(losses) == 10 and net.training
    for t in (3, 8):
        ref = model()
        assert train_sgd(ref, loader(), t, schedule='constant', seed=1) == losses[:t]
        for k, v in ref.state_dict().items():
            assert torch.equal(v, snapshots[t][k]), (t, k)
    # Without fork_rng the same callback changes the run: the test above can tell.
    net2 = model()
    train_sgd(net2, loader(), 10, schedule='constant', seed=1, callback=lambda t: evaluate(net2, probe))
    assert not torch.equal(net2[0].weight, net[0].weight)

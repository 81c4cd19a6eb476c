import json
import os.path as osp
import time

import pytest
import torch

from pyg_ghn.datasets.images import FASHION_MNIST_ROOT
from pyg_ghn.properties import ArchPropertyDataset, load_results
from pyg_ghn.properties.measure import add_gaussian_noise, convergence_step, main, time_inference

needs_fmnist = pytest.mark.skipif(not osp.isdir(FASHION_MNIST_ROOT), reason='Fashion-MNIST not installed')
TINY = ['--num-nets', '2', '--C', '8', '--steps', '4', '--window', '2', '--threshold', '0.5', '--batch-size', '16',
        '--num-test', '48', '--test-batch-size', '16', '--time-batch', '8', '--time-reps', '2', '--no-progress']


def test_convergence_step():
    acc = [0.1, 0.5, 0.9, 0.7, 1.0, 1.0]
    # Windowed means (window 2) from step 2: 0.3, 0.7, 0.8, 0.85, 1.0.
    assert convergence_step(acc, 0.75, 2) == 4
    assert convergence_step(acc, 0.7, 2) == 3
    assert convergence_step(acc, 0.95, 2) == 6
    assert convergence_step(acc, 0.99, 6) is None
    assert convergence_step(acc, 0.1, 1) == 1


def test_gaussian_noise_on_pixels():
    g = torch.Generator().manual_seed(0)
    images = torch.full((200, 1, 28, 28), 128, dtype=torch.uint8)
    noisy = add_gaussian_noise(images, 0.08, g)
    d = noisy - 128 / 255
    assert abs(d.mean().item()) < 2e-3 and d.std().item() == pytest.approx(0.08, rel=0.02)
    black = add_gaussian_noise(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), 0.08, g)
    assert black.min().item() == 0 and (black == 0).float().mean().item() == pytest.approx(0.5, abs=0.1)  # clipped


class _Sleeper(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(3)
        self.calls, self.threads, self.modes = 0, [], []

    def forward(self, x):
        self.calls += 1
        self.threads.append(torch.get_num_threads())
        self.modes.append((self.training, self.bn.training))
        time.sleep(0.03)
        return self.bn(x)


def test_time_inference_is_the_median_with_one_thread():
    m = _Sleeper()
    n = torch.get_num_threads()
    t = time_inference(m, torch.randn(2, 3, 4, 4), reps=3)
    assert 0.03 <= t < 0.3
    assert m.calls == 4 and set(m.threads) == {1}  # one warm-up, three timed
    assert set(m.modes) == {(False, True)}  # eval mode, BatchNorm with batch statistics
    assert torch.get_num_threads() == n and m.training


@needs_fmnist
def test_measure_two_tiny_nets_end_to_end_and_resume(tmp_path):
    out = str(tmp_path / 'props.json')
    main(['--split', 'val', '--out', out] + TINY)
    state = load_results(out)
    recs = state['results']
    assert [(r['split'], r['idx']) for r in recs] == [('val', 0), ('val', 1)]
    for r in recs:
        assert 'error' not in r
        assert 0 <= r['clean_acc'] <= 100 and 0 <= r['noise_acc'] <= 100
        # 48 images: accuracies are multiples of 100/48.
        assert (r['clean_acc'] * 48 / 100) == pytest.approx(round(r['clean_acc'] * 48 / 100))
        assert 0 < r['time'] < 60_000  # milliseconds per batch of 8
        assert 2 <= r['converge_time'] <= 4 and isinstance(r['converged'], bool)
        assert r['net_args']['C'] == 8
    assert state['config']['steps'] == 4 and state['config']['noise_std'] == 0.08
    assert state['device'] == 'cpu'
    # Resuming skips what is done (records are unchanged), a larger --num-nets only adds the new ones, and
    # --start measures a later range into the same file.
    main(['--split', 'val', '--out', out] + TINY)
    assert load_results(out)['results'] == recs
    main(['--split', 'val', '--out', out] + TINY + ['--num-nets', '3'])
    main(['--split', 'val', '--out', out] + TINY + ['--start', '5', '--num-nets', '1'])
    grown = load_results(out)['results']
    assert grown[:2] == recs and [(r['split'], r['idx']) for r in grown[2:]] == [('val', 2), ('val', 5)]
    # Same seed, same results: a fresh file reproduces the accuracies and convergence.
    out2 = str(tmp_path / 'again.json')
    main(['--split', 'val', '--out', out2] + TINY)
    for a, b in zip(recs, load_results(out2)['results']):
        assert (a['clean_acc'], a['noise_acc'], a['converge_time'], a['final_loss']) == \
               (b['clean_acc'], b['noise_acc'], b['converge_time'], b['final_loss'])
    # Other settings into the same file are refused, and so is another device: its times are not comparable.
    with pytest.raises(ValueError, match='other settings'):
        main(['--split', 'val', '--out', out, '--seed', '1'] + TINY)
    gpu = dict(load_results(out), device='cuda (NVIDIA H200)')
    gpu_file = str(tmp_path / 'gpu.json')
    json.dump(gpu, open(gpu_file, 'w'))
    with pytest.raises(ValueError, match=r"measured on 'cuda \(NVIDIA H200\)', this run is on 'cpu'"):
        main(['--split', 'val', '--out', gpu_file] + TINY + ['--num-nets', '4'])
    assert load_results(gpu_file) == gpu
    # The file feeds the dataset.
    ds = ArchPropertyDataset(str(tmp_path / 'ds'), out, log=False)
    assert len(ds) == 4 and ds.y[:, 0].tolist() == pytest.approx([r['clean_acc'] for r in grown])

"""examples/finetune.py runs end to end with --tiny (subprocess)."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from property_helpers import ROOT, run_example as run
from pyg_ghn.datasets.images import FASHION_MNIST_ROOT

needs_fmnist = pytest.mark.skipif(not osp.isdir(FASHION_MNIST_ROOT), reason='Fashion-MNIST not installed')


@needs_fmnist
def test_finetune_tiny(tmp_path):
    out = run('finetune.py', '--out', str(tmp_path), '--seeds', '2')
    assert 'Fashion-MNIST test accuracy' in out
    res = json.load(open(tmp_path / 'results.json'))['results']
    assert set(res) == {f'{n} / {i}' for n in ('resnet50', 'vit', 'darts') for i in ('He', 'ghn2 (random)')}
    for r in res.values():
        assert len(r['acc']) == 2 and all(0 <= x <= 100 for x in r['acc'])
        # The setting used is the best of the grid on the held-out images (the first one on ties).
        assert [(t['lr'], t['wd']) for t in r['tuning']] == [(0.01, 1e-4), (0.025, 1e-4)]
        best = max(r['tuning'], key=lambda t: t['held_out_acc'])
        assert (r['lr'], r['wd']) == (best['lr'], best['wd'])


@needs_fmnist
def test_finetune_one_initialisation(tmp_path):
    # He init does not depend on the GHN: --inits ghn fine-tunes only from predicted parameters.
    run('finetune.py', '--out', str(tmp_path), '--seeds', '2', '--nets', 'vit', '--inits', 'ghn')
    res = json.load(open(tmp_path / 'results.json'))['results']
    assert list(res) == ['vit / ghn2 (random)'] and len(res['vit / ghn2 (random)']['acc']) == 2
    # --first-seed adds seeds to an earlier run: seed 1 alone gives the second run's number.
    run('finetune.py', '--out', str(tmp_path / 'more'), '--seeds', '1', '--first-seed', '1', '--nets', 'vit',
        '--inits', 'ghn')
    more = json.load(open(tmp_path / 'more' / 'results.json'))['results']
    assert more['vit / ghn2 (random)']['acc'] == res['vit / ghn2 (random)']['acc'][1:]


def test_finetune_rejects_a_held_out_set_as_large_as_the_shots():
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'examples', 'finetune.py'), '--per-class', '5',
                           '--held-out', '5'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and 'must be at least 0 and below --per-class (5)' in proc.stderr


def test_finetune_rejects_settings_it_cannot_tune_or_run():
    def fails(*args):
        proc = subprocess.run([sys.executable, osp.join(ROOT, 'examples', 'finetune.py'), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        return proc.stderr
    assert 'no images to choose among several --lrs / --wds' in fails('--held-out', '0')
    assert '--seeds must be at least 1' in fails('--seeds', '0')

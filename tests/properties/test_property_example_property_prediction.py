"""examples/property_prediction.py runs end to end with --tiny (subprocess)."""
import json
import os.path as osp

import pytest

from property_helpers import run_example as run
from pyg_ghn.datasets.images import FASHION_MNIST_ROOT

needs_fmnist = pytest.mark.skipif(not osp.isdir(FASHION_MNIST_ROOT), reason='Fashion-MNIST not installed')


@needs_fmnist
def test_property_prediction_tiny(tmp_path):
    out = run('property_prediction.py', '--out', str(tmp_path))
    assert "Kendall's tau" in out
    res = json.load(open(tmp_path / 'results.json'))
    assert res['n_train'] == 6 and res['n_test'] == 5
    methods = res['results']
    assert set(methods) == {'ghn2 (random) + SVR', 'GIN', 'Directed GCN (NeuPred-like)', 'GHN-2 layer (from scratch)'}
    for m in methods.values():
        assert set(m) == {'clean_acc', 'noise_acc', 'time', 'converge_time'}
        for r in m.values():
            assert len(r['tau']) == 2 and all(t != t or -1 <= t <= 1 for t in r['tau'])  # NaN or a tau
    assert osp.getsize(tmp_path / 'property_prediction.png') > 10_000
    # The measured files are there and complete (6 val + 5 test networks).
    for split, n in (('val', 6), ('test', 5)):
        recs = json.load(open(tmp_path / f'properties_{split}.json'))['results']
        assert [r['idx'] for r in recs] == list(range(n))

    # The GNN baselines spread over worker processes give the same table.
    run('property_prediction.py', '--out', str(tmp_path / 'workers'), '--workers', '2', '--properties',
        str(tmp_path / 'properties_val.json'), str(tmp_path / 'properties_test.json'))
    again = json.load(open(tmp_path / 'workers' / 'results.json'))['results']
    for m in ('GIN', 'Directed GCN (NeuPred-like)', 'GHN-2 layer (from scratch)'):
        assert again[m] == methods[m], m

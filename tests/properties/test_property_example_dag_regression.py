"""examples/dag_regression.py runs end to end with --tiny (subprocess)."""
import json

from property_helpers import run_example as run


def test_dag_regression_tiny(tmp_path):
    out = run('dag_regression.py', '--out', str(tmp_path))
    res = json.load(open(tmp_path / 'results.json'))['results']
    assert set(res) == {'mean predictor', 'ghn2', 'ghn1', 'gin'}
    for k in ('ghn2', 'ghn1', 'gin'):
        assert res[k]['last_epoch_loss'] < res[k]['first_epoch_loss']
    assert res['ghn2']['r2'] > res['mean predictor']['r2'] + 0.2
    assert 'R^2' in out

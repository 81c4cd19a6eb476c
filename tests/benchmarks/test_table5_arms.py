"""benchmarks/table5_arms.py: an arm's records are paired with the long run's at the same step, and only
with records evaluated the same way; anything it cannot pair is reported, never guessed."""
import importlib.util
import json
import os
import statistics

import pytest

_PATH = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'table5_arms.py')


def _table5():
    spec = importlib.util.spec_from_file_location('table5_arms', _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rec(method, net, top1, max_batches=50):
    return {'method': method, 'split': 'test', 'net': str(net), 'top1': top1, 'max_batches': max_batches}


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f)


@pytest.fixture
def runs(tmp_path):
    base = tmp_path / 'ghn2_cpu'
    _write(str(base / 'curve.json'), {'runs': {'ghn2_cpu': {'flags': '', 'points': {
        '2': {'steps': 1689, 'top1': 0.}, '3': {'steps': 3202, 'top1': 0.}}}}})
    ghn2 = [60., 50., 70., 40.]
    _write(str(base / 'eval.json'), {'records': [_rec('ghn2_cpu @ 2h', i, t) for i, t in enumerate(ghn2)]
                                     + [_rec('ghn2_cpu @ 3h', i, t + 5) for i, t in enumerate(ghn2)]})
    arm = tmp_path / 'table5' / 'mlp'
    mlp = [58., 51., 65., 41.]
    _write(str(arm / 'eval.json'), {'records': [_rec('mlp @ 1689 steps', i, t) for i, t in enumerate(mlp)]
                                    # another protocol on net 3: left out of the pairing
                                    + [_rec('mlp @ 1689 steps', 4, 30., max_batches=20)]
                                    + [_rec('mlp @ 5000 steps', i, 60.) for i in range(4)]
                                    + [_rec('He init', i, 10.) for i in range(4)]})
    return str(base), str(arm), ghn2, mlp


def test_pairs_at_equal_steps(runs):
    base, arm, ghn2, mlp = runs
    rows, unmatched = _table5().compare(base, [arm])
    assert len(rows) == 1
    row = rows[0]
    assert (row['arm'], row['steps'], row['n']) == ('mlp', 1689, 4)
    diff = [g - m for g, m in zip(ghn2, mlp)]  # +2, -1, +5, -1
    assert row['diff'][0] == pytest.approx(statistics.mean(diff))
    assert row['diff'][1] == pytest.approx(statistics.stdev(diff) / 2)
    assert row['ahead'] == 2
    assert row['arm_top1'][0] == pytest.approx(statistics.mean(mlp))
    assert row['ghn2_top1'][0] == pytest.approx(statistics.mean(ghn2))
    # the 5,000-step point has no twin in the long run's curve
    assert unmatched == ['mlp @ 5000 steps: the long run has no curve point at step 5000']
    assert '| mlp | 1,689 | 4 | 53.8 ± 5.1 | 55.0 ± 6.5 | +1.2 ± 1.4 | 2 of 4 |' in _table5().table(rows)


def test_missing_arm_results_are_reported(runs, tmp_path):
    base = runs[0]
    rows, unmatched = _table5().compare(base, [str(tmp_path / 'table5' / 'ghn1')])
    assert rows == [] and unmatched == [f"{tmp_path / 'table5' / 'ghn1'}: no eval.json"]

"""benchmarks/paired.py: two methods are paired on the networks both were evaluated on with the same test
images, the statistics match a direct computation, and what cannot be paired is an error, not a guess."""
import importlib.util
import json
import os
import statistics

import pytest

_PATH = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'paired.py')


def _paired_module():
    spec = importlib.util.spec_from_file_location('paired', _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rec(method, net, top1, split='test', max_batches=20):
    return {'method': method, 'split': split, 'net': str(net), 'top1': top1, 'max_batches': max_batches}


@pytest.fixture
def files(tmp_path):
    a = [_rec('GHN old', i, t) for i, t in enumerate([60., 50., 70., 40., 55.])]
    a.append(_rec('GHN old', 0, 11., split='bnfree'))
    b = [_rec('GHN new', i, t) for i, t in enumerate([62., 49., 74., 43.])]
    b.append(_rec('GHN new', 4, 99., max_batches=50))   # other images: must not be paired
    b.append(_rec('GHN new', 7, 80.))                     # one side only
    pa, pb = tmp_path / 'a.json', tmp_path / 'b.json'
    pa.write_text(json.dumps({'records': a}))
    pb.write_text(json.dumps({'records': b}))
    return str(pa), str(pb)


def test_paired_statistics_match_a_direct_computation(files):
    m = _paired_module()
    r = m.paired(m.by_net(m.records(files[0]), 'GHN old'), m.by_net(m.records(files[1]), 'GHN new'))
    x, y = [60., 50., 70., 40.], [62., 49., 74., 43.]
    d = [v - u for u, v in zip(x, y)]
    assert r['n'] == 4 and r['nets'] == ['0', '1', '2', '3']
    assert r['left_out'] == 2                       # net 4 (different max_batches) and net 7 (one side)
    assert r['a'] == pytest.approx((statistics.mean(x), statistics.stdev(x) / 2))
    assert r['b'] == pytest.approx((statistics.mean(y), statistics.stdev(y) / 2))
    assert r['diff'] == pytest.approx((statistics.mean(d), statistics.stdev(d) / 2))
    assert r['ahead'] == 3


def test_split_selects_records(files):
    m = _paired_module()
    assert m.by_net(m.records(files[0]), 'GHN old', 'bnfree') == {'0': (11., 20)}
    with pytest.raises(ValueError, match='fewer than 2 networks'):
        m.paired(m.by_net(m.records(files[0]), 'GHN old', 'bnfree'),
                 m.by_net(m.records(files[1]), 'GHN new', 'bnfree'))


def test_cli_prints_the_paired_difference(files, capsys):
    m = _paired_module()
    m.main([files[0], 'GHN old', files[1], 'GHN new'])
    out = capsys.readouterr().out
    assert '4 networks paired (2 left out' in out
    assert 'B − A (paired): +2.00 ± 1.08, B ahead on 3 of 4' in out   # d = 2, -1, 4, 3


def test_cli_unknown_method_names_the_known_ones(files):
    m = _paired_module()
    with pytest.raises(SystemExit, match=r"no 'test' records of method 'GHN nwe'.*\['GHN new'\]"):
        m.main([files[0], 'GHN old', files[1], 'GHN nwe'])

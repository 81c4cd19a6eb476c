"""benchmarks/reproduce.py's results file: runs that write the same file at once keep each other's records.

Two evaluations of one file side by side (a long background table and a quick check) used to rewrite the
whole file from each process's own copy, so the later writer dropped what the other had added since it
started (80 of 100 records of a real run were lost that way)."""
import importlib.util
import json
import multiprocessing as mp
import os

import pytest

fcntl = pytest.importorskip('fcntl')  # the merge locks with flock (POSIX)

_PATH = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'reproduce.py')


def _reproduce():
    spec = importlib.util.spec_from_file_location('reproduce', _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rec(method, net, **extra):
    return {'method': method, 'split': 'test', 'net': str(net), 'top1': 50.0, 'max_batches': 20, **extra}




def test_save_merges_with_the_file_not_the_process_copy(tmp_path):
    rp = _reproduce()
    path = str(tmp_path / 'results.json')
    mine = rp.load(path)  # this run starts: empty
    mine['protocol'] = {'max_batches': 20}
    other = rp.load(path)  # another run starts too
    other['protocol'] = {'max_batches': 20}
    rp.save(other, path, [_rec('GHN-2', 0)])
    rp.save(mine, path, [_rec('He init', 0)])  # its copy never saw the other's record
    on_disk = json.load(open(path))['records']
    assert [(r['method'], r['net']) for r in on_disk] == [('GHN-2', '0'), ('He init', '0')]
    assert mine['records'] == on_disk  # the run now sees both (its table includes the other's)
    rp.save(other, path, [_rec('GHN-2', 0)])  # a record already there is not added twice
    assert len(json.load(open(path))['records']) == 2
    # an SGD budget is part of a record's identity: two budgets of one net are two records
    rp.save(mine, path, [_rec('SGD', 0, sgd_steps=10), _rec('SGD', 0, sgd_steps=100)])
    assert len(json.load(open(path))['records']) == 4


def _writer(path, method, n, barrier):
    rp = _reproduce()
    barrier.wait()  # both runs start from the same (empty) file, as two evaluations launched together
    results = rp.load(path)
    results['protocol'] = {'max_batches': 20}
    for i in range(n):
        rp.save(results, path, [_rec(method, i)])


def test_two_processes_writing_one_file_keep_all_records(tmp_path):
    path = str(tmp_path / 'results.json')
    ctx = mp.get_context('spawn')
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, m, 40, barrier)) for m in ('a', 'b')]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    recs = json.load(open(path))['records']
    assert sorted((r['method'], int(r['net'])) for r in recs) == [(m, i) for m in 'ab' for i in range(40)]

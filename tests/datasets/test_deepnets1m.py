"""``DeepNets1M``: reproducible, disjoint, resumable and parallel generation, training widths, networks and
batching of the generated architectures."""
import json
import os

import numpy as np
import pytest
import torch

import pyg_ghn.datasets.deepnets1m as dn
from pyg_ghn.datasets.deepnets1m import DeepNets1M, build_network, fit_eval_width
from pyg_ghn.deepnets.generator import arch_key, find_overlap, generate_split, sample_train_width
from pyg_ghn.deepnets.network import count_params
from pyg_ghn.graph import from_module

pytestmark = pytest.mark.filterwarnings('ignore::pyg_ghn.graph.builder.UnpredictedParametersWarning')




@pytest.fixture(scope='module')
def val(tmp_path_factory):
    return DeepNets1M(str(tmp_path_factory.mktemp('val')), 'val', num_nets=12, log=False)


@pytest.fixture(scope='module')
def train(tmp_path_factory):
    return DeepNets1M(str(tmp_path_factory.mktemp('train')), 'train', num_nets=300, log=False)


def _same_graph(a, b):
    return (a.num_nodes == b.num_nodes and a.param_names == b.param_names and a.node_names == b.node_names and
            all(torch.equal(getattr(a, k), getattr(b, k)) for k in
                ('x', 'edge_index', 'edge_index_sp', 'edge_dist_sp', 'shape', 'role', 'cell', 'level_fw')))


def test_same_seed_same_dataset(val, tmp_path):
    other = DeepNets1M(str(tmp_path), 'val', num_nets=12, log=False)
    assert other.nets == val.nets
    assert other.nets == generate_split('val', 12)  # the stored architectures are the generator's
    for i in (0, 7):
        assert _same_graph(other[i], val[i])
        assert json.loads(other[i].net_args) == {k: v for k, v in val.nets[i].items()}
    reseeded = DeepNets1M(str(tmp_path), 'val', num_nets=12, seed=123, log=False)
    assert reseeded.nets != val.nets and len(reseeded) == 12
    assert repr(val) == 'DeepNets1M(val, 12)'


def test_splits_disjoint(train, tmp_path):
    evals = {s: DeepNets1M(str(tmp_path), s, log=False) for s in ('val', 'test', 'wide', 'deep', 'dense', 'bnfree')}
    assert [len(d) for d in evals.values()] == [500, 500, 100, 100, 100, 100]
    assert find_overlap(evals['val'].nets, evals['test'].nets) == []
    for d in evals.values():
        assert find_overlap(d.nets, train.nets) == []
    # train is generated with every architecture of the evaluation splits excluded
    excluded = set(train._exclude())
    assert {arch_key(a) for d in evals.values() for a in d.nets} == excluded
    assert not excluded & {arch_key(a) for a in train.nets}
    # Its files name the exclusion rule: a train split cached under an older rule is generated again.
    assert train.processed_file_names == ['train_300_seed0_excl2.json']
    assert evals['val'].processed_file_names == ['val_500_seed1.json']


def test_interrupted_generation_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(dn, '_CHUNK', 4)
    ds = DeepNets1M(str(tmp_path), 'val', num_nets=10, log=False)
    chunk_dir = tmp_path / 'processed' / f'chunks_val_seed{ds.seed}'
    chunks = sorted(os.listdir(chunk_dir))
    assert chunks == ['000000000_4.json', '000000004_4.json', '000000008_2.json']
    # interrupted after the first and last chunk: no final file, a chunk missing
    os.remove(ds.processed_paths[0])
    os.remove(chunk_dir / chunks[1])
    stamps = {c: os.stat(chunk_dir / c).st_mtime_ns for c in (chunks[0], chunks[2])}
    calls = []
    real = dn._generate_chunk
    monkeypatch.setattr(dn, '_generate_chunk', lambda task: calls.append(task[1:3]) or real(task))
    again = DeepNets1M(str(tmp_path), 'val', num_nets=10, log=False)
    assert calls == [(4, 4)]  # only the missing chunk was generated
    assert again.nets == ds.nets == generate_split('val', 10)
    assert {c: os.stat(chunk_dir / c).st_mtime_ns for c in stamps} == stamps
    calls.clear()
    DeepNets1M(str(tmp_path), 'val', num_nets=10, log=False)  # complete: nothing generated
    assert calls == []


def test_parallel_equals_sequential(tmp_path, monkeypatch):
    monkeypatch.setattr(dn, '_CHUNK', 5)  # 3 chunks, so the pool is used (each task carries its range)
    par = DeepNets1M(str(tmp_path / 'par'), 'dense', num_nets=13, num_workers=2, log=False)
    seq = DeepNets1M(str(tmp_path / 'seq'), 'dense', num_nets=13, log=False)
    assert len(os.listdir(tmp_path / 'par' / 'processed' / f'chunks_dense_seed{par.seed}')) == 3
    assert par.nets == seq.nets == generate_split('dense', 13)


def test_training_width_indexing(train):
    seen = set()
    for i in range(4):
        for seed in (0, 1):
            g = train[(i, seed)]
            args = json.loads(g.net_args)
            assert args == sample_train_width(train.nets[i], np.random.default_rng(seed))
            assert args['C'] in range(32, 129, 16) and args['fc_dim'] in range(64, 513, 64)
            seen.add((args['C'], args['fc_dim']))
            with torch.device('meta'):
                shapes = {n: tuple(p.shape) for n, p in build_network(args).named_parameters()}
            for k, names in enumerate(g.param_names):  # shapes follow the drawn width
                assert not names or shapes[names[0]] == g.param_shape(k)
    assert len(seen) > 3
    assert _same_graph(train[(1, 0)], train[(1, 0)])  # deterministic
    assert json.loads(train[0].net_args)['C'] == 32  # plain indexing: the generation width


def test_training_draws_of_a_subset_are_its_own_networks(train):
    # Training on ds[a:b] or a shuffled dataset must draw the subset's architectures, not the first ones.
    sub, perm = train[1:3], train[torch.tensor([3, 0, 2])]
    for ds, idx in ((sub, [1, 2]), (perm, [3, 0, 2])):
        for k, i in enumerate(idx):
            assert ds[(k, 5)].net_idx == ds[k].net_idx == i
            assert _same_graph(ds[(k, 5)], train[(i, 5)])
    assert sub[(-1, 5)].net_idx == 2
    with pytest.raises(IndexError, match='index 2 is out of range for 2 architectures'):
        sub[(2, 5)]


def test_wide_graphs_rebuild_from_net_args(tmp_path):
    ds = DeepNets1M(str(tmp_path), 'wide', num_nets=2, log=False)
    g = ds[0]
    args = json.loads(g.net_args)
    assert args['C'] == 4 * ds.nets[0]['C'] == 128
    net = build_network(args)  # no split needed: the widened width is in net_args
    shapes = dict((n, tuple(p.shape)) for n, p in net.named_parameters())
    for k, names in enumerate(g.param_names):
        if names:
            assert shapes[names[0]] == g.param_shape(k)


def test_attach_network(tmp_path):
    ds = DeepNets1M(str(tmp_path), 'val', num_nets=3, attach_network=True, cache=True, log=False)
    for i in range(3):
        g = ds[i]
        assert all(p.device.type == 'meta' for p in g.network.parameters())
        names = {n for n, _ in g.network.named_parameters()}
        bound = {p for ps in g.param_names for p in ps}
        assert bound and bound <= names
        assert set(g.unpredicted) == names - bound
        assert ds[i] is g  # cached


def test_dataloader_batches(val):
    from torch_geometric.loader import DataLoader
    graphs = [val[i] for i in range(4)]
    batch = next(iter(DataLoader(val, batch_size=4, shuffle=False)))
    assert batch.num_graphs == 4 and batch.num_nodes == sum(g.num_nodes for g in graphs)
    offsets = np.cumsum([0] + [g.num_nodes for g in graphs[:-1]])
    assert torch.equal(batch.edge_index, torch.cat([g.edge_index + o for g, o in zip(graphs, offsets)], 1))
    assert torch.equal(batch.edge_index_sp, torch.cat([g.edge_index_sp + o for g, o in zip(graphs, offsets)], 1))
    assert torch.equal(batch.level_fw, torch.cat([g.level_fw for g in graphs]))  # levels stay local
    assert batch.param_names == [g.param_names for g in graphs]
    assert batch.net_args == [g.net_args for g in graphs] and batch.net_idx.tolist() == [0, 1, 2, 3]
    assert torch.equal(batch.batch, torch.repeat_interleave(torch.arange(4), torch.tensor([g.num_nodes for g in
                                                                                          graphs])))


def test_num_params_match_networks(val, tmp_path):
    large = DeepNets1M(str(tmp_path), 'val', num_nets=12, large_images=True, log=False)
    for i, args in enumerate(val.nets):
        assert args['C'] == 32
        with torch.device('meta'):
            cifar, imagenet = val.network(i), large.network(i)
        assert sum(p.numel() for p in cifar.parameters()) == args['num_params']['cifar10']
        assert sum(p.numel() for p in imagenet.parameters()) == args['num_params']['imagenet']
    # the graph's bound tensors are the network's parameters, shapes included
    g, net = val[3], val.network(3)
    params = dict(net.named_parameters())
    for k, names in enumerate(g.param_names):
        for n in names[:1]:
            assert tuple(params[n].shape) == g.param_shape(k)
    assert _same_graph(g, from_module(net, warn=False))


def test_fitted_eval_widths(val, tmp_path):
    fitted = DeepNets1M(str(tmp_path), 'val', num_nets=12, eval_min_params=2.5e6, log=False)
    assert fitted.nets == val.nets  # the stored architectures do not change, only the width they are built with
    widths = []
    for i, a in enumerate(val.nets):
        C = fitted.net_args(i)['C']
        widths.append(C)
        assert C % 16 == 0 and C >= 32
        with torch.device('meta'):
            n = sum(p.numel() for p in fitted.network(i).parameters())
        assert n == count_params(a, 10, False, C=C) >= 2.5e6
        assert C == 32 or count_params(a, 10, False, C=C - 16) < 2.5e6  # the smallest such width
    assert len(set(widths)) > 2
    g = fitted[0]
    assert json.loads(g.net_args)['C'] == widths[0]
    wide = DeepNets1M(str(tmp_path), 'wide', num_nets=1, eval_min_params=2.5e6, log=False)
    with torch.device('meta'):
        assert wide.network(0).C == 4 * fit_eval_width(wide.nets[0])['C']
    dense = DeepNets1M(str(tmp_path), 'dense', num_nets=1, log=False)
    assert dense.net_args(0)['C'] == 32  # off by default

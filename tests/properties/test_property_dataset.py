import json
import os.path as osp
import shutil

import pytest
import torch
from torch_geometric.loader import DataLoader

from property_helpers import write_property_file
from pyg_ghn.datasets.deepnets1m import build_network
from pyg_ghn.graph.builder import from_module
from pyg_ghn.properties import PROPERTIES, ArchPropertyDataset


def test_dataset_shapes_and_split(property_file, tmp_path):
    path, state = property_file
    ds = ArchPropertyDataset(str(tmp_path), path, log=False)
    assert len(ds) == 8 and ds.num_tasks == 4
    split = ds.get_idx_split()
    assert split['train'].tolist() == [0, 1, 2, 3, 4] and split['test'].tolist() == [5, 6, 7]
    assert split['valid'].numel() == 0 and split['valid'].dtype == torch.long  # OGB's keys
    g = ds[0]
    g.y = torch.zeros(1, 4)  # items are copies, as InMemoryDataset's
    assert ds[0].y.abs().sum() > 0
    assert {ds[i].split for i in split['train']} == {'val'} and {ds[i].split for i in split['test']} == {'test'}
    # Targets follow the records, one column per property.
    by_key = {(r['split'], r['idx']): r for r in state['results']}
    for g in ds:
        r = by_key[(g.split, g.net_idx)]
        assert g.y.shape == (1, 4)
        assert g.y.view(-1).tolist() == pytest.approx([r[k] for k in PROPERTIES])
    assert ds.y.shape == (8, 4)
    view = ds[split['test']]  # a PyG index view keeps its own targets and split
    assert len(view) == 3 and torch.equal(view.y, ds.y[split['test']])
    assert view.get_idx_split()['test'].tolist() == [0, 1, 2] and view.get_idx_split()['train'].numel() == 0
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch.y.shape == (3, 4) and batch.num_graphs == 3


def test_dataset_graph_is_the_measured_network(property_file, tmp_path):
    path, state = property_file
    ds = ArchPropertyDataset(str(tmp_path), path, log=False)
    g = ds[6]
    ref = from_module(build_network(json.loads(g.net_args)), max_sp_dist=50, warn=False)
    assert json.loads(g.net_args)['C'] == 8
    assert torch.equal(g.x, ref.x) and torch.equal(g.edge_index, ref.edge_index)
    assert torch.equal(g.shape, ref.shape) and torch.equal(g.edge_index_sp, ref.edge_index_sp)


def test_dataset_cache_and_reprocess(property_file, tmp_path):
    path = str(tmp_path / 'properties.json')  # a private copy: this test rewrites targets
    shutil.copy(property_file[0], path)
    ds = ArchPropertyDataset(str(tmp_path), path, log=False)
    files = sorted(p for p in ds.processed_file_names)
    assert osp.exists(osp.join(str(tmp_path), 'processed', files[0]))
    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as m:  # the second time the graphs must come from the cache
        m.setattr(ArchPropertyDataset, 'process', lambda self: pytest.fail('processed again'))
        again = ArchPropertyDataset(str(tmp_path), path, log=False)
        assert torch.equal(again[3].edge_index, ds[3].edge_index) and again[3].param_names == ds[3].param_names
        # New targets for the same networks: the graphs are reused and y follows the file.
        state = json.load(open(path))
        state['results'][3]['clean_acc'] = 12.5
        json.dump(state, open(path, 'w'))
        assert ArchPropertyDataset(str(tmp_path), path, log=False)[3].y[0, 0].item() == 12.5
    # A pre_transform is part of the cache key, and it sees the targets.
    seen = []
    pre = lambda g: (seen.append(g.y.shape), g)[1]  # noqa: E731
    with_pre = ArchPropertyDataset(str(tmp_path / 'pre'), path, pre_transform=pre, log=False)
    assert with_pre.processed_file_names != ds.processed_file_names and seen == [(1, 4)] * 8
    # Another file (other architectures) gets its own cache entry.
    other = str(tmp_path / 'other.json')
    write_property_file(other, splits=(('val', 2), ('test', 2)))
    ds2 = ArchPropertyDataset(str(tmp_path), other, properties=('clean_acc', 'time'), log=False)
    assert ds2.processed_file_names != ds.processed_file_names
    assert len(ds2) == 4 and ds2.y.shape == (4, 2)


def test_dataset_merges_files_skips_errors_and_rejects_duplicates(tmp_path):
    a, b = str(tmp_path / 'a.json'), str(tmp_path / 'b.json')
    write_property_file(a, splits=(('val', 3),))
    state = write_property_file(b, splits=(('test', 2),))
    state['results'][1] = dict(split='test', idx=1, net_args=state['results'][1]['net_args'], error='nan loss')
    with open(b, 'w') as f:
        json.dump(state, f)
    ds = ArchPropertyDataset(str(tmp_path / 'root'), [b, a], log=False)
    assert len(ds) == 4
    assert ds.get_idx_split()['train'].tolist() == [0, 1, 2]
    assert [g.net_idx for g in ds][3] == 0 and ds[3].split == 'test'
    with pytest.raises(ValueError, match='twice'):
        ArchPropertyDataset(str(tmp_path / 'root'), [a, a], log=False)


def test_dataset_refuses_files_measured_differently(tmp_path):
    # Fitting on val targets of one measurement and scoring on test targets of another would compare
    # different quantities: settings and the timing device must agree across files.
    a, b, c, d = (str(tmp_path / f'{n}.json') for n in 'abcd')
    write_property_file(a, splits=(('val', 2),), steps=300)
    write_property_file(b, splits=(('test', 2),), steps=100)
    with pytest.raises(ValueError, match=r"b.json was measured with other settings than .*a.json: "
                                         r"\{'steps': \(300, 100\)\}"):
        ArchPropertyDataset(str(tmp_path / 'root'), [a, b], log=False)
    write_property_file(c, splits=(('test', 2),), steps=300, device='cuda (NVIDIA H200)')
    with pytest.raises(ValueError, match=r"'device': \('cpu', 'cuda \(NVIDIA H200\)'\)"):
        ArchPropertyDataset(str(tmp_path / 'root'), [a, c], log=False)
    # A file without a recorded device was measured on the CPU: it merges with one that says 'cpu'.
    write_property_file(d, splits=(('test', 2),), steps=300, device='cpu')
    ds = ArchPropertyDataset(str(tmp_path / 'root'), [a, d], log=False)
    assert len(ds) == 4 and ds.config == {'C': 8, 'steps': 300, 'device': 'cpu'}


def test_dataset_refuses_one_split_for_both_and_a_pre_transform_changing_y(property_file, tmp_path):
    path, _ = property_file
    with pytest.raises(ValueError, match="both 'val'"):
        ArchPropertyDataset(str(tmp_path), path, train_split='val', test_split='val', log=False)

    def log_time(g):
        g.y = g.y.clone()
        g.y[:, 2] = g.y[:, 2].log()
        return g
    with pytest.raises(ValueError, match='pre_transform changed y.*transform instead'):
        ArchPropertyDataset(str(tmp_path / 'pre'), path, pre_transform=log_time, log=False)
    # As a transform it applies on every access.
    ds = ArchPropertyDataset(str(tmp_path / 'tf'), path, transform=log_time, log=False)
    raw = ArchPropertyDataset(str(tmp_path / 'tf'), path, log=False)
    assert torch.allclose(ds[1].y[0, 2], raw[1].y[0, 2].log())

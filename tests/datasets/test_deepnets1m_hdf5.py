"""The official DeepNets-1M file reader produces the graphs :func:`from_module` builds.

The files are written here in the layout of the original release (spec §4.3), with the quirks its reader
must undo: split-specific id maps, legacy primitive names (``conv_3x3``, ``sep_conv_5x5``, ``fc-b``), op
names relative to their cell and in older spellings (``_ops.<j>.<i>``, ``to_out.0.``, norm names without
``.weight``), and virtual edges up to length 250 computed with networkx, as the original generator did.
"""
import json
import re
import warnings

import networkx as nx
import numpy as np
import pytest
import torch

from pyg_ghn.datasets.deepnets1m import build_network
from pyg_ghn.deepnets.generator import generate_net, sample_train_width
from pyg_ghn.graph import from_module
from pyg_ghn.primitives import PRIMITIVES, Role

h5py = pytest.importorskip('h5py')
hdf5 = pytest.importorskip('pyg_ghn.datasets.deepnets1m_hdf5')
DeepNets1MHDF5 = hdf5.DeepNets1MHDF5

pytestmark = pytest.mark.filterwarnings('ignore::pyg_ghn.graph.builder.UnpredictedParametersWarning')

# (split, index) of generated networks covering the design space: BN-free with the DARTS stem, ViTs (msa,
# ln, pos_enc, bias), a 4-step cell, squeeze-and-excitation with a flattening head, stem pooling, and a deep
# network whose shortest paths exceed 50 (so the cut-off matters).
VAL = [5, 8, 16, 26, 50, 55, 31]
DEEP = [0]
WIDE = [3]




def _graph(net_args, wide=False, max_sp_dist=50):
    torch.manual_seed(0)
    return from_module(build_network(net_args, wide=wide), max_sp_dist=max_sp_dist, warn=False)


# ------------------------------------------------------------------ writer in the original layout

def _ext_name(prim, shape, is_last):
    """A name of the original ``primitives_ext`` vocabulary for one of our nodes."""
    if prim == 'conv' and len(shape) == 4:
        return f'conv_{shape[2]}x{shape[3]}'  # conv_1x1, conv_3x3, conv_1x7, ...
    if prim in ('sep_conv', 'dil_conv'):
        return f'{prim}_{shape[2]}x{shape[3]}'
    if prim in ('max_pool', 'avg_pool'):
        return f'{prim}_3x3'
    if prim == 'bias' and is_last:
        return 'fc-b'
    return prim


def _op_name(graph, i, variant):
    """The op name the files store for node ``i``: relative to its cell, in one of the spellings of the
    original code versions (chosen by ``variant``)."""
    prim = PRIMITIVES[int(graph.x[i])]
    if prim == 'input':
        return ''
    if not graph.param_names[i]:
        return prim if prim.endswith('pool') else graph.node_names[i]
    name = graph.param_names[i][0]
    name = re.sub(r'^cells\.\d+\.', '', name)
    if variant % 3 == 1:
        name = re.sub(r'_ops\.(\d+)\.op\.(\d+)', r'_ops.\1.\2', name)  # legacy: no 'op' level
    if name.endswith('to_out.0.weight') and variant % 2:
        name = name[:-len('weight')]  # 'to_out.0.', as some files have it
    if prim in ('bn', 'ln') and variant % 2 == 0:
        name = name[:-len('.weight')]  # module name only
    return name


def _write_split(f, split, items, permute_ids, rng):
    """Writes ``items`` (net_args, from_module graph) as ``f[split]`` and returns the split's meta."""
    prims, ops = {}, {}  # name -> id, first-seen order
    grp = f.create_group(split)
    nets = []
    for idx, (net_args, g) in enumerate(items):
        n = g.num_nodes
        rows = []
        for i in range(n):
            shape = g.param_shape(i)
            ext = _ext_name(PRIMITIVES[int(g.x[i])], shape, i == n - 1)
            op = _op_name(g, i, variant=idx + i)
            rows.append([prims.setdefault(ext, len(prims)), int(g.cell[i]), ops.setdefault(op, len(ops))])
        dg = nx.DiGraph()
        dg.add_nodes_from(range(n))
        dg.add_edges_from(g.edge_index.t().tolist())
        adj = np.zeros((n, n), dtype=np.uint8)
        for u, lengths in nx.all_pairs_shortest_path_length(dg, cutoff=250):
            for v, d in lengths.items():
                if d > 0:
                    adj[u, v] = d
        sub = grp.create_group(str(idx))
        sub.create_dataset('adj', data=adj)
        sub.create_dataset('nodes', data=np.array(rows, dtype=np.uint16))
        nets.append({**net_args, 'num_nodes': n})
    if permute_ids:  # ids are arbitrary per split: remap them
        perm = rng.permutation(len(prims))
        for sub in grp.values():
            nodes = sub['nodes'][()]
            nodes[:, 0] = perm[nodes[:, 0]]
            sub['nodes'][...] = nodes
        prims = {k: int(perm[v]) for k, v in prims.items()}
    return {'nets': nets, 'meta': {'primitives_ext': {str(v): k for k, v in prims.items()},
                                   'unique_op_names': {str(v): k for k, v in ops.items()}}}


def _write_files(folder, stem, splits, seed=0):
    rng = np.random.default_rng(seed)
    meta = {}
    with h5py.File(folder / f'deepnets1m_{stem}.hdf5', 'w') as f:
        for k, (split, items) in enumerate(splits.items()):
            meta[split] = _write_split(f, split, items, permute_ids=k % 2 == 1, rng=rng)
    with open(folder / f'deepnets1m_{stem}_meta.json', 'w') as fj:
        json.dump(meta, fj)


@pytest.fixture(scope='module')
def eval_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('deepnets1m')
    val = [generate_net('val', i) for i in VAL]
    val[0] = {**val[0], 'C': 48}  # official eval meta files carry a width per network
    deep = [generate_net('deep', i) for i in DEEP]
    wide = [generate_net('wide', i) for i in WIDE]
    graphs = {'val': [_graph(a) for a in val], 'deep': [_graph(a) for a in deep],
              'wide': [_graph(a, wide=True) for a in wide]}
    _write_files(folder, 'eval', {s: list(zip(n, graphs[s])) for s, n in
                                  (('val', val), ('deep', deep), ('wide', wide))})
    return folder, graphs, {'val': val, 'deep': deep, 'wide': wide}


def _assert_same_graph(a, b):
    assert a.num_nodes == b.num_nodes
    assert a.primitive_names == b.primitive_names
    for key in ('x', 'edge_index', 'edge_index_sp', 'edge_dist_sp', 'shape', 'ndim', 'role', 'cell', 'level_fw',
                'level_bw'):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert a.param_names == b.param_names
    assert sorted(a.unpredicted) == sorted(b.unpredicted)
    param_nodes = [i for i, p in enumerate(a.param_names) if p]
    assert [a.node_names[i] for i in param_nodes] == [b.node_names[i] for i in param_nodes]


# ------------------------------------------------------------------ tests

def test_name_rules():
    to_prim = hdf5.primitive_from_ext_name
    assert [to_prim(n) for n in ('conv_1x1', 'conv_3x3', 'conv_7x1_1x7', 'conv', 'sep_conv_3x3', 'dil_conv_5x5',
                                 'max_pool_3x3', 'avg_pool_3x3', 'fc-b', 'bias', 'bn', 'msa', 'glob_avg')] == \
        ['conv', 'conv', 'conv', 'conv', 'sep_conv', 'dil_conv', 'max_pool', 'avg_pool', 'bias', 'bias', 'bn',
         'msa', 'glob_avg']
    with pytest.raises(ValueError, match='unknown primitive'):
        to_prim('relu')
    resolve = hdf5.resolve_node_name
    assert resolve('_ops.1.op.2.weight', 3) == 'cells.3._ops.1.op.2.weight'
    assert resolve('_ops.1.2.weight', 3) == 'cells.3._ops.1.op.2.weight'  # legacy spelling
    assert resolve('preprocess0.op.1.weight', 4) == 'cells.4.preprocess0.op.1.weight'
    assert resolve('_ops.0.to_out.0.', 2) == 'cells.2._ops.0.to_out.0.weight'
    assert resolve('_ops.5.ff.net.0.weight', 2) == 'cells.2._ops.5.ff.net.0.weight'  # not an int after _ops.5
    assert resolve('stem.0.weight', 0) == 'stem.0.weight'
    assert resolve('stem0.weight', 0) == 'stem0.weight'
    assert resolve('pos_enc.weight', 0) == 'pos_enc.weight'
    assert resolve('classifier.1.bias', 9) == 'classifier.1.bias'
    assert resolve('', 0) == 'cells.0.input'


def test_same_graphs_as_from_module(eval_files):
    folder, graphs, nets = eval_files
    for split in ('val', 'deep', 'wide'):
        ds = DeepNets1MHDF5(str(folder), split, log=False)
        assert len(ds) == len(graphs[split])
        for i, ref in enumerate(graphs[split]):
            with warnings.catch_warnings():
                warnings.simplefilter('error', hdf5.UnmatchedNodesWarning)
                g = ds[i]
            _assert_same_graph(g, ref)
            assert g.unmatched == []
            assert int(g.edge_dist_sp.max()) <= 50
            assert g.net_idx == i and json.loads(g.net_args)['genotype'] == nets[split][i]['genotype']
    # what the fixture covers: every primitive, a width from the meta file, a widened network, long paths
    seen = set().union(*(g.primitive_names for gs in graphs.values() for g in gs))
    assert seen == set(PRIMITIVES)
    g = DeepNets1MHDF5(str(folder), 'val', log=False)[0]
    assert g.param_shape(g.param_names.index(['stem0.0.weight']))[0] == 48 // 2  # C=48 from the meta file
    ds = DeepNets1MHDF5(str(folder), 'wide', log=False)
    assert json.loads(ds[0].net_args)['C'] == 4 * 32
    assert ds[0].shape[:, :2].max() >= 4 * 32
    with h5py.File(folder / 'deepnets1m_eval.hdf5', 'r') as f:
        assert int(f['deep']['0']['adj'][()].max()) > 50  # the file holds paths the reader must cut


def test_cut_off_and_ids(eval_files):
    folder, graphs, nets = eval_files
    ds = DeepNets1MHDF5(str(folder), 'deep', max_sp_dist=250, log=False)
    ref = _graph(nets['deep'][0], max_sp_dist=250)
    assert int(ref.edge_dist_sp.max()) > 50
    _assert_same_graph(ds[0], ref)
    # the two splits of the file map the same names to different ids
    val = DeepNets1MHDF5(str(folder), 'val', log=False)
    deep = DeepNets1MHDF5(str(folder), 'deep', log=False)
    common = set(val.primitives_ext.values()) & set(deep.primitives_ext.values())
    inv = lambda d: {v: k for k, v in d.items()}  # noqa: E731
    assert any(inv(val.primitives_ext)[n] != inv(deep.primitives_ext)[n] for n in common)


def test_train_split_widths_and_classifier_roles(tmp_path):
    nets = [generate_net('train', i) for i in range(3)]
    _write_files(tmp_path, 'train', {'train': [(a, _graph(a)) for a in nets]})
    ds = DeepNets1MHDF5(str(tmp_path), 'train', log=False)
    changed = 0
    for i, a in enumerate(nets):
        assert ds.nets[i] == {**a, 'num_nodes': _graph(a).num_nodes}
        args = sample_train_width(a, np.random.default_rng(7))
        g = ds[(i, 7)]
        assert json.loads(g.net_args) == {**args, 'num_nodes': ds.nets[i]['num_nodes']}
        changed += (args['C'], args['fc_dim']) != (32, 256)
        _assert_same_graph(g, _graph(args))
        assert Role(int(g.role[-1])) == Role.CLS_BIAS and Role(int(g.role[-2])) == Role.CLS_WEIGHT
        assert g.param_names[-2] == [f'classifier.{3 * (a["fc_layers"] - 1)}.weight']
        assert torch.equal(ds[(i, 7)].shape, g.shape)  # deterministic
    assert changed  # training widths, not the stored one
    assert ds.net_args(0)['C'] == 32  # plain indexing: the stored width


def test_unmatched_and_errors(tmp_path):
    a = generate_net('val', 16)
    g = _graph(a)
    _write_files(tmp_path, 'eval', {'test': [(a, g)]})
    meta_path = tmp_path / 'deepnets1m_eval_meta.json'
    meta = json.loads(meta_path.read_text())
    ops = meta['test']['meta']['unique_op_names']
    k = next(k for k, v in ops.items() if v.startswith('_ops.'))
    ops[k] = '_ops.99.op.1.weight'  # a name our network does not have
    meta_path.write_text(json.dumps(meta))
    ds = DeepNets1MHDF5(str(tmp_path), 'test', log=False)
    with pytest.warns(hdf5.UnmatchedNodesWarning):
        h = ds[0]
    assert h.unmatched and all('_ops.99.' in n for n in h.unmatched)
    assert len(h.unpredicted) > len(g.unpredicted)
    with pytest.raises(KeyError, match='not in'):
        DeepNets1MHDF5(str(tmp_path), 'val', log=False)
    with pytest.raises(FileNotFoundError, match='download.sh'):
        DeepNets1MHDF5(str(tmp_path / 'nowhere'), 'test', log=False)
    with pytest.raises(ValueError, match='Unknown split'):
        DeepNets1MHDF5(str(tmp_path), 'predefined', log=False)
    for bad in (None, 0):
        with pytest.raises(ValueError, match='max_sp_dist must be an int >= 1'):
            DeepNets1MHDF5(str(tmp_path), 'test', max_sp_dist=bad, log=False)


def test_loader_batches_and_networks(eval_files):
    from torch_geometric.loader import DataLoader
    folder, graphs, _ = eval_files
    ds = DeepNets1MHDF5(str(folder), 'val', attach_network=True, log=False)
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=1)))  # a worker process opens its own handle
    assert batch.num_graphs == 3 and len(batch.param_names) == 3
    assert batch.num_nodes == sum(g.num_nodes for g in graphs['val'][:3])
    assert int(batch.edge_index.max()) < batch.num_nodes and len(batch.network) == 3
    for k in range(3):
        net = batch.network[k]
        assert next(net.parameters()).device.type == 'meta'
        names = dict(net.named_parameters())
        for i, ps in enumerate(batch.param_names[k]):
            for p in ps:
                assert p in names
        assert sum(p.numel() for p in net.parameters()) == \
            sum(p.numel() for p in build_network(json.loads(batch.net_args[k])).parameters())

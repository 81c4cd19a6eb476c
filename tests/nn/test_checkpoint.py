import os

import pytest
import torch

from ghn_reference import conv_chain_graph, deepnets_like_graph, vit_like_graph
from pyg_ghn.nn import GHN, CheckpointError
from pyg_ghn.nn.checkpoint import convert_original_state_dict


def original_shapes(dataset: str = 'cifar10', variant: str = 'ghn2'):
    """State-dict keys and shapes of the original checkpoints, transcribed from the spec (§2.2)."""
    k, s = (10, 11) if dataset == 'cifar10' else (1000, 16)
    n_s = 9 if dataset == 'cifar10' else 11
    shapes = {}
    if variant in ('ghn2', 'mlp'):
        shapes.update({'ln.weight': (32,), 'ln.bias': (32,)})
    shapes.update({'embed.weight': (15, 32), 'shape_enc.embed_spatial.weight': (n_s, 8),
                   'shape_enc.embed_channel.weight': (392, 8)})
    if variant == 'ghn2':
        shapes.update({'gnn.mlp.fc.0.weight': (16, 32), 'gnn.mlp.fc.0.bias': (16,),
                       'gnn.mlp.fc.2.weight': (32, 16), 'gnn.mlp.fc.2.bias': (32,),
                       'gnn.mlp_ve.fc.0.weight': (16, 32), 'gnn.mlp_ve.fc.0.bias': (16,),
                       'gnn.mlp_ve.fc.2.weight': (32, 16), 'gnn.mlp_ve.fc.2.bias': (32,)})
    elif variant == 'ghn1':
        shapes.update({'gnn.mlp.fc.0.weight': (32, 32), 'gnn.mlp.fc.0.bias': (32,),
                       'gnn.mlp.fc.2.weight': (32, 32), 'gnn.mlp.fc.2.bias': (32,)})
    else:
        shapes.update({'gnn.fc.0.weight': (32, 32), 'gnn.fc.0.bias': (32,),
                       'gnn.fc.2.weight': (32, 32), 'gnn.fc.2.bias': (32,)})
    if variant != 'mlp':
        shapes.update({'gnn.gru.weight_ih': (96, 32), 'gnn.gru.weight_hh': (96, 32), 'gnn.gru.bias_ih': (96,),
                       'gnn.gru.bias_hh': (96,)})
    shapes.update({
        'decoder.fc.0.weight': (128 * s * s, 32), 'decoder.fc.0.bias': (128 * s * s,),
        'decoder.conv.0.weight': (256, 128, 1, 1), 'decoder.conv.0.bias': (256,),
        'decoder.conv.2.weight': (4096, 256, 1, 1), 'decoder.conv.2.bias': (4096,),
        'decoder.class_layer_predictor.1.weight': (k, 64, 1, 1), 'decoder.class_layer_predictor.1.bias': (k,),
        'decoder_1d.fc.0.weight': (64, 32), 'decoder_1d.fc.0.bias': (64,),
        'decoder_1d.fc.2.weight': (128, 64), 'decoder_1d.fc.2.bias': (128,),
        'bias_class.1.weight': (k, 64), 'bias_class.1.bias': (k,)})
    return shapes


def original_config(dataset: str = 'cifar10', variant: str = 'ghn2'):
    cfg = {'max_shape': (64, 64, 11, 11) if dataset == 'cifar10' else (64, 64, 16, 16),
           'num_classes': 10 if dataset == 'cifar10' else 1000, 'hypernet': 'gatedgnn', 'decoder': 'conv',
           'weight_norm': True, 've': True, 'layernorm': True, 'hid': 32}
    if variant == 'ghn1':
        cfg.update(weight_norm=False, ve=False, layernorm=False)
    elif variant == 'mlp':
        cfg.update(hypernet='mlp')
    return cfg


def write_original(path, dataset='cifar10', variant='ghn2', optimizer=True):
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(*s, generator=gen) * 0.3 for k, s in original_shapes(dataset, variant).items()}
    ckpt = {'state_dict': sd, 'config': original_config(dataset, variant), 'epoch': 299}
    if optimizer:
        ckpt['optimzer'] = {'state': {}, 'param_groups': [{'lr': 1e-3}]}  # sic
    torch.save(ckpt, path)
    return sd


@pytest.mark.parametrize('dataset,variant,count', [('cifar10', 'ghn2', 1_620_764), ('imagenet', 'ghn2', 2_319_720),
                                                   ('cifar10', 'ghn1', 1_620_668), ('cifar10', 'mlp', 1_614_396)])
def test_load_original(tmp_path, dataset, variant, count):
    path = str(tmp_path / 'ghn.pt')
    sd = write_original(path, dataset, variant, optimizer=variant != 'mlp')
    assert sum(v.numel() for v in sd.values()) == count  # the transcribed table is complete
    ghn = GHN.load(path)
    assert not ghn.training
    assert ghn.metadata == {'source': 'original', 'epoch': 299}
    assert ghn.config['num_classes'] == original_config(dataset)['num_classes']
    # Weights sit where expected.
    assert torch.equal(ghn.op_embed.weight, sd['embed.weight'])
    assert torch.equal(ghn.shape_enc.embed_channel.weight, sd['shape_enc.embed_channel.weight'])
    assert torch.equal(ghn.decoder.fc[0].weight, sd['decoder.fc.0.weight'])
    assert torch.equal(ghn.decoder.conv[0].weight, sd['decoder.conv.0.weight'][:, :, 0, 0])
    assert torch.equal(ghn.decoder.conv[2].bias, sd['decoder.conv.2.bias'])
    assert torch.equal(ghn.decoder.class_layer_predictor[1].weight,
                       sd['decoder.class_layer_predictor.1.weight'][:, :, 0, 0])
    assert torch.equal(ghn.decoder_1d[2].weight, sd['decoder_1d.fc.2.weight'])
    assert torch.equal(ghn.bias_class[1].bias, sd['bias_class.1.bias'])
    if variant == 'mlp':
        assert torch.equal(ghn.gnn[2].weight, sd['gnn.fc.2.weight'])
    else:
        assert torch.equal(ghn.gnn.mlp[0].weight, sd['gnn.mlp.fc.0.weight'])
        assert torch.equal(ghn.gnn.gru.weight_hh, sd['gnn.gru.weight_hh'])
    if variant == 'ghn2':
        assert torch.equal(ghn.gnn.mlp_sp[2].bias, sd['gnn.mlp_ve.fc.2.bias'])
        assert torch.equal(ghn.ln.weight, sd['ln.weight'])
    # Predicting with the loaded weights works.
    pred = ghn.predict_parameters(conv_chain_graph([(16, 3, 3, 3), (32, 16, 1, 1)], ghn.num_classes))[0]
    assert pred['fc.weight'].shape == (ghn.num_classes, 32)


def test_original_round_trip_and_export(tmp_path):
    path, out = str(tmp_path / 'orig.pt'), str(tmp_path / 'export.pt')
    sd = write_original(path)
    ghn = GHN.load(path)
    ghn.save(out, original=True)
    ckpt = torch.load(out, weights_only=True)
    assert set(ckpt) == {'state_dict', 'config', 'epoch'}
    assert ckpt['config'] == original_config() and ckpt['epoch'] == 299
    assert list(ckpt['state_dict']) == list(original_shapes())  # original names and order
    assert all(torch.equal(ckpt['state_dict'][k], sd[k]) for k in sd)  # conv weights back to (.., 1, 1)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    ghn = GHN.from_config('ghn2')
    graphs = [deepnets_like_graph(0, n_cells=3), vit_like_graph()]
    expected = ghn.predict_parameters(graphs)
    path = str(tmp_path / 'ghn.pt')
    ghn.save(path, metadata={'epoch': 7, 'note': 'test'})
    assert os.listdir(tmp_path) == ['ghn.pt']  # the temporary file is gone
    ckpt = torch.load(path, weights_only=True)
    assert ckpt['format'] == 'pyg_ghn' and ckpt['config']['num_rounds'] == 1
    loaded = GHN.load(path)
    assert not loaded.training and loaded.metadata['note'] == 'test' and loaded.metadata['epoch'] == 7
    got = loaded.predict_parameters(graphs)
    for e, g in zip(expected, got):
        assert list(e) == list(g) and all(torch.equal(e[k], g[k]) for k in e)
    # Ablation switches survive the round trip.
    GHN.from_config('ghn2-fw-only').save(path)
    assert GHN.load(path).gnn.backward is False
    with pytest.raises(ValueError, match='original format cannot express'):
        GHN.from_config('ghn2-fw-only').save(path, original=True)


def test_half_storage(tmp_path):
    torch.manual_seed(0)
    ghn = GHN.from_config('ghn2')
    full, half = str(tmp_path / 'full.pt'), str(tmp_path / 'half.pt')
    ghn.save(full)
    ghn.save(half, half=True)
    assert os.path.getsize(half) < 0.6 * os.path.getsize(full)
    loaded = GHN.load(half)
    assert loaded.decoder.fc[0].weight.dtype == torch.float32
    for (k, a), b in zip(ghn.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a.half().float(), b), k


def test_errors(tmp_path):
    good = str(tmp_path / 'good.pt')
    write_original(good)
    data = open(good, 'rb').read()

    def write(name, obj=None, raw=None):
        p = str(tmp_path / name)
        if raw is not None:
            open(p, 'wb').write(raw)
        else:
            torch.save(obj, p)
        return p

    with pytest.raises(FileNotFoundError):
        GHN.load(str(tmp_path / 'missing.pt'))
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        GHN.load(write('trunc.pt', raw=data[:len(data) // 2]))
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        GHN.load(write('garbage.pt', raw=b'not a checkpoint at all'))
    with pytest.raises(CheckpointError, match='not a GHN checkpoint dict'):
        GHN.load(write('list.pt', [torch.zeros(3)]))
    with pytest.raises(CheckpointError, match=r"lacks \['config'\]"):
        GHN.load(write('noconfig.pt', {'state_dict': {}}))
    ckpt = torch.load(good, weights_only=True)
    bad = dict(ckpt, config=dict(ckpt['config'], dropout=0.1))
    with pytest.raises(CheckpointError, match=r"unknown config key\(s\) \['dropout'\]"):
        GHN.load(write('unknown.pt', bad))
    cfg = dict(ckpt['config'])
    del cfg['hid']
    with pytest.raises(CheckpointError, match=r"config lacks \['hid'\]"):
        GHN.load(write('nohid.pt', dict(ckpt, config=cfg)))
    with pytest.raises(CheckpointError, match='invalid config'):
        GHN.load(write('badhyper.pt', dict(ckpt, config=dict(ckpt['config'], hypernet='transformer'))))
    # Shape mismatch: an ImageNet state dict under a CIFAR-10 config.
    sd = dict(ckpt['state_dict'], **{'bias_class.1.weight': torch.zeros(1000, 64)})
    with pytest.raises(CheckpointError, match=r'bias_class\.1\.weight has shape \(1000, 64\).*\(10, 64\)'):
        GHN.load(write('shape.pt', dict(ckpt, state_dict=sd)))
    sd = dict(ckpt['state_dict'])
    del sd['gnn.gru.bias_hh']
    with pytest.raises(CheckpointError, match=r"missing keys \['gnn.gru.bias_hh'\]"):
        GHN.load(write('missingkey.pt', dict(ckpt, state_dict=sd)))

    class Evil:  # an object weights_only loading must refuse
        def __reduce__(self):
            return (print, ('pwned',))

    with pytest.raises(CheckpointError, match='not a safe checkpoint.*print'):
        GHN.load(write('evil.pt', {'state_dict': Evil(), 'config': {}}))


def test_corrupt_or_non_finite_weights_are_refused(tmp_path, flip_byte):
    torch.manual_seed(0)
    path = str(tmp_path / 'ghn.pt')
    GHN.from_config('ghn2', 'cifar10').save(path)
    # One flipped byte inside the largest tensor record: torch.load alone would load it silently.
    flipped = flip_byte(path, str(tmp_path / 'flipped.pt'))
    assert torch.load(flipped, weights_only=True)['state_dict'].keys()
    with pytest.raises(CheckpointError, match='corrupt \\(checksum mismatch in .*data/'):
        GHN.load(flipped)

    ckpt = torch.load(path, weights_only=True)
    sd = dict(ckpt['state_dict'])
    sd['ln.weight'] = sd['ln.weight'].clone()
    sd['ln.weight'][3] = float('nan')
    torch.save(dict(ckpt, state_dict=sd), str(tmp_path / 'nan.pt'))
    with pytest.raises(CheckpointError, match=r'ln\.weight holds NaN or infinite values'):
        GHN.load(str(tmp_path / 'nan.pt'))
    sd['ln.weight'] = torch.ones(32, dtype=torch.long)
    torch.save(dict(ckpt, state_dict=sd), str(tmp_path / 'int.pt'))
    with pytest.raises(CheckpointError, match=r'ln\.weight has dtype torch.int64, expected a floating tensor'):
        GHN.load(str(tmp_path / 'int.pt'))
    assert GHN.load(path).config == GHN.from_config('ghn2', 'cifar10').config  # the intact file loads


def test_convert_function():
    sd = {'module.gnn.mlp.fc.0.weight': torch.zeros(16, 32), 'decoder.conv.2.weight': torch.zeros(8, 4, 1, 1),
          'gnn.fc.2.bias': torch.zeros(3), 'embed.weight': torch.zeros(15, 32)}
    out = convert_original_state_dict(sd)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        'gnn.mlp.0.weight': (16, 32), 'decoder.conv.2.weight': (8, 4), 'gnn.2.bias': (3,),
        'op_embed.weight': (15, 32)}
    with pytest.raises(CheckpointError, match='1x1'):
        convert_original_state_dict({'decoder.conv.0.weight': torch.zeros(8, 4, 3, 3)})

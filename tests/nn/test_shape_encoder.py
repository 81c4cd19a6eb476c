import numpy as np
import pytest
import torch

from pyg_ghn.nn import ShapeEncoder, channel_table, spatial_table, tensor_shape_to_4d
from pyg_ghn.nn.shape_encoder import shapes_to_4d

# Spec appendix: measured lookups of the original code (value each size maps to).
CIFAR_CHANNELS = {1: 1, 2: 1, 3: 3, 4: 8, 5: 8, 6: 8, 7: 8, 9: 8, 10: 10, 12: 10, 20: 16, 36: 32, 72: 64, 100: 96,
                  1000: 992, 1001: 1008, 2048: 2048, 4100: 4096, 4112: 4096, 8191: 8192, 8192: 8192, 9216: 8192,
                  100000: 8192}
CIFAR_SPATIAL = {1: 1, 2: 3, 3: 3, 4: 3, 5: 5, 6: 5, 7: 7, 8: 7, 9: 9, 10: 9, 11: 11, 12: 11, 13: 14, 14: 14,
                 15: 14, 16: 16, 17: 16, 25: 16}
IMAGENET_CHANNELS = {10: 8, 12: 8, 1000: 1000, 1001: 1000, 4: 8, 2: 1, 9216: 8192}
IMAGENET_SPATIAL = {12: 11, 13: 13, 14: 14, 15: 15, 16: 16, 17: 16, 2: 3}


def _values(enc, shapes):
    shape = torch.ones(len(shapes), 4, dtype=torch.long)
    for i, s in enumerate(shapes):
        shape[i, :len(s)] = torch.tensor(s)
    ind = enc.shape_indices(shape, torch.tensor([len(s) for s in shapes]))
    return ind


def test_tables():
    c10, c1k = channel_table(10), channel_table(1000)
    assert len(c10) == 391 and len(c1k) == 391
    assert c10[:6] == [1, 3, 8, 10, 16, 24]
    assert c1k[:4] == [1, 3, 8, 16] and c1k[c1k.index(992):c1k.index(992) + 3] == [992, 1000, 1008]
    assert c10[-1] == 8192
    assert spatial_table(11) == [1, 3, 5, 7, 9, 11, 14, 16]
    assert spatial_table(16) == [1, 3, 5, 7, 9, 11, 13, 14, 15, 16]
    # Embedding rows: one per value plus the dummy row (state-dict shapes of the checkpoints).
    assert ShapeEncoder(32, 10, (64, 64, 11, 11)).embed_spatial.weight.shape == (9, 8)
    assert ShapeEncoder(32, 10, (64, 64, 11, 11)).embed_channel.weight.shape == (392, 8)
    assert ShapeEncoder(32, 1000, (64, 64, 16, 16)).embed_spatial.weight.shape == (11, 8)


@pytest.mark.parametrize('num_classes,s,channels,spatial', [
    (10, 11, CIFAR_CHANNELS, CIFAR_SPATIAL), (1000, 16, IMAGENET_CHANNELS, IMAGENET_SPATIAL)])
def test_appendix_examples(num_classes, s, channels, spatial):
    enc = ShapeEncoder(32, num_classes, (64, 64, s, s))
    shapes = [(c, c) for c in channels]
    ind = _values(enc, shapes)
    got = [enc.channels[i].item() for i in ind[:, 0]]
    assert got == list(channels.values())
    assert (ind[:, 0] == ind[:, 1]).all()
    ind = _values(enc, [(1, 1, k, k) for k in spatial])
    assert [enc.spatial[i].item() for i in ind[:, 2]] == list(spatial.values())


@pytest.mark.parametrize('num_classes,s', [(10, 11), (1000, 16), (5, 11), (10000, 16)])
def test_lookup_matches_brute_force(num_classes, s):
    # Independent reference: the original's dictionaries (exact, 4..7 -> 8 / 2 -> 3, np.argmin of the first
    # minimum for 1 <= c < max) and the largest value for everything else.
    enc = ShapeEncoder(32, num_classes, (64, 64, s, s))
    for table, special, col, values in [(channel_table(num_classes), {4: 8, 5: 8, 6: 8, 7: 8}, 0, range(0, 10300)),
                                        (spatial_table(s), {2: 3}, 2, range(0, 40))]:
        arr = np.array(table)
        ref = {c: i for i, c in enumerate(table)}
        ref.update({c: ref[t] for c, t in special.items()})
        for c in range(1, table[-1]):
            ref.setdefault(c, int(np.argmin(np.abs(arr - c))))
        expected = [ref.get(c, len(table) - 1) for c in values]
        shapes = [(c, c, c, c) for c in values]
        assert _values(enc, shapes)[:, col].tolist() == expected


def test_shape_to_4d():
    assert tensor_shape_to_4d((7,)) == (7, 1, 1, 1)
    assert tensor_shape_to_4d((7, 5)) == (7, 5, 1, 1)
    assert tensor_shape_to_4d((1, 197, 768)) == (1, 768, 14, 14)  # ViT position embedding
    assert tensor_shape_to_4d((1, 50, 3)) == (1, 3, 7, 7)
    assert tensor_shape_to_4d((1, 1, 5)) == (1, 1, 5, 1)
    assert tensor_shape_to_4d((4, 5, 6)) == (4, 5, 6, 1)
    assert tensor_shape_to_4d((4, 5, 6, 7)) == (4, 5, 6, 7)
    shapes = [(7,), (7, 5), (1, 197, 768), (1, 50, 3), (1, 1, 5), (4, 5, 6), (4, 5, 6, 7), (1, 4, 4)]
    padded = torch.ones(len(shapes), 4, dtype=torch.long)
    for i, s in enumerate(shapes):
        padded[i, :len(s)] = torch.tensor(s)
    out = shapes_to_4d(padded, torch.tensor([len(s) for s in shapes]))
    assert out.tolist() == [list(tensor_shape_to_4d(s)) for s in shapes]


def test_forward_and_dummy():
    torch.manual_seed(0)
    enc = ShapeEncoder(32, 10, (64, 64, 11, 11))
    shape = torch.tensor([[64, 3, 3, 3], [1, 1, 1, 1], [10, 1, 1, 1]])
    ndim = torch.tensor([4, 0, 1])
    out = enc(shape, ndim)
    assert out.shape == (3, 32)
    ec, es = enc.embed_channel.weight, enc.embed_spatial.weight
    ch, sp = channel_table(10), spatial_table(11)
    expected0 = torch.cat([ec[ch.index(64)], ec[ch.index(3)], es[sp.index(3)], es[sp.index(3)]])
    assert torch.equal(out[0], expected0)
    assert torch.equal(out[1], torch.cat([ec[391], ec[391], es[8], es[8]]))  # no shape: dummy rows
    assert torch.equal(out[2], torch.cat([ec[ch.index(10)], ec[0], es[0], es[0]]))
    assert 'num_classes=10' in repr(enc) and 'channels=391' in repr(enc)


def test_bad_arguments():
    with pytest.raises(ValueError, match='divisible by 4'):
        ShapeEncoder(30, 10, (64, 64, 11, 11))
    with pytest.raises(ValueError, match='max_shape'):
        ShapeEncoder(32, 10, (64, 64, 11, 9))

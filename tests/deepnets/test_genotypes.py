import json
from collections import Counter, namedtuple

import numpy as np
import pytest

from pyg_ghn.deepnets.genotypes import (DARTS, PRIMITIVES_DARTS_EXT, Genotype, ViT, parse_op_ks,
                                        sample_genotype)


def test_primitives():
    assert len(PRIMITIVES_DARTS_EXT) == 15
    assert PRIMITIVES_DARTS_EXT[:4] == ['none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect']
    assert PRIMITIVES_DARTS_EXT[-2:] == ['msa', 'cse']


@pytest.mark.parametrize('op,expected', [
    ('sep_conv_3x3', ('sep_conv', 3)), ('sep_conv_5x5', ('sep_conv', 5)), ('dil_conv_5x5', ('dil_conv', 5)),
    ('conv_1x1', ('conv', 1)), ('conv_7x1_1x7', ('conv2', 7)), ('conv_7x7', ('conv', 7)),
    ('max_pool_3x3', ('max_pool', 3)), ('skip_connect', ('skip_connect', 0)), ('msa', ('msa', 0)),
    ('none', ('none', 0)), ('cse', ('cse', 0))])
def test_parse_op_ks(op, expected):
    assert parse_op_ks(op) == expected


def test_json_round_trip():
    for g in (DARTS, ViT, sample_genotype(4, drop_concat=True, allow_transformer=True, rng=3)):
        d = json.loads(json.dumps(g.to_dict()))
        assert Genotype.from_dict(d) == g
        assert Genotype.from_json(d) == g
        lst = json.loads(json.dumps(g.to_list()))
        assert Genotype.from_list(lst) == g
        assert Genotype.from_json(json.dumps(lst)) == g
        assert Genotype.from_json(g.key()) == g
    # a namedtuple with lists and ranges, like the original code's genotypes
    Orig = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')
    orig = Orig(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
                        ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
                normal_concat=range(2, 6),
                reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
                        ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)],
                reduce_concat=[2, 3, 4, 5])
    assert Genotype.from_json(orig) == DARTS
    assert Genotype.from_json('DARTS') == DARTS
    assert hash(DARTS) == hash(Genotype.from_dict(DARTS.to_dict()))
    assert DARTS.key() != ViT.key()
    with pytest.raises(ValueError):
        Genotype.from_list([[], []])


def test_properties():
    assert DARTS.steps == 4 and not DARTS.is_vit
    assert ViT.steps == 1 and ViT.is_vit
    assert ViT.ops('normal') == ['none', 'msa'] and ViT.ops('reduce') == ['none', 'avg_pool_3x3']


def _check_structure(g, steps, drop_concat):
    for edges in (g.normal, g.reduce):
        assert len(edges) == 2 * steps
        for i in range(steps):
            (op1, j1), (op2, j2) = edges[2 * i:2 * i + 2]
            assert op1 in PRIMITIVES_DARTS_EXT and op2 in PRIMITIVES_DARTS_EXT
            assert 0 <= j1 < i + 2 and 0 <= j2 < i + 2 and j1 != j2  # two distinct earlier nodes
    assert g.normal_concat == g.reduce_concat
    assert g.normal_concat[-1] == steps + 1  # the last node is always concatenated
    assert list(g.normal_concat) == sorted(set(g.normal_concat))
    assert all(2 <= i <= steps + 1 for i in g.normal_concat)
    if not drop_concat:
        assert list(g.normal_concat) == list(range(2, steps + 2))


@pytest.mark.parametrize('steps', [1, 2, 4, 10])
def test_sample_structure_and_flags(steps):
    rng = np.random.default_rng(steps)
    for _ in range(50):
        g = sample_genotype(steps, only_pool=True, drop_concat=True, allow_none=False, allow_transformer=False,
                            rng=rng)
        _check_structure(g, steps, True)
        assert 'none' not in g.ops() and 'msa' not in g.ops()
        assert set(g.ops('reduce')) <= {'max_pool_3x3', 'avg_pool_3x3', 'skip_connect'}
        g = sample_genotype(steps, only_pool=False, drop_concat=False, allow_none=True, allow_transformer=True,
                            rng=rng)
        _check_structure(g, steps, False)


def test_sample_reproducible():
    a = [sample_genotype(3, allow_transformer=True, rng=np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = np.random.default_rng(7)
    b = [sample_genotype(3, allow_transformer=True, rng=rng) for _ in range(20)]
    assert b[0] == a[0]
    assert len(set(b)) == 20  # a continuing stream gives different genotypes


def test_sample_ops_uniform():
    # Random DARTS weights make every admissible op equally likely: 14 ops without `none`.
    rng = np.random.default_rng(0)
    counts = Counter()
    for _ in range(700):
        counts.update(sample_genotype(2, allow_none=False, allow_transformer=True, rng=rng).ops('normal'))
    n = sum(counts.values())  # 2800
    assert set(counts) == set(PRIMITIVES_DARTS_EXT) - {'none'}
    expected = n / 14
    assert all(0.7 * expected < c < 1.3 * expected for c in counts.values()), counts
    # only_pool: the three weightless ops are equally likely in reduction cells
    counts = Counter()
    for _ in range(500):
        counts.update(sample_genotype(1, only_pool=True, allow_none=False, rng=rng).ops('reduce'))
    assert set(counts) == {'max_pool_3x3', 'avg_pool_3x3', 'skip_connect'}
    assert all(250 < c < 420 for c in counts.values()), counts


def test_sample_drop_concat_rate():
    rng = np.random.default_rng(1)
    kept = [len(sample_genotype(5, drop_concat=True, rng=rng).normal_concat) - 1 for _ in range(400)]
    assert abs(np.mean(kept) / 4 - 0.5) < 0.06  # each of the 4 other nodes is kept with p = 1/2

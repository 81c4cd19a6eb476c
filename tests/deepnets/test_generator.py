import json
import pickle

import numpy as np
import pytest

from pyg_ghn.deepnets.generator import (SPLITS, arch_key, check_net_args, find_overlap, generate_net,
                                        generate_split, is_connected, op_rejection, propose_net_args,
                                        sample_net_args, sample_train_width)
from pyg_ghn.deepnets.genotypes import Genotype
from pyg_ghn.deepnets.network import count_params

KEYS = {'genotype', 'n_cells', 'ks', 'C_mult', 'preproc', 'glob_avg', 'stem_type', 'stem_pool', 'norm',
        'fc_layers', 'fc_dim', 'C', 'num_params'}


def G(normal, reduce, concat=(2,)):
    return Genotype.make(normal, concat, reduce, concat)


def test_op_rejection_rules():
    conv = ('conv_3x3', 0)
    assert op_rejection(G([('cse', 0), ('max_pool_3x3', 1)], [('skip_connect', 0), ('max_pool_3x3', 1)])) == \
        'cse_without_conv'
    assert op_rejection(G([('cse', 0), ('cse', 1)], [conv, ('max_pool_3x3', 1)])) == 'multiple_cse'
    assert op_rejection(G([('conv_5x5', 0), ('conv_7x7', 1)], [conv, conv])) == 'multiple_large_conv'
    assert op_rejection(G([('max_pool_3x3', 0), ('skip_connect', 1)], [('avg_pool_3x3', 0), ('none', 1)])) == \
        'no_learnable_op'
    # one cse per cell with a conv somewhere, one large conv per cell, or an msa alone are fine
    assert op_rejection(G([('cse', 0), ('sep_conv_3x3', 1)], [('cse', 0), ('max_pool_3x3', 1)])) is None
    assert op_rejection(G([('conv_5x5', 0), ('conv_3x3', 1)], [('conv_7x7', 0), ('max_pool_3x3', 1)])) is None
    assert op_rejection(G([('none', 0), ('msa', 1)], [('none', 0), ('avg_pool_3x3', 1)])) is None


@pytest.mark.parametrize('split', list(SPLITS))
def test_rules_hold_on_200_samples(split):
    cfg = SPLITS[split]
    rng = np.random.default_rng(123)
    stats = {}
    nets = [sample_net_args(split, rng, stats) for _ in range(200)]
    for a in nets:
        assert set(a) == KEYS
        g = Genotype.from_json(a['genotype'])
        ops = g.ops()
        assert cfg.min_layers <= a['n_cells'] <= cfg.max_layers
        max_steps = cfg.max_steps if a['n_cells'] <= max(cfg.deep_layers) else cfg.medium_steps
        assert cfg.min_steps <= g.steps <= max_steps
        if a['n_cells'] > max(cfg.deep_layers):
            assert g.steps <= cfg.medium_steps
        assert op_rejection(g) is None and is_connected(a)
        assert ('none' in ops) <= (g.steps > 1)  # none only allowed with more than one step
        for dset, imagenet in (('cifar10', False), ('imagenet', True)):
            assert a['num_params'][dset] == count_params(a, 10, imagenet, C=32)
            assert a['num_params'][dset] <= cfg.max_params
        assert a['ks'] in (3, 5, 7) and a['C_mult'] in (1, 2) and a['stem_type'] in (0, 1)
        assert a['fc_layers'] in (1, 2) and a['fc_dim'] == 256 and a['C'] == 32
        if g.steps > 1 or a['C_mult'] > 1:
            assert a['preproc']
        if g.is_vit or a['n_cells'] > max(cfg.deep_layers):
            assert a['glob_avg']
        if a['stem_pool']:
            assert a['stem_type'] == 0
        if split == 'bnfree':
            assert a['norm'] is None
        elif split == 'search':
            assert a['norm'] == 'bnorm'
        elif a['norm'] is None:
            assert a['n_cells'] <= cfg.min_layers + 1 and g.steps <= cfg.medium_steps
        json.dumps(a)  # JSON-able
    # the distribution is diverse (not one network repeated) and the rules do reject proposals
    assert len({arch_key(a) for a in nets}) == 200
    assert sum(stats.values()) > 0
    if split == 'dense':
        assert {'multiple_cse', 'multiple_large_conv'} <= set(stats)


def test_check_net_args_rejects():
    rng = np.random.default_rng(0)
    a = propose_net_args('deep', rng)
    a.update(genotype=G([('conv_3x3', 0), ('conv_7x7', 1)], [('conv_3x3', 0), ('conv_5x5', 1)]).to_dict(),
             n_cells=36, C_mult=2, preproc=True, glob_avg=False)
    reason, num_params = check_net_args(a, 'train')
    assert reason == 'too_many_params' and num_params['cifar10'] > 10 ** 7
    # node 2 has only `none` ops and node 3 only reads node 2: the cells have no output
    a.update(genotype=G([('none', 0), ('none', 1), ('none', 0), ('conv_3x3', 2)],
                        [('none', 0), ('none', 1), ('none', 0), ('conv_3x3', 2)], concat=(2, 3)).to_dict())
    assert check_net_args(a, 'train')[0] == 'disconnected'
    # with node 3 reading a cell input instead, the network is fine
    a.update(genotype=G([('none', 0), ('none', 1), ('none', 2), ('conv_3x3', 0)],
                        [('none', 0), ('none', 1), ('none', 2), ('conv_3x3', 0)], concat=(2, 3)).to_dict(),
             n_cells=8, glob_avg=True)
    assert check_net_args(a, 'train')[0] is None


def test_reproducible_and_resumable():
    a = generate_split('val', 6, seed=5)
    assert a == generate_split('val', 6, seed=5)
    assert a[2:] == generate_split('val', 4, seed=5, start=2)  # resume from index 2
    assert a[3] == generate_net('val', 3, seed=5)
    assert generate_split('val', 6, seed=6) != a
    # same seed, different splits with the same rules: different networks
    assert {arch_key(n) for n in generate_split('test', 6, seed=5)}.isdisjoint({arch_key(n) for n in a})
    # explicit generators: same seed, same networks
    assert sample_net_args('train', np.random.default_rng(9)) == sample_net_args('train', np.random.default_rng(9))
    # the per-network function is picklable, for process pools
    f = pickle.loads(pickle.dumps(generate_net))
    assert f('val', 1, 5) == a[1]


def test_splits_disjoint():
    test = generate_split('test', 50)
    train = generate_split('train', 300)
    assert find_overlap(test, train) == []
    assert find_overlap(test, train + [test[7]]) == [(7, 300)]  # the helper does find a shared network
    assert find_overlap(test, [test[3]], by='genotype') == [(3, 0)]
    # excluding architectures skips exactly those
    excl = {arch_key(train[0])}
    train2 = generate_split('train', 3, exclude=excl)
    assert arch_key(train2[0]) not in excl and train2[1:] == train[1:3]


def test_arch_key_ignores_the_order_of_a_nodes_two_inputs():
    # Found in the seed-0 stream: training network 1544 is test network 22 with the two inputs of its normal
    # cell's node listed the other way round -- the same network (isomorphic graphs, equal size).
    train_net, test_net = generate_net('train', 1544), generate_split('test', 23)[22]
    assert train_net['genotype']['normal'] == test_net['genotype']['normal'][::-1]
    assert train_net['num_params'] == test_net['num_params']
    assert arch_key(train_net) == arch_key(test_net)
    assert arch_key(train_net, 'genotype') == arch_key(test_net, 'genotype')
    assert find_overlap([test_net], [train_net]) == [(0, 0)]
    # Excluding the test architectures therefore replaces it.
    replaced = generate_net('train', 1544, exclude=frozenset({arch_key(test_net)}))
    assert arch_key(replaced) != arch_key(test_net)
    # A different op, input or hyperparameter still gives another key.
    other = dict(test_net, genotype=dict(test_net['genotype'], normal=[['conv_5x5', 1], ['msa', 0]]))
    assert arch_key(other) != arch_key(test_net)
    assert arch_key(dict(test_net, n_cells=test_net['n_cells'] + 1)) != arch_key(test_net)


def test_sample_train_width():
    chs, fcs = list(range(32, 129, 16)), list(range(64, 513, 64))
    rng = np.random.default_rng(0)
    nets = [sample_net_args('train', rng) for _ in range(150)]
    seen_C = set()
    for a in nets:
        b = sample_train_width(a, rng)
        assert set(b) == set(a) and b['genotype'] == a['genotype'] and a['C'] == 32  # input unchanged
        assert b['C'] in chs and b['fc_dim'] in fcs
        seen_C.add(b['C'])
        p = a['num_params']['cifar10'] / 1e6
        dense = any(op in ('conv_5x5', 'conv_7x7') for op in Genotype.from_json(a['genotype']).ops())
        if p > 0.8 or not a['glob_avg'] or dense or a['n_cells'] > 12:
            assert b['C'] == 32
        elif p > 0.4 or a['n_cells'] > 10:
            assert b['C'] <= 48
        elif p > 0.2 or a['n_cells'] > 8:
            assert b['C'] <= 64
        if b['C'] > 64:
            assert b['fc_dim'] <= 256
    assert len(seen_C) > 3
    assert sample_train_width(nets[0], 4) == sample_train_width(nets[0], 4)
    # a small shallow network can get any width
    small = dict(nets[0], n_cells=4, glob_avg=True, num_params={'cifar10': 10 ** 5, 'imagenet': 10 ** 5},
                 genotype=G([('conv_3x3', 0), ('sep_conv_3x3', 1)], [('max_pool_3x3', 0), ('conv_1x1', 1)]).to_dict())
    rng = np.random.default_rng(1)
    widths = {sample_train_width(small, rng)['C'] for _ in range(200)}
    assert widths == set(chs)


def test_unknown_split_is_a_value_error():
    with pytest.raises(ValueError, match="unknown split 'bogus'"):
        generate_net('bogus', 0)

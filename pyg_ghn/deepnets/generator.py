"""Random DeepNets-1M architectures: per-split generation rules, rejection, and training-time widths.

One architecture is described by a JSON-able ``net_args`` dict::

    {'genotype': {...}, 'n_cells': 11, 'ks': 5, 'C_mult': 2, 'preproc': True, 'glob_avg': True,
     'stem_type': 0, 'stem_pool': False, 'norm': 'bnorm', 'fc_layers': 2, 'fc_dim': 256, 'C': 32,
     'num_params': {'cifar10': 1234567, 'imagenet': 2345678}}

(``genotype`` in the dict form of the original meta files; ``num_params`` counted with ``C=32`` and 10
classes, like the original generator). ``Network.from_net_args(net_args)`` builds it.

Randomness comes only from the ``numpy.random.Generator`` passed in. :func:`generate_net` seeds a
generator from ``(seed, split, index)``, so every network of a split is a pure function of its index:
splits can be generated in parallel, in chunks, or resumed, with identical results.
"""
import json
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .genotypes import Genotype, RngLike, as_rng, sample_genotype
from .network import count_params, has_output

__all__ = ['SplitConfig', 'SPLITS', 'SPLIT_SEEDS', 'propose_net_args', 'op_rejection', 'check_net_args',
           'is_connected', 'sample_net_args', 'generate_net', 'generate_split', 'arch_key', 'find_overlap',
           'sample_train_width']


@dataclass(frozen=True)
class SplitConfig:
    r"""Generation rules of one split (spec §4.1).

    ``n_cells ~ U{min_layers..max_layers}``; ``steps ~ U{min_steps..max_steps}`` if ``n_cells`` is at
    most a threshold drawn from ``deep_layers``, else ``U{min_steps..medium_steps}``; networks with more
    than ``max_params`` parameters (CIFAR-10 or ImageNet version) are rejected. ``norm``: ``'random'``
    (BatchNorm, or none for shallow nets with few steps), ``'bnorm'`` or ``None``. ``search_preproc``:
    the search split's own rule for dropping 1x1 preprocessing.
    """
    min_layers: int = 4
    max_layers: int = 18
    deep_layers: Tuple[int, ...] = (7, 8, 9, 10)
    min_steps: int = 1
    medium_steps: int = 2
    max_steps: int = 4
    max_params: int = 10 ** 7
    norm: Optional[str] = 'random'
    search_preproc: bool = False


_ID = SplitConfig()
SPLITS: Dict[str, SplitConfig] = {
    'train': _ID,
    'val': _ID,
    'test': _ID,
    # The test rules; evaluation widens C (x4 CIFAR-10, x2 ImageNet). The original script re-uses the test
    # stream (WIDE = the first test networks, widened); here WIDE draws its own networks, so the split
    # shifts width and architecture together (the official files differ from that script anyway, spec §4.1).
    'wide': _ID,
    'bnfree': SplitConfig(norm=None),
    'deep': SplitConfig(min_layers=10, max_layers=36, deep_layers=(18,), max_params=10 ** 8),
    'dense': SplitConfig(min_steps=2, medium_steps=6, max_steps=10, max_params=10 ** 8),
    'search': SplitConfig(min_layers=6, max_layers=20, deep_layers=(10,), medium_steps=3, max_steps=6,
                          norm='bnorm', search_preproc=True),
}

#: Default seed of each split. The split name is also mixed into every generator (see
#: :func:`generate_net`), so two splits never share a random stream even with the same seed.
SPLIT_SEEDS: Dict[str, int] = {s: i for i, s in enumerate(SPLITS)}
_SPLIT_IDS = {s: i for i, s in enumerate(SPLITS)}

GEN_C = 32  # width used to count parameters at generation time (as the original generator)
GEN_NUM_CLASSES = 10


def _config(split: str) -> SplitConfig:
    try:
        return SPLITS[split]
    except KeyError:
        raise ValueError(f'unknown split {split!r}; one of {list(SPLITS)}') from None


def propose_net_args(split: str = 'train', rng: RngLike = None) -> Dict[str, Any]:
    r"""Draws one candidate architecture of ``split`` with no rejection (no ``num_params`` key)."""
    cfg, rng = _config(split), as_rng(rng)
    n_cells = int(rng.integers(cfg.min_layers, cfg.max_layers + 1))
    deep_layers = int(rng.choice(cfg.deep_layers))
    steps = int(rng.integers(cfg.min_steps, (cfg.max_steps if n_cells <= deep_layers else cfg.medium_steps) + 1))
    only_pool = bool(rng.random() > 0.5)
    drop_concat = bool(rng.random() > 0.5) if steps > 1 else False
    genotype = sample_genotype(steps, only_pool=only_pool, drop_concat=drop_concat, allow_none=steps > 1,
                               allow_transformer=True, rng=rng)
    is_vit = genotype.is_vit
    ks = int(rng.choice([3, 5, 7]))
    C_mult = int(rng.choice([1, 2]))
    if steps > 1 or C_mult > 1:
        preproc = True
    elif cfg.search_preproc:
        preproc = bool(rng.random() > 0.8) if is_vit else bool(rng.random() > 0.2)
    else:
        preproc = bool(not is_vit or rng.random() > 0.8)
    glob_avg = bool(is_vit or n_cells > deep_layers or rng.random() > 0.1)
    if cfg.norm == 'random':
        shallow = n_cells <= cfg.min_layers + 1 and steps <= cfg.medium_steps
        norm = (None if rng.random() < 0.5 else 'bnorm') if shallow else 'bnorm'
    else:
        norm = cfg.norm
    stem_type = int(rng.integers(0, 2))
    stem_pool = bool(stem_type == 0 and rng.random() > 0.5)
    fc_layers = int(rng.integers(1, 3))
    return {'genotype': genotype.to_dict(), 'n_cells': n_cells, 'ks': ks, 'C_mult': C_mult, 'preproc': preproc,
            'glob_avg': glob_avg, 'stem_type': stem_type, 'stem_pool': stem_pool, 'norm': norm,
            'fc_layers': fc_layers, 'fc_dim': 256, 'C': GEN_C}


def op_rejection(genotype: Any) -> Optional[str]:
    r"""The op-level rejection rules of DeepNets-1M, or ``None`` if the genotype passes:

    * ``'cse_without_conv'``: a ``cse`` op but no convolution (of any kind) in the network;
    * ``'multiple_cse'``: more than one ``cse`` in one cell (training GHNs on those gives NaN losses);
    * ``'multiple_large_conv'``: more than one of ``conv_5x5``/``conv_7x7`` in one cell (memory);
    * ``'no_learnable_op'``: no ``cse``, ``msa`` or convolution at all.
    """
    g = Genotype.from_json(genotype)
    ops = g.ops()
    has_cse, has_msa = 'cse' in ops, 'msa' in ops
    has_conv = any('conv' in op for op in ops)
    if has_cse and not has_conv:
        return 'cse_without_conv'
    for cell in ('normal', 'reduce'):
        cell_ops = g.ops(cell)
        if cell_ops.count('cse') > 1:
            return 'multiple_cse'
        if sum(op in ('conv_5x5', 'conv_7x7') for op in cell_ops) > 1:
            return 'multiple_large_conv'
    if not (has_cse or has_msa or has_conv):
        return 'no_learnable_op'
    return None


def is_connected(net_args: Dict[str, Any]) -> bool:
    r"""Hook for the "graph construction fails" rejection: ``False`` when ``none`` ops disconnect the
    network's output from its input (see :func:`pyg_ghn.deepnets.network.has_output`). This is decided
    from the genotype alone; a stricter check can build the graph with
    ``pyg_ghn.graph.builder.from_module`` and reject on failure."""
    return has_output(net_args['genotype'], net_args['n_cells'])


def check_net_args(net_args: Dict[str, Any], split: str = 'train') -> Tuple[Optional[str], Dict[str, int]]:
    r"""Applies all rejection rules of ``split``. Returns ``(reason, num_params)`` where ``reason`` is
    ``None`` for an accepted network (then ``num_params`` holds both counts), or one of the
    :func:`op_rejection` reasons, ``'disconnected'`` or ``'too_many_params'``."""
    cfg = _config(split)
    reason = op_rejection(net_args['genotype'])
    if reason is not None:
        return reason, {}
    if not is_connected(net_args):
        return 'disconnected', {}
    num_params = {}
    for dset, imagenet in (('cifar10', False), ('imagenet', True)):
        num_params[dset] = count_params(net_args, GEN_NUM_CLASSES, imagenet, C=GEN_C)
        if num_params[dset] > cfg.max_params:
            return 'too_many_params', num_params
    return None, num_params


def sample_net_args(split: str = 'train', rng: RngLike = None, stats: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    r"""Samples one accepted architecture of ``split``: proposals are drawn with
    :func:`propose_net_args` until one passes :func:`check_net_args`. If ``stats`` is a dict, the
    rejection reasons are counted into it."""
    rng = as_rng(rng)
    while True:
        net_args = propose_net_args(split, rng)
        reason, num_params = check_net_args(net_args, split)
        if reason is None:
            net_args['num_params'] = num_params
            return net_args
        if stats is not None:
            stats[reason] = stats.get(reason, 0) + 1


def _sorted_pairs(edges: Sequence[Sequence[Any]]) -> List[List[Any]]:
    out = []
    for k in range(0, len(edges), 2):
        out += sorted([list(e) for e in edges[k:k + 2]], key=lambda e: (str(e[0]), int(e[1])))
    return out


def arch_key(net_args: Dict[str, Any], by: str = 'arch') -> str:
    r"""A canonical string identifying an architecture: ``by='genotype'`` uses the cells only,
    ``by='arch'`` also the depth and every structural hyperparameter (not ``C``/``fc_dim``, which
    training resamples, nor ``num_params``)."""
    normal, normal_concat, reduce, reduce_concat = Genotype.from_json(net_args['genotype']).to_list()
    # A cell node sums its two inputs: the order in which the sampler lists them does not change the
    # network (the graphs are isomorphic), so the key lists each node's pair sorted.
    g = [_sorted_pairs(normal), sorted(normal_concat), _sorted_pairs(reduce), sorted(reduce_concat)]
    if by == 'genotype':
        return json.dumps(g, separators=(',', ':'))
    if by != 'arch':
        raise ValueError(f"by must be 'genotype' or 'arch', got {by!r}")
    hyper = {k: net_args.get(k) for k in ('n_cells', 'ks', 'C_mult', 'preproc', 'glob_avg', 'stem_type',
                                          'stem_pool', 'norm', 'fc_layers')}
    return json.dumps([g, hyper], separators=(',', ':'), sort_keys=True)


def generate_net(split: str, index: int, seed: Optional[int] = None,
                 exclude: FrozenSet[str] = frozenset(), exclude_by: str = 'arch') -> Dict[str, Any]:
    r"""Network number ``index`` of ``split``: a pure function of ``(split, index, seed, exclude)``,
    picklable for process pools. The generator is seeded with ``(seed, split id, index)``; ``seed``
    defaults to ``SPLIT_SEEDS[split]``. Architectures whose :func:`arch_key` is in ``exclude`` are
    skipped (e.g. the evaluation architectures when generating ``train``)."""
    _config(split)  # an unknown split is a ValueError naming the splits
    seed = SPLIT_SEEDS[split] if seed is None else int(seed)
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], int(index)])
    while True:
        net_args = sample_net_args(split, rng)
        if not exclude or arch_key(net_args, exclude_by) not in exclude:
            return net_args


def generate_split(split: str, num_nets: int, seed: Optional[int] = None, start: int = 0,
                   exclude: Iterable[str] = (), exclude_by: str = 'arch', progress: bool = False) -> List[Dict[str, Any]]:
    r"""Networks ``start .. start + num_nets - 1`` of ``split`` (see :func:`generate_net`)."""
    _config(split)
    exclude = frozenset(exclude)
    indices = range(start, start + num_nets)
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc=f'generating {split}')
    return [generate_net(split, i, seed, exclude, exclude_by) for i in indices]


def find_overlap(nets_a: Sequence[Dict[str, Any]], nets_b: Sequence[Dict[str, Any]],
                 by: str = 'arch') -> List[Tuple[int, int]]:
    r"""Pairs ``(i, j)`` with ``arch_key(nets_a[i], by) == arch_key(nets_b[j], by)``; empty when the two
    splits are disjoint. Use ``by='genotype'`` to compare cells only (one-step cells are few, so large
    splits do share some of those)."""
    index: Dict[str, List[int]] = {}
    for j, net in enumerate(nets_b):
        index.setdefault(arch_key(net, by), []).append(j)
    return [(i, j) for i, net in enumerate(nets_a) for j in index.get(arch_key(net, by), [])]


def sample_train_width(net_args: Dict[str, Any], rng: RngLike = None, large_images: bool = False,
                       num_ch: Tuple[int, int] = (32, 128), fc_dim: Tuple[int, int] = (64, 512)) -> Dict[str, Any]:
    r"""Training-time width sampling (spec §4.3): returns a copy of ``net_args`` with ``C`` and ``fc_dim``
    drawn so that large networks stay small.

    ``C`` is drawn from ``num_ch[0]..num_ch[1]`` in steps of 16 and ``fc_dim`` from ``fc_dim[0]..fc_dim[1]``
    in steps of 64, each uniformly among the first ``n`` values:

    * ``fc_dim``: first 4 values;
    * ``C``: the smallest value if the network has > 0.8M parameters (at ``C=32``), no global pooling, a
      ``conv_5x5``/``conv_7x7`` op or > 12 cells; else the first 2 values if > 0.4M or > 10 cells; else
      the first 3 if > 0.2M or > 8 cells; else any value, and then ``fc_dim`` from all values if
      ``C <= 64``.
    """
    rng = as_rng(rng)
    chs = np.arange(num_ch[0], num_ch[1] + 1, 16)
    fcs = np.arange(fc_dim[0], fc_dim[1] + 1, 64)
    pick = lambda x, n=None: int(x[rng.integers(len(x) if n is None else min(n, len(x)))])  # noqa: E731

    g = Genotype.from_json(net_args['genotype'])
    conv_dense = any(op in ('conv_5x5', 'conv_7x7') for op in g.ops())
    n_cells = net_args['n_cells']
    params = net_args['num_params']['imagenet' if large_images else 'cifar10'] / 10 ** 6

    fc = pick(fcs, 4)
    if params > 0.8 or not net_args['glob_avg'] or conv_dense or n_cells > 12:
        C = int(chs[0])
    elif params > 0.4 or n_cells > 10:
        C = pick(chs, 2)
    elif params > 0.2 or n_cells > 8:
        C = pick(chs, 3)
    else:
        C = pick(chs)
        if C <= 64:
            fc = pick(fcs)
    return {**net_args, 'C': C, 'fc_dim': fc}

"""DARTS-style cell genotypes, extended with the DeepNets-1M operations, and their random sampling.

A genotype describes the two cell types of a network (normal and reduction). Each cell has ``steps``
intermediate nodes; node ``i`` (numbered from 2, after the two cell inputs 0 and 1) sums the outputs of
two operations, each applied to one of the ``i`` earlier nodes. The cell output concatenates the nodes
listed in ``*_concat``. ``normal = [(op, input_index), ...]`` holds ``2 * steps`` pairs in node order.

The sampling follows the DeepNets-1M generator (spec §4.1): random DARTS "architecture weights"
:math:`\\alpha \\sim 10^{-3}\\mathcal{N}(0, 1)` of shape ``(k, 15)`` are decoded with the DARTS rule
(per node, the two inputs with the strongest non-``none`` op, then the strongest op per input).
All randomness comes from a ``numpy.random.Generator`` passed in, never from global state.
"""
import json
import re
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    'Genotype', 'PRIMITIVES_DARTS_EXT', 'DARTS', 'DARTS_V2', 'PDARTS', 'ViT', 'parse_op_ks',
    'sample_genotype', 'as_rng'
]

#: The 15 candidate cell operations of DeepNets-1M (DARTS' 8 plus non-separable convs, MSA and SE).
#: The order matters: ``only_pool`` keeps indices < 4 and the sampler breaks ties by first index.
PRIMITIVES_DARTS_EXT: List[str] = [
    'none',
    'max_pool_3x3',
    'avg_pool_3x3',
    'skip_connect',
    'sep_conv_3x3',
    'sep_conv_5x5',
    'dil_conv_3x3',
    'dil_conv_5x5',
    'conv_1x1',
    'conv_7x1_1x7',
    'conv_3x3',
    'conv_5x5',
    'conv_7x7',
    'msa',
    'cse',
]

Edge = Tuple[str, int]
RngLike = Union[np.random.Generator, int, Sequence[int], None]


def as_rng(rng: RngLike) -> np.random.Generator:
    r"""Returns ``rng`` if it is a ``numpy.random.Generator``, else ``numpy.random.default_rng(rng)``
    (an int or a sequence of ints seeds it; ``None`` draws fresh OS entropy, so it is not reproducible)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class Genotype(NamedTuple):
    r"""The structure of the normal and reduction cells.

    Stored as tuples so that genotypes are hashable and compare by value. ``from_json`` accepts the
    dict form of the original DeepNets-1M meta files (``{'normal': [[op, idx], ...], ...}``) and the
    compact list form ``[normal, normal_concat, reduce, reduce_concat]``.
    """
    normal: Tuple[Edge, ...]
    normal_concat: Tuple[int, ...]
    reduce: Tuple[Edge, ...]
    reduce_concat: Tuple[int, ...]

    @classmethod
    def make(cls, normal: Iterable, normal_concat: Iterable[int], reduce: Iterable,
             reduce_concat: Iterable[int]) -> 'Genotype':
        r"""Builds a genotype from any iterables (lists from JSON, ``range`` objects, ...)."""
        edges = lambda e: tuple((str(op), int(j)) for op, j in e)  # noqa: E731
        return cls(edges(normal), tuple(int(i) for i in normal_concat), edges(reduce),
                   tuple(int(i) for i in reduce_concat))

    # Serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        r"""The dict form used by the original ``*_meta.json`` files (JSON-able)."""
        return {
            'normal': [[op, j] for op, j in self.normal],
            'normal_concat': list(self.normal_concat),
            'reduce': [[op, j] for op, j in self.reduce],
            'reduce_concat': list(self.reduce_concat),
        }

    def to_list(self) -> list:
        r"""The compact form ``[normal, normal_concat, reduce, reduce_concat]`` (JSON-able)."""
        d = self.to_dict()
        return [d['normal'], d['normal_concat'], d['reduce'], d['reduce_concat']]

    @classmethod
    def from_dict(cls, d: dict) -> 'Genotype':
        return cls.make(d['normal'], d['normal_concat'], d['reduce'], d['reduce_concat'])

    @classmethod
    def from_list(cls, lst: Sequence) -> 'Genotype':
        if len(lst) != 4:
            raise ValueError(f'a genotype list has 4 entries, got {len(lst)}')
        return cls.make(*lst)

    @classmethod
    def from_json(cls, obj: Any) -> 'Genotype':
        r"""Accepts a :class:`Genotype`, a namedtuple with the same fields (e.g. ppuda's), the dict form,
        the list form, a JSON string of either, or the name of a predefined genotype (``'DARTS'``)."""
        if isinstance(obj, Genotype):
            return obj
        if isinstance(obj, str):
            if obj in PREDEFINED_GENOTYPES:
                return PREDEFINED_GENOTYPES[obj]
            obj = json.loads(obj)
        if isinstance(obj, dict):
            return cls.from_dict(obj)
        if hasattr(obj, '_fields') and set(cls._fields) <= set(obj._fields):
            return cls.make(obj.normal, obj.normal_concat, obj.reduce, obj.reduce_concat)
        if isinstance(obj, (list, tuple)):
            return cls.from_list(obj)
        raise TypeError(f'cannot make a Genotype from {type(obj).__name__}')

    def key(self) -> str:
        r"""A canonical string (compact JSON) identifying the genotype, for hashing and comparison."""
        return json.dumps(self.to_list(), separators=(',', ':'))

    # Properties ------------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        r"""Number of intermediate (sum) nodes per cell."""
        return len(self.normal) // 2

    def ops(self, cell: Optional[str] = None) -> List[str]:
        r"""Operation names of the normal cell, the reduction cell, or both (``cell=None``)."""
        edges = {'normal': self.normal, 'reduce': self.reduce, None: self.normal + self.reduce}[cell]
        return [op for op, _ in edges]

    @property
    def is_vit(self) -> bool:
        r"""Networks with an ``msa`` op anywhere are Vision-Transformer-style (ViT stem, no strides)."""
        return 'msa' in self.ops()


def parse_op_ks(op: str) -> Tuple[str, int]:
    r"""Splits a DARTS op name into its type and (largest) kernel size.

    ``'sep_conv_5x5' -> ('sep_conv', 5)``, ``'conv_7x1_1x7' -> ('conv2', 7)`` (two kernel tokens mean
    a factorised pair of convs), ``'skip_connect' -> ('skip_connect', 0)``, ``'msa' -> ('msa', 0)``.
    """
    name_parts, kernel_tokens = [], []
    for part in op.split('_'):
        m = re.fullmatch(r'(\d+)x(\d+)', part)
        if m:
            kernel_tokens.append(max(int(m.group(1)), int(m.group(2))))
        else:
            name_parts.append(part)
    name = '_'.join(name_parts) + ('2' if len(kernel_tokens) > 1 else '')
    return name, max(kernel_tokens, default=0)


def _decode_cell(weights: np.ndarray, steps: int, allow_none: bool) -> List[Edge]:
    r"""DARTS decoding: for node i, keep the 2 of its i+2 inputs whose best admissible op is strongest,
    then the strongest admissible op on each (ties to the lower index, as ``argmax``/stable sort)."""
    none = PRIMITIVES_DARTS_EXT.index('none')
    w = weights.copy()
    if not allow_none:
        w[:, none] = -np.inf
    gene, start = [], 0
    for i in range(steps):
        rows = w[start:start + i + 2]
        strength = rows.max(axis=1)
        inputs = sorted(range(i + 2), key=lambda j: -strength[j])[:2]  # stable, like the original
        gene.extend((PRIMITIVES_DARTS_EXT[int(np.argmax(rows[j]))], j) for j in inputs)
        start += i + 2
    return gene


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sample_genotype(steps: int = 1, only_pool: bool = False, drop_concat: bool = True,
                    allow_none: bool = True, allow_transformer: bool = False,
                    rng: RngLike = None) -> Genotype:
    r"""Samples a random genotype the way DeepNets-1M does.

    Args:
        steps (int): intermediate nodes per cell.
        only_pool (bool): restrict the reduction cell to ``none``/pools/``skip_connect`` (no weights).
        drop_concat (bool): keep each intermediate node in the cell output with probability 1/2; the
            last node is always kept (otherwise the sums feeding it would be lost).
        allow_none (bool): allow the ``none`` (zero) op, which makes sparse connectivity possible.
        allow_transformer (bool): allow ``msa``.
        rng: a ``numpy.random.Generator`` (or a seed for one).

    Both cells share the same concat list, as in the original generator.
    """
    rng = as_rng(rng)
    k = sum(i + 2 for i in range(steps))
    n_ops = len(PRIMITIVES_DARTS_EXT)
    alphas_normal = 1e-3 * rng.standard_normal((k, n_ops))
    alphas_reduce = 1e-3 * rng.standard_normal((k, n_ops))
    # -1000 before the softmax, as in the original: those ops get (numerically) zero weight.
    if only_pool:
        alphas_reduce[:, PRIMITIVES_DARTS_EXT.index('sep_conv_3x3'):] = -1000
    if not allow_transformer:
        alphas_normal[:, PRIMITIVES_DARTS_EXT.index('msa')] = -1000
        alphas_reduce[:, PRIMITIVES_DARTS_EXT.index('msa')] = -1000

    normal = _decode_cell(_softmax(alphas_normal), steps, allow_none)
    reduce = _decode_cell(_softmax(alphas_reduce), steps, allow_none)

    last = steps + 1
    if drop_concat:
        concat = [i for i in range(2, last) if rng.random() > 0.5] + [last]
    else:
        concat = list(range(2, last + 1))
    return Genotype.make(normal, concat, reduce, concat)


# Predefined genotypes (facts from the DARTS paper / the original code) ------------------------------

#: DARTS (second order, "DARTS-V2") best CIFAR-10 cell.
DARTS_V2 = Genotype.make(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)],
    reduce_concat=[2, 3, 4, 5])
DARTS = DARTS_V2

#: P-DARTS cell.
PDARTS = Genotype.make(
    normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 0), ('dil_conv_5x5', 4)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2),
            ('max_pool_3x3', 0), ('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)],
    reduce_concat=[2, 3, 4, 5])

#: The ViT of the paper as a genotype: normal cells are one Transformer block on the previous cell's
#: output; "reduction" cells are a stride-1 3x3 average pooling (ViT networks never downsample).
ViT = Genotype.make(normal=[('none', 0), ('msa', 1)], normal_concat=[2],
                    reduce=[('none', 0), ('avg_pool_3x3', 1)], reduce_concat=[2])

PREDEFINED_GENOTYPES = {'DARTS': DARTS, 'DARTS_V2': DARTS_V2, 'PDARTS': PDARTS, 'ViT': ViT}

"""Meta-batches of architectures: which networks a training step sees (paper §4.3, Equation 2)."""
import json
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

__all__ = ['MetaBatchSampler', 'meta_batch_loader', 'norm_free_indices', 'networks_of']


class MetaBatchSampler(Sampler):
    r"""An infinite stream of meta-batches of ``meta_batch`` architectures drawn uniformly from
    ``num_archs``, each with a seed for its training-time width.

    Draw :math:`k` is a pure function of ``(seed, k)``, so a stream started at ``start=k`` continues an
    interrupted run exactly. With ``world_size > 1`` every rank walks the same draws and keeps its share
    (items ``rank, rank + world_size, ...``), so the ranks together see the whole meta-batch.
    Items are ``(index, width_seed)`` pairs, which :class:`~pyg_ghn.datasets.DeepNets1M` accepts.

    With ``subset`` and ``subset_prob`` :math:`p > 0`, each architecture of a meta-batch is, with probability
    :math:`p`, replaced by one drawn uniformly from ``subset`` (e.g. the :func:`norm_free_indices`: the
    architectures without BatchNorm, 3% of DeepNets-1M's training split, are oversampled so that the GHN
    learns their weight scale). Only the replaced slots change: with :math:`p = 0` the draws are exactly
    the uniform stream's.
    """

    def __init__(self, num_archs: int, meta_batch: int = 8, seed: int = 0, start: int = 0, rank: int = 0,
                 world_size: int = 1, subset: Optional[Sequence[int]] = None, subset_prob: float = 0.) -> None:
        if meta_batch % world_size:
            raise ValueError(f'meta_batch={meta_batch} must be a multiple of the world size {world_size}')
        if not 0 <= subset_prob <= 1:
            raise ValueError(f'subset_prob must be in [0, 1], got {subset_prob}')
        self.subset = np.asarray([] if subset is None else subset, dtype=np.int64)
        if subset_prob > 0 and len(self.subset) == 0:
            raise ValueError('subset_prob > 0 needs a non-empty subset to draw from')
        if len(self.subset) and not (0 <= self.subset.min() and self.subset.max() < num_archs):
            raise ValueError(f'subset indices must lie in [0, {num_archs})')
        self.num_archs, self.meta_batch, self.seed = num_archs, meta_batch, seed
        self.start, self.rank, self.world_size = start, rank, world_size
        self.subset_prob = float(subset_prob)

    def draw(self, k: int) -> List[Tuple[int, int]]:
        rng = np.random.default_rng([self.seed, k])
        idx = rng.integers(self.num_archs, size=self.meta_batch)
        seeds = rng.integers(2 ** 31, size=self.meta_batch)
        if self.subset_prob > 0:  # drawn after the uniform stream's numbers, which therefore stay the same
            replace = rng.random(self.meta_batch) < self.subset_prob
            idx = np.where(replace, self.subset[rng.integers(len(self.subset), size=self.meta_batch)], idx)
        pairs = [(int(i), int(s)) for i, s in zip(idx, seeds)]
        return pairs[self.rank::self.world_size]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        k = self.start
        while True:
            yield self.draw(k)
            k += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs it for progress estimates
        return 2 ** 62


def norm_free_indices(dataset: Any) -> List[int]:
    """Indices of the architectures of a :class:`~pyg_ghn.datasets.DeepNets1M` split built without
    BatchNorm (``net_args['norm'] is None``; in the training split these are shallow networks, 3%)."""
    # positions in the dataset, which may be a view (dataset[idx]) of the split's list of net_args
    rows = dataset.indices() if hasattr(dataset, 'indices') else range(len(dataset.nets))
    return [pos for pos, row in enumerate(rows) if dataset.nets[row].get('norm') is None]


def meta_batch_loader(dataset: Any, meta_batch: int = 8, seed: int = 0, start: int = 0, num_workers: int = 0,
                      rank: int = 0, world_size: int = 1, norm_free_prob: float = 0.) -> DataLoader:
    """A PyG :class:`~torch_geometric.loader.DataLoader` over ``dataset`` yielding one
    :class:`~torch_geometric.data.Batch` of architecture graphs per training step; graphs are built in the
    workers. ``norm_free_prob``: the probability that a slot of a meta-batch holds an architecture without
    BatchNorm (:class:`MetaBatchSampler`'s ``subset_prob`` over :func:`norm_free_indices`)."""
    subset = norm_free_indices(dataset) if norm_free_prob > 0 else None
    if norm_free_prob > 0 and not subset:
        raise ValueError(f'norm_free_prob={norm_free_prob}: none of the {len(dataset)} architectures is without '
                         'BatchNorm, so there is nothing to oversample')
    sampler = MetaBatchSampler(len(dataset), meta_batch, seed, start, rank, world_size, subset, norm_free_prob)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


def networks_of(batch: Batch, build: Any, device: torch.device) -> List[nn.Module]:
    """Instantiates the networks of a batch for a functional forward pass.

    The modules are built on the ``meta`` device: their parameters are only placeholders, replaced by the
    GHN's predictions through :func:`torch.func.functional_call`, so nothing is allocated or initialised.
    Buffers (if any) are materialised on ``device`` and reset."""
    nets = []
    attached = getattr(batch, 'network', None)  # built by dataset workers (DeepNets1M(attach_network=True))
    for i, args in enumerate(batch.net_args):
        if attached is not None:
            net = attached[i]
        else:
            with torch.device('meta'):
                net = build(json.loads(args) if isinstance(args, str) else args)
        if any(True for _ in net.buffers()):
            net = net.to_empty(device=device)
            for m in net.modules():
                if hasattr(m, 'reset_running_stats'):
                    m.reset_running_stats()
        nets.append(net.train())
    return nets

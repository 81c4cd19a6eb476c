"""Meta-batches of architectures: which networks a training step sees (paper §4.3, Equation 2)."""
import json
import pickle
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, get_worker_info
from torch_geometric.data import Batch
from torch_geometric.loader.dataloader import Collater

__all__ = ['MetaBatchSampler', 'MetaBatchLoader', 'meta_batch_loader', 'norm_free_indices', 'networks_of']


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


class _Pickled:
    """A meta-batch pickled whole by a DataLoader worker: one buffer for the queue to carry."""
    __slots__ = ('data',)

    def __init__(self, batch: Batch) -> None:
        self.data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self) -> Batch:
        return pickle.loads(self.data)


class _CollateAndPickle:
    """PyG's :class:`Collater`; in a DataLoader worker, the batch is then pickled whole (:class:`_Pickled`)."""

    def __init__(self, collate: Callable[[List[Any]], Batch]) -> None:
        self.collate = collate

    def __call__(self, items: List[Any]) -> Any:
        batch = self.collate(items)
        return batch if get_worker_info() is None else _Pickled(batch)


class MetaBatchLoader(DataLoader):
    r"""A DataLoader of :class:`~torch_geometric.data.Batch`\ es of architecture graphs (what PyG's
    :class:`~torch_geometric.loader.DataLoader` gives) whose workers hand each batch over as one pickled
    buffer.

    Why: by default a batch leaves a worker through :mod:`torch.multiprocessing`, which moves every tensor's
    storage to shared memory and passes its file descriptor over a new authenticated connection (~3 ms a
    storage, ~40 a meta-batch), and rebuilds each of the ~1,500 parameters of the attached meta networks one
    by one: 0.2-0.25 s of the training process's time a meta-batch of 8, ~9% of a CPU-recipe step. Pickled
    whole in the worker, the same batch arrives in 0.06-0.12 s (``benchmarks/train_step.py``, ``--workers``).
    Without workers, batches are PyG's, untouched."""

    def __init__(self, dataset: Any, **kwargs: Any) -> None:
        kwargs.pop('collate_fn', None)
        super().__init__(dataset, collate_fn=_CollateAndPickle(Collater(dataset)), **kwargs)

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        # Not a generator: the base iterator must be created now, as PyG's would be, because creating it draws
        # from torch's global random stream (its base seed), and a resumed run replays that stream in order.
        return map(_unpickled, super().__iter__())


def _unpickled(batch: Any) -> Batch:
    return batch.load() if isinstance(batch, _Pickled) else batch


def meta_batch_loader(dataset: Any, meta_batch: int = 8, seed: int = 0, start: int = 0, num_workers: int = 0,
                      rank: int = 0, world_size: int = 1, norm_free_prob: float = 0.) -> MetaBatchLoader:
    """A :class:`MetaBatchLoader` over ``dataset`` yielding one :class:`~torch_geometric.data.Batch` of
    architecture graphs per training step; graphs are built in the workers. ``norm_free_prob``: the
    probability that a slot of a meta-batch holds an architecture without BatchNorm
    (:class:`MetaBatchSampler`'s ``subset_prob`` over :func:`norm_free_indices`)."""
    subset = norm_free_indices(dataset) if norm_free_prob > 0 else None
    if norm_free_prob > 0 and not subset:
        raise ValueError(f'norm_free_prob={norm_free_prob}: none of the {len(dataset)} architectures is without '
                         'BatchNorm, so there is nothing to oversample')
    sampler = MetaBatchSampler(len(dataset), meta_batch, seed, start, rank, world_size, subset, norm_free_prob)
    return MetaBatchLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
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

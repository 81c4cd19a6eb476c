r"""Architecture graphs with measured properties as targets, shaped like an OGB graph-property dataset."""
import copy
import hashlib
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Dataset

from ..graph.arch_graph import ArchGraph

__all__ = ['PROPERTIES', 'ArchPropertyDataset', 'load_results', 'measured_on']

#: The four properties, in the column order of ``y`` (see :mod:`pyg_ghn.properties.measure`).
PROPERTIES: Tuple[str, ...] = ('clean_acc', 'noise_acc', 'time', 'converge_time')

#: Version of the property files written by :mod:`pyg_ghn.properties.measure`.
FORMAT_VERSION = 1


def load_results(path: str) -> Dict[str, Any]:
    """Reads a property file: ``{'version', 'config', 'results': [record, ...]}``, each record with ``split``,
    ``idx``, ``net_args`` and the properties (or ``error``)."""
    with open(path) as f:
        out = json.load(f)
    if not isinstance(out, dict) or out.get('version') != FORMAT_VERSION or 'results' not in out:
        raise ValueError(f'{path} is not a pyg_ghn property file (version {FORMAT_VERSION})')
    return out


def measured_on(state: Dict[str, Any]) -> str:
    """The device a property file was measured on (``'cpu'``, ``'cuda (NVIDIA H200)'``, ...). Files written
    before the device was recorded carry none: every one of them was measured on the CPU."""
    return state.get('device', 'cpu')


class ArchPropertyDataset(Dataset):
    r"""DeepNets-1M architectures and their ground-truth properties (paper §5.2), read from the JSON files
    written by :mod:`pyg_ghn.properties.measure`.

    Each item is an :class:`~pyg_ghn.ArchGraph` of the network **as it was measured** (its ``net_args``,
    width included, built with :func:`~pyg_ghn.graph.builder.from_module`) with

    * ``y`` (FloatTensor ``[1, P]``): the properties, one column per name of ``properties`` (default
      :data:`~pyg_ghn.properties.measure.PROPERTIES`: clean accuracy (%), noisy accuracy (%), milliseconds
      per batch, SGD steps to converge), so that a batch has ``y`` of shape ``[B, P]``;
    * ``split`` (str) and ``net_idx`` (int): where the architecture comes from;
    * ``net_args`` (str): the JSON of the measured network's arguments.

    As in OGB, :meth:`get_idx_split` gives the indices to train on and test on: here ``'train'`` are the
    DeepNets-1M **val** architectures and ``'test'`` the **test** ones (the paper's protocol: regression
    models are fitted and tuned on the 500 ID-VAL networks and evaluated on the 500 ID-TEST networks).
    Records with an ``error`` (a training run that diverged) are left out.

    Graphs are built once and cached in ``root/processed`` under a name that hashes the records'
    architectures, ``max_sp_dist`` and ``pre_transform``, so extended files or another pre-transform are
    processed again (re-measured targets of the same networks are not: ``y`` is set on loading).

    Args:
        root (str): folder for the processed cache.
        paths (str or list of str): property files (several are merged; a ``(split, idx)`` measured twice, or
            files measured with other settings or on another device, are an error).
        properties (sequence of str): target columns. (default: all four)
        max_sp_dist (int): virtual-edge cut-off of the graphs (GHN-2: 50).
        train_split, test_split (str): the DeepNets-1M splits returned as ``'train'`` / ``'test'`` by
            :meth:`get_idx_split`. (default: ``'val'``, ``'test'``)
        transform, pre_transform: as in PyG; a ``pre_transform`` may read ``y`` but not change it (targets
            are set on loading), scale targets in ``transform``.
    """

    def __init__(self, root: str, paths: Union[str, Sequence[str]],
                 properties: Sequence[str] = PROPERTIES, max_sp_dist: int = 50,
                 train_split: str = 'val', test_split: str = 'test',
                 transform: Optional[Callable] = None, pre_transform: Optional[Callable] = None,
                 log: bool = True) -> None:
        paths = [paths] if isinstance(paths, str) else list(paths)
        if train_split == test_split:
            raise ValueError(f'train_split and test_split are both {train_split!r}: regression models would be '
                             'tuned and scored on the same networks')
        self.paths, self.properties, self.max_sp_dist = paths, tuple(properties), max_sp_dist
        self.train_split, self.test_split = train_split, test_split
        records, seen, settings = [], set(), {}
        for p in paths:
            state = load_results(p)
            # Targets fitted on one file and scored on another must be the same quantities: the same
            # training, threshold, noise, test images and timing device.
            settings[p] = dict(state.get('config', {}), device=measured_on(state))
            first = next(iter(settings.values()))
            if settings[p] != first:
                diff = {k: (first.get(k), settings[p].get(k)) for k in sorted(set(first) | set(settings[p]))
                        if first.get(k) != settings[p].get(k)}
                raise ValueError(f'{p} was measured with other settings than {paths[0]}: {diff} '
                                 f'({paths[0]}, {p}); their properties are not comparable')
            for r in state['results']:
                key = (r['split'], r['idx'])
                if key in seen:
                    raise ValueError(f'{key} is measured twice in {paths}')
                seen.add(key)
                if 'error' not in r:
                    records.append(r)
        missing = [k for k in self.properties if any(r.get(k) is None for r in records)]
        if missing:
            raise ValueError(f'properties {missing} are missing from some records of {paths}')
        records.sort(key=lambda r: (r['split'] != train_split, r['split'] != test_split, r['split'], r['idx']))
        self.records: List[Dict[str, Any]] = records
        #: The measurement settings shared by all files (:class:`~pyg_ghn.properties.measure.MeasureConfig`
        #: fields and ``device``).
        self.config: Dict[str, Any] = dict(next(iter(settings.values()), {}))
        # The targets are not in the key: re-measured properties of the same networks reuse the graphs.
        key = json.dumps([[r['split'], r['idx'], r['net_args']] for r in records]
                         + [max_sp_dist, repr(pre_transform)], sort_keys=True)
        y = torch.tensor([[float(r[k]) for k in self.properties] for r in records], dtype=torch.float)
        self._y = y.view(len(records), 1, len(self.properties))  # one [1, P] row per graph
        self._hash = hashlib.sha1(key.encode()).hexdigest()[:12]
        self._graphs: List[ArchGraph] = []
        super().__init__(root, transform, pre_transform, log=log)
        if not self._graphs:
            stored = torch.load(self.processed_paths[0], weights_only=True)
            self._graphs = [ArchGraph(**d) for d in stored]
        for g, yi in zip(self._graphs, self._y):
            g.y = yi

    @property
    def raw_file_names(self) -> List[str]:
        return []  # the property files are given by path

    @property
    def processed_file_names(self) -> List[str]:
        return [f'graphs_{self._hash}.pt']

    def download(self) -> None:
        pass

    def process(self) -> None:
        from tqdm import tqdm
        from ..datasets.deepnets1m import build_network
        from ..graph.builder import from_module
        graphs = []
        for r, y in zip(tqdm(self.records, desc='architecture graphs', disable=not self.log), self._y):
            g = from_module(build_network(r['net_args']), max_sp_dist=self.max_sp_dist, warn=False)
            g.y, g.split, g.net_idx = y, r['split'], int(r['idx'])  # y set here too: a pre_transform may read it
            g.net_args = json.dumps(r['net_args'], separators=(',', ':'), sort_keys=True)
            if self.pre_transform is not None:
                g = self.pre_transform(g)
                # y is set again on every load (re-measured targets reuse the cached graphs), so a change
                # made here would be silently undone: target scaling belongs in ``transform``.
                if not torch.equal(g.y, y):
                    raise ValueError('pre_transform changed y; it may read the targets but not change them '
                                     '(y is restored on loading): scale targets in transform instead')
            graphs.append(g)
        torch.save([g.to_dict() for g in graphs], self.processed_paths[0])
        self._graphs = graphs

    def len(self) -> int:
        return len(self.records)

    def get(self, idx: int) -> ArchGraph:
        return copy.copy(self._graphs[idx])  # as InMemoryDataset: setting an attribute leaves the dataset as is

    @property
    def y(self) -> Tensor:
        """The targets of the graphs of this dataset (or of this view, after indexing), ``[N, P]``."""
        ys = [self._graphs[i].y for i in self.indices()]
        return torch.cat(ys) if ys else torch.empty(0, len(self.properties))

    @property
    def num_tasks(self) -> int:
        return len(self.properties)

    def get_idx_split(self) -> Dict[str, Tensor]:
        """``{'train': indices of the train_split architectures, 'valid': empty, 'test': of the test_split
        ones}``: OGB's keys; ``'valid'`` is empty because the protocol tunes by cross-validation on ``'train'``."""
        splits = [self.records[i]['split'] for i in self.indices()]
        of = lambda which: torch.tensor([i for i, s in enumerate(splits) if s == which], dtype=torch.long)  # noqa: E731
        return {'train': of(self.train_split), 'valid': torch.empty(0, dtype=torch.long), 'test': of(self.test_split)}

    def __repr__(self) -> str:
        counts = {k: len(v) for k, v in self.get_idx_split().items()}
        return f'{self.__class__.__name__}({len(self)}, properties={list(self.properties)}, splits={counts})'

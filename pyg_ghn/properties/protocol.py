r"""The property-prediction protocol of the paper (§5.2, appendix C.2.3; the original
``experiments/property_prediction.py``, spec §6.2): GHN graph embeddings -> RBF support vector regression
tuned by 5-fold cross-validation on the val architectures -> Kendall's :math:`\tau` on the test ones.

Two steps of the original are not here: the final refit on val + test and the search for the best of its
100,000 "search" architectures (a use of the regressor, not part of the reported :math:`\tau`), and the
rounding of the ground-truth values the original's comments mention for the paper (the measured targets are
used as they are; :data:`ROUND_DECIMALS` rounds the predictions, as the code does)."""
import os
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from .evaluator import kendall_tau, tau_summary
from .dataset import PROPERTIES

__all__ = ['SVR_GRID', 'ROUND_DECIMALS', 'round_predictions', 'embed_graphs', 'fit_svr', 'svr_protocol',
           'load_ghn_or_random', 'parse_ghn_specs', 'load_ghns']

#: The grid of the original script: ``GridSearchCV(SVR(), SVR_GRID, cv=5)``.
SVR_GRID: Dict[str, List[Any]] = {
    'kernel': ['rbf'],
    'C': [1, 10, 50, 100, 200, 500, 1000],
    'gamma': ['auto', 0.05, 0.1, 0.2, 0.5],
    'epsilon': [0.05, 0.1, 0.2],
}

#: Decimals predictions are rounded to before :math:`\tau` (``None``: not rounded): as the original, every
#: prediction is rounded to an integer except the convergence time. Accuracies are in percent as there, and
#: the inference time in milliseconds per batch (the original's: GPU seconds for the validation set).
ROUND_DECIMALS: Dict[str, Optional[int]] = {'clean_acc': 0, 'noise_acc': 0, 'time': 0, 'converge_time': None}


def round_predictions(pred: np.ndarray, prop: str,
                      round_decimals: Optional[Mapping[str, Optional[int]]] = None) -> np.ndarray:
    """Rounds predictions of property ``prop`` as the protocol does before :math:`\tau`
    (:data:`ROUND_DECIMALS` by default), so that every method of a table is scored alike."""
    decimals = (ROUND_DECIMALS if round_decimals is None else round_decimals).get(prop)
    pred = np.asarray(pred, dtype=np.float64)
    return pred if decimals is None else np.round(pred, decimals)


@torch.no_grad()
def embed_graphs(ghn: nn.Module, graphs: Iterable[Data], batch_size: int = 32) -> np.ndarray:
    r"""Graph embeddings :math:`\mathbf{h}_a = \frac{1}{|V|}\sum_v \mathbf{h}_v` (paper §5.2 footnote 8):
    the mean of the node features after the GNN and LayerNorm (:meth:`pyg_ghn.nn.GHN.embed`), for GHN-2,
    GHN-1 and MLP GHNs alike. The GHN runs in eval mode (restored afterwards). Returns ``[N, d]``
    ``float64``. A graph's embedding does not depend on the batch it is in."""
    graphs = list(graphs)
    was_training = ghn.training
    ghn.eval()
    out = []
    try:
        for i in range(0, len(graphs), batch_size):
            _, h = ghn.embed(Batch.from_data_list(graphs[i:i + batch_size]))
            out.append(h.double().cpu())
    finally:
        ghn.train(was_training)
    if not out:
        return np.zeros((0, getattr(ghn, 'hid', 0)))
    return torch.cat(out).numpy()


def fit_svr(x: np.ndarray, y: np.ndarray, grid: Optional[Mapping[str, Sequence[Any]]] = None,
            seed: Optional[int] = None, cv: int = 5, n_jobs: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
    """Tunes an :class:`sklearn.svm.SVR` with :class:`~sklearn.model_selection.GridSearchCV` (``cv``-fold,
    unshuffled folds, as the original) on the rows of ``x`` permuted by ``seed`` (``None``: in order; the
    seed thus chooses the folds), then refits it on all rows with the best parameters. Returns the fitted
    SVR and the best parameters."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVR
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64).ravel()
    if seed is not None:
        perm = np.random.RandomState(seed).permutation(len(x))
        x, y = x[perm], y[perm]
    if len(x) < max(cv, 2):
        raise ValueError(f'{len(x)} training architectures for {cv}-fold cross-validation: need at least {cv}')
    search = GridSearchCV(SVR(), dict(grid if grid is not None else SVR_GRID), cv=cv, n_jobs=n_jobs)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=UserWarning)  # folds with constant targets
        search.fit(x, y)
    model = SVR(**search.best_params_).fit(x, y)
    return model, dict(search.best_params_)


def svr_protocol(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 properties: Sequence[str] = PROPERTIES, seeds: Sequence[Optional[int]] = (None, 0, 1, 2, 3),
                 grid: Optional[Mapping[str, Sequence[Any]]] = None,
                 round_decimals: Optional[Mapping[str, Optional[int]]] = None, cv: int = 5,
                 n_jobs: Optional[int] = None) -> Dict[str, Dict[str, Any]]:
    r"""Runs the paper's protocol for every property: :func:`fit_svr` on the training (val) architectures
    for each seed (the original's row permutations, seeds 0-3 and none), predictions on the test
    architectures rounded per ``round_decimals`` (default :data:`ROUND_DECIMALS`), then Kendall's
    :math:`\tau` with the true test values.

    ``y_train`` / ``y_test`` are ``[N, P]`` with the columns of ``properties``. Returns, per property,
    ``{'tau': [per seed], 'mean': ..., 'std': ..., 'best_params': [per seed], 'y_pred': [N_test] of the
    first seed}``.
    """
    round_decimals = ROUND_DECIMALS if round_decimals is None else round_decimals
    y_train, y_test = np.asarray(y_train, dtype=np.float64), np.asarray(y_test, dtype=np.float64)
    y_train = y_train.reshape(len(y_train), -1)
    y_test = y_test.reshape(len(y_test), -1)
    if y_train.shape[1] != len(properties) or y_test.shape[1] != len(properties):
        raise ValueError(f'targets have {y_train.shape[1]}/{y_test.shape[1]} columns for {list(properties)}')
    results: Dict[str, Dict[str, Any]] = {}
    for j, prop in enumerate(properties):
        taus, params, first_pred = [], [], None
        for seed in seeds:
            model, best = fit_svr(x_train, y_train[:, j], grid, seed, cv, n_jobs)
            pred = model.predict(np.asarray(x_test, dtype=np.float64))
            pred = round_predictions(pred, prop, round_decimals)
            taus.append(kendall_tau(y_test[:, j], pred))
            params.append(best)
            first_pred = pred if first_pred is None else first_pred
        results[prop] = dict(tau_summary(taus), best_params=params, y_pred=first_pred)
    return results


def load_ghn_or_random(path: Optional[str], config: str = 'ghn2', dataset: str = 'cifar10',
                       seed: int = 0) -> nn.Module:
    """A GHN from ``path`` (:meth:`pyg_ghn.nn.GHN.load`), or, if ``path`` is ``None`` or ``'random'``, a
    randomly initialised one of configuration ``config`` (seeded), with a warning: its embeddings carry no
    learned knowledge. In eval mode."""
    from ..nn import GHN
    if path in (None, 'random'):
        warnings.warn(f'No GHN checkpoint given: using a randomly initialised {config} (seed {seed}); '
                      f'pass --ghn PATH for a trained one.', stacklevel=2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return GHN.from_config(config, dataset).eval()
    return GHN.load(path).eval()


def parse_ghn_specs(specs: Optional[Sequence[str]]) -> List[Tuple[str, Optional[str], str]]:
    """Command-line GHN specifications -> ``(name, path or None, config)``: ``'NAME=PATH'``, a bare ``PATH``
    (named after the file) or ``'NAME=random'`` (a random GHN of configuration NAME when NAME is one, e.g.
    ``ghn1``, else GHN-2). ``None`` or empty means one random GHN-2."""
    from ..nn.configs import CONFIGS
    out, seen = [], {}
    for s in specs or ['ghn2=random']:
        name, path = s.split('=', 1) if '=' in s else (os.path.splitext(os.path.basename(s))[0], s)
        if name in seen:  # results are keyed by name: a second one would silently replace the first
            raise ValueError(f'two GHNs are named {name!r} ({seen[name]!r} and {s!r}): name them, NAME=PATH')
        seen[name] = s
        out.append((name, None if path in ('random', '') else path, name if name in CONFIGS else 'ghn2'))
    return out


def load_ghns(specs: Optional[Sequence[str]], seed: int = 0) -> List[Tuple[str, nn.Module]]:
    """``(label, GHN)`` for each of :func:`parse_ghn_specs`; random ones are labelled ``'NAME (random)'``
    and announced by a warning."""
    out = []
    for name, path, config in parse_ghn_specs(specs):
        out.append((name + (' (random)' if path is None else ''), load_ghn_or_random(path, config, seed=seed)))
    return out

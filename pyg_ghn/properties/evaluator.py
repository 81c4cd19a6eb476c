r"""Kendall's :math:`\tau` between predicted and true architecture properties, with the interface of an
OGB evaluator."""
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from .dataset import PROPERTIES

__all__ = ['Evaluator', 'kendall_tau', 'tau_summary']

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


def _numpy(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def kendall_tau(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    r"""Kendall's :math:`\tau_b` (:func:`scipy.stats.kendalltau`, ties accounted for) of two vectors.

    Architectures whose true value is NaN (not measured) are left out, as OGB skips missing labels. A
    prediction is never left out: a NaN or infinite prediction raises ``ValueError`` (dropping it would score
    a model only on the graphs it handles), and a constant prediction of a varying target scores 0 (it ranks
    nothing; :math:`\tau_b` itself is undefined there). ``nan`` only when the targets cannot be ranked: fewer
    than two, or all equal."""
    from scipy.stats import kendalltau
    t, p = _numpy(y_true).ravel(), _numpy(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f'y_true and y_pred differ in size: {t.shape} vs {p.shape}')
    keep = ~np.isnan(t)
    t, p = t[keep], p[keep]
    if not np.all(np.isfinite(p)):
        raise ValueError(f'{int((~np.isfinite(p)).sum())} of {p.size} predictions are NaN or infinite')
    if t.size < 2 or np.all(t == t[0]):
        return float('nan')
    if np.all(p == p[0]):
        return 0.0
    return float(kendalltau(t, p).statistic)


def tau_summary(taus: Sequence[float]) -> Dict[str, Any]:
    r"""``{'tau': taus, 'mean': ..., 'std': ...}`` over seeds (population std, as ``np.std``). Every seed
    counts: a NaN :math:`\tau` (targets that cannot be ranked) makes the mean NaN rather than being dropped."""
    arr = np.asarray(taus, dtype=np.float64)
    return dict(tau=[float(t) for t in arr], mean=float(arr.mean()) if arr.size else float('nan'),
                std=float(arr.std()) if arr.size else float('nan'))


class Evaluator:
    r"""Evaluates property predictions like ``ogb.graphproppred.Evaluator``: ``eval({'y_true': ...,
    'y_pred': ...})`` with arrays of shape ``[N, P]`` (or ``[N]`` for one property) returns Kendall's
    :math:`\tau` per property column (:func:`kendall_tau`), keyed by name, and their mean as
    ``'kendall_tau'`` (columns whose targets cannot be ranked, NaN, left out of the mean).

    Args:
        properties (sequence of str, optional): the column names. (default: the four of
            :data:`~pyg_ghn.properties.measure.PROPERTIES`)
    """

    def __init__(self, properties: Optional[Sequence[str]] = None) -> None:
        self.properties = tuple(properties) if properties is not None else PROPERTIES
        self.eval_metric = 'kendall_tau'

    @property
    def expected_input_format(self) -> str:
        return (f"{{'y_true': y_true, 'y_pred': y_pred}}, arrays (numpy or torch) of shape "
                f"[num_graphs, {len(self.properties)}], columns {list(self.properties)}")

    def eval(self, input_dict: Dict[str, ArrayLike]) -> Dict[str, float]:
        if 'y_true' not in input_dict or 'y_pred' not in input_dict:
            raise KeyError(f'Expected {self.expected_input_format}')
        t, p = _numpy(input_dict['y_true']), _numpy(input_dict['y_pred'])
        if t.ndim == 1:
            t = t[:, None]
        if p.ndim == 1:
            p = p[:, None]
        if t.shape != p.shape or t.ndim != 2:
            raise ValueError(f'y_true {t.shape} and y_pred {p.shape} must both be [N, P]')
        if t.shape[1] != len(self.properties):
            raise ValueError(f'{t.shape[1]} columns for properties {list(self.properties)}')
        out = {name: kendall_tau(t[:, j], p[:, j]) for j, name in enumerate(self.properties)}
        finite = [v for v in out.values() if not np.isnan(v)]
        out[self.eval_metric] = float(np.mean(finite)) if finite else float('nan')
        return out

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({list(self.properties)})'

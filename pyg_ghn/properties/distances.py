r"""Comparing neural architectures (paper appendix C.2.4, Tables 10-11): distances between GHN graph
embeddings, the Fréchet distance between the embeddings of two sets of architectures, and the Hungarian
assignment cost between two graphs' nodes as a reference graph distance."""
import warnings
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

__all__ = ['l2_distance', 'pairwise_l2', 'frechet_distance', 'node_cost_matrix', 'hungarian_distance',
           'mean_hungarian_distance']

ArrayLike = Union[np.ndarray, Tensor, Sequence[float]]


def _np(a: ArrayLike) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def l2_distance(a: ArrayLike, b: ArrayLike) -> float:
    r""":math:`\lVert \mathbf{h}_{a_1} - \mathbf{h}_{a_2} \rVert_2` between two graph embeddings."""
    return float(np.linalg.norm(_np(a).ravel() - _np(b).ravel()))


def pairwise_l2(x: ArrayLike, y: Optional[ArrayLike] = None) -> np.ndarray:
    """The matrix of :func:`l2_distance` between the rows of ``x`` and those of ``y`` (default ``x``)."""
    x = _np(x)
    y = x if y is None else _np(y)
    return np.sqrt(np.maximum(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1), 0.0))


def frechet_distance(x: ArrayLike, y: ArrayLike, eps: float = 1e-6) -> float:
    r"""The Fréchet distance between Gaussians fitted to two sets of embeddings ``[N, d]`` and ``[M, d]``
    (as the Fréchet Inception Distance):

    .. math::
        \lVert \mu_x - \mu_y \rVert^2 + \mathrm{Tr}\big(\Sigma_x + \Sigma_y - 2 (\Sigma_x \Sigma_y)^{1/2}\big)

    with unbiased covariances and the matrix square root of :func:`scipy.linalg.sqrtm`. When the product is
    near singular (fewer samples than dimensions), ``eps`` is added to both diagonals; a negligible
    imaginary part from round-off is dropped.
    """
    from scipy import linalg
    x, y = _np(x), _np(y)
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise ValueError(f'need two sets of at least 2 embeddings of one size, got {x.shape} and {y.shape}')
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "matrix is singular": handled below
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f'sqrtm has a large imaginary component {np.abs(covmean.imag).max()}')
        covmean = covmean.real
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean), 0.0))


def _node_keys(g: Data) -> Tuple[np.ndarray, np.ndarray]:
    prim = g.x.view(-1).cpu().numpy()
    n = prim.shape[0]
    if getattr(g, 'shape', None) is not None and getattr(g, 'ndim', None) is not None:
        shape = torch.cat([g.shape.cpu(), g.ndim.cpu().view(-1, 1)], 1).numpy()  # ndim tells (3,) from (3,1)
    else:
        shape = np.zeros((n, 1), dtype=np.int64)
    return prim, shape


def node_cost_matrix(g1: Data, g2: Data, shape_weight: float = 0.0) -> np.ndarray:
    r"""The square node-assignment cost matrix between two architecture graphs, padded with dummy nodes
    to :math:`n = \max(|V_1|, |V_2|)`:

    .. math::
        c(u, v) = [\mathrm{op}_u \ne \mathrm{op}_v] + w\,[\mathrm{shape}_u \ne \mathrm{shape}_v],
        \qquad c(u, \varnothing) = c(\varnothing, v) = 1 + w

    i.e. unit substitution costs for a different primitive (and, with ``shape_weight`` :math:`w > 0`, for a
    different parameter shape, ``ndim`` included) and the full cost for a node that has no counterpart
    (insertion / deletion). The paper ignores shapes (:math:`w = 0`), so that WIDE networks look like
    TRAIN ones (appendix C.2.4).
    """
    p1, s1 = _node_keys(g1)
    p2, s2 = _node_keys(g2)
    n = max(len(p1), len(p2))
    full = 1.0 + shape_weight
    cost = np.full((n, n), full)
    sub = (p1[:, None] != p2[None, :]).astype(np.float64)
    if shape_weight:
        if s1.shape[1] != s2.shape[1]:
            raise ValueError('shape_weight > 0 needs both graphs to have shape and ndim')
        sub += shape_weight * (s1[:, None, :] != s2[None, :, :]).any(-1)
    cost[:len(p1), :len(p2)] = sub
    return cost


def hungarian_distance(g1: Data, g2: Data, shape_weight: float = 0.0) -> float:
    r"""The minimum total cost of assigning the nodes of ``g1`` to those of ``g2``
    (:func:`scipy.optimize.linear_sum_assignment` on :func:`node_cost_matrix`): an edge-blind
    approximation of the graph edit distance (paper appendix C.2.4). It is 0 for identical graphs and
    symmetric. With ``shape_weight=0`` it equals :math:`\max(|V_1|, |V_2|) - \sum_p \min(n_1(p), n_2(p))`
    for :math:`n_i(p)` the number of nodes of primitive :math:`p`."""
    from scipy.optimize import linear_sum_assignment
    cost = node_cost_matrix(g1, g2, shape_weight)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum())


def mean_hungarian_distance(graphs_a: Sequence[Data], graphs_b: Sequence[Data], num_pairs: Optional[int] = None,
                            seed: int = 0, shape_weight: float = 0.0) -> float:
    """The mean :func:`hungarian_distance` between the graphs of two sets (Table 11's reference row): over
    all pairs, or ``num_pairs`` pairs drawn uniformly with ``seed``."""
    if not graphs_a or not graphs_b:
        raise ValueError('both sets need at least one graph')
    if num_pairs is None:
        pairs = [(i, j) for i in range(len(graphs_a)) for j in range(len(graphs_b))]
    else:
        rng = np.random.default_rng(seed)
        pairs = list(zip(rng.integers(0, len(graphs_a), num_pairs).tolist(),
                         rng.integers(0, len(graphs_b), num_pairs).tolist()))
    return float(np.mean([hungarian_distance(graphs_a[i], graphs_b[j], shape_weight) for i, j in pairs]))

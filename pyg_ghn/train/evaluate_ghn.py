"""Evaluating predicted parameters over a set of architectures (paper §5.1, Tables 3-4; spec §6.1)."""
import json
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .evaluate import evaluate, mean_sem

__all__ = ['evaluate_ghn', 'summarize']


def evaluate_ghn(ghn: Optional[nn.Module], architectures: Iterable[Tuple[str, nn.Module, Any]],
                 test_loader: Iterable, device: Any = 'cpu', bn_modes: Sequence[str] = ('batch',),
                 calibrate_loader: Optional[Iterable] = None, calibrate_batches: int = 200,
                 init: Optional[Callable[[nn.Module], Any]] = None, max_batches: Optional[int] = None,
                 topk: Sequence[int] = (1, 5), progress: bool = True) -> List[Dict[str, Any]]:
    r"""Predicts the parameters of every architecture with ``ghn`` and measures test accuracy.

    Args:
        ghn: a :class:`pyg_ghn.nn.GHN`, or ``None`` to evaluate the networks as ``init`` leaves them
            (a baseline, e.g. He initialisation or SGD training).
        architectures: ``(name, network, graph or None)`` triples; networks are not modified (parameters
            are passed functionally).
        test_loader: test images; with BatchNorm in batch-statistics mode the results depend on its batch size
            (64 in the paper).
        bn_modes: ``'batch'`` (the paper's protocol) and/or ``'running'`` (running statistics calibrated on
            ``calibrate_batches`` batches of ``calibrate_loader``, appendix C.1).
        init: called on each network before evaluation when ``ghn`` is ``None``.

    Returns one record per architecture: name, seconds to predict, and ``top1``/``top5`` per BN mode.
    """
    from tqdm import tqdm
    records = []
    archs = list(architectures)
    for name, net, graph in tqdm(archs, desc='evaluating', disable=not progress):
        net = net.to(device)
        params, seconds = None, 0.
        if ghn is not None:
            ghn.eval()
            _sync(device)
            t = time.perf_counter()
            with torch.no_grad():
                params = ghn.predict_parameters(graph.to(device) if graph is not None else _graph(ghn, net))[0]
            _sync(device)  # CUDA runs asynchronously: without this the time would stop before the work
            seconds = time.perf_counter() - t
        elif init is not None:
            init(net)
        rec: Dict[str, Any] = {'name': name, 'predict_seconds': seconds,
                               'num_params': sum(p.numel() for p in net.parameters())}
        for mode in bn_modes:
            res = evaluate(net, test_loader, device=device, topk=topk, bn_mode=mode, params=params,
                           calibrate_loader=calibrate_loader, calibrate_batches=calibrate_batches,
                           max_batches=max_batches)
            for k, v in res.items():
                if k.startswith('top') or k == 'loss':
                    rec[f'{k}_{mode}'] = v
        records.append(rec)
    return records


def _sync(device: Any) -> None:
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def _graph(ghn: nn.Module, net: nn.Module) -> Any:
    from ..graph.builder import from_module
    return from_module(net, max_sp_dist=getattr(ghn, 'max_sp_dist', 50), warn=False)


def summarize(records: List[Dict[str, Any]]) -> Dict[str, Tuple[float, float]]:
    """Mean and standard error over architectures of every numeric field, as Tables 3-4 report."""
    if not records:
        raise ValueError('summarize: no records (no architectures were evaluated)')
    keys = [k for k in records[0] if isinstance(records[0][k], (int, float)) and k != 'num_params']
    return {k: mean_sem([r[k] for r in records]) for k in keys}

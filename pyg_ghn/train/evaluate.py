r"""Evaluation of image classifiers as in the GHN-2 paper: top-k accuracy and loss, with the paper's
treatment of BatchNorm (spec §2.5 step 10, §6.1, §7.13; paper §5.1 and appendix C.1), and the mean with
standard error that Tables 3-4 report.

GHNs predict trainable parameters only, not BatchNorm running statistics. Two protocols exist:

* ``bn_mode='batch'`` (the paper's tables): every ``BatchNorm2d`` normalises with the statistics of the
  current test batch (``training=True, track_running_stats=False``), so results depend on the batch size
  (64 in the paper) and on batch composition.
* ``bn_mode='running'`` (appendix C.1, 71.7% vs 66.9% on CIFAR-10 ID-test with 200 training batches):
  running statistics are reset and re-estimated as a cumulative average (``momentum=None``) over
  ``calibrate_batches`` batches, then the network is evaluated in eval mode.

Either way the user's model comes back as it was: module modes, BatchNorm settings and buffers are
restored (``restore=False`` keeps the calibrated statistics).
"""
import math
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['evaluate', 'calibrate_bn', 'bn_eval_mode', 'mean_sem']

BN_MODES = ('batch', 'running', 'as_is')


def _logits(output) -> Tensor:
    # DeepNets-1M networks return (logits, aux_logits).
    return output[0] if isinstance(output, (tuple, list)) else output


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device('cpu')


def _bn_state(m: _BatchNorm) -> tuple:
    clone = lambda t: None if t is None else t.detach().clone()  # noqa: E731
    return (m.momentum, m.track_running_stats, clone(m.running_mean), clone(m.running_var),
            clone(m.num_batches_tracked))


def _restore_bn(m: _BatchNorm, state: tuple) -> None:
    m.momentum, m.track_running_stats = state[0], state[1]
    for name, saved in zip(('running_mean', 'running_var', 'num_batches_tracked'), state[2:]):
        current = getattr(m, name)
        if saved is None or current is None or current.shape != saved.shape:
            setattr(m, name, saved)      # buffers that calibration created (or that were None) go back
        else:
            current.copy_(saved)         # in place: references the user holds stay valid


@contextmanager
def bn_eval_mode(model: nn.Module, bn_mode: str = 'batch',
                 bn_types: Tuple[Type[nn.Module], ...] = (nn.BatchNorm2d,),
                 restore: bool = True) -> Iterator[nn.Module]:
    r"""Puts ``model`` in evaluation mode with a given BatchNorm protocol for the duration of a block.

    Every module goes to eval mode (dropout, drop-path off), then the BatchNorm layers of ``bn_types`` are
    set per ``bn_mode``:

    * ``'batch'``: ``training=True, track_running_stats=False``: batch statistics, buffers untouched.
    * ``'running'``: every module in eval mode, so BatchNorm normalises with its running statistics
      (calibrate them first with :func:`calibrate_bn`).
    * ``'as_is'``: norm layers keep their current ``training`` flag; all other modules go to eval mode.

    On exit every module's ``training`` flag is restored and, if ``restore``, also every BatchNorm's
    ``momentum``, ``track_running_stats`` and buffers (always in ``'batch'`` mode, which changes settings
    but no buffer).
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f'bn_mode must be one of {BN_MODES}, got {bn_mode!r}')
    modes = [(m, m.training) for m in model.modules()]
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    saved = [_bn_state(m) for m in bns]
    try:
        for m, was_training in modes:
            is_norm = isinstance(m, (_BatchNorm, nn.modules.instancenorm._InstanceNorm))
            m.training = was_training if (bn_mode == 'as_is' and is_norm) else False
        if bn_mode == 'batch':
            for m in bns:
                if isinstance(m, bn_types):
                    m.training, m.track_running_stats = True, False
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training
        if restore or bn_mode == 'batch':
            for m, state in zip(bns, saved):
                _restore_bn(m, state)


def _forward(model: nn.Module, x: Tensor, params: Optional[Mapping[str, Tensor]]) -> Tensor:
    if params is None:
        return _logits(model(x))
    return _logits(torch.func.functional_call(model, dict(params), (x,)))


@torch.no_grad()
def calibrate_bn(model: nn.Module, loader: Iterable, num_batches: int = 200,
                 device: Optional[Union[str, torch.device]] = None,
                 bn_types: Tuple[Type[nn.Module], ...] = (nn.BatchNorm2d,),
                 params: Optional[Mapping[str, Tensor]] = None) -> nn.Module:
    r"""Re-estimates the running statistics of the BatchNorm layers of ``bn_types`` **in place** (appendix
    C.1): the statistics are reset, then accumulated as a cumulative average over the first ``num_batches``
    batches of ``loader`` (labels unused; other modules in eval mode):

    .. math::
        \hat\mu = \frac{1}{B} \sum_{b=1}^{B} \mu_b, \qquad \hat\sigma^2 = \frac{1}{B} \sum_{b=1}^{B}
        \frac{n_b}{n_b - 1} \sigma_b^2,

    the mean over batches of the per-batch mean and unbiased variance. Layers built without running
    statistics (``track_running_stats=False``, as DeepNets-1M's ``'bnorm'``) get buffers and are switched
    to tracking, with ``momentum=None``. Module ``training`` flags are restored afterwards.
    """
    device = torch.device(device) if device is not None else _device_of(model)
    bns = [m for m in model.modules() if isinstance(m, bn_types)]
    for m in bns:
        if m.running_mean is None:
            dev = m.weight.device if m.weight is not None else device
            m.running_mean = torch.zeros(m.num_features, device=dev)
            m.running_var = torch.ones(m.num_features, device=dev)
            m.num_batches_tracked = torch.tensor(0, dtype=torch.long, device=dev)
        m.track_running_stats, m.momentum = True, None
        m.reset_running_stats()
    modes = [(m, m.training) for m in model.modules()]
    try:
        for m, _ in modes:
            m.training = isinstance(m, bn_types)
        for i, batch in enumerate(loader):
            if i >= num_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            _forward(model, x.to(device, non_blocking=True), params)
    finally:
        for m, was_training in modes:
            m.training = was_training
    return model


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: Optional[Union[str, torch.device]] = None,
             topk: Sequence[int] = (1, 5), bn_mode: str = 'batch',
             calibrate_loader: Optional[Iterable] = None, calibrate_batches: int = 200,
             params: Optional[Mapping[str, Tensor]] = None,
             bn_types: Tuple[Type[nn.Module], ...] = (nn.BatchNorm2d,), restore: bool = True,
             max_batches: Optional[int] = None, progress: bool = False) -> Dict[str, float]:
    r"""Top-k accuracy (%) and mean cross-entropy of ``model`` over ``loader``, under ``torch.no_grad()``,
    with dropout off.

    Args:
        model (nn.Module): a classifier; a ``(logits, aux)`` output (DeepNets-1M) uses ``logits``.
        loader (iterable): yields ``(images, labels)``.
        device (str or torch.device, optional): where batches go (default: the model's device). The model
            is not moved.
        topk (sequence of int): accuracies to report, as keys ``'top{k}'``; ``k`` larger than the number of
            classes counts every prediction as correct.
        bn_mode (str): ``'batch'`` (the paper's protocol: BatchNorm2d uses test-batch statistics),
            ``'running'`` (reset running statistics, calibrate on ``calibrate_batches`` batches of
            ``calibrate_loader``, evaluate in eval mode) or ``'as_is'`` (norm layers keep their modes).
            See :func:`bn_eval_mode`.
        calibrate_loader (iterable, optional): required for ``bn_mode='running'``; the paper uses training
            images.
        calibrate_batches (int): number of calibration batches (200 in appendix C.1).
        params (mapping, optional): parameters (e.g. predicted by a GHN) to evaluate the model with, via
            :func:`torch.func.functional_call`; missing entries come from the model.
        bn_types (tuple of types): the layers ``bn_mode`` applies to; ``(nn.BatchNorm2d,)`` as the original
            (``BatchNorm1d`` stays in eval mode).
        restore (bool): restore BatchNorm settings and buffers afterwards. ``False`` keeps the calibrated
            running statistics of ``bn_mode='running'`` in the model.
        max_batches (int, optional): stop after this many batches.
        progress (bool): show a tqdm progress bar.

    Returns:
        dict: ``{'top1': ..., 'top5': ..., 'loss': ..., 'n': ...}`` (accuracies in percent).
    """
    device = torch.device(device) if device is not None else _device_of(model)
    if bn_mode == 'running' and calibrate_loader is None:
        raise ValueError("bn_mode='running' needs calibrate_loader (the paper uses training images)")
    with bn_eval_mode(model, bn_mode, bn_types, restore):
        if bn_mode == 'running':  # calibrate_bn leaves every module in eval mode, as it found them
            calibrate_bn(model, calibrate_loader, calibrate_batches, device, bn_types, params)
        # Sums stay on the device: no host sync per batch.
        correct = torch.zeros(len(topk), dtype=torch.long, device=device)
        loss_sum, n = torch.zeros((), dtype=torch.float64, device=device), 0
        batches = loader
        if progress:
            from tqdm.auto import tqdm
            batches = tqdm(loader, desc=f'evaluate ({bn_mode})', leave=False)
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = _forward(model, x, params).float()
            loss_sum += F.cross_entropy(logits, y, reduction='sum').double()
            kmax = min(max(topk), logits.size(1))
            pred = logits.topk(kmax, dim=1).indices                       # [B, kmax]
            hit = pred.eq(y.view(-1, 1))
            correct += torch.stack([hit[:, :min(k, kmax)].any(1).sum() for k in topk])
            n += y.numel()
    if n == 0:
        raise ValueError('the loader yielded no samples')
    out = {f'top{k}': 100.0 * c / n for k, c in zip(topk, correct.tolist())}
    out.update(loss=loss_sum.item() / n, n=n)
    return out


def mean_sem(values: Iterable[float]) -> Tuple[float, float]:
    r"""Mean and standard error of the mean, :math:`s / \sqrt{n}` with the unbiased standard deviation
    :math:`s` (``ddof=1``, as ``scipy.stats.sem``), the "mean (± standard error)" of Tables 3-4.
    The standard error of a single value is ``nan``."""
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        raise ValueError('mean_sem of an empty sequence')
    mean = math.fsum(v) / n
    if n == 1:
        return mean, float('nan')
    var = math.fsum((x - mean) ** 2 for x in v) / (n - 1)
    return mean, math.sqrt(var / n)

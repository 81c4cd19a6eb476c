r"""The iterative-optimisation baselines of the GHN-2 paper (§5, Tables 3-4 and 6): a random He
initialisation and a short SGD run, e.g. "SGD (1 epoch)" (about 500 steps of batch 96 on CIFAR-10).

The original baseline (``experiments/sgd/train_net.py``) trains a freshly constructed network, i.e. with
PyTorch's default initialisation, with SGD (lr 0.025, momentum 0.9, weight decay 3e-4, batch 96 on
CIFAR-10), gradient-norm clipping at 5 and a cosine learning-rate schedule over the epochs (the DARTS
recipe; no cutout, auxiliary head or drop-path by default).
"""
import warnings
from contextlib import nullcontext
from typing import Callable, Iterable, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['he_init_', 'train_sgd', 'DivergedError']


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite (a :class:`RuntimeError`, as the original trainer raised)."""


def _rng_devices(model: nn.Module) -> List[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == 'cuda'})


def he_init_(model: nn.Module, seed: Optional[int] = None, mode: str = 'pytorch') -> nn.Module:
    r"""Re-initialises every parameter of ``model`` in place, randomly, the He way (He et al., 2015).

    * ``mode='pytorch'`` (the paper's baseline): each module's own ``reset_parameters()``, i.e. what a
      freshly built network has, which the original code used. For convolutions and linear layers this is
      ``kaiming_uniform_(a=sqrt(5))``: :math:`W \sim U(-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}})`,
      biases :math:`U(\pm 1/\sqrt{\text{fan\_in}})`; norm layers get :math:`\gamma = 1, \beta = 0` and
      reset running statistics.
    * ``mode='fan_in'``: He's normal initialisation for ReLU networks, :math:`W \sim \mathcal{N}(0,
      2/\text{fan\_in})` for every conv/linear weight, zero biases; other modules as ``'pytorch'``.

    Parameters held by modules without ``reset_parameters`` (e.g. a bare ``nn.Parameter`` positional
    encoding) are left untouched, with a warning. ``seed`` seeds a forked RNG, so the global RNG state is
    unchanged; the same seed on the same device gives the same parameters.
    """
    if mode not in ('pytorch', 'fan_in'):
        raise ValueError(f"mode must be 'pytorch' or 'fan_in', got {mode!r}")
    ctx = torch.random.fork_rng(devices=_rng_devices(model)) if seed is not None else nullcontext()
    skipped = []
    with ctx, torch.no_grad():
        if seed is not None:
            torch.manual_seed(seed)
        for name, m in model.named_modules():
            own = list(m.parameters(recurse=False))
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and mode == 'fan_in':
                nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif hasattr(m, 'reset_parameters'):
                m.reset_parameters()
            elif own:
                skipped.append(name or type(m).__name__)
    if skipped:
        warnings.warn(f'he_init_: parameters of {skipped} were left as they are (no reset_parameters)')
    return model


def train_sgd(model: nn.Module, loader: Iterable, steps: int, lr: float = 0.025, momentum: float = 0.9,
              weight_decay: float = 3e-4, grad_clip: Optional[float] = 5.0, schedule: str = 'cosine',
              optimizer: str = 'sgd', device: Optional[Union[str, torch.device]] = None,
              seed: Optional[int] = None, loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
              progress: bool = False, callback: Optional[Callable[[int], None]] = None) -> List[float]:
    r"""Trains ``model`` in place for ``steps`` updates, cycling over ``loader`` (the paper's "SGD (k
    epochs)" baselines; build the loader with ``batch_size=96`` to match them).

    The learning rate follows ``lr * (1 + cos(pi * t / steps)) / 2`` for step ``t`` (``schedule='cosine'``,
    :class:`~torch.optim.lr_scheduler.CosineAnnealingLR` stepped per update) or stays ``lr``
    (``'constant'``). The original runs anneal per *epoch* over 50 epochs, so their first epoch is at a
    nearly constant 0.025: use ``schedule='constant'`` to reproduce the 1-epoch rows exactly.

    Args:
        model (nn.Module): trained in train mode; its ``training`` flags are restored afterwards. A
            ``(logits, aux)`` output uses ``logits``.
        loader (iterable): yields ``(images, labels)``; re-iterated until ``steps`` updates are done.
        steps (int): number of parameter updates.
        lr, momentum, weight_decay: SGD hyper-parameters (DARTS / the paper: 0.025, 0.9, 3e-4).
        grad_clip (float, optional): max gradient norm (5 as DARTS); ``None`` disables clipping.
        schedule (str): ``'cosine'`` or ``'constant'``.
        optimizer (str): ``'sgd'``, or ``'adam'`` (the paper's Adam rows use ``lr=1e-3``; ``momentum`` is
            then ignored).
        device (str or torch.device, optional): where batches go (default: the model's device).
        seed (int, optional): makes the run deterministic: seeds a forked global RNG (dropout, torchvision
            augmentation) and reseeds ``loader`` with :func:`pyg_ghn.datasets.images.seed_loader_`
            (shuffling and in-memory augmentation).
        loss_fn (callable): ``loss_fn(logits, labels)``, cross-entropy by default.
        progress (bool): show a tqdm progress bar.
        callback (callable, optional): ``callback(t)`` after update ``t`` (1-based), e.g. to evaluate the
            model at several budgets of one run (with ``schedule='constant'``, the model after ``t``
            updates is then the model of a ``steps=t`` run). It runs inside the run's random state: wrap
            anything that draws random numbers (iterating a ``DataLoader`` does) in
            :func:`torch.random.fork_rng` to leave the run unchanged. The model is put back in train mode
            after it.

    Returns:
        list of float: the training loss of every step.

    Raises:
        DivergedError: if the loss becomes NaN or infinite (a ``RuntimeError``, as the original trainer).
    """
    if steps < 0:
        raise ValueError(f'steps must be >= 0, got {steps}')
    if schedule not in ('cosine', 'constant'):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if device is None:
        device = next(iter(model.parameters())).device
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == 'sgd':
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif optimizer == 'adam':
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1)) \
        if schedule == 'cosine' else None

    if seed is not None:
        from ..datasets.images import seed_loader_
        if isinstance(loader, torch.utils.data.DataLoader):
            seed_loader_(loader, seed)
    ctx = torch.random.fork_rng(devices=_rng_devices(model)) if seed is not None else nullcontext()
    modes = [(m, m.training) for m in model.modules()]
    losses: List[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc='train_sgd', leave=False)
    try:
        with ctx:
            if seed is not None:
                torch.manual_seed(seed)
            model.train()
            while len(losses) < steps:
                n_before = len(losses)
                for x, y in loader:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    out = model(x)
                    loss = loss_fn(out[0] if isinstance(out, (tuple, list)) else out, y)
                    if not torch.isfinite(loss):
                        raise DivergedError(f'the loss is {loss.item()} at step {len(losses)}')
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if grad_clip is not None:
                        nn.utils.clip_grad_norm_(params, grad_clip)
                    opt.step()
                    if sched is not None:
                        sched.step()
                    losses.append(loss.item())
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f'{losses[-1]:.3f}')
                    if callback is not None:
                        callback(len(losses))
                        model.train()
                    if len(losses) == steps:
                        break
                if len(losses) == n_before:
                    raise ValueError('the loader yielded no batches')
    finally:
        for m, was_training in modes:
            m.training = was_training
        if bar is not None:
            bar.close()
    return losses

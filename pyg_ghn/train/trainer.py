"""Training a GHN on meta-batches of architectures (paper §4.3, Equation 2; spec §5).

One step: ``b_m`` architectures (a PyG ``Batch``) and one image batch; the GHN predicts all their parameters
in one pass; each network runs functionally on the same images; the loss is the mean over networks; one
optimizer step. Checkpoints are atomic and carry everything needed to resume exactly: GHN, optimizer,
scheduler, random states and the position in both data streams.
"""
import ast
import contextlib
import gc
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..nn.checkpoint import CheckpointError, read_checkpoint
from .meta_batch import networks_of

__all__ = ['TrainConfig', 'Trainer', 'TooManySkippedSteps']


class TooManySkippedSteps(RuntimeError):
    """Training stopped because too many steps had a non-finite loss or ran out of memory."""


@dataclass
class TrainConfig:
    r"""Hyperparameters; the defaults are the original GHN-2 recipe (spec §5).

    ``steps_per_epoch=None`` makes an epoch one pass over the image loader. The learning rate drops by
    ``gamma`` at ``lr_milestones`` (fractions of ``epochs``: 2/3 and 5/6, i.e. 200 and 250 of 300).
    Steps whose loss is not finite, that run out of memory, or whose meta-batch has more than ``max_nodes``
    nodes are skipped; training stops when skipped steps exceed ``max_skipped_frac`` of an epoch.
    """
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-5
    lr_milestones: tuple = (2 / 3, 5 / 6)
    gamma: float = 0.1
    grad_clip: float = 5.0
    meta_batch: int = 8
    max_nodes: int = 2200
    steps_per_epoch: Optional[int] = None
    ckpt_every: int = 0  # steps; 0 = only at the end of each epoch
    max_skipped_frac: float = 1 / 50
    amp: bool = False
    seed: int = 1111
    log_every: int = 50
    # Probability that a meta-batch slot holds a training architecture without BatchNorm (0: uniform draws,
    # the paper's; see MetaBatchSampler).
    norm_free_prob: float = 0.


@dataclass
class _State:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    draws: int = 0  # meta-batches consumed from the architecture stream (incl. over-budget ones)
    skipped: int = 0  # over the whole run (the history reports it)
    skipped_in_epoch: int = 0  # what the abort test counts, as the original's per-epoch failed_batches
    epoch_sums: List[float] = field(default_factory=lambda: [0., 0., 0., 0.])  # loss, acc, steps, seconds
    # CPU time of the training processes (all threads, all ranks; data preparation included): the run's cost
    # in core-seconds, which wall time on a shared machine does not measure.
    cpu_seconds: float = 0.
    # Wall time this epoch's steps waited for their images and architectures (graphs, networks): with
    # DataLoader workers they are prepared ahead of the step and the wait is near zero.
    data_seconds: float = 0.
    history: List[Dict[str, float]] = field(default_factory=list)


class Trainer:
    r"""Trains ``ghn`` on architectures from ``arch_loader`` and images from ``image_loader``.

    Args:
        ghn: a :class:`pyg_ghn.nn.GHN`.
        dataset: the architecture dataset (e.g. :class:`pyg_ghn.datasets.DeepNets1M`), used to rebuild the
            architecture stream at the right position on resume.
        image_loader: the training images; reseeded per epoch with :func:`pyg_ghn.datasets.seed_loader_`.
        build_network: ``net_args dict -> nn.Module`` (e.g. :func:`pyg_ghn.datasets.build_network`).
        config: :class:`TrainConfig`.
        ckpt_path: where to write checkpoints (atomically); ``None`` disables them.
        num_workers: processes building graphs.
        device: training device.
        run_settings: settings outside ``config`` that define the run (image data and batch size, the
            architectures' widths, ...): saved in checkpoints, and resuming with other values is refused.
        compact: checkpoints keep Adam's moments in ``bfloat16`` (fp32 range, 8-bit mantissa) instead of
            float32: 40% smaller, for a run whose state is kept in git. Weights, step, schedule and random
            states stay exact; a resumed run differs from an uninterrupted one by the moments' rounding.

    With ``torch.distributed`` initialised, every rank takes ``meta_batch / world_size`` architectures of
    each meta-batch and the same images, and gradients are averaged by one all-reduce per step, so the
    update equals the single-process one.
    """

    def __init__(self, ghn: nn.Module, dataset: Any, image_loader: Any, build_network: Callable,
                 config: Optional[TrainConfig] = None, ckpt_path: Optional[str] = None, num_workers: int = 0,
                 device: Any = None, log_path: Optional[str] = None, progress: bool = True,
                 run_settings: Optional[Dict[str, Any]] = None, compact: bool = False) -> None:
        self.config = config or TrainConfig()
        self.device = torch.device(device) if device is not None else next(ghn.parameters()).device
        self.ghn = ghn.to(self.device).train()
        self.dataset, self.image_loader, self.build_network = dataset, image_loader, build_network
        self.ckpt_path, self.log_path, self.num_workers, self.progress = ckpt_path, log_path, num_workers, progress
        self.run_settings, self.compact = dict(run_settings or {}), compact
        self.rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        c = self.config
        self.optimizer = torch.optim.Adam(self.ghn.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        milestones = sorted({max(1, round(f * c.epochs)) for f in c.lr_milestones})
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, gamma=c.gamma)
        self.scaler = torch.amp.GradScaler('cuda', enabled=c.amp and self.device.type == 'cuda')
        self.state = _State()
        self._resume_rng: Optional[Dict[str, Any]] = None  # random state where a resumed run continues

    # ------------------------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return self.config.steps_per_epoch or len(self.image_loader)

    def loss(self, batch: Any, images: Tensor, targets: Tensor) -> Tuple[Tensor, Tensor]:
        """Mean cross-entropy over the networks of ``batch`` (this rank's share) and their mean accuracy;
        differentiable w.r.t. the GHN."""
        nets = networks_of(batch, self.build_network, self.device)
        with torch.autocast(self.device.type, enabled=self.scaler.is_enabled()):
            params = self.ghn.predict_parameters(batch)
            total, correct = 0., 0.
            for net, p in zip(nets, params):
                # Parameters without a node are never used by the forward pass (e.g. preprocessing of a
                # cell input no op reads); they stay placeholders on the meta device.
                logits = functional_call(net, p, (images,))
                logits = logits[0] if isinstance(logits, tuple) else logits
                total = total + F.cross_entropy(logits.float(), targets)
                correct += (logits.argmax(1) == targets).float().mean().item()
        return total / len(nets), torch.tensor(correct / len(nets))

    def _all_reduce_grads(self) -> None:
        # A parameter may get no gradient on some ranks (e.g. no network of this rank's share uses it): every
        # rank must still send a tensor of the same layout, so it sends zeros plus a "has a gradient" flag.
        # A parameter no rank used keeps grad None, as in a single process (Adam then leaves it alone).
        params = list(self.ghn.parameters())
        flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
                         + [torch.tensor([float(p.grad is not None) for p in params], device=self.device)])
        dist.all_reduce(flat)
        used = flat[-len(params):].tolist()
        flat = flat[:-len(params)] / self.world_size  # each rank's loss is a mean over its share
        for p, g, n in zip(params, flat.split([p.numel() for p in params]), used):
            if n > 0:
                p.grad = g.view_as(p).clone()

    def _all_ok(self, ok: bool) -> bool:
        """Whether ``ok`` holds on every rank, so that all ranks skip a step together."""
        if self.world_size == 1:
            return ok
        flag = torch.tensor(float(ok), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return flag.item() > 0

    def _sum_over_ranks(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item()

    def _skip(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
        self.state.skipped += 1
        self.state.skipped_in_epoch += 1

    def step(self, batch: Any, images: Tensor, targets: Tensor) -> Optional[Dict[str, float]]:
        """One optimizer step; ``None`` when the step is skipped (non-finite loss or out of memory)."""
        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        # Ranks agree after the forward and after the backward pass: a rank that skips alone would leave the
        # others waiting in a collective.
        try:
            loss, acc = self.loss(batch, images, targets)
            ok = bool(torch.isfinite(loss.detach()))
        except torch.OutOfMemoryError:
            loss, ok = None, False
        if not self._all_ok(ok):
            loss = None
            self._skip()
            return None
        try:
            self.scaler.scale(loss).backward()
            ok = True
        except torch.OutOfMemoryError:
            ok = False
        if not self._all_ok(ok):
            loss = None
            self._skip()
            return None
        if self.world_size > 1:
            self._all_reduce_grads()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.ghn.parameters(), c.grad_clip)
        if not self.scaler.is_enabled() and not torch.isfinite(grad_norm):
            # A finite loss can still give inf/NaN gradients; one Adam step with them would turn every GHN
            # weight into NaN for good. (With AMP the scaler skips such steps itself and lowers its scale.)
            # The gradients are all-reduced, so every rank sees the same norm and skips together.
            self._skip()
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {'loss': loss.item(), 'acc': acc.item(), 'grad_norm': float(grad_norm)}

    # ------------------------------------------------------------------------------------------------
    def _arch_stream(self):
        from .meta_batch import meta_batch_loader
        return iter(meta_batch_loader(self.dataset, self.config.meta_batch, self.config.seed, self.state.draws,
                                      self.num_workers, self.rank, self.world_size, self.config.norm_free_prob))

    def _over_budget(self, batch: Any) -> bool:
        # The whole meta-batch against max_nodes, as in one process: with ranks, their node counts are summed
        # (on the training device, which NCCL needs), so an uneven split of an allowed meta-batch still passes.
        size = torch.tensor([float(batch.num_nodes), float(batch.num_graphs)], device=self.device)
        if self.world_size > 1:
            dist.all_reduce(size)
        nodes, graphs = size.tolist()
        return nodes > self.config.max_nodes * graphs / self.config.meta_batch

    def train(self, epochs: Optional[int] = None, time_limit: Optional[float] = None,
              max_steps: Optional[int] = None, cpu_limit: Optional[float] = None) -> List[Dict[str, float]]:
        """Trains until ``config.epochs`` (or ``epochs`` more epochs, for a partial run) and returns the
        per-epoch history. With ``time_limit`` (wall seconds of this call), stops after the step that crosses
        it; with ``max_steps``, once ``max_steps`` steps in total have been taken; with ``cpu_limit``, once the
        run has used that many core-seconds in total (``state.cpu_seconds``: equal budgets for recipes of
        different step costs, however busy the machine). Either way it writes a checkpoint from which
        :meth:`load_checkpoint` continues exactly.

        While it trains, the objects alive when it starts (imported libraries, the datasets) are out of the
        garbage collector's reach (:func:`gc.freeze`, undone on return): they live for the whole run, and
        without this every full collection, which a step's surviving objects trigger every few steps,
        walks all of them again (~0.3 s with torch and PyG imported, on a 2-core x86 box)."""
        with _frozen_heap():
            return self._train(epochs, time_limit, max_steps, cpu_limit)

    def _train(self, epochs: Optional[int], time_limit: Optional[float], max_steps: Optional[int],
               cpu_limit: Optional[float]) -> List[Dict[str, float]]:
        deadline = None if time_limit is None else time.time() + time_limit
        budget_spent = lambda: (max_steps is not None and self.state.global_step >= max_steps) or (  # noqa: E731
            cpu_limit is not None and self.state.cpu_seconds >= cpu_limit)
        if budget_spent():
            return self.state.history
        from tqdm import tqdm

        from ..datasets.images import seed_loader_
        c = self.config
        stop_epoch = c.epochs if epochs is None else min(c.epochs, self.state.epoch + epochs)
        archs = self._arch_stream()
        max_skipped = max(1, int(self.steps_per_epoch * c.max_skipped_frac))
        while self.state.epoch < stop_epoch:
            if self._resume_rng is not None and self.state.step_in_epoch == 0:
                # resumed from a checkpoint written at an epoch's end: continue the random streams from there,
                # before the loader draws from them
                _set_rng_state(self._resume_rng)
                self._resume_rng = None
            seed_loader_(self.image_loader, c.seed + self.state.epoch)
            images_iter = iter(self.image_loader)
            for _ in range(self.state.step_in_epoch):  # resume inside an epoch: same images as before
                try:
                    next(images_iter)
                except StopIteration:  # the epoch is longer than the loader: wrap around as below
                    images_iter = iter(self.image_loader)
                    next(images_iter)
            if self._resume_rng is not None:  # resumed inside the epoch: after replaying its images
                _set_rng_state(self._resume_rng)
                self._resume_rng = None
            bar = tqdm(total=self.steps_per_epoch, initial=self.state.step_in_epoch,
                       desc=f'epoch {self.state.epoch + 1}/{c.epochs}', disable=not self.progress or self.rank)
            if self.state.step_in_epoch == 0:
                self.state.epoch_sums = [0., 0., 0., 0.]
                self.state.skipped_in_epoch = 0
                self.state.data_seconds = 0.
            sums, t0 = self.state.epoch_sums, time.time() - self.state.epoch_sums[3]
            cpu_mark = time.process_time()
            while self.state.step_in_epoch < self.steps_per_epoch:
                t_data = time.perf_counter()
                try:
                    images, targets = next(images_iter)
                except StopIteration:
                    images_iter = iter(self.image_loader)
                    images, targets = next(images_iter)
                images, targets = images.to(self.device), targets.to(self.device)
                while True:
                    batch = next(archs)
                    self.state.draws += 1
                    if not self._over_budget(batch):
                        break
                self.state.data_seconds += time.perf_counter() - t_data
                out = self.step(batch.to(self.device), images, targets)
                if out is None and self.state.skipped_in_epoch > max_skipped:
                    raise TooManySkippedSteps(
                        f'{self.state.skipped_in_epoch} steps of epoch {self.state.epoch + 1} were skipped '
                        f'(non-finite loss or gradients, or out of memory), more than {max_skipped} '
                        f'({c.max_skipped_frac:.0%} of an epoch). Lower the learning rate, train without '
                        f'--amp, or reduce --meta-batch / --max-nodes.')
                self.state.step_in_epoch += 1
                self.state.global_step += 1
                if out is not None:
                    sums[0] += out['loss']
                    sums[1] += out['acc']
                    sums[2] += 1
                    bar.set_postfix(loss=f'{sums[0] / sums[2]:.3f}', acc=f'{100 * sums[1] / sums[2]:.1f}')
                sums[3] = time.time() - t0
                cpu_now = time.process_time()
                self.state.cpu_seconds += self._sum_over_ranks(cpu_now - cpu_mark)
                cpu_mark = cpu_now
                bar.update(1)
                if c.ckpt_every and self.state.global_step % c.ckpt_every == 0 \
                        and self.state.step_in_epoch < self.steps_per_epoch:
                    self.save_checkpoint()
                # one decision for all ranks: a rank that stopped alone would leave the others in a collective
                stop = self._sum_over_ranks(float((deadline is not None and time.time() > deadline)
                                                  or budget_spent())) > 0
                if stop and self.state.step_in_epoch < self.steps_per_epoch:
                    bar.close()
                    self.save_checkpoint()
                    return self.state.history
            bar.close()
            n = max(sums[2], 1)
            self.state.history.append({'epoch': self.state.epoch + 1, 'loss': sums[0] / n, 'acc': 100 * sums[1] / n,
                                       'lr': self.scheduler.get_last_lr()[0], 'steps': self.state.global_step,
                                       'skipped': self.state.skipped, 'seconds': sums[3],
                                       'cpu_hours': self.state.cpu_seconds / 3600,
                                       'data_seconds': self.state.data_seconds})
            self.state.epoch += 1
            self.state.step_in_epoch = 0
            self.scheduler.step()
            self.save_checkpoint()
            self._write_log()
            if self._sum_over_ranks(float(budget_spent() or (deadline is not None and time.time() > deadline))):
                break
        return self.state.history

    # ------------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        optimizer = self.optimizer.state_dict()
        if self.compact:
            # Moments only: load_state_dict casts them back to the parameters' dtype. bfloat16, not float16:
            # squared gradients below 6e-8 would flush to zero in float16 and blow up Adam's next update.
            optimizer['state'] = {i: {k: v.to(torch.bfloat16) if k in ('exp_avg', 'exp_avg_sq') else v
                                      for k, v in s.items()} for i, s in optimizer['state'].items()}
        return {'format': 'pyg_ghn.trainer', 'ghn': self.ghn.state_dict(), 'ghn_config': self.ghn.config,
                'optimizer': optimizer, 'scheduler': self.scheduler.state_dict(),
                'scaler': self.scaler.state_dict(), 'train_config': asdict(self.config),
                'run_settings': self.run_settings, 'compact': self.compact, 'num_architectures': _len_or_none(self.dataset),
                'state': asdict(self.state), 'rng': _get_rng_state()}

    def save_checkpoint(self, path: Optional[str] = None) -> None:
        path = path or self.ckpt_path
        if path is None or self.rank != 0:
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f'{path}.tmp{os.getpid()}'
        try:
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, path)  # atomic: a killed run never leaves a half-written checkpoint
        finally:
            if os.path.exists(tmp):  # the write failed (e.g. disk full): keep the previous checkpoint only
                os.remove(tmp)

    def load_checkpoint(self, path: str) -> None:
        """Restores everything :meth:`state_dict` saved; the next :meth:`train` continues exactly."""
        try:
            # Checksums verified: a flipped byte would otherwise resume from silently different weights.
            ckpt = read_checkpoint(path, map_location=self.device)
        except (CheckpointError, OSError) as e:
            raise RuntimeError(f'Cannot read training checkpoint {path!r}: {e}') from e
        if not isinstance(ckpt, dict) or ckpt.get('format') != 'pyg_ghn.trainer':
            raise RuntimeError(f'{path!r} is not a pyg_ghn training checkpoint (use GHN.load for GHN weights).')
        self._check_same_run(path, ckpt)
        self.ghn.load_state_dict(ckpt['ghn'])
        self.optimizer.load_state_dict(ckpt['optimizer'])
        self.scheduler.load_state_dict(ckpt['scheduler'])
        self.scaler.load_state_dict(ckpt['scaler'])
        self.state = _State(**ckpt['state'])
        self._resume_rng = ckpt['rng']
        _set_rng_state(ckpt['rng'])

    # What fixes the run's data order and schedule: resuming with another value would silently continue a
    # different run (the scheduler state would even keep the old milestones).
    _RUN_KEYS = ('seed', 'meta_batch', 'max_nodes', 'steps_per_epoch', 'epochs', 'lr', 'lr_milestones',
                 'gamma', 'weight_decay', 'grad_clip', 'norm_free_prob')

    def _check_same_run(self, path: str, ckpt: Dict[str, Any]) -> None:
        saved, now = ckpt.get('train_config', {}), asdict(self.config)
        diff = [f'{k}: {saved[k]!r} in the checkpoint, {now[k]!r} now' for k in self._RUN_KEYS
                if k in saved and _plain(saved[k]) != _plain(now[k])]
        diff += _differences(ckpt.get('ghn_config', {}), self.ghn.config, 'GHN ')
        diff += _differences(ckpt.get('run_settings', {}), self.run_settings)
        n_saved, n_now = ckpt.get('num_architectures'), _len_or_none(self.dataset)
        if n_saved is not None and n_now is not None and n_saved != n_now:
            diff.append(f'training architectures: {n_saved} in the checkpoint, {n_now} now')
        if diff:
            raise ValueError(f'{path!r} is another training run; resume it with its own settings or start a new '
                             'run with another checkpoint path (--init warm-starts from GHN weights). '
                             + '; '.join(diff))

    def _write_log(self) -> None:
        if self.log_path is None or self.rank != 0:
            return
        tmp = f'{self.log_path}.tmp'
        with open(tmp, 'w') as f:
            json.dump({'config': asdict(self.config), 'history': self.state.history}, f, indent=1)
        os.replace(tmp, self.log_path)


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (tuple, list)) else v


def _differences(saved: Dict[str, Any], now: Dict[str, Any], prefix: str = '') -> List[str]:
    """One line per key whose value differs between a checkpoint's settings and the current ones."""
    return [f'{prefix}{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now'
            for k in sorted(set(saved) | set(now)) if _plain(saved.get(k)) != _plain(now.get(k))]


def _len_or_none(dataset: Any) -> Optional[int]:
    try:
        return len(dataset)
    except TypeError:
        return None


def _get_rng_state() -> Dict[str, Any]:
    state = {'torch': torch.get_rng_state(), 'numpy': json.dumps(_np_state()), 'python': repr(random.getstate())}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _np_state() -> List[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Moves every object alive now out of the cyclic garbage collector's reach for the ``with`` block (after
    collecting what is already garbage), and back on exit. Frozen before DataLoader workers fork, the
    workers' collections do not touch (copy) the parent's pages either."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'].cpu())
    name, keys, pos, has_gauss, cached = json.loads(state['numpy'])
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(ast.literal_eval(state['python']))
    if 'cuda' in state and torch.cuda.is_available():
        # map_location may have moved the saved states to the GPU; the generators take CPU byte tensors only
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


r"""Ground-truth properties of DeepNets-1M architectures (paper §5.2, appendix C.2.3), measured on
Fashion-MNIST on this CPU, and the resumable script that writes them.

For one architecture (its ``net_args``, built at a small width ``C`` so that it trains on a CPU), after a
fixed short SGD run (:func:`pyg_ghn.train.baselines.train_sgd`):

* ``clean_acc``: top-1 accuracy (%) on the first ``num_test`` Fashion-MNIST **test** images;
* ``noise_acc``: top-1 accuracy (%) on the same images with Gaussian noise of standard deviation
  ``noise_std=0.08`` (the paper's CIFAR-10 value). As the corruption benchmark the paper follows
  (Hendrycks & Dietterich), the noise is added to the **raw pixel values in** :math:`[0, 1]` (the 28x28
  image, before the zero padding to 32x32), clipped to :math:`[0, 1]`, and the result is normalised like
  the clean images. The noise is drawn once, with a fixed seed, so every network sees the same images;
* ``time``: inference speed, the median over ``time_reps`` runs of the **milliseconds per batch** of
  ``time_batch`` test images on this CPU with **one thread** (eval mode, ``torch.no_grad()``, BatchNorm with
  batch statistics as the paper evaluates). CPU timings on a shared machine are noisy: the median of
  several runs after a warm-up is kept. Milliseconds, not seconds: values of order 1-100, like the
  original's GPU seconds for the whole validation set, so that the SVR grid of the protocol
  (``epsilon`` 0.05-0.2) and its rounding of predictions to integers mean the same as there;
* ``converge_time``: the number of SGD steps until the training accuracy, averaged over the last
  ``window`` training batches (measured on each batch before its update), first reaches ``threshold``.
  The paper's threshold (95% top-1 on CIFAR-10) assumes 50 epochs; a short run needs a lower one. A
  network that never reaches it gets ``steps`` (a censored value) and ``converged = False``.

Accuracies are evaluated with :func:`pyg_ghn.train.evaluate` in the paper's BatchNorm protocol
(``bn_mode='batch'``; DeepNets-1M's ``'bnorm'`` layers have no running statistics anyway).

The script appends one record per network to a JSON file, atomically (write to a temporary file, then
rename), and skips the networks already in it, so it can be stopped and resumed; a file made with other
settings, or on another device (recorded in the file: ``'cpu'``, ``'cuda (GPU name)'``), is refused. Run
splits in parallel only into different files
(:class:`~pyg_ghn.properties.ArchPropertyDataset` reads several)::

    python -m pyg_ghn.properties.measure --split val --num-nets 100 --out data/properties_val.json
    python -m pyg_ghn.properties.measure --split test --num-nets 100 --out data/properties_test.json
"""
import argparse
import json
import os
import os.path as osp
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..train.baselines import DivergedError
from .dataset import FORMAT_VERSION, PROPERTIES, load_results, measured_on

__all__ = ['PROPERTIES', 'MeasureConfig', 'ImageSets', 'load_image_sets', 'add_gaussian_noise',
           'measure_network', 'measure_split', 'device_description', 'load_results', 'main']


@dataclass
class MeasureConfig:
    r"""Settings of a measurement run; stored in the output file, and a resumed run must match them.

    Args:
        C (int): width of the networks (``net_args['C']`` is replaced; DeepNets-1M uses 32). (default: 8)
        steps (int): SGD steps of the training run. (default: 300)
        batch_size (int): training batch size. (default: 64)
        lr, momentum, weight_decay: SGD settings (the DARTS / paper values). Cosine schedule over ``steps``.
        num_test (int): test images for the accuracies (the first ones of the test set). (default: 2000)
        test_batch_size (int): evaluation batch size (64 in the paper). (default: 64)
        noise_std (float): standard deviation of the pixel noise in :math:`[0, 1]` units. (default: 0.08)
        noise_seed (int): seed of the noise, the same for every network. (default: 0)
        time_batch (int): images per timed batch. (default: 64)
        time_reps (int): timed forward passes (after one warm-up); the median is kept. (default: 5)
        threshold (float): training accuracy (fraction) that defines convergence. (default: 0.75)
        window (int): training batches averaged for the convergence test. (default: 20)
        seed (int): base seed; network ``i`` is initialised and trained with ``seed + i``. (default: 0)
        dataset (str): image data; only ``'fashion_mnist'`` is supported. (default: ``'fashion_mnist'``)
    """
    C: int = 8
    steps: int = 300
    batch_size: int = 64
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    num_test: int = 2000
    test_batch_size: int = 64
    noise_std: float = 0.08
    noise_seed: int = 0
    time_batch: int = 64
    time_reps: int = 5
    threshold: float = 0.75
    window: int = 20
    seed: int = 0
    dataset: str = 'fashion_mnist'

    def __post_init__(self) -> None:
        if self.dataset != 'fashion_mnist':
            raise ValueError(f"only dataset='fashion_mnist' is supported, got {self.dataset!r}")
        if self.C < 8:
            raise ValueError(f'C must be at least 8 (the msa op has 8 heads), got {self.C}')
        if self.steps < 1 or self.window < 1 or self.time_reps < 1 or self.num_test < 1:
            raise ValueError('steps, window, time_reps and num_test must be positive')
        if not 0 < self.threshold <= 1:
            raise ValueError(f'threshold is a fraction in (0, 1], got {self.threshold}')


@dataclass
class ImageSets:
    """The data one process needs to measure networks, loaded once: the training set and the clean and
    noisy test batches (normalised ``float32 [B, 3, 32, 32]`` tensors and labels)."""
    train: torch.utils.data.Dataset
    clean: List[Tuple[Tensor, Tensor]] = field(repr=False)
    noisy: List[Tuple[Tensor, Tensor]] = field(repr=False)


def add_gaussian_noise(images: Tensor, std: float, generator: Optional[torch.Generator] = None) -> Tensor:
    r"""``uint8`` images ``[B, C, H, W]`` -> float images in :math:`[0, 1]` with
    :math:`\mathrm{clip}(x / 255 + \mathcal{N}(0, \sigma^2), 0, 1)` (the corruption benchmark's Gaussian
    noise)."""
    x = images.float() / 255
    noise = torch.randn(x.shape, generator=generator) * std
    return (x + noise.to(x.device)).clamp_(0, 1)


def load_image_sets(cfg: MeasureConfig, root: Optional[str] = None) -> ImageSets:
    """Loads Fashion-MNIST (``trainval`` for training, the first ``cfg.num_test`` test images, clean and
    noisy) as :class:`ImageSets`."""
    from ..datasets.images import FashionMNIST
    train = FashionMNIST(root, 'trainval', augment=False)
    test = FashionMNIST(root, 'test', augment=False)
    n = min(cfg.num_test, len(test))
    raw, labels = test.data[:n], test.targets[:n]
    clean = test.transform_batch(raw)
    noisy01 = add_gaussian_noise(raw, cfg.noise_std, torch.Generator().manual_seed(cfg.noise_seed))
    # The same padding and normalisation as the clean images, applied to [0, 1] values.
    noisy = (F.pad(noisy01, test._pad) - test.mean) / test.std
    noisy = noisy.expand(-1, 3, -1, -1).contiguous()
    bs = cfg.test_batch_size
    batches = lambda x: [(x[i:i + bs], labels[i:i + bs]) for i in range(0, n, bs)]  # noqa: E731
    return ImageSets(train, batches(clean), batches(noisy))


class _AccuracyTracker:
    """A cross-entropy loss for :func:`train_sgd` that also records each training batch's accuracy."""

    def __init__(self) -> None:
        self.acc: List[float] = []

    def __call__(self, logits: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            self.acc.append((logits.argmax(1) == y).float().mean().item())
        return F.cross_entropy(logits, y)


def convergence_step(train_acc: Sequence[float], threshold: float, window: int) -> Optional[int]:
    r"""The first step :math:`t \ge` ``window`` (1-based) at which the mean of ``train_acc[t - window:t]``
    reaches ``threshold``; ``None`` if it never does."""
    s = 0.0
    for t, a in enumerate(train_acc, 1):
        s += a
        if t > window:
            s -= train_acc[t - window - 1]
        if t >= window and s / window >= threshold - 1e-12:
            return t
    return None


@torch.no_grad()
def time_inference(model: nn.Module, x: Tensor, reps: int = 5, threads: int = 1) -> float:
    """Median seconds of ``model(x)`` over ``reps`` runs after one warm-up, with ``threads`` CPU threads, in
    eval mode with batch-statistics BatchNorm (the paper's protocol)."""
    from ..train.evaluate import bn_eval_mode
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with bn_eval_mode(model, 'batch'):
            sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
            model(x)
            times = []
            for _ in range(reps):
                sync()
                t0 = time.perf_counter()
                model(x)
                sync()  # kernels are asynchronous on a GPU
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(n)
    return statistics.median(times)


def measure_network(net_args: Dict[str, Any], cfg: MeasureConfig, data: ImageSets, seed: int,
                    device: Optional[torch.device] = None, wide: bool = False) -> Dict[str, Any]:
    """Builds the network of ``net_args`` at width ``cfg.C`` (``4 * cfg.C`` if ``wide``, as DeepNets-1M
    widens its WIDE split), trains it and measures the four :data:`PROPERTIES`. Returns a JSON-serialisable
    record (``net_args`` as built, the properties, ``converged``, ``num_params``, ``final_loss``,
    ``seconds``)."""
    from ..datasets.deepnets1m import build_network
    from ..train.baselines import train_sgd
    from ..train.evaluate import evaluate
    t0 = time.perf_counter()
    args = {k: v for k, v in net_args.items() if k != 'num_params'}
    args['C'] = cfg.C * (4 if wide else 1)
    device = torch.device(device or 'cpu')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_network(args).to(device)
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True,
                                         generator=torch.Generator(), drop_last=True)
    tracker = _AccuracyTracker()
    losses = train_sgd(model, loader, cfg.steps, lr=cfg.lr, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, device=device, seed=seed, loss_fn=tracker)
    clean = evaluate(model, data.clean, device=device, topk=(1,))['top1']
    noisy = evaluate(model, data.noisy, device=device, topk=(1,))['top1']
    x_time = torch.cat([x for x, _ in data.clean])[:cfg.time_batch].to(device)
    speed = 1e3 * time_inference(model, x_time, cfg.time_reps)
    step = convergence_step(tracker.acc, cfg.threshold, cfg.window)
    return dict(net_args=args, clean_acc=clean, noise_acc=noisy, time=speed,
                converge_time=step if step is not None else cfg.steps, converged=step is not None,
                num_params=sum(p.numel() for p in model.parameters()), final_loss=losses[-1],
                seconds=time.perf_counter() - t0)


def device_description(device: torch.device) -> str:
    """What a property file records as the device it was measured on: ``'cpu'`` or ``'cuda (GPU name)'``."""
    if device.type == 'cuda':
        return f'cuda ({torch.cuda.get_device_name(device)})'
    return device.type


# --------------------------------------------------------------------------------------------------------
def _atomic_write(obj: Any, path: str) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=None, separators=(',', ':'))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def measure_split(split: str, num_nets: int, out: str, cfg: MeasureConfig, start: int = 0,
                  data_root: Optional[str] = None, progress: bool = True,
                  device: Optional[str] = None) -> Dict[str, Any]:
    """Measures networks ``start .. start + num_nets - 1`` of a DeepNets-1M ``split`` (as generated by
    :func:`pyg_ghn.deepnets.generate_split`, the architectures of :class:`~pyg_ghn.datasets.DeepNets1M`)
    and appends them to ``out``; networks already there are skipped. A network whose training fails (a
    NaN loss) is recorded with ``error`` and no properties. Returns the file's content."""
    from tqdm import tqdm
    from ..deepnets.generator import generate_split
    config = asdict(cfg)
    device = torch.device(device or 'cpu')
    where = device_description(device)
    if osp.exists(out):
        state = load_results(out)
        if state['config'] != config:
            diff = {k: (state['config'].get(k), v) for k, v in config.items() if state['config'].get(k) != v}
            raise ValueError(f'{out} was measured with other settings {diff} (file, now); use another --out')
        # Inference times of another device are another quantity: one file, one device.
        if measured_on(state) != where:
            raise ValueError(f'{out} was measured on {measured_on(state)!r}, this run is on {where!r}: '
                             'times would not be comparable; use another --out')
        state['device'] = where
    else:
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        state = dict(version=FORMAT_VERSION, config=config, device=where, results=[])
    done = {(r['split'], r['idx']) for r in state['results']}
    nets = generate_split(split, num_nets, start=start)
    todo = [(start + i, a) for i, a in enumerate(nets) if (split, start + i) not in done]
    bar = tqdm(total=num_nets, initial=num_nets - len(todo), desc=f'properties {split}', disable=not progress)
    data = load_image_sets(cfg, data_root) if todo else None
    for idx, net_args in todo:
        try:
            rec = measure_network(net_args, cfg, data, cfg.seed + idx, device, wide=split == 'wide')
        except DivergedError as e:  # keep the architecture out of the targets, say why; other errors stop
            warnings.warn(f'{split} network {idx}: {e}')
            rec = dict(net_args=dict(net_args, C=cfg.C * (4 if split == 'wide' else 1)), error=str(e))
        rec = dict(split=split, idx=idx, **rec)
        state['results'].append(rec)
        _atomic_write(state, out)
        bar.update(1)
        if 'error' not in rec:
            bar.set_postfix(acc=f"{rec['clean_acc']:.1f}", noise=f"{rec['noise_acc']:.1f}",
                            ms=f"{rec['time']:.1f}", conv=rec['converge_time'])
    bar.close()
    return state


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m pyg_ghn.properties.measure',
                                description='Measures the properties of DeepNets-1M networks on Fashion-MNIST '
                                            '(resumable; see the module docstring).',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--split', default='val', choices=['val', 'test', 'wide', 'deep', 'dense', 'bnfree'],
                   help='DeepNets-1M split (the protocol uses val and test)')
    p.add_argument('--num-nets', type=int, default=100)
    p.add_argument('--start', type=int, default=0, help='first network index')
    p.add_argument('--out', default='data/properties.json')
    p.add_argument('--data-root', default=None, help='Fashion-MNIST folder (default: the Debian package)')
    p.add_argument('--threads', type=int, default=1, help='torch threads for training')
    p.add_argument('--device', default=None)
    p.add_argument('--no-progress', action='store_true')
    defaults = MeasureConfig()
    for f in MeasureConfig.__dataclass_fields__.values():
        p.add_argument('--' + f.name.replace('_', '-'), dest=f.name, type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name))
    return p


def main(argv: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    a = _parser().parse_args(None if argv is None else list(argv))
    torch.set_num_threads(a.threads)
    cfg = MeasureConfig(**{k: getattr(a, k) for k in MeasureConfig.__dataclass_fields__})
    state = measure_split(a.split, a.num_nets, a.out, cfg, start=a.start, data_root=a.data_root,
                          progress=not a.no_progress, device=a.device)
    ok = [r for r in state['results'] if r['split'] == a.split and 'error' not in r]
    if ok:
        mean = {k: sum(r[k] for r in ok) / len(ok) for k in PROPERTIES}
        print(f"{a.out}: {len(ok)} {a.split} networks; mean " +
              ', '.join(f'{k} {v:.4g}' for k, v in mean.items()))
    return state


if __name__ == '__main__':
    main()

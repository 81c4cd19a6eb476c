"""The ``pyg-ghn`` command line: ``train``, ``eval``, ``predict`` and ``graph``."""
import argparse
import importlib
import json
import os
import sys
import time
import warnings
from typing import Any, List, Optional

import torch

__all__ = ['main']


_PREDEFINED = ('resnet50', 'vit', 'darts')

#: What the image dataset fixes: the classes of the networks, ImageNet-style (224x224) networks or not, and
#: the GHN configuration (the original's CIFAR-10 or ImageNet checkpoints).
_DATA_SETUP = {'fashion_mnist': (10, False, 'cifar10'), 'cifar10': (10, False, 'cifar10'),
               'imagenet': (1000, True, 'imagenet')}


def _data_setup(name: str):
    key = name.lower().replace('-', '_')
    if key not in _DATA_SETUP:
        raise SystemExit(f'error: unknown --data {name!r}; one of {sorted(_DATA_SETUP)}')
    return _DATA_SETUP[key]


def _check_classes(ghn: Any, data: str, num_classes: int) -> None:
    # A GHN of other classes would still predict every parameter, and score ~0% on the data, silently.
    if ghn.num_classes != num_classes:
        raise SystemExit(f'error: the GHN predicts {ghn.num_classes}-class networks, {data} has {num_classes} '
                         'classes: give a GHN trained for it')


def _input_size(values: Optional[List[int]]) -> Any:
    # One value is an image side (3 x s x s), as from_module reads an int; several are the full shape.
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _load_model(spec: str, num_classes: Optional[int] = None, default_classes: Optional[int] = None
                ) -> torch.nn.Module:
    """A torchvision model name (``resnet50``), a DeepNets-1M predefined net (``deepnets:vit``) or a
    ``module:callable`` returning an ``nn.Module``; ``num_classes`` (or ``default_classes`` where the
    builder needs a value) sets the classifier."""
    if spec.startswith('deepnets:'):
        from .deepnets import predefined
        name = spec.split(':', 1)[1]
        if name not in _PREDEFINED:
            raise SystemExit(f'error: unknown predefined network {name!r}; one of '
                             f'{", ".join("deepnets:" + n for n in _PREDEFINED)}')
        return getattr(predefined, name)(num_classes=num_classes or default_classes or 10)
    if ':' in spec:
        mod, fn = spec.split(':', 1)
        sys.path.insert(0, os.getcwd())
        try:
            builder = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise SystemExit(f'error: cannot load {spec!r}: {e}. Give a torchvision model name or '
                             f'module:callable importable from the current folder.')
        if not num_classes:
            return builder()
        try:  # only when asked: a user's builder need not take num_classes
            return builder(num_classes=num_classes)
        except TypeError as e:
            raise SystemExit(f'error: --num-classes {num_classes} given, but {spec}(num_classes=...) failed: {e}')
    import torchvision
    if spec not in torchvision.models.list_models(module=torchvision.models):
        raise SystemExit(f'error: {spec!r} is not a torchvision classification model; see '
                         f'torchvision.models.list_models(), or give module:callable.')
    n = num_classes or default_classes
    return torchvision.models.get_model(spec, **({'num_classes': n} if n else {}))


def _ghn(path: Optional[str], config: str, dataset: str, device: str, seed: int = 0) -> Any:
    from .nn import GHN
    if path is None or path == 'random':
        with torch.random.fork_rng(devices=[]):  # the same random GHN on every run
            torch.manual_seed(seed)
            return GHN.from_config(config, dataset).to(device).eval()
    if path == 'pretrained':
        return GHN.from_pretrained().to(device)
    if not os.path.exists(path):
        raise SystemExit(f'error: no GHN checkpoint at {path!r}.')
    return GHN.load(path, map_location=device)


#: The settings of a run outside its TrainConfig and GHN configuration: saved in the training checkpoint,
#: refused when a resume changes them, and all ``pyg-ghn continue`` needs besides the checkpoint.
_RUN_SETTINGS = ('data', 'batch_size', 'channels')


def cmd_train(a: argparse.Namespace) -> None:
    from .nn import GHN
    from .train.recipes import get_recipe
    from .train.trainer import TrainConfig
    if os.path.exists(a.ckpt) and not a.resume:
        raise SystemExit(f'error: {a.ckpt!r} exists: pass --resume to continue that run (or pyg-ghn continue '
                         f'{a.ckpt}), or give a new --ckpt (--init PATH warm-starts a new run from GHN weights).')
    if not 0 <= a.norm_free_prob <= 1:
        raise SystemExit(f'error: --norm-free-prob must be in [0, 1], got {a.norm_free_prob}')
    try:
        recipe = get_recipe(a.recipe)
    except ValueError as e:
        raise SystemExit(f'error: {e}')
    for key, value in recipe.as_dict().items():  # the recipe fills what the command line leaves unset
        if getattr(a, key) is None:
            setattr(a, key, value)
    _, _, ghn_dataset = _data_setup(a.data)
    overrides = {} if a.no_ve is False else {'ve': False}
    if a.no_norm:
        overrides['weight_norm'] = False
    torch.manual_seed(a.seed)
    ghn = GHN.from_config(a.config, ghn_dataset, **overrides)
    if a.init and not (a.resume and os.path.exists(a.ckpt)):
        # warm start from GHN weights (e.g. a run on another machine); the optimizer starts afresh
        ghn.load_state_dict(GHN.load(a.init).state_dict())
    cfg = TrainConfig(epochs=a.epochs, lr=a.lr, meta_batch=a.meta_batch, max_nodes=a.max_nodes,
                      steps_per_epoch=a.steps_per_epoch, ckpt_every=a.ckpt_every, amp=a.amp, seed=a.seed,
                      norm_free_prob=a.norm_free_prob)
    settings = {'data': a.data, 'batch_size': a.batch_size, 'channels': list(a.channels)}
    _run_training(a, ghn, cfg, settings, a.archs)


def cmd_continue(a: argparse.Namespace) -> None:
    """Continues a run from its checkpoint alone: GHN configuration, schedule, data and position all come from
    the checkpoint, so a fresh clone continues a committed run with one command."""
    from dataclasses import fields

    from .nn import GHN
    from .train.trainer import TrainConfig
    ckpt = _read_training_checkpoint(a.ckpt)
    settings = ckpt.get('run_settings') or {}
    missing = [k for k in _RUN_SETTINGS if k not in settings]
    if missing or ckpt.get('num_architectures') is None:
        raise SystemExit(f'error: {a.ckpt!r} does not record its data settings ({", ".join(missing) or "archs"}):'
                         ' it predates pyg-ghn continue; resume it with pyg-ghn train --resume and its own flags.')
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in ckpt['train_config'].items() if k in known})
    if a.ckpt_every is not None:
        cfg.ckpt_every = a.ckpt_every
    ghn = GHN(**ckpt['ghn_config'])  # its weights come with the rest of the state in load_checkpoint
    a.resume = True
    a.compact = a.compact or bool(ckpt.get('compact'))
    _run_training(a, ghn, cfg, dict(settings), ckpt['num_architectures'])


def _run_training(a: argparse.Namespace, ghn: Any, cfg: Any, settings: dict, num_archs: int) -> None:
    from .datasets import image_loaders
    from .datasets.deepnets1m import DeepNets1M, build_network
    from .train.trainer import Trainer
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:  # launched by torchrun: ranks share each meta-batch
        import torch.distributed as dist
        dist.init_process_group('nccl' if a.device.startswith('cuda') else 'gloo')
        if a.device.startswith('cuda'):
            a.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if a.threads:
        torch.set_num_threads(a.threads)
    num_classes, large_images, _ = _data_setup(settings['data'])
    archs = DeepNets1M(a.arch_root, 'train', num_nets=num_archs, num_workers=a.workers or 1, attach_network=True,
                       num_classes=num_classes, large_images=large_images, channels=tuple(settings['channels']))
    loaders = image_loaders(settings['data'], root=a.data_root, batch_size=settings['batch_size'], split='val',
                            seed=cfg.seed)
    trainer = Trainer(ghn, archs, loaders.train, build_network, cfg, ckpt_path=a.ckpt, num_workers=a.workers,
                      device=a.device, log_path=a.log, run_settings=settings, compact=a.compact)
    if a.resume and os.path.exists(a.ckpt):
        try:
            trainer.load_checkpoint(a.ckpt)
        except (RuntimeError, ValueError) as e:
            raise SystemExit(f'error: {e}')
        print(f'resumed from {a.ckpt}: epoch {trainer.state.epoch}, step {trainer.state.global_step}, '
              f'{trainer.state.cpu_seconds / 3600:.2f} core-hours')
    t, start = time.time(), trainer.state.global_step
    cpu_limit = None if a.cpu_hours is None else a.cpu_hours * 3600
    history = trainer.train(time_limit=a.time_limit, max_steps=a.max_steps, cpu_limit=cpu_limit)
    print(f'trained {trainer.state.global_step - start} steps in {time.time() - t:.0f} s this run, '
          f'{trainer.state.global_step} in all ({trainer.state.skipped} skipped, '
          f'{trainer.state.cpu_seconds / 3600:.2f} core-hours)')
    for h in history[-3:]:
        print(json.dumps(h))
    if a.out:
        trainer.ghn.eval().save(a.out, metadata={'steps': trainer.state.global_step, 'archs': num_archs,
                                                 'data': settings['data'], 'history': history})
        print(f'saved GHN to {a.out}')
    if a.plot and history:
        _plot_history(history, a.plot)


def _plot_history(history: List[dict], path: str) -> None:
    """Per-epoch training loss and training accuracy of the predicted networks against the step, with a
    dotted line where the learning rate changes (the drops explain the curves' jumps)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [h.get('steps', h['epoch']) for h in history]
    ax[0].plot(steps, [h['loss'] for h in history], marker='.')
    ax[0].set(xlabel='training step', ylabel='training loss')
    ax[1].plot(steps, [h['acc'] for h in history], marker='.')
    ax[1].set(xlabel='training step', ylabel='top-1 of predicted nets (%)')
    for i in range(1, len(history)):
        lr = history[i].get('lr')
        if lr != history[i - 1].get('lr'):
            for a in ax:  # epoch i trained with the new rate: the change is where epoch i - 1 ended
                a.axvline(steps[i - 1], ls=':', c='gray')
                a.annotate(f'lr {lr:g}', (steps[i - 1], 0.95), rotation=90, xycoords=('data', 'axes fraction'),
                           va='top', ha='right', fontsize=8, color='gray')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_eval(a: argparse.Namespace) -> None:
    from .datasets import image_loaders
    from .datasets.deepnets1m import DeepNets1M
    from .train.evaluate_ghn import evaluate_ghn, summarize
    if a.num_nets is not None and a.num_nets < 1:
        raise SystemExit('error: --num-nets must be at least 1')
    num_classes, large_images, ghn_dataset = _data_setup(a.data)
    ghn = None if a.ghn == 'he' else _ghn(a.ghn, a.config, ghn_dataset, a.device)
    if ghn is not None:
        _check_classes(ghn, a.data, num_classes)
    loaders = image_loaders(a.data, root=a.data_root, test_batch_size=64, split='test',
                            load_train='running' in a.bn_mode)
    ds = DeepNets1M(a.arch_root, a.split, num_nets=a.num_nets, num_classes=num_classes, large_images=large_images)
    archs = [(f'{a.split}/{i}', ds.network(i), ds[i]) for i in range(len(ds))]
    init = None
    if ghn is None:
        from .train.baselines import he_init_
        init = lambda net: he_init_(net, seed=0)  # noqa: E731
    recs = evaluate_ghn(ghn, archs, loaders.eval, a.device, a.bn_mode, loaders.train, init=init,
                        max_batches=a.max_batches, calibrate_batches=a.calibrate_batches)
    summary = summarize(recs)
    for k, (m, s) in summary.items():
        print(f'{k:>22}: {m:8.3f} ± {s:.3f}')
    if a.out:
        with open(a.out, 'w') as f:
            json.dump({'records': recs, 'summary': summary}, f, indent=1)


def cmd_predict(a: argparse.Namespace) -> None:
    data_classes, large_images, ghn_dataset = _data_setup(a.data) if a.data else (None, False, 'cifar10')
    ghn = _ghn(a.ghn, a.config, ghn_dataset, a.device)
    if data_classes is not None:
        _check_classes(ghn, a.data, data_classes)
    model = _load_model(a.model, a.num_classes, default_classes=data_classes or ghn.num_classes)
    input_size = _input_size(a.input_size) or (224 if large_images else None)  # the images it will be fed
    t = time.perf_counter()
    model = ghn(model.to(a.device), input_size=input_size)
    print(f'predicted {sum(p.numel() for p in model.parameters()):,} parameters in '
          f'{time.perf_counter() - t:.3f} s')
    if a.out:
        torch.save(model.state_dict(), a.out)
        print(f'saved state dict to {a.out}')
    if a.data:
        from .datasets import image_loaders
        from .train.evaluate import evaluate
        loaders = image_loaders(a.data, root=a.data_root, load_train=False)
        res = evaluate(model, loaders.eval, a.device, bn_mode='batch', max_batches=a.max_batches, progress=True)
        print(f"{a.data} test: top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%")


def cmd_graph(a: argparse.Namespace) -> None:
    from .graph import from_module
    model = _load_model(a.model, a.num_classes)
    t = time.perf_counter()
    g = from_module(model, _input_size(a.input_size), max_sp_dist=a.max_sp_dist,
                    extended=a.extended)
    print(f'{a.model}: {g.summary()} (built in {time.perf_counter() - t:.3f} s)')
    if g.unpredicted:
        print(f'not predicted ({len(g.unpredicted)}): {", ".join(g.unpredicted)}')
    if a.plot:
        g.plot(a.plot)
        print(f'plot saved to {a.plot}')


def _read_training_checkpoint(path: str) -> dict:
    """A ``pyg-ghn train`` checkpoint, checksums verified; a clear exit otherwise."""
    from .nn.checkpoint import CheckpointError, read_checkpoint
    try:
        ckpt = read_checkpoint(path)
    except (CheckpointError, OSError) as e:
        raise SystemExit(f'error: cannot read {path!r}: {e}')
    if not isinstance(ckpt, dict) or ckpt.get('format') != 'pyg_ghn.trainer':
        raise SystemExit(f'error: {path!r} is not a pyg_ghn training checkpoint (pyg-ghn train --ckpt ...).')
    return ckpt


def cmd_export(a: argparse.Namespace) -> None:
    from .nn import GHN
    ckpt = _read_training_checkpoint(a.ckpt)
    ghn = GHN(**ckpt['ghn_config'])
    ghn.load_state_dict(ckpt['ghn'])
    state = ckpt['state']
    meta = {'steps': state['global_step'], 'epochs': state['epoch'], 'skipped': state['skipped'],
            'history': state['history'], 'train_config': ckpt['train_config']}
    meta.update(json.loads(a.metadata) if a.metadata else {})
    ghn.eval().save(a.out, half=a.half, metadata=meta)
    print(f"exported the GHN of {a.ckpt} (step {state['global_step']}) to {a.out}")


def _add_run_options(t: argparse.ArgumentParser, continued: bool = False) -> None:
    """Options of how a run is carried out, which a resumed run may change (not what it trains)."""
    t.add_argument('--data-root', default=None)
    t.add_argument('--arch-root', default='data/deepnets1m')
    t.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    t.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: default)')
    t.add_argument('--workers', type=int, default=0,
                   help='DataLoader workers building the graphs and networks ahead of each step (default 0: in the '
                        'step, ~16%% of a CPU-recipe step; 1 leaves ~4%% where a core is free for it)')
    t.add_argument('--ckpt-every', type=int, default=None if continued else 200,
                   help='steps between checkpoints' + (" (default: the run's own)" if continued else ''))
    t.add_argument('--compact', action='store_true',
                   help="keep Adam's moments in bfloat16 in the checkpoint (40%% smaller, for a state kept in git)"
                        + ('; a compact checkpoint stays compact' if continued else ''))
    t.add_argument('--time-limit', type=float, default=None, help='seconds; stop and checkpoint after')
    t.add_argument('--max-steps', type=int, default=None,
                   help='stop and checkpoint once this many steps in total are done (resumable)')
    t.add_argument('--cpu-hours', type=float, default=None,
                   help='stop and checkpoint once the run has used this many core-hours in total')
    t.add_argument('--log', default=None, help='JSON log of per-epoch metrics')
    t.add_argument('--plot', default=None, help='PNG of the training curves')
    t.add_argument('--out', default=None, help='save the trained GHN here (pyg_ghn format)')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='pyg-ghn', description='Graph HyperNetworks on PyTorch Geometric.')
    sub = p.add_subparsers(dest='command', required=True)

    t = sub.add_parser('train', help='train a GHN on DeepNets-1M architectures')
    t.add_argument('--recipe', default='paper',
                   help="'paper' (the original recipe) or 'cpu' (the most accuracy per CPU core-hour); it sets "
                        'the options below marked (recipe) that are not given')
    t.add_argument('--config', default='ghn2', help='ghn2, ghn1 or mlp')
    t.add_argument('--no-ve', action='store_true', help='ablation: no virtual edges')
    t.add_argument('--no-norm', action='store_true', help='ablation: no parameter normalisation')
    t.add_argument('--data', default='fashion_mnist')
    t.add_argument('--archs', type=int, default=None, help='number of training architectures (recipe)')
    t.add_argument('--epochs', type=int, default=None, help='(recipe)')
    t.add_argument('--steps-per-epoch', type=int, default=None, help='(recipe; paper: one pass over the images)')
    t.add_argument('--meta-batch', type=int, default=None, help='architectures per step (recipe)')
    t.add_argument('--batch-size', type=int, default=None, help='images per step (recipe)')
    t.add_argument('--channels', type=int, nargs=2, default=None, metavar=('LOW', 'HIGH'),
                   help='range of the training-time width C (recipe)')
    t.add_argument('--max-nodes', type=int, default=2200)
    t.add_argument('--norm-free-prob', type=float, default=0.,
                   help='probability that an architecture of a meta-batch is one of the training architectures '
                        'without BatchNorm (0: uniform, the paper; DeepNets-1M has 3%% of them)')
    t.add_argument('--lr', type=float, default=None, help='(recipe)')
    t.add_argument('--amp', action='store_true')
    t.add_argument('--seed', type=int, default=1111)
    t.add_argument('--init', default=None, help='initialise the GHN from these weights')
    t.add_argument('--ckpt', default='runs/ghn2/trainer.pt', help='training checkpoint (atomic)')
    t.add_argument('--resume', action='store_true', help='continue from --ckpt if it exists')
    _add_run_options(t)
    t.set_defaults(func=cmd_train)

    c = sub.add_parser('continue', help='continue a training run from its checkpoint alone (e.g. a committed one)')
    c.add_argument('ckpt', help='the training checkpoint; it is updated in place')
    _add_run_options(c, continued=True)
    c.set_defaults(func=cmd_continue)

    e = sub.add_parser('eval', help='accuracy of predicted parameters on a DeepNets-1M split')
    e.add_argument('--ghn', default='pretrained', help="checkpoint path, 'pretrained', 'random' or 'he'")
    e.add_argument('--config', default='ghn2')
    e.add_argument('--split', default='test')
    e.add_argument('--num-nets', type=int, default=None)
    e.add_argument('--arch-root', default='data/deepnets1m')
    e.add_argument('--data', default='fashion_mnist')
    e.add_argument('--data-root', default=None)
    e.add_argument('--bn-mode', nargs='+', default=['batch'], choices=['batch', 'running'])
    e.add_argument('--max-batches', type=int, default=None)
    e.add_argument('--calibrate-batches', type=int, default=200,
                   help="training batches that calibrate BN statistics for --bn-mode running (appendix C.1: 200)")
    e.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    e.add_argument('--out', default=None, help='JSON with per-architecture records')
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser('predict', help='predict all parameters of a network')
    r.add_argument('model', help="torchvision name, 'deepnets:vit' or module:callable")
    r.add_argument('--ghn', default='pretrained')
    r.add_argument('--config', default='ghn2')
    r.add_argument('--num-classes', type=int, default=None,
                   help="classes of the network (default: those of --data, else the GHN's)")
    r.add_argument('--input-size', type=int, nargs='+', default=None,
                   help='S (a 3xSxS image) or the full input shape, e.g. 3 224 224 (default: 3 32 32)')
    r.add_argument('--data', default=None, help='evaluate on this dataset (e.g. fashion_mnist)')
    r.add_argument('--data-root', default=None)
    r.add_argument('--max-batches', type=int, default=None)
    r.add_argument('--device', default='cpu')
    r.add_argument('--out', default=None, help='save the predicted state dict here')
    r.set_defaults(func=cmd_predict)

    g = sub.add_parser('graph', help='build, describe and plot the graph of a network')
    g.add_argument('model')
    g.add_argument('--num-classes', type=int, default=None)
    g.add_argument('--input-size', type=int, nargs='+', default=None,
                   help='S (a 3xSxS image) or the full input shape, e.g. 3 224 224 (default: 3 32 32)')
    g.add_argument('--max-sp-dist', type=int, default=50)
    g.add_argument('--extended', action='store_true')
    g.add_argument('--plot', default=None, help='PNG path')
    g.set_defaults(func=cmd_graph)
    x = sub.add_parser('export', help='save the GHN of a training checkpoint as a GHN checkpoint')
    x.add_argument('--ckpt', required=True)
    x.add_argument('--out', required=True)
    x.add_argument('--half', action='store_true', help='store float16 weights')
    x.add_argument('--metadata', default=None, help='extra JSON metadata')
    x.set_defaults(func=cmd_export)
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == '__main__':
    main()

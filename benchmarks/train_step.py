"""Time and memory of one GHN-2 training step on the CPU, split into phases, for one or more recipes.

    python benchmarks/train_step.py [--steps 5] [--threads 1 2] [--recipe paper cpu] [--workers 0 1]
        [--handover pickled pyg] [--gc-freeze 1 0] [--meta-batch 8] [--batch-size 64] [--archs 100000 --arch-root data/deepnets1m]

A step as :meth:`pyg_ghn.train.trainer.Trainer.step` runs it: a meta-batch of DeepNets-1M training
architectures at their sampled training widths (the trainer's stream, :class:`MetaBatchSampler`, seed 1111,
over-budget meta-batches skipped like the trainer does), one batch of Fashion-MNIST images, the GHN-2
(CIFAR-10 configuration). ``--recipe`` takes each recipe's images, meta-batch and widths
(:mod:`pyg_ghn.train.recipes`; ``--meta-batch``/``--batch-size`` override them). The phases are timed
separately with the trainer's pieces:

* ``data``: the image batch and the meta-batch of graphs (building the networks and tracing them), then
  :func:`networks_of`; with ``--workers 1`` the graphs and networks are built by a DataLoader worker ahead of
  the step, and ``data`` is what the step still waits for (``--handover``: the trainer's
  :class:`MetaBatchLoader`, which has the worker pickle the batch whole, or PyG's DataLoader, whose batches
  cross storage by storage; ``--gc-freeze``: with or without the trainer's :func:`gc.freeze`);
* ``ghn fwd``: :meth:`GHN.predict_parameters`;
* ``nets f+b``: every network's forward pass with :func:`torch.func.functional_call` on detached copies of
  the predicted parameters, the mean cross-entropy, and its backward pass to those parameters;
* ``ghn bwd``: the backward pass from the predicted parameters into the GHN;
* ``opt``: gradient clipping and the Adam step;
* ``sum``: the phases after ``data``; ``step``: :meth:`Trainer.step` on the same meta-batch and images, for
  comparison (it also computes accuracies).

Each (recipe, workers, hand-over, freeze, threads) runs in its own process (so that peak RSS is its own); medians over
``--steps`` steps after one warm-up step, in wall seconds, and ``cpu`` is the process's CPU time of a whole
step (all threads; a worker's is not included), ``gc`` the mean (not median: full collections are rare and
long) time the main process spent in Python's cyclic garbage collector during it (a full collection walks
every tracked object, the dataset's included: run with ``--archs`` as large as the real run's). Every row draws the same architectures. Peak memory is the
process's maximum resident set size (``getrusage``) and its growth over the resident size before the first
step.
"""
import argparse
import contextlib
import gc
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

PHASES = ('data', 'ghn fwd', 'nets f+b', 'ghn bwd', 'opt', 'sum', 'step')


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def run(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    from pyg_ghn.datasets import image_loaders
    from pyg_ghn.datasets.deepnets1m import DeepNets1M, build_network
    from pyg_ghn.nn import GHN
    from pyg_ghn.train.meta_batch import meta_batch_loader, networks_of
    from pyg_ghn.train.trainer import TrainConfig, Trainer, _frozen_heap

    from pyg_ghn.train.recipes import get_recipe
    threads = args.threads[0]
    torch.set_num_threads(threads)
    warnings.simplefilter('ignore')
    torch.manual_seed(0)
    recipe = get_recipe(args.recipe[0])
    meta_batch, batch_size = args.meta_batch or recipe.meta_batch, args.batch_size or recipe.batch_size
    workers = args.workers[0]
    archs = DeepNets1M(args.arch_root, 'train', num_nets=args.archs, log=False, channels=recipe.channels,
                       attach_network=workers > 0)
    images = iter(image_loaders('fashion_mnist', batch_size=batch_size, split='val', seed=1111).train)
    ghn = GHN.from_config('ghn2', 'cifar10')
    config = TrainConfig(meta_batch=meta_batch)
    trainer = Trainer(ghn, archs, None, build_network, config, progress=False)
    freeze = _frozen_heap() if args.gc_freeze[0] else contextlib.nullcontext()
    freeze.__enter__()  # as Trainer.train does (unless --gc-freeze 0): before the worker forks
    if args.handover[0] == 'pickled':  # what the trainer uses
        stream = iter(meta_batch_loader(archs, meta_batch, seed=1111, num_workers=workers))
    else:  # PyG's DataLoader on the same draws: workers hand the batch over storage by storage
        from torch_geometric.loader import DataLoader
        from pyg_ghn.train.meta_batch import MetaBatchSampler
        stream = iter(DataLoader(archs, batch_sampler=MetaBatchSampler(len(archs), meta_batch, 1111),
                                 num_workers=workers, persistent_workers=workers > 0))
    device = torch.device('cpu')
    rss0 = _rss_mb()

    # Python's cyclic garbage collector runs inside whatever phase allocates when a threshold is crossed; a
    # full collection walks every tracked object of the process (the dataset's included), so its time is
    # reported on its own: seconds of collection in the main process during data + the phases.
    collecting = {'total': 0., 'since': 0.}

    def _time_gc(phase: str, info: dict) -> None:
        if phase == 'start':
            collecting['since'] = time.perf_counter()
        else:
            collecting['total'] += time.perf_counter() - collecting['since']
    gc.callbacks.append(_time_gc)

    times = {p: [] for p in PHASES + ('cpu', 'gc')}
    nodes = []
    for i in range(args.steps + 1):
        t = {}
        cpu0 = time.process_time()  # (a worker prepares the next meta-batch while the steps below run)
        gc0 = collecting['total']
        t0 = time.perf_counter()
        x, y = next(images)
        while True:  # the trainer skips meta-batches over its node budget
            batch = next(stream)
            if batch.num_nodes <= config.max_nodes * batch.num_graphs / config.meta_batch:
                break
        nets = networks_of(batch, build_network, device)
        t['data'] = time.perf_counter() - t0

        trainer.optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        params = ghn.predict_parameters(batch)
        t['ghn fwd'] = time.perf_counter() - t0

        t0 = time.perf_counter()
        leaves = [{k: v.detach().requires_grad_() for k, v in p.items()} for p in params]
        loss = 0.
        for net, p in zip(nets, leaves):
            logits = functional_call(net, p, (x,))
            loss = loss + F.cross_entropy(logits[0] if isinstance(logits, tuple) else logits, y)
        (loss / len(nets)).backward()
        t['nets f+b'] = time.perf_counter() - t0

        t0 = time.perf_counter()
        outs = [v for p in params for v in p.values()]
        grads = [v.grad for p in leaves for v in p.values()]
        torch.autograd.backward(outs, grads)
        t['ghn bwd'] = time.perf_counter() - t0

        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(ghn.parameters(), config.grad_clip)
        trainer.optimizer.step()
        t['opt'] = time.perf_counter() - t0
        t['sum'] = sum(v for k, v in t.items() if k != 'data')  # comparable to Trainer.step
        t['cpu'] = time.process_time() - cpu0  # this process's CPU time for data + the phases
        t['gc'] = collecting['total'] - gc0
        del params, leaves, outs, grads, loss

        t0 = time.perf_counter()
        out = trainer.step(batch, x, y)
        t['step'] = time.perf_counter() - t0
        assert out is not None, 'skipped step'
        if i > 0:  # the first step warms up
            for k, v in t.items():
                times[k].append(v)
            nodes.append(batch.num_nodes)
        if args.verbose:
            print(f'  step {i}: {batch.num_nodes} nodes, ' + ', '.join(f'{k} {v:.2f}s' for k, v in t.items()),
                  file=sys.stderr)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    freeze.__exit__(None, None, None)
    return {'recipe': args.recipe[0], 'workers': workers, 'gc_freeze': args.gc_freeze[0],
            'handover': args.handover[0], 'meta_batch': meta_batch, 'batch_size': batch_size,
            'threads': threads, 'nodes': statistics.median(nodes),
            'median_s': {k: statistics.median(v) for k, v in times.items()},
            'mean_s': {k: statistics.mean(v) for k, v in times.items()},
            'peak_rss_mb': peak, 'rss_before_mb': rss0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--threads', type=int, nargs='+', default=[1, os.cpu_count() or 1])
    parser.add_argument('--recipe', nargs='+', default=['paper'], help='recipes to time (pyg_ghn.train.recipes)')
    parser.add_argument('--workers', type=int, nargs='+', default=[0], help='DataLoader workers building graphs')
    parser.add_argument('--gc-freeze', type=int, nargs='+', default=[1], choices=[0, 1],
                        help="1: objects alive before the first step are frozen out of the garbage collector's "
                             'reach, as Trainer.train does; 0: not')
    parser.add_argument('--handover', nargs='+', default=['pickled'], choices=['pickled', 'pyg'],
                        help="how workers hand a meta-batch over: 'pickled' whole (MetaBatchLoader, the trainer's) "
                             "or 'pyg' (PyG's DataLoader: tensor storages one by one through shared memory)")
    parser.add_argument('--meta-batch', type=int, default=None, help="default: the recipe's")
    parser.add_argument('--batch-size', type=int, default=None, help="default: the recipe's")
    parser.add_argument('--archs', type=int, default=256, help='training architectures to draw from')
    parser.add_argument('--arch-root', default=os.path.join('/tmp', 'pyg_ghn_bench', 'deepnets1m'))
    parser.add_argument('--verbose', action='store_true')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run(args)))
        return

    from pyg_ghn.datasets.deepnets1m import DeepNets1M
    DeepNets1M(args.arch_root, 'train', num_nets=args.archs, log=False)  # generate once, outside the timings
    results = []
    for recipe in args.recipe:
        for workers, handover, freeze, n in itertools.product(
                dict.fromkeys(args.workers), dict.fromkeys(args.handover), dict.fromkeys(args.gc_freeze),
                dict.fromkeys(args.threads)):
            if workers == 0 and handover != args.handover[0]:
                continue  # without workers nothing is handed over
            cmd = [sys.executable, __file__, '--worker', '--threads', str(n), '--steps', str(args.steps),
                   '--gc-freeze', str(freeze), '--handover', handover,
                   '--recipe', recipe, '--workers', str(workers), '--archs', str(args.archs),
                   '--arch-root', args.arch_root] + (['--verbose'] if args.verbose else [])
            cmd += ['--meta-batch', str(args.meta_batch)] if args.meta_batch else []
            cmd += ['--batch-size', str(args.batch_size)] if args.batch_size else []
            env = {**os.environ, 'OMP_NUM_THREADS': str(n)}
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if args.verbose or out.returncode:
                print(out.stderr, file=sys.stderr)
            if out.returncode:
                raise SystemExit(f'the {recipe} run with {workers} workers ({handover}, gc freeze {freeze}) and '
                                 f'{n} threads failed')
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))

    print(f'DeepNets-1M train nets (training widths), Fashion-MNIST, CPU; median seconds over {args.steps} steps '
          '(each a different meta-batch); cpu = CPU time of a step (data included), gc = mean seconds a step in '
          'garbage collection, data % and ghn % = shares of the step (data + sum)')
    print(f'{"recipe":>8}{"b_m":>4}{"imgs":>5}{"wkrs":>5}{"handover":>9}{"frz":>4}{"thr":>4}{"nodes":>6}' + ''.join(f'{p:>9}' for p in PHASES)
          + f'{"cpu":>7}{"gc":>6}{"data %":>8}{"ghn %":>7}{"peak MB":>8}')
    for r in results:
        m = r['median_s']
        total = m['data'] + m['sum']
        print(f'{r["recipe"]:>8}{r["meta_batch"]:>4}{r["batch_size"]:>5}{r["workers"]:>5}{r["handover"]:>9}{r["gc_freeze"]:>4}{r["threads"]:>4}'
              f'{r["nodes"]:>6.0f}' + ''.join(f'{m[p]:>9.2f}' for p in PHASES) + f'{m["cpu"]:>7.2f}{r["mean_s"]["gc"]:>6.2f}'
              f'{100 * m["data"] / total:>8.1f}{100 * (m["ghn fwd"] + m["ghn bwd"]) / total:>7.1f}'
              f'{r["peak_rss_mb"]:>8.0f}')


if __name__ == '__main__':
    main()

"""Tables 3 and 5 of the paper on Fashion-MNIST (3x32x32): accuracy of predicted parameters on unseen
architectures, with the baselines, regenerated from checkpoints.

    python benchmarks/reproduce.py --ghn GHN-2=pyg_ghn/checkpoints/ghn2_fmnist.pt [--ghn NAME=PATH ...]
        [--splits test wide deep dense bnfree predefined] [--num-nets 100] [--ood-nets 20]
        [--baselines he sgd10 sgd100 sgd500 sgd1ep] [--sgd-nets 10] [--out benchmarks/results_fmnist.json]

Every (method, split, architecture) result is appended to the JSON as soon as it is measured, and results
already there are skipped, so the script can be stopped and run again (e.g. in the background across
sessions). At the end it prints mean ± standard error per method and split, beside the paper's CIFAR-10
numbers for reference. Protocol: BatchNorm on batch statistics of test batches of 64 (the paper's), full
10,000-image Fashion-MNIST test set unless --max-batches (each record keeps its --max-batches; the table
uses the current one). SGD baselines: from He init, batches of 96, lr 0.025 held constant (the first epoch
of the paper's 50-epoch cosine runs), momentum 0.9, weight decay 3e-4; 100 steps, 500 steps and 1 epoch
are read off one run.
"""
import argparse
import json
import os
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch

from pyg_ghn.datasets import image_loaders
from pyg_ghn.datasets.deepnets1m import DeepNets1M
from pyg_ghn.deepnets import predefined
from pyg_ghn.graph import from_module
from pyg_ghn.nn import GHN
from pyg_ghn.train import evaluate, he_init_, mean_sem, train_sgd

# Paper, Table 3 (CIFAR-10 top-1, mean ± s.e.), for reference only: another dataset, a full training run.
PAPER_CIFAR10 = {
    'GHN-2': {'test': 66.9, 'wide': 64.0, 'deep': 60.5, 'dense': 65.8, 'bnfree': 36.8},
    'GHN-1': {'test': 51.4, 'wide': 43.1, 'deep': 48.3, 'dense': 51.8, 'bnfree': 13.7},
    'MLP': {'test': 42.2, 'wide': 22.3, 'deep': 37.9, 'dense': 44.8, 'bnfree': 23.9},
    'He init': {'test': 10.0, 'wide': 10.0, 'deep': 10.0, 'dense': 10.0, 'bnfree': 10.0},
    'SGD 1 epoch': {'test': 46.1, 'wide': 47.2, 'deep': 34.2, 'dense': 45.3, 'bnfree': 18.0},
    # Table 5 / 8 ablations of GHN-2
    'No normalization': {'test': 62.6, 'wide': 52.3, 'deep': 59.5, 'dense': 62.3, 'bnfree': 14.4},
    'No virtual edges': {'test': 61.5, 'wide': 58.2, 'deep': 55.0, 'dense': 61.5, 'bnfree': 40.8},
    'b_m = 1': {'test': 54.3, 'wide': 53.1, 'deep': 51.9, 'dense': 53.4, 'bnfree': 31.7},
}
# ResNet-50 / ViT columns of the same tables.
PAPER_CIFAR10_PREDEFINED = {'GHN-2': (58.6, 11.4), 'GHN-1': (19.2, 18.2), 'MLP': (17.7, 10.0),
                            'SGD 1 epoch': (61.8, 34.5), 'No normalization': (58.3, 17.0),
                            'No virtual edges': (41.9, 12.1), 'b_m = 1': (50.6, 17.8)}


# The GHNs drawn as lines in the --plot-sgd figure when the results hold many (all are printed); the shipped
# one solid and in red, the others dashed in matplotlib's colour cycle without its red (C3).
SHIPPED = 'GHN-2 (18157+2000 nf25+1000 nf50 steps)'
PLOT_METHODS = (SHIPPED, 'GHN-2 (18157+2000 nf25 steps)', 'GHN-2 (16600 steps)', 'GHN-2 (9800 steps)',
                'GHN-2 (6000 steps)', 'GHN-2 (1148 steps)', 'GHN-2 (488 steps)', 'GHN-2 (148 steps, CPU)',
                'MLP (148 steps)', 'b_m = 1, 8x longer (1184 steps)', 'He init')
PLOT_LABELS = {SHIPPED: 'GHN-2, shipped (18,157 + 2,000 + 1,000 steps)'}
OTHER_COLORS = [f'C{i}' for i in range(10) if i != 3]


def architectures(split: str, n: int, root: str) -> List[Tuple[str, torch.nn.Module]]:
    if split == 'predefined':
        return [('ResNet-50', predefined.resnet50()), ('ViT', predefined.vit())]
    ds = DeepNets1M(root, split, num_nets=n, log=False)
    return [(str(i), ds.network(i)) for i in range(len(ds))]


def load(path: str) -> Dict[str, Any]:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {'protocol': {}, 'records': []}


def _record_key(r: Dict[str, Any]) -> tuple:
    return r['method'], r['split'], r['net'], r.get('max_batches'), r.get('sgd_steps')


def save(results: Dict[str, Any], path: str, new: List[Dict[str, Any]]) -> None:
    """Adds this run's ``new`` records to the file at ``path``, merging under a lock with what is there now.

    Another run may be writing the same file (a background evaluation of the whole table beside a quick one):
    rewriting the file from this process's copy would drop the records the other wrote since this one
    started. So the file is re-read under an exclusive lock, records it lacks are appended, and it is
    replaced atomically; ``results`` then holds the merged records (the other run's too)."""
    import fcntl
    with open(path + '.lock', 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        on_disk = load(path)
        have = {_record_key(r) for r in on_disk['records']}
        on_disk['records'] += [r for r in new if _record_key(r) not in have]
        on_disk['protocol'] = results['protocol']
        tmp = f'{path}.{os.getpid()}.tmp'
        with open(tmp, 'w') as f:
            json.dump(on_disk, f, indent=1)
        os.replace(tmp, path)
    results['records'] = on_disk['records']


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--ghn', nargs='*', default=[], help='NAME=PATH of GHN checkpoints')
    p.add_argument('--splits', nargs='*', default=['test', 'wide', 'deep', 'dense', 'bnfree', 'predefined'],
                   help='splits to evaluate (none: only print the tables of --out, and --plot-sgd)')
    p.add_argument('--num-nets', type=int, default=100, help='ID test architectures')
    p.add_argument('--ood-nets', type=int, default=20, help='architectures per OOD split')
    p.add_argument('--baselines', nargs='*', default=['he'],
                   help='he; sgdN: N SGD steps from He init (sgd100, sgd500, ...); sgd1ep: one epoch. All SGD '
                        'budgets of a network come from one run')
    p.add_argument('--sgd-nets', type=int, default=10, help='architectures per split for SGD baselines')
    p.add_argument('--max-batches', type=int, default=None)
    p.add_argument('--root', default='data/deepnets1m')
    p.add_argument('--out', default='benchmarks/results_fmnist.json')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--plot-sgd', default=None, metavar='PNG',
                   help='plot ID-test top-1 against SGD steps, with each GHN as the SGD budget it is worth')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore', message='.*have no node.*')

    results = load(args.out)
    results['protocol'] = {'data': 'Fashion-MNIST test (10k) as 3x32x32', 'bn': 'batch statistics, batch 64',
                           'max_batches': args.max_batches}
    # A record counts as done only under the same test-set size: results of another --max-batches are kept
    # in the file but neither skipped nor mixed into this run's table.
    done = {(r['method'], r['split'], r['net']) for r in results['records']
            if r.get('max_batches') == args.max_batches}
    loaders = image_loaders('fashion_mnist', split='test', batch_size=96, test_batch_size=64)
    ghns = {}
    for spec in args.ghn:
        name, path = spec.rsplit('=', 1)  # names may hold '=' ('b_m = 1'), checkpoint paths rarely do
        used = {r['checkpoint'] for r in results['records'] if r['method'] == name and 'checkpoint' in r}
        if used and used != {path}:
            raise SystemExit(f'{args.out} has results of {name!r} from {sorted(used)}, not {path}: '
                             'give this checkpoint another name')
        ghns[name] = (GHN.load(path), path)
    baselines, sgd_steps = [], {}
    for b in args.baselines:
        if b == 'he':
            baselines.append('He init')
        elif b == 'sgd1ep':
            baselines.append('SGD 1 epoch')
            sgd_steps['SGD 1 epoch'] = len(loaders.train)
        elif b.startswith('sgd') and b[3:].isdigit() and int(b[3:]) > 0:
            baselines.append(f'SGD {int(b[3:])} steps')
            sgd_steps[baselines[-1]] = int(b[3:])
        else:
            raise SystemExit(f"error: unknown baseline {b!r} (he, sgdN for N steps, sgd1ep)")

    def record(method, split, net_name, net, seconds, params=None, **extra):
        acc = evaluate(net, loaders.eval, topk=(1, 5), bn_mode='batch', params=params,
                       max_batches=args.max_batches)
        rec = {'method': method, 'split': split, 'net': net_name, 'top1': acc['top1'], 'top5': acc['top5'],
               'seconds': seconds, 'num_params': sum(q.numel() for q in net.parameters()),
               'max_batches': args.max_batches, **extra}
        save(results, args.out, [rec])
        print(json.dumps(rec), flush=True)

    for split in args.splits:
        n = args.num_nets if split == 'test' else args.ood_nets
        for net_name, net in architectures(split, n, args.root):
            for name, (ghn, path) in ghns.items():
                if (name, split, net_name) not in done:
                    t = time.perf_counter()
                    with torch.no_grad():
                        params = ghn.predict_parameters(from_module(net, warn=False))[0]
                    record(name, split, net_name, net, time.perf_counter() - t, params, checkpoint=path)
            if 'He init' in baselines and ('He init', split, net_name) not in done:
                he_init_(net, seed=0)
                record('He init', split, net_name, net, 0.0)
            todo = {m: sgd_steps[m] for m in baselines if m in sgd_steps and (m, split, net_name) not in done}
            if todo and (split == 'predefined' or int(net_name) < args.sgd_nets):
                sgd_baselines(net, todo, loaders.train, lambda m, s: record(m, split, net_name, net, s,
                                                                          schedule='constant',
                                                                          sgd_steps=sgd_steps[m]))

    print_tables(results, args.max_batches)
    if args.plot_sgd:
        sgd_equivalents(results, args.max_batches, args.plot_sgd)


def sgd_equivalents(results: Dict[str, Any], max_batches: Optional[int], path: str) -> None:
    """What predicted parameters are worth in SGD steps (the paper's "GHN-2 ~ 2500 SGD iterations"): for
    every ID-test network with an SGD curve (constant-LR runs), the step count at which the curve reaches
    each method's accuracy on the same network, interpolated linearly in log-steps; printed and plotted."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    recs = [r for r in results['records'] if r['split'] == 'test' and r.get('max_batches') == max_batches]
    curves: Dict[str, Dict[int, float]] = {}
    for r in recs:
        if r.get('schedule') == 'constant':
            curves.setdefault(r['net'], {})[r['sgd_steps']] = r['top1']
    if not curves:
        print('no constant-LR SGD curves in the results: run with --baselines sgd10 ... sgd1ep first')
        return
    others = [m for m in dict.fromkeys(r['method'] for r in recs) if not m.startswith('SGD')]
    fig, ax = plt.subplots(figsize=(9.6, 4))
    xs = sorted({k for c in curves.values() for k in c})
    mean = [np.mean([c[k] for c in curves.values() if k in c]) for k in xs]
    for net, c in sorted(curves.items()):
        ks = sorted(c)
        ax.plot(ks, [c[k] for k in ks], color='0.75', lw=0.8)
    ax.plot(xs, mean, 'k-o', ms=3, label=f'SGD from He init, lr 0.025 (mean of {len(curves)} nets)')
    print(f'\nSGD steps each method is worth, on the {len(curves)} ID-test nets with an SGD curve '
          '(">" = above the whole curve, "<" = below it):')
    drawn = 0
    for m in others:
        worth, accs = [], []
        for net, c in sorted(curves.items()):
            acc = next((r['top1'] for r in recs if r['method'] == m and r['net'] == net), None)
            if acc is None:
                continue
            accs.append(acc)
            ks = sorted(c)
            ys = np.maximum.accumulate([c[x] for x in ks])  # steps to first reach an accuracy
            if acc > ys[-1]:
                worth.append(f'>{ks[-1]}')
            elif acc < ys[0]:
                worth.append(f'<{ks[0]}')
            else:
                worth.append(f'{np.exp(np.interp(acc, ys, np.log(ks))):.0f}')
        if accs:
            print(f'  {m:<34} top-1 {np.mean(accs):5.1f}  worth {", ".join(worth)} steps')
            if m in PLOT_METHODS or len(others) <= 4:
                if m == SHIPPED:
                    style = dict(ls='-', lw=2.0, color='tab:red')
                else:
                    style = dict(ls='--', lw=1.2, color=OTHER_COLORS[drawn % len(OTHER_COLORS)])
                    drawn += 1
                ax.axhline(np.mean(accs), **style,
                           label=f'{PLOT_LABELS.get(m, m)}: {np.mean(accs):.1f}% (= {", ".join(worth)} steps)')
    ax.set_xscale('log')
    ax.set(xlabel='SGD steps (batches of 96)', ylabel='top-1 (%)',
           title='Predicted parameters vs SGD from scratch, ID-test')
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1))  # outside: the lines cross the curve
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'saved {path}')


def sgd_baselines(net: torch.nn.Module, budgets: Dict[str, int], train_loader, record) -> None:
    """The paper's SGD rows (Tables 3, 4) are points of one from-scratch run at lr 0.025 (its 50-epoch
    cosine schedule is still at ~0.025 in epoch 1): one constant-LR run of the largest budget, evaluated at
    every smaller one on the way, gives them all for the cost of the longest."""
    he_init_(net, seed=0)
    at: Dict[int, List[str]] = {}
    for method, steps in budgets.items():
        at.setdefault(steps, []).append(method)
    t0 = time.perf_counter()
    evaluating = 0.0  # the seconds of a record are training time only

    def callback(t: int) -> None:
        nonlocal evaluating
        if t in at:
            t1 = time.perf_counter()
            with torch.random.fork_rng():  # evaluating must not change the rest of the run
                for method in at[t]:
                    record(method, t1 - t0 - evaluating)
            evaluating += time.perf_counter() - t1

    train_sgd(net, train_loader, max(at), schedule='constant', seed=0, callback=callback)


def print_tables(results: Dict[str, Any], max_batches: Optional[int] = None) -> None:
    by: Dict[Tuple[str, str], List[float]] = {}
    nets: Dict[Tuple[str, str], Dict[str, float]] = {}
    for r in results['records']:
        if r.get('max_batches') != max_batches:
            continue
        by.setdefault((r['method'], r['split']), []).append(r['top1'])
        nets.setdefault((r['method'], r['split']), {})[r['net']] = r['top1']
    methods = list(dict.fromkeys(m for m, _ in by))
    splits = list(dict.fromkeys(s for _, s in by))
    print(f"\n{'method':<30}" + ''.join(f'{s:>22}' for s in splits))
    for m in methods:
        key = m.split(' (')[0]  # 'GHN-1 (148 steps)' is compared with the paper's 'GHN-1'
        cells = []
        for s in splits:
            if (m, s) not in by:
                cells.append(f"{'-':>22}")
                continue
            if s == 'predefined':  # ResNet-50 / ViT, one network each
                r50, vit = nets[(m, s)].get('ResNet-50', float('nan')), nets[(m, s)].get('ViT', float('nan'))
                paper = PAPER_CIFAR10_PREDEFINED.get(key)
                ref = f' [{paper[0]:.0f}/{paper[1]:.0f}]' if paper else ''
                cells.append(f'{r50:.1f} / {vit:.1f}{ref}'.rjust(22))
                continue
            v = by[(m, s)]
            mean, sem = mean_sem(v) if len(v) > 1 else (v[0], float('nan'))
            paper = PAPER_CIFAR10.get(key, {}).get(s)
            ref = f' [{paper:.1f}]' if paper is not None else ''
            cells.append(f'{mean:6.1f}±{sem:4.1f} (n={len(v)}){ref}'.rjust(22))
        print(f'{m:<30}' + ''.join(cells))
    print('[..] = paper, CIFAR-10 (Tables 3, 5 and 8), for reference.')

if __name__ == '__main__':
    main()

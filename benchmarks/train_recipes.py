"""Training recipes at an equal CPU budget: ID-test accuracy of the GHN after the same core-hours.

    python benchmarks/train_recipes.py --budgets 0.15 0.3 --eval-nets 20 \\
        --candidate "paper=--recipe paper --archs 100000" \\
        --candidate "16 images=--recipe paper --archs 100000 --batch-size 16" [...] \\
        [--out benchmarks/results_train_recipes.json] [--plot benchmarks/train_recipes.png]

Each candidate is a ``pyg-ghn train`` run (one thread, seed 1111, ``WORK/NAME/trainer.pt``) stopped at each
budget by ``--cpu-hours`` (the process's CPU time, data preparation included, so a busy machine does not
change the budget), exported, and evaluated on the first ``--eval-nets`` DeepNets-1M ID-test networks with
``benchmarks/reproduce.py``'s protocol (BN on test-batch statistics, the full Fashion-MNIST test set unless
``--max-batches``). Everything is resumable: a budget already trained or evaluated is skipped, so the script
can be stopped and run again. The table has, per candidate and budget: steps taken, core-hours, seconds per
step (CPU) and ID-test top-1 mean ± s.e.m.; the plot is accuracy against core-hours.

The same script draws the curve of a long run: give one candidate and growing budgets, e.g.
``--work training --candidate "ghn2_cpu=--recipe cpu" --compact --budgets 0.3 0.6 1 1.5 2 3 4`` continues
``training/ghn2_cpu/trainer.pt`` to each budget in turn (training/README.md).
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from typing import Any, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd: List[str]) -> None:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': REPO}
    print('$', ' '.join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env=env)


def _load(path: str) -> Dict[str, Any]:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {'runs': {}}


def _save(obj: Dict[str, Any], path: str) -> None:
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _trainer_state(ckpt: str) -> Dict[str, Any]:
    from pyg_ghn.nn.checkpoint import read_checkpoint
    return read_checkpoint(ckpt)['state']


def train_and_evaluate(name: str, flags: str, budgets: List[float], a: argparse.Namespace,
                       results: Dict[str, Any]) -> None:
    safe = ''.join(c if c.isalnum() else '_' for c in name)
    work = os.path.join(a.work, safe)
    ckpt = os.path.join(work, 'trainer.pt')
    run = results['runs'].setdefault(name, {'flags': flags, 'points': {}})
    if run['flags'] != flags:
        raise SystemExit(f'error: {name!r} was run with other flags ({run["flags"]!r}); give it another name')
    py = sys.executable
    for budget in budgets:
        key = f'{budget:g}'
        point = run['points'].get(key, {})
        ghn_path = os.path.join(work, f'ghn_{key}h.pt')
        if 'steps' not in point:
            if not os.path.exists(ckpt):
                _run([py, '-m', 'pyg_ghn.cli', 'train', *shlex.split(flags), '--threads', '1', '--ckpt', ckpt,
                      '--arch-root', a.arch_root, '--cpu-hours', key, '--ckpt-every', '50']
                     + (['--compact'] if a.compact else []))
            else:
                _run([py, '-m', 'pyg_ghn.cli', 'continue', ckpt, '--threads', '1', '--arch-root', a.arch_root,
                      '--cpu-hours', key] + (['--compact'] if a.compact else []))
            _run([py, '-m', 'pyg_ghn.cli', 'export', '--ckpt', ckpt, '--out', ghn_path])
            state = _trainer_state(ckpt)
            point = {'steps': state['global_step'], 'cpu_hours': state['cpu_seconds'] / 3600}
            run['points'][key] = point
            _save(results, a.out)
        if 'top1' not in point:
            evals = os.path.join(work, 'eval.json')
            label = f'{name} @ {key}h'
            _run([py, os.path.join('benchmarks', 'reproduce.py'), '--ghn', f'{label}={ghn_path}', '--splits', 'test',
                  '--num-nets', str(a.eval_nets), '--baselines', '--out', evals]
                 + (['--max-batches', str(a.max_batches)] if a.max_batches else []))
            with open(evals) as f:
                recs = [r for r in json.load(f)['records'] if r['method'] == label and r['split'] == 'test']
            top1 = [r['top1'] for r in recs][:a.eval_nets]
            point['top1'] = statistics.mean(top1)
            point['sem'] = statistics.stdev(top1) / len(top1) ** 0.5 if len(top1) > 1 else 0.
            point['n'] = len(top1)
            _save(results, a.out)


def table(results: Dict[str, Any]) -> str:
    lines = [f'{"candidate":<28}{"core-h":>8}{"steps":>7}{"CPU s/step":>11}{"ID top-1":>14}']
    for name, run in results['runs'].items():
        for key, p in sorted(run['points'].items(), key=lambda kv: float(kv[0])):
            acc = f'{p["top1"]:.1f} ± {p["sem"]:.1f}' if 'top1' in p else '-'
            lines.append(f'{name:<28}{p["cpu_hours"]:>8.2f}{p["steps"]:>7}'
                         f'{3600 * p["cpu_hours"] / max(p["steps"], 1):>11.2f}{acc:>14}')
    return '\n'.join(lines)


def plot(results: Dict[str, Any], path: str, reference: float = None) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.8))
    curves = {name: sorted((p['cpu_hours'], p['top1'], p['sem']) for p in run['points'].values() if 'top1' in p)
              for name, run in results['runs'].items()}
    for name, pts in curves.items():
        # a run continued under another name (a candidate that became the long run) is drawn once, as the
        # longer curve: its points would hide under it
        if any(o != name and len(q) > len(pts) and set(pts) <= set(q) for o, q in curves.items()):
            continue
        if pts:
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, marker='o', capsize=3, label=name)
    if reference is not None:
        ax.axhline(reference, ls=':', c='gray')
        ax.annotate(f'reference: {reference:g}%', (0, reference), xycoords=('axes fraction', 'data'),
                    va='bottom', fontsize=8, color='gray')
    ax.axhline(10, ls='--', lw=0.8, c='lightgray')  # chance on 10 classes
    ax.set(xlabel='training cost (CPU core-hours)', ylabel='ID-test top-1 of predicted params (%)')
    ax.legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--candidate', action='append', default=[], metavar='NAME=FLAGS',
                   help='a name and the pyg-ghn train flags of a candidate recipe')
    p.add_argument('--budgets', type=float, nargs='+', default=[0.15, 0.3], help='core-hours')
    p.add_argument('--eval-nets', type=int, default=20)
    p.add_argument('--max-batches', type=int, default=None)
    p.add_argument('--arch-root', default='data/deepnets1m')
    p.add_argument('--work', default='runs/recipes', help="a candidate's checkpoint is WORK/NAME/trainer.pt")
    p.add_argument('--compact', action='store_true', help='compact checkpoints (a run whose state is committed)')
    p.add_argument('--out', default='benchmarks/results_train_recipes.json')
    p.add_argument('--plot', default=None)
    p.add_argument('--reference', type=float, default=None, help='an accuracy drawn as a line (e.g. 54.6)')
    p.add_argument('--with', dest='others', nargs='+', default=[], metavar='JSON',
                   help="other runs' results (e.g. training/ghn2_cpu/curve.json) shown in the table and plot")
    a = p.parse_args()
    results = _load(a.out)
    for spec in a.candidate:
        name, _, flags = spec.partition('=')
        train_and_evaluate(name, flags, sorted(a.budgets), a, results)
    shown = {'runs': dict(results['runs'])}
    for path in a.others:
        for name, run in _load(path)['runs'].items():
            if name in shown['runs']:
                raise SystemExit(f'error: a run named {name!r} is in {path} and in another results file')
            shown['runs'][name] = run
    print(table(shown))
    if a.plot:
        plot(shown, a.plot, a.reference)


if __name__ == '__main__':
    main()

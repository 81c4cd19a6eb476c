"""Table 5 at equal steps: each arm against the long GHN-2 run on the same networks, paired.

    python benchmarks/table5_arms.py [--base training/ghn2_cpu] [--arms training/table5/mlp ...] \\
        [--plot benchmarks/table5_arms.png]

An arm (``training/table5/NAME``) is the CPU recipe with one change and the long run's seed, so at every step
it has seen the same architectures and images as the long run (``training/README.md``). Its evaluations
(``NAME/eval.json``, records named ``"<name> @ <N> steps"`` by ``benchmarks/reproduce.py --ghn``) are matched
to the long run's curve point taken at the same step ``N`` (``BASE/curve.json`` gives each point's steps;
its records in ``BASE/eval.json`` are named ``"<base> @ <budget>h"``). Both sides must be evaluated on the
same networks with the same ``max_batches``; a point without its twin is listed as unmatched, not guessed.

Per matched point: the arm's and GHN-2's ID-test top-1 (mean ± s.e.m. over networks) and the paired
difference GHN-2 − arm (mean ± s.e.m. of the per-network differences, and on how many networks GHN-2 is
ahead). Pairing removes the spread between networks, which is most of each mean's s.e.m.
"""
import argparse
import glob
import json
import os
import re
import sys
from typing import Dict, List, Optional, Tuple

# The pairing helpers live beside this script (benchmarks/paired.py); benchmarks/ is not a package.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired import by_net as _by_net, paired, records as _records  # noqa: E402

_ARM_LABEL = re.compile(r'^(?P<name>.+) @ (?P<steps>\d+) steps$')


def base_points(base: str) -> Dict[int, Dict[str, Tuple[float, Optional[int]]]]:
    """The long run's per-network results, keyed by the step of each curve point."""
    name = os.path.basename(os.path.normpath(base))
    with open(os.path.join(base, 'curve.json')) as f:
        points = json.load(f)['runs'][name]['points']
    records = _records(os.path.join(base, 'eval.json'))
    out = {}
    for budget, point in points.items():
        nets = _by_net(records, f'{name} @ {budget}h')
        if 'steps' in point and nets:
            out[int(point['steps'])] = nets
    return out


def compare(base: str, arms: List[str]) -> Tuple[List[dict], List[str]]:
    """Rows of matched (arm, step) points and a list of unmatched ones."""
    ghn2 = base_points(base)
    rows, unmatched = [], []
    for arm in arms:
        path = os.path.join(arm, 'eval.json')
        if not os.path.exists(path):
            unmatched.append(f'{arm}: no eval.json')
            continue
        records = _records(path)
        labels = sorted({r['method'] for r in records if _ARM_LABEL.match(r['method'])},
                        key=lambda m: int(_ARM_LABEL.match(m)['steps']))
        for label in labels:
            steps = int(_ARM_LABEL.match(label)['steps'])
            arm_nets = _by_net(records, label)
            if steps not in ghn2:
                unmatched.append(f'{label}: the long run has no curve point at step {steps}')
                continue
            try:
                r = paired(arm_nets, ghn2[steps])
            except ValueError:
                unmatched.append(f'{label}: fewer than 2 networks evaluated like the long run')
                continue
            rows.append({'arm': os.path.basename(os.path.normpath(arm)), 'steps': steps, 'n': r['n'],
                         'arm_top1': r['a'], 'ghn2_top1': r['b'], 'diff': r['diff'], 'ahead': r['ahead']})
    return rows, unmatched


def table(rows: List[dict]) -> str:
    lines = ['| arm | steps | n | arm top-1 | GHN-2 top-1 | GHN-2 − arm (paired) | GHN-2 ahead on |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['arm']} | {r['steps']:,} | {r['n']} | {r['arm_top1'][0]:.1f} ± {r['arm_top1'][1]:.1f} "
                     f"| {r['ghn2_top1'][0]:.1f} ± {r['ghn2_top1'][1]:.1f} "
                     f"| {r['diff'][0]:+.1f} ± {r['diff'][1]:.1f} | {r['ahead']} of {r['n']} |")
    return '\n'.join(lines)


def plot(base: str, rows: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    name = os.path.basename(os.path.normpath(base))
    with open(os.path.join(base, 'curve.json')) as f:
        points = sorted((p['steps'], p['top1'], p.get('sem', 0.)) for p in
                        json.load(f)['runs'][name]['points'].values() if 'top1' in p)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker='o',
                color='black', label=f'GHN-2 ({name})', capsize=2)
    # GHN-2 is drawn in black so that no arm shares its colour, however many arms there are
    for i, arm in enumerate(sorted({r['arm'] for r in rows})):
        pts = sorted((r['steps'], *r['arm_top1']) for r in rows if r['arm'] == arm)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker='s',
                    color=f'C{i}', label=arm, capsize=2)
    ax.set_xscale('log')
    ax.set_xlabel('training steps (same architectures and images at each step)')
    ax.set_ylabel('ID-test top-1 (%), 20 networks')
    ax.set_title('Table 5 at equal steps, Fashion-MNIST')
    ax.grid(alpha=.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'plot: {path}')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--base', default='training/ghn2_cpu', help='the long GHN-2 run (curve.json, eval.json)')
    p.add_argument('--arms', nargs='*', default=None, help='arm folders (default: training/table5/*)')
    p.add_argument('--plot', default=None, help='draw accuracy against steps here')
    a = p.parse_args()
    arms = a.arms if a.arms is not None else sorted(d for d in glob.glob('training/table5/*') if os.path.isdir(d))
    rows, unmatched = compare(a.base, arms)
    print(table(rows))
    for u in unmatched:
        print(f'unmatched: {u}')
    if a.plot:
        plot(a.base, rows, a.plot)


if __name__ == '__main__':
    main()

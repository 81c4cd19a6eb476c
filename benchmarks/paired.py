"""Two methods on the same networks, paired: the numbers quoted as "paired ± s.e.m." in the READMEs.

    python benchmarks/paired.py FILE_A METHOD_A FILE_B METHOD_B [--split test]

``FILE_*`` are ``benchmarks/reproduce.py`` result files (``{"records": [...]}``, one record per method,
split and network); ``METHOD_*`` a record's ``method`` (the label given to ``reproduce.py --ghn``, or a
baseline such as ``SGD-100``). Only networks that both methods were evaluated on, with the same
``max_batches`` (the same test images), are paired; how many were left out is printed, never guessed.

Prints n, each method's top-1 (mean ± s.e.m. over networks), the paired difference B − A (mean ± s.e.m. of
the per-network differences) and on how many networks B is ahead. Pairing removes the spread between
networks, which is most of each mean's s.e.m. Listing a file's methods: ``--list FILE``.
"""
import argparse
import json
import statistics
import sys
from typing import Dict, List, Optional, Tuple

__all__ = ['records', 'by_net', 'mean_sem', 'paired']


def records(path: str) -> List[dict]:
    with open(path) as f:
        return json.load(f)['records']


def by_net(recs: List[dict], method: str, split: str = 'test') -> Dict[str, Tuple[float, Optional[int]]]:
    """``{net: (top1, max_batches)}`` of one method on one split."""
    return {r['net']: (r['top1'], r.get('max_batches')) for r in recs
            if r['method'] == method and r['split'] == split}


def mean_sem(values: List[float]) -> Tuple[float, float]:
    mean = statistics.mean(values)
    return mean, (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.)


def paired(a: Dict[str, Tuple[float, Optional[int]]], b: Dict[str, Tuple[float, Optional[int]]]) -> dict:
    """Pairs two :func:`by_net` results on the networks both hold with equal ``max_batches``.

    Returns ``n``, ``a``/``b`` (mean, s.e.m.), ``diff`` (mean, s.e.m. of b − a), ``ahead`` (networks where
    b > a), ``nets`` (their names, in order) and ``left_out`` (networks of either side not paired)."""
    nets = sorted(set(a) & set(b), key=lambda n: (len(n), n))
    nets = [n for n in nets if a[n][1] == b[n][1]]
    if len(nets) < 2:
        raise ValueError(f'fewer than 2 networks evaluated the same way by both methods ({len(nets)})')
    x, y = [a[n][0] for n in nets], [b[n][0] for n in nets]
    diff = [v - u for u, v in zip(x, y)]
    return {'n': len(nets), 'a': mean_sem(x), 'b': mean_sem(y), 'diff': mean_sem(diff),
            'ahead': sum(d > 0 for d in diff), 'nets': nets, 'left_out': len(set(a) | set(b)) - len(nets)}


def _methods(recs: List[dict]) -> Dict[Tuple[str, str], int]:
    out: Dict[Tuple[str, str], int] = {}
    for r in recs:
        out[(r['method'], r['split'])] = out.get((r['method'], r['split']), 0) + 1
    return out


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('args', nargs='*', metavar='FILE_A METHOD_A FILE_B METHOD_B')
    p.add_argument('--split', default='test', help='the split both methods are compared on (default: test)')
    p.add_argument('--list', default=None, metavar='FILE', help="list a file's methods and splits, and stop")
    a = p.parse_args(argv)
    if a.list:
        for (method, split), n in sorted(_methods(records(a.list)).items()):
            print(f'{split:8s} {n:4d} nets  {method}')
        return
    if len(a.args) != 4:
        p.error('expected FILE_A METHOD_A FILE_B METHOD_B')
    file_a, method_a, file_b, method_b = a.args
    sides = []
    for path, method in ((file_a, method_a), (file_b, method_b)):
        nets = by_net(records(path), method, a.split)
        if not nets:
            known = sorted({m for m, s in _methods(records(path)) if s == a.split})
            sys.exit(f'error: no {a.split!r} records of method {method!r} in {path}; '
                     f'its methods on that split: {known}')
        sides.append(nets)
    try:
        r = paired(*sides)
    except ValueError as e:
        sys.exit(f'error: {e}')
    print(f'split {a.split}: {r["n"]} networks paired ({r["left_out"]} left out: on one side only or '
          f'evaluated on different images)')
    print(f'A  {method_a}: {r["a"][0]:.2f} ± {r["a"][1]:.2f}')
    print(f'B  {method_b}: {r["b"][0]:.2f} ± {r["b"][1]:.2f}')
    print(f'B − A (paired): {r["diff"][0]:+.2f} ± {r["diff"][1]:.2f}, B ahead on {r["ahead"]} of {r["n"]}')


if __name__ == '__main__':
    main()

"""How well can any predictor rank networks by our measured properties? Kendall's τ between two measurements.

    python -m pyg_ghn.properties.measure --split test --num-nets 24 --seed 1000 \\
        --out data/properties_test_seed1000.json                       # the same networks, other seeds
    python benchmarks/property_ceiling.py data/properties_test.json data/properties_test_seed1000.json

The property-prediction protocol scores a predictor by Kendall's τ against one measurement per network
(``data/properties_test.json``: 300 SGD steps from one seed). That measurement is itself noisy: training the
same network from another seed gives another accuracy and another convergence step, and a timing is one of
many. Measuring the same networks again with other seeds (``--seed``: network ``i`` trains with ``seed + i``)
and ranking one measurement by the other gives τ_repeat: what a predictor that knew each network's outcome
under one seed would score against the other. A predictor of each network's *expected* value can do
somewhat better; under a bivariate-normal model (Greiner's relation τ = (2/π)·arcsin ρ, and ρ(true, measured)
= √ρ(measured, measured)) its ceiling is τ_max = (2/π)·arcsin(√sin(π·τ_repeat/2)). Both are printed, with a
bootstrap interval over networks, since a few dozen networks leave τ uncertain by ~0.1.
"""
import argparse
import json
import math
from typing import Dict, List, Tuple

import numpy as np

from pyg_ghn.properties import PROPERTIES
from pyg_ghn.properties.evaluator import kendall_tau


def _by_net(path: str) -> Tuple[Dict[Tuple[str, int], dict], dict]:
    with open(path) as f:
        d = json.load(f)
    return {(r['split'], r['idx']): r for r in d['results']}, d['config']


def tau_ceiling(tau_repeat: float) -> float:
    """τ of the expected value against one measurement, from τ between two measurements (bivariate normal)."""
    rho = math.sin(math.pi * tau_repeat / 2)
    return 2 / math.pi * math.asin(math.sqrt(rho)) if rho >= 0 else float('nan')


def repeat_taus(a: Dict, b: Dict, properties=PROPERTIES, boot: int = 1000, seed: int = 0) -> List[dict]:
    keys = sorted(set(a) & set(b))
    if len(keys) < 3:
        raise SystemExit(f'error: only {len(keys)} networks measured in both files; need 3 or more')
    rng = np.random.default_rng(seed)
    rows = []
    for prop in properties:
        x = np.array([a[k][prop] for k in keys], dtype=float)
        y = np.array([b[k][prop] for k in keys], dtype=float)
        tau = kendall_tau(x, y)
        samples = []
        for _ in range(boot):
            i = rng.integers(0, len(keys), len(keys))
            t = kendall_tau(x[i], y[i])
            if not math.isnan(t):
                samples.append(t)
        lo, hi = np.percentile(samples, [2.5, 97.5])
        rows.append({'property': prop, 'n': len(keys), 'tau_repeat': tau, 'ci': (float(lo), float(hi)),
                     'tau_max': tau_ceiling(tau), 'mean_abs_diff': float(np.mean(np.abs(x - y)))})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('first', help='properties file (pyg_ghn.properties.measure)')
    p.add_argument('second', help='the same networks measured with other seeds')
    p.add_argument('--boot', type=int, default=1000, help='bootstrap resamples over networks')
    a = p.parse_args()
    first, cfg1 = _by_net(a.first)
    second, cfg2 = _by_net(a.second)
    differ = sorted(k for k in set(cfg1) | set(cfg2) if k != 'seed' and cfg1.get(k) != cfg2.get(k))
    if differ:
        raise SystemExit(f'error: the two files were measured with other settings besides the seed: {differ}')
    rows = repeat_taus(first, second, boot=a.boot)
    print(f'seeds {cfg1.get("seed")} and {cfg2.get("seed")}, {rows[0]["n"]} networks measured in both')
    print('| property | τ between the two measurements (95% bootstrap) | implied ceiling τ_max | mean |difference| |')
    print('|---|---|---|---|')
    for r in rows:
        print(f"| {r['property']} | {r['tau_repeat']:.3f} ({r['ci'][0]:.2f} – {r['ci'][1]:.2f}) | "
              f"{r['tau_max']:.3f} | {r['mean_abs_diff']:.2f} |")


if __name__ == '__main__':
    main()

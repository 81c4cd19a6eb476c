r"""Property prediction of neural architectures (paper §5.2, Fig. 4; appendix C.2.3).

Ground-truth properties of DeepNets-1M val and test architectures (clean and noisy Fashion-MNIST accuracy,
inference time, convergence speed) -> GHN graph embeddings -> RBF SVR tuned by 5-fold cross-validation on
the val architectures -> Kendall's tau on the test architectures, over 5 seeds; plus GNN regressors
trained end to end on the graphs (GIN, a directed GCN as the Neural Predictor, the GHN-2 layer from
scratch). Prints a table and saves ``results.json`` and a Fig. 4-like ``property_prediction.png``.

Properties are measured first (a long job; see ``python -m pyg_ghn.properties.measure --help``)::

    python -m pyg_ghn.properties.measure --split val --num-nets 100 --out data/properties_val.json
    python -m pyg_ghn.properties.measure --split test --num-nets 100 --out data/properties_test.json
    python examples/property_prediction.py --properties data/properties_val.json data/properties_test.json \
        --ghn ghn2=runs/ghn2/ghn.pt --ghn ghn1=runs/ghn1/ghn.pt --ghn mlp=runs/mlp/ghn.pt --workers 2

``--tiny`` measures a few networks with a few SGD steps itself (unless ``--properties`` is given) and
shrinks every setting, to check the pipeline end to end in about a minute.
"""
import argparse
import json
import multiprocessing
import os
import os.path as osp
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import torch

from pyg_ghn.properties import (PROPERTIES, REGRESSORS, SVR_GRID, ArchPropertyDataset, Evaluator, MeasureConfig,
                                embed_graphs, fit_and_predict, load_ghns, measure_split, parse_ghn_specs,
                                round_predictions, svr_protocol, tau_summary)

BASELINE_LABELS = {'gin': 'GIN', 'dgcn': 'Directed GCN (NeuPred-like)', 'ghn2conv': 'GHN-2 layer (from scratch)'}
LABELS = {'clean_acc': 'Clean acc.', 'noise_acc': 'Noisy acc.', 'time': 'Inference time',
          'converge_time': 'Convergence'}


def tiny_properties(out_dir, n_val, n_test, seed):
    cfg = MeasureConfig(C=8, steps=6, batch_size=16, num_test=64, test_batch_size=32, time_batch=8, time_reps=2,
                        threshold=0.15, window=2, seed=seed)
    paths = []
    for split, n in (('val', n_val), ('test', n_test)):
        path = osp.join(out_dir, f'properties_{split}.json')
        measure_split(split, n, path, cfg, progress=False)
        paths.append(path)
    return paths


def plot(results, methods, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    props = list(PROPERTIES)
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(props), 4.2))
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        means = [results[m][p]['mean'] for p in props]
        stds = [results[m][p]['std'] for p in props]
        ax.bar(np.arange(len(props)) + (k - (len(methods) - 1) / 2) * width, np.nan_to_num(means), width,
               yerr=np.nan_to_num(stds), capsize=3, label=m)
    ax.set_xticks(np.arange(len(props)), [LABELS.get(p, p) for p in props])
    ax.set_ylabel("Kendall's tau (test architectures)")
    ax.axhline(0, color='k', lw=0.5)
    # below the axes: inside, it hides the bars it explains
    ax.legend(fontsize=8, ncol=min(4, len(methods)), loc='upper center', bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.set_title('Property prediction (mean and std over seeds)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--properties', nargs='+', help='property files of pyg_ghn.properties.measure')
    p.add_argument('--ghn', action='append', help="NAME=PATH or PATH (repeatable); PATH 'random' = a random GHN "
                   "of config NAME (default: one random GHN-2, with a warning)")
    p.add_argument('--baselines', nargs='*', default=sorted(REGRESSORS), choices=sorted(REGRESSORS))
    p.add_argument('--seeds', type=int, default=5, help='seeds of the SVR protocol and the GNN baselines')
    p.add_argument('--epochs', type=int, default=200, help='training epochs of the GNN baselines')
    p.add_argument('--out', default='runs/property_prediction')
    p.add_argument('--root', default=None, help='graph cache folder (default: OUT/graphs)')
    p.add_argument('--threads', type=int, default=1, help='torch threads per process')
    p.add_argument('--workers', type=int, default=1, help='processes for the GNN baselines (one per core)')
    p.add_argument('--tiny', action='store_true', help='a few networks and steps: an end-to-end check')
    a = p.parse_args(argv)
    try:
        parse_ghn_specs(a.ghn)  # before any long work: two GHNs with one name would overwrite each other's rows
    except ValueError as e:
        p.error(str(e))
    if a.seeds < 1:
        p.error('--seeds must be at least 1')
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()

    grid, cv, seeds = SVR_GRID, 5, [None] + list(range(a.seeds - 1))  # the original: no permutation, then 0..3
    if a.tiny:
        grid = {'kernel': ['rbf'], 'C': [10, 1000], 'gamma': ['auto', 0.1], 'epsilon': [0.1]}
        cv, seeds, a.epochs = 3, [None, 0], min(a.epochs, 3)
        if not a.properties:
            a.properties = tiny_properties(a.out, 6, 5, seed=0)
    if not a.properties:
        sys.exit('error: give --properties (measure them with python -m pyg_ghn.properties.measure) or --tiny')

    ds = ArchPropertyDataset(a.root or osp.join(a.out, 'graphs'), a.properties, log=not a.tiny)
    split = ds.get_idx_split()
    if len(split['train']) < cv or len(split['test']) < 2:
        sys.exit(f'error: {len(split["train"])} train (val) and {len(split["test"])} test architectures: too few')
    train_graphs = [ds[i] for i in split['train']]
    test_graphs = [ds[i] for i in split['test']]
    y_train, y_test = ds.y[split['train']].numpy(), ds.y[split['test']].numpy()
    print(f'{ds}: {len(train_graphs)} train (val) / {len(test_graphs)} test architectures')

    results, methods = {}, []
    with warnings.catch_warnings():
        warnings.simplefilter('always')  # the random-GHN warning, every time
        ghns = load_ghns(a.ghn)
    for label, ghn in ghns:
        t = time.time()
        x_train, x_test = embed_graphs(ghn, train_graphs), embed_graphs(ghn, test_graphs)
        res = svr_protocol(x_train, y_train, x_test, y_test, PROPERTIES, seeds=seeds, grid=grid, cv=cv)
        label = f'{label} + SVR'
        results[label] = res
        methods.append(label)
        print(f'{label}: embeddings and SVR grid search in {time.time() - t:.0f} s', flush=True)

    # One model per baseline, seed and property (as NeuPred in the paper): independent runs, spread over
    # --workers processes; each is a function of its arguments, so the numbers do not depend on the split.
    jobs = [(name, seed, j) for name in a.baselines for seed in range(len(seeds)) for j in range(len(PROPERTIES))]
    preds = {}
    from tqdm.auto import tqdm
    bar = tqdm(total=len(jobs), desc='GNN regressors', disable=a.tiny)
    if a.workers > 1 and jobs:
        os.environ['OMP_NUM_THREADS'] = str(a.threads)  # read by torch in each spawned worker
        with ProcessPoolExecutor(a.workers, mp_context=multiprocessing.get_context('spawn')) as pool:
            futures = {pool.submit(fit_and_predict, name, train_graphs, y_train[:, j], test_graphs, seed=seed,
                                   epochs=a.epochs): (name, seed, j) for name, seed, j in jobs}
            for f in as_completed(futures):
                preds[futures[f]] = f.result()
                bar.set_postfix_str('{}, seed {}, {}'.format(*futures[f][:2], PROPERTIES[futures[f][2]]))
                bar.update(1)
    else:
        for name, seed, j in jobs:
            bar.set_postfix_str(f'{name}, seed {seed}, {PROPERTIES[j]}')
            preds[name, seed, j] = fit_and_predict(name, train_graphs, y_train[:, j], test_graphs, seed=seed,
                                                   epochs=a.epochs)
            bar.update(1)
    bar.close()
    evaluator = Evaluator()
    for name in a.baselines:
        per_seed = []
        for seed in range(len(seeds)):
            # rounded as the SVR's predictions, so that every row of the table is scored alike
            y_pred = np.stack([round_predictions(preds[name, seed, j][:, 0], prop)
                               for j, prop in enumerate(PROPERTIES)], 1)
            per_seed.append(evaluator.eval({'y_true': y_test, 'y_pred': y_pred}))
        results[BASELINE_LABELS[name]] = {prop: tau_summary([r[prop] for r in per_seed]) for prop in PROPERTIES}
        methods.append(BASELINE_LABELS[name])

    width = max(len(m) for m in methods) + 2
    print(f"\nKendall's tau on the test architectures (mean +- std over {len(seeds)} seeds)")
    print(' ' * width + ''.join(f'{LABELS[q]:>18}' for q in PROPERTIES))
    for m in methods:
        print(f'{m:<{width}}' + ''.join(f"{results[m][q]['mean']:>11.3f} +-{results[m][q]['std']:.3f}"
                                        for q in PROPERTIES))
    serialisable = {m: {q: {k: v for k, v in r.items() if k != 'y_pred'} for q, r in res.items()}
                    for m, res in results.items()}
    with open(osp.join(a.out, 'results.json'), 'w') as f:
        json.dump(dict(properties=a.properties, n_train=len(train_graphs), n_test=len(test_graphs),
                       results=serialisable), f, indent=1, default=str)
    plot(results, methods, osp.join(a.out, 'property_prediction.png'))
    print(f"\nsaved {osp.join(a.out, 'results.json')} and property_prediction.png ({time.time() - t0:.0f} s)")
    return results


if __name__ == '__main__':
    main()

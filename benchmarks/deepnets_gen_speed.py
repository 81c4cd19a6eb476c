"""DeepNets-1M generation speed on one CPU core.

Measures accepted architectures per second of ``generate_net`` for each split (genotype sampling,
rejection rules, analytic parameter counts for the CIFAR-10 and ImageNet versions; no graph
construction), and compares the ways of counting parameters.

Usage: python benchmarks/deepnets_gen_speed.py [--nets 500] [--count-nets 30]
"""
import argparse
import time

import torch

from pyg_ghn.deepnets.generator import SPLITS, generate_net, sample_net_args
from pyg_ghn.deepnets.network import Network, count_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--nets', type=int, default=500, help='networks generated per split')
    parser.add_argument('--count-nets', type=int, default=30, help='networks for the parameter-count comparison')
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f'generate_net, {args.nets} networks per split, 1 thread')
    print(f'{"split":>8} {"nets/s":>9} {"ms/net":>8} {"mean cells":>11} {"mean M params (CIFAR)":>22}')
    for split in SPLITS:
        t = time.perf_counter()
        nets = [generate_net(split, i) for i in range(args.nets)]
        dt = time.perf_counter() - t
        cells = sum(n['n_cells'] for n in nets) / len(nets)
        params = sum(n['num_params']['cifar10'] for n in nets) / len(nets) / 1e6
        print(f'{split:>8} {args.nets / dt:9.1f} {1e3 * dt / args.nets:8.2f} {cells:11.1f} {params:22.2f}')

    nets = [sample_net_args('train', [i, 99]) for i in range(args.count_nets)]
    print(f'\nparameter counting, {args.count_nets} train networks x (CIFAR-10, ImageNet), C=32')
    timings = {}
    for name, fn in [
        ('analytic', lambda a, im: count_params(a, 10, im)),
        ('meta device', lambda a, im: count_params(a, 10, im, method='meta')),
        ('real modules (CPU)', lambda a, im: sum(p.numel() for p in Network.from_net_args(a, 10, im).parameters())),
    ]:
        t = time.perf_counter()
        counts = [fn(a, im) for a in nets for im in (False, True)]
        timings[name] = (time.perf_counter() - t) / len(counts)
        assert counts == [a['num_params'][d] for a in nets for d in ('cifar10', 'imagenet')], name
        print(f'{name:>20}: {1e3 * timings[name]:9.3f} ms/count')


if __name__ == '__main__':
    main()

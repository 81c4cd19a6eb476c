"""pyg_ghn demo: predict all parameters of unseen networks in one forward pass.

    bash dev.sh demo            (or: python examples/demo.py [--batches 30] [--nets 3])

Loads the GHN-2 shipped with pyg_ghn (trained on Fashion-MNIST, no download), then for a few DeepNets-1M
test architectures it never saw, ResNet-50 and a 12-layer ViT adapted to 32x32 images:
builds each network's graph, predicts every parameter, and measures Fashion-MNIST test accuracy with the
predicted parameters (BatchNorm on batch statistics, batches of 64, as the paper evaluates), next to the same
networks with random He initialisation.
"""
import argparse
import time
import warnings

import torch

from pyg_ghn import from_module
from pyg_ghn.datasets import image_loaders
from pyg_ghn.datasets.deepnets1m import DeepNets1M
from pyg_ghn.deepnets import predefined
from pyg_ghn.nn import GHN
from pyg_ghn.train import evaluate, he_init_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--nets', type=int, default=3, help='DeepNets-1M test architectures')
    parser.add_argument('--batches', type=int, default=30, help='test batches of 64 images (157 = all)')
    parser.add_argument('--ghn', default=None, help='a GHN checkpoint instead of the shipped one')
    parser.add_argument('--root', default='data/deepnets1m')
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings('ignore', message='.*have no node.*')

    try:
        ghn = GHN.load(args.ghn) if args.ghn else GHN.from_pretrained()
        meta = getattr(ghn, 'metadata', {}) or {}
        print(f"GHN: {ghn.num_parameters:,} parameters; trained on {meta.get('data', '?')}, "
              f"{meta.get('total_steps', meta.get('steps', '?'))} steps, {meta.get('archs', '?')} training architectures")
    except FileNotFoundError as e:
        print(f'{e}\nFalling back to a randomly initialised GHN-2 (its predictions are not useful).')
        ghn = GHN.from_config('ghn2', 'cifar10').eval()

    test = image_loaders('fashion_mnist', load_train=False).eval
    nets = DeepNets1M(args.root, 'test', num_nets=max(args.nets, 1), log=False)
    archs = [(f'DeepNets-1M test #{i}', nets.network(i)) for i in range(args.nets)]
    archs += [('ResNet-50 (32x32)', predefined.resnet50()), ('ViT 12 layers (32x32)', predefined.vit())]

    print(f"\n{'network':<24}{'params':>11}{'nodes':>7}{'predict s':>11}{'GHN-2 top-1':>13}{'He init top-1':>15}")
    for name, net in archs:
        t = time.perf_counter()
        graph = from_module(net, warn=False)
        with torch.no_grad():
            params = ghn.predict_parameters(graph)[0]
        seconds = time.perf_counter() - t
        acc = evaluate(net, test, topk=(1,), bn_mode='batch', params=params, max_batches=args.batches)['top1']
        he_init_(net, seed=0)
        he = evaluate(net, test, topk=(1,), bn_mode='batch', max_batches=args.batches)['top1']
        n_params = sum(p.numel() for p in net.parameters())
        print(f'{name:<24}{n_params:>11,}{graph.num_nodes:>7}{seconds:>11.3f}{acc:>12.1f}%{he:>14.1f}%',
              flush=True)
    print(f'\nAccuracy on the first {args.batches * 64} Fashion-MNIST test images (--batches 157 for all 10,000); '
          f'predict s = graph building + parameter prediction on one CPU thread.')


if __name__ == '__main__':
    main()

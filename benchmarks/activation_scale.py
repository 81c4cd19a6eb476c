"""Why BN-free networks and the ViT sit at chance (issue 16): the scale of predicted weights and of the
activations they produce, layer by layer, on real Fashion-MNIST test images.

    python benchmarks/activation_scale.py                                  # shipped GHN, summary table
    python benchmarks/activation_scale.py --layers --nets bnfree:0 vit     # one row per layer
    python benchmarks/activation_scale.py --ghn random=random 488=/tmp/ghn2_488.pt shipped=pretrained

For every ``Conv2d`` / ``Linear`` weight the GHN predicts:

* ``raw``: std of the decoder's output for that tensor (the same GHN with ``weight_norm=False``);
* ``norm``: std of the weight after the paper's fan-in normalisation (what the network gets);
* ``he``: He's std for the shape, :math:`\\sqrt{\\beta / \\text{fan-in}}` with the original's
  :math:`\\beta` (2, or 1 for depthwise / 1 x k); ``norm / he`` equals the raw std exactly (the
  normalisation is one multiplication by the He factor), so a raw std below 1 is a weight scale below He's;
* ``in`` / ``out``: std of the layer's input and output activations on one batch of 64 test images, with
  BatchNorm on batch statistics (the evaluation protocol).

The summary has per network: the median raw std (convs, without the classifier), the activation std at the
first cell's input and at the last cell's output, their ratio (the decay through depth), the logits' std
across the images of a batch (0 when every image gets the same logits), the number of distinct predicted
classes and top-1 over ``--batches`` batches. ``rescaled`` repeats the measurement after dividing every
conv/linear weight by its own raw std (each weight then has He's std exactly): a *diagnostic* that
separates the weight scale from the rest of the prediction, not a method of the paper.
"""
import argparse
import math
import statistics
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from pyg_ghn.datasets import image_loaders
from pyg_ghn.datasets.deepnets1m import DeepNets1M
from pyg_ghn.deepnets import predefined
from pyg_ghn.graph import from_module
from pyg_ghn.nn import GHN, fan_in_beta


def load_ghn(spec: str) -> GHN:
    if spec == 'pretrained':
        return GHN.from_pretrained()
    if spec == 'random':
        torch.manual_seed(0)
        return GHN.from_config('ghn2', 'cifar10').eval()
    return GHN.load(spec)


def raw_twin(ghn: GHN) -> GHN:
    """The same GHN without the normalisation: its predictions are the raw decoder outputs, tiled."""
    raw = GHN(**{**ghn.config, 'weight_norm': False})
    raw.load_state_dict(ghn.state_dict())
    return raw.eval()


def he_std(shape) -> float:
    return math.sqrt(fan_in_beta(shape) / math.prod(int(d) for d in shape[1:]))


def networks(names: List[str], root: str) -> List[Tuple[str, nn.Module]]:
    out = []
    for spec in names:
        if spec == 'vit':
            out.append(('ViT', predefined.vit()))
        elif spec == 'resnet50':
            out.append(('ResNet-50', predefined.resnet50()))
        else:
            split, idx = spec.split(':')
            ds = DeepNets1M(root, split, log=False)
            for i in idx.split(','):
                out.append((f'{split}:{i}', ds.network(int(i))))
    return out


def cell_outputs(net: nn.Module) -> List[nn.Module]:
    cells = getattr(net, 'cells', None)
    return list(cells) if cells is not None else []


@torch.no_grad()
def measure(net: nn.Module, params: Dict[str, torch.Tensor], images: List[torch.Tensor],
            labels: List[torch.Tensor], raw: Optional[Dict[str, torch.Tensor]] = None,
            rescale: bool = False) -> Dict:
    """Sets ``params`` in ``net`` (optionally each weight divided by its raw std), runs ``images`` with
    BatchNorm on batch statistics, and returns per-layer rows and a summary."""
    named = dict(net.named_parameters())
    for n, p in params.items():
        if rescale and raw is not None and p.dim() > 1 and n in raw and float(raw[n].std()) > 0:
            p = p / raw[n].std()
        named[n].copy_(p)
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats, m.training = False, True
    names = {m: n for n, m in net.named_modules()}
    acts: Dict[str, Tuple[float, float]] = {}

    def hook(m, inp, out):
        out = out[0] if isinstance(out, tuple) else out
        if names[m] not in acts:  # the first batch only
            acts[names[m]] = (float(inp[0].std()) if inp else float('nan'), float(out.std()))

    watched = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.BatchNorm2d))]
    watched += cell_outputs(net)
    handles = [m.register_forward_hook(hook) for m in watched]
    correct = total = 0
    logit_spread, classes = [], set()
    try:
        for x, y in zip(images, labels):
            out = net(x)
            out = out[0] if isinstance(out, tuple) else out
            correct += int((out.argmax(1) == y).sum())
            total += y.numel()
            logit_spread.append(float(out.std(0).mean()))
            classes.update(out.argmax(1).tolist())
    finally:
        for h in handles:
            h.remove()

    rows = []
    for m in watched:
        n = names[m]
        w = params.get(n + '.weight')
        a_in, a_out = acts.get(n, (float('nan'), float('nan')))
        if w is not None and w.dim() > 1:
            r = float(raw[n + '.weight'].std()) if raw is not None else float('nan')
            rows.append(dict(layer=n, type=type(m).__name__, shape=tuple(w.shape), raw=r, norm=float(w.std()),
                             he=he_std(w.shape), bias=float(params[n + '.bias'].abs().mean())
                             if n + '.bias' in params else 0.0, act_in=a_in, act_out=a_out))
        else:
            rows.append(dict(layer=n, type=type(m).__name__, shape=tuple(w.shape) if w is not None else None,
                             raw=float('nan'), norm=float('nan'), he=float('nan'), bias=float('nan'),
                             act_in=a_in, act_out=a_out))
    cells = [names[c] for c in cell_outputs(net)]
    first_in = acts[cells[0]][0] if cells else float('nan')
    last_out = acts[cells[-1]][1] if cells else float('nan')
    convs = [r for r in rows if r['type'] in ('Conv2d', 'Linear') and not r['layer'].startswith('classifier')
             and r['raw'] == r['raw']]
    summary = dict(raw_median=statistics.median(r['raw'] for r in convs) if convs else float('nan'),
                   first_cell_in=first_in, last_cell_out=last_out, decay=last_out / first_in if cells else
                   float('nan'), logit_spread=statistics.mean(logit_spread), n_classes=len(classes),
                   top1=100.0 * correct / total)
    return dict(rows=rows, summary=summary, cell_acts=[acts[c] for c in cells])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--ghn', nargs='*', default=['shipped=pretrained'],
                   help="NAME=PATH; PATH 'pretrained' (shipped) or 'random' (untrained, seed 0)")
    p.add_argument('--nets', nargs='*', default=['bnfree:0,1,2', 'vit'],
                   help='split:i,j,... of DeepNets1M, vit, resnet50')
    p.add_argument('--root', default='data/deepnets1m')
    p.add_argument('--batches', type=int, default=4, help='test batches of 64 for top-1 (the first for stds)')
    p.add_argument('--layers', action='store_true', help='print one row per layer')
    p.add_argument('--no-rescaled', action='store_true', help='skip the rescaled diagnostic')
    args = p.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings('ignore')
    loader = image_loaders('fashion_mnist', split='test', load_train=False, test_batch_size=64).eval
    images, labels = [], []
    for x, y in loader:
        images.append(x)
        labels.append(y)
        if len(images) == args.batches:
            break
    nets = networks(args.nets, args.root)
    print(f"{'GHN':10s} {'network':11s} {'mode':9s} {'raw std':>8s} {'act cell0':>10s} {'act last':>10s} "
          f"{'decay':>9s} {'logit spread':>12s} {'classes':>7s} {'top1':>6s}")
    for spec in args.ghn:
        gname, path = spec.split('=', 1)
        ghn = load_ghn(path)
        raw_ghn = raw_twin(ghn)
        for nname, net in nets:
            graph = from_module(net, max_sp_dist=ghn.max_sp_dist, warn=False)
            with torch.no_grad():
                params = ghn.predict_parameters(graph)[0]
                raw = raw_ghn.predict_parameters(graph)[0]
            modes = [('GHN', False)] + ([] if args.no_rescaled else [('rescaled', True)])
            for mode, rescale in modes:
                res = measure(net, params, images, labels, raw=raw, rescale=rescale)
                s = res['summary']
                print(f"{gname:10s} {nname:11s} {mode:9s} {s['raw_median']:8.3f} {s['first_cell_in']:10.3g} "
                      f"{s['last_cell_out']:10.3g} {s['decay']:9.2g} {s['logit_spread']:12.3g} "
                      f"{s['n_classes']:7d} {s['top1']:6.1f}", flush=True)
                if args.layers and not rescale:
                    print(f"  {'layer':38s} {'shape':18s} {'raw':>6s} {'norm':>7s} {'he':>7s} {'|bias|':>6s} "
                          f"{'act in':>9s} {'act out':>9s}")
                    for r in res['rows']:
                        print(f"  {r['layer']:38s} {str(r['shape']):18s} {r['raw']:6.3f} {r['norm']:7.4f} "
                              f"{r['he']:7.4f} {r['bias']:6.3f} {r['act_in']:9.3g} {r['act_out']:9.3g}")


if __name__ == '__main__':
    main()

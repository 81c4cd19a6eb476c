"""The predefined evaluation networks of the paper: ResNet-50 (adapted to 32x32), the 12-cell ViT and
the DARTS (V2) network.

These are the ``PREDEFINED`` split of DeepNets-1M (ResNet-50 and ViT) plus the DARTS network used in the
paper's parameter-prediction results (CIFAR-10: C=36, 20 cells; ImageNet: C=48, 14 cells, DARTS stem).
"""
import warnings
from typing import Any, Dict

import torch
import torch.nn as nn

from .genotypes import DARTS_V2, ViT
from .network import Network

__all__ = ['adjust_net', 'resnet50', 'vit', 'darts', 'VIT_ARGS', 'predefined_nets']

#: ``Network`` arguments of the paper's ViT (the ``PREDEFINED`` split).
VIT_ARGS: Dict[str, Any] = {'C': 128, 'genotype': ViT, 'n_cells': 12, 'glob_avg': True, 'preproc': False,
                            'C_mult': 1}


def adjust_net(net: nn.Module, large_input: bool = False) -> nn.Module:
    r"""Adapts an ImageNet torchvision network to 32x32 inputs, in place, and sets
    ``net.expected_input_sz`` (224 or 32), which the graph builder uses as the input size.

    For ResNets (the case DeepNets-1M uses): ``conv1`` becomes a 3x3 stride-1 conv whose weights are the
    centre of the original 7x7 kernels, and ``maxpool`` is removed. Other architectures are returned
    unchanged, with a warning.
    """
    net.expected_input_sz = 224 if large_input else 32
    if large_input:
        return net
    import torchvision  # optional dependency, only needed here

    if isinstance(net, torchvision.models.ResNet):
        old = net.conv1
        k = old.kernel_size[0]
        off = (k - 3) // 2
        conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=1, padding=1, bias=old.bias is not None,
                          device=old.weight.device, dtype=old.weight.dtype)  # where and as the network is
        with torch.no_grad():
            conv1.weight.copy_(old.weight[:, :, off:off + 3, off:off + 3])
            if old.bias is not None:
                conv1.bias.copy_(old.bias)
        net.conv1 = conv1
        net.maxpool = nn.Identity()
    else:
        warnings.warn(f'{type(net).__name__} is not adapted to 32x32 inputs; accuracy may be lower')
    return net


def resnet50(num_classes: int = 10, large_input: bool = False) -> nn.Module:
    r"""torchvision ResNet-50, adapted to 32x32 inputs unless ``large_input`` (see :func:`adjust_net`)."""
    import torchvision
    return adjust_net(torchvision.models.resnet50(num_classes=num_classes), large_input=large_input)


def vit(num_classes: int = 10, large_input: bool = False, **kwargs: Any) -> Network:
    r"""The paper's ViT: ``Network(C=128, genotype=ViT, n_cells=12, preproc=False, C_mult=1)``, i.e. 10
    Transformer blocks and 2 stride-1 average poolings after a patchify stem and a positional encoding
    (1.0M parameters on CIFAR-10)."""
    return Network(num_classes=num_classes, is_imagenet_input=large_input, **{**VIT_ARGS, **kwargs})


def darts(num_classes: int = 10, large_input: bool = False, **kwargs: Any) -> Network:
    r"""The DARTS (V2) network as evaluated in the paper: C=36, 20 cells and the simple stem on CIFAR-10;
    C=48, 14 cells and the DARTS ImageNet stem on ImageNet; BatchNorm with running statistics."""
    args = dict(C=48 if large_input else 36, genotype=DARTS_V2, n_cells=14 if large_input else 20,
                norm='bn-track', stem_type=int(large_input))
    args.update(kwargs)
    return Network(num_classes=num_classes, is_imagenet_input=large_input, **args)


def predefined_nets(num_classes: int = 10, large_input: bool = False) -> Dict[str, nn.Module]:
    r"""The ``PREDEFINED`` split: ``{'resnet50': ..., 'ViT': ...}``."""
    return {'resnet50': resnet50(num_classes, large_input), 'ViT': vit(num_classes, large_input)}

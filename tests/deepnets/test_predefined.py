import pytest
import torch
import torch.nn as nn

from pyg_ghn.deepnets.predefined import adjust_net, darts, resnet50, vit

torchvision = pytest.importorskip('torchvision')


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def graph_module_counts(net):
    """Modules by the primitive type their parameters get in a graph (spec §1.3)."""
    c = {'conv': 0, 'sep_conv': 0, 'dil_conv': 0, 'bn': 0, 'ln': 0, 'bias': 0, 'max_pool': 0, 'avg_pool': 0}
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            c['conv' if m.groups == 1 else ('dil_conv' if max(m.dilation) > 1 else 'sep_conv')] += 1
            c['bias'] += m.bias is not None
        elif isinstance(m, nn.Linear):
            c['conv'] += 1
            c['bias'] += m.bias is not None
        elif isinstance(m, nn.BatchNorm2d):
            c['bn'] += 1
        elif isinstance(m, nn.LayerNorm):
            c['ln'] += 1
        elif isinstance(m, nn.MaxPool2d):
            c['max_pool'] += 1
        elif isinstance(m, nn.AvgPool2d):
            c['avg_pool'] += 1
    return c


def test_resnet50_32():
    torch.manual_seed(0)
    net = resnet50(num_classes=10)
    assert net.expected_input_sz == 32
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and net.conv1.padding == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    # torchvision's 25,557,032 (1000 classes) - 990 * 2049 (fc) - 64 * 3 * (49 - 9) (7x7 -> 3x3 conv1)
    assert n_params(net) == 23_520_842
    c = graph_module_counts(net)
    assert (c['conv'], c['bn'], c['max_pool']) == (54, 53, 0)  # spec §1.7: conv 54, bn 53, no max_pool
    y = net(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)
    y.sum().backward()
    assert net.conv1.weight.grad is not None


def test_adjust_net_crops_center():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    w = net.conv1.weight.detach().clone()
    adjust_net(net)
    assert torch.equal(net.conv1.weight, w[:, :, 2:5, 2:5])
    big = adjust_net(torchvision.models.resnet18(num_classes=10), large_input=True)
    assert big.expected_input_sz == 224 and big.conv1.kernel_size == (7, 7)
    with pytest.warns(UserWarning):
        adjust_net(torchvision.models.squeezenet1_0(num_classes=10))
    # The new conv1 is made where and as the network is (a float64 or CUDA ResNet keeps working).
    net64 = adjust_net(torchvision.models.resnet18(num_classes=10).double())
    assert net64.conv1.weight.dtype == torch.float64
    assert net64(torch.randn(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 10)


def test_vit():
    torch.manual_seed(0)
    net = vit(num_classes=10)
    assert net._is_vit and net._n_cells == 12 and net.expected_input_sz == 32
    assert 0.95e6 < n_params(net) < 1.05e6  # paper, Table 1: 1.0M
    # spec §1.7 (ViT graph): conv 42, bias 31, ln 20, avg_pool 2, pos_enc 1
    c = graph_module_counts(net)
    assert (c['conv'], c['bias'], c['ln'], c['avg_pool'], c['bn']) == (42, 31, 20, 2, 0)
    assert net.pos_enc.weight.shape == (1, 128, 11, 11)
    x = torch.randn(2, 3, 32, 32)
    y = net(x)
    assert y.shape == (2, 10)
    y.sum().backward()
    assert net.pos_enc.weight.grad is not None and net.cells[11]._ops[1].to_qkv.weight.grad is not None
    with torch.device('meta'):
        big = vit(num_classes=1000, large_input=True)
    assert big.pos_enc.weight.shape == (1, 128, 14, 14) and big.stem0.kernel_size == (16, 16)


def test_darts_cifar():
    torch.manual_seed(0)
    net = darts(num_classes=10)
    assert n_params(net) == 3_349_342  # DARTS (V2) on CIFAR-10: 3.3M in the DARTS paper
    c = graph_module_counts(net)
    # spec §1.7 (DARTS graph, C=36, 20 cells): conv 242, bn 239, sep_conv 180, dil_conv 18, max_pool 10
    assert (c['conv'], c['bn'], c['sep_conv'], c['dil_conv'], c['max_pool']) == (242, 239, 180, 18, 10)
    assert all(m.track_running_stats for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_darts_imagenet():
    with torch.device('meta'):
        net = darts(num_classes=1000, large_input=True)
    assert n_params(net) == 4_718_752  # DARTS on ImageNet (C=48, 14 cells): 4.7M in the DARTS paper
    c = graph_module_counts(net)
    assert (c['conv'], c['bn'], c['sep_conv']) == (167, 163, 120)  # spec §1.7
    assert net.expected_input_sz == 224 and hasattr(net, 'stem1')

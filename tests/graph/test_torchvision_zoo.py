import warnings

import pytest
import torch
import torchvision

from pyg_ghn.graph import from_module

MODELS = torchvision.models.list_models(module=torchvision.models)

# Node counts of the original builder for the models it supports (spec appendix, ImageNet input).
ORIGINAL_NODES = {'resnet18': 53, 'resnet50': 127, 'wide_resnet50_2': 127, 'vgg11_bn': 37, 'alexnet': 21,
                  'squeezenet1_0': 65, 'densenet121': 307, 'googlenet': 140, 'mobilenet_v2': 118,
                  'mobilenet_v3_small': 125, 'mnasnet0_5': 117, 'shufflenet_v2_x0_5': 132,
                  'regnet_x_400mf': 168}


def zoo_graph(name, extended=False):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = torchvision.models.get_model(name)
        return model, from_module(model, (3, 299, 299) if name == 'inception_v3' else (3, 224, 224),
                                  extended=extended)


def test_zoo_has_80_classifiers():
    assert len(MODELS) == 80


@pytest.mark.slow
@pytest.mark.parametrize('name', MODELS)
def test_every_torchvision_classifier_builds_a_dag(name):
    model, g = zoo_graph(name)
    assert g.primitive_names[0] == 'input'
    src, dst = g.edge_index
    assert bool((g.level_fw[src] < g.level_fw[dst]).all())  # a DAG, levels consistent
    sources = set(range(g.num_nodes)) - set(dst.tolist())
    assert {g.primitive_names[i] for i in sources} <= {'input', 'pos_enc'}
    assert len(g.param_names) == g.num_nodes
    covered = {n for names in g.param_names for n in names}
    assert covered | set(g.unpredicted) == {n for n, _ in model.named_parameters()}
    if name in ORIGINAL_NODES:
        assert g.num_nodes == ORIGINAL_NODES[name]


@pytest.mark.slow
@pytest.mark.parametrize('name', MODELS)
def test_extended_mode_covers_every_tensor(name):
    model, g = zoo_graph(name, extended=True)
    assert g.unpredicted == []  # GoogLeNet's and Inception's auxiliary heads included (training mode)
    covered = {n for names in g.param_names for n in names}
    assert covered == {n for n, _ in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize('name', MODELS)
def test_fast_empty_batch_trace_gives_the_graph_of_data(name, monkeypatch):
    from test_empty_batch import assert_same_graph, build
    model = torchvision.models.get_model(name)
    size = (3, 299, 299) if name == 'inception_v3' else (3, 224, 224)
    for extended in (False, True):
        assert_same_graph(build(model, size, {0, 1, 2}, monkeypatch, extended),
                          build(model, size, {1, 2}, monkeypatch, extended))

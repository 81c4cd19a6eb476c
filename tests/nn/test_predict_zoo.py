import warnings

import pytest
import torch
import torchvision

from pyg_ghn.graph import from_module
from pyg_ghn.nn import GHN

MODELS = torchvision.models.list_models(module=torchvision.models)
# Channel counts the original's 2023 decoder crashes on (EfficientNet-B0, RegNet-Y-400MF: in-channels
# 10, 14, 20, 22, 26 ...), plus attention models the original cannot graph (ViT, Swin).
QUICK = ['efficientnet_b0', 'regnet_y_400mf', 'mobilenet_v3_small', 'squeezenet1_0']


@pytest.fixture(scope='module')
def ghn():
    torch.manual_seed(0)
    return GHN.from_config('ghn2', 'imagenet').eval()


def check_prediction(ghn, name, size=None):
    """Predicts ``name``'s parameters with ``ghn(model)``; without ``size`` the GHN builds the graph at
    the image size it is configured for (224x224 for ImageNet), which is then what the model runs on."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = torchvision.models.get_model(name, num_classes=10)
        if size is None:
            # As a user predicts a model for inference. In training mode Inception-v3 also runs its auxiliary
            # head, whose 5x5 conv needs the 299x299 inputs it was designed for; at 224 only eval mode runs.
            model.eval()
        graph = from_module(model, size or ghn.input_size)
        before = {n: p.clone() for n, p in model.named_parameters()}
        predicted = ghn.predict_parameters(graph)[0]
        named = dict(model.named_parameters())
        for n, t in predicted.items():
            assert t.shape == named[n].shape, n  # predicted shapes equal the model's
            assert torch.isfinite(t).all(), n
        if size is None:
            ghn(model)  # no graph, no input size: as a user calls it
        else:
            ghn(model, graph=graph)
        size = size or ghn.input_size
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(predicted)  # predicted tensors were set; unpredicted ones kept their values
    assert set(graph.unpredicted) == set(before) - set(predicted)
    with torch.no_grad():
        out = model(torch.randn(2, *size))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize('name', QUICK)
def test_prediction_runs_for_channel_counts_the_original_crashes_on(ghn, name):
    check_prediction(ghn, name, (3, 64, 64))


@pytest.mark.slow
@pytest.mark.parametrize('name', MODELS)
def test_every_torchvision_classifier_is_predicted_and_runs(ghn, name):
    check_prediction(ghn, name)  # the ImageNet GHN's 224x224, no input size passed

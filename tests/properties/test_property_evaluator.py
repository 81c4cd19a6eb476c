import math

import numpy as np
import pytest
import torch

from pyg_ghn.properties import PROPERTIES, Evaluator, kendall_tau, tau_summary


def test_kendall_tau_hand_computed():
    # 6 pairs, 5 concordant and 1 discordant ((2, 3) vs (3, 2)): (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties (tau-b): 4 concordant, 0 discordant, one pair tied in each vector only: 4 / sqrt(5 * 5).
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)


def test_kendall_tau_nan_and_constant():
    # An unmeasured target (NaN) is dropped: [1, 2, 4] vs [1, 3, 2] -> pairs C, C, D -> 1/3.
    assert kendall_tau([1, 2, np.nan, 4], [1, 3, 5, 2]) == pytest.approx(1 / 3)
    # A constant prediction ranks nothing: 0, not NaN (which would drop it from means over seeds).
    assert kendall_tau([1, 2, 3], [5, 5, 5]) == 0.0
    # Targets that cannot be ranked: NaN.
    assert math.isnan(kendall_tau([2, 2, 2], [1, 2, 3]))
    assert math.isnan(kendall_tau([1], [1]))
    with pytest.raises(ValueError, match='differ in size'):
        kendall_tau([1, 2], [1, 2, 3])


def test_kendall_tau_refuses_nan_predictions():
    # Dropping them would score a model only on the graphs it handles: here tau would be 1.
    with pytest.raises(ValueError, match='2 of 4 predictions are NaN or infinite'):
        kendall_tau([4, 3, 1, 2], [np.nan, np.nan, 1, 2])
    with pytest.raises(ValueError, match='1 of 3'):
        kendall_tau([1, 2, 3], [1, np.inf, 3])
    # A NaN prediction for an unmeasured target is dropped with it.
    assert kendall_tau([1, np.nan, 3, 4], [1, np.nan, 2, 3]) == pytest.approx(1.0)


def test_tau_summary_counts_every_seed():
    s = tau_summary([0.5, 0.3, 0.1])
    assert s['mean'] == pytest.approx(0.3) and s['std'] == pytest.approx(np.std([0.5, 0.3, 0.1]))
    assert s['tau'] == [0.5, 0.3, 0.1]
    assert math.isnan(tau_summary([0.5, float('nan')])['mean'])  # not silently the mean of the rest


def test_evaluator_columns_and_mean():
    ev = Evaluator()
    assert ev.properties == PROPERTIES
    y_true = torch.tensor([[1., 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [4, 4, 4, 4]])
    y_true[:, 3] = 5.0  # a property that cannot be ranked
    y_pred = torch.stack([torch.tensor([1., 3, 2, 4]), torch.tensor([4., 3, 2, 1]),
                          torch.tensor([7., 7, 7, 7]), torch.tensor([1., 2, 3, 4])], 1)
    out = ev.eval({'y_true': y_true, 'y_pred': y_pred})
    assert out['clean_acc'] == pytest.approx(2 / 3)
    assert out['noise_acc'] == pytest.approx(-1)
    assert out['time'] == 0.0  # constant prediction
    assert math.isnan(out['converge_time'])
    assert out['kendall_tau'] == pytest.approx((2 / 3 - 1 + 0) / 3)  # the NaN column left out of the mean


def test_evaluator_single_property_and_errors():
    ev = Evaluator(['clean_acc'])
    assert ev.eval({'y_true': np.arange(5.), 'y_pred': np.arange(5.) ** 2})['clean_acc'] == pytest.approx(1)
    with pytest.raises(KeyError):
        ev.eval({'y_true': np.arange(5.)})
    with pytest.raises(ValueError):
        Evaluator().eval({'y_true': np.zeros((3, 2)), 'y_pred': np.zeros((3, 2))})

"""benchmarks/property_ceiling.py: the ceiling on Kendall's τ implied by two noisy measurements of the same
networks, checked against a simulation where the true values are known."""
import importlib.util
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'property_ceiling.py')


def _ceiling():
    spec = importlib.util.spec_from_file_location('property_ceiling', _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceiling_limits():
    m = _ceiling()
    assert m.tau_ceiling(1.0) == pytest.approx(1.0)
    assert m.tau_ceiling(0.0) == pytest.approx(0.0)
    assert m.tau_ceiling(0.5) > 0.5  # the expected value ranks better than a second noisy measurement


@pytest.mark.parametrize('noise', [0.5, 1.0])
def test_ceiling_matches_simulation(noise):
    # true value z, two measurements z + e1, z + e2: the ceiling from τ(m1, m2) is τ(z, m1). With 8,000
    # networks the sampling s.d. of each τ is ~0.008, so 0.025 is three of them.
    m = _ceiling()
    rng = np.random.default_rng(0)
    z = rng.standard_normal(8000)
    m1, m2 = z + noise * rng.standard_normal(z.size), z + noise * rng.standard_normal(z.size)
    a = {('test', i): {'p': v} for i, v in enumerate(m1)}
    b = {('test', i): {'p': v} for i, v in enumerate(m2)}
    row = m.repeat_taus(a, b, properties=('p',), boot=2)[0]
    from scipy.stats import kendalltau
    assert row['tau_max'] == pytest.approx(kendalltau(z, m1)[0], abs=0.025)
    assert row['tau_repeat'] < row['tau_max']

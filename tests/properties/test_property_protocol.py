import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from pyg_ghn import PRIMITIVE_IDS
from pyg_ghn.datasets.deepnets1m import build_network
from pyg_ghn.deepnets.generator import generate_split
from pyg_ghn.graph.builder import from_module
from pyg_ghn.nn import GHN
from pyg_ghn.properties import (ROUND_DECIMALS, embed_graphs, fit_svr, load_ghn_or_random, round_predictions,
                                svr_protocol)

SMALL_GRID = {'kernel': ['rbf'], 'C': [1, 10, 100], 'gamma': ['auto', 1.0], 'epsilon': [0.01, 0.05]}


@pytest.fixture(scope='module')
def graphs():
    return [from_module(build_network(dict(a, C=8)), warn=False) for a in generate_split('val', 36)]


@pytest.mark.parametrize('config', ['ghn2', 'ghn1', 'mlp'])
def test_embeddings_are_node_means_and_batch_independent(graphs, config):
    torch.manual_seed(0)
    ghn = GHN.from_config(config)
    ghn.train()  # embed_graphs switches to eval mode and back
    e = embed_graphs(ghn, graphs[:5], batch_size=2)
    assert e.shape == (5, 32) and e.dtype == np.float64 and ghn.training
    # Independent of the batch composition, deterministic, and the mean of the per-graph node features.
    assert np.allclose(e, embed_graphs(ghn, graphs[:5], batch_size=5), atol=1e-5)
    assert np.array_equal(e, embed_graphs(ghn, graphs[:5], batch_size=2))
    ghn.eval()
    with torch.no_grad():
        for i, g in enumerate(graphs[:5]):
            h = ghn.node_features(Batch.from_data_list([g]))
            assert h.shape == (g.num_nodes, 32)
            assert np.allclose(e[i], h.mean(0).double().numpy(), atol=1e-5)
            if config != 'ghn1':  # post-LayerNorm features: zero mean over channels per node
                assert h.mean(1).abs().max() < 1e-4 + ghn.ln.bias.abs().max()


def test_random_ghn_default_warns_and_is_seeded():
    with pytest.warns(UserWarning, match='randomly initialised'):
        a = load_ghn_or_random(None)
    with pytest.warns(UserWarning):
        b = load_ghn_or_random('random')
    assert not a.training and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_ghn_checkpoint_round_trip(tmp_path, graphs):
    torch.manual_seed(3)
    ghn = GHN.from_config('ghn2')
    path = str(tmp_path / 'ghn.pt')
    ghn.save(path)
    loaded = load_ghn_or_random(path)
    assert np.allclose(embed_graphs(ghn, graphs[:3]), embed_graphs(loaded, graphs[:3]), atol=1e-6)


def test_fit_svr_learns_a_smooth_function():
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (80, 3))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2
    model, best = fit_svr(x[:60], y[:60], SMALL_GRID, seed=0)
    assert set(best) == set(SMALL_GRID)
    pred = model.predict(x[60:])
    assert np.corrcoef(pred, y[60:])[0, 1] > 0.9


@pytest.mark.parametrize('config', ['ghn2', 'ghn1', 'mlp'])
def test_svr_protocol_on_embeddings(graphs, config):
    # A target the node features determine: the fraction of BatchNorm nodes. Even a random GHN's mean node
    # feature carries it, so the protocol must rank held-out architectures well.
    torch.manual_seed(0)
    e = embed_graphs(GHN.from_config(config).eval(), graphs)
    y = np.array([(g.x == PRIMITIVE_IDS['bn']).float().mean().item() for g in graphs])[:, None] * 100
    res = svr_protocol(e[:24], y[:24], e[24:], y[24:], properties=['bn_pct'], seeds=[None, 0], grid=SMALL_GRID,
                       round_decimals={})
    r = res['bn_pct']
    assert len(r['tau']) == 2 and len(r['best_params']) == 2 and r['y_pred'].shape == (12,)
    assert r['mean'] > 0.5, r


def test_svr_protocol_rounding_and_columns():
    rng = np.random.RandomState(1)
    x = rng.normal(size=(30, 4))
    y = np.stack([50 + 10 * x[:, 0], 40 + 5 * x[:, 1], 30 + 10 * x[:, 2], 100 + 20 * x[:, 3]], 1)
    res = svr_protocol(x[:20], y[:20], x[20:], y[20:], seeds=[0], grid={'C': [10], 'epsilon': [0.1]})
    assert list(res) == ['clean_acc', 'noise_acc', 'time', 'converge_time']
    assert ROUND_DECIMALS['converge_time'] is None
    assert np.array_equal(res['clean_acc']['y_pred'], np.round(res['clean_acc']['y_pred']))  # integer %
    assert np.array_equal(res['noise_acc']['y_pred'], np.round(res['noise_acc']['y_pred']))
    assert np.array_equal(res['time']['y_pred'], np.round(res['time']['y_pred']))  # integer ms
    assert not np.array_equal(res['converge_time']['y_pred'], np.round(res['converge_time']['y_pred']))
    with pytest.raises(ValueError):
        svr_protocol(x[:20], y[:20, :2], x[20:], y[20:, :2], seeds=[0], grid={'C': [10]})


def test_fit_svr_seed_chooses_the_folds():
    # The seed permutes the rows before the unshuffled folds: the same as permuting them by hand, and other
    # seeds give other cross-validation scores.
    rng = np.random.RandomState(2)
    x = rng.uniform(-1, 1, (25, 2))
    y = np.sin(3 * x[:, 0]) + 0.3 * rng.normal(size=25)
    perm = np.random.RandomState(5).permutation(25)
    m5, b5 = fit_svr(x, y, SMALL_GRID, seed=5)
    m_hand, b_hand = fit_svr(x[perm], y[perm], SMALL_GRID, seed=None)
    assert b5 == b_hand and np.allclose(m5.predict(x), m_hand.predict(x))
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.svm import SVR
    scores = []
    for seed in (None, 0, 1, 5):
        xs, ys = (x, y) if seed is None else (x[np.random.RandomState(seed).permutation(25)],
                                               y[np.random.RandomState(seed).permutation(25)])
        scores.append(GridSearchCV(SVR(), SMALL_GRID, cv=KFold(5)).fit(xs, ys).cv_results_['mean_test_score'])
    assert not all(np.allclose(scores[0], s) for s in scores[1:])


def test_svr_protocol_never_sees_the_test_targets():
    rng = np.random.RandomState(3)
    x = rng.normal(size=(30, 3))
    y = np.stack([50 + 10 * x[:, 0] + rng.normal(size=30)] * 4, 1)
    kw = dict(seeds=[None, 0], grid=SMALL_GRID)
    res = svr_protocol(x[:20], y[:20], x[20:], y[20:], **kw)
    shuffled = svr_protocol(x[:20], y[:20], x[20:], y[20:][::-1], **kw)
    for prop in res:
        assert res[prop]['best_params'] == shuffled[prop]['best_params']
        assert np.array_equal(res[prop]['y_pred'], shuffled[prop]['y_pred'])


def test_fit_svr_needs_as_many_architectures_as_folds():
    with pytest.raises(ValueError, match='4 training architectures for 5-fold cross-validation'):
        fit_svr(np.zeros((4, 2)), np.arange(4.), SMALL_GRID)


def test_round_predictions_follows_the_protocol():
    pred = np.array([1.4, 2.6])
    assert round_predictions(pred, 'clean_acc').tolist() == [1.0, 3.0]
    assert round_predictions(torch.tensor([1.4, 2.6]), 'noise_acc').tolist() == [1.0, 3.0]
    assert round_predictions(pred, 'converge_time').tolist() == [1.4, 2.6]


def test_parse_ghn_specs_names_and_refuses_two_with_one_name():
    from pyg_ghn.properties import parse_ghn_specs
    assert parse_ghn_specs(['GHN-2=runs/a/ghn.pt', 'runs/b/mlp.pt', 'ghn1=random']) == [
        ('GHN-2', 'runs/a/ghn.pt', 'ghn2'), ('mlp', 'runs/b/mlp.pt', 'mlp'), ('ghn1', None, 'ghn1')]
    # Bare paths are named after the file: runs/<name>/ghn.pt twice would give one row for two GHNs.
    with pytest.raises(ValueError, match=r"two GHNs are named 'ghn' \('runs/ghn2/ghn.pt' and 'runs/mlp/ghn.pt'\)"):
        parse_ghn_specs(['runs/ghn2/ghn.pt', 'runs/mlp/ghn.pt'])
    with pytest.raises(ValueError, match="named 'A'"):
        parse_ghn_specs(['A=x.pt', 'A=random'])

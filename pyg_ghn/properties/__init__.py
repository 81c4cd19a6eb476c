r"""Architecture representations (paper §5.2 and appendix C.2.3-C.2.4): ground-truth properties of
DeepNets-1M networks, a dataset of architecture graphs with those targets, the SVR-on-GHN-embeddings
protocol and its Kendall :math:`\tau` evaluator, GNN regressor baselines, and distances between
architectures."""
from .dataset import PROPERTIES, ArchPropertyDataset, load_results
from .evaluator import Evaluator, kendall_tau, tau_summary
from .protocol import (ROUND_DECIMALS, SVR_GRID, embed_graphs, fit_svr, load_ghn_or_random, load_ghns,
                       parse_ghn_specs, round_predictions, svr_protocol)
from .baselines import (REGRESSORS, ArchNodeEncoder, DirectedGCNRegressor, GHN2ConvRegressor, GINRegressor,
                        fit_and_predict, fit_regressor, predict)
from .distances import (frechet_distance, hungarian_distance, l2_distance, mean_hungarian_distance,
                        node_cost_matrix, pairwise_l2)

__all__ = [
    'PROPERTIES', 'MeasureConfig', 'load_results', 'measure_network', 'measure_split', 'ArchPropertyDataset',
    'Evaluator', 'kendall_tau', 'tau_summary', 'ROUND_DECIMALS', 'SVR_GRID', 'round_predictions', 'embed_graphs',
    'fit_svr', 'load_ghn_or_random', 'svr_protocol', 'parse_ghn_specs', 'load_ghns', 'REGRESSORS',
    'ArchNodeEncoder', 'DirectedGCNRegressor',
    'GHN2ConvRegressor', 'GINRegressor', 'fit_regressor', 'predict', 'fit_and_predict', 'frechet_distance',
    'hungarian_distance',
    'l2_distance', 'mean_hungarian_distance', 'node_cost_matrix', 'pairwise_l2',
]

_LAZY = ('MeasureConfig', 'measure_network', 'measure_split')


def __getattr__(name: str):
    # The measurement module is imported on first use, so that `python -m pyg_ghn.properties.measure` does
    # not find it already imported by this package.
    if name in _LAZY:
        from . import measure
        return getattr(measure, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

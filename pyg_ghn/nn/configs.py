"""Named GHN configurations: the released GHN-2 / GHN-1 / MLP models and the ablations of the paper
(Table 5 and appendix Table 8).

``get_config('ghn2', 'cifar10')`` returns keyword arguments for :class:`pyg_ghn.nn.GHN`. The first eight
keys are those of the original checkpoints' ``config``; ablations add the switches of
:class:`~pyg_ghn.nn.conv.GHN2Conv` (``num_rounds``, ``backward``).
"""
import copy
from typing import Any, Dict, List

__all__ = ['DATASETS', 'CONFIGS', 'get_config', 'list_configs']

#: ``max_shape`` and ``num_classes`` per dataset (spec §0.1, §3.2).
DATASETS: Dict[str, Dict[str, Any]] = {
    'cifar10': dict(max_shape=(64, 64, 11, 11), num_classes=10),
    'imagenet': dict(max_shape=(64, 64, 16, 16), num_classes=1000),
}

_GHN2 = dict(hypernet='gatedgnn', decoder='conv', weight_norm=True, ve=True, layernorm=True, hid=32)

#: Dataset-independent parts of the configurations.
CONFIGS: Dict[str, Dict[str, Any]] = {
    # Released models.
    'ghn2': dict(_GHN2),
    'ghn1': dict(_GHN2, weight_norm=False, ve=False, layernorm=False),
    # "No GatedGNN (MLP)": GHN-2 with a per-node MLP instead of message passing. The released MLP model
    # has LayerNorm (its 1,614,396 parameters include ln); `ve` only matters for graph construction.
    'mlp': dict(_GHN2, hypernet='mlp'),
    # Ablations of GHN-2 (Tables 5 and 8).
    'ghn2-no-ve': dict(_GHN2, ve=False),
    'ghn2-no-norm': dict(_GHN2, weight_norm=False),
    'ghn2-no-ln': dict(_GHN2, layernorm=False),
    'ghn2-fw-only': dict(_GHN2, backward=False),  # pi = only fw (Eq. 3)
    'ghn2-t5': dict(_GHN2, num_rounds=5),  # T = 5 (Eq. 3)
    'ghn1-ln': dict(_GHN2, weight_norm=False, ve=False),  # GHN-1 + LayerNorm
}


def get_config(name: str, dataset: str = 'cifar10', **overrides: Any) -> Dict[str, Any]:
    """Keyword arguments of :class:`~pyg_ghn.nn.GHN` for configuration ``name`` on ``dataset``
    (``'cifar10'`` or ``'imagenet'``); ``overrides`` replace single entries."""
    if name not in CONFIGS:
        raise KeyError(f'Unknown GHN configuration {name!r}; known: {sorted(CONFIGS)}')
    if dataset not in DATASETS:
        raise KeyError(f'Unknown dataset {dataset!r}; known: {sorted(DATASETS)}')
    cfg = copy.deepcopy(DATASETS[dataset])
    cfg.update(copy.deepcopy(CONFIGS[name]))
    cfg.update(overrides)
    return cfg


def list_configs() -> List[str]:
    return sorted(CONFIGS)

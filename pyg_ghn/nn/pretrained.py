"""GHNs shipped inside the package: weights as an enum carrying their metadata (torchvision style)."""
import os.path as osp
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, Optional, Union

__all__ = ['GHNWeights', 'from_pretrained', 'CHECKPOINT_DIR']

CHECKPOINT_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'checkpoints')


@dataclass(frozen=True)
class _Weights:
    file: str
    config: str
    description: str

    @property
    def path(self) -> str:
        return osp.join(CHECKPOINT_DIR, self.file)

    def metadata(self) -> Dict[str, Any]:
        """What the checkpoint says about itself: training data, steps, architectures and the accuracies
        measured by ``benchmarks/reproduce.py`` (read from the file, not written here)."""
        from .checkpoint import read_checkpoint
        return read_checkpoint(self.path).get('metadata', {})


class GHNWeights(Enum):
    """Trained GHNs shipped with pyg_ghn (no download needed)."""
    GHN2_FASHION_MNIST = _Weights(
        'ghn2_fmnist.pt', 'ghn2',
        'GHN-2 (CIFAR-10 configuration: max shape 64x64x11x11, 10 classes) trained with pyg_ghn on '
        'Fashion-MNIST images presented as 3x32x32 and DeepNets-1M training architectures.')
    DEFAULT = GHN2_FASHION_MNIST


def from_pretrained(weights: Union[GHNWeights, str, None] = None, map_location: Any = 'cpu') -> Any:
    """Loads a shipped GHN in eval mode: ``weights`` is a :class:`GHNWeights` member or its name
    (default: ``GHNWeights.DEFAULT``)."""
    from .checkpoint import load_ghn
    if weights is None:
        weights = GHNWeights.DEFAULT
    if isinstance(weights, str):
        try:
            weights = GHNWeights[weights.upper()]
        except KeyError:
            raise ValueError(f'Unknown weights {weights!r}; shipped: {[w.name for w in GHNWeights]}') from None
    if not osp.exists(weights.value.path):
        raise FileNotFoundError(f'{weights.value.path} is missing: the package was installed without its '
                                f'checkpoints (reinstall pyg_ghn from the repository).')
    return load_ghn(weights.value.path, map_location=map_location)

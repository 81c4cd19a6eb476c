"""Named training recipes: the settings of a GHN training run that are chosen together.

``paper`` is the original GHN-2 recipe (spec §5) at this package's defaults; ``cpu`` is the recipe measured
to buy the most predicted-parameter accuracy per CPU core-hour (``benchmarks/train_recipes.py``; the table
and the reasons are in ``benchmarks/README.md``). A recipe only fills the settings a user does not give:
``pyg-ghn train --recipe cpu --batch-size 32`` is the CPU recipe with 32 images a step.
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

__all__ = ['Recipe', 'RECIPES', 'get_recipe']


@dataclass(frozen=True)
class Recipe:
    r"""The settings a recipe fixes.

    Args:
        batch_size: images per training step, shared by the ``meta_batch`` networks.
        meta_batch: architectures per step (:math:`b_m`).
        archs: DeepNets-1M training architectures drawn from.
        epochs, steps_per_epoch: the run's length (``steps_per_epoch=None``: one pass over the images); the
            learning rate drops at 2/3 and 5/6 of it, so the length is part of the schedule.
        lr: Adam's initial learning rate.
        channels: the range of the training-time width ``C`` (spec §4.3: 32-128, narrower for big networks).
    """
    batch_size: int
    meta_batch: int
    archs: int
    epochs: int
    steps_per_epoch: Optional[int]
    lr: float
    channels: Tuple[int, int]

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


RECIPES: Dict[str, Recipe] = {
    # The original: 64 images and 8 networks a step, 300 epochs over the images.
    'paper': Recipe(batch_size=64, meta_batch=8, archs=1000, epochs=300, steps_per_epoch=None, lr=1e-3,
                    channels=(32, 128)),
    # The networks' forward and backward passes are 96% of a paper step on a CPU and scale with the images,
    # so fewer images buy more steps per core-hour (CPU time per step, one core: 64 images 13.8 s, 32 6.4 s,
    # 16 3.6 s). At equal core-hours 16 images beat 64 from 0.3 core-hours on (28.9 vs 26.1% ID at 0.6;
    # benchmarks/train_recipes.py, benchmarks/README.md "Training cost"). 20,000 steps (LR drops at 13,500
    # and 16,500: the 2/3 and 5/6 milestones fall on whole epochs, 27 and 33) over 100,000 architectures:
    # a run that spans sessions, continued from its committed state.
    'cpu': Recipe(batch_size=16, meta_batch=8, archs=100_000, epochs=40, steps_per_epoch=500, lr=1e-3,
                  channels=(32, 128)),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f'Unknown recipe {name!r}; one of {sorted(RECIPES)}') from None

"""Learning rate as a pure function of the iteration, so that a resumed run needs no scheduler state."""

from __future__ import annotations

import bisect
import math

from .config import TrainConfig


def lr_at(train: TrainConfig, iteration: int) -> float:
    """The learning rate for (0-based) ``iteration``.

    multistep: ``lr * gamma ** (number of milestones <= iteration)``; cosine: from ``lr`` to
    ``min_lr`` over the run; constant: ``lr``. An optional linear warm-up scales the first
    ``warmup`` iterations.
    """
    s = train.scheduler
    if s.name == "multistep":
        lr = train.lr * s.gamma ** bisect.bisect_right(sorted(s.milestones), iteration)
    elif s.name == "cosine":
        progress = min(iteration / max(train.iterations - 1, 1), 1.0)
        lr = s.min_lr + 0.5 * (train.lr - s.min_lr) * (1 + math.cos(math.pi * progress))
    else:
        lr = train.lr
    if s.warmup and iteration < s.warmup:
        lr *= (iteration + 1) / s.warmup
    return lr

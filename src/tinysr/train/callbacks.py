"""Training callbacks named in a recipe's ``callbacks`` list (DESIGN.md principle 2).

Methods hook into training here (a distillation teacher, an estimator schedule, a BN freeze, a
growing penalty) without the engine knowing them by name. A callback may keep state; what its
``state_dict`` returns is saved in training checkpoints and given back on resume.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .named import NamedFactories

_CALLBACKS = NamedFactories("callback")


class Callback:
    """Base class: every hook is optional. ``trainer`` exposes model, optimizer, config, iteration."""

    def on_train_start(self, trainer) -> None: ...

    def on_step_start(self, trainer, iteration: int) -> None: ...

    def on_step_end(self, trainer, iteration: int, logs: dict[str, Any]) -> None: ...

    def on_validation(self, trainer, iteration: int, scores: dict[str, float]) -> None: ...

    def on_train_end(self, trainer) -> None: ...

    def loss(self, step) -> torch.Tensor | None:
        """An extra loss term (a regulariser), added to the step's loss under the callback's name."""
        return None

    def export(self, model: nn.Module) -> nn.Module:
        """What a model file holds of ``model`` (e.g. with training-only layers folded away)."""
        return model

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def register_callback(name: str):
    """Class decorator: make a :class:`Callback` available to recipes as ``callbacks: [{name: ...}]``."""
    return _CALLBACKS.register(name)


def build_callback(name: str, kwargs: dict, source: str = "callbacks") -> Callback:
    return _CALLBACKS.build(name, kwargs, source)


def list_callbacks() -> list[str]:
    return _CALLBACKS.names()

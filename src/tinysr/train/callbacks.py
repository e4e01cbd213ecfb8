"""Training callbacks named in a recipe's ``callbacks`` list (DESIGN.md principle 2).

Methods hook into training here (a distillation teacher, an estimator schedule, a BN freeze, a
growing penalty) without the engine knowing them by name. A callback may keep state; what its
``state_dict`` returns is saved in training checkpoints and given back on resume.
"""

from __future__ import annotations

from typing import Any

from .named import NamedFactories

_CALLBACKS = NamedFactories("callback")


class Callback:
    """Base class: every hook is optional. ``trainer`` exposes model, optimizer, config, iteration."""

    def on_train_start(self, trainer) -> None: ...

    def on_step_start(self, trainer, iteration: int) -> None: ...

    def on_step_end(self, trainer, iteration: int, logs: dict[str, Any]) -> None: ...

    def on_validation(self, trainer, iteration: int, scores: dict[str, float]) -> None: ...

    def on_train_end(self, trainer) -> None: ...

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

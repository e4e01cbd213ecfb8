"""The plug-in points every layer above may use; this module imports only torch (and the error type).

Methods reach the training engine and the cost accounting through these, never the other way
round (DESIGN.md principle 2), so a model file can define its training callback, its loss term
and its layers' cost rules without importing the engine or ``profile``:

* :class:`Callback` and :func:`register_callback`: hooks a recipe names in ``callbacks``;
* :class:`Step` and :func:`register_loss`: loss terms a recipe names in ``train.loss``;
* :class:`TrainerView`: what a callback or loss term may read of the trainer;
* :func:`register_cost`: a layer type's MAC / BOP rule and its split of parameters (SPEC §3),
  stated beside the layer; ``tinysr.profile`` only adds them up.

Registration is explicit: a package lists the modules that register (``models/__init__.py``,
``compress/__init__.py``), and the training package imports those packages by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .errors import TinySRError


class NamedFactories:
    """``register(name)`` decorates a factory; ``build(name, kwargs)`` calls it, with clear errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str):
        def deco(factory):
            if name in self._factories:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._factories[name] = factory
            return factory

        return deco

    def build(self, name: str, kwargs: dict, source: str):
        if name not in self._factories:
            raise TinySRError(f"{source}: unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}")
        try:
            return self._factories[name](**kwargs)
        except TypeError as exc:
            raise TinySRError(f"{source}: bad options for {self.kind} {name!r}: {exc}") from exc

    def names(self) -> list[str]:
        return sorted(self._factories)


# ----------------------------------------------------------------------------- the trainer's view
class TrainerView(Protocol):
    """What callbacks and loss terms may read of the trainer (``tinysr.train.Trainer`` provides it)."""

    model: nn.Module  # the module being trained; a callback may change it in ``on_train_start``
    device: torch.device
    run_dir: Path
    resume: bool  # True when the run continues from a checkpoint
    is_main: bool  # the process that writes files (rank 0 of a distributed run)
    total_iterations: int  # the recipe's ``train.iterations``

    def training_lr_images(self) -> Sequence[Any]:
        """The training set's LR images (uint8 ``H x W x 3`` arrays), e.g. for input statistics."""
        ...

    def eval_model(self) -> nn.Module:
        """The model validation and the model files use (the EMA weights when EMA is on)."""
        ...

    def load_model(self, path: str | Path) -> nn.Module:
        """A model file (e.g. a distillation teacher), on the trainer's device, in eval mode."""
        ...

    def save_model(self, model: nn.Module, path: str | Path) -> None:
        """Write ``model`` as a model file, atomically."""
        ...


# --------------------------------------------------------------------------------------- callbacks
_CALLBACKS = NamedFactories("callback")


class Callback:
    """Base class of training callbacks: every hook is optional.

    Methods hook into training here (a distillation teacher, an estimator schedule, a BN freeze, a
    growing penalty) without the engine knowing them by name. A callback may keep state; what its
    ``state_dict`` returns is saved in training checkpoints and given back on resume.
    """

    def on_train_start(self, trainer: TrainerView) -> None: ...

    def on_step_start(self, trainer: TrainerView, iteration: int) -> None: ...

    def on_step_end(self, trainer: TrainerView, iteration: int, logs: dict[str, Any]) -> None: ...

    def on_validation(self, trainer: TrainerView, iteration: int, scores: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: TrainerView) -> None: ...

    def loss(self, step: Step) -> torch.Tensor | None:
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


# ------------------------------------------------------------------------------------- loss terms
_LOSSES = NamedFactories("loss term")


@dataclass
class Step:
    """What a loss term or callback sees of one training step.

    ``lr_image`` is the low-resolution input batch, ``hr`` its ground truth and ``sr`` the model's
    output (float32).
    """

    iteration: int
    lr_image: torch.Tensor
    hr: torch.Tensor
    sr: torch.Tensor
    trainer: TrainerView | None = None


def register_loss(name: str):
    """Decorator: make a loss-term factory available to recipes as ``train.loss: [{name: ...}]``.

    The factory is called once with the entry's ``kwargs`` and returns ``term(step) -> scalar``;
    a term with a ``setup(trainer)`` method gets it called once the model is built.
    """
    return _LOSSES.register(name)


def build_loss(name: str, kwargs: dict, source: str = "train.loss") -> Callable[[Step], torch.Tensor]:
    return _LOSSES.build(name, kwargs, source)


def list_losses() -> list[str]:
    return _LOSSES.names()


# ------------------------------------------------------------------------------------ cost rules
# A cost rule: (module, inputs, output) -> (flops, bops) for one call.
CostRule = Callable[[nn.Module, tuple, torch.Tensor], tuple[int, int]]
# A parameter split: module -> (fp params, binary params) of its own parameters.
ParamRule = Callable[[nn.Module], tuple[int, int]]

_COST_RULES: dict[type, CostRule] = {}
_PARAM_RULES: dict[type, ParamRule] = {}


def register_cost(*types: type, params: ParamRule | None = None):
    """Decorator registering a MAC rule (and optionally a parameter split) for module types.

    A module type without a parameter split counts its own parameters as full precision.
    """

    def deco(rule: CostRule) -> CostRule:
        for t in types:
            _COST_RULES[t] = rule
            if params is not None:
                _PARAM_RULES[t] = params
        return rule

    return deco


def no_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
    """The rule of per-channel and element-wise layers: their work is not counted as MACs (SPEC §3)."""
    return 0, 0


def _rule_for(module: nn.Module, table: dict):
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    return None


def cost_rule(module: nn.Module) -> CostRule | None:
    """The MAC rule registered for ``module``'s type (or a base class), or None."""
    return _rule_for(module, _COST_RULES)


def param_rule(module: nn.Module) -> ParamRule | None:
    """The parameter split registered for ``module``'s type (or a base class), or None."""
    return _rule_for(module, _PARAM_RULES)

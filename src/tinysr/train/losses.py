"""Loss terms named in a recipe's ``train.loss`` list; methods register their own (DESIGN.md principle 2).

A loss term is built once from its ``kwargs`` and then called as ``term(step) -> scalar tensor``
where ``step`` carries the batch, the model output and the trainer, so a method's term (a
distillation loss reading a teacher, a sparsity penalty reading the model) needs no engine change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .named import NamedFactories

_LOSSES = NamedFactories("loss term")


@dataclass
class Step:
    """What a loss term or callback sees of one training step."""

    iteration: int
    lr: torch.Tensor
    hr: torch.Tensor
    sr: torch.Tensor
    trainer: Any = None


def register_loss(name: str):
    """Decorator: make a loss-term factory available to recipes as ``train.loss: [{name: ...}]``."""
    return _LOSSES.register(name)


def build_loss(name: str, kwargs: dict, source: str = "train.loss") -> Callable[[Step], torch.Tensor]:
    return _LOSSES.build(name, kwargs, source)


@register_loss("l1")
def l1_loss():
    """Mean absolute error between SR and HR (the SR papers' default)."""
    return lambda step: F.l1_loss(step.sr, step.hr)


@register_loss("mse")
def mse_loss():
    return lambda step: F.mse_loss(step.sr, step.hr)


@register_loss("charbonnier")
def charbonnier_loss(eps: float = 1e-3):
    """``mean(sqrt((sr - hr)^2 + eps^2))``, a smooth L1."""
    return lambda step: torch.sqrt((step.sr - step.hr) ** 2 + eps * eps).mean()

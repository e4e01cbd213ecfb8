"""The generic loss terms a recipe names in ``train.loss`` (methods register their own through
:func:`tinysr.plugins.register_loss`, DESIGN.md principle 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..plugins import register_loss


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

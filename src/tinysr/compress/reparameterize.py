"""``reparameterize(model)``: merge every re-parameterizable block of a model into one conv (SPEC §7).

A block is re-parameterizable when it has a ``reparameterize()`` method returning the single
``nn.Conv2d`` it computes in eval mode (``nn/rep.py``: RepSR, ECB, RepVGG blocks, BN folded with
its running statistics). :func:`reparameterize` walks any model, puts each block's conv in its
place and records the transform, so the merged model file rebuilds itself (the blocks of a fresh
model merged, then the stored weights loaded). The merged network computes the same function as
the original in eval mode, up to float rounding; a merged RepSR / ECBSR / RepVGG network has the
structure and state-dict keys of the plain ``basenet`` of the same size.
"""

from __future__ import annotations

import torch
from torch import nn

from .transforms import register_transform, swap_modules

TRANSFORM = "reparameterize"


def mergeable(module: nn.Module) -> bool:
    """Whether ``module`` is a block that merges into one conv."""
    return callable(getattr(module, "reparameterize", None))


def has_mergeable_blocks(model: nn.Module) -> bool:
    return any(mergeable(m) for m in model.modules())


def _merged(module: nn.Module) -> nn.Module | None:
    return module.reparameterize() if mergeable(module) else None


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (built by ``create_model``) with every mergeable block merged, in eval mode."""
    return swap_modules(model, TRANSFORM, _merged, done="merged", nothing="re-parameterizable blocks")


@register_transform(TRANSFORM)
def _rebuild_merge(model: nn.Module) -> nn.Module:
    return reparameterize(model)

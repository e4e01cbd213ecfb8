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

import copy

import torch
from torch import nn

from ..errors import TinySRError
from ..models.registry import model_spec
from .transforms import record, register_transform

TRANSFORM = "reparameterize"


def mergeable(module: nn.Module) -> bool:
    """Whether ``module`` is a block that merges into one conv."""
    return callable(getattr(module, "reparameterize", None))


def has_mergeable_blocks(model: nn.Module) -> bool:
    return any(mergeable(m) for m in model.modules())


def _merge_blocks(module: nn.Module) -> int:
    """Replace every mergeable block under ``module`` by its conv, in place; returns how many."""
    count = 0
    for name, child in module.named_children():
        if mergeable(child):
            setattr(module, name, child.reparameterize())
            count += 1
        else:
            count += _merge_blocks(child)
    return count


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (built by ``create_model``) with every mergeable block merged, in eval mode."""
    spec = model_spec(model)
    if spec.transformed_by(TRANSFORM):
        raise TinySRError("reparameterize: the model is already merged")
    merged = copy.deepcopy(model).eval()
    if _merge_blocks(merged) == 0:
        raise TinySRError(f"reparameterize: {spec.name} has no re-parameterizable blocks")
    return record(model, merged, TRANSFORM)


@register_transform(TRANSFORM)
def _rebuild_merge(model: nn.Module) -> nn.Module:
    return reparameterize(model)

"""The one transform seam (DESIGN.md principle 3): pack, prune and reparameterize are registered
model -> model transforms, and each records itself in the model's spec.

A transform has two halves:

* the transform itself (``pack(model)``, ``prune(model, keep)``, ``reparameterize(model)``), which
  returns a new model whose spec lists ``{"name": ..., **args}`` after the ones it already had;
* its **rebuild** (:func:`register_transform`): the structural part alone, applied by
  :func:`tinysr.load` to a freshly built model before the stored weights are loaded, so a model
  file says how it was derived and rebuilds itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import TinySRError
from ..models.registry import model_spec

Rebuild = Callable[..., nn.Module]

_REBUILDS: dict[str, Rebuild] = {}


def register_transform(name: str):
    """Decorator: ``rebuild(model, **args) -> model`` re-derives the structure of transform ``name``."""

    def deco(rebuild: Rebuild) -> Rebuild:
        if name in _REBUILDS:
            raise RuntimeError(f"transform {name!r} registered twice")
        _REBUILDS[name] = rebuild
        return rebuild

    return deco


def list_transforms() -> list[str]:
    return sorted(_REBUILDS)


def record(source: nn.Module, derived: nn.Module, name: str, **args: Any) -> nn.Module:
    """Give ``derived`` the spec of ``source`` with transform ``name`` (and its arguments) appended."""
    derived.tinysr_spec = model_spec(source).with_transform(name, **args)
    return derived


def rebuild(model: nn.Module, transform: dict, where: str) -> nn.Module:
    """Re-apply one recorded transform to ``model`` (``where`` names the file in errors)."""
    name = transform.get("name")
    if name not in _REBUILDS:
        raise TinySRError(f"{where}: unknown model transform {name!r} (known: {', '.join(list_transforms())})")
    args = {k: v for k, v in transform.items() if k != "name"}
    return _REBUILDS[name](model, **args)


def replace_modules(module: nn.Module, convert: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace, in place, every submodule that ``convert`` turns into another module (``None``: keep
    it and look inside); returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        new = convert(child)
        if new is not None:
            setattr(module, name, new)
            count += 1
        else:
            count += replace_modules(child, convert)
    return count


def swap_modules(model: nn.Module, name: str, convert: Callable[[nn.Module], nn.Module | None], done: str, nothing: str) -> nn.Module:
    """A copy of ``model`` in eval mode with the submodules ``convert`` turns into others replaced,
    recorded as transform ``name``; an error if it was ``done`` already or has ``nothing`` to convert."""
    spec = model_spec(model)
    if spec.transformed_by(name):
        raise TinySRError(f"{name}: the model is already {done}")
    derived = copy.deepcopy(model).eval()
    if replace_modules(derived, convert) == 0:
        raise TinySRError(f"{name}: {spec.name} has no {nothing}")
    return record(model, derived, name)

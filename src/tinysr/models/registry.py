"""Named model configurations: ``@register`` a builder, then ``create_model(name, scale=..., **overrides)``.

Each registered builder is a small function taking keyword arguments (at least ``scale``) and
returning an ``nn.Module``. :func:`create_model` records the registry name and the exact
keyword arguments, defaults included, on the module (``model.tinysr_spec``), which is what
:func:`tinysr.save` writes into the model file so that :func:`tinysr.load` rebuilds the same model
without pickle.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import TinySRError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

SUPPORTED_SCALES = (2, 3, 4)


@dataclass
class ModelSpec:
    """What rebuilds a model: registry name and keyword arguments (JSON-serialisable)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    # deploy transforms applied after building, in order, e.g. [{"name": "prune", "widths": {...}},
    # {"name": "pack"}]: load re-applies them (tinysr.compress.TRANSFORMS) before loading weights
    transforms: list[dict[str, Any]] = field(default_factory=list)

    def with_transform(self, name: str, **args: Any) -> ModelSpec:
        return ModelSpec(self.name, dict(self.kwargs), self.transforms + [{"name": name, **args}])

    def transformed_by(self, name: str) -> bool:
        return any(t["name"] == name for t in self.transforms)

    @property
    def scale(self) -> int:
        return int(self.kwargs["scale"])


def register(fn: Callable[..., nn.Module], name: str | None = None) -> Callable[..., nn.Module]:
    """Register ``fn`` under ``name`` (default: its own name); names are unique."""
    name = name or fn.__name__
    if name in _REGISTRY:
        raise RuntimeError(f"model {name!r} registered twice")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def resolved_options(name: str, scale: int = 4, **overrides: Any) -> dict[str, Any]:
    """Every keyword argument the builder of ``name`` would get: ``scale``, ``overrides`` and the
    builder's defaults for the rest. Raises :class:`TinySRError` for an unknown name, scale or option.

    A model's spec records all of them, not only the overrides, so a model file rebuilds the model
    it was saved from even after a builder's default changes, and a finished run can be told apart
    from what its recipe builds now (``train_or_reuse``).
    """
    if name not in _REGISTRY:
        raise TinySRError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if scale not in SUPPORTED_SCALES:
        raise TinySRError(f"scale {scale}: supported scales are {', '.join(map(str, SUPPORTED_SCALES))}")
    params = inspect.signature(_REGISTRY[name]).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in overrides if k not in params and not accepts_any]
    if unknown:
        raise TinySRError(f"model {name!r} has no option {unknown[0]!r}; options: {', '.join(k for k in params if k != 'scale')}")
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, "scale": scale, **overrides}


def create_model(name: str, scale: int = 4, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` for ``scale``; ``overrides`` replace builder defaults."""
    kwargs = resolved_options(name, scale, **overrides)
    model = _REGISTRY[name](**kwargs)
    model.tinysr_spec = ModelSpec(name, kwargs)
    return model


def model_spec(model: nn.Module) -> ModelSpec:
    """The spec a model was created with; raises if it was not built by :func:`create_model`."""
    spec = getattr(model, "tinysr_spec", None)
    if spec is None:
        raise TinySRError("model was not built by tinysr.create_model, so it cannot be saved as a model file")
    return spec

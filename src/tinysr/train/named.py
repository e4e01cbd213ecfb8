"""A table of named factories, shared by loss terms and callbacks (the names a recipe uses)."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import TinySRError


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

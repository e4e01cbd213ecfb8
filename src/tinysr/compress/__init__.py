"""Transforms of a trained model into a deployable one (DESIGN.md principle 3)."""

from . import assl  # noqa: F401  (registers the ``assl`` training callback)
from .pack import pack, set_kernel
from .prune import apply_widths, l1_plan, prune
from .reparameterize import reparameterize


def _rebuild_pack(model):
    return pack(model)


# Structural transforms a model file may record (ModelSpec.transforms): load re-applies them.
TRANSFORMS = {"pack": _rebuild_pack, "prune": apply_widths}

__all__ = ["TRANSFORMS", "apply_widths", "l1_plan", "pack", "prune", "reparameterize", "set_kernel"]

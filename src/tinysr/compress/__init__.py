"""Transforms of a trained model into a deployable one (DESIGN.md principle 3)."""

from .pack import pack, set_kernel
from .reparameterize import reparameterize

# Structural transforms a model file may record (ModelSpec.transforms); load re-applies them.
TRANSFORMS = {"pack": pack}

__all__ = ["TRANSFORMS", "pack", "reparameterize", "set_kernel"]

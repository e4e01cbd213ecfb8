"""Transforms of a trained model into a deployable one (DESIGN.md principle 3)."""

from .reparameterize import reparameterize

__all__ = ["reparameterize"]

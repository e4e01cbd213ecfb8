"""Layers shared by the model families (DESIGN.md: one place for what methods have in common)."""

from .layers import MeanShift, PixelShuffleUpsampler, conv

__all__ = ["MeanShift", "PixelShuffleUpsampler", "conv"]

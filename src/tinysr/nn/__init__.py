"""Layers shared by the model families (DESIGN.md: one place for what methods have in common)."""

from .binary import BinaryConv2d, LearnableBias, RPReLU, RSign, SignActivation, XnorWeight, binary_sign, hard_sign, sign_derivative
from .layers import MeanShift, PixelShuffleUpsampler, conv

__all__ = [
    "BinaryConv2d",
    "LearnableBias",
    "MeanShift",
    "PixelShuffleUpsampler",
    "RPReLU",
    "RSign",
    "SignActivation",
    "XnorWeight",
    "binary_sign",
    "conv",
    "hard_sign",
    "sign_derivative",
]

"""Layers shared by the model families (DESIGN.md: one place for what methods have in common)."""

from .binary import BinaryConv2d, LearnableBias, RPReLU, RSign, SignActivation, XnorWeight, binary_sign, hard_sign, sign_derivative
from .dwt import HaarDWT, HaarIDWT, haar_dwt, haar_idwt, pad_to_even
from .layers import MeanShift, PixelShuffleUpsampler, WeightedSum, conv

__all__ = [
    "BinaryConv2d",
    "HaarDWT",
    "HaarIDWT",
    "LearnableBias",
    "MeanShift",
    "PixelShuffleUpsampler",
    "RPReLU",
    "RSign",
    "SignActivation",
    "WeightedSum",
    "XnorWeight",
    "binary_sign",
    "conv",
    "haar_dwt",
    "haar_idwt",
    "pad_to_even",
    "hard_sign",
    "sign_derivative",
]

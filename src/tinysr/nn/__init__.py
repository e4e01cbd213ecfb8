"""Layers shared by the model families (DESIGN.md: one place for what methods have in common).

Every layer module is imported here, explicitly, so that their cost rules are registered.
"""

from . import bam, packed, rep, torch_costs  # noqa: F401  (explicit list: their cost rules register)
from .binary import (
    ActivationQuantizer,
    BinaryConv2d,
    LearnableBias,
    RPReLU,
    RSign,
    SignActivation,
    WeightQuantizer,
    XnorWeight,
    binary_sign,
    hard_sign,
    sign_derivative,
)
from .dwt import HaarDWT, HaarIDWT, haar_dwt, haar_idwt, pad_to_even
from .layers import FoldableBatchNorm2d, MeanShift, PixelShuffleUpsampler, WeightedSum, conv, kaiming_scaled_init
from .packed import conv_pair_with_stages, conv_with_stages

__all__ = [
    "ActivationQuantizer",
    "BinaryConv2d",
    "FoldableBatchNorm2d",
    "HaarDWT",
    "HaarIDWT",
    "LearnableBias",
    "MeanShift",
    "PixelShuffleUpsampler",
    "RPReLU",
    "RSign",
    "SignActivation",
    "WeightedSum",
    "WeightQuantizer",
    "XnorWeight",
    "binary_sign",
    "conv",
    "conv_pair_with_stages",
    "conv_with_stages",
    "haar_dwt",
    "haar_idwt",
    "pad_to_even",
    "hard_sign",
    "kaiming_scaled_init",
    "sign_derivative",
]

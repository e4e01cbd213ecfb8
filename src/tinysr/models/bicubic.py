"""The papers' bicubic row as a model: MATLAB-compatible bicubic upsampling, no parameters."""

from __future__ import annotations

import torch
from torch import nn

from ..resize import imresize
from .registry import register


class Bicubic(nn.Module):
    """Upsample by ``scale`` with :func:`tinysr.imresize` (SPEC §1); also VDSR/FABNet's pre-upsampler."""

    spatial_reach = 2  # the 4-tap cubic kernel, in input pixels: how far tiling must look (inference.py)

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, self.scale)


@register
def bicubic(scale: int) -> nn.Module:
    return Bicubic(scale)

"""VDSR (Kim et al., CVPR 2016), SPEC §4: pre-upsampled input, 20 conv3x3 layers, global residual."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import conv
from .bicubic import Bicubic
from .registry import register


class VDSR(nn.Module):
    """``out = up(x) + body(up(x))`` with ``up`` the MATLAB bicubic and ``body`` ``depth`` convs.

    The input is the LR image; the model upsamples it itself so that every model in tinysr
    takes LR and returns SR. Colour (3 channels in and out) rather than the paper's Y only.
    """

    def __init__(self, scale: int, channels: int = 64, depth: int = 20, in_channels: int = 3):
        super().__init__()
        self.upsample = Bicubic(scale)
        layers: list[nn.Module] = [conv(in_channels, channels), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [conv(channels, channels), nn.ReLU(inplace=True)]
        layers.append(conv(channels, in_channels))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)
        return x + self.body(x)


@register
def vdsr(scale: int, channels: int = 64, depth: int = 20) -> nn.Module:
    return VDSR(scale, channels, depth)

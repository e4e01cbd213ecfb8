"""EDSR family (Lim et al., CVPRW 2017), SPEC §4: ``edsr_baseline``, ``edsr`` and ASSL's ``ledsr``.

mean shift -> conv head -> residual blocks (conv-ReLU-conv, scaled by ``res_scale``) -> conv,
long skip -> upsampler -> tail -> mean added back. ``upsampler="pixelshuffle"`` is EDSR's
(conv C->4C + PixelShuffle(2) per x2 stage, then a conv3x3 tail to RGB);
``upsampler="one_conv"`` is LEDSR's (one conv C->3*s^2 + PixelShuffle(s), no separate tail).
Images are in [0, 1], so the DIV2K mean is in [0, 1] too.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import MeanShift, PixelShuffleUpsampler, conv
from .registry import register


class ResBlock(nn.Module):
    """``x + res_scale * conv(relu(conv(x)))``."""

    def __init__(self, channels: int, res_scale: float = 1.0):
        super().__init__()
        self.conv1 = conv(channels, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = conv(channels, channels)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv2(self.act(self.conv1(x)))
        return x + res * self.res_scale if self.res_scale != 1 else x + res


class EDSR(nn.Module):
    def __init__(self, scale: int, channels: int = 64, blocks: int = 16, res_scale: float = 1.0, upsampler: str = "pixelshuffle"):
        super().__init__()
        self.sub_mean = MeanShift(sign=-1)
        self.head = conv(3, channels)
        self.body = nn.Sequential(*[ResBlock(channels, res_scale) for _ in range(blocks)])
        self.body_tail = conv(channels, channels)
        if upsampler == "pixelshuffle":
            self.tail = nn.Sequential(PixelShuffleUpsampler(scale, channels), conv(channels, 3))
        elif upsampler == "one_conv":
            self.tail = nn.Sequential(conv(channels, 3 * scale * scale), nn.PixelShuffle(scale))
        else:
            raise ValueError(f"EDSR: unknown upsampler {upsampler!r} (pixelshuffle or one_conv)")
        self.add_mean = MeanShift(sign=+1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(self.sub_mean(x))
        feat = feat + self.body_tail(self.body(feat))
        return self.add_mean(self.tail(feat))


@register
def edsr_baseline(scale: int, channels: int = 64, blocks: int = 16, res_scale: float = 1.0) -> nn.Module:
    """EDSR-baseline: 16 blocks x 64 channels, 1,369.9K params at x2 (SPEC §3)."""
    return EDSR(scale, channels, blocks, res_scale)


@register
def edsr(scale: int, channels: int = 256, blocks: int = 32, res_scale: float = 0.1) -> nn.Module:
    """Full EDSR: 32 blocks x 256 channels, residual scaling 0.1."""
    return EDSR(scale, channels, blocks, res_scale)


@register
def ledsr(scale: int, channels: int = 256, blocks: int = 16, res_scale: float = 1.0) -> nn.Module:
    """LEDSR, ASSL's base network: 16 blocks x 256 channels with a one-conv upsampler."""
    return EDSR(scale, channels, blocks, res_scale, upsampler="one_conv")

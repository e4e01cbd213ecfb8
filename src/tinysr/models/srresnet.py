"""SRResNet (Ledig et al., CVPR 2017), SPEC §4.

conv9x9 + PReLU head; residual blocks conv3x3-[BN]-PReLU-conv3x3-[BN] + identity; conv3x3-[BN]
with a long skip; sub-pixel upsampler with PReLU; conv9x9 tail. ``bn=False`` (the default) is
the BN-free variant that BasicSR calls MSRResNet; ``bn=True`` is Ledig's original. PReLUs are
per channel (a choice: the paper does not say; per-channel costs 64 parameters a layer).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import PixelShuffleUpsampler, conv
from .registry import register


def _maybe_bn(channels: int, bn: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


class SRResBlock(nn.Module):
    def __init__(self, channels: int, bn: bool):
        super().__init__()
        self.conv1 = conv(channels, channels, 3, bias=not bn)
        self.bn1 = _maybe_bn(channels, bn)
        self.act = nn.PReLU(channels)
        self.conv2 = conv(channels, channels, 3, bias=not bn)
        self.bn2 = _maybe_bn(channels, bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class SRResNet(nn.Module):
    def __init__(self, scale: int, channels: int = 64, blocks: int = 16, bn: bool = False):
        super().__init__()
        self.head = nn.Sequential(conv(3, channels, 9), nn.PReLU(channels))
        self.body = nn.Sequential(*[SRResBlock(channels, bn) for _ in range(blocks)])
        self.body_tail = nn.Sequential(conv(channels, channels, 3, bias=not bn), _maybe_bn(channels, bn))
        self.upsampler = PixelShuffleUpsampler(scale, channels, act=nn.PReLU)
        self.tail = conv(channels, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        feat = feat + self.body_tail(self.body(feat))
        return self.tail(self.upsampler(feat))


@register
def srresnet(scale: int, channels: int = 64, blocks: int = 16, bn: bool = False) -> nn.Module:
    return SRResNet(scale, channels, blocks, bn)

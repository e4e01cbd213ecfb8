"""SRResNet (Ledig et al., CVPR 2017), SPEC §4.

``srresnet``: conv9x9 + PReLU head; residual blocks conv3x3-[BN]-PReLU-conv3x3-[BN] + identity;
conv3x3-[BN] with a long skip; sub-pixel upsampler with PReLU; conv9x9 tail. ``bn=True`` is
Ledig's original, ``bn=False`` (the default) drops its BN. PReLUs are per channel (a choice: the
paper does not say; per-channel costs 64 parameters a layer).

``msrresnet``: BasicSR's "modified SRResNet" (``basicsr/archs/srresnet_arch.py``), a different
network: conv3x3 + LeakyReLU(0.1) head, 16 blocks conv-ReLU-conv + identity (no long skip),
conv C->C*s^2 + PixelShuffle + LeakyReLU per x2 stage (one x3 stage), conv3x3 + LeakyReLU,
conv3x3 to RGB, plus the bilinear-upsampled input; every conv starts from Kaiming-normal
weights times 0.1 with zero bias (``init="default"`` keeps PyTorch's). It is the frame of BBCU's
networks (``models/binary.py``'s ``BinaryEDSR``) with full-precision blocks, and BBCU-M's
official recipe starts from a trained one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import PixelShuffleUpsampler, conv, kaiming_scaled_init
from .binary import BinaryEDSR
from .edsr import ResBlock
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


@register
def msrresnet(scale: int, channels: int = 64, blocks: int = 16, init: str = "official") -> nn.Module:
    """BasicSR's MSRResNet: BBCU's frame with full-precision ``x + conv(relu(conv(x)))`` blocks."""
    if init not in ("official", "default"):
        raise ValueError(f"MSRResNet: init must be official or default, got {init!r}")
    model = BinaryEDSR(scale, nn.Sequential(*[ResBlock(channels) for _ in range(blocks)]), channels)
    if init == "official":
        kaiming_scaled_init([model], 0.1)
    return model

"""BaseNet and its re-parameterizable training forms: RepSR, ECBSR, RepVGG (SPEC §7).

BaseNet is the plain VGG-style network every form deploys to:

    conv3x3 3->C + PReLU, N x [conv3x3 C->C + PReLU], conv3x3 C->3*s^2, PixelShuffle(s), + nearest-upsampled input

In the training forms every conv3x3 (head, body and tail) is a block of :mod:`tinysr.nn.rep`;
:func:`tinysr.compress.reparameterize` merges each into one conv3x3 and returns a ``basenet``.
The ``freeze_bn`` callback is RepSR's frozen BN: after a fraction of training (default 0.9) the
BN layers normalise with their population statistics while their affine parameters keep learning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..io import rgb_to_ycbcr, ycbcr_to_rgb
from ..nn.rep import ECB, FreezableBatchNorm2d, RepSRBlock, RepVGGBlock
from ..plugins import Callback, register_callback
from .bicubic import Bicubic
from .registry import register


def _plain_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


BLOCKS = {
    "conv": _plain_conv,
    "repsr": RepSRBlock,
    "ecb": ECB,
    "repvgg": RepVGGBlock,
}


class BaseNet(nn.Module):
    def __init__(self, scale: int, channels: int = 16, blocks: int = 4, block: str = "conv", colors: int = 3, **block_kw):
        super().__init__()
        self.scale, self.channels, self.blocks = scale, channels, blocks

        def make(cin, cout):
            return BLOCKS[block](cin, cout, **block_kw)

        self.head = make(colors, channels)
        self.head_act = nn.PReLU(channels)
        self.body = nn.ModuleList(make(channels, channels) for _ in range(blocks))
        self.body_acts = nn.ModuleList(nn.PReLU(channels) for _ in range(blocks))
        self.tail = make(channels, colors * scale * scale)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head_act(self.head(x))
        for conv, act in zip(self.body, self.body_acts):
            y = act(conv(y))
        return self.shuffle(self.tail(y)) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


class YChannelOnly(nn.Module):
    """Super-resolves the luma only, as the official ECBSR does (``colors: 1``): ``net`` maps the Y
    channel (BT.601, SPEC §1, scaled to [0, 1]) to its HR Y; Cb and Cr are upsampled by MATLAB
    bicubic; the result is returned as RGB, so the rest of tinysr sees an RGB model."""

    def __init__(self, net: nn.Module, scale: int):
        super().__init__()
        self.net = net
        self.chroma = Bicubic(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ycc = rgb_to_ycbcr(x) / 255.0
        y = self.net(ycc[:, :1])
        return ycbcr_to_rgb(torch.cat([y, self.chroma(ycc[:, 1:])], dim=1) * 255.0)


COLORS = (1, 3)


def _base_net(scale: int, channels: int, blocks: int, block: str, colors: int, **block_kw) -> nn.Module:
    if colors not in COLORS:
        raise ValueError(f"colors must be 1 (the Y channel) or 3 (RGB), got {colors}")
    net = BaseNet(scale, channels, blocks, block, colors, **block_kw)
    return YChannelOnly(net, scale) if colors == 1 else net


# ``colors``: 3 (RGB, the default) or 1 (the Y channel only, Cb/Cr by bicubic: YChannelOnly).
@register
def basenet(scale: int, channels: int = 16, blocks: int = 4, colors: int = 3) -> nn.Module:
    """The plain network (and what every training form below deploys to)."""
    return _base_net(scale, channels, blocks, "conv", colors)


@register
def repsr(scale: int, channels: int = 16, blocks: int = 4, expansion: int = 2, colors: int = 3) -> nn.Module:
    return _base_net(scale, channels, blocks, "repsr", colors, expansion=expansion)


@register
def ecbsr(
    scale: int,
    channels: int = 16,
    blocks: int = 4,
    depth_multiplier: int = 2,
    identity: bool = False,
    mid_width: str = "output",
    colors: int = 3,
) -> nn.Module:
    """ECBSR: every conv an ECB; ``mid_width`` ``output`` (the official widths) or ``input``;
    ``colors=1`` is the official Y-only ECBSR."""
    return _base_net(scale, channels, blocks, "ecb", colors, depth_multiplier=depth_multiplier, identity=identity, mid_width=mid_width)


@register
def repvgg_sr(scale: int, channels: int = 16, blocks: int = 4, colors: int = 3) -> nn.Module:
    return _base_net(scale, channels, blocks, "repvgg", colors)


# The papers' named sizes: M4 (4 body blocks) with C16 / C32 channels.
@register
def repsr_m4c16(scale: int) -> nn.Module:
    """repsr with 4 body blocks of 16 channels (M4C16)."""
    return repsr(scale, channels=16, blocks=4)


@register
def repsr_m4c32(scale: int) -> nn.Module:
    """repsr with 4 body blocks of 32 channels (M4C32)."""
    return repsr(scale, channels=32, blocks=4)


@register
def ecbsr_m4c16(scale: int) -> nn.Module:
    """ecbsr with 4 body blocks of 16 channels (M4C16)."""
    return ecbsr(scale, channels=16, blocks=4)


@register
def ecbsr_m4c32(scale: int) -> nn.Module:
    """ecbsr with 4 body blocks of 32 channels (M4C32)."""
    return ecbsr(scale, channels=32, blocks=4)


@register_callback("freeze_bn")
class FreezeBN(Callback):
    """RepSR's frozen BN: from ``at`` (fraction of training) on, BN uses population statistics in
    training too; ``enabled: false`` keeps ordinary BN (for the ablation)."""

    def __init__(self, at: float = 0.9, enabled: bool = True):
        self.at, self.enabled = at, enabled

    def on_step_start(self, trainer, iteration: int) -> None:
        frozen = self.enabled and iteration >= self.at * trainer.total_iterations
        for m in trainer.model.modules():
            if isinstance(m, FreezableBatchNorm2d):
                m.freeze_stats = frozen

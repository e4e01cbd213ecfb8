"""1-bit baselines on the SR backbones (SPEC §5.1, §5.2): BNN, Bi-Real and ReActNet as *schemes*.

A scheme says how each binary conv is wrapped; the networks are the same for every scheme, so
the papers' baseline rows are configurations, not copies:

==========  ================================  ====================  =====================
scheme      activation quantizer              after the conv        after the residual add
==========  ================================  ====================  =====================
bnn         sign, clipped STE                 BN (``bn=True``)      -
bireal      sign, ApproxSign                  BN (``bn=True``)      -
reactnet    RSign (learnable threshold),      BN (``bn=True``)      RPReLU
            ApproxSign
==========  ================================  ====================  =====================

Weights are ``sign(W) * mean|W|`` (XNOR scaling, clip-STE) in every scheme: without the scale a
BN-free residual of 576 +-1 products per output would explode. Every binary conv has a
full-precision identity skip around it (the norm in binary SR, SPEC §5.1) and no bias.

Networks:

* ``edsr_<scheme>``: BBCU's EDSR-style network (SPEC §5.1): FP conv 3->64 + LeakyReLU(0.1), 16
  blocks of 2 binary units, FP upsampler (conv 64->64*s^2 + PixelShuffle + LeakyReLU per x2 stage,
  one x3 stage), FP conv_hr + LeakyReLU, FP conv_last, + bilinear-upsampled input. 225K params /
  18.55G OPs at x2, 372K / 79.20G at x4 (320x180 input; SPEC §3).
* ``vdsr_<scheme>``: VDSR with its 18 middle convs binary.
* ``srresnet_<scheme>``: SRResNet with the residual blocks' convs binary; head, body tail,
  upsampler and tail full precision.

Every scheme has BN after the binary conv by default, ReActNet included, as in its paper;
``bn=False`` gives the BN-free units BBCU argues for in restoration networks (with ReActNet's
scheme, its per-channel threshold and RPReLU remain).

Where the RPReLU sits (``rprelu_position``): ReActNet puts it after the residual add
(``after_add``, the default, as in ReActNet), so the full-precision identity path runs through one
RPReLU per unit, 32 in a row in ``edsr_reactnet``, whose 0.25 slopes shrink the negative part of the
stream at every unit. BBCU found that this position matters in restoration networks and moved the
activation into the branch (``in_branch``: ``x + RPReLU(norm(bconv(x)))``), leaving the identity
path linear. Both are offered so that comparing them is a configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import BinaryConv2d, FoldableBatchNorm2d, PixelShuffleUpsampler, RPReLU, RSign, SignActivation, XnorWeight, conv, conv_with_stages
from .bicubic import Bicubic
from .registry import register


@dataclass(frozen=True)
class Scheme:
    estimator: str  # activation sign estimator: ste | approx
    threshold: bool  # RSign (learnable per-channel threshold) instead of plain sign
    rprelu: bool  # RPReLU after the residual add
    bn: bool  # default for BN after each binary conv
    weight_estimator: str = "ste"  # XnorWeight's estimator (BBCU's code: clip)


SCHEMES = {
    "bnn": Scheme("ste", threshold=False, rprelu=False, bn=True),
    "bireal": Scheme("approx", threshold=False, rprelu=False, bn=True),
    "reactnet": Scheme("approx", threshold=True, rprelu=True, bn=True),
}


def binary_conv3x3(channels: int, scheme: Scheme, detach_scale: bool = True, out_channels: int | None = None) -> BinaryConv2d:
    act = RSign(channels, scheme.estimator) if scheme.threshold else SignActivation(scheme.estimator)
    weights = XnorWeight(scheme.weight_estimator, detach_scale=detach_scale)
    out = channels if out_channels is None else out_channels
    return BinaryConv2d(channels, out, 3, padding=1, bias=False, act_quantizer=act, weight_quantizer=weights)


RPRELU_POSITIONS = ("after_add", "in_branch")


class BinaryUnit(nn.Module):
    """One binary conv with its full-precision identity skip: ``post(norm(binary_conv(x)) + x)``, or
    ``x + post(norm(binary_conv(x)))`` with ``rprelu_position="in_branch"``."""

    def __init__(self, channels: int, scheme: Scheme, bn: bool, rprelu_position: str = "after_add", detach_scale: bool = True):
        super().__init__()
        if rprelu_position not in RPRELU_POSITIONS:
            raise ValueError(f"rprelu_position must be one of {', '.join(RPRELU_POSITIONS)}, got {rprelu_position!r}")
        if rprelu_position != "after_add" and not scheme.rprelu:
            raise ValueError(f"rprelu_position={rprelu_position!r} needs a scheme with RPReLU (reactnet)")
        self.conv = binary_conv3x3(channels, scheme, detach_scale)
        self.norm = FoldableBatchNorm2d(channels) if bn else nn.Identity()
        self.post = RPReLU(channels) if scheme.rprelu else nn.Identity()
        self.in_branch = rprelu_position == "in_branch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # packed, the norm, the add and the RPReLU fold into the conv's output pass
        if self.in_branch:  # x + post(norm(conv(x)))
            return conv_with_stages(self.conv, x, [self.norm, self.post], residual=x)
        return conv_with_stages(self.conv, x, [self.norm], residual=x, after=[self.post])  # post(norm(conv(x)) + x)


def binary_body(
    channels: int, units: int, scheme: Scheme, bn: bool, rprelu_position: str = "after_add", detach_scale: bool = True
) -> nn.Sequential:
    return nn.Sequential(*[BinaryUnit(channels, scheme, bn, rprelu_position, detach_scale) for _ in range(units)])


UPSAMPLE_STAGES = {2: [2], 3: [3], 4: [2, 2]}  # the pixel-shuffle factor of each upsampler stage, per scale


class BBCUUpsampler(nn.Sequential):
    """conv C->C*s^2 + PixelShuffle(s) + LeakyReLU(0.1) per stage (two x2 stages for x4)."""

    def __init__(self, scale: int, channels: int):
        layers: list[nn.Module] = []
        for s in UPSAMPLE_STAGES[scale]:
            layers += [conv(channels, channels * s * s), nn.PixelShuffle(s), nn.LeakyReLU(0.1, inplace=True)]
        super().__init__(*layers)


class BinaryEDSR(nn.Module):
    """BBCU's EDSR-style binary network (SPEC §5.1) with a pluggable body (and, for BBCU-M, a
    pluggable upsampler and conv_hr).

    ``alignment`` is BBCU's residual alignment: the image enters multiplied by ``k`` and leaves
    divided by it, so that the full-precision residual stream is on the scale of the binary
    convs' outputs (1 leaves the image as it is)."""

    def __init__(
        self,
        scale: int,
        body: nn.Module,
        channels: int = 64,
        alignment: float = 1.0,
        upsampler: nn.Module | None = None,
        conv_hr: nn.Module | None = None,
    ):
        super().__init__()
        self.scale, self.alignment = scale, alignment
        self.head = nn.Sequential(conv(3, channels), nn.LeakyReLU(0.1, inplace=True))
        self.body = body
        self.upsampler = BBCUUpsampler(scale, channels) if upsampler is None else upsampler
        self.conv_hr = nn.Sequential(conv(channels, channels), nn.LeakyReLU(0.1, inplace=True)) if conv_hr is None else conv_hr
        self.conv_last = conv(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.alignment != 1.0:
            x = x * self.alignment
        out = self.conv_last(self.conv_hr(self.upsampler(self.body(self.head(x)))))
        out = out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out / self.alignment if self.alignment != 1.0 else out


class BinaryVDSR(nn.Module):
    """VDSR (SPEC §4) whose ``depth - 2`` middle convs are binary units; first and last stay FP."""

    def __init__(self, scale: int, body: nn.Module, channels: int = 64):
        super().__init__()
        self.upsample = Bicubic(scale)
        self.head = nn.Sequential(conv(3, channels), nn.ReLU(inplace=True))
        self.body = body
        self.tail = conv(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)
        return x + self.tail(self.body(self.head(x)))


class BinarySRResNet(nn.Module):
    """SRResNet (SPEC §4) whose residual blocks are pairs of binary units; the rest stays FP."""

    def __init__(self, scale: int, body: nn.Module, channels: int = 64):
        super().__init__()
        self.head = nn.Sequential(conv(3, channels, 9), nn.PReLU(channels))
        self.body = body
        self.body_tail = conv(channels, channels)
        self.upsampler = PixelShuffleUpsampler(scale, channels, act=nn.PReLU)
        self.tail = conv(channels, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        return self.tail(self.upsampler(feat + self.body_tail(self.body(feat))))


def _network(
    network: type, scheme: str, scale: int, bn: bool, channels: int, units: int, rprelu_position: str, detach_scale: bool
) -> nn.Module:
    return network(scale, binary_body(channels, units, SCHEMES[scheme], bn, rprelu_position, detach_scale), channels)


# One registered function per named network: edsr_* 16 blocks x 2 units; vdsr_* 18 middle layers;
# srresnet_* 16 blocks x 2 units. ``bn`` defaults to the scheme's own choice; ``detach_scale=False``
# lets the weight gradient through XNOR's scale too (the papers' code detaches it).
@register
def edsr_bnn(
    scale: int, bn: bool = True, channels: int = 64, units: int = 32, rprelu_position: str = "after_add", detach_scale: bool = True
) -> nn.Module:
    """BBCU's EDSR-style network with the BNN scheme (clipped STE, BN)."""
    return _network(BinaryEDSR, "bnn", scale, bn, channels, units, rprelu_position, detach_scale)


@register
def edsr_bireal(
    scale: int, bn: bool = True, channels: int = 64, units: int = 32, rprelu_position: str = "after_add", detach_scale: bool = True
) -> nn.Module:
    """BBCU's EDSR-style network with the Bi-Real scheme (ApproxSign, BN)."""
    return _network(BinaryEDSR, "bireal", scale, bn, channels, units, rprelu_position, detach_scale)


@register
def edsr_reactnet(
    scale: int, bn: bool = True, channels: int = 64, units: int = 32, rprelu_position: str = "after_add", detach_scale: bool = True
) -> nn.Module:
    """BBCU's EDSR-style network with the ReActNet scheme (RSign, BN, RPReLU)."""
    return _network(BinaryEDSR, "reactnet", scale, bn, channels, units, rprelu_position, detach_scale)


@register
def vdsr_bnn(
    scale: int, bn: bool = True, channels: int = 64, units: int = 18, rprelu_position: str = "after_add", detach_scale: bool = True
) -> nn.Module:
    """Binary VDSR (18 binary middle layers), BNN scheme."""
    return _network(BinaryVDSR, "bnn", scale, bn, channels, units, rprelu_position, detach_scale)


@register
def vdsr_bireal(
    scale: int, bn: bool = True, channels: int = 64, units: int = 18, rprelu_position: str = "after_add", detach_scale: bool = True
) -> nn.Module:
    """Binary VDSR (18 binary middle layers), Bi-Real scheme."""
    return _network(BinaryVDSR, "bireal", scale, bn, channels, units, rprelu_position, detach_scale)


@register
def vdsr_reactnet(
    scale: int, bn: bool = True, channels: int = 64, units: int = 18, rprelu_position: str = "after_add", detach_scale: bool = True
) -> nn.Module:
    """Binary VDSR (18 binary middle layers), ReActNet scheme."""
    return _network(BinaryVDSR, "reactnet", scale, bn, channels, units, rprelu_position, detach_scale)


@register
def srresnet_bnn(
    scale: int, bn: bool = True, channels: int = 64, units: int = 32, rprelu_position: str = "after_add", detach_scale: bool = True
) -> nn.Module:
    """Binary SRResNet (the residual blocks' 32 convs binary), BNN scheme."""
    return _network(BinarySRResNet, "bnn", scale, bn, channels, units, rprelu_position, detach_scale)


@register
def srresnet_bireal(
    scale: int, bn: bool = True, channels: int = 64, units: int = 32, rprelu_position: str = "after_add", detach_scale: bool = True
) -> nn.Module:
    """Binary SRResNet (the residual blocks' 32 convs binary), Bi-Real scheme."""
    return _network(BinarySRResNet, "bireal", scale, bn, channels, units, rprelu_position, detach_scale)


@register
def srresnet_reactnet(
    scale: int, bn: bool = True, channels: int = 64, units: int = 32, rprelu_position: str = "after_add", detach_scale: bool = True
) -> nn.Module:
    """Binary SRResNet (the residual blocks' 32 convs binary), ReActNet scheme."""
    return _network(BinarySRResNet, "reactnet", scale, bn, channels, units, rprelu_position, detach_scale)

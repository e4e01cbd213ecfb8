"""E2FIF (Song et al., TIP 2023), SPEC §8: end-to-end full-precision information flow on EDSR.

Every binary conv has a full-precision skip around it, inside each residual block too, so
full-precision information flows from the head to the tail past every 1-bit layer. Facts from
the official code (``pppLang/E2FIF``, ``model/edsr_e2fif.py``, ``option.py``, ``train.sh``):

* EDSR's frame: mean shift, full-precision head conv 3->C, 16 blocks, a global skip from the head
  to the body's end, a one-step tail (conv C->3*s^2 + PixelShuffle(s)) and the mean added back;
  pixels in [0, 255] (``rgb_range``; ``pixel_range`` here, 1 for [0, 1]);
* a block is ``u = x + BN(bconv(x)); a = LeakyReLU(0.1)(u); a + BN(bconv(a))`` (``res_scale``
  on both branches), its binary convs with a bias;
* activations: ``sign`` with ApproxSign's gradient; weights: plain ``sign(W)``, no scale (the BN
  after it sets the scale), the gradient passed through unchanged (the ``identity`` estimator).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import BinaryConv2d, FoldableBatchNorm2d, MeanShift, SignActivation, XnorWeight, conv, conv_with_stages
from ..nn.layers import DIV2K_RGB_MEAN
from .registry import register


def e2fif_conv(channels: int) -> BinaryConv2d:
    """E2FIF's binary 3x3 conv: sign activations (ApproxSign), unscaled sign weights, a bias."""
    return BinaryConv2d(
        channels,
        channels,
        3,
        padding=1,
        bias=True,
        act_quantizer=SignActivation("approx"),
        weight_quantizer=XnorWeight("identity", scale=False),
    )


class E2FIFBlock(nn.Module):
    """``u = x + s BN(bconv(x)); a = LeakyReLU(u); a + s BN(bconv(a))`` with ``s = res_scale``."""

    def __init__(self, channels: int, res_scale: float = 1.0):
        super().__init__()
        self.conv1, self.norm1 = e2fif_conv(channels), FoldableBatchNorm2d(channels)
        self.conv2, self.norm2 = e2fif_conv(channels), FoldableBatchNorm2d(channels)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.res_scale = res_scale

    def _unit(self, conv: nn.Module, norm: nn.Module, x: torch.Tensor, after=()) -> torch.Tensor:
        if self.res_scale == 1.0:  # packed, BN, the add and the activation fold into the conv's output pass
            return conv_with_stages(conv, x, [norm], residual=x, after=after)
        y = norm(conv(x)).mul(self.res_scale) + x
        for m in after:
            y = m(y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self._unit(self.conv1, self.norm1, x, after=[self.act])
        return self._unit(self.conv2, self.norm2, a)


class E2FIFEDSR(nn.Module):
    def __init__(self, scale: int, channels: int = 64, blocks: int = 16, res_scale: float = 1.0, pixel_range: float = 255.0):
        super().__init__()
        if pixel_range <= 0:
            raise ValueError(f"pixel_range must be positive, got {pixel_range}")
        self.pixel_range = float(pixel_range)
        mean = tuple(m * self.pixel_range for m in DIV2K_RGB_MEAN)
        self.sub_mean, self.add_mean = MeanShift(mean, sign=-1), MeanShift(mean, sign=1)
        self.head = conv(3, channels)
        self.body = nn.Sequential(*[E2FIFBlock(channels, res_scale) for _ in range(blocks)])
        self.tail = nn.Sequential(conv(channels, 3 * scale * scale), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(self.sub_mean(x * self.pixel_range))
        out = self.add_mean(self.tail(self.body(feat) + feat))
        return out / self.pixel_range


@register
def edsr_e2fif(scale: int, channels: int = 64, blocks: int = 16, res_scale: float = 1.0, pixel_range: float = 255.0) -> nn.Module:
    """EDSR with E2FIF's binary blocks (the official ``edsr_e2fif``)."""
    return E2FIFEDSR(scale, channels, blocks, res_scale, pixel_range)

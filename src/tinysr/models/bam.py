"""BAM networks (Xin et al., ECCV 2020), SPEC §5.3: ``vdsr_bam``, ``srresnet_bam``, ``bsrn``.

Every binary conv here is a :class:`~tinysr.nn.BinaryConv2d` whose quantizers are BAM's
accumulated ones (``nn/bam.py``), followed by BN and a full-precision identity skip (the
``bnn`` unit of ``models/binary.py``, with BAM's quantizers).

* ``vdsr_bam`` / ``srresnet_bam``: the binary VDSR / SRResNet bodies with one accumulation group
  over all their binary convs (long range: layer n accumulates the weights and the activations of
  every earlier body layer).
* ``bsrn`` (``refs/bam_bsrn_hpb.png``): FP conv3x3 (64) + ReLU; M HPB blocks, each a chain of
  LB-blocks (binary 3x3, then two binary 1x1, 64 channels, each unit with its identity skip);
  pixel-shuffle upsampler; FP conv3x3 + ReLU (``out_relu=False`` drops the ReLU). Weight
  accumulation: the 3x3 convs of the LB-blocks of one HPB (long range) and the two 1x1 convs of
  each LB-block (short range); activation accumulation over the three convs of each LB-block.

**BSRN size.** M = 5 HPB blocks of 4 LB-blocks: at x4 1,201K parameters counted as the paper
counts (every weight, binary or not, one parameter; per-channel BN/scales excluded), against the
paper's 1216K. ``tinysr profile`` counts binary weights as 1/32 (SPEC §3) and shows both.

``accumulate=False`` gives the same networks without accumulation (the ablation);
``activation_scale="mean"`` weighs the accumulated activations by ``E(A)`` as the paper writes it
instead of ``E(|A|)`` (``nn/bam.py`` says why the magnitude is the default). The
``bam_solve`` callback refreshes the weight coefficients (``every`` iterations, default 100).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import BinaryConv2d, PixelShuffleUpsampler, conv
from ..nn.bam import AccumulatedSign, AccumulatedWeight, AccumulationGroup
from ..plugins import Callback, register_callback
from .binary import BinarySRResNet, BinaryVDSR
from .registry import register


def bam_conv(cin: int, cout: int, kernel: int, weights: AccumulationGroup, acts: AccumulationGroup) -> BinaryConv2d:
    """A binary conv joining a weight group and an activation group (in forward order)."""
    conv = BinaryConv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
    conv.weight_quantizer = AccumulatedWeight(weights, weights.add(conv))
    conv.act_quantizer = AccumulatedSign(acts, acts.add(conv), cin)
    return conv


class BAMUnit(nn.Module):
    """``BN(bam_conv(x)) + x``."""

    def __init__(self, conv: BinaryConv2d):
        super().__init__()
        self.conv = conv
        self.norm = nn.BatchNorm2d(conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)) + x


def bam_body(channels: int, units: int, accumulate: bool, activation_scale: str = "abs_mean") -> nn.Sequential:
    weights, acts = AccumulationGroup(accumulate), AccumulationGroup(accumulate, activation_scale)
    return nn.Sequential(*[BAMUnit(bam_conv(channels, channels, 3, weights, acts)) for _ in range(units)])


@register
def vdsr_bam(scale: int, channels: int = 64, units: int = 18, accumulate: bool = True, activation_scale: str = "abs_mean") -> nn.Module:
    """Binary VDSR (18 binary layers) with bit accumulation over all of them."""
    return BinaryVDSR(scale, bam_body(channels, units, accumulate, activation_scale), channels)


@register
def srresnet_bam(scale: int, channels: int = 64, units: int = 32, accumulate: bool = True, activation_scale: str = "abs_mean") -> nn.Module:
    """Binary SRResNet (16 blocks x 2 binary units) with bit accumulation over all of them."""
    return BinarySRResNet(scale, bam_body(channels, units, accumulate, activation_scale), channels)


class LBBlock(nn.Module):
    """Binary 3x3 then two binary 1x1, each with BN and an identity skip (the LB-block)."""

    def __init__(self, channels: int, weights3: AccumulationGroup, accumulate: bool):
        super().__init__()
        weights1, acts = AccumulationGroup(accumulate), AccumulationGroup(accumulate)
        self.units = nn.Sequential(
            BAMUnit(bam_conv(channels, channels, 3, weights3, acts)),
            BAMUnit(bam_conv(channels, channels, 1, weights1, acts)),
            BAMUnit(bam_conv(channels, channels, 1, weights1, acts)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x)


class HPBBlock(nn.Module):
    """LB-blocks sharing long-range 3x3 weight accumulation.

    No extra identity over the chain: every unit inside already carries one, so a block-level
    skip would add the input twice and double the feature scale per HPB (2^5 over five HPBs at
    initialisation, enough to drive the output ReLU dead in the first steps).
    """

    def __init__(self, channels: int, lb_blocks: int, accumulate: bool):
        super().__init__()
        weights3 = AccumulationGroup(accumulate)
        self.blocks = nn.Sequential(*[LBBlock(channels, weights3, accumulate) for _ in range(lb_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class BSRN(nn.Module):
    def __init__(
        self, scale: int, channels: int = 64, hpb_blocks: int = 5, lb_blocks: int = 4, accumulate: bool = True, out_relu: bool = True
    ):
        super().__init__()
        self.head = nn.Sequential(conv(3, channels), nn.ReLU(inplace=True))
        self.body = nn.Sequential(*[HPBBlock(channels, lb_blocks, accumulate) for _ in range(hpb_blocks)])
        self.upsampler = PixelShuffleUpsampler(scale, channels)
        self.tail = nn.Sequential(conv(channels, 3), nn.ReLU(inplace=True)) if out_relu else conv(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.upsampler(self.body(self.head(x))))


@register
def bsrn(
    scale: int, channels: int = 64, hpb_blocks: int = 5, lb_blocks: int = 4, accumulate: bool = True, out_relu: bool = True
) -> nn.Module:
    """BAM's BSRN: M HPB blocks of LB-blocks (see the module docstring)."""
    return BSRN(scale, channels, hpb_blocks, lb_blocks, accumulate, out_relu)


def paper_params(model: nn.Module) -> int:
    """Parameters as the BAM paper counts them: every conv weight and bias one parameter."""
    return sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in (m.weight, m.bias) if p is not None)


@register_callback("bam_solve")
class BAMSolve(Callback):
    """Re-solve every accumulated weight's coefficients at the start and every ``every`` iterations."""

    def __init__(self, every: int = 100, sweeps: int = 2):
        self.every, self.sweeps = every, sweeps

    def _solve(self, model: nn.Module) -> None:
        for m in model.modules():
            if isinstance(m, AccumulatedWeight):
                m.solve(self.sweeps)

    def on_train_start(self, trainer) -> None:
        if not trainer.resume:
            self._solve(trainer.model)

    def on_step_start(self, trainer, iteration: int) -> None:
        if iteration > 0 and iteration % self.every == 0:
            self._solve(trainer.model)

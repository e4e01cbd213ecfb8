"""BAM networks (Xin et al., ECCV 2020), SPEC §5.3: ``vdsr_bam``, ``srresnet_bam``, ``bsrn``.

Every binary conv here is a :class:`~tinysr.nn.BinaryConv2d` whose quantizers are BAM's
accumulated ones (``nn/bam.py``).

* ``vdsr_bam`` / ``srresnet_bam``: the binary VDSR / SRResNet bodies, each binary conv followed by
  BN and a full-precision identity skip (the ``bnn`` unit of ``models/binary.py``), with one
  accumulation group over all their binary convs (long range: layer n accumulates the weights and
  the activations of every earlier body layer).
* ``bsrn`` (``refs/bam_bsrn_hpb.png``): FP conv3x3 (64) + ReLU; M HPB blocks, each a chain of
  LB-blocks; pixel-shuffle upsampler; FP conv3x3 + ReLU. Weight accumulation: the 3x3 convs of
  the LB-blocks of one HPB (long range) and the two 1x1 convs of each LB-block (short range).

  ``wiring="figure"`` (default) is the LB-block as drawn (:class:`FigureLBBlock`): binary 3x3,
  binary 1x1, binary 1x1, no BN, the beta-weighted activation sums as the only skips, activation
  accumulation over the two 1x1 inputs. ``wiring="units"`` is an earlier reading
  (:class:`UnitsLBBlock`: each conv a BAM unit with BN and identity, accumulation over all three).

  *Two additions the CPU recipe makes.* Nothing in the drawn network bypasses the binary 3x3
  convs: the head's features reach the upsampler only through the sign of the previous
  LB-block's output, 20 binary 3x3 layers in a row. ``hpb_skip=True`` adds each HPB block's input
  to its output, so a block whose binary convs' outputs are small starts near the identity;
  ``image_skip=True`` adds the bilinear-upsampled input to the output, as the EDSR-style binary
  networks do, so the network learns a residual over interpolation (use it with
  ``out_relu=False``: a ReLU would clip the residual's negative half). ``bsrn_x2_cpu`` uses both,
  ``bsrn_figure_x2_cpu`` neither. With PyTorch's initialisation the binary convs' outputs are as
  large as the features they are added to, so an HPB block does not start near the identity;
  ``binary_init="small"`` draws the binary weights from U(0, 1e-3), FABNet's official
  initialisation, and it does (``bsrn_x2_cpu`` uses it; ``bsrn_default_init_x2_cpu`` does not).
  BENCHMARKS.md has them at equal budget.

**BSRN size.** M = 5 HPB blocks of 4 LB-blocks: at x4 1,200K parameters counted as the paper
counts (every weight, binary or not, one parameter; per-channel BN/scales excluded), against the
paper's 1216K. ``tinysr profile`` counts binary weights as 1/32 (SPEC §3) and shows both.

``accumulate=False`` gives the same networks without accumulation (the ablation);
``activation_scale="mean"`` weighs the accumulated activations by ``E(A)`` as the paper writes it
instead of ``E(|A|)``; ``weight_coefficients="solved"`` solves the weight coefficients by eq. 6
(degenerate: ``nn/bam.py`` says why) instead of learning them. With solved coefficients the
``bam_solve`` callback refreshes them (``every`` iterations, default 100).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import BinaryConv2d, FoldableBatchNorm2d, PixelShuffleUpsampler, conv, conv_with_stages
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
        self.norm = FoldableBatchNorm2d(conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_with_stages(self.conv, x, [self.norm], residual=x)  # packed: one output pass


def bam_body(channels: int, units: int, accumulate: bool, activation_scale: str, weight_coefficients: str) -> nn.Sequential:
    weights = AccumulationGroup(accumulate, coefficients=weight_coefficients)
    acts = AccumulationGroup(accumulate, activation_scale)
    return nn.Sequential(*[BAMUnit(bam_conv(channels, channels, 3, weights, acts)) for _ in range(units)])


@register
def vdsr_bam(
    scale: int,
    channels: int = 64,
    units: int = 18,
    accumulate: bool = True,
    activation_scale: str = "abs_mean",
    weight_coefficients: str = "learned",
) -> nn.Module:
    """Binary VDSR (18 binary layers) with bit accumulation over all of them."""
    return BinaryVDSR(scale, bam_body(channels, units, accumulate, activation_scale, weight_coefficients), channels)


@register
def srresnet_bam(
    scale: int,
    channels: int = 64,
    units: int = 32,
    accumulate: bool = True,
    activation_scale: str = "abs_mean",
    weight_coefficients: str = "learned",
) -> nn.Module:
    """Binary SRResNet (16 blocks x 2 binary units) with bit accumulation over all of them."""
    return BinarySRResNet(scale, bam_body(channels, units, accumulate, activation_scale, weight_coefficients), channels)


class FigureLBBlock(nn.Module):
    """The LB-block of ``refs/bam_bsrn_hpb.png``: binary 3x3, then two binary 1x1, no BN::

        A1 = conv3(x);   A2 = conv1a(A1) + b1 A1;   out = conv1b(A2) + (b1 A1 + b2 A2)

    ``b_k A_k`` (``b_k = b_k^scale E|A_k|``) are the activation-accumulation terms of the two 1x1
    convs' inputs, so each skip carries the running sum whose normalised sign the next 1x1 conv
    takes as its binary input. The 3x3 input is binarised on its own (sign of its normalised
    ``b A``): the figure accumulates activations around the 1x1 convs only. Without accumulation
    (the ablation) each skip is that conv's own term.
    """

    def __init__(self, channels: int, weights3: AccumulationGroup, accumulate: bool, activation_scale: str, weight_coefficients: str):
        super().__init__()
        weights1 = AccumulationGroup(accumulate, coefficients=weight_coefficients)
        self.acts = AccumulationGroup(accumulate, activation_scale)
        own = AccumulationGroup(False, activation_scale)
        self.conv3 = bam_conv(channels, channels, 3, weights3, own)
        self.conv1a = bam_conv(channels, channels, 1, weights1, self.acts)
        self.conv1b = bam_conv(channels, channels, 1, weights1, self.acts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a1 = self.conv3(x)
        a2 = self.conv1a(a1) + self.acts.act_sum  # conv1a's quantizer has just formed b1 A1
        return self.conv1b(a2) + self.acts.act_sum  # and conv1b's b1 A1 + b2 A2


class UnitsLBBlock(nn.Module):
    """An earlier reading of the LB-block: the three convs as BAM units (BN and an identity skip each),
    activation accumulation over all three inputs."""

    def __init__(self, channels: int, weights3: AccumulationGroup, accumulate: bool, activation_scale: str, weight_coefficients: str):
        super().__init__()
        weights1 = AccumulationGroup(accumulate, coefficients=weight_coefficients)
        acts = AccumulationGroup(accumulate, activation_scale)
        self.units = nn.Sequential(
            BAMUnit(bam_conv(channels, channels, 3, weights3, acts)),
            BAMUnit(bam_conv(channels, channels, 1, weights1, acts)),
            BAMUnit(bam_conv(channels, channels, 1, weights1, acts)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x)


LB_WIRINGS = {"figure": FigureLBBlock, "units": UnitsLBBlock}
BINARY_INITS = ("default", "small")


class HPBBlock(nn.Module):
    """LB-blocks sharing long-range 3x3 weight accumulation; ``skip`` adds the block's input to its output."""

    def __init__(self, channels: int, lb_blocks: int, skip: bool, lb_block, **lb_kwargs):
        super().__init__()
        self.skip = skip
        weights3 = AccumulationGroup(lb_kwargs["accumulate"], coefficients=lb_kwargs["weight_coefficients"])
        self.blocks = nn.Sequential(*[lb_block(channels, weights3, **lb_kwargs) for _ in range(lb_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.blocks(x) if self.skip else self.blocks(x)


class BSRN(nn.Module):
    """BAM's BSRN: FP Conv-ReLU head, HPB blocks, pixel-shuffle upsampler, FP conv (+ ReLU) tail,
    optionally + the bilinear-upsampled input (see :func:`bsrn`)."""

    def __init__(
        self,
        scale: int,
        channels: int,
        hpb_blocks: int,
        lb_blocks: int,
        wiring: str,
        hpb_skip: bool,
        image_skip: bool,
        out_relu: bool,
        binary_init: str = "default",
        **lb_kwargs,
    ):
        super().__init__()
        if wiring not in LB_WIRINGS:
            raise ValueError(f"bsrn: wiring must be one of {', '.join(LB_WIRINGS)}, got {wiring!r}")
        self.scale, self.image_skip = scale, image_skip
        self.head = nn.Sequential(conv(3, channels), nn.ReLU(inplace=True))
        self.body = nn.Sequential(*[HPBBlock(channels, lb_blocks, hpb_skip, LB_WIRINGS[wiring], **lb_kwargs) for _ in range(hpb_blocks)])
        self.upsampler = PixelShuffleUpsampler(scale, channels)
        self.tail = nn.Sequential(conv(channels, 3), nn.ReLU(inplace=True)) if out_relu else conv(channels, 3)
        if binary_init not in BINARY_INITS:
            raise ValueError(f"bsrn: binary_init must be one of {', '.join(BINARY_INITS)}, got {binary_init!r}")
        if binary_init == "small":
            with torch.no_grad():
                for m in self.body.modules():
                    if isinstance(m, BinaryConv2d):
                        m.weight.uniform_(0.0, 1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tail(self.upsampler(self.body(self.head(x))))
        if self.image_skip:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out


@register
def bsrn(
    scale: int,
    channels: int = 64,
    hpb_blocks: int = 5,
    lb_blocks: int = 4,
    wiring: str = "figure",
    hpb_skip: bool = False,
    image_skip: bool = False,
    out_relu: bool = True,
    binary_init: str = "default",
    accumulate: bool = True,
    activation_scale: str = "abs_mean",
    weight_coefficients: str = "learned",
) -> nn.Module:
    """BAM's BSRN (see the module docstring); the defaults are the paper's figure as drawn."""
    return BSRN(
        scale,
        channels,
        hpb_blocks,
        lb_blocks,
        wiring,
        hpb_skip,
        image_skip,
        out_relu,
        binary_init,
        accumulate=accumulate,
        activation_scale=activation_scale,
        weight_coefficients=weight_coefficients,
    )


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

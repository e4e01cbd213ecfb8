"""BBCU (Xia et al., ICLR 2023), SPEC §8: the basic binary convolution unit and BBCU-L / BBCU-M.

The unit is ``x + RPReLU(bconv(sign(x - eps)))``: a full-precision identity around every binary
conv, no BN (BBCU argues BN costs restoration networks their range), the activation inside the
branch so the identity path stays linear. Facts from the official code (``Zj-BinXia/BBCU``,
``quant_convs_bbcu.py``, ``bbcul_arch.py``, ``bbcum_arch.py``, the training options), each an
option here where a reader may want the other reading:

* the sign's gradient is Bi-Real's ApproxSign; the weights are ``sign(W) * mean|W|`` per output
  channel with the scale detached and the gradient of ``clamp(W, -1, 1)`` (the ``clip``
  estimator, also ReActNet's and FABNet's code);
* **residual alignment**: the image enters multiplied by ``k = 130`` and leaves divided by it
  (``alignment``), which puts the full-precision residual on the scale of the binary convs'
  outputs; the paper motivates it, the options file sets the number;
* 16 blocks of 2 units (the blocks have no skip of their own: each unit has one), 64 channels;
* full-precision head conv and tail conv (``conv_last``), LeakyReLU(0.1) after the head; a
  bilinear upsampling of the (aligned) input is added at the end;
* the head, the upsampler, ``conv_hr`` and ``conv_last`` start from Kaiming-normal weights
  times 0.1 with zero bias (BasicSR's ``default_init_weights``), binary convs among them
  included; the body keeps PyTorch's initialisation (``init="default"`` keeps it everywhere).

**BBCU-L** (``bbcu_l``): the upsampler (conv C->C*s^2 + PixelShuffle + LeakyReLU per x2 stage) and
``conv_hr`` (+ LeakyReLU) are full precision: 225K params, 18.55G OPs at x2 in BBCU's table.

**BBCU-M** (``bbcu_m``): the upsampler stages and ``conv_hr`` are binary units too; an upsampler
unit is ``PixelShuffle(RPReLU(bconv_{C->Cs^2}(x))) + nearest(x)``, with no LeakyReLU after it:
46K params, 1.83G OPs at x2; 51K, 3.95G at x4.

BBCU's table counts the binary convs' weights at 1/32 and leaves out the units' per-channel
thresholds and RPReLU parameters; ``tinysr profile`` counts those as full-precision parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import RPReLU, conv_with_stages, kaiming_scaled_init
from .binary import UPSAMPLE_STAGES, BinaryEDSR, BinaryUnit, Scheme, binary_body, binary_conv3x3
from .registry import register

BBCU = Scheme("approx", threshold=True, rprelu=True, bn=False, weight_estimator="clip")
ALIGNMENT = 130.0  # k of the official training options, for every BBCU network and scale
INITS = ("official", "default")


def repeat_channels(x: torch.Tensor, times: int) -> torch.Tensor:
    """``x.repeat_interleave(times, dim=1)`` (each channel ``times`` times in a row), laid out as
    ``x`` is: from a channels_last ``x`` (a packed network's activations) as one channels_last copy,
    which the packed conv's residual stage then reads as it is, where ``repeat_interleave`` writes
    NCHW and the stage copies it again (the two passes cost several times the one)."""
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return x.permute(0, 2, 3, 1)[..., None].expand(n, h, w, c, times).reshape(n, h, w, c * times).permute(0, 3, 1, 2)
    return x.repeat_interleave(times, dim=1)


class BinaryUpsampleUnit(nn.Module):
    """BBCU-M's binary upsampler stage: ``PixelShuffle(RPReLU(bconv(x))) + nearest(x)``.

    The nearest-neighbour upsampling of ``x`` is the pixel shuffle of ``x`` with each channel
    repeated ``s^2`` times, so the add is made before the shuffle, where it is the conv's own
    output shape: a packed conv then folds the RPReLU and the add into its output pass."""

    def __init__(self, channels: int, factor: int, detach_scale: bool = True):
        super().__init__()
        self.factor = factor
        self.conv = binary_conv3x3(channels, BBCU, detach_scale, out_channels=channels * factor * factor)
        self.post = RPReLU(channels * factor * factor)
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        repeated = repeat_channels(x, self.factor * self.factor)
        return self.shuffle(conv_with_stages(self.conv, x, [self.post], residual=repeated))


def _bbcu(scale: int, binary_tail: bool, channels: int, units: int, alignment: float, init: str, detach_scale: bool) -> nn.Module:
    if init not in INITS:
        raise ValueError(f"BBCU: init must be one of {', '.join(INITS)}, got {init!r}")
    body = binary_body(channels, units, BBCU, bn=False, rprelu_position="in_branch", detach_scale=detach_scale)
    upsampler = conv_hr = None
    if binary_tail:
        upsampler = nn.Sequential(*[BinaryUpsampleUnit(channels, s, detach_scale) for s in UPSAMPLE_STAGES[scale]])
        conv_hr = nn.Sequential(BinaryUnit(channels, BBCU, False, "in_branch", detach_scale), nn.LeakyReLU(0.1, inplace=True))
    model = BinaryEDSR(scale, body, channels, alignment=alignment, upsampler=upsampler, conv_hr=conv_hr)
    if init == "official":
        kaiming_scaled_init([model.head, model.upsampler, model.conv_hr, model.conv_last], 0.1)
    return model


@register
def bbcu_l(
    scale: int, channels: int = 64, units: int = 32, alignment: float = ALIGNMENT, init: str = "official", detach_scale: bool = True
) -> nn.Module:
    """BBCU-L: BBCU units in the body, full-precision upsampler and conv_hr (the official BBCUL)."""
    return _bbcu(scale, False, channels, units, alignment, init, detach_scale)


@register
def bbcu_m(
    scale: int, channels: int = 64, units: int = 32, alignment: float = ALIGNMENT, init: str = "official", detach_scale: bool = True
) -> nn.Module:
    """BBCU-M: BBCU units in the body, the upsampler and conv_hr (the official BBCUM)."""
    return _bbcu(scale, True, channels, units, alignment, init, detach_scale)

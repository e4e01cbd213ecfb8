"""FABNet: frequency-aware binarized network (Jiang et al., TIP 2023), SPEC §5.5, ``seeds/002_*``.

The network's idea lives here: split the features by a Haar DWT into a low-frequency part (LL,
C channels) and a high-frequency part (LH, HL, HH: 3C channels) at half the HR size, binarize
each with its own modules and its own estimator schedule, and recombine by the exact IDWT.

    x -> bicubic (MATLAB) x s -> FP conv3x3 3->C -> DWT
       LL:   B x LBRM (C),  fused as d_0 I + sum_i d_i I_i  (learnable scalars, init 1/(B+1))
       high: 2B x HBRM (3C), + long skip
    -> IDWT -> FP conv3x3 C->3 -> + bicubic input

LBRM and HBRM have one form: ``x + A2(bconv(RSign(A1(bconv(RSign(x))))))`` (the residual spans the
two units, as in the official code), with learnable thresholds, FABNet's dynamic activation
estimator (coefficient t, scheduled by the ``fabnet_schedule`` callback) and XNOR-scaled weights
with the higher-order estimator. The activations A are PReLU, except in B8C96 (the official
``FABNet_large.py``), where the **second** activation of **every fourth** HBRM (4 of 16) is the
*recalibrated activation* ``y = phi * x + eps`` with per-channel ``phi = 1 + theta_0`` in (0, 2)
and ``eps = theta_1 / 2`` in (-1/2, 1/2), ``theta = 2 * Sigmoid(FC(ReLU(FC(avgpool(x))))) - 1``,
reduction 48 (288 -> 6 -> 576 at C = 96). Its last FC starts at zero, so the unit starts as the
identity (the official code starts near it, with PyTorch's default FC initialisation). Those four
HBRMs switch their estimator at 15% of training, the other HBRMs at 20% (``fabnet_schedule``'s
``recalibrated`` schedule). The official B8C96 upsamples its input by nearest neighbour (the tiny
variants bicubically, by PyTorch's kernel); tinysr's default is MATLAB bicubic for every variant
(``upsample="matlab"``), and ``upsample="bicubic"`` / ``"nearest"`` are the official code's.

Variants: ``fabnet_b4c12``, ``fabnet_b4c24``, ``fabnet_b4c36`` (PReLU everywhere) and
``fabnet_b8c96`` (recalibrated every fourth HBRM).

Ablation control ``fabnet_nosplit``: the same network without the frequency split. The Haar DWT
is pixel-unshuffle followed by a fixed orthonormal mix of each 2x2 neighbourhood, so replacing
DWT / IDWT by pixel-unshuffle / pixel-shuffle keeps the resolution (HR/2) and the width (4C) and
removes only what FABNet adds: separating the sub-bands and binarizing each with its own modules
and schedule. One stack of ``modules`` binary residual modules on all 4C channels, with a long
skip; 5 modules at C = 24 cost 5% more binary OPs than FABNet-B4C24 (829,440 vs 787,968 binary
MACs per HR/2 pixel), the closest count of whole modules. Its estimator follows the high-branch
schedule (2 -> 4), the one that governs most of FABNet's binary OPs.
"""

from __future__ import annotations

import bisect

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TinySRError
from ..nn import BinaryConv2d, HaarDWT, HaarIDWT, RSign, SignActivation, WeightedSum, XnorWeight, conv, conv_pair_with_stages, pad_to_even
from ..plugins import Callback, register_callback
from .bicubic import Bicubic
from .registry import register


class RecalibratedActivation(nn.Module):
    """``y = phi * x + eps`` per channel, ``phi = 1 + theta_0``, ``eps = theta_1 / 2``, ``theta = 2 *
    Sigmoid(FC(ReLU(FC(avgpool(x))))) - 1`` (SPEC §5.5; the official code's ``Attention``).

    ``fc2`` predicts ``(theta_0, theta_1)`` of channel c at outputs ``2c, 2c + 1`` (the official
    layout) and starts at zero, so ``theta = 0`` and the unit is the identity at initialisation.
    """

    def __init__(self, channels: int, reduction: int = 48):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, 2 * channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = 2 * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3)))))) - 1
        theta = theta.view(x.shape[0], x.shape[1], 2)
        phi, eps = 1 + theta[..., 0], 0.5 * theta[..., 1]
        return phi[..., None, None] * x + eps[..., None, None]


class FrequencyBinaryModule(nn.Module):
    """LBRM / HBRM: two [threshold -> sign (dynamic t) -> binary conv3x3 -> activation] units + identity.

    ``branch`` ("low", "high", or "recalibrated" for an HBRM whose second activation is the
    recalibrated one) tells the schedule which coefficient applies.
    """

    def __init__(self, channels: int, branch: str, t: float, recalibrated: bool = False, weights: dict | None = None):
        super().__init__()
        self.branch = "recalibrated" if recalibrated else branch
        weights = {"estimator": "higher_order", **(weights or {})}

        def unit_conv():
            return BinaryConv2d(
                channels,
                channels,
                3,
                padding=1,
                bias=False,
                act_quantizer=RSign(channels, kind="dynamic", t=t),
                weight_quantizer=XnorWeight(**weights),
            )

        self.conv1, self.act1 = unit_conv(), nn.PReLU(channels)
        self.conv2, self.act2 = unit_conv(), RecalibratedActivation(channels) if recalibrated else nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x + act2(conv2(act1(conv1(x)))); packed, the PReLUs and the add fold into the convs
        return conv_pair_with_stages(self.conv1, self.conv2, x, [self.act1], [self.act2], residual=x)


INITS = ("default", "official")
UPSAMPLERS = ("matlab", "bicubic", "nearest")


class TorchUpsample(nn.Module):
    """``F.interpolate(x, scale_factor=scale, mode=mode)``: the official code's pre-upsampling
    (``bicubic`` with ``align_corners=False``, or ``nearest``)."""

    def __init__(self, scale: int, mode: str):
        super().__init__()
        self.scale, self.mode = scale, mode
        self.spatial_reach = 2 if mode == "bicubic" else 1  # input pixels a tile must see (inference.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "bicubic":
            return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class FABNet(nn.Module):
    """FABNet (see the module docstring). The training options of the official code are options
    here: ``weight_estimator`` (``higher_order``, the paper's; ``clip``, the code's), ``init``
    (``default``: PyTorch's; ``official``: binary weights drawn from U(0, 0.001), so every module
    starts near the identity), ``pixel_range`` (1: pixels in [0, 1]; 255: the network works on
    [0, 255] inside, as the official code does, which matters because the activation estimator's
    window ``|x| < 2/t`` is in absolute units) and ``upsample`` (the pre-upsampling: ``matlab``
    bicubic, or the official code's PyTorch ``bicubic`` or ``nearest``). The weight scale is
    detached by default, as there.
    """

    def __init__(
        self,
        scale: int,
        channels: int,
        blocks: int,
        recalibrated_high: bool = False,
        weight_estimator: str = "higher_order",
        detach_scale: bool = True,
        init: str = "default",
        pixel_range: float = 1.0,
        upsample: str = "matlab",
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if upsample not in UPSAMPLERS:
            raise ValueError(f"upsample must be one of {UPSAMPLERS}, got {upsample!r}")
        if pixel_range <= 0:
            raise ValueError(f"pixel_range must be positive, got {pixel_range}")
        self.pixel_range = float(pixel_range)
        weights = {"estimator": weight_estimator, "detach_scale": detach_scale}
        self.upsample = Bicubic(scale) if upsample == "matlab" else TorchUpsample(scale, upsample)
        self.dwt, self.idwt = HaarDWT(), HaarIDWT()
        self.head = conv(3, channels)
        self.low = nn.ModuleList([FrequencyBinaryModule(channels, "low", t=1.0, weights=weights) for _ in range(blocks)])
        self.fusion = WeightedSum(blocks + 1)
        # B8C96: every fourth HBRM recalibrates (the official code's groups of three plain HBRMs and one with attention)
        self.high = nn.Sequential(
            *[
                FrequencyBinaryModule(3 * channels, "high", t=2.0, recalibrated=recalibrated_high and i % 4 == 3, weights=weights)
                for i in range(2 * blocks)
            ]
        )
        self.tail = conv(channels, 3)
        if init == "official":
            with torch.no_grad():
                for m in self.modules():
                    if isinstance(m, BinaryConv2d):
                        m.weight.uniform_(0.0, 0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pixel_range != 1.0:
            return self.features(x * self.pixel_range) / self.pixel_range
        return self.features(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        base = self.upsample(x)
        feat = self.head(base)
        ll, high = self.dwt(feat)
        outs = [ll]
        for module in self.low:
            outs.append(module(outs[-1]))
        high = high + self.high(high)
        # cropped after the tail conv, as the official code does: at an odd size the conv's last
        # row or column sees the transform's padded one rather than zeros
        out = self.tail(self.idwt(self.fusion(outs), high))
        return out[..., : feat.shape[-2], : feat.shape[-1]] + base


class FABNetNoSplit(nn.Module):
    """FABNet with pixel-unshuffle in place of the DWT and one module stack (see the module docstring)."""

    def __init__(self, scale: int, channels: int, modules: int):
        super().__init__()
        self.upsample = Bicubic(scale)
        self.head = conv(3, channels)
        self.body = nn.Sequential(*[FrequencyBinaryModule(4 * channels, "high", t=2.0) for _ in range(modules)])
        self.tail = conv(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.upsample(x)
        feat = self.head(base)
        folded = F.pixel_unshuffle(pad_to_even(feat), 2)  # odd sizes as in the DWT: pad, then crop back
        unfolded = F.pixel_shuffle(folded + self.body(folded), 2)[..., : feat.shape[-2], : feat.shape[-1]]
        return self.tail(unfolded) + base


@register
def fabnet_nosplit(scale: int, channels: int = 24, modules: int = 5) -> nn.Module:
    """Ablation control: FABNet-B4C24 without the frequency split, at equal width and ~equal OPs."""
    return FABNetNoSplit(scale, channels, modules)


@register
def fabnet_b4c12(
    scale: int,
    blocks: int = 4,
    channels: int = 12,
    recalibrated_high: bool = False,
    weight_estimator: str = "higher_order",
    detach_scale: bool = True,
    init: str = "default",
    pixel_range: float = 1.0,
    upsample: str = "matlab",
) -> nn.Module:
    """FABNet-B4C12 (PReLU everywhere)."""
    return FABNet(scale, channels, blocks, recalibrated_high, weight_estimator, detach_scale, init, pixel_range, upsample)


@register
def fabnet_b4c24(
    scale: int,
    blocks: int = 4,
    channels: int = 24,
    recalibrated_high: bool = False,
    weight_estimator: str = "higher_order",
    detach_scale: bool = True,
    init: str = "default",
    pixel_range: float = 1.0,
    upsample: str = "matlab",
) -> nn.Module:
    """FABNet-B4C24 (PReLU everywhere)."""
    return FABNet(scale, channels, blocks, recalibrated_high, weight_estimator, detach_scale, init, pixel_range, upsample)


@register
def fabnet_b4c36(
    scale: int,
    blocks: int = 4,
    channels: int = 36,
    recalibrated_high: bool = False,
    weight_estimator: str = "higher_order",
    detach_scale: bool = True,
    init: str = "default",
    pixel_range: float = 1.0,
    upsample: str = "matlab",
) -> nn.Module:
    """FABNet-B4C36 (PReLU everywhere)."""
    return FABNet(scale, channels, blocks, recalibrated_high, weight_estimator, detach_scale, init, pixel_range, upsample)


@register
def fabnet_b8c96(
    scale: int,
    blocks: int = 8,
    channels: int = 96,
    recalibrated_high: bool = True,
    weight_estimator: str = "higher_order",
    detach_scale: bool = True,
    init: str = "default",
    pixel_range: float = 1.0,
    upsample: str = "matlab",
) -> nn.Module:
    """FABNet-B8C96 (the second activation of every fourth HBRM recalibrated)."""
    return FABNet(scale, channels, blocks, recalibrated_high, weight_estimator, detach_scale, init, pixel_range, upsample)


# ``[fraction of training, t]`` points of each branch's schedule, by preset.
SCHEDULE_PRESETS = {
    # the official code (epochs 50, 150 and 200 of 1000)
    "official": {"low": ((0.0, 1.0), (0.05, 2.0), (0.2, 4.0)), "high": ((0.0, 2.0), (0.2, 4.0)), "recalibrated": ((0.0, 2.0), (0.15, 4.0))},
    # the paper's Table III choice, low 0.25 -> 4 and high 2 -> 4; the paper gives only the ends,
    # so t doubles at the official code's switch points (low at 5%, 10%, 15%, 20%)
    "paper": {
        "low": ((0.0, 0.25), (0.05, 0.5), (0.1, 1.0), (0.15, 2.0), (0.2, 4.0)),
        "high": ((0.0, 2.0), (0.2, 4.0)),
        "recalibrated": ((0.0, 2.0), (0.15, 4.0)),
    },
}


@register_callback("fabnet_schedule")
class DynamicEstimatorSchedule(Callback):
    """Sets the dynamic estimator's t by training progress (fraction of ``train.iterations``).

    ``preset``: ``official`` (the default; SPEC §5.5 and the official code: low 1 -> 2 -> 4 at 5% and
    20%, high 2 -> 4 at 20%, B8C96's recalibrated HBRMs 2 -> 4 at 15%) or ``paper`` (Table III's
    low 0.25 -> 4, high 2 -> 4; see ``SCHEDULE_PRESETS``). ``low`` / ``high`` / ``recalibrated``,
    lists of ``[fraction, t]`` starting at 0, replace the preset's schedule of that branch.
    """

    def __init__(self, preset: str = "official", low=None, high=None, recalibrated=None):
        if preset not in SCHEDULE_PRESETS:
            raise TinySRError(f"fabnet_schedule: unknown preset {preset!r} ({', '.join(SCHEDULE_PRESETS)})")
        given = {"low": low, "high": high, "recalibrated": recalibrated}
        chosen = {branch: given[branch] if given[branch] is not None else points for branch, points in SCHEDULE_PRESETS[preset].items()}
        self.schedules = {branch: sorted(map(tuple, points)) for branch, points in chosen.items()}
        for name, points in self.schedules.items():
            if not points or points[0][0] != 0.0:
                raise TinySRError(f"fabnet_schedule: the {name} schedule must start at fraction 0, got {points}")

    def t_at(self, branch: str, progress: float) -> float:
        points = self.schedules[branch]
        return points[bisect.bisect_right([p[0] for p in points], progress) - 1][1]

    def apply(self, model: nn.Module, progress: float) -> None:
        for module in model.modules():
            branch = getattr(module, "branch", None)
            if branch in self.schedules:
                t = self.t_at(branch, progress)
                for act in module.modules():
                    if isinstance(act, SignActivation) and act.kind == "dynamic":
                        act.t.fill_(t)

    def on_step_start(self, trainer, iteration: int) -> None:
        self.apply(trainer.model, iteration / trainer.total_iterations)

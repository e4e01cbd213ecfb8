"""Re-parameterizable blocks (SPEC §7): train with branches, deploy as one conv3x3.

Every block maps ``C_in -> C_out`` like a ``conv3x3`` (padding 1) and has ``reparameterize()``
returning an ``nn.Conv2d`` that computes the same function in eval mode (BN folded with its
running statistics). The merge rules:

* BN after a conv: ``W' = W * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``.
* 3x3 then 1x1 (RepSR's expand-and-squeeze): ``W = W1 . W3`` over channels, ``b = W1 . b3 + b1``;
  exact everywhere because the 1x1 needs no padding.
* 1x1 then 3x3 (ECB): exact at the borders only if the 1x1 output is padded with its *bias*
  instead of zeros, which is what the training form does (``pad_with_bias``); then
  ``W = W3 . W1`` and ``b = sum_xy(W3) . b1 + b3``.
* identity: a centred delta kernel; 1x1: zero-padded to 3x3.

Blocks: :class:`RepSRBlock` (identity + 2 x [conv3x3 C->eC -> BN -> conv1x1 eC->C]),
:class:`ECB` (conv3x3 + conv1x1(2C)->conv3x3 + conv1x1->Sobel-x / Sobel-y / Laplacian with learned
per-channel scales [+ identity]), :class:`RepVGGBlock` (3x3+BN, 1x1+BN, identity BN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..plugins import register_cost


class FreezableBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose statistics can be frozen while training (RepSR's frozen BN, SPEC §7).

    With ``freeze_stats = True`` it normalises with the running (population) statistics even in
    training mode and stops updating them; its affine parameters keep learning.
    """

    freeze_stats: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.freeze_stats:
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of ``bn(conv(x))`` as one conv, with the BN's running statistics."""
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return weight * (gamma / std).view(-1, 1, 1, 1), (b - bn.running_mean) * gamma / std + beta


def identity_kernel(channels: int, like: torch.Tensor) -> torch.Tensor:
    """A (C, C, 3, 3) kernel that copies each channel (delta at the centre)."""
    k = torch.zeros(channels, channels, 3, 3, dtype=like.dtype, device=like.device)
    k[torch.arange(channels), torch.arange(channels), 1, 1] = 1.0
    return k


def pad_1x1_to_3x3(weight: torch.Tensor) -> torch.Tensor:
    return F.pad(weight, (1, 1, 1, 1))


def compose_3x3_then_1x1(w3, b3, w1, b1):
    """conv1x1(conv3x3(x)) as one conv3x3."""
    w = torch.einsum("om,mikl->oikl", w1[:, :, 0, 0], w3)
    return w, w1[:, :, 0, 0] @ b3 + b1


def compose_1x1_then_3x3(w1, b1, w3, b3):
    """conv3x3(pad_with_bias(conv1x1(x))) as one conv3x3."""
    w = torch.einsum("omkl,mi->oikl", w3, w1[:, :, 0, 0])
    return w, w3.sum(dim=(2, 3)) @ b1 + b3


def _merged_conv(w: torch.Tensor, b: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1, bias=True, dtype=w.dtype, device=w.device)
    conv.weight.data.copy_(w.detach())
    conv.bias.data.copy_(b.detach())
    return conv


class RepSRBlock(nn.Module):
    """RepSR's training-form conv3x3: clean identity (if C_in == C_out) + two expand-and-squeeze branches."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int = 2):
        super().__init__()
        hidden = expansion * in_channels
        self.identity = in_channels == out_channels
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), FreezableBatchNorm2d(hidden), nn.Conv2d(hidden, out_channels, 1))
            for _ in range(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = sum(branch(x) for branch in self.branches)
        return out + x if self.identity else out

    @torch.no_grad()
    def reparameterize(self) -> nn.Conv2d:
        w_total, b_total = 0, 0
        for conv3, bn, conv1 in self.branches:
            w3, b3 = fold_bn(conv3.weight, conv3.bias, bn)
            w, b = compose_3x3_then_1x1(w3, b3, conv1.weight, conv1.bias)
            w_total, b_total = w_total + w, b_total + b
        if self.identity:
            w_total = w_total + identity_kernel(w_total.shape[0], w_total)
        return _merged_conv(w_total, b_total)


def pad_with_bias(y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Pad a 1x1 conv's output by one pixel with the conv's own bias (so the 1x1-3x3 merge is exact)."""
    return F.pad(y - bias.view(1, -1, 1, 1), (1, 1, 1, 1)) + bias.view(1, -1, 1, 1)


_SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
_SOBEL_Y = _SOBEL_X.t().contiguous()
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


class EdgeBranch(nn.Module):
    """conv1x1 C_in->C_out, then a fixed depthwise 3x3 edge mask with learned per-channel scale and bias."""

    spatial_reach = 1  # the functional 3x3: how far tiling must look (inference.py)

    def __init__(self, in_channels: int, out_channels: int, mask: torch.Tensor):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        self.scale = nn.Parameter(torch.randn(out_channels) * 1e-3)
        self.bias = nn.Parameter(torch.randn(out_channels) * 1e-3)
        self.register_buffer("mask", mask.clone())

    def kernel(self) -> torch.Tensor:
        """The depthwise kernel as a dense (C, C, 3, 3) kernel."""
        c = self.scale.numel()
        dense = torch.zeros(c, c, 3, 3, dtype=self.scale.dtype, device=self.scale.device)
        dense[torch.arange(c), torch.arange(c)] = self.scale.view(-1, 1, 1) * self.mask
        return dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = pad_with_bias(self.conv1(x), self.conv1.bias)
        return F.conv2d(y, self.kernel(), self.bias)

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        return compose_1x1_then_3x3(self.conv1.weight, self.conv1.bias, self.kernel(), self.bias)


@register_cost(EdgeBranch)
def edge_branch_cost(m: EdgeBranch, inputs, out) -> tuple[int, int]:
    """The depthwise 3x3 edge filter (its 1x1 conv is a child, counted on its own)."""
    return out.numel() * 9, 0


ECB_MID_WIDTHS = ("output", "input")


class ECB(nn.Module):
    """ECBSR's edge-oriented convolution block (Zhang et al., ACM MM 2021), SPEC §7.

    The conv1x1 -> conv3x3 branch expands to ``depth_multiplier`` times the block's output width
    (``mid_width="output"``, the official code's ``mid = out_planes * depth_multiplier``: 32 in a
    16-channel head, 24 in an x2 tail of 12 outputs) or its input width (``"input"``).
    """

    def __init__(self, in_channels: int, out_channels: int, depth_multiplier: int = 2, identity: bool = False, mid_width: str = "output"):
        super().__init__()
        if mid_width not in ECB_MID_WIDTHS:
            raise ValueError(f"mid_width must be one of {', '.join(ECB_MID_WIDTHS)}, got {mid_width!r}")
        self.conv3 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        mid = depth_multiplier * (out_channels if mid_width == "output" else in_channels)
        self.expand = nn.Conv2d(in_channels, mid, 1)
        self.expand3 = nn.Conv2d(mid, out_channels, 3)
        self.edges = nn.ModuleList(EdgeBranch(in_channels, out_channels, m) for m in (_SOBEL_X, _SOBEL_Y, _LAPLACIAN))
        self.identity = identity and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(x) + self.expand3(pad_with_bias(self.expand(x), self.expand.bias))
        out = out + sum(edge(x) for edge in self.edges)
        return out + x if self.identity else out

    @torch.no_grad()
    def reparameterize(self) -> nn.Conv2d:
        w, b = compose_1x1_then_3x3(self.expand.weight, self.expand.bias, self.expand3.weight, self.expand3.bias)
        w, b = w + self.conv3.weight, b + self.conv3.bias
        for edge in self.edges:
            we, be = edge.merged()
            w, b = w + we, b + be
        if self.identity:
            w = w + identity_kernel(w.shape[0], w)
        return _merged_conv(w, b)


class RepVGGBlock(nn.Module):
    """RepVGG's training-form conv3x3: 3x3+BN, 1x1+BN and (if C_in == C_out) identity BN."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv3 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn3 = FreezableBatchNorm2d(out_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn1 = FreezableBatchNorm2d(out_channels)
        self.bn_id = FreezableBatchNorm2d(out_channels) if in_channels == out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))
        return out + self.bn_id(x) if self.bn_id is not None else out

    @torch.no_grad()
    def reparameterize(self) -> nn.Conv2d:
        w, b = fold_bn(self.conv3.weight, None, self.bn3)
        w1, b1 = fold_bn(pad_1x1_to_3x3(self.conv1.weight), None, self.bn1)
        w, b = w + w1, b + b1
        if self.bn_id is not None:
            wi, bi = fold_bn(identity_kernel(w.shape[0], w), None, self.bn_id)
            w, b = w + wi, b + bi
        return _merged_conv(w, b)

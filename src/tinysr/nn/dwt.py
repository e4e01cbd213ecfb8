"""Orthonormal 2-D Haar wavelet transform (db1, 2x2, stride 2) and its exact inverse (SPEC §5.5).

For each 2x2 block ``[[a, b], [c, d]]`` of every channel:

    LL = (a + b + c + d) / 2      low-pass in both directions
    LH = (a + b - c - d) / 2      high-pass vertically (horizontal edges)
    HL = (a - b + c - d) / 2      high-pass horizontally (vertical edges)
    HH = (a - b - c + d) / 2      high-pass in both directions

The four filters form an orthonormal basis of each block, so the transform preserves energy
(sum of squares) and its inverse is its transpose. :class:`HaarDWT` returns ``(LL, high)`` with
``high`` the concatenation ``[LH, HL, HH]`` (3C channels, FABNet's high-frequency branch input).

Odd sizes: the input is extended by one repeated row / column at the bottom / right to even
size before the transform (the official FABNet's half-sample symmetric extension); pass the original size to :class:`HaarIDWT` and it crops it away, so
``IDWT(DWT(x), size) == x`` for any size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import native

# Rows: LL, LH, HL, HH; each a flattened 2x2 filter [a, b, c, d].
_HAAR = 0.5 * torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0], [1.0, -1.0, -1.0, 1.0]])


def _filters(channels: int, dtype, device) -> torch.Tensor:
    """(4C, 1, 2, 2) depthwise filters ordered [LL, LH, HL, HH] for each channel."""
    return _HAAR.to(dtype=dtype, device=device).view(4, 1, 2, 2).repeat(channels, 1, 1, 1)


def pad_to_even(x: torch.Tensor) -> torch.Tensor:
    """Pad an odd height / width by repeating the last row / column (cropped back after the
    inverse): the half-sample symmetric extension that the official FABNet's transform
    (pytorch_wavelets, ``mode="symmetric"``) applies to a Haar filter's one missing sample."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    return x


def _native_for(*tensors: torch.Tensor):
    """The native kernel module where it computes these tensors' transform: float32 on the CPU,
    no gradient asked for (inference), not while a graph is traced or exported (ONNX has no such
    op). It returns channels_last bands and differs from the conv form only in the order of the
    sums (see kernels/haar.cpp); else None."""
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return None
    return native()


def haar_dwt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> LL (B, C, H', W') and high (B, 3C, H', W'), H' = ceil(H/2), W' = ceil(W/2)."""
    x = pad_to_even(x)
    module = _native_for(x)
    if module is not None:
        return tuple(module.haar_dwt(x))
    b, c = x.shape[:2]
    bands = F.conv2d(x, _filters(c, x.dtype, x.device), stride=2, groups=c)  # (B, 4C, H', W'), per channel 4 bands
    bands = bands.view(b, c, 4, *bands.shape[-2:])
    return bands[:, :, 0], bands[:, :, 1:].transpose(1, 2).reshape(b, 3 * c, *bands.shape[-2:])


def haar_idwt(ll: torch.Tensor, high: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Inverse of :func:`haar_dwt`; ``size`` = (H, W) of the original input crops the odd-size padding."""
    module = _native_for(ll, high)
    if module is not None:
        x = module.haar_idwt(ll, high)
        return x[..., : size[0], : size[1]] if size is not None else x
    b, c, h2, w2 = ll.shape
    bands = torch.cat([ll.unsqueeze(2), high.view(b, 3, c, h2, w2).transpose(1, 2)], dim=2).reshape(b, 4 * c, h2, w2)
    x = F.conv_transpose2d(bands, _filters(c, ll.dtype, ll.device), stride=2, groups=c)
    if size is not None:
        x = x[..., : size[0], : size[1]]
    return x


class HaarDWT(nn.Module):
    """Module form of :func:`haar_dwt` (no parameters)."""

    spatial_reach = 1  # a 2x2 window: how far tiling must look (inference.py)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return haar_dwt(x)


class HaarIDWT(nn.Module):
    """Module form of :func:`haar_idwt` (no parameters)."""

    spatial_reach = 1

    def forward(self, ll: torch.Tensor, high: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return haar_idwt(ll, high, size)

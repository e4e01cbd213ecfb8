"""MATLAB-compatible bicubic ``imresize`` (SPEC §1).

The algorithm is MATLAB's ``imresize(img, scale, 'bicubic')`` with its defaults:

* cubic kernel with a = -0.5 (Keys), support 4;
* when downscaling (scale < 1) with antialiasing, the kernel is stretched by 1/scale
  (``h(x) = scale * cubic(scale * x)``, support 4/scale);
* output pixel ``i`` (1-based) samples input coordinate ``u = i/scale + 0.5*(1 - 1/scale)``;
  weights are normalised to sum to 1 per output pixel;
* out-of-range taps are mirrored symmetrically (``..., 2, 1, 1, 2, ...``);
* separable: H is resized first, then W (MATLAB orders dimensions by scale, and both scales
  are equal here); output size ``ceil(in * scale)``.

The result is float and **not** rounded: the protocol rounds LR images to uint8 itself
(:func:`tinysr.data.make_lr`). Each output pixel is a weighted sum over at most
``ceil(4/scale)+2`` taps; the implementation loops over taps and is vectorised over pixels.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=256)
def contributions(in_length: int, out_length: int, scale: float, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Tap indices (0-based, mirrored into range) and weights, each (out_length, taps).

    Mirrors MATLAB's ``contributions`` including its removal of all-zero tap columns.
    """
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width /= scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based positions
    distance = u[:, None] - indices
    weights = scale * cubic(scale * distance) if shrink else cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding: position p (1-based) maps into [1, in_length] by reflection with repeat.
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    keep = np.any(weights != 0, axis=0)
    return np.ascontiguousarray(indices[:, keep]), np.ascontiguousarray(weights[:, keep])


def _resize_axis(x: torch.Tensor, dim: int, scale: float, out_length: int, antialias: bool) -> torch.Tensor:
    """Resize ``x`` along ``dim`` by accumulating weighted gathers, one tap at a time."""
    in_length = int(x.shape[dim])  # a plain int also under tracing (ONNX export at a fixed size)
    idx_np, w_np = contributions(in_length, out_length, float(scale), antialias)
    idx = torch.from_numpy(idx_np).to(x.device)
    w = torch.from_numpy(w_np).to(device=x.device, dtype=x.dtype)
    view = [1] * x.dim()
    view[dim] = out_length
    out = x.index_select(dim, idx[:, 0]) * w[:, 0].reshape(view)
    for k in range(1, idx.shape[1]):
        out.addcmul_(x.index_select(dim, idx[:, k]), w[:, k].reshape(view))
    return out


def output_size(size: int, scale: float) -> int:
    """MATLAB's output length, ``ceil(size * scale)``, robust to float noise (e.g. 3 * (1/3))."""
    return int(math.ceil(round(size * scale, 10)))


def imresize(img: np.ndarray | torch.Tensor, scale: float, antialias: bool = True) -> np.ndarray | torch.Tensor:
    """MATLAB ``imresize(img, scale, 'bicubic')`` on float images (SPEC §1).

    Args:
        img: numpy (H, W) or (H, W, C) float in [0, 1] (uint8 is converted to [0, 1]), computed in
            float64 like MATLAB; or a torch tensor (C, H, W) or (B, C, H, W), computed in its own
            floating dtype on its own device (autograd flows through it).
        scale: > 1 upscales, < 1 downscales (e.g. 1/4).
        antialias: widen the kernel when downscaling (MATLAB's default, and the protocol's).

    Returns:
        Float array/tensor of size ``ceil(H*scale) x ceil(W*scale)``, not rounded or clipped.
    """
    if scale <= 0:
        raise ValueError(f"imresize: scale must be positive, got {scale}")
    if isinstance(img, torch.Tensor):
        if img.dim() not in (3, 4):
            raise ValueError(f"imresize: expected a (C,H,W) or (B,C,H,W) tensor, got shape {tuple(img.shape)}")
        x = img if img.is_floating_point() else img.float() / 255.0
        h, w = (int(v) for v in x.shape[-2:])
        x = _resize_axis(x, x.dim() - 2, scale, output_size(h, scale), antialias)
        return _resize_axis(x, x.dim() - 1, scale, output_size(w, scale), antialias)
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize: expected an (H,W) or (H,W,C) array, got shape {arr.shape}")
    arr = arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64, copy=False)
    x = torch.from_numpy(np.ascontiguousarray(arr))
    h, w = x.shape[:2]
    x = _resize_axis(x, 0, scale, output_size(h, scale), antialias)
    return _resize_axis(x, 1, scale, output_size(w, scale), antialias).numpy()

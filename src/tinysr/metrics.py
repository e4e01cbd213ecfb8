"""PSNR and SSIM under the evaluation protocol of SPEC §1.

Both take an SR image and its HR ground truth as RGB, either uint8 HWC arrays or float
(HWC arrays / CHW or 1CHW tensors) in [0, 1]. The SR image is rounded to uint8 first (what
saving it as a PNG would do), then both are converted to the Y channel of BT.601 YCbCr in
[0, 255] **without rounding**, ``crop_border`` pixels are removed from every side, and the
metric is computed in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .io import rgb_to_y, to_uint8
from .kernels import native


def _prepare(img: np.ndarray | torch.Tensor, crop_border: int, y_channel: bool) -> np.ndarray:
    """uint8-round, take Y (or keep RGB) as float64 in [0, 255], and crop the border."""
    u8 = to_uint8(img)
    if y_channel:
        plane = rgb_to_y(u8.astype(np.float64) / 255.0)
    else:
        plane = u8.astype(np.float64)
    if crop_border > 0:
        plane = plane[crop_border:-crop_border, crop_border:-crop_border, ...]
    return plane


def _check_pair(sr: np.ndarray, hr: np.ndarray) -> None:
    if sr.shape != hr.shape:
        raise ValueError(f"SR {sr.shape} and HR {hr.shape} differ in size")
    if sr.size == 0:
        raise ValueError("nothing left to compare after cropping the border")


def psnr(sr, hr, crop_border: int, y_channel: bool = True) -> float:
    """PSNR in dB of ``sr`` against ``hr`` (SPEC §1); ``inf`` for identical images."""
    return _psnr_prepared(_prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel))


def _psnr_prepared(a: np.ndarray, b: np.ndarray) -> float:
    _check_pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """1-D normalised Gaussian; its outer product is MATLAB's ``fspecial('gaussian', 11, 1.5)``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D image with the 1-D kernel ``g`` along both axes."""
    n = len(g)
    h, w = img.shape
    rows = sum(g[k] * img[k : h - n + 1 + k, :] for k in range(n))
    return sum(g[k] * rows[:, k : w - n + 1 + k] for k in range(n))


def _filter_maps(maps: list[np.ndarray], g: np.ndarray) -> list[np.ndarray]:
    """:func:`_filter_valid` of each map: by the native kernel when it is built (the same float
    operations in the same order, so the same numbers bit for bit, several times faster), else
    with numpy."""
    module = native()
    if module is None:
        return [_filter_valid(m, g) for m in maps]
    out = module.ssim_filter(torch.from_numpy(np.stack(maps)), torch.from_numpy(g)).numpy()
    return list(out)


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM (MATLAB ``ssim_index``): 11x11 Gaussian sigma 1.5, K=(0.01,0.03), L=255."""
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mu_a, mu_b, aa, bb, ab = _filter_maps([a, b, a * a, b * b, a * b], gaussian_window())
    var_a = aa - mu_a**2
    var_b = bb - mu_b**2
    cov = ab - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(sr, hr, crop_border: int, y_channel: bool = True) -> float:
    """SSIM of ``sr`` against ``hr`` on the 'valid' region (SPEC §1); RGB mode averages channels."""
    a, b = _prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel)
    return _ssim_prepared(a, b)


def psnr_ssim(sr, hr, crop_border: int, y_channel: bool = True) -> tuple[float, float]:
    """``(psnr(...), ssim(...))`` with the images prepared once for both."""
    a, b = _prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel)
    return _psnr_prepared(a, b), _ssim_prepared(a, b)


def _ssim_prepared(a: np.ndarray, b: np.ndarray) -> float:
    _check_pair(a, b)
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {a.shape[:2]}")
    if a.ndim == 2:
        return _ssim_plane(a, b)
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[2])]))

"""The evaluation protocol's cost (SPEC §1): tinysr against BasicSR's algorithm, side by side.

For every HR image and scale, both arms do what a cold ``tinysr test`` does around the model:
generate the LR image (MATLAB bicubic downscale, rounded to uint8), run the model (here bicubic
upscaling by the same MATLAB resize, so that the model costs the same kind of work in both), and
score PSNR and SSIM on the Y channel with a ``scale``-pixel border crop. Images are decoded once,
before timing.

* ``tinysr``: ``tinysr.data.make_lr``, ``tinysr.resize.imresize`` and ``tinysr.metrics.psnr_ssim``.
* ``BasicSR``: the algorithm of BasicSR's ``utils/matlab_functions.imresize`` (float32 torch: for
  each output row, then column, and each channel, a matrix-vector product of the kernel
  weights with a window of the symmetrically padded image) and of ``metrics/psnr_ssim``
  (Y in float32 from uint8 via the BT.601 dot product; PSNR in float64; SSIM per Wang et al.
  with ``cv2.filter2D`` and the 11x11 Gaussian outer product, 'valid' region by cropping 5
  pixels), written out here from a reading of its code, not imported.

BasicSR's arm needs OpenCV (``pip install opencv-python-headless``). The mean scores of both arms
are printed so that the arms can be seen to compute the same protocol (BasicSR's Y is float32,
so its numbers differ in the last digits).

    python benchmarks/eval_speed.py [--data ../shared/data/Set14 ../shared/data/BSD200 --scales 2 3 4]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

import tinysr
from tinysr.data import make_lr, mod_crop
from tinysr.io import read_image
from tinysr.kernels import cpu_model, native
from tinysr.metrics import psnr_ssim
from tinysr.resize import imresize

# ---------------------------------------------------------------- BasicSR's algorithm


def _basicsr_cubic(x: torch.Tensor) -> torch.Tensor:
    a = x.abs()
    return (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1).to(a) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)).to(a)


def _basicsr_weights(in_length: int, out_length: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Kernel weights and first indices per output pixel, and the symmetric padding at both ends."""
    width = 4.0 / scale if scale < 1 else 4.0
    u = torch.linspace(1, out_length, out_length) / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left.view(-1, 1) + torch.arange(taps, dtype=torch.float32).view(1, -1)
    distance = u.view(-1, 1) - indices
    weights = scale * _basicsr_cubic(distance * scale) if scale < 1 else _basicsr_cubic(distance)
    weights = weights / weights.sum(1, keepdim=True)
    zero_columns = (weights == 0).sum(0)
    if zero_columns[0] != 0:
        indices, weights = indices[:, 1:], weights[:, 1:]
    if zero_columns[-1] != 0:
        indices, weights = indices[:, :-1], weights[:, :-1]
    pad_start = int(-indices.min() + 1)
    pad_end = int(indices.max() - in_length)
    return weights.contiguous(), (indices + pad_start - 1).long(), pad_start, pad_end


def _symmetric_pad(x: torch.Tensor, dim: int, start: int, end: int) -> torch.Tensor:
    n = x.size(dim)
    parts = [x.narrow(dim, 0, start).flip(dim)] if start > 0 else []
    parts.append(x)
    if end > 0:
        parts.append(x.narrow(dim, n - end, end).flip(dim))
    return torch.cat(parts, dim)


def _basicsr_resize_axis(x: torch.Tensor, dim: int, out_length: int, scale: float) -> torch.Tensor:
    """Resize (C, H, W) along ``dim`` (1: rows, 2: columns) as BasicSR does: pad symmetrically,
    then one matrix-vector product of a window and the weights per output index and channel."""
    weights, indices, pad_start, pad_end = _basicsr_weights(x.size(dim), out_length, scale)
    padded = _symmetric_pad(x, dim, pad_start, pad_end)
    shape = list(x.shape)
    shape[dim] = out_length
    out = torch.empty(shape)
    taps = weights.size(1)
    for i in range(out_length):
        first = int(indices[i, 0])
        for j in range(x.size(0)):
            window = padded[j].narrow(dim - 1, first, taps)  # (taps, W) for rows, (H, taps) for columns
            out[j].select(dim - 1, i).copy_((window.t() if dim == 1 else window).mv(weights[i]))
    return out


def basicsr_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> resized, float32, not rounded: rows first, then columns."""
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
    rows = _basicsr_resize_axis(x, 1, math.ceil(x.size(1) * scale), scale)
    return _basicsr_resize_axis(rows, 2, math.ceil(x.size(2) * scale), scale).numpy().transpose(1, 2, 0)


def _basicsr_y(img: np.ndarray) -> np.ndarray:
    """uint8 RGB -> BT.601 Y in [0, 255] as BasicSR computes it: from float32 [0, 1], the Y scaled
    back to [0, 1] and stored as float32, then times 255."""
    rgb = img.astype(np.float32) / 255.0
    return ((np.dot(rgb, [65.481, 128.553, 24.966]) + 16.0) / 255.0).astype(np.float32)[..., None] * 255.0


def _basicsr_ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    import cv2

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())

    def valid(x):
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]

    mu_a, mu_b = valid(a), valid(b)
    var_a = valid(a**2) - mu_a**2
    var_b = valid(b**2) - mu_b**2
    cov = valid(a * b) - mu_a * mu_b
    return float((((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))).mean())


def basicsr_psnr_ssim(sr: np.ndarray, hr: np.ndarray, crop: int) -> tuple[float, float]:
    a, b = (_basicsr_y(x[crop:-crop, crop:-crop]).astype(np.float64) for x in (sr, hr))
    mse = np.mean((a - b) ** 2)
    psnr = math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
    return psnr, _basicsr_ssim_plane(a[..., 0], b[..., 0])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- the two arms


def tinysr_arm(images: list[np.ndarray], scale: int, times: dict) -> tuple[float, float]:
    scores = []
    for hr in images:
        t0 = time.perf_counter()
        lr = make_lr(hr, scale)
        sr = imresize(lr, float(scale))
        t1 = time.perf_counter()
        scores.append(psnr_ssim(sr, mod_crop(hr, scale), crop_border=scale))
        times["resize"] += t1 - t0
        times["metrics"] += time.perf_counter() - t1
    return tuple(np.mean(scores, axis=0))


def basicsr_arm(images: list[np.ndarray], scale: int, times: dict) -> tuple[float, float]:
    scores = []
    for hr in images:
        t0 = time.perf_counter()
        hr = mod_crop(hr, scale)
        lr = _to_uint8(basicsr_imresize(hr.astype(np.float32) / 255.0, 1.0 / scale))
        sr = _to_uint8(basicsr_imresize(lr.astype(np.float32) / 255.0, float(scale)))
        t1 = time.perf_counter()
        scores.append(basicsr_psnr_ssim(sr, hr, scale))
        times["resize"] += t1 - t0
        times["metrics"] += time.perf_counter() - t1
    return tuple(np.mean(scores, axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", nargs="+", default=["../shared/data/Set14", "../shared/data/BSD200"], help="folders of HR images (or holding HR/)"
    )
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    try:
        import cv2  # noqa: F401  (BasicSR's SSIM filters with OpenCV)
    except ImportError:
        raise SystemExit("eval_speed: BasicSR's arm needs OpenCV: pip install opencv-python-headless") from None
    tinysr.retain_freed_memory()
    native()  # a first use compiles the kernels: do it before the clock starts
    images = []
    for folder in args.data:
        root = Path(folder) / "HR" if (Path(folder) / "HR").is_dir() else Path(folder)
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"))
        if not files:
            raise SystemExit(f"eval_speed: --data {folder}: no images")
        images += [read_image(p) for p in files]
    print(f"torch {torch.__version__}, {cpu_model()}, {torch.get_num_threads()} threads; {len(images)} images x scales {args.scales}\n")
    print("| scale | arm | resize (s) | metrics (s) | total (s) | PSNR | SSIM |\n|---:|---|---:|---:|---:|---:|---:|")
    totals = {"tinysr": 0.0, "BasicSR": 0.0}
    for scale in args.scales:
        for name, arm in (("tinysr", tinysr_arm), ("BasicSR", basicsr_arm)):
            times = {"resize": 0.0, "metrics": 0.0}
            with torch.no_grad():
                psnr, ssim = arm(images, scale, times)
            total = times["resize"] + times["metrics"]
            totals[name] += total
            print(f"| x{scale} | {name} | {times['resize']:.2f} | {times['metrics']:.2f} | {total:.2f} | {psnr:.4f} | {ssim:.5f} |")
    print(f"\nall scales: tinysr {totals['tinysr']:.1f} s, BasicSR {totals['BasicSR']:.1f} s: {totals['BasicSR'] / totals['tinysr']:.2f}x")


if __name__ == "__main__":
    main()

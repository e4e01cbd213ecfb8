"""Reading and writing images and RGB <-> YCbCr (SPEC §1).

This is the only module that touches files of pixels. Everything it returns is RGB uint8
(H, W, 3); every other module works with float tensors or arrays in [0, 1].
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import TinySRError
from .files import atomic_write

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
# Pixels an image may declare before it is refused unread: above the largest camera sensors, below
# what a small header can make the decoder allocate without bound (a decompression bomb).
MAX_PIXELS = 150_000_000


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TinySRError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith("."))


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL mode to RGB uint8: palette and grayscale expanded, alpha dropped, 16-bit scaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) grayscale: scale the full range to 8 bits, rounding.
        arr = np.asarray(img, dtype=np.float64)
        maximum = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
        gray = np.clip(np.round(arr / maximum * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.round(arr * (255.0 if arr.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    # "P", "L", "LA", "RGBA", "CMYK", "1", "YCbCr", ...: PIL converts; alpha is dropped, not composited.
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read PNG/BMP/JPEG/TIFF/WebP into an RGB uint8 array of shape (H, W, 3).

    Grayscale and palette images are expanded to RGB, an alpha channel is dropped, 16-bit
    images are scaled to 8 bits (grayscale by rounding v/65535*255; 16-bit colour PNGs by
    Pillow, which keeps the high byte), and the EXIF orientation is applied. A missing, corrupt or
    unreadable file raises :class:`TinySRError` naming the file, and so does one whose header
    declares more than ``max_pixels`` pixels (``None``: no limit), before any pixel is decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise TinySRError(f"{path}: no such image file")
    try:
        with _pillow_limit(max_pixels), Image.open(path) as img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise Image.DecompressionBombError(f"{width}x{height}")
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb_uint8(img)
    except Image.DecompressionBombError as exc:
        raise TinySRError(
            f"{path}: the image declares more pixels than the limit of {max_pixels:,} ({_declared_size(exc)}); "
            "raise the limit (--max-pixels) if it is real"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise TinySRError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from exc


def _declared_size(exc: Exception) -> str:
    """``WxH`` (our check) or Pillow's pixel count (its own refusal, before the size is known)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found.group(1)):,} pixels" if found else str(exc)


class _pillow_limit:
    """Pillow's own bomb check set to ours while an image opens: its warning silenced (we check the
    size ourselves), its hard refusal raised to twice our limit so it never fires before ours.
    Process-wide, restored on exit."""

    def __init__(self, max_pixels: int | None):
        self.max_pixels = max_pixels

    def __enter__(self):
        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None if self.max_pixels is None else max(self.max_pixels, self.saved or 0)
        self.quiet = warnings.catch_warnings()
        self.quiet.__enter__()
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return self

    def __exit__(self, *exc):
        self.quiet.__exit__(*exc)
        Image.MAX_IMAGE_PIXELS = self.saved
        return False


def write_image(path: str | Path, img: np.ndarray | torch.Tensor) -> None:
    """Write an image as PNG, atomically (temp file + rename).

    ``img`` is RGB uint8 (H, W, 3), or float in [0, 1] as HWC array or CHW / 1CHW tensor,
    which is rounded to uint8 the way the protocol rounds SR outputs.
    """
    path = Path(path)
    arr = to_uint8(img)
    atomic_write(path, lambda tmp: Image.fromarray(arr, mode="RGB").save(tmp, format="PNG"))


def to_uint8(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """HWC uint8 from uint8 HWC, float HWC in [0,1], or a float (1)CHW tensor in [0,1]."""
    if isinstance(img, torch.Tensor):
        t = img.detach()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError("to_uint8: expected a single image, got a batch")
            t = t[0]
        if t.dtype == torch.uint8:
            return t.permute(1, 2, 0).cpu().numpy()
        t = (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        return t.permute(1, 2, 0).cpu().numpy()
    if img.dtype == np.uint8:
        return img
    return np.clip(np.round(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """RGB uint8 HWC array -> float32 tensor (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


# ITU-R BT.601 as MATLAB's rgb2ycbcr: RGB in [0, 1] -> YCbCr in [0, 255] (Y in [16, 235]).
_RGB_TO_YCBCR = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float64)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)


def rgb_to_ycbcr(img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """RGB in [0, 1] -> YCbCr in [0, 255], not rounded (SPEC §1).

    numpy: (..., 3) channels-last. torch: (..., 3, H, W) channels-first.
    """
    if isinstance(img, torch.Tensor):
        m = torch.as_tensor(_RGB_TO_YCBCR, dtype=img.dtype, device=img.device)
        off = torch.as_tensor(_YCBCR_OFFSET, dtype=img.dtype, device=img.device)
        return torch.einsum("ij,...jhw->...ihw", m, img) + off[:, None, None]
    img = np.asarray(img, dtype=np.float64)
    return img @ _RGB_TO_YCBCR.T + _YCBCR_OFFSET


def ycbcr_to_rgb(img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`: YCbCr in [0, 255] -> RGB in [0, 1] (not clipped)."""
    inv = np.linalg.inv(_RGB_TO_YCBCR)
    if isinstance(img, torch.Tensor):
        m = torch.as_tensor(inv, dtype=img.dtype, device=img.device)
        off = torch.as_tensor(_YCBCR_OFFSET, dtype=img.dtype, device=img.device)
        return torch.einsum("ij,...jhw->...ihw", m, img - off[:, None, None])
    img = np.asarray(img, dtype=np.float64)
    return (img - _YCBCR_OFFSET) @ inv.T


def rgb_to_y(img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Y of :func:`rgb_to_ycbcr` only: (H, W, 3) -> (H, W) for numpy, (..., 3, H, W) -> (..., H, W) for torch."""
    if isinstance(img, torch.Tensor):
        w = torch.as_tensor(_RGB_TO_YCBCR[0], dtype=img.dtype, device=img.device)
        return torch.einsum("j,...jhw->...hw", w, img) + 16.0
    return np.asarray(img, dtype=np.float64) @ _RGB_TO_YCBCR[0] + 16.0

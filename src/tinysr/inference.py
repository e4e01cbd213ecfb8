"""Running a model on images: RGB uint8 in; SR out, whole or tile by tile.

Tiling bounds memory for large images: the LR image is cut into ``tile x tile`` pieces, each
run with ``tile_pad`` extra LR pixels of context on every side, and only the centre of each
output is kept. When ``tile_pad`` is at least the model's receptive radius (in LR pixels), every
kept output pixel sees exactly the context it sees without tiling, so the result is the same.
Tiles start on multiples of :data:`TILE_ALIGN` LR pixels, so models with strided stages (the
Haar transform's stride 2) see each tile on the same grid as the whole image.

By default the pad is the model's reach (:func:`default_tile_pad`: a bound from its layers,
checked on a probe image), and images larger than :data:`AUTO_TILE_PIXELS` are tiled without being asked
(:data:`AUTO_TILE` LR pixels a side), so a huge input never needs a model-sized activation of its
whole area. :func:`upscale` writes the tiles straight into a uint8 canvas: beyond the uint8 input
and output, its memory does not grow with the image.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from .io import to_tensor, to_uint8

TILE_ALIGN = 8
AUTO_TILE_PIXELS = 1024 * 1024  # LR pixels above which an untiled request is tiled
AUTO_TILE = 512
IMAGE_WIDE_PAD = 64  # LR pixels: the pad used for models with image-wide statistics, where no pad is exact


class ImageWideContext(UserWarning):
    """Tiling a model whose outputs depend on image-wide statistics: tiles differ from the whole."""


def model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_scale(model: nn.Module) -> int:
    spec = getattr(model, "tinysr_spec", None)
    if spec is not None:
        return spec.scale
    scale = getattr(model, "scale", None)
    if isinstance(scale, int):
        return scale
    raise ValueError("cannot tell the model's scale: build it with tinysr.create_model or give it a 'scale' attribute")


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _module_reach(m: nn.Module) -> int:
    """How far (pixels at the module's input resolution) one output pixel of ``m`` reaches: a conv's
    or a pool's window beyond its own pixel, or a ``spatial_reach`` attribute that modules doing
    spatial work functionally (interpolation, fixed-kernel convs) declare."""
    reach = getattr(m, "spatial_reach", None)
    if reach is not None:
        return int(reach)
    kernel = getattr(m, "kernel_size", None)
    if kernel is None or not hasattr(m, "padding") or isinstance(m.padding, str):
        return 0
    pairs = zip(*(v if isinstance(v, tuple) else (v, v) for v in (kernel, m.padding, getattr(m, "dilation", 1))))
    return max(max(p, d * (k - 1) - p) for k, p, d in pairs)


@torch.no_grad()
def reach_bound(model: nn.Module, probe: int = 32) -> int:
    """An upper bound on the model's receptive radius in LR pixels, from its structure.

    Every module with a spatial window adds its reach, converted to LR pixels by the resolution
    it runs at (a conv on the x2 features of an x2 model adds half its reach, one after a stride-2
    wavelet twice): the sum over all calls in a forward pass, which counts parallel branches as if
    they were in series, so it bounds the true radius from above.
    """
    reaches: list[tuple[int, int]] = []

    def record(module: nn.Module, inputs, out) -> None:
        reaches.append((_module_reach(module), inputs[0].shape[-2]))

    hooks = [m.register_forward_hook(record) for m in model.modules() if _module_reach(m)]
    try:
        model(torch.rand(1, 3, probe, probe, generator=torch.Generator().manual_seed(0)).to(model_device(model)))
    finally:
        for h in hooks:
            h.remove()
    return sum(math.ceil(r * probe / height) for r, height in reaches)


@torch.no_grad()
def reaches_beyond(model: nn.Module, pad: int, margin: int = 2 * TILE_ALIGN) -> bool:
    """Whether an 8 x 8 LR block's output, computed as one tile with ``pad`` pixels of context,
    differs from the same block computed inside a larger image.

    The larger image extends the tile by ``margin`` pixels on every side with other random
    content, darker and of lower contrast, so image-wide statistics (a mean magnitude, a pooled
    attention) differ between the two, as do the share of zero-padded borders.
    """
    device = model_device(model)
    window = 2 * pad + TILE_ALIGN
    size = window + 2 * margin
    gen = torch.Generator().manual_seed(0)
    x, other = torch.rand(1, 3, size, size, generator=gen), 0.3 * torch.rand(1, 3, size, size, generator=gen)
    inside = slice(margin, margin + window)
    keep = torch.zeros(size, size, dtype=torch.bool)
    keep[inside, inside] = True
    s = model_scale(model)
    in_image = model(torch.where(keep, x, other).to(device))[
        ..., (margin + pad) * s : (margin + pad + TILE_ALIGN) * s, (margin + pad) * s : (margin + pad + TILE_ALIGN) * s
    ]
    as_tile = model(x[..., inside, inside].to(device))[..., pad * s : (pad + TILE_ALIGN) * s, pad * s : (pad + TILE_ALIGN) * s]
    return not torch.allclose(in_image, as_tile, rtol=0, atol=1e-5)


def default_tile_pad(model: nn.Module) -> tuple[int, bool]:
    """The tile pad that makes tiled output equal the whole-image output, and whether one exists.

    :func:`reach_bound` plus two pixels, rounded up to :data:`TILE_ALIGN`, checked by
    :func:`reaches_beyond`; ``(IMAGE_WIDE_PAD, False)`` when the check fails: the model uses
    image-wide statistics (a global mean, channel attention) or spatial work no module declares,
    so no pad is known to make tiles exact. The model must be in eval mode.
    """
    pad = _round_up(reach_bound(model) + 2, TILE_ALIGN)
    if reaches_beyond(model, pad):
        return max(pad, IMAGE_WIDE_PAD), False
    return pad, True


def _check_tiling(tile: int, tile_pad: int | None) -> None:
    if tile < 1 or (tile_pad is not None and tile_pad < 0):
        raise ValueError(f"tile must be >= 1 and tile_pad >= 0, got {tile} and {tile_pad}")


def _resolved_pad(model: nn.Module, tile_pad: int | None) -> int:
    if tile_pad is not None:
        return tile_pad
    pad, exact = default_tile_pad(model)
    if not exact:
        warnings.warn(
            f"{model.__class__.__name__} uses image-wide statistics: tiled output differs from the whole image's "
            f"(pad {pad} LR pixels used)",
            ImageWideContext,
            stacklevel=4,
        )
    return pad


def tile_size(image_shape: tuple[int, ...], tile: int | None) -> int | None:
    """The tile :func:`upscale` uses for an image of this shape: the one asked for, or :data:`AUTO_TILE`
    for an image over :data:`AUTO_TILE_PIXELS`; ``None`` when it runs the image whole."""
    h, w = image_shape[:2]
    if tile is None:
        return AUTO_TILE if h * w > AUTO_TILE_PIXELS else None
    return None if h <= tile and w <= tile else tile


def _tile_outputs(
    model: nn.Module, image: np.ndarray, tile: int, tile_pad: int | None
) -> Iterator[tuple[tuple[slice, slice], torch.Tensor]]:
    """Each tile's kept output, clamped, on the CPU, with the HR rows and columns it covers.

    Tiles of ``tile`` LR pixels (rounded up to :data:`TILE_ALIGN`) run with ``tile_pad`` pixels of
    context (``None``: :func:`default_tile_pad`), read straight from the uint8 image.
    """
    _check_tiling(tile, tile_pad)
    pad = _resolved_pad(model, tile_pad)
    device, s = model_device(model), model_scale(model)
    h, w = image.shape[:2]
    step = _round_up(tile, TILE_ALIGN)
    for y0 in range(0, h, step):
        for x0 in range(0, w, step):
            y1, x1 = min(y0 + step, h), min(x0 + step, w)
            py0, px0 = max(y0 - pad, 0), max(x0 - pad, 0)
            piece = model(to_tensor(image[py0 : min(y1 + pad, h), px0 : min(x1 + pad, w)]).to(device)).clamp_(0, 1).cpu()
            oy, ox = (y0 - py0) * s, (x0 - px0) * s
            kept = piece[..., oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
            yield (slice(y0 * s, y1 * s), slice(x0 * s, x1 * s)), kept


@torch.no_grad()
def super_resolve(model: nn.Module, image: np.ndarray, tile: int | None = None, tile_pad: int | None = None) -> torch.Tensor:
    """SR of one RGB uint8 (H, W, 3) image as a float (1, 3, sH, sW) tensor in [0, 1] on the CPU.

    ``tile=None`` runs the image whole (no automatic tiling: this form returns a float canvas of
    the whole output anyway); ``tile_pad=None`` uses :func:`default_tile_pad`.
    """
    h, w = image.shape[:2]
    if tile is None or (h <= tile and w <= tile):
        return model(to_tensor(image).to(model_device(model))).clamp_(0, 1).cpu()
    s = model_scale(model)
    out = torch.zeros(1, 3, h * s, w * s)
    for (ys, xs), piece in _tile_outputs(model, image, tile, tile_pad):
        out[..., ys, xs] = piece
    return out


@torch.no_grad()
def upscale(model: nn.Module, image: np.ndarray, tile: int | None = None, tile_pad: int | None = None) -> np.ndarray:
    """Super-resolve an RGB uint8 (H, W, 3) image; returns RGB uint8 (sH, sW, 3).

    ``tile`` (LR pixels) bounds memory; ``None`` tiles only images over :data:`AUTO_TILE_PIXELS`.
    ``tile_pad=None`` takes :func:`default_tile_pad`, so the tiled result equals the
    untiled one (a model with image-wide statistics warns :class:`ImageWideContext`). Each tile is
    rounded to uint8 as it is made (the protocol's rounding, pixel by pixel, so the same bytes as
    rounding the whole) and written into the output canvas.
    """
    model.eval()
    tile = tile_size(image.shape, tile)
    if tile is None:
        return to_uint8(super_resolve(model, image))
    s = model_scale(model)
    h, w = image.shape[:2]
    out = np.empty((h * s, w * s, 3), np.uint8)
    for (ys, xs), piece in _tile_outputs(model, image, tile, tile_pad):
        out[ys, xs] = to_uint8(piece)
    return out

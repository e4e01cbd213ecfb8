"""Running a model on images: RGB uint8 in; SR out, whole or tile by tile.

Tiling bounds memory for large images: the LR image is cut into ``tile x tile`` pieces, each
run with ``tile_pad`` extra LR pixels of context on every side, and only the centre of each
output is kept. When ``tile_pad`` is at least the model's receptive radius (in LR pixels), every
kept output pixel sees exactly the context it sees without tiling, so the result is the same.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .io import to_tensor, to_uint8


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


@torch.no_grad()
def super_resolve(model: nn.Module, image: np.ndarray, tile: int | None = None, tile_pad: int = 16) -> torch.Tensor:
    """SR of one RGB uint8 (H, W, 3) image as a float (1, 3, sH, sW) tensor in [0, 1] on the CPU."""
    device = model_device(model)
    x = to_tensor(image).to(device)
    h, w = x.shape[-2:]
    if tile is None or (h <= tile and w <= tile):
        return model(x).clamp_(0, 1).cpu()
    if tile < 1 or tile_pad < 0:
        raise ValueError(f"tile must be >= 1 and tile_pad >= 0, got {tile} and {tile_pad}")
    s = model_scale(model)
    out = torch.zeros(1, 3, h * s, w * s)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
            py1, px1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
            piece = model(x[..., py0:py1, px0:px1]).clamp_(0, 1).cpu()
            oy, ox = (y0 - py0) * s, (x0 - px0) * s
            out[..., y0 * s : y1 * s, x0 * s : x1 * s] = piece[..., oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
    return out


def upscale(model: nn.Module, image: np.ndarray, tile: int | None = None, tile_pad: int = 16) -> np.ndarray:
    """Super-resolve an RGB uint8 (H, W, 3) image; returns RGB uint8 (sH, sW, 3).

    ``tile`` (LR pixels) bounds memory; ``tile_pad`` should be at least the model's receptive
    radius in LR pixels for the tiled result to equal the untiled one.
    """
    model.eval()
    return to_uint8(super_resolve(model, image, tile, tile_pad))

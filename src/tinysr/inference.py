"""Running a model on images: uint8 RGB in, float SR tensor out."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .io import to_tensor


def model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def upscale(model: nn.Module, image: np.ndarray) -> torch.Tensor:
    """Super-resolve one RGB uint8 (H, W, 3) image; returns a float (1, 3, sH, sW) tensor in [0, 1] on CPU."""
    device = model_device(model)
    out = model(to_tensor(image).to(device))
    return out.clamp_(0, 1).cpu()

"""Full-precision building blocks shared by the backbones of SPEC §4."""

from __future__ import annotations

import torch
from torch import nn

from ..plugins import no_macs, register_cost

# DIV2K's RGB mean in [0, 1]: EDSR subtracts it at the input and adds it back at the output.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> nn.Conv2d:
    """A 'same'-padded, stride-1 convolution (odd kernel sizes)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Module):
    """Adds ``sign * mean`` per RGB channel; the mean is a buffer, so it travels with the weights."""

    def __init__(self, mean: tuple[float, float, float] = DIV2K_RGB_MEAN, sign: int = -1):
        super().__init__()
        self.register_buffer("shift", sign * torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


class PixelShuffleUpsampler(nn.Sequential):
    """Sub-pixel upsampler: per x2 stage conv C->4C + PixelShuffle(2); x3 is one conv C->9C + PixelShuffle(3).

    ``act`` builds an optional activation placed after each PixelShuffle (SRResNet uses PReLU,
    EDSR none).
    """

    def __init__(self, scale: int, channels: int, act=None):
        if scale & (scale - 1) == 0:
            stages = [2] * (scale.bit_length() - 1)
        elif scale == 3:
            stages = [3]
        else:
            raise ValueError(f"PixelShuffleUpsampler: unsupported scale {scale} (use 2^n or 3)")
        layers: list[nn.Module] = []
        for s in stages:
            layers += [conv(channels, channels * s * s, 3), nn.PixelShuffle(s)]
            if act is not None:
                layers.append(act(channels))
        super().__init__(*layers)


class WeightedSum(nn.Module):
    """``sum_i d_i * I_i`` over a list of same-shaped feature maps; learnable scalars ``d`` initialised to ``1/n``."""

    def __init__(self, n: int):
        super().__init__()
        self.weights = nn.Parameter(torch.full((n,), 1.0 / n))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return sum(w * f for w, f in zip(self.weights, feats))


# A constant shift and learnable scalar weights: element-wise work, not MACs.
register_cost(MeanShift, WeightedSum)(no_macs)


def kaiming_scaled_init(modules: list[nn.Module], scale: float = 0.1) -> None:
    """BasicSR's ``default_init_weights(modules, scale)``: every conv in ``modules`` gets
    Kaiming-normal weights (fan-in, gain sqrt(2)) times ``scale`` and a zero bias."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                with torch.no_grad():
                    m.weight.mul_(scale)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


class FoldableBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose inference is two per-channel float operations: ``x * s + t``.

    With running statistics and in eval mode it computes ``s = weight / sqrt(running_var + eps)``
    and ``t = bias - running_mean * s`` (once per call, in float32) and applies a multiply, then an
    add. A packed binary conv runs exactly these two operations in its output pass
    (:meth:`epilogue_stages`, SPEC §9), so a packed network with BN equals its float-simulated form
    bit for bit. PyTorch's own BN kernel orders the same arithmetic differently (and differently
    per CPU path), so against ``nn.BatchNorm2d`` the outputs differ by rounding only: a few float32
    epsilons of the larger of ``|x * s|`` and ``|t|``. In training, or without running statistics,
    it is ``nn.BatchNorm2d`` unchanged; the state dict is the same, so models saved with either
    load into the other.
    """

    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, t)``, each of shape ``(C,)``: the scale and shift of inference."""
        scale = torch.rsqrt(self.running_var + self.eps)
        if self.weight is not None:
            scale = self.weight * scale
        shift = -self.running_mean * scale
        if self.bias is not None:
            shift = self.bias + shift
        return scale, shift

    def _folds(self) -> bool:
        return not self.training and self.running_mean is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._folds():
            return super().forward(x)
        scale, shift = (v.to(x.dtype).view(1, -1, 1, 1) for v in self.inference_affine())
        return (x * scale).add_(shift)  # in place: the product is a fresh tensor

    def epilogue_stages(self, channels: int) -> list | None:
        """This module as a packed conv's output stages (``nn/packed.py``); None in training."""
        if not self._folds():
            return None
        scale, shift = (v.detach() for v in self.inference_affine())
        return [("mul", scale), ("add", shift)]

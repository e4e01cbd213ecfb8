"""Binary primitives shared by every 1-bit method (SPEC §5.1). Quantization is a property of a layer.

Forward of every activation quantizer: ``sign(x)`` with ``sign(0) = +1`` (values in {-1, +1} only).
The quantizers differ in their backward (the estimator ``d sign(x) / dx`` is replaced by):

=================  ==========================================================================
``ste``            clipped straight-through: ``1`` on ``|x| <= 1``, else 0 (BNN, Courbariaux 2016)
``approx``         ApproxSign: ``2 - 2|x|`` on ``|x| < 1``, else 0 (Bi-Real Net, Liu 2018)
``dynamic`` (t)    derivative of FABNet's polynomial: ``t - (t^2/2)|x|`` on ``|x| < 2/t``, else 0;
                   ``t = 2`` is ApproxSign, larger t a narrower, taller window (FABNet, TIP 2023)
=================  ==========================================================================

Weights: ``sign(W) * alpha`` with ``alpha`` the per-output-channel mean ``|W|`` (XNOR-Net). The
gradient reaches ``W`` through ``alpha`` (magnitude-aware, Bi-Real) and through the sign estimator:
``ste`` (``1`` on ``|w| <= 1``) or ``higher_order`` (``4 + 8w`` on ``-0.5 < w <= 0``, ``4 - 8w``
on ``0 < w <= 0.5``, else 0; FABNet's weight estimator, the dynamic one with t = 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def hard_sign(x: torch.Tensor) -> torch.Tensor:
    """``sign`` with ``sign(0) = +1``."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignWithGrad(torch.autograd.Function):
    """sign forward; backward multiplies by ``window(x)`` (a closed-form estimator)."""

    @staticmethod
    def forward(ctx, x, kind: str, t):
        # t may be a tensor (a schedulable buffer); it is read only in backward, so the forward
        # also runs on the meta device (profiling).
        ctx.save_for_backward(x)
        ctx.kind, ctx.t = kind, t
        return hard_sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * sign_derivative(x, ctx.kind, float(ctx.t)), None, None


def sign_derivative(x: torch.Tensor, kind: str, t: float = 2.0) -> torch.Tensor:
    """The closed form of each estimator's ``d sign(x) / dx`` (see the module docstring)."""
    ax = x.abs()
    if kind == "ste":
        return (ax <= 1).to(x.dtype)
    if kind == "approx":
        return torch.clamp(2 - 2 * ax, min=0)
    if kind == "dynamic":
        return torch.clamp(t - (t * t / 2) * ax, min=0)
    if kind == "higher_order":  # weights: 4 - 8|w| on |w| <= 0.5 (zero at the ends either way)
        return torch.clamp(4 - 8 * ax, min=0)
    raise ValueError(f"unknown sign estimator {kind!r}")


def binary_sign(x: torch.Tensor, kind: str = "ste", t: float | torch.Tensor = 2.0) -> torch.Tensor:
    """``sign(x)`` (sign(0) = +1) whose gradient is the estimator ``kind`` (coefficient ``t`` for dynamic)."""
    return _SignWithGrad.apply(x, kind, t)


class SignActivation(nn.Module):
    """Binary activation quantizer: ``sign(x)`` forward, estimator ``kind`` backward.

    ``kind`` is ``ste``, ``approx`` or ``dynamic``; for ``dynamic`` the coefficient ``t`` is a
    buffer (saved with the model; a training callback may schedule it).
    """

    precision = 1

    def __init__(self, kind: str = "ste", t: float = 2.0):
        super().__init__()
        if kind not in ("ste", "approx", "dynamic"):
            raise ValueError(f"SignActivation: unknown estimator {kind!r} (ste, approx, dynamic)")
        self.kind = kind
        self.register_buffer("t", torch.tensor(float(t)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return binary_sign(x, self.kind, self.t)

    def extra_repr(self) -> str:
        return f"kind={self.kind}" + (f", t={float(self.t):g}" if self.kind == "dynamic" else "")


class LearnableBias(nn.Module):
    """Per-channel learnable shift ``x + b`` (zero-initialised); ReActNet's move / RSign threshold."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class RSign(nn.Module):
    """``sign(x - eps)`` with a per-channel learnable threshold ``eps`` (ReActNet), zero-initialised."""

    precision = 1

    def __init__(self, channels: int, kind: str = "approx", t: float = 2.0):
        super().__init__()
        self.threshold = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.sign = SignActivation(kind, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sign(x - self.threshold)


class RPReLU(nn.Module):
    """ReActNet's RPReLU: ``PReLU(x - gamma) + zeta`` with per-channel gamma, slope and zeta."""

    def __init__(self, channels: int, init: float = 0.25):
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.prelu = nn.PReLU(channels, init=init)
        self.shift_out = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(x - self.shift_in) + self.shift_out


def channel_scale(weight: torch.Tensor) -> torch.Tensor:
    """XNOR-Net's weight scale ``mean |W|`` per output channel, shaped to broadcast over the weight."""
    return weight.abs().mean(dim=tuple(range(1, weight.dim())), keepdim=True)


class XnorWeight(nn.Module):
    """Weight quantizer ``sign(W) * mean|W|`` per output channel (XNOR-Net scaling).

    ``estimator`` is ``ste`` (clip STE) or ``higher_order`` (FABNet); ``scale=False`` gives plain
    ``sign(W)`` (BNN without scaling).
    """

    precision = 1

    def __init__(self, estimator: str = "ste", scale: bool = True):
        super().__init__()
        if estimator not in ("ste", "higher_order"):
            raise ValueError(f"XnorWeight: unknown estimator {estimator!r} (ste, higher_order)")
        self.estimator, self.scale = estimator, scale

    def alpha(self, weight: torch.Tensor) -> torch.Tensor:
        return channel_scale(weight)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        signs = binary_sign(weight, self.estimator)
        return signs * self.alpha(weight) if self.scale else signs

    def extra_repr(self) -> str:
        return f"estimator={self.estimator}, scale={self.scale}"


class BinaryConv2d(nn.Conv2d):
    """``conv2d(act_quantizer(x), weight_quantizer(W)) + bias``; any kernel shape, stride, dilation, groups.

    With neither quantizer it is exactly ``nn.Conv2d``. Padding adds zeros *after* the activation
    quantizer (the float-simulated semantics; a bit-packed kernel must reproduce it, SPEC §9).
    When both quantizers are binary its MACs are binary operations (BOPs) and its weight counts
    1/32 of a parameter (SPEC §3).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=False,
                 act_quantizer: nn.Module | None = None, weight_quantizer: nn.Module | None = None):  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.act_quantizer = act_quantizer
        self.weight_quantizer = weight_quantizer

    @property
    def is_binary(self) -> bool:
        return getattr(self.act_quantizer, "precision", 32) == 1 and getattr(self.weight_quantizer, "precision", 32) == 1

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quantizer(self.weight) if self.weight_quantizer is not None else self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quantizer is not None:
            x = self.act_quantizer(x)
        wq = self.weight_quantizer
        if isinstance(wq, XnorWeight) and wq.scale:
            # conv with the +-1 signs, then the per-channel scale: the same function as conv with
            # sign(W) * alpha, but with binary inputs the conv result is an exact integer, scaled
            # once -- the arithmetic of the bit-packed kernel, which therefore matches bit for bit.
            y = F.conv2d(x, binary_sign(self.weight, wq.estimator), None, self.stride, self.padding, self.dilation, self.groups)
            y = y * wq.alpha(self.weight).view(1, -1, 1, 1)
            return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
        return F.conv2d(x, self.quantized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)

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
gradient reaches ``W`` through the sign estimator: ``ste`` (``1`` on ``|w| <= 1``),
``higher_order`` (``4 + 8w`` on ``-0.5 < w <= 0``, ``4 - 8w`` on ``0 < w <= 0.5``, else 0; FABNet's
paper, the dynamic estimator with t = 4) or ``clip`` (the official FABNet code's: the gradient of
``clamp(W, -1, 1)`` taken as that of the scaled binary weight ``alpha * sign(W)``, so it is not
multiplied by alpha) or ``identity`` (the gradient passes unchanged, E2FIF's code, which also
drops alpha). ``alpha`` is detached by default, as in Bi-Real Net's, ReActNet's, BBCU's
and FABNet's code; ``detach_scale=False`` also lets the gradient through ``alpha``.

**The quantizer protocol.** :class:`BinaryConv2d` and the bit-packed layer (``nn/packed.py``)
know no concrete quantizer; they ask the quantizers what a 1-bit conv needs:

* a weight quantizer (:class:`WeightQuantizer`) gives ``signs(W)`` (+-1, with its estimator's
  gradient) and ``alpha(W)``, the per-output-channel scale (or ``None``), so that
  ``q(W) = signs(W) * alpha(W)``;
* an activation quantizer (:class:`ActivationQuantizer`) gives ``sign(pre_sign(x) - threshold)``:
  ``sign_threshold()`` is the per-channel threshold (or ``None`` for 0), and ``accumulates_input``
  says whether ``pre_sign`` is more than the identity (BAM's accumulation, ``nn/bam.py``), in
  which case the packed layer keeps the quantizer and calls its ``pre_sign``.

Unpacking (a packed model back into its training form, ``compress/pack.py``) asks the inverse:
``latent_weight(signs, alpha, like)`` is a latent weight the weight quantizer maps to
``signs * alpha``, and ``load_sign_threshold(threshold)`` sets the activation quantizer's
threshold. A quantizer whose packed form cannot be inverted (BAM's accumulated weights) raises.

A new binarization scheme subclasses these two (or provides the same members) and packs without
a change to either layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..plugins import no_macs, register_cost


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


class _ClippedScaledSign(torch.autograd.Function):
    """sign forward; backward ``1[|w| <= 1] / alpha``: with the conv scaling by alpha after, the
    weight's gradient is that of ``clamp(W)`` standing in for ``alpha * sign(W)`` (the ``clip`` estimator)."""

    @staticmethod
    def forward(ctx, w, alpha):
        ctx.save_for_backward(w, alpha)
        return hard_sign(w)

    @staticmethod
    def backward(ctx, grad):
        w, alpha = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype) / alpha.clamp_min(torch.finfo(alpha.dtype).tiny), None


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
    if kind == "identity":  # weights: the gradient passes as it is, however large |w| grows
        return torch.ones_like(x)
    raise ValueError(f"unknown sign estimator {kind!r}")


def binary_sign(x: torch.Tensor, kind: str = "ste", t: float | torch.Tensor = 2.0) -> torch.Tensor:
    """``sign(x)`` (sign(0) = +1) whose gradient is the estimator ``kind`` (coefficient ``t`` for dynamic)."""
    return _SignWithGrad.apply(x, kind, t)


class ActivationQuantizer(nn.Module):
    """Base of 1-bit activation quantizers: ``sign(pre_sign(x) - threshold)`` (the protocol above)."""

    precision = 1
    accumulates_input = False  # True when pre_sign depends on more than x (the packed layer keeps it)

    def sign_threshold(self) -> torch.Tensor | None:
        """The per-input-channel threshold subtracted before the sign, or None (0)."""
        return None

    def pre_sign(self, x: torch.Tensor) -> torch.Tensor:
        """The value the threshold and the sign apply to (the identity unless ``accumulates_input``)."""
        return x

    @torch.no_grad()
    def load_sign_threshold(self, threshold: torch.Tensor) -> None:
        """Take ``threshold`` as :meth:`sign_threshold` (unpacking); without one it must be all zero."""
        if bool(threshold.ne(0).any()):
            raise ValueError(f"{type(self).__name__} has no threshold to hold a nonzero one")


class WeightQuantizer(nn.Module):
    """Base of 1-bit weight quantizers: ``q(W) = signs(W) * alpha(W)`` (the protocol above)."""

    precision = 1

    def signs(self, weight: torch.Tensor) -> torch.Tensor:
        """``+-1`` of the shape of ``weight`` (sign(0) = +1), with the estimator's gradient."""
        raise NotImplementedError

    def alpha(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The per-output-channel scale, shaped ``(O, 1, 1, 1)``, or None (unscaled signs)."""
        return None

    def latent_weight(self, signs: torch.Tensor, alpha: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A latent weight ``W`` with ``signs(W) * alpha(W) = signs * alpha`` (unpacking a packed
        layer; ``alpha`` per output channel, ``like`` the layer's current weight)."""
        raise ValueError(f"{type(self).__name__} cannot recover a latent weight from packed signs")

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        signs, alpha = self.signs(weight), self.alpha(weight)
        return signs if alpha is None else signs * alpha


class SignActivation(ActivationQuantizer):
    """Binary activation quantizer: ``sign(x)`` forward, estimator ``kind`` backward.

    ``kind`` is ``ste``, ``approx`` or ``dynamic``; for ``dynamic`` the coefficient ``t`` is a
    buffer (saved with the model; a training callback may schedule it).
    """

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


class RSign(ActivationQuantizer):
    """``sign(x - eps)`` with a per-channel learnable threshold ``eps`` (ReActNet), zero-initialised."""

    def __init__(self, channels: int, kind: str = "approx", t: float = 2.0):
        super().__init__()
        self.threshold = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.sign = SignActivation(kind, t)

    def sign_threshold(self) -> torch.Tensor:
        return self.threshold.flatten()

    @torch.no_grad()
    def load_sign_threshold(self, threshold: torch.Tensor) -> None:
        self.threshold.copy_(threshold.view_as(self.threshold))

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

    def epilogue_stages(self, channels: int) -> list:
        """This module as a packed conv's output stages (``nn/packed.py``): ``x - gamma`` is
        ``x + (-gamma)`` exactly, so the stages compute the same floats as ``forward``."""
        slope = self.prelu.weight.detach().expand(channels)
        return [("add", -self.shift_in.detach().flatten()), ("prelu", slope), ("add", self.shift_out.detach().flatten())]


def channel_scale(weight: torch.Tensor) -> torch.Tensor:
    """XNOR-Net's weight scale ``mean |W|`` per output channel, shaped to broadcast over the weight."""
    return weight.abs().mean(dim=tuple(range(1, weight.dim())), keepdim=True)


WEIGHT_ESTIMATORS = ("ste", "higher_order", "clip", "identity")


class XnorWeight(WeightQuantizer):
    """Weight quantizer ``sign(W) * mean|W|`` per output channel (XNOR-Net scaling).

    ``estimator`` is ``ste`` (clip STE), ``higher_order`` (FABNet's paper), ``clip`` (FABNet's
    code) or ``identity`` (E2FIF's code; see the module docstring); ``scale=False`` gives plain
    ``sign(W)`` (BNN without scaling); ``detach_scale`` (default True, the papers' code) stops the gradient through alpha.
    """

    def __init__(self, estimator: str = "ste", scale: bool = True, detach_scale: bool = True):
        super().__init__()
        if estimator not in WEIGHT_ESTIMATORS:
            raise ValueError(f"XnorWeight: unknown estimator {estimator!r} ({', '.join(WEIGHT_ESTIMATORS)})")
        self.estimator, self.scale, self.detach_scale = estimator, scale, detach_scale

    def signs(self, weight: torch.Tensor) -> torch.Tensor:
        if self.estimator == "clip":
            alpha = channel_scale(weight).detach() if self.scale else torch.ones_like(weight[:, :1, :1, :1])
            return _ClippedScaledSign.apply(weight, alpha)
        return binary_sign(weight, self.estimator)

    def alpha(self, weight: torch.Tensor) -> torch.Tensor | None:
        if not self.scale:
            return None
        alpha = channel_scale(weight)
        return alpha.detach() if self.detach_scale else alpha

    def latent_weight(self, signs: torch.Tensor, alpha: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``signs * alpha``: its mean magnitude is ``alpha`` again. Unscaled signs keep the
        magnitude ``like`` has per channel, which no estimator's window clips (a fresh layer's)."""
        magnitude = alpha.view(-1, *[1] * (signs.dim() - 1)) if self.scale else channel_scale(like)
        return signs * magnitude.to(signs.dtype)

    def extra_repr(self) -> str:
        return f"estimator={self.estimator}, scale={self.scale}, detach_scale={self.detach_scale}"


class BinaryConv2d(nn.Conv2d):
    """``conv2d(act_quantizer(x), weight_quantizer(W)) + bias``; any kernel shape, stride, dilation, groups.

    With neither quantizer it is exactly ``nn.Conv2d``. Padding adds zeros *after* the activation
    quantizer (the float-simulated semantics; a bit-packed kernel must reproduce it, SPEC §9).
    When both quantizers are binary its MACs are binary operations (BOPs) and its weight counts
    1/32 of a parameter (SPEC §3).
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=False,
        act_quantizer: nn.Module | None = None,
        weight_quantizer: nn.Module | None = None,
    ):
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
        if not callable(getattr(wq, "signs", None)):  # full precision, or a quantizer outside the protocol
            return F.conv2d(x, self.quantized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)
        # conv with the +-1 signs, then the per-channel scale: the same function as conv with
        # signs * alpha, but with binary inputs the conv result is an exact integer, scaled once --
        # the arithmetic of the bit-packed kernel, which therefore matches bit for bit.
        y = F.conv2d(x, wq.signs(self.weight), None, self.stride, self.padding, self.dilation, self.groups)
        alpha = wq.alpha(self.weight)
        if alpha is not None:
            y = y * alpha.view(1, -1, 1, 1)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


def _binary_conv_params(m: BinaryConv2d) -> tuple[int, int]:
    """A binarized weight is 1 bit (counted 1/32); the bias stays full precision."""
    bias = m.bias.numel() if m.bias is not None else 0
    if getattr(m.weight_quantizer, "precision", 32) == 1:
        return bias, m.weight.numel()
    return bias + m.weight.numel(), 0


@register_cost(BinaryConv2d, params=_binary_conv_params)
def binary_conv_cost(m: BinaryConv2d, inputs, out) -> tuple[int, int]:
    """Binary MACs when both operands are 1-bit (XNOR-popcount); otherwise ordinary MACs (SPEC §3)."""
    kh, kw = m.kernel_size
    macs = out.numel() * (m.in_channels // m.groups) * kh * kw
    return (0, macs) if m.is_binary else (macs, 0)


# Thresholds, shifts and slopes: counted as parameters, their element-wise work is not MACs.
register_cost(SignActivation, LearnableBias, RSign, RPReLU)(no_macs)

"""BAM's bit-accumulation quantizers (Xin et al., ECCV 2020), SPEC §5.3, ``refs/bam_eq_*.png``.

A group of binary convs (same weight shape for weight accumulation, same activation shape for
activation accumulation) shares an :class:`AccumulationGroup`, a plain object listing the group's
convs in forward order (not a module: the convs stay where the network puts them).

**Weights** (quantizer :class:`AccumulatedWeight` of the n-th conv of a group)::

    W_n^B = sign(N(a_1 W_1 + ... + a_n W_n)) * E(|W_n|)

``N`` centres the tensor and divides by its standard deviation; ``E(|W_n|)`` is the mean absolute
weight per output channel (XNOR scaling). ``sign(N(u))`` depends on ``u`` only up to a positive
factor, so ``a_n = 1`` is fixed and the earlier coefficients are what a group's
``coefficients`` setting decides:

* ``"learned"`` (default): ``a_1..a_{n-1}`` are trained with the weights (straight-through through
  the sign, exact through ``N``), starting at ``1/(n-1)`` each, so the earlier layers together
  weigh as much as the layer's own weights. Algorithm 1 (``refs/bam_algorithm.png``) lists the
  coefficients among what the forward computes, not what it updates; this is our reading of the
  abstract's "accumulating multi-layer one-bit values" that keeps the accumulation alive (the
  accumulated signs then differ from the layer's own in a real share of entries). BENCHMARKS.md
  trains both readings at equal budget.
* ``"solved"``: eq. 6 read literally. The coefficients are buffers that the ``bam_solve`` callback
  re-solves every ``every`` iterations (and at the start) to minimise ``J(a) = ||W_n - W_n^B||^2``
  with :func:`solve_coefficients`. **This reading is degenerate**: with the scale fixed at
  ``E(|W_n|)``, ``J`` is minimised by ``sign(W_n)`` itself, so the optimum is ``a_{k<n} ~ 0`` and
  the accumulated signs are the layer's own signs up to a fraction of a percent (on independent
  64x64x3x3 layers the solve returns ``|a_k| < 0.01``): the network is plain XNOR weights plus
  BAM's activation accumulation. It stays available for the paper's equations.

*The solver.* With the per-channel scale ``e``, ``J = sum w^2 + sum e^2 -
2 sum_i e_i w_i s_i``: minimising J is maximising the weighted sign agreement ``F = sum_i e_i
w_i s_i`` of ``s = sign(N(u))`` with ``W_n``. Along one coefficient ``t`` (the others fixed),
``u_i(t) - mean = c_i + t d_i`` flips sign at ``t_i = -c_i / d_i``, so F is piecewise constant
with those breakpoints: sorting them and a cumulative sum give F on every interval, and the
best interval's midpoint is the **exact** minimiser along that line. Coordinate descent with
this exact line search, ``sweeps`` passes over the coefficients (default 2), starting from the
current values; each step never increases J (with a single earlier layer it is the global
optimum). Cost: O(L * N log N) per refresh for L coefficients over N weights.

**Activations** (quantizer :class:`AccumulatedSign` of the n-th conv)::

    A_n^B = sign(BN(b_1 A_1 + ... + b_n A_n)),   b_k = b_k^scale * E(|A_k|)

with ``A_k`` the k-th conv's input in this forward pass (the group keeps the running sum, reset
by its first conv), ``E(|A_k|)`` the mean magnitude per sample and channel (the paper writes
``E(A_k)``; read literally, the mean of an activation that is centred near zero can vanish or flip
the sign of its term, so the default takes the magnitude, as XNOR-Net's scale and the paper's
weight formula ``E(|W_n|)`` do; ``activation_scale="mean"`` gives the literal ``E(A_k)``), and ``b^scale`` the
only trained part: a learnable ``C x 1`` array per conv (one scale per channel, shared over the
spatial positions: a spatial array cannot follow the image size). BN is per-channel, without
affine parameters (its running statistics serve at inference).

``accumulate=False`` (the ablation) keeps only each conv's own term: ``sign(N(W_n)) * E|W_n|``
and ``sign(BN(b_n A_n))``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..plugins import no_macs, register_cost
from .binary import ActivationQuantizer, WeightQuantizer, binary_sign, channel_scale  # E(|W|): XNOR-Net's per-channel scale

ACTIVATION_SCALES = ("abs_mean", "mean")
WEIGHT_COEFFICIENTS = ("learned", "solved")


class AccumulationGroup:
    """The convs of one accumulation group, in forward order, and the running activation sum.

    ``activation_scale`` (activation groups): ``abs_mean`` weighs each term by ``E(|A_k|)``,
    ``mean`` by ``E(A_k)``; ``coefficients`` (weight groups): ``learned`` or ``solved`` weight
    coefficients ``a`` (see the module docstring).
    """

    def __init__(self, accumulate: bool = True, activation_scale: str = "abs_mean", coefficients: str = "learned"):
        if activation_scale not in ACTIVATION_SCALES:
            raise ValueError(f"activation_scale must be one of {', '.join(ACTIVATION_SCALES)}, got {activation_scale!r}")
        if coefficients not in WEIGHT_COEFFICIENTS:
            raise ValueError(f"weight coefficients must be one of {', '.join(WEIGHT_COEFFICIENTS)}, got {coefficients!r}")
        self.accumulate, self.activation_scale, self.coefficients = accumulate, activation_scale, coefficients
        self.convs: list[nn.Module] = []
        self.act_sum: torch.Tensor | None = None

    def add(self, conv: nn.Module) -> int:
        self.convs.append(conv)
        return len(self.convs) - 1

    def __deepcopy__(self, memo):  # copied with the model; the conv references follow the copy
        new = AccumulationGroup(self.accumulate, self.activation_scale, self.coefficients)
        memo[id(self)] = new
        new.convs = copy.deepcopy(self.convs, memo)
        return new


def normalized(u: torch.Tensor) -> torch.Tensor:
    """``N(u)``: zero mean, unit variance over the whole tensor."""
    centred = u - u.mean()
    return centred / centred.pow(2).mean().sqrt().clamp_min(1e-12)


class AccumulatedWeight(WeightQuantizer):
    """Weight quantizer of the ``index``-th conv of ``group`` (see the module docstring).

    The coefficients ``a_1..a_n`` are :meth:`coefficients`: the buffer ``coeffs`` when solved, the
    trained ``earlier`` (``a_1..a_{n-1}``) followed by the fixed ``a_n = 1`` when learned.
    """

    def __init__(self, group: AccumulationGroup, index: int):
        super().__init__()
        self.group, self.index = group, index
        if group.coefficients == "learned":
            if group.accumulate and index > 0:  # nothing to learn for the first conv or the ablation
                self.earlier = nn.Parameter(torch.full((index,), 1.0 / index))
        else:
            coeffs = torch.zeros(index + 1)
            coeffs[index] = 1.0
            self.register_buffer("coeffs", coeffs)  # a_1..a_n, solved (never trained)

    def coefficients(self) -> torch.Tensor:
        if self.group.coefficients == "solved":
            return self.coeffs
        if not hasattr(self, "earlier"):
            return torch.eye(self.index + 1)[-1]
        return torch.cat([self.earlier, self.earlier.new_ones(1)])

    def accumulated(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.group.accumulate or self.index == 0:
            return weight
        coeffs = self.coefficients()
        earlier = [self.group.convs[k].weight for k in range(self.index)]
        return sum(coeffs[k] * w for k, w in enumerate(earlier)) + coeffs[self.index] * weight

    def signs(self, weight: torch.Tensor) -> torch.Tensor:
        """``sign(N(a_1 W_1 + ... + a_n W_n))`` (straight-through in backward)."""
        return binary_sign(normalized(self.accumulated(weight)), "ste")

    def alpha(self, weight: torch.Tensor) -> torch.Tensor:
        """``E(|W_n|)`` per output channel."""
        return channel_scale(weight)

    @torch.no_grad()
    def solve(self, sweeps: int = 2) -> None:
        """Re-solve eq. 6 (``solved`` coefficients only; learned ones train with the weights)."""
        if not self.group.accumulate or self.index == 0 or self.group.coefficients != "solved":
            return
        weights = [self.group.convs[k].weight.detach() for k in range(self.index + 1)]
        self.coeffs.copy_(solve_coefficients(weights, self.coeffs, sweeps))


def objective(weights: list[torch.Tensor], coeffs: torch.Tensor) -> float:
    """``J(a) = ||W_n - sign(N(sum a_k W_k)) * E|W_n|||^2`` (W_n the last of ``weights``)."""
    target = weights[-1]
    u = sum(c * w for c, w in zip(coeffs.tolist(), weights))
    s = torch.where(normalized(u) >= 0, 1.0, -1.0)
    return float(((target - s * channel_scale(target)) ** 2).sum())


def _agreement(c: torch.Tensor, d: torch.Tensor, gain: torch.Tensor, t: float) -> float:
    """``F(t) = sum gain_i * sign(c_i + t d_i)`` with sign(0) = +1."""
    return float((gain * torch.where(c + t * d >= 0, 1.0, -1.0)).sum())


def _best_along(c: torch.Tensor, d: torch.Tensor, gain: torch.Tensor, current: float) -> float:
    """The t maximising ``F(t)`` (see :func:`_agreement`) exactly; ``current`` unless strictly better."""
    moving = d != 0
    if not bool(moving.any()):
        return current
    cm, dm, gm = c[moving], d[moving], gain[moving]
    breaks, order = torch.sort(-cm / dm)
    dm, gm = dm[order], gm[order]
    # For t below every breakpoint sign(c + t d) = -sign(d); crossing its breakpoint it becomes sign(d).
    sd = torch.where(dm > 0, 1.0, -1.0)
    base = _agreement(c[~moving], d[~moving], gain[~moving], 0.0)
    start = base - float((gm * sd).sum())
    after = start + torch.cumsum(2 * gm * sd, 0)  # F on (breaks[i], breaks[i+1])
    width = torch.cat([breaks[1:] - breaks[:-1], breaks.new_ones(1)])
    after = torch.where(width > 0, after, torch.full_like(after, -float("inf")))  # empty intervals
    i = int(torch.argmax(after))
    if start >= float(after[i]):
        candidate = float(breaks[0]) - 1.0
    else:
        right = float(breaks[i + 1]) if i + 1 < len(breaks) else float(breaks[i]) + 2.0
        candidate = (float(breaks[i]) + right) / 2
    better = _agreement(c, d, gain, candidate) > _agreement(c, d, gain, current)
    return candidate if better else current


def solve_coefficients(weights: list[torch.Tensor], init: torch.Tensor | None = None, sweeps: int = 2) -> torch.Tensor:
    """Coordinate descent with exact line searches for ``argmin_a J(a)``, ``a_n = 1`` fixed."""
    n = len(weights)
    coeffs = init.clone().float() if init is not None else torch.eye(n)[-1]
    coeffs[-1] = 1.0
    flat = [w.detach().float().flatten() for w in weights]
    target = weights[-1].detach().float()
    gain = (channel_scale(target) * target).flatten()
    centred = [f - f.mean() for f in flat]
    for _ in range(sweeps):
        for k in range(n - 1):
            rest = sum(coeffs[j] * centred[j] for j in range(n) if j != k)
            coeffs[k] = _best_along(rest, centred[k], gain, float(coeffs[k]))
    return coeffs


class AccumulatedSign(ActivationQuantizer):
    """Activation quantizer of the ``index``-th conv of ``group`` (see the module docstring)."""

    accumulates_input = True  # pre_sign reads the group's running sum: a packed layer keeps this module

    def __init__(self, group: AccumulationGroup, index: int, channels: int):
        super().__init__()
        self.group, self.index = group, index
        self.scale = nn.Parameter(torch.ones(channels, 1))  # b^scale: C x 1
        self.norm = nn.BatchNorm2d(channels, affine=False)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return binary_sign(self.pre_sign(a), "ste")

    def pre_sign(self, a: torch.Tensor) -> torch.Tensor:
        """``BN(b_1 A_1 + ... + b_n A_n)``, the value whose sign is the activation (a packed conv signs it itself)."""
        magnitude = a.abs() if self.group.activation_scale == "abs_mean" else a
        term = self.scale.view(1, -1, 1, 1) * magnitude.mean(dim=(2, 3), keepdim=True) * a
        if self.index == 0 or not self.group.accumulate:
            total = term
        else:
            if self.group.act_sum is None or self.group.act_sum.shape != term.shape:
                raise RuntimeError("AccumulatedSign: the group's earlier convs did not run first in this forward pass")
            total = self.group.act_sum + term
        self.group.act_sum = total
        return self.norm(total)


# b^scale: counted as parameters; the accumulation is element-wise work, not MACs.
# Learned weight coefficients count as full-precision parameters of the training form; packing
# bakes them into the signs, so a packed model has none.
register_cost(AccumulatedSign, AccumulatedWeight)(no_macs)

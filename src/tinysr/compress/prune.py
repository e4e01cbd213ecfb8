"""Structured filter pruning: weight normalisation, pruning plans and surgery (SPEC §6).

* :class:`WeightNormConv2d` is ASSL's WN layer (``refs/assl_wn_eq.png``): ``W_i = gamma_i * V_i /
  ||V_i||`` with a per-filter scale gamma initialised to ``||W_i||``, so inserting it leaves the
  function unchanged; :func:`fold_weight_norm` writes ``gamma * V / ||V||`` back into a plain conv
  (the same tensor the WN layer convolves with: exact).
* :func:`l1_plan` keeps, per channel group, the filters with the largest L1 norm (summed over
  the group's producers for a constrained group, so they keep identical indices): the *aligned*
  L1 baseline, tinysr's.
* :func:`l1_unaligned_plan` is the official ASSL code's L1 baseline: every conv keeps its own
  largest-L1 filters, tied ones too, and each conv reads the kept channels of the conv before
  it (``channels.narrow_layers``), so the residual adds sum channels that were not summed before.
* :func:`prune` / :func:`prune_layers` perform the surgery (``channels.narrow`` /
  ``narrow_layers``) and record the kept widths in the model spec (transform ``prune``), so
  ``tinysr.load`` rebuilds the smaller network on its own (the widths are the same either way).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TinySRError
from .channels import ChannelGroup, channel_groups, narrow, narrow_layers, set_submodule
from .transforms import record, register_transform

TRANSFORM = "prune"


class WeightNormConv2d(nn.Module):
    """A conv whose filters are ``gamma * V / ||V||`` (ASSL's WN; gamma is the filter importance)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if type(conv) is not nn.Conv2d:
            raise TinySRError(f"weight normalisation needs a plain nn.Conv2d, got {type(conv).__name__}")
        self.conv = conv  # keeps geometry, bias and the direction V (its weight)
        self.gamma = nn.Parameter(self.filter_norms(conv.weight.detach()).clone())

    @staticmethod
    def filter_norms(weight: torch.Tensor) -> torch.Tensor:
        return weight.flatten(1).norm(dim=1)

    def effective_weight(self) -> torch.Tensor:
        v = self.conv.weight
        return v * (self.gamma / self.filter_norms(v).clamp_min(1e-12)).view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, self.effective_weight(), c.bias, c.stride, c.padding, c.dilation, c.groups)

    @torch.no_grad()
    def folded(self) -> nn.Conv2d:
        conv = copy.deepcopy(self.conv)
        conv.weight.copy_(self.effective_weight())
        return conv


def insert_weight_norm(model: nn.Module, names: list[str]) -> dict[str, WeightNormConv2d]:
    """Wrap each named conv in a :class:`WeightNormConv2d`, in place; returns them by name."""
    wrapped = {}
    for name in names:
        wrapped[name] = WeightNormConv2d(model.get_submodule(name))
        set_submodule(model, name, wrapped[name])
    return wrapped


def fold_weight_norm(model: nn.Module) -> nn.Module:
    """Replace every :class:`WeightNormConv2d` by the plain conv it computes, in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, WeightNormConv2d):
            set_submodule(model, name, module.folded())
    return model


def kept_count(channels: int, ratio: float, multiple: int = 1) -> int:
    """Filters kept when pruning ``ratio`` of ``channels`` (at least one): the pruned count is
    ``ceil(channels * ratio)``, as in the official ASSL code (ASSLN: 256 channels at ratio
    207/256 keep 49). With ``multiple`` > 1 the kept count is rounded to the nearest multiple of it
    (halves up; at least ``multiple``, at most ``channels``): CPU convolutions run widths that fill
    their vector registers much faster per Mult-Add than the widths between (BENCHMARKS.md,
    "Pruned widths the CPU runs well")."""
    if not 0.0 <= ratio < 1.0:
        raise TinySRError(f"pruning ratio must be in [0, 1), got {ratio}")
    if multiple < 1:
        raise TinySRError(f"channel multiple must be at least 1, got {multiple}")
    pruned = math.ceil(round(channels * ratio, 9))  # round first: 64 * 0.9 must not become 58 by float noise
    kept = max(1, channels - pruned)
    if multiple > 1:
        kept = min(channels, max(multiple, multiple * math.floor(kept / multiple + 0.5)))
    return kept


def layer_scores(model: nn.Module, name: str) -> torch.Tensor:
    """Importance of each filter of conv ``name``: its L1 norm, or the WN gamma when the conv is
    weight-normalised (the quantity ASSL's penalty drives to zero)."""
    module = model.get_submodule(name)
    if isinstance(module, WeightNormConv2d):
        return module.gamma.detach().abs().cpu()
    return module.weight.detach().abs().flatten(1).sum(1).cpu()


def filter_scores(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Importance of each channel of ``group``: :func:`layer_scores` summed over its producers."""
    return sum((layer_scores(model, name) for name in group.producers), torch.zeros(group.channels))


def lowest(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` smallest scores (ties broken by index, deterministic)."""
    return torch.sort(scores, stable=True).indices[:n].sort().values


def l1_plan(model: nn.Module, ratio: float, groups: list[ChannelGroup] | None = None, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Kept channel indices per group: the largest-L1 filters, ``ratio`` of each layer removed
    (the kept count rounded to ``multiple``, :func:`kept_count`)."""
    groups = groups if groups is not None else channel_groups(model)
    plan = {}
    for g in groups:
        scores = filter_scores(model, g)
        plan[g.key] = kept_indices(g.channels, lowest(scores, g.channels - kept_count(g.channels, ratio, multiple)))
    return plan


def l1_unaligned_plan(
    model: nn.Module, ratio: float, groups: list[ChannelGroup] | None = None, multiple: int = 1
) -> dict[str, torch.Tensor]:
    """Kept filter indices per producer conv, as the official ASSL code's L1 baseline picks them:
    each conv its own largest-L1 filters, ``ratio`` of each layer removed, tied convs included (they
    keep as many filters, not the same ones). For :func:`prune_layers`."""
    groups = groups if groups is not None else channel_groups(model)
    plan = {}
    for g in groups:
        n_pruned = g.channels - kept_count(g.channels, ratio, multiple)
        for name in g.producers:
            plan[name] = kept_indices(g.channels, lowest(layer_scores(model, name), n_pruned))
    return plan


def kept_indices(channels: int, pruned) -> torch.Tensor:
    """The sorted indices of ``range(channels)`` that are not in ``pruned``."""
    mask = torch.ones(channels, dtype=torch.bool)
    mask[torch.as_tensor(pruned, dtype=torch.long)] = False
    return mask.nonzero().flatten()


@torch.no_grad()
def prune(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A pruned copy of ``model`` keeping channels ``keep[group key]`` (see :func:`l1_plan`)."""
    pruned = narrow(copy.deepcopy(model), keep)
    return record(model, pruned, TRANSFORM, widths={key: int(len(idx)) for key, idx in keep.items()})


@torch.no_grad()
def prune_layers(model: nn.Module, kept: dict[str, torch.Tensor]) -> nn.Module:
    """A pruned copy of ``model`` keeping filters ``kept[conv]`` of each producer conv (see
    :func:`l1_unaligned_plan`); consumers read the kept channels of the conv before them."""
    groups = channel_groups(model)
    pruned = narrow_layers(copy.deepcopy(model), kept, groups)
    widths = {g.key: int(len(kept[g.key])) for g in groups if g.key in kept}
    return record(model, pruned, TRANSFORM, widths=widths)


@register_transform(TRANSFORM)
def apply_widths(model: nn.Module, widths: dict[str, int]) -> nn.Module:
    """Structure of a pruned model (the first ``n`` channels of each group; weights come from the file)."""
    narrow(model, {key: torch.arange(n) for key, n in widths.items()})
    return record(model, model, TRANSFORM, widths=dict(widths))

"""Cost accounting, counted from the modules themselves (SPEC §3, DESIGN.md principle 5).

* **params**: full-precision parameters count 1, binarized weights 1/32 (BBCU convention);
* **flops**: multiply-accumulates (MACs) of full-precision layers (bias additions, activations
  and other element-wise work are not counted, as in the papers' tables);
* **bops**: binary MACs of binary convolutions;
* **ops** = flops + bops / 64.

MACs come from forward hooks during one pass on the ``meta`` device, so no arithmetic is done
and any input size costs nothing. Every module that owns parameters must have a cost rule
(:func:`register_cost`); an unknown one is an error rather than a silent zero.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from .errors import TinySRError
from .nn.binary import BinaryConv2d, LearnableBias, RPReLU, RSign
from .nn.layers import WeightedSum
from .nn.rep import EdgeBranch

BINARY_PARAM_WEIGHT = 1.0 / 32.0
BOPS_PER_OP = 64.0


@dataclass
class LayerCost:
    """The cost of one module: its own parameters (not its children's) and its MACs in one forward."""

    name: str
    kind: str
    params_fp: int = 0
    params_binary: int = 0
    flops: int = 0
    bops: int = 0
    calls: int = 0


@dataclass
class Profile:
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def params_fp(self) -> int:
        return sum(layer.params_fp for layer in self.layers)

    @property
    def params_binary(self) -> int:
        return sum(layer.params_binary for layer in self.layers)

    @property
    def params(self) -> float:
        return self.params_fp + self.params_binary * BINARY_PARAM_WEIGHT

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def bops(self) -> int:
        return sum(layer.bops for layer in self.layers)

    @property
    def ops(self) -> float:
        return self.flops + self.bops / BOPS_PER_OP

    def summary(self) -> dict[str, float]:
        """The totals as plain numbers (the keys of ``tinysr profile --json``)."""
        return {
            "params": self.params,
            "params_fp": self.params_fp,
            "params_binary": self.params_binary,
            "flops": self.flops,
            "bops": self.bops,
            "ops": self.ops,
        }

    def as_dict(self) -> dict:
        return {**self.summary(), "layers": [asdict(layer) for layer in self.layers]}


# A cost rule: (module, inputs, output) -> (flops, bops) for one call.
CostRule = Callable[[nn.Module, tuple, torch.Tensor], tuple[int, int]]
# A parameter split: module -> (fp params, binary params) of its own parameters.
ParamRule = Callable[[nn.Module], tuple[int, int]]

_COST_RULES: dict[type, CostRule] = {}
_PARAM_RULES: dict[type, ParamRule] = {}


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def register_cost(*types: type, params: ParamRule | None = None):
    """Decorator registering a MAC rule (and optionally a params split) for module types."""

    def deco(rule: CostRule) -> CostRule:
        for t in types:
            _COST_RULES[t] = rule
            if params is not None:
                _PARAM_RULES[t] = params
        return rule

    return deco


def _rule_for(module: nn.Module, table: dict):
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    return None


@register_cost(nn.Conv2d, nn.ConvTranspose2d)
def _conv_cost(m: nn.Conv2d, inputs, out) -> tuple[int, int]:
    kh, kw = m.kernel_size
    per_output = (m.in_channels // m.groups) * kh * kw
    if isinstance(m, nn.ConvTranspose2d):  # every input pixel scatters into out_channels/groups maps
        return inputs[0].numel() * (m.out_channels // m.groups) * kh * kw, 0
    return out.numel() * per_output, 0


def _binary_conv_params(m: BinaryConv2d) -> tuple[int, int]:
    """A binarized weight is 1 bit (counted 1/32); the bias stays full precision."""
    bias = m.bias.numel() if m.bias is not None else 0
    if getattr(m.weight_quantizer, "precision", 32) == 1:
        return bias, m.weight.numel()
    return bias + m.weight.numel(), 0


@register_cost(BinaryConv2d, params=_binary_conv_params)
def _binary_conv_cost(m: BinaryConv2d, inputs, out) -> tuple[int, int]:
    """Binary MACs when both operands are 1-bit (XNOR-popcount); otherwise ordinary MACs."""
    macs, _ = _conv_cost(m, inputs, out)
    return (0, macs) if m.is_binary else (macs, 0)


@register_cost(EdgeBranch)
def _edge_branch_cost(m: EdgeBranch, inputs, out) -> tuple[int, int]:
    """The depthwise 3x3 edge filter (its 1x1 conv is a child, counted on its own)."""
    return out.numel() * 9, 0


@register_cost(nn.Linear)
def _linear_cost(m: nn.Linear, inputs, out) -> tuple[int, int]:
    return out.numel() * m.in_features, 0


# Per-channel affine or activation parameters: counted as params, their element-wise work is not
# counted as MACs (BN folds into the neighbouring conv at inference).
@register_cost(nn.BatchNorm2d, nn.BatchNorm1d, nn.PReLU, nn.GroupNorm, nn.LayerNorm, LearnableBias, RSign, RPReLU, WeightedSum)
def _elementwise_cost(m, inputs, out) -> tuple[int, int]:
    return 0, 0


def profile(model: nn.Module, lr_size: tuple[int, int], batch: int = 1) -> Profile:
    """Count params, MACs and binary MACs of ``model`` for one LR input of ``lr_size = (H, W)``.

    The model is copied to the ``meta`` device; the original is untouched.
    """
    h, w = lr_size
    if h < 1 or w < 1:
        raise TinySRError(f"profile: input size must be positive, got {w}x{h}")
    meta_model = copy.deepcopy(model).to("meta").eval()
    costs: dict[str, LayerCost] = {}
    hooks = []
    for name, module in meta_model.named_modules():
        own = _own_params(module)
        cost_rule = _rule_for(module, _COST_RULES)
        if own and cost_rule is None:
            raise TinySRError(
                f"profile: no cost rule for layer {name or '<root>'} of type {type(module).__name__}; "
                "register one with tinysr.profile.register_cost"
            )
        param_rule = _rule_for(module, _PARAM_RULES)
        fp, binary = param_rule(module) if param_rule else (own, 0)
        cost = LayerCost(name=name or "<root>", kind=type(module).__name__, params_fp=fp, params_binary=binary)
        costs[name] = cost
        if cost_rule is not None:

            def hook(mod, inputs, output, cost=cost, rule=cost_rule):
                flops, bops = rule(mod, inputs, output)
                cost.flops += int(flops)
                cost.bops += int(bops)
                cost.calls += 1

            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            meta_model(torch.empty(batch, 3, h, w, device="meta"))
    finally:
        for handle in hooks:
            handle.remove()
    layers = [c for c in costs.values() if c.params_fp or c.params_binary or c.flops or c.bops]
    return Profile(layers)

"""Cost accounting, counted from the modules themselves (SPEC §3, DESIGN.md principle 5).

* **params**: full-precision parameters count 1, binarized weights 1/32 (BBCU convention);
* **flops**: multiply-accumulates (MACs) of full-precision layers (bias additions, activations
  and other element-wise work are not counted, as in the papers' tables);
* **bops**: binary MACs of binary convolutions;
* **ops** = flops + bops / 64.

MACs come from forward hooks during one pass on the ``meta`` device, so no arithmetic is done
and any input size costs nothing. Each layer type states its cost rule where it is defined
(:func:`tinysr.plugins.register_cost`; PyTorch's own layers in ``nn/torch_costs.py``) and this
module only adds them up. Every module that owns parameters or buffers (a packed layer owns only
buffers) must have a rule; an unknown one is an error rather than a silent zero.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from . import nn as layer_modules  # noqa: F401  (imported so that every layer's cost rule is registered)
from .errors import TinySRError
from .plugins import cost_rule, param_rule

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


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


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
        rule = cost_rule(module)
        if rule is None and (own or next(module.buffers(recurse=False), None) is not None):
            raise TinySRError(
                f"profile: no cost rule for layer {name or '<root>'} of type {type(module).__name__}; "
                "register one with tinysr.plugins.register_cost"
            )
        split = param_rule(module)
        fp, binary = split(module) if split else (own, 0)
        cost = LayerCost(name=name or "<root>", kind=type(module).__name__, params_fp=fp, params_binary=binary)
        costs[name] = cost
        if rule is not None:

            def hook(mod, inputs, output, cost=cost, rule=rule):
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

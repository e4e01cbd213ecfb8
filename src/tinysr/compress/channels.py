"""Which conv output channels can be removed, and which layers must remove them together (SPEC §6).

:func:`channel_groups` traces the model's graph (``torch.fx``) and follows every conv's output
channels forward:

* through channel-wise operations (ReLU, PReLU, LeakyReLU, BN, scaling by a number, adding a
  constant such as a mean shift), which keep channel ``c`` in place;
* into **residual adds**: the convs whose outputs are summed must keep the *same* channels, so
  they join one group (union-find). A group with more than one conv is *constrained* (ASSL's
  name): EDSR's head conv, the last conv of every block and the body's last conv;
* into **consumer** convs, whose input channels shrink with the group.

A group is prunable only if its channels end in consumer convs and nowhere else: a stream that
reaches the network output, a PixelShuffle, a concatenation or any other operation is left
whole (so upsampler and tail convs keep their outputs; their *inputs* shrink as consumers).

:func:`narrow` then performs the surgery for chosen kept indices: slices each producer conv's
filters (and bias), each per-channel follower's parameters (PReLU slopes, BN), and each
consumer's input channels, producing a smaller dense network of the same classes.
:func:`narrow_layers` does the same for a kept set per conv (tied convs keeping different
channels, as the official ASSL code's L1 baseline does).
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from ..errors import TinySRError
from ..models.bicubic import Bicubic

# Modules that act on each channel separately (channel c in -> channel c out).
_CHANNELWISE_MODULES = (nn.ReLU, nn.PReLU, nn.LeakyReLU, nn.BatchNorm2d, nn.Identity, nn.Dropout)
_CHANNELWISE_FUNCTIONS = {torch.relu, nn.functional.relu, nn.functional.leaky_relu}
_ADD = {operator.add, operator.iadd, torch.add}
_SCALE = {operator.mul, operator.imul, operator.truediv, torch.mul}


@dataclass
class ChannelGroup:
    """Convs whose output channels are pruned together (``producers``), the per-channel modules on
    their outputs (``followers``) and the convs reading them (``consumers``). Names are module paths."""

    producers: list[str]
    followers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    channels: int = 0

    @property
    def key(self) -> str:
        return self.producers[0]

    @property
    def constrained(self) -> bool:
        return len(self.producers) > 1


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


class _Tracer(fx.Tracer):
    """Treats MATLAB-bicubic pre-upsamplers as opaque (their Python resize code is not traceable)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Bicubic) or super().is_leaf_module(m, qualname)


def _is_tensor_node(arg, sources: dict) -> bool:
    return isinstance(arg, fx.Node) and arg in sources


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The prunable channel groups of ``model`` (see the module docstring), in graph order."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx cannot trace data-dependent control flow
        raise TinySRError(f"pruning: cannot trace {type(model).__name__} ({exc})") from exc
    modules = dict(model.named_modules())
    uf = _UnionFind()
    sources: dict[fx.Node, set[str]] = {}  # node -> producer convs whose channels it carries
    followers: dict[str, set[str]] = {}  # conv -> per-channel modules on its stream
    consumers: dict[str, set[str]] = {}
    blocked: set[str] = set()  # convs whose channels escape into something we cannot slice
    convs: list[str] = []

    def escape(node_sources: set[str]) -> None:
        blocked.update(node_sources)

    for node in graph.nodes:
        inputs = [a for a in node.args if isinstance(a, fx.Node)] + [a for a in node.kwargs.values() if isinstance(a, fx.Node)]
        carried = [sources.get(a, set()) for a in inputs]
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, nn.Conv2d) and type(module) in (nn.Conv2d,):
            for s in carried:
                for conv in s:
                    consumers.setdefault(conv, set()).add(node.target)
            if module.groups != 1:  # grouped / depthwise: input channels are tied to outputs
                for s in carried:
                    escape(s)
            convs.append(node.target)
            sources[node] = {node.target}
            continue
        if isinstance(module, _CHANNELWISE_MODULES) or (node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS):
            stream = set(carried[0]) if carried else set()
            per_channel_params = isinstance(module, nn.BatchNorm2d) or (isinstance(module, nn.PReLU) and module.num_parameters > 1)
            if per_channel_params:  # its parameters are sliced with the channels
                for conv in stream:
                    followers.setdefault(conv, set()).add(node.target)
            sources[node] = stream
            continue
        if node.op == "call_function" and node.target in _ADD:
            streams = [sources[a] for a in node.args if _is_tensor_node(a, sources) and sources[a]]
            merged = set().union(*streams)
            if len(streams) > 1:  # a residual add: every conv summed here keeps the same channels
                first = next(iter(merged))
                for conv in merged:
                    uf.union(first, conv)
            sources[node] = merged  # adding a constant (a buffer, a number) keeps the one stream
            continue
        if (
            node.op == "call_function"
            and node.target in _SCALE
            and sum(_is_tensor_node(a, sources) and bool(sources[a]) for a in node.args) == 1
        ):
            other = [a for a in node.args if not (isinstance(a, fx.Node) and sources.get(a))]
            if all(not isinstance(a, fx.Node) for a in other):  # scaling by a number keeps channels
                sources[node] = set().union(*(sources.get(a, set()) for a in node.args if isinstance(a, fx.Node)))
                continue
        # anything else (output, pixel_shuffle, cat, interpolate, a module we do not know): channels escape
        for s in carried:
            escape(s)
        sources[node] = set()

    groups: dict[str, ChannelGroup] = {}
    for conv in convs:
        root = uf.find(conv)
        group = groups.setdefault(root, ChannelGroup(producers=[]))
        group.producers.append(conv)
    result = []
    for group in groups.values():
        if any(p in blocked for p in group.producers):
            continue
        if not any(p in consumers for p in group.producers):
            continue
        group.followers = sorted(set().union(*(followers.get(p, set()) for p in group.producers)))
        group.consumers = sorted(set().union(*(consumers.get(p, set()) for p in group.producers)), key=list(modules).index)
        group.channels = modules[group.producers[0]].out_channels
        result.append(group)
    return result


def _slice_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> nn.Conv2d:
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else None
    if out_idx is not None:
        weight = weight.index_select(0, out_idx.to(weight.device))
        bias = bias.index_select(0, out_idx.to(weight.device)) if bias is not None else None
    if in_idx is not None:
        weight = weight.index_select(1, in_idx.to(weight.device))
    new = nn.Conv2d(
        weight.shape[1],
        weight.shape[0],
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        1,
        bias is not None,
        conv.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.train(conv.training)
    return new


def _slice_follower(module: nn.Module, idx: torch.Tensor) -> nn.Module:
    if isinstance(module, nn.PReLU):
        new = nn.PReLU(len(idx))
        new.weight.data.copy_(module.weight.detach()[idx])
    elif isinstance(module, nn.BatchNorm2d):
        # a copy keeps the class and what it carries (a foldable BN, a RepSR BN frozen for training),
        # its device and mode; then each per-channel tensor is cut to the kept channels
        new = copy.deepcopy(module)
        new.num_features = len(idx)
        for name in ("weight", "bias", "running_mean", "running_var"):
            tensor = getattr(new, name)
            if tensor is not None:
                tensor.data = tensor.data[idx].clone()
        return new
    else:
        raise TinySRError(f"pruning: cannot slice {type(module).__name__}")
    return new.to(next(iter(module.parameters())).device).train(module.training)


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``path`` of ``model`` (replacing what is there)."""
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, module)


@torch.no_grad()
def narrow(model: nn.Module, keep: dict[str, torch.Tensor], groups: list[ChannelGroup] | None = None) -> nn.Module:
    """Keep only channels ``keep[group.key]`` (sorted indices) of each named group, in place.

    Producers lose filters, followers their per-channel parameters, consumers input channels.
    Groups not in ``keep`` stay whole. Returns ``model``.
    """
    groups = groups if groups is not None else channel_groups(model)
    by_key = {g.key: g for g in groups}
    unknown = set(keep) - set(by_key)
    if unknown:
        raise TinySRError(f"pruning: {', '.join(sorted(unknown))} not prunable channel groups (known: {', '.join(by_key)})")
    return narrow_layers(model, {p: idx for key, idx in keep.items() for p in by_key[key].producers}, groups)


@torch.no_grad()
def narrow_layers(model: nn.Module, kept: dict[str, torch.Tensor], groups: list[ChannelGroup] | None = None) -> nn.Module:
    """Keep filters ``kept[conv]`` of each named producer conv, in place; each group's producers
    may keep different indices but must keep as many (their outputs are added).

    A consumer or follower of a group reads the channels of the group's producer that precedes it
    most closely in module order: with one kept set per group this is :func:`narrow`'s surgery;
    with a set per layer it is the official ASSL code's (each conv takes the kept filters of the
    conv before it as its input channels), which does not keep the residual stream's channels in
    register. Groups with no producer in ``kept`` stay whole. Returns ``model``.
    """
    groups = groups if groups is not None else channel_groups(model)
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}
    known = {p for g in groups for p in g.producers}
    unknown = set(kept) - known
    if unknown:
        raise TinySRError(f"pruning: {', '.join(sorted(unknown))} not producers of prunable channel groups")
    out_idx: dict[str, torch.Tensor] = {}
    in_idx: dict[str, torch.Tensor] = {}
    for group in groups:
        if not any(p in kept for p in group.producers):
            continue
        missing = [p for p in group.producers if p not in kept]
        if missing:
            raise TinySRError(f"pruning: {group.key}'s group also needs kept channels for {', '.join(missing)}")
        for p in group.producers:
            idx = torch.as_tensor(kept[p], dtype=torch.long).sort().values
            if len(idx) == 0 or idx.min() < 0 or idx.max() >= group.channels or len(idx.unique()) != len(idx):
                raise TinySRError(f"pruning: bad kept channels for {p} (need 1..{group.channels} distinct indices)")
            out_idx[p] = idx
        if len({len(out_idx[p]) for p in group.producers}) > 1:
            raise TinySRError(f"pruning: the convs of {group.key}'s group must keep as many channels (their outputs are added)")

        def read_by(name: str, group: ChannelGroup = group) -> torch.Tensor:
            before = [p for p in group.producers if order[p] < order[name]]
            return out_idx[max(before, key=order.__getitem__) if before else group.producers[0]]

        for c in group.consumers:
            in_idx[c] = read_by(c)
        for f in group.followers:
            set_submodule(model, f, _slice_follower(modules[f], read_by(f)))
    for name in set(out_idx) | set(in_idx):
        set_submodule(model, name, _slice_conv(modules[name], out_idx.get(name), in_idx.get(name)))
    return model

"""``pack(model)``: a trained 1-bit model -> its bit-packed inference form (SPEC §9).

Every binary :class:`~tinysr.nn.BinaryConv2d` becomes a :class:`~tinysr.nn.packed.PackedBinaryConv2d`
(1-bit weights; scale, threshold and bias kept as float vectors); everything full precision
stays as it is. The packed model computes the same function bit for bit (same arithmetic,
see ``nn/packed.py``) and keeps its activations channels_last, the layout the native kernel
reads and writes, so no layout conversion happens between layers.

The packed model's spec records the transform (``transforms: [{"name": "pack"}]``): :func:`tinysr.load`
rebuilds the model, packs it, then loads the stored (packed) weights, so the file loads on its own.

:func:`unpack_into` goes back: a packed model's weights into a training form of its architecture
(``model.init_from`` with a packed file). Packing keeps only the signs and scale of each latent
weight, so the latent weights come back as ``signs * scale``: the same function, new magnitudes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TinySRError
from ..nn.binary import BinaryConv2d
from ..nn.packed import KERNELS, PackedBinaryConv2d
from .transforms import register_transform, swap_modules

TRANSFORM = "pack"


def _packed(module: nn.Module) -> nn.Module | None:
    return PackedBinaryConv2d.from_conv(module) if isinstance(module, BinaryConv2d) and module.is_binary else None


def has_binary_convs(model: nn.Module) -> bool:
    """Whether ``model`` has a binary conv :func:`pack` would pack."""
    return any(isinstance(m, BinaryConv2d) and m.is_binary for m in model.modules())


@torch.no_grad()
def pack(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (built by ``create_model``) with every binary conv bit-packed, in eval mode."""
    packed = swap_modules(model, TRANSFORM, _packed, done="packed", nothing="binary convolutions to pack")
    return packed.to(memory_format=torch.channels_last)


@register_transform(TRANSFORM)
def _rebuild_pack(model: nn.Module) -> nn.Module:
    return pack(model)


def binary_weight_bytes(model: nn.Module) -> int:
    """Bytes that hold the binary convs' weights: float before packing, 1-bit words and the
    per-channel scale after."""
    total = 0
    for m in model.modules():
        if isinstance(m, BinaryConv2d) and m.is_binary:
            total += m.weight.numel() * m.weight.element_size()
        elif isinstance(m, PackedBinaryConv2d):
            total += m.weight_words.numel() * m.weight_words.element_size() + m.alpha.numel() * m.alpha.element_size()
    return total


def set_kernel(model: nn.Module, kernel: str) -> nn.Module:
    """Select the binary conv implementation of every packed layer (``auto``, ``torch``, or a native path)."""
    if kernel not in KERNELS:
        raise TinySRError(f"unknown binary kernel {kernel!r} ({', '.join(KERNELS)})")
    for m in model.modules():
        if isinstance(m, PackedBinaryConv2d):
            m.kernel = kernel
    return model


@torch.no_grad()
def unpack_into(model: nn.Module, packed: nn.Module) -> int:
    """Load the weights of ``packed`` (a :func:`pack` ed model) into ``model``, a training form of
    the same architecture; returns how many of ``model``'s tensors were set.

    Every packed layer whose counterpart in ``model`` is a binary conv of its shape gives it a
    latent weight its weight quantizer maps to the packed signs times scale
    (``latent_weight``), its bias, and its activation quantizer's threshold
    (``load_sign_threshold``); every other tensor is copied where name and shape match, so a
    model at another scale takes all but its new tail. A quantizer that cannot be inverted (BAM's
    accumulation) raises ValueError naming the layer and leaves ``model`` as it was."""
    targets = dict(model.named_modules())
    own = model.state_dict()
    # Layers are set one by one, so a refusal part-way would leave a mix of both models.
    before = {k: v.clone() for k, v in own.items()}
    set_count, packed_prefixes = 0, []
    for name, layer in packed.named_modules():
        if not isinstance(layer, PackedBinaryConv2d):
            continue
        packed_prefixes.append(name + ".")
        conv = targets.get(name)
        shape = (layer.out_channels, layer.in_channels, *layer.kernel_size)
        if not (isinstance(conv, BinaryConv2d) and conv.is_binary and tuple(conv.weight.shape) == shape):
            continue
        try:
            signs = layer.signs().to(conv.weight.dtype)
            conv.weight.copy_(conv.weight_quantizer.latent_weight(signs, layer.alpha.to(conv.weight.dtype), conv.weight))
            conv.act_quantizer.load_sign_threshold(layer.threshold)
        except ValueError as e:
            model.load_state_dict(before)
            raise ValueError(f"layer {name}: {e}") from None
        set_count += 1 + (conv.act_quantizer.sign_threshold() is not None)
        if layer.has_bias and conv.bias is not None:
            conv.bias.copy_(layer.bias)
            set_count += 1
    rest = {
        k: v for k, v in packed.state_dict().items() if not k.startswith(tuple(packed_prefixes)) and k in own and own[k].shape == v.shape
    }
    model.load_state_dict(rest, strict=False)
    return set_count + len(rest)

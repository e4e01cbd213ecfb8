"""Bit-packed binary convolution for inference (SPEC §9).

:class:`PackedBinaryConv2d` is what :func:`tinysr.compress.pack` puts in place of a trained binary
:class:`~tinysr.nn.BinaryConv2d`. It holds

* ``weight_words``: the weight signs, 1 bit each (bit = 1 for -1), as int64 words of shape
  ``(KH, KW, ceil(C/64), O rounded up to 8)``: the words of consecutive output channels are
  contiguous, the layout the native kernel reads (stored as ``(KH*KW, Cw, Opad)``: a 3-D buffer,
  so ``model.to(memory_format=torch.channels_last)`` leaves it alone);
* ``alpha``: the per-output-channel weight scale (``mean |W|``, or 1 without XNOR scaling);
* ``threshold``: the per-input-channel activation threshold (0 for ``sign``, RSign's learned one);
* ``bias`` (zeros when the conv has none);
* ``pre`` (optional): an activation quantizer that ``accumulates_input`` (BAM's), kept whole,
  whose ``pre_sign(x)`` (the accumulated, normalised activation) replaces ``x`` before the sign.

It reads all of these from the quantizers' protocol (``nn/binary.py``), never from their classes.

and computes ``alpha * conv(sign(x - threshold), sign(W)) + bias`` with zero padding *after* the
sign, exactly the float-simulated layer's arithmetic, so the outputs are equal bit for bit.

Its cost rule counts what the layer it replaced counted: the same binary MACs, its weights as
binary parameters, and as full-precision parameters the bias and the learned threshold where
the original had them (``alpha`` is derived from the weights, as before packing).

Element-wise layers that follow a packed conv (a per-channel scale or shift, PReLU and
LeakyReLU, a residual addition, BN at inference as :class:`~tinysr.nn.FoldableBatchNorm2d`
computes it: the BTM, FABNet, BNN, Bi-Real, ReActNet, BBCU, E2FIF and BAM blocks) can run inside its
output pass, row by row while the row is in cache, instead of one pass over memory each: the
blocks call :func:`conv_with_stages`, which folds them when the native kernel runs and applies
them one by one otherwise. They are the same float operations in the same order, so the outputs
are the same bit for bit. (``nn.BatchNorm2d`` itself is not folded: its CPU kernels round in an
order no stage list reproduces, so it stays a layer of its own.) Where only the next binary
conv reads a conv's output (the two convs of a BTM or FABNet block), :func:`conv_pair_with_stages`
also folds the next conv's binarise + pack into that pass: the first conv returns the second's
packed input words, and its float output is never stored.

``kernel`` picks the implementation: ``auto`` (the native kernel's best path for this CPU, else
PyTorch), ``torch`` (unpacked float conv, no compiler needed), or a native path forced by name
(``portable``, ``avx2``, ``avx2_pixels``, ``avx512``; for tests and benchmarks). AVX2 has two
kernels, output channels in the vector lanes (``avx2``) or pixels (``avx2_pixels``), and which is
faster depends on the CPU and the layer's shape (channel counts that fill 32-bit words or not,
the row width, the weights' size against the cache): on a CPU without AVX-512, ``auto`` times
both on a layer's first input of each width class (widths within a factor of 2) and thread count
and keeps the faster, as cuDNN's benchmark mode does; a test set of many image sizes then times
each layer a few times, not once per image. Their outputs are equal bit for bit, so the choice
changes the speed alone.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TinySRError
from ..kernels import PATHS, STAGE_CODES, available_paths, native
from ..plugins import register_cost
from .binary import hard_sign

KERNELS = ("auto", "torch", "portable", "avx2", "avx2_pixels", "avx512")
# The native paths ``auto`` chooses between by timing them, where the CPU has no AVX-512 path.
AVX2_VARIANTS = ("avx2", "avx2_pixels")
AUTOTUNE_ROUNDS = 3  # calls of each variant, alternating; the fastest single call decides


@functools.cache
def _autotunes() -> bool:
    """Whether ``auto`` times the AVX2 variants here: AVX2, and no AVX-512 path to prefer."""
    paths = available_paths()
    return "avx512" not in paths and all(p in paths for p in AVX2_VARIANTS)


# Element-wise stages the native kernel applies to a packed conv's output row by row (codes:
# kernels.STAGE_CODES): ("add", v) adds a per-channel vector, ("mul", v) multiplies by one, ("prelu", slope)
# is PReLU, ("residual", None) adds the ``residual`` tensor. _NONE stands for an absent operand.
_NONE = torch.empty(0)


def pack_weight_signs(weight: torch.Tensor) -> torch.Tensor:
    """``(O, C, KH, KW)`` float -> ``(KH, KW, Cw, Opad)`` int64 words; bit c of a word = ``W < 0``."""
    o, c, kh, kw = weight.shape
    cw, opad = -(-c // 64), -(-o // 8) * 8
    negative = np.zeros((kh, kw, opad, cw * 64), dtype=bool)
    negative[:, :, :o, :c] = (weight.detach().cpu() < 0).permute(2, 3, 0, 1).numpy()  # sign(0) = +1
    words = np.packbits(negative, axis=-1, bitorder="little").view("<u8")  # channel c -> bit c % 64
    return torch.from_numpy(np.ascontiguousarray(words.transpose(0, 1, 3, 2)).view(np.int64))


def unpack_weight_signs(words: torch.Tensor, out_channels: int, in_channels: int) -> torch.Tensor:
    """The inverse of :func:`pack_weight_signs`: ``(O, C, KH, KW)`` float tensor of +-1."""
    arr = np.ascontiguousarray(words.cpu().numpy().view("<u8").transpose(0, 1, 3, 2))  # (KH, KW, Opad, Cw)
    bits = np.unpackbits(arr.view(np.uint8), axis=-1, bitorder="little")[..., :in_channels]
    signs = 1.0 - 2.0 * bits[:, :, :out_channels].astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(signs.transpose(2, 3, 0, 1)))


def apply_stages(y: torch.Tensor, stages: tuple, residual: torch.Tensor | None) -> torch.Tensor:
    """``stages`` in PyTorch: the same float operation per element, in the same order."""
    for name, v in stages:
        if name == "add":
            y = y + v.view(1, -1, 1, 1)
        elif name == "mul":
            y = y * v.view(1, -1, 1, 1)
        elif name == "prelu":
            y = torch.where(y > 0, y, v.view(1, -1, 1, 1) * y)
        else:
            y = y + residual
    return y


class PackedBinaryConv2d(nn.Module):
    """Inference-only binary conv with 1-bit weights (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = (tuple(v) for v in (kernel_size, stride, padding, dilation))
        kh, kw = self.kernel_size
        self.register_buffer("weight_words", torch.zeros(kh * kw, -(-in_channels // 64), -(-out_channels // 8) * 8, dtype=torch.int64))
        self.register_buffer("alpha", torch.ones(out_channels))
        self.register_buffer("threshold", torch.zeros(in_channels))
        self.register_buffer("bias", torch.zeros(out_channels))
        self.pre: nn.Module | None = None
        self.kernel = "auto"
        # which float vectors were parameters of the layer it replaced (counted as such by profile)
        self.has_bias = False
        self.has_threshold = False
        self._unpacked: tuple[torch.Tensor, torch.Tensor] | None = None  # (words it came from, +-1 weight)
        self._autotuned: dict[tuple, int] = {}  # (threads, width class) -> the faster AVX2 path's code

    @classmethod
    @torch.no_grad()
    def from_conv(cls, conv) -> PackedBinaryConv2d:
        """Pack a binary :class:`~tinysr.nn.BinaryConv2d` whose quantizers follow the 1-bit protocol."""
        act, wq = conv.act_quantizer, conv.weight_quantizer
        protocol = callable(getattr(wq, "signs", None)) and callable(getattr(act, "sign_threshold", None))
        if not conv.is_binary or conv.groups != 1 or not protocol:
            raise TinySRError(f"pack: cannot pack {conv} (needs groups=1 and 1-bit quantizers with the protocol of tinysr.nn.binary)")
        if isinstance(conv.padding, str):
            raise TinySRError(f"pack: string padding {conv.padding!r} is not supported")
        packed = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation)
        packed.weight_words.copy_(pack_weight_signs(wq.signs(conv.weight)).flatten(0, 1))
        alpha = wq.alpha(conv.weight)
        if alpha is not None:
            packed.alpha.copy_(alpha.flatten())
        threshold = act.sign_threshold()
        if threshold is not None:
            packed.threshold.copy_(threshold.flatten())
            packed.has_threshold = True
        if getattr(act, "accumulates_input", False):
            packed.pre = act
        if conv.bias is not None:
            packed.bias.copy_(conv.bias)
            packed.has_bias = True
        return packed.to(conv.weight.device)

    def signs(self) -> torch.Tensor:
        """The +-1 weight (cached until the words change)."""
        if self.weight_words.is_meta:  # profiling: only the shape matters
            return torch.empty(self.out_channels, self.in_channels, *self.kernel_size, device="meta")
        if self._unpacked is None or self._unpacked[0] is not self.weight_words:
            words = self.weight_words.view(*self.kernel_size, *self.weight_words.shape[1:])
            w = unpack_weight_signs(words, self.out_channels, self.in_channels).to(self.alpha.device)
            self._unpacked = (self.weight_words, w)
        return self._unpacked[1]

    def native_module(self, x: torch.Tensor):
        """The native kernel module that runs this layer on ``x``, or None (the PyTorch path)."""
        if self.kernel not in KERNELS:
            raise TinySRError(f"PackedBinaryConv2d: unknown kernel {self.kernel!r} ({', '.join(KERNELS)})")
        if self.kernel == "torch" or x.device.type != "cpu" or x.dtype != torch.float32:
            return None
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
            return None  # a traced graph cannot hold the native call: it records the PyTorch path
        module = native()
        if module is None and self.kernel != "auto":
            raise TinySRError(f"PackedBinaryConv2d: kernel {self.kernel!r} asked for, but the native kernel is unavailable")
        return module

    def forward(self, x: torch.Tensor, stages: tuple = (), residual: torch.Tensor | None = None) -> torch.Tensor:
        """The layer, then ``stages`` (see :func:`conv_with_stages`) on its output."""
        if self.pre is not None:
            x = self.pre.pre_sign(x)
        module = self.native_module(x)
        if module is None:  # the reference: the float-simulated layer's arithmetic
            a = hard_sign(x - self.threshold.view(1, -1, 1, 1))
            y = F.conv2d(a, self.signs(), None, self.stride, self.padding, self.dilation) * self.alpha.view(1, -1, 1, 1)
            return apply_stages(y + self.bias.view(1, -1, 1, 1), stages, residual)
        return self.run_native(module, module.pack_activations(x, self.threshold, PATHS[self.kernel]), stages, residual)

    def run_native(self, module, words: torch.Tensor, stages: tuple = (), residual: torch.Tensor | None = None, next_threshold=None):
        """The native conv on its input already binarised and packed (``words``), then ``stages``;
        with ``next_threshold``, the next binary conv's packed input (its threshold given) instead
        of the float output (see :func:`conv_pair_with_stages`)."""

        def call(code: int) -> torch.Tensor:
            return module.packed_conv2d(
                words,
                self.in_channels,
                self.weight_words,
                self.out_channels,
                self.alpha,
                self.bias,
                list(self.kernel_size),
                list(self.stride),
                list(self.padding),
                list(self.dilation),
                code,
                [STAGE_CODES[name] for name, _ in stages],
                [_NONE if v is None else v for _, v in stages],
                _NONE if residual is None else residual,
                _NONE if next_threshold is None else next_threshold,
            )

        if self.kernel != "auto" or not _autotunes():
            return call(PATHS[self.kernel])
        key = (torch.get_num_threads(), int(words.shape[2]).bit_length())  # words: (N, H, W, words a pixel)
        if key in self._autotuned:
            return call(self._autotuned[key])
        best = {}
        for _ in range(AUTOTUNE_ROUNDS):
            for name in AVX2_VARIANTS:
                start = time.perf_counter()
                out = call(PATHS[name])
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
        self._autotuned[key] = PATHS[min(best, key=best.get)]
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, kernel={self.kernel}"
        )


def _packed_params(m: PackedBinaryConv2d) -> tuple[int, int]:
    kh, kw = m.kernel_size
    fp = (m.out_channels if m.has_bias else 0) + (m.in_channels if m.has_threshold else 0)
    return fp, m.out_channels * m.in_channels * kh * kw


@register_cost(PackedBinaryConv2d, params=_packed_params)
def packed_conv_cost(m: PackedBinaryConv2d, inputs, out) -> tuple[int, int]:
    """Binary MACs: one per weight tap per output pixel (SPEC §3)."""
    kh, kw = m.kernel_size
    return 0, out.numel() * m.in_channels * kh * kw


def stages_of(module: nn.Module, channels: int) -> list | None:
    """The stages that compute the element-wise ``module`` on ``channels`` channels, or None when it
    has none: ``Identity``, ``PReLU``, ``LeakyReLU``, and any module with an ``epilogue_stages(channels)``
    method that returns a list (None: not now, e.g. a BN in training)."""
    if isinstance(module, nn.Identity):
        return []
    if isinstance(module, nn.PReLU):
        return [("prelu", module.weight.detach().expand(channels))]
    if isinstance(module, nn.LeakyReLU):  # x > 0 ? x : slope * x, PReLU's arithmetic with one slope
        return [("prelu", torch.full((channels,), module.negative_slope))]
    method = getattr(module, "epilogue_stages", None)
    return method(channels) if method is not None else None


def _stage_sequence(channels: int, before, residual, after) -> tuple | None:
    """The stages of ``after(before(y) + residual)`` on ``channels`` channels, or None when a module
    has no stage form."""
    parts = [stages_of(m, channels) for m in (*before, *after)]
    if any(part is None for part in parts):
        return None
    stages = [stage for part in parts[: len(before)] for stage in part]
    if residual is not None:
        stages.append(("residual", None))
    return tuple(stages + [stage for part in parts[len(before) :] for stage in part])


def conv_with_stages(conv: nn.Module, x: torch.Tensor, before=(), residual=None, after=()) -> torch.Tensor:
    """``after(before(conv(x)) + residual)``, where ``before`` and ``after`` are sequences of
    element-wise modules applied in order and ``residual`` may be None (no addition).

    A packed conv on the native kernel folds them into its output pass (one pass over memory
    instead of one per layer); the arithmetic is the same, so the outputs are equal bit for bit
    (floating-point addition is commutative, so ``residual + y`` and ``y + residual`` agree).
    Any other conv, or a module without a stage form, runs them one by one as written.
    """
    if isinstance(conv, PackedBinaryConv2d) and conv.native_module(x) is not None:
        stages = _stage_sequence(conv.out_channels, before, residual, after)
        if stages is not None:
            with torch.no_grad():
                return conv(x, stages, residual)
    y = conv(x)
    for m in before:
        y = m(y)
    if residual is not None:
        y = y + residual
    for m in after:
        y = m(y)
    return y


def conv_pair_with_stages(
    first: nn.Module, second: nn.Module, x: torch.Tensor, first_before=(), second_before=(), residual=None
) -> torch.Tensor:
    """``conv_with_stages(second, conv_with_stages(first, x, first_before), second_before, residual)``,
    for a conv whose output only the next binary conv reads (the two convs of a BTM or FABNet block).

    When both are packed and run the same native path, the first conv's output pass ends by
    binarising each row against the second conv's thresholds and packing it, so the first conv's
    float output is never stored and the second does not read it back: a block is one pass over
    memory. The words are those the second conv would pack itself, so the outputs are equal bit
    for bit; anything else runs the two calls as written.
    """
    fusable = (
        isinstance(first, PackedBinaryConv2d)
        and isinstance(second, PackedBinaryConv2d)
        and first.kernel == second.kernel
        and second.pre is None
        and second.in_channels == first.out_channels
    )
    module = first.native_module(x) if fusable else None
    if module is not None:
        first_stages = _stage_sequence(first.out_channels, first_before, None, ())
        second_stages = _stage_sequence(second.out_channels, second_before, residual, ())
        if first_stages is not None and second_stages is not None:
            with torch.no_grad():
                x = first.pre.pre_sign(x) if first.pre is not None else x
                packed = module.pack_activations(x, first.threshold, PATHS[first.kernel])
                words = first.run_native(module, packed, first_stages, next_threshold=second.threshold)
                return second.run_native(module, words, second_stages, residual)
    return conv_with_stages(second, conv_with_stages(first, x, first_before), second_before, residual=residual)

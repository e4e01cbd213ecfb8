"""Checkpoints written by other codebases -> tinysr models, evaluated under tinysr's protocol.

:func:`load_external` reads a state-dict checkpoint with ``torch.load(weights_only=True)`` (a
file that would need code to unpickle is refused), unwraps it, infers the architecture's
hyper-parameters from the tensors' names and shapes, renames the tensors into the matching
tinysr model and converts the source's pixel convention, so that the converted model's output on
a [0, 1] image equals the source code's output on the same image in its own range.

Formats (the facts each mapping uses are read from the source code, cited per format):

* ``edsr-pytorch``: EDSR-PyTorch (``src/model/edsr.py``, ``common.py``), EDSR and EDSR-baseline,
  and ASSL's code (``src/model/ledsr.py``): LEDSR, whose ``tail.0`` is one ``LiteUpsampler``
  conv C -> 3 s^2 (``tail.0.0``, no ``tail.1``), and pruned networks, whose widths the shapes give.
  Keys ``head.0``, ``body.{i}.body.{0,2}`` (conv, ReLU, conv), ``body.{n}`` (the conv after the
  blocks), ``tail.0.{2k}`` (one conv C->4C per x2 stage, or C->9C at x3), ``tail.1`` (to RGB),
  ``sub_mean`` / ``add_mean`` (1x1 convs: identity weight, bias ``-+rgb_range * mean``). Pixels
  in [0, ``rgb_range``], 255 in every released model.
* ``basicsr``: BasicSR's ``EDSR`` (``basicsr/archs/edsr_arch.py``, ``arch_util.py``), inside a
  ``params_ema`` or ``params`` entry (``params_ema`` preferred, as BasicSR's own testing does
  when it exists). Keys ``conv_first``, ``body.{i}.conv{1,2}``, ``conv_after_body``,
  ``upsample.{2k}``, ``conv_last``. Input ``(x - mean) * img_range`` with ``img_range`` 255 and
  the DIV2K mean (not stored in the file), output ``y / img_range + mean``. And BasicSR's
  ``MSRResNet`` (``srresnet_arch.py``) into ``msrresnet``: keys ``conv_first``,
  ``body.{i}.conv{1,2}``, ``upconv1`` / ``upconv2``, ``conv_hr``, ``conv_last``; pixels in [0, 1].

**Pixel range.** Convolutions, ReLU, pixel shuffle and additions commute with a positive scale
when every bias is scaled with the pixels, so a network trained on [0, 255] runs on [0, 1] with
its biases divided by 255 and its weights as they are. The results agree with the source's to
float rounding, not bit for bit (the scale moves to other operations).

* ``ecbsr``: the official ECBSR's deployed form, ``PlainSR`` (``models/plainsr.py``; what its
  ``convert.py`` writes from a trained ECBSR), into ``basenet(colors=1)``. Keys
  ``backbone.{i}.conv3x3`` and ``backbone.{i}.act`` (PReLU; the last conv is linear); the output
  is ``PixelShuffle(backbone(y) + y)``, i.e. a nearest-upsampled residual. It works on the Y
  channel of ``skimage.color.rgb2ycbcr`` in [16, 235] (``datas/div2k.py``), the BT.601 Y that
  tinysr's Y-only models take divided by 255; Cb and Cr are upsampled by bicubic, as the
  official evaluation leaves them. Its training form (``models/ecbsr.py``: ``backbone.{i}``
  ECBs with ``conv3x3``, ``conv1x1_3x3.k0/b0/k1/b1`` and ``conv1x1_{sbx,sby,lpl}`` with ``k0``,
  ``b0``, ``scale``, ``bias`` and the fixed ``mask``) converts into ``ecbsr(colors=1)``, the
  same biases scaled; the fixed masks must be the Sobel / Laplacian ones.

* ``bbcu``: BBCU's ``BBCUL`` and ``BBCUM`` (``bbcu/archs/bbcu{l,m}_arch.py``,
  ``quant_convs_bbcu.py``; BasicSR's ``params`` wrapper) into ``bbcu_l`` / ``bbcu_m``. Keys
  ``conv_first``, ``body.{b}.body.{u}`` (the units of 2 per block: ``move0.bias``, the shift
  before the sign, whose negation is tinysr's threshold; ``binary_conv.weight``;
  ``relu.pr_bias0`` / ``pr_prelu`` / ``pr_bias1``, RPReLU's shift in, negated, slope and shift
  out), ``upconv1`` / ``upconv2`` (plain convs for L, units for M), ``conv_hr``, ``conv_last``.
  Pixels in [0, 1]; the residual alignment ``k`` is not stored: the official options' 130.

* ``fabnet``: the official FABNet (``src/model/FABNet_tiny.py``, ``FABNet_large.py``,
  ``binary_common_nv1.py``) into ``fabnet_b4c{C}`` (tiny: ``body_LL_{1..4}``, ``body_HH.{i}``) or
  ``fabnet_b8c96`` (large: ``body_LL.{i}``, ``body_HH{1..4}.{j}``, the fourth of each group with
  ``attention``). Per module ``conv1`` / ``conv2`` (binary weights), ``move0`` / ``move1`` (the
  shift before each sign: the negated threshold), ``relu11`` / ``relu12`` or ``relu22`` (PReLU),
  ``attention.fc1`` / ``fc2`` (the recalibrated activation); ``conv_head``, ``conv_last_h``,
  ``parameters{1..B+1}`` (the LL fusion). pytorch_wavelets lays the high bands out channel by
  channel (``c * 3 + band``), tinysr band by band (``band * C + c``), with the same bands in the
  same order and sign: every high-branch tensor is permuted accordingly. The models take the
  official choices: pixels in [0, 255] inside, the ``clip`` weight estimator, and PyTorch's
  bicubic (tiny) or nearest (large) pre-upsampling. The tiny code's unused ``relu`` is dropped.

**EDSR's residual scaling** is not stored in either EDSR format. EDSR's paper and both codebases use 0.1
for the 32-block, 256-channel EDSR and 1 otherwise; that is the default here, and
``res_scale`` overrides it.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .compress.prune import apply_widths
from .errors import TinySRError
from .models import create_model
from .models.registry import SUPPORTED_SCALES
from .nn.layers import DIV2K_RGB_MEAN  # EDSR-PyTorch's and BasicSR's rgb_mean default

PIXEL_RANGE = 255.0  # every format's released models


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, loaded without running any code it contains."""
    path = Path(path)
    if not path.is_file():
        raise TinySRError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling error"
        raise TinySRError(f"{path}: refused, loading it would run code it contains ({first[:120]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise TinySRError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise TinySRError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return obj


def _unwrap(obj: dict, path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for key in keys:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = sorted(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if others:
        raise TinySRError(f"{path}: entry {others[0]!r} is not a tensor (a state dict of this format holds only tensors)")
    if not tensors:
        raise TinySRError(f"{path}: no tensors in the checkpoint")
    return tensors


def _indices(tensors: dict, pattern: str, path: Path, step: int = 1) -> list[int]:
    """The sorted integers i for which ``pattern.format(i)`` names a tensor: 0, step, 2 step, ..."""
    regex = re.compile("^" + re.escape(pattern).replace(r"\{\}", r"(\d+)") + "$")
    found = sorted(int(m.group(1)) for k in tensors if (m := regex.match(k)))
    if found != list(range(0, step * len(found), step)):
        raise TinySRError(f"{path}: the layers {pattern.format('i')} are numbered {found}")
    return found


def _shape(tensors: dict, key: str, path: Path) -> tuple[int, ...]:
    if key not in tensors:
        raise TinySRError(f"{path}: missing tensor {key!r}")
    return tuple(tensors[key].shape)


def _scale_of_upsampler(convs: list[tuple[int, ...]], channels: int, path: Path) -> int:
    """x2^k: k convs C->4C; x3: one conv C->9C (both codebases' upsamplers)."""
    outs = [shape[0] for shape in convs]
    if outs and all(o == 4 * channels for o in outs):
        return 2 ** len(outs)
    if outs == [9 * channels]:
        return 3
    raise TinySRError(f"{path}: upsampler convs with {outs} outputs for {channels} channels fit no scale")


def _edsr(tensors: dict, path: Path, names: dict[str, str], res_scale: float | None) -> tuple[nn.Module, dict]:
    """An EDSR, or ASSL's LEDSR (a one-conv upsampler: ``tail.0.weight``, C -> 3 s^2), from a dict
    whose keys are already tinysr's (``names`` maps them back for messages). A pruned network
    (ASSL's output) has narrower convs: its widths come from the shapes, the residual stream's
    from the head, each block's inner width from its first conv, and it becomes the unpruned
    network of the widest of them with tinysr's ``prune`` transform."""
    residual, colors = _shape(tensors, "head.weight", path)[:2]
    if colors != 3:
        raise TinySRError(f"{path}: {names['head.weight']} takes {colors} colour channels; tinysr's EDSR takes RGB")
    blocks = len(_indices(tensors, "body.{}.conv1.weight", path))
    inner = [_shape(tensors, f"body.{i}.conv1.weight", path)[0] for i in range(blocks)]
    channels = max([residual, *inner])
    lite = "tail.0.weight" in tensors
    if lite:
        outputs = _shape(tensors, "tail.0.weight", path)[0]
        scale = math.isqrt(outputs // 3)
        if 3 * scale * scale != outputs or scale not in SUPPORTED_SCALES:
            raise TinySRError(f"{path}: {names['tail.0.weight']} has {outputs} outputs, not 3 x a scale's square")
    else:
        ups = _indices(tensors, "tail.0.{}.weight", path, step=2)  # a PixelShuffle between the convs
        scale = _scale_of_upsampler([_shape(tensors, f"tail.0.{i}.weight", path) for i in ups], residual, path)
    if res_scale is None:
        res_scale = 0.1 if (channels, blocks) == (256, 32) else 1.0
    if lite:
        model = create_model("ledsr", scale=scale, channels=channels, blocks=blocks, res_scale=res_scale)
    elif (channels, blocks, res_scale) == (256, 32, 0.1):
        model = create_model("edsr", scale=scale)
    else:
        model = create_model("edsr_baseline", scale=scale, channels=channels, blocks=blocks, res_scale=res_scale)
    widths = {"head": residual, **{f"body.{i}.conv1": w for i, w in enumerate(inner)}}
    if any(w != channels for w in widths.values()):
        model = apply_widths(model, widths)
    what = f"{'an LEDSR' if lite else 'an EDSR'} of {blocks} blocks"
    _load_checked(model, tensors, names, path, what)
    options = {"scale": scale, "channels": channels, "blocks": blocks, "res_scale": res_scale}
    if any(w != channels for w in widths.values()):
        options["widths"] = widths
    return model.eval(), options


def _load_checked(model: nn.Module, tensors: dict, names: dict, path: Path, what: str) -> None:
    """Load ``tensors`` (tinysr names) into ``model`` or refuse in one line, naming the source's key."""
    own = model.state_dict()
    # a sign estimator's coefficient is tinysr's own buffer (a training schedule's), not a trained tensor
    tensors = {**{k: v for k, v in own.items() if k.endswith(".sign.t")}, **tensors}
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise TinySRError(f"{path}: unexpected tensor {names.get(unknown[0], unknown[0])!r} for {what}")
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise TinySRError(f"{path}: missing tensor {names.get(missing[0], missing[0])!r} for {what}")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise TinySRError(f"{path}: {names.get(key, key)!r} has shape {tuple(value.shape)}, {what} needs {tuple(own[key].shape)}")
    model.load_state_dict({k: v.float() for k, v in tensors.items()})


def _from_pixel_range(tensors: dict, pixel_range: float) -> dict:
    """Every conv bias divided by the pixel range (see the module docstring); weights as they are."""
    return {k: v / pixel_range if k.endswith(".bias") else v for k, v in tensors.items()}


def _edsr_pytorch(obj: dict, path: Path, res_scale: float | None, scale: int | None = None) -> tuple[nn.Module, dict]:
    tensors = _unwrap(obj, path, ())
    renamed, names = {}, {}
    shifts = {}
    for key, value in tensors.items():
        if re.fullmatch(r"(sub|add)_mean\.(weight|bias)", key):
            shifts[key] = value
            continue
        if m := re.fullmatch(r"head\.0\.(weight|bias)", key):
            new = f"head.{m[1]}"
        elif m := re.fullmatch(r"body\.(\d+)\.body\.([02])\.(weight|bias)", key):  # conv, ReLU, conv
            new = f"body.{m[1]}.conv{1 if m[2] == '0' else 2}.{m[3]}"
        elif m := re.fullmatch(r"body\.\d+\.(weight|bias)", key):
            new = f"body_tail.{m[1]}"  # the conv after the blocks: checked below to be body.{n}
        elif re.fullmatch(r"tail\.0\.\d+\.(weight|bias)|tail\.1\.(weight|bias)", key):
            new = key
        else:
            raise TinySRError(f"{path}: unexpected tensor {key!r} for EDSR-PyTorch's EDSR")
        renamed[new], names[new] = value, key
    if "tail.1.weight" not in renamed and "tail.0.0.weight" in renamed:  # ASSL's LEDSR: one conv, C -> 3 s^2
        for kind in ("weight", "bias"):
            if f"tail.0.0.{kind}" in renamed:
                renamed[f"tail.0.{kind}"] = renamed.pop(f"tail.0.0.{kind}")
                names[f"tail.0.{kind}"] = names.pop(f"tail.0.0.{kind}")
    # the conv after the blocks is body.{n}, n the number of blocks
    blocks = len(_indices(renamed, "body.{}.conv1.weight", path))
    after = {names[k].split(".")[1] for k in renamed if k.startswith("body_tail.")}
    if after - {str(blocks)}:
        raise TinySRError(f"{path}: unexpected tensor 'body.{sorted(after)[0]}' (the conv after {blocks} blocks is body.{blocks})")
    mean = _mean_of_shifts(shifts, path)
    renamed = _from_pixel_range(renamed, PIXEL_RANGE)
    renamed["sub_mean.shift"] = -mean.view(1, 3, 1, 1)
    renamed["add_mean.shift"] = mean.view(1, 3, 1, 1)
    return _edsr(renamed, path, names, res_scale)


def _mean_of_shifts(shifts: dict, path: Path) -> torch.Tensor:
    """EDSR-PyTorch's MeanShift convs: identity weights, bias ``-+rgb_range * mean``."""
    if not shifts:
        return torch.tensor(DIV2K_RGB_MEAN)
    means = []
    for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
        weight, bias = shifts.get(f"{name}.weight"), shifts.get(f"{name}.bias")
        if weight is None or bias is None or tuple(weight.shape) != (3, 3, 1, 1) or tuple(bias.shape) != (3,):
            raise TinySRError(f"{path}: {name} must be a 1x1 conv of 3 channels (weight and bias)")
        if not torch.equal(weight.flatten(1), torch.eye(3, dtype=weight.dtype)):
            raise TinySRError(f"{path}: {name}.weight is not the identity (rgb_std != 1); tinysr's mean shift has no scale")
        means.append(sign * bias.float() / PIXEL_RANGE)
    if not torch.allclose(means[0], means[1]):
        raise TinySRError(f"{path}: sub_mean and add_mean hold different means")
    return means[0]


BASICSR_NAMES = {"conv_first": "head", "conv_after_body": "body_tail", "conv_last": "tail.1"}


def _basicsr(obj: dict, path: Path, res_scale: float | None, scale: int | None = None) -> tuple[nn.Module, dict]:
    tensors = _unwrap(obj, path, ("params_ema", "params"))
    if "upconv1.weight" in tensors and "conv_hr.weight" in tensors:
        return _msrresnet(tensors, path, res_scale)
    if "conv_after_body.weight" not in tensors:
        raise TinySRError(f"{path}: a BasicSR checkpoint of an architecture tinysr has no model for (EDSR and MSRResNet convert)")
    # upsample.{0,2,..}: one conv per stage, a PixelShuffle between them
    upsample = {f"upsample.{i}": f"tail.0.{i}" for i in range(0, 2 * len(SUPPORTED_SCALES), 2)}
    renamed, names = _basicsr_renamed(tensors, path, {**BASICSR_NAMES, **upsample}, "BasicSR's EDSR")
    renamed = _from_pixel_range(renamed, PIXEL_RANGE)
    mean = torch.tensor(DIV2K_RGB_MEAN)
    renamed["sub_mean.shift"] = -mean.view(1, 3, 1, 1)
    renamed["add_mean.shift"] = mean.view(1, 3, 1, 1)
    return _edsr(renamed, path, names, res_scale)


def _basicsr_renamed(tensors: dict, path: Path, modules: dict[str, str], what: str) -> tuple[dict, dict]:
    """BasicSR's tensors under tinysr's names: ``modules`` maps whole modules, and the residual
    blocks' ``body.{i}.conv{1,2}`` keep theirs; returns (renamed, tinysr name -> BasicSR's)."""
    renamed, names = {}, {}
    for key, value in tensors.items():
        module, _, rest = key.rpartition(".")
        if module in modules:
            new = f"{modules[module]}.{rest}"
        elif re.fullmatch(r"body\.\d+\.conv[12]", module):
            new = key
        else:
            raise TinySRError(f"{path}: unexpected tensor {key!r} for {what}")
        renamed[new], names[new] = value, key
    return renamed, names


def _msrresnet(tensors: dict, path: Path, res_scale: float | None) -> tuple[nn.Module, dict]:
    """BasicSR's MSRResNet (``srresnet_arch.py``) into ``msrresnet``: pixels in [0, 1], as is."""
    if res_scale is not None:
        raise TinySRError("--res-scale: BasicSR's MSRResNet blocks have no residual scaling to set")
    channels = _shape(tensors, "conv_first.weight", path)[0]
    stages = 2 if "upconv2.weight" in tensors else 1
    scale = _scale_of_upsampler([_shape(tensors, "upconv1.weight", path)] * stages, channels, path)
    modules = {"conv_first": "head.0", "upconv1": "upsampler.0", "upconv2": "upsampler.3", "conv_hr": "conv_hr.0", "conv_last": "conv_last"}
    renamed, names = _basicsr_renamed(tensors, path, modules, "BasicSR's MSRResNet")
    blocks = len(_indices(renamed, "body.{}.conv1.weight", path))
    model = create_model("msrresnet", scale=scale, channels=channels, blocks=blocks)
    _load_checked(model, renamed, names, path, f"an MSRResNet of {blocks} blocks")
    return model.eval(), {"scale": scale, "channels": channels, "blocks": blocks}


def _ecbsr_plain(obj: dict, path: Path, res_scale: float | None, scale: int | None = None) -> tuple[nn.Module, dict]:
    """The official ECBSR's deployed form (``PlainSR``), Y only, into ``basenet(colors=1)``."""
    if res_scale is not None:
        raise TinySRError("--res-scale is EDSR's residual scaling; ECBSR has none")
    tensors = _unwrap(obj, path, ())
    if any(".conv1x1_" in k for k in tensors):
        return _ecbsr_training(tensors, path)
    layers = _indices(tensors, "backbone.{}.conv3x3.weight", path)
    if len(layers) < 2:
        raise TinySRError(f"{path}: no PlainSR backbone (backbone.{{i}}.conv3x3) in the checkpoint")
    head = _shape(tensors, "backbone.0.conv3x3.weight", path)
    channels, colors = head[:2]
    if colors != 1:
        raise TinySRError(f"{path}: a PlainSR of {colors} colour channels; the official ECBSR is Y only (colors: 1)")
    last = layers[-1]
    outputs = _shape(tensors, f"backbone.{last}.conv3x3.weight", path)[0]
    scale = math.isqrt(outputs)
    if scale * scale != outputs or scale not in SUPPORTED_SCALES:
        raise TinySRError(f"{path}: the last conv has {outputs} outputs, no scale's square")
    renamed, names = {}, {}
    for key, value in tensors.items():
        match = re.fullmatch(r"backbone\.(\d+)\.(conv3x3|act)\.(weight|bias)", key)
        if match is None:
            raise TinySRError(f"{path}: unexpected tensor {key!r} for the official PlainSR")
        i, part, kind = int(match.group(1)), match.group(2), match.group(3)
        if part == "act" and i == last:
            raise TinySRError(f"{path}: unexpected tensor {key!r}: the last conv of PlainSR is linear")
        module = "head" if i == 0 else "tail" if i == last else f"body.{i - 1}"
        if part == "act":
            module = "head_act" if i == 0 else f"body_acts.{i - 1}"
        renamed[f"net.{module}.{kind}"], names[f"net.{module}.{kind}"] = value, key
    # PReLU(a x) = a PReLU(x) for a > 0: the 0-255 Y range moves into the conv biases alone
    renamed = _from_pixel_range(renamed, PIXEL_RANGE)
    model = create_model("basenet", scale=scale, channels=channels, blocks=last - 1, colors=1)
    _load_checked(model, renamed, names, path, f"a PlainSR of {last - 1} body convs")
    return model.eval(), {"scale": scale, "channels": channels, "blocks": last - 1, "colors": 1}


_BBCU_UNIT = {  # a BBCU unit's tensors: official name -> (tinysr name, sign)
    "move0.bias": ("conv.act_quantizer.threshold", -1.0),
    "binary_conv.weight": ("conv.weight", 1.0),
    "relu.pr_bias0.bias": ("post.shift_in", -1.0),
    "relu.pr_prelu.weight": ("post.prelu.weight", 1.0),
    "relu.pr_bias1.bias": ("post.shift_out", 1.0),
}


def _bbcu_source_name(key: str, upsampler: dict[str, str]) -> str:
    """BBCU's name of the tinysr tensor ``key`` (the inverse of the mapping below)."""
    unit_names = {new: old for old, (new, _) in _BBCU_UNIT.items()}
    modules = {"head.0": "conv_first", "conv_last": "conv_last", "conv_hr.0": "conv_hr", **{v: k for k, v in upsampler.items()}}
    if m := re.fullmatch(r"body\.(\d+)\.(.+)", key):
        return f"body.{int(m[1]) // 2}.body.{int(m[1]) % 2}.{unit_names.get(m[2], m[2])}"
    for ours, theirs in modules.items():
        if key.startswith(ours + "."):
            rest = key[len(ours) + 1 :]
            return f"{theirs}.{unit_names.get(rest, rest)}"
    return key


def _bbcu(obj: dict, path: Path, res_scale: float | None, scale: int | None = None) -> tuple[nn.Module, dict]:
    """BBCU's BBCUL / BBCUM (BasicSR format) into ``bbcu_l`` / ``bbcu_m``."""
    if res_scale is not None:
        raise TinySRError("--res-scale is EDSR's residual scaling; BBCU has none")
    tensors = _unwrap(obj, path, ("params_ema", "params"))
    binary_tail = "upconv1.binary_conv.weight" in tensors
    channels = _shape(tensors, "conv_first.weight", path)[0]
    first_up = _shape(tensors, "upconv1.binary_conv.weight" if binary_tail else "upconv1.weight", path)[0]
    stages = 2 if any(k.startswith("upconv2.") for k in tensors) else 1
    scale = _scale_of_upsampler([(first_up,)] * stages, channels, path)
    upsampler = {"upconv1": "upsampler.0", "upconv2": "upsampler.1" if binary_tail else "upsampler.3"}
    renamed, names = {}, {}
    for key, value in tensors.items():
        if m := re.fullmatch(r"body\.(\d+)\.body\.([01])\.(.+)", key):
            unit, rest = 2 * int(m[1]) + int(m[2]), m[3]
            if rest not in _BBCU_UNIT:
                raise TinySRError(f"{path}: unexpected tensor {key!r} for BBCU's unit")
            new, sign = _BBCU_UNIT[rest]
            new = f"body.{unit}.{new}"
        elif m := re.fullmatch(r"(conv_first|conv_last|upconv[12]|conv_hr)\.(.+)", key):
            module, rest = m[1], m[2]
            unit_module = binary_tail and module in ("upconv1", "upconv2", "conv_hr")
            if unit_module and rest in _BBCU_UNIT:
                target = {"conv_hr": "conv_hr.0", **upsampler}[module]
                new, sign = _BBCU_UNIT[rest]
                new = f"{target}.{new}"
            elif not unit_module and rest in ("weight", "bias"):
                target = {"conv_first": "head.0", "conv_last": "conv_last", "conv_hr": "conv_hr.0", **upsampler}[module]
                new, sign = f"{target}.{rest}", 1.0
            else:
                raise TinySRError(f"{path}: unexpected tensor {key!r} for BBCU-{'M' if binary_tail else 'L'}")
        else:
            raise TinySRError(f"{path}: unexpected tensor {key!r} for BBCU")
        renamed[new], names[new] = sign * value, key
    units = len(_indices(tensors, "body.{}.body.0.binary_conv.weight", path)) * 2
    name = "bbcu_m" if binary_tail else "bbcu_l"
    model = create_model(name, scale=scale, channels=channels, units=units)
    for key in model.state_dict():  # a missing tensor is named as the source names it
        names.setdefault(key, _bbcu_source_name(key, upsampler))
    _load_checked(model, renamed, names, path, f"a {name} of {units} units")
    return model.eval(), {"scale": scale, "channels": channels, "units": units, "model": name}


_FABNET_UNIT = {  # an official FABNet module's tensors -> tinysr's FrequencyBinaryModule's
    "move0.bias": "conv1.act_quantizer.threshold",
    "move1.bias": "conv2.act_quantizer.threshold",
    "conv1.weight": "conv1.weight",
    "conv2.weight": "conv2.weight",
    "relu11.weight": "act1.weight",
    "relu12.weight": "act2.weight",  # LL modules
    "relu22.weight": "act2.weight",  # HH modules
    **{f"attention.fc{i}.{kind}": f"act2.fc{i}.{kind}" for i in (1, 2) for kind in ("weight", "bias")},
}


def _fabnet_high_order(channels: int) -> torch.Tensor:
    """For each tinysr high-band channel ``band * C + c``, the official one, ``c * 3 + band``."""
    band, c = torch.meshgrid(torch.arange(3), torch.arange(channels), indexing="ij")
    return (c * 3 + band).flatten()


def _fabnet_permuted(name: str, value: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """A high-branch tensor of the official layout in tinysr's (``order`` from _fabnet_high_order)."""
    if name.endswith("conv1.weight") or name.endswith("conv2.weight"):
        return value[order][:, order]
    if name.endswith("fc1.weight"):
        return value[:, order]
    if name.endswith("fc2.weight") or name.endswith("fc2.bias"):  # outputs 2c, 2c + 1: (phi, eps) of channel c
        pairs = torch.stack([2 * order, 2 * order + 1], dim=1).flatten()
        return value[pairs]
    if name.endswith("fc1.bias"):
        return value
    return value.flatten()[order].view(value.shape)  # thresholds and PReLU slopes, per channel


def _fabnet(obj: dict, path: Path, res_scale: float | None, scale: int | None) -> tuple[nn.Module, dict]:
    """The official FABNet (tiny or large) into tinysr's FABNet with the official choices. Its
    weights do not depend on the scale (every conv runs after the pre-upsampling), so the file
    does not tell it: ``scale`` must be given."""
    if res_scale is not None:
        raise TinySRError("--res-scale is EDSR's residual scaling; FABNet has none")
    if scale is None:
        raise TinySRError(f"{path}: FABNet's checkpoints do not record the scale they were trained for: give --scale")
    tensors = _unwrap(obj, path, ())
    tensors.pop("relu.weight", None)  # the tiny code builds a PReLU its forward never uses
    for key in [k for k in tensors if k.startswith(("DWTForward.", "DWTInverse."))]:  # pytorch_wavelets' filter buffers
        if not torch.allclose(tensors.pop(key).abs().float(), torch.tensor(0.5).sqrt()):
            raise TinySRError(f"{path}: {key} is not a Haar (db1) filter, the only wavelet tinysr's FABNet has")
    channels = _shape(tensors, "conv_head.weight", path)[0]
    large = "body_LL.0.conv1.weight" in tensors
    modules: dict[str, str] = {}  # official module prefix -> tinysr's
    if large:
        blocks = len(_indices(tensors, "body_LL.{}.conv1.weight", path))
        modules.update({f"body_LL.{i}": f"low.{i}" for i in range(blocks)})
        groups = len([g for g in range(1, 5) if f"body_HH{g}.0.conv1.weight" in tensors])
        modules.update({f"body_HH{g + 1}.{j}": f"high.{4 * g + j}" for g in range(groups) for j in range(4)})
        high = 4 * groups
    else:
        blocks = len([i for i in range(1, 9) if f"body_LL_{i}.conv1.weight" in tensors])
        modules.update({f"body_LL_{i + 1}": f"low.{i}" for i in range(blocks)})
        high = len(_indices(tensors, "body_HH.{}.conv1.weight", path))
        modules.update({f"body_HH.{i}": f"high.{i}" for i in range(high)})
    if high != 2 * blocks:
        raise TinySRError(f"{path}: {high} high-frequency modules for {blocks} low ones; FABNet has twice as many")
    for key, value in (("lambdas", (1.0, 0.5)), ("init_v", (1.0, 0.0))):  # the attention's fixed buffers
        for name in [k for k in tensors if k.endswith(f"attention.{key}")]:
            if tensors.pop(name).tolist() != list(value):
                raise TinySRError(f"{path}: {name} is not {list(value)}: an attention tinysr's recalibrated activation cannot express")
    order = _fabnet_high_order(channels)
    renamed, names = {}, {}
    fusion = []
    for key, value in tensors.items():
        if m := re.fullmatch(r"parameters(\d+)", key):
            fusion.append((int(m[1]), value))
            continue
        if key.startswith(("conv_head.", "conv_last_h.")):
            new = key.replace("conv_head", "head").replace("conv_last_h", "tail")
        else:
            if ".attention." in key:
                module, rest = key.split(".attention.", 1)
                rest = f"attention.{rest}"
            else:
                module, *parts = key.rsplit(".", 2)
                rest = ".".join(parts)
            if module not in modules or rest not in _FABNET_UNIT:
                raise TinySRError(f"{path}: unexpected tensor {key!r} for the official FABNet")
            new = f"{modules[module]}.{_FABNET_UNIT[rest]}"
            if rest.startswith("move"):
                value = -value
            if modules[module].startswith("high."):
                value = _fabnet_permuted(new, value, order)
        renamed[new], names[new] = value, key
    if sorted(i for i, _ in fusion) != list(range(1, blocks + 2)):
        raise TinySRError(f"{path}: the LL fusion needs parameters1..{blocks + 1}, found {sorted(i for i, _ in fusion)}")
    renamed["fusion.weights"] = torch.cat([v.flatten() for _, v in sorted(fusion, key=lambda f: f[0])])
    name = "fabnet_b8c96" if large else f"fabnet_b4c{channels}" if channels in (12, 24, 36) else "fabnet_b4c24"
    options = {"blocks": blocks, "channels": channels, "weight_estimator": "clip", "pixel_range": PIXEL_RANGE}
    options.update(recalibrated_high=large, upsample="nearest" if large else "bicubic")
    model = create_model(name, scale=scale, **options)
    _load_checked(model, renamed, names, path, f"a {name}")
    return model.eval(), {"model": name, "scale": scale, **options}


# An ECB's tensors: the official name (models/ecb.py) -> tinysr's (nn/rep.py ECB)
_ECB_EDGE_NAMES = (("k0", "conv1.weight"), ("b0", "conv1.bias"), ("scale", "scale"), ("bias", "bias"), ("mask", "mask"))
_ECB_NAMES = {
    "conv3x3.weight": "conv3.weight",
    "conv3x3.bias": "conv3.bias",
    "conv1x1_3x3.k0": "expand.weight",
    "conv1x1_3x3.b0": "expand.bias",
    "conv1x1_3x3.k1": "expand3.weight",
    "conv1x1_3x3.b1": "expand3.bias",
    # tinysr's edges in the same order: Sobel-x, Sobel-y, Laplacian
    **{f"conv1x1_{edge}.{theirs}": f"edges.{j}.{ours}" for j, edge in enumerate(("sbx", "sby", "lpl")) for theirs, ours in _ECB_EDGE_NAMES},
}


def _ecbsr_training(tensors: dict, path: Path) -> tuple[nn.Module, dict]:
    """The official ECBSR in its training form (``models/ecbsr.py``: ``backbone.{i}`` ECBs) into
    ``ecbsr(colors=1)``, the same Y range conversion as the plain form. The identity branch is
    not stored; the official configs train without it (``idt_ecbsr: 0``), as tinysr's default."""
    layers = _indices(tensors, "backbone.{}.conv3x3.weight", path)
    if len(layers) < 2:
        raise TinySRError(f"{path}: no ECBSR backbone (backbone.{{i}}.conv3x3) in the checkpoint")
    channels, colors = _shape(tensors, "backbone.0.conv3x3.weight", path)[:2]
    if colors != 1:
        raise TinySRError(f"{path}: an ECBSR of {colors} colour channels; the official ECBSR is Y only (colors: 1)")
    last = layers[-1]
    scale = math.isqrt(_shape(tensors, f"backbone.{last}.conv3x3.weight", path)[0])
    mid = _shape(tensors, "backbone.0.conv1x1_3x3.k0", path)[0]
    if mid % channels:
        raise TinySRError(f"{path}: the head's expansion has {mid} channels, not a multiple of its {channels} outputs")
    renamed, names, masks = {}, {}, {}
    for key, value in tensors.items():
        match = re.fullmatch(r"backbone\.(\d+)\.(.+)", key)
        if match is None:
            raise TinySRError(f"{path}: unexpected tensor {key!r} for the official ECBSR")
        i, rest = int(match[1]), match[2]
        module = "head" if i == 0 else "tail" if i == last else f"body.{i - 1}"
        if rest == "act.weight" and i != last:
            new = "net.head_act.weight" if i == 0 else f"net.body_acts.{i - 1}.weight"
        elif rest in _ECB_NAMES:
            new = f"net.{module}.{_ECB_NAMES[rest]}"
        else:
            raise TinySRError(f"{path}: unexpected tensor {key!r} for the official ECBSR's ECB")
        if rest.endswith(".mask"):
            masks[new], names[new] = value, key
            continue
        if rest.endswith(".scale"):
            value = value.flatten()
        renamed[new], names[new] = value, key
    # the Y range 0-255 goes into the biases: every conv bias, the padding with the 1x1's bias, the edge biases
    renamed = {k: v / PIXEL_RANGE if k.endswith(".bias") and "_act" not in k else v for k, v in renamed.items()}
    options = {"scale": scale, "channels": channels, "blocks": last - 1, "colors": 1, "depth_multiplier": mid // channels}
    model = create_model("ecbsr", **options)
    for key, mask in masks.items():  # fixed Sobel / Laplacian masks: only tinysr's own can be loaded
        own = model.state_dict()[key]
        if mask.shape[0] and not torch.equal(mask.float().reshape(-1, 3, 3), own.expand(mask.shape[0], 3, 3)):
            raise TinySRError(f"{path}: {names.get(key, key)} is not the Sobel / Laplacian mask of the official ECB")
        renamed[key] = own
    _load_checked(model, renamed, names, path, f"an ECBSR of {last - 1} body ECBs")
    return model.eval(), options


FORMATS: dict[str, Callable[[dict, Path, float | None, int | None], tuple[nn.Module, dict]]] = {
    "edsr-pytorch": _edsr_pytorch,
    "basicsr": _basicsr,
    "ecbsr": _ecbsr_plain,
    "bbcu": _bbcu,
    "fabnet": _fabnet,
}


def load_external(path: str | Path, format: str, res_scale: float | None = None, scale: int | None = None) -> tuple[nn.Module, dict]:
    """The tinysr model (eval mode) a checkpoint of ``format`` (:data:`FORMATS`) describes, and
    the options inferred from it (``scale``, ``channels``, ``blocks``, ``res_scale``). ``scale``
    is needed where the file cannot tell it (FABNet's); elsewhere it must agree with the file."""
    if format not in FORMATS:
        raise TinySRError(f"unknown checkpoint format {format!r} ({', '.join(FORMATS)})")
    if scale is not None and scale not in SUPPORTED_SCALES:
        raise TinySRError(f"--scale {scale}: must be one of {', '.join(map(str, SUPPORTED_SCALES))}")
    path = Path(path)
    model, options = FORMATS[format](read_state_dict(path), path, res_scale, scale)
    if scale is not None and options["scale"] != scale:
        raise TinySRError(f"{path}: a x{options['scale']} model, but --scale {scale} was given")
    return model, options

"""The one model file format (DESIGN.md principle 4): safetensors weights + JSON metadata.

The metadata holds the registry name and keyword arguments the model was built with, its
scale, the transforms that derived it (``compress/transforms.py``) and the tinysr version, so
:func:`load` rebuilds the module with :func:`tinysr.create_model`, re-applies the transforms and
loads the weights strictly. No pickled code is ever executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import compress  # noqa: F401  (registers the transforms a model file may record)
from ._version import __version__
from .compress.transforms import rebuild
from .errors import TinySRError
from .files import atomic_write
from .models.registry import create_model, model_spec
from .zoo import model_file_path

FORMAT_NAME = "tinysr-model"
FORMAT_VERSION = "1"


PRECISIONS = ("float32", "float16", "int8")
# The per-output-channel scale of an int8-stored weight ``W`` is kept as the tensor ``W`` + this.
INT8_SCALE_SUFFIX = ":int8_scale"


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (output channels first) as int8 ``q`` and one float32 ``scale`` per output
    channel, symmetric and round-to-nearest: ``weight[o] ~ scale[o] * q[o]``, the channel's largest
    magnitude stored exactly as 127 levels."""
    flat = weight.float().reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1) / 127
    q = torch.round(flat / torch.where(scale > 0, scale, 1).unsqueeze(1)).clamp(-127, 127)
    return q.to(torch.int8).reshape(weight.shape), scale


def _store(tensors: dict[str, torch.Tensor], precision: str, weights: set[str]) -> dict[str, torch.Tensor]:
    """The tensors as a file of ``precision`` holds them (see :func:`save`); ``weights``: the
    names int8 may store (learned tensors of two or more dimensions)."""
    if precision not in PRECISIONS:
        raise TinySRError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return tensors
    stored = {}
    for key, value in tensors.items():
        if not value.is_floating_point():
            stored[key] = value
        elif precision == "int8" and key in weights:
            stored[key], stored[key + INT8_SCALE_SUFFIX] = quantize_int8(value)
        else:
            stored[key] = value.half()
    return stored


def _restore(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Undo :func:`_store`'s int8 storage: each int8 weight times its per-channel scale."""
    for scale_key in [k for k in state if k.endswith(INT8_SCALE_SUFFIX)]:
        key = scale_key[: -len(INT8_SCALE_SUFFIX)]
        q, scale = state.get(key), state.pop(scale_key)
        if q is None or q.dtype != torch.int8 or scale.shape != q.shape[:1]:
            raise TinySRError(f"{path}: {scale_key} does not scale an int8 tensor {key} of its output channels")
        state[key] = q.float() * scale.float().reshape(-1, *[1] * (q.dim() - 1))
    return state


def save(model: nn.Module, path: str | Path, extra: dict[str, str] | None = None, precision: str = "float32") -> None:
    """Write ``model`` (built by :func:`tinysr.create_model`) to ``path`` atomically.

    ``extra``: more metadata entries (the zoo's ``zoo`` record). ``precision``: how its
    floating-point tensors are stored (:func:`load` turns them back into the model's float32):
    ``float32`` as they are; ``float16`` in half the bytes; ``int8`` every learned weight of two or
    more dimensions (convolutions, linear layers) as int8 with one float32 scale per output channel
    (:func:`quantize_int8`), the rest in float16, about a quarter of the bytes: buffers (a mean
    shift, BN statistics) are constants whose rounding would shift every output alike, so they
    stay float16. Integer tensors (a packed model's bits) are stored as they are. Whether a
    precision keeps a model's scores is the caller's to measure (``benchmarks/zoo_publish.py``
    does, for the zoo).
    """
    spec = model_spec(model)
    weights = {k for k, v in model.named_parameters(remove_duplicate=False) if v.dim() >= 2}
    # clone: safetensors refuses tensors that share storage (tied weights, views).
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    tensors = _store(tensors, precision, weights)
    metadata = {
        **(extra or {}),
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "kwargs": json.dumps(spec.kwargs, sort_keys=True),
        "transforms": json.dumps(spec.transforms),
        "scale": str(spec.scale),
        "tinysr_version": __version__,
    }

    def write(tmp: str) -> None:
        save_file(tensors, tmp, metadata=metadata)
        canonicalize_header(tmp)

    atomic_write(Path(path), write)


def canonicalize_header(path: str | Path) -> None:
    """Rewrite a safetensors file's JSON header with its keys sorted, in place.

    safetensors writes the metadata in hash-map order, which differs between processes, so the
    same model saved twice would give other bytes (and a teacher retrained to the same weights
    would look changed to a run's input digests). Sorting keeps every character, so the header
    keeps its length and the tensors their offsets.
    """
    with open(path, "r+b") as f:
        length = int.from_bytes(f.read(8), "little")
        raw = f.read(length)
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(canonical) > length:  # cannot happen for a header safetensors wrote; never corrupt the file
            raise TinySRError(f"{path}: unexpected safetensors header")
        f.seek(8)
        f.write(canonical.ljust(length, b" "))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a model file; raises :class:`TinySRError` naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise TinySRError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TinySRError(f"{path}: not a safetensors model file ({exc})") from exc
    if metadata.get("format") != FORMAT_NAME:
        raise TinySRError(f"{path}: not a tinysr model file (no '{FORMAT_NAME}' metadata)")
    return metadata


# A file may declare a model this much larger than itself (a pruned file holds a fraction of the
# network it is cut from); beyond it, the declared sizes are not believed and nothing is built.
MAX_DECLARED_RATIO = 100
MAX_DECLARED_FLOOR = 4 * 2**30


def _spec_fields(metadata: dict[str, str], path: Path) -> tuple[str, dict, list]:
    """The registry name, options and transforms a file's metadata declares, checked for form."""

    def field(key: str, default: str | None = None):
        if key not in metadata and default is None:
            raise TinySRError(f"{path}: its metadata has no {key!r}")
        try:
            return json.loads(metadata.get(key, default))
        except ValueError:
            raise TinySRError(f"{path}: its metadata {key!r} is not JSON") from None

    name = metadata.get("name")
    if not name:
        raise TinySRError(f"{path}: its metadata has no model 'name'")
    kwargs, transforms = field("kwargs"), field("transforms", "[]")
    if not isinstance(kwargs, dict):
        raise TinySRError(f"{path}: its metadata 'kwargs' must be a JSON object, got {type(kwargs).__name__}")
    if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
        raise TinySRError(f"{path}: its metadata 'transforms' must be a JSON list of objects")
    return name, kwargs, transforms


def _check_declared_size(name: str, kwargs: dict, path: Path) -> None:
    """Build the declared model on the meta device (no memory) and refuse one far larger than the file."""
    with torch.device("meta"):
        try:
            meta = create_model(name, **kwargs)
        except TinySRError as exc:  # e.g. an option this version's builder no longer has
            raise TinySRError(f"{path}: {exc}") from exc
        except (ValueError, TypeError, RuntimeError) as exc:
            raise TinySRError(f"{path}: cannot build {name!r} with its recorded options ({exc})") from exc
    declared = sum(t.numel() * t.element_size() for t in meta.state_dict().values())
    if declared > max(MAX_DECLARED_FLOOR, MAX_DECLARED_RATIO * path.stat().st_size):
        raise TinySRError(f"{path}: declares a model of {declared / 2**30:.1f} GiB of weights in a file of {path.stat().st_size} bytes")


def _state_mismatch(expected: dict, stored: dict) -> str:
    """The first difference between the built model's state and the file's, in one phrase
    (and how many more), or "" when every name and shape agrees."""
    problems = [f"{k} missing from the file" for k in expected if k not in stored]
    problems += [f"{k} in the file is not in the model" for k in stored if k not in expected]
    problems += [
        f"{k} is {list(stored[k].shape)} in the file, {list(v.shape)} in the model"
        for k, v in expected.items()
        if k in stored and stored[k].shape != v.shape
    ]
    # an integer tensor would load into a float one as its raw levels (an int8 weight missing its scale)
    problems += [
        f"{k} is {stored[k].dtype} in the file, {v.dtype} in the model"
        for k, v in expected.items()
        if k in stored and stored[k].is_floating_point() != v.is_floating_point()
    ]
    if not problems:
        return ""
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model stored in ``path`` and load its weights (strictly), in eval mode.

    The metadata is checked for form and the declared model is first built on the ``meta``
    device, so a file whose metadata claims an enormous network is refused before any memory is
    allocated for it. ``zoo:NAME`` loads the zoo's entry NAME (``zoo.py``).
    """
    path = model_file_path(path)
    metadata = read_metadata(path)
    name, kwargs, transforms = _spec_fields(metadata, path)
    _check_declared_size(name, kwargs, path)
    try:
        model = create_model(name, **kwargs)
    except TinySRError as exc:  # e.g. an option this version's builder no longer has
        raise TinySRError(f"{path}: {exc}") from exc
    for transform in transforms:
        model = rebuild(model, transform, str(path))
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            state = _restore({k: f.get_tensor(k) for k in f.keys()}, path)
    except (SafetensorError, RuntimeError) as exc:
        raise TinySRError(f"{path}: cannot read the weights ({exc})") from exc
    mismatch = _state_mismatch(model.state_dict(), state)
    if mismatch:
        raise TinySRError(f"{path}: weights do not match model {metadata['name']!r}: {mismatch}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # names and shapes agree; say the first line of what else does not
        raise TinySRError(f"{path}: weights do not match model {metadata['name']!r}: {str(exc).strip().splitlines()[-1].strip()}") from exc
    return model.to(device).eval()

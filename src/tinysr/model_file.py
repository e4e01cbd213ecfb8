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


def save(model: nn.Module, path: str | Path, extra: dict[str, str] | None = None, half: bool = False) -> None:
    """Write ``model`` (built by :func:`tinysr.create_model`) to ``path`` atomically.

    ``extra``: more metadata entries (the zoo's ``zoo`` record). ``half``: store floating-point
    tensors as float16 (half the bytes; :func:`load` converts them back to the model's float32).
    """
    spec = model_spec(model)
    # clone: safetensors refuses tensors that share storage (tied weights, views).
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
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
            state = {k: f.get_tensor(k) for k in f.keys()}
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

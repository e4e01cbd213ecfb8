"""The model zoo: trained tinysr model files shipped inside the package (``tinysr/zoo/``).

Each entry is a normal tinysr model file, named ``NAME.safetensors``, whose metadata also holds a
``zoo`` record (JSON): the recipe it was trained with, the compression family it shows, its
iterations, data and seed, the form it ships in (merged, packed, pruned or as trained), the storage precision
and its Set5 / Set14 scores measured on that very file. ``zoo:NAME`` names it wherever a model file is accepted (``tinysr.load``,
``-m``); :func:`list_pretrained` reads the records (``tinysr models --pretrained``).

Weights trained elsewhere are never shipped: every entry was trained by tinysr's own recipes.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from .errors import TinySRError

ZOO_DIR = Path(__file__).with_name("zoo")
PREFIX = "zoo:"
# What `tinysr upscale` runs without -m: the entry with the best PSNR per CPU millisecond of its
# scale (README's zoo table): a merged ECBSR runs a 320x180 input in milliseconds on a CPU.
DEFAULT_UPSCALERS = {2: "ecbsr_m4c16_x2", 4: "ecbsr_m4c16_x4"}


def is_zoo_name(name_or_path: str | Path) -> bool:
    return isinstance(name_or_path, str) and name_or_path.startswith(PREFIX)


def zoo_names() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.safetensors"))


def zoo_path(name: str) -> Path:
    """The file of ``zoo:NAME`` (or ``NAME``); an unknown name is an error listing the known ones."""
    bare = name[len(PREFIX) :] if is_zoo_name(name) else name
    path = ZOO_DIR / f"{bare}.safetensors"
    if not path.is_file():
        known = ", ".join(zoo_names()) or "none"
        raise TinySRError(f"{PREFIX}{bare}: no such model in the zoo (tinysr models --pretrained lists them: {known})")
    return path


def model_file_path(name_or_path: str | Path) -> Path:
    """The file a model argument names: the zoo's for ``zoo:NAME``, else the path itself."""
    return zoo_path(name_or_path) if is_zoo_name(name_or_path) else Path(name_or_path)


def default_upscaler(scale: int) -> str:
    """``zoo:NAME`` of the default model for ``scale``; an error naming the scales that have one."""
    name = DEFAULT_UPSCALERS.get(scale)
    if name is None or name not in zoo_names():
        have = ", ".join(f"x{s}" for s, n in sorted(DEFAULT_UPSCALERS.items()) if n in zoo_names()) or "none"
        raise TinySRError(f"the zoo has no default x{scale} model yet (defaults: {have}); pass -m MODEL")
    return PREFIX + name


def zoo_record(path: str | Path) -> dict:
    """The ``zoo`` record of a model file's metadata ({} for a file that is not a zoo entry)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    return json.loads(metadata["zoo"]) if "zoo" in metadata else {}


def list_pretrained() -> list[dict]:
    """One dict per zoo entry: its ``name`` and ``scale`` and its whole ``zoo`` record."""
    entries = []
    for name in zoo_names():
        path = ZOO_DIR / f"{name}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        entries.append({"name": name, "model": metadata.get("name"), "scale": int(metadata.get("scale", 0)), **zoo_record(path)})
    return entries

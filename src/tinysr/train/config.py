"""Training recipes: YAML files validated into typed, frozen dataclasses.

A recipe is read once, checked (an unknown or misspelt key, or a value of the wrong type, is an
error naming the key and the file), overridden from the command line with ``--set a.b=value``
(values parsed as YAML), and never mutated afterwards.

**Inheritance.** ``base: NAME`` names the recipe a recipe extends: its keys are read first and the
recipe's own keys override them (mappings merge key by key, any other value, lists included,
replaces the base's). NAME is a recipe file beside the recipe (``NAME.yaml``), a path relative to
it, or a shipped recipe; a base may have a base. A missing base or a cycle is an error naming
the files.

**Shipped recipes** live in the package (``tinysr/recipes``, :func:`list_recipes`); wherever a
recipe file is asked for, a shipped recipe's name may be given instead. Names starting with
``_`` are bases that are not complete recipes on their own.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import TinySRError
from ..models.registry import SUPPORTED_SCALES

RECIPE_SUFFIX = ".yaml"


@dataclass(frozen=True)
class Component:
    """A registered thing built by name with keyword arguments: the model, or a callback."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig(Component):
    """The model to train: a registered name and its options, and optionally ``init_from``, a
    model file of the same architecture (e.g. its x2 model for an x4 run, as EDSR and ASSL
    initialise x3 and x4) whose tensors of the same name and shape start this model; the others
    (an upsampler of another scale) keep their initialisation."""

    init_from: str | None = None


@dataclass(frozen=True)
class DataConfig:
    train: list[str]
    val: str | None = None
    patch_size: int = 48  # LR patch side; the HR patch is patch_size * scale
    repeat: int = 1  # patches drawn from each image per epoch
    workers: int = 0  # DataLoader worker processes
    val_max_images: int | None = None  # validate on the first N images only (None: all)


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass(frozen=True)
class SchedulerConfig:
    name: str = "multistep"  # multistep | cosine | constant
    milestones: list[int] = field(default_factory=list)  # iterations (multistep)
    gamma: float = 0.5  # multistep factor
    min_lr: float = 0.0  # cosine floor
    warmup: int = 0  # linear warm-up iterations


@dataclass(frozen=True)
class LossTerm:
    name: str = "l1"
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    iterations: int
    batch_size: int = 16  # per process; the effective batch is batch_size * world size
    lr: float = 1e-4
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    loss: list[LossTerm] = field(default_factory=lambda: [LossTerm()])
    grad_clip: float | None = None  # max global gradient norm
    val_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    ema: float | None = None  # EMA decay of the weights (e.g. 0.999); validation and outputs use the EMA
    amp: str | None = None  # bf16 | fp16 autocast: CUDA; bf16 also on CPUs with native bf16 (loop.autocast_dtype)


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    scale: int
    train: TrainConfig
    data: DataConfig
    seed: int = 0
    callbacks: list[Component] = field(default_factory=list)
    init: str | None = None  # start from this model file's weights (e.g. a pruned network to fine-tune)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _build(tp, value, where: str, source: str):
    """Check ``value`` against the annotation ``tp`` and convert it (dicts to dataclasses)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TinySRError(f"{source}: {where or 'the recipe'} must be a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        for key in value:
            if key not in names:
                dotted = f"{where}.{key}" if where else key
                raise TinySRError(f"{source}: unknown key {dotted!r} (known: {', '.join(sorted(names))})")
        kwargs = {}
        for f in dataclasses.fields(tp):
            dotted = f"{where}.{f.name}" if where else f.name
            if f.name in value:
                kwargs[f.name] = _build(hints[f.name], value[f.name], dotted, source)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TinySRError(f"{source}: missing required key {dotted!r}")
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _build(arg, value, where, source)
            except TinySRError as exc:
                errors.append(str(exc))
        raise TinySRError(errors[0] if errors else f"{source}: {where}: bad value {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and item is not Any and not isinstance(value, bool) and _type_name(item) == "str":
            value = [value]  # a single folder may be written without brackets
        if not isinstance(value, list):
            raise TinySRError(f"{source}: {where} must be a list, got {value!r}")
        return [_build(item, v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TinySRError(f"{source}: {where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_build(a, v, f"{where}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise TinySRError(f"{source}: {where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" as a string
        except ValueError:
            pass
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise TinySRError(f"{source}: {where} must be {_type_name(tp)}, got {value!r}")
    return value


def _apply_override(tree: dict, assignment: str, source: str) -> None:
    if "=" not in assignment:
        raise TinySRError(f"--set {assignment!r}: expected dotted.key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TinySRError(f"--set {key}: {part!r} is not a section of {source}")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise TinySRError(f"--set {assignment!r}: the value is not valid YAML ({exc.__class__.__name__})") from exc


def parse_config(tree: dict, source: str = "<config>", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Validate a recipe given as a dict (``source`` names it in errors), after ``--set`` overrides."""
    tree = yaml.safe_load(yaml.safe_dump(tree)) if tree else {}  # deep copy
    tree = resolve_bases(tree, None)
    for assignment in overrides:
        _apply_override(tree, assignment, source)
    config = _build(Config, tree, "", source)
    _check_values(config, source)
    return config


def recipes_dir() -> Path:
    """The folder of the shipped recipes (package data)."""
    return Path(str(importlib.resources.files("tinysr") / "recipes"))


def list_recipes(include_bases: bool = False) -> list[str]:
    """The names of the shipped recipes, sorted (bases, named ``_...``, only if asked for)."""
    names = sorted(p.stem for p in recipes_dir().glob(f"*{RECIPE_SUFFIX}"))
    return [n for n in names if include_bases or not n.startswith("_")]


def find_recipe(name_or_path: str | Path, beside: Path | None = None) -> Path:
    """The recipe file ``name_or_path`` names: a file (relative to ``beside``'s folder if given,
    else to the working folder), or a shipped recipe's name."""
    text = str(name_or_path)
    candidates = [Path(beside).parent / text] if beside is not None else [Path(text)]
    if not text.endswith(RECIPE_SUFFIX):
        candidates.append(candidates[0].with_name(candidates[0].name + RECIPE_SUFFIX))
    candidates.append(recipes_dir() / (Path(text).name if text.endswith(RECIPE_SUFFIX) else text + RECIPE_SUFFIX))
    for path in candidates:
        if path.is_file():
            return path
    where = f" (base of {beside})" if beside is not None else ""
    raise TinySRError(f"{text}: no such recipe file or shipped recipe{where}; `tinysr recipes` lists the shipped ones")


def _read_yaml(path: Path) -> dict:
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TinySRError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    if tree is not None and not isinstance(tree, dict):
        raise TinySRError(f"{path}: a recipe must be a mapping of keys")
    return tree or {}


def merge_trees(base: dict, override: dict) -> dict:
    """``override`` over ``base``: mappings merge key by key, any other value replaces."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge_trees(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def resolve_bases(tree: dict, path: Path | None, chain: tuple[Path, ...] = ()) -> dict:
    """``tree`` (read from ``path``) with its chain of ``base:`` recipes merged under it."""
    if "base" not in tree:
        return tree
    base_name = tree["base"]
    where = path if path is not None else "<recipe>"
    if not isinstance(base_name, str) or not base_name:
        raise TinySRError(f"{where}: base must be a recipe name or file, got {base_name!r}")
    base_path = find_recipe(base_name, beside=path).resolve()
    if base_path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, base_path))
        raise TinySRError(f"{where}: recipe bases form a cycle ({cycle})")
    base = resolve_bases(_read_yaml(base_path), base_path, (*chain, base_path))
    return merge_trees(base, {k: v for k, v in tree.items() if k != "base"})


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read and validate the YAML recipe at ``path`` (or the shipped recipe of that name), bases merged."""
    found = find_recipe(path)
    tree = resolve_bases(_read_yaml(found), found.resolve(), (found.resolve(),))
    return parse_config(tree, str(path), overrides)


def _check_values(c: Config, source: str) -> None:
    def bad(key: str, why: str):
        raise TinySRError(f"{source}: {key} {why}")

    if c.scale not in SUPPORTED_SCALES:
        bad("scale", f"must be {', '.join(map(str, SUPPORTED_SCALES[:-1]))} or {SUPPORTED_SCALES[-1]}, got {c.scale}")
    if c.train.iterations < 1:
        bad("train.iterations", "must be at least 1")
    if c.train.batch_size < 1:
        bad("train.batch_size", "must be at least 1")
    if c.train.lr <= 0:
        bad("train.lr", "must be positive")
    if c.data.patch_size < 1:
        bad("data.patch_size", "must be at least 1")
    if c.data.repeat < 1:
        bad("data.repeat", "must be at least 1")
    if not c.data.train:
        bad("data.train", "must list at least one folder")
    for key in ("val_every", "checkpoint_every", "log_every"):
        if getattr(c.train, key) < 1:
            bad(f"train.{key}", "must be at least 1")
    if c.train.optimizer.name not in ("adam", "adamw"):
        bad("train.optimizer.name", f"must be adam or adamw, got {c.train.optimizer.name!r}")
    if c.train.scheduler.name not in ("multistep", "cosine", "constant"):
        bad("train.scheduler.name", f"must be multistep, cosine or constant, got {c.train.scheduler.name!r}")
    if c.train.ema is not None and not 0 < c.train.ema < 1:
        bad("train.ema", "must be a decay in (0, 1)")
    if c.train.amp not in (None, "bf16", "fp16"):
        bad("train.amp", f"must be bf16 or fp16, got {c.train.amp!r}")
    if c.init is not None and c.model.init_from is not None:
        bad("model.init_from", "and init exclude each other: init continues a model as it is, init_from starts a new one")

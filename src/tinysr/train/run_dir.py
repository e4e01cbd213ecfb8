"""The run folder on its own: what it holds, and when a run in it may be resumed or reused.

Files: ``config.yaml`` (the resolved recipe), ``inputs.json`` (the SHA-256 of each file the recipe
reads), ``log.jsonl`` (one JSON object a line; ``time`` is the seconds trained so far, carried
across resumes), ``checkpoints/state.pt`` (latest training state,
``checkpoint.py``), ``best.safetensors`` (best validation PSNR), ``model.safetensors`` (final
weights), ``tb/`` when TensorBoard is installed.

**Inputs.** A recipe names files by path (a model to start from, a distillation teacher), and the
same path can hold another file later: a teacher retrained in place. A run records the digest of
each when it starts; resuming it, or reusing it finished, is refused once one of them holds
other bytes. Contents, not modification times: a copied or checked-out run folder keeps
matching, and a teacher retrained to the same bytes is the same teacher.

**Reuse.** :func:`finished_model` is the one test of "this folder holds this recipe's result",
used by ``train_or_reuse`` and so by ``bench``, ``prune``, ``quickstart`` and the benchmark
scripts alike: same recipe, same model options as the code builds now, same input bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..errors import TinySRError
from ..files import atomic_write, sha256_of
from ..model_file import read_metadata
from ..models.registry import resolved_options
from ..zoo import is_zoo_name, zoo_path
from .checkpoint import state_path
from .config import Config

CONFIG_NAME = "config.yaml"
INPUTS_NAME = "inputs.json"
LOG_NAME = "log.jsonl"
FINAL_NAME = "model.safetensors"
BEST_NAME = "best.safetensors"


def has_checkpoint(run_dir: str | Path) -> bool:
    return state_path(run_dir).is_file()


def write_recipe(run_dir: str | Path, recipe: dict) -> None:
    text = yaml.safe_dump(recipe, sort_keys=False)
    atomic_write(Path(run_dir) / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))


# ----------------------------------------------------------------------------------------- the log
def _log_iteration(line: str) -> int | None:
    """The iteration of a log line, or None for a blank or damaged line."""
    try:
        return int(json.loads(line).get("iter", 0))
    except (ValueError, AttributeError):
        return None


def read_log(run_dir: str | Path) -> list[dict]:
    """A run's log records, each timed one with ``time`` as the seconds trained up to it: in a log
    whose clock restarts at each resume (runs checkpointed before the time was carried over), the
    earlier stretches' last times are added. Blank or damaged lines (a kill) are left out."""
    path = Path(run_dir) / LOG_NAME
    records, carried, last = [], 0.0, None
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("time"), (int, float)):
            if last is not None and record["time"] < last:
                carried += last  # a clock restarted by a resume
            last = record["time"]
            record["time"] += carried
        records.append(record)
    return records


def logged_training_seconds(run_dir: str | Path) -> float | None:
    """The seconds a run has trained by its log (:func:`read_log`); None without timed lines."""
    times = [r["time"] for r in read_log(run_dir) if "time" in r]
    return times[-1] if times else None


def truncate_log(path: Path, iteration: int) -> None:
    """Drop log entries written after ``iteration`` (a resumed run writes them again) and a last
    line cut short by a kill."""
    if not path.is_file():
        return
    lines = [(ln, _log_iteration(ln)) for ln in path.read_text().splitlines()]
    kept = [ln for ln, it in lines if it is not None and it <= iteration]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in kept)))


# -------------------------------------------------------------------------------------- the inputs
def _input_file(name) -> Path | None:
    """The file a recipe value names: a zoo entry (``zoo:NAME``) or an existing path; else None."""
    if not isinstance(name, str):
        return None
    if is_zoo_name(name):
        try:
            return zoo_path(name)
        except TinySRError:
            return None
    return Path(name) if Path(name).is_file() else None


def _named_files(tree) -> list[str]:
    """The files named anywhere in ``tree`` (part of a recipe: existing paths and zoo entries), in
    the order it names them."""
    if isinstance(tree, dict):
        return [f for v in tree.values() for f in _named_files(v)]
    if isinstance(tree, list):
        return [f for v in tree for f in _named_files(v)]
    return [tree] if _input_file(tree) is not None else []


def recipe_inputs(recipe: dict) -> list[str]:
    """The files a run of ``recipe`` (a ``Config.to_dict()`` tree) reads: its ``init`` model, the
    model its weights start from (``model.init_from``, a file or a zoo entry) and any file a loss
    term names. Callbacks are left out: they may name files they write (ASSL's output)."""
    return _named_files([recipe["init"], recipe["model"].get("init_from"), recipe["train"]["loss"]])


def record_inputs(run_dir: str | Path, recipe: dict) -> None:
    """Write ``inputs.json``: the digest of every file the run reads, keyed by the recipe's path."""
    digests = {name: sha256_of(_input_file(name)) for name in recipe_inputs(recipe)}
    text = json.dumps(digests, indent=1, sort_keys=True) + "\n"
    atomic_write(Path(run_dir) / INPUTS_NAME, lambda tmp: Path(tmp).write_text(text))


def stale_input(run_dir: str | Path, recipe: dict, finished: Path | None = None) -> str | None:
    """A file the run read that now holds other bytes or is gone, as an error phrase; ``None`` if
    every one is unchanged. A run from before ``inputs.json`` has only modification times to go
    by: if it ``finished`` (its final model file), a file ``recipe`` reads that was written after
    that file is stale; an unfinished one is not checked."""
    path = Path(run_dir) / INPUTS_NAME
    if not path.is_file():
        if finished is None:
            return None
        newer = [f for f in recipe_inputs(recipe) if _input_file(f).stat().st_mtime_ns > finished.stat().st_mtime_ns]
        return f"{newer[0]} was written after this run finished (retrained in place?)" if newer else None
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TinySRError(f"{path}: cannot read the run's input digests ({exc})") from exc
    for name, digest in recorded.items():
        file = _input_file(name)
        if file is None:
            return f"{name}, which it read, is gone"
        if sha256_of(file) != digest:
            return f"{name} holds other bytes than when it read it (retrained in place?)"
    return None


# ------------------------------------------------------------------------------------- the recipe
class _Absent:
    """A key missing from one recipe: its own object, so no recipe value can be mistaken for it."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _same_value(saved, wanted) -> bool:
    """Equal; or absent on one side and None on the other (a recipe field added later, left unset);
    or two paths naming the same existing file (a run reached through a link)."""
    if saved == wanted or (saved is None and wanted is _ABSENT) or (saved is _ABSENT and wanted is None):
        return True
    if isinstance(saved, str) and isinstance(wanted, str) and Path(saved).is_file() and Path(wanted).is_file():
        return Path(saved).samefile(wanted)
    return False


def recipe_differences(saved, wanted, where: str = "") -> list[str]:
    """The dotted keys at which two resolved recipes (``Config.to_dict()`` trees) differ."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        keys = sorted(set(saved) | set(wanted), key=str)
        return [
            d for k in keys for d in recipe_differences(saved.get(k, _ABSENT), wanted.get(k, _ABSENT), f"{where}.{k}" if where else str(k))
        ]
    if isinstance(saved, list) and isinstance(wanted, list) and len(saved) == len(wanted):
        return [d for i, (s, w) in enumerate(zip(saved, wanted)) for d in recipe_differences(s, w, f"{where}[{i}]")]
    return [] if _same_value(saved, wanted) else [f"{where or 'recipe'}: {saved!r} there, {wanted!r} here"]


def recipe_mismatch(saved: dict | None, config: Config) -> str:
    """The first differences between a run's saved recipe and ``config``, for an error line ("" if none).

    The one test of "same recipe", used both to resume a run and to reuse a finished one.
    """
    differences = recipe_differences(saved, config.to_dict())
    return "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")


def _changed_model_option(final: Path, config: Config) -> str:
    """The first option of the recipe's model whose value in the finished model file differs from
    what the recipe builds now (a builder default changed in the code), for an error line; "" if
    none. Options the file does not record (files written before specs held defaults) are not
    compared; nor is a model the run started from a file (``init``) or exported under another name."""
    metadata = read_metadata(final)
    if config.init is not None or metadata["name"] != config.model.name:
        return ""
    saved = json.loads(metadata["kwargs"])
    now = json.loads(json.dumps(resolved_options(config.model.name, config.scale, **config.model.kwargs)))  # as a file holds them
    for key in sorted(saved):
        if key not in now or saved[key] != now[key]:
            return f"model option {key}: {saved[key]!r} there, {now.get(key, _ABSENT)!r} here"
    return ""


# -------------------------------------------------------------------------------------- resume, reuse
def check_resumable(run_dir: str | Path, saved_recipe: dict | None, config: Config) -> None:
    """Raise unless the run in ``run_dir``, started with ``saved_recipe``, may continue as ``config``."""
    shown = recipe_mismatch(saved_recipe, config)
    if shown:
        raise TinySRError(f"{run_dir}: the recipe differs from the one this run was started with ({shown}; see its {CONFIG_NAME})")
    stale = stale_input(run_dir, config.to_dict())
    if stale:
        raise TinySRError(f"{run_dir}: {stale}, so it cannot be resumed; move the folder away to retrain it")


def finished_model(config: Config, run_dir: str | Path) -> Path | None:
    """The final model of ``config`` if ``run_dir`` holds it finished, ``None`` if it holds no
    finished run; an error naming what differs if it holds another recipe's result.

    A finished run is this recipe's only if its ``config.yaml`` is this recipe, its model was built
    with the options the recipe's model gets now (a builder's default may have changed in the
    code), and every file the recipe names (a teacher, a model to start from) holds the bytes the
    run read (``inputs.json``; runs older than that file: was not written after the run's model).
    """
    run_dir = Path(run_dir)
    final = run_dir / FINAL_NAME
    if not final.is_file():
        return None
    saved_file = run_dir / CONFIG_NAME
    if not saved_file.is_file():
        raise TinySRError(f"{run_dir}: a finished run without {CONFIG_NAME}, so its recipe is unknown; move the folder away to retrain it")
    shown = recipe_mismatch(yaml.safe_load(saved_file.read_text()), config)
    if shown:
        raise TinySRError(f"{run_dir}: finished with a different recipe ({shown}); move the folder away to retrain it")
    shown = _changed_model_option(final, config)
    if shown:
        raise TinySRError(
            f"{run_dir}: finished with a model the recipe no longer builds ({shown}: a default changed in the code?); "
            "move the folder away to retrain it"
        )
    stale = stale_input(run_dir, config.to_dict(), finished=final)
    if stale:
        raise TinySRError(f"{run_dir}: {stale}; move the folder away to retrain it")
    return final

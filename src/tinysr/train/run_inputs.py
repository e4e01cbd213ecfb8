"""The files a run reads (a model to start from, a distillation teacher), fingerprinted.

A recipe names such files by path, and the same path can hold another file later: a teacher
retrained in place. A run therefore records the SHA-256 of each file it read, in
``inputs.json`` beside its ``config.yaml``, when it starts; resuming it, or reusing it finished
(``train_or_reuse``), is refused once one of them holds other bytes. Contents, not modification
times: a copied or checked-out run folder keeps matching, and a teacher retrained to the same
bytes is the same teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import TinySRError
from ..io import sha256_of
from ..model_file import atomic_write

INPUTS_NAME = "inputs.json"


def _named_files(tree) -> list[str]:
    """The existing files named anywhere in ``tree`` (part of a recipe), in the order it names them."""
    if isinstance(tree, dict):
        return [f for v in tree.values() for f in _named_files(v)]
    if isinstance(tree, list):
        return [f for v in tree for f in _named_files(v)]
    return [tree] if isinstance(tree, str) and Path(tree).is_file() else []


def recipe_inputs(recipe: dict) -> list[str]:
    """The files a run of ``recipe`` (a ``Config.to_dict()`` tree) reads: its ``init`` model and any
    file a loss term names. Callbacks are left out: they may name files they write (ASSL's output)."""
    return _named_files([recipe["init"], recipe["train"]["loss"]])


def record_inputs(run_dir: str | Path, recipe: dict) -> None:
    """Write ``inputs.json``: the digest of every file the run reads, keyed by the recipe's path."""
    digests = {path: sha256_of(path) for path in recipe_inputs(recipe)}
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
        newer = [f for f in recipe_inputs(recipe) if Path(f).stat().st_mtime_ns > finished.stat().st_mtime_ns]
        return f"{newer[0]} was written after this run finished (retrained in place?)" if newer else None
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TinySRError(f"{path}: cannot read the run's input digests ({exc})") from exc
    for name, digest in recorded.items():
        if not Path(name).is_file():
            return f"{name}, which it read, is gone"
        if sha256_of(name) != digest:
            return f"{name} holds other bytes than when it read it (retrained in place?)"
    return None

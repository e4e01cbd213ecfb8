"""Training state on disk: written atomically (temp file, fsync, rename), read with ``weights_only``.

A crash or ``kill -9`` during a write leaves the previous checkpoint intact; the file holds only
tensors and plain Python values, so loading it executes no pickled code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import TinySRError
from ..files import atomic_write

STATE_NAME = "state.pt"


def state_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / STATE_NAME


def save_state(run_dir: str | Path, state: dict) -> Path:
    path = state_path(run_dir)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def load_state(run_dir: str | Path) -> dict:
    path = state_path(run_dir)
    if not path.is_file():
        raise TinySRError(f"{path}: no training state to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: say which, never a traceback
        raise TinySRError(f"{path}: cannot read training state ({exc.__class__.__name__}: {exc})") from exc

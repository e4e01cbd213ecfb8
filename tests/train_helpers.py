"""Helpers for the engine tests: a tiny recipe on small real crops, a slow training entry point, and
subprocesses that cannot outlive their time limit."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tinysr.data import mod_crop
from tinysr.io import read_image, write_image
from tinysr.models import registry


def change_builder_default(monkeypatch, name: str, option: str, value):
    """Make the registered builder ``name`` default ``option`` to ``value`` from now on, as a later
    version of the code might (its signature, which ``create_model`` reads, says so too)."""
    original = registry._REGISTRY[name]
    signature = inspect.signature(original)

    def changed(**kwargs):
        return original(**{option: value, **kwargs})

    changed.__signature__ = signature.replace(
        parameters=[p.replace(default=value) if p.name == option else p for p in signature.parameters.values()]
    )
    monkeypatch.setitem(registry._REGISTRY, name, changed)


def make_folders(data_dir: Path, root: Path) -> tuple[Path, Path]:
    """Small train / val folders cut from Set5 and Set14 HR images (real image statistics, fast)."""
    train, val = root / "train", root / "val"
    if not train.is_dir():
        for i, p in enumerate(sorted((data_dir / "Set14" / "HR").glob("*.png"))[:6]):
            img = read_image(p)
            write_image(train / f"t{i}.png", img[:64, :64])
        for p in sorted((data_dir / "Set5" / "HR").glob("*.png"))[:2]:
            write_image(val / p.name, mod_crop(read_image(p), 2)[:48, :48])
    return train, val


def tiny_recipe(train: Path, val: Path, **train_overrides) -> dict:
    return {
        "model": {"name": "edsr_baseline", "kwargs": {"channels": 8, "blocks": 1}},
        "scale": 2,
        "seed": 3,
        "data": {"train": [str(train)], "val": str(val), "patch_size": 8, "repeat": 2},
        "train": {"iterations": 12, "batch_size": 2, "lr": 1e-3, "val_every": 6, "checkpoint_every": 3, "log_every": 2, **train_overrides},
    }


def run_bounded(cmd: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` that kills the whole process group on timeout.

    ``subprocess.run``'s own timeout kills only the direct child, then waits for the pipes, which
    grandchildren (torchrun's workers) keep open: a hung worker would hang the suite.
    """
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{cmd} did not finish in {timeout} s; stderr tail:\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


if __name__ == "__main__":
    # `python train_helpers.py ARGS...` = `tinysr ARGS...` with a 'slow' callback (sleep per step),
    # so a test can kill the process in the middle of a run.
    from tinysr.cli import main
    from tinysr.train import Callback, register_callback

    @register_callback("slow")
    class Slow(Callback):
        def __init__(self, seconds: float = 0.05):
            self.seconds = seconds

        def on_step_end(self, trainer, iteration, logs):
            time.sleep(self.seconds)

    die_after = os.environ.get("TINYSR_TEST_DIE_AFTER")
    if die_after:  # the process dies (no cleanup, as under kill -9) right after the trainer writes this file
        import tinysr.train.loop as loop

        real_save, real_save_state = loop.save, loop.save_state

        def save_then_die(model, path):
            real_save(model, path)
            if Path(path).name == die_after:
                os._exit(137)

        def save_state_then_die(run_dir, state):
            path = real_save_state(run_dir, state)
            if path.name == die_after:
                os._exit(137)
            return path

        loop.save, loop.save_state = save_then_die, save_state_then_die

    sys.exit(main(sys.argv[1:]))

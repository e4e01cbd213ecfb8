"""``tinysr prune``: trained model -> pruned dense model -> fine-tuned model (SPEC §6), resumable.

The recipe given is the **fine-tuning** recipe (data, optimiser, schedule, iterations). Methods:

* ``assl``: phase 1 trains from the source model with the ``assl`` callback (its options from
  the recipe's ``assl`` callback entry when present, the paper's defaults otherwise) at a constant
  learning rate (``--prune-lr``, default the paper's 2e-4) for exactly the iterations that bring
  every penalty to tau, in ``RUN_DIR/regularize``; its output is ``pruned.safetensors``;
* ``l1``: the source's filters with the smallest L1 norms removed at once (no regularisation),
  *aligned*: convs tied by residual adds keep the same channels, ranked by their summed L1 norms,
  so the pruned network is a sub-network of the source (tinysr's baseline, the stronger one);
* ``l1_unaligned``: the official ASSL code's L1 baseline: each conv keeps its own largest-L1
  filters, tied ones too, and reads the kept channels of the conv before it, so the residual
  stream's channels no longer line up and fine-tuning has to repair the network;
* ``scratch``: the same widths as ``l1``, fresh random weights (the "train the small network from
  scratch" baseline).

Phase 2 fine-tunes the pruned model with the recipe in ``RUN_DIR/finetune``; the result is
``RUN_DIR/finetune/model.safetensors``. A phase whose output exists is skipped (if it was run with
the same recipe; a different one is an error), one interrupted is resumed, so rerunning the same
command continues where it stopped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..compress.assl import ASSL, PRUNED_FILE
from ..compress.prune import apply_widths, l1_plan, l1_unaligned_plan, prune, prune_layers
from ..errors import TinySRError
from ..files import folder_lock
from ..model_file import load, save
from ..models import create_model
from ..train import logged_training_seconds, train_or_reuse
from ..train.config import Component, Config, ModelConfig, SchedulerConfig
from ..train.run_dir import FINAL_NAME
from ..zoo import model_file_path

METHODS = ("assl", "l1", "l1_unaligned", "scratch")
REGULARIZE_DIR = "regularize"  # ASSL's phase 1, a training run of its own inside the pruning run
FINETUNE_DIR = "finetune"  # phase 2, every method's fine-tuning of the pruned network


def assl_options(config: Config, ratio: float, channel_multiple: int | None = None) -> dict:
    """ASSL's callback options for a pruning run: the recipe's ``assl`` entry, at ``ratio`` (and
    ``channel_multiple`` where given)."""
    options = {k: v for cb in config.callbacks if cb.name == "assl" for k, v in cb.kwargs.items()}
    options["ratio"] = ratio
    if channel_multiple is not None:
        options["channel_multiple"] = channel_multiple
    return options


def regularization_iterations(config: Config, ratio: float) -> int:
    """Iterations of ASSL's regularisation phase for ``config``'s options (before fine-tuning)."""
    return ASSL(**assl_options(config, ratio)).iterations


def pruned_model_file(
    config: Config,
    run_dir: Path,
    source: Path,
    ratio: float,
    method: str,
    prune_lr: float = 2e-4,
    device: str | None = None,
    progress: bool = True,
    channel_multiple: int | None = None,
) -> Path:
    """Phase 1: write (or reuse) the pruned, not yet fine-tuned model; returns its path.
    ``channel_multiple`` rounds every kept count to a multiple of it (``compress.prune.kept_count``;
    None: the recipe's ``assl`` entry's, else 1), for every method alike."""
    if method not in METHODS:
        raise TinySRError(f"prune: unknown method {method!r} ({', '.join(METHODS)})")
    trained = load(source)
    spec = trained.tinysr_spec
    if method == "assl":
        options = assl_options(config, ratio, channel_multiple)
        iterations = ASSL(**options).iterations
        phase = dataclasses.replace(
            config,
            model=ModelConfig(spec.name, {k: v for k, v in spec.kwargs.items() if k != "scale"}),
            init=str(source),
            callbacks=[Component("assl", options)],
            train=dataclasses.replace(
                config.train,
                iterations=iterations,
                lr=prune_lr,
                scheduler=SchedulerConfig(name="constant"),
                val_every=min(config.train.val_every, iterations),
                checkpoint_every=min(config.train.checkpoint_every, iterations),
            ),
        )
        train_or_reuse(phase, run_dir / REGULARIZE_DIR, device=device, progress=progress)
        return _pruned_file(run_dir, method)
    out = _pruned_file(run_dir, method)
    if not out.is_file():
        multiple = assl_options(config, ratio, channel_multiple).get("channel_multiple", 1)
        plan = l1_plan(trained, ratio, multiple=multiple)
        if method == "l1":
            save(prune(trained, plan), out)
        elif method == "l1_unaligned":
            save(prune_layers(trained, l1_unaligned_plan(trained, ratio, multiple=multiple)), out)
        else:
            torch.manual_seed(config.seed)
            fresh = create_model(spec.name, **spec.kwargs)
            save(apply_widths(fresh, {k: len(v) for k, v in plan.items()}), out)
    return out


def surgery_files(run_dir: str | Path, method: str, source: str | Path) -> tuple[Path, Path] | None:
    """The model a finished phase 1 cut and the network it cut it into, before fine-tuning: ASSL's
    regularised network and its pruned form, the source and its pruned form for the L1 baselines;
    None for ``scratch``, which cuts nothing."""
    run_dir, source = Path(run_dir), model_file_path(source)
    if method == "scratch":
        return None
    return (run_dir / REGULARIZE_DIR / FINAL_NAME if method == "assl" else source), _pruned_file(run_dir, method)


def _pruned_file(run_dir: Path, method: str) -> Path:
    """Where phase 1 writes the pruned model: ASSL's regularisation run, else the run folder itself."""
    return (run_dir / REGULARIZE_DIR if method == "assl" else run_dir) / PRUNED_FILE


def run_pruning(
    config: Config,
    run_dir: str | Path,
    source: str | Path,
    ratio: float,
    method: str = "assl",
    prune_lr: float = 2e-4,
    device: str | None = None,
    progress: bool = True,
    channel_multiple: int | None = None,
) -> Path:
    """Prune ``source`` (a model file or ``zoo:NAME``) by ``method`` then fine-tune with ``config``;
    returns the final model file. ``channel_multiple``: see :func:`pruned_model_file`."""
    run_dir, source = Path(run_dir), model_file_path(source)
    with folder_lock(run_dir, "pruning run folder"):
        pruned = pruned_model_file(config, run_dir, source, ratio, method, prune_lr, device, progress, channel_multiple)
        return _finetune(config, run_dir, pruned, device, progress)


def _finetune(config: Config, run_dir: Path, pruned: Path, device: str | None, progress: bool) -> Path:
    spec = load(pruned).tinysr_spec
    finetune = dataclasses.replace(
        config,
        model=ModelConfig(spec.name, {k: v for k, v in spec.kwargs.items() if k != "scale"}),
        init=str(pruned),
        callbacks=[cb for cb in config.callbacks if cb.name != "assl"],
    )
    return train_or_reuse(finetune, run_dir / FINETUNE_DIR, device=device, progress=progress)


def pruning_training_seconds(run_dir: str | Path) -> float | None:
    """The seconds a pruning run trained by its logs, its phases summed (ASSL's regularisation and
    the fine-tuning); None when neither has a timed log line."""
    seconds = [logged_training_seconds(Path(run_dir) / phase) for phase in (REGULARIZE_DIR, FINETUNE_DIR)]
    return sum(s for s in seconds if s) if any(seconds) else None

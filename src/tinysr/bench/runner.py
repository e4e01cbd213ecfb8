"""``tinysr bench``: train (or reuse), evaluate and profile every entry of a suite under one protocol.

For each entry, in the suite's order:

1. the model: an untrained one (bicubic), a shipped zoo model, the recipe trained into ``DIR/<name>`` (an existing
   ``model.safetensors`` there is reused if the run's ``config.yaml`` is this recipe, and is an
   error otherwise; an interrupted run is resumed), or another entry's model
   pruned and fine-tuned (``tinysr prune``'s resumable phases);
2. the deployable form: re-parameterized (``merge``), bit-packed (``pack``) or as trained (a zoo
   model is stored in its form already);
3. its numbers: PSNR / SSIM on each test folder (SPEC §1; scored on the deployable form, which
   is what a user ships), params / FLOPs / BOPs / OPs at a 320x180 LR input and Mult-Adds at a
   1280x720 output (SPEC §3), counted on the deployable form (merged forms count merged; packed
   ones count what they replaced), and the median CPU time of one
   forward pass of the deployable form.

Each entry's numbers are stored in ``DIR/<name>/result.json`` (atomically) together with the
model file's size and time stamp, so a rerun after an interruption skips what is done. The
tables (``results.csv``, ``results.md``) and the plots are rewritten at the end of every run.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..compress import deployable
from ..data import BenchmarkSet, LRCache, make_lr, mod_crop
from ..errors import TinySRError
from ..evaluate import evaluate
from ..files import atomic_write, folder_lock
from ..inference import super_resolve
from ..io import read_image, write_image
from ..model_file import load
from ..models import create_model
from ..profile import profile
from ..train.config import load_config, recipes_dir
from ..train.loop import train_or_reuse
from ..train.run_dir import logged_training_seconds
from ..workflows.pruning import pruning_training_seconds, run_pruning
from ..zoo import zoo_path, zoo_record
from . import paper
from .plots import plot_crops, plot_psnr_vs_latency, plot_psnr_vs_ops
from .report import write_tables
from .suites import Entry, Suite

HR_720P = (720, 1280)  # the output size of the lightweight-FP tables' Mult-Adds (SPEC §3)


def entry_config(entry: Entry, suite: Suite, out_dir: Path):
    """The entry's recipe with the suite's and the entry's overrides (and its teacher, if any)."""
    config = load_config(recipes_dir() / entry.recipe, [*suite.overrides, *entry.overrides])
    if entry.teacher:
        teacher = str(out_dir / entry.teacher / "model.safetensors")
        loss = [dataclasses.replace(t, kwargs={**t.kwargs, "teacher": teacher}) if "teacher" in t.kwargs else t for t in config.train.loss]
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, loss=loss))
    return config


def trained_model(
    entry: Entry, suite: Suite, out_dir: Path, device: str | None, progress: bool
) -> tuple[Path | None, int | None, float | None]:
    """The entry's model file (trained or pruned here unless already there, or the zoo's), its
    iterations and the minutes it trained (by its run's log, or as the zoo's record has them)."""
    if entry.zoo is not None:
        path = zoo_path(entry.zoo)
        record = zoo_record(path)
        return path, record["iterations"], record.get("training_minutes")
    if entry.recipe is None:
        return None, None, None
    config = entry_config(entry, suite, out_dir)
    run_dir = out_dir / entry.name
    if run_dir.is_symlink() and not run_dir.exists():
        raise TinySRError(f"{run_dir}: a link to a missing folder (create its target or remove the link)")
    if entry.prune is not None:
        source = out_dir / entry.prune.source / "model.safetensors"
        if not source.is_file():
            raise TinySRError(f"bench: {entry.name} prunes {entry.prune.source}, whose model {source} is missing")
        final = run_pruning(
            config, run_dir, source, entry.prune.ratio, entry.prune.method, entry.prune.prune_lr, device=device, progress=progress
        )
        return final, config.train.iterations, _minutes(pruning_training_seconds(run_dir))
    final = train_or_reuse(config, run_dir, device=device, progress=progress)
    return final, config.train.iterations, _minutes(logged_training_seconds(run_dir))


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def cpu_time_ms(model: torch.nn.Module, lr_size: tuple[int, int], repeat: int, max_seconds: float | None = None) -> float:
    """Median wall time of one forward pass on a (1, 3, H, W) input, after one warm-up pass: of
    ``repeat`` passes, or, with ``max_seconds``, of as many of them as end within that many seconds
    of timing (at least one)."""
    x = torch.rand(1, 3, *lr_size)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeat):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
            if max_seconds is not None and sum(times) >= max_seconds * 1e3:
                break
    return statistics.median(times)


def crop_box(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` HR window with the most detail (largest variance).

    Searched on a grid of half-window steps, so the choice is deterministic and cheap.
    """
    gray = hr.astype(np.float64).mean(axis=2)
    best, corner = -1.0, (0, 0)
    for y in range(0, gray.shape[0] - size + 1, size // 2):
        for x in range(0, gray.shape[1] - size + 1, size // 2):
            v = float(gray[y : y + size, x : x + size].var())
            if v > best:
                best, corner = v, (y, x)
    return corner


class CropSheet:
    """The zoomed crop of one test image, for HR, bicubic and every method (``crops.png``)."""

    def __init__(self, image: Path, scale: int, size: int = 64):
        self.hr = mod_crop(read_image(image), scale)
        self.lr = make_lr(self.hr, scale)  # the protocol's LR (SPEC §1)
        self.size, self.corner = size, crop_box(self.hr, size)

    def crop(self, img: np.ndarray) -> np.ndarray:
        y, x = self.corner
        return img[y : y + self.size, x : x + self.size]

    def of_model(self, model: torch.nn.Module) -> np.ndarray:
        with torch.inference_mode():
            sr = super_resolve(model, self.lr)
        return self.crop((sr[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))


def _stamp(path: Path | None) -> list[int] | None:
    return None if path is None else [path.stat().st_size, path.stat().st_mtime_ns]


def measure(entry: Entry, model: torch.nn.Module, deployed: torch.nn.Module, suite: Suite, test_sets: list[str], cache: LRCache) -> dict:
    """Every number of one row, for the model as trained (``model``) and its deployable form."""
    scale = model.tinysr_spec.scale
    cost = profile(deployed, lr_size=(180, 320))
    multadds = profile(deployed, lr_size=(HR_720P[0] // scale, HR_720P[1] // scale)).flops
    row = {
        "method": entry.name,
        "family": entry.family,
        "scale": scale,
        "form": entry.deploy,
        "params": cost.params,
        "params_fp": cost.params_fp,
        "params_binary": cost.params_binary,
        "flops_g": cost.flops / 1e9,
        "bops_g": cost.bops / 1e9,
        "ops_g": cost.ops / 1e9,
        "multadds_720p_g": multadds / 1e9,
    }
    for folder in test_sets:
        score = evaluate(deployed, BenchmarkSet(folder, scale, cache=cache), progress=False)
        row[f"{score.dataset}_psnr"], row[f"{score.dataset}_ssim"] = score.psnr, score.ssim
    reported = paper.reported(entry.paper, scale)
    for folder in test_sets:
        name = Path(folder).name
        value = getattr(reported, name.lower(), None) if reported else None
        row[f"paper_{name}_psnr"] = value
    row["paper_source"] = reported.source if reported else None
    row["time_ms"] = cpu_time_ms(deployed, suite.time_lr_size, suite.time_repeat)
    return row


def run_bench(
    suite: Suite,
    out_dir: str | Path,
    test_sets: list[str] | None = None,
    device: str | None = None,
    progress: bool = True,
    plots: bool = True,
    log=print,
) -> list[dict]:
    """Run ``suite`` into ``out_dir`` (locked while it runs); returns the rows (also written as
    results.csv / results.md)."""
    with folder_lock(out_dir, "bench folder"):
        return _run_bench(suite, Path(out_dir), test_sets, device, progress, plots, log)


def _run_bench(suite: Suite, out_dir: Path, test_sets, device, progress: bool, plots: bool, log) -> list[dict]:
    test_sets = list(test_sets or suite.test_sets)
    for folder in test_sets:
        if not Path(folder).is_dir():
            raise TinySRError(f"--test {folder}: no such folder")
    cache, rows = LRCache(), []
    sheets: dict[int, CropSheet] = {}  # one crop sheet per scale, made when first needed
    crops: dict[int, dict[str, np.ndarray]] = {}

    def sheet_for(scale: int) -> CropSheet:
        if scale not in sheets:
            sheets[scale] = CropSheet(Path(suite.crop_image), scale)
        return sheets[scale]

    for entry in suite.entries:
        final, iterations, minutes = trained_model(entry, suite, out_dir, device, progress)
        model = load(final) if final is not None else create_model(entry.model, scale=entry.scale)
        result_file = out_dir / entry.name / "result.json"
        key = {"model": _stamp(final), "form": entry.deploy, "tests": test_sets, "time": list(suite.time_lr_size)}
        cached = json.loads(result_file.read_text()) if result_file.is_file() else None
        fresh = cached is None or cached.get("key") != key
        crop_file = out_dir / entry.name / "crop.png"
        needed = fresh or (plots and not crop_file.is_file())
        deployed = (model if entry.zoo else deployable(model, entry.deploy)) if needed else None
        if fresh:
            log(f"bench: measuring {entry.name}")
            row = {**measure(entry, model, deployed, suite, test_sets, cache), "iterations": iterations}
            atomic_write(result_file, lambda tmp, row=row: Path(tmp).write_text(json.dumps({"key": key, "row": row}, indent=1)))
        else:
            row = cached["row"]
        row = {**row, "train_min": minutes}  # from the log each time: rows cached before it was a column get it too
        rows.append(row)
        scale = row["scale"]
        if plots:
            if deployed is not None:
                write_image(crop_file, sheet_for(scale).of_model(deployed))
            crops.setdefault(scale, {})[entry.name] = read_image(crop_file)
        scores = ", ".join(f"{k[:-5]} {row[k]:.2f} dB" for k in row if k.endswith("_psnr") and not k.startswith("paper_"))
        log(f"bench: {entry.name} x{scale}: {scores}")
    write_tables(rows, test_sets, suite, out_dir)
    if plots:
        for scale, by_method in crops.items():
            sheet = sheet_for(scale)
            at_scale = [r for r in rows if r["scale"] == scale]
            plot_psnr_vs_ops(at_scale, Path(test_sets[0]).name, out_dir / f"psnr_vs_ops_x{scale}.png")
            plot_psnr_vs_latency(at_scale, Path(test_sets[0]).name, out_dir / f"psnr_vs_ms_x{scale}.png", torch.get_num_threads())
            plot_crops(sheet.crop(sheet.hr), by_method, f"{Path(suite.crop_image).stem} x{scale}", out_dir / f"crops_x{scale}.png")
    return rows

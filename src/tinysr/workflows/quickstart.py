"""``tinysr quickstart``: every compression family's trained model, from the zoo, against bicubic.

By default nothing trains: the held-apart photographs are super-resolved x2 by one shipped model
of each family in its deployable form (the best Set5 PSNR of the family's deployable entries), and
the table prints PSNR / SSIM against bicubic (SPEC §1, Y channel), params, OPs at a 320x180 LR
input (SPEC §3) and the CPU time of one such input on this machine. It writes a labelled
comparison sheet and PSNR against CPU time. ``train=True`` (``--train``) trains a small
EDSR-baseline instead, the whole pipeline in minutes.

Needs no network: the photographs come from scikit-image's wheel (the ``quickstart`` extra), read
as files from its ``data`` folder, or from a folder given with ``--data``. Two photographs are held
apart for testing. Everything goes through the public pieces (the training engine, the protocol's
evaluation, the model file, the zoo), so this is also a smoke test of the whole pipeline.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..bench.plots import plot_psnr_vs_latency
from ..bench.runner import cpu_time_ms
from ..bench.suites import FAMILIES, REFERENCE
from ..data import BenchmarkSet, LRCache
from ..errors import TinySRError
from ..evaluate import evaluate, saved_output_path
from ..io import list_images, read_image, write_image
from ..model_file import load
from ..models import create_model
from ..profile import profile
from ..train import parse_config, train_or_reuse
from ..zoo import DEFAULT_UPSCALERS, PREFIX, list_pretrained

# Natural photographs in scikit-image's data folder; the last two are held apart for testing.
SKIMAGE_TRAIN = (
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "camera.png",
    "moon.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
)
SKIMAGE_TEST = ("chelsea.png", "coffee.png")


def skimage_data_dir() -> Path | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "data"
    return folder if (folder / SKIMAGE_TEST[0]).is_file() else None


def _prepare_images(out: Path, data: str | None, train: bool = True) -> tuple[Path, Path]:
    """Copy the photographs as PNG into ``out/data/{train,test}`` (the held-apart ones only
    unless ``train``); returns the two folders."""
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    if data is not None:
        paths = list_images(data)
        if len(paths) < 3:
            raise TinySRError(f"--data {data}: need at least 3 images (2 are held apart for testing)")
        train_paths, test_paths = paths[:-2], paths[-2:]
    else:
        folder = skimage_data_dir()
        if folder is None:
            raise TinySRError(
                "quickstart needs sample photographs: install the extra (pip install -c constraints.txt -e '.[quickstart]', "
                "scikit-image ships them) or pass --data DIR"
            )
        train_paths = [folder / n for n in SKIMAGE_TRAIN if (folder / n).is_file()]
        test_paths = [folder / n for n in SKIMAGE_TEST]
    for dest, paths in ((train_dir, train_paths if train else []), (test_dir, test_paths)):
        for p in paths:
            target = dest / f"{p.stem}.png"
            if not target.is_file():
                write_image(target, read_image(p))
    return train_dir, test_dir


def _comparison_sheet(outputs: dict[str, Path], test_set: BenchmarkSet, crop: int = 96, zoom: int = 3) -> np.ndarray:
    """One column per model (in order), then the ground truth: a centre crop of each held-apart
    image, enlarged by pixel repetition, under a band labelling the columns. ``outputs`` names
    each model's ``evaluate(..., save_dir=...)`` folder: the sheet shows the very images scored."""
    rows = []
    for sample in test_set:
        hr = sample.hr
        y, x = (hr.shape[0] - crop) // 2, (hr.shape[1] - crop) // 2
        tiles = [read_image(saved_output_path(folder, test_set, sample.name))[y : y + crop, x : x + crop] for folder in outputs.values()]
        tiles.append(hr[y : y + crop, x : x + crop])
        gap = np.full((crop, 4, 3), 255, np.uint8)
        rows.append(np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1))
    sheet = np.concatenate([np.concatenate([r, np.full((4, r.shape[1], 3), 255, np.uint8)], axis=0) for r in rows], axis=0)
    sheet = sheet.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return _with_labels(sheet, [*outputs, "ground truth"], column_width=(crop + 4) * zoom)


LABEL_BAND = 24  # pixels of white above the sheet for the column labels


def _with_labels(sheet: np.ndarray, labels: list[str], column_width: int) -> np.ndarray:
    """The sheet under a white band naming each column (Pillow's built-in font: no extra dependency)."""
    from PIL import Image, ImageDraw

    band = Image.new("RGB", (sheet.shape[1], LABEL_BAND), "white")
    draw = ImageDraw.Draw(band)
    for i, label in enumerate(labels):
        draw.text((i * column_width + 4, 6), label, fill=(0, 0, 0))
    return np.concatenate([np.asarray(band), sheet], axis=0)


def run_quickstart(
    out: str | Path = "quickstart",
    iterations: int = 3000,
    data: str | None = None,
    device: str | None = None,
    progress: bool = True,
    train: bool = False,
) -> dict:
    """The zoo's models against bicubic (or, with ``train``, a small model trained here); returns
    the scores and the paths written."""
    if train:
        return _train_and_compare(Path(out), iterations, data, device, progress)
    return _compare_zoo_models(Path(out), data)


# The families a quickstart shows, in the tables' order.
SHOWN_FAMILIES = [f for f in FAMILIES if f != REFERENCE]
TIMING_LR_SIZE = (180, 320)  # (H, W): the LR input of the CPU times, as the bench's
TIMING_REPEAT = 3
TIMING_SECONDS = 1.0  # a slower model is timed in fewer passes (at least one after the warm-up)


def showcase_models(scale: int = 2) -> list[dict]:
    """One zoo entry per family at ``scale``: the best Set5 PSNR among its deployable forms (an
    entry stored as trained counts only where its family has nothing else)."""
    chosen = []
    for family in SHOWN_FAMILIES:
        entries = [e for e in list_pretrained() if e["family"] == family and e["scale"] == scale]
        deployed = [e for e in entries if e["form"] != "trained"] or entries
        if deployed:
            chosen.append(max(deployed, key=lambda e: e["scores"]["Set5"]["psnr"]))
    return chosen


def _compare_zoo_models(out: Path, data: str | None) -> dict:
    scale = 2
    _, test_dir = _prepare_images(out, data, train=False)
    entries = showcase_models(scale)
    if not entries:
        raise TinySRError(f"the zoo has no x{scale} model to show; train one with tinysr quickstart --train")
    models = {"bicubic": create_model("bicubic", scale=scale)}
    models.update((entry["name"], load(PREFIX + entry["name"])) for entry in entries)
    family = {"bicubic": REFERENCE, **{e["name"]: e["family"] for e in entries}}
    form = {"bicubic": "-", **{e["name"]: e["form"] for e in entries}}
    test_set = BenchmarkSet(test_dir, scale, cache=LRCache())
    rows = []
    outputs = {name: out / "sr" / name for name in models}
    for name, model in models.items():
        score = evaluate(model, test_set, save_dir=outputs[name], progress=False)
        cost = profile(model, lr_size=TIMING_LR_SIZE)
        rows.append(
            {
                "method": name,
                "family": family[name],
                "form": form[name],
                "scale": scale,
                "photos_psnr": score.psnr,
                "photos_ssim": score.ssim,
                "params": cost.params,
                "ops_g": cost.ops / 1e9,
                "time_ms": cpu_time_ms(model, TIMING_LR_SIZE, TIMING_REPEAT, max_seconds=TIMING_SECONDS),
            }
        )
    sheet_path, figure_path = out / "comparison.png", out / "psnr_vs_ms.png"
    write_image(sheet_path, _comparison_sheet(outputs, test_set, zoom=2))
    plot_psnr_vs_latency(rows, "photos", figure_path, torch.get_num_threads())
    bicubic_psnr = rows[0]["photos_psnr"]
    h, w = TIMING_LR_SIZE
    print(f"held-apart photographs ({', '.join(p.stem for p in test_set.hr_paths)}), x{scale}, Y-channel PSNR / SSIM;")
    print(f"params, OPs and CPU ms ({torch.get_num_threads()} threads, this machine) at a {w}x{h} LR input:\n")
    print(f"  {'model':<18}{'family':<21}{'form':<9}{'PSNR':>8}{'SSIM':>8}{'gain':>8}{'params':>9}{'OPs (G)':>9}{'CPU ms':>9}")
    for r in rows:
        gain = "" if r["family"] == REFERENCE else f"{r['photos_psnr'] - bicubic_psnr:+.2f}"
        print(
            f"  {r['method']:<18}{r['family']:<21}{r['form']:<9}{r['photos_psnr']:8.2f}{r['photos_ssim']:8.4f}{gain:>8}"
            f"{r['params'] / 1e3:8.1f}K{r['ops_g']:9.2f}{r['time_ms']:9.1f}"
        )
    missing = [f for f in SHOWN_FAMILIES if f not in family.values()]
    if missing:
        print(f"\n(the zoo has no x{scale} {' or '.join(missing)} model yet)")
    print(f"\ncomparison sheet:  {sheet_path}   ({' | '.join([*models, 'ground truth'])})")
    print(f"SR outputs:        {out / 'sr'}/<model>/")
    print(f"PSNR vs CPU time:  {figure_path}")
    default = f" (its default x{scale} model, {PREFIX}{DEFAULT_UPSCALERS[scale]})" if scale in DEFAULT_UPSCALERS else ""
    print(f"try:               tinysr upscale -i {test_dir} -o {out / 'upscaled'}{default}")
    print("train your own:    tinysr quickstart --train")
    return {"rows": rows, "comparison": sheet_path, "figure": figure_path}


def _train_and_compare(out: Path, iterations: int, data: str | None, device: str | None, progress: bool) -> dict:
    """Train a small EDSR-baseline on the photographs, evaluate it against bicubic, write a
    comparison sheet."""
    scale = 2
    train_dir, test_dir = _prepare_images(out, data)
    config = parse_config(
        {
            "model": {"name": "edsr_baseline", "kwargs": {"channels": 32, "blocks": 4}},
            "scale": scale,
            "seed": 0,
            "data": {"train": [str(train_dir)], "val": str(test_dir), "patch_size": 32, "repeat": 50},
            "train": {
                "iterations": iterations,
                "batch_size": 16,
                "lr": 1e-3,
                "scheduler": {"name": "cosine", "min_lr": 1e-5, "warmup": 50},
                "val_every": max(iterations // 3, 1),
                "checkpoint_every": max(iterations // 10, 1),
                "log_every": 25,
            },
        },
        source="quickstart",
    )
    run_dir = out / "run"
    if (run_dir / "model.safetensors").is_file():
        print(f"reusing the trained model in {run_dir}")
    else:
        print(f"training a small EDSR-baseline (32 channels, 4 blocks) x{scale} for {iterations} iterations on {train_dir}")
    final = train_or_reuse(config, run_dir, device=device, progress=progress)
    model = load(final)
    bicubic = create_model("bicubic", scale=scale)
    test_set = BenchmarkSet(test_dir, scale, cache=LRCache())
    outputs = {"bicubic": out / "sr" / "bicubic", "model": out / "sr" / "model"}
    scores = {name: evaluate(m, test_set, save_dir=outputs[name], progress=False) for name, m in (("bicubic", bicubic), ("model", model))}
    sheet_path = out / "comparison.png"
    write_image(sheet_path, _comparison_sheet(outputs, test_set))
    print(f"\nheld-apart images ({', '.join(p.stem for p in test_set.hr_paths)}), x{scale}, Y-channel PSNR / SSIM:")
    for name, s in scores.items():
        print(f"  {name:<8} {s.psnr:7.3f} dB  {s.ssim:.4f}")
    print(f"  gain     {scores['model'].psnr - scores['bicubic'].psnr:+7.3f} dB")
    print(f"\nmodel file:        {final}")
    print(f"training log:      {run_dir / 'log.jsonl'}")
    print(f"comparison sheet:  {sheet_path}   (bicubic | model | ground truth)")
    print(f"try:               tinysr upscale -m {final} -i {test_dir} -o {out / 'upscaled'}")
    return {"scores": {k: v.as_dict() for k, v in scores.items()}, "model": final, "comparison": sheet_path}

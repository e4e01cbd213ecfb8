"""Publish a finished training run into the model zoo (``src/tinysr/zoo/NAME.safetensors``).

The run's final model is put in the form it ships in (``--form deploy``: merged or bit-packed as
``tinysr deploy`` would, as trained for a full-precision or pruned model, which has nothing to
merge or pack; ``--form train``: as trained), scored on the test sets under the
protocol (SPEC §1), and stored in float16 when that moves no set's PSNR by 0.005 dB or more
and changes no output by a level of an 8-bit image on a noise input (``--precision auto``), else in
float32. ``--precision int8`` (weights as int8 with a scale per output channel, ``tinysr.save``)
is for a model too large for the repository's file limit in float16: it is held to the PSNR bound
(it stores nothing past it) but not to the noise bound, which catches float16's cancelling folded
layers; int8 moves every weight by up to half a step, which a noise input amplifies past a level
where natural images barely move, so the record keeps that largest change (``noise_levels``).

The file's ``zoo`` metadata records the recipe (and, for a run trained with ``--set``, the
``overrides`` that turn the shipped recipe into the run's config: a run none reproduce is
refused), the iterations, data, seed, form, precision, the run's training minutes by its log
(wall time, over every process that trained it) and the scores of the stored file itself, and the
table row printed at the end is the one README's zoo table takes.

    python benchmarks/zoo_publish.py runs/zoo/ecbsr_m4c16_x2 ecbsr_m4c16_x2 --recipe ecbsr_m4c16_x2_cpu \
        --family re-parameterization
    python benchmarks/zoo_publish.py runs/zoo/ecbsr_m4c16_x2 ecbsr_m4c16_x2_train --recipe ecbsr_m4c16_x2_cpu \
        --family re-parameterization --form train
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch
import yaml

import tinysr
from tinysr.bench.suites import FAMILIES, REFERENCE
from tinysr.compress import deployable
from tinysr.compress.deploy import deploy_form
from tinysr.data import BenchmarkSet
from tinysr.evaluate import evaluate
from tinysr.profile import profile
from tinysr.train import load_config, logged_training_seconds
from tinysr.zoo import ZOO_DIR

REPO = Path(__file__).resolve().parents[1]
FORM_NAMES = {"merge": "merged", "pack": "packed", "none": "trained"}
TOLERANCE_DB = 0.005
TOLERANCE_LEVEL = 1 / 255  # one level of an 8-bit output, on an input no test set holds


def max_difference(a, b) -> float:
    """Largest output difference of two models on one uniform-noise input: a float16 file can keep
    the test sets' PSNR while its folded layers cancel large terms on other inputs."""
    image = torch.from_numpy(np.random.default_rng(0).random((1, 3, 24, 30), dtype=np.float32))
    with torch.no_grad():
        return (a.eval()(image) - b.eval()(image)).abs().max().item()


def recipe_overrides(recipe: str, run_config: dict) -> list[str]:
    """The ``--set KEY=VALUE`` assignments that make ``recipe`` the run's resolved config (none when
    the run is the recipe as shipped); a run no assignments reproduce is refused."""
    overrides: list[str] = []

    def walk(shipped: dict, ran: dict, prefix: str) -> None:
        for key in sorted(set(shipped) | set(ran)):
            a, b = shipped.get(key), ran.get(key)
            if isinstance(a, dict) and isinstance(b, dict):
                walk(a, b, f"{prefix}{key}.")
            elif a != b:
                bare = isinstance(b, str) and yaml.safe_load(b) == b  # a word YAML reads as itself
                overrides.append(f"{prefix}{key}={b if bare else json.dumps(b)}")  # JSON reads back as YAML

    walk(load_config(recipe).to_dict(), run_config, "")
    if load_config(recipe, overrides).to_dict() != run_config:
        raise SystemExit(f"the run's config.yaml is not {recipe} with --set overrides; publish it with the recipe it ran")
    return overrides


def scores_of(model, test_sets: list[Path], scale: int) -> dict:
    scores = {}
    for folder in test_sets:
        score = evaluate(model, BenchmarkSet(folder, scale), progress=False)
        scores[folder.name] = {"psnr": round(score.psnr, 4), "ssim": round(score.ssim, 5)}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished run folder (holds model.safetensors and config.yaml)")
    parser.add_argument("name", help="the zoo entry's name (zoo:NAME)")
    parser.add_argument("--recipe", required=True, help="the shipped recipe the run was trained with")
    parser.add_argument("--family", required=True, choices=[f for f in FAMILIES if f != REFERENCE], help="the compression family it shows")
    parser.add_argument("--paper", help="the key of the papers' numbers to set beside it (bench/paper.py; default: the model's name)")
    parser.add_argument("--form", choices=("deploy", "train"), default="deploy")
    parser.add_argument("--precision", choices=("auto", "float16", "float32", "int8"), default="auto", help="auto: float16, else float32")
    parser.add_argument("--test", nargs="+", type=Path, default=[REPO.parent / "shared" / "data" / s for s in ("Set5", "Set14")])
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    target = ZOO_DIR / f"{args.name}.safetensors"
    if target.exists() and not args.overwrite:
        raise SystemExit(f"{target} exists; pass --overwrite to replace it")
    trained = tinysr.load(args.run / "model.safetensors")
    config = yaml.safe_load((args.run / "config.yaml").read_text())
    form = deploy_form(trained, "auto") if args.form == "deploy" else "none"
    model = deployable(trained, form)
    scale = config["scale"]
    record = {
        "recipe": args.recipe,
        "family": args.family,
        "paper": args.paper or trained.tinysr_spec.name,
        "iterations": config["train"]["iterations"],
        "seed": config.get("seed"),
        "data": [Path(p).name for p in config["data"]["train"]],
        "form": "pruned" if trained.tinysr_spec.transformed_by("prune") else FORM_NAMES[form],
        "trained_on": date.fromtimestamp((args.run / "model.safetensors").stat().st_mtime).isoformat(),
    }
    overrides = recipe_overrides(args.recipe, config)
    if overrides:  # the run is the recipe with these --set assignments (say, train.amp=bf16)
        record["overrides"] = overrides
    seconds = logged_training_seconds(args.run)
    if seconds:
        record["training_minutes"] = round(seconds / 60)
    with tempfile.TemporaryDirectory() as tmp:
        candidates = ["float16", "float32"] if args.precision == "auto" else [args.precision]
        full = scores_of(model, args.test, scale)
        for precision in candidates:
            path = Path(tmp) / f"{precision}.safetensors"
            tinysr.save(model, path, precision=precision)
            reloaded = tinysr.load(path)
            stored = scores_of(reloaded, args.test, scale)
            if precision == "float32":
                break
            moved = max(abs(stored[k]["psnr"] - full[k]["psnr"]) for k in full)
            strayed = max_difference(model, reloaded)
            if moved < TOLERANCE_DB and (precision == "int8" or strayed < TOLERANCE_LEVEL):
                record["noise_levels"] = round(strayed * 255, 2)
                break
            moves = f"{precision} moves PSNR by {moved:.4f} dB and an output on noise by up to {strayed * 255:.2f} levels"
            if args.precision != "auto":
                raise SystemExit(f"{moves}: nothing stored (--precision auto falls back to float32)")
            print(f"{moves}: stored as float32")
        record.update(precision=precision, scores=stored)
        tinysr.save(model, target, extra={"zoo": json.dumps(record, sort_keys=True)}, precision=precision)
    cost = profile(tinysr.load(target), (180, 320))
    row = " | ".join(f"{stored[k]['psnr']:.2f} / {stored[k]['ssim']:.4f}" for k in stored)
    wall = f"{record['training_minutes']} min" if seconds else "-"
    print(f"{target} ({target.stat().st_size / 1e3:.1f} kB, {precision})")
    print(
        f"| zoo:{args.name} | x{scale} | {record['form']} | {cost.params / 1e3:.1f}K | {cost.ops / 1e9:.2f} | {row} | "
        f"{record['iterations']:,} | {' '.join([args.recipe, *(f'--set {o}' for o in overrides)])} | {wall} |"
    )


if __name__ == "__main__":
    main()

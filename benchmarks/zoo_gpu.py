"""Train the zoo's paper recipes side by side on one GPU within a wall-clock budget (the model zoo,
``tinysr/zoo.py``; data as SPEC §2, scores under SPEC §1's protocol), for the few minutes of a lent
accelerator; prepared and tested on a CPU first.

Stages, each writing into ``--out``:

1. **smoke** (``smoke.json``, about a minute): a small EDSR-baseline trained 20 iterations on
   ``--device`` with autocast off, bf16 and fp16 (the CUDA paths no test runs: the engine's
   autocast and gradient scaler), and a packed 1-bit network run there against its CPU output
   (off the CPU a packed conv runs PyTorch's ops on the +-1 weights).
2. **calibrate**: every recipe at once for ``--calibrate-iterations``, under the same
   concurrency as the real runs; the speed of each is read from its last two log lines (so the
   warm-up is not counted).
3. **train**: every recipe at once again, each for as many iterations as its measured speed fits
   in ``--minutes`` (times ``--safety``), its LR milestones scaled to that length, one validation
   at the end. The recipes' own batch, patch, LR and ``init_from`` are kept; the data are
   ``--data``'s T91 + BSD200 (validation Set5).
4. **score** (``results.json``, ``results.md``): Set5 and Set14 PSNR / SSIM of each final model
   (the protocol of ``tinysr test``); the models go into ``models.tar`` (run folder names).

Back on the CPU machine, a model that beats its zoo entry is published with
``benchmarks/zoo_publish.py`` (which re-scores it there).

The data travel with the checkout (64 MiB in all): ``--prepare-data`` writes T91, BSD200 and the HR
images of Set5 and Set14 as lossless WebP (the same pixels in about two thirds of the bytes) into
``--out``; make that the checkout's ignored ``.data`` and carry it:

    echo /.data/ >> .git/info/exclude
    python benchmarks/zoo_gpu.py --prepare-data ../shared/data --out .data

On the accelerator (Python from the image),
inside one 10-minute command: smoke ~1 min, calibration <= 2.5 min, training 5 min (+ 1 min grace),
scoring well under a minute:

    PYTHONPATH=src python3 benchmarks/zoo_gpu.py --data .data --out $OUT --minutes 5

On a CPU, at a tiny budget, to test the script:

    python benchmarks/zoo_gpu.py --data ../shared/data --out /tmp/zoo_gpu --device cpu --minutes 0.5 \\
        --recipes edsr_baseline_x2 ecbsr_m4c16_x2 --calibrate-iterations 6 --set data.patch_size=16 train.batch_size=4 data.workers=0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch
from PIL import Image

import tinysr
from tinysr.compress import pack, set_kernel
from tinysr.data import BenchmarkSet, LRCache
from tinysr.evaluate import evaluate
from tinysr.io import list_images, read_image
from tinysr.train import load_config, read_log

# The zoo's entries (README), by their paper recipes; x4 ones start from the zoo's x2 where the recipe says so.
RECIPES = [
    "edsr_baseline_x2",
    "edsr_baseline_x4",
    "ecbsr_m4c16_x2",
    "ecbsr_m4c16_x4",
    "repsr_m4c16_x2",
    "repsr_m4c16_x4",
    "edsr_btm_x2",
    "edsr_btm_x4",
    "fabnet_b4c24_x2",
    "fabnet_b4c24_x4",
    "bsrn_x2",
]
LOG_LINES = 20  # log lines per run: enough for the calibration's two-line rate


def prepare_data(source: Path, out: Path) -> None:
    """T91, BSD200 and Set5 / Set14's HR images from ``source`` as lossless WebP under ``out``."""
    for name in ("T91", "BSD200", "Set5", "Set14"):
        folder = source / name / "HR" if (source / name / "HR").is_dir() else source / name
        (out / name).mkdir(parents=True, exist_ok=True)
        for path in list_images(folder):
            Image.fromarray(read_image(path)).save(out / name / f"{path.stem}.webp", lossless=True, quality=100, method=4)


def smoke(device: str, data: Path, out: Path, extra: list[str]) -> dict:
    """Autocast off / bf16 / fp16 training steps and a packed model on ``device``."""
    report = {}
    for amp in ("none", "bf16", "fp16"):
        run = out / "smoke" / amp
        sets = [f"train.amp={'null' if amp == 'none' else amp}", "train.iterations=20", "model.kwargs={channels: 16, blocks: 2}"]
        start = time.perf_counter()
        rc = train(("edsr_baseline_x2", run), device, data, sets + ["train.log_every=10", *extra], wait=True)
        lines = step_lines(run)
        report[f"train_amp_{amp}"] = {
            "rc": rc,
            "seconds": round(time.perf_counter() - start, 1),
            "last_loss": lines[-1].get("loss") if lines else None,
        }
    model = tinysr.create_model("edsr_btm", scale=2, channels=16, blocks=2).eval()
    packed = set_kernel(pack(model), "torch")
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        on_cpu = packed(x)
        try:
            there = packed.to(device)(x.to(device)).cpu()
            report["packed"] = {"max_abs_diff_vs_cpu": float((there - on_cpu).abs().max())}
        except Exception as exc:  # what a packed model does off the CPU is the finding
            report["packed"] = {"error": f"{type(exc).__name__}: {exc}"}
    return report


def step_lines(run: Path) -> list[dict]:
    """The log's training-step lines (those with a rate)."""
    return [row for row in read_log(run) if "it_s" in row]


def train(job: tuple[str, Path], device: str, data: Path, sets: list[str], wait: bool = False):
    """``tinysr train`` of one recipe in a process of its own (returns the process, or its exit code)."""
    recipe, run = job
    overrides = [f"data.train=[{data / 'T91'}, {data / 'BSD200'}]", f"data.val={data / 'Set5'}", *sets]
    command = [sys.executable, "-m", "tinysr", "train", "-c", recipe, "-o", str(run), "--device", device, "-q"]
    for item in overrides:
        command += ["--set", item]
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(run.parent / f"{run.name}.out", "w") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    return process.wait() if wait else process


def run_all(jobs: dict[str, Path], device: str, data: Path, sets_of: dict[str, list[str]], deadline: float) -> dict[str, dict]:
    """Every job at once; any still running at ``deadline`` (seconds from now) is stopped. Returns
    each one's exit code and wall seconds."""
    start = time.monotonic()
    processes = {name: train((name, run), device, data, sets_of[name]) for name, run in jobs.items()}
    ended: dict[str, float] = {}
    while len(ended) < len(processes) and time.monotonic() < start + deadline:
        for name, p in processes.items():
            if name not in ended and p.poll() is not None:
                ended[name] = time.monotonic() - start
        time.sleep(1)
    for p in processes.values():
        if p.poll() is None:
            p.terminate()
    return {name: {"rc": p.wait(), "seconds": round(ended.get(name, time.monotonic() - start), 1)} for name, p in processes.items()}


def measured_speed(run: Path, wall: float) -> tuple[float, float] | None:
    """Iterations per second between the last two log lines (the warm-up left out), and the
    seconds of the process's ``wall`` that were not iterations (start-up, data, the model's save)."""
    lines = step_lines(run)
    if len(lines) < 2:
        return None
    a, b = lines[-2], lines[-1]
    speed = (b["iter"] - a["iter"]) / max(b["time"] - a["time"], 1e-9)
    return speed, max(0.0, wall - b["iter"] / speed)


def scaled_schedule(recipe: str, iterations: int) -> list[str]:
    """Overrides that give ``recipe`` ``iterations`` with its milestones and warm-up scaled alike."""
    config = load_config(recipe)
    factor = iterations / config.train.iterations
    sched = config.train.scheduler
    sets = [f"train.iterations={iterations}", f"train.val_every={iterations}", f"train.checkpoint_every={max(1, iterations // 4)}"]
    sets.append(f"train.log_every={max(1, iterations // LOG_LINES)}")
    sets.append(f"train.scheduler.milestones=[{', '.join(str(max(1, round(m * factor))) for m in sched.milestones)}]")
    sets.append(f"train.scheduler.warmup={round(sched.warmup * factor)}")
    return sets


def score(jobs: dict[str, Path], data: Path, device: str) -> list[dict]:
    rows, cache = [], LRCache()
    for name, run in jobs.items():
        path = run / "model.safetensors"
        if not path.is_file():
            rows.append({"recipe": name, "error": "no model (the run did not finish)"})
            continue
        model = tinysr.load(path, device=device)
        row = {"recipe": name, "scale": model.tinysr_spec.scale}
        for test in ("Set5", "Set14"):
            result = evaluate(model, BenchmarkSet(data / test, row["scale"], cache=cache), progress=False)
            row[test] = {"psnr": round(result.psnr, 3), "ssim": round(result.ssim, 4)}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a folder with T91, BSD200, Set5 and Set14")
    parser.add_argument("--prepare-data", type=Path, metavar="SOURCE", help="only write SOURCE's sets as lossless WebP into --out")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall time of the training stage")
    parser.add_argument("--grace-seconds", type=float, default=60, help="how long past --minutes a run may take before it is stopped")
    parser.add_argument("--safety", type=float, default=0.85, help="the share of --minutes the planned iterations fill")
    parser.add_argument("--recipes", nargs="+", default=RECIPES)
    parser.add_argument("--calibrate-iterations", type=int, default=100)
    parser.add_argument("--calibrate-seconds", type=float, default=150, help="when the calibration stops, finished or not")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides for every run (e.g. data.workers=2)")
    parser.add_argument("--skip-smoke", action="store_true")
    args = parser.parse_args()
    if args.prepare_data:
        prepare_data(args.prepare_data, args.out)
        return
    if args.data is None:
        parser.error("--data is required (or --prepare-data)")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device, "torch": torch.__version__}
    if not args.skip_smoke:
        report["smoke"] = smoke(args.device, args.data, args.out, args.set)
        (args.out / "smoke.json").write_text(json.dumps(report, indent=2))

    probe = {name: args.out / "calibrate" / name for name in args.recipes}
    every = max(1, args.calibrate_iterations // 3)
    probe_sets = [f"train.iterations={args.calibrate_iterations}", f"train.log_every={every}", "train.val_every=1000000000", *args.set]
    start = time.monotonic()
    report["calibrate"] = run_all(probe, args.device, args.data, dict.fromkeys(probe, probe_sets), deadline=args.calibrate_seconds)
    measured = {name: measured_speed(run, report["calibrate"][name]["seconds"]) for name, run in probe.items()}
    report["calibrate_seconds"] = round(time.monotonic() - start, 1)
    report["it_s_and_overhead_s"] = measured

    jobs = {name: args.out / "runs" / name for name in args.recipes if measured[name]}
    # the iterations that fill the budget once the process's own overhead is paid
    plan = {name: max(1, int(measured[name][0] * (args.minutes * 60 * args.safety - measured[name][1]))) for name in jobs}
    report["iterations"] = plan
    start = time.monotonic()
    sets_of = {name: scaled_schedule(name, plan[name]) + args.set for name in jobs}
    report["train"] = run_all(jobs, args.device, args.data, sets_of, deadline=args.minutes * 60 + args.grace_seconds)
    report["train_seconds"] = round(time.monotonic() - start, 1)

    report["results"] = score(jobs, args.data, args.device)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    lines = ["| recipe | iterations | Set5 PSNR / SSIM | Set14 PSNR / SSIM |", "|---|---:|---:|---:|"]
    for row in report["results"]:
        if "error" in row:
            lines.append(f"| {row['recipe']} | {plan.get(row['recipe'], '-')} | {row['error']} | |")
            continue
        cells = " | ".join(f"{row[t]['psnr']:.3f} / {row[t]['ssim']:.4f}" for t in ("Set5", "Set14"))
        lines.append(f"| {row['recipe']} | {plan[row['recipe']]} | {cells} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    with tarfile.open(args.out / "models.tar", "w") as tar:
        for name, run in jobs.items():
            if (run / "model.safetensors").is_file():
                tar.add(run / "model.safetensors", arcname=f"{name}.safetensors")


if __name__ == "__main__":
    main()

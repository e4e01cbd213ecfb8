"""ASSL vs L1-norm pruning vs training the small network from scratch (SPEC §6).

For each ratio and method, ``tinysr prune`` (``run_pruning``) from one trained model with one
fine-tuning recipe (equal fine-tuning budget), then Set5/Set14 PSNR/SSIM, params and Mult-Adds
(1280x720 output, the pruning papers' convention) and CPU inference time of the pruned model vs
the unpruned one at a 320x180 LR input, timed alternately in one run (best of --repeat), so
the measured speed-up sits next to the Mult-Adds reduction it should track.

``--budget total`` (the default) gives every method the same total number of training
iterations: ASSL spends part of it on its regularisation phase, so the L1-norm and scratch
baselines fine-tune for those iterations more (the official "scratch (same epochs)" reading).
``--budget finetune`` gives every method the same fine-tuning only, ASSL's regularisation on top.

A column gives the first test set's PSNR of the network each method cut (ASSL's regularised
network, the source for the L1 baselines) and of the cut network before its fine-tuning: what the
surgery itself cost, so a regularisation that did not finish shows.

``--amp bf16`` trains every arm under bf16 autocast (``train.amp``), the same for all of them.

``--seeds`` runs every method once per seed (the fine-tuning's data order and, for ASSL and
scratch, what they start from; the L1 plans do not depend on it) and adds a mean row per method.

Runs live in ``--runs`` (``<method>_<ratio>``, ``_total`` added to the baselines' folders at
``--budget total``, ``_seed<N>`` for a seed other than the recipe's): an interrupted ablation
resumes, and invocations for different methods or seeds can run side by side (one per core);
a last one with all of them then only reads the finished runs and prints the whole table.

    python benchmarks/prune_ablation.py --from zoo:edsr_baseline_x2 \\
        --config edsr_baseline_x2_assl_cpu --ratios 0.5 0.9 --prune-lr 5e-4 [--budget total] [--seeds 0 1]

(``edsr_baseline_x2_assl_cpu``: ASSL at the paper's strength; ``edsr_baseline_x2_prune_cpu`` is the
older unscaled recipe BENCHMARKS.md's first pruning table used.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import tinysr
from seed_means import mean_row, score_keys
from tinysr.data import BenchmarkSet, LRCache
from tinysr.evaluate import evaluate
from tinysr.train import load_config
from tinysr.workflows.pruning import METHODS, pruning_training_seconds, regularization_iterations, run_pruning, surgery_files


def best_time(model, x, repeat: int) -> float:
    with torch.no_grad():
        model(x)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t0)
    return best


def paired_times(a, b, x, repeat: int) -> tuple[float, float]:
    """Best time of each, measured alternately (so both see the same machine state)."""
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(best_time(a, x, 1))
        tb.append(best_time(b, x, 1))
    return min(ta), min(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, help="the trained model (a file or zoo:NAME)")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--prune-lr", type=float, default=2e-4)
    parser.add_argument("--budget", choices=("total", "finetune"), default="total", help="what every method gets equally (see above)")
    parser.add_argument("--runs", type=Path, default=Path("runs/prune"))
    parser.add_argument("--test", nargs="+", default=["../shared/data/Set5", "../shared/data/Set14"])
    parser.add_argument("--seeds", type=int, nargs="+", help="one run per seed (default: the recipe's seed)")
    parser.add_argument(
        "--channel-multiple", type=int, help="round every kept width to a multiple of this (tinysr prune --channel-multiple)"
    )
    parser.add_argument("--amp", choices=("bf16",), help="train every arm with this autocast (train.amp; float32 where the CPU lacks it)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = load_config(args.config)
    if args.amp:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, amp=args.amp))
    cache = LRCache()
    sets = [Path(d).name for d in args.test]
    x = torch.rand(1, 3, 180, 320)
    source = tinysr.load(args.source)
    seeds = args.seeds or [config.seed]

    def row(method: str, ratio: float | None, model) -> dict:
        cost = tinysr.profile(model, (360, 640))
        out = {"method": method, "ratio": ratio, "params": cost.params, "mult_adds": cost.flops}
        for d in args.test:
            score = evaluate(model, BenchmarkSet(d, config.scale, cache=cache), progress=False)
            out[f"{Path(d).name}_psnr"], out[f"{Path(d).name}_ssim"] = score.psnr, score.ssim
        t_full, t_model = paired_times(source, model, x, args.repeat)
        out["ms"], out["speedup"] = t_model * 1e3, t_full / t_model
        out["flops_ratio"] = tinysr.profile(source, (360, 640)).flops / cost.flops
        return out

    first_set_psnr: dict[Path, float] = {}  # by file: every L1 arm cuts the same source

    def at_surgery(folder: Path, method: str) -> dict:
        """The first test set's PSNR of the model phase 1 cut and of what it cut it into."""
        files = surgery_files(folder, method, args.source)
        if files is None:
            return {}
        for f in files:
            if f not in first_set_psnr:
                first_set_psnr[f] = evaluate(tinysr.load(f), BenchmarkSet(args.test[0], config.scale, cache=cache), progress=False).psnr
        return {"psnr_before_cut": first_set_psnr[files[0]], "psnr_after_cut": first_set_psnr[files[1]]}

    rows = [row("unpruned", None, source)]
    for ratio in args.ratios:
        extra = regularization_iterations(config, ratio) if args.budget == "total" else 0
        for method in args.methods:
            for seed in seeds:
                recipe, folder = dataclasses.replace(config, seed=seed), f"{method}_{ratio}"
                if method != "assl" and extra:  # the baselines fine-tune for ASSL's regularisation too
                    recipe = dataclasses.replace(
                        recipe, train=dataclasses.replace(config.train, iterations=config.train.iterations + extra)
                    )
                    folder += "_total"
                if seed != config.seed:
                    folder += f"_seed{seed}"
                final = run_pruning(
                    recipe,
                    args.runs / folder,
                    args.source,
                    ratio,
                    method,
                    args.prune_lr,
                    progress=False,
                    channel_multiple=args.channel_multiple,
                )
                iterations = recipe.train.iterations + (extra if method == "assl" else 0)
                seconds = pruning_training_seconds(args.runs / folder)
                trained = {"train_iterations": iterations, "seed": seed, "train_min": seconds / 60 if seconds else None}
                rows.append(row(method, ratio, tinysr.load(final)) | trained | at_surgery(args.runs / folder, method))
            if len(seeds) > 1:
                keys = score_keys(sets) + ["ms", "speedup", "train_min", "psnr_before_cut", "psnr_after_cut"]
                rows.append(mean_row(rows[-len(seeds) :], keys, seed=f"mean of {len(seeds)}"))
    print(
        f"x{config.scale}; budget: {args.budget} (iterations per method in the table); fine-tuning recipe {args.config}; "
        f"Mult-Adds at 1280x720 output; CPU time at 320x180 input, {torch.get_num_threads()} threads"
    )
    print(
        "| ratio | method | seed | iterations | train min | params | Mult-Adds (G) | "
        + f"{sets[0]} PSNR cut from / cut (before fine-tuning) | "
        + " | ".join(f"{s} PSNR / SSIM" for s in sets)
        + " | CPU ms | speed-up | Mult-Adds reduction |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(sets) + "---:|---:|---:|")
    for r in rows:
        cells = " | ".join(f"{r[f'{s}_psnr']:.3f} / {r[f'{s}_ssim']:.4f}" for s in sets)
        minutes = f"{r['train_min']:.0f}" if r.get("train_min") else "-"
        cut = f"{r['psnr_before_cut']:.2f} / {r['psnr_after_cut']:.2f}" if r.get("psnr_after_cut") else "-"
        print(
            f"| {r['ratio'] if r['ratio'] is not None else '-'} | {r['method']} | {r.get('seed', '-')} | {r.get('train_iterations', '-')} | "
            f"{minutes} | {r['params'] / 1e3:.1f}K | {r['mult_adds'] / 1e9:.1f} | {cut} | "
            f"{cells} | {r['ms']:.0f} | {r['speedup']:.2f}x | {r['flops_ratio']:.2f}x |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

"""Equal-budget ablation: train several recipes for the same number of iterations, then evaluate
each on the test sets under the protocol and profile it, and print one Markdown table with a
bicubic row for reference.

Runs are kept in ``--runs`` (one folder per recipe, named after the recipe file, ``_seed<N>``
added for a seed other than the recipe's), so an interrupted ablation resumes where it stopped and
finished runs are reused. Recipes are trained in the order given (a distillation teacher before its
student). ``--seeds`` trains every recipe once per seed and adds a mean row per recipe; ``--amp
bf16`` trains every arm under bf16 autocast (``train.amp``), the same for all of them.

    python benchmarks/ablation.py --iterations 1000 --runs runs \\
        edsr_bnn_x2_cpu edsr_bireal_x2_cpu edsr_btm_x2_cpu
    python benchmarks/ablation.py --iterations 3000 --seeds 0 1 --amp bf16 --runs runs/bbcu_cmp \\
        bbcu_l_x2_cpu edsr_reactnet_x2_cpu edsr_btm_x2_cpu edsr_e2fif_x2_cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import tinysr
from seed_means import mean_row, score_keys
from tinysr.compress import reparameterize
from tinysr.data import BenchmarkSet, LRCache
from tinysr.evaluate import evaluate
from tinysr.train import load_config, logged_training_seconds, train_or_reuse


def run_recipe(
    recipe: Path, runs: Path, iterations: int | None, seed: int | None = None, amp: str | None = None
) -> tuple[Path, float | None]:
    """Train (or reuse / resume) one recipe, at ``seed`` if given; returns its model file and the
    seconds it trained by its log (over every process that trained it, so a resumed run counts whole)."""
    overrides = [f"train.iterations={iterations}"] if iterations else []
    overrides += [f"train.amp={amp}"] if amp else []
    own_seed = load_config(recipe).seed
    run_dir = runs / (recipe.stem if seed is None or seed == own_seed else f"{recipe.stem}_seed{seed}")
    config = load_config(recipe, overrides + ([f"seed={seed}"] if seed is not None else []))
    final = train_or_reuse(config, run_dir, progress=False)  # a finished run is reused only if it is this recipe's
    return final, logged_training_seconds(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", type=Path)
    parser.add_argument("--iterations", type=int, help="override train.iterations (the shared budget)")
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--test", nargs="+", default=["../shared/data/Set5", "../shared/data/Set14"])
    parser.add_argument("--lr-size", default="320x180", help="input size for OPs (binary SR tables: 320x180)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--merge", action="store_true", help="re-parameterize each trained model (SPEC §7) and test the merged form")
    parser.add_argument("--seeds", type=int, nargs="+", help="one run per seed and a mean row per recipe (default: the recipe's seed)")
    parser.add_argument("--amp", choices=("bf16",), help="train every arm with this autocast (train.amp; float32 where the CPU lacks it)")
    args = parser.parse_args()
    w, h = (int(v) for v in args.lr_size.split("x"))
    cache = LRCache()

    def row(method: str, model, wall: float | None) -> dict:
        cost = tinysr.profile(model, lr_size=(h, w))
        out = {"method": method, "params": cost.params, "ops": cost.ops, "wall_min": wall / 60 if wall else None}
        for d in args.test:
            score = evaluate(model, BenchmarkSet(d, model.tinysr_spec.scale, cache=cache), progress=False)
            out[f"{Path(d).name}_psnr"], out[f"{Path(d).name}_ssim"] = score.psnr, score.ssim
        return out

    sets = [Path(d).name for d in args.test]
    rows = []
    for recipe in args.recipes:
        for seed in args.seeds or [None]:
            final, wall = run_recipe(recipe, args.runs, args.iterations, seed, args.amp)
            model = tinysr.load(final)
            if args.merge:
                model = reparameterize(model)
            rows.append(row(recipe.stem if seed is None else f"{recipe.stem}, seed {seed}", model, wall))
        if args.seeds and len(args.seeds) > 1:
            runs = rows[-len(args.seeds) :]
            rows.append(mean_row(runs, score_keys(sets) + ["wall_min"], method=f"{recipe.stem}, mean of {len(runs)} seeds"))
    scale = model.tinysr_spec.scale
    rows.insert(0, row("bicubic", tinysr.create_model("bicubic", scale=scale), None))
    amp = f"; trained under {args.amp} autocast" if args.amp else ""
    print(f"x{scale}, {args.iterations or 'recipe'} iterations each{amp}; OPs at {args.lr_size} LR input")
    print("| method | params | OPs (G) | " + " | ".join(f"{s} PSNR / SSIM" for s in sets) + " | train time (min) |")
    print("|---|---:|---:|" + "---:|" * len(sets) + "---:|")
    for r in rows:
        cells = " | ".join(f"{r[f'{s}_psnr']:.3f} / {r[f'{s}_ssim']:.4f}" for s in sets)
        wall = f"{r['wall_min']:.1f}" if r["wall_min"] else "-"
        print(f"| {r['method']} | {r['params'] / 1e3:.1f}K | {r['ops'] / 1e9:.2f} | {cells} | {wall} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

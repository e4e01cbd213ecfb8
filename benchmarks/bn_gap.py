"""BN's train/test gap in a trained model (SPEC §7: what RepSR's frozen BN removes).

A network with BN computes one function while it trains (each batch normalised by its own
statistics) and another at inference (the population statistics the BN layers kept). Frozen BN
trains the last part of the schedule with the population statistics, so the two coincide; it can
only help where they differ. This script measures by how much, on the recipe's own training
batches: the L1 loss and PSNR of the model normalising each batch by its statistics (as in
training; the stored statistics are not updated) against the same model with its population
statistics (as deployed), over ``--batches`` batches drawn as the recipe draws them.

    python benchmarks/bn_gap.py runs/repsr_m4c16_step_nofreeze_x2_cpu/model.safetensors \\
        --recipe repsr_m4c16_step_nofreeze_x2_cpu [--batches 200]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch import nn

import tinysr
from tinysr.data import LRCache, TrainPatches
from tinysr.train import load_config


def batch_statistics(model: nn.Module) -> None:
    """Every BN layer normalises by the batch's statistics and leaves its stored ones unchanged."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
            if hasattr(m, "freeze_stats"):
                m.freeze_stats = False


def psnr(l2: float) -> float:
    return 10 * math.log10(1.0 / l2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--recipe", required=True, help="the recipe the model was trained with (its data and batch size)")
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    config = load_config(args.recipe)
    data = TrainPatches(config.data.train, config.scale, config.data.patch_size, config.data.repeat, config.seed, LRCache())
    population = tinysr.load(args.model).eval()
    batch = tinysr.load(args.model).eval()
    batch_statistics(batch)
    size = config.train.batch_size
    sums = {"population": [0.0, 0.0], "batch": [0.0, 0.0]}  # L1, L2
    with torch.no_grad():
        for b in range(args.batches):
            lr, hr = (torch.stack(t) for t in zip(*(data[b * size + i] for i in range(size))))
            for name, model in (("population", population), ("batch", batch)):
                sr = model(lr).clamp(0, 1)
                sums[name][0] += (sr - hr).abs().mean().item() / args.batches
                sums[name][1] += (sr - hr).pow(2).mean().item() / args.batches
    print(f"{args.model}: {args.batches} training batches of {size} ({config.data.patch_size}px LR patches, x{config.scale})\n")
    print("| BN statistics | L1 (x255) | PSNR on the batches (dB) |")
    print("|---|---:|---:|")
    for name, label in (("batch", "each batch's own (as in training)"), ("population", "the stored population (as deployed)")):
        print(f"| {label} | {sums[name][0] * 255:.3f} | {psnr(sums[name][1]):.3f} |")
    print(f"\ngap (deployed - training form): {psnr(sums['population'][1]) - psnr(sums['batch'][1]):+.3f} dB")


if __name__ == "__main__":
    main()

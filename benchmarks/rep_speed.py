"""Inference time of re-parameterizable networks in training form vs merged (SPEC §7).

For each network: the training form (eval mode) and its `reparameterize`d plain BaseNet on one
320x180 LR image, timed alternately in the same run (median of --repeat), with params and FLOPs.

    python benchmarks/rep_speed.py [--repeat 7 --threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import tinysr
from tinysr.compress import reparameterize


def timed(model, x) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, 180, 320)
    print(f"torch {torch.__version__}, {args.threads} threads, x{args.scale}, 320x180 LR input, median of {args.repeat}")
    print("| network | form | params | FLOPs (G) | time (ms) | merged speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    for name in ("repsr_m4c16", "repsr_m4c32", "ecbsr_m4c16", "ecbsr_m4c32", "repvgg_sr"):
        model = tinysr.create_model(name, scale=args.scale).eval()
        merged = reparameterize(model)
        timed(model, x), timed(merged, x)  # warm-up
        t_train, t_merged = [], []
        for _ in range(args.repeat):
            t_train.append(timed(model, x))
            t_merged.append(timed(merged, x))
        a, b = statistics.median(t_train), statistics.median(t_merged)
        pa, pb = tinysr.profile(model, (180, 320)), tinysr.profile(merged, (180, 320))
        print(f"| {name} | training | {pa.params / 1e3:.1f}K | {pa.flops / 1e9:.2f} | {a * 1e3:.1f} | |")
        print(f"| {name} | merged | {pb.params / 1e3:.1f}K | {pb.flops / 1e9:.2f} | {b * 1e3:.1f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()

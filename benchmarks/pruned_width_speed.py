"""Pruned widths the CPU runs well: CPU time of L1-pruned networks with and without
``--channel-multiple``, side by side.

For each network and ratio, the network is pruned by the L1 plan (weights do not change the
time, so untrained ones serve) once as the ratio says and once with every kept width rounded to
the nearest multiple of N (``compress.prune.kept_count``); the two are timed alternately at a
320x180 LR input (median of --repeat passes each, ``bench.runner.cpu_time_ms``), and the table
gives the kept width, Mult-Adds at a 1280x720 output, the time, the time per Mult-Add and the
rounded network's speed-up over the ratio's.

    python benchmarks/pruned_width_speed.py                 # EDSR-baseline x2 and ASSLN's LEDSR x2, N = 16
    python benchmarks/pruned_width_speed.py --multiple 8
"""

from __future__ import annotations

import argparse
import statistics

import torch

import tinysr
from tinysr.bench.runner import cpu_time_ms
from tinysr.compress import l1_plan, prune
from tinysr.runtime import retain_freed_memory

LR_SIZE = (180, 320)
CASES = (("edsr_baseline", (0.5, 0.6, 0.7, 0.9)), ("ledsr", (207 / 256,)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--multiple", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    retain_freed_memory()  # as tinysr's inference commands run
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads, PyTorch CPU capability {torch.backends.cpu.get_cpu_capability()}; 320x180 LR input, x2")
    print(
        "| network | ratio | channel multiple | kept width | Mult-Adds (G) | CPU ms | ms per G Mult-Adds | speed-up over the ratio's width |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, ratios in CASES:
        source = tinysr.create_model(name, scale=2).eval()
        for ratio in ratios:
            arms = {m: prune(source, l1_plan(source, ratio, multiple=m)).eval() for m in (1, args.multiple)}
            times = {m: [] for m in arms}
            for _ in range(args.repeat):  # one pass of each in turn (after its own warm-up pass)
                for m, model in arms.items():
                    times[m].append(cpu_time_ms(model, LR_SIZE, 1))
            base = statistics.median(times[1])
            for m, model in arms.items():
                ms = statistics.median(times[m])
                width = model.head.out_channels
                mult_adds = tinysr.profile(model, (360, 640)).flops / 1e9
                print(f"| {name} | {ratio:.4g} | {m} | {width} | {mult_adds:.1f} | {ms:.1f} | {ms / mult_adds:.2f} | {base / ms:.2f}x |")


if __name__ == "__main__":
    main()

"""Bit-packed EDSR-style 1-bit networks side by side: does the binarization scheme change the speed?

``tinysr bench --suite cpu`` timed each packed network on its own (median of 5, one model after
the other) and found 152 ms for ``edsr_reactnet_inbranch`` against 201-258 ms for networks with
the same binary convs (BENCHMARKS.md, issue 10). This script times them round-robin in one
process, so drifts in the machine's state hit every model alike: best and median of ``--repeat``
forward passes on a 320x180 LR input, after a warm-up.

Models are registered names built untrained with seed 0, ``name:key=value,...`` for options, or
model files (``binary_diagnostics.build``), so trained and untrained weights can be compared.

    python benchmarks/packed_variants.py --threads 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from binary_diagnostics import build

from tinysr.compress import pack

DEFAULT_MODELS = [
    "edsr_bnn",
    "edsr_bireal",
    "edsr_btm",
    "edsr_reactnet",
    "edsr_reactnet:rprelu_position=in_branch",
    "edsr_reactnet:bn=true",
    "edsr_ibtm",
]


def round_robin_times(models: dict[str, torch.nn.Module], x: torch.Tensor, repeat: int) -> dict[str, list[float]]:
    """Wall times (ms) of one forward pass per model, the models alternated in every round."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m(x)  # warm-up (and the kernel build on first use)
        for _ in range(repeat):
            for k, m in models.items():
                start = time.perf_counter()
                m(x)
                times[k].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--lr-size", default="320x180", help="WxH of the LR input")
    args = parser.parse_args()
    w, h = (int(v) for v in args.lr_size.split("x"))
    x = torch.rand(1, 3, h, w)
    models = {spec: pack(build(spec)) for spec in args.models}
    print(f"torch {torch.__version__}; {args.lr_size} LR input; ms per forward pass of the packed model\n")
    print("| threads | model | best | median |\n|---:|---|---:|---:|")
    for n in args.threads:
        torch.set_num_threads(n)
        for spec, t in round_robin_times(models, x, args.repeat).items():
            print(f"| {n} | {spec} | {min(t):.1f} | {statistics.median(t):.1f} |")


if __name__ == "__main__":
    main()

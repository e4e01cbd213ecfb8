"""Bit-packed EDSR-style 1-bit networks side by side: does the binarization scheme change the speed?

``tinysr bench --suite cpu`` timed each packed network on its own (median of 5, one model after
the other) and found 152 ms for ``edsr_reactnet_inbranch`` against 201-258 ms for networks with
the same binary convs (BENCHMARKS.md). This script times them round-robin within a
process (``binary_conv.best_times``), so drifts in the machine's state hit every model alike: the
best of ``--repeat`` forward passes on a 320x180 LR input, after a warm-up; then counts the minor
page faults of three more passes of each.

Models are registered names built untrained with seed 0, ``name:key=value,...`` for options, or
model files (``binary_diagnostics.build``), so trained and untrained weights can be compared.

Each model runs twice, in child processes alternated ``--rounds`` times: with glibc's default
allocator settings and after ``tinysr.retain_freed_memory()``. The table gives the best time and
the minor page faults per forward pass of each (``runtime.py`` explains why they differ).

    python benchmarks/packed_variants.py --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

import tinysr
from binary_conv import best_times
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


def faults_per_pass(model: torch.nn.Module, x: torch.Tensor, passes: int = 3) -> float:
    """Mean minor page faults of one forward pass (after the timed passes: a warm process)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.no_grad():
        for _ in range(passes):
            model(x)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / passes


def child(args: argparse.Namespace) -> None:
    """One process, one allocator setting: prints {threads: {model: [best ms, faults]}} as JSON."""
    if args.malloc == "retain" and not tinysr.retain_freed_memory():
        raise SystemExit("retain_freed_memory: not glibc, nothing to compare")
    w, h = (int(v) for v in args.lr_size.split("x"))
    x = torch.rand(1, 3, h, w)
    models = {spec: pack(build(spec)) for spec in args.models}
    result = {}
    for n in args.threads:
        torch.set_num_threads(n)
        best = best_times({spec: (lambda m=m: m(x)) for spec, m in models.items()}, args.repeat)
        result[n] = {spec: (best[spec] * 1e3, faults_per_pass(m, x)) for spec, m in models.items()}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="child processes per allocator setting, alternated")
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--lr-size", default="320x180", help="WxH of the LR input")
    parser.add_argument("--malloc", choices=["default", "retain"], help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.malloc:
        return child(args)
    runs: dict[str, list[dict]] = {"default": [], "retain": []}
    for _ in range(args.rounds):
        for mode in runs:
            cmd = [
                sys.executable,
                __file__,
                *args.models,
                "--malloc",
                mode,
                "--repeat",
                str(args.repeat),
                "--lr-size",
                args.lr_size,
                "--threads",
                *map(str, args.threads),
            ]
            runs[mode].append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]))
    print(f"torch {torch.__version__}; {args.lr_size} LR input; packed models; best of {args.repeat} x {args.rounds} processes")
    print("\n| threads | model | default allocator: ms (faults / pass) | retained memory: ms (faults / pass) | speed-up |")
    print("|---:|---|---:|---:|---:|")
    for n in map(str, args.threads):
        for spec in args.models:
            (d, df), (r, rf) = (min((run[n][spec] for run in runs[mode]), key=lambda t: t[0]) for mode in runs)
            print(f"| {n} | {spec} | {d:.1f} ({df:,.0f}) | {r:.1f} ({rf:,.0f}) | {d / r:.2f}x |")


if __name__ == "__main__":
    main()

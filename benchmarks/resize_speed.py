"""Time of the protocol's LR generation (MATLAB bicubic, SPEC §1) for a DIV2K-sized 2040x1356 image.

Prints, per scale, the time of tinysr's imresize next to a dense-matrix formulation of the same
operation (two matrix products, a natural "obvious" vectorisation) measured in the same run, and
checks both give the same image.

    python benchmarks/resize_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from tinysr.resize import contributions, imresize, output_size


def dense_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """The same resize as two dense (out x in) matrix products, for comparison."""

    def matrix(n: int) -> np.ndarray:
        m = output_size(n, scale)
        idx, w = contributions(n, m, scale)
        a = np.zeros((m, n))
        np.add.at(a, (np.repeat(np.arange(m), idx.shape[1]), idx.ravel()), w.ravel())
        return a

    rows, cols = matrix(img.shape[0]), matrix(img.shape[1])
    return np.einsum("ij,jkc->ikc", rows, np.einsum("kl,jlc->jkc", cols, img, optimize=True), optimize=True)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    img = np.random.default_rng(0).random((1356, 2040, 3))
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"{'scale':>6}{'tinysr (s)':>12}{'dense mm (s)':>14}{'ratio':>8}{'max diff':>11}")
    for s in (2, 3, 4):
        ours = best_of(lambda: imresize(img, 1 / s), args.repeat)
        dense = best_of(lambda: dense_imresize(img, 1 / s), max(1, args.repeat // 2))
        diff = np.abs(imresize(img, 1 / s) - dense_imresize(img, 1 / s)).max()
        print(f"{'x1/' + str(s):>6}{ours:>12.3f}{dense:>14.3f}{dense / ours:>8.1f}{diff:>11.1e}")


if __name__ == "__main__":
    main()

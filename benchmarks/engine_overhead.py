"""Training-step throughput of tinysr's engine against a bare PyTorch loop doing the same work.

Both train ``edsr_baseline`` (x2) on the same patches (the same TrainPatches dataset through a
DataLoader, the same batch and patch size) with Adam and an L1 loss. The engine adds its own
bookkeeping: the learning-rate function, callbacks, the finite-loss check, logging, the progress
bar. Rounds alternate engine / bare so that drift in machine speed hits both equally; the report
is the median over rounds of iterations/s and the ratio.

    python benchmarks/engine_overhead.py --data ../shared/data/T91 [--iterations 30 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import tinysr
from tinysr.data import LRCache, TrainPatches
from tinysr.train import Trainer, parse_config
from tinysr.train.sampling import SampleStream


def bare_loop(folder: str, iterations: int, batch: int, patch: int, seed: int) -> float:
    """Iterations/s of the plainest correct loop: DataLoader -> forward -> L1 -> backward -> Adam step."""
    torch.manual_seed(seed)
    model = tinysr.create_model("edsr_baseline", scale=2).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = TrainPatches([folder], 2, patch, repeat=20, seed=seed, cache=LRCache(), warn=lambda m: None)
    loader = DataLoader(data, batch_size=batch, sampler=SampleStream(0, iterations, batch))
    start = time.perf_counter()
    for lr_img, hr_img in loader:
        loss = F.l1_loss(model(lr_img), hr_img)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
    return iterations / (time.perf_counter() - start)


def engine(folder: str, iterations: int, batch: int, patch: int, seed: int) -> float:
    """Iterations/s of Trainer.run over the same work, from its own log (loop time only, no set-up)."""
    recipe = {
        "model": {"name": "edsr_baseline"},
        "scale": 2,
        "seed": seed,
        "data": {"train": [folder], "patch_size": patch, "repeat": 20},
        "train": {
            "iterations": iterations,
            "batch_size": batch,
            "lr": 1e-4,
            "log_every": iterations,
            "val_every": 10**9,
            "checkpoint_every": 10**9,
        },
    }
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(parse_config(recipe, "benchmark"), run_dir, device="cpu", progress=True).run()
        records = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    (last,) = [r for r in records if r.get("iter") == iterations and "time" in r and "loss" in r]
    return iterations / last["time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/T91")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=48)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"edsr_baseline x2, batch {args.batch}, LR patch {args.patch}, {args.iterations} iterations per round")
    bare_rates, engine_rates = [], []
    engine(args.data, 2, args.batch, args.patch, 0)  # warm-up (LR cache, allocator)
    for r in range(args.rounds):
        engine_rates.append(engine(args.data, args.iterations, args.batch, args.patch, r))
        bare_rates.append(bare_loop(args.data, args.iterations, args.batch, args.patch, r))
        print(f"round {r}: engine {engine_rates[-1]:.3f} it/s, bare {bare_rates[-1]:.3f} it/s")
    e, b = statistics.median(engine_rates), statistics.median(bare_rates)
    print(
        f"median: engine {e:.3f} it/s ({e * args.batch:.1f} img/s), bare {b:.3f} it/s; engine/bare = {e / b:.3f} "
        f"(overhead {100 * (1 - e / b):+.1f}%)"
    )


if __name__ == "__main__":
    main()

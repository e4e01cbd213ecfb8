"""Training-step time with ``train.amp: bf16`` on this CPU against float32, side by side.

For each recipe, its model at its batch and patch size takes Adam steps on an L1 loss in float32
and under bf16 autocast (``torch.autocast("cpu")``, what the engine runs when ``train.amp`` is bf16
and the CPU has native bf16 convolutions), the two alternately so both see the same machine
state; the median step of each and their ratio are printed. The accuracy side is measured by
training (BENCHMARKS.md, "bf16 autocast on CPU"). Says whether oneDNN runs bf16 natively here;
where it does not, the engine trains in float32 whatever the recipe says.

    OMP_NUM_THREADS=1 python benchmarks/train_bf16.py edsr_baseline_x2_cpu edsr_btm_default_init_x2_cpu fabnet_b4c24_x2_cpu
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tinysr.models import create_model
from tinysr.train import load_config
from tinysr.train.loop import cpu_has_native_bf16


def step_time(model, optimizer, lr_batch, hr_batch, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        sr = model(lr_batch)
    loss = (sr.float() - hr_batch).abs().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per precision (after one warm-up each)")
    args = parser.parse_args()
    print(f"oneDNN bf16 native on this CPU: {cpu_has_native_bf16()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| recipe | batch x LR patch | float32 step (s) | bf16 step (s) | speed-up |")
    print("|---|---|---:|---:|---:|")
    for name in args.recipes:
        config = load_config(name)
        torch.manual_seed(0)
        model = create_model(config.model.name, scale=config.scale, **config.model.kwargs).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
        patch, batch = config.data.patch_size, config.train.batch_size
        lr_batch = torch.rand(batch, 3, patch, patch)
        hr_batch = torch.rand(batch, 3, patch * config.scale, patch * config.scale)
        times = {False: [], True: []}
        for bf16 in (False, True):
            step_time(model, optimizer, lr_batch, hr_batch, bf16)
        for _ in range(args.steps):
            for bf16 in (False, True):
                times[bf16].append(step_time(model, optimizer, lr_batch, hr_batch, bf16))
        fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {name} | {batch} x {patch} | {fp32:.3f} | {bf16:.3f} | {fp32 / bf16:.2f}x |")


if __name__ == "__main__":
    main()

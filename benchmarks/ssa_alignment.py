"""Does descending ASSL's alignment loss alone align the tied layers' kept sets? (SPEC §6)

On an untrained EDSR-baseline (16 channels, 3 blocks), weight normalisation inserted as ASSL does,
the largest constrained group (the head and every block's last conv) is optimised on L_SSA only,
for each SSA threshold, each sign and a few step sizes; the script prints the mean pairwise
overlap of the layers' kept index sets (1 = every layer keeps the same filters) as steps go by.

    python benchmarks/ssa_alignment.py
"""

from __future__ import annotations

import argparse

import torch

import tinysr
from tinysr.compress.assl import ASSL
from tinysr.compress.channels import channel_groups
from tinysr.compress.prune import insert_weight_norm


def overlap(gammas: list[torch.Tensor], n_kept: int) -> float:
    kept = [set(torch.topk(g.detach(), n_kept).indices.tolist()) for g in gammas]
    pairs = [(a, b) for i, a in enumerate(kept) for b in kept[i + 1 :]]
    return sum(len(a & b) for a, b in pairs) / (n_kept * len(pairs))


def run(threshold: str, sign: float, optimizer: str, lr: float, steps: int, checkpoints: list[int]) -> list[float]:
    torch.manual_seed(0)
    model = tinysr.create_model("edsr_baseline", scale=2, channels=16, blocks=3)
    cb = ASSL(ratio=0.5, ssa_threshold=threshold)
    cb.groups = channel_groups(model)
    cb.wn = insert_weight_norm(model, [p for g in cb.groups for p in g.producers])
    group = max((g for g in cb.groups if g.constrained), key=lambda g: len(g.producers))
    gammas = [cb.wn[p].gamma for p in group.producers]
    n_kept = group.channels - cb._n_pruned(group)
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(gammas, lr=lr)
    seen = [overlap(gammas, n_kept)]
    for step in range(1, steps + 1):
        opt.zero_grad()
        (sign * cb.alignment_loss(group)).backward()
        opt.step()
        if step in checkpoints:
            seen.append(overlap(gammas, n_kept))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    checkpoints = [100, 200, 500, args.steps]
    print(f"| SSA threshold | sign | optimizer, step | overlap at 0 / {' / '.join(map(str, checkpoints))} steps |")
    print("|---|---|---|---|")
    for threshold in ("largest_pruned", "smallest_kept"):
        for sign, name in ((1.0, "descend"), (-1.0, "flipped")):
            for optimizer, lr in (("sgd", 1.0), ("sgd", 3.0), ("adam", 1e-2)):
                seen = run(threshold, sign, optimizer, lr, args.steps, checkpoints)
                print(f"| {threshold} | {name} | {optimizer} {lr:g} | {' / '.join(f'{v:.2f}' for v in seen)} |")


if __name__ == "__main__":
    main()

"""What ASSL's regularisation left of the filters it prunes (SPEC §6, the L_SI penalty).

For each finished ``tinysr prune --method assl`` run folder, reads the regularisation phase's last
checkpoint (its weight-normalised network and the prune sets S) and prints, per channel group and
producing conv, the mean |gamma| of the filters in S against that of the kept filters, and the same
for their biases. A regularisation that finished leaves S at ~0 in every layer, and the cut is
then lossless; a ratio near 1 names the layer whose filters the network still uses (the surgery
loss ``prune_ablation.py`` reports comes from there).

    python benchmarks/assl_residue.py runs/prune_total/assl_0.5 runs/prune_total/assl_0.9
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import tinysr
from tinysr.compress.channels import channel_groups
from tinysr.train.checkpoint import load_state


def mean_abs(values: torch.Tensor, mask: torch.Tensor) -> float:
    return values[mask].abs().mean().item() if mask.any() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="ASSL pruning run folders (each holds regularize/)")
    args = parser.parse_args()
    for run in args.runs:
        phase = run / "regularize"
        state = load_state(phase)
        weights, prune_sets = state["model"], state["callbacks"][0]["prune_sets"]
        groups = channel_groups(tinysr.load(phase / "model.safetensors"))
        print(f"\n{run} (iteration {state['iteration']})")
        print("| group | conv | pruned | mean abs(gamma) S / kept | ratio | mean abs(bias) S / kept |")
        print("|---|---|---:|---:|---:|---:|")
        for group in groups:
            in_s = torch.zeros(group.channels, dtype=torch.bool)
            in_s[prune_sets[group.key]] = True
            for conv in group.producers:
                gamma, bias = weights[f"{conv}.gamma"].flatten(), weights.get(f"{conv}.conv.bias")
                s, kept = mean_abs(gamma, in_s), mean_abs(gamma, ~in_s)
                biases = "-" if bias is None else f"{mean_abs(bias, in_s):.4f} / {mean_abs(bias, ~in_s):.4f}"
                print(f"| {group.key} | {conv} | {int(in_s.sum())} | {s:.4f} / {kept:.4f} | {s / kept:.3f} | {biases} |")


if __name__ == "__main__":
    main()

"""The mean row of several seeds' rows, for the tables of the ablation scripts (ablation.py,
prune_ablation.py), which import it as a sibling module."""

from __future__ import annotations


def score_keys(sets: list[str]) -> list[str]:
    """The PSNR and SSIM fields of a row for each test set."""
    return [f"{s}_{m}" for s in sets for m in ("psnr", "ssim")]


def mean_row(runs: list[dict], keys: list[str], **labels) -> dict:
    """The first row with ``keys`` averaged over ``runs`` (None where a run has none) and
    ``labels`` set over it (e.g. the seed column saying what the row is)."""
    mean = dict(runs[0], **labels)
    for key in keys:
        values = [r.get(key) for r in runs]
        mean[key] = None if any(v is None for v in values) else sum(values) / len(values)
    return mean

"""Evaluating a model on benchmark sets under the protocol of SPEC §1."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from .data import BenchmarkSet
from .errors import TinySRError
from .inference import super_resolve
from .io import write_image
from .metrics import psnr_ssim
from .progress import progress as progress_report


@dataclass
class Score:
    """A dataset's score: mean PSNR / SSIM over its images (keys of ``tinysr test --json``)."""

    dataset: str
    scale: int
    psnr: float
    ssim: float
    images: int

    def as_dict(self) -> dict:
        return asdict(self)


def saved_output_path(save_dir: str | Path, dataset: BenchmarkSet, name: str) -> Path:
    """Where :func:`evaluate` with ``save_dir`` writes its output for image ``name`` of ``dataset``."""
    return Path(save_dir) / dataset.name / f"x{dataset.scale}" / f"{name}.png"


def evaluate(model: nn.Module, dataset: BenchmarkSet, save_dir: str | Path | None = None, progress: bool = True) -> Score:
    """PSNR/SSIM (Y channel, ``scale``-pixel border crop) of ``model`` on ``dataset``."""
    model.eval()
    psnrs, ssims = [], []
    bar = progress_report(dataset, total=len(dataset), desc=f"{dataset.name} x{dataset.scale}", disable=not progress, leave=False)
    for sample in bar:
        sr = super_resolve(model, sample.lr)
        if sr.shape[-2:] != sample.hr.shape[:2]:
            raise TinySRError(
                f"{dataset.name}/{sample.name}: model output {tuple(sr.shape[-2:])} does not match HR {sample.hr.shape[:2]}; "
                f"is the model made for x{dataset.scale}?"
            )
        try:
            p, s = psnr_ssim(sr, sample.hr, crop_border=dataset.scale)
        except ValueError as exc:  # an image too small for the protocol's crop and SSIM window
            raise TinySRError(f"{dataset.name}/{sample.name}: {exc}") from None
        psnrs.append(p)
        ssims.append(s)
        if save_dir is not None:
            write_image(saved_output_path(save_dir, dataset, sample.name), sr)
    return Score(dataset.name, dataset.scale, float(np.mean(psnrs)), float(np.mean(ssims)), len(psnrs))

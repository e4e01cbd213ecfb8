"""The bench's figures (matplotlib, the ``plots`` extra): PSNR vs OPs, and zoomed crops side by side."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..errors import TinySRError
from .suites import FAMILIES, REFERENCE


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no screen
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise TinySRError("bench plots need matplotlib: pip install 'tinysr[plots]' (or pass --no-plots)") from exc
    return plt


def _label(method: str) -> str:
    """The method name without the run-name suffix a whole figure shares (``_x2_cpu``, ``_x2``)."""
    return re.sub(r"_x\d(_cpu)?$", "", method)


def plot_psnr_vs_ops(rows: list[dict], test_set: str, path: Path) -> None:
    """PSNR on ``test_set`` against OPs at a 320x180 LR input (log x); bicubic as a dashed line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    markers = dict(zip(FAMILIES, "s^oDv"))
    for family in FAMILIES:
        points = [r for r in rows if r["family"] == family and r["ops_g"] > 0]
        if points:
            ax.scatter([r["ops_g"] for r in points], [r[f"{test_set}_psnr"] for r in points], marker=markers[family], label=family, s=40)
            for r in points:
                ax.annotate(_label(r["method"]), (r["ops_g"], r[f"{test_set}_psnr"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    for r in rows:
        if r["family"] == REFERENCE:  # no OPs to place it by: a level to beat
            ax.axhline(r[f"{test_set}_psnr"], linestyle="--", color="gray", linewidth=1, label=r["method"])
    ax.set_xscale("log")
    ax.set_xlabel("OPs (G) at a 320x180 LR input (FLOPs + BOPs/64)")
    ax.set_ylabel(f"{test_set} PSNR (dB, Y channel)")
    ax.set_title(f"PSNR vs OPs, x{rows[0]['scale']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_crops(hr: np.ndarray, crops: dict[str, np.ndarray], image_name: str, path: Path, columns: int = 6) -> None:
    """A grid of the same zoomed window: HR first, then each method's output."""
    plt = _pyplot()
    panels = [("HR", hr), *((_label(name), img) for name, img in crops.items())]
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img) in zip(axes.flat, panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=7)
    fig.suptitle(f"{image_name}: zoomed crops", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

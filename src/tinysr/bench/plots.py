"""The bench's figures (matplotlib, the ``plots`` extra): PSNR vs OPs, PSNR vs CPU time, and zoomed crops side by side."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
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


Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), y upwards
MARKER_SIZE = 40  # scatter size of the points (points²)


def place_labels(boxes: list[Box], gap: float = 1.0, obstacles: Sequence[Box] = ()) -> list[float]:
    """Vertical shifts that leave no two label boxes ``(x0, y0, x1, y1)`` overlapping, and no
    label over one of the fixed ``obstacles`` (the plotted markers).

    Labels are placed from the lowest up, each at the nearest height, up or down (up on a tie),
    where it clears every obstacle and every label already placed whose horizontal extent it
    shares, with ``gap`` between them. A label with room where its point put it does not move.
    Labels stacked at one spot spread both ways, which puts them nearer their points than a
    stack going up only, and lets a label step down past a marker rather than far up round it.
    """
    labels: list[Box] = []
    shifts = [0.0] * len(boxes)
    for i in sorted(range(len(boxes)), key=lambda i: (boxes[i][1], boxes[i][0])):
        x0, y0, x1, y1 = boxes[i]
        height = y1 - y0
        beside = [b for b in [*obstacles, *labels] if b[0] < x1 and x0 < b[2]]  # shares a horizontal extent
        # the nearest free height is where the label is, or just above or just below a box beside it
        candidates = {y0, *(b[3] + gap for b in beside), *(b[1] - gap - height for b in beside)}
        free = [c for c in candidates if all(c + height + gap <= b[1] or b[3] + gap <= c for b in beside)]
        bottom = min(free, key=lambda c: (abs(c - y0), c < y0))  # never empty: above every box is free
        shifts[i] = bottom - y0
        labels.append((x0, bottom, x1, bottom + height))
    return shifts


def _annotate_apart(ax, labels: list[tuple[str, float, float]], fontsize: float = 7) -> None:
    """Label each point ``(text, x, y)`` up and to its right, moving labels up or down where they
    would overlap each other or another point's marker (drawn at ``MARKER_SIZE``; each taken as
    the square its width spans), with a thin line back to the point for a label that moved. Lays
    the figure out: the labels are placed in its final pixel coordinates."""
    fig = ax.figure
    offset = (4, 2)  # points; right of the point's own marker, whose radius is below 4 points at size 40
    texts = [ax.annotate(t, (x, y), fontsize=fontsize, xytext=offset, textcoords="offset points") for t, x, y in labels]
    fig.tight_layout()  # with the labels where their points put them, so the axes leave room for them
    renderer = fig.canvas.get_renderer()
    boxes = [tuple(t.get_window_extent(renderer).extents) for t in texts]
    for t in texts:
        t.remove()
    points_per_pixel = 72 / fig.dpi
    radius = math.sqrt(MARKER_SIZE) / 2 / points_per_pixel  # a scatter marker's size is its width squared, in points
    centres = ax.transData.transform([(x, y) for _, x, y in labels])
    markers = [(cx - radius, cy - radius, cx + radius, cy + radius) for cx, cy in centres]
    for (text, x, y), shift in zip(labels, place_labels(boxes, obstacles=markers)):
        moved = abs(shift) * points_per_pixel > 1  # points
        ax.annotate(
            text,
            (x, y),
            fontsize=fontsize,
            xytext=(offset[0], offset[1] + shift * points_per_pixel),
            textcoords="offset points",
            arrowprops=dict(arrowstyle="-", color="gray", linewidth=0.5, shrinkA=0, shrinkB=2) if moved else None,
        )


def _plot_psnr_against(rows: list[dict], test_set: str, path: Path, x_key: str, x_label: str, title: str) -> None:
    """PSNR on ``test_set`` against ``row[x_key]`` (log x), one marker per family; the reference
    (bicubic) as a dashed level to beat."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    markers = dict(zip(FAMILIES, "s^oDv"))
    labels = []
    for family in FAMILIES:
        points = [r for r in rows if r["family"] == family and r[x_key] > 0]
        if points:
            ax.scatter(
                [r[x_key] for r in points], [r[f"{test_set}_psnr"] for r in points], marker=markers[family], label=family, s=MARKER_SIZE
            )
            labels += [(_label(r["method"]), r[x_key], r[f"{test_set}_psnr"]) for r in points]
    for r in rows:
        if r["family"] == REFERENCE:
            ax.axhline(r[f"{test_set}_psnr"], linestyle="--", color="gray", linewidth=1, label=r["method"])
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"{test_set} PSNR (dB, Y channel)")
    ax.set_title(f"{title}, x{rows[0]['scale']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _annotate_apart(ax, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_psnr_vs_ops(rows: list[dict], test_set: str, path: Path) -> None:
    """PSNR on ``test_set`` against OPs at a 320x180 LR input (log x); bicubic as a dashed line."""
    _plot_psnr_against(rows, test_set, path, "ops_g", "OPs (G) at a 320x180 LR input (FLOPs + BOPs/64)", "PSNR vs OPs")


def plot_psnr_vs_latency(rows: list[dict], test_set: str, path: Path, threads: int) -> None:
    """PSNR on ``test_set`` against the CPU time of the deployable form (log x): what a user picks by."""
    _plot_psnr_against(
        rows,
        test_set,
        path,
        "time_ms",
        f"CPU ms per 320x180 LR input, deployable form ({threads} thread{'s' if threads > 1 else ''}, this machine)",
        "PSNR vs CPU time",
    )


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

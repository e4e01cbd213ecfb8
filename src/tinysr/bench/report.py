"""The bench's tables: ``results.csv`` (every number) and ``results.md`` (the papers' layout).

``results.md`` has two tables, as the papers print them (SPEC §3): 1-bit networks with params
(binary weights at 1/32) and OPs at a 320x180 LR input, and full-precision networks (pruned,
re-parameterized, plain) with Mult-Adds at a 1280x720 output. Bicubic heads both. The papers'
PSNR sits beside ours where SPEC has it.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import torch

from ..files import atomic_write
from ..kernels import cpu_model
from .suites import BINARY, REFERENCE, Suite

FORM_NAMES = {"merge": "merged", "pack": "bit-packed", "none": "as trained"}


def _columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(rows: list[dict], sets: list[str], cost_header: str, cost_key: str) -> list[str]:
    head = ["method", "scale", "iterations", "train (min)", "params", cost_header]
    head += [f"{s} PSNR / SSIM" for s in sets] + [f"paper {s}" for s in sets] + ["CPU ms (form)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|" + "---:|" * (2 * len(sets)) + "---|"]
    for r in rows:
        cells = [r["method"], f"x{r['scale']}", _num(r.get("iterations"), ",d"), _num(r.get("train_min"), ".0f")]
        cells += [f"{r['params'] / 1e3:.1f}K", f"{r[cost_key]:.2f}"]
        cells += [f"{r[f'{s}_psnr']:.2f} / {r[f'{s}_ssim']:.4f}" for s in sets]
        cells += [_num(r.get(f"paper_{s}_psnr"), ".2f") for s in sets]
        cells.append(f"{r['time_ms']:.1f} ({FORM_NAMES[r['form']]})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[dict], sets: list[str], suite: Suite) -> str:
    h, w = suite.time_lr_size
    binary = [r for r in rows if r["family"] in (REFERENCE, BINARY)]
    full = [r for r in rows if r["family"] != BINARY]
    sources = sorted({r["paper_source"] for r in rows if r.get("paper_source")})
    out = [
        f"# tinysr bench --suite {suite.name}",
        "",
        f"{date.today().isoformat()}; {cpu_model()}, {torch.get_num_threads()} PyTorch threads; "
        f"CPU time: median of {suite.time_repeat} forward passes on a {w}x{h} LR input, deployable form.",
        "",
        "## 1-bit networks (params: binary weights count 1/32; OPs = FLOPs + BOPs/64 at a 320x180 LR input)",
        "",
        *_table(binary, sets, "OPs (G)", "ops_g"),
        "",
        "## Full-precision networks (Mult-Adds at a 1280x720 output)",
        "",
        *_table(full, sets, "Mult-Adds (G)", "multadds_720p_g"),
        "",
        "Paper columns: " + ("; ".join(sources) if sources else "none for these methods") + ".",
        "",
    ]
    return "\n".join(out)


def write_tables(rows: list[dict], test_sets: list[str], suite: Suite, out_dir: Path) -> None:
    sets = [Path(d).name for d in test_sets]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(rows))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out_dir / "results.csv", lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    text = markdown(rows, sets, suite)
    atomic_write(out_dir / "results.md", lambda tmp: Path(tmp).write_text(text))

"""``tinysr bench --suite smoke``: one run of every family, its tables and plots, and its resume."""

from __future__ import annotations

import csv
import dataclasses
import math
import time

import pytest
import torch

from conftest import REPO
from tinysr.bench import get_suite
from tinysr.bench.paper import REPORTED
from tinysr.bench.runner import cpu_time_ms, crop_box
from tinysr.bench.suites import FAMILIES
from tinysr.cli import main
from tinysr.train import logged_training_seconds
from tinysr.workflows.pruning import pruning_training_seconds

SPEC_BICUBIC_SET5_X2 = (33.682, 0.9305)  # SPEC §1 reference values


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.chdir(REPO)  # the recipes name the data as ../shared/data relative to the checkout
    try:
        assert main(["bench", "--suite", "smoke", "-o", str(out), "-q"]) == 0
    finally:
        mp.undo()
    return out


def test_smoke_csv_has_every_family_and_sane_numbers(smoke):
    rows = list(csv.DictReader((smoke / "results.csv").open()))
    suite = get_suite("smoke")
    assert [r["method"] for r in rows] == [e.name for e in suite.entries]
    assert {r["family"] for r in rows} == set(FAMILIES)
    for column in (
        "scale",
        "iterations",
        "train_min",
        "form",
        "params",
        "flops_g",
        "bops_g",
        "ops_g",
        "multadds_720p_g",
        "Set5_psnr",
        "Set5_ssim",
        "paper_Set5_psnr",
        "time_ms",
    ):
        assert column in rows[0], column
    for r in rows:
        assert 5.0 < float(r["Set5_psnr"]) < 50.0 and 0.0 < float(r["Set5_ssim"]) <= 1.0, r
        assert float(r["time_ms"]) > 0
        assert math.isclose(float(r["ops_g"]), float(r["flops_g"]) + float(r["bops_g"]) / 64, rel_tol=1e-9)
    by_name = {r["method"]: r for r in rows}
    bicubic = by_name["bicubic"]
    assert float(bicubic["Set5_psnr"]) == pytest.approx(SPEC_BICUBIC_SET5_X2[0], abs=1e-3)
    assert float(bicubic["Set5_ssim"]) == pytest.approx(SPEC_BICUBIC_SET5_X2[1], abs=1e-4)
    assert float(by_name["edsr_reactnet"]["bops_g"]) > 0 and by_name["edsr_reactnet"]["form"] == "pack"
    assert float(by_name["l1_0.5"]["params"]) < float(by_name["edsr_baseline"]["params"])  # pruned from it
    assert float(by_name["edsr_reactnet"]["paper_Set5_psnr"]) == REPORTED[("edsr_reactnet", 2)].set5
    assert by_name["fabnet"]["paper_Set5_psnr"] == ""  # no reported number: empty, not invented
    # minutes trained by each run's log (a pruning run's phases summed); none for bicubic
    assert bicubic["train_min"] == ""
    for entry in suite.entries:
        if entry.recipe:
            seconds = (pruning_training_seconds if entry.prune else logged_training_seconds)(smoke / entry.name)
            assert float(by_name[entry.name]["train_min"]) == pytest.approx(seconds / 60) and seconds > 0, entry.name


def test_smoke_markdown_and_plots(smoke):
    text = (smoke / "results.md").read_text()
    assert "## 1-bit networks" in text and "## Full-precision networks" in text
    assert "| edsr_reactnet | x2 |" in text and "| ecbsr_m4c16 | x2 |" in text
    for name in ("psnr_vs_ops_x2.png", "psnr_vs_ms_x2.png", "crops_x2.png"):
        data = (smoke / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


def test_smoke_rerun_reuses_everything(smoke, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in smoke.glob("*/result.json")}
    monkeypatch.chdir(REPO)
    assert main(["bench", "--suite", "smoke", "-o", str(smoke), "-q", "--no-plots"]) == 0
    assert before and {p: p.stat().st_mtime_ns for p in smoke.glob("*/result.json")} == before


def test_crop_box_finds_the_detailed_window():
    import numpy as np

    img = np.zeros((64, 64, 3), np.uint8)
    img[40:56, 8:24] = np.indices((16, 16)).sum(0)[..., None] % 2 * 255  # a checkerboard patch
    y, x = crop_box(img, 16)
    assert (y, x) == (40, 8)


def test_unknown_suite_is_one_line_error(capsys):
    assert main(["bench", "--suite", "nope", "-o", "x"]) == 2
    assert "--suite 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["smoke", "cpu", "paper", "zoo"])
def test_every_suite_entry_resolves(name, tmp_path):
    # Recipes exist and parse with the suite's overrides; sources and teachers are earlier entries;
    # models are registered; zoo entries are shipped.
    from tinysr.bench.runner import entry_config
    from tinysr.models import list_models
    from tinysr.zoo import zoo_names

    suite, seen = get_suite(name), set()
    for entry in suite.entries:
        if entry.zoo is not None:
            assert entry.zoo in zoo_names() and entry.recipe is None
        elif entry.recipe is None:
            assert entry.model in list_models()
        else:
            config = entry_config(entry, suite, tmp_path)
            assert config.model.name in list_models()
        for needed in filter(None, (entry.teacher, entry.prune.source if entry.prune else None)):
            assert needed in seen, f"{entry.name} needs {needed} first"
        seen.add(entry.name)
    assert len(seen) == len(suite.entries)


def test_zoo_suite_scores_every_shipped_model_as_stored(tmp_path, data_dir):
    # Nothing trains: each row is the shipped file, in its stored form, scoring its recorded number.
    from tinysr.bench import run_bench
    from tinysr.bench.suites import zoo_suite
    from tinysr.zoo import list_pretrained

    suite = dataclasses.replace(zoo_suite(), time_lr_size=(45, 80), time_repeat=1)
    rows = run_bench(suite, tmp_path / "zoo", test_sets=[str(data_dir / "Set5")], plots=False, log=lambda _: None)
    by_name = {r["method"]: r for r in rows}
    assert not any(p.name == "config.yaml" for p in (tmp_path / "zoo").rglob("*"))  # no training run
    stored_forms = {"merged": "merge", "packed": "pack", "pruned": "none", "trained": "none"}
    for entry in list_pretrained():
        row = by_name[entry["name"]]
        assert row["Set5_psnr"] == pytest.approx(entry["scores"]["Set5"]["psnr"], abs=1e-4)
        assert (row["family"], row["form"], row["iterations"]) == (entry["family"], stored_forms[entry["form"]], entry["iterations"])
        assert row["train_min"] == entry.get("training_minutes")
        reported = REPORTED.get((entry.get("paper", entry["model"]), entry["scale"]))
        assert row["paper_Set5_psnr"] == (reported.set5 if reported else None)
    for scale in {e["scale"] for e in list_pretrained()}:
        assert by_name[f"bicubic_x{scale}"]["family"] == "reference"


class _Slow(torch.nn.Module):
    """Takes ``seconds`` a pass and counts its passes."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.passes = seconds, 0

    def forward(self, x):
        self.passes += 1
        time.sleep(self.seconds)
        return x


def test_cpu_time_stops_timing_a_slow_model_at_its_budget():
    every = _Slow(0.02)
    assert cpu_time_ms(every, (4, 4), repeat=3) >= 20 and every.passes == 1 + 3  # the warm-up, then each pass
    bounded = _Slow(0.05)
    assert cpu_time_ms(bounded, (4, 4), repeat=5, max_seconds=0.08) >= 50
    assert bounded.passes == 1 + 2  # the second timed pass ends past the budget
    once = _Slow(0.05)
    cpu_time_ms(once, (4, 4), repeat=5, max_seconds=0.001)
    assert once.passes == 1 + 1  # at least one timed pass

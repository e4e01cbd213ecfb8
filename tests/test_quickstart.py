"""The README's main job, on the photographs scikit-image ships (installed by the test extra)."""

import numpy as np

from tinysr.cli import main
from tinysr.data import BenchmarkSet
from tinysr.inference import super_resolve
from tinysr.io import read_image, to_uint8
from tinysr.models import create_model
from tinysr.workflows.quickstart import LABEL_BAND, SHOWN_FAMILIES, run_quickstart, showcase_models, skimage_data_dir
from tinysr.zoo import list_pretrained


def _labelled_columns(sheet, columns):
    """Each column's share of the label band holds dark text."""
    band, width = sheet[:LABEL_BAND], sheet.shape[1] // columns
    return all((band[:, i * width : (i + 1) * width] < 128).any() for i in range(columns))


def test_quickstart_shows_the_zoo_without_training(tmp_path, capsys):
    assert skimage_data_dir() is not None, "scikit-image's sample photographs are missing (install the test extra)"
    result = run_quickstart(tmp_path / "zoo", progress=False)
    out = capsys.readouterr().out
    rows = {r["method"]: r for r in result["rows"]}
    shown = showcase_models(2)
    assert list(rows) == ["bicubic", *(e["name"] for e in shown)]
    assert not (tmp_path / "zoo" / "run").exists()  # nothing trained
    for entry in shown:
        row = rows[entry["name"]]
        assert (row["family"], row["form"]) == (entry["family"], entry["form"])
        assert row["photos_psnr"] > rows["bicubic"]["photos_psnr"] + 0.5, entry["name"]  # trained models beat bicubic
        assert row["time_ms"] > 0 and row["params"] > 0 and entry["name"] in out
    sheet = read_image(result["comparison"])
    assert _labelled_columns(sheet, len(rows) + 1)  # bicubic, each model, ground truth
    assert result["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the sheet shows the very outputs scored: bicubic's, as the model computes them, top-left tile
    first = next(iter(BenchmarkSet(tmp_path / "zoo" / "data" / "test", 2)))
    scored = read_image(next((tmp_path / "zoo" / "sr" / "bicubic").rglob(f"{first.name}.png")))
    assert np.array_equal(scored, to_uint8(super_resolve(create_model("bicubic", scale=2), first.lr)))
    crop, zoom = 96, 2
    y, x = (first.hr.shape[0] - crop) // 2, (first.hr.shape[1] - crop) // 2
    assert np.array_equal(sheet[LABEL_BAND : LABEL_BAND + crop * zoom : zoom, : crop * zoom : zoom], scored[y : y + crop, x : x + crop])


def test_showcase_takes_each_familys_best_deployable_entry():
    shown = showcase_models(2)
    assert [e["family"] for e in shown] == [f for f in SHOWN_FAMILIES if f in {e["family"] for e in shown}]
    for entry in shown:
        family = [e for e in list_pretrained() if e["family"] == entry["family"] and e["scale"] == 2]
        rivals = [e for e in family if e["form"] != "trained"] or family
        assert entry["scores"]["Set5"]["psnr"] == max(e["scores"]["Set5"]["psnr"] for e in rivals)
    names = [e["name"] for e in shown]
    assert "ecbsr_m4c16_x2" in names and "ecbsr_m4c16_x2_train" not in names  # the merged form, not the training form


def test_quickstart_iterations_need_train(capsys):
    assert main(["quickstart", "--iterations", "5"]) == 2
    assert "--iterations: only with --train" in capsys.readouterr().err


def test_quickstart_trains_end_to_end(tmp_path, capsys):
    result = run_quickstart(tmp_path / "qs", iterations=40, progress=False, train=True)
    out = capsys.readouterr().out
    assert "bicubic" in out and "comparison sheet" in out
    assert result["model"].is_file()
    sheet = read_image(result["comparison"])
    assert sheet.shape[0] > 200 and sheet.shape[1] > 800  # 2 rows x 3 crops, enlarged
    assert _labelled_columns(sheet, 3)
    assert (sheet[LABEL_BAND : LABEL_BAND + 4] > 0).any()
    scores = result["scores"]
    assert scores["bicubic"]["images"] == 2 and 25 < scores["bicubic"]["psnr"] < 40
    # A second call reuses the trained model instead of training again.
    run_quickstart(tmp_path / "qs", iterations=40, progress=False, train=True)
    assert "reusing" in capsys.readouterr().out


def test_quickstart_on_own_folder(tmp_path, data_dir):
    result = run_quickstart(tmp_path / "own", iterations=5, data=str(data_dir / "Set5" / "HR"), progress=False, train=True)
    assert result["scores"]["model"]["images"] == 2

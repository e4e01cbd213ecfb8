"""The README's main job, on the photographs scikit-image ships (installed by the test extra)."""

from tinysr.io import read_image
from tinysr.workflows.quickstart import LABEL_BAND, run_quickstart, skimage_data_dir


def test_quickstart_end_to_end(tmp_path, capsys):
    assert skimage_data_dir() is not None, "scikit-image's sample photographs are missing (install the test extra)"
    result = run_quickstart(tmp_path / "qs", iterations=40, progress=False)
    out = capsys.readouterr().out
    assert "bicubic" in out and "comparison sheet" in out
    assert result["model"].is_file()
    sheet = read_image(result["comparison"])
    assert sheet.shape[0] > 200 and sheet.shape[1] > 800  # 2 rows x 3 crops, enlarged
    band = sheet[:LABEL_BAND]  # the labels: dark text in each column's part of the white band
    width = sheet.shape[1] // 3
    assert all((band[:, i * width : (i + 1) * width] < 128).any() for i in range(3))
    assert (sheet[LABEL_BAND : LABEL_BAND + 4] > 0).any()
    scores = result["scores"]
    assert scores["bicubic"]["images"] == 2 and 25 < scores["bicubic"]["psnr"] < 40
    # A second call reuses the trained model instead of training again.
    run_quickstart(tmp_path / "qs", iterations=40, progress=False)
    assert "reusing" in capsys.readouterr().out


def test_quickstart_on_own_folder(tmp_path, data_dir):
    result = run_quickstart(tmp_path / "own", iterations=5, data=str(data_dir / "Set5" / "HR"), progress=False)
    assert result["scores"]["model"]["images"] == 2

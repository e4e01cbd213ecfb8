import json
import sys

import numpy as np
import pytest

from tinysr import create_model, save
from tinysr.cli import main
from tinysr.io import write_image
from train_helpers import run_bounded

# SPEC §1 reference values for this protocol (PSNR, SSIM).
BICUBIC = {
    ("Set5", 2): (33.682, 0.9305),
    ("Set5", 3): (30.405, 0.8690),
    ("Set5", 4): (28.431, 0.8113),
    ("Set14", 2): (30.330, 0.8700),
    ("Set14", 3): (27.634, 0.7760),
    ("Set14", 4): (26.092, 0.7050),
}


def test_bicubic_table_reproduces_spec(data_dir, tmp_path, capsys):
    out = tmp_path / "scores.json"
    args = ["test", "--model", "bicubic", "--data", str(data_dir / "Set5"), str(data_dir / "Set14"), "--scale", "2", "3", "4"]
    assert main(args + ["--json", str(out), "-q"]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 6
    for row in rows:
        assert set(row) == {"dataset", "scale", "psnr", "ssim", "images"}
        ref_psnr, ref_ssim = BICUBIC[(row["dataset"], row["scale"])]
        assert row["psnr"] == pytest.approx(ref_psnr, abs=0.01), row
        assert row["ssim"] == pytest.approx(ref_ssim, abs=0.0005), row
        assert row["images"] == (5 if row["dataset"] == "Set5" else 14)
    assert "Set14" in capsys.readouterr().out


def test_save_dir_and_model_file(data_dir, tmp_path):
    model_path = tmp_path / "edsr.safetensors"
    save(create_model("edsr_baseline", scale=2, blocks=1, channels=8), model_path)
    code = main(["test", "-m", str(model_path), "-d", str(data_dir / "Set5"), "-s", "2", "--save-dir", str(tmp_path / "sr"), "-q"])
    assert code == 0
    assert len(list((tmp_path / "sr" / "Set5" / "x2").glob("*.png"))) == 5


def test_model_file_scale_mismatch(tmp_path, data_dir, capsys):
    model_path = tmp_path / "m.safetensors"
    save(create_model("vdsr", scale=2, depth=3), model_path)
    assert main(["test", "-m", str(model_path), "-d", str(data_dir / "Set5"), "-s", "4", "-q"]) == 2
    assert "x2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["test", "-m", "bicubic", "-d", "/no/such/folder", "-s", "2"], "/no/such/folder"),
        (["test", "-m", "nonexistent_model", "-d", ".", "-s", "2"], "nonexistent_model"),
        (["test", "-m", "bicubic", "-d", ".", "-s", "7"], "scale"),
        (["test", "-m", "missing.safetensors", "-d", ".", "-s", "2"], "missing.safetensors"),
        (["profile", "-m", "vdsr", "-s", "2", "--lr-size", "axb"], "axb"),
        (["profile", "-m", "vdsr", "-s", "2"], "--lr-size"),
    ],
)
def test_errors_are_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert err.startswith("tinysr: error:")


def test_unreadable_image_is_named(tmp_path, capsys):
    write_image(tmp_path / "set" / "good.png", np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "set" / "bad.png").write_bytes(b"not an image")
    assert main(["test", "-m", "bicubic", "-d", str(tmp_path / "set"), "-s", "2", "-q", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and len(err.strip().splitlines()) == 1


def test_console_entry_point_and_help():
    for argv in (["--help"], ["test", "--help"], ["profile", "--help"], ["models"]):
        res = run_bounded([sys.executable, "-m", "tinysr", *argv], timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip()
    res = run_bounded([sys.executable, "-m", "tinysr", "models"], timeout=120)
    assert "edsr_baseline" in res.stdout.split()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["upscale", "-i", "x.png", "-o", "y.png", "-m", "bicubic", "-s", "2", "--tile", "0"], "--tile"),
        (["upscale", "-i", "x.png", "-o", "y.png", "-m", "bicubic", "-s", "2", "--tile", "-5"], "--tile"),
        (["upscale", "-i", "x.png", "-o", "y.png", "-m", "bicubic", "-s", "2", "--tile-pad", "-1"], "--tile-pad"),
        (["upscale", "-i", "x.png", "-o", "y.png", "-m", "bicubic", "-s", "2", "--device", "foo"], "not a torch device"),
        (["train", "-c", "edsr_bnn_x2_cpu", "-o", "r", "--device", "foo"], "not a torch device"),
        (["train", "-c", "edsr_bnn_x2_cpu", "-o", "r", "--set", "train.iterations=[1"], "not valid YAML"),
    ],
)
def test_bad_options_are_one_line_errors(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals exit from the parser
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tinysr: error:") and needle in err[0], err


def test_file_system_errors_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "profile.json"  # the parent is a file
    assert main(["profile", "-m", "bicubic", "-s", "2", "--lr-size", "8x8", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tinysr: error:") and "a_file" in err[0], err
    assert (tmp_path / "a_file").read_text() == "x"


def test_progress_off_a_terminal_is_plain_periodic_lines(monkeypatch):
    """Written to a file or a CI log, progress is whole lines (no carriage returns), at most one per
    period and one at the end; on a terminal it is tqdm's bar."""
    import io

    from tqdm import tqdm

    from tinysr import progress as progress_module

    clock = iter(range(0, 10_000, 7))  # each call to the clock 7 s later
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(progress_module.sys, "stderr", io.StringIO())
    bar = progress_module.progress(total=100, desc="train")
    for _ in range(100):
        bar.update(1)
    bar.set_postfix(loss="0.1")
    bar.close()
    text = progress_module.sys.stderr.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 20 <= len(lines) <= 26  # one per 30 s of a 700 s run, plus the last
    assert lines[-1].startswith("train: 100/100 (100%)") and lines[-1].endswith("loss=0.1")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(progress_module.sys, "stderr", Terminal())
    assert isinstance(progress_module.progress(total=3, desc="x"), tqdm)
    assert list(progress_module.progress([1, 2, 3], disable=True)) == [1, 2, 3]

"""A generated bad-input corpus through the CLI: every case exits 2 with exactly one stderr line,
``tinysr: error: ...``, naming the file or option, no traceback, and changes no file that existed
before. The good cases beside them (unusual but valid images) give their outputs."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import tinysr
from tinysr.cli import main
from tinysr.io import read_image, write_image


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _corpus(root: Path) -> None:
    """The files every case may point at."""
    write_image(root / "good.png", np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    (root / "garbage.png").write_bytes(b"not an image at all")
    (root / "truncated.png").write_bytes((root / "good.png").read_bytes()[:60])
    (root / "bomb_huge.png").write_bytes(_png_header_only(100_000, 100_000))
    (root / "bomb_over_limit.png").write_bytes(_png_header_only(13_000, 12_000))
    (root / "a_file").write_text("a file where a folder is needed")
    (root / "a_folder").mkdir()
    (root / "empty").mkdir()
    write_image(root / "set" / "img.png", np.full((24, 24, 3), 100, np.uint8))
    write_image(root / "tiny_set" / "img.png", np.full((8, 8, 3), 100, np.uint8))
    model = tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=1)
    tinysr.save(model, root / "m.safetensors")
    tinysr.save(tinysr.create_model("repsr_m4c16", scale=2), root / "rep.safetensors")
    # the same weights under metadata that builds a wider model
    metadata = safe_open(str(root / "m.safetensors"), "pt").metadata()
    wider = {**metadata, "kwargs": json.dumps({**json.loads(metadata["kwargs"]), "channels": 16})}
    save_file(load_file(root / "m.safetensors"), root / "mismatch.safetensors", metadata=wider)
    torch.save({"x": _Pwn(str(root / "pwned"))}, root / "pickle.pt")  # would create a file if it were ever unpickled


class _Pwn:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


CASES = {
    # name: (argv with {root}, text the one line must contain)
    "upscale_garbage": (["upscale", "-i", "{root}/garbage.png", "-o", "{root}/o.png", "-m", "bicubic", "-s", "2"], "garbage.png"),
    "upscale_truncated": (["upscale", "-i", "{root}/truncated.png", "-o", "{root}/o.png", "-m", "bicubic", "-s", "2"], "truncated.png"),
    "upscale_bomb_huge": (["upscale", "-i", "{root}/bomb_huge.png", "-o", "{root}/o.png", "-m", "bicubic", "-s", "2"], "bomb_huge.png"),
    "upscale_bomb_over_limit": (
        ["upscale", "-i", "{root}/bomb_over_limit.png", "-o", "{root}/o.png", "-m", "bicubic", "-s", "2"],
        "--max-pixels",
    ),
    "upscale_small_limit": (
        ["upscale", "-i", "{root}/good.png", "-o", "{root}/o.png", "-m", "bicubic", "-s", "2", "--max-pixels", "100"],
        "good.png",
    ),
    "upscale_same_file": (["upscale", "-i", "{root}/good.png", "-o", "{root}/good.png", "-m", "bicubic", "-s", "2"], "would replace"),
    "upscale_missing": (["upscale", "-i", "{root}/none.png", "-o", "{root}/o.png", "-m", "bicubic", "-s", "2"], "none.png"),
    "upscale_empty_folder": (["upscale", "-i", "{root}/empty", "-o", "{root}/out", "-m", "bicubic", "-s", "2"], "empty"),
    "upscale_parent_is_a_file": (["upscale", "-i", "{root}/good.png", "-o", "{root}/a_file/o.png", "-m", "bicubic", "-s", "2"], "a_file"),
    "upscale_folder_into_a_file": (["upscale", "-i", "{root}/a_folder", "-o", "{root}/a_file", "-m", "bicubic", "-s", "2"], "a_folder"),
    "upscale_missing_model": (
        ["upscale", "-i", "{root}/good.png", "-o", "{root}/o.png", "-m", "{root}/nope.safetensors"],
        "nope.safetensors",
    ),
    "upscale_model_not_a_model": (["upscale", "-i", "{root}/good.png", "-o", "{root}/o.png", "-m", "{root}/good.png"], "good.png"),
    "upscale_tile_zero": (["upscale", "-i", "{root}/good.png", "-o", "{root}/o.png", "-m", "bicubic", "-s", "2", "--tile", "0"], "--tile"),
    "upscale_bad_pad": (
        ["upscale", "-i", "{root}/good.png", "-o", "{root}/o.png", "-m", "bicubic", "-s", "2", "--tile-pad", "-1"],
        "--tile-pad",
    ),
    "upscale_bad_device": (
        ["upscale", "-i", "{root}/good.png", "-o", "{root}/o.png", "-m", "{root}/m.safetensors", "--device", "foo"],
        "foo",
    ),
    "upscale_weights_of_another_shape": (
        ["upscale", "-i", "{root}/good.png", "-o", "{root}/o.png", "-m", "{root}/mismatch.safetensors"],
        "head.weight is [8, 3, 3, 3] in the file",
    ),
    "upscale_pickle_model": (["upscale", "-i", "{root}/good.png", "-o", "{root}/o.png", "-m", "{root}/pickle.pt"], "pickle.pt"),
    "test_json_parent_is_a_file": (
        ["test", "-m", "bicubic", "-d", "{root}/set", "-s", "2", "--no-cache", "-q", "--json", "{root}/a_file/s.json"],
        "a_file",
    ),
    "test_image_too_small": (["test", "-m", "bicubic", "-d", "{root}/tiny_set", "-s", "2", "--no-cache", "-q"], "tiny_set/img"),
    "profile_json_parent_is_a_file": (
        ["profile", "-m", "bicubic", "-s", "2", "--lr-size", "8x8", "--json", "{root}/a_file/p.json"],
        "a_file",
    ),
    "deploy_over_its_model": (["deploy", "-m", "{root}/rep.safetensors", "-o", "{root}/rep.safetensors"], "would replace"),
    "deploy_parent_is_a_file": (["deploy", "-m", "{root}/rep.safetensors", "-o", "{root}/a_file/d.safetensors"], "a_file"),
    "deploy_garbage_model": (["deploy", "-m", "{root}/garbage.png", "-o", "{root}/d.safetensors"], "garbage.png"),
    "export_into_a_folder": (["export", "-m", "{root}/m.safetensors", "-o", "{root}/a_folder"], "a_folder"),
    "train_into_a_file": (["train", "-c", "edsr_bnn_x2_cpu", "-o", "{root}/a_file"], "a_file"),
    "train_bad_yaml": (["train", "-c", "edsr_bnn_x2_cpu", "-o", "{root}/run", "--set", "train.iterations=[1"], "not valid YAML"),
    "train_missing_recipe": (["train", "-c", "{root}/nope.yaml", "-o", "{root}/run"], "nope.yaml"),
    "bench_into_a_file": (["bench", "--suite", "cpu", "-o", "{root}/a_file"], "a_file"),
}
if not torch.cuda.is_available():
    CASES["upscale_cuda_without_gpu"] = (
        ["upscale", "-i", "{root}/good.png", "-o", "{root}/o.png", "-m", "{root}/m.safetensors", "--device", "cuda"],
        "no CUDA device",
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".tinysr.lock"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    _corpus(root)
    return root


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, corpus, capsys, monkeypatch):
    monkeypatch.chdir(corpus)
    argv, needle = CASES[case]
    before = _snapshot(corpus)
    try:
        code = main([a.format(root=corpus) for a in argv])
    except SystemExit as exc:  # argparse's refusals exit from the parser
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("tinysr: error:") and needle in err[0], err
    assert "Traceback" not in err[0]
    assert not (corpus / "pwned").exists()  # no pickle ever executes
    after = _snapshot(corpus)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing that existed changed
    for new in set(after) - set(before):
        (corpus / new).unlink()


def test_a_folder_with_bad_images_upscales_the_good_ones(tmp_path, capsys):
    """Each bad image is one line on stderr; the good ones are written; the exit status is 2."""
    src = tmp_path / "in"
    _corpus(src)
    for name in ("a_file", "m.safetensors", "rep.safetensors"):
        (src / name).unlink()
    assert main(["upscale", "-i", str(src), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2", "-q"]) == 2
    err = capsys.readouterr()
    lines = err.err.strip().splitlines()
    bad = ["bomb_huge.png", "bomb_over_limit.png", "garbage.png", "truncated.png"]
    assert len(lines) == len(bad) and all(name in line for name, line in zip(bad, lines)), lines
    assert "1 images written" in err.out and "4 could not be read" in err.out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.png"]


def test_unusual_valid_images_upscale(tmp_path):
    """CMYK, EXIF-rotated, 1x1, 16-bit colour, LA and 1-bit images are read and upscaled."""
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgb).convert("CMYK").save(src / "cmyk.jpg")
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated.save(src / "exif.jpg", exif=exif)
    Image.fromarray(rgb[:1, :1]).save(src / "one.png")
    Image.fromarray(rgb[..., 0]).convert("LA").save(src / "la.png")
    Image.fromarray(rgb[..., 0] > 128).save(src / "bits.png")
    assert main(["upscale", "-i", str(src), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2", "-q"]) == 0
    shapes = {p.name: read_image(p).shape for p in (tmp_path / "out").iterdir()}
    assert shapes == {
        "cmyk.png": (12, 18, 3),
        "exif.png": (18, 12, 3),
        "one.png": (2, 2, 3),
        "la.png": (12, 18, 3),
        "bits.png": (12, 18, 3),
    }


def test_a_killed_writes_temp_files_are_cleaned(tmp_path):
    """Temp files left by killed atomic writes go when the next process takes the run folder's lock,
    or when upscale writes the same output again; other files and other folders' temps stay."""
    from tinysr.files import folder_lock

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "other_run").mkdir()
    (run / "other_run" / ".tinysr.lock").write_text("")
    stale = [run / ".model.safetensors.ab12cd34.tmp", run / "checkpoints" / ".state.pt.x_9yZ0aB.tmp"]
    kept = [run / "notes.tmp", run / ".hidden", run / "other_run" / ".state.pt.abcdefgh.tmp"]
    for p in stale + kept:
        p.write_text("x")
    with folder_lock(run):
        pass
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)

    out = tmp_path / "out"
    out.mkdir()
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    (out / ".a.png.k3j4h5g6.tmp").write_text("x")
    (out / ".b.png.k3j4h5g6.tmp").write_text("x")
    assert main(["upscale", "-i", str(tmp_path / "a.png"), "-o", str(out / "a.png"), "-m", "bicubic", "-s", "2", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".b.png.k3j4h5g6.tmp", "a.png"]  # only the output's own temp


def test_a_full_disk_is_one_line_and_keeps_the_previous_files(tmp_path, data_dir, capsys, monkeypatch):
    """ENOSPC while an upscale writes its output, or while training writes a checkpoint: one line,
    exit 2, the file that was there before intact and no temp file left."""
    import errno

    import tinysr.files as files
    from train_helpers import make_folders, tiny_recipe, write_recipe

    train, val = make_folders(data_dir, tmp_path)
    write_image(tmp_path / "a.png", np.zeros((6, 6, 3), np.uint8))
    write_image(tmp_path / "out.png", np.full((3, 3, 3), 7, np.uint8))
    before = (tmp_path / "out.png").read_bytes()
    real_write = files.atomic_write

    def full_disk(path, write):
        def partial(tmp):
            Path(tmp).write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

        return real_write(path, partial)

    monkeypatch.setattr("tinysr.io.atomic_write", full_disk)
    assert main(["upscale", "-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "out.png"), "-m", "bicubic", "-s", "2", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert (tmp_path / "out.png").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(train, val, iterations=6, checkpoint_every=3, val_every=6))
    assert main(["train", "-c", str(recipe), "-o", str(tmp_path / "run"), "-q"]) == 0
    state = (tmp_path / "run" / "checkpoints" / "state.pt").read_bytes()
    monkeypatch.setattr("tinysr.train.checkpoint.atomic_write", full_disk)
    assert main(["train", "-c", str(recipe), "-o", str(tmp_path / "run2"), "--set", "train.iterations=9", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert (tmp_path / "run" / "checkpoints" / "state.pt").read_bytes() == state  # another run's files untouched
    assert not list((tmp_path / "run2").rglob("*.tmp"))

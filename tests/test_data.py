import numpy as np
import pytest

from tinysr import TinySRError
from tinysr.data import BenchmarkSet, LRCache, make_lr, mod_crop
from tinysr.io import read_image, write_image


def test_mod_crop():
    assert mod_crop(np.zeros((13, 17, 3)), 4).shape == (12, 16, 3)


def test_make_lr_size_and_dtype():
    lr = make_lr(np.random.default_rng(0).integers(0, 256, (13, 17, 3), dtype=np.uint8), 3)
    assert lr.shape == (4, 5, 3) and lr.dtype == np.uint8


def test_flat_folder_and_hr_subfolder(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (14, 10, 3), dtype=np.uint8)
    write_image(tmp_path / "flat" / "a.png", img)
    write_image(tmp_path / "nested" / "HR" / "a.png", img)
    for folder in ("flat", "nested"):
        ds = BenchmarkSet(tmp_path / folder, 4)
        (sample,) = list(ds)
        assert sample.hr.shape == (12, 8, 3) and sample.lr.shape == (3, 2, 3)
        assert ds.name == folder


def test_cache_reuses_and_repairs(tmp_path):
    img = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_image(tmp_path / "set" / "a.png", img)
    cache = LRCache(tmp_path / "cache")
    first = BenchmarkSet(tmp_path / "set", 2, cache=cache)[0].lr
    (entry,) = list((tmp_path / "cache").glob("*.png"))
    np.testing.assert_array_equal(read_image(entry), first)
    # A second run reads the cached file: prove it by planting a different valid image there.
    planted = np.zeros_like(first)
    write_image(entry, planted)
    np.testing.assert_array_equal(BenchmarkSet(tmp_path / "set", 2, cache=cache)[0].lr, planted)
    # A damaged entry is regenerated, not trusted.
    entry.write_bytes(b"garbage")
    np.testing.assert_array_equal(BenchmarkSet(tmp_path / "set", 2, cache=cache)[0].lr, first)
    # The key follows the content: a changed HR image gets a new entry.
    write_image(tmp_path / "set" / "a.png", 255 - img)
    BenchmarkSet(tmp_path / "set", 2, cache=cache)[0]
    assert len(list((tmp_path / "cache").glob("*.png"))) == 2


def test_lr_from_files(data_dir):
    ds = BenchmarkSet(data_dir / "Set5", 3, lr_from_files=True)
    sample = ds[0]
    expected = read_image(data_dir / "Set5" / "LR_bicubic" / "X3" / f"{sample.name}x3.png")
    np.testing.assert_array_equal(sample.lr, expected)


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(TinySRError, match="missing"):
        BenchmarkSet(tmp_path / "missing", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TinySRError, match="empty.*no images"):
        BenchmarkSet(tmp_path / "empty", 2)
    write_image(tmp_path / "x" / "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(TinySRError, match="LR_bicubic"):
        BenchmarkSet(tmp_path / "x", 2, lr_from_files=True)

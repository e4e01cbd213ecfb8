from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tinysr
from tinysr.cli import main
from tinysr.inference import super_resolve
from tinysr.io import read_image, write_image


@pytest.fixture
def small_edsr():
    torch.manual_seed(0)
    # Receptive radius in LR pixels: head 1 + block 2 + body conv 1 + upsampler conv 1 + HR tail 1/2 -> 6.
    return tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=1).eval()


def test_tiling_with_enough_pad_equals_whole_image(small_edsr):
    img = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    whole = super_resolve(small_edsr, img)
    tiled = super_resolve(small_edsr, img, tile=16, tile_pad=6)
    assert tiled.shape == whole.shape == (1, 3, 74, 90)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    # Too little context changes the tile borders: the comparison above can fail.
    assert (super_resolve(small_edsr, img, tile=16, tile_pad=1) - whole).abs().max() > 1e-3


def test_tiling_with_pre_upsampling_model():
    torch.manual_seed(0)
    vdsr = tinysr.create_model("vdsr", scale=3, depth=4).eval()
    img = np.random.default_rng(1).integers(0, 256, (20, 26, 3), dtype=np.uint8)
    # Bicubic needs 2 LR pixels of context, the 4 convs 4 HR pixels (< 2 LR pixels).
    torch.testing.assert_close(super_resolve(vdsr, img, tile=8, tile_pad=5), super_resolve(vdsr, img), rtol=0, atol=1e-5)


def test_upscale_returns_uint8_image(small_edsr):
    out = tinysr.upscale(small_edsr, np.zeros((5, 7, 3), np.uint8))
    assert out.dtype == np.uint8 and out.shape == (10, 14, 3)


def test_cli_upscale_folder_with_mixed_modes(tmp_path, small_edsr):
    rgb = np.random.default_rng(2).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgb).save(src / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(src / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((12, 10), 128, np.uint8)])).save(src / "rgba.png")
    Image.fromarray(rgb).quantize(8).save(src / "palette.png")
    Image.fromarray(rgb).save(src / "photo.jpg")
    Image.fromarray(rgb).save(src / "scan.tif")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(src / "deep.png")
    model_path = tmp_path / "m.safetensors"
    tinysr.save(small_edsr, model_path)
    assert main(["upscale", "-i", str(src), "-o", str(tmp_path / "out"), "-m", str(model_path), "--tile", "8", "-q"]) == 0
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["deep.png", "gray.png", "palette.png", "photo.png", "rgb.png", "rgba.png", "scan.png"]
    for name in outs:
        assert read_image(tmp_path / "out" / name).shape == (24, 20, 3)
    # A single file, with bicubic from the registry (which needs --scale).
    assert main(["upscale", "-i", str(src / "rgb.png"), "-o", str(tmp_path / "one.png"), "-m", "bicubic", "-s", "3"]) == 0
    assert read_image(tmp_path / "one.png").shape == (36, 30, 3)


def test_cli_upscale_errors(tmp_path, capsys):
    assert main(["upscale", "-i", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png"), "-m", "bicubic", "-s", "2"]) == 2
    assert "nope.png" in capsys.readouterr().err
    (tmp_path / "x.png").write_bytes(b"garbage")
    assert main(["upscale", "-i", str(tmp_path / "x.png"), "-o", str(tmp_path / "o.png"), "-m", "bicubic"]) == 2
    assert "--scale" in capsys.readouterr().err
    assert main(["upscale", "-i", str(tmp_path / "x.png"), "-o", str(tmp_path / "o.png"), "-m", "bicubic", "-s", "2"]) == 2
    assert "x.png" in capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_upscale_never_replaces_an_input_unless_told(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", np.full((6, 5, 3), 90, np.uint8))
    before = _snapshot(tmp_path)
    for out in (src / "a.png", tmp_path / "in" / ".." / "in" / "a.png"):
        assert main(["upscale", "-i", str(src / "a.png"), "-o", str(out), "-m", "bicubic", "-s", "2", "-q"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "would replace the input" in err[0] and "a.png" in err[0]
    assert main(["upscale", "-i", str(src), "-o", str(src), "-m", "bicubic", "-s", "2", "-q"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before  # nothing changed
    assert main(["upscale", "-i", str(src / "a.png"), "-o", str(src / "a.png"), "-m", "bicubic", "-s", "2", "-q", "--overwrite"]) == 0
    assert read_image(src / "a.png").shape == (12, 10, 3)


def test_upscale_gives_inputs_that_share_a_name_distinct_outputs(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "x.png", np.full((4, 4, 3), 10, np.uint8))
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(src / "x.jpg", quality=95)
    write_image(src / "y.png", np.full((4, 4, 3), 50, np.uint8))
    assert main(["upscale", "-i", str(src), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2", "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x_jpg.png", "x_png.png", "y.png"]
    assert read_image(tmp_path / "out" / "x_png.png").mean() < 30 < 150 < read_image(tmp_path / "out" / "x_jpg.png").mean()
    assert "3 images written" in capsys.readouterr().out


def _quick(name: str) -> torch.nn.Module:
    """The family's network at a width and depth that keep the test quick; its wiring (and so its
    kind of reach) unchanged."""
    import inspect

    from tinysr.models.registry import _REGISTRY

    params = inspect.signature(_REGISTRY[name]).parameters
    shrink = {"channels": 16, "blocks": 2, "depth": 6, "units": 4, "hpb_blocks": 1, "lb_blocks": 2}
    return tinysr.create_model(name, scale=2, **{k: v for k, v in shrink.items() if k in params}).eval()


@pytest.mark.parametrize("name", tinysr.list_models())
def test_default_tile_pad_makes_tiles_equal_the_whole_image(name):
    """For every registered model the default pad (from the structure, checked by a probe) gives the
    whole image's output, to float rounding (a few 1e-6, which can move a uint8 value by one where
    it sits on a rounding boundary); a model with image-wide statistics says so instead."""
    import warnings

    from tinysr.inference import ImageWideContext, default_tile_pad, reaches_beyond

    torch.manual_seed(0)
    model = _quick(name)
    with torch.no_grad():  # trained-like weights: every branch and attention path alive
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    img = np.random.default_rng(3).integers(0, 256, (40, 46, 3), dtype=np.uint8)
    pad, exact = default_tile_pad(model)
    assert pad % 8 == 0
    assert (name in IMAGE_WIDE) == (not exact)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiled = super_resolve(model, img, tile=16)
    if exact:
        assert not caught
        torch.testing.assert_close(tiled, super_resolve(model, img), rtol=0, atol=1e-4)
        assert not reaches_beyond(model, pad)
    else:
        assert [w.category for w in caught] == [ImageWideContext]


# BAM normalises each activation by its image-wide mean magnitude; B8C96's recalibrated units pool globally.
IMAGE_WIDE = {"vdsr_bam", "srresnet_bam", "bsrn", "fabnet_b8c96"}


def test_reach_bound_is_the_structure_summed():
    """EDSR-baseline x2: head 1 + 16 blocks x 2 + body conv 1 + upsampler conv 1 + HR tail 1/2 (rounded up) = 36."""
    from tinysr.inference import reach_bound

    assert reach_bound(tinysr.create_model("edsr_baseline", scale=2).eval()) == 36
    assert reach_bound(tinysr.create_model("bicubic", scale=3)) == 2  # the cubic kernel's 2 LR pixels
    # A pad below the true reach is caught by the probe, so the bound's check can fail.
    from tinysr.inference import reaches_beyond

    small = tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=1).eval()
    assert reach_bound(small) == 6 and reaches_beyond(small, 3) and not reaches_beyond(small, 6)

import numpy as np
import pytest
import torch
from PIL import Image

from tinysr import TinySRError
from tinysr.io import list_images, read_image, rgb_to_y, rgb_to_ycbcr, to_tensor, to_uint8, write_image, ycbcr_to_rgb


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (13, 17, 3), dtype=np.uint8)


def test_png_round_trip(tmp_path, rgb):
    write_image(tmp_path / "a.png", rgb)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (13, 17, 3)
    np.testing.assert_array_equal(out, rgb)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_write_float_tensor_rounds(tmp_path, rgb):
    t = to_tensor(rgb) + 0.4 / 255  # rounding must bring every pixel back
    write_image(tmp_path / "b.png", t)
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), rgb)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "PNG", "WEBP"])
def test_lossless_formats(tmp_path, rgb, fmt):
    path = tmp_path / f"img.{fmt.lower()}"
    Image.fromarray(rgb).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    np.testing.assert_array_equal(read_image(path), rgb)
    assert list_images(tmp_path) == [path]  # a training or test folder of them is read too


def test_jpeg_reads_as_rgb(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == rgb.shape and out.dtype == np.uint8


def test_grayscale_palette_and_alpha(tmp_path, rgb):
    gray = rgb[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(gray[..., None], 3, axis=2))

    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)  # alpha dropped, not composited

    pal = Image.fromarray(rgb).quantize(colors=16)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))


def test_16bit_grayscale_scaled(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 32768]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "w.png")
    out = read_image(tmp_path / "w.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255, 128])


def test_exif_orientation_applied(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "o.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "o.jpg")
    assert out.shape == (17, 13, 3)


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(TinySRError, match="broken.png"):
        read_image(bad)
    with pytest.raises(TinySRError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_ycbcr_known_values_and_inverse():
    # MATLAB rgb2ycbcr: black -> (16, 128, 128), white -> (235, 128, 128).
    px = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    np.testing.assert_allclose(rgb_to_ycbcr(px), [[[16, 128, 128], [235, 128, 128]]], atol=1e-9)
    img = np.random.default_rng(1).random((5, 6, 3))
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(img)), img, atol=1e-12)
    np.testing.assert_allclose(rgb_to_y(img), rgb_to_ycbcr(img)[..., 0], atol=1e-12)


def test_ycbcr_torch_matches_numpy():
    img = np.random.default_rng(2).random((5, 6, 3))
    t = torch.from_numpy(img).permute(2, 0, 1)[None]  # 1CHW, float64
    np.testing.assert_allclose(rgb_to_ycbcr(t)[0].permute(1, 2, 0).numpy(), rgb_to_ycbcr(img), atol=1e-10)
    np.testing.assert_allclose(rgb_to_y(t)[0].numpy(), rgb_to_y(img), atol=1e-10)
    back = ycbcr_to_rgb(rgb_to_ycbcr(t))
    torch.testing.assert_close(back, t)


def test_to_uint8_clips_and_rounds():
    arr = np.array([[[-0.1, 0.5 / 255, 1.2]]])
    np.testing.assert_array_equal(to_uint8(arr), [[[0, 0, 255]]])  # 0.5 rounds half to even
    np.testing.assert_array_equal(to_uint8(torch.tensor([[[0.6 / 255]], [[1.0]], [[2.0]]])), [[[1, 255, 255]]])

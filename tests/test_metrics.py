import math

import numpy as np
import pytest
import torch

from tinysr import metrics
from tinysr.kernels import native
from tinysr.metrics import gaussian_window, psnr, psnr_ssim, ssim


def gray(value, shape=(24, 30)):
    return np.full(shape + (3,), value, np.uint8)


def test_psnr_identical_is_inf():
    img = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    assert psnr(img, img, crop_border=2) == math.inf


def test_psnr_closed_form_on_gray_images():
    # R=G=B=v gives Y = 16 + v * (65.481 + 128.553 + 24.966) / 255 = 16 + v * 219/255.
    expected = 10 * math.log10(255**2 / (10 * 219 / 255) ** 2)
    assert psnr(gray(110), gray(100), crop_border=0) == pytest.approx(expected, abs=1e-12)
    # RGB mode: the raw difference of 10 grey levels.
    assert psnr(gray(110), gray(100), crop_border=0, y_channel=False) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)


def test_sr_is_rounded_to_uint8_first():
    hr = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    sr = torch.from_numpy(hr).permute(2, 0, 1)[None].double() / 255 + 0.45 / 255
    assert psnr(sr, hr, crop_border=0) == math.inf
    assert ssim(sr, hr, crop_border=0) == pytest.approx(1.0, abs=1e-12)


def test_crop_border_excludes_edges():
    hr = gray(100)
    sr = hr.copy()
    sr[:2] = 0
    sr[:, -2:] = 255
    assert psnr(sr, hr, crop_border=2) == math.inf
    assert psnr(sr, hr, crop_border=1) < 20


def ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Window by window, straight from Wang et al.'s definition with the 11x11 Gaussian (valid region)."""
    g = gaussian_window()
    w = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_windowed_reference():
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-30, 31, hr.shape), 0, 255).astype(np.uint8)
    ours = ssim(sr, hr, crop_border=2, y_channel=False)
    ref = np.mean([ssim_reference(sr[2:-2, 2:-2, c].astype(float), hr[2:-2, 2:-2, c].astype(float)) for c in range(3)])
    assert ours == pytest.approx(ref, abs=1e-12)


def test_ssim_of_constant_images_closed_form():
    # Constant images: zero variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) with a, b their Y values.
    a, b = 16 + 110 * 219 / 255, 16 + 100 * 219 / 255
    c1 = (0.01 * 255) ** 2
    assert ssim(gray(110), gray(100), crop_border=0) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)


def test_gaussian_window_is_matlab_fspecial():
    g = gaussian_window()
    assert g.shape == (11,) and g.sum() == pytest.approx(1.0)
    assert g[5] == pytest.approx(0.2660, abs=1e-4)  # centre of fspecial('gaussian', [11 1], 1.5)


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError):
        psnr(gray(1, (10, 10)), gray(1, (10, 12)), crop_border=0)
    with pytest.raises(ValueError):
        ssim(gray(1, (12, 12)), gray(1, (12, 12)), crop_border=1)


@pytest.mark.skipif(native() is None, reason="no C++ compiler: numpy is the only filter")
@pytest.mark.parametrize("shape", [(11, 11), (40, 23), (57, 130)])
def test_native_ssim_filter_equals_the_numpy_reference_bit_for_bit(shape):
    rng = np.random.default_rng(shape[1])
    maps = [rng.uniform(0, 255, shape) for _ in range(3)]
    g = gaussian_window()
    got = native().ssim_filter(torch.from_numpy(np.stack(maps)), torch.from_numpy(g)).numpy()
    for i, m in enumerate(maps):
        assert np.array_equal(got[i], metrics._filter_valid(m, g))  # same operations, same order


def test_ssim_is_the_same_with_and_without_the_native_filter(monkeypatch):
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-9, 10, hr.shape), 0, 255).astype(np.uint8)
    with_native = (ssim(sr, hr, crop_border=3), ssim(sr, hr, crop_border=3, y_channel=False))
    monkeypatch.setattr(metrics, "native", lambda: None)
    assert (ssim(sr, hr, crop_border=3), ssim(sr, hr, crop_border=3, y_channel=False)) == with_native
    assert psnr_ssim(sr, hr, crop_border=3) == (psnr(sr, hr, crop_border=3), with_native[0])

"""Haar DWT / IDWT (SPEC §5.5): exact inversion, energy preservation, the sub-band definitions."""

import pytest
import torch

from tinysr.nn.dwt import HaarDWT, HaarIDWT, haar_dwt, haar_idwt


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 5, 7, 9), (1, 2, 1, 6), (1, 1, 2, 2)])
def test_inverse_is_exact_for_any_size(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    ll, high = HaarDWT()(x)
    assert ll.shape == (shape[0], shape[1], (shape[2] + 1) // 2, (shape[3] + 1) // 2)
    assert high.shape == (shape[0], 3 * shape[1]) + ll.shape[-2:]
    torch.testing.assert_close(HaarIDWT()(ll, high, size=shape[-2:]), x, rtol=0, atol=1e-12)


def test_float32_inversion_and_energy_preservation():
    x = torch.randn(2, 4, 16, 12)
    ll, high = haar_dwt(x)
    torch.testing.assert_close(haar_idwt(ll, high), x, rtol=0, atol=1e-5)
    energy = ll.pow(2).sum() + high.pow(2).sum()
    torch.testing.assert_close(energy, x.pow(2).sum(), rtol=1e-5, atol=0)


def test_subbands_of_one_block():
    # [[a, b], [c, d]] = [[1, 2], [3, 4]]: LL = 5, LH = (1+2-3-4)/2 = -2, HL = (1-2+3-4)/2 = -1, HH = 0.
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    ll, high = haar_dwt(x)
    assert ll.flatten().tolist() == [5.0]
    assert high.flatten().tolist() == [-2.0, -1.0, 0.0]


def test_band_layout_is_lh_hl_hh_over_all_channels():
    # Two channels: channel 1 is channel 0 times 10, so each band block must scale the same way.
    x0 = torch.randn(1, 1, 4, 4)
    ll, high = haar_dwt(torch.cat([x0, 10 * x0], dim=1))
    ll0, high0 = haar_dwt(x0)
    for band in range(3):
        torch.testing.assert_close(high[:, 2 * band], high0[:, band])
        torch.testing.assert_close(high[:, 2 * band + 1], 10 * high0[:, band])
    torch.testing.assert_close(ll[:, 1], 10 * ll0[:, 0])


def test_constant_image_has_no_high_frequencies():
    ll, high = haar_dwt(torch.full((1, 3, 6, 6), 0.7))
    assert high.abs().max() < 1e-6
    torch.testing.assert_close(ll, torch.full_like(ll, 1.4))

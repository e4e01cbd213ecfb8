"""Haar DWT / IDWT (SPEC §5.5): exact inversion, energy preservation, the sub-band definitions."""

import pytest
import torch

from tinysr.kernels import native
from tinysr.nn import dwt as dwt_module
from tinysr.nn.dwt import HaarDWT, HaarIDWT, haar_dwt, haar_idwt, pad_to_even


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


def _bands_in_documented_order(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The native kernel's arithmetic, written with slices (kernels/haar.cpp's order of sums)."""
    a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    s, t, u, v = a + b, c + d, a - b, c - d
    return (s + t) * 0.5, torch.cat([(s - t) * 0.5, (u + v) * 0.5, (u - v) * 0.5], dim=1)


native_only = pytest.mark.skipif(native() is None, reason="no C++ compiler: the conv form is the only one")


@native_only
@pytest.mark.parametrize("shape", [(2, 24, 10, 14), (1, 3, 7, 9), (1, 72, 4, 6)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_native_transform_at_inference_equals_the_conv_form(shape, layout):
    x = torch.randn(*shape).contiguous(memory_format=layout)
    with torch.no_grad():
        ll, high = haar_dwt(x)  # float32 CPU, no gradient: the native kernel
        back = haar_idwt(ll, high, size=shape[-2:])
    assert ll.is_contiguous(memory_format=torch.channels_last) and high.is_contiguous(memory_format=torch.channels_last)
    want_ll, want_high = _bands_in_documented_order(pad_to_even(x))
    assert torch.equal(ll, want_ll) and torch.equal(high, want_high)
    conv_ll, conv_high = haar_dwt(x.clone().requires_grad_())  # a gradient asked for: the conv form
    assert conv_ll.grad_fn is not None
    torch.testing.assert_close(ll, conv_ll.detach(), rtol=0, atol=1e-6)  # the same bands up to the order of sums
    torch.testing.assert_close(high, conv_high.detach(), rtol=0, atol=1e-6)
    conv_back = haar_idwt(conv_ll, conv_high, size=shape[-2:]).detach()
    torch.testing.assert_close(back, conv_back, rtol=0, atol=1e-6)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5)


@native_only
def test_native_inverse_follows_its_documented_order():
    ll, high = torch.randn(2, 5, 3, 4), torch.randn(2, 15, 3, 4)
    with torch.no_grad():
        x = haar_idwt(ll, high)
    lh, hl, hh = high.chunk(3, dim=1)
    p, q, r, w = ll + lh, ll - lh, hl + hh, hl - hh
    assert torch.equal(x[..., 0::2, 0::2], (p + r) * 0.5) and torch.equal(x[..., 0::2, 1::2], (p - r) * 0.5)
    assert torch.equal(x[..., 1::2, 0::2], (q + w) * 0.5) and torch.equal(x[..., 1::2, 1::2], (q - w) * 0.5)


@native_only
def test_native_transform_refuses_mismatched_bands():
    with pytest.raises(ValueError, match="3x the channels"):
        native().haar_idwt(torch.zeros(1, 2, 3, 3), torch.zeros(1, 5, 3, 3))
    with pytest.raises(ValueError, match="even"):
        native().haar_dwt(torch.zeros(1, 2, 3, 4))


def test_traced_or_exported_graphs_keep_the_conv_form(monkeypatch):
    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        assert dwt_module._native_for(x) is native()  # inference: the native kernel where built
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
        assert dwt_module._native_for(x) is None  # a trace (and ONNX export) records PyTorch ops only
        traced = torch.jit.trace(lambda t: haar_dwt(t)[0], x)
    assert any(node.kind() == "aten::_convolution" for node in traced.graph.nodes())

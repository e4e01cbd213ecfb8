"""E2FIF's EDSR (SPEC §8) against the facts of the official code."""

from __future__ import annotations

import pytest
import torch

import tinysr
from tinysr.models.e2fif import E2FIFBlock
from tinysr.nn import BinaryConv2d, XnorWeight
from tinysr.profile import profile


def test_the_network_is_built_as_the_official_code():
    model = tinysr.create_model("edsr_e2fif", scale=2)
    assert model.pixel_range == 255.0 and len(model.body) == 16 and all(isinstance(b, E2FIFBlock) for b in model.body)
    binary = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert len(binary) == 32 and all(m.bias is not None for m in binary)
    for m in binary:
        assert m.act_quantizer.kind == "approx"
        assert (m.weight_quantizer.estimator, m.weight_quantizer.scale) == ("identity", False)
    assert [type(m) for m in model.tail] == [torch.nn.Conv2d, torch.nn.PixelShuffle] and model.tail[0].out_channels == 12
    assert not isinstance(model.head, BinaryConv2d)


def test_costs_are_the_closed_form_counts():
    # 32 binary 64x64x3x3 convs (1/32 each) with biases and BN; FP head 3->64 and tail 64->12 (x2)
    cost = profile(tinysr.create_model("edsr_e2fif", scale=2), (180, 320))
    fp = (3 * 64 * 9 + 64) + (64 * 12 * 9 + 12) + 32 * (64 + 2 * 64)
    assert (cost.params_binary, cost.params_fp) == (32 * 64 * 64 * 9, fp)
    lr_pixels = 180 * 320
    assert cost.bops == 32 * 64 * 64 * 9 * lr_pixels
    assert cost.flops == pytest.approx((3 * 64 * 9 + 64 * 12 * 9) * lr_pixels, rel=0.01)  # convs; BN and adds are small


def test_block_is_two_full_precision_skips_around_bn_binary_convs():
    torch.manual_seed(0)
    block = E2FIFBlock(8).eval()
    for norm in (block.norm1, block.norm2):
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 8, 6, 7)
    with torch.no_grad():
        u = x + block.norm1(block.conv1(x))
        a = torch.nn.functional.leaky_relu(u, 0.1)
        assert torch.allclose(block(x), a + block.norm2(block.conv2(a)), atol=1e-6)


def test_identity_weight_estimator_passes_the_gradient_unchanged():
    w = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.5], requires_grad=True)
    signs = XnorWeight("identity", scale=False).signs(w)
    signs.backward(torch.arange(1.0, 6.0))
    assert torch.equal(signs.detach(), torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]))
    assert torch.equal(w.grad, torch.arange(1.0, 6.0))  # also where |w| > 1, which ste would zero


def test_pixel_range_scales_the_mean_with_the_pixels():
    torch.manual_seed(1)
    wide = tinysr.create_model("edsr_e2fif", scale=2, channels=8, blocks=1).eval()
    unit = tinysr.create_model("edsr_e2fif", scale=2, channels=8, blocks=1, pixel_range=1.0).eval()
    assert torch.allclose(wide.sub_mean.shift, unit.sub_mean.shift * 255)
    with pytest.raises(ValueError, match="pixel_range must be positive"):
        tinysr.create_model("edsr_e2fif", scale=2, pixel_range=0)

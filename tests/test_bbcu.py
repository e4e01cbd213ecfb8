"""BBCU-L and BBCU-M (SPEC §8) against BBCU's table and the facts of the official code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tinysr
from tinysr.models.bbcu import ALIGNMENT, BinaryUpsampleUnit, repeat_channels
from tinysr.nn import BinaryConv2d, RPReLU, RSign
from tinysr.profile import profile

# BBCU's table: params (binary weights at 1/32) and OPs at a 320x180 LR input.
TABLE = {("bbcu_l", 2): (225e3, 18.55), ("bbcu_m", 2): (46e3, 1.83), ("bbcu_m", 4): (51e3, 3.95), ("bbcu_l", 4): (None, 79.2)}


def _unit_extras(model) -> int:
    """The units' per-channel thresholds and RPReLU parameters, which BBCU's table leaves out."""
    return sum(p.numel() for m in model.modules() if isinstance(m, (RSign, RPReLU)) for p in m.parameters())


@pytest.mark.parametrize("name, scale", sorted(TABLE))
def test_costs_match_bbcus_table(name, scale):
    model = tinysr.create_model(name, scale=scale)
    cost = profile(model, (180, 320))
    table_params, table_ops = TABLE[(name, scale)]
    assert cost.ops / 1e9 == pytest.approx(table_ops, rel=0.015)
    if table_params is not None:
        # the table's convention: within rounding of its thousands
        assert cost.params - _unit_extras(model) == pytest.approx(table_params, rel=0.01)
    if name == "bbcu_l" and scale == 2:
        assert cost.params <= 1.04 * table_params  # ours, thresholds and RPReLU counted


def test_the_networks_are_built_as_the_official_code():
    large, medium = tinysr.create_model("bbcu_l", scale=2), tinysr.create_model("bbcu_m", scale=4)
    for model in (large, medium):
        assert model.alignment == ALIGNMENT == 130.0
        assert len(model.body) == 32  # 16 blocks of 2 units, no block-level skip
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        for unit in model.body:
            assert unit.in_branch and isinstance(unit.post, RPReLU)
            assert isinstance(unit.conv.act_quantizer, RSign) and unit.conv.act_quantizer.sign.kind == "approx"
            assert unit.conv.weight_quantizer.estimator == "clip" and unit.conv.weight_quantizer.detach_scale
        assert not isinstance(model.head[0], BinaryConv2d) and not isinstance(model.conv_last, BinaryConv2d)
    # BBCU-L: full-precision upsampler and conv_hr; BBCU-M: binary units there, two x2 stages at x4
    assert not any(isinstance(m, BinaryConv2d) for m in (*large.upsampler.modules(), *large.conv_hr.modules()))
    assert [type(m) for m in medium.upsampler] == [BinaryUpsampleUnit, BinaryUpsampleUnit]
    assert [m.conv.out_channels for m in medium.upsampler] == [256, 256]
    assert isinstance(medium.conv_hr[0].conv, BinaryConv2d)


def test_official_init_scales_kaiming_by_a_tenth_outside_the_body():
    torch.manual_seed(0)
    model = tinysr.create_model("bbcu_l", scale=2)
    upconv = model.upsampler[0]
    kaiming_std = math.sqrt(2 / (64 * 9))
    assert upconv.weight.std().item() == pytest.approx(0.1 * kaiming_std, rel=0.02)
    assert torch.count_nonzero(upconv.bias) == 0 and torch.count_nonzero(model.head[0].bias) == 0
    body_weight = model.body[0].conv.weight  # PyTorch's default: uniform, bound 1 / sqrt(fan_in)
    assert body_weight.abs().max().item() == pytest.approx(1 / math.sqrt(64 * 9), rel=0.01)
    default = tinysr.create_model("bbcu_l", scale=2, init="default")
    assert default.upsampler[0].weight.abs().max().item() == pytest.approx(1 / math.sqrt(64 * 9), rel=0.01)


def test_upsample_unit_is_the_shuffled_branch_plus_the_nearest_upsampled_input():
    torch.manual_seed(2)
    unit = BinaryUpsampleUnit(8, 2).eval()
    with torch.no_grad():
        unit.post.shift_in.normal_()
        unit.post.prelu.weight.uniform_(-0.5, 0.5)
        unit.conv.act_quantizer.threshold.normal_(0, 0.2)
    x = torch.randn(1, 8, 5, 7)
    with torch.no_grad():
        want = F.pixel_shuffle(unit.post(unit.conv(x)), 2) + F.interpolate(x, scale_factor=2, mode="nearest")
        assert torch.allclose(unit(x), want, atol=1e-6)


def test_channels_repeat_as_repeat_interleave_in_either_layout():
    x = torch.randn(2, 5, 3, 4)
    want = x.repeat_interleave(4, dim=1)
    assert torch.equal(repeat_channels(x, 4), want) and repeat_channels(x, 4).is_contiguous()
    last = repeat_channels(x.contiguous(memory_format=torch.channels_last), 4)
    assert torch.equal(last, want) and last.is_contiguous(memory_format=torch.channels_last)


def test_alignment_scales_the_image_in_and_out():
    # k enters and leaves: the output is (net(k x) + bilinear(k x)) / k, not net(x) + bilinear(x)
    torch.manual_seed(3)
    aligned = tinysr.create_model("bbcu_l", scale=2, channels=8, units=2).eval()
    plain = tinysr.create_model("bbcu_l", scale=2, channels=8, units=2, alignment=1.0).eval()
    plain.load_state_dict(aligned.state_dict())
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.allclose(aligned(x), plain(x * ALIGNMENT) / ALIGNMENT, atol=1e-5)
        assert not torch.allclose(aligned(x), plain(x), atol=1e-3)

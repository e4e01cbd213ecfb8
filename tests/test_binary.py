"""Binary primitives (SPEC §5.1): estimators against closed forms, XNOR-popcount equivalence, costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tinysr
from tinysr import create_model, profile
from tinysr.cli import main
from tinysr.nn import BinaryConv2d, RPReLU, RSign, SignActivation, XnorWeight, binary_sign, hard_sign


def surrogate(x: np.ndarray, kind: str, t: float = 2.0) -> np.ndarray:
    """The smooth functions whose derivatives the estimators are (written independently of tinysr)."""
    if kind == "ste":
        return np.clip(x, -1, 1)
    if kind == "higher_order":
        kind, t = "dynamic", 4.0
    if kind == "approx":
        kind, t = "dynamic", 2.0
    assert kind == "dynamic"
    # FABNet's polynomial: -1 (x < -2/t); t^2/4 x^2 + t x (-2/t <= x < 0); -t^2/4 x^2 + t x (0 <= x < 2/t); 1.
    return np.where(x < -2 / t, -1.0, np.where(x < 0, t * t / 4 * x * x + t * x, np.where(x < 2 / t, -t * t / 4 * x * x + t * x, 1.0)))


@pytest.mark.parametrize(
    "kind, t", [("ste", 2.0), ("approx", 2.0), ("dynamic", 1.0), ("dynamic", 2.0), ("dynamic", 4.0), ("higher_order", 4.0)]
)
def test_estimator_gradient_is_the_surrogate_derivative(kind, t):
    x = torch.linspace(-2.3, 2.3, 4001, dtype=torch.float64)
    x = x[(x.abs() - 1).abs() > 1e-3]  # keep away from kinks, where the finite difference is one-sided
    x = x[((x.abs() - 2 / t).abs() > 1e-3) & ((x.abs() - 0.5).abs() > 1e-3) & (x.abs() > 1e-3)]
    x.requires_grad_(True)
    g = torch.randn_like(x)
    (binary_sign(x, kind, t) * g).sum().backward()
    h = 1e-6
    xs = x.detach().numpy()
    numeric = (surrogate(xs + h, kind, t) - surrogate(xs - h, kind, t)) / (2 * h)
    np.testing.assert_allclose(x.grad.numpy(), g.numpy() * numeric, atol=1e-6)


def test_forward_is_sign_with_zero_positive():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-8, 3.0])
    for kind in ("ste", "approx", "dynamic"):
        assert binary_sign(x, kind).tolist() == [-1, 1, 1, 1, 1]
    assert hard_sign(torch.zeros(3)).tolist() == [1, 1, 1]


def test_dynamic_t2_equals_approx_sign_and_t_is_a_saved_buffer():
    x = torch.randn(1000, requires_grad=True)
    binary_sign(x, "dynamic", 2.0).sum().backward()
    g_dyn = x.grad.clone()
    x.grad = None
    binary_sign(x, "approx").sum().backward()
    torch.testing.assert_close(g_dyn, x.grad)
    act = SignActivation("dynamic", t=3.0)
    assert float(act.state_dict()["t"]) == 3.0


def test_rsign_threshold_and_rprelu_learn():
    x = torch.randn(2, 4, 5, 5)
    rsign = RSign(4)
    with torch.no_grad():
        rsign.threshold.fill_(0.3)
    torch.testing.assert_close(rsign(x), hard_sign(x - 0.3))
    rsign(x).sum().backward()
    assert rsign.threshold.grad is not None and rsign.threshold.grad.abs().sum() > 0
    rp = RPReLU(4)
    rp(x).sum().backward()
    assert all(p.grad is not None for p in rp.parameters())


def test_xnor_weight_forward_and_gradient_closed_form():
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64) * 0.3
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    s = hard_sign(w)
    g = torch.randn_like(w)
    n = w[0].numel()
    for detach, expected in (
        (True, g * alpha * (w.abs() <= 1)),  # the papers' code: the scale is a constant in backward
        (False, g * alpha * (w.abs() <= 1) + s / n * (g * s).sum(dim=(1, 2, 3), keepdim=True)),  # d/dW [alpha(W) * sign(W)]
    ):
        leaf = w.clone().requires_grad_(True)
        out = XnorWeight("ste", detach_scale=detach)(leaf)
        torch.testing.assert_close(out, s * alpha)
        (out * g).sum().backward()
        torch.testing.assert_close(leaf.grad, expected)
    assert XnorWeight().detach_scale  # the default is the papers'


def test_clip_weight_estimator_is_the_official_fabnet_gradient():
    """FABNet's code: forward alpha * sign(W), backward the gradient of clamp(W, -1, 1), unscaled;
    here through a binary conv, whose signs are scaled after the conv."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6)
    conv = BinaryConv2d(4, 5, 3, padding=1, weight_quantizer=XnorWeight("clip"))
    with torch.no_grad():
        conv.weight.mul_(3)  # some weights outside [-1, 1]
    w = conv.weight.detach().clone().requires_grad_(True)
    alpha = w.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    official = (alpha * torch.sign(w.detach())).detach() - w.clamp(-1, 1).detach() + w.clamp(-1, 1)
    g = torch.randn(2, 5, 6, 6)
    (F.conv2d(x, official, padding=1) * g).sum().backward()
    (conv(x) * g).sum().backward()
    torch.testing.assert_close(conv(x), F.conv2d(x, official, padding=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad, w.grad, rtol=1e-4, atol=1e-5)
    assert (conv.weight.grad[conv.weight.detach().abs() > 1] == 0).all()


def test_binary_conv_without_quantizers_is_conv2d():
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    bconv = BinaryConv2d(4, 6, 3, padding=1, bias=True)
    bconv.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 7, 7)
    assert torch.equal(bconv(x), ref(x)) and not bconv.is_binary


def xnor_popcount_reference(x: torch.Tensor, conv: BinaryConv2d) -> np.ndarray:
    """Integer XNOR-popcount convolution: per output, K_valid - 2 * popcount(a XOR w) over the valid
    (non-padding) taps, times the per-channel weight scale. Bits: 1 encodes -1, 0 encodes +1."""
    w = conv.weight.detach()
    alpha = w.abs().mean(dim=(1, 2, 3)).numpy()
    a_bits = (x < 0).to(torch.uint8)
    w_bits = (w < 0).to(torch.uint8).numpy()
    valid = torch.ones_like(x[:, :1]).expand_as(x).contiguous()
    unfold = nn.Unfold(conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    cols = unfold(a_bits.double()).numpy().astype(np.uint8)  # (B, C*kh*kw, L)
    mask = unfold(valid.double()).numpy().astype(np.uint8)
    b, _, length = cols.shape
    groups, cout = conv.groups, w.shape[0]
    cin_g = x.shape[1] // groups
    taps = cin_g * conv.kernel_size[0] * conv.kernel_size[1]
    out = np.zeros((b, cout, length))
    for o in range(cout):
        g = o // (cout // groups)
        a = cols[:, g * taps : (g + 1) * taps, :]
        m = mask[:, g * taps : (g + 1) * taps, :]
        wb = w_bits[o].reshape(-1)[None, :, None]
        xor = np.bitwise_xor(a, wb) & m  # padded taps contribute nothing
        count = m.sum(axis=1).astype(np.int64) - 2 * xor.sum(axis=1).astype(np.int64)
        out[:, o] = count * alpha[o]
    oh = (x.shape[2] + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1
    return out.reshape(b, cout, oh, -1)


@pytest.mark.parametrize(
    "cin, cout, kernel, stride, padding, dilation, groups",
    [(5, 6, 3, 1, 0, 1, 1), (8, 4, 3, 1, 1, 1, 1), (7, 4, (1, 5), 1, (0, 4), 2, 1), (6, 6, (5, 1), 2, (2, 0), 1, 2), (3, 5, 3, 2, 1, 2, 1)],
)
def test_binary_conv_equals_integer_xnor_popcount(cin, cout, kernel, stride, padding, dilation, groups):
    torch.manual_seed(1)
    conv = BinaryConv2d(cin, cout, kernel, stride, padding, dilation, groups, act_quantizer=SignActivation(), weight_quantizer=XnorWeight())
    x = torch.randn(2, cin, 9, 11)
    x[0, 0, 0, :3] = 0.0  # sign(0) = +1 must agree with the bit encoding
    with torch.no_grad():
        ours = conv(x).double().numpy()
    np.testing.assert_allclose(ours, xnor_popcount_reference(x, conv), rtol=1e-5, atol=1e-5)


# SPEC §3 / BBCU's table: (params conv weights + biases, OPs) at a 320x180 LR input.
BBCU_TABLE = {2: (225_000, 18.55e9), 4: (372_000, 79.20e9)}
# What the table leaves out, per binary unit (32 of them, 64 channels): BN's scale and shift;
# ReActNet's threshold and RPReLU (two shifts and a slope) on top of BN; BTM's PReLU.
EXTRAS_PER_UNIT = {"edsr_bnn": 2 * 64, "edsr_bireal": 2 * 64, "edsr_reactnet": 2 * 64 + 64 + 3 * 64, "edsr_btm": 64}


@pytest.mark.parametrize("name", ["edsr_bnn", "edsr_bireal", "edsr_reactnet", "edsr_btm"])
@pytest.mark.parametrize("scale", [2, 4])
def test_binary_edsr_cost_matches_bbcu_table(name, scale):
    params, ops = BBCU_TABLE[scale]
    p = profile(create_model(name, scale=scale), lr_size=(180, 320))
    assert p.ops == pytest.approx(ops, rel=0.015)
    convs_only = sum(layer.params_fp + layer.params_binary / 32 for layer in p.layers if layer.kind in ("Conv2d", "BinaryConv2d"))
    assert convs_only == pytest.approx(params, rel=0.002)  # what the table counts
    assert p.params - convs_only == 32 * EXTRAS_PER_UNIT[name]  # and what it leaves out, exactly
    assert p.params_binary == 32 * 64 * 64 * 9


@pytest.mark.parametrize("position", ["after_add", "in_branch"])
def test_reactnet_unit_rprelu_position(position):
    """ReActNet's RPReLU after the residual add vs BBCU's placement inside the branch, each against
    its formula written out from the unit's own layers; the same parameters and cost either way."""
    torch.manual_seed(0)
    model = create_model("edsr_reactnet", scale=2, channels=8, units=2, rprelu_position=position).eval()
    unit = model.body[0]
    with torch.no_grad():
        unit.post.shift_in.normal_()
        unit.post.shift_out.normal_()
        unit.post.prelu.weight.uniform_(-0.5, 0.5)
    x = torch.randn(2, 8, 5, 6)
    branch = unit.norm(unit.conv(x))  # BN after the binary conv (ReActNet's default)
    expected = x + unit.post(branch) if position == "in_branch" else unit.post(branch + x)
    torch.testing.assert_close(unit(x), expected)
    other = x + unit.post(branch) if position == "after_add" else unit.post(branch + x)
    assert not torch.allclose(unit(x), other)  # the two placements are different functions
    reference = profile(create_model("edsr_reactnet", scale=2), lr_size=(180, 320))
    moved = profile(create_model("edsr_reactnet", scale=2, rprelu_position=position), lr_size=(180, 320))
    assert (moved.params, moved.ops) == (reference.params, reference.ops)


def test_rprelu_position_is_checked():
    with pytest.raises(ValueError, match="rprelu_position must be one of"):
        create_model("edsr_reactnet", scale=2, rprelu_position="before")
    with pytest.raises(ValueError, match="needs a scheme with RPReLU"):
        create_model("edsr_bnn", scale=2, rprelu_position="in_branch")


def test_mrb_block_layout():
    model = create_model("edsr_ibtm", scale=2)
    mrb = model.body[0]
    shapes = [(b.weight.shape[0], b.kernel_size, b.dilation) for b in mrb.branches]
    assert shapes == [(16, (1, 5), (1, 1)), (16, (1, 5), (1, 2)), (16, (5, 1), (1, 1)), (16, (5, 1), (2, 1))]
    assert all(b.is_binary for b in mrb.branches) and mrb.conv.is_binary
    teacher = create_model("edsr_ibtm", scale=2, binary=False)
    assert not any(isinstance(m, BinaryConv2d) for m in teacher.modules())


def test_binary_model_through_cli_test(tmp_path, data_dir):
    path = tmp_path / "bnn.safetensors"
    tinysr.save(create_model("edsr_bnn", scale=2, units=2, channels=8), path)
    assert main(["test", "-m", str(path), "-d", str(data_dir / "Set5"), "-s", "2", "-q"]) == 0
    assert main(["upscale", "-m", str(path), "-i", str(data_dir / "Set5" / "HR" / "baby.png"), "-o", str(tmp_path / "b.png")]) == 0

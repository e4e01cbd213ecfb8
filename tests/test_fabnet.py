"""FABNet (SPEC §5.5): the estimator schedule seen through gradients, learnable parts, cost split."""

import pytest
import torch

import tinysr
from tinysr.models.fabnet import DynamicEstimatorSchedule, FrequencyBinaryModule, RecalibratedActivation
from tinysr.nn import BinaryConv2d, SignActivation


def activation_gradient(model, branch: str, x: float = 0.1) -> float:
    """d sign(x)/dx as the first dynamic activation of ``branch`` sees it in backward."""
    module = next(m for m in model.modules() if isinstance(m, FrequencyBinaryModule) and m.branch == branch)
    act = next(m for m in module.modules() if isinstance(m, SignActivation))
    inp = torch.tensor([x], requires_grad=True)
    act(inp).sum().backward()
    return float(inp.grad)


def zero_binary_weights(model) -> None:
    """Every binary weight zero: alpha = mean|W| = 0, so each LBRM/HBRM is the identity."""
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.weight.zero_()


class FakeTrainer:
    def __init__(self, model, iterations):
        self.model = model
        self.total_iterations = iterations


@pytest.mark.parametrize(
    "iteration, low_t, high_t", [(0, 1.0, 2.0), (49, 1.0, 2.0), (50, 2.0, 2.0), (199, 2.0, 2.0), (200, 4.0, 4.0), (999, 4.0, 4.0)]
)
def test_schedule_changes_the_gradient_at_the_configured_points(iteration, low_t, high_t):
    model = tinysr.create_model("fabnet_b4c12", scale=2)
    DynamicEstimatorSchedule().on_step_start(FakeTrainer(model, 1000), iteration)
    # derivative of FABNet's polynomial at x = 0.1: t - (t^2 / 2) * 0.1
    assert activation_gradient(model, "low") == pytest.approx(low_t - low_t**2 / 2 * 0.1)
    assert activation_gradient(model, "high") == pytest.approx(high_t - high_t**2 / 2 * 0.1)


def test_custom_schedule_and_bad_schedule():
    model = tinysr.create_model("fabnet_b4c12", scale=2)
    cb = DynamicEstimatorSchedule(low=[[0, 3.0]], high=[[0, 2.0], [0.5, 8.0]])
    cb.on_step_start(FakeTrainer(model, 10), 5)
    assert activation_gradient(model, "low") == pytest.approx(3 - 4.5 * 0.1)
    assert activation_gradient(model, "high", x=0.05) == pytest.approx(8 - 32 * 0.05)
    with pytest.raises(tinysr.TinySRError):
        DynamicEstimatorSchedule(low=[[0.1, 2.0]])


def test_thresholds_fusion_and_recalibration_receive_gradients():
    torch.manual_seed(0)
    model = tinysr.create_model("fabnet_b8c96", scale=2, blocks=2, channels=8)
    model(torch.rand(1, 3, 6, 6)).mean().backward()
    assert model.fusion.weights.grad is not None and model.fusion.weights.grad.abs().sum() > 0
    thresholds = [m.act_quantizer.threshold for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert thresholds and all(t.grad is not None for t in thresholds)
    # the recalibration's last FC starts at zero (the identity), so its gradient is where learning starts
    assert model.high[3].act2.fc2.weight.grad.abs().sum() > 0
    assert model.fusion.weights.numel() == 3 and float(model.fusion.weights[0].detach()) == pytest.approx(1 / 3)


def test_binary_convs_run_at_half_hr_and_costs_split():
    p = tinysr.profile(tinysr.create_model("fabnet_b4c24", scale=4), lr_size=(180, 320))
    half = (180 * 4 // 2) * (320 * 4 // 2)
    low, high = 8 * 24 * 24 * 9, 16 * 72 * 72 * 9  # 4 LBRMs and 8 HBRMs, 2 binary convs each
    assert p.bops == half * (low + high)
    assert p.flops == 180 * 4 * 320 * 4 * (3 * 24 * 9 + 24 * 3 * 9)  # FP head and tail at HR


def test_zero_binary_weights_reduce_fabnet_to_its_wavelet_skeleton():
    # With every binary weight zero (alpha = mean|W| = 0) each LBRM/HBRM is the identity, so the
    # network is tail(IDWT(LL, 2 * high)) + bicubic: the fusion picks d_0 * LL and the high branch's
    # long skip doubles its input. This checks the wiring and that the DWT/IDWT pair loses nothing.
    from tinysr.nn import haar_dwt, haar_idwt

    torch.manual_seed(0)
    model = tinysr.create_model("fabnet_b4c12", scale=2).eval()
    with torch.no_grad():
        zero_binary_weights(model)
        model.fusion.weights.copy_(torch.tensor([1.0, 0, 0, 0, 0]))
        x = torch.rand(1, 3, 7, 9)
        base = model.upsample(x)
        feat = model.head(base)
        ll, high = haar_dwt(feat)
        expected = model.tail(haar_idwt(ll, 2 * high, size=feat.shape[-2:])) + base
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_nosplit_control_matches_width_and_ops():
    # The ablation control keeps FABNet-B4C24's HR/2 resolution and 4C width; 5 modules give the
    # nearest binary OPs (+5%), counted independently here from the layer shapes.
    p = tinysr.profile(tinysr.create_model("fabnet_nosplit", scale=2), lr_size=(180, 320))
    fab = tinysr.profile(tinysr.create_model("fabnet_b4c24", scale=2), lr_size=(180, 320))
    half = 180 * 320  # x2: HR/2 = LR size
    assert p.bops == half * 5 * 2 * 96 * 96 * 9
    assert fab.bops == half * (8 * 24 * 24 * 9 + 16 * 72 * 72 * 9)
    assert 1.0 < p.bops / fab.bops < 1.06 and p.flops == fab.flops


def test_nosplit_control_with_zero_binary_weights_is_its_skeleton():
    # Identity modules: the body's long skip doubles the folded features, and pixel-shuffle undoes
    # pixel-unshuffle exactly (odd sizes included).
    torch.manual_seed(0)
    model = tinysr.create_model("fabnet_nosplit", scale=2, channels=6, modules=2).eval()
    with torch.no_grad():
        zero_binary_weights(model)
        x = torch.rand(1, 3, 7, 9)
        base = model.upsample(x)
        torch.testing.assert_close(model(x), model.tail(2 * model.head(base)) + base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, params", [("fabnet_b4c12", 8_168), ("fabnet_b4c24", 28_640), ("fabnet_b4c36", 61_424), ("fabnet_b8c96", 836_676)]
)
def test_parameter_counts_equal_the_official_code(name, params):
    """Counts of the official FABNet-PyTorch modules (binary weights at 1/32, SPEC §3)."""
    cost = tinysr.profile(tinysr.create_model(name, scale=2), lr_size=(180, 320))
    assert cost.params == params
    if name == "fabnet_b8c96":  # four Attention units, each 288 -> 6 -> 576 with biases
        assert sum(layer.params_fp for layer in cost.layers if layer.kind == "Linear") == 4 * (288 * 6 + 6 + 6 * 576 + 576) == 23_064


def test_b8c96_recalibrates_the_second_activation_of_every_fourth_hbrm():
    model = tinysr.create_model("fabnet_b8c96", scale=2)
    recalibrated = [i for i, m in enumerate(model.high) if isinstance(m.act2, RecalibratedActivation)]
    assert recalibrated == [3, 7, 11, 15] and len(model.high) == 16
    assert not any(isinstance(m.act1, RecalibratedActivation) for m in model.high)
    assert all(model.high[i].branch == "recalibrated" for i in recalibrated) and model.high[0].branch == "high"
    unit = model.high[3].act2
    assert (unit.fc1.in_features, unit.fc1.out_features, unit.fc2.out_features) == (288, 6, 576)


def test_recalibrated_activation_is_the_identity_at_initialisation_and_spans_its_ranges():
    torch.manual_seed(0)
    unit = RecalibratedActivation(96, reduction=48)
    x = torch.randn(2, 96, 5, 7) * 3
    assert torch.equal(unit(x), x)
    with torch.no_grad():  # saturate: theta -> +-1 gives phi in (0, 2) and eps in (-1/2, 1/2)
        unit.fc2.bias.copy_(torch.tensor([50.0, -50.0]).repeat(96))
    y = unit(torch.ones(1, 96, 1, 1))
    torch.testing.assert_close(y, torch.full_like(y, 2.0 - 0.5), rtol=1e-5, atol=1e-5)  # phi = 2, eps = -1/2, channel c at 2c, 2c+1


def test_recalibrated_hbrms_switch_their_estimator_at_15_percent():
    model = tinysr.create_model("fabnet_b8c96", scale=2, blocks=2, channels=8)
    cb = DynamicEstimatorSchedule()
    cb.on_step_start(FakeTrainer(model, 1000), 149)
    assert activation_gradient(model, "recalibrated") == pytest.approx(2 - 2 * 0.1)
    assert activation_gradient(model, "high") == pytest.approx(2 - 2 * 0.1)
    cb.on_step_start(FakeTrainer(model, 1000), 150)
    assert activation_gradient(model, "recalibrated") == pytest.approx(4 - 8 * 0.1)
    assert activation_gradient(model, "high") == pytest.approx(2 - 2 * 0.1)  # the others at 20%


def test_zero_binary_weights_reduce_b8c96_to_its_wavelet_skeleton():
    # As for B4C12 below: with zero binary weights every module is the identity (the recalibrated
    # activation of a zero input is eps = 0 at initialisation), so the network is its skeleton.
    from tinysr.nn import haar_dwt, haar_idwt

    torch.manual_seed(1)
    model = tinysr.create_model("fabnet_b8c96", scale=2, channels=8).eval()
    with torch.no_grad():
        zero_binary_weights(model)
        x = torch.rand(1, 3, 6, 5)
        base = model.upsample(x)
        feat = model.head(base)
        ll, high = haar_dwt(feat)
        expected = model.tail(haar_idwt(ll, 2 * high, size=feat.shape[-2:])) + base  # fusion weights sum to 1
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_official_training_options():
    """FABNet's code: binary weights from U(0, 0.001), the clip weight estimator, a detached scale,
    and the network working on [0, 255] pixels inside."""
    torch.manual_seed(0)
    model = tinysr.create_model("fabnet_b4c12", scale=2, init="official", weight_estimator="clip", pixel_range=255.0)
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert weights and all(float(w.min()) >= 0 and float(w.max()) < 0.001 for w in weights)
    assert all(
        m.weight_quantizer.estimator == "clip" and m.weight_quantizer.detach_scale for m in model.modules() if isinstance(m, BinaryConv2d)
    )
    seen = {}
    model.head.register_forward_pre_hook(lambda m, inp: seen.__setitem__("max", float(inp[0].max())))
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        out = model(x)
        assert seen["max"] > 100  # the layers see pixels in [0, 255]
        torch.testing.assert_close(out, model.features(255 * x) / 255)
    default = tinysr.create_model("fabnet_b4c12", scale=2)
    assert any(float(m.weight.detach().min()) < 0 for m in default.modules() if isinstance(m, BinaryConv2d))
    with pytest.raises(ValueError, match="init"):
        tinysr.create_model("fabnet_b4c12", scale=2, init="xavier")


def test_paper_schedule_preset_runs_the_low_branch_from_a_quarter():
    model = tinysr.create_model("fabnet_b4c12", scale=2)
    cb = DynamicEstimatorSchedule(preset="paper")
    for iteration, low_t in ((0, 0.25), (49, 0.25), (50, 0.5), (100, 1.0), (150, 2.0), (200, 4.0)):
        cb.on_step_start(FakeTrainer(model, 1000), iteration)
        assert activation_gradient(model, "low", x=0.1) == pytest.approx(low_t - low_t * low_t / 2 * 0.1), iteration
    assert cb.schedules["high"] == DynamicEstimatorSchedule().schedules["high"]
    with pytest.raises(tinysr.TinySRError, match="unknown preset"):
        DynamicEstimatorSchedule(preset="table3")


def test_odd_sizes_follow_the_official_transform_and_crop():
    # pytorch_wavelets' symmetric mode repeats the last row / column for Haar, and the official
    # forward crops after conv_last_h, so the tail conv sees that padded row
    import torch.nn.functional as F

    from tinysr.nn import haar_dwt

    x = torch.randn(1, 2, 7, 9)
    for got, want in zip(haar_dwt(x), haar_dwt(F.pad(x, (0, 1, 0, 1), mode="replicate"))):
        assert torch.equal(got, want)
    torch.manual_seed(0)
    model = tinysr.create_model("fabnet_b4c12", scale=3, upsample="bicubic").eval()
    lr = torch.rand(1, 3, 5, 6)  # 15 x 18 at x3: an odd height
    with torch.no_grad():
        base = F.interpolate(lr, scale_factor=3, mode="bicubic", align_corners=False)
        feat = model.head(base)
        ll, high = model.dwt(feat)
        outs = [ll]
        for module in model.low:
            outs.append(module(outs[-1]))
        full = model.tail(model.idwt(model.fusion(outs), high + model.high(high)))
        assert torch.allclose(model(lr), full[..., :15, :18] + base, atol=1e-6)


@pytest.mark.parametrize("mode", ["bicubic", "nearest"])
def test_the_official_upsamplers_are_pytorchs_interpolate(mode):
    import torch.nn.functional as F

    model = tinysr.create_model("fabnet_b4c12", scale=2, upsample=mode)
    x = torch.rand(1, 3, 6, 7)
    kwargs = {"align_corners": False} if mode == "bicubic" else {}
    assert torch.equal(model.upsample(x), F.interpolate(x, scale_factor=2, mode=mode, **kwargs))
    with pytest.raises(ValueError, match="upsample must be one of"):
        tinysr.create_model("fabnet_b4c12", scale=2, upsample="lanczos")

"""FABNet (SPEC §5.5): the estimator schedule seen through gradients, learnable parts, cost split."""

import pytest
import torch

import tinysr
from tinysr.models.fabnet import DynamicEstimatorSchedule, FrequencyBinaryModule
from tinysr.nn import BinaryConv2d, SignActivation


def activation_gradient(model, branch: str, x: float = 0.1) -> float:
    """d sign(x)/dx as the first dynamic activation of ``branch`` sees it in backward."""
    module = next(m for m in model.modules() if isinstance(m, FrequencyBinaryModule) and m.branch == branch)
    act = next(m for m in module.modules() if isinstance(m, SignActivation))
    inp = torch.tensor([x], requires_grad=True)
    act(inp).sum().backward()
    return float(inp.grad)


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
    model = tinysr.create_model("fabnet_b8c96", scale=2, blocks=1, channels=8)
    model(torch.rand(1, 3, 6, 6)).mean().backward()
    assert model.fusion.weights.grad is not None and model.fusion.weights.grad.abs().sum() > 0
    thresholds = [m.act_quantizer.threshold for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert thresholds and all(t.grad is not None for t in thresholds)
    assert model.high[0].act1.fc1.weight.grad is not None
    assert model.fusion.weights.numel() == 2 and float(model.fusion.weights[0].detach()) == pytest.approx(0.5)


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
        for m in model.modules():
            if isinstance(m, BinaryConv2d):
                m.weight.zero_()
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
        for m in model.modules():
            if isinstance(m, BinaryConv2d):
                m.weight.zero_()
        x = torch.rand(1, 3, 7, 9)
        base = model.upsample(x)
        torch.testing.assert_close(model(x), model.tail(2 * model.head(base)) + base, rtol=1e-5, atol=1e-5)

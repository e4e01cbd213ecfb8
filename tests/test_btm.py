"""BTM's input statistics callback and IBTM's multi-stage distillation loss (SPEC §5.4)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinysr
from tinysr.data import TrainPatches
from tinysr.models.btm import MultiStageDistillation, spatial_softmax
from tinysr.plugins import Step
from tinysr.train import parse_config, train
from train_helpers import make_folders, tiny_recipe


@pytest.fixture(scope="module")
def folders(data_dir, tmp_path_factory):
    return make_folders(data_dir, tmp_path_factory.mktemp("data"))


def small(name, **kw):
    return {"name": name, "kwargs": {"channels": 8, "blocks": 2, **kw}}


def test_input_stats_are_the_training_set_statistics(tmp_path, folders):
    recipe = tiny_recipe(*folders, iterations=2)
    recipe["model"] = small("edsr_btm")
    recipe["callbacks"] = [{"name": "input_stats"}]
    model = tinysr.load(train(parse_config(recipe), tmp_path / "run", device="cpu", progress=False))
    lr = TrainPatches([folders[0]], 2, 8).lr_images
    pixels = np.concatenate([img.reshape(-1, 3) for img in lr]).astype(np.float64) / 255
    np.testing.assert_allclose(model.input_mean.flatten().numpy(), pixels.mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.input_std.flatten().numpy(), pixels.std(0, ddof=1), rtol=1e-4)


def test_normalisation_is_undone_at_the_output():
    torch.manual_seed(0)
    model = tinysr.create_model("vdsr_btm", scale=2, channels=8, blocks=1).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
        model.set_input_stats(torch.tensor([0.2, 0.5, 0.7]), torch.tensor([0.1, 0.3, 2.0]))
        x = torch.rand(1, 3, 6, 6)
        # With a zero residual, VDSR-BTM is its bicubic upsampler, whatever the statistics.
        torch.testing.assert_close(model(x), tinysr.imresize(x, 2), rtol=1e-5, atol=1e-5)


def test_kd_loss_is_zero_against_itself_and_trains_the_student(tmp_path):
    torch.manual_seed(0)
    teacher = tinysr.create_model("edsr_ibtm", scale=2, channels=8, blocks=4, binary=False)
    tinysr.save(teacher, tmp_path / "teacher.safetensors")

    class FakeTrainer:
        device = torch.device("cpu")
        load_model = staticmethod(tinysr.load)

    same = MultiStageDistillation(str(tmp_path / "teacher.safetensors"), beta=1.0, gamma=1.0)
    FakeTrainer.model = tinysr.load(tmp_path / "teacher.safetensors")
    same.setup(FakeTrainer)
    assert same.stages == [3]  # every 4th block and the last
    lr = torch.rand(2, 3, 8, 8)
    sr = FakeTrainer.model(lr)
    assert float(same(Step(0, lr, None, sr)).detach()) == pytest.approx(0.0, abs=1e-6)

    student = tinysr.create_model("edsr_ibtm", scale=2, channels=8, blocks=4)
    FakeTrainer.model = student
    kd = MultiStageDistillation(str(tmp_path / "teacher.safetensors"), stages=[1, 3])
    kd.setup(FakeTrainer)
    loss = kd(Step(0, lr, None, student(lr)))
    assert loss > 0
    loss.backward()
    assert student.net.body[1].conv.weight.grad is not None


def test_spatial_softmax_sums_to_one_per_channel():
    g = spatial_softmax(torch.randn(2, 3, 4, 5))
    torch.testing.assert_close(g.sum(-1), torch.ones(2, 3))


def test_kd_loss_matches_its_formula_at_the_papers_pixel_range(tmp_path):
    """(beta * L1(F_S^n, F_T^n) + gamma * sum_i KL(G_S^i || G_T^i)) / pixel_range, recomputed here with
    torch's own KL (kl_div takes log-probabilities of the second argument)."""
    torch.manual_seed(1)
    teacher = tinysr.create_model("edsr_ibtm", scale=2, channels=8, blocks=4, binary=False)
    tinysr.save(teacher, tmp_path / "teacher.safetensors")
    student = tinysr.create_model("edsr_ibtm", scale=2, channels=8, blocks=4)

    class FakeTrainer:
        device = torch.device("cpu")
        load_model = staticmethod(tinysr.load)
        model = student

    lr = torch.rand(2, 3, 8, 8)
    feats = {}
    for name, net in (("s", student), ("t", teacher)):
        for i in (1, 3):
            net.body[i].register_forward_hook(lambda m, inp, out, key=(name, i): feats.__setitem__(key, out.detach()))
        net(lr)
    softmaxed = {key: f.flatten(2).softmax(-1) for key, f in feats.items()}
    kl = sum(F.kl_div(softmaxed["t", i].log(), softmaxed["s", i], reduction="none").sum(-1).mean() for i in (1, 3))
    expected = 0.5 * (feats["s", 3] - feats["t", 3]).abs().mean() + 2.0 * kl

    for pixel_range in (255.0, 1.0):
        kd = MultiStageDistillation(str(tmp_path / "teacher.safetensors"), beta=0.5, gamma=2.0, stages=[1, 3], pixel_range=pixel_range)
        kd.setup(FakeTrainer)
        loss = kd(Step(0, lr, None, student(lr)))
        torch.testing.assert_close(loss.detach(), expected / pixel_range, rtol=1e-4, atol=1e-7)

    # SPEC §5.4's formula as written: the beta term on the softmaxed last-stage features G^n.
    literal = 0.5 * (softmaxed["s", 3] - softmaxed["t", 3]).abs().mean() + 2.0 * kl
    kd = MultiStageDistillation(str(tmp_path / "teacher.safetensors"), beta=0.5, gamma=2.0, stages=[1, 3], last_stage="softmax")
    kd.setup(FakeTrainer)
    loss = kd(Step(0, lr, None, student(lr)))
    torch.testing.assert_close(loss.detach(), literal / 255.0, rtol=1e-4, atol=1e-9)
    assert not torch.isclose(literal, expected)  # the two forms are told apart by this check

    with pytest.raises(tinysr.TinySRError, match="pixel_range"):
        MultiStageDistillation("t.safetensors", pixel_range=0)
    # The notes' other reading: the beta term on the SR outputs, in pixels like the l1 term.
    with torch.no_grad():
        teacher_sr, student_sr = teacher(lr), student(lr)
    on_outputs = 0.5 * (student_sr - teacher_sr).abs().mean() + 2.0 * kl / 255.0
    kd = MultiStageDistillation(str(tmp_path / "teacher.safetensors"), beta=0.5, gamma=2.0, stages=[1, 3], last_stage="output")
    kd.setup(FakeTrainer)
    loss = kd(Step(0, lr, None, student(lr)))
    torch.testing.assert_close(loss.detach(), on_outputs, rtol=1e-4, atol=1e-7)

    with pytest.raises(tinysr.TinySRError, match="last_stage must be one of features, softmax, output, got 'raw'"):
        MultiStageDistillation("t.safetensors", last_stage="raw")


@pytest.mark.parametrize("binary", [True, False])
def test_init_is_xavier_uniform_or_torchs_default(binary):
    """BTM's Xavier-uniform rule, U(+-sqrt(6 / (fan_in + fan_out))), and torch's default conv init,
    U(+-1 / sqrt(fan_in)), told apart by the body convs' bound and variance (a uniform's is bound^2 / 3)."""
    fan = 64 * 9  # a 3x3 body conv, 64 -> 64 channels
    for init, bound in (("xavier", (6 / (2 * fan)) ** 0.5), ("default", fan**-0.5)):
        torch.manual_seed(0)
        model = tinysr.create_model("edsr_ibtm", scale=2, blocks=1, binary=binary, init=init)
        w = model.body[0].conv.weight.detach()
        assert w.abs().max() <= bound
        assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.03)


def test_init_is_checked():
    with pytest.raises(ValueError, match="init must be one of"):
        tinysr.create_model("edsr_btm", scale=2, channels=8, blocks=1, init="kaiming")

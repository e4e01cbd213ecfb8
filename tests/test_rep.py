"""Re-parameterization (SPEC §7): merged == training form, frozen BN, plain merged networks."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import tinysr
from tinysr.cli import main
from tinysr.compress import reparameterize
from tinysr.models.repsr import FreezeBN
from tinysr.nn.rep import ECB, EdgeBranch, FreezableBatchNorm2d, RepSRBlock, RepVGGBlock


def randomize(module: nn.Module, edge_scale: float = 1.0) -> nn.Module:
    """Random BN statistics and affine parameters, random edge scales: nothing left at identity."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, FreezableBatchNorm2d):
            m.running_mean.uniform_(-1, 1, generator=g)
            m.running_var.uniform_(0.5, 2, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.5, 0.5, generator=g)
        if isinstance(m, EdgeBranch):
            m.scale.data.normal_(generator=g).mul_(edge_scale)
            m.bias.data.normal_(generator=g).mul_(edge_scale)
    return module.eval()


@pytest.mark.parametrize(
    "block", [RepSRBlock, ECB, lambda i, o: ECB(i, o, identity=True), RepVGGBlock], ids=["repsr", "ecb", "ecb_id", "repvgg"]
)
@pytest.mark.parametrize("cin, cout", [(8, 8), (3, 8), (8, 12)])
def test_every_block_merges_exactly(block, cin, cout):
    torch.manual_seed(1)
    b = randomize(block(cin, cout))
    x = torch.rand(2, cin, 9, 11)
    with torch.no_grad():
        assert (b(x) - b.reparameterize()(x)).abs().max() <= 1e-4


NETWORKS = ["repsr_m4c16", "ecbsr_m4c16", "ecbsr_m4c32", "repvgg_sr", "repsr"]


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("scale", [2, 4])
def test_whole_networks_merge_into_plain_basenet(name, scale, tmp_path):
    """The acceptance bound: float32, realistic weights (outputs of order 1), max abs diff <= 1e-4."""
    torch.manual_seed(2)
    model = randomize(tinysr.create_model(name, scale=scale), edge_scale=0.05)
    merged = reparameterize(model)
    plain_types = {nn.Conv2d, nn.PReLU, nn.PixelShuffle, nn.ModuleList}
    assert {type(m) for m in merged.modules()} - {type(merged)} <= plain_types
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        out = model(x)
        assert out.abs().max() < 50  # a realistic range, so an absolute tolerance means something
        assert (out - merged(x)).abs().max() <= 1e-4
    tinysr.save(merged, tmp_path / "m.safetensors")  # the merged file loads on its own
    with torch.no_grad():
        assert torch.equal(tinysr.load(tmp_path / "m.safetensors")(x), merged(x))
    assert (
        tinysr.profile(merged, (180, 320)).flops
        == tinysr.profile(tinysr.create_model("basenet", scale=scale, channels=merged.channels), (180, 320)).flops
    )


@pytest.mark.parametrize("name", NETWORKS)
def test_merge_is_exact_in_float64_even_with_extreme_weights(name):
    torch.manual_seed(3)
    model = randomize(tinysr.create_model(name, scale=3)).double()
    merged = reparameterize(model)
    x = torch.rand(1, 3, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        assert (out - merged(x)).abs().max() <= 1e-9 * max(1.0, float(out.abs().max()))


def test_frozen_bn_uses_population_statistics_and_keeps_learning():
    bn = randomize(FreezableBatchNorm2d(4)).train()
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    before = bn.running_mean.clone()
    bn.freeze_stats = True
    out = bn(x)
    torch.testing.assert_close(out, bn.eval()(x))
    assert torch.equal(bn.running_mean, before)
    bn.train()
    out = bn(x)
    out.sum().backward()
    assert bn.weight.grad is not None and bn.bias.grad is not None
    bn.freeze_stats = False
    bn(x)
    assert not torch.equal(bn.running_mean, before)  # ordinary BN updates its statistics


def test_freeze_bn_callback_switches_at_the_configured_fraction():
    model = tinysr.create_model("repsr", scale=2)
    trainer = SimpleNamespace(model=model, total_iterations=100)
    bns = [m for m in model.modules() if isinstance(m, FreezableBatchNorm2d)]
    FreezeBN(at=0.9).on_step_start(trainer, 89)
    assert not any(bn.freeze_stats for bn in bns)
    FreezeBN(at=0.9).on_step_start(trainer, 90)
    assert all(bn.freeze_stats for bn in bns)
    FreezeBN(at=0.9, enabled=False).on_step_start(trainer, 95)
    assert not any(bn.freeze_stats for bn in bns)


def test_reparameterize_rejects_models_without_mergeable_blocks():
    with pytest.raises(tinysr.TinySRError, match="vdsr has no re-parameterizable blocks"):
        reparameterize(tinysr.create_model("vdsr", scale=2))


def test_cli_deploy(tmp_path, capsys):
    torch.manual_seed(4)
    model = randomize(tinysr.create_model("ecbsr_m4c16", scale=2), edge_scale=0.05)
    tinysr.save(model, tmp_path / "train.safetensors")
    assert main(["deploy", "-m", str(tmp_path / "train.safetensors"), "-o", str(tmp_path / "plain.safetensors")]) == 0
    plain = tinysr.load(tmp_path / "plain.safetensors")
    assert plain.tinysr_spec.transformed_by("reparameterize") and "merged into plain convs" in capsys.readouterr().out
    basenet = tinysr.create_model("basenet", scale=2)  # the merged file holds a plain basenet's weights
    basenet.load_state_dict(plain.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(basenet.eval()(torch.ones(1, 3, 5, 5)), plain(torch.ones(1, 3, 5, 5)))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert (plain(x) - model(x)).abs().max() <= 1e-4
    tinysr.save(tinysr.create_model("vdsr", scale=2, depth=3), tmp_path / "vdsr.safetensors")
    assert main(["deploy", "-m", str(tmp_path / "vdsr.safetensors"), "-o", str(tmp_path / "x.safetensors")]) == 2


def test_ecb_masks_are_the_official_sobel_and_laplacian_filters():
    """The values of the official ECBSR code's masks (a merge test holds for any mask, so pin them)."""
    sobel_x = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
    sobel_y = torch.tensor([[1.0, 2, 1], [0, 0, 0], [-1, -2, -1]])
    laplacian = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
    block = ECB(4, 6)
    for edge, mask in zip(block.edges, (sobel_x, sobel_y, laplacian)):
        assert torch.equal(edge.mask, mask)


def test_ecbsr_widths_are_the_official_ones_by_default():
    """The conv1x1 -> conv3x3 branch expands to depth_multiplier x the block's *output* width."""
    model = tinysr.create_model("ecbsr_m4c16", scale=2)
    assert (model.head.expand.out_channels, model.body[0].expand.out_channels, model.tail.expand.out_channels) == (32, 32, 24)
    other = tinysr.create_model("ecbsr", scale=2, mid_width="input")
    assert (other.head.expand.out_channels, other.body[0].expand.out_channels, other.tail.expand.out_channels) == (6, 32, 32)
    # both merge into the same plain network
    assert tinysr.profile(reparameterize(model), (18, 32)).params == tinysr.profile(reparameterize(other), (18, 32)).params


def test_y_only_ecbsr_super_resolves_the_luma_and_upsamples_chroma_bicubically(tmp_path):
    """colors=1, the official ECBSR's setting: the net sees Y in [0, 1]; Cb/Cr are MATLAB bicubic."""
    from tinysr.io import rgb_to_ycbcr

    torch.manual_seed(6)
    model = randomize(tinysr.create_model("ecbsr", scale=2, colors=1), edge_scale=0.05).eval()
    assert model.net.head.conv3.in_channels == 1 and model.net.tail.conv3.out_channels == 4
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        out = rgb_to_ycbcr(model(x)) / 255
        ycc = rgb_to_ycbcr(x) / 255
        torch.testing.assert_close(out[:, :1], model.net(ycc[:, :1]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[:, 1:], tinysr.imresize(ycc[:, 1:], 2), rtol=1e-5, atol=1e-5)
        merged = reparameterize(model)
        assert (merged(x) - model(x)).abs().max() <= 1e-4
    # merged Y-only M4C16 x2: head 1->16, four 16->16, tail 16->4, as 3x3 convs with biases, and 5 PReLUs
    assert tinysr.profile(merged, (18, 32)).params == (9 * 16 + 16) + 4 * (9 * 256 + 16) + (9 * 64 + 4) + 5 * 16
    tinysr.save(merged, tmp_path / "y.safetensors")
    with torch.no_grad():
        assert torch.equal(tinysr.load(tmp_path / "y.safetensors")(x), merged(x))
    with pytest.raises(ValueError, match="colors"):
        tinysr.create_model("ecbsr", scale=2, colors=2)


def test_deploy_never_replaces_the_model_it_deploys_unless_told(tmp_path, capsys):
    model = tinysr.create_model("ecbsr_m4c16", scale=2)
    path = tmp_path / "m.safetensors"
    tinysr.save(model, path)
    before = path.read_bytes()
    assert main(["deploy", "-m", str(path), "-o", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would replace the model it deploys" in err[0] and "m.safetensors" in err[0]
    assert main(["deploy", "-m", str(path), "-o", str(tmp_path / "." / "m.safetensors")]) == 2
    assert path.read_bytes() == before
    assert main(["deploy", "-m", str(path), "-o", str(path), "--overwrite"]) == 0
    assert tinysr.load(path).tinysr_spec.transformed_by("reparameterize")

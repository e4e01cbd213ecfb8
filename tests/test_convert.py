"""Checkpoints of other codebases -> tinysr models (convert.py).

The state dicts here are built with each source's tensor names and shapes (read from its code:
EDSR-PyTorch's ``model/edsr.py`` + ``common.py``, BasicSR's ``archs/edsr_arch.py`` +
``arch_util.py``), and the references are each source's forward pass written out in functional
form at its own pixel range, independently of tinysr's model classes.
"""

from __future__ import annotations

import argparse
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

import tinysr
from tinysr.cli import main
from tinysr.convert import load_external
from tinysr.errors import TinySRError

MEAN = torch.tensor([0.4488, 0.4371, 0.4040])


def conv_tensors(gen, out_ch: int, in_ch: int, k: int = 3, bias_scale: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.randn(out_ch, in_ch, k, k, generator=gen) * (0.5 / math.sqrt(in_ch * k * k))
    return weight, torch.randn(out_ch, generator=gen) * bias_scale  # biases in units of 0-255 pixels


def upsampler_stages(scale: int) -> list[int]:
    return [3] if scale == 3 else [2] * int(math.log2(scale))


def edsr_pytorch_state(channels: int, blocks: int, scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """EDSR-PyTorch's names: head.0, body.{i}.body.{0,2}, body.{n}, tail.0.{2k}, tail.1, mean shifts."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def put(name, out_ch, in_ch, k=3):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = conv_tensors(gen, out_ch, in_ch, k)

    put("head.0", channels, 3)
    for i in range(blocks):
        put(f"body.{i}.body.0", channels, channels)
        put(f"body.{i}.body.2", channels, channels)
    put(f"body.{blocks}", channels, channels)
    for j, s in enumerate(upsampler_stages(scale)):
        put(f"tail.0.{2 * j}", s * s * channels, channels)
    put("tail.1", 3, channels)
    for name, sign in (("sub_mean", -1), ("add_mean", 1)):
        sd[f"{name}.weight"] = torch.eye(3).view(3, 3, 1, 1)
        sd[f"{name}.bias"] = sign * 255.0 * MEAN
    return sd


def edsr_pytorch_forward(sd: dict, x255: torch.Tensor, scale: int, res_scale: float) -> torch.Tensor:
    """EDSR.forward of EDSR-PyTorch on pixels in [0, 255]."""

    def conv(x, name):
        return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=sd[f"{name}.weight"].shape[-1] // 2)

    blocks = sum(1 for k in sd if k.endswith(".body.0.weight"))
    x = conv(conv(x255, "sub_mean"), "head.0")
    res = x
    for i in range(blocks):
        res = conv(F.relu(conv(res, f"body.{i}.body.0")), f"body.{i}.body.2").mul(res_scale) + res
    res = conv(res, f"body.{blocks}") + x
    for j, s in enumerate(upsampler_stages(scale)):
        res = F.pixel_shuffle(conv(res, f"tail.0.{2 * j}"), s)
    return conv(conv(res, "tail.1"), "add_mean")


def basicsr_state(channels: int, blocks: int, scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """BasicSR's EDSR names: conv_first, body.{i}.conv{1,2}, conv_after_body, upsample.{2k}, conv_last."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def put(name, out_ch, in_ch):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = conv_tensors(gen, out_ch, in_ch)

    put("conv_first", channels, 3)
    for i in range(blocks):
        put(f"body.{i}.conv1", channels, channels)
        put(f"body.{i}.conv2", channels, channels)
    put("conv_after_body", channels, channels)
    for j, s in enumerate(upsampler_stages(scale)):
        put(f"upsample.{2 * j}", s * s * channels, channels)
    put("conv_last", 3, channels)
    return sd


def basicsr_forward(sd: dict, x: torch.Tensor, scale: int, res_scale: float) -> torch.Tensor:
    """EDSR.forward of BasicSR: input in [0, 1], (x - mean) * 255 inside, output y / 255 + mean."""

    def conv(t, name):
        return F.conv2d(t, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)

    blocks = sum(1 for k in sd if k.endswith(".conv1.weight"))
    mean = MEAN.view(1, 3, 1, 1)
    feat = conv((x - mean) * 255.0, "conv_first")
    res = feat
    for i in range(blocks):
        res = res + conv(F.relu(conv(res, f"body.{i}.conv1")), f"body.{i}.conv2") * res_scale
    res = conv(res, "conv_after_body") + feat
    for j, s in enumerate(upsampler_stages(scale)):
        res = F.pixel_shuffle(conv(res, f"upsample.{2 * j}"), s)
    return conv(res, "conv_last") / 255.0 + mean


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_pytorch_checkpoint_converts_to_the_same_function_on_0_1_pixels(scale, tmp_path):
    sd = edsr_pytorch_state(channels=16, blocks=3, scale=scale)
    torch.save(sd, tmp_path / "edsr.pt")
    model, options = load_external(tmp_path / "edsr.pt", "edsr-pytorch")
    assert options == {"scale": scale, "channels": 16, "blocks": 3, "res_scale": 1.0}
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        got = model(x)
        want = edsr_pytorch_forward(sd, x * 255.0, scale, 1.0) / 255.0
    assert got.shape == (1, 3, 11 * scale, 13 * scale)
    assert (got - want).abs().max() < 1e-5  # float rounding: the 255 moved from the pixels to the biases
    assert want.std() > 0.02  # the reference output is not flat: the comparison can fail


def test_edsr_pytorch_residual_scaling_is_inferred_for_edsr_and_can_be_given(tmp_path):
    sd = edsr_pytorch_state(channels=16, blocks=2, scale=2, seed=1)
    torch.save(sd, tmp_path / "edsr.pt")
    model, options = load_external(tmp_path / "edsr.pt", "edsr-pytorch", res_scale=0.1)
    assert options["res_scale"] == 0.1
    x = torch.rand(1, 3, 9, 8)
    with torch.no_grad():
        assert (model(x) - edsr_pytorch_forward(sd, x * 255.0, 2, 0.1) / 255.0).abs().max() < 1e-5
    # EDSR itself (32 blocks x 256 channels): 0.1 without being told; shapes only, no forward
    big = {}
    for i in range(32):
        for j in (0, 2):
            big[f"body.{i}.body.{j}.weight"], big[f"body.{i}.body.{j}.bias"] = torch.zeros(256, 256, 3, 3), torch.zeros(256)
    big["head.0.weight"], big["head.0.bias"] = torch.zeros(256, 3, 3, 3), torch.zeros(256)
    big["body.32.weight"], big["body.32.bias"] = torch.zeros(256, 256, 3, 3), torch.zeros(256)
    big["tail.0.0.weight"], big["tail.0.0.bias"] = torch.zeros(1024, 256, 3, 3), torch.zeros(1024)
    big["tail.1.weight"], big["tail.1.bias"] = torch.zeros(3, 256, 3, 3), torch.zeros(3)
    torch.save(big, tmp_path / "edsr_x2.pt")
    model, options = load_external(tmp_path / "edsr_x2.pt", "edsr-pytorch")
    assert options == {"scale": 2, "channels": 256, "blocks": 32, "res_scale": 0.1}
    assert model.tinysr_spec.name == "edsr"
    assert torch.allclose(model.sub_mean.shift.flatten(), -MEAN)  # no mean shift stored: the DIV2K mean


@pytest.mark.parametrize("wrapper", ["params", "params_ema"])
def test_basicsr_checkpoint_converts_to_the_same_function(wrapper, tmp_path):
    sd = basicsr_state(channels=16, blocks=2, scale=4)
    other = basicsr_state(channels=16, blocks=2, scale=4, seed=9)
    saved = {"params": sd} if wrapper == "params" else {"params": other, "params_ema": sd}  # EMA preferred
    torch.save(saved, tmp_path / "edsr.pth")
    model, options = load_external(tmp_path / "edsr.pth", "basicsr")
    assert options == {"scale": 4, "channels": 16, "blocks": 2, "res_scale": 1.0}
    x = torch.rand(1, 3, 10, 7)
    with torch.no_grad():
        got, want = model(x), basicsr_forward(sd, x, 4, 1.0)
    assert (got - want).abs().max() < 1e-5
    assert want.std() > 0.02


def edited(sd: dict, change) -> dict:
    sd = dict(sd)
    change(sd)
    return sd


REFUSALS = [
    ("unknown tensor", lambda sd: sd.update({"body.1.body.4.weight": torch.zeros(16, 16, 3, 3)}), "body.1.body.4.weight"),
    ("missing tensor", lambda sd: sd.pop("tail.1.bias"), "missing tensor 'tail.1.bias'"),
    ("a name of no layer", lambda sd: sd.update({"head": torch.zeros(1)}), "unexpected tensor 'head'"),
    ("wrong shape", lambda sd: sd.update({"tail.1.weight": torch.zeros(4, 16, 3, 3)}), "'tail.1.weight' has shape (4, 16, 3, 3)"),
    ("gap in the blocks", lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("body.1.body.")], "numbered [0, 2]"),
    ("scaled mean shift", lambda sd: sd.update({"sub_mean.weight": 2 * torch.eye(3).view(3, 3, 1, 1)}), "not the identity"),
    (
        "no scale fits",
        lambda sd: sd.update({"tail.0.0.weight": torch.zeros(48, 16, 3, 3), "tail.0.0.bias": torch.zeros(48)}),
        "fit no scale",
    ),
]


@pytest.mark.parametrize("what, change, message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_what_cannot_be_mapped_is_refused_in_one_line(what, change, message, tmp_path, capsys):
    torch.save(edited(edsr_pytorch_state(16, 3, 2), change), tmp_path / "bad.pt")
    with pytest.raises(TinySRError, match="bad.pt") as err:
        load_external(tmp_path / "bad.pt", "edsr-pytorch")
    assert message in str(err.value)
    assert main(["convert", str(tmp_path / "bad.pt"), "-f", "edsr-pytorch", "-o", str(tmp_path / "out.safetensors")]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("tinysr: error:") and message in err_lines[0]
    assert not (tmp_path / "out.safetensors").exists()


def test_a_checkpoint_that_needs_code_to_unpickle_is_refused(tmp_path):
    torch.save({"args": argparse.Namespace(scale=2), **edsr_pytorch_state(16, 1, 2)}, tmp_path / "with_args.pt")
    with pytest.raises(TinySRError, match="refused, loading it would run code"):
        load_external(tmp_path / "with_args.pt", "edsr-pytorch")


def test_a_basicsr_checkpoint_of_another_architecture_is_named(tmp_path):
    sd = {"conv_first.weight": torch.zeros(64, 3, 3, 3), "conv_body.weight": torch.zeros(64, 64, 3, 3)}
    torch.save({"params": sd}, tmp_path / "rrdb.pth")
    with pytest.raises(TinySRError, match="an architecture tinysr has no model for \\(EDSR and MSRResNet convert\\)"):
        load_external(tmp_path / "rrdb.pth", "basicsr")
    with pytest.raises(TinySRError, match="unknown checkpoint format 'caffe'"):
        load_external(tmp_path / "rrdb.pth", "caffe")


def msrresnet_state(channels: int, blocks: int, scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """BasicSR's MSRResNet names: conv_first, body.{i}.conv{1,2}, upconv1/2, conv_hr, conv_last."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def put(name, out_ch, in_ch):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = conv_tensors(gen, out_ch, in_ch, bias_scale=0.05)

    put("conv_first", channels, 3)
    for i in range(blocks):
        put(f"body.{i}.conv1", channels, channels)
        put(f"body.{i}.conv2", channels, channels)
    for j, s in enumerate(upsampler_stages(scale)):
        put(f"upconv{j + 1}", s * s * channels, channels)
    put("conv_hr", channels, channels)
    put("conv_last", 3, channels)
    return sd


def msrresnet_forward(sd: dict, x: torch.Tensor, scale: int) -> torch.Tensor:
    """MSRResNet.forward of BasicSR, on [0, 1] pixels."""

    def conv(t, name):
        return F.conv2d(t, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)

    feat = F.leaky_relu(conv(x, "conv_first"), 0.1)
    for i in range(sum(1 for k in sd if k.endswith(".conv1.weight"))):
        feat = feat + conv(F.relu(conv(feat, f"body.{i}.conv1")), f"body.{i}.conv2")
    for j, s in enumerate(upsampler_stages(scale)):
        feat = F.leaky_relu(F.pixel_shuffle(conv(feat, f"upconv{j + 1}"), s), 0.1)
    out = conv(F.leaky_relu(conv(feat, "conv_hr"), 0.1), "conv_last")
    return out + F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_basicsr_msrresnet_converts_to_the_same_function(scale, tmp_path):
    sd = msrresnet_state(8, 2, scale)
    torch.save({"params_ema": sd}, tmp_path / "msrresnet.pth")
    model, options = load_external(tmp_path / "msrresnet.pth", "basicsr")
    assert options == {"scale": scale, "channels": 8, "blocks": 2} and model.tinysr_spec.name == "msrresnet"
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(model(x), msrresnet_forward(sd, x, scale), rtol=1e-5, atol=1e-5)
    torch.save({"params": {**sd, "conv_mid.weight": torch.zeros(8, 8, 3, 3)}}, tmp_path / "bad.pth")
    with pytest.raises(TinySRError, match="unexpected tensor 'conv_mid.weight' for BasicSR's MSRResNet"):
        load_external(tmp_path / "bad.pth", "basicsr")


def test_cli_convert_writes_a_model_file_that_loads_and_records_its_source(tmp_path, capsys):
    sd = edsr_pytorch_state(16, 2, 3)
    torch.save(sd, tmp_path / "edsr_x3.pt")
    out = tmp_path / "edsr_x3.safetensors"
    assert main(["convert", str(tmp_path / "edsr_x3.pt"), "-f", "edsr-pytorch", "-o", str(out)]) == 0
    assert "x3 (channels 16, blocks 2, res_scale 1)" in capsys.readouterr().out
    model = tinysr.load(out)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert (model(x) - edsr_pytorch_forward(sd, x * 255.0, 3, 1.0) / 255.0).abs().max() < 1e-5
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        source = json.loads(f.metadata()["converted_from"])
    assert source["format"] == "edsr-pytorch" and source["file"] == "edsr_x3.pt" and len(source["sha256"]) == 64
    before = out.read_bytes()
    assert main(["convert", str(tmp_path / "edsr_x3.pt"), "-f", "edsr-pytorch", "-o", str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before


def plainsr_state(channels: int, body: int, scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The official ECBSR's PlainSR names: backbone.{i}.conv3x3, backbone.{i}.act (PReLU), Y only."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    widths = [1] + [channels] * (body + 1) + [scale * scale]
    for i in range(body + 2):
        sd[f"backbone.{i}.conv3x3.weight"], sd[f"backbone.{i}.conv3x3.bias"] = conv_tensors(gen, widths[i + 1], widths[i])
        if i < body + 1:
            sd[f"backbone.{i}.act.weight"] = torch.rand(widths[i + 1], generator=gen) * 0.5
    return sd


def plainsr_forward(sd: dict, y255: torch.Tensor, scale: int, layer=None) -> torch.Tensor:
    """PlainSR.forward on the Y channel in [16, 235]: PixelShuffle(backbone(y) + y), each layer
    ``layer(i, x)`` (default: its conv3x3) then PReLU, the last one linear."""

    def conv3x3(i, x):
        return F.conv2d(x, sd[f"backbone.{i}.conv3x3.weight"], sd[f"backbone.{i}.conv3x3.bias"], padding=1)

    layer = layer or conv3x3
    layers = sum(1 for k in sd if k.endswith(".conv3x3.weight"))
    out = y255
    for i in range(layers):
        out = layer(i, out)
        if i < layers - 1:
            out = F.prelu(out, sd[f"backbone.{i}.act.weight"])
    return F.pixel_shuffle(out + y255, scale)


@pytest.mark.parametrize("scale", [2, 4])
def test_ecbsr_plain_checkpoint_converts_to_a_y_only_basenet(scale, tmp_path):
    sd = plainsr_state(channels=8, body=3, scale=scale)
    torch.save(sd, tmp_path / "plainsr.pt")
    model, options = load_external(tmp_path / "plainsr.pt", "ecbsr")
    assert options == {"scale": scale, "channels": 8, "blocks": 3, "colors": 1}
    y = 16 + torch.rand(1, 1, 9, 10) * 219  # the Y of skimage's rgb2ycbcr, in [16, 235]
    with torch.no_grad():
        got = model.net(y / 255.0)  # tinysr's Y-only models take that Y divided by 255
        want = plainsr_forward(sd, y, scale) / 255.0
    assert (got - want).abs().max() < 1e-5
    assert want.std() > 0.02
    x = torch.rand(1, 3, 9, 10)
    with torch.no_grad():
        assert model(x).shape == (1, 3, 9 * scale, 10 * scale)  # RGB in, RGB out (Cb, Cr by bicubic)


ECB_MASKS = {
    "sbx": [[1, 0, -1], [2, 0, -2], [1, 0, -1]],
    "sby": [[1, 2, 1], [0, 0, 0], [-1, -2, -1]],
    "lpl": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
}


def ecbsr_training_state(channels: int, body: int, scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The official ECBSR's training names (models/ecb.py): backbone.{i}.conv3x3, conv1x1_3x3.{k0,b0,k1,b1},
    conv1x1_{sbx,sby,lpl}.{k0,b0,scale,bias,mask}, act (PReLU; the last ECB is linear). Y only, mid = 2 x out."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    widths = [1] + [channels] * (body + 1) + [scale * scale]
    for i in range(body + 2):
        cin, cout, p = widths[i], widths[i + 1], f"backbone.{i}"
        sd[f"{p}.conv3x3.weight"], sd[f"{p}.conv3x3.bias"] = conv_tensors(gen, cout, cin)
        sd[f"{p}.conv1x1_3x3.k0"], sd[f"{p}.conv1x1_3x3.b0"] = conv_tensors(gen, 2 * cout, cin, k=1)
        sd[f"{p}.conv1x1_3x3.k1"], sd[f"{p}.conv1x1_3x3.b1"] = conv_tensors(gen, cout, 2 * cout)
        for edge, mask in ECB_MASKS.items():
            q = f"{p}.conv1x1_{edge}"
            sd[f"{q}.k0"], sd[f"{q}.b0"] = conv_tensors(gen, cout, cin, k=1)
            sd[f"{q}.scale"] = torch.randn(cout, 1, 1, 1, generator=gen) * 0.5
            sd[f"{q}.bias"] = torch.randn(cout, generator=gen) * 5
            sd[f"{q}.mask"] = torch.tensor(mask, dtype=torch.float32).expand(cout, 1, 3, 3).clone()
        if i < body + 1:
            sd[f"{p}.act.weight"] = torch.rand(cout, generator=gen) * 0.5
    return sd


def ecbsr_training_forward(sd: dict, y255: torch.Tensor, scale: int) -> torch.Tensor:
    """ECBSR.forward in training form: PlainSR's, each layer an ECB: conv3x3 + the four
    1x1-then-3x3 branches (the 1x1's output padded with its own bias)."""

    def seq(q, x, kernel, bias, groups=1):
        b0 = sd[f"{q}.b0"].view(1, -1, 1, 1)
        y0 = F.pad(F.conv2d(x, sd[f"{q}.k0"], sd[f"{q}.b0"]) - b0, (1, 1, 1, 1)) + b0
        return F.conv2d(y0, kernel, bias, groups=groups)

    def ecb(i, x):
        p = f"backbone.{i}"
        y = F.conv2d(x, sd[f"{p}.conv3x3.weight"], sd[f"{p}.conv3x3.bias"], padding=1)
        y = y + seq(f"{p}.conv1x1_3x3", x, sd[f"{p}.conv1x1_3x3.k1"], sd[f"{p}.conv1x1_3x3.b1"])
        for edge in ECB_MASKS:
            q = f"{p}.conv1x1_{edge}"
            y = y + seq(q, x, sd[f"{q}.scale"] * sd[f"{q}.mask"], sd[f"{q}.bias"], groups=y.shape[1])
        return y

    return plainsr_forward(sd, y255, scale, layer=ecb)


@pytest.mark.parametrize("scale", [2, 4])
def test_ecbsr_training_checkpoint_converts_to_a_y_only_ecbsr(scale, tmp_path):
    sd = ecbsr_training_state(channels=8, body=2, scale=scale)
    torch.save(sd, tmp_path / "ecbsr.pt")
    model, options = load_external(tmp_path / "ecbsr.pt", "ecbsr")
    assert options == {"scale": scale, "channels": 8, "blocks": 2, "colors": 1, "depth_multiplier": 2}
    y = 16 + torch.rand(1, 1, 9, 10) * 219
    with torch.no_grad():
        torch.testing.assert_close(model.net(y / 255) * 255, ecbsr_training_forward(sd, y, scale), rtol=1e-4, atol=1e-3)
    sd["backbone.1.conv1x1_lpl.mask"][0, 0, 1, 1] = 4.0  # not the official Laplacian
    torch.save(sd, tmp_path / "mask.pt")
    with pytest.raises(TinySRError, match="backbone.1.conv1x1_lpl.mask is not the Sobel / Laplacian mask"):
        load_external(tmp_path / "mask.pt", "ecbsr")


def test_ecbsr_plain_forms_other_widths_are_refused(tmp_path):
    sd = plainsr_state(channels=8, body=2, scale=2)
    torch.save({**sd, "backbone.1.conv1x1_3x3.k0": torch.zeros(16, 8, 1, 1)}, tmp_path / "ecb.pt")
    torch.save({**sd, "backbone.3.act.weight": torch.zeros(4)}, tmp_path / "act.pt")
    with pytest.raises(TinySRError, match="the last conv of PlainSR is linear"):
        load_external(tmp_path / "act.pt", "ecbsr")
    rgb = dict(sd)
    rgb["backbone.0.conv3x3.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(rgb, tmp_path / "rgb.pt")
    with pytest.raises(TinySRError, match="Y only"):
        load_external(tmp_path / "rgb.pt", "ecbsr")
    with pytest.raises(TinySRError, match="ECBSR has none"):
        load_external(tmp_path / "ecb.pt", "ecbsr", res_scale=0.1)


BBCU_UNIT_SHAPES = {"move0.bias": "in", "relu.pr_bias0.bias": "out", "relu.pr_prelu.weight": "prelu", "relu.pr_bias1.bias": "out"}


def bbcu_state(channels: int, blocks: int, scale: int, medium: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """BBCU's names and shapes (BBCUL / BBCUM): conv_first, body.{b}.body.{u}.*, upconv1/2, conv_hr, conv_last."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, out_ch, in_ch):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = conv_tensors(gen, out_ch, in_ch, bias_scale=0.05)

    def unit(name, in_ch, out_ch):
        sd[f"{name}.move0.bias"] = torch.randn(1, in_ch, 1, 1, generator=gen) * 0.3
        sd[f"{name}.binary_conv.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * 0.05
        sd[f"{name}.relu.pr_bias0.bias"] = torch.randn(1, out_ch, 1, 1, generator=gen) * 0.3
        sd[f"{name}.relu.pr_prelu.weight"] = torch.rand(out_ch, generator=gen) * 0.5
        sd[f"{name}.relu.pr_bias1.bias"] = torch.randn(1, out_ch, 1, 1, generator=gen) * 0.3

    conv("conv_first", channels, 3)
    for b in range(blocks):
        for u in range(2):
            unit(f"body.{b}.body.{u}", channels, channels)
    for j, s in enumerate(upsampler_stages(scale)):
        (unit if medium else conv)(f"upconv{j + 1}", *((channels, s * s * channels) if medium else (s * s * channels, channels)))
    (unit if medium else conv)("conv_hr", channels, channels)
    conv("conv_last", 3, channels)
    return sd


def bbcu_forward(sd: dict, x: torch.Tensor, scale: int, medium: bool, k: float = 130.0) -> torch.Tensor:
    """BBCUL.forward / BBCUM.forward on [0, 1] pixels, from the state dict (residual alignment k)."""

    def conv(name, h):
        return F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)

    def branch(name, h):  # RPReLU(bconv(sign(h + move0)))
        w = sd[f"{name}.binary_conv.weight"]
        a = torch.where(h + sd[f"{name}.move0.bias"] >= 0, 1.0, -1.0)
        y = F.conv2d(a, w.sign() * w.abs().mean(dim=(1, 2, 3), keepdim=True), padding=1)
        return F.prelu(y + sd[f"{name}.relu.pr_bias0.bias"], sd[f"{name}.relu.pr_prelu.weight"]) + sd[f"{name}.relu.pr_bias1.bias"]

    x = x * k
    f = F.leaky_relu(conv("conv_first", x), 0.1)
    blocks = len({key.split(".")[1] for key in sd if key.startswith("body.")})
    for b in range(blocks):
        for u in range(2):
            f = f + branch(f"body.{b}.body.{u}", f)
    for j, s in enumerate(upsampler_stages(scale)):
        if medium:
            f = F.pixel_shuffle(branch(f"upconv{j + 1}", f), s) + F.interpolate(f, scale_factor=s, mode="nearest")
        else:
            f = F.leaky_relu(F.pixel_shuffle(conv(f"upconv{j + 1}", f), s), 0.1)
    f = F.leaky_relu(f + branch("conv_hr", f) if medium else conv("conv_hr", f), 0.1)
    out = conv("conv_last", f) + F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return out / k


@pytest.mark.parametrize("medium", [False, True], ids=["bbcu_l", "bbcu_m"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bbcu_checkpoint_converts_to_the_same_function(medium, scale, tmp_path):
    sd = bbcu_state(8, 2, scale, medium)
    torch.save({"params": sd}, tmp_path / "bbcu.pth")
    model, options = load_external(tmp_path / "bbcu.pth", "bbcu")
    assert options == {"scale": scale, "channels": 8, "units": 4, "model": "bbcu_m" if medium else "bbcu_l"}
    # the shift before the sign is the negated threshold; RPReLU's first shift is negated too
    assert torch.equal(model.body[1].conv.act_quantizer.threshold, -sd["body.0.body.1.move0.bias"])
    assert torch.equal(model.body[2].post.shift_in, -sd["body.1.body.0.relu.pr_bias0.bias"])
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(model(x), bbcu_forward(sd, x, scale, medium), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda sd: sd.update({"body.0.body.0.binary_conv.bias": torch.zeros(8)}), "unexpected tensor 'body.0.body.0.binary_conv.bias'"),
        (lambda sd: sd.pop("conv_hr.bias"), "missing tensor 'conv_hr.bias'"),
        (lambda sd: sd.update({"conv_mid.weight": torch.zeros(8, 8, 3, 3)}), "unexpected tensor 'conv_mid.weight' for BBCU"),
    ],
    ids=["bias on a binary conv", "missing", "unknown layer"],
)
def test_what_bbcu_cannot_map_is_refused(change, message, tmp_path):
    torch.save({"params": edited(bbcu_state(8, 1, 2, medium=False), change)}, tmp_path / "bad.pth")
    with pytest.raises(TinySRError, match="bad.pth") as err:
        load_external(tmp_path / "bad.pth", "bbcu")
    assert message in str(err.value)
    with pytest.raises(TinySRError, match="--res-scale is EDSR's"):
        load_external(tmp_path / "bad.pth", "bbcu", res_scale=1.0)


def fabnet_state(channels: int, blocks: int, large: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """The official FABNet's names and shapes (FABNet_tiny.py / FABNet_large.py)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {"conv_head.weight": torch.randn(channels, 3, 3, 3, generator=gen), "conv_head.bias": torch.randn(channels, generator=gen)}

    def module(prefix: str, c: int, second: str, attention: bool = False):
        for i in (1, 2):
            sd[f"{prefix}.conv{i}.weight"] = torch.randn(c, c, 3, 3, generator=gen) * 0.01
        for i in (0, 1):
            sd[f"{prefix}.move{i}.bias"] = torch.randn(1, c, 1, 1, generator=gen)
        sd[f"{prefix}.relu11.weight"] = torch.rand(c, generator=gen)
        if attention:
            hidden = max(c // 48, 1)
            sd.update(
                {
                    f"{prefix}.attention.fc1.weight": torch.randn(hidden, c, generator=gen),
                    f"{prefix}.attention.fc1.bias": torch.zeros(hidden),
                }
            )
            sd.update(
                {
                    f"{prefix}.attention.fc2.weight": torch.randn(2 * c, hidden, generator=gen),
                    f"{prefix}.attention.fc2.bias": torch.randn(2 * c, generator=gen),
                }
            )
            sd.update({f"{prefix}.attention.lambdas": torch.tensor([1.0, 0.5]), f"{prefix}.attention.init_v": torch.tensor([1.0, 0.0])})
        else:
            sd[f"{prefix}.{second}.weight"] = torch.rand(c, generator=gen)

    for i in range(blocks):
        module(f"body_LL.{i}" if large else f"body_LL_{i + 1}", channels, "relu12")
    for i in range(2 * blocks):
        module(f"body_HH{i // 4 + 1}.{i % 4}" if large else f"body_HH.{i}", 3 * channels, "relu22", attention=large and i % 4 == 3)
    sd.update({"conv_last_h.weight": torch.randn(3, channels, 3, 3, generator=gen), "conv_last_h.bias": torch.randn(3, generator=gen)})
    sd.update({f"parameters{i + 1}": torch.rand(1, 1, 1, 1, generator=gen) for i in range(blocks + 1)})
    sd["DWTForward.h0_col"] = torch.full((1, 1, 2, 1), 0.5**0.5)  # pytorch_wavelets' Haar filter buffers
    if not large:
        sd["relu.weight"] = torch.tensor([0.25])  # the tiny code's unused PReLU
    return sd


def test_fabnet_high_band_order_maps_channel_major_to_band_major():
    from tinysr.convert import _fabnet_high_order
    from tinysr.nn import haar_dwt

    _, high = haar_dwt(torch.randn(1, 5, 8, 6))  # band-major: band * C + c
    channel_major = high.view(1, 3, 5, 4, 3).transpose(1, 2).reshape(1, 15, 4, 3)  # pytorch_wavelets': c * 3 + band
    assert torch.equal(channel_major[:, _fabnet_high_order(5)], high)


@pytest.mark.parametrize("large", [False, True], ids=["tiny", "large"])
def test_fabnet_checkpoint_maps_tensors_and_takes_the_official_choices(large, tmp_path):
    from tinysr.convert import _fabnet_high_order

    channels, blocks = (48, 4) if large else (12, 4)
    sd = fabnet_state(channels, blocks, large)
    torch.save(sd, tmp_path / "fabnet.pt")
    model, options = load_external(tmp_path / "fabnet.pt", "fabnet", scale=3)
    spec = model.tinysr_spec
    assert spec.scale == 3 and options["model"] == ("fabnet_b8c96" if large else "fabnet_b4c12")
    assert (spec.kwargs["pixel_range"], spec.kwargs["weight_estimator"]) == (255.0, "clip")
    assert spec.kwargs["upsample"] == ("nearest" if large else "bicubic") and spec.kwargs["recalibrated_high"] is large
    order = _fabnet_high_order(channels)
    official = "body_HH1.1" if large else "body_HH.1"
    unit = model.high[1]
    assert torch.equal(unit.conv1.weight, sd[f"{official}.conv1.weight"][order][:, order])
    assert torch.equal(unit.conv2.act_quantizer.threshold.flatten(), -sd[f"{official}.move1.bias"].flatten()[order])
    assert torch.equal(model.low[0].conv1.act_quantizer.threshold, -sd["body_LL.0.move0.bias" if large else "body_LL_1.move0.bias"])
    assert torch.equal(model.fusion.weights, torch.cat([sd[f"parameters{i + 1}"].flatten() for i in range(blocks + 1)]))
    if large:  # the recalibrated activation computes the official Attention on the permuted channels
        att, act = "body_HH1.3.attention", model.high[3].act2
        x = torch.randn(2, 3 * channels, 4, 5)
        pooled = x.mean(dim=(2, 3))
        theta = (
            2
            * torch.sigmoid(
                F.linear(
                    F.relu(F.linear(pooled, sd[f"{att}.fc1.weight"], sd[f"{att}.fc1.bias"])), sd[f"{att}.fc2.weight"], sd[f"{att}.fc2.bias"]
                )
            )
            - 1
        )
        coefs = theta.view(2, 3 * channels, 2) * torch.tensor([1.0, 0.5]) + torch.tensor([1.0, 0.0])
        want = x * coefs[..., 0, None, None] + coefs[..., 1, None, None]
        with torch.no_grad():
            torch.testing.assert_close(act(x[:, order]), want[:, order], rtol=1e-5, atol=1e-5)


FABNET_REFUSALS = [
    ({}, None, "do not record the scale"),
    ({"body_HH.0.conv3.weight": torch.zeros(36, 36, 3, 3)}, 2, "unexpected tensor 'body_HH.0.conv3.weight'"),
    ({"DWTForward.h0_col": torch.ones(1, 1, 4, 1)}, 2, "not a Haar (db1) filter"),
]


@pytest.mark.parametrize("extra, scale, message", FABNET_REFUSALS, ids=["no scale", "unknown tensor", "another wavelet"])
def test_what_fabnet_cannot_map_is_refused(extra, scale, message, tmp_path):
    torch.save({**fabnet_state(12, 4, large=False), **extra}, tmp_path / "bad.pt")
    with pytest.raises(TinySRError, match=re.escape(message)):
        load_external(tmp_path / "bad.pt", "fabnet", scale=scale)


def ledsr_state(residual: int, inner: list[int], scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """ASSL's LEDSR names (EDSR-PyTorch layout): head.0, body.{i}.body.{0,2}, body.{n}, tail.0.0 (one
    conv C -> 3 s^2), mean shifts; a pruned one has narrower inner convs and residual stream."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def put(name, out_ch, in_ch):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = conv_tensors(gen, out_ch, in_ch)

    put("head.0", residual, 3)
    for i, width in enumerate(inner):
        put(f"body.{i}.body.0", width, residual)
        put(f"body.{i}.body.2", residual, width)
    put(f"body.{len(inner)}", residual, residual)
    put("tail.0.0", 3 * scale * scale, residual)
    for name, sign in (("sub_mean", -1), ("add_mean", 1)):
        sd[f"{name}.weight"] = torch.eye(3).view(3, 3, 1, 1)
        sd[f"{name}.bias"] = sign * 255.0 * MEAN
    return sd


def ledsr_forward(sd: dict, x255: torch.Tensor, scale: int) -> torch.Tensor:
    def conv(t, name):
        return F.conv2d(t, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)

    blocks = sum(1 for k in sd if re.fullmatch(r"body\.\d+\.body\.0\.weight", k))
    feat = conv(x255 - 255.0 * MEAN.view(1, 3, 1, 1), "head.0")
    res = feat
    for i in range(blocks):
        res = res + conv(F.relu(conv(res, f"body.{i}.body.0")), f"body.{i}.body.2")
    res = conv(res, f"body.{blocks}") + feat
    return F.pixel_shuffle(conv(res, "tail.0.0"), scale) + 255.0 * MEAN.view(1, 3, 1, 1)


@pytest.mark.parametrize("residual, inner", [(12, [12, 12]), (12, [5, 9, 12]), (8, [12, 6])], ids=["full", "inner pruned", "stream pruned"])
def test_assl_ledsr_converts_with_its_pruned_widths(residual, inner, tmp_path, capsys):
    sd = ledsr_state(residual, inner, scale=3)
    torch.save(sd, tmp_path / "ledsr.pt")
    model, options = load_external(tmp_path / "ledsr.pt", "edsr-pytorch")
    spec = model.tinysr_spec
    assert spec.name == "ledsr" and options["channels"] == max(residual, *inner) and options["scale"] == 3
    widths = {"head": residual, **{f"body.{i}.conv1": w for i, w in enumerate(inner)}}
    assert options.get("widths") == (None if set(widths.values()) == {options["channels"]} else widths)
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(model(x) * 255, ledsr_forward(sd, x * 255, 3), rtol=1e-4, atol=1e-3)
    assert main(["convert", str(tmp_path / "ledsr.pt"), "-f", "edsr-pytorch", "-o", str(tmp_path / "ledsr.safetensors")]) == 0
    with torch.no_grad():
        assert torch.equal(tinysr.load(tmp_path / "ledsr.safetensors")(x), model(x))  # the widths travel with the file

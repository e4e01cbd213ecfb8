"""Every registered model: shapes at x2/x3/x4 on odd sizes, gradients, and exact save/load round trips."""

import json
import re
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import tinysr
import tinysr.io
from tinysr import TinySRError, create_model, list_models, load, save
from tinysr.cli import main
from tinysr.model_file import read_metadata
from tinysr.models import registry
from train_helpers import change_builder_default, run_bounded

SMALL = {"edsr": {"blocks": 2}, "ledsr": {"blocks": 2}}  # the full-width giants, kept short for speed


def test_expected_models_registered():
    assert {"bicubic", "vdsr", "srresnet", "edsr_baseline", "edsr", "ledsr"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_forward_shape_odd_sizes(name, scale):
    torch.manual_seed(0)
    model = create_model(name, scale=scale, **SMALL.get(name, {})).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 7, 9))
    assert out.shape == (2, 3, 7 * scale, 9 * scale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in list_models() if n != "bicubic"])
def test_backward_reaches_every_parameter(name):
    model = create_model(name, scale=2, **SMALL.get(name, {}))
    model(torch.rand(1, 3, 6, 6)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip_is_exact(tmp_path, name):
    torch.manual_seed(1)
    model = create_model(name, scale=3, **SMALL.get(name, {})).eval()
    path = tmp_path / f"{name}.safetensors"
    save(model, path)
    loaded = load(path)
    assert type(loaded) is type(model)
    assert loaded.tinysr_spec == model.tinysr_spec
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_a_model_file_records_every_option_and_rebuilds_with_them(tmp_path, monkeypatch):
    """A file names the builder's defaults too, so a default changed later does not change the
    model it loads; an option the builder no longer has is an error naming the file."""
    path = tmp_path / "m.safetensors"
    save(create_model("edsr_baseline", scale=2, channels=4, blocks=1), path)
    assert json.loads(read_metadata(path)["kwargs"]) == {"scale": 2, "channels": 4, "blocks": 1, "res_scale": 1.0}
    original = registry._REGISTRY["edsr_baseline"]
    change_builder_default(monkeypatch, "edsr_baseline", "res_scale", 0.1)
    assert create_model("edsr_baseline", scale=2).tinysr_spec.kwargs["res_scale"] == 0.1
    assert load(path).tinysr_spec.kwargs["res_scale"] == 1.0

    def without_res_scale(scale, channels=64, blocks=16):
        return original(scale=scale, channels=channels, blocks=blocks)

    monkeypatch.setitem(registry._REGISTRY, "edsr_baseline", without_res_scale)
    with pytest.raises(TinySRError, match=rf"{re.escape(str(path))}: model 'edsr_baseline' has no option 'res_scale'"):
        load(path)


def test_srresnet_bn_variant_round_trips_running_stats(tmp_path):
    model = create_model("srresnet", scale=2, blocks=2, bn=True)
    model.train()
    model(torch.rand(2, 3, 8, 8))  # moves the BN running statistics off their initial values
    model.eval()
    save(model, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_float16_and_int8_storage_round_every_weight_within_half_a_step(tmp_path):
    """int8 storage: each learned weight of two or more dims as int8 with one scale per output
    channel (its largest magnitude / 127), the rest (biases, the mean-shift buffers) in float16;
    checked against the closed-form bound (error <= half a step of its channel, the channel's
    largest magnitude kept) per channel."""
    torch.manual_seed(2)
    model = create_model("edsr_baseline", scale=2, channels=32, blocks=2).eval()
    for p in model.parameters():  # channels of very different magnitudes, one all zero
        p.data.mul_(torch.logspace(-3, 1, p.shape[0]).reshape(-1, *[1] * (p.dim() - 1)))
    model.head.weight.data[0] = 0
    sizes = {}
    for precision in ("float32", "float16", "int8"):
        save(model, tmp_path / f"{precision}.safetensors", precision=precision)
        sizes[precision] = (tmp_path / f"{precision}.safetensors").stat().st_size
    half, int8 = load(tmp_path / "float16.safetensors"), load(tmp_path / "int8.safetensors")
    assert sizes["int8"] < 0.3 * sizes["float32"] and sizes["float16"] < 0.55 * sizes["float32"]
    weights = {k for k, p in model.named_parameters() if p.dim() >= 2}
    assert "head.weight" in weights and "sub_mean.shift" not in weights  # a 4-D buffer
    for (name, w), h, q in zip(model.state_dict().items(), half.state_dict().values(), int8.state_dict().values()):
        assert torch.equal(h, w.half().float()), name
        if name not in weights:
            assert torch.equal(q, w.half().float()), name
            continue
        for o in range(w.shape[0]):
            step = w[o].abs().max() / 127
            assert (q[o] - w[o]).abs().max() <= step / 2 * 1.0001 + 1e-12, (name, o)
            assert q[o].abs().max() == pytest.approx(w[o].abs().max().item(), rel=1e-6), (name, o)
    assert torch.equal(int8.head.weight[0], torch.zeros_like(model.head.weight[0]))
    with pytest.raises(TinySRError, match="precision must be one of float32, float16, int8, got 'int4'"):
        save(model, tmp_path / "x.safetensors", precision="int4")


def test_an_int8_scale_and_its_weight_must_come_together_or_loading_names_the_file(tmp_path):
    model = create_model("edsr_baseline", scale=2, channels=4, blocks=1)
    save(model, tmp_path / "m.safetensors", precision="int8")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        metadata, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    state["head.weight"] = state["head.weight"].float()  # a scale beside a float weight
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(TinySRError, match=r"bad.safetensors: head.weight:int8_scale does not scale an int8 tensor"):
        load(tmp_path / "bad.safetensors")
    del state["head.weight:int8_scale"]  # an int8 weight without its scale: not loaded as raw levels
    state["head.weight"] = state["head.weight"].to(torch.int8)
    save_file(state, str(tmp_path / "unscaled.safetensors"), metadata=metadata)
    with pytest.raises(
        TinySRError, match=r"unscaled.safetensors: weights do not match .*head.weight is torch.int8 in the file, torch.float32"
    ):
        load(tmp_path / "unscaled.safetensors")


def test_backbone_sizes_follow_spec():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(create_model("edsr_baseline", scale=2)) == 1_369_859
    assert 665_000 <= count(create_model("vdsr", scale=2)) <= 668_300
    assert count(create_model("edsr", scale=2)) > 40_000_000  # 32 x 256, the 40M EDSR of the papers
    ledsr = create_model("ledsr", scale=2)
    assert isinstance(ledsr.tail[1], torch.nn.PixelShuffle) and ledsr.tail[0].out_channels == 12


def test_bicubic_model_is_matlab_imresize():
    x = torch.rand(1, 3, 8, 10, dtype=torch.float64)
    torch.testing.assert_close(create_model("bicubic", scale=4)(x), tinysr.imresize(x, 4))


def test_model_errors():
    with pytest.raises(TinySRError, match="unknown model"):
        create_model("no_such_model", scale=2)
    with pytest.raises(TinySRError, match="scale 5"):
        create_model("edsr_baseline", scale=5)
    with pytest.raises(TinySRError, match="widht"):
        create_model("edsr_baseline", scale=2, widht=3)


def test_load_rejects_foreign_and_broken_files(tmp_path):
    with pytest.raises(TinySRError, match="nothing.safetensors"):
        load(tmp_path / "nothing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(TinySRError, match="junk.safetensors"):
        load(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(TinySRError, match="not a tinysr model file"):
        load(tmp_path / "plain.safetensors")
    meta = {"format": "tinysr-model", "format_version": "1", "name": "vdsr", "scale": "2", "kwargs": json.dumps({"scale": 2})}
    save_file({"w": torch.zeros(2)}, str(tmp_path / "wrong.safetensors"), metadata=meta)
    with pytest.raises(TinySRError, match="do not match"):
        load(tmp_path / "wrong.safetensors")


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    model = create_model("vdsr", scale=2, depth=3)
    path = tmp_path / "m.safetensors"
    save(model, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("tinysr.model_file.save_file", boom)
    with pytest.raises(RuntimeError):
        save(create_model("vdsr", scale=2, depth=3), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.mark.slow
def test_a_model_saved_in_two_processes_gives_the_same_bytes(tmp_path):
    """safetensors writes its metadata in hash-map order; tinysr.save sorts the header, so files are reproducible."""
    script = (
        "import sys, torch, tinysr\n"
        "torch.manual_seed(0)\n"
        "tinysr.save(tinysr.create_model('edsr_baseline', scale=2, channels=8, blocks=1), sys.argv[1])\n"
    )
    outputs = []
    for i in range(3):
        out = tmp_path / f"m{i}.safetensors"
        res = run_bounded([sys.executable, "-c", script, str(out)], timeout=120)
        assert res.returncode == 0, res.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    model = tinysr.load(tmp_path / "m0.safetensors")  # and the file still loads
    assert model.tinysr_spec.name == "edsr_baseline"


def _file_with_metadata(path, **overrides) -> None:
    torch.manual_seed(0)
    tinysr.save(create_model("edsr_baseline", scale=2, channels=8, blocks=1), path)
    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    for key, value in overrides.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"kwargs": None}, "no 'kwargs'"),
        ({"name": None}, "no model 'name'"),
        ({"kwargs": "{not json"}, "'kwargs' is not JSON"),
        ({"kwargs": "[1, 2]"}, "'kwargs' must be a JSON object"),
        ({"transforms": '"pack"'}, "'transforms' must be a JSON list"),
        ({"kwargs": json.dumps({"scale": 2, "channels": 100000, "blocks": 1})}, "declares a model of"),
    ],
    ids=["no-kwargs", "no-name", "kwargs-not-json", "kwargs-list", "transforms-string", "declared-bomb"],
)
def test_malformed_metadata_is_a_one_line_error_naming_the_file(overrides, needle, tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    _file_with_metadata(path, **overrides)
    with pytest.raises(TinySRError, match=needle) as info:
        load(path)
    assert "m.safetensors" in str(info.value)
    image = tmp_path / "x.png"
    tinysr.io.write_image(image, torch.zeros(3, 4, 4))
    assert main(["upscale", "-i", str(image), "-o", str(tmp_path / "o.png"), "-m", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle.split("'")[0] in err[0] and "m.safetensors" in err[0]


def test_msrresnet_is_basicsrs_modified_srresnet():
    # closed form at x4: head 3->64, 16 blocks of two 64->64 convs, two 64->256 upconvs, conv_hr, 64->3
    from tinysr.profile import profile

    model = tinysr.create_model("msrresnet", scale=4)
    conv = lambda i, o: i * o * 9 + o  # noqa: E731
    expected = conv(3, 64) + 32 * conv(64, 64) + 2 * conv(64, 256) + conv(64, 64) + conv(64, 3)
    assert profile(model, (32, 32)).params == expected == 1_517_571
    assert not any(isinstance(m, (torch.nn.PReLU, torch.nn.BatchNorm2d)) for m in model.modules())
    assert model.body[0].conv1.weight.std().item() == pytest.approx(0.1 * (2 / 576) ** 0.5, rel=0.05)  # Kaiming x 0.1
    x = torch.rand(1, 3, 8, 9)
    with torch.no_grad():
        assert model(x).shape == (1, 3, 32, 36)

"""ONNX export (SPEC §7, deployable outputs): onnxruntime's output equals PyTorch's."""

import pytest
import torch

import tinysr
from test_rep import randomize
from tinysr.cli import main
from tinysr.compress import pack, reparameterize
from tinysr.errors import TinySRError
from tinysr.export import check_onnx, export_onnx


@pytest.mark.parametrize("name", ["edsr_baseline", "srresnet", "basenet"])
@pytest.mark.parametrize("scale", [2, 3])
def test_full_precision_models_match_pytorch_at_any_size(name, scale, tmp_path):
    model = tinysr.create_model(name, scale=scale)
    path = export_onnx(model, tmp_path / "m.onnx")
    assert check_onnx(model, path) <= 1e-4  # a 37x29 input; exported from a 24x32 sample
    assert check_onnx(model, path, seed=1) <= 1e-4


@pytest.mark.parametrize("name", ["repsr_m4c16", "ecbsr_m4c16", "repvgg_sr"])
def test_merged_models_match_their_training_form(name, tmp_path):
    trained = randomize(tinysr.create_model(name, scale=4), edge_scale=0.1).eval()
    merged = reparameterize(trained)
    path = export_onnx(merged, tmp_path / "m.onnx")
    assert check_onnx(merged, path) <= 1e-4
    assert check_onnx(trained, path) <= 1e-4  # the ONNX file computes the training form's function


def test_size_dependent_networks_need_a_fixed_size(tmp_path):
    model = tinysr.create_model("vdsr", scale=3)
    with pytest.raises(TinySRError, match="--lr-size"):
        export_onnx(model, tmp_path / "v.onnx")
    assert not (tmp_path / "v.onnx").exists()
    path = export_onnx(model, tmp_path / "v.onnx", lr_size=(20, 26))
    assert check_onnx(model, path) <= 1e-4  # checked at the file's own size, bicubic included


def test_cli_export(tmp_path, capsys):
    model_file = tmp_path / "ecbsr.safetensors"
    tinysr.save(reparameterize(randomize(tinysr.create_model("ecbsr_m4c16", scale=2), edge_scale=0.1)), model_file)
    assert main(["export", "-m", str(model_file), "-o", str(tmp_path / "e.onnx")]) == 0
    out = capsys.readouterr().out
    assert "any input size" in out
    diff = float(out.split("max abs diff")[1])
    assert diff <= 1e-4
    assert main(["export", "-m", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_a_packed_binary_model_exports_its_float_simulation(tmp_path):
    """A packed model's graph records the PyTorch path of its binary convs (the native kernel
    cannot be traced): the file computes the packed model's function."""
    torch.manual_seed(0)
    model = tinysr.create_model("edsr_reactnet", scale=2, channels=16, units=2).eval()
    packed = pack(model)
    path = export_onnx(packed, tmp_path / "p.onnx")
    assert check_onnx(packed, path) <= 1e-4
    assert check_onnx(model, path) <= 1e-4

import json

import pytest
import torch
from torch import nn

from tinysr import TinySRError, create_model, list_models, profile
from tinysr.cli import main


def test_edsr_baseline_matches_spec():
    """SPEC §3: EDSR-baseline x2 is 1,369.9K params and 316.3G Mult-Adds for a 1280x720 output."""
    p = profile(create_model("edsr_baseline", scale=2), lr_size=(360, 640))
    assert p.params == pytest.approx(1_369_900, rel=0.002)
    assert p.flops == pytest.approx(316.3e9, rel=0.01)
    assert p.bops == 0 and p.ops == p.flops


def test_vdsr_params():
    p = profile(create_model("vdsr", scale=2), lr_size=(10, 10))
    assert 665_000 <= p.params <= 668_300


def test_conv_macs_closed_form():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, (1, 5), padding=(0, 4), dilation=(1, 2), groups=2)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            y = self.b(self.a(x))
            return self.fc(y.mean((2, 3)))

    p = profile(Net(), lr_size=(6, 7))
    assert p.flops == 6 * 7 * 8 * 3 * 9 + 6 * 7 * 8 * 4 * 5 + 4 * 8
    assert p.params_fp == (8 * 27 + 8) + (8 * 4 * 5 + 8) + (8 * 4 + 4)


def test_layer_used_twice_counts_twice_and_model_is_untouched():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.c(self.c(x))

    model = Twice()
    p = profile(model, lr_size=(4, 4))
    assert p.flops == 2 * 16 * 9 and p.params == 12
    assert model.c.weight.device.type == "cpu"


def test_unknown_parametrised_layer_is_an_error():
    class Mystery(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, 1, 1))

        def forward(self, x):
            return x * self.w

    with pytest.raises(TinySRError, match="no cost rule.*Mystery"):
        profile(nn.Sequential(nn.Conv2d(3, 3, 1), Mystery()), lr_size=(4, 4))


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_profiles(name):
    model = create_model(name, scale=4)
    p = profile(model, lr_size=(180, 320))
    assert p.params_fp + p.params_binary == sum(q.numel() for q in model.parameters())
    assert p.params == pytest.approx(p.params_fp + p.params_binary / 32)
    assert (p.flops > 0) == (p.params > 0)


def test_cli_profile_json(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["profile", "--model", "edsr_baseline", "--scale", "2", "--hr-size", "1280x720", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for key in ("params", "params_fp", "params_binary", "flops", "bops", "ops"):
        assert isinstance(data[key], (int, float)), key
    assert data["flops"] == pytest.approx(316.3e9, rel=0.01)
    assert main(["profile", "--model", "vdsr", "--scale", "3", "--lr-size", "32x20"]) == 0
    table = capsys.readouterr().out
    assert "body.0" in table and "total: params" in table


def test_cli_profile_floors_an_hr_size_the_scale_does_not_divide(tmp_path, capsys):
    """The papers' x3 Mult-Adds at 1280x720 are counted on a 426x240 LR input."""
    assert main(["profile", "--model", "edsr_baseline", "--scale", "3", "--hr-size", "1280x720", "--json", str(tmp_path / "p.json")]) == 0
    got = json.loads((tmp_path / "p.json").read_text())
    assert got["lr_size"] == [426, 240]
    assert got["flops"] == profile(create_model("edsr_baseline", scale=3), (240, 426)).flops
    assert main(["profile", "--model", "vdsr", "--scale", "3", "--hr-size", "2x2"]) == 2
    assert "smaller than --scale 3" in capsys.readouterr().err

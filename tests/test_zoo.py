"""The model zoo (``src/tinysr/zoo/``): every shipped file loads as ``zoo:NAME``, rebuilds the model
its recipe trains, records where it came from, and scores what it says it scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinysr
from tinysr.bench.suites import FAMILIES, REFERENCE
from tinysr.cli import main
from tinysr.compress import deployable
from tinysr.compress.deploy import deploy_form
from tinysr.data import BenchmarkSet
from tinysr.evaluate import evaluate
from tinysr.models import model_spec
from tinysr.train import load_config
from tinysr.train.config import list_recipes
from tinysr.zoo import DEFAULT_UPSCALERS, ZOO_DIR, list_pretrained

ENTRIES = {e["name"]: e for e in list_pretrained()}
SIZE_BUDGET = 25_000_000  # bytes, the whole zoo


def test_the_zoo_ships_models_within_its_size_budget():
    assert ENTRIES, "the zoo is empty"
    assert sum(p.stat().st_size for p in ZOO_DIR.glob("*.safetensors")) <= SIZE_BUDGET
    assert set(DEFAULT_UPSCALERS.values()) <= set(ENTRIES)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_a_zoo_entry_loads_and_records_its_provenance(name):
    entry = ENTRIES[name]
    for key in ("recipe", "family", "iterations", "seed", "data", "form", "precision", "scores"):
        assert key in entry, key
    model = tinysr.load(f"zoo:{name}")
    spec = model_spec(model)
    recipe = load_config(entry["recipe"], entry.get("overrides", []))  # the run: the recipe with these --set
    assert entry["recipe"] in list_recipes()
    assert (spec.name, spec.scale) == (recipe.model.name, recipe.scale) == (entry["model"], entry["scale"])
    assert {"Set5", "Set14"} <= set(entry["scores"])
    assert entry["form"] in ("merged", "packed", "pruned", "trained") and entry["precision"] in ("float16", "float32", "int8")
    assert (entry["form"] == "pruned") == model_spec(model).transformed_by("prune")
    assert entry["family"] in FAMILIES and entry["family"] != REFERENCE


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_a_zoo_entry_scores_its_recorded_set5_number(name, data_dir):
    score = evaluate(tinysr.load(f"zoo:{name}"), BenchmarkSet(data_dir / "Set5", ENTRIES[name]["scale"]), progress=False)
    assert score.psnr == pytest.approx(ENTRIES[name]["scores"]["Set5"]["psnr"], abs=0.01)


def test_a_deployable_entry_equals_its_training_form_where_both_ship():
    pairs = [(n, n[: -len("_train")]) for n in ENTRIES if n.endswith("_train") and n[: -len("_train")] in ENTRIES]
    assert pairs, "no entry ships both forms"
    image = torch.from_numpy(np.random.default_rng(0).random((1, 3, 24, 30), dtype=np.float32))
    for train_name, deployed_name in pairs:
        trained = tinysr.load(f"zoo:{train_name}")
        with torch.no_grad():
            want = deployable(trained, deploy_form(trained, "auto"))(image)
            got = tinysr.load(f"zoo:{deployed_name}")(image)
        # both stored at their precision: float16 rounding of the weights (under one level of an
        # 8-bit output), not a different network
        assert (got - want).abs().max() < 1 / 255, train_name


def test_models_pretrained_lists_the_zoo_and_upscale_defaults_to_it(tmp_path, capsys):
    assert main(["models", "--pretrained"]) == 0
    listed = capsys.readouterr().out
    assert all(f"zoo:{name}" in listed for name in ENTRIES)
    from tinysr.io import read_image, write_image

    write_image(tmp_path / "a.png", np.random.default_rng(1).integers(0, 256, (10, 12, 3), dtype=np.uint8))
    assert main(["upscale", "-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png")]) == 0
    assert read_image(tmp_path / "b.png").shape == (20, 24, 3)
    assert main(["upscale", "-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "b4.png"), "-s", "4"]) == 0
    assert read_image(tmp_path / "b4.png").shape == (40, 48, 3)
    assert main(["upscale", "-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "c.png"), "-s", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no default x3 model" in err[0]
    assert main(["upscale", "-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "c.png"), "-m", "zoo:nope"]) == 2
    assert "zoo:nope: no such model in the zoo" in capsys.readouterr().err


STARTS_FROM_ZOO = sorted(n for n in list_recipes() if (load_config(n).model.init_from or "").startswith("zoo:"))


@pytest.mark.parametrize("name", STARTS_FROM_ZOO)
def test_a_recipe_that_starts_from_a_zoo_entry_takes_most_of_its_tensors(name):
    from tinysr.train.loop import start_from

    config = load_config(name)
    model = tinysr.create_model(config.model.name, scale=config.scale, **config.model.kwargs)
    copied, total = start_from(model, config.model.init_from)
    assert copied > total / 2, (name, copied, total)

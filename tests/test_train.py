"""The training engine: recipes, schedule, sampling, resume after kill -9, atomic checkpoints, NaN, DDP."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tinysr
from tinysr import TinySRError
from tinysr.data import TrainPatches
from tinysr.model_file import read_metadata
from tinysr.resize import imresize
from tinysr.train import (
    Callback,
    build_callback,
    build_loss,
    load_config,
    logged_training_seconds,
    parse_config,
    read_log,
    register_callback,
    train,
    train_or_reuse,
)
from tinysr.train.checkpoint import load_state, save_state, state_path
from tinysr.train.config import list_recipes
from tinysr.train.run_dir import recipe_differences, recipe_inputs, record_inputs, stale_input
from tinysr.train.sampling import SampleStream
from tinysr.train.schedule import lr_at
from tinysr.zoo import zoo_path
from train_helpers import change_builder_default, make_folders, run_bounded, tiny_recipe, write_recipe

REPO = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).with_name("train_helpers.py")


@pytest.fixture(scope="module")
def folders(data_dir, tmp_path_factory):
    return make_folders(data_dir, tmp_path_factory.mktemp("data"))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return tinysr.load(path).state_dict()


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# ------------------------------------------------------------------------------------ recipes
def test_unknown_key_names_key_and_file(tmp_path, folders):
    recipe = tiny_recipe(*folders)
    recipe["train"]["learning_rate"] = 1e-4
    path = write_recipe(tmp_path / "typo.yaml", recipe)
    with pytest.raises(TinySRError, match=r"typo\.yaml.*'train\.learning_rate'"):
        load_config(path)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda r: r["train"].update(iterations="many"), "train.iterations must be int"),
        (lambda r: r.update(scale=5), "scale must be 2, 3 or 4"),
        (lambda r: r.pop("model"), "missing required key 'model'"),
        (
            lambda r: (
                r["train"]["scheduler"].update(name="step") if "scheduler" in r["train"] else r["train"].update(scheduler={"name": "step"})
            ),
            "scheduler.name",
        ),
        (lambda r: r["data"].update(train=[]), "data.train"),
    ],
)
def test_invalid_values(folders, mutate, needle):
    recipe = tiny_recipe(*folders)
    mutate(recipe)
    with pytest.raises(TinySRError, match=needle.replace(".", r"\.")):
        parse_config(recipe, "r.yaml")


def test_overrides_and_yaml_errors(tmp_path, folders):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(*folders))
    c = load_config(path, ["train.iterations=99", "train.optimizer.betas=[0.9, 0.99]", "model.kwargs.blocks=3"])
    assert c.train.iterations == 99 and c.train.optimizer.betas == (0.9, 0.99) and c.model.kwargs["blocks"] == 3
    with pytest.raises(TinySRError, match="train.bogus"):
        load_config(path, ["train.bogus=1"])
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(TinySRError, match="bad.yaml"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_shipped_recipe_is_valid(recipe):
    c = load_config(recipe)
    tinysr.create_model(c.model.name, scale=c.scale, **c.model.kwargs)
    for cb in c.callbacks:
        build_callback(cb.name, cb.kwargs)
    for term in c.train.loss:
        build_loss(term.name, term.kwargs)


def test_lr_schedule():
    c = parse_config(
        {
            "model": {"name": "vdsr"},
            "scale": 2,
            "data": {"train": ["x"]},
            "train": {"iterations": 100, "lr": 1.0, "scheduler": {"name": "multistep", "milestones": [10, 50], "gamma": 0.5}},
        }
    )
    assert [lr_at(c.train, i) for i in (0, 9, 10, 49, 50, 99)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    cos = parse_config({**c.to_dict(), "train": {**c.to_dict()["train"], "scheduler": {"name": "cosine", "min_lr": 0.1, "warmup": 4}}})
    assert lr_at(cos.train, 0) == pytest.approx(0.25) and lr_at(cos.train, 3) == pytest.approx(0.1 + 0.45 * (1 + np.cos(np.pi * 3 / 99)))
    assert lr_at(cos.train, 99) == pytest.approx(0.1) and lr_at(cos.train, 49) == pytest.approx(0.55, abs=0.02)


# ---------------------------------------------------------------------------------- sampling
def test_ranks_draw_what_one_process_with_a_larger_batch_draws():
    single = list(SampleStream(3, 7, batch_size=4))
    ranks = [list(SampleStream(3, 7, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == single
    assert not set(ranks[0]) & set(ranks[1])


def test_patches_are_deterministic_aligned_and_cover_epochs(folders):
    train_dir, _ = folders
    a = TrainPatches([train_dir], 2, patch_size=12, repeat=3, seed=5)
    b = TrainPatches([train_dir], 2, patch_size=12, repeat=3, seed=5)
    for n in (0, 7, 123):
        lr1, hr1 = a[n]
        lr2, hr2 = b[n]
        assert torch.equal(lr1, lr2) and torch.equal(hr1, hr2)
        assert lr1.shape == (3, 12, 12) and hr1.shape == (3, 24, 24)
        # The LR patch is the protocol's downscale of the HR patch (up to rounding, away from the crop edges).
        down = imresize(hr1[None].double(), 0.5)[0]
        assert (down - lr1.double())[:, 3:-3, 3:-3].abs().max() < 1.5 / 255
    epoch = [a._image_index(n) for n in range(len(a))]
    assert np.bincount(epoch).tolist() == [3] * 6


def test_small_images_skipped_with_a_warning_and_empty_folder_error(tmp_path, folders):
    train_dir, _ = folders
    messages = []
    data = TrainPatches([train_dir], 4, patch_size=10, warn=messages.append)  # 64px HR -> 16px LR: fits
    assert len(data.lr_images) == 6 and not messages
    with pytest.raises(TinySRError, match="no training image is large enough"):
        TrainPatches([train_dir], 4, patch_size=20, warn=messages.append)
    assert "t0.png" in messages[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TinySRError, match="empty"):
        TrainPatches([tmp_path / "empty"], 2, patch_size=8)


# ------------------------------------------------------------------------------- the engine
def test_same_seed_same_weights_and_run_outputs(tmp_path, folders):
    recipe = parse_config(tiny_recipe(*folders, ema=0.9))
    a = train(recipe, tmp_path / "a", device="cpu", progress=False)
    b = train(recipe, tmp_path / "b", device="cpu", progress=False)
    assert_same_weights(a, b)
    run = tmp_path / "a"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "log.jsonl", "checkpoints", "best.safetensors", "model.safetensors"}
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "val_psnr" in r] == [6, 12]
    assert any("it_s" in r for r in records) and records[-1]["done"]
    # model.safetensors holds the EMA weights, which differ from the raw weights in the checkpoint.
    raw = load_state(run)["model"]
    ema = weights(a)
    assert any(not torch.equal(raw[k], ema[k]) for k in ema if ema[k].is_floating_point())


def test_existing_run_is_not_overwritten(tmp_path, folders):
    recipe = parse_config(tiny_recipe(*folders, iterations=3))
    train(recipe, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(TinySRError, match="--resume"):
        train(recipe, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(TinySRError, match="no training state"):
        train(recipe, tmp_path / "other", device="cpu", resume=True, progress=False)
    changed = parse_config(tiny_recipe(*folders, iterations=3, lr=2e-3))
    with pytest.raises(
        TinySRError, match=r"the recipe differs from the one this run was started with \(train.lr: 0.001 there, 0.002 here;"
    ):
        train(changed, tmp_path / "run", device="cpu", resume=True, progress=False)


def test_train_or_reuse_reuses_only_the_same_recipe(tmp_path, folders):
    """A finished run is reused (not retrained) for its own recipe, reached directly or through a
    link, and is an error naming the changed key for any other recipe; an old run without a field
    added later to the recipe (saved absent, None here) still counts as the same recipe."""
    recipe = parse_config(tiny_recipe(*folders, iterations=3))
    final = train_or_reuse(recipe, tmp_path / "run", device="cpu", progress=False)
    stamp = final.stat().st_mtime_ns
    (tmp_path / "link").symlink_to(tmp_path / "run")
    for run in ("run", "link"):
        assert train_or_reuse(recipe, tmp_path / run, device="cpu", progress=False).stat().st_mtime_ns == stamp
    changed = parse_config(tiny_recipe(*folders, iterations=3, lr=2e-3))
    with pytest.raises(TinySRError, match=r"run: finished with a different recipe \(train.lr: 0.001 there, 0.002 here\)"):
        train_or_reuse(changed, tmp_path / "run", device="cpu", progress=False)
    assert final.stat().st_mtime_ns == stamp  # nothing was overwritten

    saved, wanted = recipe.to_dict(), recipe.to_dict()
    del saved["init"]  # a run from before the field existed
    assert wanted["init"] is None and recipe_differences(saved, wanted) == []
    wanted["model"]["kwargs"]["init"] = "default"  # a model option set now, left at its default then
    assert recipe_differences(saved, wanted) == ["model.kwargs.init: <absent> there, 'default' here"]
    wanted["model"]["kwargs"]["init"] = "<absent>"  # a value spelled like the marker is still a value
    assert recipe_differences(saved, wanted) == ["model.kwargs.init: <absent> there, '<absent>' here"]
    (tmp_path / "run" / "config.yaml").unlink()
    with pytest.raises(TinySRError, match="without config.yaml"):
        train_or_reuse(recipe, tmp_path / "run", device="cpu", progress=False)


def test_a_run_is_refused_once_a_file_its_recipe_names_holds_other_bytes(tmp_path, folders):
    """A run that starts from another run's model is stale once that model is rewritten in place
    (same path, so the recipe alone cannot tell): reusing it finished, or resuming it, is an error
    naming the file. Its bytes decide, not its modification time: a touched file is still the same."""
    source = train_or_reuse(parse_config(tiny_recipe(*folders, iterations=3)), tmp_path / "source", device="cpu", progress=False)
    follow_up = parse_config({**tiny_recipe(*folders, iterations=3), "init": str(source)})
    run = tmp_path / "follow_up"
    final = train_or_reuse(follow_up, run, device="cpu", progress=False)
    assert json.loads((run / "inputs.json").read_text()) == {str(source): hashlib.sha256(source.read_bytes()).hexdigest()}
    later = final.stat().st_mtime_ns + 1_000_000_000
    os.utime(source, ns=(later, later))  # touched, or copied without its times: the same bytes
    assert train_or_reuse(follow_up, run, device="cpu", progress=False) == final

    source.rename(tmp_path / "moved.safetensors")
    with pytest.raises(TinySRError, match=rf"follow_up: {re.escape(str(source))}, which it read, is gone"):
        train_or_reuse(follow_up, run, device="cpu", progress=False)
    other = train(parse_config(tiny_recipe(*folders, iterations=3, lr=2e-3)), tmp_path / "other", device="cpu", progress=False)
    shutil.copyfile(other, source)  # the source retrained in place
    with pytest.raises(TinySRError, match=rf"follow_up: {re.escape(str(source))} holds other bytes than when it read it"):
        train_or_reuse(follow_up, run, device="cpu", progress=False)
    final.unlink()  # an unfinished run: resuming it would mix two sources
    with pytest.raises(TinySRError, match=rf"follow_up: {re.escape(str(source))} holds other bytes .*, so it cannot be resumed"):
        train_or_reuse(follow_up, run, device="cpu", progress=False)


def test_a_run_from_before_inputs_json_falls_back_to_modification_times(tmp_path, folders):
    source = train_or_reuse(parse_config(tiny_recipe(*folders, iterations=3)), tmp_path / "source", device="cpu", progress=False)
    follow_up = parse_config({**tiny_recipe(*folders, iterations=3), "init": str(source)})
    final = train_or_reuse(follow_up, tmp_path / "follow_up", device="cpu", progress=False)
    (tmp_path / "follow_up" / "inputs.json").unlink()
    assert train_or_reuse(follow_up, tmp_path / "follow_up", device="cpu", progress=False) == final  # older source: reused
    later = final.stat().st_mtime_ns + 1_000_000_000
    os.utime(source, ns=(later, later))
    with pytest.raises(TinySRError, match=rf"follow_up: {re.escape(str(source))} was written after this run finished"):
        train_or_reuse(follow_up, tmp_path / "follow_up", device="cpu", progress=False)


def test_the_files_a_recipe_reads_are_its_init_its_start_and_its_losses_teachers(tmp_path):
    teacher, init, start, output = (tmp_path / n for n in ("teacher.safetensors", "init.safetensors", "x2.safetensors", "out.safetensors"))
    for f in (teacher, init, start, output):
        f.write_bytes(b"x")
    recipe = {
        "init": str(init),
        "model": {"name": "edsr_baseline", "kwargs": {}, "init_from": str(start)},
        "train": {"loss": [{"name": "l1", "kwargs": {}}, {"name": "btm_kd", "kwargs": {"teacher": str(teacher), "beta": 1.0}}]},
        "callbacks": [{"name": "assl", "kwargs": {"output": str(output)}}],  # written by the run, not read
    }
    assert recipe_inputs(recipe) == [str(init), str(start), str(teacher)]
    unread = {"init": None, "model": {"name": "edsr_baseline", "kwargs": {}, "init_from": None}}
    assert (
        recipe_inputs({**recipe, **unread, "train": {"loss": [{"name": "btm_kd", "kwargs": {"teacher": str(tmp_path / "missing")}}]}}) == []
    )
    from_zoo = {**recipe, **unread, "model": {"name": "edsr_baseline", "kwargs": {}, "init_from": "zoo:edsr_baseline_x2"}}
    assert recipe_inputs(from_zoo) == ["zoo:edsr_baseline_x2", str(teacher)]  # a zoo entry is read too
    record_inputs(tmp_path, from_zoo)
    recorded = json.loads((tmp_path / "inputs.json").read_text())
    assert recorded["zoo:edsr_baseline_x2"] == hashlib.sha256(zoo_path("edsr_baseline_x2").read_bytes()).hexdigest()
    assert stale_input(tmp_path, from_zoo) is None
    recorded["zoo:edsr_baseline_x2"] = "0" * 64  # as if the zoo entry had been retrained since
    (tmp_path / "inputs.json").write_text(json.dumps(recorded))
    assert "zoo:edsr_baseline_x2 holds other bytes" in stale_input(tmp_path, from_zoo)


def test_init_from_copies_the_tensors_of_the_same_name_and_shape(tmp_path):
    # x2 -> x4 EDSR: body, head and final conv match; the x4 upsampler's second stage does not.
    from tinysr.train.loop import start_from

    torch.manual_seed(0)
    x2 = tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=1)
    with torch.no_grad():
        for p in x2.parameters():
            p.add_(1.0)  # unlike any fresh initialisation
    tinysr.save(x2, tmp_path / "x2.safetensors")
    x4 = tinysr.create_model("edsr_baseline", scale=4, channels=8, blocks=1)
    fresh = {k: v.clone() for k, v in x4.state_dict().items()}
    copied, total = start_from(x4, tmp_path / "x2.safetensors")
    theirs, ours = x2.state_dict(), x4.state_dict()
    matched = [k for k in ours if k in theirs and theirs[k].shape == ours[k].shape]
    assert 0 < copied == len(matched) < total and any(k.startswith("body") for k in matched)
    for name, value in ours.items():
        assert torch.equal(value, theirs[name] if name in matched else fresh[name]), name


def test_init_from_refuses_another_model_or_a_deployable_form(tmp_path):
    from tinysr.train.loop import start_from

    tinysr.save(tinysr.create_model("vdsr", scale=2), tmp_path / "vdsr.safetensors")
    target = tinysr.create_model("edsr_baseline", scale=4, channels=8, blocks=1)
    with pytest.raises(TinySRError, match=r"model.init_from .*vdsr.safetensors: holds vdsr, but the recipe trains edsr_baseline"):
        start_from(target, tmp_path / "vdsr.safetensors")
    with pytest.raises(TinySRError, match=r"model.init_from zoo:ecbsr_m4c16_x2: a deployable form \(reparameterize\)"):
        start_from(tinysr.create_model("ecbsr_m4c16", scale=4), "zoo:ecbsr_m4c16_x2")


def test_init_from_unpacks_a_packed_model_and_names_one_it_cannot(tmp_path):
    from tinysr.compress import pack
    from tinysr.train.loop import start_from

    torch.manual_seed(0)
    x2 = tinysr.create_model("edsr_btm", scale=2, channels=8, blocks=1).eval()
    tinysr.save(pack(x2), tmp_path / "packed.safetensors")
    x4 = tinysr.create_model("edsr_btm", scale=4, channels=8, blocks=1)
    copied, total = start_from(x4, tmp_path / "packed.safetensors")
    assert 0 < copied < total
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():  # the same head and body: the same features before the upsampler
        assert torch.allclose(x4.net.body(x4.net.head(x)), x2.net.body(x2.net.head(x)), atol=1e-5)
    tinysr.save(pack(tinysr.create_model("srresnet_bam", scale=2, channels=8, units=1).eval()), tmp_path / "bam.safetensors")
    with pytest.raises(TinySRError, match=r"model.init_from .*bam.safetensors: cannot unpack it: layer \S+: AccumulatedWeight"):
        start_from(tinysr.create_model("srresnet_bam", scale=2, channels=8, units=1), tmp_path / "bam.safetensors")


def test_an_x4_run_starts_from_the_x2_model_and_records_it(tmp_path, folders, capsys):
    source = train_or_reuse(parse_config(tiny_recipe(*folders, iterations=3)), tmp_path / "x2", device="cpu", progress=False)
    recipe = tiny_recipe(*folders, iterations=3)
    recipe = {**recipe, "scale": 4, "model": {**recipe["model"], "init_from": str(source)}}
    final = train_or_reuse(parse_config(recipe), tmp_path / "x4", device="cpu", progress=False)
    assert "tensors copied" in capsys.readouterr().err
    assert tinysr.load(final).tinysr_spec.scale == 4
    assert list(json.loads((tmp_path / "x4" / "inputs.json").read_text())) == [str(source)]
    with pytest.raises(TinySRError, match="model.init_from and init exclude each other"):
        parse_config({**recipe, "init": str(source)})


def test_a_finished_run_is_refused_once_its_models_builtin_default_changed(tmp_path, folders, monkeypatch):
    """The recipe does not spell out the model's defaults, so only the model file's recorded
    options can show that a default changed in the code since the run was trained."""
    recipe = parse_config(tiny_recipe(*folders, iterations=3))
    final = train_or_reuse(recipe, tmp_path / "run", device="cpu", progress=False)
    assert json.loads(read_metadata(final)["kwargs"]) == {"scale": 2, "channels": 8, "blocks": 1, "res_scale": 1.0}
    change_builder_default(monkeypatch, "edsr_baseline", "res_scale", 0.1)
    with pytest.raises(
        TinySRError,
        match=r"run: finished with a model the recipe no longer builds \(model option res_scale: 1.0 there, 0.1 here: a default",
    ):
        train_or_reuse(recipe, tmp_path / "run", device="cpu", progress=False)
    assert tinysr.load(final).tinysr_spec.kwargs["res_scale"] == 1.0  # the file still rebuilds the model it holds


def _run_cli(args, timeout: float = 300):
    return run_bounded([sys.executable, str(HELPER), *args], cwd=REPO, timeout=timeout)


def _slow_recipe_trained_whole(tmp_path, folders, **train) -> Path:
    """A 40-iteration recipe slowed to 0.05 s a step (so a signal can land mid-run), written to
    ``r.yaml`` and trained uninterrupted into ``full`` for comparison; returns the recipe's path."""
    recipe = tiny_recipe(*folders, iterations=40, val_every=20, **train)
    recipe["callbacks"] = [{"name": "slow", "kwargs": {"seconds": 0.05}}]
    path = write_recipe(tmp_path / "r.yaml", recipe)
    full = _run_cli(["train", "-c", str(path), "-o", str(tmp_path / "full"), "-q"])
    assert full.returncode == 0, full.stderr
    return path


@pytest.mark.slow
def test_resume_after_kill_9_gives_identical_weights(tmp_path, folders):
    path = _slow_recipe_trained_whole(tmp_path, folders, checkpoint_every=4, ema=0.9)

    cmd = [sys.executable, str(HELPER), "train", "-c", str(path), "-o", str(tmp_path / "cut"), "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        state = state_path(tmp_path / "cut")
        if state.is_file() and load_state(tmp_path / "cut")["iteration"] >= 20:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "model.safetensors").exists(), "the run finished before it could be killed"
    stopped_at = load_state(tmp_path / "cut")["iteration"]
    assert 20 <= stopped_at < 40

    resumed = _run_cli(["train", "-o", str(tmp_path / "cut"), "--resume", "-q"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(tmp_path / "full" / "model.safetensors", tmp_path / "cut" / "model.safetensors")
    assert_same_weights(tmp_path / "full" / "best.safetensors", tmp_path / "cut" / "best.safetensors")
    iters = [json.loads(line)["iter"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert iters == sorted(iters), "log entries after the checkpoint must not be duplicated"


def test_checkpoint_write_is_atomic(tmp_path, folders, monkeypatch):
    recipe = parse_config(tiny_recipe(*folders, iterations=6, checkpoint_every=3))
    train(recipe, tmp_path / "run", device="cpu", progress=False)
    before = state_path(tmp_path / "run").read_bytes()

    def torn_write(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_write)
    with pytest.raises(OSError):
        save_state(tmp_path / "run", {"x": 1})
    assert state_path(tmp_path / "run").read_bytes() == before
    assert [p.name for p in state_path(tmp_path / "run").parent.iterdir()] == ["state.pt"]


@register_callback("poison_at")
class PoisonAt(Callback):
    """Test callback: sets a weight to NaN before the given iteration."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def on_step_start(self, trainer, iteration):
        if iteration == self.iteration:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, folders):
    recipe = tiny_recipe(*folders, iterations=12, checkpoint_every=3, val_every=100)
    recipe["callbacks"] = [{"name": "poison_at", "kwargs": {"iteration": 7}}]
    with pytest.raises(TinySRError, match=r"loss became nan at iteration 8.*state\.pt"):
        train(parse_config(recipe), tmp_path / "run", device="cpu", progress=False)
    state = load_state(tmp_path / "run")
    assert state["iteration"] == 6
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "model.safetensors").exists()


@register_callback("record_conv_dtype")
class RecordConvDtype(Callback):
    """Records the dtype of the first conv's output in every training step's forward pass."""

    def on_train_start(self, trainer):
        self.seen = []
        conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda module, args, out: self.seen.append(out.dtype) if module.training else None)
        trainer.conv_dtypes = self.seen


@pytest.mark.parametrize("native", [True, False])
def test_amp_bf16_on_cpu_runs_the_convs_in_bf16_where_the_cpu_has_it(tmp_path, folders, monkeypatch, capsys, native):
    from tinysr.train import loop

    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: native)
    recipe = tiny_recipe(*folders, iterations=4, checkpoint_every=4, val_every=100, amp="bf16")
    recipe["callbacks"] = [{"name": "record_conv_dtype"}]
    trainer = loop.Trainer(parse_config(recipe), tmp_path / "run", device="cpu", progress=False)
    final = trainer.run()
    want = torch.bfloat16 if native else torch.float32
    assert trainer.conv_dtypes and set(trainer.conv_dtypes) == {want}
    warned = "train.amp bf16: not accelerated on this cpu" in capsys.readouterr().err
    assert warned == (not native)
    assert all(v.dtype == torch.float32 for v in weights(final).values() if v.is_floating_point())  # the weights stay float32


def test_autocast_dtype_per_device_and_option(monkeypatch):
    from tinysr.train import loop

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    assert [loop.autocast_dtype(a, cpu) for a in (None, "bf16", "fp16")] == [None, torch.bfloat16, None]
    assert [loop.autocast_dtype(a, cuda) for a in (None, "bf16", "fp16")] == [None, torch.bfloat16, torch.float16]
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: False)
    assert loop.autocast_dtype("bf16", cpu) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, folders):
    """2 gloo processes with batch 2 each: ranks stay in sync and match one process with batch 4."""
    recipe = tiny_recipe(*folders, iterations=6, checkpoint_every=3, val_every=6)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    # Loopback only, and a short collective timeout: a machine whose host name resolves elsewhere
    # must fail this test quickly, not hang it.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "TINYSR_DIST_TIMEOUT": "120"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "tinysr",
        "train",
        "-c",
        str(path),
        "-o",
        str(tmp_path / "ddp"),
        "--device",
        "cpu",
        "-q",
    ]
    res = run_bounded(cmd, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    last = json.loads((tmp_path / "ddp" / "log.jsonl").read_text().splitlines()[-1])
    assert last["ranks_in_sync"] is True and last["world_size"] == 2

    single = tiny_recipe(*folders, iterations=6, checkpoint_every=3, val_every=6)
    single["train"]["batch_size"] = 4
    ref = train(parse_config(single), tmp_path / "single", device="cpu", progress=False)
    wa, wb = weights(tmp_path / "ddp" / "model.safetensors"), weights(ref)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


@register_callback("interrupt_at")
class InterruptAt(Callback):
    """Test callback: raises KeyboardInterrupt (as Ctrl-C would) before the given iteration."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def on_step_start(self, trainer, iteration):
        if iteration == self.iteration and not trainer.resume:
            raise KeyboardInterrupt


def _stopped_at_iteration_5(run: Path, folders, val_every: int):
    """The recipe of an 8-iteration run checkpointed every 3, trained in ``run`` until it is
    interrupted at iteration 5."""
    recipe = tiny_recipe(*folders, iterations=8, checkpoint_every=3, val_every=val_every)
    recipe["callbacks"] = [{"name": "interrupt_at", "kwargs": {"iteration": 5}}]
    config = parse_config(recipe)
    with pytest.raises(KeyboardInterrupt):
        train(config, run, device="cpu", progress=False)
    return config


def _log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_resume_survives_a_torn_log_line(tmp_path, folders):
    config = _stopped_at_iteration_5(tmp_path / "run", folders, val_every=100)
    with open(tmp_path / "run" / "log.jsonl", "a") as f:
        f.write('{"iter": 5, "loss": 0.1')  # a line cut short by a kill
    train(config, tmp_path / "run", device="cpu", resume=True, progress=False)
    records = _log_records(tmp_path / "run")
    assert [r["iter"] for r in records if "loss" in r] == [2, 4, 6, 8]
    assert records[-1]["done"]


def test_a_resumed_run_carries_its_training_time(tmp_path, folders):
    config = _stopped_at_iteration_5(tmp_path / "run", folders, val_every=4)
    state = load_state(tmp_path / "run")
    assert state["training_seconds"] >= max(r["time"] for r in _log_records(tmp_path / "run") if r["iter"] <= state["iteration"]) > 0
    state["training_seconds"] = 1000.0  # as if the first process had trained that long
    save_state(tmp_path / "run", state)
    train(config, tmp_path / "run", device="cpu", resume=True, progress=False)
    later = [r["time"] for r in _log_records(tmp_path / "run") if "time" in r and r["iter"] > state["iteration"]]
    assert later and all(1000.0 <= t < 1100.0 for t in later)
    assert logged_training_seconds(tmp_path / "run") == later[-1]


def test_logged_training_seconds_sums_a_clock_restarted_at_each_resume(tmp_path):
    lines = [
        {"iter": 2, "time": 1.0},
        {"iter": 4, "time": 3.0},
        {"iter": 6, "time": 0.5},
        {"iter": 8, "time": 2.0},
        {"iter": 8, "done": True},
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"iter": 9, "ti')
    assert logged_training_seconds(tmp_path) == 5.0
    assert [r.get("time") for r in read_log(tmp_path)] == [1.0, 3.0, 3.5, 5.0, None]  # the torn last line left out
    assert logged_training_seconds(tmp_path / "missing") is None


@pytest.mark.slow
def test_dataloader_workers_do_not_change_the_result(tmp_path, folders):
    recipe = tiny_recipe(*folders, iterations=4, checkpoint_every=4, val_every=100)
    a = train(parse_config(recipe), tmp_path / "w0", device="cpu", progress=False)
    recipe["data"]["workers"] = 2
    b = train(parse_config(recipe), tmp_path / "w2", device="cpu", progress=False)
    assert_same_weights(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_stops_training_with_a_checkpoint_and_resume_is_exact(tmp_path, folders, signum):
    """SIGINT / SIGTERM stop after the iteration in progress and save it (the recipe checkpoints only
    every 30 iterations); resuming ends with the weights of an uninterrupted run."""
    path = _slow_recipe_trained_whole(tmp_path, folders, checkpoint_every=30, log_every=1)

    cmd = [sys.executable, str(HELPER), "train", "-c", str(path), "-o", str(tmp_path / "cut"), "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "cut" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 7):
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint" in err and "saved" in err
    stopped_at = load_state(tmp_path / "cut")["iteration"]
    assert 7 <= stopped_at < 30  # saved on the signal, not at a checkpoint interval
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    resumed = _run_cli(["train", "-o", str(tmp_path / "cut"), "--resume", "-q"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(tmp_path / "full" / "model.safetensors", tmp_path / "cut" / "model.safetensors")


def test_a_damaged_validation_image_is_an_error_before_training(tmp_path, folders):
    train_dir, val = folders
    bad_val = tmp_path / "val"
    shutil.copytree(val, bad_val)
    (bad_val / "broken.png").write_bytes(b"not an image")
    with pytest.raises(TinySRError, match="broken.png"):
        train(parse_config(tiny_recipe(train_dir, bad_val, iterations=4)), tmp_path / "run", device="cpu", progress=False)
    assert not state_path(tmp_path / "run").exists()


def test_a_fresh_run_starts_its_own_log_and_files_follow_the_umask(tmp_path, folders):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"iter": 999, "loss": 1.0}\n')  # left by a run stopped before its first checkpoint
    mask = os.umask(0o022)
    try:
        train(parse_config(tiny_recipe(*folders, iterations=4)), run, device="cpu", progress=False)
    finally:
        os.umask(mask)
    iters = [json.loads(line)["iter"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert 999 not in iters and iters == sorted(iters)
    for name in ("model.safetensors", "config.yaml", "inputs.json", "checkpoints/state.pt"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.slow
def test_two_trainings_into_one_folder_cannot_run_at_once(tmp_path, folders):
    """The run folder is locked: while one training runs, a second one and a resume of the same folder
    each stop with one line; the first is still running then (it is stopped by a signal afterwards,
    so it cannot finish before the others try) and its log is one run's log."""
    recipe = tiny_recipe(*folders, iterations=100_000, checkpoint_every=10, val_every=100_000, log_every=1)
    recipe["callbacks"] = [{"name": "slow", "kwargs": {"seconds": 0.05}}]
    path = write_recipe(tmp_path / "r.yaml", recipe)
    cmd = [sys.executable, str(HELPER), "train", "-c", str(path), "-o", str(tmp_path / "run"), "-q"]
    first = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "log.jsonl"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (log.is_file() and log.read_text().strip()):
            time.sleep(0.05)
        # Refused at once or never done: a training the lock failed to stop would run for hours.
        second = _run_cli(["train", "-c", str(path), "-o", str(tmp_path / "run"), "-q"], timeout=60)
        resumed = _run_cli(["train", "-o", str(tmp_path / "run"), "--resume", "-q"], timeout=60)
        assert first.poll() is None, "the first training ended before the others were tried"
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 130, err
    for other in (second, resumed):
        assert other.returncode == 2
        lines = other.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by another tinysr process" in lines[0], other.stderr
    iters = [json.loads(line)["iter"] for line in log.read_text().splitlines()]
    assert iters == sorted(iters)  # one run's log, not two interleaved

"""Structured pruning and ASSL (SPEC §6): WN folding, traced channel groups, surgery, the callback."""

import copy
import math
import os
from pathlib import Path

import pytest
import torch

import tinysr
from tinysr.cli import main
from tinysr.compress import apply_widths, l1_plan, l1_unaligned_plan, prune, prune_layers
from tinysr.compress.assl import ASSL, required_iterations
from tinysr.compress.channels import _slice_follower, channel_groups
from tinysr.compress.prune import WeightNormConv2d, fold_weight_norm, insert_weight_norm, kept_count
from tinysr.errors import TinySRError
from tinysr.nn import FoldableBatchNorm2d
from tinysr.nn.rep import FreezableBatchNorm2d
from tinysr.train import load_config
from tinysr.workflows.pruning import surgery_files
from train_helpers import make_folders, tiny_recipe, write_recipe


def small_edsr(**kw):
    torch.manual_seed(0)
    return tinysr.create_model("edsr_baseline", scale=2, channels=12, blocks=3, **kw).eval()


def test_weight_norm_preserves_the_function_and_folds_exactly():
    model = small_edsr()
    x = torch.rand(2, 3, 10, 12)
    with torch.no_grad():
        before = model(x)
        names = [p for g in channel_groups(model) for p in g.producers]
        wn = insert_weight_norm(model, names)
        assert all(torch.allclose(m.gamma, m.conv.weight.flatten(1).norm(dim=1)) for m in wn.values())
        for m in wn.values():  # a trained gamma differs from ||V||
            m.gamma.mul_(torch.rand_like(m.gamma) + 0.5)
        with_wn = model(x)
        folded = fold_weight_norm(copy.deepcopy(model))
        assert not any(isinstance(m, WeightNormConv2d) for m in folded.modules())
        assert torch.equal(folded(x), with_wn)  # the same weight tensor: exact
    model_no_change = small_edsr()
    with torch.no_grad():
        insert_weight_norm(model_no_change, names)
        assert torch.allclose(model_no_change(x), before, atol=1e-6)


@pytest.mark.parametrize(
    "name, head, body_tail", [("edsr_baseline", "head", "body_tail"), ("ledsr", "head", "body_tail"), ("srresnet", "head.0", "body_tail.0")]
)
def test_constrained_layers_are_found_by_tracing(name, head, body_tail):
    model = tinysr.create_model(name, scale=2, blocks=3)
    groups = channel_groups(model)
    constrained = [g for g in groups if g.constrained]
    assert len(constrained) == 1
    assert set(constrained[0].producers) == {head, body_tail, *(f"body.{i}.conv2" for i in range(3))}
    free = {g.key for g in groups if not g.constrained}
    assert free == {f"body.{i}.conv1" for i in range(3)}  # upsampler and tail convs are never pruned
    assert {f"body.{i}.conv1" for i in range(3)} | {body_tail} <= set(constrained[0].consumers)


def test_surgery_equals_zeroing_the_pruned_channels():
    model = small_edsr()
    plan = l1_plan(model, 0.5)
    pruned = prune(model, plan)
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for g in channel_groups(model):
            drop = torch.ones(g.channels, dtype=torch.bool)
            drop[plan[g.key]] = False
            for p in g.producers:
                conv = zeroed.get_submodule(p)
                conv.weight[drop] = 0
                conv.bias[drop] = 0
        x = torch.rand(2, 3, 11, 9)
        assert torch.allclose(pruned(x), zeroed(x), atol=1e-5)
    head, conv2 = pruned.get_submodule("head"), pruned.get_submodule("body.2.conv2")
    assert head.out_channels == conv2.out_channels == pruned.get_submodule("body.0.conv1").in_channels == 6


def test_unaligned_l1_is_the_official_baseline_each_conv_its_own_filters(tmp_path):
    """The official ASSL code's L1 baseline: every conv keeps its own largest-L1 filters (tied
    ones as many, not the same), and each conv reads the kept filters of the conv before it."""
    model = small_edsr()
    plan = l1_unaligned_plan(model, 0.5)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    for name, kept in plan.items():  # an independent ranking: the 6 largest of 12 filter L1 norms
        norms = convs[name].weight.detach().abs().sum((1, 2, 3))
        assert torch.equal(kept, norms.topk(6).indices.sort().values), name
    tied = ["head", "body.0.conv2", "body.1.conv2", "body.2.conv2", "body_tail"]
    assert len({tuple(plan[n].tolist()) for n in tied}) > 1  # this seed's tied convs rank differently
    pruned = prune_layers(model, plan)
    reads = {"body.0.conv1": "head", "body.1.conv1": "body.0.conv2", "body.2.conv1": "body.1.conv2", "body_tail": "body.2.conv2"}
    reads |= {"tail.0.0": "body_tail"} | {f"body.{i}.conv2": f"body.{i}.conv1" for i in range(3)}
    for name, conv in convs.items():
        weight = conv.weight.detach()
        if name in plan:
            weight = weight[plan[name]]
        if name in reads:
            weight = weight[:, plan[reads[name]]]
        assert torch.equal(pruned.get_submodule(name).weight, weight), name
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert not torch.allclose(pruned(x), prune(model, l1_plan(model, 0.5))(x), atol=1e-3)
    tinysr.save(pruned, tmp_path / "u.safetensors")  # the same widths as the aligned plan's
    with torch.no_grad():
        assert torch.equal(tinysr.load(tmp_path / "u.safetensors")(x), pruned(x))


def test_unaligned_l1_equals_aligned_l1_when_tied_convs_rank_alike():
    model = small_edsr()
    order = torch.randperm(12)
    with torch.no_grad():  # every tied conv gets the same filter ranking
        for name in ["head", "body.0.conv2", "body.1.conv2", "body.2.conv2", "body_tail"]:
            w = model.get_submodule(name).weight
            w.copy_(w.sign() * (order.float() + 1).view(-1, 1, 1, 1))
    aligned, unaligned = prune(model, l1_plan(model, 0.5)), prune_layers(model, l1_unaligned_plan(model, 0.5))
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(aligned(x), unaligned(x))
    with pytest.raises(TinySRError, match="as many"):
        plan = l1_unaligned_plan(model, 0.5)
        plan["head"] = plan["head"][:-1]
        prune_layers(model, plan)


def test_slicing_a_batch_norm_keeps_its_class_statistics_and_frozen_flag():
    """A BN subclass stays itself when its channels are sliced (a packed conv folds only the
    foldable BN; a RepSR BN frozen for training stays frozen)."""
    for bn in (FoldableBatchNorm2d(6), FreezableBatchNorm2d(6)):
        with torch.no_grad():
            bn.running_mean.copy_(torch.arange(6.0))
            bn.weight.copy_(torch.arange(6.0) + 10)
        if isinstance(bn, FreezableBatchNorm2d):
            bn.freeze_stats = True
        sliced = _slice_follower(bn, torch.tensor([1, 4]))
        assert type(sliced) is type(bn) and sliced.num_features == 2
        assert sliced.running_mean.tolist() == [1.0, 4.0] and sliced.weight.tolist() == [11.0, 14.0]
        assert getattr(sliced, "freeze_stats", False) == isinstance(bn, FreezableBatchNorm2d)
        assert sliced(torch.randn(3, 2, 4, 4)).shape == (3, 2, 4, 4)


def test_pruned_model_profiles_like_a_fresh_dense_model_and_round_trips(tmp_path):
    model = tinysr.create_model("edsr_baseline", scale=2)
    pruned = prune(model, {g.key: torch.arange(32) for g in channel_groups(model)})
    # Closed form for EDSR-baseline x2 with a C = 32 residual stream and 32-wide block convs; the
    # upsampler's own output (4 x 64 before PixelShuffle) and the tail are not pruned.
    c, u, lr_pixels = 32, 64, 60 * 80
    params = (27 * c + c) + 16 * 2 * (9 * c * c + c) + (9 * c * c + c) + (9 * c * 4 * u + 4 * u) + (9 * u * 3 + 3)
    macs = lr_pixels * (27 * c + 33 * 9 * c * c + 9 * c * 4 * u) + 4 * lr_pixels * 9 * u * 3
    cost = tinysr.profile(pruned, (60, 80))
    assert (cost.params, cost.flops) == (params, macs)
    fresh = apply_widths(tinysr.create_model("edsr_baseline", scale=2), {g.key: 32 for g in channel_groups(model)})
    assert (tinysr.profile(fresh, (60, 80)).params, tinysr.profile(fresh, (60, 80)).flops) == (params, macs)
    tinysr.save(pruned, tmp_path / "p.safetensors")
    loaded = tinysr.load(tmp_path / "p.safetensors")
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned.eval()(x))
    assert loaded.tinysr_spec.transforms[0]["name"] == "prune"


def test_paper_sizes_edsr_baseline_ratios_and_asslN():
    """SPEC §6: EDSR-baseline x2 at ratio 0.5 -> 381.8K / 88.9G, 0.9 -> 26.9K / 7.3G (1280x720 output);
    LEDSR with every layer at 48 channels -> the paper's ASSLN column, 692K / 159.1G; at the official
    runs' ratio 207/256 (ceil of the pruned count) it keeps 49 -> 721.4K / 165.8G."""
    edsr = tinysr.create_model("edsr_baseline", scale=2)
    for ratio, params, flops in [(0.5, 381.8e3, 88.9e9), (0.9, 26.9e3, 7.3e9)]:
        cost = tinysr.profile(prune(edsr, l1_plan(edsr, ratio)), (360, 640))
        assert abs(cost.params - params) < 100 and abs(cost.flops - flops) / flops < 0.005
    ledsr = tinysr.create_model("ledsr", scale=2)
    cost = tinysr.profile(apply_widths(ledsr, {g.key: 48 for g in channel_groups(ledsr)}), (360, 640))
    assert abs(cost.params - 692e3) / 692e3 < 0.001 and abs(cost.flops - 159.1e9) / 159.1e9 < 0.001
    ledsr = tinysr.create_model("ledsr", scale=2)
    plan = l1_plan(ledsr, 207 / 256)
    assert {len(idx) for idx in plan.values()} == {49}
    cost = tinysr.profile(prune(ledsr, plan), (360, 640))
    assert round(cost.params / 1e3, 1) == 721.4 and round(cost.flops / 1e9, 1) == 165.8


def test_kept_count_takes_the_ceiling_of_the_pruned_count():
    """The official code prunes ceil(C * ratio) filters."""
    assert kept_count(256, 207 / 256) == 49 and kept_count(256, 0.8125) == 48
    assert kept_count(10, 0.44) == 5  # 4.4 pruned -> 5; rounding the kept 5.6 would keep 6
    assert kept_count(64, 0.9) == 6 and kept_count(64, 0.5) == 32 and kept_count(10, 0.95) == 1


def test_kept_count_rounds_to_a_channel_multiple_when_asked():
    """``multiple``: the nearest multiple (halves up), at least one multiple, at most every channel."""
    assert kept_count(256, 207 / 256, 16) == 48  # ASSLN's 49 -> 48
    assert kept_count(64, 0.9, 8) == 8 and kept_count(64, 0.9, 16) == 16  # 6 kept
    assert kept_count(64, 0.6, 16) == 32  # 25 kept
    assert kept_count(64, 0.5, 16) == 32 and kept_count(64, 0.5, 1) == 32
    assert kept_count(64, 0.25, 16) == 48  # 48 kept: already a multiple
    assert kept_count(64, 0.35, 16) == 48  # 41 kept, nearer 48 than 32
    assert kept_count(12, 0.5, 16) == 12  # never more than the layer has
    with pytest.raises(TinySRError, match="channel multiple"):
        kept_count(64, 0.5, 0)
    group = type("Group", (), {"channels": 64})()
    assert ASSL(ratio=0.9, channel_multiple=8)._n_pruned(group) == 56 and ASSL(ratio=0.9)._n_pruned(group) == 58


def test_the_cpu_assl_recipe_is_the_official_schedule_at_one_hundredth():
    """``edsr_baseline_x2_assl_cpu``: the paper's strength, every phase 1/100 of the official
    runs' (within one increment period), and the official ranking and re-pick."""
    options = next(cb.kwargs for cb in load_config("edsr_baseline_x2_assl_cpu").callbacks if cb.name == "assl")
    ours = ASSL(**options)
    official = ASSL(delta=1e-4, every=20, tau=0.5, ssa_iterations=17260, stabilize_iterations=43150)  # the defaults otherwise

    def ramp(a):
        return a.every * math.ceil(a.tau / a.delta - 1e-9)

    assert ramp(ours) * 100 == ramp(official) and ours.tau == official.tau
    assert abs(ours.ssa_iterations - official.ssa_iterations / 100) < ours.every
    assert abs(ours.stabilize_iterations - official.stabilize_iterations / 100) < ours.every
    same = ("convention", "pixel_range", "constrained_ranking", "repick_free", "ssa_threshold", "ssa_weight")
    assert [getattr(ours, k) for k in same] == [getattr(official, k) for k in same]
    assert ours.convention == "paper" and ours.constrained_ranking == "first" and ours.repick_free


def test_assl_alpha_schedule_is_algorithm_1():
    cb = ASSL(ratio=0.5, delta=0.1, every=3, tau=0.25, ssa_iterations=5)
    free = [cb.alpha(False, i) for i in range(10)]
    assert free == pytest.approx([0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.25, 0.25, 0.25, 0.25])
    constrained = [cb.alpha(True, i) for i in range(4, 16)]  # increments at multiples of 3 after 5
    assert constrained == pytest.approx([0, 0, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.25, 0.25, 0.25, 0.25])
    assert cb.iterations == required_iterations(0.1, 3, 0.25, 5) == 3 * (5 // 3 + 3) + 1
    assert cb.alpha(True, cb.iterations - 1) == 0.25


def _assl_prune_command(tmp_path, data_dir) -> list[str]:
    """``tinysr prune`` arguments for a tiny ASSL run of an 8-channel EDSR-baseline (fast schedule)."""
    train, val = make_folders(data_dir, tmp_path)
    source = tmp_path / "trained.safetensors"
    tinysr.save(tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=1), source)
    recipe = tiny_recipe(train, val)
    recipe["callbacks"] = [{"name": "assl", "kwargs": {"delta": 0.5, "every": 2, "tau": 1.0, "ssa_iterations": 4}}]
    config = write_recipe(tmp_path / "ft.yaml", recipe)
    return ["prune", "-c", str(config), "-o", str(tmp_path / "run"), "--from", str(source), "--ratio", "0.5", "-q"]


def test_assl_regularises_aligns_and_prunes(tmp_path, data_dir):
    args = _assl_prune_command(tmp_path, data_dir)
    assert main(args) == 0
    pruned = tinysr.load(tmp_path / "run" / "regularize" / "pruned.safetensors")
    widths = pruned.tinysr_spec.transforms[0]["widths"]
    assert widths == {"head": 4, "body.0.conv1": 4}
    assert pruned.head.out_channels == pruned.body[0].conv2.out_channels == pruned.body_tail.out_channels == 4
    final = tinysr.load(tmp_path / "run" / "finetune" / "model.safetensors")
    assert tinysr.profile(final, (8, 8)).params == tinysr.profile(pruned, (8, 8)).params
    log = (tmp_path / "run" / "regularize" / "log.jsonl").read_text()
    assert '"ASSL"' in log  # the penalty is logged as its own loss part
    assert main(args) == 0  # rerun: every phase is reused
    before, after = surgery_files(tmp_path / "run", "assl", tmp_path / "trained.safetensors")
    assert (tinysr.load(before).head.out_channels, tinysr.load(after).head.out_channels) == (8, 4)
    assert before.parent.name == "regularize"  # the regularised network, not the source


def test_assl_penalty_drives_the_pruned_gammas_down(data_dir, tmp_path):
    from tinysr.train import Trainer, parse_config

    train, val = make_folders(data_dir, tmp_path)
    recipe = tiny_recipe(train, val, iterations=25, lr=1e-2)
    recipe["callbacks"] = [
        {"name": "assl", "kwargs": {"delta": 2.0, "every": 1, "tau": 4.0, "ssa_iterations": 0, "convention": "unscaled"}}
    ]
    trainer = Trainer(parse_config(recipe), tmp_path / "r", progress=False)
    trainer._build()  # run() builds again from the same seed: the same initial gammas
    before = {k: m.gamma.detach().clone() for k, m in trainer.callbacks[0].wn.items()}
    trainer.run()
    cb = trainer.callbacks[0]
    for g in cb.groups:
        pruned = torch.zeros(g.channels, dtype=torch.bool)
        pruned[cb.prune_sets[g.key]] = True
        for p in g.producers:
            ratio = cb.wn[p].gamma.detach().abs() / before[p].abs()
            assert (ratio[pruned] < 0.75).all(), p  # Adam moves ~lr per step: 25 steps of 1e-2
            assert ratio[pruned].max() < ratio[~pruned].min(), p  # the penalty, not the data, did it


@pytest.mark.parametrize("method", ["l1", "l1_unaligned", "scratch"])
def test_cli_prune_baselines(method, tmp_path, data_dir, capsys):
    train, val = make_folders(data_dir, tmp_path)
    source = tmp_path / "trained.safetensors"
    tinysr.save(tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=1), source)
    config = write_recipe(tmp_path / "ft.yaml", tiny_recipe(train, val, iterations=4))
    assert (
        main(
            ["prune", "-c", str(config), "-o", str(tmp_path / "run"), "--from", str(source), "--ratio", "0.75", "-q"] + ["--method", method]
        )
        == 0
    )
    final = tmp_path / "run" / "finetune" / "model.safetensors"
    assert str(final) in capsys.readouterr().out
    assert tinysr.load(final).head.out_channels == 2
    cut = surgery_files(tmp_path / "run", method, source)
    assert cut is None if method == "scratch" else (cut[0] == source and tinysr.load(cut[1]).head.out_channels == 2)
    assert main(["profile", "-m", str(final), "-s", "2", "--lr-size", "16x16"]) == 0
    rounded = ["prune", "-c", str(config), "-o", str(tmp_path / "run4"), "--from", str(source), "--ratio", "0.75", "-q"]
    assert main(rounded + ["--method", method, "--channel-multiple", "4"]) == 0  # 2 kept -> 4
    assert tinysr.load(tmp_path / "run4" / "finetune" / "model.safetensors").head.out_channels == 4
    with pytest.raises(SystemExit) as exc:
        main(["prune", "-c", str(config), "-o", str(tmp_path / "x"), "--from", str(source), "--ratio", "1.5"])
    assert exc.value.code == 2 and "pruning ratio" in capsys.readouterr().err


def test_cli_prune_takes_a_zoo_model(tmp_path, data_dir, capsys):
    """``--from zoo:NAME`` prunes the shipped model (the ablation's source) like a file."""
    train, val = make_folders(data_dir, tmp_path)
    config = write_recipe(tmp_path / "ft.yaml", tiny_recipe(train, val, iterations=2))
    args = ["prune", "-c", str(config), "-o", str(tmp_path / "run"), "--from", "zoo:edsr_baseline_x2", "--ratio", "0.5", "-q"]
    assert main(args + ["--method", "l1"]) == 0
    pruned = tinysr.load(tmp_path / "run" / "finetune" / "model.safetensors")
    assert pruned.head.out_channels == 32 and len(pruned.body) == len(tinysr.load("zoo:edsr_baseline_x2").body)


def test_init_must_match_the_recipe_model(tmp_path, data_dir):
    train, val = make_folders(data_dir, tmp_path)
    source = tmp_path / "vdsr.safetensors"
    tinysr.save(tinysr.create_model("basenet", scale=2), source)
    recipe = tiny_recipe(train, val)
    recipe["init"] = str(source)
    with pytest.raises(TinySRError, match="init"):
        from tinysr.train import train as run_train

        run_train(load_config(write_recipe(tmp_path / "r.yaml", recipe)), tmp_path / "run", progress=False)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["ssa", "flipped"])
def test_ssa_aligns_the_kept_sets_of_tied_layers(sign):
    """Descending L_SSA alone makes the layers of a constrained group agree on which filters are
    large: the overlap of their kept index sets grows. Ascending it (a flipped sign) does not.
    Plain gradient steps, so the test sees the loss's gradient itself (Adam's per-element step
    normalisation would move every gamma alike)."""
    torch.manual_seed(0)
    model = tinysr.create_model("edsr_baseline", scale=2, channels=16, blocks=3)
    cb = ASSL(ratio=0.5)
    cb.groups = channel_groups(model)
    cb.wn = insert_weight_norm(model, [p for g in cb.groups for p in g.producers])
    group = next(g for g in cb.groups if g.constrained and len(g.producers) >= 3)
    gammas = [cb.wn[p].gamma for p in group.producers]
    n_kept = group.channels - cb._n_pruned(group)

    def overlap() -> float:
        kept = [set(torch.topk(g.detach(), n_kept).indices.tolist()) for g in gammas]
        return sum(len(a & b) for i, a in enumerate(kept) for b in kept[i + 1 :]) / (n_kept * len(kept) * (len(kept) - 1) / 2)

    before = overlap()
    optimizer = torch.optim.SGD(gammas, lr=1.0)
    for _ in range(200):
        optimizer.zero_grad()
        (sign * cb.alignment_loss(group)).backward()
        optimizer.step()
    after = overlap()
    if sign > 0:
        assert after > before + 0.25 and after > 0.8
    else:
        assert after <= before + 0.05


def _assl_on(model, **options):
    """An ASSL callback set up on ``model`` without a trainer: WN inserted, every group's prune set chosen."""
    cb = ASSL(**options)
    cb.groups = channel_groups(model)
    cb.wn = insert_weight_norm(model, [p for g in cb.groups for p in g.producers])
    cb.prune_sets = {g.key: cb._lowest(g) for g in cb.groups}
    return cb


def test_paper_convention_has_the_official_codes_relative_strength():
    """The official code: pixels in [0, 255], mean L1, alpha * gamma and alpha * bias added to the
    gradients. Relative to the data gradient, tinysr's paper-convention penalty on [0, 1] pixels
    must push gamma and bias exactly as hard: compare (penalty gradient / data gradient) in both."""
    torch.manual_seed(0)
    net = tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=1)
    cb = _assl_on(net, ratio=0.5)
    group = next(g for g in cb.groups if not g.constrained)
    wn = cb.wn[group.key]
    with torch.no_grad():
        wn.conv.bias.normal_(0, 0.1)
    lr_img, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    alpha = 1e-4
    # tinysr, [0, 1] pixels
    data = torch.nn.functional.l1_loss(net(lr_img), hr)
    g_gamma, g_bias = torch.autograd.grad(data, [wn.gamma, wn.conv.bias])
    p_gamma, p_bias = torch.autograd.grad(cb.sparsity_penalty(group, alpha), [wn.gamma, wn.conv.bias])
    idx = torch.tensor(cb.prune_sets[group.key])
    # the official computation on the same network in [0, 255]: every bias and the mean shift scale by 255
    official = copy.deepcopy(net)
    with torch.no_grad():
        for m in official.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.mul_(255)
        official.sub_mean.shift.mul_(255)
        official.add_mean.shift.mul_(255)
    owm = dict(official.named_modules())[group.key]
    data255 = torch.nn.functional.l1_loss(official(255 * lr_img), 255 * hr)
    o_gamma, o_bias = torch.autograd.grad(data255, [owm.gamma, owm.conv.bias])
    torch.testing.assert_close(official(255 * lr_img), 255 * net(lr_img), rtol=1e-4, atol=1e-3)  # the same network
    ours = (p_gamma[idx] / g_gamma[idx], p_bias[idx] / g_bias[idx])
    theirs = (alpha * owm.gamma[idx] / o_gamma[idx], alpha * owm.conv.bias[idx] / o_bias[idx])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-3, atol=0)


@pytest.mark.parametrize("convention", ["paper", "unscaled"])
def test_a_fully_regularised_network_prunes_losslessly_only_when_its_biases_decay(convention):
    """Driving L_SI to its minimum zeroes gamma_S; only the paper convention also zeroes the biases of
    S, and only then does removing S leave the function unchanged."""
    torch.manual_seed(1)
    net = tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.normal_(0, 0.05)
    cb = _assl_on(net, ratio=0.5, convention=convention)
    params = [p for g in cb.groups for name in g.producers for p in (cb.wn[name].gamma, cb.wn[name].conv.bias)]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    for step in range(1500):
        optimizer.zero_grad()
        sum(cb.sparsity_penalty(g, 1.0) for g in cb.groups).backward()
        optimizer.step()
        for group in optimizer.param_groups:  # anneal, so the iterates settle at the minimum
            group["lr"] = 1e-2 * 0.995**step
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        regularised = net(x)
        pruned = cb.pruned_model(net)(x)
    gap = float((pruned - regularised).abs().max())
    if convention == "paper":
        assert gap < 1e-4, gap
    else:
        assert gap > 1e-2, gap


def test_assl_official_choices_ranking_repick_stabilisation_and_threshold():
    torch.manual_seed(2)
    net = tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=2)
    cb = _assl_on(net, ratio=0.5, ssa_iterations=5)
    constrained = next(g for g in cb.groups if g.constrained)
    free = next(g for g in cb.groups if not g.constrained)
    head, others = constrained.producers[0], constrained.producers[1:]
    with torch.no_grad():  # the head ranks filters 0..7 one way, the other tied layers the opposite way
        cb.wn[head].gamma.copy_(torch.arange(8.0) + 1)
        for p in others:
            cb.wn[p].gamma.copy_(10 * (8 - torch.arange(8.0)))
    assert sorted(cb._lowest(constrained)) == [0, 1, 2, 3]  # "first": the head's ranking (the official code's)
    summed = ASSL(ratio=0.5, constrained_ranking="sum")
    summed.wn = cb.wn
    assert sorted(summed._lowest(constrained)) == [4, 5, 6, 7]
    # the free groups pick S again at N_SSA (and only then)
    first_pick = list(cb.prune_sets[free.key])
    with torch.no_grad():
        cb.wn[free.key].gamma.copy_(torch.arange(8.0, 0, -1))
    cb.on_step_start(None, 4)
    assert cb.prune_sets[free.key] == first_pick
    cb.on_step_start(None, 5)
    assert sorted(cb.prune_sets[free.key]) == [4, 5, 6, 7]
    # stabilisation lengthens the run by its iterations
    assert ASSL(stabilize_iterations=100).iterations == ASSL().iterations + 100 == required_iterations(1e-4, 20, 0.5, 1000, 100)
    # the official SSA threshold keeps its gradient; the default is detached
    for threshold, threshold_moves in (("smallest_kept", True), ("largest_pruned", False)):
        torch.manual_seed(3)
        probe = _assl_on(tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=2), ratio=0.5, ssa_threshold=threshold)
        g = next(g for g in probe.groups if g.constrained)
        gammas = [probe.wn[p].gamma for p in g.producers]
        grads = torch.autograd.grad(probe.alignment_loss(g), gammas)
        kept_min = [int(x.detach().sort().indices[probe._n_pruned(g)]) for x in gammas]
        pushed_down = all(float(gr[k]) > 0 for gr, k in zip(grads, kept_min))  # descending raises the others, lowers it
        assert pushed_down == threshold_moves, threshold


def test_a_pruning_run_stopped_as_its_regularisation_finishes_resumes(tmp_path, data_dir, monkeypatch):
    """Killed between the regularisation phase's outputs, the run must resume, not fail on a missing
    file: the pruned model is written before the final model, whose write marks the phase done."""
    import tinysr.train.loop as loop

    args = _assl_prune_command(tmp_path, data_dir)
    real_save = loop.save

    def killed_at_the_pruned_model(model, path):
        if Path(path).name == "pruned.safetensors":
            raise KeyboardInterrupt  # the process dies while the phase writes its outputs
        real_save(model, path)

    monkeypatch.setattr(loop, "save", killed_at_the_pruned_model)
    assert main(args) == 130  # interrupted
    assert not (tmp_path / "run" / "regularize" / "pruned.safetensors").exists()
    monkeypatch.setattr(loop, "save", real_save)
    assert main(args) == 0  # resumed from the last checkpoint, both outputs written, then fine-tuned
    assert (tmp_path / "run" / "regularize" / "pruned.safetensors").is_file()
    assert (tmp_path / "run" / "finetune" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("die_after", ["pruned.safetensors", "model.safetensors", "state.pt"])
def test_a_pruning_process_killed_in_its_windows_resumes_to_the_same_model(tmp_path, data_dir, die_after):
    """A real process dies (no cleanup, as under kill -9) right after writing the pruned model,
    after the first phase's final model, and after its first checkpoint; rerunning the same command
    finishes, and the fine-tuned model is the one an uninterrupted run gives."""
    import sys

    from train_helpers import run_bounded

    helper = Path(__file__).with_name("train_helpers.py")
    args = _assl_prune_command(tmp_path, data_dir)
    whole_args = [a.replace(str(tmp_path / "run"), str(tmp_path / "whole")) for a in args]
    cwd = Path(__file__).parents[1]
    env = {**os.environ, "TINYSR_TEST_DIE_AFTER": die_after}
    killed = run_bounded([sys.executable, str(helper), *args], cwd=cwd, env=env)
    assert killed.returncode == 137, killed.stderr
    assert not (tmp_path / "run" / "finetune" / "model.safetensors").exists()
    resumed = run_bounded([sys.executable, str(helper), *args], cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr
    whole = run_bounded([sys.executable, str(helper), *whole_args], cwd=cwd)
    assert whole.returncode == 0, whole.stderr
    a = tinysr.load(tmp_path / "run" / "finetune" / "model.safetensors").state_dict()
    b = tinysr.load(tmp_path / "whole" / "finetune" / "model.safetensors").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

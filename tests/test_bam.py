"""BAM (SPEC §5.3): the coefficient solve, what trains, and that the forward is the accumulated form."""

import pytest
import torch

import tinysr
from tinysr.models.bam import BAMSolve, paper_params
from tinysr.nn.bam import AccumulatedSign, AccumulatedWeight, channel_scale, normalized, objective, solve_coefficients


def test_solve_is_the_global_optimum_with_one_earlier_layer():
    """a_n = 1 fixed (sign(N(u)) is invariant to scaling a); the solve must match a brute-force
    scan of a_1 (J is piecewise constant, so a fine grid finds its minimum up to grid luck)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        w1 = torch.randn(4, 3, 3, 3, generator=g)
        w2 = 0.5 * w1 + torch.randn(4, 3, 3, 3, generator=g)
        solved = objective([w1, w2], solve_coefficients([w1, w2]))
        grid = min(objective([w1, w2], torch.tensor([float(t), 1.0])) for t in torch.linspace(-4, 4, 1601))
        assert solved <= grid + 1e-5
        assert solved <= objective([w1, w2], torch.tensor([0.0, 1.0])) + 1e-5  # never worse than "own only"


def test_solve_with_several_layers_is_coordinatewise_optimal():
    g = torch.Generator().manual_seed(1)
    ws = [torch.randn(6, 5, 3, 3, generator=g) for _ in range(3)]
    ws.append(0.3 * ws[0] - 0.4 * ws[2] + torch.randn(6, 5, 3, 3, generator=g))
    a = solve_coefficients(ws, sweeps=4)
    best = objective(ws, a)
    assert best <= objective(ws, torch.tensor([0.0, 0.0, 0.0, 1.0])) + 1e-5
    for k in range(3):  # no single coefficient move on a grid improves it
        for t in torch.linspace(-3, 3, 121):
            moved = a.clone()
            moved[k] = t
            assert objective(ws, moved) >= best - 1e-5


def _conv_quantizers(model):
    convs = [m for m in model.modules() if isinstance(getattr(m, "weight_quantizer", None), AccumulatedWeight)]
    return convs


def test_solved_coefficients_are_buffers_and_only_b_scale_trains():
    model = tinysr.create_model("srresnet_bam", scale=2, channels=8, units=3, weight_coefficients="solved").train()
    names = dict(model.named_parameters())
    assert not any("coeffs" in n for n in names)
    assert any(n.endswith("act_quantizer.scale") for n in names)
    model(torch.rand(2, 3, 12, 12)).mean().backward()
    for conv in _conv_quantizers(model):
        assert conv.act_quantizer.scale.grad is not None and conv.act_quantizer.scale.grad.abs().sum() > 0
        assert not conv.weight_quantizer.coeffs.requires_grad
    state = model.state_dict()
    assert any(k.endswith("weight_quantizer.coeffs") for k in state)  # saved with the model


def test_forward_is_the_accumulated_form():
    torch.manual_seed(0)
    model = tinysr.create_model("vdsr_bam", scale=2, channels=8, units=3, weight_coefficients="solved").eval()
    convs = _conv_quantizers(model)
    third = convs[2]
    third.weight_quantizer.coeffs.copy_(torch.tensor([0.7, -1.3, 1.0]))
    w = [c.weight for c in convs]
    want = torch.where(normalized(0.7 * w[0] - 1.3 * w[1] + w[2]) >= 0, 1.0, -1.0) * channel_scale(w[2])
    assert torch.equal(third.quantized_weight(), want)
    # activations: record each conv's input and check the third conv's binary input
    inputs = {}
    hooks = [c.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0])) for i, c in enumerate(convs)]
    signs = {}
    hooks.append(third.act_quantizer.register_forward_hook(lambda m, a, out: signs.__setitem__("out", out)))
    with torch.no_grad():
        x = torch.rand(2, 3, 10, 10)
        out = model(x)
        total = 0
        for i, c in enumerate(convs):
            q = c.act_quantizer
            total = total + q.scale.view(1, -1, 1, 1) * inputs[i].abs().mean((2, 3), keepdim=True) * inputs[i]
        want_act = torch.where(third.act_quantizer.norm(total) >= 0, 1.0, -1.0)
    assert torch.equal(signs["out"], want_act)
    for h in hooks:
        h.remove()
    plain = tinysr.create_model("vdsr_bam", scale=2, channels=8, units=3, accumulate=False, weight_coefficients="solved").eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (plain(x) - out).abs().max() > 1e-3  # switching accumulation off changes the output


def test_bam_solve_callback_lowers_the_objective():
    torch.manual_seed(0)
    model = tinysr.create_model("bsrn", scale=2, channels=8, hpb_blocks=1, lb_blocks=3, weight_coefficients="solved")
    last = [q for q in model.modules() if isinstance(q, AccumulatedWeight)]
    target = max(last, key=lambda q: q.index)
    ws = [c.weight.detach() for c in target.group.convs[: target.index + 1]]
    before = objective(ws, target.coeffs)

    class FakeTrainer:
        resume = False

    FakeTrainer.model = model
    BAMSolve(every=10).on_train_start(FakeTrainer())
    assert objective(ws, target.coeffs) < before  # strictly: a callback that did nothing would fail here
    assert target.coeffs[-1] == 1.0


def test_bsrn_size_counted_as_the_paper_does():
    model = tinysr.create_model("bsrn", scale=4)
    assert abs(paper_params(model) - 1216e3) / 1216e3 < 0.02
    cost = tinysr.profile(model, (180, 320))
    assert cost.params < paper_params(model) / 3  # binary weights count 1/32 in our convention


@pytest.mark.parametrize("name", ["vdsr_bam", "srresnet_bam", "bsrn"])
def test_bam_models_save_load_and_deepcopy(name, tmp_path):
    model = tinysr.create_model(name, scale=3, channels=8, **({"units": 2} if name != "bsrn" else {"hpb_blocks": 1, "lb_blocks": 2})).eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        want = model(x)
        tinysr.save(model, tmp_path / "m.safetensors")
        assert torch.equal(tinysr.load(tmp_path / "m.safetensors")(x), want)
    import copy

    clone = copy.deepcopy(model)
    members = {id(m) for m in clone.modules()}
    quantizers = [q for q in clone.modules() if isinstance(q, (AccumulatedWeight, AccumulatedSign))]
    assert quantizers and all(id(c) in members for q in quantizers for c in q.group.convs)  # groups follow the copy
    with torch.no_grad():
        assert torch.equal(clone(x), want)


def test_learned_coefficients_train_and_the_own_one_stays_one():
    model = tinysr.create_model("srresnet_bam", scale=2, channels=8, units=3).train()
    quantizers = [c.weight_quantizer for c in _conv_quantizers(model)]
    assert [q.coefficients().tolist() for q in quantizers] == [[1.0], [1.0, 1.0], [0.5, 0.5, 1.0]]  # earlier ones sum to 1
    assert not hasattr(quantizers[0], "earlier")  # nothing to learn for the first conv
    model(torch.rand(2, 3, 12, 12)).mean().backward()
    for q in quantizers[1:]:
        assert q.earlier.grad is not None and q.earlier.grad.abs().sum() > 0
    assert "body.2.conv.weight_quantizer.earlier" in dict(model.named_parameters())
    # the earlier convs' weights also receive gradient through the later convs' accumulated signs
    third, first_weight = quantizers[2], quantizers[2].group.convs[0].weight
    signs = third.signs(third.group.convs[2].weight)
    (grad,) = torch.autograd.grad((signs * torch.randn_like(signs)).sum(), first_weight)
    assert grad.abs().sum() > 0


def _weight_sets(channels: int = 32, layers: int = 6):
    """A trained-like weight set: layers drawn at PyTorch's init scale, each correlated with the last."""
    g = torch.Generator().manual_seed(5)
    ws = [torch.empty(channels, channels, 3, 3).uniform_(-0.06, 0.06, generator=g)]
    for _ in range(layers - 1):
        ws.append(0.3 * ws[-1] + torch.empty_like(ws[-1]).uniform_(-0.06, 0.06, generator=g))
    return ws


@pytest.mark.parametrize("coefficients", ["learned", "solved"])
def test_accumulation_changes_the_packed_signs_unless_solved_by_eq6(coefficients):
    """Eq. 6 read literally is minimised by the layer's own signs, so solved coefficients leave the
    packed signs (almost) those of sign(W_n); learned ones start where the earlier layers weigh as
    much as the own and change a real share of them."""
    from tinysr.compress import pack
    from tinysr.nn.packed import PackedBinaryConv2d

    torch.manual_seed(0)
    model = tinysr.create_model("srresnet_bam", scale=2, channels=32, units=6, weight_coefficients=coefficients)
    convs = _conv_quantizers(model)
    with torch.no_grad():
        for conv, w in zip(convs, _weight_sets()):
            conv.weight.copy_(w)
    BAMSolve()._solve(model)
    packed = [m for m in pack(model.eval()).modules() if isinstance(m, PackedBinaryConv2d)]
    assert len(packed) == len(convs)
    for conv, p in zip(convs[1:], packed[1:]):
        own = torch.where(conv.weight >= 0, 1.0, -1.0)
        accumulated = p.signs()
        changed = float((accumulated != own).float().mean())
        if coefficients == "learned":
            assert changed > 0.05
        else:
            assert changed < 0.01
            assert conv.weight_quantizer.coeffs[:-1].abs().max() < 0.05


def test_bsrn_figure_lb_block_wiring():
    """refs/bam_bsrn_hpb.png: with the two 1x1 convs silent (zero weights) an LB-block returns
    b1 A1 + b2 A2 with A1 = conv3(x) and A2 = b1 A1: the beta-weighted skips, no identity, no BN."""
    from tinysr.models.bam import FigureLBBlock

    torch.manual_seed(0)
    model = tinysr.create_model("bsrn", scale=2, channels=8, hpb_blocks=1, lb_blocks=2).eval()
    block = model.body[0].blocks[0]
    assert isinstance(block, FigureLBBlock)
    assert [c.kernel_size for c in (block.conv3, block.conv1a, block.conv1b)] == [(3, 3), (1, 1), (1, 1)]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.affine for m in model.modules())  # BN only inside the signs
    with torch.no_grad():
        for c in (block.conv1a, block.conv1b):
            c.weight.zero_()
        for c in (block.conv1a, block.conv1b):
            c.act_quantizer.scale.uniform_(0.5, 2.0)
        x = torch.randn(2, 8, 7, 9)
        a1 = block.conv3(x)

        def term(q, a):
            return q.scale.view(1, -1, 1, 1) * a.abs().mean((2, 3), keepdim=True) * a

        a2 = term(block.conv1a.act_quantizer, a1)
        want = a2 + term(block.conv1b.act_quantizer, a2)
        torch.testing.assert_close(block(x), want)
        # the 3x3 input is binarised on its own: sign(BN(b x)), not part of the 1x1 convs' sum
        q3 = block.conv3.act_quantizer
        assert q3.group is not block.acts and not q3.group.accumulate


@pytest.mark.parametrize("wiring", ["figure", "units"])
def test_bsrn_with_silent_binary_branches_is_its_skeleton(wiring):
    """Silent binary convs (zero weights, so E|W| = 0): the figure's LB-blocks output zero, so the body
    is zero unless each HPB carries its identity; the units' LB-blocks are identities, and no
    HPB-level skip is added over units that already carry one (that doubles the features per HPB)."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 9, 11)
    for hpb_skip, image_skip in [(False, False), (True, False), (True, True)]:
        if wiring == "units" and hpb_skip:
            continue
        model = tinysr.create_model(
            "bsrn", scale=2, channels=8, hpb_blocks=3, lb_blocks=2, wiring=wiring, hpb_skip=hpb_skip, image_skip=image_skip, out_relu=False
        ).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, tinysr.nn.BinaryConv2d):
                    m.weight.zero_()
            head = model.head(x)
            body = torch.zeros_like(head) if (wiring == "figure" and not hpb_skip) else head
            expected = model.tail(model.upsampler(body))
            if image_skip:
                expected = expected + torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            torch.testing.assert_close(model(x), expected)
    assert isinstance(tinysr.create_model("bsrn", scale=2).tail, torch.nn.Sequential)  # the paper's Conv-ReLU output by default
    assert isinstance(tinysr.create_model("bsrn", scale=2, out_relu=False).tail, torch.nn.Conv2d)


def test_bsrn_small_binary_init_starts_each_hpb_near_the_identity():
    torch.manual_seed(0)
    kwargs = dict(scale=2, channels=16, hpb_blocks=2, lb_blocks=2, hpb_skip=True, image_skip=True, out_relu=False)
    small = tinysr.create_model("bsrn", binary_init="small", **kwargs).eval()
    binary = [m.weight.detach() for m in small.body.modules() if isinstance(m, tinysr.nn.BinaryConv2d)]
    assert binary and all(float(w.min()) >= 0 and float(w.max()) <= 1e-3 for w in binary)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        head = small.head(x)
        assert (small.body(head) - head).norm() < 0.1 * head.norm()
        default = tinysr.create_model("bsrn", **kwargs).eval()
        head = default.head(x)
        assert (default.body(head) - head).norm() > 0.5 * head.norm()  # PyTorch's init: far from it


def test_bad_bam_options_are_named():
    with pytest.raises(ValueError, match="wiring"):
        tinysr.create_model("bsrn", scale=2, wiring="drawn")
    with pytest.raises(ValueError, match="binary_init"):
        tinysr.create_model("bsrn", scale=2, binary_init="zeros")
    with pytest.raises(ValueError, match="weight coefficients"):
        tinysr.create_model("srresnet_bam", scale=2, weight_coefficients="fitted")


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("srresnet_bam", {"units": 4}),
        ("srresnet_bam", {"units": 4, "weight_coefficients": "solved"}),
        ("bsrn", {"hpb_blocks": 2, "lb_blocks": 2}),
        ("bsrn", {"hpb_blocks": 2, "lb_blocks": 2, "hpb_skip": True, "image_skip": True, "out_relu": False}),
        ("bsrn", {"hpb_blocks": 2, "lb_blocks": 2, "wiring": "units"}),
    ],
    ids=["srresnet", "srresnet_solved", "bsrn", "bsrn_skips", "bsrn_units"],
)
def test_packed_bam_matches_float_and_reloads(name, kwargs, tmp_path):
    # pack keeps each conv's accumulated activation quantizer in front of the packed conv and packs
    # the accumulated weight signs with E|W_n|: the float-simulated network's outputs, to rounding.
    from tinysr.compress import pack, set_kernel

    torch.manual_seed(0)
    model = tinysr.create_model(name, scale=2, channels=16, **kwargs)
    for _ in range(3):  # non-trivial BN statistics
        model(torch.rand(2, 3, 12, 12))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        BAMSolve()._solve(model)
    model.eval()
    x = torch.rand(1, 3, 13, 11)
    with torch.no_grad():
        want = model(x)
        packed = pack(model)
        for kernel in ("torch", "auto"):
            torch.testing.assert_close(set_kernel(packed, kernel)(x), want, rtol=0, atol=1e-4)
        tinysr.save(packed, tmp_path / "p.safetensors")
        assert torch.equal(tinysr.load(tmp_path / "p.safetensors")(x), packed(x))


@pytest.mark.parametrize("activation_scale", ["abs_mean", "mean"])
def test_activation_scale_is_the_mean_magnitude_or_the_papers_literal_mean(activation_scale):
    """b_k = b^scale * E(|A_k|) by default; ``mean``: E(A_k) as the paper writes it."""
    torch.manual_seed(1)
    model = tinysr.create_model("vdsr_bam", scale=2, channels=8, units=2, activation_scale=activation_scale).eval()
    convs = _conv_quantizers(model)
    inputs, signs = {}, {}
    hooks = [c.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0])) for i, c in enumerate(convs)]
    hooks.append(convs[1].act_quantizer.register_forward_hook(lambda m, a, out: signs.__setitem__("out", out)))
    with torch.no_grad():
        model(torch.rand(2, 3, 9, 9) - 0.3)
        scale = (lambda a: a.abs()) if activation_scale == "abs_mean" else (lambda a: a)
        total = sum(
            c.act_quantizer.scale.view(1, -1, 1, 1) * scale(inputs[i]).mean((2, 3), keepdim=True) * inputs[i] for i, c in enumerate(convs)
        )
        assert torch.equal(signs["out"], torch.where(convs[1].act_quantizer.norm(total) >= 0, 1.0, -1.0))
    for h in hooks:
        h.remove()
    with pytest.raises(ValueError, match="activation_scale"):
        tinysr.create_model("vdsr_bam", scale=2, activation_scale="median")

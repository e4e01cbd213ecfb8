"""Bit-packed binary inference (SPEC §9): the native kernel on every path equals the float model."""

import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tinysr
from test_binary import xnor_popcount_reference
from tinysr import kernels
from tinysr.cli import main
from tinysr.compress import deployable, pack, set_kernel, unpack_into
from tinysr.compress.deploy import deploy_form
from tinysr.errors import TinySRError
from tinysr.kernels import available_paths, cpu_model, native
from tinysr.nn import ActivationQuantizer, BinaryConv2d, FoldableBatchNorm2d, RSign, SignActivation, WeightQuantizer, XnorWeight
from tinysr.nn import packed as packed_layers
from tinysr.nn.packed import PackedBinaryConv2d, conv_pair_with_stages, pack_weight_signs, unpack_weight_signs
from tinysr.plugins import no_macs, register_cost

PATHS = available_paths()


def cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split())


def test_native_kernel_builds_where_a_compiler_exists_and_dispatch_sees_the_cpu():
    if shutil.which("c++") is None:
        assert PATHS == ["torch"]  # no compiler: the PyTorch path only, and it is tested below
        return
    assert native() is not None, "a C++ compiler is present but the native kernel did not build"
    assert {"torch", "portable"} <= set(PATHS)
    flags = cpu_flags()
    assert ("avx2" in PATHS) == ("avx2" in flags and "popcnt" in flags)
    has_avx512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vpopcntdq"} <= flags
    cap = os.environ.get("TINYSR_MAX_CPU_ISA", "").lower()
    assert ("avx512" in PATHS) == (has_avx512 and cap not in ("avx2", "portable"))


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler: no native paths to cap")
@pytest.mark.parametrize("cap, hidden", [("AVX2", {"avx512"}), ("portable", {"avx2", "avx2_pixels", "avx512"})])
def test_max_cpu_isa_hides_the_paths_above_it(cap, hidden):
    """TINYSR_MAX_CPU_ISA stands an AVX-512 machine in for an AVX2-only one (or a plain one)."""
    code = "from tinysr.kernels import available_paths; print(' '.join(available_paths()))"
    env = {**os.environ, "TINYSR_MAX_CPU_ISA": cap}
    capped = set(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split())
    assert capped == set(PATHS) - hidden


class _Terminal:
    """A stand-in stderr that says it is a terminal and keeps what is written to it."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_a_native_build_is_announced_on_a_terminal_once(monkeypatch, tmp_path):
    """The first build takes seconds: a terminal user hears why; a cached build is silent, and an
    edit to the sources (a new digest) builds, and is announced, again."""
    monkeypatch.setenv("TINYSR_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_compile", lambda target: target.parent.mkdir(parents=True, exist_ok=True) or target.write_text(""))
    monkeypatch.setattr(kernels, "_load", lambda library: "module")
    terminal = _Terminal()
    monkeypatch.setattr(kernels.sys, "stderr", terminal)
    kernels.native.cache_clear()
    try:
        assert kernels.native() == "module"
        assert terminal.text.count("compiling the native kernels") == 1
        kernels.native.cache_clear()
        assert kernels.native() == "module"  # the library is there: no second notice
        assert terminal.text.count("compiling") == 1
        monkeypatch.setattr(kernels, "_sources_digest", lambda: "other sources")
        kernels.native.cache_clear()
        kernels.native()
        assert terminal.text.count("compiling") == 2
    finally:
        kernels.native.cache_clear()


def test_a_native_build_is_cached_by_digest_and_moved_into_place_whole(monkeypatch, tmp_path):
    """The library is built in a private folder and appears under its digest's name only when
    whole; the build folder is gone after, and a failed compile leaves nothing behind."""
    target = tmp_path / "kernels" / "tinysr_kernels-test.so"
    if shutil.which(kernels._compiler()) is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setattr(kernels, "SOURCES", ("haar.cpp", "ssim.cpp"))  # the small ones: the build path, not its time
    kernels._compile(target)
    assert target.is_file() and [p.name for p in target.parent.iterdir()] == [target.name]
    library = ctypes.CDLL(str(target))
    assert hasattr(library, "tinysr_haar_dwt") and hasattr(library, "tinysr_ssim_filter")  # both objects linked
    monkeypatch.setattr(kernels, "SOURCES", ("no_such_source.cpp",))
    broken = tmp_path / "kernels" / "tinysr_kernels-broken.so"
    with pytest.raises(RuntimeError, match="failed"):
        kernels._compile(broken)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_the_digest_follows_the_sources_flags_and_compiler(monkeypatch):
    digest = kernels._sources_digest()
    assert kernels._library_path().name.startswith(f"tinysr_kernels-{digest}")
    monkeypatch.setattr(kernels, "FLAGS", (*kernels.FLAGS, "-DSOMETHING"))
    flagged = kernels._sources_digest()
    monkeypatch.setenv("CXX", "some-other-c++")
    assert len({digest, flagged, kernels._sources_digest()}) == 3


def test_cpu_model_names_this_cpu(monkeypatch):
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
    if names:  # Linux on x86: the OS's name for it, not the bare architecture
        assert cpu_model() == names[0]

    def no_procfs(self):
        raise OSError("no /proc here")

    monkeypatch.setattr(kernels.Path, "read_text", no_procfs)
    assert cpu_model() == (platform.processor() or platform.machine())


@pytest.mark.parametrize("o, c, k", [(7, 3, (3, 3)), (64, 64, (3, 3)), (130, 70, (1, 5)), (9, 129, (5, 1))])
def test_weight_signs_pack_to_one_bit_and_back(o, c, k):
    w = torch.randn(o, c, *k)
    w[0, 0, 0, 0] = 0.0  # sign(0) = +1
    words = pack_weight_signs(w)
    assert words.dtype == torch.int64 and words.shape == (*k, -(-c // 64), -(-o // 8) * 8)
    signs = unpack_weight_signs(words, o, c)
    assert torch.equal(signs, torch.where(w >= 0, 1.0, -1.0))


def binary_conv(cin, cout, kernel, stride, padding, dilation, threshold: bool, scale: bool = True) -> BinaryConv2d:
    act = RSign(cin) if threshold else SignActivation()
    conv = BinaryConv2d(cin, cout, kernel, stride, padding, dilation, act_quantizer=act, weight_quantizer=XnorWeight(scale=scale))
    if threshold:
        conv.act_quantizer.threshold.data.normal_(0, 0.3)
    return conv.eval()


GEOMETRIES = [
    (64, 64, 3, 1, 1, 1),
    (5, 6, 3, 1, 0, 1),
    (7, 13, (1, 5), 1, (0, 4), (1, 2)),
    (70, 9, (5, 1), 2, (2, 0), (2, 1)),
    (3, 17, 3, 2, 1, 2),
    (129, 130, 3, (2, 1), (0, 2), 1),
    (288, 24, 3, 1, 1, 1),  # 45 words per output: the AVX2 byte counters are summed mid-pixel
    (20, 40, 3, 1, 1, 1),  # AVX-512 blocks of 5, 6 and 7 vectors: other interior groupings
    (33, 48, 3, 1, 1, 1),
    (65, 56, 3, 1, 1, 1),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cin, cout, kernel, stride, padding, dilation", GEOMETRIES)
@pytest.mark.parametrize("threshold", [False, True], ids=["sign", "rsign"])
def test_packed_conv_equals_float_simulation_exactly(path, cin, cout, kernel, stride, padding, dilation, threshold):
    torch.manual_seed(cin * 31 + cout)
    conv = binary_conv(cin, cout, kernel, stride, padding, dilation, threshold)
    x = torch.randn(2, cin, 13, 17)
    thr = conv.act_quantizer.threshold.detach().flatten() if threshold else torch.zeros(cin)
    x[0, :, 0, :4] = thr.view(-1, 1)  # exact ties: sign(0) = +1 on both sides
    packed = PackedBinaryConv2d.from_conv(conv)
    packed.kernel = path
    with torch.no_grad():
        want, got = conv(x), packed(x)
    assert got.shape == want.shape
    assert torch.equal(got, want)  # the same float arithmetic: bit for bit


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cin, cout, kernel, padding, dilation", [(24, 24, 3, 1, 1), (72, 13, 3, 2, 2), (64, 64, (3, 5), (1, 2), 1)])
@pytest.mark.parametrize("width", [150, 374])
def test_packed_conv_equals_float_simulation_on_wide_rows(path, cin, cout, kernel, padding, dilation, width):
    """Rows wider than the test geometries above, as the AVX2 pixel-lane path blocks them (these
    layers keep the width): 150 pixels run as one block of 160 with a partial tail, 374 as two
    blocks of 192, the second partial. The blocks, their tail and both borders' padding corrections."""
    torch.manual_seed(cin + cout)
    conv = binary_conv(cin, cout, kernel, 1, padding, dilation, threshold=True)
    x = torch.randn(1, cin, 5, width)
    packed = PackedBinaryConv2d.from_conv(conv)
    packed.kernel = path
    with torch.no_grad():
        assert torch.equal(packed(x), conv(x))


@pytest.mark.parametrize("path", PATHS)
def test_packed_conv_counts_every_bit_when_all_disagree(path):
    """The worst case for any counter: every activation sign against every weight sign, 288
    channels x 9 taps = 45 words per output, each adding 8 to every byte (the AVX2 path's byte
    counters must be summed before they overflow)."""
    conv = binary_conv(288, 24, 3, 1, 1, 1, threshold=False)
    with torch.no_grad():
        conv.weight.copy_(torch.rand_like(conv.weight) + 0.1)  # every sign +1
    x = -torch.rand(1, 288, 6, 7) - 0.1  # every sign -1
    packed = PackedBinaryConv2d.from_conv(conv)
    packed.kernel = path
    with torch.no_grad():
        want, got = conv(x), packed(x)
    assert torch.equal(got, want)
    assert float(want[0, 0, 3, 3]) == pytest.approx(-288 * 9 * float(conv.weight_quantizer.alpha(conv.weight)[0]), rel=1e-5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cin, cout, kernel, stride, padding, dilation", GEOMETRIES[:4])
def test_packed_conv_integers_equal_xnor_popcount_reference(path, cin, cout, kernel, stride, padding, dilation):
    torch.manual_seed(3)
    conv = binary_conv(cin, cout, kernel, stride, padding, dilation, threshold=False)
    x = torch.randn(1, cin, 11, 10)
    packed = PackedBinaryConv2d.from_conv(conv)
    packed.kernel = path
    with torch.no_grad():
        got = packed(x).double().numpy()
    np.testing.assert_allclose(got, xnor_popcount_reference(x, conv), rtol=1e-6, atol=1e-5)


@pytest.mark.skipif("avx2_pixels" not in PATHS, reason="needs the AVX2 paths (an x86 CPU with AVX2)")
def test_auto_times_the_two_avx2_kernels_once_per_width_class_and_keeps_the_faster(monkeypatch):
    """On a CPU without AVX-512, ``auto`` runs whichever AVX2 kernel was faster on the layer's
    first input of that width class; here the pixel-lane one is made slow, so the other is kept."""
    monkeypatch.setattr(packed_layers, "_autotunes", lambda: True)
    conv = binary_conv(24, 24, 3, 1, 1, 1, threshold=True)
    packed = PackedBinaryConv2d.from_conv(conv)
    module = native()
    calls = []

    class SlowPixelLanes:
        def packed_conv2d(self, *args):
            calls.append(args[10])
            if args[10] == kernels.PATHS["avx2_pixels"]:
                time.sleep(0.02)
            return module.packed_conv2d(*args)

    x = torch.randn(1, 24, 9, 40)
    words = module.pack_activations(x, packed.threshold, 0)
    with torch.no_grad():
        want = conv(x)
        assert torch.equal(packed.run_native(SlowPixelLanes(), words), want)
        assert sorted(set(calls)) == [kernels.PATHS["avx2"], kernels.PATHS["avx2_pixels"]]
        calls.clear()
        assert torch.equal(packed.run_native(SlowPixelLanes(), words), want)
        assert calls == [kernels.PATHS["avx2"]]  # decided: one call, the faster kernel
        calls.clear()
        packed.run_native(SlowPixelLanes(), module.pack_activations(torch.randn(2, 24, 5, 33), packed.threshold, 0))
        assert calls == [kernels.PATHS["avx2"]]  # another size of the same width class: no new timing
        calls.clear()
        packed.run_native(SlowPixelLanes(), module.pack_activations(torch.randn(1, 24, 5, 7), packed.threshold, 0))
        assert len(calls) == 2 * packed_layers.AUTOTUNE_ROUNDS  # a narrower class is timed anew


@pytest.mark.parametrize("path", [p for p in PATHS if p != "torch"])
def test_thread_count_does_not_change_the_result(path):
    conv = binary_conv(48, 40, 3, 1, 1, 1, threshold=True)
    packed = PackedBinaryConv2d.from_conv(conv)
    packed.kernel = path
    x = torch.randn(3, 48, 21, 19)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = packed(x)
        torch.set_num_threads(2)
        two = packed(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


SMALL_NETWORKS = [
    ("edsr_btm", {"channels": 16, "blocks": 2}),
    ("edsr_reactnet", {"channels": 16, "units": 3}),
    ("edsr_bnn", {"channels": 16, "units": 3}),
    ("edsr_ibtm", {"channels": 16, "blocks": 2}),
    ("fabnet_b4c12", {}),
    ("fabnet_b8c96", {"channels": 8, "blocks": 2}),
    ("bbcu_l", {"channels": 16, "units": 3}),
    ("bbcu_m", {"channels": 16, "units": 3}),
    ("edsr_e2fif", {"channels": 16, "blocks": 2}),
]


@pytest.mark.parametrize("name, kwargs", SMALL_NETWORKS)
def test_packed_network_equals_unpacked_on_every_path(name, kwargs, tmp_path):
    torch.manual_seed(0)
    model = tinysr.create_model(name, scale=2, **kwargs).eval()
    for m in model.modules():  # non-trivial BN statistics where there is BN
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2)
    x = torch.rand(2, 3, 19, 26)
    packed = pack(model)
    with torch.no_grad():
        want = model(x)
        outputs = {p: set_kernel(packed, p)(x) for p in PATHS}
    for path, got in outputs.items():
        assert (got - want).abs().max() <= 1e-4, path
        assert torch.equal(got, outputs["torch"]), path  # binary paths agree bit for bit
    tinysr.save(packed, tmp_path / "packed.safetensors")
    loaded = tinysr.load(tmp_path / "packed.safetensors")
    assert loaded.tinysr_spec.transforms == [{"name": "pack"}]
    with torch.no_grad():
        assert torch.equal(set_kernel(loaded, "torch")(x), outputs["torch"])


@pytest.mark.parametrize("name, kwargs", SMALL_NETWORKS)
def test_a_packed_network_unpacks_into_its_training_form_with_the_same_function(name, kwargs):
    torch.manual_seed(0)
    model = tinysr.create_model(name, scale=2, **kwargs)
    with torch.no_grad():
        for p in model.parameters():  # thresholds, biases and shifts away from their zero start
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    packed = pack(model)
    torch.manual_seed(1)
    fresh = tinysr.create_model(name, scale=2, **kwargs)
    set_count = unpack_into(fresh, packed)
    # every tensor of the training form comes back, but the estimators' coefficients (not in a packed model)
    coefficients = [k for k in fresh.state_dict() if k.endswith((".act_quantizer.t", ".act_quantizer.sign.t"))]
    assert set_count == len(fresh.state_dict()) - len(coefficients)
    x = torch.rand(1, 3, 13, 17)
    with torch.no_grad():
        assert (fresh.eval()(x) - model(x)).abs().max() <= 1e-5
    repacked = pack(fresh)
    for (key, mine), theirs in zip(packed.state_dict().items(), repacked.state_dict().values()):
        if key.endswith(("weight_words", "threshold")):
            assert torch.equal(mine, theirs), key
        elif key.endswith("alpha"):
            torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=0)


def test_unpacking_refuses_quantizers_it_cannot_invert_and_takes_matching_layers_only():
    bam = pack(tinysr.create_model("srresnet_bam", scale=2, channels=16, units=2).eval())
    with pytest.raises(ValueError, match=r"layer body\.\S+: AccumulatedWeight cannot recover a latent weight"):
        unpack_into(tinysr.create_model("srresnet_bam", scale=2, channels=16, units=2), bam)
    x2 = pack(tinysr.create_model("edsr_btm", scale=2, channels=16, blocks=2).eval())
    x4 = tinysr.create_model("edsr_btm", scale=4, channels=16, blocks=2)
    tail = {k: v.clone() for k, v in x4.state_dict().items() if k.startswith("tail")}
    assert 0 < unpack_into(x4, x2) < len(x4.state_dict())
    changed = [k for k, v in x4.state_dict().items() if k in tail and not torch.equal(v, tail[k])]
    assert changed == [k for k in tail if k in x2.state_dict() and x2.state_dict()[k].shape == tail[k].shape]
    with pytest.raises(ValueError, match="SignActivation has no threshold to hold a nonzero one"):
        SignActivation().load_sign_threshold(torch.ones(3))


def test_unpacking_refused_part_way_leaves_the_model_as_it_was(monkeypatch):
    packed = pack(tinysr.create_model("edsr_btm", scale=2, channels=16, blocks=2).eval())
    model = tinysr.create_model("edsr_btm", scale=2, channels=16, blocks=2)
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d) and m.is_binary]
    assert len(convs) > 1

    def refuse(*args):
        raise ValueError("cannot invert")

    monkeypatch.setattr(convs[-1].weight_quantizer, "latent_weight", refuse)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="cannot invert"):
        unpack_into(model, packed)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


NATIVE = [p for p in PATHS if p not in ("torch", "portable")] + (["portable"] if "portable" in PATHS else [])


@pytest.mark.parametrize("path", ["torch", *NATIVE])
def test_output_stages_equal_the_layers_they_replace(path):
    """A per-channel scale and shift, a PReLU with slopes of both signs, a residual and a
    LeakyReLU, applied in the kernel's output pass (or by ``apply_stages`` on the torch path), give
    the floats PyTorch's own layers give (negative outputs included)."""
    torch.manual_seed(5)
    conv = binary_conv(40, 24, 3, 1, 1, 1, threshold=True)
    packed = PackedBinaryConv2d.from_conv(conv)
    packed.kernel = path
    x = torch.randn(2, 40, 9, 11).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, 24, 9, 11)
    prelu = torch.nn.PReLU(24)
    with torch.no_grad():
        prelu.weight.uniform_(-1, 1)
    shift, scale = torch.randn(24), torch.randn(24) / 3
    leaky = torch.nn.LeakyReLU(0.1)
    stages = (("mul", scale), ("add", shift), ("prelu", prelu.weight.detach()), ("residual", None), ("add", -shift))
    stages += tuple(packed_layers.stages_of(leaky, 24))
    with torch.no_grad():
        want = prelu(conv(x) * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)) + residual - shift.view(1, -1, 1, 1)
        want = leaky(want)
        got = packed(x, stages, residual)
    assert (want < 0).any() and (want > 0).any()
    assert torch.equal(got, want)
    assert torch.equal(packed(x), conv(x).detach())  # no stages: the layer alone


@pytest.mark.parametrize("path", NATIVE)
@pytest.mark.parametrize("cin, mid, cout", [(40, 24, 40), (70, 70, 70), (24, 130, 33)])
def test_a_conv_pair_packs_the_second_input_in_the_first_output_pass(path, cin, mid, cout, monkeypatch):
    """Two binary convs where only the second reads the first's output (a BTM / FABNet block):
    the first conv returns the second's packed input bits instead of floats, and the block's
    output equals the float-simulated layers bit for bit (odd channel counts, words beyond 64)."""
    torch.manual_seed(cin + mid + cout)
    first, second = binary_conv(cin, mid, 3, 1, 1, 1, threshold=True), binary_conv(mid, cout, 3, 1, 1, 1, threshold=True)
    packed = [PackedBinaryConv2d.from_conv(c) for c in (first, second)]
    for p in packed:
        p.kernel = path
    prelus = [torch.nn.PReLU(mid), torch.nn.PReLU(cout)]
    with torch.no_grad():
        for m in prelus:
            m.weight.uniform_(-1, 1)
    x = torch.randn(2, cin, 9, 11).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, cout, 9, 11)
    emitted = []
    run_native = PackedBinaryConv2d.run_native

    def spy(self, *args, **kwargs):
        emitted.append(kwargs.get("next_threshold") is not None)
        return run_native(self, *args, **kwargs)

    monkeypatch.setattr(PackedBinaryConv2d, "run_native", spy)
    with torch.no_grad():
        want = prelus[1](second(prelus[0](first(x)))) + residual
        got = conv_pair_with_stages(*packed, x, [prelus[0]], [prelus[1]], residual=residual)
    assert emitted == [True, False]  # the first conv wrote words, the second read them
    assert torch.equal(got, want)


FUSABLE_NETWORKS = [  # name, kwargs, the BNs the binary body has (each after a binary conv)
    ("edsr_btm", {"channels": 16, "blocks": 2}, 0),
    ("edsr_reactnet", {"channels": 16, "units": 3}, 3),
    ("edsr_reactnet", {"channels": 16, "units": 3, "bn": False}, 0),
    ("edsr_reactnet", {"channels": 16, "units": 3, "bn": False, "rprelu_position": "in_branch"}, 0),
    ("edsr_bnn", {"channels": 16, "units": 3}, 3),
    ("edsr_bnn", {"channels": 16, "units": 3, "bn": False}, 0),
    ("fabnet_b4c12", {}, 0),
    ("bbcu_l", {"channels": 16, "units": 3}, 0),
    ("bbcu_m", {"channels": 16, "units": 3}, 0),
    ("edsr_e2fif", {"channels": 16, "blocks": 2}, 4),
    ("srresnet_bam", {"channels": 16, "units": 4}, 4),
]
# the element-wise modules a native path runs inside the binary convs' output pass
FOLDED = (torch.nn.PReLU, torch.nn.LeakyReLU, FoldableBatchNorm2d)


@pytest.mark.parametrize("name, kwargs, norms", FUSABLE_NETWORKS)
def test_packed_blocks_fold_their_activations_norms_and_adds_into_the_conv(name, kwargs, norms):
    """On a native path no PReLU, LeakyReLU or BN module runs inside the binary body: the convs
    apply them, and the output equals the unfused PyTorch path bit for bit (BN with trained-like
    statistics and affine parameters)."""
    torch.manual_seed(1)
    model = tinysr.create_model(name, scale=2, **kwargs).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.PReLU):
            with torch.no_grad():
                m.weight.uniform_(-0.5, 0.5)
        if isinstance(m, FoldableBatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.3, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if p.dim() == 4 and p.shape[0] == 1 and p.shape[2:] == (1, 1):  # RPReLU shifts
                with torch.no_grad():
                    p.normal_(0, 0.1)
    packed = pack(model)
    inner = getattr(packed, "net", packed)
    bodies = [inner.low, inner.high] if name.startswith("fabnet") else [inner.body]
    if name == "bbcu_m":  # its upsampler and conv_hr are binary units too
        bodies += [inner.upsampler, inner.conv_hr]
    # inside the blocks (a layer between blocks, such as BBCU-M's LeakyReLU after conv_hr, stays)
    body_folded = [
        m
        for body in bodies
        for parent in body.modules()
        if not isinstance(parent, torch.nn.Sequential)
        for m in parent.children()
        if isinstance(m, FOLDED)
    ]
    assert sum(isinstance(m, FoldableBatchNorm2d) for m in body_folded) == norms
    calls = []
    for m in body_folded:
        m.register_forward_hook(lambda *args: calls.append(1))
    x = torch.rand(1, 3, 15, 18)
    with torch.no_grad():
        unfused = set_kernel(packed, "torch")(x)
        unfused_calls = len(calls)
        fused = {p: set_kernel(packed, p)(x) for p in NATIVE}
    assert unfused_calls == len(body_folded) > 0 or (name, kwargs.get("bn")) == ("edsr_bnn", False)
    assert len(calls) == unfused_calls  # none more on the native paths
    for path, got in fused.items():
        assert torch.equal(got, unfused), path


def test_foldable_batch_norm_is_batch_norm_up_to_rounding():
    """Training: nn.BatchNorm2d exactly (output and running statistics). Inference: x * s + t, the
    two operations a packed conv's stages run, within a few float32 epsilons of PyTorch's BN (of
    the larger of |x s| and |t|: they cancel near zero), with the same state dict."""
    torch.manual_seed(3)
    ours, reference = FoldableBatchNorm2d(12), torch.nn.BatchNorm2d(12)
    with torch.no_grad():
        ours.running_mean.uniform_(-1, 1)
        ours.running_var.uniform_(0.2, 3)
        ours.weight.uniform_(-2, 2)
        ours.bias.uniform_(-1, 1)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(3, 12, 10, 9)
    assert torch.equal(ours(x), reference(x))  # training mode
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(ours, name), getattr(reference, name))
    assert ours.epilogue_stages(12) is None  # nothing to fold while training
    ours.eval(), reference.eval()
    scale, shift = ours.inference_affine()
    with torch.no_grad():
        got, want = ours(x), reference(x)
        magnitude = torch.maximum((x * scale.view(1, -1, 1, 1)).abs(), shift.abs().view(1, -1, 1, 1))
        assert torch.equal(got, x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    assert ((got - want).abs() <= 16 * torch.finfo(torch.float32).eps * magnitude).all()
    assert [name for name, _ in ours.epilogue_stages(12)] == ["mul", "add"]
    assert ours(x.half()).dtype == torch.float16


def test_packed_weights_are_one_bit(tmp_path):
    model = tinysr.create_model("edsr_btm", scale=2).eval()
    packed = pack(model)
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d) and m.is_binary]
    layers = [m for m in packed.modules() if isinstance(m, PackedBinaryConv2d)]
    assert len(convs) == len(layers) == 32
    float_bytes = sum(m.weight.numel() * 4 for m in convs)
    packed_bytes = sum(m.weight_words.numel() * 8 for m in layers)
    assert packed_bytes * 32 == float_bytes  # 64 channels = one word: exactly 1/32
    tinysr.save(model, tmp_path / "float.safetensors")
    tinysr.save(packed, tmp_path / "packed.safetensors")
    saved = (tmp_path / "float.safetensors").stat().st_size - (tmp_path / "packed.safetensors").stat().st_size
    assert saved >= 0.9 * (float_bytes - packed_bytes)


def test_pack_refuses_what_it_cannot_pack():
    with pytest.raises(TinySRError, match="no binary convolutions"):
        pack(tinysr.create_model("edsr_baseline", scale=2))
    with pytest.raises(TinySRError, match="already packed"):
        pack(pack(tinysr.create_model("edsr_btm", scale=2, channels=8, blocks=1)))


def test_cli_deploy_packs_binary_models(tmp_path, capsys):
    model = tinysr.create_model("edsr_reactnet", scale=2, channels=16, units=2)
    tinysr.save(model, tmp_path / "m.safetensors")
    assert main(["deploy", "-m", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "p.safetensors")]) == 0
    assert "bit-packed" in capsys.readouterr().out
    packed = tinysr.load(tmp_path / "p.safetensors")
    assert any(isinstance(m, PackedBinaryConv2d) for m in packed.modules())
    assert main(["deploy", "-m", str(tmp_path / "p.safetensors"), "-o", str(tmp_path / "q.safetensors")]) == 2
    assert "already packed" in capsys.readouterr().err


def test_cli_deploy_says_a_full_precision_model_has_nothing_to_deploy(tmp_path, capsys):
    model = tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=1)
    assert deploy_form(model) == "none" and deployable(model) is model  # bench and the zoo use it as trained
    tinysr.save(model, tmp_path / "fp.safetensors")
    assert main(["deploy", "-m", str(tmp_path / "fp.safetensors"), "-o", str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "fp.safetensors" in err and "nothing to deploy" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_deploy_stores_at_the_precision_asked_and_replaces_no_file_untold(tmp_path, capsys):
    model = tinysr.create_model("edsr_baseline", scale=2, channels=16, blocks=2)
    src, out = tmp_path / "fp.safetensors", tmp_path / "out.safetensors"
    tinysr.save(model, src)
    assert main(["deploy", "-m", str(src), "-o", str(out), "--precision", "int8"]) == 0  # as trained, smaller
    assert "as trained" in capsys.readouterr().out and out.stat().st_size < 0.4 * src.stat().st_size
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert (tinysr.load(out)(x) - model(x)).abs().max() < 0.02
    before = out.read_bytes()
    assert main(["deploy", "-m", str(src), "-o", str(out), "--precision", "float16"]) == 2  # an existing file, untold
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out.safetensors exists" in err[0] and "--overwrite" in err[0]
    assert out.read_bytes() == before
    assert main(["deploy", "-m", str(src), "-o", str(out), "--precision", "float16", "--overwrite"]) == 0
    assert out.read_bytes() != before
    binary = tinysr.create_model("edsr_reactnet", scale=2, channels=16, units=2)
    tinysr.save(binary, tmp_path / "b.safetensors")
    assert main(["deploy", "-m", str(tmp_path / "b.safetensors"), "-o", str(tmp_path / "p16.safetensors"), "--precision", "float16"]) == 0
    assert "in float16" in capsys.readouterr().out
    assert any(isinstance(m, PackedBinaryConv2d) for m in tinysr.load(tmp_path / "p16.safetensors").modules())


class MedianScaledSigns(WeightQuantizer):
    """A toy 1-bit weight quantizer neither layer knows: signs scaled by the per-channel median |W|."""

    def signs(self, weight):
        return torch.where(weight >= 0, 1.0, -1.0)

    def alpha(self, weight):
        return weight.abs().flatten(1).median(dim=1).values.view(-1, 1, 1, 1)


class FixedThresholdSign(ActivationQuantizer):
    """A toy 1-bit activation quantizer: ``sign(x - t_c)`` with a fixed, non-learned threshold per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("t", torch.linspace(-0.5, 0.5, channels))

    def sign_threshold(self):
        return self.t

    def forward(self, x):
        return torch.where(x - self.t.view(1, -1, 1, 1) >= 0, 1.0, -1.0)


register_cost(FixedThresholdSign)(no_macs)


@pytest.mark.parametrize("path", PATHS)
def test_a_new_quantizer_packs_through_the_protocol_alone(path):
    """Neither BinaryConv2d nor PackedBinaryConv2d names a quantizer class: a scheme they have never
    seen packs and equals its float simulation bit for bit."""
    torch.manual_seed(5)
    conv = BinaryConv2d(12, 10, 3, padding=1, bias=True, act_quantizer=FixedThresholdSign(12), weight_quantizer=MedianScaledSigns()).eval()
    conv.bias.data.normal_()
    x = torch.randn(2, 12, 9, 11)
    packed = PackedBinaryConv2d.from_conv(conv)
    packed.kernel = path
    with torch.no_grad():
        assert torch.equal(packed(x), conv(x))
    expected = torch.nn.functional.conv2d(conv.act_quantizer(x), MedianScaledSigns()(conv.weight), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)  # the protocol's factorisation is the quantizer's q(W)
    assert (packed.has_bias, packed.has_threshold, packed.pre) == (True, True, None)


def test_layers_name_no_quantizer_or_model_class():
    """The protocol, not a class switch: no isinstance in the layers or the CLI names a quantizer or a model."""
    import ast

    import tinysr.models as models_package
    import tinysr.nn as nn_package

    quantizers = {
        n for m in (nn_package.binary, nn_package.bam) for n, v in vars(m).items() if isinstance(v, type) and hasattr(v, "precision")
    }
    models = {
        n
        for m in vars(models_package).values()
        if getattr(m, "__name__", "").startswith("tinysr.models.")
        for n, v in vars(m).items()
        if isinstance(v, type) and issubclass(v, torch.nn.Module)
    }
    assert {"XnorWeight", "RSign", "AccumulatedSign"} <= quantizers and {"BaseNet", "BinaryEDSR"} <= models
    src = Path(tinysr.__file__).parent
    for rel in ("nn/packed.py", "nn/binary.py", "cli.py"):
        tree = ast.parse((src / rel).read_text())
        named = {
            ast.unparse(call.args[1])
            for call in ast.walk(tree)
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "isinstance"
        }
        assert not {w for n in named for w in n.replace("(", " ").replace(")", " ").replace(",", " ").split()} & (quantizers | models), rel


def _has_binary_convs(name: str) -> bool:
    return any(isinstance(m, BinaryConv2d) and m.is_binary for m in tinysr.create_model(name, scale=2).modules())


BINARY_MODELS = [name for name in tinysr.list_models() if _has_binary_convs(name)]


@pytest.mark.parametrize("name", BINARY_MODELS)
def test_profile_counts_a_packed_model_as_its_unpacked_form(name):
    """Counted from the packed layers themselves: the same BOPs, FLOPs and params as before packing,
    less BAM's learned weight coefficients, which packing bakes into the signs."""
    from tinysr.nn.bam import AccumulatedWeight

    assert len(BINARY_MODELS) >= 20
    kwargs = {"units": 2} if name.endswith(("_bnn", "_bireal", "_reactnet", "_bam")) else {}
    model = tinysr.create_model(name, scale=2, **kwargs).eval()
    before, after = tinysr.profile(model, (18, 32)), tinysr.profile(pack(model), (18, 32))
    baked = sum(p.numel() for m in model.modules() if isinstance(m, AccumulatedWeight) for p in m.parameters())
    assert (baked > 0) == (name.endswith("_bam") or name == "bsrn")
    assert after.bops == before.bops > 0
    assert (after.flops, after.params_fp, after.params_binary) == (before.flops, before.params_fp - baked, before.params_binary)
    assert any(layer.kind == "PackedBinaryConv2d" and layer.bops for layer in after.layers)


def test_cli_profile_counts_a_packed_model_file(tmp_path, capsys):
    model = tinysr.create_model("edsr_reactnet", scale=2, channels=16, units=2)
    tinysr.save(model, tmp_path / "m.safetensors")
    tinysr.save(pack(model), tmp_path / "p.safetensors")
    totals = []
    for name in ("m", "p"):
        assert (
            main(
                [
                    "profile",
                    "-m",
                    str(tmp_path / f"{name}.safetensors"),
                    "-s",
                    "2",
                    "--lr-size",
                    "32x18",
                    "--json",
                    str(tmp_path / f"{name}.json"),
                ]
            )
            == 0
        )
        totals.append(json.loads((tmp_path / f"{name}.json").read_text()))
    for key in ("params", "params_fp", "params_binary", "flops", "bops", "ops"):
        assert totals[0][key] == totals[1][key], key
    assert totals[1]["bops"] > 0

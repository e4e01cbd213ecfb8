"""Real 1-bit inference speed on CPU (SPEC §9): the bit-packed kernel against float.

Part 1, one binary conv 3x3 (padding 1), 64->64 on a 1x64x180x320 input unless ``--layers`` names
others (FABNet-B4C24 x2 at a 320x180 input: ``24:24:90x160 72:72:90x160``), at 1 and 2 threads:

* ``float conv2d (NCHW)`` / ``(channels_last)``: ``torch.nn.functional.conv2d`` in float32 on the
  same shape, in both memory layouts (oneDNN is faster on channels_last: the fair baseline);
* ``packed, NHWC input``: binarize + bit-pack the input, XNOR-popcount conv, scale epilogue, as
  inside a packed network (whose activations stay channels_last);
* ``packed, NCHW input``: the same plus the layout conversion of a plain NCHW tensor;
* ``packed, NHWC input, <path> path``: the first, with each native path this CPU runs forced
  (``auto`` is AVX-512 where the CPU has VPOPCNTDQ; on an AVX2-only CPU it times the two AVX2
  kernels, ``avx2`` and ``avx2_pixels``, on a layer's first input of each width class and keeps the
  faster). On an AVX-512
  machine, ``TINYSR_MAX_CPU_ISA=AVX2`` stands in for an AVX2-only CPU (the kernel's AVX-512 path
  hidden, ``auto`` choosing as there), with ``ONEDNN_MAX_CPU_ISA=AVX2`` limiting the float baseline alike.

Part 2, whole networks at a 320x180 LR input: packed vs float-simulated (the trained model as
PyTorch runs it) vs the full-precision ``edsr_baseline``, and the packed model with its
element-wise layers left unfolded (each a pass of its own, as before they ran in the packed
convs' output pass), with the bound the full-precision
layers put on the speed-up (Amdahl: float-simulated time over the time of its FP layers alone,
measured with the binary convs replaced by free identities of the right shape).

All timings: best of --repeat after a warm-up, alternating between the contenders in each round.

    python benchmarks/binary_conv.py [--repeat 10 --threads 1 2 --networks edsr_btm:2 fabnet_b4c24:2]
    TINYSR_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/binary_conv.py   # an AVX2-only CPU, on an AVX-512 one
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

import tinysr
from tinysr.compress import pack, set_kernel
from tinysr.kernels import PATHS, available_paths, cpu_model
from tinysr.nn import BinaryConv2d, SignActivation, XnorWeight
from tinysr.nn import packed as packed_layers
from tinysr.nn.packed import PackedBinaryConv2d


def best_times(fns: dict, repeat: int) -> dict[str, float]:
    """Best wall time (s) of each zero-argument function, measured round-robin."""
    best = {k: float("inf") for k in fns}
    with torch.no_grad():
        for f in fns.values():
            f()  # warm-up (and the kernel build on first use)
        for _ in range(repeat):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                best[k] = min(best[k], time.perf_counter() - t0)
    return best


def single_conv(repeat: int, cin: int, cout: int, height: int, width: int) -> None:
    conv = BinaryConv2d(cin, cout, 3, padding=1, act_quantizer=SignActivation(), weight_quantizer=XnorWeight()).eval()
    packed = PackedBinaryConv2d.from_conv(conv)
    x = torch.randn(1, cin, height, width)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    w, w_cl = conv.weight.detach(), conv.weight.detach().contiguous(memory_format=torch.channels_last)
    fns = {
        "float conv2d (NCHW)": lambda: F.conv2d(x, w, None, 1, 1),
        "float conv2d (channels_last)": lambda: F.conv2d(x_cl, w_cl, None, 1, 1),
        "packed, NHWC input": lambda: packed(x_cl),
        "packed, NCHW input": lambda: packed(x),
    }
    for path in available_paths():  # every native path this CPU runs, forced, on the NHWC input
        if path in ("torch", "portable"):
            continue
        forced = PackedBinaryConv2d.from_conv(conv)
        forced.kernel = path
        fns[f"packed, NHWC input, {path} path"] = lambda forced=forced: forced(x_cl)
    times = best_times(fns, repeat)
    base = times["float conv2d (channels_last)"]
    for k, t in times.items():
        print(f"| {torch.get_num_threads()} | {cin}->{cout} at {height}x{width} | {k} | {t * 1e3:.2f} | {base / t:.1f}x |")


class _Free(nn.Module):
    """Stands in for a binary conv at zero cost (output of the right shape): isolates the FP time."""

    def __init__(self, conv: BinaryConv2d):
        super().__init__()
        self.out_channels = conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels >= self.out_channels:
            return x if channels == self.out_channels else x[:, : self.out_channels]
        return x.repeat(1, -(-self.out_channels // channels), 1, 1)[:, : self.out_channels]  # a binary upsampler's conv


def _without_binary_convs(model: nn.Module) -> nn.Module:
    import copy

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, BinaryConv2d) and child.is_binary:
                setattr(parent, name, _Free(child))
    return model


def _unfolded(packed: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The packed model with its element-wise layers run one by one (no module has a stage form),
    to time what folding them into the packed convs' output pass saves."""
    saved = packed_layers.stages_of
    packed_layers.stages_of = lambda module, channels: None
    try:
        return packed(x)
    finally:
        packed_layers.stages_of = saved


def whole_networks(repeat: int, networks: list[tuple[str, int]], kernels: list[str]) -> None:
    """One row per network and kernel path, all timed side by side in one round-robin."""
    x = torch.rand(1, 3, 180, 320)
    for name, scale in networks:
        model = tinysr.create_model(name, scale=scale).eval()
        packed = {k: set_kernel(pack(model), k) for k in kernels}
        fp_only = _without_binary_convs(model)
        fns = {"float-simulated": lambda: model(x), "FP layers only": lambda: fp_only(x)}
        for k, p in packed.items():
            fns[f"packed {k}"] = lambda p=p: p(x)
            fns[f"packed {k}, stages unfolded"] = lambda p=p: _unfolded(p, x)
        if scale == 2 or name.startswith("edsr"):
            baseline = tinysr.create_model("edsr_baseline", scale=scale).eval()
            fns["edsr_baseline (FP)"] = lambda: baseline(x)
        times = best_times(fns, repeat)
        sim, fp = times["float-simulated"], times["FP layers only"]
        base = times.get("edsr_baseline (FP)")
        for k in kernels:
            fast, unfolded = times[f"packed {k}"], times[f"packed {k}, stages unfolded"]
            base_cell = f"{base * 1e3:.0f} ({base / fast:.1f}x)" if base else "-"
            print(
                f"| {torch.get_num_threads()} | {name} x{scale} | {k} | {sim * 1e3:.0f} | {unfolded * 1e3:.0f} | {fast * 1e3:.0f} | "
                f"**{sim / fast:.2f}x** | {sim / fp:.2f}x | {base_cell} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-networks", action="store_true")
    parser.add_argument(
        "--networks", nargs="+", default=["edsr_btm:2", "edsr_btm:4", "fabnet_b4c24:2", "fabnet_b8c96:2"], metavar="NAME:SCALE"
    )
    parser.add_argument("--kernel", nargs="+", default=["auto"], choices=list(PATHS), help="the packed networks' kernel paths")
    parser.add_argument("--layers", nargs="+", default=["64:64:180x320"], metavar="CIN:COUT:HxW", help="part 1's convs")
    args = parser.parse_args()
    for kernel in args.kernel:
        if kernel != "auto" and kernel not in available_paths():
            parser.error(f"--kernel {kernel}: this CPU or build has no such path ({', '.join(available_paths())})")
    # As tinysr's inference commands do, for every contender alike: without it, glibc returns each
    # large feature map to the kernel and the next pass page-faults it back in.
    retained = tinysr.retain_freed_memory()
    paths = available_paths()
    auto = next((p for p in ("avx512", "avx2", "portable") if p in paths), "torch")
    if auto == "avx2" and "avx2_pixels" in paths:
        auto = "avx2 or avx2_pixels, the faster per layer, timed on its first input of each width class"
    print(
        f"torch {torch.__version__}, {cpu_model()}, kernel paths: {', '.join(paths)} (auto: {auto}), "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}, freed memory retained: {retained}"
    )
    print("\n3x3 binary convs, batch 1 (ms; speed-up vs float conv2d channels_last)\n")
    print("| threads | layer | implementation | time (ms) | vs float |\n|---:|---|---|---:|---:|")
    for n in args.threads:
        torch.set_num_threads(n)
        for layer in args.layers:
            cin, cout, size = layer.split(":")
            height, width = (int(v) for v in size.split("x"))
            single_conv(args.repeat, int(cin), int(cout), height, width)
    if args.skip_networks:
        return
    print("\nWhole networks, 320x180 LR input (ms), packed on each kernel path; bound = float-simulated / FP layers alone\n")
    print(
        "| threads | network | kernel | float-simulated | packed, stages unfolded | packed | speed-up | bound "
        "| edsr_baseline FP (packed speed-up) |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    networks = [(name, int(scale)) for name, scale in (item.split(":") for item in args.networks)]
    for n in args.threads:
        torch.set_num_threads(n)
        whole_networks(max(3, args.repeat // 3), networks, args.kernel)


if __name__ == "__main__":
    main()

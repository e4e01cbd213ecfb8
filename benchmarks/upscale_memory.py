"""Peak memory of a tiled upscale against image size: the uint8 canvas against a float one.

Each measurement runs in a fresh process (``ru_maxrss`` is a process-wide high-water mark) and
prints its peak RSS beside the floor it cannot go under: the interpreter with torch loaded plus
the uint8 input and output. ``float`` is the path tinysr used before: the whole LR image as one
float tensor, a float output canvas, then a float -> uint8 conversion of the whole output.
``uint8`` is :func:`tinysr.upscale` today: tiles converted from the uint8 input and rounded into a
uint8 canvas.

    python benchmarks/upscale_memory.py              # 1080p, 4K and 8K inputs at x2, tile 256
    python benchmarks/upscale_memory.py --sizes 1920x1080 --tile 512

The network is a small EDSR-baseline (8 channels, 1 block): memory is about the canvases and the
per-tile activations, not the weights, and a full-width network would take hours at 8K on a CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = ["1920x1080", "3840x2160", "7680x4320"]


def float_canvas_upscale(model, image, tile: int, tile_pad: int):
    """The former tiled path: float copies of the whole input and output (kept for comparison)."""
    import torch

    from tinysr.io import to_tensor, to_uint8

    x = to_tensor(image)
    h, w = x.shape[-2:]
    s = model.scale
    out = torch.zeros(1, 3, h * s, w * s)
    with torch.no_grad():
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
                py1, px1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
                piece = model(x[..., py0:py1, px0:px1]).clamp_(0, 1)
                oy, ox = (y0 - py0) * s, (x0 - px0) * s
                out[..., y0 * s : y1 * s, x0 * s : x1 * s] = piece[..., oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
    return to_uint8(out)


def measure(path: str, width: int, height: int, tile: int) -> dict:
    """One upscale in this process; returns peak RSS and the floor, in MB."""
    import numpy as np
    import torch

    import tinysr

    torch.manual_seed(0)
    model = tinysr.create_model("edsr_baseline", scale=2, channels=8, blocks=1).eval()
    model.scale = 2
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if path == "uint8":
        out = tinysr.upscale(model, image, tile=tile, tile_pad=8)
    else:
        out = float_canvas_upscale(model, image, tile, tile_pad=8)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mb": peak, "floor_mb": base + out.nbytes / 2**20, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=SIZES, metavar="WxH", help="LR input sizes")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--one", nargs=4, metavar=("PATH", "W", "H", "TILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        path, w, h, tile = args.one
        print(json.dumps(measure(path, int(w), int(h), int(tile))))
        return
    print(f"tile {args.tile}, x2, edsr_baseline (8 channels, 1 block); MB = 2^20 bytes\n")
    print(
        "| LR input | output | floor (torch + uint8 in/out) | float canvas peak | uint8 canvas peak | float / uint8 | uint8 above floor |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        res = {}
        for path in ("float", "uint8"):
            run = subprocess.run([sys.executable, __file__, "--one", path, str(w), str(h), str(args.tile)], capture_output=True, text=True)
            if run.returncode != 0:
                raise SystemExit(run.stderr)
            res[path] = json.loads(run.stdout)
        f, u = res["float"], res["uint8"]
        print(
            f"| {w}x{h} | {2 * w}x{2 * h} | {u['floor_mb']:.0f} | {f['peak_mb']:.0f} | {u['peak_mb']:.0f} | "
            f"{f['peak_mb'] / u['peak_mb']:.2f}x | {u['peak_mb'] - u['floor_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()

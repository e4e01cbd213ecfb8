"""Where a binary EDSR-style network's signal goes (the BTM/IBTM diagnoses in BENCHMARKS.md).

For each model (a model file, or a registered name built untrained with seed 0), on one Set5 LR
image at x2, prints the std of:

* the head's output (the stream entering the body);
* at every 4th body unit, the stream entering it and what the unit adds to it;
* the final conv's output, i.e. the residual added to the bilinear/bicubic base. Near 0 means the
  network has muted its body; much larger than the image (std ~0.25 in [0, 1]; ~1 after BTM's
  input normalisation) means the untrained network outputs mostly noise.

Untrained BTM/IBTM networks get the image's own mean/std as input statistics (training sets them
from the training data).

    python benchmarks/binary_diagnostics.py runs/edsr_reactnet_x2_cpu/model.safetensors edsr_btm edsr_ibtm edsr_ibtm:binary=false
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

import tinysr

IMAGE = "../shared/data/Set5/LR_bicubic/X2/butterflyx2.png"


def build(spec: str, scale: int = 2) -> torch.nn.Module:
    """A model file, or ``name:key=value,...`` built untrained with seed 0."""
    if Path(spec).is_file():
        return tinysr.load(spec)
    name, _, options = spec.partition(":")
    kwargs = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in options.split(",") if o)}  # YAML scalars: 64, false, default
    torch.manual_seed(0)
    return tinysr.create_model(name, scale=scale, **kwargs)


def signal_stds(model: torch.nn.Module, lr: torch.Tensor) -> dict:
    net = getattr(model, "net", model)  # BTM/IBTM wrap the network in their input normalisation
    found: dict[str, list] = {"units": []}
    hooks = [
        net.head.register_forward_hook(lambda m, i, o: found.__setitem__("head", o.std().item())),
        net.conv_last.register_forward_hook(lambda m, i, o: found.__setitem__("conv_last", o.std().item())),
    ]
    hooks += [
        unit.register_forward_hook(lambda m, i, o: found["units"].append((i[0].std().item(), (o - i[0]).std().item()))) for unit in net.body
    ]
    with torch.no_grad():
        model.eval()(lr)
    for h in hooks:
        h.remove()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model files, or registered names (name:key=value,... for options)")
    parser.add_argument("--image", default=IMAGE, help=f"LR image (default {IMAGE})")
    args = parser.parse_args()
    lr = torch.from_numpy(np.asarray(Image.open(args.image).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    for spec in args.models:
        model = build(spec)
        if not Path(spec).is_file() and hasattr(model, "set_input_stats"):
            model.set_input_stats(lr.mean(dim=(0, 2, 3)), lr.std(dim=(0, 2, 3)))
        s = signal_stds(model, lr)
        units = " ".join(f"{stream:.2f}/{added:.2f}" for stream, added in s["units"][::4])
        print(f"{spec}\n  head {s['head']:.3f}  stream/added at units 0,4,8,..: {units}  conv_last {s['conv_last']:.4f}")


if __name__ == "__main__":
    main()

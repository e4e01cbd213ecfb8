"""ONNX export of a tinysr model (SPEC §7: deployable outputs), checked with onnxruntime.

The graph takes ``lr`` (N, 3, H, W) float32 in [0, 1] and returns ``sr`` (N, 3, sH, sW). By default
batch, height and width are dynamic axes, so one file serves any image size. Networks that
pre-upsample with MATLAB bicubic (VDSR, FABNet) compute their resize weights from the image size
in Python, so they export for one fixed input size (``lr_size``) with the weights as constants. We use PyTorch's
TorchScript-based exporter (``dynamo=False``), which exports every network here in well under a
second; it needs the ``onnx`` package, and :func:`check_onnx` needs ``onnxruntime`` (both in the
``onnx`` extra: ``pip install 'tinysr[onnx]'``).

1-bit models export too, as their float simulation (``Sign`` and float convs; a packed model's
graph records its PyTorch path, unpacked signs included, not the native kernel), but ONNX has no
1-bit convolution, so they run no faster than float (SPEC §9 is where real binary speed lives);
and a pre-activation within rounding error of 0 may take the other sign under a different
summation order, so their outputs are close to PyTorch's only where no sign flips (a trained
model, not random weights).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import TinySRError
from .files import atomic_write
from .models.bicubic import Bicubic


def export_onnx(model: nn.Module, path: str | Path, lr_size: tuple[int, int] | None = None, opset: int = 17) -> Path:
    """Write ``model`` (eval mode, CPU float32) as an ONNX file, atomically; returns the path.

    ``lr_size`` (H, W): export for that input size only; ``None``: any size (dynamic axes).
    """
    try:
        import onnx  # noqa: F401  (the exporter serialises with it)
    except ImportError:
        raise TinySRError("ONNX export needs the onnx package: pip install 'tinysr[onnx]'") from None
    path = Path(path)
    if lr_size is None and any(isinstance(m, Bicubic) for m in model.modules()):
        # Traced at one size, the resize weights would be baked in and silently wrong at any other.
        raise TinySRError(
            f"{path}: this network pre-upsamples with MATLAB bicubic, whose weights depend on "
            "the image size: export it for a fixed input size (--lr-size WxH)"
        )
    model = model.eval().to("cpu", torch.float32)
    sample = torch.rand(1, 3, *(lr_size or (24, 32)))
    axes = None if lr_size else {"lr": {0: "batch", 2: "height", 3: "width"}, "sr": {0: "batch", 2: "out_height", 3: "out_width"}}

    def write(tmp: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notices are not the user's problem
            torch.onnx.export(
                model, (sample,), tmp, input_names=["lr"], output_names=["sr"], dynamic_axes=axes, opset_version=opset, dynamo=False
            )

    try:
        atomic_write(path, write)
    except (RuntimeError, TypeError, torch.onnx.errors.OnnxExporterError) as exc:
        raise TinySRError(f"{path}: ONNX export failed: {str(exc).splitlines()[0]}") from exc
    return path


def check_onnx(model: nn.Module, path: str | Path, seed: int = 0) -> float:
    """Max abs difference between onnxruntime on ``path`` and PyTorch on a random image: odd-sized
    (37x29) for a dynamic-size file, the file's own size otherwise."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise TinySRError("checking an ONNX file needs onnxruntime: pip install 'tinysr[onnx]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dims = session.get_inputs()[0].shape[2:]
    size = tuple(dims) if all(isinstance(d, int) for d in dims) else (37, 29)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))
    got = session.run(None, {"lr": x.numpy()})[0]
    with torch.no_grad():
        want = model.eval().to("cpu", torch.float32)(x).numpy()
    if got.shape != want.shape:
        raise TinySRError(f"{path}: ONNX output shape {got.shape} differs from PyTorch's {want.shape}")
    return float(abs(got - want).max())

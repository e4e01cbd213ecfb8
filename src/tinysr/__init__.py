"""tinysr: efficient single-image super-resolution (binarized, pruned and re-parameterized networks).

Public API:
    create_model, list_models   build registered networks by name
    save, load                  the model file format (safetensors + JSON metadata)
    imresize                    MATLAB-compatible bicubic (SPEC §1)
    upscale                     super-resolve an RGB uint8 image (optionally tiled)
    profile                     params / FLOPs / BOPs / OPs (SPEC §3)
    retain_freed_memory         faster CPU inference: reuse freed memory (glibc)
"""

__version__ = "0.1.0"

from . import metrics  # noqa: E402
from .errors import TinySRError  # noqa: E402
from .inference import upscale  # noqa: E402
from .model_file import load, save  # noqa: E402
from .models import create_model, list_models  # noqa: E402
from .profile import profile  # noqa: E402
from .resize import imresize  # noqa: E402
from .runtime import retain_freed_memory  # noqa: E402

__all__ = [
    "TinySRError",
    "__version__",
    "create_model",
    "imresize",
    "list_models",
    "load",
    "metrics",
    "profile",
    "retain_freed_memory",
    "save",
    "upscale",
]

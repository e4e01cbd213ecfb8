"""tinysr: efficient single-image super-resolution (binarized, pruned and re-parameterized networks).

Public API:
    create_model, list_models   build registered networks by name
    save, load                  the model file format (safetensors + JSON metadata)
    imresize                    MATLAB-compatible bicubic (SPEC §1)
    upscale                     super-resolve an RGB uint8 image (optionally tiled)
    profile                     params / FLOPs / BOPs / OPs (SPEC §3)
    retain_freed_memory         faster CPU inference: reuse freed memory (glibc)
"""

from . import metrics
from ._version import __version__
from .errors import TinySRError
from .inference import upscale
from .model_file import load, save
from .models import create_model, list_models
from .profile import profile
from .resize import imresize
from .runtime import retain_freed_memory

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

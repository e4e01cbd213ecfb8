"""Model families. Each module registers its named configurations on import; the list is explicit
so that nothing silently drops out (DESIGN.md, timm's habit)."""

from . import bam, bbcu, bicubic, binary, btm, e2fif, edsr, fabnet, repsr, srresnet, vdsr  # noqa: F401  (imported to register)
from .registry import ModelSpec, create_model, list_models, model_spec, register

__all__ = ["ModelSpec", "create_model", "list_models", "model_spec", "register"]

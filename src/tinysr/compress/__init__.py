"""Transforms of a trained model into a deployable one (DESIGN.md principle 3).

Every transform is registered in :mod:`.transforms` and recorded in the model's spec, so a model
file rebuilds itself. The modules below are imported here, explicitly: importing the package
registers every transform (pack, prune, reparameterize) and ASSL's training callback.
"""

from . import assl  # noqa: F401  (registers the ``assl`` training callback)
from .deploy import deployable
from .pack import binary_weight_bytes, pack, set_kernel, unpack_into
from .prune import apply_widths, l1_plan, l1_unaligned_plan, prune, prune_layers
from .reparameterize import reparameterize
from .transforms import list_transforms

__all__ = [
    "apply_widths",
    "binary_weight_bytes",
    "deployable",
    "l1_plan",
    "l1_unaligned_plan",
    "list_transforms",
    "pack",
    "prune",
    "prune_layers",
    "reparameterize",
    "set_kernel",
    "unpack_into",
]

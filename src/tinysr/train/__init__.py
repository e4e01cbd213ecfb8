"""The training engine (DESIGN.md principle 2): recipes, the loop, the run folder, checkpoints.

The engine knows no method by name. Recipes name callbacks and loss terms that the method
packages register through :mod:`tinysr.plugins`; the two packages that hold them are imported
here, explicitly, so that every name a shipped recipe uses is registered whenever the engine is.
"""

from .. import compress, models  # noqa: F401  (explicit list: the methods' callbacks and loss terms)
from ..plugins import Callback, Step, build_callback, build_loss, list_callbacks, list_losses, register_callback, register_loss
from . import losses  # noqa: F401  (registers the generic loss terms: l1, mse, charbonnier)
from .config import Config, load_config, parse_config
from .loop import Trainer, train, train_or_reuse
from .run_dir import logged_training_seconds, read_log

__all__ = [
    "Callback",
    "Config",
    "Step",
    "Trainer",
    "build_callback",
    "build_loss",
    "list_callbacks",
    "list_losses",
    "logged_training_seconds",
    "load_config",
    "parse_config",
    "read_log",
    "register_callback",
    "register_loss",
    "train",
    "train_or_reuse",
]

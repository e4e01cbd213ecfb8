"""The training engine (DESIGN.md principle 2): recipes, the loop, checkpoints, distributed training."""

from .callbacks import Callback, build_callback, list_callbacks, register_callback
from .config import Config, load_config, parse_config
from .losses import Step, build_loss, register_loss
from .loop import Trainer, train

__all__ = [
    "Callback",
    "Config",
    "Step",
    "Trainer",
    "build_callback",
    "build_loss",
    "list_callbacks",
    "load_config",
    "parse_config",
    "register_callback",
    "register_loss",
    "train",
]

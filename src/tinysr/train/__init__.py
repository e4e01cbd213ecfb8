"""The training engine (DESIGN.md principle 2): recipes, the loop, checkpoints, distributed training.

Names are imported lazily so that model files can register callbacks and loss terms
(``from tinysr.train.callbacks import register_callback``) without importing the loop, which
itself imports the models.
"""

from importlib import import_module

_EXPORTS = {
    "Callback": "callbacks",
    "build_callback": "callbacks",
    "list_callbacks": "callbacks",
    "register_callback": "callbacks",
    "Config": "config",
    "load_config": "config",
    "parse_config": "config",
    "Step": "losses",
    "build_loss": "losses",
    "register_loss": "losses",
    "Trainer": "loop",
    "train": "loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

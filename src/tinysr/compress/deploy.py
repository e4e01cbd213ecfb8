"""The deployable form of a trained model, chosen in one place for every command (SPEC §7, §9).

* ``merge``: re-parameterizable blocks merged into single convs (:func:`reparameterize`);
* ``pack``: binary convs bit-packed for the native kernel (:func:`pack`);
* ``none``: the model as trained;
* ``auto``: ``merge`` when the model has mergeable blocks, ``pack`` when it has binary convs,
  else ``none`` (a full-precision or pruned model already runs in its deployable form).
"""

from __future__ import annotations

from torch import nn

from ..errors import TinySRError
from .pack import has_binary_convs, pack
from .reparameterize import has_mergeable_blocks, reparameterize

FORMS = ("auto", "merge", "pack", "none")


def deploy_form(model: nn.Module, form: str = "auto") -> str:
    """The concrete form ``form`` names for ``model`` (``auto`` resolved)."""
    if form not in FORMS:
        raise TinySRError(f"unknown deploy form {form!r} ({', '.join(FORMS)})")
    if form == "auto":
        return "merge" if has_mergeable_blocks(model) else "pack" if has_binary_convs(model) else "none"
    return form


def deployable(model: nn.Module, form: str = "auto") -> nn.Module:
    """``model`` in its deployable ``form`` (see the module docstring)."""
    form = deploy_form(model, form)
    if form == "merge":
        return reparameterize(model)
    if form == "pack":
        return pack(model)
    return model

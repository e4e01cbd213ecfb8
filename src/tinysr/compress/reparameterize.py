"""``reparameterize(model)``: merge a training-form BaseNet (RepSR / ECBSR / RepVGG) into a plain one (SPEC §7).

Every re-parameterizable block becomes its single equivalent conv3x3 (BN folded with its running
statistics); the PReLUs are copied. The result is a ``basenet`` built by ``create_model``, so its
model file loads on its own. The merged network computes the same function as the original in
eval mode, up to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TinySRError
from ..models import create_model
from ..models.repsr import BaseNet


def _conv_of(block: nn.Module) -> nn.Conv2d:
    return block if isinstance(block, nn.Conv2d) else block.reparameterize()


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    """A plain ``basenet`` computing what ``model`` (a BaseNet in any training form) computes in eval mode."""
    if not isinstance(model, BaseNet):
        raise TinySRError(f"reparameterize: expected a BaseNet-family model (repsr, ecbsr, repvgg_sr), got {type(model).__name__}")
    was_training = model.training
    model.eval()
    merged = create_model("basenet", scale=model.scale, channels=model.channels, blocks=model.blocks)
    reference = next(model.parameters())
    merged.to(device=reference.device, dtype=reference.dtype)  # keep the model's device and precision
    pairs = [(merged.head, model.head), (merged.tail, model.tail)] + list(zip(merged.body, model.body))
    for target, block in pairs:
        conv = _conv_of(block)
        target.weight.copy_(conv.weight)
        target.bias.copy_(conv.bias)
    merged.head_act.load_state_dict(model.head_act.state_dict())
    for target, act in zip(merged.body_acts, model.body_acts):
        target.load_state_dict(act.state_dict())
    model.train(was_training)
    return merged.eval()

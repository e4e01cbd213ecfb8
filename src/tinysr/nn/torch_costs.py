"""Cost rules of PyTorch's own layers (SPEC §3); tinysr's layers state theirs beside their classes."""

from __future__ import annotations

from torch import nn

from ..plugins import no_macs, register_cost


@register_cost(nn.Conv2d, nn.ConvTranspose2d)
def conv_cost(m: nn.Conv2d, inputs, out) -> tuple[int, int]:
    """One MAC per weight tap per output pixel (a transposed conv: per input pixel)."""
    kh, kw = m.kernel_size
    if isinstance(m, nn.ConvTranspose2d):  # every input pixel scatters into out_channels/groups maps
        return inputs[0].numel() * (m.out_channels // m.groups) * kh * kw, 0
    return out.numel() * (m.in_channels // m.groups) * kh * kw, 0


@register_cost(nn.Linear)
def linear_cost(m: nn.Linear, inputs, out) -> tuple[int, int]:
    return out.numel() * m.in_features, 0


# Per-channel affine or activation parameters: counted as params, their element-wise work is not
# counted as MACs (BN folds into the neighbouring conv at inference).
register_cost(nn.BatchNorm2d, nn.BatchNorm1d, nn.PReLU, nn.GroupNorm, nn.LayerNorm)(no_macs)

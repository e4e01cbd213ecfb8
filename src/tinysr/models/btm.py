"""BTM and IBTM (Jiang et al., AAAI 2021), SPEC §5.4; figures ``refs/btm_blocks.png``, ``btm_mrb_eq.png``.

**BTM** (binary training mechanism) replaces BN: Xavier-uniform initialisation of every conv;
the input normalised by the *training set's* per-channel mean and std (buffers, filled by the
``input_stats`` callback from the training patches and saved with the model; the mean is added
back at the output); PReLU after each binary conv; XNOR-scaled weights; ApproxSign for
activations and the higher-order estimator for weights (both configurable). Block (figure 2a
without BN): ``x + [sign -> bconv3x3 -> PReLU] x 2``.

**MRB** (IBTM's multiple receptive-field block, equation 3): ``sign -> cat(bconv 1x5 d1, 1x5 d2,
5x1 d1, 5x1 d2; C/4 channels each) -> PReLU -> sign -> bconv3x3 -> PReLU``, plus the residual.

**Multi-stage distillation** (loss term ``btm_kd``): from a full-precision teacher of the same
layout (the same model built with ``binary=False``, trained first and given as a model file; its
recipes build it with ``init=default``, as Xavier stalls a full-precision stack without BN),
``(beta * L1(F_S^n, F_T^n) + gamma * sum_i KL(G_S^i || G_T^i)) / pixel_range`` over the outputs
``F`` of chosen body blocks, where ``G`` is the feature map softmaxed over the spatial positions of
each channel (a choice: the paper does not say over which axis); the ``lambda * L1(SR, HR)`` term
is the recipe's ``l1`` term. The paper's "regulable activation" (a PReLU after each distilled
output) is the PReLU that ends every block here. Two choices, with their reasons:

* The last-stage L1 compares the features themselves by default (the notes' "L1 between student
  and teacher features"), not their softmax as SPEC §5.4's formula writes ``G^n``: the term is there
  for per-pixel accuracy, which a softmax over ~1000 positions erases (its L1 is orders of
  magnitude below that of the raw features; ``benchmarks/kd_gradients.py`` measures both).
  ``last_stage: softmax`` gives the formula as written, and ``last_stage: output`` the notes' other
  reading, a per-pixel L1 between the student's and the teacher's SR outputs.
* ``pixel_range`` (default 255): the paper's weights were set in the EDSR codebase, whose pixels
  are in [0, 255], where ``L1(SR, HR)`` is 255x what it is here; the features (behind BTM's input
  normalisation) and the softmaxes do not depend on the range. Dividing the distillation terms by
  255 keeps the paper's balance with ``weight = beta = gamma = 1``; without it the distillation
  terms outweigh the reconstruction loss many times over (BENCHMARKS.md, the BTM/IBTM section).

Networks: ``edsr_btm`` / ``edsr_ibtm`` (BBCU's EDSR-style skeleton, SPEC §5.1: 16 blocks of two
binary convs) and ``vdsr_btm`` / ``vdsr_ibtm`` (VDSR with 9 blocks = 18 binary layers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TinySRError
from ..nn import BinaryConv2d, SignActivation, XnorWeight, conv_pair_with_stages
from ..nn.layers import DIV2K_RGB_MEAN
from ..plugins import Callback, no_macs, register_callback, register_cost, register_loss
from .binary import BinaryEDSR, BinaryVDSR
from .registry import register


def btm_conv(
    cin: int,
    cout: int,
    kernel,
    padding,
    dilation=1,
    binary: bool = True,
    act: str = "approx",
    weight: str = "higher_order",
    detach_scale: bool = True,
) -> nn.Conv2d:
    if not binary:  # the full-precision teacher of the same layout
        return nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False)
    return BinaryConv2d(
        cin,
        cout,
        kernel,
        padding=padding,
        dilation=dilation,
        bias=False,
        act_quantizer=SignActivation(act),
        weight_quantizer=XnorWeight(weight, detach_scale=detach_scale),
    )


class BTMBlock(nn.Module):
    """``x + PReLU(bconv(PReLU(bconv(x))))`` with the sign inside each binary conv (figure 2a, no BN)."""

    def __init__(self, channels: int, **conv_kw):
        super().__init__()
        self.conv1 = btm_conv(channels, channels, 3, 1, **conv_kw)
        self.act1 = nn.PReLU(channels)
        self.conv2 = btm_conv(channels, channels, 3, 1, **conv_kw)
        self.act2 = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x + act2(conv2(act1(conv1(x)))); packed, the activations and the add fold into the convs
        return conv_pair_with_stages(self.conv1, self.conv2, x, [self.act1], [self.act2], residual=x)


class MRBBlock(nn.Module):
    """IBTM's multiple receptive-field block (equation 3 and figure 2b)."""

    def __init__(self, channels: int, **conv_kw):
        super().__init__()
        if channels % 4:
            raise ValueError(f"MRB needs channels divisible by 4, got {channels}")
        q = channels // 4
        self.branches = nn.ModuleList(
            [
                btm_conv(channels, q, (1, 5), (0, 2), (1, 1), **conv_kw),
                btm_conv(channels, q, (1, 5), (0, 4), (1, 2), **conv_kw),  # dilated along W only
                btm_conv(channels, q, (5, 1), (2, 0), (1, 1), **conv_kw),
                btm_conv(channels, q, (5, 1), (4, 0), (2, 1), **conv_kw),  # dilated along H only
            ]
        )
        self.act1 = nn.PReLU(channels)
        self.conv = btm_conv(channels, channels, 3, 1, **conv_kw)
        self.act2 = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.act1(torch.cat([branch(x) for branch in self.branches], dim=1))
        return x + self.act2(self.conv(mixed))


class InputNormalized(nn.Module):
    """``net((x - mean) / std) * std + mean`` with per-channel training-set statistics as buffers."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("input_mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.ones(1, 3, 1, 1))

    @property
    def body(self) -> nn.Module:
        return self.net.body

    @torch.no_grad()
    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean.view(1, 3, 1, 1))
        self.input_std.copy_(std.view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.input_mean) / self.input_std) * self.input_std + self.input_mean


# The input statistics: an element-wise shift and scale, not MACs.
register_cost(InputNormalized)(no_macs)


def xavier_init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


INITS = ("xavier", "default")


def _build(
    network: type,
    block: type,
    n_blocks: int,
    scale: int,
    channels: int,
    binary: bool,
    act: str,
    weight: str,
    init: str,
    detach_scale: bool,
) -> nn.Module:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    conv_kw = {"binary": binary, "act": act, "weight": weight, "detach_scale": detach_scale}
    body = nn.Sequential(*[block(channels, **conv_kw) for _ in range(n_blocks)])
    model = InputNormalized(network(scale, body, channels))
    return xavier_init(model) if init == "xavier" else model


# One registered function per named network. ``binary=False`` builds the full-precision teacher of
# the same layout; ``init`` is ``xavier`` (BTM's rule) or ``default`` (PyTorch's conv
# initialisation): Xavier keeps each conv's output variance, so in a full-precision residual stack
# without BN the stream grows block after block. ``detach_scale=False`` lets the weight gradient
# through XNOR's scale too.
@register
def edsr_btm(
    scale: int,
    channels: int = 64,
    blocks: int = 16,
    binary: bool = True,
    act: str = "approx",
    weight: str = "higher_order",
    init: str = "xavier",
    detach_scale: bool = True,
) -> nn.Module:
    """EDSR-style binary network (BBCU's skeleton, 16 blocks of two binary convs) trained with BTM."""
    return _build(BinaryEDSR, BTMBlock, blocks, scale, channels, binary, act, weight, init, detach_scale)


@register
def vdsr_btm(
    scale: int,
    channels: int = 64,
    blocks: int = 9,
    binary: bool = True,
    act: str = "approx",
    weight: str = "higher_order",
    init: str = "xavier",
    detach_scale: bool = True,
) -> nn.Module:
    """Binary VDSR (9 blocks = 18 binary layers) trained with BTM."""
    return _build(BinaryVDSR, BTMBlock, blocks, scale, channels, binary, act, weight, init, detach_scale)


@register
def edsr_ibtm(
    scale: int,
    channels: int = 64,
    blocks: int = 16,
    binary: bool = True,
    act: str = "approx",
    weight: str = "higher_order",
    init: str = "xavier",
    detach_scale: bool = True,
) -> nn.Module:
    """EDSR-style IBTM network: MRB blocks (equation 3)."""
    return _build(BinaryEDSR, MRBBlock, blocks, scale, channels, binary, act, weight, init, detach_scale)


@register
def vdsr_ibtm(
    scale: int,
    channels: int = 64,
    blocks: int = 9,
    binary: bool = True,
    act: str = "approx",
    weight: str = "higher_order",
    init: str = "xavier",
    detach_scale: bool = True,
) -> nn.Module:
    """VDSR-style IBTM network: 9 MRB blocks."""
    return _build(BinaryVDSR, MRBBlock, blocks, scale, channels, binary, act, weight, init, detach_scale)


@register_callback("input_stats")
class InputStats(Callback):
    """At the start of training, set the model's input mean/std (``set_input_stats``) from the
    training set's LR images (BTM's input normalisation). Not repeated on resume: the statistics
    are buffers, restored with the weights."""

    def on_train_start(self, trainer) -> None:
        if trainer.resume:
            return
        targets = [m for m in trainer.model.modules() if hasattr(m, "set_input_stats")]
        if not targets:
            raise TinySRError("callback input_stats: the model has no input normalisation (set_input_stats)")
        pixels = torch.cat([torch.from_numpy(img.reshape(-1, 3)).double() / 255.0 for img in trainer.training_lr_images()])
        mean, std = pixels.mean(0).float(), pixels.std(0).float()
        for m in targets:
            m.set_input_stats(mean.to(m.input_mean.device), std.to(m.input_std.device))


def spatial_softmax(feat: torch.Tensor) -> torch.Tensor:
    """Softmax over the H*W positions of each channel: (B, C, H, W) -> (B, C, H*W)."""
    return F.softmax(feat.flatten(2), dim=-1)


@register_loss("btm_kd")
class MultiStageDistillation:
    """``(beta * L1(F_S^n, F_T^n) + gamma * sum_i KL(G_S^i || G_T^i)) / pixel_range`` (SPEC §5.4; see
    the module docstring for the two choices).

    ``teacher``: model file of the full-precision teacher; ``stages``: body block indices whose
    outputs are distilled (default: every 4th block and the last); ``pixel_range``: the pixel range
    the weights were chosen for (255: the paper's); ``last_stage``: what the beta term compares,
    ``features`` (``F^n``, the default), ``softmax`` (``G^n``, SPEC §5.4's formula as written) or
    ``output`` (the SR images: ``beta * L1(SR_S, SR_T)``, in pixels like the recipe's ``l1`` term, so
    it is not divided by ``pixel_range``: in the paper's [0, 255] both terms carry the same factor).
    """

    LAST_STAGE_FORMS = ("features", "softmax", "output")

    def __init__(
        self,
        teacher: str,
        beta: float = 1.0,
        gamma: float = 1.0,
        stages: list[int] | None = None,
        pixel_range: float = 255.0,
        last_stage: str = "features",
    ):
        if pixel_range <= 0:
            raise TinySRError(f"btm_kd: pixel_range must be positive, got {pixel_range}")
        if last_stage not in self.LAST_STAGE_FORMS:
            raise TinySRError(f"btm_kd: last_stage must be one of {', '.join(self.LAST_STAGE_FORMS)}, got {last_stage!r}")
        self.teacher_path, self.beta, self.gamma, self.stages = teacher, beta, gamma, stages
        self.pixel_range, self.last_stage = pixel_range, last_stage
        self.student_feats: dict[int, torch.Tensor] = {}
        self.teacher_feats: dict[int, torch.Tensor] = {}

    def setup(self, trainer) -> None:
        self.teacher = trainer.load_model(self.teacher_path)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        s_body, t_body = trainer.model.body, self.teacher.body
        if len(s_body) != len(t_body):
            raise TinySRError(f"btm_kd: teacher {self.teacher_path} has {len(t_body)} blocks, the student {len(s_body)}")
        n = len(s_body)
        self.stages = sorted(set(self.stages if self.stages is not None else list(range(3, n, 4)) + [n - 1]))
        for i in self.stages:
            s_body[i].register_forward_hook(lambda m, inp, out, i=i: self.student_feats.__setitem__(i, out))
            t_body[i].register_forward_hook(lambda m, inp, out, i=i: self.teacher_feats.__setitem__(i, out))

    def __call__(self, step) -> torch.Tensor:
        with torch.no_grad():
            teacher_sr = self.teacher(step.lr_image)
        kl = sum(self._kl(self.student_feats[i], self.teacher_feats[i]) for i in self.stages)
        if self.last_stage == "output":
            return self.beta * F.l1_loss(step.sr, teacher_sr.float()) + self.gamma * kl / self.pixel_range
        last = self.stages[-1]
        fs, ft = self.student_feats[last], self.teacher_feats[last]
        if self.last_stage == "softmax":
            fs, ft = spatial_softmax(fs), spatial_softmax(ft)
        return (self.beta * F.l1_loss(fs, ft) + self.gamma * kl) / self.pixel_range

    @staticmethod
    def _kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``KL(G_S || G_T)`` of the spatially softmaxed maps, summed over positions, averaged over channels and samples."""
        gs, gt = spatial_softmax(student), spatial_softmax(teacher)
        return (gs * (torch.log(gs + 1e-12) - torch.log(gt + 1e-12))).sum(-1).mean()

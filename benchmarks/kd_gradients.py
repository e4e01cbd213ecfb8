"""How hard IBTM's distillation pulls on a student, against its reconstruction loss (BENCHMARKS.md,
"VDSR-IBTM: which part of the distillation costs accuracy"; SPEC §5.4).

A loss term's share of the loss value says little about its share of the training: Adam scales
each parameter's step by that parameter's own gradient history, so what matters is how large the
term's gradient is, part by part, next to the reconstruction gradient, and whether it points the
same way. For each student, over a few batches of training patches (the engine's patch sampler,
seed 123), this prints per part of the network (head, body, tail, ...):

* ``|g_feat| / |g_rec|`` and ``cos``: the gradient of ``btm_kd``'s last-stage feature L1 (its
  ``beta`` part) against the gradient of ``L1(SR, HR)``, as a norm ratio and a cosine;
* the same for its KL part (``gamma``), summed over the distilled stages.

It also prints the last-stage L1 between the *softmaxed* features, the form SPEC §5.4's formula
writes (``btm_kd`` compares the features themselves). Both parts are taken with weight 1 and the default ``pixel_range`` (255), as the recipes use them.
A student is a model file, or ``name:key=value,...`` for an untrained one (seed 0; it gets the
teacher's input statistics, which training would have set from the same data).

    python benchmarks/kd_gradients.py runs/vdsr/vdsr_ibtm_nokd/model.safetensors vdsr_ibtm:init=default \
        --teacher runs/vdsr/vdsr_ibtm_teacher/model.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import tinysr
from binary_diagnostics import build  # benchmarks/ is on the path when run as a script
from tinysr.data import LRCache, TrainPatches
from tinysr.models.btm import MultiStageDistillation, spatial_softmax

TRAIN = ["../shared/data/T91", "../shared/data/BSD200"]


def student(spec: str, teacher: torch.nn.Module, scale: int) -> torch.nn.Module:
    model = build(spec, scale)
    if not Path(spec).is_file():
        model.set_input_stats(teacher.input_mean.flatten(), teacher.input_std.flatten())
    return model


def part_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if parts[0] == "net" and len(parts) > 2 else parts[0]


def grads_of(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def measure(model: torch.nn.Module, teacher_path: str, data: TrainPatches, batches: int, batch_size: int) -> tuple[dict, dict]:
    """Per part: summed ``[|g_rec|^2, |g_feat|^2, g_rec.g_feat, |g_kl|^2, g_rec.g_kl]``; and mean loss values."""
    model.train()
    feature_part = MultiStageDistillation(teacher_path, beta=1.0, gamma=0.0)
    kl_part = MultiStageDistillation(teacher_path, beta=0.0, gamma=1.0)
    for term in (feature_part, kl_part):
        term.setup(SimpleNamespace(model=model, device="cpu"))  # what setup reads from a trainer
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    sums: dict[str, torch.Tensor] = {}
    losses = torch.zeros(4)
    for b in range(batches):
        lr, hr = map(torch.stack, zip(*(data[b * batch_size + k] for k in range(batch_size))))
        rec = F.l1_loss(model(lr), hr)
        batch = SimpleNamespace(lr=lr)  # what a loss term reads from a training step
        feat, kl = feature_part(batch), kl_part(batch)
        last = feature_part.stages[-1]  # SPEC's formula puts the last-stage L1 on the softmaxed features
        on_softmax = F.l1_loss(spatial_softmax(feature_part.student_feats[last]), spatial_softmax(feature_part.teacher_feats[last]))
        losses += torch.tensor([rec.item(), feat.item(), kl.item(), on_softmax.item()]) / batches
        g_rec, g_feat, g_kl = grads_of(rec, params), grads_of(feat, params), grads_of(kl, params)
        for (name, _), r, f, k in zip(named, g_rec, g_feat, g_kl):
            row = torch.tensor([(r * r).sum(), (f * f).sum(), (r * f).sum(), (k * k).sum(), (r * k).sum()], dtype=torch.float64)
            for part in (part_of(name), "all"):
                sums[part] = sums.get(part, torch.zeros(5, dtype=torch.float64)) + row
    return sums, {"l1": losses[0].item(), "feat": losses[1].item(), "kl": losses[2].item(), "softmax_l1": losses[3].item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("students", nargs="+", help="model files, or name:key=value,... for untrained students")
    parser.add_argument("--teacher", required=True, help="the full-precision teacher's model file")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch", type=int, default=32, help="LR patch size (the recipes' 32)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    teacher = tinysr.load(args.teacher)
    data = TrainPatches(TRAIN, args.scale, args.patch, repeat=20, seed=123, cache=LRCache())
    for spec in args.students:
        sums, losses = measure(student(spec, teacher, args.scale), args.teacher, data, args.batches, args.batch_size)
        print(
            f"\n{spec}: L1(SR, HR) {losses['l1']:.5f}, feature L1 / 255 {losses['feat']:.6f}, KL / 255 {losses['kl']:.6f}; "
            f"last-stage L1 between the softmaxed features (SPEC's form, not / 255) {losses['softmax_l1']:.2e}"
        )
        print(f"  {'part':<6} {'|g_feat|/|g_rec|':>17} {'cos':>6} {'|g_KL|/|g_rec|':>15} {'cos':>6}")
        for part in [p for p in sums if p != "all"] + ["all"]:
            rr, ff, rf, kk, rk = sums[part]
            if rr == 0:  # a part the loss does not reach (e.g. frozen)
                continue
            ratio_f, ratio_k = (ff / rr).sqrt(), (kk / rr).sqrt()
            cos_f, cos_k = rf / (rr * ff).sqrt().clamp_min(1e-30), rk / (rr * kk).sqrt().clamp_min(1e-30)
            print(f"  {part:<6} {ratio_f:17.3f} {cos_f:+6.2f} {ratio_k:15.3f} {cos_k:+6.2f}")


if __name__ == "__main__":
    main()

"""ASSL: aligned structured sparsity learning (Zhang et al., NeurIPS 2021), SPEC §6, Algorithm 1
(``refs/assl_algorithm.png``), as the training callback ``assl``.

At the start (the recipe's ``init`` is the trained network): a WN layer after every prunable conv
(:class:`~tinysr.compress.prune.WeightNormConv2d`), and the prune set S of every *free* group
(one conv) chosen by filter L1 norm. Then, each iteration ``i``:

* free groups: ``L_SI = alpha(i) * sum_{j in S} gamma_j^2`` with ``alpha(i) = min(tau, Delta *
  (i // T + 1))`` (Delta added at every multiple of T, from i = 0);
* constrained groups (convs joined by residual adds; found by tracing, ``channels.py``): for
  ``i < N_SSA`` the alignment loss ``L_SSA = -(1/K) sum_k (M M^T)_k`` where the rows of M are the
  group's soft masks ``m = sigmoid(gamma - gamma_th)`` and K = L^2 the number of entries of the
  L x L matrix ``M M^T``. ``gamma_th`` is not specified by the paper. tinysr takes each layer's
  largest *pruned* gamma, detached (``ssa_threshold: largest_pruned``, the default), so a mask is
  ~0.5 at the cut and the loss rewards layers whose large-gamma filters coincide. The official
  code takes the smallest *kept* gamma with its gradient (``smallest_kept``); then L_SSA also pushes
  that one filter down, every step, and descending L_SSA alone aligns the kept sets far less
  (BENCHMARKS.md, the ASSL section), so it is an option, not the default. At
  ``i = N_SSA`` the group's S is chosen (one S for all its layers: identical kept indices) by the
  gammas of its first layer, the head in EDSR (``constrained_ranking: first``, the official code's)
  or by their sum over the group's layers (``sum``), and the free groups pick their S again
  (``repick_free``, the official code's); after it, ``L_SI`` with
  ``alpha = min(tau, Delta * (i // T - N_SSA // T))``. Once every alpha is at tau the official
  code holds it for a stabilisation phase (``stabilize_iterations``; 43,150 in its runs) before
  pruning.

**Strength** (``convention``). The official code trains on pixels in [0, 255] with a mean L1 loss
and adds ``alpha * gamma`` and ``alpha * bias`` of the filters in S to their *gradients* (a penalty
``alpha/2 * x^2``); there the data gradient on gamma is 255 times what it is on tinysr's [0, 1]
pixels, and a bias is 255 times larger. ``convention: paper`` (the default) keeps the official
relative strength on [0, 1] pixels, so the paper's Delta = 1e-4, tau = 0.5 mean what they mean
there: ``L_SI = alpha/2 * sum_S (gamma^2 / R + R * bias^2)`` and ``L_SSA`` weighted by ``1/R``, with
``R = pixel_range`` (255). Decaying the biases too is what makes the surgery lossless: a filter
with gamma = 0 still adds its bias to every pixel. ``convention: unscaled`` is tinysr's former
form, ``alpha * sum_S gamma^2`` and ``L_SSA`` at its weight, without the biases.

The penalties are pure functions of the iteration and the S sets are callback state, so a
resumed run continues exactly. Model files written during the run hold the WN folded back
(exact). At the end (every alpha at tau: :func:`required_iterations`), the callback folds WN,
removes S and writes ``pruned.safetensors`` in the run folder, ready to fine-tune.
"""

from __future__ import annotations

import copy
import math

import torch

from ..errors import TinySRError
from ..plugins import Callback, register_callback
from .channels import channel_groups
from .prune import WeightNormConv2d, fold_weight_norm, insert_weight_norm, kept_count, kept_indices, lowest, prune

PRUNED_FILE = "pruned.safetensors"
CONVENTIONS = ("paper", "unscaled")


def required_iterations(delta: float, every: int, tau: float, ssa_iterations: int, stabilize_iterations: int = 0) -> int:
    """Iterations until every alpha reaches tau (the last constrained increment, plus one step),
    then the stabilisation phase that holds it there."""
    steps = math.ceil(tau / delta - 1e-9)
    return every * (ssa_iterations // every + steps) + 1 + stabilize_iterations


SSA_THRESHOLDS = ("smallest_kept", "largest_pruned")
CONSTRAINED_RANKINGS = ("first", "sum")


@register_callback("assl")
class ASSL(Callback):
    def __init__(
        self,
        ratio: float = 0.5,
        delta: float = 1e-4,
        every: int = 20,
        tau: float = 0.5,
        ssa_iterations: int = 1000,
        ssa_weight: float = 1.0,
        output: str = PRUNED_FILE,
        convention: str = "paper",
        pixel_range: float = 255.0,
        stabilize_iterations: int = 0,
        ssa_threshold: str = "largest_pruned",
        constrained_ranking: str = "first",
        repick_free: bool = True,
        channel_multiple: int = 1,
    ):
        kept_count(64, ratio, channel_multiple)  # validates the ratio and the multiple
        if delta <= 0 or every < 1 or tau <= 0 or ssa_iterations < 0:
            raise TinySRError("assl: need delta > 0, every >= 1, tau > 0, ssa_iterations >= 0")
        if convention not in CONVENTIONS or pixel_range <= 0:
            raise TinySRError(f"assl: convention must be one of {', '.join(CONVENTIONS)} and pixel_range positive")
        self.ratio, self.delta, self.every, self.tau = ratio, delta, every, tau
        self.ssa_iterations, self.ssa_weight, self.output = ssa_iterations, ssa_weight, output
        if stabilize_iterations < 0 or ssa_threshold not in SSA_THRESHOLDS or constrained_ranking not in CONSTRAINED_RANKINGS:
            raise TinySRError(
                f"assl: need stabilize_iterations >= 0, ssa_threshold in {', '.join(SSA_THRESHOLDS)}, "
                f"constrained_ranking in {', '.join(CONSTRAINED_RANKINGS)}"
            )
        self.convention, self.pixel_range = convention, float(pixel_range)
        self.stabilize_iterations, self.ssa_threshold = stabilize_iterations, ssa_threshold
        self.constrained_ranking, self.repick_free = constrained_ranking, repick_free
        self.channel_multiple = channel_multiple
        self.prune_sets: dict[str, list[int]] = {}  # group key -> filter indices to remove

    @property
    def iterations(self) -> int:
        return required_iterations(self.delta, self.every, self.tau, self.ssa_iterations, self.stabilize_iterations)

    # ------------------------------------------------------------------------------ set-up
    def on_train_start(self, trainer) -> None:
        if trainer.total_iterations < self.iterations:
            raise TinySRError(
                f"assl: train.iterations must be at least {self.iterations} for every penalty to reach tau "
                f"(ssa_iterations + ceil(tau/delta) * every)"
            )
        model = trainer.model
        self.groups = channel_groups(model)
        if not self.groups:
            raise TinySRError(f"assl: {type(model).__name__} has no prunable channel groups")
        self.wn: dict[str, WeightNormConv2d] = insert_weight_norm(model, [p for g in self.groups for p in g.producers])
        for g in self.groups:
            if not g.constrained and g.key not in self.prune_sets:
                self.prune_sets[g.key] = self._lowest(g)

    def _n_pruned(self, group) -> int:
        return group.channels - kept_count(group.channels, self.ratio, self.channel_multiple)

    def _lowest(self, group) -> list[int]:
        layers = group.producers[:1] if group.constrained and self.constrained_ranking == "first" else group.producers
        scores = sum(self.wn[p].gamma.detach().abs().cpu() for p in layers)
        return lowest(scores, self._n_pruned(group)).tolist()

    # ------------------------------------------------------------------------- the penalties
    def alpha(self, constrained: bool, iteration: int) -> float:
        if not constrained:
            return min(self.tau, self.delta * (iteration // self.every + 1))
        if iteration <= self.ssa_iterations:
            return 0.0
        return min(self.tau, self.delta * (iteration // self.every - self.ssa_iterations // self.every))

    def on_step_start(self, trainer, iteration: int) -> None:
        if iteration >= self.ssa_iterations:
            for g in self.groups:
                if g.constrained and g.key not in self.prune_sets:
                    self.prune_sets[g.key] = self._lowest(g)
                elif not g.constrained and self.repick_free and iteration == self.ssa_iterations:
                    self.prune_sets[g.key] = self._lowest(g)

    def loss(self, step) -> torch.Tensor:
        i = step.iteration
        total = step.sr.new_zeros(())
        ssa_scale = 1.0 / self.pixel_range if self.convention == "paper" else 1.0
        for g in self.groups:
            if g.constrained and i < self.ssa_iterations:
                total = total + self.ssa_weight * ssa_scale * self.alignment_loss(g)
            alpha = self.alpha(g.constrained, i)
            if alpha > 0 and g.key in self.prune_sets:
                total = total + self.sparsity_penalty(g, alpha)
        return total

    def sparsity_penalty(self, group, alpha: float) -> torch.Tensor:
        """``L_SI`` of one group's prune set at ``alpha`` (the module docstring's two conventions)."""
        idx = torch.tensor(self.prune_sets[group.key], dtype=torch.long, device=self.wn[group.key].gamma.device)
        gammas = sum((self.wn[p].gamma[idx] ** 2).sum() for p in group.producers)
        if self.convention == "unscaled":
            return alpha * gammas
        biases = sum((self.wn[p].conv.bias[idx] ** 2).sum() for p in group.producers if self.wn[p].conv.bias is not None)
        return alpha / 2 * (gammas / self.pixel_range + self.pixel_range * biases)

    def alignment_loss(self, group) -> torch.Tensor:
        """``-(1/K) sum (M M^T)`` over the soft masks of the group's layers (see the module docstring)."""
        n = self._n_pruned(group)
        masks = []
        for p in group.producers:
            gamma = self.wn[p].gamma
            if self.ssa_threshold == "smallest_kept":
                threshold = gamma.sort().values[n]  # with its gradient, as in the official code
            else:
                threshold = gamma.detach().sort().values[max(n - 1, 0)]
            masks.append(torch.sigmoid(gamma - threshold))
        m = torch.stack(masks)
        return -(m @ m.t()).sum() / m.shape[0] ** 2

    # ----------------------------------------------------------------------------- outputs
    def export(self, model):
        return fold_weight_norm(copy.deepcopy(model))

    def pruned_model(self, model):
        missing = [g.key for g in self.groups if g.key not in self.prune_sets]
        if missing:
            raise TinySRError(f"assl: no prune set yet for {', '.join(missing)} (stopped before ssa_iterations)")
        plain = fold_weight_norm(copy.deepcopy(model))
        return prune(plain, {g.key: kept_indices(g.channels, self.prune_sets[g.key]) for g in self.groups})

    def on_train_end(self, trainer) -> None:
        if trainer.is_main:
            trainer.save_model(self.pruned_model(trainer.eval_model()), trainer.run_dir / self.output)

    def state_dict(self) -> dict:
        return {"prune_sets": {k: list(v) for k, v in self.prune_sets.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.prune_sets = {k: list(v) for k, v in state["prune_sets"].items()}

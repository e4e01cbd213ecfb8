"""The suites of ``tinysr bench``: which methods, which recipes, which budget.

An :class:`Entry` is one row of the tables: a shipped recipe (``tinysr recipes``) trained for the suite's
budget (or an untrained model such as bicubic, or a pruning of another entry's model), the
deployable form whose CPU time is measured, and the key of the papers' numbers (``paper.py``).

* ``smoke``: every family on tiny models for a handful of iterations (seconds; used by a test).
* ``cpu``: x2, every family at the budgets of the CPU ablations (binary networks 1,000
  iterations, pruning 1,000 fine-tuning iterations from a 6,000-iteration EDSR-baseline,
  re-parameterization 10,000 iterations), sized for one evening on a 2-core machine.
* ``paper``: the papers' recipes (x2 and x4 where they report both); for a GPU.
* ``zoo``: every trained model the package ships (``tinysr models --pretrained``), scored and
  timed as stored, with bicubic at each of their scales; nothing is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TinySRError
from ..zoo import list_pretrained

# Families, in the order the tables list them.
REFERENCE, FULL, BINARY, PRUNING, REP = "reference", "full precision", "binary", "pruning", "re-parameterization"
FAMILIES = (REFERENCE, FULL, BINARY, PRUNING, REP)


@dataclass(frozen=True)
class Prune:
    """Prune the model of entry ``source`` by ``method`` at ``ratio`` (the recipe fine-tunes it)."""

    source: str
    ratio: float
    method: str = "assl"
    prune_lr: float = 2e-4


@dataclass(frozen=True)
class Entry:
    name: str  # the row label and the run folder under the bench's output directory
    family: str
    recipe: str | None = None  # a shipped recipe's file name; None for an untrained model
    model: str | None = None  # the untrained model's registered name (recipe is None)
    scale: int = 2  # the untrained model's scale (a recipe sets its own)
    overrides: tuple[str, ...] = ()  # ``--set``-style recipe overrides
    prune: Prune | None = None
    teacher: str | None = None  # entry whose model replaces a distillation loss's teacher
    deploy: str = "none"  # "merge" (re-parameterize), "pack" (bit-pack) or "none"
    paper: str | None = None  # key into paper.REPORTED
    zoo: str | None = None  # a shipped model (zoo:NAME), stored in its ``deploy`` form already


@dataclass(frozen=True)
class Suite:
    name: str
    entries: tuple[Entry, ...]
    test_sets: tuple[str, ...] = ("../shared/data/Set5", "../shared/data/Set14")
    time_lr_size: tuple[int, int] = (180, 320)  # (H, W) of the LR input the CPU time is measured on
    time_repeat: int = 5
    crop_image: str = "../shared/data/Set14/HR/zebra.png"
    overrides: tuple[str, ...] = ()  # applied to every trained entry before its own


# Tiny versions of one model per family: each trains for a few iterations on T91.
_SMOKE_DATA = (
    "data.train=[../shared/data/T91]",
    "data.val=null",
    "data.patch_size=16",
    "data.repeat=1",
    "train.batch_size=2",
    "train.iterations=4",
    "train.val_every=4",
    "train.checkpoint_every=4",
    "train.log_every=2",
)

SMOKE = Suite(
    "smoke",
    (
        Entry("bicubic", REFERENCE, model="bicubic"),
        Entry(
            "edsr_baseline", FULL, "edsr_baseline_x2_cpu.yaml", overrides=("model.kwargs={channels: 8, blocks: 1}",), paper="edsr_baseline"
        ),
        Entry(
            "edsr_reactnet",
            BINARY,
            "edsr_reactnet_x2_cpu.yaml",
            overrides=("model.kwargs={channels: 8, units: 2}",),
            deploy="pack",
            paper="edsr_reactnet",
        ),
        Entry(
            "srresnet_bam",
            BINARY,
            "srresnet_bam_x2_cpu.yaml",
            overrides=("model.kwargs={channels: 8, units: 2}",),
            deploy="pack",
            paper="srresnet_bam",
        ),
        Entry("fabnet", BINARY, "fabnet_b4c12_x2_cpu.yaml", overrides=("model.kwargs={blocks: 1, channels: 4}",), deploy="pack"),
        Entry("l1_0.5", PRUNING, "edsr_baseline_x2_prune_cpu.yaml", prune=Prune("edsr_baseline", 0.5, "l1"), paper="l1_0.5"),
        Entry("ecbsr_m4c16", REP, "ecbsr_m4c16_x2_cpu.yaml", deploy="merge", paper="ecbsr_m4c16"),
    ),
    test_sets=("../shared/data/Set5",),
    time_lr_size=(45, 80),
    time_repeat=1,
    crop_image="../shared/data/Set5/HR/butterfly.png",
    overrides=_SMOKE_DATA,
)

_BINARY_CPU = 1000  # iterations of every binary CPU recipe in the ablations


def _binary(name: str, recipe: str, paper: str | None = None, deploy: str = "pack", **kw) -> Entry:
    return Entry(name, BINARY, recipe, overrides=(f"train.iterations={_BINARY_CPU}",), deploy=deploy, paper=paper, **kw)


def _pruned(method: str, ratio: float) -> Entry:
    return Entry(
        f"{method}_{ratio}",
        PRUNING,
        "edsr_baseline_x2_prune_cpu.yaml",
        prune=Prune("edsr_baseline_x2_cpu", ratio, method, prune_lr=5e-4),
        paper=f"{method}_{ratio}",
    )


CPU = Suite(
    "cpu",
    (
        Entry("bicubic", REFERENCE, model="bicubic"),
        Entry("edsr_baseline_x2_cpu", FULL, "edsr_baseline_x2_cpu.yaml", paper="edsr_baseline"),
        _binary("edsr_bnn_x2_cpu", "edsr_bnn_x2_cpu.yaml", "edsr_bnn"),
        _binary("edsr_bireal_x2_cpu", "edsr_bireal_x2_cpu.yaml", "edsr_bireal"),
        _binary("edsr_reactnet_x2_cpu", "edsr_reactnet_x2_cpu.yaml", "edsr_reactnet"),
        _binary("edsr_btm_x2_cpu", "edsr_btm_x2_cpu.yaml", "edsr_btm"),
        _binary("bbcu_l_x2_cpu", "bbcu_l_x2_cpu.yaml", "bbcu_l"),
        _binary("bbcu_m_x2_cpu", "bbcu_m_x2_cpu.yaml", "bbcu_m"),
        _binary("edsr_e2fif_x2_cpu", "edsr_e2fif_x2_cpu.yaml"),
        _binary("srresnet_bnn_x2_cpu", "srresnet_bnn_x2_cpu.yaml", "srresnet_bnn"),
        _binary("srresnet_bam_noacc_x2_cpu", "srresnet_bam_noacc_x2_cpu.yaml"),
        _binary("srresnet_bam_x2_cpu", "srresnet_bam_x2_cpu.yaml", "srresnet_bam"),
        _binary("bsrn_x2_cpu", "bsrn_x2_cpu.yaml"),
        _binary("fabnet_b4c24_x2_cpu", "fabnet_b4c24_x2_cpu.yaml"),
        _binary("fabnet_nosplit_x2_cpu", "fabnet_nosplit_x2_cpu.yaml"),
        _binary("fabnet_b4c24_fixed_t2_x2_cpu", "fabnet_b4c24_fixed_t2_x2_cpu.yaml"),
        _pruned("assl", 0.5),
        _pruned("l1", 0.5),
        _pruned("scratch", 0.5),
        _pruned("assl", 0.9),
        _pruned("l1", 0.9),
        _pruned("scratch", 0.9),
        Entry("basenet_m4c16_x2_cpu", REP, "basenet_m4c16_x2_cpu.yaml"),
        Entry("ecbsr_m4c16_x2_cpu", REP, "ecbsr_m4c16_x2_cpu.yaml", deploy="merge", paper="ecbsr_m4c16"),
        Entry("repvgg_m4c16_x2_cpu", REP, "repvgg_m4c16_x2_cpu.yaml", deploy="merge"),
        Entry("repsr_m4c16_nofreeze_x2_cpu", REP, "repsr_m4c16_nofreeze_x2_cpu.yaml", deploy="merge"),
        Entry("repsr_m4c16_x2_cpu", REP, "repsr_m4c16_x2_cpu.yaml", deploy="merge"),
        # Last: the runs most likely still to train (a rerun resumes them).
        _binary("edsr_reactnet_bn_x2_cpu", "edsr_reactnet_bn_x2_cpu.yaml"),
        _binary("edsr_reactnet_inbranch_x2_cpu", "edsr_reactnet_inbranch_x2_cpu.yaml"),
        Entry("edsr_ibtm_teacher_x2_cpu", FULL, "edsr_ibtm_teacher_x2_cpu.yaml", overrides=(f"train.iterations={_BINARY_CPU}",)),
        _binary("edsr_ibtm_x2_cpu", "edsr_ibtm_x2_cpu.yaml", teacher="edsr_ibtm_teacher_x2_cpu"),
    ),
)


def _paper_entries() -> tuple[Entry, ...]:
    entries = [Entry("bicubic_x2", REFERENCE, model="bicubic"), Entry("bicubic_x4", REFERENCE, model="bicubic", scale=4)]
    for scale in (2, 4):
        entries.append(Entry(f"edsr_baseline_x{scale}", FULL, f"edsr_baseline_x{scale}.yaml", paper="edsr_baseline"))
        for method in ("bnn", "bireal", "reactnet", "btm"):
            entries.append(Entry(f"edsr_{method}_x{scale}", BINARY, f"edsr_{method}_x{scale}.yaml", deploy="pack", paper=f"edsr_{method}"))
        entries.append(Entry(f"edsr_e2fif_x{scale}", BINARY, f"edsr_e2fif_x{scale}.yaml", deploy="pack"))
        for variant in ("l", "m"):
            entries.append(
                Entry(f"bbcu_{variant}_x{scale}", BINARY, f"bbcu_{variant}_x{scale}.yaml", deploy="pack", paper=f"bbcu_{variant}")
            )
        entries.append(Entry(f"edsr_ibtm_teacher_x{scale}", FULL, f"edsr_ibtm_teacher_x{scale}.yaml"))
        entries.append(
            Entry(f"edsr_ibtm_x{scale}", BINARY, f"edsr_ibtm_x{scale}.yaml", deploy="pack", teacher=f"edsr_ibtm_teacher_x{scale}")
        )
        for method in ("bnn", "bireal", "reactnet"):
            entries.append(
                Entry(f"srresnet_{method}_x{scale}", BINARY, f"srresnet_{method}_x{scale}.yaml", deploy="pack", paper=f"srresnet_{method}")
            )
        entries.append(Entry(f"srresnet_bam_x{scale}", BINARY, f"srresnet_bam_x{scale}.yaml", deploy="pack", paper="srresnet_bam"))
        entries.append(Entry(f"vdsr_bam_x{scale}", BINARY, f"vdsr_bam_x{scale}.yaml", deploy="pack", paper="vdsr_bam"))
        entries.append(Entry(f"bsrn_x{scale}", BINARY, f"bsrn_x{scale}.yaml", deploy="pack", paper="bsrn"))
        for variant in ("b4c12", "b4c24", "b4c36", "b8c96"):
            entries.append(Entry(f"fabnet_{variant}_x{scale}", BINARY, f"fabnet_{variant}_x{scale}.yaml", deploy="pack"))
        entries.append(Entry(f"ledsr_x{scale}", FULL, f"ledsr_x{scale}.yaml"))
        entries.append(
            Entry(f"asslN_x{scale}", PRUNING, f"asslN_ledsr_x{scale}.yaml", prune=Prune(f"ledsr_x{scale}", 207 / 256), paper="asslN")
        )
        for rep in ("ecbsr_m4c16", "ecbsr_m4c32", "repsr_m4c16", "repsr_m4c32"):
            entries.append(Entry(f"{rep}_x{scale}", REP, f"{rep}_x{scale}.yaml", deploy="merge", paper=rep))
    return tuple(entries)


PAPER = Suite("paper", _paper_entries())

SUITES = {s.name: s for s in (SMOKE, CPU, PAPER)}
ZOO = "zoo"
_STORED_FORMS = {"merged": "merge", "packed": "pack", "pruned": "none", "trained": "none"}  # zoo record form -> deploy


def zoo_suite() -> Suite:
    """The ``zoo`` suite: bicubic at every scale the zoo has, then each shipped model, by family.
    Its paper key is its record's (a pruned entry's method and ratio), else its model's name, so
    the papers' numbers sit beside it where SPEC has them."""
    pretrained = sorted(list_pretrained(), key=lambda e: (FAMILIES.index(e["family"]), e["scale"], e["name"]))
    entries = [Entry(f"bicubic_x{scale}", REFERENCE, model="bicubic", scale=scale) for scale in sorted({e["scale"] for e in pretrained})]
    entries += [
        Entry(e["name"], e["family"], deploy=_STORED_FORMS[e["form"]], paper=e.get("paper", e["model"]), zoo=e["name"]) for e in pretrained
    ]
    return Suite(ZOO, tuple(entries))


def get_suite(name: str) -> Suite:
    if name == ZOO:
        return zoo_suite()
    if name not in SUITES:
        raise TinySRError(f"--suite {name!r}: unknown suite ({', '.join([*SUITES, ZOO])})")
    return SUITES[name]

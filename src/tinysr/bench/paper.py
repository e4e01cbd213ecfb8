"""The papers' reported PSNR (Set5, Set14), for the side column of ``tinysr bench`` tables.

Every number is copied from SPEC (§5.3, §5.4, §6, §7, §8), keyed by a method key and the scale.
``None`` marks a set the source does not report. These are the papers' long trainings on DIV2K
or 291 images; the bench's CPU budgets are far shorter, so the column shows the gap, not a target.
"""

from __future__ import annotations

from typing import NamedTuple


class Reported(NamedTuple):
    set5: float | None
    set14: float | None
    source: str


_BBCU = "BBCU table (ICLR 2023), SPEC §8"
_BAM = "BAM (ECCV 2020), SPEC §5.3"
_ASSL = "ASSL (NeurIPS 2021), SPEC §6"

REPORTED: dict[tuple[str, int], Reported] = {
    # EDSR-style 64-channel binary network (BBCU's comparison table).
    ("edsr_bnn", 2): Reported(32.25, 29.25, _BBCU),
    ("edsr_bnn", 4): Reported(27.56, 25.51, _BBCU),
    ("edsr_bireal", 2): Reported(32.32, 29.47, _BBCU),
    ("edsr_bireal", 4): Reported(27.75, 25.79, _BBCU),
    ("edsr_reactnet", 2): Reported(37.26, 32.97, _BBCU),
    ("edsr_reactnet", 4): Reported(31.54, 28.19, _BBCU),
    ("edsr_btm", 2): Reported(37.22, 32.93, _BBCU),
    ("edsr_btm", 4): Reported(31.43, 28.16, _BBCU),
    ("bbcu_l", 2): Reported(37.58, 33.18, _BBCU),
    ("bbcu_l", 4): Reported(31.79, 28.38, _BBCU),
    ("bbcu_m", 2): Reported(37.44, 33.03, _BBCU),
    ("bbcu_m", 4): Reported(31.54, 28.20, _BBCU),
    # BAM's own tables.
    ("vdsr_bnn", 2): Reported(34.43, None, _BAM),
    ("vdsr_bnn", 4): Reported(29.02, None, _BAM),
    ("srresnet_bnn", 2): Reported(35.21, None, _BAM),
    ("srresnet_bnn", 4): Reported(29.33, None, _BAM),
    ("vdsr_bam", 2): Reported(36.60, 32.41, _BAM),
    ("vdsr_bam", 3): Reported(32.52, 29.17, _BAM),
    ("vdsr_bam", 4): Reported(30.31, 27.46, _BAM),
    ("srresnet_bam", 2): Reported(37.21, 32.74, _BAM),
    ("srresnet_bam", 3): Reported(33.33, 29.63, _BAM),
    ("srresnet_bam", 4): Reported(31.24, 27.97, _BAM),
    ("bsrn", 4): Reported(31.35, 28.04, _BAM),
    # ASSL's ablation on EDSR-baseline (Set5 only) and its main result.
    ("edsr_baseline", 2): Reported(37.99, None, _ASSL),
    ("assl_0.5", 2): Reported(37.82, None, _ASSL),
    ("l1_0.5", 2): Reported(37.73, None, _ASSL),
    ("scratch_0.5", 2): Reported(37.75, None, _ASSL),
    ("assl_0.9", 2): Reported(37.23, None, _ASSL),
    ("l1_0.9", 2): Reported(36.87, None, _ASSL),
    ("scratch_0.9", 2): Reported(36.74, None, _ASSL),
    ("asslN", 2): Reported(38.12, 33.77, _ASSL),
    ("asslN", 3): Reported(34.51, 30.45, _ASSL),
    ("asslN", 4): Reported(32.29, 28.69, _ASSL),
    # A third-party ECBSR retrain quoted by RepSR (SPEC §7).
    ("ecbsr_m4c16", 2): Reported(37.18, 32.79, "RepSR (ACM MM 2022), SPEC §7"),
    ("ecbsr_m4c16", 4): Reported(30.87, 27.80, "RepSR (ACM MM 2022), SPEC §7"),
}


def reported(key: str | None, scale: int) -> Reported | None:
    """The reported numbers for ``key`` at ``scale``, or ``None``."""
    return REPORTED.get((key, scale)) if key else None

"""Shared fixtures. Real benchmark images are looked for in ``$TINYSR_DATA``, then ``../shared/data``
beside the checkout (where CI has them), then the tinysr data cache (``<cache>/datasets``, the
layout of ``../shared/data``: ``Set5/HR``, ``Set14/HR``, ``T91``, ...).

Where none holds them, the tests that need them are skipped with a line saying where to put them,
and everything else runs, so a fresh clone passes its tests. ``TINYSR_REQUIRE_DATA=1`` (set by
``.ci/run``) turns that skip into a failure: CI has the data and must run every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tinysr.data import default_cache_dir

REPO = Path(__file__).resolve().parents[1]
USER_CACHE = default_cache_dir()  # read before pytest_configure points TINYSR_CACHE at the test run's own


def data_candidates() -> list[Path]:
    env = os.environ.get("TINYSR_DATA")
    return ([Path(env)] if env else []) + [REPO.parent / "shared" / "data", USER_CACHE / "datasets"]


def pytest_configure(config):
    # Keep the LR cache of the test run out of the user's home folder.
    os.environ.setdefault("TINYSR_CACHE", str(Path(config.rootpath) / ".pytest_cache" / "tinysr"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    for candidate in data_candidates():
        if (candidate / "Set5" / "HR").is_dir():
            return candidate
    message = (
        "benchmark images (Set5, Set14, T91) not found in $TINYSR_DATA, ../shared/data or the tinysr data cache; "
        "fetch them with `tinysr data get set5 set14 t91`, or point TINYSR_DATA at a folder holding Set5/HR, Set14/HR and T91"
    )
    if os.environ.get("TINYSR_REQUIRE_DATA") == "1":
        pytest.fail(message)
    pytest.skip(message)

"""Shared fixtures. Real images come from ``../shared/data`` beside the checkout (CI has it there);
``TINYSR_DATA`` overrides the location. A missing data folder fails the tests that need it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TINYSR_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    # Keep the LR cache of the test run out of the user's home folder.
    os.environ.setdefault("TINYSR_CACHE", str(Path(config.rootpath) / ".pytest_cache" / "tinysr"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "Set5" / "HR").is_dir():
        pytest.fail(f"shared data not found at {DATA} (set TINYSR_DATA or put shared/ beside the checkout)")
    return DATA

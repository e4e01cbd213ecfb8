"""One benchmark for every method: ``tinysr bench`` (suites, tables, plots)."""

from .runner import run_bench
from .suites import SUITES, Entry, Prune, Suite, get_suite

__all__ = ["SUITES", "Entry", "Prune", "Suite", "get_suite", "run_bench"]

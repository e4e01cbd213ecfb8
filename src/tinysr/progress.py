"""Progress reports: a live bar on a terminal, a plain line now and then everywhere else.

tqdm redraws its bar with carriage returns; written to a file or a CI log (anything that is not a
terminal) that is one update per step glued into one endless line. :func:`progress` returns tqdm
when stderr is a terminal and otherwise :class:`PlainProgress`, which has the part of tqdm's
interface tinysr uses (``update``, ``set_postfix``, ``write``, ``close``, iteration) and prints a
whole line at most every ``every`` seconds, and one at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

PLAIN_EVERY_SECONDS = 30.0


class PlainProgress:
    """Periodic ``desc: n/total (p%), r it/s, postfix`` lines on stderr."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        initial: int = 0,
        every: float = PLAIN_EVERY_SECONDS,
    ):
        self.iterable, self.desc, self.n, self.every = iterable, desc, initial, every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._start_n = initial
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._print()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, line: str) -> None:
        """A message between reports, on stdout as ``tqdm.write`` puts it (also when disabled)."""
        print(line, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._print()

    def _print(self) -> None:
        elapsed = time.monotonic() - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else str(self.n)
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done}, {rate:.2f} it/s{tail}", file=sys.stderr, flush=True)


class _Off(PlainProgress):
    """A disabled report: counts and prints no progress (messages still go out, as with tqdm)."""

    def _print(self) -> None:
        pass


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    initial: int = 0,
    disable: bool = False,
    leave: bool = True,
):
    """tqdm on a terminal; :class:`PlainProgress` lines elsewhere; nothing when ``disable``."""
    if disable:
        return _Off(iterable, total=total, desc=desc, initial=initial)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True, leave=leave)
    return PlainProgress(iterable, total=total, desc=desc, initial=initial)

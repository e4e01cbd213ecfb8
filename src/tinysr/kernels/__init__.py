"""Native CPU kernels, compiled on first use with ``torch.utils.cpp_extension`` and cached: the
bit-packed binary conv (SPEC §9), the Haar transform at inference (SPEC §5.5) and SSIM's Gaussian
filter (SPEC §1).

:func:`native` returns the compiled module, or ``None`` when it cannot be built (no compiler,
no Python headers): callers then use their PyTorch or numpy path, which computes the same numbers.
The build lands in PyTorch's extension cache (``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``), once per machine; on a terminal that build is announced, as it
takes seconds. The sources include only the PyTorch headers they use (the tensor, ``empty``,
``parallel_for`` and the pybind11 casters): the full ``torch/extension.h`` would be most of the
build's time.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

# One extension, one translation unit: bindings.cpp includes the kernels' sources.
SOURCE = Path(__file__).with_name("bindings.cpp")


def _sources_digest() -> str:
    """A digest of bindings.cpp and the files it includes, at any depth. PyTorch rebuilds a cached
    extension only when the files passed to it or its flags change, so the digest goes in as a
    flag: an edit to an included file then rebuilds too."""
    digest = hashlib.sha256()
    pending, seen = [SOURCE.name], set()
    while pending:  # bindings.cpp, the files it includes, the files they include, ...
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        text = SOURCE.with_name(name).read_text()
        digest.update(text.encode())
        pending += re.findall(r'^#include "([^"]+)"', text, flags=re.MULTILINE)
    return digest.hexdigest()[:16]


# Path codes shared with binary_conv.cpp.
PATHS = {"auto": 0, "portable": 1, "avx2": 2, "avx512": 3, "avx2_pixels": 4}


@functools.cache
def native():
    """The compiled kernel module, or ``None`` (with a warning saying why) if it cannot be built."""
    if os.environ.get("TINYSR_NO_NATIVE"):
        return None
    try:
        from torch.utils.cpp_extension import load

        _remove_stale_lock()
        digest = _sources_digest()
        stamp = _build_stamp(digest)
        built = _is_built(stamp)
        if sys.stderr.isatty() and not built:
            print("tinysr: compiling the native kernels (once per machine and version) ...", file=sys.stderr, flush=True)
        module = load(
            name="tinysr_binary_conv",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off", f"-DTINYSR_SOURCES_DIGEST={digest}"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
        if not built:
            _mark_built(stamp)
        return module
    except Exception as exc:  # any build failure: fall back, but say so once
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"tinysr: native kernels unavailable, using the PyTorch and numpy paths ({first})", stacklevel=2)
        return None


def _build_directory() -> Path | None:
    try:
        from torch.utils.cpp_extension import _get_build_directory  # private: tolerate its absence

        return Path(_get_build_directory("tinysr_binary_conv", verbose=False))
    except (ImportError, OSError):
        return None


def _build_stamp(digest: str) -> str:
    """What a cached build depends on: the sources' digest and the PyTorch it was compiled against."""
    import torch

    return f"{digest} torch {torch.__version__}"


def _is_built(stamp: str) -> bool:
    """Whether the cached build was made from these sources and this PyTorch, so ``load`` will
    not compile. Only the notice on a terminal depends on it, never which code runs."""
    folder = _build_directory()
    try:
        return folder is not None and (folder / "tinysr_stamp").read_text() == stamp
    except OSError:
        return False


def _mark_built(stamp: str) -> None:
    folder = _build_directory()
    try:
        if folder is not None:
            (folder / "tinysr_stamp").write_text(stamp)
    except OSError:
        pass  # a read-only cache: the notice may show again, nothing else changes


# A build takes well under this; a lock older than it was left by a process killed mid-build.
STALE_LOCK_SECONDS = 600


def _remove_stale_lock() -> None:
    """Drop a build lock left behind by a killed process.

    PyTorch's ``load`` waits forever for an existing lock file, so one process killed while it
    held the lock would hang every later process on this machine.
    """
    folder = _build_directory()
    try:
        if folder is not None and time.time() - (folder / "lock").stat().st_mtime > STALE_LOCK_SECONDS:
            (folder / "lock").unlink()
    except OSError:
        pass


def cpu_model() -> str:
    """This CPU's model name as the OS reports it (Linux), else the platform's processor or machine
    name: benchmarks and ``tinysr bench`` print it beside their timings."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_paths() -> list[str]:
    """Kernel paths this machine runs: ``torch`` always; ``portable``/``avx2``/``avx512`` when built."""
    module = native()
    return ["torch"] + (list(module.available_paths()) if module is not None else [])

"""Process settings for CPU inference: keep freed activation memory instead of faulting it back in.

An SR network's activations are large (a 64-channel 320x180 feature map is 14.7 MB, the x2
upsampler's output 59 MB). glibc's malloc serves blocks that large with ``mmap`` and returns them
to the kernel with ``munmap`` on free, and trims the top of its heap, so every forward pass asks
the kernel for hundreds of MB of fresh pages again, each 4 KiB page a zero-filled minor fault,
and the time of a pass varies with how the frees happen to interleave (BENCHMARKS.md has the
counts, "Page faults, not the network, set the packed networks' speed").

:func:`retain_freed_memory` tells glibc to serve every block from its heap and never to trim it,
so after the first pass the pages are reused. The cost is that the process keeps its peak
memory until it exits, which suits a process that runs inference. ``tinysr upscale``, ``test``
and ``bench`` call it; library users may call it themselves.
"""

from __future__ import annotations

import ctypes

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def retain_freed_memory() -> bool:
    """Keep freed memory in this process (glibc: no ``mmap`` blocks, no heap trimming).

    Returns whether it took effect: False where the C library is not glibc (macOS, musl, Windows),
    whose allocators are left as they are.
    """
    try:
        libc = ctypes.CDLL(None)  # the symbols the process has loaded, the C library's among them (POSIX)
    except (OSError, TypeError):  # Windows has no such handle
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):  # musl has a mallopt that does nothing
        return False
    # glibc's mallopt returns 1 on success; both settings apply to later allocations.
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, _INT_MAX))

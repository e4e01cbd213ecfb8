"""File helpers every layer shares: atomic writes and content digests (no pixels, no models)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import TinySRError

try:  # POSIX advisory locks; elsewhere folders are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".tinysr.lock"
# atomic_write's temporary files: "." + the target's name + "." + mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: a crash never leaves a half-written file.

    The temporary file lies beside ``path`` (a rename within one file system is atomic) and is
    flushed to disk before the rename, so after a power loss ``path`` holds the old or the new bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp (or the writer) made it private; the result follows the umask
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | Path, targets: set[str] | None = None) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write` calls left in ``folder``.

    With ``targets``, only those of files with these names directly in ``folder``; without, every
    one in ``folder`` and its subfolders, except subfolders holding their own lock file (another
    run folder, cleaned under its own lock). Call it only where no other process is writing: under
    :func:`folder_lock`, or for outputs this process is about to write. Returns what was deleted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for root, dirs, files in os.walk(folder):
        if targets is not None:
            dirs.clear()
        else:
            dirs[:] = [d for d in dirs if not (Path(root) / d / LOCK_NAME).exists()]
        for name in files:
            match = _TEMP_NAME.match(name)
            if match and (targets is None or match.group("target") in targets):
                path = Path(root) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_cache_dir() -> Path:
    """``$TINYSR_CACHE`` or ``~/.cache/tinysr``: generated LR images, downloaded data sets."""
    env = os.environ.get("TINYSR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tinysr"


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks (model files can be large)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextmanager
def folder_lock(folder: str | Path, what: str = "run folder") -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder`` (created if needed) while inside.

    Another tinysr process that asks for the same folder gets a one-line error instead of mixing
    its files with this one's. The lock is on an open file, so the kernel releases it when the
    process ends, however it ends: a killed run leaves no stale lock behind. Its half-written temp
    files are deleted when the next process takes the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(folder / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TinySRError(f"{folder}: this {what} is in use by another tinysr process; wait for it or choose another folder") from None
        remove_stale_temps(folder)  # ours alone now: any temp file here is a killed write's
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

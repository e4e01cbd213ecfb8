"""The standard SR data sets by name (``tinysr data``): fetched, checked and laid out for tinysr.

:func:`get` downloads a set's archive with pooch (progress bar, retries) into the cache
(``$TINYSR_CACHE/datasets``, default ``~/.cache/tinysr/datasets``), takes the set's HR images out
of it into the layout ``tinysr test`` and ``train`` read (``Set5/HR/*.png`` for a benchmark set, a
flat ``T91/`` for a training set) and checks them before the set is used:

* every image must decode, and the set must hold its number of images;
* where the registry has the set's **pixel digests** (the SHA-256 of each image's decoded RGB
  pixels and shape, taken from the copies in the shared data these sets were checked against),
  the images must be exactly those, whatever their file names or PNG encoding.

A set is written into a temporary folder and renamed into place only once checked, so an
interrupted run leaves no half set behind. An archive whose images fail the check is deleted
and downloaded once more; if that copy fails too, the error says so and nothing is kept. A set
already in place (its marker file lists every image's size) is not downloaded again.

Nothing is redistributed by tinysr: each entry names where its archive comes from and on what
terms. Manga109 is available from its authors on request only, so it has no download.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TinySRError
from .files import atomic_write, default_cache_dir
from .io import read_image

MARKER = ".tinysr-dataset.json"  # in a checked set's folder: its images and their sizes
# set name -> the sorted pixel_digest of each image of the shared copies (tests check they agree)
DIGESTS = Path(__file__).with_name("dataset_digests.json")
DOWNLOAD_ATTEMPTS = 2  # a corrupt archive is downloaded once more before giving up

_EDSR_BENCHMARK = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
_LAPSRN_TRAINING = "http://vllab.ucmerced.edu/wlai24/LapSRN/results/SR_training_datasets.zip"
_BENCHMARK_SOURCE = "EDSR-PyTorch's benchmark archive (SNU CV lab), as its README links it"
_TRAINING_SOURCE = "LapSRN's training-set archive (UC Merced vision lab), as its project page links it"
_RESEARCH_TERMS = "the original authors' terms; for research use, cite the set's paper"


@dataclass(frozen=True)
class StandardSet:
    name: str  # what a user types: set5
    folder: str  # its folder in the cache: Set5
    images: int  # its number of HR images
    benchmark: bool  # benchmark layout (FOLDER/HR/*.png) or a flat training folder
    url: str | None  # the archive that holds it; None where the authors hand it out on request only
    members: str  # regular expression over the archive's member paths that picks the set's HR images
    source: str
    terms: str


REGISTRY = {
    s.name: s
    for s in (
        StandardSet("set5", "Set5", 5, True, _EDSR_BENCHMARK, r"(.*/)?Set5/HR/[^/]+\.png", _BENCHMARK_SOURCE, _RESEARCH_TERMS),
        StandardSet("set14", "Set14", 14, True, _EDSR_BENCHMARK, r"(.*/)?Set14/HR/[^/]+\.png", _BENCHMARK_SOURCE, _RESEARCH_TERMS),
        StandardSet("b100", "B100", 100, True, _EDSR_BENCHMARK, r"(.*/)?B100/HR/[^/]+\.png", _BENCHMARK_SOURCE, _RESEARCH_TERMS),
        StandardSet(
            "urban100", "Urban100", 100, True, _EDSR_BENCHMARK, r"(.*/)?Urban100/HR/[^/]+\.png", _BENCHMARK_SOURCE, _RESEARCH_TERMS
        ),
        StandardSet(
            "manga109",
            "Manga109",
            109,
            True,
            None,
            r"",
            "manga109.org (Aizawa Yamasaki Matsui lab)",
            "academic use, on request from its authors: not downloadable here; put its images in the folder `tinysr data path manga109` names",
        ),
        StandardSet("t91", "T91", 91, False, _LAPSRN_TRAINING, r"(.*/)?T91/[^/]+\.png", _TRAINING_SOURCE, _RESEARCH_TERMS),
        StandardSet("bsd200", "BSD200", 200, False, _LAPSRN_TRAINING, r"(.*/)?BSDS200/[^/]+\.png", _TRAINING_SOURCE, _RESEARCH_TERMS),
    )
}


def datasets_dir() -> Path:
    return default_cache_dir() / "datasets"


def standard_set(name: str) -> StandardSet:
    key = name.lower()
    if key not in REGISTRY:
        raise TinySRError(f"{name}: not a standard set ({', '.join(REGISTRY)})")
    return REGISTRY[key]


def set_path(name: str, root: str | Path | None = None) -> Path:
    """The folder a standard set lives in (whether it is there yet or not)."""
    return Path(root or datasets_dir()) / standard_set(name).folder


def _image_dir(folder: Path, entry: StandardSet) -> Path:
    return folder / "HR" if entry.benchmark else folder


def pixel_digest(path: str | Path) -> str:
    """SHA-256 of an image's decoded RGB pixels and shape: the same for every lossless encoding."""
    img = np.ascontiguousarray(read_image(path))
    digest = hashlib.sha256(repr(img.shape).encode())
    digest.update(img.tobytes())
    return digest.hexdigest()


def known_digests(name: str) -> list[str] | None:
    """The set's sorted pixel digests, or None where the registry has none."""
    table = json.loads(DIGESTS.read_text())
    return table.get(standard_set(name).name)


def is_present(name: str, root: str | Path | None = None) -> bool:
    """Whether the set was fetched and checked into ``root`` and its files are unchanged in size."""
    entry = standard_set(name)
    folder = set_path(name, root)
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        sizes = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    images = _image_dir(folder, entry)
    return len(sizes) == entry.images and all((images / n).is_file() and (images / n).stat().st_size == s for n, s in sizes.items())


def check_images(name: str, images: list[Path]) -> str | None:
    """Why ``images`` are not the set ``name`` (one phrase), or None when they are."""
    entry = standard_set(name)
    if len(images) != entry.images:
        return f"{len(images)} images where {entry.folder} has {entry.images}"
    digests = []
    for path in images:
        try:
            digests.append(pixel_digest(path))
        except TinySRError as exc:
            return f"{path.name} does not decode ({exc})"
    expected = known_digests(name)
    if expected is not None and sorted(digests) != expected:
        known = set(expected)
        wrong = sum(1 for d in digests if d not in known)
        return f"{wrong} of its {len(images)} images are not {entry.folder}'s (their pixels' SHA-256 differ)"
    return None


def _extract(archive: Path, entry: StandardSet, into: Path) -> None:
    """The archive's members that match the set's pattern, as ``into/NAME`` (PNG)."""
    pattern = re.compile(entry.members)
    into.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    if not info.is_dir() and pattern.fullmatch(info.filename):
                        (into / Path(info.filename).name).write_bytes(z.read(info))
        else:
            with tarfile.open(archive) as t:
                for member in t:
                    if member.isfile() and pattern.fullmatch(member.name):
                        (into / Path(member.name).name).write_bytes(t.extractfile(member).read())
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise _Corrupt(f"the archive does not unpack ({type(exc).__name__}: {exc})") from exc


class _Corrupt(Exception):
    pass


def _download(url: str, downloads: Path) -> Path:
    try:
        import pooch
    except ImportError as exc:  # a dependency: only a broken install lacks it
        raise TinySRError("tinysr data needs pooch: pip install pooch") from exc
    pooch.get_logger().setLevel(logging.WARNING)  # its hash hints name a file checked here by content
    fname = Path(url.split("?")[0]).name
    fetcher = pooch.create(path=downloads, base_url="", registry={fname: None}, urls={fname: url}, retry_if_failed=2)
    try:
        return Path(fetcher.fetch(fname, progressbar=sys.stderr.isatty()))  # a bar redraws with \r: terminals only
    except Exception as exc:  # requests' and pooch's errors: a network failure, not a bug
        raise TinySRError(f"{url}: download failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


def _unpack_checked(name: str, archive: Path, partial: Path) -> list[Path]:
    """The set's images taken out of ``archive`` into the fresh folder ``partial``, checked;
    :class:`_Corrupt` where the archive does not unpack or they are not the set."""
    images_dir = _image_dir(partial, standard_set(name))
    shutil.rmtree(partial, ignore_errors=True)
    _extract(archive, standard_set(name), images_dir)
    images = sorted(images_dir.iterdir())
    problem = check_images(name, images)
    if problem is not None:
        raise _Corrupt(problem)
    return images


def _mark(folder: Path, images: list[Path]) -> None:
    sizes = {p.name: p.stat().st_size for p in images}
    atomic_write(folder / MARKER, lambda tmp: Path(tmp).write_text(json.dumps(sizes, indent=1, sort_keys=True)))


def get(name: str, root: str | Path | None = None, archive: str | Path | None = None, log=print) -> Path:
    """Fetch and check the standard set ``name`` into ``root`` (default the cache); returns its
    folder. ``archive``: a copy of the set's archive already on this machine, used instead of
    downloading it (it is checked the same way, and kept)."""
    entry = standard_set(name)
    root = Path(root or datasets_dir())
    folder = root / entry.folder
    if is_present(name, root):
        log(f"{entry.name}: present in {folder}")
        return folder
    if entry.url is None and archive is None:
        images = _image_dir(folder, entry)
        placed = sorted(p for p in images.iterdir() if p.is_file()) if images.is_dir() else []
        if not placed:
            raise TinySRError(f"{entry.name}: {entry.terms} ({images})")
        problem = check_images(name, placed)
        if problem is not None:
            raise TinySRError(f"{images}: {problem}")
        _mark(folder, placed)
        log(f"{entry.name}: {len(placed)} images checked, in {folder}")
        return folder
    if folder.exists() and not (folder / MARKER).is_file() and any(folder.iterdir()):
        raise TinySRError(f"{folder}: exists and was not written by tinysr data; move it away to download {entry.name}")
    if archive is not None and not Path(archive).is_file():
        raise TinySRError(f"--archive {archive}: no such file")
    downloads = root / "downloads"
    partial = root / f".{entry.folder}.partial"
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        source = Path(archive) if archive is not None else _download(entry.url, downloads)
        try:
            images = _unpack_checked(name, source, partial)
            break
        except _Corrupt as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if archive is not None:  # the user's file: theirs to keep, but not a set
                raise TinySRError(f"--archive {archive}: not {entry.folder} ({exc})") from None
            source.unlink(missing_ok=True)  # never used again: the next attempt downloads it anew
            if attempt == DOWNLOAD_ATTEMPTS:
                raise TinySRError(f"{entry.url}: {entry.name} failed its check twice ({exc}); nothing was kept") from None
            log(f"{entry.name}: the downloaded archive failed its check ({exc}); downloading it again")
    _mark(partial, images)
    shutil.rmtree(folder, ignore_errors=True)  # a stale, unmarked or changed copy of ours
    partial.rename(folder)
    log(f"{entry.name}: {len(images)} images checked, in {folder}")
    return folder


def resolve(folder: str | Path) -> Path:
    """``folder`` as a path: a standard set's name (``set5``) means its folder in the cache,
    which must have been fetched; anything else is a path as given."""
    path = Path(folder)
    if path.exists() or str(folder).lower() not in REGISTRY:
        return path
    if not is_present(str(folder)):
        raise TinySRError(f"{folder}: the standard set is not downloaded yet (tinysr data get {str(folder).lower()})")
    return set_path(str(folder))

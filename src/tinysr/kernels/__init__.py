"""Native CPU kernels, compiled on first use with the machine's C++ compiler and cached: the
bit-packed binary conv (SPEC §9), the Haar transform at inference (SPEC §5.5) and SSIM's Gaussian
filter (SPEC §1).

:func:`native` returns them as a :class:`NativeKernels`, or ``None`` when they cannot be built (no
compiler): callers then use their PyTorch or numpy path, which computes the same numbers.

The sources are plain C++ behind a C interface, with no PyTorch headers: parsing those and
instantiating pybind11's templates was most of a build's time. Each source compiles in its own
process, at once, and :class:`NativeKernels` calls the library through ``ctypes``: it checks the
tensors, allocates the outputs and passes pointers and PyTorch's thread count. The library is
cached in ``$TINYSR_CACHE/kernels`` (default ``~/.cache/tinysr/kernels``), named by a digest of
the sources, flags and compiler, so an edit rebuilds and a cached build is never stale; it is
written to a private folder and moved into place whole, so processes building at once, or one
killed mid-build, leave no half-written library. On a terminal the build is announced, as it takes
seconds.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path

import torch

from ..files import default_cache_dir

SOURCES = ("binary_conv.cpp", "haar.cpp", "ssim.cpp")
# -ffp-contract=off: no fused multiply-adds, so the kernels round as PyTorch and numpy do (the
# binary conv's epilogue, SSIM's filter sums) and equal them bit for bit.
FLAGS = ("-O3", "-fopenmp", "-ffp-contract=off", "-fPIC", "-std=c++17")


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def _sources_digest() -> str:
    """A digest of the sources, the files they include (at any depth), the flags and the compiler."""
    digest = hashlib.sha256(" ".join((_compiler(), *FLAGS, platform.machine())).encode())
    folder = Path(__file__).parent
    pending, seen = list(SOURCES), set()
    while pending:  # the sources, the files they include, the files those include, ...
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        text = (folder / name).read_text()
        digest.update(name.encode() + text.encode())
        pending += re.findall(r'^#include "([^"]+)"', text, flags=re.MULTILINE)
    return digest.hexdigest()[:16]


def _library_path() -> Path:
    suffix = sysconfig.get_config_var("SHLIB_SUFFIX") or ".so"
    return default_cache_dir() / "kernels" / f"tinysr_kernels-{_sources_digest()}{suffix}"


def _compile(target: Path) -> None:
    """Build the library at ``target``: every source at once in its own compiler process, then one
    link, in a private folder beside ``target``, moved into place whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(__file__).parent
    work = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    try:
        jobs = [
            subprocess.Popen(
                [_compiler(), *FLAGS, "-c", str(folder / name), "-o", str(work / f"{Path(name).stem}.o")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in SOURCES
        ]
        errors = [job.communicate()[1] for job in jobs]  # every job ends before the folder goes
        for job, text in zip(jobs, errors):
            if job.returncode != 0:
                raise RuntimeError(f"{_compiler()} failed: {text.strip()}")
        library = work / target.name
        objects = [str(work / f"{Path(name).stem}.o") for name in SOURCES]
        link = subprocess.run([_compiler(), "-shared", "-fopenmp", *objects, "-o", str(library)], capture_output=True, text=True)
        if link.returncode != 0:
            raise RuntimeError(f"{_compiler()} failed to link: {link.stderr.strip()}")
        os.replace(library, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@functools.cache
def native() -> NativeKernels | None:
    """The compiled kernels, or ``None`` (with a warning saying why) if they cannot be built."""
    if os.environ.get("TINYSR_NO_NATIVE"):
        return None
    try:
        library = _library_path()
        if not library.is_file():
            if shutil.which(_compiler()) is None:
                raise RuntimeError(f"no C++ compiler ({_compiler()})")
            if sys.stderr.isatty():
                print("tinysr: compiling the native kernels (once per machine and version) ...", file=sys.stderr, flush=True)
            _compile(library)
        return _load(library)
    except Exception as exc:  # any build failure: fall back, but say so once
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"tinysr: native kernels unavailable, using the PyTorch and numpy paths ({first})", stacklevel=2)
        return None


def _load(library: Path) -> NativeKernels:
    return NativeKernels(ctypes.CDLL(str(library)))


# Path codes shared with binary_conv.cpp.
PATHS = {"auto": 0, "portable": 1, "avx2": 2, "avx512": 3, "avx2_pixels": 4}
_PATH_ERRORS = {-1: "this CPU has no AVX-512 VPOPCNTDQ", -2: "this CPU has no AVX2", -3: "unknown kernel path"}
# Stage codes shared with binary_conv.cpp (its Stage enum): a per-channel shift, PReLU, the
# residual add, a per-channel scale.
STAGE_CODES = {"add": 1, "prelu": 2, "residual": 3, "mul": 4}

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


def _float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a contiguous float32 tensor, itself where it is one (the common case: a call's
    overhead is paid on every layer of every forward pass)."""
    return t if t.dtype == torch.float32 and t.is_contiguous() else t.detach().to(torch.float32).contiguous()


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _float_map(x: torch.Tensor, what: str) -> torch.Tensor:
    _check(x.dim() == 4 and x.dtype == torch.float32 and x.device.type == "cpu", f"{what}: a 4-D float32 CPU tensor is needed")
    return x.contiguous(memory_format=torch.channels_last)


class NativeKernels:
    """The compiled library's functions as the layers call them: each method checks its tensors,
    allocates the outputs (channels_last, as the kernels write them) and passes pointers and the
    number of threads PyTorch uses. The arguments must outlive the call, which they do: the C
    functions return before the method does."""

    def __init__(self, library: ctypes.CDLL):
        self._lib = library
        library.tinysr_cpu_paths.restype = _INT
        library.tinysr_cpu_paths.argtypes = []
        library.tinysr_pack_activations.restype = _I64
        library.tinysr_pack_activations.argtypes = [_P, _P, _P, _I64, _I64, _I64, _I64, _INT]
        library.tinysr_packed_conv2d.restype = _I64
        library.tinysr_packed_conv2d.argtypes = [_P, _P, _P, _P, _P, _I64, _I64, _P, _P, _P, _P, _P, _P, _INT]
        library.tinysr_haar_dwt.restype = None
        library.tinysr_haar_dwt.argtypes = [_P, _P, _P, _I64, _I64, _I64, _I64, _INT]
        library.tinysr_haar_idwt.restype = None
        library.tinysr_haar_idwt.argtypes = [_P, _P, _P, _I64, _I64, _I64, _I64, _INT]
        library.tinysr_ssim_filter.restype = None
        library.tinysr_ssim_filter.argtypes = [_P, _P, _P, _I64, _I64, _I64, _I64, _INT]

    def available_paths(self) -> list[str]:
        """The kernel's paths this CPU runs (portable always)."""
        bits = self._lib.tinysr_cpu_paths()
        return ["portable"] + (["avx2", "avx2_pixels"] if bits & 1 else []) + (["avx512"] if bits & 2 else [])

    @staticmethod
    def _ran(code: int, what: str) -> None:
        if code < 0:
            raise RuntimeError(f"{what}: {_PATH_ERRORS.get(code, f'error {code}')}")

    def pack_activations(self, x: torch.Tensor, thresholds: torch.Tensor, path: int) -> torch.Tensor:
        """Binarise x (N, C, H, W) against per-channel thresholds and pack 64 channels per word:
        (N, H, W, ceil(C/64)) int64 words, bit = 1 for sign -1."""
        nhwc = _float_map(x, "pack_activations")
        n, c, h, w = x.shape
        _check(thresholds.numel() == c, "pack_activations: need one threshold per input channel")
        thr = _float32(thresholds)
        words = torch.empty(n, h, w, -(-c // 64), dtype=torch.int64)
        code = self._lib.tinysr_pack_activations(
            nhwc.data_ptr(), thr.data_ptr(), words.data_ptr(), n * h, w, c, path, torch.get_num_threads()
        )
        self._ran(code, "pack_activations")
        return words

    def packed_conv2d(
        self,
        words: torch.Tensor,
        in_channels: int,
        weight_words: torch.Tensor,
        out_channels: int,
        alpha: torch.Tensor,
        bias: torch.Tensor,
        kernel: list[int],
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        path: int,
        stage_codes: list[int],
        stage_vectors: list[torch.Tensor],
        residual: torch.Tensor,
        next_thresholds: torch.Tensor,
    ) -> torch.Tensor:
        """The binary conv on packed activations (N, H, W, Cw) and packed weights (KH*KW, Cw, Opad)
        (binary_conv.cpp's ``tinysr_packed_conv2d``): an (N, O, OH, OW) channels_last float tensor,
        or with ``next_thresholds`` non-empty the next binary conv's packed input (N, OH, OW,
        ceil(O/64)). An empty ``residual`` or ``next_thresholds`` means none."""
        c, o = in_channels, out_channels
        _check(words.dim() == 4 and words.dtype == torch.int64 and words.is_contiguous(), "packed_conv2d: bad activation words")
        _check(
            weight_words.dim() == 3 and weight_words.dtype == torch.int64 and weight_words.is_contiguous(),
            "packed_conv2d: bad weight words",
        )
        n, h, w, cw = words.shape
        kh, kw = kernel
        opad = weight_words.shape[2]
        _check(weight_words.shape[0] == kh * kw, "packed_conv2d: weight words do not match the kernel size")
        _check(weight_words.shape[1] == cw and cw == -(-c // 64), "packed_conv2d: channel words differ")
        _check(opad >= o and opad % 8 == 0, "packed_conv2d: output channels must be padded to a multiple of 8")
        _check(alpha.numel() == o and bias.numel() == o, "packed_conv2d: need one scale and bias per output channel")
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        _check(oh > 0 and ow > 0, "packed_conv2d: input smaller than the kernel")
        a, b = _float32(alpha), _float32(bias)
        emit_words = next_thresholds.numel() > 0
        _check(not emit_words or next_thresholds.numel() == o, "packed_conv2d: need one next threshold per output channel")
        _check(len(stage_codes) == len(stage_vectors), "packed_conv2d: one operand per stage")
        keep, pointers, residual_cl = [], [], None  # float32 contiguous operands, alive until the call returns
        for code, vector in zip(stage_codes, stage_vectors):
            _check(code in STAGE_CODES.values(), f"packed_conv2d: unknown stage {code}")
            if code == STAGE_CODES["residual"]:
                _check(
                    residual.dim() == 4 and tuple(residual.shape) == (n, o, oh, ow) and residual.dtype == torch.float32,
                    "packed_conv2d: the residual must be a float32 tensor of the output's shape",
                )
                residual_cl = residual.detach().contiguous(memory_format=torch.channels_last)
                pointers.append(None)
            else:
                _check(vector.numel() == o, "packed_conv2d: a stage needs one value per output channel")
                keep.append(_float32(vector))
                pointers.append(keep[-1].data_ptr())
        next_thr = _float32(next_thresholds) if emit_words else None
        if emit_words:
            out = torch.empty(n, oh, ow, -(-o // 64), dtype=torch.int64)
        else:
            out = torch.empty(n, oh, ow, o, dtype=torch.float32).permute(0, 3, 1, 2)  # a channels_last view
        geometry = (ctypes.c_int64 * 17)(n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cw, opad)  # binary_conv.cpp's Geometry
        codes = (ctypes.c_int64 * max(len(stage_codes), 1))(*stage_codes)
        code = self._lib.tinysr_packed_conv2d(
            geometry,
            words.data_ptr(),
            weight_words.data_ptr(),
            a.data_ptr(),
            b.data_ptr(),
            path,
            len(stage_codes),
            codes,
            (_P * max(len(pointers), 1))(*pointers),
            None if residual_cl is None else residual_cl.data_ptr(),
            None if next_thr is None else next_thr.data_ptr(),
            None if emit_words else out.data_ptr(),
            out.data_ptr() if emit_words else None,
            torch.get_num_threads(),
        )
        self._ran(code, "packed_conv2d")
        return out

    def haar_dwt(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, H, W), H and W even -> LL (N, C, H/2, W/2) and high (N, 3C, H/2, W/2) = [LH, HL,
        HH], both channels_last (haar.cpp)."""
        nhwc = _float_map(x, "haar_dwt")
        n, c, h, w = x.shape
        _check(h % 2 == 0 and w % 2 == 0, "haar_dwt: height and width must be even (pad first)")
        ll = torch.empty(n, h // 2, w // 2, c)
        high = torch.empty(n, h // 2, w // 2, 3 * c)
        self._lib.tinysr_haar_dwt(nhwc.data_ptr(), ll.data_ptr(), high.data_ptr(), n, c, h, w, torch.get_num_threads())
        return ll.permute(0, 3, 1, 2), high.permute(0, 3, 1, 2)

    def haar_idwt(self, ll: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """LL (N, C, H2, W2) and high (N, 3C, H2, W2) -> x (N, C, 2 H2, 2 W2), channels_last (haar.cpp)."""
        low, bands = _float_map(ll, "haar_idwt"), _float_map(high, "haar_idwt")
        n, c, h2, w2 = ll.shape
        _check(tuple(high.shape) == (n, 3 * c, h2, w2), "haar_idwt: high must have 3x the channels of LL and its size")
        x = torch.empty(n, 2 * h2, 2 * w2, c)
        self._lib.tinysr_haar_idwt(low.data_ptr(), bands.data_ptr(), x.data_ptr(), n, c, h2, w2, torch.get_num_threads())
        return x.permute(0, 3, 1, 2)

    def ssim_filter(self, maps: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """maps (M, H, W) float64, window g (n) float64 -> their 'valid' separable correlation (M,
        H - n + 1, W - n + 1) (ssim.cpp)."""
        _check(
            maps.dim() == 3 and maps.dtype == torch.float64 and maps.device.type == "cpu",
            "ssim_filter: maps must be a 3-D float64 CPU tensor",
        )
        _check(g.dim() == 1 and g.dtype == torch.float64, "ssim_filter: the window must be a 1-D float64 tensor")
        m, h, w = maps.shape
        k = g.numel()
        _check(k >= 1 and h >= k and w >= k, "ssim_filter: the maps are smaller than the window")
        x, window = maps.contiguous(), g.contiguous()
        out = torch.empty(m, h - k + 1, w - k + 1, dtype=torch.float64)
        self._lib.tinysr_ssim_filter(x.data_ptr(), window.data_ptr(), out.data_ptr(), m, h, w, k, torch.get_num_threads())
        return out


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

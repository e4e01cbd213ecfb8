"""The arithmetic ceiling of the 1-bit kernel on this CPU, in counts (SPEC §9).

How much faster than float a binary conv can be is set by two instruction rates of the CPU:

* **binary**: the packed kernel's inner step, one 64-bit activation word against the words of a
  vector of output channels, is 3 instructions on the AVX-512 path (xor, ``vpopcntq``, add: 8
  channels x 64 = 512 binary MACs) and 6 on the AVX2 path (2 xor, 2 ``vpshufb`` nibble lookups,
  2 byte adds on 256 bits: 256 binary MACs, plus one widening of the byte counters per 31 words;
  the kernel counts 8 channels' 32-bit half words per vector, this loop 4 channels' 64-bit words,
  the same instructions per MAC). Where the kernel outruns this loop (Zen 4), the loop is
  latency-bound there and the port count is the bound to read;
* **float**: one fused multiply-add is 16 float32 MACs (AVX-512) or 8 (AVX2).

Each is timed here in a loop of independent chains on operands in registers or L1 (no memory
traffic: the best the core can issue), and set beside the measured float conv2d (oneDNN, channels_last) and the
packed conv of ``benchmarks/binary_conv.py``'s layer (64->64 3x3 on 1x64x180x320): the ceiling
ratio is the binary peak over the float conv's achieved rate, and each measured rate is
given as a fraction of its peak. Bytes moved: the packed layer also reads its float input
once to binarize it (256 B per pixel at 64 channels), timed alone as ``pack``.

    python benchmarks/kernel_ceiling.py [--threads 1]

Its loops build with PyTorch's ``load_inline``, which needs ninja (``pip install ninja``; tinysr's
own kernels do not).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from torch.utils.cpp_extension import load_inline

import tinysr
from binary_conv import best_times
from tinysr.kernels import PATHS, available_paths, cpu_model
from tinysr.nn.packed import PackedBinaryConv2d

# Loops of independent accumulator chains, enough that latency never limits and each runs at
# the issue rate of its instructions; `rounds` repetitions of each loop's body.
SOURCE = r"""
#include <torch/extension.h>
#include <immintrin.h>
#include <chrono>
#include <cstdint>

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
volatile uint64_t sink;
}

// The kernel's inner step on operands in L1, as in the kernel: activation words broadcast from
// memory, weight vectors loaded (the xor's memory operand), so only the ALU ports can limit it.
// Each round: 2 activation words x 8 weight vectors = 16 steps of xor, popcount, add.
__attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))
double binary_avx512(int64_t rounds, int64_t seed) {
  alignas(64) uint64_t act[16], weights[64];
  for (int i = 0; i < 16; ++i) act[i] = 0x9E3779B97F4A7C15ULL * uint64_t(seed + i);
  for (int i = 0; i < 64; ++i) weights[i] = 0x7F4A7C159E3779B9ULL * uint64_t(seed + i);
  __m512i acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_si512();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < rounds; ++r) {
    const __m512i a0 = _mm512_set1_epi64(int64_t(act[r & 15])), a1 = _mm512_set1_epi64(int64_t(act[(r + 1) & 15]));
#pragma GCC unroll 8
    for (int v = 0; v < 8; ++v) {
      const __m512i w = _mm512_load_si512(weights + 8 * v);
      acc[v] = _mm512_add_epi64(acc[v], _mm512_popcnt_epi64(_mm512_xor_si512(a0, w)));
      acc[v + 8] = _mm512_add_epi64(acc[v + 8], _mm512_popcnt_epi64(_mm512_xor_si512(a1, w)));
    }
  }
  const double s = seconds_since(t0);
  uint64_t total = 0;
  for (int i = 0; i < 16; ++i) total += _mm512_reduce_add_epi64(acc[i]);
  sink = total;
  return s;
}

// AVX2, as the kernel's nibble split: each round 1 activation word (its low and high nibbles) x 4
// weight vectors = 4 steps of 2 xor, 2 lookups, 2 byte adds; the byte counters are widened
// every 31 rounds. 4 accumulators, as AVX2's 16 vector registers allow beside the operands.
__attribute__((target("avx2")))
double binary_avx2(int64_t rounds, int64_t seed) {
  const uint64_t low = 0x0f0f0f0f0f0f0f0fULL;
  alignas(32) uint64_t act[32], weights[32];
  for (int i = 0; i < 16; ++i) {
    const uint64_t a = 0x9E3779B97F4A7C15ULL * uint64_t(seed + i);
    act[2 * i] = a & low;
    act[2 * i + 1] = (a >> 4) & low;
  }
  for (int i = 0; i < 32; ++i) weights[i] = (0x7F4A7C159E3779B9ULL * uint64_t(seed + i)) & low;
  const __m256i lookup = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                          0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  __m256i bytes[4];
  alignas(32) uint64_t total[16] = {};
  for (int i = 0; i < 4; ++i) bytes[i] = _mm256_setzero_si256();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < rounds; ++r) {
    const __m256i al = _mm256_set1_epi64x(int64_t(act[2 * (r & 15)])), ah = _mm256_set1_epi64x(int64_t(act[2 * (r & 15) + 1]));
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      const __m256i lo = _mm256_xor_si256(al, _mm256_load_si256(reinterpret_cast<const __m256i*>(weights + 4 * v)));
      const __m256i hi = _mm256_xor_si256(ah, _mm256_load_si256(reinterpret_cast<const __m256i*>(weights + 16 + 4 * v)));
      bytes[v] = _mm256_add_epi8(bytes[v], _mm256_shuffle_epi8(lookup, lo));
      bytes[v] = _mm256_add_epi8(bytes[v], _mm256_shuffle_epi8(lookup, hi));
    }
    if (r % 31 == 30) {
      for (int v = 0; v < 4; ++v) {
        __m256i* t = reinterpret_cast<__m256i*>(total + 4 * v);
        _mm256_store_si256(t, _mm256_add_epi64(_mm256_load_si256(t), _mm256_sad_epu8(bytes[v], _mm256_setzero_si256())));
        bytes[v] = _mm256_setzero_si256();
      }
    }
  }
  const double s = seconds_since(t0);
  uint64_t sum = 0;
  for (uint64_t t : total) sum += t;
  sink = sum;
  return s;
}

// 16 independent fused multiply-adds per round (registers only).
__attribute__((target("avx512f")))
double float_avx512(int64_t rounds, int64_t seed) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(1.0f + 1e-3f * (i + seed));
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 16
    for (int v = 0; v < 16; ++v) acc[v] = _mm512_fmadd_ps(acc[v], m, c);
  }
  const double s = seconds_since(t0);
  float total = 0;
  for (int i = 0; i < 16; ++i) total += _mm512_reduce_add_ps(acc[i]);
  sink = uint64_t(total);
  return s;
}

// 12 chains: with the two operands they fill AVX2's 16 vector registers.
__attribute__((target("avx2,fma")))
double float_avx2(int64_t rounds, int64_t seed) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(1.0f + 1e-3f * (i + seed));
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 12
    for (int v = 0; v < 12; ++v) acc[v] = _mm256_fmadd_ps(acc[v], m, c);
  }
  const double s = seconds_since(t0);
  alignas(32) float lanes[8];
  float total = 0;
  for (int i = 0; i < 12; ++i) {
    _mm256_store_ps(lanes, acc[i]);
    for (float f : lanes) total += f;
  }
  sink = uint64_t(total);
  return s;
}
"""

FUNCTIONS = ["binary_avx512", "binary_avx2", "float_avx512", "float_avx2"]
# MACs per round of each loop: 16 steps of 512 binary MACs (AVX-512) or 4 of 256 (AVX2); 16 FMAs
# of 16 float MACs or 12 of 8.
MACS_PER_ROUND = {"binary_avx512": 16 * 512, "binary_avx2": 4 * 256, "float_avx512": 16 * 16, "float_avx2": 12 * 8}


def peak_rate(module, name: str, rounds: int, repeat: int) -> float:
    """Best MACs per ns of one loop over ``repeat`` runs."""
    fn = getattr(module, name)
    fn(rounds // 10, 1)  # warm-up: let the core reach its vector clock
    return max(MACS_PER_ROUND[name] * rounds / (fn(rounds, 1) * 1e9) for _ in range(repeat))


def best_seconds(fn, repeat: int) -> float:
    return best_times({"fn": fn}, repeat)["fn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20_000_000, help="iterations of each peak loop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tinysr.retain_freed_memory()
    module = load_inline("tinysr_kernel_ceiling", cpp_sources=SOURCE, functions=FUNCTIONS, extra_cflags=["-O3"])
    paths = [p for p in ("avx512", "avx2") if p in available_paths()]
    if not paths:
        raise SystemExit("kernel_ceiling: the native kernel is unavailable or this CPU has neither AVX2 nor AVX-512")

    conv = PackedBinaryConv2d(64, 64, (3, 3), padding=(1, 1))
    conv.weight_words.random_()
    x = torch.randn(1, 64, 180, 320).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(64, 64, 3, 3).contiguous(memory_format=torch.channels_last)
    layer_macs = 64 * 64 * 9 * 180 * 320
    native = conv.native_module(x)
    with torch.no_grad():
        float_conv = layer_macs / (best_seconds(lambda: F.conv2d(x, weight, None, 1, 1), args.repeat) * 1e9)

    print(
        f"torch {torch.__version__}, {cpu_model()}, ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}, "
        "1 thread; rates in MACs per ns (= MACs per cycle x clock in GHz)\n"
    )
    print(
        "| path | binary peak | float FMA peak | ceiling (peak / peak) | float conv2d | ceiling vs float conv2d "
        "| packed conv | of binary peak | pack (ms) | packed layer vs float conv2d |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        binary = peak_rate(module, f"binary_{path}", args.rounds, args.repeat)
        fma = peak_rate(module, f"float_{path}", args.rounds, args.repeat)
        code = PATHS[path]
        words = native.pack_activations(x, conv.threshold, code)
        pack_s = best_seconds(lambda code=code: native.pack_activations(x, conv.threshold, code), args.repeat)
        conv_s = best_seconds(
            lambda code=code, words=words: native.packed_conv2d(
                words, 64, conv.weight_words, 64, conv.alpha, conv.bias, [3, 3], [1, 1], [1, 1], [1, 1], code, [], [], torch.empty(0)
            ),
            args.repeat,
        )
        packed = layer_macs / (conv_s * 1e9)
        layer = (pack_s + conv_s) * 1e9
        print(
            f"| {path} | {binary:.0f} | {fma:.1f} | {binary / fma:.1f}x | {float_conv:.1f} | {binary / float_conv:.1f}x "
            f"| {packed:.0f} | {packed / binary:.0%} | {pack_s * 1e3:.2f} | {layer_macs / layer / float_conv:.1f}x |"
        )
    print("\nfloat conv2d runs at the ISA oneDNN picks (ONEDNN_MAX_CPU_ISA limits it).")


if __name__ == "__main__":
    main()

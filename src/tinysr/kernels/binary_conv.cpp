// Bit-packed binary convolution for CPU inference (SPEC §9).
//
// A binary conv computes, for each output pixel and output channel o,
//     y = alpha[o] * sum_{valid taps} sum_c a_c * w_c + bias[o],   a, w in {-1, +1},
// where a = sign(x - threshold) (sign(0) = +1) and taps falling in the zero padding contribute 0
// (the float model pads *after* binarising). With a, w packed 64 channels per word (bit = 1 for -1)
//     sum_c a_c * w_c = C - 2 * popcount(a XOR w)
// exactly, when the padding bits beyond C are 0 in both words. Summed over the valid taps only,
// that is the float model's integer result bit for bit; no border correction is needed.
//
// Layouts: activations NHWC (a channels_last tensor), packed to (N, H, W, Cw) words; weights
// (KH, KW, Cw, Opad) words, so the words of consecutive output channels are contiguous and one
// vector load feeds 8 output channels (AVX-512: 64-bit words; AVX2: the 32-bit half words it
// re-splits them into, see below); output NHWC floats.
//
// Paths, chosen at run time (or forced): AVX-512 with VPOPCNTDQ, AVX2 (popcount by nibble lookup,
// Mula et al.), portable C++. Threads: OpenMP over output rows, as many as the caller asks (PyTorch's).
// Plain C++ behind a C interface (no PyTorch headers, which would be most of a build's time): the
// caller (kernels/__init__.py) checks the tensors, allocates the outputs and passes pointers.
// Built with -ffp-contract=off so the epilogue rounds like PyTorch: float(dot) * alpha, then + bias.
// Optional stages (per-channel scale or shift, PReLU, residual add) then run on each output row in
// cache.

#include <immintrin.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

// Functions using AVX-512 are compiled for it alone and only called after a run-time CPU check.
#define TINYSR_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq")))

namespace {

// kAVX2Pixels: AVX2 with pixels in the vector lanes (binary_conv_avx2_pixels.inc); kAVX2 the one with
// output channels in the lanes.
enum Path : int64_t { kAuto = 0, kPortable = 1, kAVX2 = 2, kAVX512 = 3, kAVX2Pixels = 4 };

struct Geometry {
  int64_t N, C, H, W, O, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, Cw, Opad;
};

// TINYSR_MAX_CPU_ISA=avx2 (or portable) hides the paths above it, as ONEDNN_MAX_CPU_ISA does for
// oneDNN: an AVX-512 machine then runs, and chooses among, what an AVX2-only one would.
// The highest path allowed: 1 portable, 2 AVX2, 3 AVX-512 (unset, or any other value); read once,
// as the CPU's features are, since every conv call resolves its path.
int isa_cap() {
  static const int cap = [] {
    const char* value = std::getenv("TINYSR_MAX_CPU_ISA");
    std::string name(value == nullptr ? "" : value);
    for (char& ch : name) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    return name == "portable" ? 1 : name == "avx2" ? 2 : 3;
  }();
  return cap;
}

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return isa_cap() >= 3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq");
}

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return isa_cap() >= 2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

// Whether input index i of a tap lies inside the image (taps in the zero padding contribute 0).
inline bool tap_inside(int64_t i, int64_t size) { return i >= 0 && i < size; }

// ---------------------------------------------------------------- packing: bit = !(x >= thr)

// One pixel's C floats xp -> its Cw words (bit c % 64 of word c / 64 set where !(x >= thr)).
void pack_pixel_portable(const float* xp, const float* thr, uint64_t* out, int64_t C, int64_t Cw) {
  for (int64_t w = 0; w < Cw; ++w) {
    uint64_t word = 0;
    const int64_t end = std::min(C, (w + 1) * 64);
    for (int64_t c = w * 64; c < end; ++c)
      if (!(xp[c] >= thr[c])) word |= uint64_t{1} << (c - w * 64);
    out[w] = word;
  }
}

__attribute__((target("avx2")))
void pack_pixel_avx2(const float* xp, const float* thr, uint64_t* out, int64_t C, int64_t Cw) {
  for (int64_t w = 0; w < Cw; ++w) {
    uint64_t word = 0;
    const int64_t end = std::min(C, (w + 1) * 64);
    int64_t c = w * 64;
    for (; c + 8 <= end; c += 8) {
      __m256 lt = _mm256_cmp_ps(_mm256_loadu_ps(xp + c), _mm256_loadu_ps(thr + c), _CMP_NGE_UQ);
      word |= uint64_t(uint32_t(_mm256_movemask_ps(lt))) << (c - w * 64);
    }
    for (; c < end; ++c)
      if (!(xp[c] >= thr[c])) word |= uint64_t{1} << (c - w * 64);
    out[w] = word;
  }
}

TINYSR_AVX512
void pack_pixel_avx512(const float* xp, const float* thr, uint64_t* out, int64_t C, int64_t Cw) {
  const int64_t full = C / 64;  // words whose 64 channels all exist: four unmasked compares each
  for (int64_t w = 0; w < full; ++w) {
    const float* xc = xp + w * 64;
    const float* tc = thr + w * 64;
    uint64_t word = 0;
    for (int k = 0; k < 4; ++k)
      word |= uint64_t(_mm512_cmp_ps_mask(_mm512_loadu_ps(xc + 16 * k), _mm512_loadu_ps(tc + 16 * k), _CMP_NGE_UQ)) << (16 * k);
    out[w] = word;
  }
  if (full < Cw) {
    uint64_t word = 0;
    for (int64_t c = full * 64; c < C; c += 16) {
      const __mmask16 live = C - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (C - c)) - 1);
      __m512 v = _mm512_maskz_loadu_ps(live, xp + c);
      __m512 t = _mm512_maskz_loadu_ps(live, thr + c);
      word |= uint64_t(_mm512_mask_cmp_ps_mask(live, v, t, _CMP_NGE_UQ)) << (c - full * 64);
    }
    out[full] = word;
  }
}

// `pixels` consecutive pixels of C floats each -> their words, on one path.
void pack_pixels(int64_t path, const float* x, const float* thr, uint64_t* out, int64_t pixels, int64_t C, int64_t Cw) {
  auto* pack_pixel = path == kAVX512                        ? pack_pixel_avx512
                    : path == kAVX2 || path == kAVX2Pixels ? pack_pixel_avx2
                                                           : pack_pixel_portable;
  for (int64_t p = 0; p < pixels; ++p) pack_pixel(x + p * C, thr, out + p * Cw, C, Cw);
}

// ---------------------------------------------------------------- convolution

// Calls visit(a, w) for each tap of output pixel (oh, ow) that lies inside the image (taps in the
// zero padding contribute 0), a and w pointing at the tap's first activation and weight word;
// returns how many there were.
template <typename Visit>
__attribute__((always_inline)) inline int64_t for_each_valid_tap(const Geometry& g, const uint64_t* act,
                                                                 const uint64_t* wp, int64_t oh, int64_t ow,
                                                                 Visit&& visit) {
  int64_t valid = 0;
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    const int64_t ih = oh * g.SH - g.PH + kh * g.DH;
    if (!tap_inside(ih, g.H)) continue;
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      const int64_t iw = ow * g.SW - g.PW + kw * g.DW;
      if (!tap_inside(iw, g.W)) continue;
      ++valid;
      visit(act + (ih * g.W + iw) * g.Cw, wp + (kh * g.KW + kw) * g.Cw * g.Opad);
    }
  }
  return valid;
}

// One output row (n, oh): out_row[ow * O + o] for every ow and o.
void conv_row_portable(const Geometry& g, const uint64_t* act, const uint64_t* wp, int64_t oh,
                       const float* alpha, const float* bias, float* out_row, int64_t* acc) {
  for (int64_t ow = 0; ow < g.OW; ++ow) {
    std::fill(acc, acc + g.O, 0);
    const int64_t valid = for_each_valid_tap(g, act, wp, oh, ow, [&](const uint64_t* a, const uint64_t* w) {
      for (int64_t cw = 0; cw < g.Cw; ++cw)
        for (int64_t o = 0; o < g.O; ++o) acc[o] += __builtin_popcountll(a[cw] ^ w[cw * g.Opad + o]);
    });
    for (int64_t o = 0; o < g.O; ++o) {
      const float dot = float(valid * g.C - 2 * acc[o]);
      out_row[ow * g.O + o] = dot * alpha[o] + bias[o];
    }
  }
}

// Columns [lo, hi) of output row oh whose taps all fall inside the image (no per-tap checks
// needed); empty for a row whose taps reach into the top or bottom padding.
inline void interior_columns(const Geometry& g, int64_t oh, int64_t* lo, int64_t* hi) {
  const int64_t ih0 = oh * g.SH - g.PH;
  *lo = std::min(g.OW, (g.PW + g.SW - 1) / g.SW);
  const int64_t last = g.W - 1 + g.PW - (g.KW - 1) * g.DW;  // ow * SW - PW + (KW-1) * DW <= W - 1
  *hi = last < 0 ? *lo : std::max(*lo, std::min(g.OW, last / g.SW + 1));
  if (ih0 < 0 || ih0 + (g.KH - 1) * g.DH >= g.H) *hi = *lo;
}

// For a pixel whose taps all lie inside the image: the activation word of each (tap, word) pair,
// in the weights' order, relative to the first word of the pixel's first tap, for activations of
// `per_pixel` words a pixel of which the first `per_tap` are read (AVX-512: Cw and Cw 64-bit
// words; AVX2: 2 * Cw and the used 32-bit half words).
std::vector<int64_t> interior_offsets(const Geometry& g, int64_t per_pixel, int64_t per_tap) {
  std::vector<int64_t> offsets;
  for (int64_t kh = 0; kh < g.KH; ++kh)
    for (int64_t kw = 0; kw < g.KW; ++kw)
      for (int64_t w = 0; w < per_tap; ++w) offsets.push_back((kh * g.DH * g.W + kw * g.DW) * per_pixel + w);
  return offsets;
}

// AVX2 has no vector popcount. Words are counted by nibbles: vpshufb looks up the popcount of
// every 4-bit index in a 16-entry table (Mula et al.). Because XOR commutes with the nibble split,
// (a ^ w) & 0x0f = (a & 0x0f) ^ (w & 0x0f), weights and activations are split into low and high
// nibbles once per call, and per vector of output channels and word the loop is 2 xor, 2 lookups
// and 2 byte adds. The lookups cost per byte, used or not, so the AVX2 path counts in 32-bit
// half words and skips a half word that lies wholly beyond the C channels: 24 channels take one
// half word per tap instead of a 64-bit word, 72 take three instead of four. A vector then holds
// 8 output channels' half words. Byte counters gain at most 8 per half word, so they are widened
// to each lane's int32 sum (vpmaddubsw, vpmaddwd) every kHalfWordsPerFlush half words and per pixel.
constexpr int kHalfWordsPerFlush = 31;  // 31 * 8 = 248 fits a byte
// Output channels per block: at most 4 vectors of 8. The 4 byte counters, the lookup table, the
// two broadcasts and the temporaries then fit AVX2's 16 vector registers; 8 vectors spilled
// counters to the stack on every word and ran slower.
constexpr int kAvx2Vectors = 4;

// Half words of C channels that hold any channel (the rest are zero in every word).
inline int64_t used_half_words(int64_t C) { return (C + 31) / 32; }

// The 32-bit half words of `n` packed 64-bit words (each in place: low half first), nibble-split:
// half word i becomes entries 2i (low nibbles) and 2i + 1 (high nibbles).
std::vector<uint32_t> split_activation_nibbles(const uint64_t* words, int64_t n, int nt) {
  const uint32_t low = 0x0f0f0f0fu;
  const auto* halves = reinterpret_cast<const uint32_t*>(words);  // x86 is little-endian
  std::vector<uint32_t> split(4 * n);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < 2 * n; ++i) {
    split[2 * i] = halves[i] & low;
    split[2 * i + 1] = (halves[i] >> 4) & low;
  }
  return split;
}

// Weight words (taps, Cw, Opad) as nibble-split half words: for pair j = tap * used + h (half
// word h < used), the Opad low-nibble entries, then the Opad high-nibble entries.
std::vector<uint32_t> split_weight_nibbles(const Geometry& g, const uint64_t* wp) {
  const uint32_t low = 0x0f0f0f0fu;
  const int64_t used = used_half_words(g.C), taps = g.KH * g.KW;
  std::vector<uint32_t> split(taps * used * 2 * g.Opad);
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t h = 0; h < used; ++h)
      for (int64_t o = 0; o < g.Opad; ++o) {
        const uint32_t half = uint32_t(wp[(t * g.Cw + h / 2) * g.Opad + o] >> (32 * (h % 2)));
        uint32_t* pair = split.data() + (t * used + h) * 2 * g.Opad;
        pair[o] = half & low;
        pair[g.Opad + o] = (half >> 4) & low;
      }
  return split;
}

// The operands of one AVX2 call: nibble-split half words of activations and weights.
struct Avx2Operands {
  const uint32_t* act_split;  // (N, H, W, 2 * Cw, 2)
  const uint32_t* w_split;    // (taps * used, 2, Opad)
  const int64_t* offsets;     // interior_offsets(g, 2 * Cw, used)
  int64_t used;               // half words per tap
};

// Counters of one block: NV vectors of 8 output channels.
template <int NV>
struct Avx2Counters {
  __m256i bytes[NV];  // per-byte counts since the last flush
  __m256i total[NV];  // 8 x int32 counts per vector
  int pending = 0;

  __attribute__((target("avx2"))) void reset() {
    for (int v = 0; v < NV; ++v) bytes[v] = total[v] = _mm256_setzero_si256();
    pending = 0;
  }
  __attribute__((target("avx2"))) void flush() {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int v = 0; v < NV; ++v) {  // bytes -> pairs (int16) -> each lane's four bytes (int32)
      const __m256i pairs = _mm256_maddubs_epi16(bytes[v], ones8);
      total[v] = _mm256_add_epi32(total[v], _mm256_madd_epi16(pairs, ones16));
      bytes[v] = _mm256_setzero_si256();
    }
    pending = 0;
  }
  // One split activation half word (low, high nibbles) against the block's split weight half words
  // of one pair: low nibbles at w_split, high ones opad entries on.
  __attribute__((target("avx2"), always_inline)) inline void add_half_word(const uint32_t* a_split, const uint32_t* w_split,
                                                                            int64_t opad) {
    const __m256i lookup = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i a_low = _mm256_set1_epi32(int32_t(a_split[0]));
    const __m256i a_high = _mm256_set1_epi32(int32_t(a_split[1]));
    for (int v = 0; v < NV; ++v) {
      const __m256i lo = _mm256_xor_si256(a_low, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w_split + v * 8)));
      const __m256i hi = _mm256_xor_si256(a_high, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w_split + opad + v * 8)));
      bytes[v] = _mm256_add_epi8(bytes[v], _mm256_shuffle_epi8(lookup, lo));
      bytes[v] = _mm256_add_epi8(bytes[v], _mm256_shuffle_epi8(lookup, hi));
    }
    ++pending;
  }
};

// The epilogue of one block: float(valid*C - 2*popcount) * alpha + bias for each live output
// channel, in the float model's order of operations (no fused multiply-add).
template <int NV>
__attribute__((target("avx2")))
void store_block_avx2(const Avx2Counters<NV>& c, int64_t o0, int64_t n_out, const float* alpha,
                      const float* bias, int64_t valid_bits, float* out) {
  const __m256i all = _mm256_set1_epi32(int32_t(valid_bits));
  int v = 0;
  for (; v < NV && (v + 1) * 8 <= n_out; ++v) {
    const __m256i dot = _mm256_sub_epi32(all, _mm256_slli_epi32(c.total[v], 1));
    const __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_loadu_ps(alpha + o0 + v * 8)),
                                   _mm256_loadu_ps(bias + o0 + v * 8));
    _mm256_storeu_ps(out + v * 8, y);
  }
  if (v < NV && v * 8 < n_out) {
    alignas(32) int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), c.total[v]);
    for (int j = 0; v * 8 + j < n_out; ++j) {
      const float dot = float(valid_bits - 2 * int64_t(lanes[j]));
      out[v * 8 + j] = dot * alpha[o0 + v * 8 + j] + bias[o0 + v * 8 + j];
    }
  }
}

// One output row for the block of NV * 8 output channels starting at o0. Pixels whose taps
// all lie inside the image (most of them) run one flat loop over the pairs (tap, half word);
// border pixels skip their outside taps.
template <int NV>
__attribute__((target("avx2")))
void conv_block_avx2(const Geometry& g, const Avx2Operands& op, int64_t oh, int64_t o0,
                     const float* alpha, const float* bias, float* out_row) {
  const int64_t n_out = std::min<int64_t>(NV * 8, g.O - o0);
  const int64_t pairs = g.KH * g.KW * op.used, halves = 2 * g.Cw;
  const int64_t ih0 = oh * g.SH - g.PH;
  int64_t lo, hi;
  interior_columns(g, oh, &lo, &hi);
  Avx2Counters<NV> counters;
  for (int64_t ow = 0; ow < g.OW; ++ow) {
    counters.reset();
    int64_t valid = 0;
    if (ow >= lo && ow < hi) {
      const uint32_t* a = op.act_split + 2 * (ih0 * g.W + ow * g.SW - g.PW) * halves;
      for (int64_t j0 = 0; j0 < pairs; j0 += kHalfWordsPerFlush) {
        const int64_t j1 = std::min(pairs, j0 + kHalfWordsPerFlush);
        for (int64_t j = j0; j < j1; ++j)
          counters.add_half_word(a + 2 * op.offsets[j], op.w_split + 2 * j * g.Opad + o0, g.Opad);
        counters.flush();
      }
      valid = g.KH * g.KW;
    } else {
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        const int64_t ih = ih0 + kh * g.DH;
        if (!tap_inside(ih, g.H)) continue;
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const int64_t iw = ow * g.SW - g.PW + kw * g.DW;
          if (!tap_inside(iw, g.W)) continue;
          ++valid;
          const int64_t at = (ih * g.W + iw) * halves;
          for (int64_t h = 0; h < op.used; ++h) {
            const int64_t j = (kh * g.KW + kw) * op.used + h;
            counters.add_half_word(op.act_split + 2 * (at + h), op.w_split + 2 * j * g.Opad + o0, g.Opad);
            if (counters.pending == kHalfWordsPerFlush) counters.flush();
          }
        }
      }
      counters.flush();
    }
    store_block_avx2(counters, o0, n_out, alpha, bias, valid * g.C, out_row + ow * g.O + o0);
  }
}

// The epilogue for NV vectors of 8 output channels: float(valid*C - 2*popcount) * alpha + bias.
// Two vectors of int64 counts are narrowed into one of 16 int32 (one permute), so the float work
// runs on 16 channels per instruction. valid*C - 2*count is formed in float by one fused
// multiply-add, exact because every term is an integer below 2^24; then * alpha and + bias are
// rounded separately, as the float model rounds them.
template <int NV>
struct Avx512Epilogue {
  static constexpr int kWide = (NV + 1) / 2;  // vectors of 16 channels
  __m512 alpha[kWide], bias[kWide];
  __mmask16 live[kWide];

  TINYSR_AVX512 Avx512Epilogue(const Geometry& g, int64_t o0, const float* a, const float* b) {
    for (int v = 0; v < kWide; ++v) {
      const int64_t left = std::min<int64_t>(g.O - (o0 + v * 16), NV * 8 - v * 16);
      live[v] = left >= 16 ? __mmask16(0xFFFF) : __mmask16(left > 0 ? (1u << left) - 1 : 0);
      alpha[v] = _mm512_maskz_loadu_ps(live[v], a + o0 + v * 16);
      bias[v] = _mm512_maskz_loadu_ps(live[v], b + o0 + v * 16);
    }
  }

  TINYSR_AVX512 void store(float* out, const __m512i* acc, int64_t valid_bits) const {
    const __m512i low_halves = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512 total = _mm512_set1_ps(float(valid_bits));
    const __m512 minus_two = _mm512_set1_ps(-2.0f);
    for (int v = 0; v < kWide; ++v) {
      const __m512i high = 2 * v + 1 < NV ? acc[2 * v + 1] : _mm512_setzero_si512();
      const __m512i counts = _mm512_permutex2var_epi32(acc[2 * v], low_halves, high);
      const __m512 dot = _mm512_fmadd_ps(_mm512_cvtepi32_ps(counts), minus_two, total);
      _mm512_mask_storeu_ps(out + v * 16, live[v], _mm512_add_ps(_mm512_mul_ps(dot, alpha[v]), bias[v]));
    }
  }
};

// One output pixel (any column; taps in the padding skipped).
template <int NV>
TINYSR_AVX512 void pixel_avx512(const Geometry& g, const uint64_t* act, const uint64_t* wp, int64_t oh, int64_t ow,
                                int64_t o0, const Avx512Epilogue<NV>& epi, float* out_row) {
  __m512i acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = _mm512_setzero_si512();
  // The lambda names its target itself: GCC does not pass the enclosing function's on to it.
  const int64_t valid = for_each_valid_tap(g, act, wp + o0, oh, ow, [&](const uint64_t* a, const uint64_t* w) TINYSR_AVX512 {
    for (int64_t cw = 0; cw < g.Cw; ++cw) {
      const __m512i av = _mm512_set1_epi64(int64_t(a[cw]));
      for (int v = 0; v < NV; ++v) {
        __m512i wv = _mm512_loadu_si512(w + cw * g.Opad + v * 8);
        acc[v] = _mm512_add_epi64(acc[v], _mm512_popcnt_epi64(_mm512_xor_si512(av, wv)));
      }
    }
  });
  epi.store(out_row + ow * g.O + o0, acc, valid * g.C);
}

// P horizontally adjacent pixels whose taps all lie inside the image: one flat loop over the
// (tap, channel word) pairs, each weight vector loaded once for the P pixels.
template <int NV, int P>
TINYSR_AVX512 void interior_pixels_avx512(const Geometry& g, const uint64_t* first_tap, const uint64_t* wp,
                                          const int64_t* offsets, int64_t o0, const Avx512Epilogue<NV>& epi,
                                          float* out) {
  __m512i acc[P][NV];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_setzero_si512();
  const int64_t pairs = g.KH * g.KW * g.Cw, step = g.SW * g.Cw;
  const uint64_t* w = wp + o0;
  for (int64_t j = 0; j < pairs; ++j, w += g.Opad) {
    const uint64_t* a = first_tap + offsets[j];
    __m512i av[P];
    for (int p = 0; p < P; ++p) av[p] = _mm512_set1_epi64(int64_t(a[p * step]));
    for (int v = 0; v < NV; ++v) {
      const __m512i wv = _mm512_loadu_si512(w + v * 8);
      for (int p = 0; p < P; ++p) acc[p][v] = _mm512_add_epi64(acc[p][v], _mm512_popcnt_epi64(_mm512_xor_si512(av[p], wv)));
    }
  }
  for (int p = 0; p < P; ++p) epi.store(out + p * g.O, acc[p], g.KH * g.KW * g.C);
}

// Pixels per interior group: as many as keep the P * NV accumulators, P broadcasts and a weight
// vector within the 32 vector registers.
template <int NV>
constexpr int interior_group() { return NV <= 4 ? 4 : NV <= 6 ? 3 : 2; }

// One output row for NV vectors of 8 output channels starting at o0.
template <int NV>
TINYSR_AVX512 void conv_block_avx512(const Geometry& g, const uint64_t* act, const uint64_t* wp, const int64_t* offsets,
                                     int64_t oh, int64_t o0, const float* alpha, const float* bias, float* out_row) {
  constexpr int P = interior_group<NV>();
  const Avx512Epilogue<NV> epi(g, o0, alpha, bias);
  const int64_t ih0 = oh * g.SH - g.PH;
  int64_t lo, hi;
  interior_columns(g, oh, &lo, &hi);
  int64_t ow = 0;
  for (; ow < lo; ++ow) pixel_avx512<NV>(g, act, wp, oh, ow, o0, epi, out_row);
  for (; ow + P <= hi; ow += P)
    interior_pixels_avx512<NV, P>(g, act + (ih0 * g.W + ow * g.SW - g.PW) * g.Cw, wp, offsets, o0, epi,
                                  out_row + ow * g.O + o0);
  for (; ow < g.OW; ++ow) pixel_avx512<NV>(g, act, wp, oh, ow, o0, epi, out_row);
}

#include "binary_conv_avx2_pixels.inc"

template <typename F>
void dispatch_blocks(int64_t n_vectors, int max_nv, F&& block) {
  // Output channels in blocks of at most max_nv vectors (the accumulators stay in registers).
  for (int64_t first = 0; first < n_vectors; first += max_nv) block(first, std::min<int64_t>(max_nv, n_vectors - first));
}

// Vectors per AVX2 block: at most kAvx2Vectors, fewer where a pixel's pass over the block's
// split weights (pairs x 2 x NV vectors of 32 bytes) would not stay in a 32 KB L1 data cache with
// room to spare (wide inputs: hundreds of channels), and spread evenly over the blocks (72
// channels run as 3 blocks of 3 vectors, not 4 + 4 + 1).
constexpr int64_t kAvx2WeightBytes = 24 * 1024;

int avx2_block_vectors(const Geometry& g, const Avx2Operands& op) {
  const int64_t per_vector = g.KH * g.KW * op.used * 2 * 32;
  const int64_t widest = std::clamp<int64_t>(kAvx2WeightBytes / per_vector, 1, kAvx2Vectors);
  const int64_t vectors = (g.O + 7) / 8, blocks = (vectors + widest - 1) / widest;
  return int((vectors + blocks - 1) / blocks);
}

void conv_row_avx2(const Geometry& g, const Avx2Operands& op, int64_t oh, const float* alpha, const float* bias,
                   float* out_row) {
  dispatch_blocks((g.O + 7) / 8, avx2_block_vectors(g, op), [&](int64_t first, int64_t nv) {
    const int64_t o0 = first * 8;
    switch (nv) {
      case 1: conv_block_avx2<1>(g, op, oh, o0, alpha, bias, out_row); break;
      case 2: conv_block_avx2<2>(g, op, oh, o0, alpha, bias, out_row); break;
      case 3: conv_block_avx2<3>(g, op, oh, o0, alpha, bias, out_row); break;
      default: conv_block_avx2<4>(g, op, oh, o0, alpha, bias, out_row); break;
    }
  });
}

void conv_row_avx512(const Geometry& g, const uint64_t* act, const uint64_t* wp, const int64_t* offsets, int64_t oh,
                     const float* alpha, const float* bias, float* out_row) {
  dispatch_blocks((g.O + 7) / 8, 8, [&](int64_t first, int64_t nv) {
    const int64_t o0 = first * 8;
    switch (nv) {
      case 1: conv_block_avx512<1>(g, act, wp, offsets, oh, o0, alpha, bias, out_row); break;
      case 2: conv_block_avx512<2>(g, act, wp, offsets, oh, o0, alpha, bias, out_row); break;
      case 3: conv_block_avx512<3>(g, act, wp, offsets, oh, o0, alpha, bias, out_row); break;
      case 4: conv_block_avx512<4>(g, act, wp, offsets, oh, o0, alpha, bias, out_row); break;
      case 5: conv_block_avx512<5>(g, act, wp, offsets, oh, o0, alpha, bias, out_row); break;
      case 6: conv_block_avx512<6>(g, act, wp, offsets, oh, o0, alpha, bias, out_row); break;
      case 7: conv_block_avx512<7>(g, act, wp, offsets, oh, o0, alpha, bias, out_row); break;
      default: conv_block_avx512<8>(g, act, wp, offsets, oh, o0, alpha, bias, out_row); break;
    }
  });
}

// Stages applied to each output row after its conv epilogue, while the row is still in cache,
// so that the element-wise layers after a binary conv do not each make a pass over memory.
// Each is one float operation per element, in the order the float model applies them:
enum Stage : int64_t {
  kAddChannel = 1,  // y += v[o]  (a shift; a subtraction is the addition of -v, exactly)
  kPReLU = 2,       // y = y > 0 ? y : v[o] * y
  kAddResidual = 3, // y += r     (r: a tensor of the output's shape, channels_last)
  kMulChannel = 4,  // y *= v[o]  (a scale: BN at inference is a scale, then a shift)
};

struct Stages {
  std::vector<int64_t> codes;
  std::vector<const float*> vectors;  // per-channel operand of each stage (unused by kAddResidual)
  const float* residual = nullptr;    // (N, OH, OW, O) channels_last
};

// `pixels` pixels of O channels each; y, the operand and the residual never overlap. The AVX2
// forms serve the AVX2 and AVX-512 paths (PReLU as a select, not a branch: the signs of y are
// random); the plain forms the portable path.
// y[o] + v[o] (kMul false) or y[o] * v[o] (kMul true) for every pixel and channel.
template <bool kMul>
void channel_op(float* y, const float* v, int64_t pixels, int64_t O) {
  for (int64_t i = 0; i < pixels; ++i, y += O)
    for (int64_t o = 0; o < O; ++o) y[o] = kMul ? y[o] * v[o] : y[o] + v[o];
}

void prelu(float* y, const float* v, int64_t pixels, int64_t O) {
  for (int64_t i = 0; i < pixels; ++i, y += O)
    for (int64_t o = 0; o < O; ++o) y[o] = y[o] > 0.0f ? y[o] : v[o] * y[o];
}

void add_residual(float* y, const float* r, int64_t count) {
  for (int64_t i = 0; i < count; ++i) y[i] = y[i] + r[i];
}

template <bool kMul>
__attribute__((target("avx2"))) void channel_op_avx2(float* y, const float* v, int64_t pixels, int64_t O) {
  for (int64_t i = 0; i < pixels; ++i, y += O) {
    int64_t o = 0;
    for (; o + 8 <= O; o += 8) {
      const __m256 a = _mm256_loadu_ps(y + o), b = _mm256_loadu_ps(v + o);
      _mm256_storeu_ps(y + o, kMul ? _mm256_mul_ps(a, b) : _mm256_add_ps(a, b));
    }
    for (; o < O; ++o) y[o] = kMul ? y[o] * v[o] : y[o] + v[o];
  }
}

__attribute__((target("avx2"))) void prelu_avx2(float* y, const float* v, int64_t pixels, int64_t O) {
  for (int64_t i = 0; i < pixels; ++i, y += O) {
    int64_t o = 0;
    for (; o + 8 <= O; o += 8) {
      const __m256 x = _mm256_loadu_ps(y + o);
      const __m256 positive = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ);
      _mm256_storeu_ps(y + o, _mm256_blendv_ps(_mm256_mul_ps(_mm256_loadu_ps(v + o), x), x, positive));
    }
    for (; o < O; ++o) y[o] = y[o] > 0.0f ? y[o] : v[o] * y[o];
  }
}

__attribute__((target("avx2"))) void add_residual_avx2(float* y, const float* r, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(r + i)));
  for (; i < count; ++i) y[i] = y[i] + r[i];
}

// The stages on `pixels` output pixels starting at pixel `first`, whose floats are y.
void apply_stages(const Stages& st, bool avx2, int64_t first, int64_t pixels, int64_t O, float* y) {
  for (size_t k = 0; k < st.codes.size(); ++k) {
    const float* v = st.vectors[k];
    if (st.codes[k] == kAddChannel) avx2 ? channel_op_avx2<false>(y, v, pixels, O) : channel_op<false>(y, v, pixels, O);
    else if (st.codes[k] == kMulChannel) avx2 ? channel_op_avx2<true>(y, v, pixels, O) : channel_op<true>(y, v, pixels, O);
    else if (st.codes[k] == kPReLU) avx2 ? prelu_avx2(y, v, pixels, O) : prelu(y, v, pixels, O);
    else avx2 ? add_residual_avx2(y, st.residual + first * O, pixels * O) : add_residual(y, st.residual + first * O, pixels * O);
  }
}

// The path a request runs: kAuto picks the best this CPU has; a forced path the CPU lacks, or an
// unknown code, gives a negative error code (-1 no AVX-512, -2 no AVX2, -3 unknown).
int64_t resolve(int64_t requested) {
  if (requested == kAuto) return cpu_has_avx512() ? kAVX512 : cpu_has_avx2() ? kAVX2 : kPortable;
  if (requested < kPortable || requested > kAVX2Pixels) return -3;
  if (requested == kAVX512 && !cpu_has_avx512()) return -1;
  if ((requested == kAVX2 || requested == kAVX2Pixels) && !cpu_has_avx2()) return -2;
  return requested;
}

}  // namespace

extern "C" {

// Which paths this CPU can run beside the portable one: bit 0 AVX2 (both AVX2 paths), bit 1 AVX-512.
int tinysr_cpu_paths() { return (cpu_has_avx2() ? 1 : 0) | (cpu_has_avx512() ? 2 : 0); }

// Binarise `rows` rows of W pixels of C floats (x: channels_last) against per-channel thresholds
// and pack 64 channels per word into out (rows, W, Cw) (bit = 1 for sign -1). Returns the path run,
// or resolve()'s error code.
int64_t tinysr_pack_activations(const float* x, const float* thr, uint64_t* out, int64_t rows, int64_t W, int64_t C,
                                int64_t path, int nt) {
  const int64_t p = resolve(path);
  if (p < 0) return p;
  const int64_t Cw = (C + 63) / 64;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < rows; ++r) pack_pixels(p, x + r * W * C, thr, out + r * W * Cw, W, C, Cw);
  return p;
}

// The binary conv on packed activations act (N, H, W, Cw) and packed weights wp (KH*KW, Cw, Opad):
// y (N, OH, OW, O) = alpha * (valid*C - 2*popcount) + bias, then the stages (see Stage), row by
// row. With next_thr (one per output channel), the output is instead the next binary conv's input,
// binarised against them and packed into next_words (N, OH, OW, ceil(O/64)), each row packed from
// the floats while they are in cache, which are never stored (for a conv whose output only the
// next binary conv reads); y is then unused. geometry holds Geometry's 17 fields in order; the
// stages' codes, per-channel operands (nullptr for kAddResidual) and the residual (N, OH, OW, O)
// are the caller's, checked there. Returns the path run, or resolve()'s error code.
int64_t tinysr_packed_conv2d(const int64_t* geometry, const uint64_t* act, const uint64_t* wp, const float* ap,
                             const float* bp, int64_t path, int64_t n_stages, const int64_t* stage_codes,
                             const float* const* stage_vectors, const float* residual, const float* next_thr,
                             float* y, uint64_t* next_words, int nt) {
  Geometry g{};
  static_assert(sizeof(Geometry) == 17 * sizeof(int64_t), "Geometry: 17 int64 fields");
  std::memcpy(&g, geometry, sizeof(Geometry));
  int64_t p = resolve(path);
  if (p < 0) return p;
  if (p == kAVX2Pixels && !pixel_lanes_fit(g)) p = kAVX2;  // a layer it cannot run: the other AVX2 path
  const int64_t O = g.O;
  const bool emit_words = next_thr != nullptr;
  const int64_t next_cw = (O + 63) / 64;
  Stages stages;
  stages.codes.assign(stage_codes, stage_codes + n_stages);
  stages.vectors.assign(stage_vectors, stage_vectors + n_stages);
  stages.residual = residual;
  std::vector<uint32_t> act_split, w_split;
  std::vector<int64_t> offsets;
  if (p == kAVX2) {
    act_split = split_activation_nibbles(act, g.N * g.H * g.W * g.Cw, nt);
    w_split = split_weight_nibbles(g, wp);
    offsets = interior_offsets(g, 2 * g.Cw, used_half_words(g.C));
  }
  if (p == kAVX512) offsets = interior_offsets(g, g.Cw, g.Cw);
  const PixelOperands pixel_op = p == kAVX2Pixels ? pixel_operands(g, act, wp, nt) : PixelOperands{};
#pragma omp parallel num_threads(nt)
  {
    std::vector<int64_t> acc(p == kPortable ? O : 0);
    std::vector<int16_t> totals(p == kAVX2Pixels ? 8 * kMaxPixelBlock : 0);  // the pixel-lane path's block totals
    std::vector<float> row_buffer(emit_words ? g.OW * O : 0);  // the row's floats, in cache, never stored
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const uint64_t* image = act + n * g.H * g.W * g.Cw;
        float* row = emit_words ? row_buffer.data() : y + (n * g.OH + oh) * g.OW * O;
        if (p == kAVX512) conv_row_avx512(g, image, wp, offsets.data(), oh, ap, bp, row);
        else if (p == kAVX2Pixels)
          conv_row_avx2_pixels(g, pixel_op, pixel_op.planes.get() + n * g.H * pixel_op.K * pixel_op.Wp, oh, ap, bp, row,
                               totals.data());
        else if (p == kAVX2) {
          const int64_t first = n * g.H * g.W * 2 * g.Cw;  // half words
          const Avx2Operands op{act_split.data() + 2 * first, w_split.data(), offsets.data(), used_half_words(g.C)};
          conv_row_avx2(g, op, oh, ap, bp, row);
        }
        else conv_row_portable(g, image, wp, oh, ap, bp, row, acc.data());
        if (!stages.codes.empty()) apply_stages(stages, p != kPortable, (n * g.OH + oh) * g.OW, g.OW, O, row);
        if (emit_words) pack_pixels(p, row, next_thr, next_words + (n * g.OH + oh) * g.OW * next_cw, g.OW, O, next_cw);
      }
  }
  return p;
}

}  // extern "C"

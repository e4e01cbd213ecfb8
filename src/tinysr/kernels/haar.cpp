// The orthonormal 2-D Haar transform and its inverse on channels_last float32 maps (SPEC §5.5),
// for inference: PyTorch's grouped stride-2 conv computes the same bands several times slower on
// the few-channel maps FABNet transforms, and its element-wise ops stay slow on a 24-float
// inner dimension. Per 2x2 block [[a, b], [c, d]] of each channel, with s = a + b, t = c + d,
// u = a - b, v = c - d (the order of the float operations, documented for the tests):
//     LL = (s + t) / 2,  LH = (s - t) / 2,  HL = (u + v) / 2,  HH = (u - v) / 2,
// and the inverse, with p = LL + LH, q = LL - LH, r = HL + HH, w = HL - HH:
//     a = (p + r) / 2,  b = (p - r) / 2,  c = (q + w) / 2,  d = (q - w) / 2.
// Halving is exact in float, so each band differs from the conv's only in the order of its sums.

#include <cstdint>

extern "C" {

// x (N, H, W, C) channels_last, H and W even -> LL (N, H/2, W/2, C) and high (N, H/2, W/2, 3C) =
// [LH, HL, HH], both channels_last. The caller checks the shapes and allocates the bands.
void tinysr_haar_dwt(const float* src, float* lo, float* hi, int64_t N, int64_t C, int64_t H, int64_t W, int nt) {
  const int64_t H2 = H / 2, W2 = W / 2;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t row = 0; row < N * H2; ++row) {
    const int64_t n = row / H2, i = row % H2;
    const float* top = src + ((n * H + 2 * i) * W) * C;
    const float* bottom = top + W * C;
    for (int64_t j = 0; j < W2; ++j) {
      const float* a = top + 2 * j * C;
      const float* b = a + C;
      const float* c = bottom + 2 * j * C;
      const float* d = c + C;
      float* out_ll = lo + (row * W2 + j) * C;
      float* out_high = hi + (row * W2 + j) * 3 * C;
      for (int64_t k = 0; k < C; ++k) {
        const float s = a[k] + b[k], t = c[k] + d[k], u = a[k] - b[k], v = c[k] - d[k];
        out_ll[k] = (s + t) * 0.5f;
        out_high[k] = (s - t) * 0.5f;
        out_high[C + k] = (u + v) * 0.5f;
        out_high[2 * C + k] = (u - v) * 0.5f;
      }
    }
  }
}

// LL (N, H2, W2, C) and high (N, H2, W2, 3C), channels_last -> x (N, 2 H2, 2 W2, C) channels_last.
void tinysr_haar_idwt(const float* lo, const float* hi, float* dst, int64_t N, int64_t C, int64_t H2, int64_t W2, int nt) {
  const int64_t W = 2 * W2;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t row = 0; row < N * H2; ++row) {
    float* top = dst + (2 * row * W) * C;  // rows 2i and 2i + 1 of image n: row = n * H2 + i
    float* bottom = top + W * C;
    for (int64_t j = 0; j < W2; ++j) {
      const float* band_ll = lo + (row * W2 + j) * C;
      const float* band_high = hi + (row * W2 + j) * 3 * C;
      float* a = top + 2 * j * C;
      float* b = a + C;
      float* c = bottom + 2 * j * C;
      float* d = c + C;
      for (int64_t k = 0; k < C; ++k) {
        const float p = band_ll[k] + band_high[k], q = band_ll[k] - band_high[k];
        const float r = band_high[C + k] + band_high[2 * C + k], w = band_high[C + k] - band_high[2 * C + k];
        a[k] = (p + r) * 0.5f;
        b[k] = (p - r) * 0.5f;
        c[k] = (q + w) * 0.5f;
        d[k] = (q - w) * 0.5f;
      }
    }
  }
}

}  // extern "C"

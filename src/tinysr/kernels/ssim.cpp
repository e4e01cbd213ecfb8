// The 'valid' separable Gaussian correlation of SSIM (SPEC §1), in float64, for the evaluation
// protocol: numpy spends most of an evaluation's time in the 22 shifted passes per map.
// The order of the float operations is the reference's (metrics._filter_valid): each output
// is 0 + g[0] x[0] + g[1] x[1] + ... summed left to right, first down the columns, then along the
// rows of that result, with no fused multiply-add (the build passes -ffp-contract=off), so the
// results equal the reference bit for bit.

#include <cstdint>
#include <vector>

namespace {

// One output row of each pass; the inner loops run over contiguous doubles, so the compiler
// vectorises them (an AVX2 clone where the CPU has it).
__attribute__((target_clones("avx2", "default")))
void filter_columns(const double* x, int64_t W, const double* g, int64_t n, double* out) {
  for (int64_t j = 0; j < W; ++j) out[j] = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    const double gk = g[k];
    const double* row = x + k * W;
    for (int64_t j = 0; j < W; ++j) out[j] = out[j] + gk * row[j];
  }
}

__attribute__((target_clones("avx2", "default")))
void filter_row(const double* r, int64_t OW, const double* g, int64_t n, double* out) {
  for (int64_t j = 0; j < OW; ++j) out[j] = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    const double gk = g[k];
    for (int64_t j = 0; j < OW; ++j) out[j] = out[j] + gk * r[j + k];
  }
}

}  // namespace

extern "C" {

// maps (M, H, W) float64, g (n) float64 -> out (M, H - n + 1, W - n + 1); the caller checks the
// shapes (H, W >= n) and allocates out.
void tinysr_ssim_filter(const double* src, const double* gp, double* dst, int64_t M, int64_t H, int64_t W, int64_t n,
                        int nt) {
  const int64_t OH = H - n + 1, OW = W - n + 1;
#pragma omp parallel num_threads(nt)
  {
    std::vector<double> column(W);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < M * OH; ++r) {
      const int64_t m = r / OH, i = r % OH;
      filter_columns(src + (m * H + i) * W, W, gp, n, column.data());
      filter_row(column.data(), OW, gp, n, dst + r * OW);
    }
  }
}

}  // extern "C"

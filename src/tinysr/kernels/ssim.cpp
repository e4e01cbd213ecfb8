// The 'valid' separable Gaussian correlation of SSIM (SPEC §1), in float64, for the evaluation
// protocol: numpy spends most of an evaluation's time in the 22 shifted passes per map.
// The order of the float operations is the reference's (metrics._filter_valid): each output
// is 0 + g[0] x[0] + g[1] x[1] + ... summed left to right, first down the columns, then along the
// rows of that result, with no fused multiply-add (the build passes -ffp-contract=off), so the
// results equal the reference bit for bit.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>
#include <ATen/Parallel.h>

#include <cstdint>

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

// maps (M, H, W) float64, g (n) float64 -> (M, H - n + 1, W - n + 1).
at::Tensor ssim_filter(at::Tensor maps, at::Tensor g) {
  TORCH_CHECK(maps.dim() == 3 && maps.scalar_type() == at::kDouble && maps.device().is_cpu(), "ssim_filter: maps must be a 3-D float64 CPU tensor");
  TORCH_CHECK(g.dim() == 1 && g.scalar_type() == at::kDouble, "ssim_filter: the window must be a 1-D float64 tensor");
  const int64_t M = maps.size(0), H = maps.size(1), W = maps.size(2), n = g.numel();
  TORCH_CHECK(n >= 1 && H >= n && W >= n, "ssim_filter: the maps are smaller than the window");
  const int64_t OH = H - n + 1, OW = W - n + 1;
  auto x = maps.contiguous();
  auto w = g.contiguous();
  auto out = at::empty({M, OH, OW}, x.options());
  const double* src = x.data_ptr<double>();
  const double* gp = w.data_ptr<double>();
  double* dst = out.data_ptr<double>();
  at::parallel_for(0, M * OH, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> column(W);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t m = r / OH, i = r % OH;
      filter_columns(src + (m * H + i) * W, W, gp, n, column.data());
      filter_row(column.data(), OW, gp, n, dst + r * OW);
    }
  });
  return out;
}

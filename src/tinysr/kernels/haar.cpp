// The orthonormal 2-D Haar transform and its inverse on channels_last float32 maps (SPEC §5.5),
// for inference: PyTorch's grouped stride-2 conv computes the same bands several times slower on
// the few-channel maps FABNet transforms, and its element-wise ops stay slow on a 24-float
// inner dimension. Per 2x2 block [[a, b], [c, d]] of each channel, with s = a + b, t = c + d,
// u = a - b, v = c - d (the order of the float operations, documented for the tests):
//     LL = (s + t) / 2,  LH = (s - t) / 2,  HL = (u + v) / 2,  HH = (u - v) / 2,
// and the inverse, with p = LL + LH, q = LL - LH, r = HL + HH, w = HL - HH:
//     a = (p + r) / 2,  b = (p - r) / 2,  c = (q + w) / 2,  d = (q - w) / 2.
// Halving is exact in float, so each band differs from the conv's only in the order of its sums.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <vector>

namespace {

void check_map(const at::Tensor& x, const char* what) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(), what, ": a 4-D float32 CPU tensor is needed");
}

}  // namespace

// x (N, C, H, W), H and W even -> [LL (N, C, H/2, W/2), high (N, 3C, H/2, W/2) = [LH, HL, HH]],
// both channels_last.
std::vector<at::Tensor> haar_dwt_channels_last(at::Tensor x) {
  check_map(x, "haar_dwt");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H % 2 == 0 && W % 2 == 0, "haar_dwt: height and width must be even (pad first)");
  const int64_t H2 = H / 2, W2 = W / 2;
  auto in = x.contiguous(at::MemoryFormat::ChannelsLast);
  auto ll = at::empty({N, H2, W2, C}, x.options());
  auto high = at::empty({N, H2, W2, 3 * C}, x.options());
  const float* src = in.data_ptr<float>();
  float* lo = ll.data_ptr<float>();
  float* hi = high.data_ptr<float>();
  at::parallel_for(0, N * H2, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
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
  });
  return {ll.permute({0, 3, 1, 2}), high.permute({0, 3, 1, 2})};
}

// LL (N, C, H2, W2) and high (N, 3C, H2, W2) -> x (N, C, 2 H2, 2 W2), channels_last.
at::Tensor haar_idwt_channels_last(at::Tensor ll, at::Tensor high) {
  check_map(ll, "haar_idwt");
  check_map(high, "haar_idwt");
  const int64_t N = ll.size(0), C = ll.size(1), H2 = ll.size(2), W2 = ll.size(3);
  TORCH_CHECK(high.size(0) == N && high.size(1) == 3 * C && high.size(2) == H2 && high.size(3) == W2,
              "haar_idwt: high must have 3x the channels of LL and its size");
  auto l = ll.contiguous(at::MemoryFormat::ChannelsLast);
  auto h = high.contiguous(at::MemoryFormat::ChannelsLast);
  auto x = at::empty({N, 2 * H2, 2 * W2, C}, ll.options());
  const float* lo = l.data_ptr<float>();
  const float* hi = h.data_ptr<float>();
  float* dst = x.data_ptr<float>();
  const int64_t W = 2 * W2;
  at::parallel_for(0, N * H2, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
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
  });
  return x.permute({0, 3, 1, 2});
}

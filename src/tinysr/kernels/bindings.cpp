// The Python module of the native kernels. binary_conv.cpp (bit-packed binary convolution),
// haar.cpp (the Haar transform) and ssim.cpp (SSIM's Gaussian filter) are included into this one
// translation unit, so that PyTorch's headers, most of a build's time, are compiled once.

#include "binary_conv.cpp"
#include "haar.cpp"
#include "ssim.cpp"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("available_paths", &available_paths);
  m.def("pack_activations", &pack_activations);
  m.def("packed_conv2d", &packed_conv2d);
  m.def("haar_dwt", &haar_dwt_channels_last);
  m.def("haar_idwt", &haar_idwt_channels_last);
  m.def("ssim_filter", &ssim_filter);
}

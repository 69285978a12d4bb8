#pragma once
// Argument checks and the per-pixel rule shared by the CPU and CUDA kernels of
// lpfast::crop_flip_normalise.
#include <ATen/core/Tensor.h>

namespace lpfast {

inline void check_augment_args(const at::Tensor& images, const at::Tensor& offsets, const at::Tensor& flips,
                               int64_t padding, at::ArrayRef<double> mean, at::ArrayRef<double> std,
                               at::ScalarType dtype) {
  const char* op = "crop_flip_normalise";
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte, op,
              ": images must be a uint8 N×C×H×W tensor, got ", images.dim(), "-D ", images.scalar_type());
  const int64_t n = images.size(0), c = images.size(1);
  TORCH_CHECK(offsets.sizes() == at::IntArrayRef({n, 2}) && offsets.scalar_type() == at::kLong, op,
              ": offsets must be an int64 N×2 tensor of (row, column) crop offsets, got ",
              offsets.scalar_type(), " of shape ", offsets.sizes());
  TORCH_CHECK(flips.sizes() == at::IntArrayRef({n}) && flips.scalar_type() == at::kBool, op,
              ": flips must be a bool tensor of N flags, got ", flips.scalar_type(), " of shape ", flips.sizes());
  TORCH_CHECK(offsets.device() == images.device() && flips.device() == images.device(), op,
              ": offsets and flips must be on the images' device ", images.device());
  TORCH_CHECK(padding >= 0, op, ": padding must be >= 0, got ", padding);
  TORCH_CHECK(int64_t(mean.size()) == c && int64_t(std.size()) == c, op, ": need one mean and one std per channel (",
              c, "), got ", mean.size(), " and ", std.size());
  for (double s : std) TORCH_CHECK(s > 0, op, ": every std must be > 0, got ", s);
  TORCH_CHECK(at::isFloatingType(dtype), op, ": dtype must be floating, got ", dtype);
}

// Source pixel of output (y, x) for crop offsets (oy, ox) of the image padded by `padding`,
// mirrored first when `flip`; false when it falls in the zero padding.
C10_HOST_DEVICE inline bool crop_source(int64_t y, int64_t x, int64_t oy, int64_t ox, bool flip,
                                        int64_t padding, int64_t H, int64_t W, int64_t& sy, int64_t& sx) {
  sy = y + oy - padding;
  sx = (flip ? W - 1 - x : x) + ox - padding;
  return sy >= 0 && sy < H && sx >= 0 && sx < W;
}

}  // namespace lpfast

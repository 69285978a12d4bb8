#pragma once
// Shapes and checks shared by the CPU and CUDA kernels of lpfast::ds_encode / ds_decode.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

namespace lpfast {

enum DsMode : int64_t { kNearest = 0, kBilinear = 1 };

inline void check_ds_common(const at::Tensor& t, int64_t factor, const char* op) {
  TORCH_CHECK(t.dim() == 4, op, ": expects an N×C×H×W tensor, got ", t.dim(), " dims");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": expects a floating tensor, got ",
              t.scalar_type());
  TORCH_CHECK(factor >= 1, op, ": factor must be >= 1, got ", factor);
}

inline void check_ds_encode_args(const at::Tensor& x, int64_t factor, at::ScalarType wire) {
  check_ds_common(x, factor, "ds_encode");
  TORCH_CHECK(at::isFloatingType(wire), "ds_encode: wire_dtype must be floating, got ", wire);
  TORCH_CHECK(x.size(2) % factor == 0 && x.size(3) % factor == 0, "ds_encode: factor ", factor,
              " does not divide the feature map ", x.size(2), "×", x.size(3),
              "; choose a factor that divides both sides (lpfast does not pad)");
}

inline void check_ds_decode_args(const at::Tensor& y, int64_t factor, int64_t mode,
                                 at::ScalarType out_dtype) {
  check_ds_common(y, factor, "ds_decode");
  TORCH_CHECK(mode == kNearest || mode == kBilinear,
              "ds_decode: mode must be 0 (nearest) or 1 (bilinear), got ", mode);
  TORCH_CHECK(at::isFloatingType(out_dtype), "ds_decode: out_dtype must be floating, got ",
              out_dtype);
}

// Output of either op: same N, C; spatial sizes divided (encode) or multiplied (decode); same
// memory format as the input.
inline at::Tensor ds_empty_output(const at::Tensor& in, int64_t h, int64_t w, at::ScalarType dtype) {
  const auto fmt = in.suggest_memory_format();
  return at::empty({in.size(0), in.size(1), h, w}, in.options().dtype(dtype).memory_format(fmt));
}

// Source row/column and weights of bilinear up-sampling by `factor` with half-pixel centres,
// computed exactly as ATen's upsample_bilinear2d (align_corners=False).
template <typename opmath_t>
C10_HOST_DEVICE inline void bilinear_source(int64_t dst, int64_t in_size, int64_t factor,
                                            int64_t& i0, int64_t& i1, opmath_t& l0, opmath_t& l1) {
  const opmath_t scale = opmath_t(1) / opmath_t(factor);
  opmath_t src = scale * (opmath_t(dst) + opmath_t(0.5)) - opmath_t(0.5);
  if (src < opmath_t(0)) src = opmath_t(0);
  i0 = static_cast<int64_t>(src);
  i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
  l1 = src - opmath_t(i0);
  l0 = opmath_t(1) - l1;
}

}  // namespace lpfast

// CPU kernels of lpfast::ds_encode and lpfast::ds_decode. Each walks the output once; the inner
// loop runs over the unit-stride dimension (W for contiguous tensors, C for channels-last), which
// the compiler vectorises.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "ds_filter.h"

namespace lpfast {
namespace {

constexpr int64_t kGrainElements = 1 << 14;

int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_item));
}

template <typename in_t, typename out_t>
void encode_kernel(const at::Tensor& x, at::Tensor& y, int64_t s, bool channels_last) {
  using opmath_t = at::opmath_type<in_t>;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = H / s, Wo = W / s;
  const opmath_t inv_area = opmath_t(1) / opmath_t(s * s);
  const in_t* xp = x.const_data_ptr<in_t>();
  out_t* yp = y.mutable_data_ptr<out_t>();
  if (channels_last) {  // x[n][h][w][c]
    at::parallel_for(0, N * Ho * Wo, grain_for(C * s * s), [&](int64_t begin, int64_t end) {
      std::vector<opmath_t> acc(C);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t n = p / (Ho * Wo), ho = (p / Wo) % Ho, wo = p % Wo;
        std::fill(acc.begin(), acc.end(), opmath_t(0));
        for (int64_t i = 0; i < s; ++i) {
          for (int64_t j = 0; j < s; ++j) {
            const in_t* src = xp + ((n * H + ho * s + i) * W + wo * s + j) * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += opmath_t(src[c]);
          }
        }
        out_t* dst = yp + p * C;
        for (int64_t c = 0; c < C; ++c) dst[c] = out_t(acc[c] * inv_area);
      }
    });
  } else {  // x[n][c][h][w]
    at::parallel_for(0, N * C * Ho, grain_for(Wo * s * s), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t plane = r / Ho, ho = r % Ho;
        const in_t* src = xp + (plane * H + ho * s) * W;
        out_t* dst = yp + r * Wo;
        for (int64_t wo = 0; wo < Wo; ++wo) {
          opmath_t acc = 0;
          for (int64_t i = 0; i < s; ++i)
            for (int64_t j = 0; j < s; ++j) acc += opmath_t(src[i * W + wo * s + j]);
          dst[wo] = out_t(acc * inv_area);
        }
      }
    });
  }
}

template <typename in_t, typename out_t>
void decode_kernel(const at::Tensor& y, at::Tensor& out, int64_t s, int64_t mode, bool channels_last) {
  using opmath_t = at::opmath_type<in_t>;
  const int64_t N = y.size(0), C = y.size(1), h = y.size(2), w = y.size(3);
  const int64_t H = h * s, W = w * s;
  const in_t* yp = y.const_data_ptr<in_t>();
  out_t* op = out.mutable_data_ptr<out_t>();
  // Per output row/column: two source indices and their weights (nearest: one index, weight 1).
  std::vector<int64_t> r0(H), r1(H), c0(W), c1(W);
  std::vector<opmath_t> rl0(H), rl1(H), cl0(W), cl1(W);
  for (int64_t i = 0; i < H; ++i) {
    if (mode == kNearest) { r0[i] = r1[i] = i / s; rl0[i] = 1; rl1[i] = 0; }
    else bilinear_source<opmath_t>(i, h, s, r0[i], r1[i], rl0[i], rl1[i]);
  }
  for (int64_t j = 0; j < W; ++j) {
    if (mode == kNearest) { c0[j] = c1[j] = j / s; cl0[j] = 1; cl1[j] = 0; }
    else bilinear_source<opmath_t>(j, w, s, c0[j], c1[j], cl0[j], cl1[j]);
  }
  auto blend = [](opmath_t a0, opmath_t a1, opmath_t b0, opmath_t b1, opmath_t x00, opmath_t x01,
                  opmath_t x10, opmath_t x11) { return a0 * (b0 * x00 + b1 * x01) + a1 * (b0 * x10 + b1 * x11); };
  if (channels_last) {  // y[n][i][j][c]
    at::parallel_for(0, N * H, grain_for(W * C), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t n = p / H, i = p % H;
        const in_t* row0 = yp + (n * h + r0[i]) * w * C;
        const in_t* row1 = yp + (n * h + r1[i]) * w * C;
        for (int64_t j = 0; j < W; ++j) {
          out_t* dst = op + (p * W + j) * C;
          if (mode == kNearest) {
            const in_t* src = row0 + c0[j] * C;
            for (int64_t c = 0; c < C; ++c) dst[c] = out_t(opmath_t(src[c]));
          } else {
            const in_t *a = row0 + c0[j] * C, *b = row0 + c1[j] * C, *cc = row1 + c0[j] * C, *d = row1 + c1[j] * C;
            for (int64_t c = 0; c < C; ++c)
              dst[c] = out_t(blend(rl0[i], rl1[i], cl0[j], cl1[j], a[c], b[c], cc[c], d[c]));
          }
        }
      }
    });
  } else {  // y[n][c][i][j]
    at::parallel_for(0, N * C * H, grain_for(W), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t plane = r / H, i = r % H;
        const in_t* row0 = yp + (plane * h + r0[i]) * w;
        const in_t* row1 = yp + (plane * h + r1[i]) * w;
        out_t* dst = op + r * W;
        if (mode == kNearest) {
          for (int64_t j = 0; j < W; ++j) dst[j] = out_t(opmath_t(row0[c0[j]]));
        } else {
          for (int64_t j = 0; j < W; ++j)
            dst[j] = out_t(blend(rl0[i], rl1[i], cl0[j], cl1[j], row0[c0[j]], row0[c1[j]], row1[c0[j]], row1[c1[j]]));
        }
      }
    });
  }
}

// Dense input in its suggested format (a copy only for non-dense views).
at::Tensor dense(const at::Tensor& t) { return t.contiguous(t.suggest_memory_format()); }

at::Tensor ds_encode_cpu(const at::Tensor& x_in, int64_t factor, at::ScalarType wire) {
  check_ds_encode_args(x_in, factor, wire);
  const at::Tensor x = dense(x_in);
  at::Tensor y = ds_empty_output(x, x.size(2) / factor, x.size(3) / factor, wire);
  const bool cl = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ds_encode_cpu", [&] {
    using in_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, wire, "ds_encode_cpu_out", [&] {
      encode_kernel<in_t, scalar_t>(x, y, factor, cl);
    });
  });
  return y;
}

at::Tensor ds_decode_cpu(const at::Tensor& y_in, int64_t factor, int64_t mode, at::ScalarType out_dtype) {
  check_ds_decode_args(y_in, factor, mode, out_dtype);
  const at::Tensor y = dense(y_in);
  at::Tensor out = ds_empty_output(y, y.size(2) * factor, y.size(3) * factor, out_dtype);
  const bool cl = y.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "ds_decode_cpu", [&] {
    using in_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_dtype, "ds_decode_cpu_out", [&] {
      decode_kernel<in_t, scalar_t>(y, out, factor, mode, cl);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CPU, m) {
  m.impl("ds_encode", &ds_encode_cpu);
  m.impl("ds_decode", &ds_decode_cpu);
}

}  // namespace lpfast

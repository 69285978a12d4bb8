// CPU kernels of lpfast::ds_encode and lpfast::ds_decode. Each walks the output once; the inner
// loops run over the unit-stride dimension (W for contiguous tensors, C for channels-last), which
// the compiler vectorises.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "ds_filter.h"

namespace lpfast {
namespace {

constexpr int64_t kGrainElements = 1 << 14;

int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_item));
}

// Both layouts are rows of W pixels × D values (D = 1 for contiguous planes, C for channels-last):
// P rows-of-planes (N·C or N) × H rows, each L = W·D long. An output row sums its s input rows
// into a buffer (unit stride, vectorised), sums s neighbouring pixels of the buffer, scales, and
// casts to the wire dtype with at::vec::convert.
template <typename in_t, typename out_t>
void encode_kernel(const at::Tensor& x, at::Tensor& y, int64_t s, bool channels_last) {
  using opmath_t = at::opmath_type<in_t>;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t D = channels_last ? C : 1, P = channels_last ? N : N * C;
  const int64_t Ho = H / s, Wo = W / s, L = W * D, Lo = Wo * D;
  const opmath_t inv_area = opmath_t(1) / opmath_t(s * s);
  const in_t* xp = x.const_data_ptr<in_t>();
  out_t* yp = y.mutable_data_ptr<out_t>();
  at::parallel_for(0, P * Ho, grain_for(L * s), [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> rows(L), pooled(std::is_same_v<out_t, opmath_t> ? 0 : Lo);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t p = r / Ho, ho = r % Ho;
      const in_t* src = xp + (p * H + ho * s) * L;
      for (int64_t k = 0; k < L; ++k) rows[k] = opmath_t(src[k]);
      for (int64_t i = 1; i < s; ++i) {
        const in_t* next = src + i * L;
        for (int64_t k = 0; k < L; ++k) rows[k] += opmath_t(next[k]);
      }
      out_t* dst = yp + r * Lo;
      opmath_t* acc;
      if constexpr (std::is_same_v<out_t, opmath_t>) acc = dst; else acc = pooled.data();
      if (D == 1) {  // contiguous planes: neighbours are adjacent scalars
        for (int64_t wo = 0; wo < Wo; ++wo) {
          opmath_t a = rows[wo * s];
          for (int64_t j = 1; j < s; ++j) a += rows[wo * s + j];
          acc[wo] = a * inv_area;
        }
      } else {  // channels-last: neighbours are adjacent channel vectors
        for (int64_t wo = 0; wo < Wo; ++wo) {
          const opmath_t* pix = rows.data() + wo * s * D;
          opmath_t* a = acc + wo * D;
          for (int64_t d = 0; d < D; ++d) a[d] = pix[d];
          for (int64_t j = 1; j < s; ++j)
            for (int64_t d = 0; d < D; ++d) a[d] += pix[j * D + d];
          for (int64_t d = 0; d < D; ++d) a[d] *= inv_area;
        }
      }
      if constexpr (!std::is_same_v<out_t, opmath_t>) at::vec::convert(acc, dst, Lo);
    }
  });
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
  LPFAST_DISPATCH_PAIR(x.scalar_type(), wire, "ds_encode_cpu", [&] { encode_kernel<src_t, dst_t>(x, y, factor, cl); });
  return y;
}

at::Tensor ds_decode_cpu(const at::Tensor& y_in, int64_t factor, int64_t mode, at::ScalarType out_dtype) {
  check_ds_decode_args(y_in, factor, mode, out_dtype);
  const at::Tensor y = dense(y_in);
  at::Tensor out = ds_empty_output(y, y.size(2) * factor, y.size(3) * factor, out_dtype);
  const bool cl = y.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  LPFAST_DISPATCH_PAIR(y.scalar_type(), out_dtype, "ds_decode_cpu", [&] { decode_kernel<src_t, dst_t>(y, out, factor, mode, cl); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CPU, m) {
  m.impl("ds_encode", &ds_encode_cpu);
  m.impl("ds_decode", &ds_decode_cpu);
}

}  // namespace lpfast

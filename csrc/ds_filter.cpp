// CPU kernels of lpfast::ds_encode and lpfast::ds_decode. Each walks the output once; the inner
// loops run over the unit-stride dimension (W for contiguous tensors, C for channels-last), which
// the compiler vectorises, and the dtype casts go through at::vec::convert.
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

// Contiguous planes: P = N·C planes × Ho output rows. An output row sums its s input rows into a
// buffer (unit stride, vectorised), sums s neighbouring scalars of the buffer, scales, and casts to
// the wire dtype with at::vec::convert.
template <typename in_t, typename out_t>
void encode_planes(const in_t* xp, out_t* yp, int64_t P, int64_t H, int64_t W, int64_t s) {
  using opmath_t = at::opmath_type<in_t>;
  const int64_t Ho = H / s, Wo = W / s;
  const opmath_t inv_area = opmath_t(1) / opmath_t(s * s);
  at::parallel_for(0, P * Ho, grain_for(W * s), [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> rows(W), pooled(std::is_same_v<out_t, opmath_t> ? 0 : Wo);
    for (int64_t r = begin; r < end; ++r) {
      const in_t* src = xp + ((r / Ho) * H + (r % Ho) * s) * W;
      for (int64_t k = 0; k < W; ++k) rows[k] = opmath_t(src[k]);
      for (int64_t i = 1; i < s; ++i)
        for (int64_t k = 0; k < W; ++k) rows[k] += opmath_t(src[i * W + k]);
      out_t* dst = yp + r * Wo;
      opmath_t* acc;
      if constexpr (std::is_same_v<out_t, opmath_t>) acc = dst; else acc = pooled.data();
      for (int64_t wo = 0; wo < Wo; ++wo) {
        opmath_t a = rows[wo * s];
        for (int64_t j = 1; j < s; ++j) a += rows[wo * s + j];
        acc[wo] = a * inv_area;
      }
      if constexpr (!std::is_same_v<out_t, opmath_t>) at::vec::convert(acc, dst, Wo);
    }
  });
}

// Channels-last: N·Ho output rows of Wo pixels × C channels. Each output pixel accumulates its s×s
// input pixels' channel vectors straight from the input (unit stride over C, vectorised), so every
// input element is read once and no intermediate row is written.
template <typename in_t, typename out_t>
void encode_channels_last(const in_t* xp, out_t* yp, int64_t N, int64_t C, int64_t H, int64_t W, int64_t s) {
  using opmath_t = at::opmath_type<in_t>;
  const int64_t Ho = H / s, Wo = W / s, L = W * C;
  const opmath_t inv_area = opmath_t(1) / opmath_t(s * s);
  at::parallel_for(0, N * Ho, grain_for(L * s), [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> pooled(std::is_same_v<out_t, opmath_t> ? 0 : Wo * C);
    for (int64_t r = begin; r < end; ++r) {
      const in_t* src = xp + ((r / Ho) * H + (r % Ho) * s) * L;
      out_t* dst = yp + r * Wo * C;
      opmath_t* acc_row;
      if constexpr (std::is_same_v<out_t, opmath_t>) acc_row = dst; else acc_row = pooled.data();
      for (int64_t wo = 0; wo < Wo; ++wo) {
        opmath_t* __restrict__ acc = acc_row + wo * C;
        const in_t* __restrict__ first = src + wo * s * C;
        if (s == 2) {
          // The default factor in one vectorised pass, summing in the general loop's order.
          const in_t* __restrict__ below = first + L;
          for (int64_t c = 0; c < C; ++c)
            acc[c] = (opmath_t(first[c]) + opmath_t(first[C + c]) + opmath_t(below[c]) + opmath_t(below[C + c])) * inv_area;
          continue;
        }
        for (int64_t c = 0; c < C; ++c) acc[c] = opmath_t(first[c]);
        for (int64_t i = 0; i < s; ++i)
          for (int64_t j = (i == 0 ? 1 : 0); j < s; ++j) {
            const in_t* __restrict__ next = first + i * L + j * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += opmath_t(next[c]);
          }
        for (int64_t c = 0; c < C; ++c) acc[c] *= inv_area;
      }
      if constexpr (!std::is_same_v<out_t, opmath_t>) at::vec::convert(acc_row, dst, Wo * C);
    }
  });
}

template <typename in_t, typename out_t>
void encode_kernel(const at::Tensor& x, at::Tensor& y, int64_t s, bool channels_last) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const in_t* xp = x.const_data_ptr<in_t>();
  out_t* yp = y.mutable_data_ptr<out_t>();
  if (channels_last) encode_channels_last(xp, yp, N, C, H, W, s);
  else encode_planes(xp, yp, N * C, H, W, s);
}

// Nearest decoding of one source row (w pixels × D values) into one output row (w·s pixels): a
// vectorised cast of the source row, then each pixel repeated s times.
template <typename in_t, typename out_t>
void nearest_row(const in_t* src, out_t* dst, int64_t w, int64_t D, int64_t s, std::vector<at::opmath_type<in_t>>& cast) {
  using opmath_t = at::opmath_type<in_t>;
  if constexpr (std::is_same_v<in_t, out_t>) {
    for (int64_t j = 0; j < w; ++j)
      for (int64_t t = 0; t < s; ++t) std::copy_n(src + j * D, D, dst + (j * s + t) * D);
  } else {
    at::vec::convert(src, cast.data(), w * D);
    if constexpr (std::is_same_v<out_t, opmath_t>) {
      for (int64_t j = 0; j < w; ++j)
        for (int64_t t = 0; t < s; ++t) std::copy_n(cast.data() + j * D, D, dst + (j * s + t) * D);
    } else {
      for (int64_t j = 0; j < w; ++j)
        for (int64_t t = 0; t < s; ++t) at::vec::convert(cast.data() + j * D, dst + (j * s + t) * D, D);
    }
  }
}

template <typename in_t, typename out_t>
void decode_kernel(const at::Tensor& y, at::Tensor& out, int64_t s, int64_t mode, bool channels_last) {
  using opmath_t = at::opmath_type<in_t>;
  const int64_t N = y.size(0), C = y.size(1), h = y.size(2), w = y.size(3);
  const int64_t H = h * s, W = w * s;
  const in_t* yp = y.const_data_ptr<in_t>();
  out_t* op = out.mutable_data_ptr<out_t>();
  // Per output row/column: two source indices and their weights (nearest rows: one index, weight 1).
  std::vector<int64_t> r0(H), r1(H), c0(W), c1(W);
  std::vector<opmath_t> rl0(H), rl1(H), cl0(W), cl1(W);
  for (int64_t i = 0; i < H; ++i) {
    if (mode == kNearest) { r0[i] = r1[i] = i / s; rl0[i] = 1; rl1[i] = 0; }
    else bilinear_source<opmath_t>(i, h, s, r0[i], r1[i], rl0[i], rl1[i]);
  }
  if (mode != kNearest)  // nearest rows repeat whole source pixels (nearest_row)
    for (int64_t j = 0; j < W; ++j) bilinear_source<opmath_t>(j, w, s, c0[j], c1[j], cl0[j], cl1[j]);
  auto blend = [](opmath_t a0, opmath_t a1, opmath_t b0, opmath_t b1, opmath_t x00, opmath_t x01,
                  opmath_t x10, opmath_t x11) { return a0 * (b0 * x00 + b1 * x01) + a1 * (b0 * x10 + b1 * x11); };
  // Both layouts are output rows of W pixels × D values (D = C channels-last, 1 for planes) over
  // P = N (channels-last) or N·C (planes) images of H rows.
  const int64_t D = channels_last ? C : 1, P = channels_last ? N : N * C;
  at::parallel_for(0, P * H, grain_for(W * D), [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> cast(w * D);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / H, i = r % H;
      const in_t* row0 = yp + (plane * h + r0[i]) * w * D;
      const in_t* row1 = yp + (plane * h + r1[i]) * w * D;
      out_t* dst = op + r * W * D;
      if (mode == kNearest) {
        // Nearest repeats each source row s times: all but the first are copies of the row above.
        if (i % s != 0 && r > begin) std::copy_n(dst - W * D, W * D, dst);
        else nearest_row(row0, dst, w, D, s, cast);
        continue;
      }
      for (int64_t j = 0; j < W; ++j) {
        const in_t *a = row0 + c0[j] * D, *b = row0 + c1[j] * D, *cc = row1 + c0[j] * D, *d = row1 + c1[j] * D;
        for (int64_t k = 0; k < D; ++k)
          dst[j * D + k] = out_t(blend(rl0[i], rl1[i], cl0[j], cl1[j], a[k], b[k], cc[k], d[k]));
      }
    }
  });
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

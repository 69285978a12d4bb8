// CUDA kernels of lpfast::ds_encode and lpfast::ds_decode: one thread per output element, in the
// output's memory order (contiguous or channels-last), so writes are coalesced; 32-bit indices with
// multiply-shift division map an element to its coordinates.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../dispatch.h"
#include "../ds_filter.h"
#include "index.cuh"

namespace lpfast {
namespace {

// `index` indexes the output y (N×C×Ho×Wo); the input is N×C×(Ho·s)×(Wo·s) in the same layout.
template <typename in_t, typename out_t>
__global__ void encode_kernel(const in_t* __restrict__ x, out_t* __restrict__ y, NchwIndex index, int64_t s,
                              uint32_t total) {
  using opmath_t = at::opmath_type<in_t>;
  const int64_t C = index.C.divisor, H = index.H.divisor * s, W = index.W.divisor * s;
  const int64_t row_step = index.channels_last ? W * C : W, column_step = index.channels_last ? C : 1;
  for (uint32_t idx = first_index(); idx < total; idx += grid_stride()) {
    int64_t n, c, i, j;
    index.coords(idx, n, c, i, j);
    const in_t* window = x + nchw_offset(n, c, i * s, j * s, C, H, W, index.channels_last);
    opmath_t acc = 0;
    for (int64_t a = 0; a < s; ++a)
      for (int64_t b = 0; b < s; ++b) acc += opmath_t(window[a * row_step + b * column_step]);
    y[idx] = out_t(acc / opmath_t(s * s));
  }
}

// `index` indexes the output out (N×C×H×W); the input is N×C×(H/s)×(W/s) in the same layout.
template <typename in_t, typename out_t>
__global__ void decode_kernel(const in_t* __restrict__ y, out_t* __restrict__ out, NchwIndex index, Divider s,
                              int64_t mode, uint32_t total) {
  using opmath_t = at::opmath_type<in_t>;
  const int64_t C = index.C.divisor, h = index.H.divisor / s.divisor, w = index.W.divisor / s.divisor;
  for (uint32_t idx = first_index(); idx < total; idx += grid_stride()) {
    int64_t n, c, i, j;
    index.coords(idx, n, c, i, j);
    if (mode == kNearest) {
      out[idx] = out_t(opmath_t(y[nchw_offset(n, c, s.div(uint32_t(i)), s.div(uint32_t(j)), C, h, w, index.channels_last)]));
      continue;
    }
    int64_t i0, i1, j0, j1;
    opmath_t a0, a1, b0, b1;
    bilinear_source<opmath_t>(i, h, s.divisor, i0, i1, a0, a1);
    bilinear_source<opmath_t>(j, w, s.divisor, j0, j1, b0, b1);
    auto val = [&](int64_t r, int64_t q) { return opmath_t(y[nchw_offset(n, c, r, q, C, h, w, index.channels_last)]); };
    out[idx] = out_t(a0 * (b0 * val(i0, j0) + b1 * val(i0, j1)) + a1 * (b0 * val(i1, j0) + b1 * val(i1, j1)));
  }
}

at::Tensor ds_encode_cuda(const at::Tensor& x_in, int64_t factor, at::ScalarType wire) {
  check_ds_encode_args(x_in, factor, wire);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(x_in.suggest_memory_format());
  at::Tensor y = ds_empty_output(x, x.size(2) / factor, x.size(3) / factor, wire);
  if (y.numel() == 0) return y;
  const uint32_t total = index_count(y.numel(), "ds_encode");
  const NchwIndex index(y.size(1), y.size(2), y.size(3), x.suggest_memory_format() == at::MemoryFormat::ChannelsLast);
  LPFAST_DISPATCH_PAIR(x.scalar_type(), wire, "ds_encode_cuda", [&] {
    encode_kernel<src_t, dst_t><<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<src_t>(), y.mutable_data_ptr<dst_t>(), index, factor, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor ds_decode_cuda(const at::Tensor& y_in, int64_t factor, int64_t mode, at::ScalarType out_dtype) {
  check_ds_decode_args(y_in, factor, mode, out_dtype);
  const c10::cuda::CUDAGuard guard(y_in.device());
  const at::Tensor y = y_in.contiguous(y_in.suggest_memory_format());
  at::Tensor out = ds_empty_output(y, y.size(2) * factor, y.size(3) * factor, out_dtype);
  if (out.numel() == 0) return out;
  const uint32_t total = index_count(out.numel(), "ds_decode");
  const NchwIndex index(out.size(1), out.size(2), out.size(3), y.suggest_memory_format() == at::MemoryFormat::ChannelsLast);
  LPFAST_DISPATCH_PAIR(y.scalar_type(), out_dtype, "ds_decode_cuda", [&] {
    decode_kernel<src_t, dst_t><<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        y.const_data_ptr<src_t>(), out.mutable_data_ptr<dst_t>(), index, Divider(uint32_t(factor)), mode, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CUDA, m) {
  m.impl("ds_encode", &ds_encode_cuda);
  m.impl("ds_decode", &ds_decode_cuda);
}

}  // namespace lpfast

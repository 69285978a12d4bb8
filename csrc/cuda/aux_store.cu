// CUDA kernels of lpfast::aux_gather / aux_scatter_: one thread per element of the batch, rows
// looked up by sample index, dtype converted in the copy. Rows outside the store trip a device
// assertion (no host synchronisation to check them up front).
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../aux_store.h"
#include "../dispatch.h"
#include "index.cuh"

namespace lpfast {
namespace {

template <typename src_t, typename dst_t, bool kScatter>
__global__ void copy_rows_kernel(const src_t* __restrict__ src, dst_t* __restrict__ dst,
                                 const int64_t* __restrict__ rows, int64_t num_rows, Divider row,
                                 uint32_t total) {
  const int64_t row_len = row.divisor;
  for (uint32_t e = first_index(); e < total; e += grid_stride()) {
    const auto q = row.divmod(e);
    const int64_t b = q.div, k = q.mod, r = rows[b];
    CUDA_KERNEL_ASSERT(r >= 0 && r < num_rows);
    const int64_t from = (kScatter ? b : r) * row_len + k, to = (kScatter ? r : b) * row_len + k;
    dst[to] = dst_t(at::opmath_type<src_t>(src[from]));
  }
}

template <typename src_t, typename dst_t, bool kScatter>
void launch(const src_t* src, dst_t* dst, const at::Tensor& rows, int64_t num_rows, int64_t row, const char* op) {
  if (rows.numel() * row == 0) return;
  const uint32_t total = index_count(rows.numel() * row, op);
  copy_rows_kernel<src_t, dst_t, kScatter><<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      src, dst, rows.const_data_ptr<int64_t>(), num_rows, Divider(uint32_t(row)), total);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor aux_gather_cuda(const at::Tensor& store, const at::Tensor& idx, at::ScalarType dtype) {
  check_store_and_index(store, idx, "aux_gather");
  TORCH_CHECK(at::isFloatingType(dtype), "aux_gather: dtype must be floating, got ", dtype);
  const c10::cuda::CUDAGuard guard(store.device());
  const at::Tensor rows = idx.contiguous();
  at::Tensor out = at::empty(batch_sizes(store, idx.numel()), store.options().dtype(dtype).memory_format(store_format(store)));
  LPFAST_DISPATCH_PAIR(store.scalar_type(), dtype, "aux_gather_cuda", [&] {
    launch<src_t, dst_t, false>(store.const_data_ptr<src_t>(), out.mutable_data_ptr<dst_t>(), rows,
                                store.size(0), row_numel(store), "aux_gather");
  });
  return out;
}

void aux_scatter_cuda(const at::Tensor& store, const at::Tensor& idx, const at::Tensor& values) {
  check_store_and_index(store, idx, "aux_scatter_");
  check_scatter_values(store, idx, values);
  const c10::cuda::CUDAGuard guard(store.device());
  const at::Tensor rows = idx.contiguous();
  const at::Tensor v = values.contiguous(store_format(store));
  LPFAST_DISPATCH_PAIR(v.scalar_type(), store.scalar_type(), "aux_scatter_cuda", [&] {
    launch<src_t, dst_t, true>(v.const_data_ptr<src_t>(), store.mutable_data_ptr<dst_t>(), rows,
                               store.size(0), row_numel(store), "aux_scatter_");
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CUDA, m) {
  m.impl("aux_gather", &aux_gather_cuda);
  m.impl("aux_scatter_", &aux_scatter_cuda);
}

}  // namespace lpfast

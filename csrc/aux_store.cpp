// CPU kernels of lpfast::aux_gather / aux_scatter_: rows of the auxiliary-variable store by sample
// index, with the storage-dtype conversion fused into the copy (one read, one write per element).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "aux_store.h"
#include "dispatch.h"

namespace lpfast {
namespace {

constexpr int64_t kGrainElements = 1 << 15;

// dst row b <- src row rows[b] (gather) or dst row rows[b] <- src row b (scatter), converted.
template <typename src_t, typename dst_t, bool kScatter>
void copy_rows(const src_t* src, dst_t* dst, const int64_t* rows, int64_t batch, int64_t row) {
  at::parallel_for(0, batch, std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, row)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const src_t* from = src + (kScatter ? b : rows[b]) * row;
      dst_t* to = dst + (kScatter ? rows[b] : b) * row;
      at::vec::convert(from, to, row);
    }
  });
}

at::Tensor aux_gather_cpu(const at::Tensor& store, const at::Tensor& idx, at::ScalarType dtype) {
  check_store_and_index(store, idx, "aux_gather");
  TORCH_CHECK(at::isFloatingType(dtype), "aux_gather: dtype must be floating, got ", dtype);
  check_rows_in_range(idx, store.size(0), "aux_gather");
  const at::Tensor rows = idx.contiguous();
  at::Tensor out = at::empty(batch_sizes(store, idx.numel()), store.options().dtype(dtype).memory_format(store_format(store)));
  LPFAST_DISPATCH_PAIR(store.scalar_type(), dtype, "aux_gather_cpu", [&] {
    copy_rows<src_t, dst_t, false>(store.const_data_ptr<src_t>(), out.mutable_data_ptr<dst_t>(),
                                   rows.const_data_ptr<int64_t>(), idx.numel(), row_numel(store));
  });
  return out;
}

void aux_scatter_cpu(const at::Tensor& store, const at::Tensor& idx, const at::Tensor& values) {
  check_store_and_index(store, idx, "aux_scatter_");
  check_scatter_values(store, idx, values);
  check_rows_in_range(idx, store.size(0), "aux_scatter_");
  const at::Tensor rows = idx.contiguous();
  const at::Tensor v = values.contiguous(store_format(store));
  LPFAST_DISPATCH_PAIR(v.scalar_type(), store.scalar_type(), "aux_scatter_cpu", [&] {
    copy_rows<src_t, dst_t, true>(v.const_data_ptr<src_t>(), store.mutable_data_ptr<dst_t>(),
                                  rows.const_data_ptr<int64_t>(), idx.numel(), row_numel(store));
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CPU, m) {
  m.impl("aux_gather", &aux_gather_cpu);
  m.impl("aux_scatter_", &aux_scatter_cpu);
}

}  // namespace lpfast

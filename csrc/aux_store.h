#pragma once
// Argument checks shared by the CPU and CUDA kernels of lpfast::aux_gather / aux_scatter_.
#include <ATen/core/Tensor.h>

namespace lpfast {

// A store holds one dense row per sample: N × row_shape, contiguous or (4-D) channels-last, so
// every row is one unit-stride block of row_numel elements.
inline at::MemoryFormat store_format(const at::Tensor& store) {
  return store.dim() == 4 ? store.suggest_memory_format() : at::MemoryFormat::Contiguous;
}

inline int64_t row_numel(const at::Tensor& store) {
  int64_t n = 1;
  for (int64_t d = 1; d < store.dim(); ++d) n *= store.size(d);
  return n;
}

inline void check_store_and_index(const at::Tensor& store, const at::Tensor& idx, const char* op) {
  TORCH_CHECK(store.dim() >= 2, op, ": store must be N × row shape (at least 2 dims), got ",
              store.dim(), " dims");
  TORCH_CHECK(at::isFloatingType(store.scalar_type()), op, ": store must be floating, got ",
              store.scalar_type());
  TORCH_CHECK(store.is_contiguous(store_format(store)), op,
              ": store must be dense (contiguous or channels-last); make it with .contiguous()");
  TORCH_CHECK(idx.dim() == 1 && idx.scalar_type() == at::kLong, op,
              ": idx must be a 1-D int64 tensor of row numbers, got ", idx.dim(), "-D ",
              idx.scalar_type());
  TORCH_CHECK(idx.device() == store.device(), op, ": idx is on ", idx.device(), " but store is on ",
              store.device(), "; move it with .to(store.device)");
}

// Host-side range check (CPU tensors): an out-of-range row must not become a wild read or write.
inline void check_rows_in_range(const at::Tensor& idx, int64_t rows, const char* op) {
  const at::Tensor i = idx.contiguous();
  const int64_t* p = i.const_data_ptr<int64_t>();
  for (int64_t k = 0; k < i.numel(); ++k)
    TORCH_CHECK(p[k] >= 0 && p[k] < rows, op, ": idx[", k, "] = ", p[k],
                " is outside the store's rows [0, ", rows, ")");
}

// Batch sizes: idx.numel() rows of the store's row shape.
inline std::vector<int64_t> batch_sizes(const at::Tensor& store, int64_t batch) {
  std::vector<int64_t> sizes(store.sizes().begin(), store.sizes().end());
  sizes[0] = batch;
  return sizes;
}

inline void check_scatter_values(const at::Tensor& store, const at::Tensor& idx, const at::Tensor& values) {
  TORCH_CHECK(at::isFloatingType(values.scalar_type()), "aux_scatter_: values must be floating, got ",
              values.scalar_type());
  TORCH_CHECK(values.sizes() == at::IntArrayRef(batch_sizes(store, idx.numel())), "aux_scatter_: values have shape ",
              values.sizes(), " but ", idx.numel(), " rows of the store need ",
              at::IntArrayRef(batch_sizes(store, idx.numel())));
  TORCH_CHECK(values.device() == store.device(), "aux_scatter_: values are on ", values.device(),
              " but store is on ", store.device(), "; move them with .to(store.device)");
}

}  // namespace lpfast

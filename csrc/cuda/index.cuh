#pragma once
// 32-bit element indexing for the CUDA kernels that map an output element back to coordinates.
// GPUs have no integer divider: a 64-bit `/` and `%` by a runtime size is a long instruction
// sequence, and three of them per element cost more than the element's memory traffic. ATen's
// IntDivider turns a 32-bit division into a multiply-high and a shift.
#include <c10/macros/Macros.h>  // before IntegerDivider.cuh, which uses C10_HOST_DEVICE without it
#include <ATen/cuda/detail/IntegerDivider.cuh>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

namespace lpfast {

using Divider = at::cuda::detail::IntDivider<unsigned int>;

// The kernels index their output in 32 bits.
inline uint32_t index_count(int64_t numel, const char* op) {
  TORCH_CHECK(numel <= INT32_MAX, op, " (CUDA kernel): the output has ", numel,
              " elements, more than the 2^31 - 1 it indexes; split the batch");
  return uint32_t(numel);
}

// Memory-order index of an N×C×H×W tensor, contiguous or channels-last, to (n, c, i, j).
struct NchwIndex {
  Divider C, H, W;
  bool channels_last;

  NchwIndex(int64_t c, int64_t h, int64_t w, bool cl)
      : C(uint32_t(c)), H(uint32_t(h)), W(uint32_t(w)), channels_last(cl) {}

  C10_HOST_DEVICE inline void coords(uint32_t idx, int64_t& n, int64_t& c, int64_t& i, int64_t& j) const {
    if (channels_last) {
      auto q = C.divmod(idx);
      c = q.mod;
      q = W.divmod(q.div);
      j = q.mod;
      q = H.divmod(q.div);
      i = q.mod;
      n = q.div;
    } else {
      auto q = W.divmod(idx);
      j = q.mod;
      q = H.divmod(q.div);
      i = q.mod;
      q = C.divmod(q.div);
      c = q.mod;
      n = q.div;
    }
  }
};

// The inverse of NchwIndex::coords, in 64 bits: where element (n, c, i, j) of an N×C×H×W tensor
// with that layout lies.
C10_HOST_DEVICE inline int64_t nchw_offset(int64_t n, int64_t c, int64_t i, int64_t j, int64_t C, int64_t H,
                                           int64_t W, bool channels_last) {
  return channels_last ? ((n * H + i) * W + j) * C + c : ((n * C + c) * H + i) * W + j;
}

// Grid-stride loop bounds: the stride stays below 2^24 and indices below 2^31, so their sum cannot
// wrap a uint32_t.
constexpr int kThreads = 256;
constexpr uint32_t kMaxBlocks = 65535;

inline uint32_t blocks_for(uint32_t total) {
  return std::min<uint32_t>((total + kThreads - 1) / kThreads, kMaxBlocks);
}

__device__ __forceinline__ uint32_t first_index() { return blockIdx.x * kThreads + threadIdx.x; }
__device__ __forceinline__ uint32_t grid_stride() { return gridDim.x * kThreads; }

}  // namespace lpfast

// CUDA kernel of lpfast::crop_flip_normalise: one thread per output element, in the output's
// memory order (channels-last or contiguous), so writes are coalesced; 32-bit indices with
// multiply-shift division map an element to its coordinates.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../augment.h"
#include "index.cuh"

namespace lpfast {
namespace {

constexpr int kMaxChannels = 8;  // per-channel constants travel in the kernel's arguments

template <typename opmath_t>
struct Normalisation {
  opmath_t mean[kMaxChannels], std[kMaxChannels];
};

template <typename out_t>
__global__ void crop_flip_normalise_kernel(const uint8_t* __restrict__ img, const int64_t* __restrict__ off,
                                           const bool* __restrict__ flip, out_t* __restrict__ out,
                                           Normalisation<at::opmath_type<out_t>> norm, NchwIndex index,
                                           int64_t padding, uint32_t total) {
  using opmath_t = at::opmath_type<out_t>;
  const int64_t C = index.C.divisor, H = index.H.divisor, W = index.W.divisor;
  for (uint32_t e = first_index(); e < total; e += grid_stride()) {
    int64_t n, c, y, x;
    index.coords(e, n, c, y, x);
    int64_t sy, sx;
    const bool inside = crop_source(y, x, off[2 * n], off[2 * n + 1], flip[n], padding, H, W, sy, sx);
    const uint8_t v = inside ? img[nchw_offset(n, c, sy, sx, C, H, W, false)] : 0;
    out[e] = out_t((opmath_t(v) * opmath_t(1.0 / 255.0) - norm.mean[c]) / norm.std[c]);
  }
}

at::Tensor crop_flip_normalise_cuda(const at::Tensor& images_in, const at::Tensor& offsets_in,
                                    const at::Tensor& flips_in, int64_t padding, at::ArrayRef<double> mean,
                                    at::ArrayRef<double> std, at::ScalarType dtype, bool channels_last) {
  check_augment_args(images_in, offsets_in, flips_in, padding, mean, std, dtype);
  TORCH_CHECK(images_in.size(1) <= kMaxChannels, "crop_flip_normalise (CUDA kernel): at most ", kMaxChannels,
              " channels, got ", images_in.size(1));
  const c10::cuda::CUDAGuard guard(images_in.device());
  const at::Tensor images = images_in.contiguous(), offsets = offsets_in.contiguous(), flips = flips_in.contiguous();
  at::Tensor out = at::empty(images.sizes(), images.options().dtype(dtype).memory_format(
                                                 channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const uint32_t total = index_count(out.numel(), "crop_flip_normalise");
  const NchwIndex index(images.size(1), images.size(2), images.size(3), channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "crop_flip_normalise_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    Normalisation<opmath_t> norm{};
    for (int64_t c = 0; c < images.size(1); ++c) {
      norm.mean[c] = opmath_t(mean[c]);
      norm.std[c] = opmath_t(std[c]);
    }
    crop_flip_normalise_kernel<scalar_t><<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        images.const_data_ptr<uint8_t>(), offsets.const_data_ptr<int64_t>(), flips.const_data_ptr<bool>(),
        out.mutable_data_ptr<scalar_t>(), norm, index, padding, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CUDA, m) { m.impl("crop_flip_normalise", &crop_flip_normalise_cuda); }

}  // namespace lpfast

// CPU kernel of lpfast::crop_flip_normalise: uint8 images -> padded random crop + flip ->
// (x/255 - mean)/std in one pass over the output. A 256-entry table per channel holds every
// normalised value, so each output element is one table lookup.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "augment.h"

namespace lpfast {
namespace {

template <typename out_t>
void crop_flip_normalise_kernel(const at::Tensor& images, const at::Tensor& offsets, const at::Tensor& flips,
                                int64_t padding, at::ArrayRef<double> mean, at::ArrayRef<double> std,
                                at::Tensor& out, bool channels_last) {
  using opmath_t = at::opmath_type<out_t>;
  const int64_t N = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  std::vector<out_t> table(C * 256);
  for (int64_t c = 0; c < C; ++c)
    for (int v = 0; v < 256; ++v)  // the reference's (x * (1/255) - mean) / std, in opmath_t
      table[c * 256 + v] = out_t((opmath_t(v) * opmath_t(1.0 / 255.0) - opmath_t(mean[c])) / opmath_t(std[c]));
  const uint8_t* img = images.const_data_ptr<uint8_t>();
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  const bool* flip = flips.const_data_ptr<bool>();
  out_t* dst = out.mutable_data_ptr<out_t>();
  at::parallel_for(0, N * H, std::max<int64_t>(1, 4096 / (W * C)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H, y = r % H;
      for (int64_t c = 0; c < C; ++c) {
        const uint8_t* plane = img + (n * C + c) * H * W;
        const out_t* lut = table.data() + c * 256;
        // Channels-last: element (n, y, x, c); contiguous: (n, c, y, x).
        out_t* row = channels_last ? dst + r * W * C + c : dst + ((n * C + c) * H + y) * W;
        const int64_t step = channels_last ? C : 1;
        for (int64_t x = 0; x < W; ++x) {
          int64_t sy, sx;
          const bool inside = crop_source(y, x, off[2 * n], off[2 * n + 1], flip[n], padding, H, W, sy, sx);
          row[x * step] = lut[inside ? plane[sy * W + sx] : 0];
        }
      }
    }
  });
}

at::Tensor crop_flip_normalise_cpu(const at::Tensor& images_in, const at::Tensor& offsets_in,
                                   const at::Tensor& flips_in, int64_t padding, at::ArrayRef<double> mean,
                                   at::ArrayRef<double> std, at::ScalarType dtype, bool channels_last) {
  check_augment_args(images_in, offsets_in, flips_in, padding, mean, std, dtype);
  const at::Tensor images = images_in.contiguous(), offsets = offsets_in.contiguous(), flips = flips_in.contiguous();
  at::Tensor out = at::empty(images.sizes(), images.options().dtype(dtype).memory_format(
                                                 channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "crop_flip_normalise_cpu", [&] {
    crop_flip_normalise_kernel<scalar_t>(images, offsets, flips, padding, mean, std, out, channels_last);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CPU, m) { m.impl("crop_flip_normalise", &crop_flip_normalise_cpu); }

}  // namespace lpfast

// CUDA kernel of lpfast::penalty_residual: a grid-stride pass (16-byte packs where aligned) that
// writes the gradient and leaves one partial sum of r^2 per block; the partials are reduced on the device, so the op
// never synchronises with the host.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>

#include "../penalty_residual.h"
#include "packs.cuh"

namespace lpfast {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1024;

template <typename scalar_t, int V>
__global__ void penalty_residual_kernel(const scalar_t* __restrict__ o,
                                        const scalar_t* __restrict__ l,
                                        const scalar_t* __restrict__ m, scalar_t* __restrict__ g,
                                        int64_t n, at::opmath_type<scalar_t> inv_beta,
                                        at::opmath_type<scalar_t> scale, double* partial) {
  using opmath_t = at::opmath_type<scalar_t>;
  using BlockReduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename BlockReduce::TempStorage tmp;
  double acc = 0.0;
  auto residual = [&](scalar_t oi, scalar_t li, scalar_t mi) {
    opmath_t r = opmath_t(oi) - opmath_t(li);
    if (m != nullptr) r = r + opmath_t(mi) * inv_beta;
    acc += double(r) * double(r);
    return scalar_t(r * scale);
  };
  const int64_t first = blockIdx.x * int64_t(kThreads) + threadIdx.x, stride = int64_t(gridDim.x) * kThreads;
  const int64_t packs = n / V;
  for (int64_t p = first; p < packs; p += stride) {
    const Pack<scalar_t, V> po = load_pack<V>(o, p), pl = load_pack<V>(l, p);
    const Pack<scalar_t, V> pm = m != nullptr ? load_pack<V>(m, p) : Pack<scalar_t, V>{};
    Pack<scalar_t, V> pg;
#pragma unroll
    for (int k = 0; k < V; ++k) pg.v[k] = residual(po.v[k], pl.v[k], pm.v[k]);
    store_pack<V>(g, p, pg);
  }
  for (int64_t i = packs * V + first; i < n; i += stride)
    g[i] = residual(o[i], l[i], m != nullptr ? m[i] : scalar_t(0));
  const double block_sum = BlockReduce(tmp).Sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = block_sum;
}

std::tuple<at::Tensor, at::Tensor> penalty_residual_cuda(const at::Tensor& out,
                                                         const at::Tensor& lam,
                                                         const std::optional<at::Tensor>& mu,
                                                         double beta) {
  check_penalty_residual_args(out, lam, mu, beta);
  TORCH_CHECK(out.is_cuda(), "penalty_residual (CUDA kernel): out is on ", out.device());
  const c10::cuda::CUDAGuard guard(out.device());
  const auto fmt = out.suggest_memory_format();
  const at::Tensor o = out.contiguous(fmt);
  const at::Tensor l = lam.contiguous(fmt);
  const at::Tensor m = mu.has_value() ? mu->contiguous(fmt) : at::Tensor();
  at::Tensor grad = at::empty_like(o, fmt);
  const int64_t n = o.numel();
  const auto loss_opts = o.options().dtype(penalty_loss_dtype(o.scalar_type()));
  if (n == 0) return {at::zeros({}, loss_opts), grad};
  const double scale = beta / double(n);
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks);
  at::Tensor partial = at::empty({blocks}, o.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.scalar_type(), "penalty_residual_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* op = o.const_data_ptr<scalar_t>();
    const scalar_t* lp = l.const_data_ptr<scalar_t>();
    const scalar_t* mp = m.defined() ? m.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gp = grad.mutable_data_ptr<scalar_t>();
    auto launch = [&](auto kernel) {
      kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          op, lp, mp, gp, n, opmath_t(1.0 / beta), opmath_t(scale), partial.mutable_data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (packs_aligned({op, lp, mp, gp})) launch(penalty_residual_kernel<scalar_t, pack_width<scalar_t>()>);
    else launch(penalty_residual_kernel<scalar_t, 1>);
  });
  at::Tensor loss = partial.sum().mul(0.5 * scale).to(loss_opts.dtype());
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CUDA, m) { m.impl("penalty_residual", &penalty_residual_cuda); }

}  // namespace lpfast

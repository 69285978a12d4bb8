// CUDA kernel of lpfast::aux_update_: a grid-stride elementwise pass, in place on lam and mu.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../aux_update.h"

namespace lpfast {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

template <typename scalar_t>
__global__ void aux_update_kernel(scalar_t* __restrict__ l, scalar_t* __restrict__ m,
                                  const scalar_t* __restrict__ o, const scalar_t* __restrict__ g,
                                  int64_t n, at::opmath_type<scalar_t> beta,
                                  at::opmath_type<scalar_t> eta,
                                  at::opmath_type<scalar_t> eta_over_beta, bool update_mu) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kThreads) {
    const opmath_t oi = o[i], li = l[i], mi = m != nullptr ? opmath_t(m[i]) : opmath_t(0);
    const opmath_t lnew = li + eta * (oi - li) + eta_over_beta * (mi - opmath_t(g[i]));
    l[i] = scalar_t(lnew);
    if (update_mu) m[i] = scalar_t(mi + beta * (oi - lnew));
  }
}

void aux_update_cuda(const at::Tensor& lam, const std::optional<at::Tensor>& mu,
                     const at::Tensor& out, const at::Tensor& grad, double beta, double eta,
                     bool update_mu) {
  check_aux_update_args(lam, mu, out, grad, beta, update_mu);
  TORCH_CHECK(lam.is_cuda(), "aux_update_ (CUDA kernel): lam is on ", lam.device());
  const c10::cuda::CUDAGuard guard(lam.device());
  const auto fmt = lam.suggest_memory_format();
  const at::Tensor o = out.contiguous(fmt);
  const at::Tensor g = grad.contiguous(fmt);
  const int64_t n = lam.numel();
  if (n == 0) return;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lam.scalar_type(), "aux_update_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    aux_update_kernel<scalar_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        lam.mutable_data_ptr<scalar_t>(), mu.has_value() ? mu->mutable_data_ptr<scalar_t>() : nullptr,
        o.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), n, opmath_t(beta),
        opmath_t(eta), opmath_t(eta / beta), update_mu);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CUDA, m) { m.impl("aux_update_", &aux_update_cuda); }

}  // namespace lpfast

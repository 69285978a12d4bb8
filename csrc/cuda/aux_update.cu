// CUDA kernel of lpfast::aux_update_: a grid-stride elementwise pass (16-byte packs where
// aligned), in place on lam and mu.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../aux_update.h"
#include "packs.cuh"

namespace lpfast {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

template <typename scalar_t, int V>
__global__ void aux_update_kernel(scalar_t* __restrict__ l, scalar_t* __restrict__ m,
                                  const scalar_t* __restrict__ o, const scalar_t* __restrict__ g,
                                  int64_t n, at::opmath_type<scalar_t> beta,
                                  at::opmath_type<scalar_t> eta,
                                  at::opmath_type<scalar_t> eta_over_beta, bool update_mu) {
  using opmath_t = at::opmath_type<scalar_t>;
  // One element: returns the new λ and, through mi, the new μ.
  auto step = [&](scalar_t oi_, scalar_t li_, scalar_t& mi_, scalar_t gi_) {
    const opmath_t oi = oi_, li = li_, mi = m != nullptr ? opmath_t(mi_) : opmath_t(0);
    const opmath_t lnew = li + eta * (oi - li) + eta_over_beta * (mi - opmath_t(gi_));
    if (update_mu) mi_ = scalar_t(mi + beta * (oi - lnew));
    return scalar_t(lnew);
  };
  const int64_t first = blockIdx.x * int64_t(kThreads) + threadIdx.x, stride = int64_t(gridDim.x) * kThreads;
  const int64_t packs = n / V;
  for (int64_t p = first; p < packs; p += stride) {
    const Pack<scalar_t, V> po = load_pack<V>(o, p), pg = load_pack<V>(g, p);
    Pack<scalar_t, V> pl = load_pack<V>(l, p);
    Pack<scalar_t, V> pm = m != nullptr ? load_pack<V>(m, p) : Pack<scalar_t, V>{};
#pragma unroll
    for (int k = 0; k < V; ++k) pl.v[k] = step(po.v[k], pl.v[k], pm.v[k], pg.v[k]);
    store_pack<V>(l, p, pl);
    if (update_mu) store_pack<V>(m, p, pm);
  }
  for (int64_t i = packs * V + first; i < n; i += stride) {
    scalar_t mi = m != nullptr ? m[i] : scalar_t(0);
    l[i] = step(o[i], l[i], mi, g[i]);
    if (update_mu) m[i] = mi;
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
    scalar_t* lp = lam.mutable_data_ptr<scalar_t>();
    scalar_t* mp = mu.has_value() ? mu->mutable_data_ptr<scalar_t>() : nullptr;
    const scalar_t* op = o.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    auto launch = [&](auto kernel) {
      kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          lp, mp, op, gp, n, opmath_t(beta), opmath_t(eta), opmath_t(eta / beta), update_mu);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (packs_aligned({lp, mp, op, gp})) launch(aux_update_kernel<scalar_t, pack_width<scalar_t>()>);
    else launch(aux_update_kernel<scalar_t, 1>);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CUDA, m) { m.impl("aux_update_", &aux_update_cuda); }

}  // namespace lpfast

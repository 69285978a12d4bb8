// CPU kernel of lpfast::aux_update_: one pass over lam, mu, out and grad, updating lam and mu
// in place.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "aux_update.h"

namespace lpfast {
namespace {

constexpr int64_t kGrain = 1 << 15;

template <typename scalar_t>
void aux_update_range(scalar_t* __restrict__ l, scalar_t* __restrict__ m,
                      const scalar_t* __restrict__ o, const scalar_t* __restrict__ g, int64_t n,
                      scalar_t beta, scalar_t eta, scalar_t eta_over_beta, bool update_mu) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec vbeta(beta), veta(eta), vc(eta_over_beta), zero(scalar_t(0));
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    const Vec vo = Vec::loadu(o + i), vl = Vec::loadu(l + i);
    const Vec vm = m != nullptr ? Vec::loadu(m + i) : zero;
    const Vec lnew = vl + veta * (vo - vl) + vc * (vm - Vec::loadu(g + i));
    lnew.store(l + i);
    if (update_mu) (vm + vbeta * (vo - lnew)).store(m + i);
  }
  for (; i < n; ++i) {
    const scalar_t mi = m != nullptr ? m[i] : scalar_t(0);
    const scalar_t lnew = l[i] + eta * (o[i] - l[i]) + eta_over_beta * (mi - g[i]);
    l[i] = lnew;
    if (update_mu) m[i] = mi + beta * (o[i] - lnew);
  }
}

// 16-bit storage: arithmetic in float, one rounding per stored value.
template <typename scalar_t>
void aux_update_range_reduced(scalar_t* __restrict__ l, scalar_t* __restrict__ m,
                              const scalar_t* __restrict__ o, const scalar_t* __restrict__ g,
                              int64_t n, float beta, float eta, float eta_over_beta,
                              bool update_mu) {
  for (int64_t i = 0; i < n; ++i) {
    const float oi = float(o[i]), li = float(l[i]), mi = m != nullptr ? float(m[i]) : 0.f;
    const float lnew = li + eta * (oi - li) + eta_over_beta * (mi - float(g[i]));
    l[i] = scalar_t(lnew);
    if (update_mu) m[i] = scalar_t(mi + beta * (oi - lnew));
  }
}

void aux_update_cpu(const at::Tensor& lam, const std::optional<at::Tensor>& mu,
                    const at::Tensor& out, const at::Tensor& grad, double beta, double eta,
                    bool update_mu) {
  check_aux_update_args(lam, mu, out, grad, beta, update_mu);
  TORCH_CHECK(lam.device().is_cpu(), "aux_update_ (CPU kernel): lam is on ", lam.device());
  const auto fmt = lam.suggest_memory_format();
  const at::Tensor o = out.contiguous(fmt);
  const at::Tensor g = grad.contiguous(fmt);
  const int64_t n = lam.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lam.scalar_type(), "aux_update_cpu", [&] {
    scalar_t* lp = lam.mutable_data_ptr<scalar_t>();
    scalar_t* mp = mu.has_value() ? mu->mutable_data_ptr<scalar_t>() : nullptr;
    const scalar_t* op = o.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
        aux_update_range<scalar_t>(lp + begin, mp ? mp + begin : nullptr, op + begin, gp + begin,
                                   end - begin, scalar_t(beta), scalar_t(eta),
                                   scalar_t(eta / beta), update_mu);
      } else {
        aux_update_range_reduced<scalar_t>(lp + begin, mp ? mp + begin : nullptr, op + begin,
                                           gp + begin, end - begin, float(beta), float(eta),
                                           float(eta / beta), update_mu);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CPU, m) { m.impl("aux_update_", &aux_update_cpu); }

}  // namespace lpfast

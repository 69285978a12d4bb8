// CPU kernel of lpfast::penalty_residual: one pass over out, lam (and mu) that writes the
// gradient and reduces the squared residual.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <numeric>
#include <vector>

#include "penalty_residual.h"

namespace lpfast {
namespace {

// Fixed chunking makes the loss independent of the thread count: each chunk's partial sum is
// computed by one thread, and the partials are added in chunk order.
constexpr int64_t kChunk = 1 << 15;

template <typename scalar_t>
double penalty_chunk(const scalar_t* __restrict__ o, const scalar_t* __restrict__ l,
                     const scalar_t* __restrict__ m, scalar_t* __restrict__ g, int64_t n,
                     scalar_t inv_beta, scalar_t scale) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec vinv(inv_beta), vscale(scale);
  Vec acc(scalar_t(0));
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    Vec r = Vec::loadu(o + i) - Vec::loadu(l + i);
    if (m != nullptr) r = r + Vec::loadu(m + i) * vinv;
    (r * vscale).store(g + i);
    acc = at::vec::fmadd(r, r, acc);
  }
  double sum = at::vec::vec_reduce_all<scalar_t>([](Vec& a, Vec& b) { return a + b; }, acc);
  for (; i < n; ++i) {
    scalar_t r = o[i] - l[i];
    if (m != nullptr) r = r + m[i] * inv_beta;
    g[i] = r * scale;
    sum += double(r) * double(r);
  }
  return sum;
}

// 16-bit storage: arithmetic in float, one rounding when the gradient is stored.
template <typename scalar_t>
double penalty_chunk_reduced(const scalar_t* __restrict__ o, const scalar_t* __restrict__ l,
                             const scalar_t* __restrict__ m, scalar_t* __restrict__ g, int64_t n,
                             float inv_beta, float scale) {
  float acc = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    float r = float(o[i]) - float(l[i]);
    if (m != nullptr) r = r + float(m[i]) * inv_beta;
    g[i] = scalar_t(r * scale);
    acc += r * r;
  }
  return acc;
}

std::tuple<at::Tensor, at::Tensor> penalty_residual_cpu(const at::Tensor& out,
                                                        const at::Tensor& lam,
                                                        const std::optional<at::Tensor>& mu,
                                                        double beta) {
  check_penalty_residual_args(out, lam, mu, beta);
  TORCH_CHECK(out.device().is_cpu(), "penalty_residual (CPU kernel): out is on ", out.device());
  // Elementwise work is layout-agnostic: bring all operands to out's dense layout (a no-op for
  // contiguous and channels-last inputs) and walk memory linearly.
  const auto fmt = out.suggest_memory_format();
  const at::Tensor o = out.contiguous(fmt);
  const at::Tensor l = lam.contiguous(fmt);
  const at::Tensor m = mu.has_value() ? mu->contiguous(fmt) : at::Tensor();
  at::Tensor grad = at::empty_like(o, fmt);
  const int64_t n = o.numel();
  const double scale = n > 0 ? beta / double(n) : 0.0;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(nchunks, 0.0);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.scalar_type(), "penalty_residual_cpu", [&] {
    const scalar_t* op = o.const_data_ptr<scalar_t>();
    const scalar_t* lp = l.const_data_ptr<scalar_t>();
    const scalar_t* mp = m.defined() ? m.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gp = grad.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, nchunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t s = c * kChunk, len = std::min(kChunk, n - s);
        if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
          partial[c] = penalty_chunk<scalar_t>(op + s, lp + s, mp ? mp + s : nullptr, gp + s, len,
                                               scalar_t(1.0 / beta), scalar_t(scale));
        } else {
          partial[c] = penalty_chunk_reduced<scalar_t>(op + s, lp + s, mp ? mp + s : nullptr,
                                                       gp + s, len, float(1.0 / beta), float(scale));
        }
      }
    });
  });
  const double total = std::accumulate(partial.begin(), partial.end(), 0.0);
  at::Tensor loss = at::scalar_tensor(0.5 * scale * total,
                                      o.options().dtype(penalty_loss_dtype(o.scalar_type())));
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(lpfast, CPU, m) { m.impl("penalty_residual", &penalty_residual_cpu); }

}  // namespace lpfast

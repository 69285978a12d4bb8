#pragma once
// Argument checks shared by the CPU and CUDA kernels of lpfast::penalty_residual.
#include <ATen/ATen.h>
#include <optional>

namespace lpfast {

inline void check_penalty_residual_args(const at::Tensor& out, const at::Tensor& lam,
                                        const std::optional<at::Tensor>& mu, double beta) {
  TORCH_CHECK(beta > 0.0, "penalty_residual: beta must be > 0, got ", beta);
  TORCH_CHECK(at::isFloatingType(out.scalar_type()),
              "penalty_residual: out must be a floating tensor, got ", out.scalar_type());
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.sizes() == out.sizes(), "penalty_residual: ", name, " has shape ", t.sizes(),
                " but out has shape ", out.sizes(), "; they must match");
    TORCH_CHECK(t.scalar_type() == out.scalar_type(), "penalty_residual: ", name, " has dtype ",
                t.scalar_type(), " but out has dtype ", out.scalar_type(),
                "; cast it with .to(out.dtype)");
    TORCH_CHECK(t.device() == out.device(), "penalty_residual: ", name, " is on ", t.device(),
                " but out is on ", out.device(), "; move it with .to(out.device)");
  };
  same(lam, "lam");
  if (mu.has_value()) same(*mu, "mu");
}

// 16-bit inputs report their loss in float32; float32/float64 keep their dtype.
inline at::ScalarType penalty_loss_dtype(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

}  // namespace lpfast

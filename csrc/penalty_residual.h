#pragma once
// Argument checks shared by the CPU and CUDA kernels of lpfast::penalty_residual.
#include <ATen/core/Tensor.h>
#include <optional>

#include "checks.h"

namespace lpfast {

inline void check_penalty_residual_args(const at::Tensor& out, const at::Tensor& lam,
                                        const std::optional<at::Tensor>& mu, double beta) {
  TORCH_CHECK(beta > 0.0, "penalty_residual: beta must be > 0, got ", beta);
  TORCH_CHECK(at::isFloatingType(out.scalar_type()),
              "penalty_residual: out must be a floating tensor, got ", out.scalar_type());
  check_matches(lam, out, "penalty_residual", "lam", "out");
  if (mu.has_value()) check_matches(*mu, out, "penalty_residual", "mu", "out");
}

// 16-bit inputs report their loss in float32; float32/float64 keep their dtype.
inline at::ScalarType penalty_loss_dtype(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

}  // namespace lpfast

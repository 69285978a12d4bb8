#pragma once
// Argument checks shared by the CPU and CUDA kernels of lpfast::aux_update_.
#include <ATen/core/Tensor.h>
#include <optional>

#include "checks.h"

namespace lpfast {

inline void check_aux_update_args(const at::Tensor& lam, const std::optional<at::Tensor>& mu,
                                  const at::Tensor& out, const at::Tensor& grad, double beta,
                                  bool update_mu) {
  TORCH_CHECK(beta > 0.0, "aux_update_: beta must be > 0, got ", beta);
  TORCH_CHECK(at::isFloatingType(lam.scalar_type()),
              "aux_update_: lam must be a floating tensor, got ", lam.scalar_type());
  TORCH_CHECK(lam.is_contiguous(lam.suggest_memory_format()),
              "aux_update_: lam is updated in place and must be dense (contiguous or channels-last)");
  TORCH_CHECK(!update_mu || mu.has_value(), "aux_update_: update_mu=True needs mu");
  check_matches(out, lam, "aux_update_", "out", "lam");
  check_matches(grad, lam, "aux_update_", "grad", "lam");
  if (mu.has_value()) {
    check_matches(*mu, lam, "aux_update_", "mu", "lam");
    TORCH_CHECK(mu->strides() == lam.strides(),
                "aux_update_: mu must have lam's memory layout (both are updated in place)");
  }
}

}  // namespace lpfast

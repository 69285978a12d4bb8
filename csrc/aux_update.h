#pragma once
// Argument checks shared by the CPU and CUDA kernels of lpfast::aux_update_.
#include <ATen/ATen.h>
#include <optional>

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
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.sizes() == lam.sizes(), "aux_update_: ", name, " has shape ", t.sizes(),
                " but lam has shape ", lam.sizes(), "; they must match");
    TORCH_CHECK(t.scalar_type() == lam.scalar_type(), "aux_update_: ", name, " has dtype ",
                t.scalar_type(), " but lam has dtype ", lam.scalar_type(),
                "; cast it with .to(lam.dtype)");
    TORCH_CHECK(t.device() == lam.device(), "aux_update_: ", name, " is on ", t.device(),
                " but lam is on ", lam.device(), "; move it with .to(lam.device)");
  };
  same(out, "out");
  same(grad, "grad");
  if (mu.has_value()) {
    same(*mu, "mu");
    TORCH_CHECK(mu->strides() == lam.strides(),
                "aux_update_: mu must have lam's memory layout (both are updated in place)");
  }
}

}  // namespace lpfast

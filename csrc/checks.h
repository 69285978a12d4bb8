#pragma once
// Argument checks shared by lpfast's kernels.
#include <ATen/core/Tensor.h>

namespace lpfast {

// `t` (called `name`) must have the shape, dtype and device of `ref` (called `ref_name`).
inline void check_matches(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name,
                          const char* ref_name) {
  TORCH_CHECK(t.sizes() == ref.sizes(), op, ": ", name, " has shape ", t.sizes(), " but ", ref_name,
              " has shape ", ref.sizes(), "; they must match");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but ", ref_name, " has dtype ", ref.scalar_type(), "; cast it with .to(", ref_name, ".dtype)");
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name,
              " is on ", ref.device(), "; move it with .to(", ref_name, ".device)");
}

}  // namespace lpfast

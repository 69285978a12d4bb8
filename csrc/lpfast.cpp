// Schemas of every lpfast op. Implementations register per device in their own files
// (TORCH_LIBRARY_IMPL(lpfast, CPU, ...) in csrc/*.cpp, (..., CUDA, ...) in csrc/cuda/*.cu).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing lpfast._C loads this shared library, which runs the static registrations below.
// The module itself is empty: the ops are reached through torch.ops.lpfast.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(lpfast, m) {
  // Penalty term of one cut (ALGORITHM.md §3-§4): r = out - lam + mu/beta,
  // loss = beta/2 * mean(r^2), grad = d loss / d out = beta * r / numel.
  m.def("penalty_residual(Tensor out, Tensor lam, Tensor? mu, float beta) -> (Tensor loss, Tensor grad)");
}

// Schemas of every lpfast op. Implementations register per device in their own files
// (TORCH_LIBRARY_IMPL(lpfast, CPU, ...) in csrc/*.cpp, (..., CUDA, ...) in csrc/cuda/*.cu).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing lpfast._C loads this shared library, which runs the static registrations below.
// The ops are reached through torch.ops.lpfast; the module holds one flag, `openmp`: whether
// at::parallel_for (an inline template over `#pragma omp parallel`) runs the CPU kernels on
// torch's threads, or, built without -fopenmp, on one.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
#ifdef _OPENMP
  const int openmp = 1;
#else
  const int openmp = 0;
#endif
  if (module != nullptr && PyModule_AddIntConstant(module, "openmp", openmp) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

TORCH_LIBRARY(lpfast, m) {
  // Penalty term of one cut (ALGORITHM.md §3-§4): r = out - lam + mu/beta,
  // loss = beta/2 * mean(r^2), grad = d loss / d out = beta * r / numel.
  m.def("penalty_residual(Tensor out, Tensor lam, Tensor? mu, float beta) -> (Tensor loss, Tensor grad)");
  // Auxiliary-variable step of one cut, in place (ALGORITHM.md §3-§4), with grad the next
  // stage's per-sample input gradient and eta relative to the closed-form step (eta = 1):
  // lam <- lam + eta*(out - lam) + (eta/beta)*(mu - grad); then, if update_mu,
  // mu <- mu + beta*(out - lam).
  m.def("aux_update_(Tensor(a!) lam, Tensor(b!)? mu, Tensor out, Tensor grad, float beta, float eta, bool update_mu) -> ()");
  // Down-sampling filter of a tensor that crosses a cut (ALGORITHM.md §6): s×s average pooling
  // with stride s, cast to the wire dtype, in x's memory format (dense, ready to send).
  m.def("ds_encode(Tensor x, int factor, ScalarType wire_dtype) -> Tensor");
  // Its inverse on receipt: up-sampling by s (mode 0 nearest, 1 bilinear with half-pixel
  // centres, as F.interpolate(align_corners=False)), cast to out_dtype.
  m.def("ds_decode(Tensor y, int factor, int mode, ScalarType out_dtype) -> Tensor");
  // Rows idx of an auxiliary-variable store (N × row shape, dense) as a batch in `dtype`, and
  // back into the store in its own dtype (idx: distinct int64 rows; with repeated rows the
  // last write that lands wins, in no defined order).
  m.def("aux_gather(Tensor store, Tensor idx, ScalarType dtype) -> Tensor");
  m.def("aux_scatter_(Tensor(a!) store, Tensor idx, Tensor values) -> ()");
  // Data augmentation of a uint8 batch in one pass: zero-pad by `padding`, crop H×W at
  // offsets[n] = (row, column) of the padded image, mirror where flips[n], then
  // (x/255 - mean[c]) / std[c] in `dtype`, channels-last or contiguous.
  m.def("crop_flip_normalise(Tensor images, Tensor offsets, Tensor flips, int padding, float[] mean, float[] std, ScalarType dtype, bool channels_last) -> Tensor");
}

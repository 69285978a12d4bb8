"""Builds lpfast._C: the C++ kernels always, the CUDA kernels when nvcc and a CUDA torch exist.

LPFAST_CUDA=0 skips the CUDA sources, LPFAST_CUDA=1 requires them (it fails loudly if they
cannot be built). LPFAST_CPU_CAPABILITY=DEFAULT|AVX2 picks the vector width of the CPU kernels
(default: AVX2 when the building machine has it).
"""
import glob
import os
import shutil
import sys
from pathlib import Path

# torch guesses CUDA_HOME from the first `nvcc` on PATH; a wrapper script in /usr/local/bin makes
# that guess /usr/local, where no libcudart lives. Prefer the toolkit's own folder.
if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = Path(__file__).parent


def want_cuda() -> bool:
    flag = os.environ.get("LPFAST_CUDA", "auto")
    if flag not in ("0", "1", "auto"):
        sys.exit(f"LPFAST_CUDA must be 0, 1 or unset, got {flag!r}")
    available = CUDA_HOME is not None and torch.version.cuda is not None
    if flag == "1" and not available:
        sys.exit(
            "LPFAST_CUDA=1 but the CUDA sources cannot be built: "
            f"CUDA_HOME={CUDA_HOME!r}, torch CUDA version={torch.version.cuda!r}. "
            "Install a CUDA build of torch and the CUDA toolkit (set CUDA_HOME), or use LPFAST_CUDA=0."
        )
    return flag == "1" or (flag == "auto" and available)


def cpu_capability_flags() -> list[str]:
    cap = os.environ.get("LPFAST_CPU_CAPABILITY")
    if cap is None:
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        cap = "AVX2" if all(f in flags for f in (" avx2", " fma", " f16c")) else "DEFAULT"
    if cap == "AVX2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    if cap == "DEFAULT":
        return ["-DCPU_CAPABILITY=DEFAULT"]
    sys.exit(f"LPFAST_CPU_CAPABILITY must be AVX2 or DEFAULT, got {cap!r}")


def cuda_include_dirs() -> list[str]:
    # ATen's CUDA headers include cusparse.h, which pip's CUDA torch ships in nvidia/cu*/include
    # while a bare toolkit may lack it.
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for base in spec.submodule_search_locations:
        found += sorted(str(p.parent) for p in Path(base).glob("*/include/cusparse.h"))
    return found


def extensions():
    # Exact float semantics (no fused multiply-add contraction) keep the kernels bit-comparable
    # with their PyTorch references.
    # -fopenmp: at::parallel_for is a header template over `#pragma omp parallel`; without the flag
    # it silently runs every CPU kernel on one thread. The .so then shares torch's libgomp.
    cxx = ["-O3", "-std=c++20", "-ffp-contract=off", "-fopenmp", *cpu_capability_flags()]
    sources = sorted(glob.glob("csrc/*.cpp"))
    if want_cuda():
        if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
            # No GPU to read the architecture from: build for A100 and H100, with PTX for newer ones.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        print("lpfast: building CPU and CUDA kernels", file=sys.stderr)
        return [
            CUDAExtension(
                "lpfast._C",
                sources + sorted(glob.glob("csrc/cuda/*.cu")),
                include_dirs=cuda_include_dirs(),
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++20", "--fmad=false", "-lineinfo"]},
                extra_link_args=["-fopenmp"],
            )
        ]
    print("lpfast: building CPU kernels only", file=sys.stderr)
    return [CppExtension("lpfast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])]


if shutil.which("ninja") is None:
    print("lpfast: ninja not found, the build will be slow (pip install ninja)", file=sys.stderr)

setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtension})

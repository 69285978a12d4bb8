"""``python -m lpfast.info``: which torch, which device, which compiled kernels."""
from __future__ import annotations

import torch

from lpfast import __version__, ops

DISPATCH_KEYS = ("CPU", "CUDA")


def kernel_devices(op_name: str) -> list[str]:
    """Devices for which ``lpfast::op_name`` has a compiled kernel registered."""
    qualified = f"lpfast::{op_name}"
    return [key for key in DISPATCH_KEYS if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key)]


def report() -> str:
    lines = [
        f"lpfast {__version__}",
        f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}), CPU threads {torch.get_num_threads()}",
        f"CUDA devices: {', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or 'none'}",
        f"compiled kernels (lpfast._C): {'loaded' if ops.LOAD_ERROR is None else 'NOT loaded: ' + ops.LOAD_ERROR}",
    ]
    if ops.LOAD_ERROR is None:
        lines.append("CPU kernels: " + ("parallel (OpenMP, torch's threads)" if ops.PARALLEL_CPU else "ONE thread (built without OpenMP)"))
    for name in ops.OP_NAMES:
        devices = kernel_devices(name) if ops.LOAD_ERROR is None else []
        lines.append(f"  lpfast::{name:<24} {', '.join(devices) or 'no kernel'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())

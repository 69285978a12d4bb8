"""Down-sampling (DS) filters for the tensors that cross a cut (ALGORITHM.md §6).

A filter turns a tensor into its wire form before sending (``encode``) and back on receipt
(``decode``). :class:`DsFilter` is lpfast's: s×s average pooling with stride s plus a cast to the
wire dtype, undone by nearest or bilinear up-sampling, each one pass of a fused kernel. Any object
with the same four members can take its place (``LayerParallel(..., wire_filter=...)``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lpfast import ops

WIRE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class DsFilter:
    """``factor``×``factor`` average pooling, cast to ``wire_dtype`` (None: keep the tensor's dtype);
    up-sampled by ``mode`` on receipt.

    With ``factor=1`` and no cast the filter is the identity and costs nothing (no copy is made),
    so "no filter" and "s=1, float32" give bit-identical float32 runs.
    """

    def __init__(self, factor: int = 1, wire_dtype: torch.dtype | None = None, mode: str = "nearest") -> None:
        if factor < 1:
            raise ValueError(f"DS factor must be >= 1, got {factor}")
        if wire_dtype is not None and wire_dtype not in WIRE_DTYPES.values():
            raise ValueError(f"wire dtype must be one of {', '.join(WIRE_DTYPES)}, got {wire_dtype}")
        if mode not in ops.DS_MODES:
            raise ValueError(f"up-sampling mode must be one of {', '.join(ops.DS_MODES)}, got {mode!r}")
        self.factor, self.wire_dtype, self.mode = factor, wire_dtype, mode

    def check_shape(self, shape: Sequence[int]) -> None:
        """Raises a ValueError unless the filter applies to per-sample tensors of ``shape``."""
        if self.factor == 1:
            return
        if len(shape) != 3 or shape[1] % self.factor or shape[2] % self.factor:
            raise ValueError(f"DS factor {self.factor} does not divide the cut's feature map {tuple(shape)}: choose a factor that divides H and W")

    def wire_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Shape on the wire of a batch of ``shape`` (N×C×H×W → N×C×H/s×W/s)."""
        if self.factor == 1:
            return tuple(shape)
        n, c, h, w = shape
        return (n, c, h // self.factor, w // self.factor)

    def dtype_on_wire(self, dtype: torch.dtype) -> torch.dtype:
        return self.wire_dtype or dtype

    def encode(self, t: Tensor) -> Tensor:
        wire = self.dtype_on_wire(t.dtype)
        if self.factor == 1:
            return t if t.dtype == wire else t.to(wire)
        return ops.ds_encode(t, self.factor, wire)

    def decode(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        if self.factor == 1:
            return t if t.dtype == dtype else t.to(dtype)
        return ops.ds_decode(t, self.factor, self.mode, dtype)

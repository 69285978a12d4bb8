"""Down-sampling (DS) filters for the tensors that cross a cut (ALGORITHM.md §6).

:class:`DsFilter` is lpfast's: s×s average pooling with stride s plus a cast to the wire dtype
(``encode``), undone by nearest or bilinear up-sampling (``decode``), each one pass of a fused
kernel. In the parallel phase a cut's constraint then binds the low-pass part of the tensors:
stage k regresses its pooled output onto the pooled target (``pool``, differentiable), and the
owner of λ_k corrects only λ_k's low-pass part toward the pooled output it received (``lift``),
keeping λ's detail. Any object with the same members can take its place
(``LayerParallel(..., wire_filter=...)``).
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
        """Pooled and cast in one pass: the wire form of ``t``."""
        if self.factor == 1:
            return self.cast(t)
        return ops.ds_encode(t, self.factor, self.dtype_on_wire(t.dtype))

    def pool(self, t: Tensor) -> Tensor:
        """The low-pass part that crosses the wire, differentiable, in t's dtype."""
        return t if self.factor == 1 else ops.ds_encode(t, self.factor, t.dtype)

    def cast(self, t: Tensor) -> Tensor:
        """``t`` in the wire dtype (a no-op without one)."""
        wire = self.dtype_on_wire(t.dtype)
        return t if t.dtype == wire else t.to(wire)

    def lift(self, received: Tensor, reference: Tensor) -> Tensor:
        """Full-resolution estimate of a tensor of which ``received`` is the wire form:
        ``reference`` with its low-pass part replaced by the received one (just ``received`` in
        the reference's dtype when nothing is pooled)."""
        if self.factor == 1:
            return received.to(reference.dtype)
        correction = received.to(reference.dtype) - ops.ds_encode(reference, self.factor, reference.dtype)
        return reference + ops.ds_decode(correction, self.factor, self.mode, reference.dtype)

    def decode(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        if self.factor == 1:
            return t if t.dtype == dtype else t.to(dtype)
        return ops.ds_decode(t, self.factor, self.mode, dtype)

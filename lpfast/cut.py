"""One cut of the layer-parallel phase: the constraint that stage c's output equals λ_c, the input of
stage c+1 (ALGORITHM.md §2-§4), seen from either side. Each side lives with its stage's worker.

- :class:`CutInput`, with stage c+1, which owns λ_c (and μ_c): it gathers the batch's λ as the
  stage's input and sends stage c its regression target λ - μ/β; after the θ-step it receives
  stage c's output and takes the λ-step (and μ-step) with the stage's input gradient, and keeps
  the cut's violation statistics.
- :class:`CutOutput`, with stage c: it sends the stage's output on and backpropagates through
  the stage the penalty β/2·mean((out - target)²) (plus α·CE of a local head) against the target
  it receives.

With a DS filter both tensors that cross are pooled: the penalty compares pooled tensors, and the
λ-step corrects the low-pass part of λ toward the pooled output (:mod:`lpfast.filters`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpfast import ops
from lpfast.auxnet import NetAux
from lpfast.auxvars import StoredAux
from lpfast.filters import DsFilter
from lpfast.localheads import LocalHead
from lpfast.transport import Pending, Transport


class _Side:
    """What both sides share: the cut's index and per-sample shape, the wire filter and the transport."""

    def __init__(self, cut: int, shape: Sequence[int], wire: DsFilter, transport: Transport, *,
                 dtype: torch.dtype, device: torch.device, memory_format: torch.memory_format) -> None:
        self.cut, self.shape, self.wire, self.transport = cut, tuple(shape), wire, transport
        self.dtype, self.device, self.memory_format = dtype, device, memory_format

    def _receive(self, batch: int, src: int, dst: int) -> Pending:
        """Posts the receive of a filtered batch crossing this cut."""
        shape = self.wire.wire_shape((batch, *self.shape))
        return self.transport.irecv(shape, self.wire.dtype_on_wire(self.dtype), self.device, src, dst, memory_format=self.memory_format)

    def _send(self, tensor: Tensor, src: int, dst: int) -> None:
        self.transport.isend(tensor, src, dst, memory_format=self.memory_format)


class CutInput(_Side):
    """Cut c as stage c+1 sees it: λ_c (and μ_c) in ``aux`` and the cut's statistics."""

    def __init__(self, cut: int, shape: Sequence[int], aux: StoredAux | NetAux, wire: DsFilter, transport: Transport, **layout) -> None:
        super().__init__(cut, shape, wire, transport, **layout)
        self.aux = aux
        self._batch: tuple | None = None
        self.reset_statistics()

    def begin(self, x: Tensor, idx: Tensor, flips: Tensor | None, beta: float) -> Tensor:
        """Gathers the batch's λ (and μ), sends stage c the target λ - μ/β (filtered: a low-pass
        target) and posts the receive of stage c's output. Returns λ, stage c+1's input."""
        lam, mu = self.aux.fetch(x, idx, flips)
        target = lam if mu is None else lam - mu * (1.0 / beta)
        self._send(self.wire.encode(target), self.cut + 1, self.cut)
        self._batch = (x, idx, flips, lam, mu, self._receive(idx.numel(), self.cut, self.cut + 1))
        return lam

    def finish(self, input_grad: Tensor, *, beta: float, eta: float, update_mu: bool) -> None:
        """The λ-step (and μ-step) with stage c+1's per-sample input gradient ``input_grad``, toward
        the output stage c sent; the updated rows are stored back."""
        x, idx, flips, lam, mu, received = self._batch
        self._batch = None
        out_prev = self.wire.lift(received.wait(), lam)
        self.violation_sq += (out_prev - lam).square().sum()
        self.lam_sq += lam.square().sum()
        ops.aux_update_(lam, mu, out_prev, input_grad, beta=beta, eta=eta, update_mu=update_mu)
        self.aux.update(x, idx, lam, mu, flips)

    def reset_statistics(self) -> None:
        self.violation_sq = torch.zeros((), dtype=torch.float64, device=self.device)
        self.lam_sq = torch.zeros((), dtype=torch.float64, device=self.device)

    def relative_violation(self) -> Tensor:
        """‖φ_c(λ_{c-1}) − λ_c‖ / ‖λ_c‖ over the steps since the statistics were reset."""
        return (self.violation_sq / self.lam_sq.clamp_min(1e-30)).sqrt()

    def statistics(self) -> dict[str, Tensor]:
        return {"violation_sq": self.violation_sq, "lam_sq": self.lam_sq}

    def load_statistics(self, state: dict[str, Tensor]) -> None:
        self.violation_sq, self.lam_sq = state["violation_sq"], state["lam_sq"]


class CutOutput(_Side):
    """Cut c as stage c sees it: the target it regresses onto, and its local head (``local_loss`` α > 0)."""

    def __init__(self, cut: int, shape: Sequence[int], wire: DsFilter, transport: Transport, *,
                 head: LocalHead | None, local_loss: float, **layout) -> None:
        super().__init__(cut, shape, wire, transport, **layout)
        self.head, self.local_loss = head, local_loss
        self._target: Pending | None = None

    def begin(self, batch: int) -> None:
        """Posts the receive of the batch's target from stage c+1."""
        self._target = self._receive(batch, self.cut + 1, self.cut)

    def backward(self, out: Tensor, y: Tensor, *, beta: float, params: list[nn.Parameter] | None,
                 weight: float = 1.0) -> tuple[Tensor, Tensor]:
        """Sends stage c's output ``out`` on, then backpropagates the penalty against the target (and
        α·CE of the head) through the stage, times ``weight`` (a micro-batch's share of its batch).
        With ``params`` (a stage whose input is λ) the head's term reaches those parameters only:
        λ's step follows the constraint objective alone.
        Returns the loss (detached, unweighted) and the tensor sent (to be kept alive until it has left)."""
        coarse = self.wire.pool(out)  # with a DS filter the constraint binds the low-pass part
        sent = self.wire.cast(coarse.detach())
        self._send(sent, self.cut, self.cut + 1)
        target = self._target.wait().to(self.dtype)
        self._target = None
        # The penalty in the cut's dtype, whatever the forward's (under autocast, bfloat16) was.
        loss, grad_coarse = ops.penalty_residual(coarse.detach().to(self.dtype), target, None, beta=beta)
        if weight != 1.0:
            grad_coarse = grad_coarse.mul_(weight)
        grad_coarse = grad_coarse.to(coarse.dtype)
        if self.head is None:
            coarse.backward(grad_coarse)
            return loss, sent
        local = self.local_loss * F.cross_entropy(self.head(out).to(self.dtype), y)
        weighted = local * weight if weight != 1.0 else local
        if params is None:
            torch.autograd.backward([coarse, weighted], [grad_coarse, None])
        else:
            coarse.backward(grad_coarse, retain_graph=True)
            weighted.backward(inputs=params)
        return loss + local.detach(), sent

    def reduction_size(self, batch: int) -> float:
        """The penalty is a mean over the batch's (pooled) elements: times this, a sum per sample."""
        return float(math.prod(self.wire.wire_shape((1, *self.shape))[1:]) * batch)

"""The parallel phase with auxiliary variables (``aux="store"`` or ``"net"``): K stages training at
once, tied by λ (and multipliers μ) per cut (ALGORITHM.md §2-§4, §7).

Cut ``c`` joins stage ``c`` to stage ``c+1``; its auxiliary variables λ_c (and μ_c for the augmented
Lagrangian) belong to stage ``c+1``, whose input they are. One step on a batch:

1. every stage ``s ≥ 1`` gathers λ_{s-1} (and μ_{s-1}) for the batch and sends stage ``s-1`` its
   regression target ``λ - μ/β``;
2. every stage computes its output from its own input (the images for stage 0, λ_{s-1} otherwise);
   stages ``s < K-1`` send the output on and take the penalty ``β/2·mean((out - target)²)``, the
   last stage the cross-entropy; each backpropagates and steps its own optimizer (θ-step). With a
   DS filter both crossing tensors are pooled and the penalty compares pooled tensors;
3. every stage ``s ≥ 1`` receives φ_{s-1}(λ_{s-2}) and updates λ_{s-1} (and μ_{s-1}) with its own
   input gradient (λ-step, μ-step) through the fused op ``lpfast.ops.aux_update_``.

A worker holds its stages and its sides of their cuts (:mod:`lpfast.cut`): the
:class:`~lpfast.cut.CutInput` of a stage's input does 1 and 3, the :class:`~lpfast.cut.CutOutput`
of its output the penalty of 2. Only activation-sized tensors cross between neighbours (one each
way per cut and step), and no stage waits for another's compute except for the λ-update in 3, which
needs the previous stage's forward only.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpfast.auxnet import NetAux
from lpfast.auxvars import StoredAux
from lpfast.cut import CutInput, CutOutput
from lpfast.filters import DsFilter
from lpfast.localheads import LocalHead
from lpfast.precision import Precision
from lpfast.replicas import GradientAverage
from lpfast.stages import Stage
from lpfast.transport import Transport
from lpfast.weightnorms import WeightNorms

# A plain forward of one batch through the worker's stages (LayerParallel's): (images, batch size,
# take_input) -> the logits on the last stage's worker, None elsewhere; take_input(s, received)
# gives stage s its input in place of what it received.
ForwardPass = Callable[[Tensor, int, Callable[[int, Tensor], Tensor]], Tensor | None]


@contextmanager
def _batch_stats_without_tracking(modules: Iterable[nn.Module]):
    """Train-mode batch norm (batch statistics) that leaves the running statistics untouched."""
    saved = []
    for m in modules:
        for bn in m.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                saved.append((bn, bn.training, bn.momentum))
                bn.train()
                bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, training, momentum in saved:
            bn.train(training)
            bn.momentum = momentum


class AuxPhase:
    """The parallel steps of this worker's stages ``own``: ``aux`` maps each cut into one of them to
    its λ (and μ), ``trained`` each stage to what its θ-step trains (its parameters and its local
    head's), ``local_heads`` the regressing stages with a head (``local_loss`` α > 0).
    ``regression_lr_scale`` multiplies the learning rate of the regressing stages' θ-steps;
    ``restore_norms`` records their batch-normed weights' lengths at each λ pass
    (:mod:`lpfast.weightnorms`)."""

    def __init__(self, stages: Sequence[Stage], own: Sequence[int], optimizers: dict[int, torch.optim.Optimizer],
                 trained: dict[int, list[nn.Parameter]], aux: dict[int, StoredAux | NetAux],
                 cut_shapes: Sequence[tuple[int, ...]], transport: Transport, *, local_heads: dict[int, LocalHead],
                 local_loss: float, lam_step: float, regression_lr_scale: float, restore_norms: bool, wire: DsFilter,
                 dtype: torch.dtype, device: torch.device, memory_format: torch.memory_format,
                 averages: dict[int, GradientAverage], precision: Precision) -> None:
        self.stages, self.own, self.optimizers, self.trained = stages, list(own), optimizers, trained
        self.precision = precision  # the forwards' autocast (bfloat16 at most: no loss scale here)
        self.averages = averages  # with replicas: each θ-step's gradient, averaged over the stage's replicas
        self.num_stages = len(stages)
        self.lam_step, self.regression_lr_scale = lam_step, regression_lr_scale
        self.transport = transport
        layout = dict(dtype=dtype, device=device, memory_format=memory_format)
        self.cut_inputs = {c: CutInput(c, cut_shapes[c], a, wire, transport, **layout) for c, a in aux.items()}
        self.cut_outputs = {s: CutOutput(s, cut_shapes[s], wire, transport, head=local_heads.get(s),
                                         local_loss=local_loss, **layout)
                            for s in self.own if s + 1 < self.num_stages}
        self.weight_norms = {s: WeightNorms(stages[s]) for s in self.cut_outputs} if restore_norms else {}
        # One process on a GPU: each stage's θ-step on its own stream, so independent stages overlap.
        self._streams = (
            {s: torch.cuda.Stream(device) for s in self.own}
            if device.type == "cuda" and len(self.own) > 1 else {}
        )

    @torch.no_grad()
    def initialise(self, batches: Iterable[tuple[Tensor, Tensor]], forward_pass: ForwardPass) -> None:
        """Fills every λ by one forward pass over ``(x, idx)`` batches, batch norm on batch statistics
        (the mode the stages train in); auxiliary networks take one regression step per batch."""
        with _batch_stats_without_tracking(self.stages[s] for s in self.own), self.transport.counting_as("init"):
            for x, idx in batches:

                def take(s: int, received: Tensor, x: Tensor = x, idx: Tensor = idx) -> Tensor:
                    return self.cut_inputs[s - 1].aux.initialise(x, idx, received)

                forward_pass(x, idx.numel(), take)
        for norms in self.weight_norms.values():
            norms.record()

    def restore_weight_norms(self) -> dict[int, list[float]]:
        """Scales the regressing stages' batch-normed weights back to their lengths at the last λ
        pass; returns the factors per stage."""
        return {s: norms.restore(self.optimizers[s]) for s, norms in self.weight_norms.items()}

    def step(self, x: Tensor, y: Tensor, idx: Tensor, flips: Tensor | None, *, micro_batches: int, beta: float,
             update_mu: bool, stage_time: dict[int, float], loss_sum: dict[int, Tensor]) -> dict[int, Tensor]:
        """One parallel step on a batch in ``micro_batches`` parts (see ``LayerParallel.step``); adds
        each stage's compute time and batch loss sum to ``stage_time`` and ``loss_sum``."""
        batch = idx.numel()
        for s in self.own:
            self.optimizers[s].zero_grad(set_to_none=True)
        parts = zip(x.chunk(micro_batches), y.chunk(micro_batches), idx.chunk(micro_batches),
                    flips.chunk(micro_batches) if flips is not None else [None] * micro_batches)
        losses: dict[int, Tensor] = {}
        for part in parts:
            for s, loss in self._accumulate(*part, batch=batch, beta=beta, update_mu=update_mu, stage_time=stage_time).items():
                losses[s] = losses[s] + loss if s in losses else loss
        for s in self.own:
            with self._stage_stream(s):
                if s in self.averages:
                    self.averages[s].average(self.trained[s])
                self._theta_step(s, self.regression_lr_scale if s in self.cut_outputs else 1.0)
        self._join_stage_streams([])
        for s, loss in losses.items():
            loss_sum[s] += loss.double() * batch
        return losses

    def _accumulate(self, x: Tensor, y: Tensor, idx: Tensor, flips: Tensor | None, *, batch: int, beta: float,
                    update_mu: bool, stage_time: dict[int, float]) -> dict[int, Tensor]:
        """A part of the batch through every owned stage: θ-gradients accumulated with the part's
        share of the batch objective, then the part's λ- and μ-steps. Returns the stages' losses
        weighted by the part's share."""
        part, share = idx.numel(), idx.numel() / batch

        # 1. Open this worker's cuts: λ in (the stages' inputs), targets back, receives posted.
        inputs = {s: self.cut_inputs[s - 1].begin(x, idx, flips, beta) for s in self.own if s > 0}
        for cut in self.cut_outputs.values():
            cut.begin(part)

        # 2. Forward and backward, each stage on its own input (on a GPU, each on its own stream).
        losses, input_grads, sent = {}, {}, []
        for s in self.own:
            with self._stage_stream(s):
                start = time.perf_counter()
                inp = x if s == 0 else inputs[s].detach().requires_grad_()
                with self.precision.autocast():
                    out = self.stages[s](inp)
                if s in self.cut_outputs:
                    cut = self.cut_outputs[s]
                    with self.precision.autocast():  # the local head's forward
                        loss, crossing = cut.backward(out, y, beta=beta, params=None if s == 0 else self.trained[s], weight=share)
                    sent.append(crossing)
                    per_sample = cut.reduction_size(part)
                else:
                    loss = F.cross_entropy(self.precision.for_loss(out), y)
                    (loss * share if share != 1.0 else loss).backward()
                    per_sample = float(part)  # part mean -> per-sample loss
                if s > 0:
                    # Sample i's own objective: the input gradient of the part's (weighted) mean times its reduction size.
                    input_grads[s] = inp.grad.mul_(per_sample / share)
                losses[s] = loss.detach() * share
                stage_time[s] += time.perf_counter() - start
        self._join_stage_streams(list(losses.values()) + list(input_grads.values()) + sent)
        # The targets sent in 1 may be the λ batches that 3 updates in place: let them leave first.
        self.transport.flush()

        # 3. λ- and μ-steps of the cuts this worker owns.
        for s, grad in input_grads.items():
            self.cut_inputs[s - 1].finish(grad, beta=beta, eta=self.lam_step, update_mu=update_mu)
        self.transport.flush()
        return losses

    def _theta_step(self, s: int, lr_scale: float) -> None:
        opt = self.optimizers[s]
        if lr_scale == 1.0:
            opt.step()
            return
        rates = [group["lr"] for group in opt.param_groups]
        for group in opt.param_groups:
            group["lr"] *= lr_scale
        opt.step()
        for group, rate in zip(opt.param_groups, rates):
            group["lr"] = rate

    @contextmanager
    def _stage_stream(self, s: int):
        stream = self._streams.get(s)
        if stream is None:
            yield
            return
        stream.wait_stream(torch.cuda.current_stream(stream.device))  # inputs gathered on the main stream
        with torch.cuda.stream(stream):
            yield

    def _join_stage_streams(self, produced: list[Tensor]) -> None:
        """The main stream waits for every stage stream; tensors the stage streams made and the
        main stream still reads are marked, so their memory is not reused under it."""
        if not self._streams:
            return
        main = torch.cuda.current_stream(next(iter(self._streams.values())).device)
        for stream in self._streams.values():
            main.wait_stream(stream)
        for tensor in produced:
            tensor.record_stream(main)

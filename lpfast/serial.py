"""The serial phase's pipeline (ALGORITHM.md §5): ordinary backprop through the K stages, a batch
split into micro-batches that flow forward stage to stage and whose gradients flow back.

Two implementations of one contract, chosen by where the stages live:

- :class:`TorchPipeline`, one stage per ``torch.distributed`` rank: the schedules of
  ``torch.distributed.pipelining`` (``ScheduleGPipe``: every forward, then every backward;
  ``Schedule1F1B``: one forward, one backward in the steady state, so a stage holds at most K
  micro-batches' activations instead of M); or two stages per rank, looped (rank w of W holds
  stages w and w+W), under ``ScheduleInterleaved1F1B`` or ``ScheduleInterleavedZeroBubble``
  (which also splits each backward into its input and weight halves to fill the bubbles);
- :class:`LocalPipeline`, every stage in this process: the micro-batches forward through all
  stages, then backward, the tensors crossing cuts through the transport so bytes count alike.

Both leave the gradients of one step in the stages' parameters (the batch mean of the
cross-entropy; with one micro-batch exactly backprop's, with more batch norm normalises each
micro-batch by its own statistics) and return the batch's mean loss on the last stage's worker.
The forwards run under the run's autocast (:mod:`lpfast.precision`); with float16 the gradients
left are the loss scale's multiple.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpfast.precision import Precision
from lpfast.transport import Transport

SCHEDULES = ("1f1b", "gpipe", "interleaved-1f1b", "zero-bubble")
#: Stages each worker holds under a schedule: the looped ones give worker w of W the stages w, w+W, …
#: (``torch.distributed.pipelining``'s interleaved 1F1B and zero-bubble schedules, two each here).
STAGES_PER_WORKER = {"1f1b": 1, "gpipe": 1, "interleaved-1f1b": 2, "zero-bubble": 2}


class LocalPipeline:
    """All stages in one process (a :class:`~lpfast.transport.LocalTransport`)."""

    def __init__(self, stages: Sequence[nn.Module], cut_shapes: Sequence[tuple[int, ...]], transport: Transport,
                 memory_format: torch.memory_format, precision: Precision) -> None:
        self.stages, self.cut_shapes, self.transport, self.memory_format = stages, cut_shapes, transport, memory_format
        self.precision = precision

    def run(self, x: Tensor, y: Tensor, micro_batches: int, stage_time: dict[int, float]) -> Tensor:
        batch, last = y.numel(), len(self.stages) - 1
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        saved: list[list[tuple[Tensor, Tensor]]] = []
        for xj, yj in zip(x.chunk(micro_batches), y.chunk(micro_batches)):
            record = []
            for s, stage in enumerate(self.stages):
                tick = time.perf_counter()
                if s == 0:
                    inp = xj
                else:
                    shape = (yj.numel(), *self.cut_shapes[s - 1])
                    inp = self.transport.irecv(shape, self.precision.activation_dtype, xj.device, s - 1, s,
                                               memory_format=self.memory_format).wait().requires_grad_()
                with self.precision.autocast():
                    out = stage(inp)
                if s == last:
                    loss = F.cross_entropy(self.precision.for_loss(out), yj, reduction="sum") / batch
                    total += loss.detach()
                    out = self.precision.scale(loss)
                else:
                    out = out.to(self.precision.activation_dtype)
                    self.transport.isend(out.detach(), s, s + 1, memory_format=self.memory_format)
                record.append((inp, out))
                stage_time[s] += time.perf_counter() - tick
            saved.append(record)
        for record in saved:  # in forward order, as the schedules of torch.distributed.pipelining run them
            for s in reversed(range(len(self.stages))):
                tick = time.perf_counter()
                inp, out = record[s]
                if s == last:
                    out.backward()
                else:
                    out.backward(self.transport.irecv(tuple(out.shape), out.dtype, out.device, s + 1, s, memory_format=self.memory_format).wait())
                if s > 0:
                    self.transport.isend(inp.grad, s, s - 1, memory_format=self.memory_format)
                stage_time[s] += time.perf_counter() - tick
        self.transport.flush()
        return total


class TorchPipeline:
    """This rank's ``stages`` (index -> module; one, or with a looped schedule several) of
    ``num_stages`` under ``torch.distributed.pipelining``'s ``schedule``, over ``group`` (its
    replica's ranks, one a stage; default: every rank). ``stage_time`` gets the whole step's time,
    waits included, shared equally by this rank's stages: the schedule interleaves their work with
    their messages."""

    def __init__(self, stages: dict[int, nn.Module], num_stages: int, cut_shapes: Sequence[tuple[int, ...]],
                 transport: Transport, schedule: str, device: torch.device, memory_format: torch.memory_format,
                 precision: Precision, group: torch.distributed.ProcessGroup | None = None) -> None:
        if len(stages) != STAGES_PER_WORKER[schedule]:
            raise ValueError(f"the {schedule} schedule runs {STAGES_PER_WORKER[schedule]} stage(s) on each worker, "
                             f"this one holds {len(stages)}")
        self.memory_format, self.group, self.precision = memory_format, group, precision
        self.stages, self.num_stages = dict(sorted(stages.items())), num_stages
        self.cut_shapes, self.transport, self.schedule, self.device = cut_shapes, transport, schedule, device
        self._built: dict[tuple[int, int], object] = {}

    def _schedule_for(self, batch: int, micro_batches: int):
        """The schedule for this batch shape; built once (its stages infer the micro-batch shapes on its first step)."""
        key = (batch, micro_batches)
        if key not in self._built:
            from torch.distributed import pipelining

            stages = [pipelining.PipelineStage(_DenseOnWire(module, self.memory_format, self.precision.activation_dtype),
                                               index, self.num_stages, self.device, group=self.group)
                      for index, module in self.stages.items()]
            # With fewer micro-batches than stages 1F1B has no steady state and orders the work as
            # GPipe does; torch's Schedule1F1B refuses that case, so GPipe runs it.
            kind = {"1f1b": pipelining.Schedule1F1B if micro_batches >= self.num_stages else pipelining.ScheduleGPipe,
                    "gpipe": pipelining.ScheduleGPipe, "interleaved-1f1b": pipelining.ScheduleInterleaved1F1B,
                    "zero-bubble": pipelining.ScheduleInterleavedZeroBubble}[self.schedule]

            # Each micro-batch's loss is its share of the batch mean, as in LocalPipeline, so both
            # accumulate the same gradients in the same arithmetic (times the loss scale with float16).
            def share(logits: Tensor, target: Tensor) -> Tensor:
                return self.precision.scale(F.cross_entropy(self.precision.for_loss(logits), target, reduction="sum") / batch)

            self._built[key] = kind(stages if STAGES_PER_WORKER[self.schedule] > 1 else stages[0], micro_batches,
                                    loss_fn=share, scale_grads=False)
        return self._built[key]

    def run(self, x: Tensor, y: Tensor, micro_batches: int, stage_time: dict[int, float]) -> Tensor | None:
        batch, last = y.numel(), self.num_stages - 1
        if batch % micro_batches:
            raise ValueError(f"the serial pipeline across workers needs micro_batches ({micro_batches}) to divide the batch size ({batch})")
        schedule = self._schedule_for(batch, micro_batches)
        tick = time.perf_counter()
        losses: list[Tensor] = []
        with self.precision.autocast():
            if 0 in self.stages:
                schedule.step(x, return_outputs=False)
            elif last in self.stages:
                schedule.step(target=y, losses=losses, return_outputs=False)
            else:
                schedule.step(return_outputs=False)
        elapsed = time.perf_counter() - tick
        # What the schedule sent: each micro-batch's activation forward and its gradient back.
        element = self.precision.activation_dtype.itemsize
        for s in self.stages:
            stage_time[s] += elapsed / len(self.stages)
            if s < last:
                self.transport.count_sent(batch * math.prod(self.cut_shapes[s]) * element, s, s + 1)
            if s > 0:
                self.transport.count_sent(batch * math.prod(self.cut_shapes[s - 1]) * element, s, s - 1)
        if last not in self.stages:
            return None
        return torch.stack([loss.detach() for loss in losses]).double().sum() / self.precision.loss_scale


class _DenseOnWire(nn.Module):
    """A stage whose input and output are plain contiguous tensors, as gloo sends them, while it
    computes in ``memory_format`` (a channels-last stage's input is laid out so before it runs);
    its output in ``dtype``, the one the receiving stage's buffers were allocated in."""

    def __init__(self, stage: nn.Module, memory_format: torch.memory_format, dtype: torch.dtype) -> None:
        super().__init__()
        self.stage, self.memory_format, self.dtype = stage, memory_format, dtype

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = _Relayout.apply(x, self.memory_format)
        return self.stage(x).to(self.dtype).contiguous()


class _Relayout(torch.autograd.Function):
    """``x`` laid out in ``memory_format``, whose gradient goes back contiguous (the layout the
    schedule's receive buffer on the previous stage has)."""

    @staticmethod
    def forward(ctx, x: Tensor, memory_format: torch.memory_format) -> Tensor:
        return x.contiguous(memory_format=memory_format)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad.contiguous(), None

"""The parallel phase with λ refreshed in every step by a pipelined forward (``aux="pipelined"``).

Stored λ is one epoch old when a sample comes round again: the penalty then pulls stage c toward
last epoch's activations, and its task signal is about 1/D of backprop's (ALGORITHM.md §3). Here
cut c's λ for a batch is stage c's own output on that very batch, computed one step earlier while
stage c+1 worked on the batch before it:

- in step t stage k forwards batch t-k (the images for stage 0, otherwise what stage k-1 sent in
  step t-1) and sends its output on as λ of that batch;
- the last stage forwards and backpropagates its batch at once and sends back its input gradient
  g, which every stage k < K-1 passes on in the same step, so all stages backpropagate batch
  t-(K-1) in step t.

At the closed-form λ-step (λ_new = λ - g/β) the per-sample penalty (β/2)·‖φ_c - λ_new‖² has the
θ-gradient g·J_{φ_c}: exactly stage c+1's input gradient backpropagated through stage c, whatever
β is. So stage c backpropagates g through the graph of its forward, with the weights that forward
used (kept for the K-1-c optimizer steps in between, as PipeDream's weight stashing does). The
parallel phase becomes backprop in which stage c's gradient is K-1-c steps late on whole batches (as
in decoupled parallel backpropagation, Huo et al. 2018; fewer in parts, below): no per-sample
store, the images may be augmented, and β, μ and local heads have nothing left to do. Stage k holds
K-k batches' activations.

A late gradient with momentum trains slower than a fresh one (on the CIFAR-10 proxy of
bench/results/narrative.md, one step late for the first stage raised the train loss by 12% after 3 epochs).
With ``predict_weights`` (the default where the optimizer is SGD with momentum) stage k's forward
runs on the weights it is expected to have when the batch's gradient is applied, n steps on:
θ - n·lr·v (n = K-1-k on whole batches), v the SGD momentum buffer
(SpecTrain, Chen et al. 2018; linear weight prediction, Kosson et al. 2020).
With ``gradient_shrink`` g < 1 every stage but the last backpropagates g times the gradient it
receives (and so passes g times its input gradient on): stage k's gradient is scaled by g^(K-1-k),
on whole batches the later a gradient the smaller its step (gradient shrinking; Zhuang et al.'s
fully decoupled training, FDG). Weight decay is not scaled.

With ``micro_batches`` M > 1 a batch enters the pipeline as M equal parts, one a step of the
pipeline, and every stage adds up the gradients of the batch's parts (each part's loss weighted by
its share of the batch) for one optimizer step once the batch's last part is through it
(PipeDream-2BW's double-buffered weights): stage k's gradient is then at most ceil((K-1-k)/M)
optimizer steps late instead of K-1-k, one step whatever K is once M >= K-1, the default
(:func:`default_parts`). Batch norm normalises each part by its own statistics.

With a DS filter (``wire``) the cut carries its wire form both ways: stage k sends encode(φ_k),
stage k+1 trains on decode(received), and the gradient it sends back is the one with respect to
the wire tensor (pooled, in the wire dtype), which stage k backpropagates through its encode. Each
stage then gets exactly the gradient of the network with the filter in it at the cut (the
gradient's cast to the wire dtype aside); the serial phase trains without it.

With replicas (:mod:`lpfast.mesh`) each stage's gradient is averaged over the stage's replicas
before its optimizer steps, bucket by bucket while its backward runs (:mod:`lpfast.replicas`):
hooks on the stashed weights, where DistributedDataParallel's would never fire. In parts, the
batch's gradient is averaged once, during its last part's backward (the earlier parts' sum
accumulates into that part's stash before it runs).

The pipeline fills over the first K-1 steps and :meth:`PipelinedPhase.drain` empties it (K-1 steps
without a new batch), after which no batch is in flight and the state is a plain checkpoint.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from lpfast.filters import DsFilter
from lpfast.precision import Precision
from lpfast.replicas import GradientAverage, Reduction
from lpfast.stages import Stage
from lpfast.transport import Pending, Transport


def default_parts(stages: int, batch: int) -> int | None:
    """The parts pipelined λ sends a batch of ``batch`` samples in through ``stages`` stages by
    default: the fewest that leave every stage at most one optimizer step late, the smallest
    divisor of the batch from K-1 to 2(K-1) (1 at K <= 2, where every stage is one step late
    already; 4 at K=4 and 8 at K=8 for a batch of 128). None where the batch has no such divisor
    (parts would shrink toward single samples). On the K=8 proxy of bench/results/narrative.md
    (ResNet-20, 20 000 CIFAR-10 images, 12 epochs) whole batches ended 8.3 points under backprop
    and 8 parts level with backprop in the same 16-image parts."""
    if stages <= 2:
        return 1
    return next((m for m in range(stages - 1, 2 * (stages - 1) + 1) if batch % m == 0), None)


def required_default_parts(stages: int, batch: int) -> int:
    """:func:`default_parts`, or a ValueError that says how to choose a batch it can split."""
    parts = default_parts(stages, batch)
    if parts is None:
        raise ValueError(f"pipelined λ at {stages} stages sends each batch in {stages - 1} to {2 * (stages - 1)} equal parts by "
                         f"default (every stage then at most one step late), and a replica's batch of {batch} has no such divisor: "
                         f"choose a batch size whose share per replica a number in that range divides, or set "
                         f"--parallel-micro-batches M (parallel_micro_batches; 1: whole batches)")
    return parts


class _InFlight:
    """A batch stage k has forwarded and not yet backpropagated: its input as received (for the input
    gradient), its output in wire form (the graph), the weights the forward used and, with
    replicas, the average their gradients join as the backward produces them."""

    def __init__(self, inp: Tensor, out: Tensor, weights: dict[str, Tensor], reduction: Reduction | None) -> None:
        self.inp, self.out, self.weights, self.reduction = inp, out, weights, reduction


class PipelinedPhase:
    """The steps of this worker's stages; :meth:`step` takes one batch, :meth:`drain` finishes them."""

    def __init__(self, stages: Sequence[Stage], own: Sequence[int], optimizers: dict[int, torch.optim.Optimizer],
                 cut_shapes: Sequence[tuple[int, ...]], transport: Transport, *, predict_weights: bool | None,
                 wire: DsFilter, dtype: torch.dtype, device: torch.device, memory_format: torch.memory_format,
                 averages: dict[int, GradientAverage], precision: Precision, gradient_shrink: float) -> None:
        self.gradient_shrink = gradient_shrink
        self.stages, self.own, self.optimizers, self.averages = stages, list(own), optimizers, averages
        self.precision = precision  # dtype: what the forwards produce (under autocast, its dtype)
        with_momentum = all(isinstance(o, torch.optim.SGD) and all(g["momentum"] > 0 for g in o.param_groups) for o in optimizers.values())
        if predict_weights and not with_momentum:
            raise ValueError("predict_weights extrapolates along SGD's momentum: it needs torch.optim.SGD with momentum > 0")
        self.predict_weights = with_momentum if predict_weights is None else predict_weights
        self.cut_shapes, self.transport, self.wire = cut_shapes, transport, wire
        self.dtype, self.device, self.memory_format = dtype, device, memory_format
        self.num_stages = len(stages)
        self._reset()

    def _reset(self) -> None:
        self._calls = 0  # steps since the pipeline was last empty (drain steps included)
        self._sizes: list[int] = []  # sizes of the parts (a batch is one part or several), in the order they entered
        self._parts = 1  # parts a batch comes in, the same for every batch of one fill: part p ends a batch where p % parts == parts - 1
        self._accumulated: dict[int, dict[str, Tensor]] = {s: {} for s in self.own}  # the batch's gradient so far (stages < K-1)
        # The loss scale (fp16) the batch's gradient so far was taken at, per stage: a batch's parts
        # may be backpropagated across two steps, with the scale changed between them.
        self._accumulated_at: dict[int, float] = {}
        self._labels: deque[Tensor] = deque()  # on the last stage's worker: labels of batches not yet trained on
        self._in_flight: dict[int, deque[_InFlight]] = {s: deque() for s in self.own}
        self._next_input: dict[int, Pending] = {}

    @property
    def parts(self) -> int:
        """The parts each batch in flight came in."""
        return self._parts

    @property
    def empty(self) -> bool:
        """No batch is in flight: every batch that entered has been backpropagated by every stage."""
        return not self._sizes

    def step(self, x: Tensor | None, y: Tensor | None, stage_time: dict[int, float], loss_sum: dict[int, Tensor], *,
             micro_batches: int = 1) -> dict[int, Tensor]:
        """The batch ``x``/``y`` entering in ``micro_batches`` equal parts, a step of the pipeline
        each (None: one step while draining). Adds each owned stage's compute time to
        ``stage_time`` and the last stage's summed cross-entropy to ``loss_sum``. Returns the last
        stage's mean cross-entropy over the parts it trained on, if it is this worker's and trained on any."""
        if x is None:
            return self._advance(None, None, stage_time, loss_sum)
        if self.empty:
            self._parts = micro_batches
        elif micro_batches != self._parts:
            raise ValueError(f"a batch in {micro_batches} parts cannot follow batches in {self._parts} into the pipeline: drain it first")
        trained = []
        for part_x, part_y in zip(x.tensor_split(micro_batches), y.tensor_split(micro_batches)):
            trained += self._advance(part_x, part_y, stage_time, loss_sum).values()
        return {self.num_stages - 1: sum(trained) / len(trained)} if trained else {}

    def _starts_batch(self, part: int) -> bool:
        return part % self._parts == 0

    def _ends_batch(self, part: int) -> bool:
        return part % self._parts == self._parts - 1

    def _at_current_scale(self, s: int, gradients: Sequence[Tensor]) -> None:
        """Brings stage ``s``'s gradient so far (``gradients``, taken at the loss scale recorded for it)
        to the scale this part's backward takes, so that the batch's sum is unscaled by one scale."""
        scale = self.precision.loss_scale
        taken = self._accumulated_at.get(s, scale)
        if taken != scale:
            for g in gradients:
                g.mul_(scale / taken)
        self._accumulated_at[s] = scale

    def _advance(self, x: Tensor | None, y: Tensor | None, stage_time: dict[int, float], loss_sum: dict[int, Tensor]) -> dict[int, Tensor]:
        """One step of the pipeline, the part ``x``/``y`` entering (None while draining)."""
        if x is not None:
            self._sizes.append(x.shape[0])
            if self.num_stages - 1 in self.own:
                self._labels.append(y)
        t, entered, last = self._calls, len(self._sizes), self.num_stages - 1
        backward_batch = t - last if 0 <= t - last < entered else None
        # Receives of this step's gradients, posted before any compute so that sends never wait on them.
        grads = {s: self._receive(backward_batch, s + 1, s) for s in self.own if s < last and backward_batch is not None}
        losses: dict[int, Tensor] = {}
        for s in self.own:  # forwards, in stage order (the last stage trains at once)
            start = time.perf_counter()
            if 0 <= t - s < entered:
                inp = x if s == 0 else self._next_input.pop(s).wait()
                if s > 0 and 0 <= t + 1 - s < entered:
                    # Next step's input; the batch exists whether or not the next step brings a new one.
                    self._next_input[s] = self._receive(t + 1 - s, s - 1, s)
                if s == last:
                    losses[s] = self._train_last(t - s, inp, self._labels.popleft())
                    loss_sum[s] += losses[s].double() * inp.shape[0]
                else:
                    self._forward(s, t - s, inp)
            elif s > 0 and t + 1 - s == 0:
                self._next_input[s] = self._receive(0, s - 1, s)
            stage_time[s] += time.perf_counter() - start
        for s in reversed(self.own):  # backwards of the stages before the last, last to first
            if s in grads:
                start = time.perf_counter()
                self._backward(s, backward_batch, grads[s].wait())
                stage_time[s] += time.perf_counter() - start
        self.transport.flush()
        self._calls += 1
        if self._calls >= len(self._sizes) + last:  # every stage has backpropagated the last batch
            self._reset()
        return losses

    def drain(self, stage_time: dict[int, float], loss_sum: dict[int, Tensor]) -> None:
        """Steps without a new batch until none is in flight."""
        while not self.empty:
            self.step(None, None, stage_time, loss_sum)

    # ---------------------------------------------------------------- one stage's work

    def _receive(self, batch: int, src: int, dst: int) -> Pending:
        shape = self.wire.wire_shape((self._sizes[batch], *self.cut_shapes[min(src, dst)]))
        return self.transport.irecv(shape, self.wire.dtype_on_wire(self.dtype), self.device, src, dst, memory_format=self.memory_format)

    def _input(self, received: Tensor) -> tuple[Tensor, Tensor]:
        """(the received wire tensor as a leaf for its gradient, the stage's input decoded from it)."""
        leaf = received.detach().requires_grad_()
        return leaf, self.wire.decode(leaf, self.dtype)

    def _steps_late(self, s: int, part: int) -> int:
        """The optimizer steps stage ``s`` takes between its forward of ``part`` and the step that
        applies the part's gradient: those after the batch ends in [part + s - (K-1), the part's
        own batch end) (K-1-s with one part a batch)."""
        m = self._parts
        own_end = part // m * m + m - 1
        return (own_end - m) // m - (part + s - (self.num_stages - 1) - m) // m

    def _forward(self, s: int, part: int, inp: Tensor) -> None:
        stage = self.stages[s]
        # A copy of the weights for this batch's backward, a step or more from now: the optimizer
        # changes the live ones in place before then.
        weights = {name: p.detach().clone() for name, p in stage.named_parameters()}
        if self.predict_weights:
            late = self._steps_late(s, part)
            optimizer = self.optimizers[s]
            # Looked up here, not cached: Optimizer.load_state_dict (a resume) replaces the groups.
            group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
            for name, p in stage.named_parameters():
                velocity = optimizer.state.get(p, {}).get("momentum_buffer")
                if velocity is not None:
                    weights[name].add_(velocity, alpha=-late * group_of[id(p)]["lr"])
        weights = {name: w.requires_grad_() for name, w in weights.items()}
        received = inp
        if s > 0:
            received, inp = self._input(inp)
        with self.precision.autocast():
            out = self.wire.encode(functional_call(stage, weights, (inp,)))
        self.transport.isend(out.detach(), s, s + 1, memory_format=self.memory_format)
        # The replicas average a batch's gradient once, during its last part's backward.
        reduction = self.averages[s].track(list(weights.values())) if s in self.averages and self._ends_batch(part) else None
        self._in_flight[s].append(_InFlight(received, out, weights, reduction))

    def _backward(self, s: int, part: int, grad: Tensor) -> None:
        done = self._in_flight[s].popleft()
        batch_gradient = self._accumulated[s]
        self._at_current_scale(s, list(batch_gradient.values()))
        ends = self._ends_batch(part)
        if ends:  # the earlier parts' sum accumulates into the last part's stash, whose hooks then average the batch's gradient
            for name, w in done.weights.items():
                w.grad = batch_gradient.pop(name, None)
        done.out.backward(grad.to(done.out.dtype) * self.gradient_shrink)
        if s > 0:
            self.transport.isend(done.inp.grad, s, s - 1, memory_format=self.memory_format)
        if done.reduction is not None:
            done.reduction.finish()
        if ends:
            for name, p in self.stages[s].named_parameters():
                p.grad = done.weights[name].grad
            self.precision.step(self.optimizers[s], list(self.stages[s].parameters()))
        else:
            for name, w in done.weights.items():
                batch_gradient[name] = w.grad if name not in batch_gradient else batch_gradient[name] + w.grad

    def _train_last(self, part: int, inp: Tensor, y: Tensor) -> Tensor:
        s = self.num_stages - 1
        if self._starts_batch(part):  # the batch's gradient starts from zero
            self.optimizers[s].zero_grad(set_to_none=True)
        self._at_current_scale(s, [p.grad for p in self.stages[s].parameters() if p.grad is not None])
        received, inp = self._input(inp)
        ends = self._ends_batch(part)
        # The parameters' .grad sums the batch's parts: averaged once, during the last part's backward.
        reduction = self.averages[s].track(list(self.stages[s].parameters())) if s in self.averages and ends else None
        with self.precision.autocast():
            logits = self.stages[s](inp)
        loss = F.cross_entropy(self.precision.for_loss(logits), y)
        # float16: every gradient down the pipeline is scaled. A part's loss counts by its share of the batch.
        self.precision.scale(loss if self._parts == 1 else loss * (1 / self._parts)).backward()
        if s > 0:
            self.transport.isend(received.grad, s, s - 1, memory_format=self.memory_format)
        if reduction is not None:
            reduction.finish()
        if ends:
            self.precision.step(self.optimizers[s], list(self.stages[s].parameters()))
        return loss.detach()


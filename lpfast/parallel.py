"""Layer-parallel training of a residual network cut into K stages (ALGORITHM.md): the coordinator.

:class:`LayerParallel` checks the options, cuts the model (:mod:`lpfast.stages`) and combines the
pieces that do the work: the parallel phase, either with auxiliary variables per cut
(:mod:`lpfast.auxphase`: stored λ and μ or auxiliary networks, each cut's two sides in
:mod:`lpfast.cut`) or with λ refreshed by a pipelined forward (:mod:`lpfast.pipelined`); the serial
phase's pipeline (:mod:`lpfast.serial`); and the epoch's statistics and the evaluation, which it
keeps itself. Every piece runs unchanged over a :class:`~lpfast.transport.LocalTransport` (all
stages in one process) or a :class:`~lpfast.transport.DistTransport` (one stage per rank).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpfast.auxnet import NetAux, build_aux_net
from lpfast.auxphase import AuxPhase
from lpfast.auxvars import STORE_LOCATIONS, AuxStore, StoredAux
from lpfast.describe import check_description, describe
from lpfast.filters import DsFilter
from lpfast.localheads import LocalHead
from lpfast.pipelined import PipelinedPhase, default_parts
from lpfast.precision import Precision
from lpfast.serial import SCHEDULES, LocalPipeline, TorchPipeline
from lpfast.stages import Partition, Stage, partition, split
from lpfast.transport import LocalTransport, Transport

METHODS = ("penalty", "al")
AUX_KINDS = ("store", "net", "pipelined")
DEFAULT_LOCAL_LOSS = 3.0


def default_aux(method: str) -> str:
    """The auxiliary variables of ``aux=None``: pipelined λ for the penalty method (at full CIFAR-10,
    30 epochs, half parallel, 0.1 point under backprop where stored λ ended 1.6 under it:
    bench/RESULTS.md, real budgets), the per-sample store for AL, whose multipliers live there."""
    return "pipelined" if method == "penalty" else "store"


class LayerParallel:
    """Layer-parallel training of ``model`` cut into ``stages`` (drop-in for an optimizer loop).

    ``model`` is an lpfast ``ResidualNet``, a torchvision ``ResNet``, an ``nn.Sequential`` (first
    child the stem, last the head) or an explicit ``lpfast.Blocks(stem=..., blocks=[...], head=...)``
    (:mod:`lpfast.describe`); the stages share its modules, so it is trained in place.

    >>> lp = LayerParallel(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    ...                    stages=4, input_shape=(3, 32, 32))  # penalty method, pipelined λ
    >>> lp = LayerParallel(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    ...                    stages=4, method="al", dataset_size=len(train_set), input_shape=(3, 32, 32))
    >>> lp.initialise(batches_of_images_and_indices)     # one serial forward fills λ
    >>> for x, y, idx in loader: stats = lp.step(x, y, idx)
    >>> epoch_stats = lp.end_epoch()                     # per-cut violation, grows β

    Options (keyword-only, checked here):

    - ``stages``: K, blocks balanced by estimated FLOPs, or a list of block counts per stage.
    - ``method``: ``"penalty"`` or ``"al"`` (augmented Lagrangian, one multiplier per λ).
    - ``beta0``, ``beta_growth``, ``beta_max``: β = min(beta0·beta_growth^epoch, beta_max).
    - ``lam_step``: η of the λ-step relative to the closed-form step (1 = closed form).
    - ``regression_lr_scale``: multiplies the learning rate of every stage but the last (the ones
      that regress onto λ). Their loss is sharply curved along the stem's few weights: at the
      classifier's rate their output can drift far from λ (violation 0.5 against 0.06 at 0.1×
      in a 2-epoch MNIST test).
    - ``mu_every``: the multipliers are updated every ``mu_every`` steps (AL only).
    - ``local_loss``: α ≥ 0 (default 3, 0 with ``aux="pipelined"``; 0 turns it off); with α > 0 every regressing stage k < K-1 also trains a small
      classifier on its output (:class:`~lpfast.localheads.LocalHead`, stepped by the stage's
      optimizer) and its θ-step minimises penalty + α·CE(head_k(φ_k), y): a task signal of its own
      in the parallel phase, where the penalty gives it about 1/D of backprop's. λ's step stays on
      the constraint objective (the head's term does not reach the stage's input gradient).
    - ``aux``: None (default) is ``"pipelined"`` with the penalty method and ``"store"`` with AL
      (:func:`default_aux`). ``"store"`` keeps λ (and μ) per training sample; ``"net"`` predicts them from the
      (augmented) image with a small network per cut (ALGORITHM.md §7, :mod:`lpfast.auxnet`): no
      per-sample memory, and augmentation works in the parallel phase. ``aux_depth`` and
      ``aux_width`` shape that network; without a width, the widest whose forward costs at most
      ``aux_budget`` (a fraction) of the stage it feeds. ``"pipelined"``: λ of a batch is the
      previous stage's output on that same batch, computed one step earlier in a pipelined
      forward, and the λ-step is closed form, so each stage backpropagates the next one's input
      gradient through the weights its forward used (:mod:`lpfast.pipelined`): backprop whose
      stage k's gradient is late, K-1-k steps on whole batches, at most one in :meth:`step`'s
      default parts. No store, augmentation works, nothing to initialise; the penalty method
      only, without local heads, store filter or norm restoring; a wire filter puts the DS
      filter into the network at each cut, both ways (:mod:`lpfast.pipelined`). ``end_epoch``
      (or :meth:`drain`) finishes the batches in flight. ``predict_weights`` runs each stage's
      forward on the weights its late gradient will be applied to, extrapolated along SGD's
      momentum (needs torch.optim.SGD with momentum; None: on where the optimizer is that).
      ``gradient_shrink`` g in (0, 1]: every stage but the last backpropagates g times the gradient
      it receives, so stage k's late gradient is scaled by g^(K-1-k) (FDG's gradient shrinking;
      1, the default, is plain late backprop).
    - ``store_dtype``, ``store_location``: how λ and μ are kept (``"device"`` or ``"pinned"``).
    - ``memory_format``: layout of λ and μ rows and of what crosses a cut; the model's
      (``torch.channels_last`` for a channels-last model), so gathered batches, messages and the
      fused updates need no transposing copy.
    - ``wire_filter``: how tensors cross a cut in the parallel phase (a :class:`DsFilter`:
      down-sampling factor, wire dtype, up-sampling mode); default none. The serial phase sends
      exact tensors, so it stays exact backprop.
    - ``store_filter``: keeps λ and μ themselves in a filter's coarse form (decoded on gather,
      encoded on scatter); its wire dtype is ignored in favour of ``store_dtype``.
    - ``restore_norms``: record, at each λ pass, the length of every regressing stage's weight that
      feeds a batch norm only (whose length the network ignores), and let
      :meth:`restore_weight_norms` scale them back to it when the parallel phase ends
      (:mod:`lpfast.weightnorms`): the parallel phase's larger gradients (penalty plus α·CE) grow
      these weights longer than backprop's, and a longer weight turns less per step in the serial
      epochs. Off by default: on the CIFAR-10 proxy it did not raise the final accuracy
      (bench/results/narrative.md). Needs stages ``torch.fx`` can trace.
    - ``serial_schedule``: the serial phase's pipeline schedule across workers, ``"1f1b"`` (default:
      a stage holds at most K micro-batches' activations) or ``"gpipe"`` (all M), both from
      ``torch.distributed.pipelining``; in one process the stages run micro-batch by micro-batch.
      ``"interleaved-1f1b"`` and ``"zero-bubble"`` loop 2K stages over K workers (worker w holds
      stages w and w+K; a ``DistTransport`` over K ranks with ``stages=2K``): the serial phase only,
      for comparing schedules (:meth:`step` refuses a worker that holds two stages).
    - ``autocast``: ``torch.bfloat16`` or ``torch.float16`` runs every forward (both phases, the λ
      pass, auxiliary networks, evaluation) under ``torch.autocast`` (:mod:`lpfast.precision`);
      parameters and optimizer state stay in the model's dtype. What crosses a cut goes in the
      dtype the forward produced, unless ``wire_filter`` names a wire dtype, which wins. float16
      adds a loss scale with ``torch.amp.GradScaler``'s semantics: an overflowed step is skipped on
      the device, and :meth:`update_loss_scale` (every few steps; the Trainer: every 20) agrees one
      scale across the workers. float16 takes pipelined λ (its default); stored λ and auxiliary
      networks take bfloat16, whose range needs no scale.
    - ``transport``: where the stages live; default all in this process.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        stages: int | Sequence[int],
        method: str = "penalty",
        dataset_size: int | None = None,
        input_shape: Sequence[int],
        beta0: float = 2.0,
        beta_growth: float = 2.0,
        beta_max: float = 50.0,
        lam_step: float = 1.0,
        regression_lr_scale: float = 1.0,
        mu_every: int = 1,
        local_loss: float | None = None,
        store_dtype: torch.dtype = torch.float32,
        store_location: str = "device",
        aux: str | None = None,
        aux_depth: int = 2,
        aux_width: int | None = None,
        aux_budget: float = 0.1,
        memory_format: torch.memory_format = torch.contiguous_format,
        wire_filter: DsFilter | None = None,
        store_filter: DsFilter | None = None,
        serial_schedule: str = "1f1b",
        restore_norms: bool = False,
        predict_weights: bool | None = None,
        gradient_shrink: float = 1.0,
        autocast: torch.dtype | None = None,
        transport: Transport | None = None,
    ) -> None:
        if beta0 <= 0 or beta_max < beta0:
            raise ValueError(f"need 0 < beta0 <= beta_max, got beta0={beta0}, beta_max={beta_max}")
        if beta_growth < 1:
            raise ValueError(f"beta_growth must be >= 1 (β may only grow), got {beta_growth}")
        if not 0 < lam_step <= 1:
            raise ValueError(f"lam_step must be in (0, 1] (1 is the closed-form step), got {lam_step}")
        if regression_lr_scale <= 0:
            raise ValueError(f"regression_lr_scale must be > 0, got {regression_lr_scale}")
        if mu_every < 1:
            raise ValueError(f"mu_every must be >= 1, got {mu_every}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        aux = default_aux(method) if aux is None else aux
        pipelined = aux == "pipelined"
        if local_loss is None:
            local_loss = 0.0 if pipelined else DEFAULT_LOCAL_LOSS
        if local_loss < 0:
            raise ValueError(f"local_loss must be >= 0 (the weight of the regressing stages' classifier loss; 0 = off), got {local_loss}")
        if serial_schedule not in SCHEDULES:
            raise ValueError(f"serial_schedule must be one of {', '.join(SCHEDULES)}, got {serial_schedule!r}")
        if store_location not in STORE_LOCATIONS:
            raise ValueError(f"store_location must be one of {', '.join(STORE_LOCATIONS)}, got {store_location!r}")
        if aux == "store" and dataset_size is None:
            raise ValueError("aux='store' keeps λ per training sample: pass dataset_size=len(train_set)")
        if dataset_size is not None and dataset_size < 1:
            raise ValueError(f"dataset_size must be >= 1, got {dataset_size}")
        if aux not in AUX_KINDS:
            raise ValueError(f"aux must be one of {', '.join(AUX_KINDS)}, got {aux!r}")
        if aux == "net" and store_filter is not None and store_filter.factor > 1:
            raise ValueError("a down-sampled store (store_filter) needs aux='store': with aux='net' nothing is stored")
        if predict_weights and not pipelined:
            raise ValueError("predict_weights acts on late gradients, which only aux='pipelined' has")
        if not 0 < gradient_shrink <= 1:
            raise ValueError(f"gradient_shrink must be in (0, 1] (1: no shrinking), got {gradient_shrink}")
        if gradient_shrink != 1 and not pipelined:
            raise ValueError("gradient_shrink scales late gradients, which only aux='pipelined' has")
        if pipelined and (method != "penalty" or local_loss or restore_norms
                          or (store_filter is not None and (store_filter.factor > 1 or store_filter.wire_dtype is not None))):
            raise ValueError("aux='pipelined' (the penalty method's default) backpropagates the next stage's gradient exactly: it takes "
                             "method='penalty' (no violation is left for multipliers), local_loss=0, no store filter and "
                             "restore_norms=False; pass aux='store' for stored λ, which takes them")
        if autocast == torch.float16 and not pipelined:
            raise ValueError("autocast=torch.float16 needs a loss scale, which lpfast keeps in the pipelined parallel phase and the "
                             f"serial phase, not with aux={aux!r}: pass autocast=torch.bfloat16 (float32's range, no scale needed)")
        if aux_depth < 1 or (aux_width is not None and aux_width < 1) or not 0 < aux_budget <= 1:
            raise ValueError(f"need aux_depth >= 1, aux_width >= 1 (or None), 0 < aux_budget <= 1; got {aux_depth}, {aux_width}, {aux_budget}")
        self.model = describe(model)
        self.memory_format = memory_format  # of every activation-sized tensor, also on the wire
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.precision = Precision(autocast, model_dtype=self.dtype, device=self.device)
        self.activation_dtype = self.precision.activation_dtype  # what the forwards produce
        self.method = method
        self.beta0, self.beta_growth, self.beta_max = beta0, beta_growth, beta_max
        self.mu_every = mu_every
        self.transport = transport if transport is not None else LocalTransport()
        self.plan: Partition = partition(self.model, stages, input_shape)
        sample = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0)).to(self.device, self.dtype)
        check_description(model, self.model, sample)
        self.wire = wire_filter if wire_filter is not None else DsFilter()
        if autocast is not None and self.wire.wire_dtype is None:  # the parallel phase's messages in the forward's dtype
            self.wire = DsFilter(self.wire.factor, autocast, self.wire.mode)
        for shape in self.plan.cut_shapes:
            self.wire.check_shape(shape)
            if store_filter is not None:
                store_filter.check_shape(shape)
        self.stages: list[Stage] = split(self.model, self.plan)
        self.num_stages = len(self.stages)
        self.own = [s for s in range(self.num_stages) if self.transport.owns(s)]
        self.local_loss = local_loss
        self.local_heads = {s: self._local_head(s) for s in range(self.num_stages - 1) if s in self.own and local_loss > 0}
        # What each stage's θ-step trains: its own parameters and its local head's.
        self._trained = {s: [*self.stages[s].parameters(), *(self.local_heads[s].parameters() if s in self.local_heads else ())]
                         for s in self.own}
        self.optimizers = {s: optimizer(self._trained[s]) for s in self.own}
        # With replicas (a DistTransport over a mesh): each stage's gradient averaged over its replicas.
        averages = {s: self.transport.gradient_average(s, self._trained[s]) for s in self.own}
        self.averages = {s: a for s, a in averages.items() if a is not None}
        self.restore_norms = restore_norms
        # λ_c / μ_c live with stage c+1.
        def store(cut: int) -> AuxStore:
            return AuxStore(dataset_size, self.plan.cut_shapes[cut], dtype=store_dtype, device=self.device,
                            location=store_location, compute_dtype=self.dtype, coarse=store_filter,
                            memory_format=memory_format)

        def aux_variables(cut: int) -> StoredAux | NetAux:
            if aux == "store":
                return StoredAux(lambda: store(cut), with_mu=method == "al")
            net = build_aux_net(input_shape[0], input_shape[1:], self.plan.cut_shapes[cut], depth=aux_depth,
                                width=aux_width, heads=2 if method == "al" else 1,
                                budget_flops=aux_budget * self.plan.stage_flops[cut + 1])
            net = net.to(self.device, self.dtype, memory_format=memory_format)
            return NetAux(net, optimizer, with_mu=method == "al", average=self.transport.gradient_average(cut + 1, list(net.parameters())),
                          precision=self.precision)

        self.aux_kind = aux
        self.aux = {} if pipelined else {s - 1: aux_variables(s - 1) for s in self.own if s > 0}
        layout = dict(dtype=self.dtype, device=self.device, memory_format=memory_format)
        # The parallel phase: exactly one of the two.
        self.aux_phase = None if pipelined else AuxPhase(
            self.stages, self.own, self.optimizers, self._trained, self.aux, self.plan.cut_shapes, self.transport,
            local_heads=self.local_heads, local_loss=local_loss, lam_step=lam_step, regression_lr_scale=regression_lr_scale,
            restore_norms=restore_norms, wire=self.wire, averages=self.averages, precision=self.precision, **layout)
        # The cuts into this worker's stages, which keep the violation statistics (none when pipelined).
        self._cut_inputs = {} if self.aux_phase is None else self.aux_phase.cut_inputs
        self.pipelined = PipelinedPhase(self.stages, self.own, self.optimizers, self.plan.cut_shapes, self.transport,
                                        predict_weights=predict_weights, gradient_shrink=gradient_shrink,
                                        wire=self.wire, averages=self.averages,
                                        precision=self.precision, **(layout | dict(dtype=self.activation_dtype))) if pipelined else None
        self.serial_pipeline: LocalPipeline | TorchPipeline
        if len(self.own) == self.num_stages:
            self.serial_pipeline = LocalPipeline(self.stages, self.plan.cut_shapes, self.transport, memory_format, self.precision)
        else:
            self.serial_pipeline = TorchPipeline({s: self.stages[s] for s in self.own}, self.num_stages, self.plan.cut_shapes,
                                                 self.transport, serial_schedule, self.device, memory_format, self.precision,
                                                 group=self.transport.mesh.pipeline_group)
        self.epoch = 0  # parallel epochs completed: β's schedule counts these (a serial warm-up leaves it at β0)
        self.steps = 0
        self._steps_at_scale_update = 0
        self.initialised = self.num_stages == 1 or pipelined
        self._reset_epoch_stats()

    def _local_head(self, s: int) -> LocalHead:
        """Stage s's head, initialised from its own seed: building it leaves the global random state
        alone, so one process and K workers (each building only its own heads) initialise alike."""
        shape = self.plan.cut_shapes[s]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed() + 1 + s)
            head = LocalHead(shape[0], shape[1:], self.plan.num_outputs)
        return head.to(self.device, self.dtype, memory_format=self.memory_format)

    # ------------------------------------------------------------------ state

    @property
    def beta(self) -> float:
        return min(self.beta0 * self.beta_growth**self.epoch, self.beta_max)

    def aux_nbytes(self) -> int:
        """Bytes held by this worker's auxiliary variables (λ and μ stores, or their networks)."""
        return sum(a.nbytes for a in self.aux.values())

    def release_aux(self) -> None:
        """Frees the per-sample λ/μ stores when serial epochs come next (SPH's serial phase needs
        none), so that they leave memory and the checkpoints; auxiliary networks are kept. A later
        parallel step needs :meth:`initialise` again: λ then starts from the network as it is."""
        for a in self.aux.values():
            if isinstance(a, StoredAux):
                a.release()
        self.initialised = self.num_stages == 1 or self.pipelined is not None

    def all_optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer this worker steps: its stages', then its auxiliary networks'."""
        return [*self.optimizers.values(), *(a.optimizer for a in self.aux.values() if isinstance(a, NetAux))]

    def state_dict(self) -> dict:
        """This worker's stages, optimizers, auxiliary variables, multipliers, schedule, and the
        statistics of the epoch under way (so that a run checkpointed mid-epoch resumes exactly).
        With ``aux="pipelined"``, :meth:`drain` first: a batch in flight is not part of the state."""
        self._require_drained("state_dict")
        sent, before = self.transport.sent_bytes, self._bytes_at_epoch_start
        return {
            "epoch_stats": {"loss_sum": dict(self._loss_sum), "cuts": {c: cut.statistics() for c, cut in self._cut_inputs.items()},
                            "stage_time": dict(self._stage_time), "samples": self._samples, "phase": self._phase,
                            "bytes": {key: sent[key] - before.get(key, 0) for key in list(sent)}},
            "stages": {s: self.stages[s].state_dict() for s in self.own},
            "local_heads": {s: head.state_dict() for s, head in self.local_heads.items()},
            "optimizers": {s: opt.state_dict() for s, opt in self.optimizers.items()},
            "aux": {c: a.state_dict() for c, a in self.aux.items()},
            "epoch": self.epoch,
            "steps": self.steps,
            "initialised": self.initialised,
            "weight_norms": {s: norms.recorded for s, norms in self._weight_norms.items()},
            "loss_scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else None,
            "steps_at_scale_update": self._steps_at_scale_update,
        }

    def load_state_dict(self, state: dict) -> None:
        for s in self.own:
            self.stages[s].load_state_dict(state["stages"][s])
            self.optimizers[s].load_state_dict(state["optimizers"][s])
        for s, head in self.local_heads.items():
            head.load_state_dict(state["local_heads"][s])
        for c, a in self.aux.items():
            a.load_state_dict(state["aux"][c])
        self.epoch, self.steps, self.initialised = state["epoch"], state["steps"], state["initialised"]
        if self.precision.scaler is not None:
            self.precision.scaler.load_state_dict(state["loss_scaler"])
        self._steps_at_scale_update = state["steps_at_scale_update"]
        for s, norms in self._weight_norms.items():
            norms.recorded = state["weight_norms"][s]
        stats = state["epoch_stats"]
        self._loss_sum = stats["loss_sum"]
        for c, cut in self._cut_inputs.items():
            cut.load_statistics(stats["cuts"][c])
        self._stage_time, self._samples, self._phase = stats["stage_time"], stats["samples"], stats["phase"]
        self._bytes_at_epoch_start = {key: self.transport.sent_bytes.get(key, 0) - n for key, n in stats["bytes"].items()}

    # ------------------------------------------------------------------ initialisation

    @torch.no_grad()
    def initialise(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """Fills every λ by one forward pass over ``(x, idx)`` batches of the un-augmented
        training set, with batch-norm on batch statistics (the mode the stages train in); with
        auxiliary networks, each takes one regression step per batch toward those activations.
        With ``aux="pipelined"`` there is nothing to fill: it returns at once, leaving ``batches``
        unread."""
        if self.aux_phase is not None:
            self.aux_phase.initialise(batches, self._forward_pass)
        self.initialised = True

    def restore_weight_norms(self) -> dict[int, list[float]]:
        """At the end of a parallel phase (``restore_norms``): scales this worker's regressing stages'
        batch-normed weights back to their lengths at the last λ pass (outputs unchanged).
        Returns the factors per stage."""
        if not self.restore_norms:
            raise RuntimeError("construct LayerParallel with restore_norms=True to restore weight norms")
        return self.aux_phase.restore_weight_norms()

    @property
    def _weight_norms(self) -> dict:
        return {} if self.aux_phase is None else self.aux_phase.weight_norms

    def _forward_pass(self, x: Tensor, batch: int, take_input: Callable[[int, Tensor], Tensor] | None = None) -> Tensor | None:
        """A plain forward pass of one batch through this worker's stages, activations crossing
        cuts through the transport; ``take_input(s, received)`` may replace stage s's input.
        Returns the logits on the last stage's worker, None elsewhere."""
        last = self.num_stages - 1
        h = None
        for s in self.own:
            if s == 0:
                inp = x
            else:
                shape = (batch, *self.plan.cut_shapes[s - 1])
                inp = self.transport.irecv(shape, self.activation_dtype, self.device, s - 1, s, memory_format=self.memory_format).wait()
                if take_input is not None:
                    inp = take_input(s, inp)
            with self.precision.autocast():
                h = self.stages[s](inp)
            if s < last:
                self.transport.isend(h.to(self.activation_dtype), s, s + 1, memory_format=self.memory_format)
        self.transport.flush()
        return h if last in self.own else None

    # ------------------------------------------------------------------ training

    def step(self, x: Tensor, y: Tensor, idx: Tensor | None = None, flips: Tensor | None = None, *,
             micro_batches: int | None = None) -> dict[int, Tensor]:
        """One parallel step on the batch ``(x, y)`` of sample indices ``idx`` (which stored λ and
        auxiliary networks need; pipelined λ does not); ``flips`` marks the
        samples whose image ``x`` holds mirrored left to right, whose stored λ and μ are then
        mirrored with them (and stored back un-mirrored). With ``micro_batches`` M each stage works
        through the batch in M equal parts, accumulating the batch's θ-gradient for one optimizer
        step (batch norm then normalises each part by its own statistics), and every part's λ (and
        μ) takes its step as soon as the part's gradient is there: smaller working sets, which on a
        CPU keep a stage's activations in cache. With ``aux="pipelined"`` the parts enter the
        pipeline one after another and each stage steps once the batch's last part is through it,
        so stage k's gradient is at most ceil((K-1-k)/M) steps late instead of K-1-k
        (:mod:`lpfast.pipelined`). None: with pipelined λ the fewest parts that leave every stage
        at most one step late (:func:`lpfast.pipelined.default_parts`: 1 at K=2, beyond the
        smallest divisor of the batch from K−1 to 2(K−1); a batch that the parts in flight do not
        divide, a ragged last one, drains the pipeline and goes whole where none divides it),
        otherwise 1.

        Returns each owned stage's local loss over the batch (a detached 0-dim tensor: read it only
        when needed, a read synchronises with the device)."""
        if not self.initialised:
            raise RuntimeError("call LayerParallel.initialise(...) before the first step (it fills the auxiliary variables)")
        if 1 < len(self.own) < self.num_stages:
            raise RuntimeError(f"this worker holds stages {self.own}, looped for the serial schedule; the parallel phase "
                               "runs one stage on each worker: train this layout with serial_step")
        if self.pipelined is not None:
            return self._pipelined_step(x, y, flips, self._default_parts(y.numel()) if micro_batches is None else micro_batches)
        micro_batches = 1 if micro_batches is None else micro_batches
        if idx is None:
            raise ValueError(f"aux={self.aux_kind!r} keeps λ per training sample: pass the batch's sample indices idx")
        batch = idx.numel()
        if micro_batches < 1 or batch % micro_batches:
            raise ValueError(f"micro_batches must divide the batch of {batch} samples, got {micro_batches}")
        update_mu = self.method == "al" and self.steps % self.mu_every == 0
        losses = self.aux_phase.step(x, y, idx, flips, micro_batches=micro_batches, beta=self.beta, update_mu=update_mu,
                                     stage_time=self._stage_time, loss_sum=self._loss_sum)
        self._samples += batch
        self._phase = "parallel"
        self.steps += 1
        return losses

    def _default_parts(self, batch: int) -> int:
        """Pipelined λ's parts for a batch of ``batch`` samples: those of the batches in flight where
        they divide it, else :func:`~lpfast.pipelined.default_parts` (whole batches where it finds
        none: a ragged last batch), the pipeline drained first where that changes them."""
        phase = self.pipelined
        if not phase.empty and batch % phase.parts == 0:
            return phase.parts
        parts = default_parts(self.num_stages, batch) or 1
        if not phase.empty and parts != phase.parts:
            self.drain()
        return parts

    def _pipelined_step(self, x: Tensor, y: Tensor, flips: Tensor | None, micro_batches: int) -> dict[int, Tensor]:
        if flips is not None:
            raise ValueError("with aux='pipelined' the images come augmented as they are: no flips argument")
        if micro_batches < 1 or y.numel() % micro_batches:
            raise ValueError(f"micro_batches must divide the batch of {y.numel()} samples, got {micro_batches}")
        losses = self.pipelined.step(x, y, self._stage_time, self._loss_sum, micro_batches=micro_batches)
        self._samples += y.numel()
        self._phase = "parallel"
        self.steps += 1
        return losses

    def drain(self) -> None:
        """With ``aux="pipelined"``: steps on without new batches until every stage has trained on
        every batch it was given (the pipeline fills again with the next :meth:`step`).
        :meth:`end_epoch` calls it; call it before :meth:`state_dict` within an epoch, and before a
        ``torch.distributed`` barrier of your own: a worker keeps its next input's receive posted
        between steps, and gloo's barrier after undrained steps was seen to hang."""
        if self.pipelined is not None:
            self.pipelined.drain(self._stage_time, self._loss_sum)

    def _require_drained(self, what: str) -> None:
        if self.pipelined is not None and not self.pipelined.empty:
            raise RuntimeError(f"{what} needs every batch in the pipelined parallel phase finished: call drain() or end_epoch() first")

    # ------------------------------------------------------------------ serial phase

    def serial_step(self, x: Tensor, y: Tensor, *, micro_batches: int = 1) -> Tensor | None:
        """One step of ordinary backprop through all stages: the serial phase of the
        serial-parallel hybrid (ALGORITHM.md §5), without gathering the model anywhere.

        The batch is split into ``micro_batches`` that flow forward stage to stage, then their
        gradients flow back (:mod:`lpfast.serial`: across workers under ``serial_schedule``); each
        stage steps its optimizer once. With one micro-batch the gradients are exactly backprop's;
        with more, batch norm normalises each micro-batch by its own statistics. Returns the
        batch's mean cross-entropy on the worker of the last stage, None elsewhere."""
        self._require_drained("serial_step")
        batch = y.numel()
        if not 1 <= micro_batches <= batch:
            raise ValueError(f"micro_batches must be between 1 and the batch size {batch}, got {micro_batches}")
        for s in self.own:
            self.optimizers[s].zero_grad(set_to_none=True)
        with self.transport.counting_as("serial"):
            loss = self.serial_pipeline.run(x, y, micro_batches, self._stage_time)
        for s in self.own:
            if s in self.averages:
                self.averages[s].average(self._trained[s])
            self.precision.step(self.optimizers[s], self._trained[s])
        if loss is not None:
            self._loss_sum[self.num_stages - 1] += loss * batch
        self._samples += batch
        self._phase = "serial"
        self.steps += 1
        return loss

    def update_loss_scale(self) -> float:
        """With ``autocast=torch.float16``: agrees the loss scale across the workers (one all-reduce
        and one host read of the steps that overflowed since the last call) and backs it off or
        grows it (:class:`~lpfast.precision.LossScaler`); call it on every worker at the same step,
        every few steps. Returns the scale the next steps use (1.0 without a loss scale)."""
        scaler = self.precision.scaler
        if scaler is None:
            return 1.0
        scaler.agree(self.transport.all_sum, self.steps - self._steps_at_scale_update)
        self._steps_at_scale_update = self.steps
        return scaler.scale

    def _reset_epoch_stats(self) -> None:
        zero = lambda: torch.zeros((), dtype=torch.float64, device=self.device)  # noqa: E731
        self._loss_sum = {s: zero() for s in self.own}
        for cut in self._cut_inputs.values():
            cut.reset_statistics()
        self._stage_time = {s: 0.0 for s in self.own}
        self._samples = 0
        self._bytes_at_epoch_start = dict(self.transport.sent_bytes)
        self._allreduced_at_epoch_start = {s: self._allreduced_bytes(s) for s in self.own}
        self._phase = None

    def _allreduced_bytes(self, s: int) -> int:
        """Bytes stage s's worker has all-reduced over its replicas so far (its own and its ψ's gradients)."""
        averages = [self.averages.get(s)] + [a.average for c, a in self.aux.items() if c == s - 1 and isinstance(a, NetAux)]
        return sum(a.nbytes for a in averages if a is not None)

    def end_epoch(self) -> dict:
        """Closes an epoch: returns its statistics for every stage and cut (gathered from all
        workers), then grows β. Keys: ``phase`` (``parallel`` or ``serial``), ``beta``,
        ``stage_loss``, ``violation`` (‖φ_k(λ_{k-1}) − λ_k‖ / ‖λ_k‖ per cut, parallel epochs
        only), ``stage_time_s``, ``bytes_forward`` / ``bytes_backward`` (sent in the epoch's steps)
        and ``aux_bytes`` (memory of λ and μ, or of the networks ψ predicting them with their
        optimizer state, on one device) per cut; with replicas ``allreduce_bytes``, what each
        stage's device all-reduced over its replicas (losses and times are means over the
        replicas, bytes between stages their sum); with auxiliary networks also ``aux_fit_loss``, ψ's mean
        regression loss per cut (over the epoch and any initialisation before it). With
        ``aux="pipelined"`` it first finishes the batches in flight (:meth:`drain`); its violation is
        None (each λ is the previous stage's output, and only the last stage has a loss).
        """
        self.drain()
        phase = self._phase or "parallel"
        k = self.num_stages
        n = max(self._samples, 1)
        # Each worker fills in what its own stages know; the sum over workers assembles the table.
        local = torch.zeros(8, k, dtype=torch.float64, device=self.device)
        for s in self.own:
            local[0, s] = self._loss_sum[s] / n
            local[1, s] = self._stage_time[s]
            local[7, s] = self._allreduced_bytes(s) - self._allreduced_at_epoch_start[s]
            if s - 1 in self.aux:
                aux = self.aux[s - 1]
                local[5, s - 1] = aux.nbytes
                local[2, s - 1] = self._cut_inputs[s - 1].relative_violation()
                if isinstance(aux, NetAux):
                    local[6, s - 1] = aux.take_fit_loss()
        sent, before = self.transport.sent_bytes, self._bytes_at_epoch_start
        for c in range(k - 1):
            for row, pair in ((3, (phase, c, c + 1)), (4, (phase, c + 1, c))):
                local[row, c] = sent.get(pair, 0) - before.get(pair, 0)
        table = self.transport.all_sum(local)
        # With replicas: bytes sent are their sum, everything else (losses, times, violations, the
        # memory of one device's λ) the mean over them.
        table[[0, 1, 2, 5, 6, 7]] /= self.transport.replicas
        stats = {
            "phase": phase,
            "beta": self.beta,
            "stage_loss": table[0].tolist(),
            "stage_time_s": table[1].tolist(),
            "violation": table[2, : k - 1].tolist() if phase == "parallel" and self.pipelined is None else None,
            "bytes_forward": [int(v) for v in table[3, : k - 1].tolist()],
            "bytes_backward": [int(v) for v in table[4, : k - 1].tolist()],
            "aux_bytes": [int(v) for v in table[5, : k - 1].tolist()],
        }
        if self.transport.replicas > 1:
            stats["allreduce_bytes"] = [int(v) for v in table[7].tolist()]
        if self.aux_kind == "net":
            stats["aux_fit_loss"] = table[6, : k - 1].tolist() if phase == "parallel" else None
        if phase == "parallel":
            self.epoch += 1
        self._reset_epoch_stats()
        return stats

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]], *, through_wire: bool = False) -> tuple[float, float]:
        """Mean cross-entropy and accuracy (%) of the whole network (plain forward through all
        stages, eval-mode batch norm) over ``(x, y)`` batches; with ``through_wire`` each cut's
        activations pass through the wire filter (encoded and decoded), as in the parallel phase
        with pipelined λ, which trains the network with the filter in it."""
        self._require_drained("evaluate")
        for s in self.own:
            self.stages[s].eval()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        with self.transport.counting_as("eval"):
            self._evaluate_batches(batches, totals, through_wire)
        for s in self.own:
            self.stages[s].train()
        totals = self.transport.all_sum(totals)  # only the last stage's worker counted
        n = max(totals[2].item(), 1.0)
        return totals[0].item() / n, 100.0 * totals[1].item() / n

    def _evaluate_batches(self, batches: Iterable[tuple[Tensor, Tensor]], totals: Tensor, through_wire: bool) -> None:
        filtered = (lambda s, received: self.wire.decode(self.wire.encode(received), self.activation_dtype)) if through_wire else None
        for x, y in batches:
            logits = self._forward_pass(x, y.numel(), filtered)
            if logits is not None:
                totals[0] += F.cross_entropy(self.precision.for_loss(logits), y, reduction="sum")
                totals[1] += (logits.argmax(1) == y).sum()
                totals[2] += y.numel()

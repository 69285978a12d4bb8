"""What layer-parallel training would gain on this device, predicted from measured per-block costs.

``lpfast plan`` times one batch's forward and backward through every part of the model (stem with
the first block, each block, the last block with the head) and the per-cut work of the method
(the λ gather, the penalty and λ-update ops, the scatter, the local head) on this device, then
predicts for each K from the cost model of ALGORITHM.md §8:

- for the fastest cut (contiguous blocks whose slowest stage, the method's work at its cuts
  included, is fastest) and for the one ``lpfast train`` makes by default (balanced by estimated
  FLOPs) where that is another:
- a parallel-phase step with stored λ: the slowest stage's compute plus its cuts' work, or the
  time its messages take on the link where that is longer (no message waits on another stage's
  compute; a link is full duplex, and a middle stage's two neighbours share its link);
- with pipelined λ (``--aux pipelined``; no work at the cuts, an output forward and an input
  gradient back per cut, the gradient a step after the output; in ``lpfast train``'s default parts
  at K > 2 unless ``--parallel-micro-batches`` says otherwise) and with pipelined λ and DS (s=2,
  bfloat16 wire: messages an eighth of the size), and the serial phase's pipelines of M
  micro-batches (``torch.distributed.pipelining``'s 1F1B, the serial phase's default, and GPipe):
  the steady step of each schedule's order of compute, sends and waits played out on the link
  (:mod:`lpfast.timeline`); with free messages a pipeline's step is (M + K - 1)/M of the slowest
  stage's;
- DDP on K devices: the compute of a K-th of the batch, and the gradient all-reduce (2(K-1)/K of the
  parameters' bytes) in DDP's buckets (1 MiB, then 25 MiB, filled in the backward's order), each
  overlapping the backward only once all of its gradients are ready: the last bucket's all-reduce
  (for a model under 26 MiB of gradients, nearly all of it) follows the backward;
- speed-ups over backprop on one device, per epoch of each phase and for a whole SPH run with a
  given parallel share (Amdahl over the two phases, the parallel one with the auxiliary variables
  ``lpfast train`` uses: pipelined λ for the penalty method, stored λ for AL, unless ``aux`` says);
  bytes per step with and without DS (s=2, bfloat16 wire); λ (and μ) memory per stage for a data
  set of N samples (none with pipelined λ).

With ``--replicas`` each K is also predicted as K stages × D replicas on K·D devices (each replica
on 1/D of the batch, each stage's gradient all-reduced over its replicas, :func:`predict`), and the
table ends with the fastest layout for each device count. With ``--hosts H`` the devices are H
machines of adjacent ranks (as torchrun places them) joined by the link, messages within a machine
free, and each K × D is predicted in both placements of :mod:`lpfast.mesh` (a replica's stages on
one machine, or a stage's replicas); without it every device is a machine of its own.

Data loading is left out of every row alike. Predictions are checked against measured rows in
bench/results/ALL.md.

    lpfast plan --model resnet20 --input-shape 3,32,32 --stages 2,4,8 --link 1gbit
    lpfast plan --model resnet20 --stages 1,2,4 --replicas 1,2,4 --link 100mbit --hosts 2
"""
from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lpfast import ops
from lpfast.describe import describe
from lpfast.localheads import LocalHead
from lpfast.mesh import PLACEMENTS, Mesh, check_layout
from lpfast.parallel import default_aux
from lpfast.pipelined import required_default_parts
from lpfast.replicas import DEFAULT_BUCKET_BYTES
from lpfast.stages import balanced_split, partition
from lpfast.timeline import gpipe_program, one_f_one_b_program, pipelined_program, steady_step

_RATE = re.compile(r"^(\d+(?:\.\d+)?)(k|m|g)?bit$")
_RATE_UNIT = {None: 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def link_bytes_per_s(rate: str | None) -> float | None:
    """Bytes per second of a link given as tc writes rates (``10mbit``, ``1gbit``); None: no link cost."""
    if rate is None or rate == "none":
        return None
    match = _RATE.match(rate.lower())
    if match is None:
        raise ValueError(f"link rate {rate!r} is not a rate like 10mbit, 100mbit, 1gbit or 25gbit (or 'none' for no link cost)")
    return float(match.group(1)) * _RATE_UNIT[match.group(2)] / 8


# DistributedDataParallel's gradient buckets with torch's defaults: from its second step on, the
# gradients in the order the backward produces them, 1 MiB in the first bucket and 25 MiB in each after.
DDP_BUCKET_BYTES = (1 << 20, 25 << 20)


@dataclass
class PartCosts:
    """Measured seconds per batch: forward and backward of each block (stem and head counted with the
    first and last block), at ``batch_size`` and at a pipeline's ``micro_batch_size`` (a small
    batch costs more than its share: a fixed cost per call, less parallel work per kernel); per
    possible cut (after each block but the last) the method's work on the stage before it
    (penalty, local head) and on the stage after it (λ gather, update, scatter); each cut's
    per-sample shape; each block's parameters' bytes."""

    forward_s: list[float]
    backward_s: list[float]
    micro_forward_s: list[float]
    micro_backward_s: list[float]
    cut_regress_s: list[float]
    cut_lambda_s: list[float]
    cut_shapes: list[tuple[int, ...]]
    part_parameter_bytes: list[int]
    batch_size: int
    micro_batch_size: int

    @property
    def parameter_bytes(self) -> int:
        return sum(self.part_parameter_bytes)

    def at_fraction(self, full_s: float, micro_s: float, parts: int) -> float:
        """Seconds of a part on 1/``parts`` of the batch (a micro-batch, a replica's or a DDP worker's
        share), given its measured seconds at ``batch_size`` and ``micro_batch_size``: on the line
        through the two between them (a smaller batch may cost more than its share, a fixed cost per
        call, or less, where it fits a cache), below the smaller size at least that size's cost per
        sample."""
        size = self.batch_size / parts
        if self.micro_batch_size == self.batch_size:
            return full_s * size / self.batch_size
        slope = (full_s - micro_s) / (self.batch_size - self.micro_batch_size)
        line = micro_s + slope * (size - self.micro_batch_size)
        return line if size >= self.micro_batch_size else max(line, micro_s * size / self.micro_batch_size)

    @classmethod
    def from_dict(cls, record: dict) -> PartCosts:
        """The costs of a :func:`to_record`'s ``costs`` read back from JSON."""
        return cls(**{**record, "cut_shapes": [tuple(shape) for shape in record["cut_shapes"]]})


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model: nn.Module, input_shape: Sequence[int], *, batch_size: int = 128, micro_batches: int = 4, repeats: int = 5,
            memory_format: torch.memory_format = torch.channels_last) -> PartCosts:
    """Times every part of ``model`` (trained as lpfast trains it: batch statistics, ``memory_format``)
    on a random batch of ``batch_size`` and on its first ``batch_size // micro_batches`` samples, in
    this process's threads and device."""
    if micro_batches < 1 or batch_size % micro_batches:
        raise ValueError(f"micro_batches ({micro_batches}) must be >= 1 and divide batch_size ({batch_size})")
    net = describe(model)
    param = next(model.parameters())
    net = net.to(memory_format=memory_format)
    x = torch.randn((batch_size, *input_shape), device=param.device, dtype=param.dtype)
    if x.dim() == 4:
        x = x.contiguous(memory_format=memory_format)
    if len(net.blocks) == 1:
        parts = [nn.Sequential(net.stem, net.blocks[0], net.head)]
    else:
        parts = [nn.Sequential(net.stem, net.blocks[0]), *net.blocks[1:-1], nn.Sequential(net.blocks[-1], net.head)]
    micro_size = batch_size // micro_batches
    full, micro, shapes, part_bytes = [], [], [], []
    h = x
    for part in parts:
        full.append(_time_part(part, h, h is not x, repeats))
        micro.append(_time_part(part, h[:micro_size], h is not x, repeats))
        h = part(h).detach()
        shapes.append(tuple(h.shape[1:]))
        part_bytes.append(sum(p.numel() * p.element_size() for p in part.parameters()))
    model.zero_grad(set_to_none=True)
    cut_shapes = shapes[:-1]
    num_classes = shapes[-1][0]
    work = [_cut_work(shape, batch_size, num_classes, param.device, param.dtype, memory_format, repeats) for shape in cut_shapes]
    return PartCosts([f for f, _ in full], [b for _, b in full], [f for f, _ in micro], [b for _, b in micro],
                     [w[0] for w in work], [w[1] for w in work], cut_shapes, part_bytes, batch_size, micro_size)


def _time_part(part: nn.Module, h: torch.Tensor, needs_grad: bool, repeats: int) -> tuple[float, float]:
    """Median seconds of ``part``'s forward on ``h``, and of its backward (from a random output gradient)."""
    inp = h.detach().requires_grad_(needs_grad)
    grad = torch.randn_like(part(inp))
    forward = _median_time(lambda: part(inp), repeats)
    return forward, max(_median_time(lambda: part(inp).backward(grad), repeats) - forward, 0.0)


def _cut_work(shape: tuple[int, ...], batch: int, num_classes: int, device, dtype, memory_format, repeats: int) -> tuple[float, float]:
    """Seconds per step of one cut's method work besides the stages' own compute: on the stage
    before the cut, the penalty residual and the local head's forward and backward
    (``--local-loss``, on by default); on the stage after it (λ's owner), gathering the batch's λ,
    the λ-update and the scatter."""
    rows = 4 * batch
    layout = memory_format if len(shape) == 3 else torch.contiguous_format
    store = torch.zeros((rows, *shape), device=device, dtype=dtype).contiguous(memory_format=layout)
    idx = torch.randperm(rows, device=device)[:batch]
    out = torch.randn((batch, *shape), device=device, dtype=dtype).contiguous(memory_format=layout)
    grad = torch.randn_like(out)
    head = LocalHead(shape[0], shape[1:], num_classes).to(device, dtype, memory_format=layout) if len(shape) == 3 else None
    labels = torch.randint(num_classes, (batch,), device=device)

    def regress() -> None:
        ops.penalty_residual(out, grad, None, beta=2.0)
        if head is not None:
            F.cross_entropy(head(out.detach().requires_grad_()), labels).backward()

    def own_lambda() -> None:
        lam = ops.aux_gather(store, idx, dtype)
        ops.aux_update_(lam, None, out, grad, beta=2.0, eta=1.0, update_mu=False)
        ops.aux_scatter_(store, idx, lam)

    return _median_time(regress, repeats), _median_time(own_lambda, repeats)


@dataclass
class Prediction:
    """Predicted for K stages on K devices like this one (seconds per step, speed-ups over backprop on one)."""

    stages: int
    cut: list[int]
    fastest: bool
    default: bool
    serial_step_s: float
    parallel_step_s: float
    pipelined_step_s: float
    pipelined_ds_step_s: float
    pipeline_step_s: float  # 1F1B, the serial phase's default schedule
    gpipe_step_s: float
    ddp_step_s: float
    parallel_speedup: float
    pipelined_speedup: float
    pipelined_ds_speedup: float
    pipeline_speedup: float
    gpipe_speedup: float
    ddp_speedup: float
    sph_speedup: float
    bytes_per_step: int
    bytes_per_step_ds: int
    ddp_allreduce_bytes: int
    aux_bytes_per_stage: list[int]
    replicas: int = 1
    allreduce_bytes_per_device: list[int] | None = None  # with replicas: per stage, what each of its devices all-reduces a step
    hosts: int | None = None  # machines of adjacent ranks joined by the link (None: each device its own)
    placement: str = "stages-together"
    parallel_micro_batches: int = 1  # the parts pipelined λ sends a replica's batch in

    @property
    def devices(self) -> int:
        return self.stages * self.replicas


def predict(costs: PartCosts, k: int, *, cut: Sequence[int] | None = None, default_cut: Sequence[int] | None = None,
            link: float | None, micro_batches: int = 4, parallel_share: float = 0.5, dataset_size: int = 50_000,
            method: str = "penalty", aux: str | None = None, replicas: int = 1, hosts: int | None = None,
            placement: str = "stages-together", parallel_micro_batches: int | None = None) -> Prediction:
    """The §8 prediction for ``k`` stages cut into ``cut`` blocks per stage (None: the fastest cut)
    from measured ``costs``; ``default_cut`` is the one ``lpfast train`` makes; ``link`` in bytes per
    second (None: free); ``aux``: ``"store"`` or ``"pipelined"`` λ for the SPH run and the memory
    (None: ``lpfast train``'s default for ``method``).

    With ``replicas`` D > 1, ``k`` × D devices (ALGORITHM.md §9): each replica's stages work on 1/D
    of the batch (its compute at that size, :meth:`PartCosts.at_fraction`, and a D-th of the cut
    messages, as DDP's model takes a K-th of the batch), and
    each stage's gradient is all-reduced over its D replicas (2(D-1)/D of the stage's parameter
    bytes): with pipelined λ in buckets of :data:`lpfast.replicas.DEFAULT_BUCKET_BYTES` as the
    stage's backward produces them, what outlasts the backward adding to the stage's step; in the
    stored-λ and serial phases after the step. DDP is then DDP on all k·D devices, and λ memory
    per stage a D-th.

    With ``hosts`` H the k·D devices are H machines of adjacent ranks, ranked by ``placement`` as
    :class:`lpfast.mesh.Mesh` ranks them: only what passes between machines takes the link, and
    the copies of one traffic that leave a machine at once (a cut's message in each replica, the
    stages' all-reduces) share its link (:func:`_link_loads`). None: every device a machine of its
    own, every message on the link.

    With ``parallel_micro_batches`` M > 1 each stage's parallel step works through a replica's batch
    in M parts, each part's compute as measured at its size; pipelined λ sends each part down the
    pipeline on its own (:mod:`lpfast.pipelined`): M steady steps a batch, messages of 1/M the bytes,
    the stages' all-reduce (once a batch) spread over the parts. None: ``lpfast train``'s defaults,
    :func:`lpfast.pipelined.default_parts` for pipelined λ and whole batches for stored λ."""
    if aux not in (None, "store", "pipelined") or (aux == "pipelined" and method != "penalty"):
        raise ValueError(f"aux must be 'store' or 'pipelined' (pipelined with the penalty method only), got {aux!r} with {method!r}")
    check_layout(k, replicas, placement)
    if hosts is not None and (hosts < 1 or k * replicas % hosts):
        raise ValueError(f"hosts must be >= 1 and divide the {k * replicas} devices of {k} stages × {replicas} replicas, got {hosts}")
    if parallel_micro_batches is not None and (parallel_micro_batches < 1 or costs.batch_size // replicas % parallel_micro_batches):
        raise ValueError(f"parallel_micro_batches must be >= 1 and divide a replica's batch ({costs.batch_size // replicas}), "
                         f"got {parallel_micro_batches}")
    n_parts = len(costs.forward_s)
    if not 1 <= k <= n_parts:
        raise ValueError(f"stages must be between 1 and the model's {n_parts} blocks, got {k}")
    step = [f + b for f, b in zip(costs.forward_s, costs.backward_s)]
    serial = sum(step)
    fastest = _best_cut(step, costs.cut_regress_s, costs.cut_lambda_s, k)
    chosen = list(cut) if cut is not None else fastest
    if len(chosen) != k or sum(chosen) != n_parts or min(chosen) < 1:
        raise ValueError(f"cut {chosen} must give each of the {k} stages at least one of the model's {n_parts} blocks")
    bounds = [sum(chosen[:i]) for i in range(k + 1)]
    d = replicas

    def stage_seconds(full: list[float], micro: list[float], parts: int) -> list[float]:  # per stage, on 1/parts of the batch
        return [sum(costs.at_fraction(full[j], micro[j], parts) for j in range(bounds[i], bounds[i + 1])) for i in range(k)]

    # A stage's compute on a replica's share of the batch in stored λ's parts, and in pipelined λ's.
    stored_m = 1 if parallel_micro_batches is None else parallel_micro_batches
    m = required_default_parts(k, costs.batch_size // d) if parallel_micro_batches is None else parallel_micro_batches
    compute = [stored_m * (f + b) for f, b in zip(stage_seconds(costs.forward_s, costs.micro_forward_s, d * stored_m),
                                                 stage_seconds(costs.backward_s, costs.micro_backward_s, d * stored_m))]
    part_forward = stage_seconds(costs.forward_s, costs.micro_forward_s, d * m)
    part_backward = stage_seconds(costs.backward_s, costs.micro_backward_s, d * m)
    micro_forward = stage_seconds(costs.forward_s, costs.micro_forward_s, d * micro_batches)
    micro_backward = stage_seconds(costs.backward_s, costs.micro_backward_s, d * micro_batches)
    cuts = [bounds[i] - 1 for i in range(1, k)]  # the part after which each cut sits
    cut_elements = [math.prod(costs.cut_shapes[c]) for c in cuts]
    element = 4
    crossing = [costs.batch_size // d * c * element for c in cut_elements]  # one activation-sized tensor, one way
    crossing_ds = [costs.batch_size // d * c // 4 * 2 for c in cut_elements]  # pooled 2×2, bfloat16
    seconds = (lambda nbytes: 0.0) if link is None else (lambda nbytes: nbytes / link)
    cut_load, reduce_load, ddp_load = _link_loads(k, d, hosts, placement)
    # Stage s does its compute, the work of the cut after it (penalty, head) and of the cut before it (its input λ).
    work = [compute[s] + (costs.cut_regress_s[cuts[s]] / d if s < k - 1 else 0.0) + (costs.cut_lambda_s[cuts[s - 1]] / d if s > 0 else 0.0)
            for s in range(k)]
    # With replicas, each stage's gradient all-reduce: what its devices send, the time it takes alone,
    # and what of it outlasts the stage's backward when its buckets leave as the backward goes.
    stage_parts = [range(bounds[i], bounds[i + 1]) for i in range(k)]
    reduced = [int(2 * (d - 1) / d * sum(costs.part_parameter_bytes[j] for j in parts)) for parts in stage_parts]
    reduce_s = [load * seconds(n) for load, n in zip(reduce_load, reduced)]
    # Pipelined λ averages a batch's gradient during its last part's backward (1/m of it).
    exposed = [_exposed_allreduce(costs, parts, d, d * m, lambda n, load=load: load * seconds(n)) for parts, load in zip(stage_parts, reduce_load)]

    def on_link(sizes: list[float]) -> list[float]:  # per cut: its message one way (full duplex)
        return [load * seconds(n) for load, n in zip(cut_load, sizes)]

    def messages(sizes: list[int]) -> list[float]:  # per stage: its cuts' messages one way
        cut_s = on_link(sizes)
        return [sum(cut_s[c] for c in (s - 1, s) if 0 <= c < k - 1) for s in range(k)]

    parallel = max(max(w + r, sent) for w, r, sent in zip(work, reduce_s, messages(crossing)))
    reduced_backward = [b + e / m for b, e in zip(part_backward, exposed)]  # the all-reduce, once a batch, spread over its parts
    pipelined = m * steady_step(pipelined_program(part_forward, reduced_backward, on_link([n / m for n in crossing])), k)
    pipelined_ds = m * steady_step(pipelined_program(part_forward, reduced_backward, on_link([n / m for n in crossing_ds])), k)
    on_link_micro = on_link([n / micro_batches for n in crossing])
    pipeline = steady_step(one_f_one_b_program(micro_forward, micro_backward, on_link_micro, micro_batches), k) + max(reduce_s)
    gpipe = steady_step(gpipe_program(micro_forward, micro_backward, on_link_micro, micro_batches), k) + max(reduce_s)
    devices = k * d
    allreduce = int(2 * (devices - 1) / devices * costs.parameter_bytes)
    ddp = _ddp_step(costs, devices, lambda n: ddp_load * seconds(n))
    per_store = [dataset_size // d * c * element for c in cut_elements]
    pipelined_aux = (aux or default_aux(method)) == "pipelined"
    aux_bytes = [0] + [0 if pipelined_aux else per_store[c] * (2 if method == "al" else 1) for c in range(k - 1)]
    sph = serial / (parallel_share * (pipelined if pipelined_aux else parallel) + (1 - parallel_share) * pipeline)
    return Prediction(
        stages=k, cut=chosen, fastest=chosen == fastest, default=default_cut is not None and chosen == list(default_cut),
        serial_step_s=serial, parallel_step_s=parallel, pipelined_step_s=pipelined, pipelined_ds_step_s=pipelined_ds,
        pipeline_step_s=pipeline, gpipe_step_s=gpipe, ddp_step_s=ddp, parallel_speedup=serial / parallel, pipelined_speedup=serial / pipelined,
        pipelined_ds_speedup=serial / pipelined_ds, pipeline_speedup=serial / pipeline, gpipe_speedup=serial / gpipe,
        ddp_speedup=serial / ddp, sph_speedup=sph, bytes_per_step=2 * sum(crossing), bytes_per_step_ds=2 * sum(crossing_ds),
        ddp_allreduce_bytes=allreduce, aux_bytes_per_stage=aux_bytes, replicas=d, allreduce_bytes_per_device=reduced if d > 1 else None,
        hosts=hosts, placement=placement, parallel_micro_batches=m,
    )


def _link_loads(k: int, d: int, hosts: int | None, placement: str) -> tuple[list[int], list[int], int]:
    """How many copies of each traffic share the link out of the busiest machine at once, 0 where
    it stays within machines: per cut, its message in each replica (both ways: full duplex); per
    stage, the ring all-reduces over replicas (each ring edge out of a machine carries 2(D-1)/D of
    the bytes, and every stage's backward, so its all-reduce, runs at once); DDP's one ring over all
    devices. ``hosts`` None: each device a machine of its own."""
    devices = k * d
    per_host = 1 if hosts is None else devices // hosts
    layout = Mesh(k, d, placement, stage=0, replica=0)

    def host(stage: int, replica: int) -> int:
        return layout.rank_of(stage, replica) // per_host

    def busiest(edges: list[tuple[int, int]]) -> int:  # the most edges leaving one machine
        leaving = [a for a, b in edges if a != b]
        return max((leaving.count(h) for h in set(leaving)), default=0)

    cut = [max(busiest([(host(c, r), host(c + 1, r)) for r in range(d)]), busiest([(host(c + 1, r), host(c, r)) for r in range(d)]))
           for c in range(k - 1)]
    rings = [[(host(s, r), host(s, (r + 1) % d)) for r in range(d)] for s in range(k)]
    every_ring = busiest([edge for ring in rings for edge in ring])
    reduce = [every_ring if busiest(ring) else 0 for ring in rings]
    ddp = busiest([(r // per_host, (r + 1) % devices // per_host) for r in range(devices)])
    return cut, reduce, ddp


def _exposed_allreduce(costs: PartCosts, parts: range, d: int, fraction: int, seconds) -> float:
    """Seconds a stage's gradient all-reduce over ``d`` replicas adds after the backward it rides
    on: going through its ``parts`` as the backward does (last first, each on 1/``fraction`` of the
    batch), a bucket leaves once it holds :data:`~lpfast.replicas.DEFAULT_BUCKET_BYTES` (or the
    stage's first part is done) and the bucket before it has gone."""
    if d == 1:
        return 0.0
    share = 2 * (d - 1) / d
    clock = sent = 0.0
    bucket = 0
    for part in reversed(parts):
        clock += costs.at_fraction(costs.backward_s[part], costs.micro_backward_s[part], fraction)
        bucket += costs.part_parameter_bytes[part]
        if bucket >= DEFAULT_BUCKET_BYTES or part == parts.start:
            sent = max(sent, clock) + seconds(share * bucket)
            bucket = 0
    return max(sent - clock, 0.0)


def _ddp_step(costs: PartCosts, k: int, seconds) -> float:
    """DDP's step on ``k`` devices: the forward on a k-th of the batch, then each block's backward on it
    (:meth:`PartCosts.at_fraction`) from the last block to the first; a bucket's all-reduce (2(K-1)/K of its bytes) starts once the backward
    has produced all of its gradients and the bucket before it has gone, and what outlasts the
    backward adds to the step."""
    share = 2 * (k - 1) / k
    clock = sent = 0.0
    bucket, cap = 0, DDP_BUCKET_BYTES[0]
    for part in reversed(range(len(costs.backward_s))):
        clock += costs.at_fraction(costs.backward_s[part], costs.micro_backward_s[part], k)
        bucket += costs.part_parameter_bytes[part]
        if bucket >= cap or part == 0:
            sent = max(sent, clock) + seconds(share * bucket)
            bucket, cap = 0, DDP_BUCKET_BYTES[1]
    forward = sum(costs.at_fraction(f, micro, k) for f, micro in zip(costs.forward_s, costs.micro_forward_s))
    return forward + max(clock, sent)


def _best_cut(step: Sequence[float], regress: Sequence[float], own: Sequence[float], k: int) -> list[int]:
    """Block counts of the ``k`` contiguous stages whose slowest parallel step (its blocks, plus the
    method's work at the cut after it and the cut before it) is fastest."""
    n = len(step)
    prefix = [0.0]
    for t in step:
        prefix.append(prefix[-1] + t)

    def cost(i: int, j: int) -> float:  # a stage of parts i..j-1
        return prefix[j] - prefix[i] + (regress[j - 1] if j < n else 0.0) + (own[i - 1] if i > 0 else 0.0)

    return balanced_split(n, k, cost)


def plan(model: nn.Module, input_shape: Sequence[int], stages: Sequence[int], *, link: str | None = None,
         batch_size: int = 128, micro_batches: int = 4, parallel_share: float = 0.5, dataset_size: int = 50_000,
         method: str = "penalty", aux: str | None = None, repeats: int = 5, replicas: Sequence[int] = (1,),
         hosts: int | None = None, parallel_micro_batches: int | None = None) -> tuple[PartCosts, list[Prediction]]:
    """Measures ``model`` once and predicts every K in ``stages`` × D in ``replicas`` (see the
    module's documentation): for the fastest cut, and for ``lpfast train``'s default cut where that
    is another; on ``hosts`` machines, in each placement where the layout has stages and replicas."""
    if not 0 <= parallel_share <= 1:
        raise ValueError(f"parallel_share must be in [0, 1], got {parallel_share}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape is one sample's C,H,W (e.g. 3,32,32), got {','.join(map(str, input_shape))}")
    if any(d < 1 or batch_size % d for d in replicas):
        raise ValueError(f"replicas {list(replicas)} must be >= 1 and divide batch_size ({batch_size}): each replica takes its share of a batch")
    if hosts is not None and any(hosts < 1 or k * d % hosts for k in stages for d in replicas):
        raise ValueError(f"hosts ({hosts}) must divide every layout's devices (stages × replicas: "
                         f"{sorted({k * d for k in stages for d in replicas})}): each machine holds as many devices as the others")
    rate = link_bytes_per_s(link)
    described = describe(model)
    n_blocks = len(described.blocks)
    for k in stages:
        if not 1 <= k <= n_blocks:
            raise ValueError(f"stages must be between 1 and the model's {n_blocks} blocks, got {k}")
    partition(described, 1, input_shape)  # a shape the model cannot take is a one-line error here
    costs = measure(model, input_shape, batch_size=batch_size, micro_batches=micro_batches, repeats=repeats)
    if parallel_micro_batches is not None and (parallel_micro_batches < 1 or any(batch_size // d % parallel_micro_batches for d in replicas)):
        raise ValueError(f"parallel_micro_batches ({parallel_micro_batches}) must be >= 1 and divide every replica's batch "
                         f"({sorted({batch_size // d for d in replicas})})")
    options = dict(link=rate, micro_batches=micro_batches, parallel_share=parallel_share, dataset_size=dataset_size, method=method, aux=aux,
                   hosts=hosts, parallel_micro_batches=parallel_micro_batches)
    predictions = []
    for k in stages:
        default = partition(described, k, input_shape).blocks_per_stage
        for d in replicas:
            for placement in PLACEMENTS if hosts is not None and k > 1 and d > 1 else PLACEMENTS[:1]:
                predictions.append(predict(costs, k, default_cut=default, replicas=d, placement=placement, **options))
                if not predictions[-1].default:
                    predictions.append(predict(costs, k, cut=default, default_cut=default, replicas=d, placement=placement, **options))
    return costs, predictions


def best_layouts(predictions: Sequence[Prediction]) -> dict[int, tuple[Prediction, bool]]:
    """Per device count, the layout (K × D and cut) whose pipelined-λ epoch is fastest, with or
    without DS (the flag: with)."""
    best: dict[int, tuple[Prediction, bool]] = {}
    for p in predictions:
        for ds, speedup in ((False, p.pipelined_speedup), (True, p.pipelined_ds_speedup)):
            held = best.get(p.devices)
            if held is None or speedup > (held[0].pipelined_ds_speedup if held[1] else held[0].pipelined_speedup):
                best[p.devices] = (p, ds)
    return dict(sorted(best.items()))


def as_table(costs: PartCosts, predictions: Sequence[Prediction], *, link: str | None, parallel_share: float) -> str:
    """The predictions as a Markdown table, with what was measured above it."""
    serial = sum(costs.forward_s) + sum(costs.backward_s)
    lines = [f"Measured on this device: backprop step {1e3 * serial:.1f} ms at batch {costs.batch_size} "
             f"(forward {1e3 * sum(costs.forward_s):.1f}, backward {1e3 * sum(costs.backward_s):.1f}); method work per cut after "
             "each block, before / after the cut (ms): " + ", ".join(f"{1e3 * a:.1f}/{1e3 * b:.1f}" for a, b in zip(costs.cut_regress_s, costs.cut_lambda_s))
             + "; "
             f"link {link or 'none (messages free)'}"
             + (f" between {predictions[0].hosts} machines of adjacent ranks (free within one)" if predictions and predictions[0].hosts else "")
             + ".", "",
             f"| K × D | cut (blocks per stage) | parallel epoch | the same, pipelined λ | pipelined λ with DS | 1F1B epoch | GPipe epoch "
             f"| DDP epoch on K·D | SPH run ({parallel_share:.2f} parallel) | bytes/step | with DS | all-reduce/step per device (by stage) "
             "| DDP all-reduce/step | λ memory per stage |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in predictions:
        reduced = ", ".join(f"{b / 1e6:.2f}" for b in p.allreduce_bytes_per_device) + " MB" if p.allreduce_bytes_per_device else "-"
        lines.append(
            f"| {_layout_label(p)} | {_cut_label(p)} | {p.parallel_speedup:.2f}x | {p.pipelined_speedup:.2f}x{_parts(p)} | "
            f"{p.pipelined_ds_speedup:.2f}x{_parts(p)} | "
            f"{p.pipeline_speedup:.2f}x | {p.gpipe_speedup:.2f}x | {p.ddp_speedup:.2f}x | {p.sph_speedup:.2f}x | {p.bytes_per_step / 1e6:.2f} MB | "
            f"{p.bytes_per_step_ds / 1e6:.2f} MB | {reduced} | {p.ddp_allreduce_bytes / 1e6:.2f} MB | "
            + ", ".join(f"{b / 1e9:.2f} GB" for b in p.aux_bytes_per_stage) + " |")
    lines += ["", "Speed-ups over backprop on one device; data loading left out. K × D: K stages × D replicas on K·D devices (bytes/step: "
              "what one replica sends across its cuts; pipelined λ in parts: each batch down the pipeline in that many parts). Where the fastest cut is not lpfast train's default, pass it as --stage-blocks.", ""]
    for devices, (p, ds) in best_layouts(predictions).items():
        placed = f", {_PLACED[p.placement]}" if _placed(p) else ""
        layout = f"{p.stages} stages × {p.replicas} replicas{placed} (cut {','.join(map(str, p.cut))}){', with DS' if ds else ''}{_parts(p)}"
        lines.append(f"Best on {devices} device(s): {layout}: {p.pipelined_ds_speedup if ds else p.pipelined_speedup:.2f}x, "
                     f"DDP {p.ddp_speedup:.2f}x.")
    return "\n".join(lines)


_PLACED = {"stages-together": "a replica's stages on one machine", "replicas-together": "a stage's replicas on one machine"}


def _placed(p: Prediction) -> bool:
    """Whether the placement changes what crosses the link: stages and replicas on several machines."""
    return p.hosts is not None and p.stages > 1 and p.replicas > 1


def _parts(p: Prediction) -> str:
    return f" ({p.parallel_micro_batches} parts)" if p.parallel_micro_batches > 1 else ""


def _layout_label(p: Prediction) -> str:
    return f"{p.stages} × {p.replicas}" + (f" ({_PLACED[p.placement]}, --placement {p.placement})" if _placed(p) else "")


def _cut_label(p: Prediction) -> str:
    notes = [note for flag, note in ((p.fastest, "fastest"), (p.default, "lpfast train's default")) if flag]
    return ",".join(map(str, p.cut)) + (f" ({', '.join(notes)})" if notes else "")


def to_record(costs: PartCosts, predictions: Sequence[Prediction]) -> dict:
    return {"costs": asdict(costs), "predictions": [asdict(p) for p in predictions]}

"""How activation-sized tensors travel between neighbouring stages.

The same layer-parallel schedule runs over either transport: :class:`LocalTransport` when every
stage lives in one process, :class:`DistTransport` when each stage is its own ``torch.distributed``
rank (gloo on CPU, NCCL on GPU), one replica or several (:mod:`lpfast.mesh`: messages then stay
within a replica, and each stage's gradient is averaged over its replicas, :mod:`lpfast.replicas`). Both count the bytes they move per phase (``parallel``,
``serial``, ``init``, ``eval``) and ordered pair of stages.
Messages between two stages in one direction arrive in the order they were sent.
"""
from __future__ import annotations

import datetime
from collections import defaultdict, deque
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lpfast.mesh import Mesh


class WorkerLostError(RuntimeError):
    """A neighbouring stage stopped answering: its worker died or stalled past the timeout."""

    @classmethod
    def of(cls, who: str, doing: str, peer: str, exc: RuntimeError, timeout: datetime.timedelta) -> "WorkerLostError":
        """``who`` failed ``doing`` (posting it or waiting for it) with ``exc``: ``peer`` died or stalled."""
        return cls(f"{who}: {doing} failed ({str(exc).splitlines()[0]}); {peer} died or stalled for more than "
                   f"{timeout.total_seconds():.0f}s")


def summed_over_workers(values: Tensor) -> Tensor:
    """``values`` summed over every worker of the default process group (a new tensor)."""
    values = values.clone()
    dist.all_reduce(values)
    return values


class Pending:
    """A posted receive; :meth:`wait` returns the tensor."""

    def wait(self) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class Transport:
    """Point-to-point messages between stages plus byte counts ``sent_bytes[(phase, src, dst)]``."""

    def __init__(self) -> None:
        self.sent_bytes: dict[tuple[str, int, int], int] = defaultdict(int)
        self.phase = "parallel"

    @contextmanager
    def counting_as(self, phase: str):
        """Counts the bytes sent inside the block under ``phase``."""
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous

    def owns(self, stage: int) -> bool:
        raise NotImplementedError

    def isend(self, tensor: Tensor, src: int, dst: int, *, memory_format: torch.memory_format = torch.contiguous_format) -> None:
        """Sends ``tensor`` laid out as ``memory_format`` (the receiver's :meth:`irecv` names the same)."""
        raise NotImplementedError

    def irecv(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, src: int, dst: int,
              *, memory_format: torch.memory_format = torch.contiguous_format) -> Pending:
        raise NotImplementedError

    def flush(self) -> None:
        """Waits until every send posted so far has left (their buffers may then be reused)."""

    @property
    def replicas(self) -> int:
        """D: how many replicas of every stage train side by side (each on its own part of the data)."""
        return 1

    def gradient_average(self, stage: int, params: list[nn.Parameter]):
        """The :class:`~lpfast.replicas.GradientAverage` of ``stage``'s ``params`` over its replicas;
        None with one replica."""
        return None

    def all_sum(self, values: Tensor) -> Tensor:
        """The sum of ``values`` over all workers (each fills in what its stages know, zeros elsewhere)."""
        return values

    def count_sent(self, nbytes: int, src: int, dst: int) -> None:
        """Counts ``nbytes`` sent from stage ``src`` to ``dst`` by another engine (the serial phase's
        pipeline schedules send their own messages)."""
        self.sent_bytes[(self.phase, src, dst)] += nbytes

    def _count(self, tensor: Tensor, src: int, dst: int) -> None:
        self.count_sent(tensor.numel() * tensor.element_size(), src, dst)


class _Ready(Pending):
    def __init__(self, queue: deque, what: str) -> None:
        self.queue, self.what = queue, what

    def wait(self) -> Tensor:
        if not self.queue:
            raise RuntimeError(f"internal schedule error: nothing was sent for {self.what}")
        return self.queue.popleft()


class LocalTransport(Transport):
    """All stages in this process: a send is a hand-over through a per-pair queue."""

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[tuple[int, int], deque] = defaultdict(deque)

    def owns(self, stage: int) -> bool:
        return True

    def isend(self, tensor: Tensor, src: int, dst: int, *, memory_format: torch.memory_format = torch.contiguous_format) -> None:
        self._count(tensor, src, dst)
        self.queues[(src, dst)].append(tensor)

    def irecv(self, shape, dtype, device, src, dst, *, memory_format=torch.contiguous_format) -> Pending:
        return _Ready(self.queues[(src, dst)], f"stage {src} -> stage {dst}")


class _DistPending(Pending):
    """A posted receive; ``src`` and ``dst`` name the two workers in errors."""

    def __init__(self, work, buffer: Tensor, src: str, dst: str, timeout: datetime.timedelta) -> None:
        self.work, self.buffer, self.src, self.dst, self.timeout = work, buffer, src, dst, timeout

    def wait(self) -> Tensor:
        try:
            self.work.wait(self.timeout)
        except RuntimeError as exc:
            raise WorkerLostError.of(self.dst, f"receiving from {self.src}", f"the worker of {self.src}", exc, self.timeout) from None
        return self.buffer


def _flat(tensor: Tensor, memory_format: torch.memory_format) -> Tensor:
    """A view of ``tensor`` (dense in ``memory_format``) that gloo and NCCL accept as a plain buffer:
    a channels-last tensor as NHWC, rather than a copy to NCHW on every send and a layout change
    for the receiving stage."""
    return tensor.permute(0, 2, 3, 1) if memory_format == torch.channels_last else tensor


class DistTransport(Transport):
    """One stage per ``torch.distributed`` rank. Without a ``mesh`` stage ``i`` is rank ``i`` of the
    default group; with one (:func:`lpfast.mesh.build_mesh`) this rank holds ``mesh.stage`` of
    ``mesh.replica``, and its messages go to the same replica's other stages. A network of more
    stages than ranks (a looped serial schedule) puts stage s with stage s mod K."""

    def __init__(self, timeout: datetime.timedelta, mesh: Mesh | None = None) -> None:
        super().__init__()
        if not dist.is_initialized():
            raise RuntimeError("DistTransport needs torch.distributed to be initialised (launch with torchrun)")
        rank = dist.get_rank()
        self.mesh = mesh if mesh is not None else Mesh(dist.get_world_size(), 1, "stages-together", stage=rank, replica=0)
        self.stage = self.mesh.stage
        self.timeout = timeout
        self._sends: list = []

    @property
    def replicas(self) -> int:
        return self.mesh.replicas

    def gradient_average(self, stage: int, params: list[nn.Parameter]):
        if self.mesh.replicas == 1:
            return None
        from lpfast.replicas import GradientAverage  # it raises this module's WorkerLostError

        peers = [self.mesh.name(stage, r) for r in range(self.mesh.replicas) if r != self.mesh.replica]
        return GradientAverage([p.numel() for p in params], params[0].element_size(), group=self.mesh.replica_group,
                               replicas=self.mesh.replicas, timeout=self.timeout, who=self.mesh.name(stage), peers=peers)

    def owns(self, stage: int) -> bool:
        return self.mesh.holds(stage)

    def isend(self, tensor: Tensor, src: int, dst: int, *, memory_format: torch.memory_format = torch.contiguous_format) -> None:
        tensor = tensor.contiguous(memory_format=memory_format)  # no copy when it is laid out so already
        self._count(tensor, src, dst)
        try:  # gloo refuses to post to a peer whose connection is already closed
            work = dist.isend(_flat(tensor, memory_format), dst=self.mesh.rank_of(dst))
        except RuntimeError as exc:
            raise self._lost(f"sending to {self.mesh.name(dst)}", dst, exc) from None
        self._sends.append((work, tensor, dst))

    def irecv(self, shape, dtype, device, src, dst, *, memory_format=torch.contiguous_format) -> Pending:
        buffer = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
        try:
            work = dist.irecv(_flat(buffer, memory_format), src=self.mesh.rank_of(src))
        except RuntimeError as exc:
            raise self._lost(f"receiving from {self.mesh.name(src)}", src, exc) from None
        return _DistPending(work, buffer, self.mesh.name(src), self.mesh.name(dst), self.timeout)

    def _lost(self, doing: str, peer: int, exc: RuntimeError) -> WorkerLostError:
        return WorkerLostError.of(self.mesh.name(self.stage), doing, f"the worker of {self.mesh.name(peer)}", exc, self.timeout)

    def flush(self) -> None:
        sends, self._sends = self._sends, []
        for work, _, dst in sends:
            try:
                work.wait(self.timeout)
            except RuntimeError as exc:
                raise self._lost(f"sending to {self.mesh.name(dst)}", dst, exc) from None

    def all_sum(self, values: Tensor) -> Tensor:
        try:
            return summed_over_workers(values)
        except RuntimeError as exc:
            raise WorkerLostError(f"{self.mesh.name(self.stage)}: summing statistics over the workers failed "
                                  f"({str(exc).splitlines()[0]})") from None

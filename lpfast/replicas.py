"""Averaging one stage's gradient over its D replicas (ALGORITHM.md §9).

The replicas of stage k all-reduce θ_k's gradient alone (about 1/K of the model) over their own
group, K such groups at once. Pipelined λ runs a stage's forward through ``functional_call`` on
stashed weights, where DistributedDataParallel's hooks never fire, so the reduction is lpfast's
own: the gradients go in buckets of about ``bucket_bytes``, in the order the backward produces
them (the stage's tensors last to first), and each bucket's all-reduce is launched the moment
its last gradient has accumulated, while the backward goes on (``register_post_accumulate_grad_hook``
on the tensors the backward fills: a stash of the weights or the parameters themselves).
"""
from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from lpfast.transport import WorkerLostError

DEFAULT_BUCKET_BYTES = 2**18  # a stage holds 1/K of the model: small buckets, so that the first leave early in its backward


class GradientAverage:
    """Averages gradients of one stage's tensors (``sizes``: their element counts, in parameter
    order) over ``group``'s ``replicas`` ranks; ``who`` names this worker and ``peers`` the others
    in errors. ``nbytes`` counts what it all-reduced."""

    def __init__(self, sizes: Sequence[int], element_size: int, *, group: dist.ProcessGroup, replicas: int,
                 timeout: datetime.timedelta, who: str, peers: Sequence[str], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        if bucket_bytes < 1:
            raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
        self.group, self.replicas, self.timeout, self.who, self.peers = group, replicas, timeout, who, list(peers)
        # Buckets of tensor positions, last tensor first (the backward's order); a tensor larger than
        # a bucket has one of its own.
        self.buckets: list[list[int]] = [[]]
        filled = 0
        for i in reversed(range(len(sizes))):
            if self.buckets[-1] and filled + sizes[i] * element_size > bucket_bytes:
                self.buckets.append([])
                filled = 0
            self.buckets[-1].append(i)
            filled += sizes[i] * element_size
        self.nbytes = 0

    def track(self, tensors: Sequence[Tensor]) -> Reduction:
        """Watches ``tensors`` (leaves, aligned with the sizes) through one backward: each bucket
        leaves as its gradients arrive. :meth:`Reduction.finish` completes it."""
        return Reduction(self, list(tensors), hooked=True)

    def average(self, tensors: Sequence[Tensor]) -> None:
        """Averages the gradients ``tensors`` already hold (a step that accumulated several backwards)."""
        Reduction(self, list(tensors), hooked=False).finish()


class Reduction:
    """One step's all-reduces of a :class:`GradientAverage`."""

    def __init__(self, average: GradientAverage, tensors: list[Tensor], *, hooked: bool) -> None:
        self.average, self.tensors = average, tensors
        self.bucket_of = {i: b for b, bucket in enumerate(average.buckets) for i in bucket}
        self.missing = [len(bucket) for bucket in average.buckets]
        self.members: dict[int, list[int]] = {}
        self.flat: dict[int, Tensor] = {}
        self.works: dict[int, object] = {}
        self.handles = [t.register_post_accumulate_grad_hook(functools.partial(self._arrived, i)) for i, t in enumerate(tensors)] if hooked else []

    def _arrived(self, i: int, tensor: Tensor) -> None:
        b = self.bucket_of[i]
        self.missing[b] -= 1
        if self.missing[b] == 0:
            self._launch(b)

    def _launch(self, b: int) -> None:
        # A tensor the step did not reach (a local head in a serial step) has no gradient on any
        # replica, as the same code runs on all of them: it stays out.
        self.members[b] = [i for i in self.average.buckets[b] if self.tensors[i].grad is not None]
        if not self.members[b]:
            return
        flat = torch.cat([self.tensors[i].grad.reshape(-1) for i in self.members[b]])
        self.flat[b] = flat
        self.average.nbytes += flat.numel() * flat.element_size()
        try:  # gloo refuses to post to a peer whose connection is already closed
            self.works[b] = dist.all_reduce(flat, group=self.average.group, async_op=True)
        except RuntimeError as exc:
            raise self._lost(exc) from None

    def _lost(self, exc: RuntimeError) -> WorkerLostError:
        return WorkerLostError.of(self.average.who, f"averaging its gradient with {', '.join(self.average.peers)}", "one of them",
                                  exc, self.average.timeout)

    def finish(self) -> None:
        """Launches what has not left yet, waits for every bucket and leaves the average in each ``.grad``."""
        for handle in self.handles:
            handle.remove()
        for b in range(len(self.average.buckets)):
            if b not in self.members:
                self._launch(b)
        for b, work in self.works.items():
            try:
                work.wait(self.average.timeout)
            except RuntimeError as exc:
                raise self._lost(exc) from None
            flat = self.flat[b].div_(self.average.replicas)
            offset = 0
            for i in self.members[b]:
                grad = self.tensors[i].grad
                grad.copy_(flat[offset: offset + grad.numel()].view_as(grad))
                offset += grad.numel()

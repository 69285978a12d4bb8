"""Step times of the schedules that send activations between stages, played out on a link.

A closed formula for a pipeline's step holds only while messages hide under compute: on a slow
link the step is set by which message each worker waits for, and when, which the schedule's
order decides. So :func:`steady_step` plays each worker's program (compute, sends, receives
posted and waited for, waits on its sends, in the order the schedule issues them) against one
outgoing link per worker and reads off the time per step once the pipeline runs steady. A
message leaves once it is sent, its receive is posted (gloo's send and receive meet: "sends
cannot execute until the remote side is ready to receive") and the messages its worker sent
before it have left, and takes its bytes over the rate; the link is full duplex (what a worker
receives does not slow what it sends). A wait on a send returns when its message has arrived
(socket buffers, latency and TCP's own dynamics are left out).

The programs are those of the schedules as implemented: :func:`pipelined_program` for
:class:`lpfast.pipelined.PipelinedPhase` (receives posted a step ahead), :func:`gpipe_program`
and :func:`one_f_one_b_program` for ``torch.distributed.pipelining``'s ``ScheduleGPipe`` and
``Schedule1F1B`` (torch 2.14: each receive posted when it is waited for; 1F1B fires a forward's
send only together with the next backward's receive and waits for both).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Compute:
    seconds: float


@dataclass(frozen=True)
class Send:
    """Put message ``key`` (``seconds`` on the link) on this worker's outgoing link; does not wait."""

    key: tuple
    seconds: float


@dataclass(frozen=True)
class Post:
    """Post the receive of message ``key`` (its sender may then send it); does not wait."""

    key: tuple


@dataclass(frozen=True)
class Receive:
    """Post the receive of message ``key`` unless posted before, and wait until it has arrived."""

    key: tuple


@dataclass(frozen=True)
class WaitSent:
    """Wait until the messages ``keys`` this worker sent have arrived."""

    keys: tuple[tuple, ...]


Op = Compute | Send | Post | Receive | WaitSent
Program = Callable[[int, int], list[Op]]  # (stage, steps) -> the stage's ops over that many steps


def play(programs: Sequence[Sequence[Op]]) -> float:
    """The time at which the last worker finishes its program (worker s runs ``programs[s]``)."""
    clock = [0.0] * len(programs)
    link_free = [0.0] * len(programs)
    outbox: list[deque[tuple[tuple, float, float]]] = [deque() for _ in programs]  # (key, sent at, seconds), not yet left
    posted: dict[tuple, float] = {}
    arrival: dict[tuple, float] = {}
    position = [0] * len(programs)

    def transmit() -> None:  # every message at the head of an outbox whose receive is posted leaves
        for s, queue in enumerate(outbox):
            while queue and queue[0][0] in posted:
                key, sent, seconds = queue.popleft()
                link_free[s] = max(link_free[s], sent, posted[key]) + seconds
                arrival[key] = link_free[s]

    while any(p < len(ops) for p, ops in zip(position, programs)):
        moved = False
        for s, ops in enumerate(programs):
            while position[s] < len(ops):
                op = ops[position[s]]
                if isinstance(op, Compute):
                    clock[s] += op.seconds
                elif isinstance(op, Send):
                    outbox[s].append((op.key, clock[s], op.seconds))
                elif isinstance(op, (Post, Receive)):
                    posted.setdefault(op.key, clock[s])
                transmit()
                waits_for = (op.key,) if isinstance(op, Receive) else op.keys if isinstance(op, WaitSent) else ()
                if any(key not in arrival for key in waits_for):
                    break  # the message has not left yet: another worker must get further first
                clock[s] = max([clock[s], *(arrival[key] for key in waits_for)])
                position[s] += 1
                moved = True
        if not moved:
            raise RuntimeError(f"the programs deadlock at positions {position}")
    return max(clock)


def _wait(sends: Sequence[Send]) -> list[Op]:
    return [WaitSent(tuple(op.key for op in sends))] if sends else []


def steady_step(program: Program, stages: int, steps: int = 16) -> float:
    """Seconds per step once ``program`` runs steady: the time ``steps`` more steps add."""
    def makespan(n: int) -> float:
        return play([program(s, n) for s in range(stages)])
    return (makespan(2 * steps) - makespan(steps)) / steps


def pipelined_program(forward: Sequence[float], backward: Sequence[float], message: Sequence[float]) -> Program:
    """:class:`lpfast.pipelined.PipelinedPhase`: in step t stage s forwards batch t - s and sends its
    output on; the last stage trains on its batch and sends the input gradient back, which every
    stage passes on after its backward of batch t - (K - 1); each step ends by waiting for its sends.
    ``forward``/``backward``: a batch's seconds per stage; ``message``: seconds on the link of cut c's
    tensor (one way; the gradient back is the same size)."""
    k = len(forward)
    last = k - 1

    def program(s: int, batches: int) -> list[Op]:
        ops: list[Op] = []
        for t in range(batches + last):  # the last K - 1 steps drain the pipeline
            sent: list[Send] = []
            backpropagates = s < last and 0 <= t - last < batches  # batch t - (K - 1), this step
            if backpropagates:  # its gradient's receive is posted before any compute
                ops.append(Post(("grad", s + 1, t - last)))
            ahead = [Post(("out", s - 1, t + 1 - s))] if s > 0 and 0 <= t + 1 - s < batches else []  # next step's input
            if 0 <= t - s < batches:  # forward of batch t - s (the last stage trains on it)
                ops += [Receive(("out", s - 1, t - s)), *ahead] if s > 0 else []
                ops.append(Compute(forward[s] + (backward[s] if s == last else 0.0)))
                if s < last:
                    sent.append(Send(("out", s, t - s), message[s]))
                elif s > 0:
                    sent.append(Send(("grad", s, t - s), message[s - 1]))
            elif ahead:  # the first batch's input, posted the step before it arrives
                ops += ahead
            ops += sent
            if backpropagates:
                ops += [Receive(("grad", s + 1, t - last)), Compute(backward[s])]
                if s > 0:
                    sent.append(Send(("grad", s, t - last), message[s - 1]))
                    ops.append(sent[-1])
            ops += _wait(sent)
        return ops
    return program


def gpipe_program(forward: Sequence[float], backward: Sequence[float], message: Sequence[float], micro_batches: int) -> Program:
    """``ScheduleGPipe``: every micro-batch's forward (receive, compute, send), a wait for the sends,
    then every micro-batch's backward likewise. Arguments as :func:`pipelined_program`, for one
    micro-batch."""
    k, m = len(forward), micro_batches

    def program(s: int, steps: int) -> list[Op]:
        ops: list[Op] = []
        for step in range(steps):
            for direction, seconds, source, target in (("out", forward[s], s - 1, s + 1), ("grad", backward[s], s + 1, s - 1)):
                sends = [Send((direction, s, step, i), message[min(s, target)]) for i in range(m)] if 0 <= target < k else []
                for i in range(m):
                    ops += [Receive((direction, source, step, i))] if 0 <= source < k else []
                    ops += [Compute(seconds), *sends[i:i + 1]]
                ops += _wait(sends)
        return ops
    return program


def one_f_one_b_program(forward: Sequence[float], backward: Sequence[float], message: Sequence[float], micro_batches: int) -> Program:
    """``Schedule1F1B`` (torch 2.14): K - s warm-up forwards, each waiting for the send before it
    and the last one's send held back; then backward, forward by turns, each fired together with
    the receive it needs (a forward's send with the next backward's receive, a backward's send
    with the next forward's receive) and waiting for both; then the remaining backwards, each
    waiting for the send before it. Arguments as :func:`gpipe_program`."""
    k, m = len(forward), micro_batches
    last = k - 1

    def program(s: int, steps: int) -> list[Op]:
        ops: list[Op] = []

        def out(step: int, i: int) -> list[Send]:
            return [Send(("out", s, step, i), message[s])] if s < last else []

        def grad(step: int, i: int) -> list[Send]:
            return [Send(("grad", s, step, i), message[s - 1])] if s > 0 else []

        def receive(direction: str, step: int, i: int) -> list[Receive]:
            source = s - 1 if direction == "out" else s + 1
            return [Receive((direction, source, step, i))] if 0 <= source < k else []

        def fire_and_wait(sends: list[Send], receives: list[Receive]) -> list[Op]:
            return [*sends, *receives, *_wait(sends)]

        for step in range(steps):
            warmup = min(m, k - s)
            pending: list[Send] = []  # fired, not yet waited for
            held: list[Send] = []  # made, not yet fired
            for i in range(warmup):
                ops += [*receive("out", step, i), Compute(forward[s]), *_wait(pending)]
                pending, held = [], out(step, i)
                if i != warmup - 1:
                    ops += held
                    pending, held = held, []
            forwards = warmup
            backwards = 0
            while True:
                ops += fire_and_wait(held, receive("grad", step, backwards))
                ops.append(Compute(backward[s]))
                held = grad(step, backwards)
                backwards += 1
                if forwards == m:
                    break
                ops += fire_and_wait(held, receive("out", step, forwards))
                ops.append(Compute(forward[s]))
                held = out(step, forwards)
                forwards += 1
            ops += held
            pending = held
            while backwards < m:
                ops += [*receive("grad", step, backwards), Compute(backward[s]), *_wait(pending)]
                pending = grad(step, backwards)
                ops += pending
                backwards += 1
        return ops
    return program

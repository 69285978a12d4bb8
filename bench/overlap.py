"""One step of 2 stages × 2 replicas, profiled: do the stage all-reduces start before the backward ends,
and how many bytes does each device all-reduce against DDP's?

Four gloo workers on this machine (2 stages × 2 replicas, pipelined λ, one thread each) train
ResNet-20 on CIFAR-shaped random batches for a few steps to fill the pipeline, then time one
step: per worker the stage's backward (its ``Tensor.backward`` call) and every all-reduce of its
gradient buckets (its ``torch.distributed.all_reduce`` calls), in milliseconds from the start of
the step. The same four workers then train the whole
network with DistributedDataParallel, whose all-reduced bytes are counted by a communication hook
that wraps DDP's own all-reduce. Writes ``<out>/overlap-<model>.{json,md}``.

    python bench/overlap.py --model resnet20 --out bench/results
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from lpfast.mesh import build_mesh
from lpfast.models import build_model
from lpfast.parallel import LayerParallel
from lpfast.transport import DistTransport

BATCH, WARM_STEPS = 128, 4


def _batches(steps: int, replica: int):
    g = torch.Generator().manual_seed(replica)
    for _ in range(steps):
        yield (torch.randn(BATCH // 2, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last),
               torch.randint(0, 10, (BATCH // 2,), generator=g))


class Clock:
    """Timestamps of this worker's calls of ``Tensor.backward`` (the stage's backward: one a step)
    and ``torch.distributed.all_reduce`` (its gradient buckets), taken by wrapping both. (torch.profiler
    would name the same calls; on this CPU build its teardown crashed one worker in two.)"""

    def __init__(self) -> None:
        self.backward: list[tuple[float, float]] = []
        self.allreduce: list[float] = []
        backward, all_reduce = torch.Tensor.backward, dist.all_reduce

        def timed_backward(tensor, *args, **kwargs):
            start = time.perf_counter()
            backward(tensor, *args, **kwargs)
            self.backward.append((start, time.perf_counter()))

        def timed_all_reduce(*args, **kwargs):
            self.allreduce.append(time.perf_counter())
            return all_reduce(*args, **kwargs)

        torch.Tensor.backward, dist.all_reduce = timed_backward, timed_all_reduce

    def step(self, run) -> dict:
        """Runs ``run()`` (one step) and returns its backward window and all-reduce calls, in ms from its start."""
        self.backward.clear()
        self.allreduce.clear()
        start = time.perf_counter()
        run()
        [(begin, end)] = self.backward
        ms = lambda t: 1000 * (t - start)  # noqa: E731
        return {"step_ms": ms(time.perf_counter()), "backward_start_ms": ms(begin), "backward_end_ms": ms(end),
                "allreduce_start_ms": [ms(t) for t in self.allreduce]}


def _worker(rank: int, model_name: str, store: str, out: str) -> None:
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=60)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=4, timeout=timeout)
    try:
        mesh = build_mesh(2, 2)
        torch.manual_seed(0)
        model = build_model(model_name).to(memory_format=torch.channels_last)
        lp = LayerParallel(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), stages=2, input_shape=(3, 32, 32),
                           memory_format=torch.channels_last, transport=DistTransport(timeout, mesh))
        steps = list(_batches(WARM_STEPS + 1, mesh.replica))
        clock = Clock()
        for x, y in steps[:WARM_STEPS]:
            lp.step(x, y)
        before = lp.averages[mesh.stage].nbytes
        timed = clock.step(lambda: lp.step(*steps[-1]))
        result = {"rank": rank, "stage": mesh.stage, "replica": mesh.replica, **timed,
                  "allreduce_bytes": lp.averages[mesh.stage].nbytes - before,
                  "buckets": len(lp.averages[mesh.stage].buckets)}
        lp.drain()
        # DDP on the same four workers: every gradient of the whole network, counted as it leaves.
        torch.manual_seed(0)
        whole = build_model(model_name).to(memory_format=torch.channels_last)
        ddp = torch.nn.parallel.DistributedDataParallel(whole)
        counted = [0]

        def counting_allreduce(state, bucket):
            counted[0] += bucket.buffer().numel() * bucket.buffer().element_size()
            return default_hooks.allreduce_hook(state, bucket)

        ddp.register_comm_hook(None, counting_allreduce)
        x, y = steps[0]
        F.cross_entropy(ddp(x), y).backward()
        result["ddp_allreduce_bytes"] = counted[0]
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--out", type=Path, default=Path("bench") / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(args.model, os.path.join(tmp, "store"), tmp), nprocs=4, start_method="spawn")
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(4)]
    lines = [f"# One 2 stages × 2 replicas step of {args.model}: all-reduces against the backward", "",
             f"Pipelined λ, batch {BATCH} (each replica {BATCH // 2}), gloo on loopback, one thread a worker; the step after "
             f"{WARM_STEPS} steps. Times in ms from the start of the step on each worker.", "",
             "| rank | stage | replica | backward | all-reduce starts | started before the backward ended | bytes all-reduced | DDP's bytes | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in ranks:
        early = sum(t < r["backward_end_ms"] for t in r["allreduce_start_ms"])
        lines.append(f"| {r['rank']} | {r['stage']} | {r['replica']} | {r['backward_start_ms']:.1f} to {r['backward_end_ms']:.1f} | "
                     f"{', '.join(f'{t:.1f}' for t in r['allreduce_start_ms'])} | {early} of {len(r['allreduce_start_ms'])} | "
                     f"{r['allreduce_bytes']:,} | {r['ddp_allreduce_bytes']:,} | {r['allreduce_bytes'] / r['ddp_allreduce_bytes']:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"overlap-{args.model}.json").write_text(json.dumps({"model": args.model, "batch": BATCH, "ranks": ranks}, indent=1) + "\n")
    (args.out / f"overlap-{args.model}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

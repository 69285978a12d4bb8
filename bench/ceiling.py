"""The speed limit of layer-parallel training on this machine: the method's compute without its overhead.

Step times, measured in turn (A B C A B C ...) on a real batch so a shared machine's drift hits
all alike, medians reported:

- ``serial``: backprop of the whole model (forward, backward, SGD step) at batch B on one device
  (one process, one thread): the paper's baseline, which every bound is stated against;
- ``serial_k``: the same with K threads, as context (not a device-faithful row);
- ``serial_micro``: one device's backprop with the batch in M micro-batches (gradients accumulated
  for one SGD step), as context: how much of a micro-batched step's speed is the CPU's cache;
- ``stages``: the model cut into K stages as ``lpfast train --stages K`` cuts it, each stage on its
  own ``torchrun`` worker (one thread, pinned to its own core), all stepping at once (forward,
  backward to its input, SGD step) on a fixed input of its own, with a barrier after every step.
  This is the parallel phase with no auxiliary variables, messages or data loading: no
  implementation that synchronises its stages every step steps faster with this cut on these
  cores (the pipelined step, a step apart by design, is not bound by it);
- ``micro``: the same, each stage's step made of M micro-batches of B/M (one SGD step). The
  serial phase's synchronous pipeline needs at least (M + K - 1)/M times this per batch;
- ``lpfast`` and ``lpfast_no_head``: lpfast's real parallel step on the same cut and batch (its λ
  filled by its own forward), with the default local heads and without: what the method adds to
  ``stages``; ``lpfast_micro``: the same step with ``--parallel-micro-batches`` M (each stage's
  working set 1/M of the batch's); ``lpfast_pipelined``: the step of ``--aux pipelined
  --predict-weights`` (no λ: each stage forwards one batch and backpropagates an earlier one),
  timed without the barrier, since its stages run a step apart by design. ``--profile`` also writes each worker's torch.profiler table of that step to
  ``bench/results/profile-<model>-<dataset>.md``.

From them: the bound on a parallel epoch's speed-up, on a pipeline epoch's, and on a whole
serial-parallel hybrid run of P parallel and S serial epochs. Writes
``bench/results/ceiling-<model>-<dataset>.{json,md}``.

    python bench/ceiling.py --model resnet20 --dataset cifar10 --parallel-epochs 3 --serial-epochs 2
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lpfast.augment import prepare
from lpfast.cli import pin_to_own_cores
from lpfast.datasets import load_dataset
from lpfast.models import build_model
from lpfast.parallel import LayerParallel
from lpfast.stages import partition, split
from lpfast.transport import DistTransport

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("serial", "serial_k", "serial_micro", "stages", "micro", "lpfast", "lpfast_no_head", "lpfast_micro", "lpfast_pipelined")


def real_batch(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model (seed 0, channels-last as lpfast trains it) and the first ``batch_size`` training images."""
    data = load_dataset(args.dataset, "train", args.data_dir)
    torch.manual_seed(0)
    model = build_model(args.model, in_channels=data.in_channels, num_classes=data.num_classes)
    model = model.to(memory_format=torch.channels_last)
    x = prepare(data.images[: args.batch_size], mean=data.mean, std=data.std, channels_last=True)
    return model, x, data.labels[: args.batch_size]


def sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def time_steps(step, args: argparse.Namespace, sync=lambda: None) -> float:
    """Median seconds of ``step()`` over ``--steps`` after ``--warmup`` (each followed by ``sync()``)."""
    times = []
    for i in range(args.warmup + args.steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def serial_step_time(args: argparse.Namespace, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threads: int,
                     micro_batches: int = 1) -> float:
    torch.set_num_threads(threads)
    opt = sgd(model.parameters())
    xs, ys = x.chunk(micro_batches), y.chunk(micro_batches)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        for xj, yj in zip(xs, ys):
            (F.cross_entropy(model(xj), yj) / micro_batches).backward()
        opt.step()

    return time_steps(step, args)


def stage_worker(args: argparse.Namespace) -> None:
    """One torchrun worker: its stage's step time, all stages at once (rank 0 writes the result)."""
    dist.init_process_group("gloo")
    rank, k = dist.get_rank(), dist.get_world_size()
    pin_to_own_cores(rank, k, threads=1)
    torch.set_num_threads(1)
    model, x, y = real_batch(args)
    stages = split(model, partition(model, cut(args), tuple(x.shape[1:])))
    with torch.no_grad():  # the stage's input: the activation at its cut for this batch
        for s in range(rank):
            x = stages[s](x)
    stage, opt = stages[rank], sgd(stages[rank].parameters())
    result = {}
    for name, chunks in (("stages", 1), ("micro", args.micro_batches)):
        xs, ys = x.chunk(chunks), y.chunk(chunks)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            for xj, yj in zip(xs, ys):
                inp = xj if rank == 0 else xj.detach().requires_grad_()
                out = stage(inp)
                loss = F.cross_entropy(out, yj) if rank == k - 1 else out.square().mean()
                loss.backward()
            opt.step()

        result[name] = time_steps(step, args, dist.barrier)
    for name, local_loss, micro_batches in (("lpfast", 3.0, 1), ("lpfast_no_head", 0.0, 1), ("lpfast_micro", 3.0, args.micro_batches)):
        result[name] = time_steps(parallel_step(args, local_loss, micro_batches)[1], args, dist.barrier)
    dist.barrier()
    lp, step = parallel_step(args, 0.0, pipelined=True)
    result["lpfast_pipelined"] = time_steps(step, args)
    lp.drain()  # batches in flight finish before the barrier: after 18 undrained steps gloo's barrier hung
    dist.barrier()
    if args.profile:
        Path(f"{args.worker_out}.rank{rank}.txt").write_text(profile(parallel_step(args, 3.0)[1], args))
    if rank == 0:
        Path(args.worker_out).write_text(json.dumps(result))
    dist.destroy_process_group()


def cut_suffix(args: argparse.Namespace) -> str:
    """What the result files of a run with ``--stage-blocks`` carry in their names, e.g. ``-cut3-6``."""
    return f"-cut{args.stage_blocks.replace(',', '-')}" if args.stage_blocks else ""


def cut(args: argparse.Namespace) -> int | list[int]:
    """The stages: ``--stage-blocks`` if given (e.g. a cut ``lpfast plan`` recommends), else K balanced as lpfast train balances them."""
    return [int(b) for b in args.stage_blocks.split(",")] if args.stage_blocks else args.workers


def parallel_step(args: argparse.Namespace, local_loss: float, micro_batches: int = 1,
                  pipelined: bool = False) -> tuple[LayerParallel, Callable[[], object]]:
    """lpfast's parallel step on this worker's stage of the same cut and batch, the batch's λ filled
    by its own forward pass (none with ``pipelined``): the ceiling's step plus everything the method
    adds. Returns the LayerParallel and the step."""
    model, x, y = real_batch(args)
    extra = dict(aux="pipelined", predict_weights=True) if pipelined else dict(aux="store")
    lp = LayerParallel(model, optimizer=sgd, stages=cut(args), dataset_size=x.shape[0], input_shape=tuple(x.shape[1:]),
                       local_loss=local_loss, memory_format=torch.channels_last, transport=DistTransport(datetime.timedelta(seconds=600)),
                       **extra)
    idx = torch.arange(x.shape[0])
    if not pipelined:
        lp.initialise([(x, idx)])
    return lp, lambda: lp.step(x, y, idx, micro_batches=micro_batches)


def profile(step, args: argparse.Namespace) -> str:
    """torch.profiler's table of the ops that took the most time over ``--steps`` steps (self CPU time)."""
    for _ in range(args.warmup):
        step()
    dist.barrier()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


def stage_step_times(args: argparse.Namespace) -> tuple[dict[str, float], list[str]]:
    """The workers' step times, and with ``--profile`` each worker's profile of the parallel step."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "stages.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.workers), "--master-port", str(args.port),
               __file__, *sys.argv[1:], "--worker-out", str(out)]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        profiles = [Path(f"{out}.rank{r}.txt").read_text() for r in range(args.workers)] if args.profile else []
        return json.loads(out.read_text()), profiles


def bounds(serial: float, stages: float, micro: float, k: int, m: int, p: int, s: int) -> dict[str, float]:
    """Speed-up bounds over the serial step: a parallel epoch, a pipeline epoch, and a P + S hybrid run."""
    pipeline = micro * (m + k - 1) / m
    return {"parallel_epoch": serial / stages, "pipeline_epoch": serial / pipeline,
            "hybrid_run": (p + s) * serial / (p * stages + s * pipeline)}


def write_report(args: argparse.Namespace, rounds: list[dict[str, float]]) -> dict:
    med = {key: statistics.median(r[key] for r in rounds) for key in ROWS}
    limit = bounds(med["serial"], med["stages"], med["micro"], args.workers, args.micro_batches, args.parallel_epochs, args.serial_epochs)
    record = {"model": args.model, "dataset": args.dataset, "batch_size": args.batch_size, "workers": args.workers, "stage_blocks": args.stage_blocks,
              "micro_batches": args.micro_batches, "parallel_epochs": args.parallel_epochs, "serial_epochs": args.serial_epochs,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
              "rounds": rounds, "median_s": med, "speedup_bound": limit}
    name = f"ceiling-{args.model}-{args.dataset}{cut_suffix(args)}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    k, m = args.workers, args.micro_batches
    lines = [
        f"# Speed limit of K={k} layer-parallel training: {args.model} on {args.dataset}, batch {args.batch_size}", "",
        f"Machine: {record['machine']['platform']}, {record['machine']['cpus']} CPUs, torch {torch.__version__}. "
        f"Medians of {len(rounds)} interleaved rounds of {args.steps} steps each (`python bench/ceiling.py "
        f"--model {args.model} --dataset {args.dataset} --workers {k} --micro-batches {m}"
        f"{f' --stage-blocks {args.stage_blocks}' if args.stage_blocks else ''} --parallel-epochs "
        f"{args.parallel_epochs} --serial-epochs {args.serial_epochs}`).", "",
        "| step | median (ms) | per round (ms) |", "|---|---|---|",
    ]
    labels = {"serial": "backprop, whole model, one device (1 process x 1 thread)",
              "serial_k": f"backprop, whole model, 1 process x {k} threads (context)",
              "serial_micro": f"backprop, whole model, one device, in {m} micro-batches of {args.batch_size // m} (context)",
              "stages": f"{k} stages at once, 1 worker x 1 thread each, no auxiliary variables or messages",
              "micro": f"the same in {m} micro-batches of {args.batch_size // m}",
              "lpfast": "lpfast's parallel step on the same cut (λ, messages, penalty and λ-update, local heads)",
              "lpfast_no_head": "the same without local heads (--local-loss 0)",
              "lpfast_micro": f"lpfast's parallel step in {m} micro-batches (--parallel-micro-batches {m})",
              "lpfast_pipelined": "lpfast's pipelined parallel step (--aux pipelined --predict-weights; no barrier)"}
    for key, label in labels.items():
        lines.append(f"| {label} | {1e3 * med[key]:.1f} | {' '.join(f'{1e3 * r[key]:.1f}' for r in rounds)} |")
    overhead = med["lpfast"] / med["stages"] - 1
    lines += ["", f"lpfast's parallel step takes {100 * overhead:+.1f}% over the ceiling's stage step "
              f"({100 * (med['lpfast_no_head'] / med['stages'] - 1):+.1f}% without local heads); "
              f"one device's backprop over it: {med['serial'] / med['lpfast']:.2f}x; in {m} micro-batches "
              f"{med['serial'] / med['lpfast_micro']:.2f}x ({med['serial_micro'] / med['lpfast_micro']:.2f}x over one device's "
              f"backprop in the same micro-batches). The pipelined step (no λ) takes {100 * (med['lpfast_pipelined'] / med['stages'] - 1):+.1f}% "
              f"over the ceiling's step: {med['serial'] / med['lpfast_pipelined']:.2f}x one device's backprop.", "",
              "Bounds from the bare stage step on the speed-up over backprop on one device of a schedule that synchronises the "
              "stages after every step (the pipelined step does not, and may run faster):", "",
              f"- parallel-phase epoch: **{limit['parallel_epoch']:.2f}x**",
              f"- serial-phase pipeline epoch ({m} micro-batches, (M+K-1)/M = {(m + k - 1) / m:.2f} of the micro-batched stage step): "
              f"**{limit['pipeline_epoch']:.2f}x**",
              f"- hybrid run of {args.parallel_epochs} parallel + {args.serial_epochs} serial epochs: **{limit['hybrid_run']:.2f}x**"]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist_resnet")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="K: stages, workers, and threads of the serial step")
    parser.add_argument("--stage-blocks", default=None, help="blocks per stage, e.g. 3,6 (default: balanced by FLOPs, as lpfast train)")
    parser.add_argument("--micro-batches", type=int, default=4, help="M of the serial phase's pipeline")
    parser.add_argument("--parallel-epochs", type=int, default=2, help="P of the hybrid run the bound is stated for")
    parser.add_argument("--serial-epochs", type=int, default=1, help="S of the hybrid run the bound is stated for")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--port", type=int, default=29541, help="torchrun master port")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--profile", action="store_true", help="also write each worker's torch.profiler table of the parallel step")
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_size % args.micro_batches or min(args.workers, args.rounds, args.steps, args.micro_batches) < 1:
        raise SystemExit("need --workers, --rounds, --steps, --micro-batches >= 1 and --micro-batches dividing --batch-size")
    if args.worker_out is not None:
        stage_worker(args)
        return
    model, x, y = real_batch(args)  # the workers load their own
    rounds = []
    for i in range(args.rounds):
        serial = serial_step_time(args, model, x, y, threads=1)
        serial_k = serial_step_time(args, model, x, y, threads=args.workers)
        serial_micro = serial_step_time(args, model, x, y, threads=1, micro_batches=args.micro_batches)
        staged, profiles = stage_step_times(args)
        rounds.append({"serial": serial, "serial_k": serial_k, "serial_micro": serial_micro, **staged})
        print(f"round {i + 1}/{args.rounds}: serial {1e3 * serial:.1f} ms ({1e3 * serial_micro:.1f} micro-batched), "
              f"stages {1e3 * staged['stages']:.1f} ms, micro-batched {1e3 * staged['micro']:.1f} ms, lpfast's parallel step "
              f"{1e3 * staged['lpfast']:.1f} ms ({1e3 * staged['lpfast_no_head']:.1f} without local heads, "
              f"{1e3 * staged['lpfast_micro']:.1f} micro-batched, {1e3 * staged['lpfast_pipelined']:.1f} pipelined)", flush=True)
        if profiles:
            write_profiles(args, profiles)
    write_report(args, rounds)


def write_profiles(args: argparse.Namespace, profiles: list[str]) -> None:
    lines = [f"# Where lpfast's parallel step spends its time: {args.model} on {args.dataset}, batch {args.batch_size}, K={args.workers}", "",
             f"torch.profiler over {args.steps} steps on each worker (one thread each), ops sorted by self CPU time "
             "(`python bench/ceiling.py ... --profile`, last round).", ""]
    for rank, table in enumerate(profiles):
        lines += [f"## Stage {rank}", "", "```", table.rstrip(), "```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"profile-{args.model}-{args.dataset}{cut_suffix(args)}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()

"""End-to-end benchmarks: configurations of ``lpfast train`` side by side at one epoch budget.

Every configuration runs through the real CLI (``torchrun`` for the K-worker rows), one epoch of
each in turn (A B C ... A B C ...) using ``--pause-after 1`` and ``--resume``, so drift of a shared
machine's speed hits every row alike. After every round the per-benchmark table
``<out>/<preset>-<model>-<dataset>.{json,md}`` is rewritten; when the budget is done, one JSON
record per configuration (config, machine, torch version, git commit, per-epoch metrics, final
accuracy, times, bytes sent, peak memory) is appended to ``<out>/records.jsonl``, which
``bench/report.py`` turns into ``bench/RESULTS.md``.

Presets (rows; ``+SPH`` where ``--parallel-epochs`` is given):

- ``smoke``: every kind of row once, on the embedded set, one epoch (the end-to-end test);
- ``parallel``: the parallel phase alone, penalty and AL on K workers, against serial backprop
  with 1 and K threads;
- ``sph``: penalty+SPH and AL+SPH with and without DS (s=2, bfloat16 wire) against serial backprop;
- ``aux``: penalty+SPH with stored λ against ``--aux net`` and serial backprop;
- ``grid``: serial (1 and K threads), DDP on K workers, penalty+SPH and AL+SPH with and without
  DS, and ``--aux net``;
- ``link``: what crosses a slow link (``--slow-link``): DDP, the serial pipeline, penalty+SPH with
  and without DS, against serial backprop on one host.

    lpfast bench sph --model resnet20 --dataset cifar10 --epochs 3 --parallel-epochs 2
    lpfast bench link --dataset mnist --epochs 3 --parallel-epochs 2 --slow-link 1gbit   # as root

With ``--slow-link RATE`` the 2-worker rows run as two hosts, each in its own network namespace
with its worker pinned to its own core, joined by a veth pair shaped to RATE (:mod:`lpfast.netns`):
there messages cost what they cost between machines, which is where the DS filters pay.
    python bench/e2e.py grid --dataset mnist --epochs 3 --parallel-epochs 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from lpfast.netns import Host, slow_link

ROOT = Path(__file__).resolve().parents[1]
DS_OPTIONS = ["--ds-factor", "2", "--wire-dtype", "bfloat16"]
PRESETS = {
    "smoke": ("serial-1", "serial-K", "ddp", "pipeline", "penalty", "penalty+ds", "penalty+net"),
    "parallel": ("serial-1", "serial-K", "penalty", "al", "penalty+lr0.1"),
    "sph": ("serial-K", "penalty", "al", "penalty+ds", "al+ds"),
    "aux": ("serial-K", "penalty", "penalty+net"),
    "grid": ("serial-1", "serial-K", "ddp", "penalty", "al", "penalty+ds", "al+ds", "penalty+net"),
    "link": ("serial-K", "ddp", "pipeline", "penalty", "penalty+ds"),
}


def row(kind: str, workers: int, parallel_epochs: int | None, micro_batches: int) -> tuple[str, list[str], int, int]:
    """(name, extra CLI options, torchrun workers (0 = plain process), threads per process) of a row kind:
    ``serial-1``, ``serial-K``, ``ddp``, ``pipeline`` (backprop as the K-stage pipeline of SPH's serial
    phase, every epoch), or ``penalty``/``al`` with modifiers ``+ds``, ``+net``, ``+lr0.1``."""
    if kind == "serial-1":
        return "serial, 1 thread", [], 0, 1
    if kind == "serial-K":
        return f"serial, {workers} threads", [], 0, workers
    if kind == "ddp":
        return f"DDP, {workers} workers x 1 thread", ["--method", "serial"], workers, 1
    if kind == "pipeline":
        return (f"serial pipeline K={workers}, {micro_batches} micro-batches",
                ["--method", "penalty", "--stages", str(workers), "--parallel-epochs", "0", "--micro-batches", str(micro_batches)], workers, 1)
    method, *modifiers = kind.split("+")
    options = ["--method", method, "--stages", str(workers)]
    name = f"{method}{'+SPH' if parallel_epochs is not None else ''} K={workers}"
    if parallel_epochs is not None:
        options += ["--parallel-epochs", str(parallel_epochs), "--micro-batches", str(micro_batches)]
    labels = {"ds": ("DS s=2 bf16", DS_OPTIONS), "net": ("--aux net", ["--aux", "net"]),
              "lr0.1": ("regression lr x0.1", ["--regression-lr-scale", "0.1"])}
    for modifier in modifiers:
        label, extra = labels[modifier]
        name += f", {label}"
        options += extra
    return name, options, workers, 1


def launch(program: list[str], workers: int, port: int, link: tuple[Host, Host] | None = None) -> list[list[str]]:
    """The processes that run ``python <program>``: one plain process (``workers`` 0), one torchrun
    on this machine, or (over a slow link) one torchrun node per namespace, each worker pinned to
    its own core."""
    if not workers:
        return [[sys.executable, *program]]
    if link is None:
        return [[sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(workers), "--master-port", str(port), *program]]
    return [host.wrap([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
                       "--master-addr", link[0].address, "--master-port", str(port), *program], cores=[rank])
            for rank, host in enumerate(link)]


def commands(options: list[str], workers: int, threads: int, common: list[str], out: Path, resume: bool, port: int,
             link: tuple[Host, Host] | None = None) -> list[list[str]]:
    """The processes of one epoch of a row."""
    train = ["-m", "lpfast", "train", *common, *options, "--threads", str(threads), "--out", str(out), "--pause-after", "1",
             *(["--resume"] if resume else [])]
    return launch(train, workers, port, link)


def run_all(cmds: list[list[str]], env: dict, what: str) -> None:
    processes = [subprocess.Popen(cmd, env=env) for cmd in cmds]
    if any(p.wait() != 0 for p in processes):
        raise SystemExit(f"{what} failed (exit codes {[p.returncode for p in processes]})")


def message_times(args: argparse.Namespace, folder: Path, env: dict) -> dict[str, float]:
    """Median round trip (ms) of a 3.2 MB gloo message between two workers, on loopback and over
    the slow link (:mod:`lpfast.message_time`): what the link costs, measured before the rows."""
    times = {}
    for where, link in (("loopback", None), (f"{args.slow_link} link", args.link)):
        out = folder / f"message-{where.replace(' ', '-')}.json"
        run_all(launch(["-m", "lpfast.message_time", "--megabytes", "3.2", "--out", str(out)], 2, args.port, link), env,
                f"the message-time measurement on {where}")
        times[where] = json.loads(out.read_text())["median_ms"]
        print(f"3.2 MB message on {where}: {times[where]:.1f} ms (median round trip)", flush=True)
    return times


def shown(cmds: list[list[str]]) -> str:
    return " & ".join(" ".join("python" if part == sys.executable else part for part in cmd) for cmd in cmds)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def collect(args, runs: Path, rows: dict, walls: dict, stamp: str) -> list[dict]:
    """One record per row that has finished epochs, from its run folder."""
    records = []
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for i, (name, (options, workers, threads)) in enumerate(rows.items()):
        folder = runs / f"run{i}"
        metrics_file = folder / "metrics.jsonl"
        metrics = [json.loads(line) for line in metrics_file.read_text().splitlines()] if metrics_file.exists() else []
        if not metrics:
            continue
        epoch_times = [m["epoch_time_s"] for m in metrics]
        records.append({
            "benchmark": args.preset + ("" if args.slow_link is None else f" over a {args.slow_link} link"), "invocation": stamp, "name": name, "model": args.model, "dataset": args.dataset,
            "workers": workers or 1, "threads": threads, "epoch_budget": args.epochs,
            "command": shown(commands(options, workers, threads, args.common, Path(f"run{i}"), False, args.port, args.link)),
            "slow_link": args.slow_link, "message_3.2MB_ms": args.message_ms,
            "config": json.loads((folder / "config.json").read_text()), "machine": machine, "git_commit": args.commit,
            "epochs": metrics, "phase": [m.get("phase", "serial") for m in metrics],
            "epoch_time_s": epoch_times, "median_epoch_time_s": statistics.median(epoch_times), "train_time_s": sum(epoch_times),
            "process_wall_s": walls[name][: len(metrics)], "wall_time_s": sum(walls[name][: len(metrics)]),
            "test_acc": [m["test_acc"] for m in metrics], "final_test_acc": metrics[-1]["test_acc"],
            "violation": [m.get("violation") for m in metrics], "beta": [m.get("beta") for m in metrics],
            "bytes_sent": sum(sum(m.get("bytes_forward") or [0]) + sum(m.get("bytes_backward") or [0]) for m in metrics),
            "aux_bytes_per_cut": next((m["aux_bytes"] for m in metrics if m.get("aux_bytes")), None),
            "stage_time_s": [m.get("stage_time_s") for m in metrics],
            "peak_rss_mb": max(m.get("peak_rss_mb", 0.0) for m in metrics),
        })
    return records


def write_table(args, records: list[dict], suffix: str) -> None:
    name = f"{args.preset}-{args.model}-{args.dataset}{suffix}"
    base, base_total = records[0]["median_epoch_time_s"], records[0]["train_time_s"]
    (args.out / f"{name}.json").write_text(json.dumps({"benchmark": args.preset, "records": records}, indent=1) + "\n")
    machine = records[0]["machine"]
    epochs_done = min(len(r["epoch_time_s"]) for r in records)
    lines = [
        f"# {args.preset}: {args.model} on {args.dataset}, {epochs_done}/{args.epochs} epochs, batch {args.batch_size}",
        "", f"Machine: {machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}. "
        "Epochs of all rows interleaved. Training time counts the training loops only; wall time is that of the "
        "whole processes (start-up, data loading, λ initialisation, evaluation, checkpoints). Bytes are those sent "
        "between stages in training steps, both directions; auxiliary memory is that of λ and μ (or of the "
        "auxiliary networks with their optimizer state), all cuts.", "",
        "| configuration | final test acc (%) | median epoch (s) | epoch speed vs first row | training time (s) | total vs first row "
        "| wall time (s) | bytes sent | auxiliary memory | peak memory | last parallel-epoch violation |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        violation = next((v for v in reversed(r["violation"]) if v), None)
        lines.append(
            f"| {r['name']} | {r['final_test_acc']:.2f} | {r['median_epoch_time_s']:.1f} | {base / r['median_epoch_time_s']:.2f}x | "
            f"{r['train_time_s']:.0f} | {base_total / r['train_time_s']:.2f}x | {r['wall_time_s']:.0f} | {r['bytes_sent'] / 1e9:.2f} GB | "
            f"{sum(r['aux_bytes_per_cut'] or [0]) / 1e6:.2f} MB | {r['peak_rss_mb']:.0f} MB | "
            f"{'' if violation is None else ' '.join(f'{v:.4f}' for v in violation)} |"
        )
    if args.message_ms:
        lines += ["", "3.2 MB gloo message, median round trip: " + ", ".join(f"{ms:.1f} ms on {where}" for where, ms in args.message_ms.items())]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpfast bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", choices=tuple(PRESETS))
    parser.add_argument("--model", default="mnist_resnet")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-subset", type=int, default=None, help="train on N samples only, balanced over the classes (quick checks)")
    parser.add_argument("--workers", type=int, default=2, help="K: stages / data-parallel workers / threads of the serial row")
    parser.add_argument("--parallel-epochs", type=int, default=None, help="P: the layer-parallel rows run SPH, P parallel epochs first")
    parser.add_argument("--micro-batches", type=int, default=4, help="micro-batches of the serial phase's pipeline")
    parser.add_argument("--port", type=int, default=29533, help="torchrun master port")
    parser.add_argument("--slow-link", metavar="RATE", default=None,
                        help="run the 2-worker rows as two hosts in their own network namespaces joined by a veth pair "
                             "shaped to RATE (tc syntax, e.g. 1gbit); needs root, ip and tc")
    parser.add_argument("--out", type=Path, default=Path("bench") / "results", help="results folder (default: bench/results)")
    parser.add_argument("--rows", default=None, metavar="KIND,KIND",
                        help="run only these of the preset's row kinds (e.g. serial-1,serial-K to re-run rows whose timings were "
                             "disturbed); bench/report.py takes every row from the latest invocation that ran it")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.slow_link is not None and args.workers != 2:
        raise SystemExit("--slow-link joins exactly two hosts: use --workers 2")
    args.kinds = PRESETS[args.preset] if args.rows is None else tuple(args.rows.split(","))
    unknown = [kind for kind in args.kinds if kind not in PRESETS[args.preset]]
    if unknown:
        raise SystemExit(f"--rows {args.rows}: {', '.join(unknown)} not in the {args.preset} preset's rows {', '.join(PRESETS[args.preset])}")
    with slow_link(args.slow_link) if args.slow_link is not None else nullcontext() as link:
        args.link = link
        run_benchmark(args)


def run_benchmark(args: argparse.Namespace) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    suffix = "" if args.slow_link is None else f"-link{args.slow_link}"
    runs = args.out / f"{args.preset}-{args.model}-{args.dataset}{suffix}-{stamp}"
    args.common = ["--model", args.model, "--dataset", args.dataset, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    if args.dataset != "embedded":
        args.common += ["--data-dir", args.data_dir]
    if args.train_subset is not None:
        args.common += ["--train-subset", str(args.train_subset)]
    args.commit = git_commit()
    rows = {}
    for kind in args.kinds:
        name, options, workers, threads = row(kind, args.workers, args.parallel_epochs, args.micro_batches)
        rows[name] = (options, workers, threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    walls: dict[str, list[float]] = {name: [] for name in rows}
    runs.mkdir(parents=True, exist_ok=True)
    args.message_ms = None if args.link is None else message_times(args, runs, env)
    for epoch in range(args.epochs):
        for i, (name, (options, workers, threads)) in enumerate(rows.items()):
            cmds = commands(options, workers, threads, args.common, runs / f"run{i}", epoch > 0, args.port, args.link)
            print(f"[epoch {epoch + 1}/{args.epochs}] {name}: {shown(cmds)}", flush=True)
            start = time.perf_counter()
            run_all(cmds, env, f"{name} (run folder {runs / f'run{i}'})")
            walls[name].append(time.perf_counter() - start)
        records = collect(args, runs, rows, walls, stamp)
        write_table(args, records, suffix)
    with open(args.out / "records.jsonl", "a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    print(f"appended {len(rows)} records to {args.out / 'records.jsonl'}", flush=True)

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
- ``link``: what crosses a slow link (``--slow-link``): DDP, pipeline parallelism (GPipe and 1F1B
  schedules of torch.distributed.pipelining), penalty+SPH with and without DS, against backprop
  on one device;
- ``devices``: every peer on the same K devices (one worker, one thread each): backprop on one
  device (the paper's baseline), DDP, GPipe and 1F1B pipelines, lpfast's parallel phase alone
  (every epoch parallel), penalty+SPH with and without DS, and backprop with K threads in one
  process as context;
- ``real``: the real-budget campaign (full training set, tens of epochs): backprop on one device
  and with K threads (two seeds, for the seed-to-seed spread), penalty+SPH and AL+SPH with and
  without DS, ``--aux net``, and penalty+SPH at parallel shares 0.25 and 0.75 besides the
  ``--parallel-epochs`` share.

Row modifiers (``--rows penalty+ds+seed1``): ``kN`` (N stages or workers instead of ``--workers``),
``dN`` (N replicas of the K stages, on K·N workers), ``rt`` (``--placement replicas-together``),
``oneprocess`` (every stage in one process: the numbers of K workers, for accuracy-only rows), ``ds``, ``net``, ``pipe`` (``--aux pipelined``), ``lr0.1``, ``rn`` (``--restore-norms``), ``nopredict`` (``--no-predict-weights``), ``seedN`` (another seed),
``pmbM`` (``--parallel-micro-batches M``; without it a row's parallel steps take whole batches), ``gsG`` (``--gradient-shrink G``), ``wuE`` (``--warmup-epochs E``:
the learning rate's linear warm-up), ``swN`` (``--serial-warmup N``: N epochs of backprop before the parallel ones), ``awN`` / ``adN`` (``--aux-width N`` / ``--aux-depth N`` of ``net``'s ψ),
``shareF`` (F of the epochs parallel, rounded; ``share1``: the parallel phase alone), ``cutA-B``
(blocks per stage, ``--stage-blocks A,B``: e.g. the cut ``lpfast plan`` finds fastest).

A long invocation survives interruption: every row checkpoints after each epoch, the runs folder
keeps the invocation's options (``invocation.json``) and the wall times so far, and
``lpfast bench --continue RUNS_FOLDER`` picks it up where it stopped, from a checkout of the commit
it started at. ``--commit-results`` commits the round tables to the results folder's git
repository after every round, so partial results outlive the machine. Stopped by SIGTERM or
Ctrl-C, the bench stops the row under way (its epoch is lost, as it would be to a kill), brings
the tables and the snapshot up to the epochs committed, commits them and exits with 128 + the
signal's number.

A campaign longer than its machine's life (the runs folder is lost with the machine) keeps a
snapshot in the repository: ``--snapshot DIR`` copies the invocation's options and wall times,
every row's config and metrics, and the checkpoints of the unfinished rows that hold no λ (serial rows;
layer-parallel rows once their parallel phase is over, when λ is freed) into DIR, after a row
finishes and at most every ``--snapshot-every`` minutes, and commits it with the tables. λ itself
(1.6 GB per cut on full CIFAR-10) never goes into the repository, so a row in its parallel phase
restarts from its last snapshot. With ``--order sequential`` each row runs its whole budget before
the next starts, so at most one row is under way (and at risk) at a time; the rows' epochs are
then not interleaved, and their speeds are not comparable (take those from an interleaved
invocation). A new machine continues by copying DIR to a runs folder and ``--continue`` ing it.

    lpfast bench sph --model resnet20 --dataset cifar10 --epochs 3 --parallel-epochs 2
    lpfast bench link --dataset mnist --epochs 3 --parallel-epochs 2 --slow-link 1gbit   # as root

With ``--slow-link RATE`` the worker rows run as two hosts, each in its own network namespace
with the first (second) half of the ranks, each worker pinned to a core, joined by a veth pair
shaped to RATE (:mod:`lpfast.netns`): there messages cost what they cost between machines, which
is where the DS filters pay. With ``--device-share F`` every worker, and the one-process rows, is
a device of F of a core (:mod:`lpfast.cpuquota`): four devices on two cores at 0.5.
    python bench/e2e.py grid --dataset mnist --epochs 3 --parallel-epochs 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from lpfast import checkpoint as ckpt
from lpfast.config import TrainConfig
from lpfast.cpuquota import Devices, cpu_quotas, in_group
from lpfast.netns import Host, slow_link
from lpfast.serial import STAGES_PER_WORKER

ROOT = Path(__file__).resolve().parents[1]
DS_OPTIONS = ["--ds-factor", "2", "--wire-dtype", "bfloat16"]
PIPELINE_SCHEDULES = {"gpipe": "GPipe", "1f1b": "1F1B", "interleaved-1f1b": "interleaved 1F1B", "zero-bubble": "interleaved zero bubble"}
PRESETS = {
    "smoke": ("serial-1", "serial-K", "ddp", "gpipe", "1f1b", "penalty", "penalty+ds", "penalty+net"),
    "parallel": ("serial-1", "serial-K", "penalty", "al", "penalty+lr0.1"),
    "sph": ("serial-K", "penalty", "al", "penalty+ds", "al+ds"),
    "aux": ("serial-K", "penalty", "penalty+net"),
    "grid": ("serial-1", "serial-K", "ddp", "penalty", "al", "penalty+ds", "al+ds", "penalty+net"),
    "link": ("serial-1", "ddp", "gpipe", "1f1b", "penalty", "penalty+ds"),
    "devices": ("serial-1", "ddp", "gpipe", "1f1b", "penalty+share1", "penalty", "penalty+ds", "serial-K"),
    "real": ("serial-1", "serial-K", "serial-K+seed1", "penalty", "al", "penalty+ds", "al+ds", "penalty+net",
             "penalty+share0.25", "penalty+share0.75"),
}
INVOCATION_FILE = "invocation.json"
WALLS_FILE = "walls.json"
FINISHED_FILE = "finished"  # written once the records are appended


def _number(text: str) -> float:
    """``text`` as a number, or -1 where it is none (every numeric modifier's value is >= 0)."""
    try:
        return float(text)
    except ValueError:
        return -1.0


def modifier(tag: str, epochs: int) -> tuple[str, list[str]]:
    """(label, extra CLI options) of a row modifier."""
    fixed = {"ds": ("DS s=2 bf16", DS_OPTIONS), "net": ("--aux net", ["--aux", "net"]), "pipe": ("--aux pipelined", ["--aux", "pipelined"]),
             "rt": ("a stage's replicas together", ["--placement", "replicas-together"]),
             "lr0.1": ("regression lr x0.1", ["--regression-lr-scale", "0.1"]),
             "rn": ("norms restored", ["--restore-norms"]),
             "nopredict": ("no weight prediction", ["--no-predict-weights"]),
             "bf16": ("bf16 autocast", ["--precision", "bf16"]), "fp16": ("fp16 autocast", ["--precision", "fp16"])}
    if tag in fixed:
        return fixed[tag]
    if tag.startswith("seed") and tag[4:].isdigit():
        return f"seed {tag[4:]}", ["--seed", tag[4:]]
    if tag.startswith("blocks") and tag[6:].isdigit():
        return f"{tag[6:]} parallel/serial blocks", ["--parallel-blocks", tag[6:]]
    if tag.startswith("aw") and tag[2:].isdigit():
        return f"ψ width {tag[2:]}", ["--aux-width", tag[2:]]
    if tag.startswith("ad") and tag[2:].isdigit():
        return f"ψ depth {tag[2:]}", ["--aux-depth", tag[2:]]
    if tag.startswith("pmb") and tag[3:].isdigit():
        return f"parallel steps in {tag[3:]} micro-batches", ["--parallel-micro-batches", tag[3:]]
    if tag.startswith("gs") and 0 < _number(tag[2:]) <= 1:
        return f"gradient shrink {tag[2:]}", ["--gradient-shrink", tag[2:]]
    if tag.startswith("wu") and _number(tag[2:]) > 0:
        return f"lr warm-up {tag[2:]} epoch{'s' if tag[2:] != '1' else ''}", ["--warmup-epochs", tag[2:]]
    if tag.startswith("sw") and tag[2:].isdigit():
        return f"{tag[2:]} serial warm-up epoch{'s' if tag[2:] != '1' else ''}", ["--serial-warmup", tag[2:]]
    if tag.startswith("cut") and all(part.isdigit() for part in tag[3:].split("-")):
        blocks = tag[3:].split("-")
        return f"cut {'+'.join(blocks)}", ["--stage-blocks", ",".join(blocks)]
    if tag.startswith("share"):
        share = _number(tag[5:])
        if 0 <= share <= 1:
            parallel = round(share * epochs)
            return f"{parallel} of {epochs} epochs parallel", ["--parallel-epochs", str(parallel)]
    raise ValueError(f"unknown row modifier {tag!r}: use kN, dN, oneprocess, rt, ds, net, pipe, lr0.1, rn, nopredict, bf16, fp16, seedN, pmbM (parallel steps in M micro-batches), "
                     "gsG (--gradient-shrink G, 0 < G <= 1), wuE (--warmup-epochs E), swN (--serial-warmup N), blocksB, "
                     "awN / adN (--aux net's ψ width / depth), "
                     "shareF (0 <= F <= 1) or cutA-B-... (blocks per stage)")


def row(kind: str, workers: int, parallel_epochs: int | None, micro_batches: int, epochs: int) -> tuple[str, list[str], int, int]:
    """(name, extra CLI options, torchrun workers (0 = plain process), threads per process) of a row kind:
    ``serial-1``, ``serial-K``, ``ddp``, ``gpipe`` / ``1f1b`` (backprop as a K-stage pipeline under
    torch.distributed.pipelining's schedule, every epoch: SPH's serial phase), or ``penalty``/``al``;
    each followed by ``+modifier`` s (:func:`modifier`), and by the two that change where it runs:
    ``kN`` (N stages, workers or threads instead of ``workers``) and ``oneprocess`` (every stage in
    one process, on as many threads as it has stages and this machine cores: the numbers K workers
    give, ``tests/test_parallel.py``, so for rows whose accuracy is the measure)."""
    base, *tags = kind.split("+")
    counted = lambda letter: [tag for tag in tags if tag[:1] == letter and tag[1:].isdigit() and int(tag[1:]) >= 1]  # noqa: E731
    stage_tags, replica_tags = counted("k"), counted("d")
    workers = int(stage_tags[-1][1:]) if stage_tags else workers
    replicas = int(replica_tags[-1][1:]) if replica_tags else 1
    if replicas > 1 and base not in ("penalty", "al"):
        raise ValueError(f"unknown row {kind!r}: replicas (dN) are rows of the layer-parallel methods, penalty or al")
    one_process = "oneprocess" in tags
    if one_process and replicas > 1:
        raise ValueError(f"unknown row {kind!r}: replicas run under torchrun, one worker each: drop oneprocess")
    tags = [tag for tag in tags if tag not in stage_tags + replica_tags and tag != "oneprocess"]
    if base == "serial-1":
        name, options, procs, threads = "serial, 1 thread", [], 0, 1
    elif base == "serial-K":
        name, options, procs, threads = f"serial, {workers} threads", [], 0, workers
    elif base == "ddp":
        name, options, procs, threads = f"DDP, {workers} workers x 1 thread", ["--method", "serial"], workers, 1
    elif base in PIPELINE_SCHEDULES:
        stages = workers * STAGES_PER_WORKER[base]  # the looped schedules: two stages on each worker
        name, options, procs, threads = (f"pipeline {PIPELINE_SCHEDULES[base]} K={stages}"
                                          + (f" on {workers} workers" if stages > workers else "") + f", {micro_batches} micro-batches",
                                          ["--method", "penalty", "--stages", str(stages), "--parallel-epochs", "0",
                                           "--micro-batches", str(micro_batches), "--serial-schedule", base], workers, 1)
    elif base in ("penalty", "al"):
        # Stored λ on whole batches unless a modifier says otherwise (pipe, net, pmbM): the rows keep
        # their meaning whatever lpfast train's defaults.
        options = ["--method", base, "--stages", str(workers), "--aux", "store", "--parallel-micro-batches", "1"]
        name, procs, threads = f"{base}{'+SPH' if parallel_epochs is not None else ''} K={workers}", workers * replicas, 1
        if replicas > 1:
            name += f" × {replicas} replicas"
            options += ["--replicas", str(replicas)]
        if parallel_epochs is not None:
            options += ["--parallel-epochs", str(parallel_epochs), "--micro-batches", str(micro_batches)]
    else:
        raise ValueError(f"unknown row kind {kind!r}")
    for tag in tags:
        label, extra = modifier(tag, epochs)
        name += f", {label}"
        options += extra  # a later --parallel-epochs overrides the preset's
    if one_process and procs:
        name += ", one process"
        procs, threads = 0, min(workers, os.cpu_count() or 1)
    return name, options, procs, threads


def launch(program: list[str], workers: int, port: int, link: tuple[Host, Host] | None = None,
           devices: Devices | None = None) -> list[list[str]]:
    """The processes that run ``python <program>``: one plain process (``workers`` 0), one torchrun
    on this machine, or one torchrun node per worker: over a slow link (the first half of the
    ranks on one namespace, the second half on the other) and with ``devices``, the cgroups of
    ``--device-share`` (:mod:`lpfast.cpuquota`: worker i in group i, the groups of one core pinned
    to it, ranks filling core 0 first)."""
    def core(i: int) -> int:
        return devices.core(i) if devices is not None else i * (os.cpu_count() or 1) // max(workers, 1)

    def as_device(i: int, command: list[str]) -> list[str]:
        """``command`` as worker i's device: joined to its cgroup from here, before any namespace is
        entered (``ip netns exec`` mounts a /sys of its own, without the cgroup tree)."""
        return in_group(command, devices.groups[i]) if devices is not None else command

    if not workers:
        if devices is None:
            return [[sys.executable, *program]]
        return [as_device(0, ["taskset", "-c", str(core(0)), sys.executable, *program])]
    if link is None and devices is None:
        return [[sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(workers), "--master-port", str(port), *program]]
    processes = []
    for rank in range(workers):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(workers), "--node-rank", str(rank),
                   "--nproc-per-node", "1", "--master-addr", link[0].address if link else "127.0.0.1", "--master-port", str(port), *program]
        placed = ["taskset", "-c", str(core(rank)), *command] if link is None else link[rank * len(link) // workers].wrap(command, cores=[core(rank)])
        processes.append(as_device(rank, placed))
    return processes


def commands(options: list[str], workers: int, threads: int, common: list[str], out: Path, resume: bool, port: int,
             link: tuple[Host, Host] | None = None, devices: Devices | None = None) -> list[list[str]]:
    """The processes of one epoch of a row."""
    train = ["-m", "lpfast", "train", *common, *options, "--threads", str(threads), "--out", str(out), "--pause-after", "1",
             *(["--resume"] if resume else [])]
    return launch(train, workers, port, link, devices)


def run_all(cmds: list[list[str]], env: dict, what: str) -> None:
    processes = [subprocess.Popen(cmd, env=env) for cmd in cmds]
    try:
        if any(p.wait() != 0 for p in processes):
            raise SystemExit(f"{what} failed (exit codes {[p.returncode for p in processes]})")
    finally:
        # Stopped (or failed) while they ran: their epoch is lost anyway, and a worker left behind
        # would hold the port and the cores.
        for p in processes:
            if p.poll() is None:
                p.terminate()
                p.wait()


class Stopped(Exception):
    """SIGTERM or SIGINT reached ``lpfast bench``: it commits what it has and exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _raise_stopped(signum: int, frame) -> None:
    raise Stopped(signum)


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
    for i, (name, (kind, options, workers, threads)) in enumerate(rows.items()):
        folder = runs / f"run{i}"
        metrics_file = folder / "metrics.jsonl"
        metrics = [json.loads(line) for line in metrics_file.read_text().splitlines()] if metrics_file.exists() else []
        if not metrics:
            continue
        epoch_times = [m["epoch_time_s"] for m in metrics]
        records.append({
            "benchmark": args.preset + ("" if args.slow_link is None else f" over a {args.slow_link} link"), "invocation": stamp, "name": name,
            "kind": kind, "model": args.model, "dataset": args.dataset,
            "workers": workers or 1, "threads": threads, "epoch_budget": args.epochs,
            "command": shown(commands(options, workers, threads, args.common, Path(f"run{i}"), False, args.port, args.link, args.devices)),
            "device_share": args.device_share,
            "slow_link": args.slow_link, "message_3.2MB_ms": args.message_ms,
            "config": json.loads((folder / "config.json").read_text()), "machine": machine, "git_commit": args.commit,
            "epochs": metrics, "phase": [m.get("phase", "serial") for m in metrics],
            "epoch_time_s": epoch_times, "median_epoch_time_s": statistics.median(epoch_times), "train_time_s": sum(epoch_times),
            "process_wall_s": walls.get(name, [])[: len(metrics)], "wall_time_s": sum(walls.get(name, [])[: len(metrics)]),
            "test_acc": [m["test_acc"] for m in metrics], "final_test_acc": metrics[-1]["test_acc"],
            "violation": [m.get("violation") for m in metrics], "beta": [m.get("beta") for m in metrics],
            "bytes_sent": sum(sum(m.get("bytes_forward") or [0]) + sum(m.get("bytes_backward") or [0]) for m in metrics),
            "aux_bytes_per_cut": next((m["aux_bytes"] for m in metrics if m.get("aux_bytes")), None),
            "stage_time_s": [m.get("stage_time_s") for m in metrics],
            "peak_rss_mb": max(m.get("peak_rss_mb", 0.0) for m in metrics),
        })
    return records


def write_table(args, records: list[dict], suffix: str) -> list[Path]:
    """Writes the round table ``<preset>-<model>-<dataset>.{json,md}``; returns the two paths."""
    name = f"{args.preset}-{args.model}-{args.dataset}{suffix}"
    base, base_total = records[0]["median_epoch_time_s"], records[0]["train_time_s"]
    (args.out / f"{name}.json").write_text(json.dumps({"benchmark": args.preset, "records": records}, indent=1) + "\n")
    machine = records[0]["machine"]
    done = sorted({len(r["epoch_time_s"]) for r in records})
    span = f"{done[0]}" if len(done) == 1 else f"{done[0]}-{done[-1]}"
    lines = [
        f"# {args.preset}: {args.model} on {args.dataset}, {span}/{args.epochs} epochs, batch {args.batch_size}",
        "", f"Machine: {machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}. "
        + ("Epochs of all rows interleaved. " if args.order == "interleaved" else
           "Rows run one after another (not interleaved: their speeds are not comparable on a machine whose speed drifts). ")
        + "Training time counts the training loops only; wall time is that of the "
        "whole processes (start-up, data loading, λ initialisation, evaluation, checkpoints). Bytes are those sent "
        "between stages in training steps, both directions; auxiliary memory is that of λ and μ (or of the "
        "auxiliary networks with their optimizer state), all cuts.", "",
        "| configuration | epochs | final test acc (%) | median epoch (s) | epoch speed vs first row | training time (s) | total vs first row "
        "| wall time (s) | bytes sent | auxiliary memory | peak memory | last parallel-epoch violation |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        violation = next((v for v in reversed(r["violation"]) if v), None)
        lines.append(
            f"| {r['name']} | {len(r['epoch_time_s'])} | {r['final_test_acc']:.2f} | {r['median_epoch_time_s']:.1f} | {base / r['median_epoch_time_s']:.2f}x | "
            f"{r['train_time_s']:.0f} | {base_total / r['train_time_s']:.2f}x | {r['wall_time_s']:.0f} | {r['bytes_sent'] / 1e9:.2f} GB | "
            f"{sum(r['aux_bytes_per_cut'] or [0]) / 1e6:.2f} MB | {r['peak_rss_mb']:.0f} MB | "
            f"{'' if violation is None else ' '.join(f'{v:.4f}' for v in violation)} |"
        )
    if args.message_ms:
        lines += ["", "3.2 MB gloo message, median round trip: " + ", ".join(f"{ms:.1f} ms on {where}" for where, ms in args.message_ms.items())]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return [args.out / f"{name}.json", args.out / f"{name}.md"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpfast bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", nargs="?", choices=tuple(PRESETS), help="the rows to run (not with --continue)")
    parser.add_argument("--model", default="mnist_resnet")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-subset", type=int, default=None, help="train on N samples only, balanced over the classes (quick checks)")
    parser.add_argument("--test-subset", type=int, default=None,
                        help="evaluate on N test samples only, balanced over the classes (where evaluation outweighs the training timed)")
    parser.add_argument("--workers", type=int, default=2, help="K: stages / data-parallel workers / threads of the serial row")
    parser.add_argument("--parallel-epochs", type=int, default=None, help="P: the layer-parallel rows run SPH, P parallel epochs first")
    parser.add_argument("--micro-batches", type=int, default=4, help="micro-batches of the serial phase's pipeline")
    parser.add_argument("--port", type=int, default=29533, help="torchrun master port")
    parser.add_argument("--slow-link", metavar="RATE", default=None,
                        help="run the worker rows as two hosts in their own network namespaces (the first half of the ranks "
                             "on one) joined by a veth pair shaped to RATE (tc syntax, e.g. 1gbit); needs root, ip and tc")
    parser.add_argument("--device-share", type=float, default=None, metavar="F",
                        help="every worker (and the one-process rows) a device of F of a core: a cgroup of its own with a "
                             "CPU quota, 1/F of them pinned to a core (e.g. 0.5: four devices on two cores); needs root and "
                             "the cgroup v1 cpu controller")
    parser.add_argument("--out", type=Path, default=Path("bench") / "results", help="results folder (default: bench/results)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where the rows' run folders go (default: the results folder); a long campaign's belong outside the work tree")
    parser.add_argument("--continue", dest="continue_dir", type=Path, default=None, metavar="RUNS_FOLDER",
                        help="continue the interrupted invocation whose runs folder this is, with its own options")
    parser.add_argument("--commit-results", action="store_true",
                        help="after every round, git-commit the round table (json and md) in the results folder's repository")
    parser.add_argument("--order", choices=("interleaved", "sequential"), default="interleaved",
                        help="interleaved (default): every row one epoch in turn, so speeds compare; sequential: each row's "
                             "whole budget before the next (a long campaign on a machine that may be replaced)")
    parser.add_argument("--snapshot", type=Path, default=None, metavar="DIR",
                        help="keep in DIR what a new machine needs to continue this invocation (options, metrics, the checkpoints "
                             "of rows holding no λ), committed with the tables under --commit-results")
    parser.add_argument("--snapshot-every", type=float, default=30.0, metavar="MINUTES",
                        help="take the snapshot after a row finishes and at most every MINUTES (default 30)")
    parser.add_argument("--tag", default=None, metavar="NAME",
                        help="append -NAME to the table's name (<preset>-<model>-<dataset>-NAME), so an invocation beside "
                             "another of the same preset, model and data set keeps its own table")
    parser.add_argument("--rows", default=None, metavar="KIND,KIND",
                        help="run only these of the preset's row kinds (e.g. serial-1,serial-K to re-run rows whose timings were "
                             "disturbed); bench/report.py takes every row from the latest invocation that ran it")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    runs = None
    if args.continue_dir is not None:
        runs = args.continue_dir
        if not (runs / INVOCATION_FILE).is_file():
            raise SystemExit(f"--continue {runs}: no {INVOCATION_FILE} there (it is the runs folder an invocation printed at its start)")
        saved = json.loads((runs / INVOCATION_FILE).read_text())
        if saved["commit"] != (here := git_commit()):
            raise SystemExit(f"--continue {runs}: the invocation ran commit {saved['commit']}, this checkout is at {here}; "
                             f"continue from a checkout of its commit (git worktree add DIR {saved['commit']}) so every epoch runs the same code")
        given = args
        args = parser.parse_args(saved["argv"])
        args.stamp, args.out, args.data_dir = saved["stamp"], Path(saved["out"]), saved["data_dir"]
        args.commit_results = args.commit_results or given.commit_results
        # Where things are may differ on the machine that continues (a snapshot restored elsewhere).
        for option in ("--out", "--data-dir", "--snapshot"):
            if option in argv:
                attr = option[2:].replace("-", "_")
                setattr(args, attr, getattr(given, attr))
    elif args.preset is None:
        parser.error("name a preset, or --continue RUNS_FOLDER")
    else:
        args.stamp = time.strftime("%Y%m%d-%H%M%S")
    args.kinds = PRESETS[args.preset] if args.rows is None else tuple(args.rows.split(","))
    for kind in args.kinds:
        try:
            row(kind, args.workers, args.parallel_epochs, args.micro_batches, args.epochs)
        except ValueError as exc:
            raise SystemExit(f"--rows {args.rows}: {exc} (the {args.preset} preset's rows: {', '.join(PRESETS[args.preset])})") from None
    args.commit = git_commit()
    suffix = ("" if args.slow_link is None else f"-link{args.slow_link}") + ("" if args.device_share is None else f"-device{args.device_share:g}") \
        + ("" if args.tag is None else f"-{args.tag}")
    if runs is None:
        runs = (args.runs_dir or args.out) / f"{args.preset}-{args.model}-{args.dataset}{suffix}-{args.stamp}"
        runs.mkdir(parents=True, exist_ok=True)
        saved = {"argv": argv, "stamp": args.stamp, "commit": args.commit, "out": str(args.out.resolve()), "data_dir": str(Path(args.data_dir).resolve())}
        (runs / INVOCATION_FILE).write_text(json.dumps(saved, indent=1) + "\n")
    print(f"lpfast bench: runs folder {runs} (continue an interrupted invocation with --continue {runs})", flush=True)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stopped)
    workers = max([row(kind, args.workers, args.parallel_epochs, args.micro_batches, args.epochs)[2] for kind in args.kinds] + [1])
    with slow_link(args.slow_link) if args.slow_link is not None else nullcontext() as link, \
            cpu_quotas(workers, args.device_share) if args.device_share is not None else nullcontext() as devices:
        args.link, args.devices = link, devices
        run_benchmark(args, runs, suffix)


def epochs_done(folder: Path) -> int:
    """Epochs a row has committed (:mod:`lpfast.checkpoint`); 0 before its first."""
    done = ckpt.committed(folder) if folder.is_dir() else None
    return 0 if done is None else done["epoch"]


def commit_results(files: list[Path], message: str) -> None:
    """Commits ``files`` (only them) in their git repository; a failure is reported, never fatal."""
    repo = files[0].resolve().parent
    for attempt in range(5):
        subprocess.run(["git", "-C", str(repo), "add", "--", *map(str, files)], capture_output=True)
        done = subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", message, "--", *map(str, files)], capture_output=True, text=True)
        if done.returncode == 0 or "nothing to commit" in done.stdout + done.stderr:
            return
        time.sleep(2 + attempt)  # another git command holds the index
    print(f"lpfast bench: could not commit {', '.join(map(str, files))}: {done.stderr.strip()}", flush=True)


class Snapshot:
    """What a new machine needs to continue an invocation, kept in ``args.snapshot`` (a folder of the
    results' repository): the runs folder's options and wall times, and per row its config, metrics,
    commit marker and, while the row is unfinished, its committed checkpoints, for every row whose
    checkpoint holds no λ. A row still in its parallel phase keeps its previous snapshot (or none:
    it starts over)."""

    def __init__(self, args: argparse.Namespace, runs: Path) -> None:
        self.folder, self.runs, self.every_s = args.snapshot, runs, 60.0 * args.snapshot_every
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_s

    def take(self, *, force: bool = False) -> list[Path]:
        """Refreshes the snapshot (when due, or ``force``); returns its folder for committing, or nothing."""
        if not (force or self.due()):
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in (INVOCATION_FILE, WALLS_FILE, FINISHED_FILE):
            if (self.runs / name).exists():
                shutil.copy2(self.runs / name, self.folder / name)
        for row in sorted(self.runs.glob("run*")):
            done = ckpt.committed(row)
            if done is None or row_config(row).holds_lambda(done["epoch"]):
                continue
            kept = self.folder / row.name
            kept.mkdir(exist_ok=True)
            # A finished row needs no checkpoint to be continued: its config and metrics are its result,
            # and a clone of the repository stays small.
            finished = done["epoch"] >= row_config(row).epochs
            wanted = [row / ckpt.CONFIG_FILE, row / ckpt.METRICS_FILE, row / ckpt.COMMIT_FILE,
                      *(() if finished else (ckpt.rank_checkpoint(row, r, done["epoch"], done["step"]) for r in range(done["world"])))]
            for old in kept.iterdir():
                if old.name not in {path.name for path in wanted}:
                    old.unlink()
            for path in wanted:
                shutil.copy2(path, kept / path.name)
        self.last = time.monotonic()
        return [self.folder]


def row_config(folder: Path) -> TrainConfig:
    """The training options a row's run folder was started with."""
    return TrainConfig.from_dict(ckpt.read_config(folder))


def run_benchmark(args: argparse.Namespace, runs: Path, suffix: str) -> None:
    stamp = args.stamp
    args.common = ["--model", args.model, "--dataset", args.dataset, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    if args.dataset != "embedded":
        args.common += ["--data-dir", args.data_dir]
    for option, value in (("--train-subset", args.train_subset), ("--test-subset", args.test_subset)):
        if value is not None:
            args.common += [option, str(value)]
    rows = {}
    for kind in args.kinds:
        name, options, workers, threads = row(kind, args.workers, args.parallel_epochs, args.micro_batches, args.epochs)
        rows[name] = (kind, options, workers, threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    walls_file = runs / WALLS_FILE
    walls: dict[str, list[float]] = json.loads(walls_file.read_text()) if walls_file.exists() else {}
    args.message_ms = None if args.link is None else message_times(args, runs, env)
    snapshot = Snapshot(args, runs) if args.snapshot is not None else None

    def run_epoch(i: int, name: str) -> None:
        """Runs row ``i``'s next epoch."""
        kind, options, workers, threads = rows[name]
        folder = runs / f"run{i}"
        done = epochs_done(folder)
        cmds = commands(options, workers, threads, args.common, folder, done > 0, args.port, args.link, args.devices)
        print(f"[epoch {done + 1}/{args.epochs}] {name}: {shown(cmds)}", flush=True)
        start = time.perf_counter()
        run_all(cmds, env, f"{name} (run folder {folder})")
        walls[name] = walls.get(name, [])[:done] + [time.perf_counter() - start]
        walls_file.write_text(json.dumps(walls) + "\n")

    def tables(message: str, *, commit: bool = True, force_snapshot: bool = False) -> None:
        files = write_table(args, collect(args, runs, rows, walls, stamp), suffix)
        if snapshot is not None:
            files += snapshot.take(force=force_snapshot)
        if args.commit_results and commit:
            commit_results(files, f"bench {args.preset} {args.model} on {args.dataset}: {message} (invocation {stamp}, partial)")

    try:
        if args.order == "interleaved":
            start_epoch = min(epochs_done(runs / f"run{i}") for i in range(len(rows)))
            if start_epoch:
                print(f"lpfast bench: continuing after epoch {start_epoch} of {args.epochs}", flush=True)
            for epoch in range(start_epoch, args.epochs):
                for i, name in enumerate(rows):
                    while epochs_done(runs / f"run{i}") <= epoch:  # a row behind the round catches up first
                        run_epoch(i, name)
                tables(f"round {epoch + 1} of {args.epochs}")
        else:
            for i, name in enumerate(rows):
                folder = runs / f"run{i}"
                while (done := epochs_done(folder)) < args.epochs:
                    run_epoch(i, name)
                    # Tables are rewritten after every epoch and committed (with the snapshot) when the row
                    # finishes, when it has just left its parallel phase (which is then safe), or when a
                    # snapshot is due and the row holds no λ.
                    config = row_config(folder)
                    if done + 1 == args.epochs or config.left_parallel_phase(done + 1) or \
                            (snapshot is not None and snapshot.due() and not config.holds_lambda(done + 1)):
                        tables(f"{name}, {done + 1} of {args.epochs} epochs", force_snapshot=True)
                    else:
                        tables("", commit=False)
    except Stopped as stop:
        # A kill or Ctrl-C (a session ending, a campaign re-planned) keeps every committed epoch: the
        # tables and the snapshot are brought up to them and committed before the bench exits.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        tables(f"stopped by {stop}", force_snapshot=True)
        print(f"lpfast bench: stopped by {stop}; continue with --continue {runs}", flush=True)
        raise SystemExit(128 + stop.signum) from None
    finished = runs / FINISHED_FILE
    if finished.exists():
        print(f"lpfast bench: {runs} finished before; its records are in {args.out / 'records.jsonl'}", flush=True)
        return
    records = collect(args, runs, rows, walls, stamp)
    with open(args.out / "records.jsonl", "a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    finished.touch()
    print(f"appended {len(rows)} records to {args.out / 'records.jsonl'}", flush=True)
    files = [args.out / "records.jsonl", *(snapshot.take(force=True) if snapshot is not None else [])]
    if args.commit_results:
        commit_results(files, f"bench {args.preset} {args.model} on {args.dataset}: {args.epochs} epochs done (invocation {stamp}), records")

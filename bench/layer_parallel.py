"""Layer-parallel training against serial backprop at the same epoch budget.

Presets: ``parallel`` (issue: layer-parallel phase) compares the parallel phase alone, penalty
and AL with K workers, against serial backprop with 1 and K threads; ``sph`` (issue: hybrid and
DS filters) compares penalty+SPH and AL+SPH with K workers, with and without DS (s=2, bfloat16
wire), against serial backprop with K threads, each with the data set's usual augmentation.

Runs every configuration through the real CLI (``lpfast train``; the K-worker rows through
``torchrun``), one epoch at a time in turn (A B C ... A B C ...) using ``--pause-after 1`` and
``--resume``, so drift of a shared machine's speed hits every row alike. After every round it
rewrites one JSON record per configuration and a markdown table (medians of per-epoch times,
ratios to the first row, total training time, bytes sent).

    python bench/layer_parallel.py --preset parallel --dataset mnist --epochs 3
    python bench/layer_parallel.py --preset sph --dataset mnist --epochs 3 --parallel-epochs 2
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
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def configurations(preset: str, workers: int, parallel_epochs: int, micro_batches: int) -> dict[str, tuple[list[str], int, int]]:
    """name -> (extra CLI options, torchrun workers (0 = plain process), threads per process)."""
    parallel = ["--stages", str(workers)]
    if preset == "sph":
        sph = [*parallel, "--parallel-epochs", str(parallel_epochs), "--micro-batches", str(micro_batches)]
        ds = ["--ds-factor", "2", "--wire-dtype", "bfloat16"]
        return {
            f"serial, {workers} threads": ([], 0, workers),
            f"penalty+SPH K={workers}": (["--method", "penalty", *sph], workers, 1),
            f"al+SPH K={workers}": (["--method", "al", *sph], workers, 1),
            f"penalty+SPH K={workers}, DS s=2 bf16": (["--method", "penalty", *sph, *ds], workers, 1),
            f"al+SPH K={workers}, DS s=2 bf16": (["--method", "al", *sph, *ds], workers, 1),
        }
    return {
        "serial, 1 thread": ([], 0, 1),
        f"serial, {workers} threads": ([], 0, workers),
        f"penalty K={workers}, {workers} workers x 1 thread": (["--method", "penalty", *parallel], workers, 1),
        f"al K={workers}, {workers} workers x 1 thread": (["--method", "al", *parallel], workers, 1),
        f"penalty K={workers}, regression lr x0.1, {workers} workers x 1 thread": (
            ["--method", "penalty", "--regression-lr-scale", "0.1", *parallel], workers, 1),
    }


def command(options: list[str], workers: int, threads: int, common: list[str], out: Path, resume: bool) -> list[str]:
    launcher = [sys.executable, "-m", "lpfast"]
    if workers:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(workers), "--master-port", "29533", "-m", "lpfast"]
    return [*launcher, "train", *common, *options, "--threads", str(threads), "--out", str(out), "--pause-after", "1", *(["--resume"] if resume else [])]


def write_results(args, name, runs, configs, common, walls) -> None:
    records = []
    for i, row in enumerate(configs):
        metrics_file = runs / f"run{i}" / "metrics.jsonl"
        if not metrics_file.exists():
            continue
        metrics = [json.loads(line) for line in metrics_file.read_text().splitlines()]
        if not metrics:
            continue
        records.append({
            "name": row, "command": " ".join(command(*configs[row], common, Path(f"run{i}"), False)[1:]),
            "phase": [m.get("phase", "serial") for m in metrics],
            "epoch_time_s": [m["epoch_time_s"] for m in metrics], "median_epoch_time_s": statistics.median(m["epoch_time_s"] for m in metrics),
            "train_time_s": sum(m["epoch_time_s"] for m in metrics),
            "process_wall_s": walls[row][: len(metrics)], "test_acc": [m["test_acc"] for m in metrics], "final_test_acc": metrics[-1]["test_acc"],
            "violation": [m.get("violation") for m in metrics], "beta": [m.get("beta") for m in metrics],
            "bytes_sent": sum(sum(m.get("bytes_forward") or [0]) + sum(m.get("bytes_backward") or [0]) for m in metrics),
            "aux_bytes_per_cut": next((m["aux_bytes"] for m in metrics if m.get("aux_bytes")), None),
            "stage_time_s": [m.get("stage_time_s") for m in metrics],
        })
    base = records[0]["median_epoch_time_s"]
    base_total = records[0]["train_time_s"]
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}
    result = {"benchmark": name, "args": {k: str(v) for k, v in vars(args).items()}, "machine": machine, "records": records}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{name}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    epochs_done = min(len(r["epoch_time_s"]) for r in records)
    lines = [
        f"# {args.preset}: {args.model} on {args.dataset}, {epochs_done}/{args.epochs} epochs, batch {args.batch_size}",
        "", f"Machine: {machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}. "
        "Epochs of all rows interleaved. Times are the training loops (no evaluation, no λ initialisation); "
        "bytes are those sent between stages in training steps, both directions.", "",
        "| configuration | final test acc (%) | median epoch (s) | epoch speed vs first row | training time (s) | total vs first row | bytes sent | last parallel-epoch violation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        violation = next((v for v in reversed(r["violation"]) if v), None)
        lines.append(
            f"| {r['name']} | {r['final_test_acc']:.2f} | {r['median_epoch_time_s']:.1f} | {base / r['median_epoch_time_s']:.2f}x | "
            f"{r['train_time_s']:.0f} | {base_total / r['train_time_s']:.2f}x | {r['bytes_sent'] / 1e9:.2f} GB | "
            f"{'' if violation is None else ' '.join(f'{v:.4f}' for v in violation)} |"
        )
    md_path = args.out / f"{name}.md"
    md_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {json_path} and {md_path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist_resnet")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", choices=("parallel", "sph"), default="parallel")
    parser.add_argument("--parallel-epochs", type=int, default=2, help="sph preset: parallel epochs of the budget")
    parser.add_argument("--micro-batches", type=int, default=4, help="sph preset: micro-batches of the serial phase's pipeline")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{args.preset}-{args.model}-{args.dataset}"
    runs = args.out / f"{name}-{stamp}"
    common = ["--model", args.model, "--dataset", args.dataset, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    if args.dataset != "embedded":
        common += ["--data-dir", args.data_dir]
    configs = configurations(args.preset, args.workers, args.parallel_epochs, args.micro_batches)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    walls: dict[str, list[float]] = {row: [] for row in configs}
    for epoch in range(args.epochs):
        for i, (row, (options, workers, threads)) in enumerate(configs.items()):
            cmd = command(options, workers, threads, common, runs / f"run{i}", resume=epoch > 0)
            print(f"[epoch {epoch + 1}/{args.epochs}] {row}: {' '.join(cmd[1:])}", flush=True)
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, cwd=ROOT)
            walls[row].append(time.perf_counter() - start)
        write_results(args, name, runs, configs, common, walls)


if __name__ == "__main__":
    main()

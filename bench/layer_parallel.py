"""Layer-parallel phase against serial backprop: accuracy after the same epochs, wall time per epoch.

Runs every configuration through the real CLI (``lpfast train``; the K-worker rows through
``torchrun``), one epoch at a time in turn (A B C ... A B C ...) using ``--pause-after 1`` and
``--resume``, so drift of a shared machine's speed hits every row alike. Writes one JSON record per
configuration and a markdown table (medians of the per-epoch times, ratios to serial 1 thread).

    python bench/layer_parallel.py --dataset mnist --data-dir ../shared/data --epochs 3
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


def configurations(workers: int) -> dict[str, tuple[list[str], int, int]]:
    """name -> (extra CLI options, torchrun workers (0 = plain process), threads per process)."""
    parallel = ["--stages", str(workers)]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist_resnet")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = args.out / f"layer_parallel-{args.dataset}-{stamp}"
    common = ["--model", args.model, "--dataset", args.dataset, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    if args.dataset != "embedded":
        common += ["--data-dir", args.data_dir]
    configs = configurations(args.workers)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    walls: dict[str, list[float]] = {name: [] for name in configs}
    for epoch in range(args.epochs):
        for i, (name, (options, workers, threads)) in enumerate(configs.items()):
            cmd = command(options, workers, threads, common, runs / f"run{i}", resume=epoch > 0)
            print(f"[epoch {epoch + 1}/{args.epochs}] {name}: {' '.join(cmd[1:])}", flush=True)
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, cwd=ROOT)
            walls[name].append(time.perf_counter() - start)

    records = []
    for i, name in enumerate(configs):
        metrics = [json.loads(line) for line in (runs / f"run{i}" / "metrics.jsonl").read_text().splitlines()]
        records.append({
            "name": name, "command": " ".join(command(*configs[name], common, Path(f"run{i}"), False)[1:]),
            "epoch_time_s": [m["epoch_time_s"] for m in metrics], "median_epoch_time_s": statistics.median(m["epoch_time_s"] for m in metrics),
            "process_wall_s": walls[name], "test_acc": [m["test_acc"] for m in metrics], "final_test_acc": metrics[-1]["test_acc"],
            "violation": [m.get("violation") for m in metrics], "beta": [m.get("beta") for m in metrics],
            "bytes_forward": [m.get("bytes_forward") for m in metrics], "aux_bytes_per_cut": metrics[-1].get("aux_bytes"),
            "stage_time_s": [m.get("stage_time_s") for m in metrics],
        })
    base = records[0]["median_epoch_time_s"]
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}
    result = {"benchmark": "layer_parallel", "args": {k: str(v) for k, v in vars(args).items()}, "machine": machine, "records": records}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"layer_parallel-{args.dataset}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Layer-parallel phase vs serial backprop: {args.model} on {args.dataset}, {args.epochs} epochs, batch {args.batch_size}",
        "", f"Machine: {machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}. "
        "Epochs of all rows interleaved; epoch time is the training loop (no evaluation, no λ initialisation).", "",
        "| configuration | final test acc (%) | median epoch time (s) | vs serial 1 thread | last-epoch violation |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        violation = r["violation"][-1]
        lines.append(f"| {r['name']} | {r['final_test_acc']:.2f} | {r['median_epoch_time_s']:.1f} | "
                     f"{base / r['median_epoch_time_s']:.2f}x | {'' if violation is None else ' '.join(f'{v:.4f}' for v in violation)} |")
    md_path = args.out / f"layer_parallel-{args.dataset}.md"
    md_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()

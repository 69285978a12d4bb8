"""``python -m lpfast.demo``: the main job on the embedded MNIST subset, side by side with backprop.

Trains mnist_resnet twice on the same data and epochs: layer-parallel (the serial-parallel hybrid,
K=2 stages on 2 torchrun workers: parallel epochs first, then backprop through the stages), and
plain backprop in one process. Each run prints its epochs; a table compares them at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lpfast.checkpoint import METRICS_FILE


def run(label: str, command: list[str], out: Path) -> tuple[list[dict], float]:
    """Runs one ``lpfast train``; returns its metrics records and wall time."""
    print(f"\n== {label}\n$ {' '.join('python' if part == sys.executable else part for part in command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()], wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lpfast.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--parallel-epochs", type=int, default=2)
    parser.add_argument("--serial-epochs", type=int, default=1)
    args = parser.parse_args(argv)
    epochs = args.parallel_epochs + args.serial_epochs
    train = ["-m", "lpfast", "train", "--dataset", "embedded", "--epochs", str(epochs)]
    hybrid_out, backprop_out = args.out / "layer-parallel", args.out / "backprop"
    hybrid, hybrid_wall = run(
        f"layer-parallel: {args.parallel_epochs} parallel + {args.serial_epochs} serial epochs, 2 stages on 2 workers (one core each)",
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *train, "--method", "penalty",
         "--stages", "2", "--parallel-epochs", str(args.parallel_epochs), "--out", str(hybrid_out)], hybrid_out)
    backprop, backprop_wall = run(f"backprop: {epochs} epochs, one process with 2 threads",
                                  [sys.executable, *train, "--threads", "2", "--out", str(backprop_out)], backprop_out)

    violation = next((m["violation"] for m in reversed(hybrid) if m.get("violation")), None)
    sent = sum(sum(m["bytes_forward"]) + sum(m["bytes_backward"]) for m in hybrid)
    shown_violation = "none: λ is the output itself (pipelined λ)" if violation is None else " ".join(f"{v:.3f}" for v in violation)
    rows = [("layer-parallel (penalty + SPH, K=2)", hybrid[-1]["test_acc"], hybrid_wall, shown_violation,
             f"{sent / 1e9:.2f} GB"),
            ("backprop", backprop[-1]["test_acc"], backprop_wall, "-", "-")]
    print(f"\nmnist_resnet on the embedded MNIST subset, {epochs} epochs each (run folders in {args.out}):\n")
    print("| run | test accuracy | wall time | constraint violation | bytes between stages |")
    print("|---|---|---|---|---|")
    for name, accuracy, wall, viol, nbytes in rows:
        print(f"| {name} | {accuracy:.2f}% | {wall:.0f} s | {viol} | {nbytes} |")
    print("\nThe violation is ‖φ(λ) − λ‖/‖λ‖ at the cut after the last parallel epoch (stored λ, --aux store); the serial "
          "epochs then make the network exact. Wall times of two runs one after the other drift with the machine's load: bench/RESULTS.md compares "
          "speeds in interleaved runs.")


if __name__ == "__main__":
    main()

"""Microbenchmarks: each fused lpfast op against the eager PyTorch sequence it replaces.

Sizes are real cut shapes (ResNet-56 and WRN-28-10 on CIFAR, batch 128 and 256). Fused and eager
runs alternate (A B A B ...) so a shared machine's drift hits both alike; the table reports medians,
the speed-up and the fused op's achieved bandwidth (the bytes it must read and write, divided by
its time). Writes bench/results/kernels-<device>.{json,md}.

    python bench/kernels.py                  # CPU, all sizes
    python bench/kernels.py --device cuda    # on a GPU
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lpfast import ops

ROOT = Path(__file__).resolve().parents[1]
CUTS = {
    "resnet56 16x32x32": (16, 32, 32),
    "resnet56 32x16x16": (32, 16, 16),
    "resnet56 64x8x8": (64, 8, 8),
    "wrn28-10 160x32x32": (160, 32, 32),
    "wrn28-10 320x16x16": (320, 16, 16),
    "wrn28-10 640x8x8": (640, 8, 8),
}


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def cases(shape: tuple[int, ...], device: torch.device):
    """(op name, fused callable, eager callable, bytes the fused op moves)."""
    out, lam, mu, grad = (torch.randn(shape, device=device) for _ in range(4))
    n4 = out.numel() * 4
    lam_a, mu_a = lam.clone(), mu.clone()
    yield ("penalty_residual (AL)", lambda: ops.penalty_residual(out, lam, mu, beta=4.0),
           lambda: ops.penalty_residual_reference(out, lam, mu, beta=4.0), 4 * n4)
    yield ("aux_update_ (AL)", lambda: ops.aux_update_(lam_a, mu_a, out, grad, beta=4.0, eta=1.0, update_mu=True),
           lambda: ops.aux_update_reference(lam, mu, out, grad, beta=4.0, eta=1.0, update_mu=True), 6 * n4)
    bf16_quarter = out.numel() // 4 * 2
    yield ("ds_encode s=2 bf16", lambda: ops.ds_encode(out, 2, torch.bfloat16),
           lambda: ops.ds_encode_reference(out, 2, torch.bfloat16), n4 + bf16_quarter)
    coarse = ops.ds_encode(out, 2, torch.bfloat16)
    yield ("ds_decode s=2 nearest", lambda: ops.ds_decode(coarse, 2, "nearest", torch.float32),
           lambda: ops.ds_decode_reference(coarse, 2, "nearest", torch.float32), bf16_quarter + n4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for batch in args.batches:
        for cut, chw in CUTS.items():
            for name, fused, eager, nbytes in cases((batch, *chw), device):
                fused(), eager()  # warm-up
                times = {"fused": [], "eager": []}
                for _ in range(args.repeats):
                    times["fused"].append(timed(fused, device))
                    times["eager"].append(timed(eager, device))
                f, e = statistics.median(times["fused"]), statistics.median(times["eager"])
                rows.append({"op": name, "cut": cut, "batch": batch, "fused_ms": f * 1e3, "eager_ms": e * 1e3,
                             "speedup": e / f, "fused_GBps": nbytes / f / 1e9, "bytes": nbytes})
                print(f"{name:24s} {cut:20s} batch {batch:4d}: fused {f * 1e3:8.2f} ms  eager {e * 1e3:8.2f} ms  "
                      f"{e / f:5.2f}x  {nbytes / f / 1e9:6.1f} GB/s", flush=True)
    machine = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"kernels-{device.type}"
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "repeats": args.repeats, "rows": rows}, indent=1) + "\n")
    lines = [f"# Fused ops vs eager PyTorch on {machine['device']} ({machine['threads']} threads, torch {machine['torch']})", "",
             f"Medians of {args.repeats} alternating runs. GB/s: bytes the fused op must read and write / its time.", "",
             "| op | cut | batch | fused (ms) | eager (ms) | speed-up | fused GB/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['cut']} | {r['batch']} | {r['fused_ms']:.2f} | {r['eager_ms']:.2f} | {r['speedup']:.2f}x | {r['fused_GBps']:.1f} |")
    for op in dict.fromkeys(r["op"] for r in rows):
        speedups = [r["speedup"] for r in rows if r["op"] == op]
        lines.append(f"\n{op}: median speed-up {statistics.median(speedups):.2f}x over {len(speedups)} sizes")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()

"""Microbenchmarks: each fused lpfast op against the eager PyTorch sequence it replaces.

Sizes are real cut shapes (ResNet-56 and WRN-28-10 on CIFAR, batch 128 and 256; the per-cut ops in
the channels-last layout the models train in) and CIFAR image batches for the augmentation, whose
baseline is torchvision's per-sample transforms (``transforms.v2`` on uint8 tensors, stacked).
Fused and baseline runs alternate (A B A B ...) so a shared machine's drift hits both alike; the
table reports medians, the speed-up and the fused op's achieved bandwidth (the bytes it must read
and write, divided by its time), also as a fraction of the device's measured copy bandwidth.
Writes bench/results/kernels-<device>.{json,md}.

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
from lpfast.augment import prepare

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


def copy_bandwidth(device: torch.device, repeats: int, nbytes: int = 1 << 28) -> float:
    """The device's copy bandwidth (GB/s, bytes read + written): a 256 MiB copy between two
    preallocated buffers, median of ``repeats``; the ceiling a per-element op can approach."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * nbytes / statistics.median(timed(lambda: dst.copy_(src), device) for _ in range(repeats)) / 1e9


def cut_cases(shape: tuple[int, ...], device: torch.device):
    """(op name, fused callable, eager callable, bytes the fused op moves) on one cut's batch."""
    cl = torch.channels_last
    out, lam, mu, grad = (torch.randn(shape, device=device).contiguous(memory_format=cl) for _ in range(4))
    n4 = out.numel() * 4
    lam_a, mu_a = lam.clone(), mu.clone()
    yield ("penalty_residual (AL)", lambda: ops.penalty_residual(out, lam, mu, beta=4.0),
           lambda: ops.penalty_residual_reference(out, lam, mu, beta=4.0), 4 * n4)
    yield ("aux_update_ (AL)", lambda: ops.aux_update_(lam_a, mu_a, out, grad, beta=4.0, eta=1.0, update_mu=True),
           lambda: ops.aux_update_reference(lam, mu, out, grad, beta=4.0, eta=1.0, update_mu=True), 6 * n4)
    bf16_quarter = out.numel() // 4 * 2
    for layout, x in (("channels-last", out), ("contiguous", out.contiguous())):
        yield (f"ds_encode s=2 bf16, {layout}", lambda x=x: ops.ds_encode(x, 2, torch.bfloat16),
               lambda x=x: ops.ds_encode_reference(x, 2, torch.bfloat16), n4 + bf16_quarter)
    coarse = ops.ds_encode(out, 2, torch.bfloat16)
    yield ("ds_decode s=2 nearest", lambda: ops.ds_decode(coarse, 2, "nearest", torch.float32),
           lambda: ops.ds_decode_reference(coarse, 2, "nearest", torch.float32), bf16_quarter + n4)
    # A bfloat16 store of a CIFAR-10-sized training set (50 000 rows), batch rows at random.
    rows = 50_000 if shape[1] * shape[2] * shape[3] <= 16 * 32 * 32 else 4_000
    store = torch.zeros((rows, *shape[1:]), dtype=torch.bfloat16, device=device).contiguous(memory_format=cl)
    idx = torch.randperm(rows, device=device)[: shape[0]]
    yield ("aux_gather bf16->f32", lambda: ops.aux_gather(store, idx, torch.float32),
           lambda: ops.aux_gather_reference(store, idx, torch.float32), out.numel() * 6)
    yield ("aux_scatter_ f32->bf16", lambda: ops.aux_scatter_(store, idx, out),
           lambda: store.index_copy_(0, idx, out.to(torch.bfloat16)), out.numel() * 6)


def augment_cases(batch: int, device: torch.device):
    """CIFAR augmentation (pad 4, random crop, flip, normalise) of a uint8 batch."""
    from torchvision.transforms import v2

    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    per_sample = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                             v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    rng = torch.Generator().manual_seed(0)
    yield ("crop_flip_normalise vs torchvision per-sample",
           lambda: prepare(images, mean=mean, std=std, padding=4, generator=rng),
           lambda: torch.stack([per_sample(img) for img in images]), images.numel() * 5)


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
    copy_GBps = copy_bandwidth(device, args.repeats)
    print(f"copy bandwidth {copy_GBps:.1f} GB/s", flush=True)
    rows = []
    suites = [("cifar images 3x32x32", batch, augment_cases(batch, device)) for batch in args.batches]
    suites += [(cut, batch, cut_cases((batch, *chw), device)) for batch in args.batches for cut, chw in CUTS.items()]
    for cut, batch, cases in suites:
        for name, fused, eager, nbytes in cases:
            fused(), eager()  # warm-up
            times = {"fused": [], "eager": []}
            for _ in range(args.repeats):
                times["fused"].append(timed(fused, device))
                times["eager"].append(timed(eager, device))
            f, e = statistics.median(times["fused"]), statistics.median(times["eager"])
            rows.append({"op": name, "cut": cut, "batch": batch, "fused_ms": f * 1e3, "eager_ms": e * 1e3,
                         "speedup": e / f, "fused_GBps": nbytes / f / 1e9, "copy_fraction": nbytes / f / 1e9 / copy_GBps, "bytes": nbytes})
            print(f"{name:24s} {cut:20s} batch {batch:4d}: fused {f * 1e3:8.2f} ms  eager {e * 1e3:8.2f} ms  "
                  f"{e / f:5.2f}x  {nbytes / f / 1e9:6.1f} GB/s", flush=True)
    machine = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"kernels-{device.type}"
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "repeats": args.repeats, "copy_GBps": copy_GBps, "rows": rows}, indent=1) + "\n")
    lines = [f"# Fused ops vs eager PyTorch (and torchvision) on {machine['device']} ({machine['threads']} threads, torch {machine['torch']})", "",
             f"Medians of {args.repeats} alternating runs. GB/s: bytes the fused op must read and write / its time. "
             f"Copy bandwidth of this device, measured the same way (256 MiB between preallocated buffers): {copy_GBps:.1f} GB/s; "
             "the fused ops allocate their outputs, whose first touch (page faults on a CPU) counts in their time.", "",
             "| op | size | batch | fused (ms) | baseline (ms) | speed-up | fused GB/s | of copy bandwidth |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['cut']} | {r['batch']} | {r['fused_ms']:.2f} | {r['eager_ms']:.2f} | {r['speedup']:.2f}x | "
                     f"{r['fused_GBps']:.1f} | {100 * r['copy_fraction']:.0f}% |")
    for op in dict.fromkeys(r["op"] for r in rows):
        mine = [r for r in rows if r["op"] == op]
        lines.append(f"\n{op}: median speed-up {statistics.median(r['speedup'] for r in mine):.2f}x over {len(mine)} sizes; "
                     f"of copy bandwidth: median {100 * statistics.median(r['copy_fraction'] for r in mine):.0f}%, "
                     f"lowest {100 * min(r['copy_fraction'] for r in mine):.0f}%")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()

"""Microbenchmarks: each fused lpfast op against the eager PyTorch sequence it replaces.

Sizes are real cut shapes (ResNet-56 and WRN-28-10 on CIFAR, batch 128 and 256; the per-cut ops in
the channels-last layout the models train in) and CIFAR image batches for the augmentation, whose
baseline is torchvision's per-sample transforms (``transforms.v2`` on uint8 tensors, stacked).
Fused and baseline runs alternate (A B A B ...) so a shared machine's drift hits both alike; the
table reports medians, the speed-up and the fused op's achieved bandwidth (the bytes it must read
and write, divided by its time), also as a fraction of the device's measured copy bandwidth.

Clocks. On a CPU every time is host wall time of one call. On a GPU the per-cut ops are timed as
GPU time without host overhead: a CUDA graph of several calls, replayed between two events, for
the fused op and its baseline alike (host launch costs would otherwise swamp the smaller cuts).
The augmentation's baseline is per-sample host work, so that comparison stays in wall time (the
device synchronised around each call), and its bandwidth comes from the fused kernel's own GPU
time. Writes <out>/kernels-<device>.{json,md}.

    python bench/kernels.py                  # CPU, all sizes
    python bench/kernels.py --device cuda    # on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# PyTorch's CPU allocator backs tensors of 2 MiB and more with transparent huge pages when this is
# set (read at its first allocation, so before torch loads). Without it, an output above glibc's
# mmap threshold (32 MiB: the WRN-28-10 cuts) is faulted in 4 KiB at a time on every call, which
# costs more than the op itself and would hide both sides' kernels behind the kernel's page faults.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

from lpfast import ops  # noqa: E402
from lpfast.augment import draw_crop_flip, prepare  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUTS = {
    "resnet56 16x32x32": (16, 32, 32),
    "resnet56 32x16x16": (32, 16, 16),
    "resnet56 64x8x8": (64, 8, 8),
    "wrn28-10 160x32x32": (160, 32, 32),
    "wrn28-10 320x16x16": (320, 16, 16),
    "wrn28-10 640x8x8": (640, 8, 8),
}
GRAPH_CALLS = 20  # calls per CUDA graph: enough that one replay's launch cost is negligible


@dataclass
class Case:
    name: str
    fused: Callable[[], object]
    baseline: Callable[[], object]
    nbytes: int  # what the fused op must read and write
    kernel: Callable[[], object] | None = None  # the fused op's device work alone, when `fused` also does host work
    wall_clock: bool = False  # the baseline is host work: compare in wall time on every device


Timer = Callable[[], float]


def wall_timer(fn: Callable[[], object], device: torch.device) -> Timer:
    """Seconds of host wall time for one call, the device synchronised before and after."""
    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start
    return run


def graph_timer(fn: Callable[[], object], device: torch.device) -> Timer:
    """Seconds of GPU time per call without host overhead: GRAPH_CALLS calls captured in one CUDA
    graph (warmed up first on the capture stream), each timing one replay between two events."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(GRAPH_CALLS):
            fn()
    graph.replay()

    def run() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / GRAPH_CALLS
    return run


def timer(fn: Callable[[], object], device: torch.device, *, wall: bool) -> Timer:
    if device.type == "cuda" and not wall:
        return graph_timer(fn, device)
    fn()  # warm-up
    return wall_timer(fn, device)


def copy_bandwidth(device: torch.device, repeats: int, nbytes: int = 1 << 28) -> float:
    """The device's copy bandwidth (GB/s, bytes read + written): a 256 MiB copy between two
    preallocated buffers, timed by the per-cut ops' clock, median of ``repeats``; the ceiling a
    per-element op can approach."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    run = timer(lambda: dst.copy_(src), device, wall=False)
    return 2 * nbytes / statistics.median(run() for _ in range(repeats)) / 1e9


def cut_cases(shape: tuple[int, ...], device: torch.device) -> Iterator[Case]:
    """The per-cut ops on one cut's batch, channels-last."""
    cl = torch.channels_last
    out, lam, mu, grad = (torch.randn(shape, device=device).contiguous(memory_format=cl) for _ in range(4))
    n4 = out.numel() * 4
    lam_a, mu_a = lam.clone(), mu.clone()
    yield Case("penalty_residual (AL)", lambda: ops.penalty_residual(out, lam, mu, beta=4.0),
               lambda: ops.penalty_residual_reference(out, lam, mu, beta=4.0), 4 * n4)
    yield Case("aux_update_ (AL)", lambda: ops.aux_update_(lam_a, mu_a, out, grad, beta=4.0, eta=1.0, update_mu=True),
               lambda: ops.aux_update_reference(lam, mu, out, grad, beta=4.0, eta=1.0, update_mu=True), 6 * n4)
    bf16_quarter = out.numel() // 4 * 2
    for layout, x in (("channels-last", out), ("contiguous", out.contiguous())):
        yield Case(f"ds_encode s=2 bf16, {layout}", lambda x=x: ops.ds_encode(x, 2, torch.bfloat16),
                   lambda x=x: ops.ds_encode_reference(x, 2, torch.bfloat16), n4 + bf16_quarter)
    coarse = ops.ds_encode(out, 2, torch.bfloat16)
    yield Case("ds_decode s=2 nearest", lambda: ops.ds_decode(coarse, 2, "nearest", torch.float32),
               lambda: ops.ds_decode_reference(coarse, 2, "nearest", torch.float32), bf16_quarter + n4)
    # A bfloat16 store of a CIFAR-10-sized training set (50 000 rows), batch rows at random.
    rows = 50_000 if shape[1] * shape[2] * shape[3] <= 16 * 32 * 32 else 4_000
    store = torch.zeros((rows, *shape[1:]), dtype=torch.bfloat16, device=device).contiguous(memory_format=cl)
    idx = torch.randperm(rows, device=device)[: shape[0]]
    yield Case("aux_gather bf16->f32", lambda: ops.aux_gather(store, idx, torch.float32),
               lambda: ops.aux_gather_reference(store, idx, torch.float32), out.numel() * 6)
    yield Case("aux_scatter_ f32->bf16", lambda: ops.aux_scatter_(store, idx, out),
               lambda: store.index_copy_(0, idx, out.to(torch.bfloat16)), out.numel() * 6)


def augment_cases(batch: int, device: torch.device) -> Iterator[Case]:
    """CIFAR augmentation (pad 4, random crop, flip, normalise) of a uint8 batch: what a training
    step calls (random draws, their copy to the device, the fused op) against torchvision."""
    from torchvision.transforms import v2

    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    per_sample = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                             v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    rng = torch.Generator().manual_seed(0)
    offsets, flips = (t.to(device) for t in draw_crop_flip(batch, 4, rng))
    yield Case("crop_flip_normalise vs torchvision per-sample",
               lambda: prepare(images, mean=mean, std=std, padding=4, generator=rng),
               lambda: torch.stack([per_sample(img) for img in images]), images.numel() * 5,
               kernel=lambda: ops.crop_flip_normalise(images, offsets, flips, padding=4, mean=mean, std=std),
               wall_clock=True)


def measure(case: Case, device: torch.device, repeats: int) -> dict:
    """Medians of `repeats` alternating fused/baseline timings, and the fused op's bandwidth."""
    fused = timer(case.fused, device, wall=case.wall_clock)
    baseline = timer(case.baseline, device, wall=case.wall_clock)
    times: dict[str, list[float]] = {"fused": [], "baseline": []}
    for _ in range(repeats):
        times["fused"].append(fused())
        times["baseline"].append(baseline())
    f, b = statistics.median(times["fused"]), statistics.median(times["baseline"])
    # The bandwidth is the fused kernel's: on a GPU its own GPU time when the comparison was in wall time.
    kernel_s = f
    if device.type == "cuda" and case.wall_clock:
        kernel = timer(case.kernel or case.fused, device, wall=False)
        kernel_s = statistics.median(kernel() for _ in range(repeats))
    clock = "wall" if device.type == "cpu" or case.wall_clock else "gpu"
    return {"fused_ms": f * 1e3, "eager_ms": b * 1e3, "speedup": b / f, "clock": clock,
            "kernel_ms": kernel_s * 1e3, "fused_GBps": case.nbytes / kernel_s / 1e9, "bytes": case.nbytes}


def write_report(stem: Path, machine: dict, repeats: int, copy_GBps: float, rows: list[dict]) -> None:
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "repeats": repeats, "copy_GBps": copy_GBps, "rows": rows}, indent=1) + "\n")
    gpu = machine["device_type"] == "cuda"
    clocks = ("Clock `gpu`: GPU time per call from a replayed CUDA graph of the op (no host overhead), for both sides; "
              "`wall`: host wall time per call, device synchronised around it; GB/s then from the fused kernel's GPU time."
              if gpu else "Host wall time per call; the ops allocate their outputs, whose first touch (page faults) counts in their time, "
              f"with PyTorch's huge-page allocation THP_MEM_ALLOC_ENABLE={machine['thp_mem_alloc']}.")
    lines = [f"# Fused ops vs eager PyTorch (and torchvision) on {machine['device']} ({machine['threads']} threads, torch {machine['torch']})", "",
             f"Medians of {repeats} alternating runs. GB/s: bytes the fused op must read and write / its time. "
             f"Copy bandwidth of this device, measured the same way (256 MiB between preallocated buffers): {copy_GBps:.1f} GB/s. {clocks}", "",
             "| op | size | batch | clock | fused (ms) | baseline (ms) | speed-up | fused GB/s | of copy bandwidth |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['cut']} | {r['batch']} | {r['clock']} | {r['fused_ms']:.3f} | {r['eager_ms']:.3f} | "
                     f"{r['speedup']:.2f}x | {r['fused_GBps']:.1f} | {100 * r['copy_fraction']:.0f}% |")
    for op in dict.fromkeys(r["op"] for r in rows):
        mine = [r for r in rows if r["op"] == op]
        lines.append(f"\n{op}: median speed-up {statistics.median(r['speedup'] for r in mine):.2f}x over {len(mine)} sizes; "
                     f"of copy bandwidth: median {100 * statistics.median(r['copy_fraction'] for r in mine):.0f}%, "
                     f"lowest {100 * min(r['copy_fraction'] for r in mine):.0f}%")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--cuts", nargs="+", choices=list(CUTS), default=list(CUTS), metavar="CUT",
                        help=f"cut sizes to run (default: all of {', '.join(CUTS)})")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    copy_GBps = copy_bandwidth(device, args.repeats)
    print(f"copy bandwidth {copy_GBps:.1f} GB/s", flush=True)
    suites = [("cifar images 3x32x32", batch, augment_cases(batch, device)) for batch in args.batches]
    suites += [(cut, batch, cut_cases((batch, *CUTS[cut]), device)) for batch in args.batches for cut in args.cuts]
    rows = []
    for cut, batch, cases in suites:
        for case in cases:
            r = {"op": case.name, "cut": cut, "batch": batch, **measure(case, device, args.repeats)}
            r["copy_fraction"] = r["fused_GBps"] / copy_GBps
            rows.append(r)
            print(f"{case.name:24s} {cut:20s} batch {batch:4d} ({r['clock']}): fused {r['fused_ms']:8.3f} ms  "
                  f"baseline {r['eager_ms']:8.3f} ms  {r['speedup']:5.2f}x  {r['fused_GBps']:6.1f} GB/s", flush=True)
    machine = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "device_type": device.type, "thp_mem_alloc": os.environ["THP_MEM_ALLOC_ENABLE"],
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"kernels-{device.type}"
    write_report(stem, machine, args.repeats, copy_GBps, rows)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()

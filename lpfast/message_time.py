"""Time of one message between two torchrun workers over gloo: what a cut's tensor costs on the
link the workers share (loopback on one machine, a real or shaped link between hosts).

Rank 0 sends a float32 tensor of ``--megabytes``, rank 1 answers with one element; rank 0 writes
the median round trip of ``--repeats`` (after ``--warmup``) as JSON to ``--out``.

    torchrun --nproc-per-node 2 -m lpfast.message_time --megabytes 3.2 --out message.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lpfast.message_time", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=3.2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.megabytes <= 0 or args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--megabytes must be > 0, --repeats >= 1 and --warmup >= 0")
    dist.init_process_group("gloo")
    if dist.get_world_size() != 2:
        raise SystemExit(f"lpfast.message_time runs on exactly 2 workers, got {dist.get_world_size()}")
    rank = dist.get_rank()
    payload, ack = torch.zeros(max(1, int(args.megabytes * 1e6) // 4)), torch.zeros(1)
    times = []
    for i in range(args.warmup + args.repeats):
        dist.barrier()
        start = time.perf_counter()
        if rank == 0:
            dist.send(payload, 1)
            dist.recv(ack, 1)
        else:
            dist.recv(payload, 0)
            dist.send(ack, 0)
        if i >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    if rank == 0:
        args.out.write_text(json.dumps({"bytes": payload.numel() * 4, "median_ms": statistics.median(times), "times_ms": times}) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Run folders: config, metrics log and checkpoints, written so that a crash never leaves a torn file.

A checkpoint is one file per rank and epoch, ``checkpoint-rank{r}-epoch{e}.pt`` (``...-step{s}.pt``
for one taken ``s`` steps into epoch ``e + 1``), and it counts only once ``committed.json`` names it: every rank writes its file, the ranks meet at a barrier,
rank 0 then rewrites the marker, and only after a second barrier do the ranks delete their files of
earlier epochs. A run stopped anywhere in between resumes from the epoch every rank committed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
COMMIT_FILE = "committed.json"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk keeps no torn half-file
        raise


def write_config(run_dir: Path, config: dict) -> None:
    tmp = run_dir / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run_dir / CONFIG_FILE)


def read_config(run_dir: Path) -> dict:
    return json.loads((run_dir / CONFIG_FILE).read_text())


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drops records of epochs after ``last_epoch`` (written after the checkpoint a resume starts from)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("epoch", 0) <= last_epoch]
    tmp = path.with_name(f".{METRICS_FILE}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def rank_checkpoint(run_dir: Path, rank: int, epoch: int, step: int = 0) -> Path:
    """Rank ``rank``'s checkpoint after ``epoch`` completed epochs and ``step`` steps of the next."""
    return run_dir / f"checkpoint-rank{rank}-epoch{epoch}{f'-step{step}' if step else ''}.pt"


def committed(run_dir: Path) -> dict | None:
    """The last committed checkpoint, ``{"epoch": e, "step": s, "world": w}``, or None."""
    path = run_dir / COMMIT_FILE
    return {"step": 0, **json.loads(path.read_text())} if path.exists() else None


def commit(run_dir: Path, epoch: int, step: int, world: int) -> None:
    """Names (``epoch``, ``step``) the checkpoint to resume from (rank 0, after every rank wrote its file)."""
    tmp = run_dir / f".{COMMIT_FILE}.tmp"
    tmp.write_text(json.dumps({"epoch": epoch, "step": step, "world": world}) + "\n")
    with open(tmp) as f:
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / COMMIT_FILE)


def remove_uncommitted(run_dir: Path, rank: int, keep: Path) -> None:
    """Deletes rank ``rank``'s checkpoints but ``keep``."""
    for path in run_dir.glob(f"checkpoint-rank{rank}-epoch*.pt"):
        if path != keep:
            path.unlink(missing_ok=True)

"""Run folders: config, metrics log and checkpoints, written so that a crash never leaves a torn file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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

"""Devices that are a fixed share of a core, for benchmarks of more devices than this machine has cores.

A GPU is one device whatever machine it sits in; on a CPU machine lpfast's benchmarks call a
device one worker with an equal, fixed share of the cores. Four devices on two cores are four
workers each held to half a core: every worker's process in a cgroup of its own (cgroup v1 cpu
controller) whose CFS quota is ``share`` of the period, the workers of one core pinned to it. A
short period (10 ms) keeps a worker that waits on a message from banking its unused time into a
long burst later. Needs root and the cgroup v1 cpu hierarchy at ``/sys/fs/cgroup/cpu``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 10_000


@dataclass(frozen=True)
class Devices:
    """The cgroups of ``count`` devices; device i runs on core ``core(i)``, ``per_core`` to a core."""

    groups: list[Path]
    per_core: int

    def core(self, i: int) -> int:
        return i // self.per_core


@contextmanager
def cpu_quotas(count: int, share: float, *, tag: str | None = None) -> Iterator[Devices]:
    """``count`` devices, each a cgroup allowed ``share`` (0 < share <= 1) of one core per period,
    1/share of them to a core; their processes are moved out and the groups removed afterwards."""
    if not 0 < share <= 1:
        raise ValueError(f"a device's share of a core must be in (0, 1], got {share}")
    per_core = int(1 / share + 1e-9)
    cores = len(os.sched_getaffinity(0))
    if count > per_core * cores:
        raise ValueError(f"{count} devices of {share} core each need {count * share:g} cores; this machine gives {cores}")
    if os.geteuid() != 0 or not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
        raise RuntimeError(f"devices of a fixed share of a core need root and the cgroup v1 cpu controller at {CGROUP_CPU}; "
                           "run the benchmark as root on such a machine, or without --device-share")
    tag = tag or str(os.getpid())
    groups = [CGROUP_CPU / f"lpfast-{tag}-device{i}" for i in range(count)]
    try:
        for group in groups:
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(round(share * PERIOD_US)))
        yield Devices(groups, per_core)
    finally:
        for group in groups:
            if not group.exists():
                continue
            for pid in (group / "cgroup.procs").read_text().split():  # a process left behind goes back to the root
                try:
                    (CGROUP_CPU / "cgroup.procs").write_text(pid)
                except OSError:
                    pass  # it ended meanwhile
            group.rmdir()


def in_group(command: list[str], group: Path) -> list[str]:
    """``command`` run as a member of ``group`` (its children are members too)."""
    return ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh", *command]

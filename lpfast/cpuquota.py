"""Devices that are a fixed share of a core, for benchmarks of more devices than this machine has cores.

A GPU is one device whatever machine it sits in; on a CPU machine lpfast's benchmarks call a
device one worker with an equal, fixed share of the cores. Four devices on two cores are four
workers each held to half a core: every device is a cgroup of its own (cgroup v1 cpu controller),
1/share of them pinned to each core, each with a CFS quota of ``share`` of the period.

A quota alone is not a device. Two devices on one core that wait on each other's messages lend
each other their idle time (the quota only caps each period's total), so DDP's or a pipeline's
waits went unpaid: with a quota alone, K=2 rows ran at 1.89-2.12× one device at half a core, and at
1.64-1.86× at full cores; with the fillers at 1.81-1.83×, against 1.84-1.86× at full cores run right
after (bench/results/narrative.md, 2026-12-07). So every device also holds an idle
filler, a busy loop at ``SCHED_IDLE`` priority that runs only when its worker does not: a device
whose worker waits burns its share as an idle GPU would, and the scheduler's fair share between
the always-busy groups of a core gives each device its share continuously, at a fine grain, with
no throttling (a throttled busy process ran 3-12% below its share). A device without a worker
(the empty places beside the one-device row) is its filler alone, so every device runs on a core
divided the same way. Needs root, ``chrt`` and the cgroup v1 cpu hierarchy at ``/sys/fs/cgroup/cpu``.
"""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000  # the quota is a cap; the fillers' fair share paces the devices


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
    1/share of them to a core, each with its idle filler (the places of the cores they use are all
    filled); the fillers end, the processes are moved out and the groups removed afterwards."""
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
    places = -(-count // per_core) * per_core  # every place on the cores the devices use
    groups = [CGROUP_CPU / f"lpfast-{tag}-device{i}" for i in range(places)]
    devices = Devices(groups[:count], per_core)
    fillers: list[subprocess.Popen] = []
    try:
        for i, group in enumerate(groups):
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(round(share * PERIOD_US)))
            core = str(i // per_core)
            fillers.append(subprocess.Popen(["taskset", "-c", core, *in_group(["chrt", "--idle", "0", "sh", "-c", "while :; do :; done"], group)]))
        deadline = time.monotonic() + 10
        while not all((group / "cgroup.procs").read_text().strip() for group in groups):  # every filler in its group
            if time.monotonic() > deadline or any(filler.poll() is not None for filler in fillers):
                raise RuntimeError(f"the idle fillers of the devices did not start (exit codes {[f.poll() for f in fillers]}); "
                                   "they need taskset and chrt (util-linux)")
            time.sleep(0.01)
        yield devices
    finally:
        for filler in fillers:
            filler.kill()
            filler.wait()
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

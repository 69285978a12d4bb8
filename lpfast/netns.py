"""Two "hosts" on one machine joined by a slow link, for benchmarks of communication cost.

On one machine torchrun workers talk over loopback, where messages are nearly free. This module
puts each of two workers in its own network namespace, joins them with a veth pair whose both
ends are shaped by a token bucket (``tc tbf``) to a given rate, and removes it all afterwards.
Needs root and the ``ip`` and ``tc`` tools (iproute2).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

PREFIX = "lpfast"
SUBNET = "10.213.7"


@dataclass(frozen=True)
class Host:
    """One end of the link: its namespace, interface and address."""

    namespace: str
    interface: str
    address: str

    def wrap(self, command: list[str], cores: list[int] | None = None) -> list[str]:
        """``command`` run inside this host's namespace (pinned to ``cores`` if given), with gloo
        told which interface to use."""
        pin = ["taskset", "-c", ",".join(map(str, cores))] if cores else []
        return ["ip", "netns", "exec", self.namespace, "env", f"GLOO_SOCKET_IFNAME={self.interface}", *pin, *command]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


@contextmanager
def slow_link(rate: str, *, tag: str | None = None) -> Iterator[tuple[Host, Host]]:
    """Yields two hosts joined by a link shaped to ``rate`` (tc syntax, e.g. ``1gbit``)."""
    if os.geteuid() != 0:
        raise RuntimeError("a shaped two-namespace link needs root (ip netns, tc); run the benchmark as root or without --slow-link")
    for tool in ("ip", "tc", "taskset"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"--slow-link needs the {tool!r} tool (iproute2 / util-linux)")
    tag = tag or str(os.getpid())
    hosts = tuple(Host(f"{PREFIX}-{tag}-{side}", f"lpf{side}{tag}"[:15], f"{SUBNET}.{i + 1}") for i, side in enumerate("ab"))
    try:
        for host in hosts:
            _run("ip", "netns", "add", host.namespace)
        a, b = hosts
        _run("ip", "link", "add", a.interface, "netns", a.namespace, "type", "veth", "peer", "name", b.interface, "netns", b.namespace)
        for host in hosts:
            ns = ["ip", "netns", "exec", host.namespace]
            _run(*ns, "ip", "addr", "add", f"{host.address}/24", "dev", host.interface)
            _run(*ns, "ip", "link", "set", host.interface, "up")
            _run(*ns, "ip", "link", "set", "lo", "up")
            _run(*ns, "tc", "qdisc", "add", "dev", host.interface, "root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms")
        yield a, b
    finally:
        for host in hosts:  # removing a namespace removes its end of the veth pair too
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)

"""A dependency-free progress line for long loops, redrawn in place on a terminal only."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    """``Progress(total, "epoch 3")``; call ``update(n, status)`` per step and ``close()`` at the end.

    Redraws at most ``interval`` seconds apart and only when the stream is a terminal, so logs
    of non-interactive runs hold just the per-epoch summaries. ``status`` is called only when a
    line is drawn (it may synchronise with a device, e.g. to read the current loss).
    """

    def __init__(self, total: int, label: str, *, stream=None, interval: float = 0.5) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval
        self.start = self.last = time.perf_counter()

    def update(self, n: int = 1, status: Callable[[], str] | None = None) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled or (now - self.last < self.interval and self.done < self.total):
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        extra = f" {status()}" if status is not None else ""
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {rate:.1f} it/s eta {eta:.0f}s{extra}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()

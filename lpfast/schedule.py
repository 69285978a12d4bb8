"""Learning-rate schedules as a factor of the base rate per optimizer step."""
from __future__ import annotations

import math


def lr_factor(step: int, total_steps: int, *, kind: str, warmup_steps: int = 0) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 or steps of ×0.1 at 50% and 75%."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if kind == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    raise ValueError(f"unknown schedule {kind!r}")

"""Cutting a :class:`~lpfast.models.ResidualNet` into K stages at block boundaries (ALGORITHM.md §1).

Stage 0 holds the stem, stage K-1 the head; each stage holds a contiguous run of blocks. The
stages share their modules with the model, so the model itself stays the whole network.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from lpfast.models import ResidualNet


class Stage(nn.Module):
    """Stage ``index`` of ``num_stages``: (stem) + ``blocks[first:last]`` + (head)."""

    def __init__(self, model: ResidualNet, index: int, num_stages: int, first: int, last: int) -> None:
        super().__init__()
        self.index = index
        parts: list[nn.Module] = [model.stem] if index == 0 else []
        parts += list(model.blocks[first:last])
        if index == num_stages - 1:
            parts.append(model.head)
        self.layers = nn.Sequential(*parts)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@dataclass
class Partition:
    """Block counts per stage, the estimated cost (FLOPs) per stage, each cut's activation shape, and
    the number of the model's outputs (classes)."""

    blocks_per_stage: list[int]
    stage_flops: list[int]
    cut_shapes: list[tuple[int, ...]]
    num_outputs: int


def _part_costs(model: ResidualNet, sample: Tensor) -> tuple[list[int], list[tuple[int, ...]], int]:
    """Forward FLOPs of stem+block 0, each block, and last block+head; shapes after each block; the
    number of outputs."""
    costs, shapes = [], []
    with torch.no_grad():
        was_training = model.training
        model.eval()

        def run(module: nn.Module, x: Tensor) -> tuple[Tensor, int]:
            with FlopCounterMode(display=False) as counter:
                y = module(x)
            return y, counter.get_total_flops()

        h, stem_flops = run(model.stem, sample)
        for block in model.blocks:
            h, flops = run(block, h)
            costs.append(flops)
            shapes.append(tuple(h.shape[1:]))
        logits, head_flops = run(model.head, h)
        model.train(was_training)
    costs[0] += stem_flops
    costs[-1] += head_flops
    return costs, shapes, logits.shape[1]


def balanced_split(n: int, k: int, run_cost: Callable[[int, int], float]) -> list[int]:
    """Lengths of the contiguous split of ``n`` items into ``k`` non-empty runs that minimises the
    largest ``run_cost(i, j)`` (the cost of a run of items ``i .. j-1``)."""
    inf = float("inf")
    # best[j][i]: minimal max-cost of splitting the first i items into j runs; cut[j][i]: last cut.
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n - (k - j) + 1):
            for s in range(j - 1, i):
                value = max(best[j - 1][s], run_cost(s, i))
                if value < best[j][i]:
                    best[j][i], cut[j][i] = value, s
    counts, i = [], n
    for j in range(k, 0, -1):
        counts.append(i - cut[j][i])
        i = cut[j][i]
    return counts[::-1]


def _balanced_counts(costs: Sequence[int], k: int) -> list[int]:
    """Contiguous split of ``costs`` into ``k`` non-empty runs minimising the largest run's sum."""
    prefix = [0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    return balanced_split(len(costs), k, lambda i, j: prefix[j] - prefix[i])


def partition(model: ResidualNet, stages: int | Sequence[int], input_shape: Sequence[int]) -> Partition:
    """Plans the cut of ``model`` into stages.

    ``stages`` is K (blocks balanced by estimated FLOPs, stem and head counted with their stages)
    or an explicit list of block counts, one per stage, summing to the number of blocks.
    ``input_shape`` is one sample's shape, e.g. ``(3, 32, 32)``.
    """
    n_blocks = len(model.blocks)
    param = next(model.parameters())
    sample = torch.zeros((2, *input_shape), device=param.device, dtype=param.dtype)
    try:
        costs, shapes, num_outputs = _part_costs(model, sample)
    except RuntimeError as exc:  # a convolution or the classifier rejects the shape
        reason = str(exc).strip().splitlines()[0]
        raise ValueError(f"input_shape {tuple(input_shape)} does not fit the model: {reason}") from None
    if isinstance(stages, int):
        if not 1 <= stages <= n_blocks:
            raise ValueError(f"stages must be between 1 and the model's {n_blocks} blocks, got {stages}")
        counts = _balanced_counts(costs, stages)
    else:
        counts = [int(c) for c in stages]
        if not counts or any(c < 1 for c in counts) or sum(counts) != n_blocks:
            raise ValueError(f"block counts {counts} must be positive and sum to the model's {n_blocks} blocks")
    bounds = [sum(counts[:i]) for i in range(len(counts) + 1)]
    stage_flops = [sum(costs[bounds[i] : bounds[i + 1]]) for i in range(len(counts))]
    cut_shapes = [shapes[b - 1] for b in bounds[1:-1]]
    return Partition(counts, stage_flops, cut_shapes, num_outputs)


def split(model: ResidualNet, plan: Partition) -> list[Stage]:
    """The stages of ``plan``, sharing their modules with ``model``."""
    k = len(plan.blocks_per_stage)
    bounds = [sum(plan.blocks_per_stage[:i]) for i in range(k + 1)]
    return [Stage(model, i, k, bounds[i], bounds[i + 1]) for i in range(k)]

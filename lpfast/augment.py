"""Batches of uint8 images to normalised float batches, with CIFAR's pad-crop-flip augmentation.

The whole batch goes through one fused op (:func:`lpfast.ops.crop_flip_normalise`) on the
compute device: no per-sample Python or PIL work. Random parameters come from an explicit
``torch.Generator`` on the CPU, so a seed fixes every crop and flip on any device.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lpfast import ops


def draw_crop_flip(n: int, padding: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Per-sample crop offsets, an n×2 int64 tensor of (row, column) in ``[0, 2·padding]``, and
    n flip flags, both on the CPU."""
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator, dtype=torch.bool)
    return offsets, flips


def draw_flips(n: int, generator: torch.Generator) -> Tensor:
    """n flip flags (probability ½ each) on the CPU, for augmentation by horizontal flips alone."""
    return torch.randint(0, 2, (n,), generator=generator, dtype=torch.bool)


def prepare(
    images: Tensor, *, mean: Sequence[float], std: Sequence[float], padding: int = 0,
    generator: torch.Generator | None = None, channels_last: bool = True, flips: Tensor | None = None,
) -> Tensor:
    """uint8 N×C×H×W images (on the compute device) → float32 ``(x/255 - mean) / std``; with
    ``padding`` > 0 each sample is first cropped at random from its zero-padded image and
    flipped with probability ½, drawn from ``generator``; without padding, ``flips`` (n flags)
    flips the samples it marks."""
    n = images.shape[0]
    if padding and flips is not None:
        raise ValueError("pass flips only without padding: pad-crop augmentation draws its own flips")
    if flips is not None:
        offsets = torch.zeros(n, 2, dtype=torch.long)
    elif padding:
        if generator is None:
            raise ValueError("augmentation (padding > 0) needs a generator for its random crops and flips")
        offsets, flips = draw_crop_flip(n, padding, generator)
    else:
        offsets, flips = torch.zeros(n, 2, dtype=torch.long), torch.zeros(n, dtype=torch.bool)
    dev = images.device
    return ops.crop_flip_normalise(
        images, offsets.to(dev, non_blocking=True), flips.to(dev, non_blocking=True), padding=padding,
        mean=tuple(mean), std=tuple(std), channels_last=channels_last)

"""Batched data augmentation on uint8 image tensors: pad, random crop, horizontal flip, normalise.

The whole batch is transformed by one gather (no per-sample Python or PIL work). Random
parameters come from an explicit ``torch.Generator`` so that a seed fixes every crop and flip.
"""
from __future__ import annotations

import torch
from torch import Tensor


def draw_crop_flip(n: int, padding: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample crop offsets ``(oy, ox)`` in ``[0, 2*padding]`` and flip flags, all on the CPU."""
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator, dtype=torch.bool)
    return offsets[0], offsets[1], flips


def crop_flip(images: Tensor, oy: Tensor, ox: Tensor, flips: Tensor, padding: int) -> Tensor:
    """Zero-pads ``images`` (N×C×H×W) by ``padding``, crops H×W at ``(oy, ox)`` and mirrors the
    samples whose flag is set. Returns an N×C×H×W tensor in channels-last memory format."""
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4).permute(0, 2, 3, 1)  # N×Hp×Wp×C view
    rows = oy.to(images.device)[:, None] + torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device).expand(n, w)
    cols = torch.where(flips.to(images.device)[:, None], cols.flip(1), cols) + ox.to(images.device)[:, None]
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def normalise(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images → ``(x/255 - mean) / std`` in ``dtype``, keeping the memory format."""
    m = torch.tensor(mean, dtype=dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=images.device).view(1, -1, 1, 1)
    return (images.to(dtype) * (1.0 / 255.0) - m) / s


def random_crop_flip(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """CIFAR augmentation: ``padding``-pixel zero pad, random crop back to size, random flip."""
    oy, ox, flips = draw_crop_flip(images.shape[0], padding, generator)
    return crop_flip(images, oy, ox, flips, padding)

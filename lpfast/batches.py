"""Mini-batches of an in-memory :class:`~lpfast.datasets.ImageDataset`, with sample indices.

The batch order of epoch ``e`` is a function of ``(seed, e)`` alone, so every worker of a run,
and a run resumed from a checkpoint, sees exactly the same batches without sharing any state.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from lpfast.augment import draw_crop_flip, draw_flips, prepare
from lpfast.datasets import ImageDataset


@dataclass
class Batch:
    """Normalised images ``x``, labels ``y``, the samples' indices ``idx`` in their split, and the
    flags of the samples flipped horizontally when the batches are augmented by flips alone."""

    x: Tensor
    y: Tensor
    idx: Tensor
    flips: Tensor | None = None


def epoch_generator(seed: int, epoch: int, stream: int, shard: int = 0) -> torch.Generator:
    """A generator private to (seed, epoch, stream, shard): streams keep shuffling and
    augmentation apart, shards keep data-parallel workers' augmentations apart."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 16 + stream + (shard << 48))


class BatchIterator:
    """Yields :class:`Batch` objects for one pass over ``dataset``.

    ``shuffle`` draws the epoch's permutation from ``(seed, epoch)``; ``augment_padding`` > 0
    applies random crop + flip, ``flip`` random horizontal flips alone; ``drop_last`` drops a final partial batch (training).
    ``shard=(rank, workers)`` yields only this data-parallel worker's equal slice of every batch
    (the batch order is the same on every worker; the augmentation draws are the worker's own).
    ``start`` skips the epoch's first batches (resuming mid-epoch), consuming their random draws so
    that the batches after them are exactly those of an uninterrupted pass. ``part`` numbers the
    replica whose fixed part of the data set ``dataset`` is (:meth:`ImageDataset.part`): its
    shuffles and augmentation draws are its own.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: int = 0,
        augment_padding: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        start: int = 0,
        flip: bool = False,
        part: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rank, workers = shard
        if not 0 <= rank < workers or batch_size % workers:
            raise ValueError(f"shard {shard} must be (rank, workers) with workers dividing batch_size={batch_size}")
        self.shard = shard
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.augment_padding = augment_padding
        self.flip = flip and not augment_padding
        self.channels_last = channels_last
        n = len(dataset)
        self.order = torch.randperm(n, generator=epoch_generator(seed, epoch, 0, part)) if shuffle else torch.arange(n)
        self.augment_rng = epoch_generator(seed, epoch, 1, rank + part)  # a data-parallel shard or a replica's part
        self.num_batches = n // batch_size if drop_last else -(-n // batch_size)
        if not 0 <= start <= self.num_batches:
            raise ValueError(f"start must be a batch position in [0, {self.num_batches}], got {start}")
        self.start = start
        for b in range(start):
            if augment_padding:
                draw_crop_flip(len(self._indices(b)), augment_padding, self.augment_rng)
            elif self.flip:
                draw_flips(len(self._indices(b)), self.augment_rng)

    def __len__(self) -> int:
        return self.num_batches

    def _indices(self, b: int) -> Tensor:
        idx = self.order[b * self.batch_size : (b + 1) * self.batch_size]
        rank, workers = self.shard
        return idx.tensor_split(workers)[rank] if workers > 1 else idx

    def __iter__(self) -> Iterator[Batch]:
        for b in range(self.start, self.num_batches):
            idx = self._indices(b)
            images = self.dataset.images[idx].to(self.device, non_blocking=True)
            flips = draw_flips(len(idx), self.augment_rng) if self.flip else None
            x = prepare(images, mean=self.dataset.mean, std=self.dataset.std, padding=self.augment_padding,
                        generator=self.augment_rng, channels_last=self.channels_last, flips=flips)
            flags = flips.to(self.device, non_blocking=True) if flips is not None else None
            yield Batch(x, self.dataset.labels[idx].to(self.device, non_blocking=True), idx, flags)

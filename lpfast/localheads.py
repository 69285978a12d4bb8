"""Local classifier heads for the regressing stages (after DGL, arXiv 1901.08164, and InfoPro,
arXiv 2101.10832).

In the parallel phase a stage k < K-1 learns the task only through its regression target λ_k:
right after a closed-form λ-step the element-mean penalty's gradient in θ_k is backprop's divided
by D, the cut's elements per sample (ALGORITHM.md §3), so the front stages learn at about 1/D of
backprop's rate. A small classifier on the stage's output gives it a task signal of its own:
stage k's θ-step then minimises penalty + α·CE(head_k(φ_k), y). The head is a training aid of
the parallel phase: it is not part of the network, the serial phase and evaluation never run it.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

#: A cut's feature map is average-pooled down to at most this size before the head's convolution,
#: which keeps the head's cost a few percent of a stage's.
POOLED_SIZE = 8


class LocalHead(nn.Module):
    """C×H×W → logits: average pooling to at most 8×8, a 3×3 conv-BN-ReLU of ``width`` channels
    (default 2C), global average pooling and a linear classifier."""

    def __init__(self, channels: int, spatial: tuple[int, int], num_classes: int, *, width: int | None = None) -> None:
        super().__init__()
        width = width if width is not None else 2 * channels
        # Rounded up (and the last window allowed to hang over), so 14×14 and 28×28 maps pool to 7×7
        # rather than convolving at full size.
        stride = math.ceil(max(spatial) / POOLED_SIZE)
        self.layers = nn.Sequential(
            nn.AvgPool2d(stride, ceil_mode=True) if stride > 1 else nn.Identity(),
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

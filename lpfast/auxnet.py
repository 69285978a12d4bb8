"""Auxiliary-variable networks (ALGORITHM.md §7, after arXiv 2112.05387).

Instead of a per-sample store, cut c's auxiliary variables are predicted from the current
(augmented) image by a small network ψ_c, so the parallel phase keeps no per-sample tensor and can
train on augmented data. In every step ψ_c's prediction is the stage's input λ; after the local
steps ψ_c takes one optimizer step on ‖ψ_c(x̃) − λ_new‖² toward the updated variables.

The augmented Lagrangian's multipliers are handled the same way: with ``heads=2`` ψ_c predicts
μ_c too (a second set of output channels), and the regression target is the pair (λ_new, μ_new)
after the multiplier step. No per-sample state exists anywhere, so a sample's μ is what ψ has
learnt of it; the multiplier term therefore acts on the part of the constraint violation that
ψ can represent.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from lpfast.precision import Precision
from lpfast.replicas import GradientAverage

#: Widths tried, widest first, when the width is chosen from the cost budget.
WIDTHS = (64, 48, 32, 24, 16, 12, 8, 4)


def _strides(ratio: int, depth: int) -> list[int]:
    """Per-layer strides reaching a down-sampling ``ratio``: stride-2 layers where the ratio is a
    power of two they can cover, else one layer of stride ``ratio``."""
    k = int(math.log2(ratio)) if ratio >= 1 else -1
    if 2**k == ratio and k <= depth:
        return [2] * k + [1] * (depth - k)
    return [ratio] + [1] * (depth - 1)


class AuxNet(nn.Module):
    """ψ: an ``in_channels``×H×W image → ``heads`` tensors of ``cut_shape`` (C×h×w), stacked along
    channels. ``depth`` 3×3 conv-BN-ReLU layers of ``width`` channels (strided down to h×w; H and W
    must be the same multiple of h and w), then a 1×1 conv to ``heads``·C channels."""

    def __init__(self, in_channels: int, image_size: Sequence[int], cut_shape: Sequence[int], *,
                 width: int, depth: int, heads: int = 1) -> None:
        super().__init__()
        if width < 1 or depth < 1 or heads not in (1, 2):
            raise ValueError(f"need width >= 1, depth >= 1 and heads 1 or 2, got width={width}, depth={depth}, heads={heads}")
        c, h, w = cut_shape
        height, wide = image_size
        if height % h or wide % w or height // h != wide // w:
            raise ValueError(f"an auxiliary network maps {height}×{wide} images to {h}×{w} cuts only by one integer stride; this cut does not divide the image")
        layers: list[nn.Module] = []
        channels = in_channels
        for stride in _strides(height // h, depth):
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.Conv2d(width, heads * c, 1))
        self.layers = nn.Sequential(*layers)
        self.cut_channels = c

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def forward_flops(module: nn.Module, sample: Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(sample)
    return counter.get_total_flops()


def build_aux_net(in_channels: int, image_size: Sequence[int], cut_shape: Sequence[int], *, depth: int,
                  width: int | None, heads: int, budget_flops: float) -> AuxNet:
    """ψ for one cut; with ``width=None`` the widest of :data:`WIDTHS` whose forward cost is at
    most ``budget_flops`` for a batch of 2 (the narrowest if none fits)."""
    if width is not None:
        return AuxNet(in_channels, image_size, cut_shape, width=width, depth=depth, heads=heads)
    sample = torch.zeros(2, in_channels, *image_size)
    for candidate in WIDTHS:
        net = AuxNet(in_channels, image_size, cut_shape, width=candidate, depth=depth, heads=heads)
        if forward_flops(net.eval(), sample) <= budget_flops:
            return net.train()
    return net.train()


class NetAux:
    """Cut c's auxiliary variables as ψ_c's prediction (the interface of
    :class:`~lpfast.auxvars.StoredAux`): :meth:`fetch` predicts λ (and μ) for a batch and keeps
    the graph; :meth:`update` regresses ψ onto the updated values and steps its optimizer. With
    replicas, ``average`` averages ψ's gradient over the replicas of its stage before each step."""

    def __init__(self, net: AuxNet, optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer], *, with_mu: bool,
                 average: GradientAverage | None = None, precision: Precision | None = None) -> None:
        self.net, self.average = net, average
        param = next(net.parameters())
        self.precision = precision or Precision(None, model_dtype=param.dtype, device=param.device)
        self.optimizer = optimizer(net.parameters())
        self.with_mu = with_mu
        self._prediction: Tensor | None = None
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=next(net.parameters()).device)
        self._fits = 0

    @property
    def nbytes(self) -> int:
        """ψ's parameters, buffers and optimizer state: all the memory the variables need."""
        tensors = [*self.net.parameters(), *self.net.buffers()]
        tensors += [v for state in self.optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def fetch(self, x: Tensor, idx: Tensor, flips: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        # ψ sees the (flipped) image itself: ``flips`` needs no handling here.
        prediction = self._predict(x)
        self._prediction = prediction
        c = self.net.cut_channels
        lam = prediction[:, :c].detach().clone(memory_format=torch.preserve_format)
        mu = prediction[:, c:].detach().clone(memory_format=torch.preserve_format) if self.with_mu else None
        return lam, mu

    def update(self, x: Tensor, idx: Tensor, lam: Tensor, mu: Tensor | None, flips: Tensor | None = None) -> None:
        if self._prediction is None:
            raise RuntimeError("NetAux.update needs the prediction of a fetch on the same batch")
        target = torch.cat([lam, mu], dim=1) if self.with_mu else lam
        self._regress(self._prediction, target)
        self._prediction = None

    def initialise(self, x: Tensor, idx: Tensor, received: Tensor) -> Tensor:
        """One regression step of ψ toward the forward pass's activation (μ toward 0)."""
        target = torch.cat([received, torch.zeros_like(received)], dim=1) if self.with_mu else received
        with torch.enable_grad():
            self._regress(self._predict(x), target)
        return received

    def _predict(self, x: Tensor) -> Tensor:
        """ψ(x) under the run's autocast, in the dtype of ψ's parameters (that of λ's step)."""
        with self.precision.autocast():
            prediction = self.net(x)
        return self.precision.for_loss(prediction)

    def _regress(self, prediction: Tensor, target: Tensor) -> None:
        loss = F.mse_loss(prediction, target.to(prediction.dtype))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.average is not None:
            self.average.average(list(self.net.parameters()))
        self.optimizer.step()
        self._loss_sum += loss.detach().double()
        self._fits += 1

    def take_fit_loss(self) -> Tensor:
        """Mean regression loss of ψ since the last call (0-dim, on ψ's device); resets it."""
        mean = self._loss_sum / max(self._fits, 1)
        self._loss_sum, self._fits = torch.zeros_like(self._loss_sum), 0
        return mean

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "fit_loss_sum": self._loss_sum, "fits": self._fits}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._loss_sum, self._fits = state["fit_loss_sum"], state["fits"]

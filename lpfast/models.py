"""Residual networks as a stem, a flat list of residual blocks and a head.

Every model here has the same three parts so that it can be cut into stages at block
boundaries (ALGORITHM.md §1): ``stem`` maps the image to the first hidden state, each block is
one residual step ``x -> x + f(x)`` (possibly changing resolution), ``head`` pools, classifies
and returns logits.

- ``resnet20/32/56/110``: He et al. 2016, CIFAR variant (basic blocks, 16/32/64 channels,
  parameter-free "option A" shortcuts), 0.27 M / 0.46 M / 0.85 M / 1.7 M parameters.
- ``wrn_D_K`` (e.g. ``wrn_16_4``, ``wrn_28_10``): Zagoruyko & Komodakis 2016, pre-activation
  wide basic blocks with 1×1 projection shortcuts; WRN-28-10 has 36.5 M parameters.
- ``mnist_resnet``: a constant-width ODE-style ResNet for 28×28 digits (strided stem to 14×14,
  eight 16-channel blocks), so every cut has the same size and stages balance naturally.
- ``torchvision:NAME``: torchvision's classification ResNets (``resnet18`` ... ``resnet152``,
  ``wide_resnet50_2``, ``wide_resnet101_2``, ``resnext*``), untrained, optionally with the CIFAR
  stem (3×3 stride-1 ``conv1``, no max-pool); :mod:`lpfast.describe` cuts them between blocks.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ResidualNet(nn.Module):
    """``head(blocks[-1](...blocks[0](stem(x))))``: the common shape of all lpfast models."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=5**0.5)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Post-activation basic block; a change of width uses the parameter-free option-A shortcut
    (stride-2 subsampling and zero channels), as in the original CIFAR ResNets."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.extra_channels = cout - cin

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1:
            shortcut = shortcut[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            half = self.extra_channels // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, half, self.extra_channels - half))
        return F.relu(out + shortcut)


class WideBlock(nn.Module):
    """Pre-activation wide basic block (BN-ReLU-conv twice), 1×1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if (stride != 1 or cin != cout) else None
        )

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        # Projection shortcuts take the pre-activated input, as in the reference implementation.
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class Head(nn.Module):
    """Optional final BN-ReLU (pre-activation nets), global average pool, linear classifier."""

    def __init__(self, channels: int, num_classes: int, preact: bool) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels) if preact else None
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.bn is not None:
            x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _stem(cin: int, cout: int, stride: int, with_bn: bool) -> nn.Module:
    if not with_bn:
        return _conv3x3(cin, cout, stride)
    return nn.Sequential(_conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def cifar_resnet(depth: int, in_channels: int = 3, num_classes: int = 10) -> ResidualNet:
    """He et al.'s CIFAR ResNet of the given depth (6n+2)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
    n = (depth - 2) // 6
    blocks: list[nn.Module] = []
    cin = 16
    for i, width in enumerate((16, 32, 64)):
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            blocks.append(BasicBlock(cin, width, stride))
            cin = width
    model = ResidualNet(_stem(in_channels, 16, 1, True), blocks, Head(64, num_classes, preact=False))
    _init_weights(model)
    return model


def wide_resnet(depth: int, widen: int, in_channels: int = 3, num_classes: int = 10, dropout: float = 0.0) -> ResidualNet:
    """WRN-depth-widen of Zagoruyko & Komodakis (depth = 6n+4)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
    if widen < 1:
        raise ValueError(f"WideResNet widening factor must be >= 1, got {widen}")
    n = (depth - 4) // 6
    blocks: list[nn.Module] = []
    cin = 16
    for i, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
        for j in range(n):
            blocks.append(WideBlock(cin, width, 2 if (i > 0 and j == 0) else 1, dropout))
            cin = width
    model = ResidualNet(_stem(in_channels, 16, 1, False), blocks, Head(cin, num_classes, preact=True))
    _init_weights(model)
    return model


def mnist_resnet(in_channels: int = 1, num_classes: int = 10, depth: int = 8, width: int = 16) -> ResidualNet:
    """Constant-width ResNet for 28×28 inputs: strided stem to 14×14, ``depth`` basic blocks."""
    blocks = [BasicBlock(width, width) for _ in range(depth)]
    model = ResidualNet(_stem(in_channels, width, 2, True), blocks, Head(width, num_classes, preact=False))
    _init_weights(model)
    return model


_CIFAR_RESNET = re.compile(r"resnet(\d+)")
_WRN = re.compile(r"wrn_?(\d+)_(\d+)")

MODEL_NAMES = ("mnist_resnet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "wrn_16_4", "wrn_28_10")
TORCHVISION_PREFIX = "torchvision:"
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2",
                       "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d")


def torchvision_resnet(name: str, *, in_channels: int = 3, num_classes: int = 10, cifar_stem: bool = False) -> nn.Module:
    """torchvision's ``name`` (untrained); ``cifar_stem`` swaps in a 3×3 stride-1 ``conv1`` and drops
    the max-pool, the usual adaptation to 32×32 images; another ``in_channels`` gets its own ``conv1``."""
    import torchvision

    if name not in TORCHVISION_RESNETS:
        raise ValueError(f"unknown torchvision model {name!r}: lpfast cuts torchvision's ResNets, {', '.join(TORCHVISION_RESNETS)}")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if cifar_stem or in_channels != 3:
        kernel, stride = (3, 1) if cifar_stem else (7, 2)
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's own init
    if cifar_stem:
        model.maxpool = nn.Identity()
    return model


def build_model(name: str, *, in_channels: int = 3, num_classes: int = 10, cifar_stem: bool = False) -> nn.Module:
    """Builds a model by name: ``mnist_resnet``, ``resnetD`` (D = 6n+2), ``wrn_D_K`` or
    ``torchvision:NAME`` (``cifar_stem`` applies to the latter only)."""
    if name.startswith(TORCHVISION_PREFIX):
        return torchvision_resnet(name[len(TORCHVISION_PREFIX):], in_channels=in_channels, num_classes=num_classes, cifar_stem=cifar_stem)
    if cifar_stem:
        raise ValueError(f"--cifar-stem adapts torchvision ResNets (torchvision:NAME) to 32×32 images; {name} has its own stem")
    key = name.lower().replace("-", "_")
    if key == "mnist_resnet":
        return mnist_resnet(in_channels, num_classes)
    if m := _CIFAR_RESNET.fullmatch(key):
        return cifar_resnet(int(m.group(1)), in_channels, num_classes)
    if m := _WRN.fullmatch(key):
        return wide_resnet(int(m.group(1)), int(m.group(2)), in_channels, num_classes)
    raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)} (any resnetD with D=6n+2, wrn_D_K with D=6n+4), "
                     f"or torchvision:NAME for torchvision's {', '.join(TORCHVISION_RESNETS)}")

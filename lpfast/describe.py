"""How lpfast sees a network: stem, blocks, head (ALGORITHM.md §1), recognised from the model's
structure, never by tracing.

- an lpfast :class:`~lpfast.models.ResidualNet` (or :class:`Blocks`) is taken as it is;
- a torchvision ``ResNet`` (resnet18..152, wide_resnet50_2/101_2, resnext; also with the CIFAR stem,
  a 3×3 stride-1 ``conv1`` and ``maxpool = nn.Identity()``): stem = conv1, bn1, relu, maxpool;
  blocks = the blocks of layer1..layer4 in order; head = avgpool, flatten, fc;
- an ``nn.Sequential``: its first child is the stem, its last the head, those between the blocks;
- anything else: the user describes it once with :class:`Blocks`.

The description shares the model's modules, so training it trains the user's model in place.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lpfast.models import ResidualNet

_TORCHVISION_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
HOW_TO_DESCRIBE = "describe it as lpfast.Blocks(stem=model.stem, blocks=list(model.blocks), head=model.head) with the model's own modules"


class Blocks(ResidualNet):
    """A network described by hand as ``head(blocks[-1](... blocks[0](stem(x))))``: pass the model's
    own modules, which the description shares (nothing is copied), e.g.
    ``lpfast.Blocks(stem=net.features, blocks=list(net.stages), head=net.classifier)``.
    The stages are cut between blocks."""

    def __init__(self, *, stem: nn.Module, blocks: Sequence[nn.Module], head: nn.Module) -> None:
        if not isinstance(stem, nn.Module) or not isinstance(head, nn.Module) or not all(isinstance(b, nn.Module) for b in blocks):
            raise ValueError("lpfast.Blocks takes modules: stem=nn.Module, blocks=[nn.Module, ...], head=nn.Module")
        if not blocks:
            raise ValueError("lpfast.Blocks needs at least one block between the stem and the head")
        super().__init__(stem, list(blocks), head)


def is_torchvision_resnet(model: nn.Module) -> bool:
    return all(hasattr(model, part) for part in _TORCHVISION_PARTS) and all(
        isinstance(getattr(model, f"layer{i}"), nn.Sequential) for i in range(1, 5))


def describe(model: nn.Module) -> ResidualNet:
    """``model`` as stem + blocks + head (see the module's documentation); a ``ValueError`` that
    names the model's type and the one-line way to describe it where its structure is not one of
    those lpfast recognises."""
    if isinstance(model, ResidualNet):
        return model
    if is_torchvision_resnet(model):
        return Blocks(stem=nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
                      blocks=[block for i in range(1, 5) for block in getattr(model, f"layer{i}")],
                      head=nn.Sequential(model.avgpool, nn.Flatten(1), model.fc))
    if isinstance(model, nn.Sequential):
        children = list(model)
        if len(children) < 3:
            raise ValueError(f"an nn.Sequential is cut between its children, the first being the stem and the last the head: this one has "
                             f"{len(children)}, it needs at least 3; or {HOW_TO_DESCRIBE}")
        return Blocks(stem=children[0], blocks=children[1:-1], head=children[-1])
    raise ValueError(f"lpfast cannot tell how to cut a {type(model).__name__} into stages: it takes an lpfast ResidualNet, a torchvision "
                     f"ResNet or an nn.Sequential; {HOW_TO_DESCRIBE}")


@torch.no_grad()
def check_description(model: nn.Module, described: ResidualNet, sample: Tensor) -> None:
    """The description must compute what the model computes (a subclass may have changed
    ``forward``): both run ``sample`` in eval mode; a mismatch is a ``ValueError``."""
    if described is model:
        return
    was_training = model.training
    model.eval()
    try:
        same = torch.allclose(model(sample), described(sample), rtol=1e-4, atol=1e-5)
    finally:
        model.train(was_training)
    if not same:
        raise ValueError(f"this {type(model).__name__} does not compute stem -> blocks -> head as lpfast recognised it "
                         f"(its forward differs); {HOW_TO_DESCRIBE}")

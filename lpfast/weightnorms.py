"""Weights whose length the network ignores, and putting that length back (``LayerParallel``'s
``restore_norms``).

A convolution or linear layer whose only consumer is a batch norm computes, through it, the same
function at any scale of its weight (and bias), but an SGD step turns such a weight by about
lr·|g|/|w|: a weight grown 1.5× long learns at 1/2.25 of the rate. In the parallel phase the
regressing stages step on the penalty plus α times their local head's cross-entropy, a larger
gradient than backprop's, and their weights grow longer than backprop's would
(``bench/weight_norms.py``); scaling them back when the parallel phase ends changes no output and
lets the serial epochs' steps turn them as far as at the λ pass. On the CIFAR-10 proxy it left the
final accuracy where it was (bench/results/narrative.md), hence off by default.
"""
from __future__ import annotations

import torch
import torch.fx
from torch import Tensor, nn

_SCALED = (nn.modules.conv._ConvNd, nn.Linear)


def batch_normed(module: nn.Module) -> list[tuple[nn.Module, nn.modules.batchnorm._BatchNorm]]:
    """The (layer, batch norm) pairs of ``module`` in which the layer's output goes to the batch
    norm and nowhere else, found by tracing ``module`` with ``torch.fx``."""
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as error:  # fx raises many kinds on untraceable Python
        raise ValueError(f"restore_norms needs stages that torch.fx can trace, and {type(module).__name__} "
                         f"cannot be ({type(error).__name__}: {error}); construct without restore_norms") from error
    modules = dict(module.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _SCALED) or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op == "call_module" and isinstance(modules[user.target], nn.modules.batchnorm._BatchNorm):
            pairs.append((modules[node.target], modules[user.target]))
    return pairs


class WeightNorms:
    """The lengths of one stage's batch-normed weights at a recorded moment, and their restoration."""

    def __init__(self, module: nn.Module) -> None:
        self.pairs = batch_normed(module)
        self.recorded: list[float] | None = None

    def record(self) -> None:
        self.recorded = [layer.weight.detach().norm().item() for layer, _ in self.pairs]

    @torch.no_grad()
    def restore(self, optimizer: torch.optim.Optimizer) -> list[float]:
        """Scales every weight (and bias) back to its recorded length, and with it what depends on
        that length: SGD's momentum buffer (in gradient units, which scale inversely) and the batch
        norm's running statistics (so that eval mode computes the same function too). Returns the
        factors applied."""
        if self.recorded is None:
            raise RuntimeError("no weight lengths recorded: call record() first")
        factors = []
        for (layer, norm), length in zip(self.pairs, self.recorded):
            factor = length / layer.weight.norm().item()
            for param in (layer.weight, layer.bias):
                if param is None:
                    continue
                param.mul_(factor)
                buffer: Tensor | None = optimizer.state.get(param, {}).get("momentum_buffer")
                if buffer is not None:
                    buffer.div_(factor)
            if norm.running_mean is not None:
                norm.running_mean.mul_(factor)
                norm.running_var.mul_(factor * factor)
            factors.append(factor)
        self.recorded = None
        return factors

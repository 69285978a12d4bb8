import pytest
import torch
from torch import nn

from lpfast.describe import describe
from lpfast.models import build_model
from lpfast.stages import partition, split
from lpfast.weightnorms import WeightNorms, batch_normed


def stages_of(name: str):
    model = describe(build_model(name)).double()
    return split(model, partition(model, 2, (3, 32, 32)))


def test_finds_the_layers_whose_only_consumer_is_a_batch_norm():
    # Post-activation ResNet-20: every convolution feeds its batch norm.
    front = stages_of("resnet20")[0]
    names = {m: n for n, m in front.named_modules()}
    pairs = [(names[layer], names[norm]) for layer, norm in batch_normed(front)]
    assert pairs[:3] == [("layers.0.0", "layers.0.1"), ("layers.1.conv1", "layers.1.bn1"), ("layers.1.conv2", "layers.1.bn2")]
    assert len(pairs) == sum(isinstance(m, nn.Conv2d) for m in front.modules())
    # Pre-activation WRN: conv2 goes into the residual sum, not into a batch norm, and is left out.
    wide = stages_of("wrn_16_4")[1]
    names = {m: n for n, m in wide.named_modules()}
    found = [names[layer] for layer, _ in batch_normed(wide)]
    assert found and all(name.endswith("conv1") for name in found)


def test_restoring_lengths_keeps_the_function_and_scales_momentum_inversely():
    torch.manual_seed(0)
    front = stages_of("resnet20")[0]
    for norm in front.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.eps = 1e-30  # ε is all that sees a weight's length (0 is refused): this leaves the function exactly the same
    opt = torch.optim.SGD(front.parameters(), lr=0.1, momentum=0.9)
    norms = WeightNorms(front)
    norms.record()
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    for _ in range(3):  # grow the weights, fill momentum and running statistics
        opt.zero_grad()
        (front(x) ** 2).mean().mul(100.0).backward()
        opt.step()
    with torch.no_grad():
        for layer, _ in norms.pairs:
            layer.weight.mul_(1.7)  # as the parallel phase lengthens them; the function does not change
        for norm in front.modules():
            if isinstance(norm, nn.BatchNorm2d):
                norm.momentum = 1.0  # running statistics: those of x under the weights as they are now
        front(x)
    recorded = list(norms.recorded)
    buffers = [opt.state[layer.weight]["momentum_buffer"].clone() for layer, _ in norms.pairs]
    front.train()
    train_out = front(x).detach()
    front.eval()
    eval_out = front(x).detach()
    front.train()
    factors = norms.restore(opt)
    for (layer, _), length, factor, buffer in zip(norms.pairs, recorded, factors, buffers):
        assert layer.weight.norm().item() == pytest.approx(length, rel=1e-12)
        torch.testing.assert_close(opt.state[layer.weight]["momentum_buffer"], buffer / factor)
    assert max(factors) < 1 / 1.5
    torch.testing.assert_close(front(x).detach(), train_out, rtol=1e-9, atol=1e-9)
    front.eval()
    torch.testing.assert_close(front(x).detach(), eval_out, rtol=1e-9, atol=1e-9)
    with pytest.raises(RuntimeError, match="record"):
        norms.restore(opt)  # a recording is used once


def test_untraceable_stage_has_a_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x  # data-dependent control flow

    with pytest.raises(ValueError, match="torch.fx"):
        batch_normed(Branchy())

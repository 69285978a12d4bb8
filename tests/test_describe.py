"""The user's own network: torchvision ResNets, nn.Sequential and explicit descriptions are cut
between their blocks by structure, and what cannot be described is one readable error."""
import pytest
import torch
import torchvision
from torch import nn

import lpfast
from lpfast.describe import describe
from lpfast.models import build_model


@pytest.mark.parametrize("name, cifar_stem, blocks", [("resnet18", False, 8), ("resnet18", True, 8), ("resnet50", False, 16),
                                                      ("wide_resnet50_2", False, 16), ("resnext50_32x4d", False, 16)])
def test_torchvision_resnets_are_cut_between_their_blocks(name, cifar_stem, blocks):
    torch.manual_seed(0)
    model = build_model(f"torchvision:{name}", cifar_stem=cifar_stem)
    described = describe(model)
    assert len(described.blocks) == blocks
    # The description shares the model's modules: training it trains the model.
    assert described.stem[0] is model.conv1 and described.blocks[0] is model.layer1[0] and described.head[-1] is model.fc
    assert described.blocks[-1] is model.layer4[-1]
    assert isinstance(model.maxpool, nn.Identity) == cifar_stem and model.conv1.stride == ((1, 1) if cifar_stem else (2, 2))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(described(x), model(x))


def test_sequential_and_explicit_descriptions():
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1),
                        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)))
    described = describe(seq)
    assert described.stem is seq[0] and list(described.blocks) == [seq[1], seq[2]] and described.head is seq[3]
    own = lpfast.Blocks(stem=seq[0], blocks=[seq[1], seq[2]], head=seq[3])
    assert describe(own) is own
    lp = lpfast.LayerParallel(own, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), stages=2, dataset_size=8, input_shape=(1, 6, 6))
    assert lp.plan.blocks_per_stage == [1, 1] and lp.plan.cut_shapes == [(4, 6, 6)] and lp.plan.num_outputs == 3


def test_what_cannot_be_described_is_one_readable_error():
    opt = torch.optim.SGD
    with pytest.raises(ValueError, match=r"cannot tell how to cut a Linear .*lpfast\.Blocks\(stem="):
        lpfast.LayerParallel(nn.Linear(3, 4), optimizer=opt, stages=2, dataset_size=4, input_shape=(3,))
    with pytest.raises(ValueError, match="this one has 2, it needs at least 3"):
        describe(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Flatten()))
    with pytest.raises(ValueError, match="at least one block"):
        lpfast.Blocks(stem=nn.Identity(), blocks=[], head=nn.Identity())

    class Doubled(torchvision.models.ResNet):  # structure of a ResNet, another forward
        def forward(self, x):
            return 2 * super().forward(x)

    odd = Doubled(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="does not compute stem -> blocks -> head"):
        lpfast.LayerParallel(odd, optimizer=opt, stages=2, dataset_size=4, input_shape=(3, 32, 32))
    # An input shape that does not fit is caught at construction, before any data is touched.
    with pytest.raises(ValueError, match=r"input_shape \(1, 32, 32\) does not fit the model: .*channels"):
        lpfast.LayerParallel(build_model("torchvision:resnet18"), optimizer=opt, stages=2, dataset_size=4, input_shape=(1, 32, 32))


def test_model_names_and_stem_option_are_checked():
    from lpfast.config import TrainConfig

    assert TrainConfig(model="torchvision:resnet50", cifar_stem=True).cifar_stem
    with pytest.raises(ValueError, match="unknown torchvision model 'vgg16'"):
        TrainConfig(model="torchvision:vgg16")
    with pytest.raises(ValueError, match="--cifar-stem adapts torchvision ResNets"):
        TrainConfig(model="resnet20", cifar_stem=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_example_trains_a_torchvision_resnet(workers):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "train_torchvision.py"
    options = [str(example), "--dataset", "embedded", "--epochs", "2", "--parallel-epochs", "1", "--subset", "160"]
    launch = [sys.executable] if not workers else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run([*launch, *options], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "(parallel)" in lines[0] and "(serial)" in lines[1] and "test accuracy" in lines[1]

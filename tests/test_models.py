import pytest
import torch

from lpfast.models import BasicBlock, ResidualNet, WideBlock, build_model


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, expected, blocks",
    [
        ("resnet20", 269_722, 9),  # He et al.: 0.27 M
        ("resnet32", 464_154, 15),  # 0.46 M
        ("resnet56", 853_018, 27),  # 0.85 M
        ("resnet110", 1_727_962, 54),  # 1.7 M
        ("wrn_16_4", 2_748_890, 6),  # Zagoruyko & Komodakis: 2.7 M
        ("wrn_28_10", 36_479_194, 12),  # 36.5 M
    ],
)
def test_published_parameter_counts(name, expected, blocks):
    model = build_model(name)
    assert n_params(model) == expected
    assert isinstance(model, ResidualNet) and len(model.blocks) == blocks


def test_cifar100_head_and_mnist_input():
    assert build_model("resnet20", num_classes=100).head.fc.out_features == 100
    mnist = build_model("mnist_resnet", in_channels=1)
    assert mnist(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert all(isinstance(b, BasicBlock) for b in mnist.blocks)


@pytest.mark.parametrize("name", ["resnet20", "wrn_16_4", "mnist_resnet"])
def test_forward_is_stem_blocks_head(name):
    torch.manual_seed(0)
    channels, size = (1, 28) if name == "mnist_resnet" else (3, 32)
    model = build_model(name, in_channels=channels).eval()
    x = torch.randn(3, channels, size, size)
    h = model.stem(x)
    for block in model.blocks:
        h = block(h)
    torch.testing.assert_close(model.head(h), model(x), rtol=0, atol=0)


def test_wide_block_projection_only_when_shape_changes():
    model = build_model("wrn_16_4")
    projections = [b.shortcut is not None for b in model.blocks if isinstance(b, WideBlock)]
    assert projections == [True, False, True, False, True, False]


def test_bad_names_are_clear():
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("resnet21")
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn_27_10")
    with pytest.raises(ValueError, match="unknown model 'vgg16'"):
        build_model("vgg16")


@pytest.mark.parametrize("spatial, pooled", [((32, 32), 8), ((16, 16), 8), ((8, 8), 8), ((28, 28), 7), ((14, 14), 7), ((7, 7), 7), ((9, 9), 5)])
def test_local_head_convolves_at_most_8x8(spatial, pooled):
    from lpfast.localheads import LocalHead

    head = LocalHead(4, spatial, 10)
    seen = []
    head.layers[1].register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape[-2:])))
    assert head(torch.randn(2, 4, *spatial)).shape == (2, 10)
    assert seen == [(pooled, pooled)]

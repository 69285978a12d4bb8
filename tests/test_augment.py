import pytest
import torch

from lpfast.augment import crop_flip, draw_crop_flip, normalise, random_crop_flip
from lpfast.batches import BatchIterator
from lpfast.datasets import ImageDataset


def images(n=6, c=3, h=8, w=8):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_shapes_and_dtype():
    x = images()
    out = random_crop_flip(x, 4, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_centre_crop_is_identity_and_flip_is_a_flip():
    x = images()
    n = x.shape[0]
    centre = torch.full((n,), 4)
    assert torch.equal(crop_flip(x, centre, centre, torch.zeros(n, dtype=torch.bool), 4), x)
    assert torch.equal(crop_flip(x, centre, centre, torch.ones(n, dtype=torch.bool), 4), x.flip(-1))


def test_crops_are_windows_of_the_padded_image():
    x = images()
    oy, ox, flips = draw_crop_flip(x.shape[0], 4, torch.Generator().manual_seed(3))
    assert oy.min() >= 0 and oy.max() <= 8 and ox.min() >= 0 and ox.max() <= 8
    out = crop_flip(x, oy, ox, flips, 4)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(x.shape[0]):
        window = padded[i, :, oy[i] : oy[i] + 8, ox[i] : ox[i] + 8]
        assert torch.equal(out[i], window.flip(-1) if flips[i] else window)


def test_deterministic_under_a_seed():
    x = images(n=64)
    a = random_crop_flip(x, 4, torch.Generator().manual_seed(7))
    b = random_crop_flip(x, 4, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_normalise():
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    torch.testing.assert_close(normalise(x, (0.5,), (0.25,)), torch.tensor([[[[-2.0, 2.0]]]]))


def dataset(n=10):
    return ImageDataset(images(n=n, c=1), torch.arange(n) % 10, 10, (0.5,), (0.5,))


def test_batches_carry_indices_and_cover_the_epoch():
    data = dataset()
    batches = list(BatchIterator(data, 4, shuffle=True, seed=1, epoch=0))
    assert [len(b.idx) for b in batches] == [4, 4, 2]
    idx = torch.cat([b.idx for b in batches])
    assert sorted(idx.tolist()) == list(range(10))
    for b in batches:
        assert torch.equal(b.y, data.labels[b.idx])
        torch.testing.assert_close(b.x, normalise(data.images[b.idx], (0.5,), (0.5,)))
    assert len(list(BatchIterator(data, 4, shuffle=True, drop_last=True))) == 2


def test_batch_order_is_a_function_of_seed_and_epoch():
    data = dataset(50)
    order = lambda seed, epoch: torch.cat([b.idx for b in BatchIterator(data, 8, shuffle=True, seed=seed, epoch=epoch)])  # noqa: E731
    assert torch.equal(order(3, 2), order(3, 2))
    assert not torch.equal(order(3, 2), order(3, 1))
    assert not torch.equal(order(3, 2), order(4, 2))


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        BatchIterator(dataset(), 0, shuffle=False)

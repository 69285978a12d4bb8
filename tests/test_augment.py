"""Batched augmentation: lpfast::crop_flip_normalise against its reference and what it must mean
(centre crop = identity, windows of the padded image, flips, seeds), and the batch iterator."""
import pytest
import torch

from lpfast import ops
from lpfast.augment import draw_crop_flip, prepare
from lpfast.batches import BatchIterator
from lpfast.datasets import ImageDataset

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def images(n=6, c=3, h=8, w=10, device="cpu"):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).to(device)


def normalised(x, dtype=torch.float64):
    m, s = torch.tensor(MEAN, dtype=dtype).view(1, -1, 1, 1), torch.tensor(STD, dtype=dtype).view(1, -1, 1, 1)
    return (x.to(dtype) / 255 - m) / s


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_matches_reference_exactly(device, channels_last, dtype):
    # The kernel computes each value with the reference's operations in the same order.
    x = images(device=device)
    offsets, flips = draw_crop_flip(6, 4, torch.Generator().manual_seed(3))
    args = (x, offsets.to(device), flips.to(device))
    kw = dict(padding=4, mean=MEAN, std=STD, dtype=dtype, channels_last=channels_last)
    out = ops.crop_flip_normalise(*args, **kw)
    assert out.dtype == dtype and out.shape == x.shape
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.equal(out, ops.crop_flip_normalise_reference(*args, **kw))


def test_crops_are_windows_of_the_padded_image_and_flips_mirror():
    x = images()
    offsets, flips = draw_crop_flip(6, 4, torch.Generator().manual_seed(5))
    assert offsets.min() >= 0 and offsets.max() <= 8 and flips.any() and not flips.all()
    out = ops.crop_flip_normalise(x, offsets, flips, padding=4, mean=MEAN, std=STD, dtype=torch.float64)
    padded = torch.nn.functional.pad(normalised(x), (4, 4, 4, 4))
    zero = normalised(torch.zeros(1, 3, 1, 1))
    padded = torch.where(torch.nn.functional.pad(torch.ones_like(x, dtype=torch.bool), (4, 4, 4, 4)), padded, zero)
    for i in range(6):
        oy, ox = offsets[i].tolist()
        window = padded[i, :, oy : oy + 8, ox : ox + 10]
        torch.testing.assert_close(out[i], window.flip(-1) if flips[i] else window, rtol=1e-14, atol=1e-14)


def test_centre_crop_is_normalisation():
    x = images()
    centre = torch.full((6, 2), 4)
    out = ops.crop_flip_normalise(x, centre, torch.zeros(6, dtype=torch.bool), padding=4, mean=MEAN, std=STD, dtype=torch.float64)
    torch.testing.assert_close(out, normalised(x), rtol=1e-14, atol=1e-14)
    plain = prepare(x, mean=MEAN, std=STD)  # no padding: normalisation alone
    torch.testing.assert_close(plain, normalised(x).float())


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_and_empty_batch(device):
    x = images(device=device)
    offsets, flips = draw_crop_flip(6, 2, torch.Generator().manual_seed(1))
    torch.library.opcheck(torch.ops.lpfast.crop_flip_normalise.default,
                          (x, offsets.to(device), flips.to(device), 2, list(MEAN), list(STD), torch.float32, True))
    empty = ops.crop_flip_normalise(x[:0], offsets[:0].to(device), flips[:0].to(device), padding=2, mean=MEAN, std=STD)
    assert empty.shape == (0, 3, 8, 10)


def test_argument_errors():
    x = images()
    offsets, flips = draw_crop_flip(6, 4, torch.Generator().manual_seed(1))
    kw = dict(padding=4, mean=MEAN, std=STD)
    with pytest.raises(RuntimeError, match="images must be a uint8"):
        ops.crop_flip_normalise(x.float(), offsets, flips, **kw)
    with pytest.raises(RuntimeError, match="offsets must be an int64 N×2"):
        ops.crop_flip_normalise(x, offsets.t(), flips, **kw)
    with pytest.raises(RuntimeError, match="flips must be a bool tensor"):
        ops.crop_flip_normalise(x, offsets, flips.long(), **kw)
    with pytest.raises(RuntimeError, match="one mean and one std per channel"):
        ops.crop_flip_normalise(x, offsets, flips, padding=4, mean=(0.5,), std=(0.5,))
    with pytest.raises(RuntimeError, match="every std must be > 0"):
        ops.crop_flip_normalise(x, offsets, flips, padding=4, mean=MEAN, std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="needs a generator"):
        prepare(x, mean=MEAN, std=STD, padding=4)


def test_deterministic_under_a_seed():
    x = images(n=64)
    run = lambda seed: prepare(x, mean=MEAN, std=STD, padding=4, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(7), run(7)) and not torch.equal(run(7), run(8))


def dataset(n=10):
    return ImageDataset(images(n=n, c=1), torch.arange(n) % 10, 10, (0.5,), (0.5,))


def test_batches_carry_indices_and_cover_the_epoch():
    data = dataset()
    batches = list(BatchIterator(data, 4, shuffle=True, seed=1, epoch=0, channels_last=True))
    assert [len(b.idx) for b in batches] == [4, 4, 2]
    idx = torch.cat([b.idx for b in batches])
    assert sorted(idx.tolist()) == list(range(10))
    for b in batches:
        assert torch.equal(b.y, data.labels[b.idx])
        assert b.x.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(b.x, (data.images[b.idx].float() / 255 - 0.5) / 0.5)
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

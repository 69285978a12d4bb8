"""Loaders on small files written here in every supported format, and on the real archives."""
import gzip
import io
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from lpfast.datasets import DatasetError, ImageDataset, load_cifar, load_dataset, load_embedded, load_mnist


def write_idx(path, array, gz):
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def write_mnist(folder, n_train=7, n_test=3, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28))
        labels = rng.integers(0, 10, n)
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("layout", ["MNIST/raw", "raw", "."])
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_layouts(tmp_path, layout, gz):
    arrays = write_mnist(tmp_path / layout, gz=gz)
    train = load_mnist(tmp_path, "train")
    test = load_dataset("mnist", "test", tmp_path)
    assert train.images.shape == (7, 1, 28, 28) and train.images.dtype == torch.uint8
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train"][0])
    assert train.labels.tolist() == arrays["train"][1].tolist()
    assert len(test) == 3 and test.labels.tolist() == arrays["t10k"][1].tolist()


def test_mnist_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match=r"MNIST not found under .*MNIST/raw"):
        load_mnist(tmp_path, "train")
    write_mnist(tmp_path / "MNIST" / "raw")
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    images.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DatasetError, match="not a readable gzip file"):
        load_mnist(tmp_path, "train")
    images.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 20))
    with pytest.raises(DatasetError, match="magic 0x00000801, expected 0x00000803"):
        load_mnist(tmp_path, "train")
    write_idx(images.with_suffix(""), np.zeros((5, 28, 28)), gz=False)
    images.unlink()
    with pytest.raises(DatasetError, match="5 images but .* 7 labels"):
        load_mnist(tmp_path, "train")


def write_cifar_pickles(root, classes):
    folder = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True)
    key = b"labels" if classes == 10 else b"fine_labels"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if classes == 10 else ["train", "test"]
    rng = np.random.default_rng(1)
    written = {}
    for name in names:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, 4).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, key: labels}, f)
        written[name] = (data, labels)
    return folder, written


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_pickles(tmp_path, classes):
    folder, written = write_cifar_pickles(tmp_path, classes)
    train = load_cifar(tmp_path, "train", classes)
    train_names = [n for n in written if n not in ("test_batch", "test")]
    assert len(train) == 4 * len(train_names)
    assert train.labels.tolist() == sum((written[n][1] for n in train_names), [])
    first = written[train_names[0]][0][0].reshape(3, 32, 32)
    assert np.array_equal(train.images[0].numpy(), first)  # CHW order, as the pickle stores it
    test = load_cifar(tmp_path, "test", classes)
    assert test.labels.tolist() == written["test_batch" if classes == 10 else "test"][1]
    (folder / ("test_batch" if classes == 10 else "test")).write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable CIFAR pickle"):
        load_cifar(tmp_path, "test", classes)


def write_image_zip(path, top, classes, per_class, fmt):
    rng = np.random.default_rng(2)
    expected = {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for split in ("train", "test"):
            for cls in classes:
                for i in reversed(range(per_class)):  # written out of order: the loader sorts
                    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(pixels).save(buf, format=fmt)
                    ext = "jpg" if fmt == "JPEG" else "png"
                    zf.writestr(f"{top}/{split}/{cls}/{i:04d}.{ext}", buf.getvalue())
                    expected[(split, cls, i)] = pixels
    return expected


def test_cifar10_jpeg_zip(tmp_path, monkeypatch):
    monkeypatch.setenv("LPFAST_CACHE", str(tmp_path / "cache"))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_image_zip(tmp_path / "cifar10-jpeg.zip", "cifar10", classes[::-1], 2, "JPEG")
    train = load_cifar(tmp_path, "train", 10)
    assert train.images.shape == (20, 3, 32, 32)
    assert train.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert len(list((tmp_path / "cache").glob("cifar10-train-*.pt"))) == 1
    again = load_cifar(tmp_path, "train", 10)  # from the cache
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


def test_cifar100_png_zip_is_lossless(tmp_path, monkeypatch):
    monkeypatch.setenv("LPFAST_CACHE", str(tmp_path / "cache"))
    classes = [f"class{c:03d}" for c in range(100)]
    expected = write_image_zip(tmp_path / "cifar100-png.zip", "cifar100", classes, 1, "PNG")
    test = load_cifar(tmp_path, "test", 100)
    assert test.labels.tolist() == list(range(100))
    assert np.array_equal(test.images[7].permute(1, 2, 0).numpy(), expected[("test", "class007", 0)])


def test_corrupt_and_missing_archives(tmp_path, monkeypatch):
    monkeypatch.setenv("LPFAST_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match=r"CIFAR-10 not found under .*cifar-10-batches-py/ .* or cifar10-jpeg.zip"):
        load_cifar(tmp_path, "train", 10)
    (tmp_path / "cifar10-jpeg.zip").write_bytes(b"PK not a zip")
    with pytest.raises(DatasetError, match="not a readable zip archive"):
        load_cifar(tmp_path, "train", 10)
    with zipfile.ZipFile(tmp_path / "cifar100-png.zip", "w") as zf:
        zf.writestr("cifar100/test/apple/1.png", b"not a png")
    with pytest.raises(DatasetError, match="member cifar100/test/apple/1.png is not a decodable image"):
        load_cifar(tmp_path, "test", 100)
    with pytest.raises(DatasetError, match="data set 'mnist' needs --data-dir"):
        load_dataset("mnist", "train")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("cifar10", "train", tmp_path / "nowhere")


def test_embedded_default():
    train, test = load_embedded("train"), load_embedded("test")
    assert (len(train), len(test)) == (6000, 1000)
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]  # the first MNIST training labels
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert train.labels.bincount().min() > 500  # all ten digits well represented


def test_subset_is_balanced_over_classes_sorted_by_class():
    # Stored sorted by class (as the CIFAR archives are): 3 classes of 4, 5 and 3 samples.
    labels = torch.tensor([0] * 4 + [1] * 5 + [2] * 3)
    images = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1)
    data = ImageDataset(images, labels, 3, (0.0,), (1.0,))
    part = data.subset(7)  # the first two of each class, then the third of class 0
    assert part.images.flatten().tolist() == [0, 1, 2, 4, 5, 9, 10]
    assert part.labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert torch.equal(data.subset(12).images, images)
    with pytest.raises(ValueError, match="choose 1..12"):
        data.subset(13)


def test_real_mnist(shared_data):
    train, test = load_mnist(shared_data, "train"), load_mnist(shared_data, "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    embedded = load_embedded("train")
    assert torch.equal(embedded.images, train.images[:6000])  # the shipped subset is the real thing


@pytest.mark.parametrize("classes, per_train, per_test", [(10, 5000, 1000), (100, 500, 100)])
def test_real_cifar_archives(shared_data, tmp_path_factory, monkeypatch, classes, per_train, per_test):
    monkeypatch.setenv("LPFAST_CACHE", str(tmp_path_factory.mktemp("cache")))
    for split, per in (("train", per_train), ("test", per_test)):
        data = load_cifar(shared_data, split, classes)
        assert data.images.shape == (classes * per, 3, 32, 32)
        assert data.labels.bincount().tolist() == [per] * classes
        # Samples are ordered by class (sorted folder names = the official label order).
        assert torch.equal(data.labels, torch.arange(classes).repeat_interleave(per))
        assert 90 < data.images.float().mean() < 140  # decoded pixels, not zeros

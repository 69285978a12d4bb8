"""Offline image classification data: MNIST, CIFAR-10, CIFAR-100 and the embedded MNIST subset.

Each loader decodes its files once into a uint8 tensor ``N×C×H×W`` plus int64 labels
(:class:`ImageDataset`); archives of encoded images are cached on disk after the first decode,
so later runs and epochs never decode again. Sample ``i`` of a split is always the same image:
the auxiliary variables of layer-parallel training are indexed by it.

Accepted layouts under a data folder ``D``:

- MNIST: ``D/MNIST/raw``, ``D/raw`` or ``D`` holding ``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``.
- CIFAR-10: ``D/cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``), else
  ``D/cifar10-jpeg.zip`` (``cifar10/{train,test}/<class>/<n>.jpg``).
- CIFAR-100: ``D/cifar-100-python`` (``train``, ``test``), else ``D/cifar100-png.zip``
  (``cifar100/{train,test}/<fine class>/<name>.png``).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DATASET_NAMES = ("embedded", "mnist", "cifar10", "cifar100")
EMBEDDED_DIR = Path(__file__).parent / "embedded"

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_LAYOUT = "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (torchvision's layout)"
_NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class DatasetError(RuntimeError):
    """A data set is missing or unreadable; the message names the path and the expected layout."""


@dataclass
class ImageDataset:
    """One split of a data set, fully decoded: ``images`` uint8 N×C×H×W, ``labels`` int64 N."""

    images: Tensor
    labels: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(f"images must be uint8 N×C×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    def part(self, index: int, parts: int, *, equal: bool = False) -> "ImageDataset":
        """Samples ``index``, ``index + parts``, ``index + 2·parts``, ...: replica ``index``'s fixed part
        of the split, balanced over the classes where the split is stored sorted by class. ``equal``
        cuts every part to ``len // parts`` samples, so that the replicas take the same steps."""
        if not 0 <= index < parts <= len(self):
            raise ValueError(f"part {index} of {parts}: need 0 <= index < parts <= {len(self)} samples")
        taken = slice(index, parts * (len(self) // parts) if equal else None, parts)
        return ImageDataset(self.images[taken], self.labels[taken], self.num_classes, self.mean, self.std)

    def subset(self, n: int) -> "ImageDataset":
        """``n`` samples taken class by class in turn (the first of every class, then the second of
        every class, ...), kept in their original order: balanced even where the split is stored
        sorted by class, as the CIFAR archives are. Deterministic, so every worker takes the same."""
        if not 1 <= n <= len(self):
            raise ValueError(f"a subset of {n} samples: choose 1..{len(self)}")
        order = torch.sort(self.labels, stable=True).indices
        counts = torch.bincount(self.labels, minlength=self.num_classes)
        class_start = torch.cumsum(counts, 0) - counts
        rank_in_class = torch.empty_like(order)
        rank_in_class[order] = torch.arange(len(self)) - class_start[self.labels[order]]
        chosen = torch.sort(torch.argsort(rank_in_class * len(self) + torch.arange(len(self)))[:n]).values
        return ImageDataset(self.images[chosen], self.labels[chosen], self.num_classes, self.mean, self.std)


# ------------------------------------------------------------------------------------ MNIST


def _open_maybe_gz(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if path.suffix == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{path}: not a readable gzip file ({exc}); expected a gzipped IDX file") from None
    return raw


def read_idx(path: Path, expected_dims: int) -> Tensor:
    """Reads an IDX file (big-endian magic 0x0000080D, dims, then uint8 data), gzipped or not."""
    data = _open_maybe_gz(path)
    if len(data) < 4 + 4 * expected_dims:
        raise DatasetError(f"{path}: truncated IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + expected_dims:
        raise DatasetError(f"{path}: not an IDX file of {expected_dims} uint8 dims (magic {magic:#010x}, expected {0x0800 + expected_dims:#010x})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_dims)]
    offset = 4 + 4 * expected_dims
    if len(data) - offset != int(np.prod(dims)):
        raise DatasetError(f"{path}: IDX header says {dims} ({int(np.prod(dims))} bytes) but {len(data) - offset} data bytes follow")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims).copy())


def _find_mnist_file(root: Path, stem: str) -> Path | None:
    for folder in (root / "MNIST" / "raw", root / "raw", root):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist(root: str | os.PathLike, split: str) -> ImageDataset:
    """MNIST from IDX files under ``root`` (see the module doc for accepted layouts)."""
    root = Path(root)
    image_stem, label_stem = _MNIST_FILES[_check_split(split)]
    paths = [_find_mnist_file(root, s) for s in (image_stem, label_stem)]
    if None in paths:
        raise DatasetError(f"MNIST not found under {root}: expected {_MNIST_LAYOUT}")
    images = read_idx(paths[0], 3)
    labels = read_idx(paths[1], 1)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{paths[0]} has {images.shape[0]} images but {paths[1]} has {labels.shape[0]} labels")
    mean, std = _NORMALISATION["mnist"]
    return ImageDataset(images.unsqueeze(1), labels.long(), 10, mean, std)


def load_embedded(split: str) -> ImageDataset:
    """The MNIST subset shipped inside lpfast (6 000 train / 1 000 test images): the default data set."""
    return load_mnist(EMBEDDED_DIR, split)


# ------------------------------------------------------------------------------ CIFAR pickles


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None


def _from_cifar_batches(paths: list[Path], label_key: bytes) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for path in paths:
        batch = _unpickle(path)
        if b"data" not in batch or label_key not in batch:
            raise DatasetError(f"{path}: CIFAR pickle without {b'data'!r} and {label_key!r} entries")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetError(f"{path}: data has shape {data.shape}, expected N×3072")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.tensor(batch[label_key], dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


# ------------------------------------------------------------------------------ image archives


def _cache_dir() -> Path:
    return Path(os.environ.get("LPFAST_CACHE", Path.home() / ".cache" / "lpfast"))


def _decode_image_archive(path: Path, top: str, split: str) -> tuple[Tensor, Tensor, list[str]]:
    """Decodes ``top/split/<class>/<file>`` members of a zip; labels follow sorted class names."""
    from PIL import Image, UnidentifiedImageError

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path}: not a readable zip archive ({exc})") from None
    with zf:
        prefix = f"{top}/{split}/"
        members = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not members:
            raise DatasetError(f"{path}: no members under {prefix}<class>/ (expected {top}/{{train,test}}/<class>/<image>)")
        classes = sorted({n[len(prefix) :].split("/")[0] for n in members})
        class_index = {c: i for i, c in enumerate(classes)}

        def order(name: str):
            cls, file = name[len(prefix) :].split("/", 1)
            stem = Path(file).stem
            return class_index[cls], (int(stem) if stem.isdigit() else 0), stem

        members.sort(key=order)
        images = torch.empty((len(members), 3, 32, 32), dtype=torch.uint8)
        labels = torch.empty(len(members), dtype=torch.long)
        for i, name in enumerate(members):
            try:
                with Image.open(io.BytesIO(zf.read(name))) as img:
                    pixels = np.array(img.convert("RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise DatasetError(f"{path}: member {name} is not a decodable image ({exc})") from None
            if pixels.shape != (32, 32, 3):
                raise DatasetError(f"{path}: member {name} has shape {pixels.shape}, expected 32×32×3")
            images[i] = torch.from_numpy(pixels).permute(2, 0, 1)
            labels[i] = class_index[name[len(prefix) :].split("/")[0]]
    return images, labels, classes


def _cached_archive(path: Path, top: str, split: str) -> tuple[Tensor, Tensor, int]:
    """Decodes an archive split once; later calls read the uint8 tensors from the cache."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{split}".encode()).hexdigest()[:16]
    cache = _cache_dir() / f"{top}-{split}-{key}.pt"
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
        return blob["images"], blob["labels"], blob["num_classes"]
    images, labels, classes = _decode_image_archive(path, top, split)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    torch.save({"images": images, "labels": labels, "num_classes": len(classes)}, tmp)
    os.replace(tmp, cache)
    return images, labels, len(classes)


# ------------------------------------------------------------------------------------ CIFAR


def load_cifar(root: str | os.PathLike, split: str, num_classes: int) -> ImageDataset:
    """CIFAR-10 or CIFAR-100 from the python pickles, or from the image archive of ../shared/data."""
    root = Path(root)
    _check_split(split)
    if num_classes == 10:
        folder, zip_name, top = root / "cifar-10-batches-py", root / "cifar10-jpeg.zip", "cifar10"
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = b"labels"
    elif num_classes == 100:
        folder, zip_name, top = root / "cifar-100-python", root / "cifar100-png.zip", "cifar100"
        files, label_key = [split], b"fine_labels"
    else:
        raise ValueError(f"CIFAR has 10 or 100 classes, got {num_classes}")
    if folder.is_dir():
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DatasetError(f"{folder}: missing {', '.join(missing)} (expected the standard python-pickle layout)")
        images, labels = _from_cifar_batches([folder / f for f in files], label_key)
    elif zip_name.is_file():
        images, labels, found = _cached_archive(zip_name, top, split)
        if found != num_classes:
            raise DatasetError(f"{zip_name}: {found} class folders, expected {num_classes}")
    else:
        raise DatasetError(f"CIFAR-{num_classes} not found under {root}: expected {folder.name}/ (python pickles) or {zip_name.name}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"CIFAR-{num_classes} under {root}: labels outside 0..{num_classes - 1}")
    mean, std = _NORMALISATION[top]
    return ImageDataset(images, labels, num_classes, mean, std)


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Loads ``name`` (one of :data:`DATASET_NAMES`) from ``data_dir``; ``embedded`` needs none."""
    if name == "embedded":
        return load_embedded(split)
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown data set {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    if data_dir is None:
        raise DatasetError(f"data set {name!r} needs --data-dir (a folder holding it; see `lpfast train --help`)")
    if not Path(data_dir).is_dir():
        raise DatasetError(f"data folder {data_dir} does not exist")
    if name == "mnist":
        return load_mnist(data_dir, split)
    return load_cifar(data_dir, split, 10 if name == "cifar10" else 100)

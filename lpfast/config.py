"""The options of a training run, validated when the run is configured."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from lpfast.datasets import DATASET_NAMES
from lpfast.models import build_model

SCHEDULES = ("cosine", "step")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's numbers. ``device`` and ``threads`` only decide where it
    runs, so a run may resume elsewhere; every other field must match on resume.

    ``augment`` None means the data set's usual choice (on for CIFAR, off for MNIST).
    ``channels_last`` None means on for CUDA, off on the CPU (where it measured slower).
    """

    model: str = "mnist_resnet"
    dataset: str = "embedded"
    data_dir: str | None = None
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    augment: bool | None = None
    seed: int = 0
    eval_batch_size: int = 1000
    device: str = "cpu"
    threads: int | None = None
    channels_last: bool | None = None

    RUN_LOCATION_FIELDS = ("device", "threads", "data_dir")

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"dataset must be one of {', '.join(DATASET_NAMES)}, got {self.dataset!r}")
        build_model(self.model)  # raises a ValueError naming the valid models
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    @property
    def use_augmentation(self) -> bool:
        return self.augment if self.augment is not None else self.dataset.startswith("cifar")

    def use_channels_last(self, device_type: str) -> bool:
        return self.channels_last if self.channels_last is not None else device_type == "cuda"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return cls(**data)

    def differences(self, other: "TrainConfig") -> dict[str, tuple]:
        """Fields (other than where the run executes) whose values differ: ``{name: (self, other)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in self.RUN_LOCATION_FIELDS and a[k] != b[k]}

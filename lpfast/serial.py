"""Layer-serial training: ordinary end-to-end backprop, the baseline every speed-up is measured against."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lpfast import checkpoint as ckpt
from lpfast.batches import BatchIterator
from lpfast.config import TrainConfig
from lpfast.datasets import ImageDataset, load_dataset
from lpfast.models import build_model
from lpfast.progress import Progress
from lpfast.schedule import lr_factor

CIFAR_PADDING = 4


class RunFolderError(RuntimeError):
    """A run folder cannot be started or resumed as asked; the message says what to change."""


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageDataset, *, batch_size: int, device: torch.device, channels_last: bool) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (in %) of ``model`` in eval mode over ``data``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for batch in BatchIterator(data, batch_size, shuffle=False, device=device, channels_last=channels_last):
        logits = model(batch.x)
        loss_sum += F.cross_entropy(logits, batch.y, reduction="sum")
        correct += (logits.argmax(1) == batch.y).sum()
    model.train(was_training)
    n = max(len(data), 1)
    return loss_sum.item() / n, 100.0 * correct.item() / n


class SerialTrainer:
    """Trains ``config.model`` on ``config.dataset`` with SGD + momentum + weight decay.

    With ``run_dir`` the trainer keeps a run folder (``config.json``, ``metrics.jsonl``,
    ``checkpoint.pt`` rewritten atomically after every epoch); ``resume=True`` continues the run
    found there from its last checkpoint, with the same numbers an uninterrupted run would give.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
        log: Callable[[str], None] = print,
        train_data: ImageDataset | None = None,
        test_data: ImageDataset | None = None,
    ) -> None:
        self.log = log
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if resume:
            config = self._check_resumable(config)
        self.config = config
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"--device {config.device} asked for, but torch sees no CUDA device; use --device cpu")
        self.channels_last = config.use_channels_last(self.device.type)
        self.train_data = train_data if train_data is not None else load_dataset(config.dataset, "train", config.data_dir)
        self.test_data = test_data if test_data is not None else load_dataset(config.dataset, "test", config.data_dir)
        if len(self.train_data) < config.batch_size:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {len(self.train_data)} training samples")

        torch.manual_seed(config.seed)
        model = build_model(config.model, in_channels=self.train_data.in_channels, num_classes=self.train_data.num_classes)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay, nesterov=config.nesterov,
        )
        self.steps_per_epoch = len(self.train_data) // config.batch_size
        total = self.steps_per_epoch * config.epochs
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total, kind=config.schedule, warmup_steps=warmup)
        )
        self.epoch = 0  # epochs completed
        if resume:
            self._load_checkpoint()
        elif self.run_dir is not None:
            self._start_run_folder()

    # ---------------------------------------------------------------- run folder

    def _start_run_folder(self) -> None:
        assert self.run_dir is not None
        if (self.run_dir / ckpt.CHECKPOINT_FILE).exists():
            raise RunFolderError(f"{self.run_dir} already holds a run: pass --resume to continue it, or choose a new --out")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / ckpt.METRICS_FILE).unlink(missing_ok=True)
        ckpt.write_config(self.run_dir, self.config.to_dict())

    def _check_resumable(self, config: TrainConfig) -> TrainConfig:
        if self.run_dir is None or not (self.run_dir / ckpt.CHECKPOINT_FILE).exists():
            raise RunFolderError(f"nothing to resume: {self.run_dir} has no {ckpt.CHECKPOINT_FILE} (start the run without --resume)")
        saved = TrainConfig.from_dict(ckpt.read_config(self.run_dir))
        diff = saved.differences(config)
        if diff:
            listed = ", ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in diff.items())
            raise RunFolderError(f"cannot resume {self.run_dir} with different options ({listed}); pass the run's options or choose a new --out")
        return config

    def _load_checkpoint(self) -> None:
        assert self.run_dir is not None
        state = torch.load(self.run_dir / ckpt.CHECKPOINT_FILE, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        ckpt.truncate_metrics(self.run_dir, self.epoch)
        self.log(f"resumed {self.run_dir} after epoch {self.epoch}")

    def save_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "config": self.config.to_dict(),
        }
        ckpt.atomic_save(state, self.run_dir / ckpt.CHECKPOINT_FILE)

    # ---------------------------------------------------------------- training

    def train_epoch(self) -> dict:
        """One epoch of backprop; returns its training metrics and advances ``self.epoch``."""
        cfg = self.config
        batches = BatchIterator(
            self.train_data, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=self.epoch,
            augment_padding=CIFAR_PADDING if cfg.use_augmentation else 0, drop_last=True,
            device=self.device, channels_last=self.channels_last,
        )
        self.model.train()
        # Accumulate on the device; read back once per epoch (and when the progress line redraws).
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        progress = Progress(len(batches), f"epoch {self.epoch + 1}/{cfg.epochs}")
        start = time.perf_counter()
        for batch in batches:
            logits = self.model(batch.x)
            loss = F.cross_entropy(logits, batch.y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += loss.detach() * batch.y.numel()
            correct += (logits.detach().argmax(1) == batch.y).sum()
            seen += batch.y.numel()
            progress.update(1, lambda: f"loss {loss.item():.4f}")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        progress.close()
        self.epoch += 1
        return {
            "epoch": self.epoch,
            "train_loss": loss_sum.item() / seen,
            "train_acc": 100.0 * correct.item() / seen,
            "epoch_time_s": elapsed,
            "samples_per_s": seen / elapsed,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def evaluate(self) -> tuple[float, float]:
        return evaluate(self.model, self.test_data, batch_size=self.config.eval_batch_size, device=self.device, channels_last=self.channels_last)

    def fit(self) -> list[dict]:
        """Trains the remaining epochs; after each, evaluates, checkpoints and logs a metrics record."""
        records = []
        while self.epoch < self.config.epochs:
            record = self.train_epoch()
            record["test_loss"], record["test_acc"] = self.evaluate()
            self.save_checkpoint()
            if self.run_dir is not None:
                ckpt.append_metrics(self.run_dir, record)
            self.log(
                f"epoch {record['epoch']}/{self.config.epochs}  train loss {record['train_loss']:.4f}  "
                f"test acc {record['test_acc']:.2f}%  {record['epoch_time_s']:.1f}s  {record['samples_per_s']:.0f} samples/s"
            )
            records.append(record)
        return records

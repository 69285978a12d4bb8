"""Training runs: serial backprop (the baseline every speed-up is measured against; data-parallel
with DistributedDataParallel under torchrun) or the layer-parallel phase, with run folders,
metrics and exact resume."""
from __future__ import annotations

import datetime
import math
import re
import resource
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lpfast import checkpoint as ckpt
from lpfast.auxvars import STORE_DTYPES
from lpfast.batches import BatchIterator
from lpfast.config import TrainConfig
from lpfast.datasets import ImageDataset, load_dataset
from lpfast.filters import WIRE_DTYPES, DsFilter
from lpfast.mesh import build_mesh
from lpfast.models import build_model
from lpfast.parallel import LayerParallel
from lpfast.precision import PRECISIONS, Precision
from lpfast.progress import Progress
from lpfast.schedule import lr_factor
from lpfast.transport import DistTransport, LocalTransport, summed_over_workers

CIFAR_PADDING = 4


#: Steps between reads of the divergence flag: the flag accumulates on the device, so the check
#: costs one device synchronisation (and, across workers, one all-reduce) every this many steps.
FINITE_CHECK_EVERY = 20
NO_STEP = 2**62
#: A step loss above this counts as divergence, like a non-finite one: no converging run's
#: cross-entropy or penalty gets near it, and a diverging one can grow for many steps before
#: it overflows (at --lr 50 a ResNet's cross-entropy sat near 1e23 for whole epochs).
DIVERGED_LOSS = 1e6


class RunFolderError(RuntimeError):
    """A run folder cannot be started or resumed as asked; the message says what to change."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or auxiliary update; the last good checkpoint is kept."""


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageDataset, *, batch_size: int, device: torch.device, channels_last: bool,
             precision: Precision | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (in %) of ``model`` in eval mode over ``data`` (its forward
    under ``precision``'s autocast)."""
    was_training = model.training
    model.eval()
    precision = precision or Precision(None, model_dtype=next(model.parameters()).dtype, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for batch in BatchIterator(data, batch_size, shuffle=False, device=device, channels_last=channels_last):
        with precision.autocast():
            logits = model(batch.x)
        loss_sum += F.cross_entropy(precision.for_loss(logits), batch.y, reduction="sum")
        correct += (logits.argmax(1) == batch.y).sum()
    model.train(was_training)
    n = max(len(data), 1)
    return loss_sum.item() / n, 100.0 * correct.item() / n


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside ``torch.distributed``."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


class Trainer:
    """Trains ``config.model`` on ``config.dataset`` by ``config.method``.

    ``serial``: SGD + momentum + weight decay on the whole network; with ``torch.distributed``
    initialised, data-parallel (DistributedDataParallel): every rank holds the whole network and
    trains on its 1/world slice of each batch, gradients averaged across ranks (batch-norm
    statistics stay per rank, as plain DDP has them). ``penalty`` / ``al``: the
    layer-parallel phase through :class:`~lpfast.parallel.LayerParallel`, all stages in this
    process, or one stage per rank when ``torch.distributed`` is initialised with one rank per stage.

    With ``run_dir`` the trainer keeps a run folder (``config.json`` and ``metrics.jsonl``
    from rank 0, one checkpoint per rank after every epoch, committed for all ranks at once:
    :mod:`lpfast.checkpoint`); ``resume=True`` continues it from its last committed checkpoint
    with the numbers an uninterrupted run would give.
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
        self.rank, self.world = distributed_rank()
        self.log = log if self.rank == 0 else (lambda line: None)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if resume:
            self._check_resumable(config)
        self.config = config
        self.data_parallel = self.world > 1 and config.method == "serial"
        if self.world > 1 and not self.data_parallel and self.world != config.workers_per_replica * config.replicas:
            raise ValueError(
                f"{self.world} workers need --stages K --replicas D with K·D = {self.world} and --method penalty|al (one stage "
                f"per worker; a looped --serial-schedule puts two on one), or --method serial (data-parallel); got --method "
                f"{config.method} --stages {config.stages} --replicas {config.replicas} --serial-schedule {config.serial_schedule}"
            )
        if self.world == 1 and config.replicas > 1:
            raise ValueError(f"--replicas {config.replicas} runs under torchrun, one stage of one replica per worker: "
                             f"launch torchrun --nproc-per-node {config.stages * config.replicas}")
        if self.data_parallel and config.batch_size % self.world:
            raise ValueError(f"data-parallel training splits each batch over {self.world} workers: "
                             f"choose a --batch-size divisible by {self.world} (got {config.batch_size})")
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"--device {config.device} asked for, but torch sees no CUDA device; use --device cpu")
        self.channels_last = config.channels_last
        self.train_data = train_data if train_data is not None else load_dataset(config.dataset, "train", config.data_dir)
        self.test_data = test_data if test_data is not None else load_dataset(config.dataset, "test", config.data_dir)
        if config.train_subset is not None:
            self.train_data = self.train_data.subset(config.train_subset)
        if config.test_subset is not None:
            self.test_data = self.test_data.subset(config.test_subset)
        if len(self.train_data) < config.batch_size:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {len(self.train_data)} training samples")
        # K stages × D replicas: which stage and replica this worker is, the groups it talks to.
        self.mesh = build_mesh(config.workers_per_replica, config.replicas, placement=config.placement) \
            if self.world > 1 and not self.data_parallel else None
        self.replica = self.mesh.replica if self.mesh is not None else 0
        self.batch_size = config.batch_size // config.replicas  # this replica's share of every batch
        if config.replicas > 1:  # each replica trains on, and tests, its own part of the data
            self.train_data = self.train_data.part(self.replica, config.replicas, equal=True)
            self.test_data = self.test_data.part(self.replica, config.replicas)

        torch.manual_seed(config.seed)
        model = build_model(config.model, in_channels=self.train_data.in_channels, num_classes=self.train_data.num_classes,
                            cifar_stem=config.cifar_stem)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)

        def make_optimizer(params):
            return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=config.nesterov)

        self.lp: LayerParallel | None = None
        if config.method == "serial":
            self.optimizers = [make_optimizer(self.model.parameters())]
            # The module the training forward runs through; self.model stays the bare network.
            self.train_module: nn.Module = nn.parallel.DistributedDataParallel(self.model) if self.data_parallel else self.model
        else:
            transport = DistTransport(datetime.timedelta(seconds=config.dist_timeout), self.mesh) if self.world > 1 else LocalTransport()
            self.lp = LayerParallel(
                self.model, optimizer=make_optimizer, stages=config.stage_blocks or config.stages, method=config.method,
                dataset_size=len(self.train_data), input_shape=tuple(self.train_data.images.shape[1:]),
                beta0=config.beta0, beta_growth=config.beta_growth, beta_max=config.beta_max,
                lam_step=config.lam_step, regression_lr_scale=config.regression_lr_scale, mu_every=config.mu_every,
                local_loss=config.local_loss, store_dtype=STORE_DTYPES[config.store_dtype],
                store_location=config.store_location, memory_format=memory_format, transport=transport,
                aux=config.aux, aux_depth=config.aux_depth, aux_width=config.aux_width,
                wire_filter=DsFilter(config.ds_factor, WIRE_DTYPES.get(config.wire_dtype), config.ds_mode),
                store_filter=DsFilter(config.store_ds_factor, None, config.ds_mode),
                serial_schedule=config.serial_schedule, restore_norms=config.restore_norms,
                predict_weights=config.predict_weights, gradient_shrink=config.gradient_shrink, autocast=PRECISIONS[config.precision],
            )
            self.optimizers = self.lp.all_optimizers()
        # The forwards' autocast and fp16's loss scale: the layer-parallel run's own, or backprop's.
        self.precision = self.lp.precision if self.lp is not None else Precision(
            PRECISIONS[config.precision], model_dtype=next(self.model.parameters()).dtype, device=self.device)
        self.steps_per_epoch = len(self.train_data) // self.batch_size
        total = self.steps_per_epoch * config.epochs
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, kind=config.schedule, warmup_steps=warmup))
            for opt in self.optimizers
        ]
        self.epoch = 0  # epochs completed
        self._mid_epoch: dict | None = None  # running totals of the epoch under way, from a mid-epoch checkpoint
        if resume:
            self._load_checkpoint()
        elif self.run_dir is not None:
            self._start_run_folder()

    # ---------------------------------------------------------------- run folder

    def _start_run_folder(self) -> None:
        assert self.run_dir is not None
        if ckpt.committed(self.run_dir) is not None:
            raise RunFolderError(f"{self.run_dir} already holds a run: pass --resume to continue it, or choose a new --out")
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / ckpt.METRICS_FILE).unlink(missing_ok=True)
            ckpt.write_config(self.run_dir, self.config.to_dict())

    def _check_resumable(self, config: TrainConfig) -> None:
        done = ckpt.committed(self.run_dir) if self.run_dir is not None else None
        if done is None:
            raise RunFolderError(f"nothing to resume: {self.run_dir} has no committed checkpoint (start the run without --resume)")
        # Options first: another --stages or --replicas is what the user changed, the worker count follows.
        saved = TrainConfig.from_dict(ckpt.read_config(self.run_dir))
        diff = saved.differences(config)
        if diff:
            listed = ", ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in diff.items())
            raise RunFolderError(f"cannot resume {self.run_dir} with different options ({listed}); pass the run's options or choose a new --out")
        if done["world"] != self.world:
            raise RunFolderError(f"{self.run_dir} was checkpointed by {done['world']} worker(s): resume it with {done['world']}, not {self.world}")

    def _load_checkpoint(self) -> None:
        done = ckpt.committed(self.run_dir)
        state = torch.load(ckpt.rank_checkpoint(self.run_dir, self.rank, done["epoch"], done["step"]), map_location=self.device, weights_only=True)
        if self.lp is None:
            self.model.load_state_dict(state["model"])
            self.optimizers[0].load_state_dict(state["optimizer"])
            if self.precision.scaler is not None:
                self.precision.scaler.load_state_dict(state["loss_scaler"])
        else:
            self.lp.load_state_dict(state["layer_parallel"])
        for scheduler, saved in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(saved)
        self.epoch = state["epoch"]
        self._mid_epoch = state["mid_epoch"]
        if self.rank == 0:
            ckpt.truncate_metrics(self.run_dir, self.epoch)
        at = f" and {self._mid_epoch['step']} steps of epoch {self.epoch + 1}" if self._mid_epoch else ""
        self.log(f"resumed {self.run_dir} after epoch {self.epoch}{at}")

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def save_checkpoint(self, mid_epoch: dict | None = None) -> float:
        """Writes this rank's checkpoint of the epochs done (and, with ``mid_epoch``, of the steps of
        the epoch under way with its running totals) and commits it together with every rank's.
        Returns the seconds it took."""
        if self.run_dir is None:
            return 0.0
        start = time.perf_counter()
        step = mid_epoch["step"] if mid_epoch else 0
        path = ckpt.rank_checkpoint(self.run_dir, self.rank, self.epoch, step)
        state = {"epoch": self.epoch, "mid_epoch": mid_epoch, "config": self.config.to_dict(),
                 "schedulers": [s.state_dict() for s in self.schedulers]}
        if self.lp is None:
            state |= {"model": self.model.state_dict(), "optimizer": self.optimizers[0].state_dict(),
                      "loss_scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else None}
        else:
            state["layer_parallel"] = self.lp.state_dict()
        try:
            ckpt.atomic_save(state, path)
        except OSError as exc:
            done = ckpt.committed(self.run_dir)
            kept = f"the checkpoint of epoch {done['epoch']} is intact" if done is not None else "no earlier checkpoint exists"
            raise RunFolderError(f"cannot write the checkpoint of epoch {self.epoch} to {self.run_dir}: {exc.strerror or exc}; {kept}") from None
        self._barrier()
        if self.rank == 0:
            ckpt.commit(self.run_dir, self.epoch, step, self.world)
        self._barrier()
        ckpt.remove_uncommitted(self.run_dir, self.rank, path)
        return time.perf_counter() - start

    # ---------------------------------------------------------------- training

    def _train_batches(self, *, initialising: bool = False, start: int = 0) -> BatchIterator:
        """This epoch's training batches from batch ``start``; ``initialising``: the same batches
        un-augmented, then the samples ``drop_last`` leaves out, so that the λ pass reaches every sample."""
        cfg = self.config
        augment = cfg.use_augmentation(self.epoch) and not initialising
        return BatchIterator(
            self.train_data, self.batch_size, shuffle=True, seed=cfg.seed, epoch=self.epoch, part=self.replica,
            augment_padding=CIFAR_PADDING if augment else 0, drop_last=not initialising,
            device=self.device, channels_last=self.channels_last,
            shard=(self.rank, self.world) if self.data_parallel else (0, 1), start=start,
            flip=cfg.use_flips(self.epoch) and not initialising,
        )

    def _eval_batches(self, data: ImageDataset) -> BatchIterator:
        return BatchIterator(data, self.config.eval_batch_size, shuffle=False, device=self.device, channels_last=self.channels_last)

    def train_epoch(self) -> dict:
        """One epoch; returns its training metrics and advances ``self.epoch``."""
        cfg = self.config
        phase = cfg.phase(self.epoch)
        if self.lp is not None and phase == "parallel" and not self.lp.initialised:
            start = time.perf_counter()
            # This epoch's own batches, so each sample's λ comes from the batch-norm statistics of the
            # batch it first trains in. In file order the CIFAR archives, sorted by class, would give
            # single-class batches and skewed statistics.
            self.lp.initialise((b.x, b.idx) for b in self._train_batches(initialising=True))
            self.log(f"initialised auxiliary variables ({self.lp.aux_nbytes() / 2**20:.1f} MiB on this worker) in {time.perf_counter() - start:.1f}s")
        stages = self.lp.num_stages if self.lp is not None else 1
        # Running totals, on the device (read back once per epoch and when the progress line redraws);
        # a mid-epoch checkpoint holds them, with the step and the training time so far.
        totals = self._mid_epoch or {
            "step": 0, "elapsed": 0.0, "checkpoint_s": 0.0, "seen": 0,
            "loss_sum": torch.zeros((), dtype=torch.float64, device=self.device),
            "correct": torch.zeros((), dtype=torch.int64, device=self.device),
            # Per stage, the first step whose loss diverged (NO_STEP: none yet).
            "first_bad": torch.full((stages,), NO_STEP, dtype=torch.int64, device=self.device),
        }
        self._mid_epoch = None
        loss_sum, correct, first_bad = totals["loss_sum"], totals["correct"], totals["first_bad"]
        seen = totals["seen"]
        batches = self._train_batches(start=totals["step"])
        self.model.train()
        label = f"epoch {self.epoch + 1}/{cfg.epochs}" + (f" ({phase})" if self.lp is not None else "")
        progress = Progress(len(batches), label) if self.rank == 0 else None
        if progress is not None:
            progress.update(totals["step"])
        last_loss = None
        last_scale_update = totals["step"] - totals["step"] % FINITE_CHECK_EVERY  # the scale changes at the guard's reads
        checkpoint_s = totals["checkpoint_s"]
        start = time.perf_counter() - totals["elapsed"]
        for step, batch in enumerate(batches, start=totals["step"]):
            if self.lp is None:
                with self.precision.autocast():
                    logits = self.train_module(batch.x)
                loss = F.cross_entropy(self.precision.for_loss(logits), batch.y)
                self.optimizers[0].zero_grad(set_to_none=True)
                self.precision.scale(loss).backward()
                self.precision.step(self.optimizers[0], list(self.model.parameters()))
                loss_sum += loss.detach() * batch.y.numel()
                correct += (logits.detach().argmax(1) == batch.y).sum()
                last_loss = loss.detach()
                watched = {0: last_loss}
            elif phase == "parallel":
                watched = self.lp.step(batch.x, batch.y, batch.idx, batch.flips, micro_batches=cfg.parallel_micro_batches)
                last_loss = watched[min(watched)] if watched else last_loss  # empty while a pipeline fills
            else:
                last_loss = self.lp.serial_step(batch.x, batch.y, micro_batches=cfg.micro_batches)
                watched = {} if last_loss is None else {stages - 1: last_loss}
            for s, value in watched.items():
                healthy = value.abs() <= DIVERGED_LOSS  # False for NaN too
                first_bad[s] = torch.where(healthy | (first_bad[s] != NO_STEP), first_bad[s], step)
            if (step + 1) % FINITE_CHECK_EVERY == 0 or step + 1 == len(batches):
                self._stop_if_diverged(first_bad)
                self._update_loss_scale(step + 1 - last_scale_update)
                last_scale_update = step + 1
            with warnings.catch_warnings():
                # A pipelined stage's optimizer first steps once the pipeline has filled, yet its
                # schedule counts every batch like the others': torch's order warning does not apply.
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before `optimizer.step()`"))
                for scheduler in self.schedulers:
                    scheduler.step()
            seen += batch.y.numel()
            if progress is not None:
                progress.update(1, lambda: f"loss {last_loss.item():.4f}" if last_loss is not None else "")
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < len(batches):
                if self.lp is not None:
                    self.lp.drain()  # a pipelined parallel phase's batches in flight finish at every checkpoint
                tick = time.perf_counter()
                checkpoint_s += self.save_checkpoint({
                    "step": step + 1, "elapsed": tick - start, "checkpoint_s": checkpoint_s, "seen": seen,
                    "loss_sum": loss_sum, "correct": correct, "first_bad": first_bad})
                start += time.perf_counter() - tick  # the epoch's training time leaves the checkpoints out
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        if progress is not None:
            progress.close()
        record = {"epoch": self.epoch + 1, "method": cfg.method}
        if self.lp is None:
            totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=self.device)])
            if self.data_parallel:
                dist.all_reduce(totals)
            record |= {"train_loss": totals[0].item() / totals[2].item(), "train_acc": 100.0 * totals[1].item() / totals[2].item()}
            seen = int(totals[2].item())
        else:
            stats = self.lp.end_epoch()
            record |= {"train_loss": stats["stage_loss"][-1]} | stats
        seen *= cfg.replicas  # every replica trained on as many samples
        record |= {"epoch_time_s": elapsed, "samples_per_s": seen / elapsed, "lr": self.optimizers[0].param_groups[0]["lr"],
                   "peak_rss_mb": self._peak_memory_mb()}
        if cfg.checkpoint_every:
            record["mid_epoch_checkpoint_s"] = checkpoint_s
        self.epoch += 1
        return record

    def _update_loss_scale(self, steps: int) -> None:
        """With fp16: one loss scale agreed across the workers, at the divergence guard's read."""
        if self.lp is not None:
            self.lp.update_loss_scale()
            return
        if self.precision.scaler is not None:
            self.precision.scaler.agree(summed_over_workers if self.data_parallel else lambda values: values, steps)

    def _stop_if_diverged(self, first_bad: Tensor) -> None:
        """Raises :class:`DivergenceError` on every worker if any worker saw a diverged loss."""
        flags = first_bad.clone()
        if self.world > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        bad = [(int(step), s) for s, step in enumerate(flags.tolist()) if step != NO_STEP]
        if not bad:
            return
        step, stage = min(bad)
        raise self._divergence(f"the loss of {f'stage {stage}' if self.lp is not None else 'the network'} was not finite or "
                               f"above {DIVERGED_LOSS:g}", f"step {step + 1}")

    def _divergence(self, what: str, when: str) -> DivergenceError:
        done = ckpt.committed(self.run_dir) if self.run_dir is not None else None
        kept = (f"the last good checkpoint (after epoch {done['epoch']}) is kept in {self.run_dir}" if done is not None
                else "no checkpoint was written")
        return DivergenceError(
            f"training diverged: {what} at epoch {self.epoch + 1}, {when} "
            f"(learning rate {self.optimizers[0].param_groups[0]['lr']:.3g}); {kept}. Try a smaller --lr"
            + (" or --beta-max" if self.lp is not None else ""))

    def _peak_memory_mb(self) -> float:
        """Largest resident set of any worker so far (MiB; device memory instead on a GPU)."""
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        value = torch.tensor(float(peak), dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return value.item()

    def evaluate(self, *, through_wire: bool = False) -> tuple[float, float]:
        """Test loss and accuracy; ``through_wire``: with the DS filter at every cut (see LayerParallel.evaluate)."""
        if self.lp is not None:
            return self.lp.evaluate(((b.x, b.y) for b in self._eval_batches(self.test_data)), through_wire=through_wire)
        return evaluate(self.model, self.test_data, batch_size=self.config.eval_batch_size, device=self.device,
                        channels_last=self.channels_last, precision=self.precision)

    def fit(self, pause_after: int | None = None) -> list[dict]:
        """Trains the remaining epochs (at most ``pause_after`` of them; the run then continues
        with ``resume=True``); after each, evaluates, checkpoints and logs a metrics record."""
        records = []
        stop = self.config.epochs if pause_after is None else min(self.config.epochs, self.epoch + pause_after)
        while self.epoch < stop:
            record = self.train_epoch()
            violation = record.get("violation") or []
            if not all(math.isfinite(v) for v in violation):  # a non-finite λ-update shows here
                self.epoch -= 1
                raise self._divergence(f"the constraint violation of cut(s) {[c for c, v in enumerate(violation) if not math.isfinite(v)]} "
                                       "was not finite", "its end")
            # A pipelined epoch with a wire filter trained the network with the filter in it: that is the network to test.
            through_wire = (record.get("phase") == "parallel" and self.config.aux == "pipelined"
                            and (self.config.ds_factor > 1 or self.config.wire_dtype is not None))
            record["test_loss"], record["test_acc"] = self.evaluate(through_wire=through_wire)
            if through_wire:
                record["tested_through_wire"] = True
            if self.lp is not None and self.config.restore_norms and self.config.left_parallel_phase(self.epoch):
                factors = [f for stage in self.lp.restore_weight_norms().values() for f in stage]
                if factors:
                    self.log(f"restored the regressing stages' weight norms: factors {min(factors):.3f} to {max(factors):.3f}")
            if self.lp is not None and self.config.lambda_freed(self.epoch):
                self.lp.release_aux()  # serial epochs come next: λ leaves memory and checkpoints
            # Metrics first: a record of an epoch whose checkpoint never committed is dropped on resume.
            if self.run_dir is not None and self.rank == 0:
                ckpt.append_metrics(self.run_dir, record)
            self.save_checkpoint()
            line = (
                f"epoch {record['epoch']}/{self.config.epochs}  train loss {record['train_loss']:.4f}  "
                f"test acc {record['test_acc']:.2f}%  {record['epoch_time_s']:.1f}s  {record['samples_per_s']:.0f} samples/s"
            )
            if self.lp is not None and record["violation"] is not None:
                line += "  beta {:.3g}  violation {}".format(record["beta"], " ".join(f"{v:.4f}" for v in record["violation"]))
            if self.lp is not None:
                line += f"  ({record['phase']})"
            self.log(line)
            records.append(record)
        return records

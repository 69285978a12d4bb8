"""The options of a training run, validated when the run is configured."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from lpfast.auxvars import STORE_DTYPES, STORE_LOCATIONS
from lpfast.datasets import DATASET_NAMES
from lpfast.filters import WIRE_DTYPES, DsFilter
from lpfast.mesh import PLACEMENTS
from lpfast.models import TORCHVISION_PREFIX, TORCHVISION_RESNETS, build_model
from lpfast.parallel import AUX_KINDS, DEFAULT_LOCAL_LOSS, METHODS as PARALLEL_METHODS, default_aux
from lpfast.pipelined import required_default_parts
from lpfast.precision import PRECISIONS
from lpfast.serial import SCHEDULES as SERIAL_SCHEDULES, STAGES_PER_WORKER

SCHEDULES = ("cosine", "step")
METHODS = ("serial", *PARALLEL_METHODS)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's numbers. ``device`` and ``threads`` only decide where it
    runs, so a run may resume elsewhere; every other field must match on resume.

    ``model`` names an lpfast model or ``torchvision:NAME``; ``cifar_stem`` gives the latter the
    3×3 stride-1 stem without max-pool for 32×32 images.
    ``augment`` None means the data set's usual choice (on for CIFAR, off for MNIST).
    ``channels_last`` stores activations and weights channels-last (on this project's 2-core CPU a
    resnet20 batch of 128 trains in 0.84× the time of the contiguous layout, mnist_resnet 0.77×).
    ``method`` ``serial`` is backprop; ``penalty`` and ``al`` train ``stages`` stages layer-parallel
    (see :class:`lpfast.parallel.LayerParallel` for the β, λ-step and store options);
    ``stage_blocks`` fixes the block count of each stage instead of balancing them. ``replicas`` D
    trains D replicas of the K stages under torchrun on K·D workers (:mod:`lpfast.mesh`; its
    ``placement`` says which ranks are neighbours): replica r trains on its fixed part of the
    training set (every D-th sample from the r-th, shuffled within it) with ``batch_size``/D of every
    batch, each stage's gradient averaged over its replicas, and evaluates its part of the test set.
    ``parallel_epochs`` P makes a serial-parallel hybrid: P parallel epochs, then ``epochs - P``
    epochs of backprop through the same stages (``micro_batches`` per batch across workers, pipelined
    under ``serial_schedule``, ``1f1b`` or ``gpipe``), under one learning-rate schedule. None means
    every epoch is parallel. ``serial_warmup`` W puts W such serial epochs before the parallel ones,
    so λ is initialised from a network trained end to end. ``parallel_blocks`` B spreads the P
    parallel and the serial epochs after them over B alternating blocks (P/B parallel, then that
    block's share of the serial ones), each parallel block starting from a fresh λ pass of the
    network as the serial epochs left it. ``restore_norms`` scales the regressing stages' batch-normed
    weights back to their lengths at the λ pass whenever a parallel phase ends (the function stays
    the same; shorter weights turn further per step in the serial epochs). ``parallel_micro_batches`` M makes each
    stage's parallel step work through its batch in M parts (one optimizer step; batch norm per
    part): on a CPU the smaller working set stays in cache; with pipelined λ the parts follow one
    another down the pipeline, so stage k's gradient is at most ceil((K-1-k)/M) steps late. None:
    with pipelined λ the fewest parts that leave every stage at most one step late
    (:func:`lpfast.pipelined.default_parts`: 1 at K=2, 4 at K=4, 8 at K=8 for a replica's batch of
    128), otherwise 1.
    ``ds_factor``, ``wire_dtype``, ``ds_mode``: the DS filter of what crosses a cut in the
    parallel phase (None wire dtype: the compute dtype); ``store_ds_factor`` keeps λ and μ
    down-sampled.
    ``precision`` ``bf16`` or ``fp16`` runs every forward under ``torch.autocast`` in that dtype
    (:mod:`lpfast.precision`; fp16 with a loss scale, and with ``aux`` ``pipelined`` only); what
    crosses a cut then goes in it too, unless ``wire_dtype`` says otherwise.
    ``parallel_flip`` augments the parallel phase with stored λ by random horizontal flips,
    mirroring each flipped sample's λ and μ with its image (no effect elsewhere: serial epochs and
    ``aux`` ``net`` augment fully). ``local_loss``'s default is what closed most of the accuracy gap
    in the ablation of bench/results/narrative.md, where flips did not help at that α.
    ``checkpoint_every`` N also checkpoints every N steps within an epoch (None: after each epoch
    only); a run resumed from one gives the numbers of an uninterrupted run.
    ``train_subset`` N trains on N training samples only, balanced over the classes (quick checks);
    ``test_subset`` N evaluates on N test samples only, so chosen (timing runs, where evaluation
    is not what is measured).
    ``aux`` None means ``pipelined`` with the penalty method, ``store`` otherwise
    (:func:`lpfast.parallel.default_aux`); ``store`` keeps λ (and μ) per training sample. ``aux`` ``net`` replaces the per-sample λ/μ store by a small network per cut (``aux_depth``
    layers of ``aux_width`` channels; None: the widest costing at most 10% of the stage it
    feeds), which also lets augmentation run in the parallel phase. ``aux`` ``pipelined`` takes λ
    of a batch from the previous stage's forward of it one step earlier (:mod:`lpfast.pipelined`):
    no store, augmented images; penalty method only, no local heads (``local_loss`` None means 3,
    or 0 with it). ``predict_weights`` runs a pipelined stage's forward on the weights its late
    gradient will meet, extrapolated along SGD's momentum (None: on with --aux pipelined and momentum > 0).
    ``gradient_shrink`` g < 1 scales stage k's late gradient by g^(K-1-k) (``--aux pipelined``).
    """

    model: str = "mnist_resnet"
    cifar_stem: bool = False
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
    channels_last: bool = True
    method: str = "serial"
    stages: int = 1
    replicas: int = 1
    placement: str = "stages-together"
    stage_blocks: tuple[int, ...] | None = None
    beta0: float = 2.0
    beta_growth: float = 2.0
    beta_max: float = 50.0
    lam_step: float = 1.0
    regression_lr_scale: float = 1.0
    mu_every: int = 1
    local_loss: float | None = None
    parallel_flip: bool = False
    store_dtype: str = "float32"
    store_location: str = "device"
    dist_timeout: float = 120.0
    checkpoint_every: int | None = None
    parallel_epochs: int | None = None
    serial_warmup: int = 0
    parallel_blocks: int = 1
    restore_norms: bool = False
    micro_batches: int = 1
    parallel_micro_batches: int | None = None
    serial_schedule: str = "1f1b"
    ds_factor: int = 1
    wire_dtype: str | None = None
    ds_mode: str = "nearest"
    store_ds_factor: int = 1
    train_subset: int | None = None
    test_subset: int | None = None
    aux: str | None = None
    aux_depth: int = 2
    aux_width: int | None = None
    predict_weights: bool | None = None
    gradient_shrink: float = 1.0
    precision: str = "fp32"

    RUN_LOCATION_FIELDS = ("device", "threads", "data_dir", "dist_timeout", "store_location", "checkpoint_every")

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"dataset must be one of {', '.join(DATASET_NAMES)}, got {self.dataset!r}")
        if not (self.model.startswith(TORCHVISION_PREFIX) and self.model[len(TORCHVISION_PREFIX):] in TORCHVISION_RESNETS):
            build_model(self.model, cifar_stem=self.cifar_stem)  # raises a ValueError naming the valid models
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
        if self.train_subset is not None and self.train_subset < 1:
            raise ValueError(f"train_subset must be >= 1 samples, got {self.train_subset}")
        if self.test_subset is not None and self.test_subset < self.replicas:
            raise ValueError(f"test_subset must be at least one sample per replica ({self.replicas}), got {self.test_subset}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if self.method == "serial" and self.stages != 1:
            raise ValueError(f"--stages {self.stages} needs a layer-parallel --method (penalty or al)")
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.method == "serial" and self.replicas != 1:
            raise ValueError("--method serial under torchrun is data-parallel over every worker already: "
                             "--replicas applies to --method penalty|al (K stages × D replicas)")
        if self.batch_size % self.replicas:
            raise ValueError(f"--replicas {self.replicas} splits every batch among the replicas: "
                             f"choose a --batch-size divisible by {self.replicas} (got {self.batch_size})")
        if self.stage_blocks is not None:
            object.__setattr__(self, "stage_blocks", tuple(int(b) for b in self.stage_blocks))
            if len(self.stage_blocks) != self.stages:
                raise ValueError(f"stage_blocks {list(self.stage_blocks)} must have one entry per stage ({self.stages})")
        if self.parallel_epochs is not None:
            if self.method == "serial":
                raise ValueError("--parallel-epochs needs a layer-parallel --method (penalty or al)")
            if not 0 <= self.parallel_epochs <= self.epochs:
                raise ValueError(f"parallel_epochs must be in [0, epochs={self.epochs}], got {self.parallel_epochs}")
        if self.serial_warmup < 0:
            raise ValueError(f"serial_warmup must be >= 0 epochs, got {self.serial_warmup}")
        if self.serial_warmup:
            if self.parallel_epochs is None:
                raise ValueError("--serial-warmup W needs --parallel-epochs P (the hybrid runs W serial, P parallel, then serial epochs)")
            if self.serial_warmup + self.parallel_epochs > self.epochs:
                raise ValueError(f"serial_warmup + parallel_epochs must be at most epochs={self.epochs}, "
                                 f"got {self.serial_warmup} + {self.parallel_epochs}")
        if self.parallel_blocks != 1:
            if self.parallel_blocks < 1 or self.parallel_epochs is None:
                raise ValueError(f"--parallel-blocks B (got {self.parallel_blocks}) must be >= 1 and needs --parallel-epochs P")
            serial = self.epochs - self.serial_warmup - self.parallel_epochs
            if self.parallel_epochs % self.parallel_blocks or serial % self.parallel_blocks or not serial:
                raise ValueError(f"--parallel-blocks {self.parallel_blocks} must divide both the parallel epochs ({self.parallel_epochs}) "
                                 f"and the serial ones after them ({serial}), which must be at least one")
        if self.restore_norms and self.parallel_epochs is None:
            raise ValueError("--restore-norms acts when a parallel phase ends: it needs --parallel-epochs P (serial epochs after it)")
        if self.aux is None:
            object.__setattr__(self, "aux", default_aux(self.method))
        if self.aux not in AUX_KINDS:
            raise ValueError(f"aux must be one of {', '.join(AUX_KINDS)}, got {self.aux!r}")
        if self.aux == "net" and self.method == "serial":
            raise ValueError("--aux net is a layer-parallel option: use it with --method penalty|al")
        if self.aux == "net" and self.store_ds_factor != 1:
            raise ValueError("--store-ds-factor down-samples the per-sample store, which --aux net does not have")
        if self.local_loss is None:
            object.__setattr__(self, "local_loss", 0.0 if self.aux == "pipelined" else DEFAULT_LOCAL_LOSS)
        if self.aux == "pipelined" and (self.method != "penalty" or self.local_loss or self.restore_norms
                                        or self.store_ds_factor != 1 or self.parallel_flip):
            raise ValueError("--aux pipelined (the penalty method's default) backpropagates the next stage's gradient exactly: use "
                             "it with --method penalty and without --local-loss, --restore-norms, --parallel-flip or --store-ds-factor; "
                             "add --aux store for stored λ, which takes them")
        if self.predict_weights is None:
            object.__setattr__(self, "predict_weights", self.aux == "pipelined" and self.momentum > 0)
        if self.predict_weights and (self.aux != "pipelined" or self.momentum == 0):
            raise ValueError("--predict-weights extrapolates the late gradients of --aux pipelined along SGD's momentum: "
                             "use it with --aux pipelined and --momentum > 0")
        if not 0 < self.gradient_shrink <= 1:
            raise ValueError(f"--gradient-shrink must be in (0, 1] (1: no shrinking), got {self.gradient_shrink}")
        if self.gradient_shrink != 1 and self.aux != "pipelined":
            raise ValueError("--gradient-shrink scales the late gradients of --aux pipelined: use it with --aux pipelined")
        if self.aux_depth < 1 or (self.aux_width is not None and self.aux_width < 1):
            raise ValueError(f"aux_depth and aux_width must be >= 1, got {self.aux_depth} and {self.aux_width}")
        if self.method != "serial" and self.aux == "store" and self.augment and self.parallel_epochs is None:
            raise ValueError(
                "augmentation cannot be used in the layer-parallel phase with stored λ (λ belongs to each fixed training "
                "image): add --parallel-epochs P (P < epochs) to augment in the serial phase, or use --aux net"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "fp16" and self.method != "serial" and self.aux != "pipelined":
            raise ValueError(f"--precision fp16 needs a loss scale, which lpfast keeps in the pipelined parallel phase and the "
                             f"serial phase, not with --aux {self.aux}: use --precision bf16 (float32's range, no scale needed)")
        if self.wire_dtype is not None and self.wire_dtype not in WIRE_DTYPES:
            raise ValueError(f"wire_dtype must be one of {', '.join(WIRE_DTYPES)}, got {self.wire_dtype!r}")
        DsFilter(self.ds_factor, None, self.ds_mode)  # raises on a bad factor or mode
        DsFilter(self.store_ds_factor)
        if self.method == "serial" and (self.ds_factor != 1 or self.wire_dtype is not None or self.store_ds_factor != 1):
            raise ValueError("DS filters apply to the layer-parallel phase: use them with --method penalty|al")
        if self.micro_batches < 1 or self.micro_batches > self.batch_size:
            raise ValueError(f"micro_batches must be between 1 and batch_size={self.batch_size}, got {self.micro_batches}")
        replica_batch = self.batch_size // self.replicas
        if self.stages > 1 and replica_batch % self.micro_batches:
            raise ValueError(f"micro_batches ({self.micro_batches}) must divide a replica's batch ({replica_batch}): "
                             "the serial pipeline splits every batch into equal micro-batches")
        if self.parallel_micro_batches is None:
            pipelined = self.method != "serial" and self.aux == "pipelined"
            object.__setattr__(self, "parallel_micro_batches", required_default_parts(self.stages, replica_batch) if pipelined else 1)
        if self.parallel_micro_batches < 1 or replica_batch % self.parallel_micro_batches:
            raise ValueError(f"parallel_micro_batches ({self.parallel_micro_batches}) must be >= 1 and divide a replica's batch "
                             f"({replica_batch})")
        if self.parallel_micro_batches > 1 and (self.method == "serial" or self.aux not in ("store", "pipelined")):
            raise ValueError("--parallel-micro-batches splits the parallel step of stored or pipelined λ: use it with --method penalty|al "
                             "and --aux store or pipelined (an auxiliary network regresses once per batch)")
        if self.serial_schedule not in SERIAL_SCHEDULES:
            raise ValueError(f"serial_schedule must be one of {', '.join(SERIAL_SCHEDULES)}, got {self.serial_schedule!r}")
        looped = STAGES_PER_WORKER[self.serial_schedule]
        if looped > 1 and (self.method == "serial" or self.parallel_epochs != 0 or self.stages % looped or self.replicas != 1):
            raise ValueError(f"--serial-schedule {self.serial_schedule} loops {looped} stages over each worker in the serial "
                             f"phase only: use it with --method penalty|al --parallel-epochs 0, --stages a multiple of {looped} "
                             f"(on stages/{looped} workers) and --replicas 1")
        if self.store_dtype not in STORE_DTYPES:
            raise ValueError(f"store_dtype must be one of {', '.join(STORE_DTYPES)}, got {self.store_dtype!r}")
        if self.store_location not in STORE_LOCATIONS:
            raise ValueError(f"store_location must be one of {', '.join(STORE_LOCATIONS)}, got {self.store_location!r}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 steps (or none: checkpoints after every epoch only), got {self.checkpoint_every}")
        if self.dist_timeout <= 0:
            raise ValueError(f"dist_timeout must be > 0 seconds, got {self.dist_timeout}")

    @property
    def workers_per_replica(self) -> int:
        """Workers one replica's stages take: one a stage, or fewer under a looped serial schedule."""
        return self.stages // STAGES_PER_WORKER[self.serial_schedule]

    def phase(self, epoch: int) -> str:
        """``parallel`` or ``serial``: what epoch ``epoch`` (from 0) trains with."""
        if self.method == "serial" or epoch < self.serial_warmup:
            return "serial"
        if self.parallel_epochs is None:
            return "parallel"
        if epoch >= self.epochs:  # past the end (lambda_freed asks about epoch ``epochs``)
            return "serial"
        block = (self.epochs - self.serial_warmup) // self.parallel_blocks
        return "parallel" if (epoch - self.serial_warmup) % block < self.parallel_epochs // self.parallel_blocks else "serial"

    def lambda_freed(self, epochs_done: int) -> bool:
        """Whether λ is freed after ``epochs_done`` epochs: the next epoch is serial (a later
        parallel block starts from a fresh λ pass); a run parallel to its end keeps λ in its last
        checkpoint."""
        return self.phase(epochs_done) == "serial"

    def holds_lambda(self, epochs_done: int) -> bool:
        """Whether a run's state after ``epochs_done`` epochs carries per-sample λ: stored auxiliary
        variables are filled by the λ pass of a parallel block and kept until ``lambda_freed``."""
        stored = self.method != "serial" and self.aux == "store"
        return stored and self._last_was_parallel(epochs_done) and not self.lambda_freed(epochs_done)

    def left_parallel_phase(self, epochs_done: int) -> bool:
        """Whether epoch ``epochs_done`` (counted from 1) ended a block of parallel epochs."""
        return self._last_was_parallel(epochs_done) and self.lambda_freed(epochs_done)

    def _last_was_parallel(self, epochs_done: int) -> bool:
        return epochs_done > 0 and self.phase(epochs_done - 1) == "parallel"

    def use_augmentation(self, epoch: int) -> bool:
        """Stored λ belongs to the un-augmented image, so the parallel phase does not augment then;
        auxiliary networks predict λ from whatever image they see."""
        if self.phase(epoch) == "parallel" and self.aux == "store":
            return False
        return self.augment if self.augment is not None else self.dataset.startswith("cifar")

    def use_flips(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` flips images (and their stored λ) as its only augmentation: a
        parallel epoch of K > 1 stages with stored λ, under ``parallel_flip``."""
        return self.parallel_flip and self.aux == "store" and self.stages > 1 and self.phase(epoch) == "parallel"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        if data.get("stage_blocks") is not None:
            data = {**data, "stage_blocks": tuple(data["stage_blocks"])}
        # A run saved before the field existed took whole batches, whatever the default is now.
        return cls(**{"parallel_micro_batches": 1, **data})

    def differences(self, other: "TrainConfig") -> dict[str, tuple]:
        """Fields (other than where the run executes) whose values differ: ``{name: (self, other)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in self.RUN_LOCATION_FIELDS and a[k] != b[k]}

"""Command line: ``lpfast train ...`` (also ``python -m lpfast train ...``)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from lpfast.auxvars import STORE_DTYPES, STORE_LOCATIONS
from lpfast.checkpoint import committed, read_config
from lpfast.config import METHODS, SCHEDULES, TrainConfig
from lpfast.mesh import PLACEMENTS
from lpfast.datasets import DATASET_NAMES, DatasetError
from lpfast.filters import WIRE_DTYPES
from lpfast.precision import PRECISIONS
from lpfast.ops import DS_MODES
from lpfast.parallel import AUX_KINDS, METHODS as PARALLEL_METHODS
from lpfast.serial import SCHEDULES as SERIAL_SCHEDULES
from lpfast.trainer import DivergenceError, Trainer
from lpfast.models import MODEL_NAMES, TORCHVISION_RESNETS

_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}
#: Exit codes: 2 a bad option, data set or run folder; 3 training diverged (the last good checkpoint is kept).
EXIT_DIVERGED = 3


def _option(parser: argparse.ArgumentParser, name: str, help: str, **kwargs) -> None:
    # Options default to "not given" so that --resume can tell them from the run's saved values.
    flag = "--" + name.replace("_", "-")
    parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=f"{help} (default: {_DEFAULTS[name]})", **kwargs)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 4,4, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpfast", description="Layer-parallel training of residual networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", add_help=False, help="run an end-to-end benchmark preset (lpfast bench -h)")
    add_plan_parser(sub)
    train = sub.add_parser("train", help="train a model", description="Train a model; writes config, metrics and checkpoint to --out.")
    _option(train, "model", f"model name: {', '.join(MODEL_NAMES)}, any resnetD (D=6n+2) or wrn_D_K, or torchvision:NAME "
                                     f"({', '.join(TORCHVISION_RESNETS)})")
    _option(train, "cifar_stem", "torchvision models: 3×3 stride-1 conv1 and no max-pool, for 32×32 images", action=argparse.BooleanOptionalAction)
    _option(train, "dataset", "data set", choices=DATASET_NAMES)
    _option(train, "data_dir", "folder holding the data set (embedded needs none)")
    _option(train, "epochs", "number of epochs", type=int)
    _option(train, "batch_size", "training batch size", type=int)
    _option(train, "lr", "base learning rate", type=float)
    _option(train, "momentum", "SGD momentum", type=float)
    _option(train, "weight_decay", "weight decay", type=float)
    _option(train, "nesterov", "Nesterov momentum", action=argparse.BooleanOptionalAction)
    _option(train, "schedule", "learning-rate schedule", choices=SCHEDULES)
    _option(train, "warmup_epochs", "linear warm-up length in epochs", type=float)
    _option(train, "augment", "pad-crop-flip augmentation (default none: on for CIFAR, off for MNIST)", action=argparse.BooleanOptionalAction)
    _option(train, "seed", "seed of initialisation, batch order and augmentation", type=int)
    _option(train, "eval_batch_size", "evaluation batch size", type=int)
    _option(train, "device", "torch device, e.g. cpu or cuda:0")
    _option(train, "threads", "torch CPU threads (default none: torch's choice)", type=int)
    _option(train, "channels_last", "channels-last memory format", action=argparse.BooleanOptionalAction)
    _option(train, "method", "serial backprop, or the layer-parallel penalty / augmented-Lagrangian method", choices=METHODS)
    _option(train, "stages", "number of stages K (with torchrun: one per worker)", type=int)
    _option(train, "replicas", "replicas D of the K stages (torchrun with K·D workers; each replica trains on its part of "
                               "the data, each stage's gradient averaged over its replicas)", type=int)
    _option(train, "placement", "with --replicas: which ranks are neighbours (under torchrun a node holds adjacent ranks): "
                                "stages-together keeps a replica's cut messages within a node, replicas-together a stage's "
                                "all-reduce", choices=PLACEMENTS)
    _option(train, "stage_blocks", "blocks per stage, e.g. 4,4 (default: balanced by estimated FLOPs)", type=_int_list)
    _option(train, "beta0", "penalty weight β in the first epoch", type=float)
    _option(train, "beta_growth", "factor β grows by per epoch", type=float)
    _option(train, "beta_max", "cap on β", type=float)
    _option(train, "lam_step", "λ step relative to the closed-form step", type=float)
    _option(train, "regression_lr_scale", "learning-rate factor of the stages that regress onto λ (all but the last)", type=float)
    _option(train, "local_loss", "weight α of a small classifier head's cross-entropy on every regressing stage's output in the "
            "parallel phase (0 = no heads; None: 3, or 0 with --aux pipelined)", type=float)
    _option(train, "parallel_flip", "parallel phase with stored λ: flip images at random, mirroring their λ and μ with them "
            "(default off: no augmentation there)",
            action=argparse.BooleanOptionalAction)
    _option(train, "mu_every", "update the AL multipliers every N steps", type=int)
    _option(train, "store_dtype", "dtype of the stored auxiliary variables", choices=tuple(STORE_DTYPES))
    _option(train, "store_location", "where the auxiliary variables live", choices=STORE_LOCATIONS)
    _option(train, "parallel_epochs", "serial-parallel hybrid: this many parallel epochs, then serial ones (default none: all parallel)", type=int)
    _option(train, "serial_warmup", "with --parallel-epochs P: this many serial epochs before the parallel ones "
            "(λ then starts from a network trained end to end)", type=int)
    _option(train, "parallel_blocks", "with --parallel-epochs P: alternate B blocks of P/B parallel epochs and the serial epochs' "
            "share, each parallel block starting from a fresh λ pass", type=int)
    _option(train, "restore_norms", "with --parallel-epochs P: when a parallel phase ends, scale the regressing stages' "
            "batch-normed weights back to their lengths at its λ pass (same function; they then turn further per serial step)",
            action=argparse.BooleanOptionalAction)
    _option(train, "micro_batches", "micro-batches per batch in the serial phase's pipeline across workers", type=int)
    _option(train, "parallel_micro_batches", "parts each stage's parallel step works through its batch in (one optimizer "
            "step; on a CPU a smaller working set stays in cache; with --aux pipelined the parts follow one another down the "
            "pipeline, so stage k's gradient is at most ceil((K-1-k)/M) steps late; None: with --aux pipelined the fewest parts "
            "that leave every stage at most one step late, 1 at K=2, 4 at K=4, 8 at K=8 for a replica's batch of 128; otherwise 1)", type=int)
    _option(train, "serial_schedule", "the serial phase's pipeline schedule across workers (torch.distributed.pipelining)",
            choices=SERIAL_SCHEDULES)
    _option(train, "ds_factor", "down-sampling factor s of what crosses a cut in the parallel phase (s×s average pooling)", type=int)
    _option(train, "wire_dtype", "dtype on the wire in the parallel phase (default none: the dtype the forward produced)",
            choices=tuple(WIRE_DTYPES))
    _option(train, "precision", "mixed precision: every forward under torch.autocast in bf16 or fp16 (fp16 with a loss scale; "
            "parameters and optimizer state stay fp32)", choices=tuple(PRECISIONS))
    _option(train, "ds_mode", "how the receiver up-samples", choices=DS_MODES)
    _option(train, "store_ds_factor", "keep λ and μ down-sampled by this factor", type=int)
    _option(train, "aux", "auxiliary variables (None: pipelined with --method penalty, store with al): per-sample store, a small network per cut predicting them from the image, or the "
            "previous stage's output one step earlier (pipelined: backprop with stage k's gradient late, K-1-k steps on whole batches)", choices=AUX_KINDS)
    _option(train, "predict_weights", "with --aux pipelined: run each stage's forward on the weights its late gradient will "
            "be applied to, extrapolated along SGD's momentum (None: on with --aux pipelined)", action=argparse.BooleanOptionalAction)
    _option(train, "gradient_shrink", "with --aux pipelined: g in (0, 1]; each stage backpropagates g times the gradient it "
            "receives, so stage k's late gradient is scaled by g^(K-1-k) (gradient shrinking, as in FDG)", type=float)
    _option(train, "aux_depth", "conv layers of each auxiliary network", type=int)
    _option(train, "aux_width", "channels of each auxiliary network (none: the widest costing <= 10%% of the stage it feeds)", type=int)
    _option(train, "train_subset", "train on N training samples only, balanced over the classes (quick checks)", type=int)
    _option(train, "test_subset", "evaluate on N test samples only, balanced over the classes (timing runs)", type=int)
    _option(train, "checkpoint_every", "also checkpoint every N steps within an epoch (resume loses at most N steps)", type=int)
    _option(train, "dist_timeout", "seconds a worker waits for a silent neighbour before stopping with an error", type=float)
    train.add_argument("--serial-epochs", type=int, default=None, metavar="S",
                       help="with --parallel-epochs P: S serial epochs after them (sets --epochs to P+S)")
    train.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<model>-<dataset>-<time>)")
    train.add_argument("--resume", nargs="?", const="yes", choices=("yes", "auto"), default=None,
                       help="continue the run in --out from its last committed checkpoint; 'auto': continue it if there is one, "
                            "else start it (what a group restarted by torchrun --max-restarts does by itself)")
    train.add_argument("--pause-after", type=int, default=None, metavar="N",
                       help="stop after N more epochs, checkpointed (continue with --resume); for time-sliced machines and interleaved benchmarks")
    return parser


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if args.serial_epochs is not None:
        if "parallel_epochs" not in given:
            raise ValueError("--serial-epochs S needs --parallel-epochs P (the hybrid runs P parallel, then S serial epochs)")
        total = given.get("serial_warmup", 0) + given["parallel_epochs"] + args.serial_epochs
        if given.setdefault("epochs", total) != total:
            raise ValueError(f"--epochs {given['epochs']} contradicts --serial-warmup {given.get('serial_warmup', 0)} + "
                             f"--parallel-epochs {given['parallel_epochs']} + --serial-epochs {args.serial_epochs}")
    if args.resume:
        # Options not given again take the run's saved values; given ones must agree (checked on resume).
        return TrainConfig.from_dict({**read_config(args.out), **given})
    return TrainConfig(**given)


def resume_wanted(mode: str | None, out: Path | None) -> bool:
    """Whether to continue the run in ``out``: ``--resume`` (yes), ``--resume auto``, or a worker group
    that torchrun restarted (``TORCHELASTIC_RESTART_COUNT`` > 0), which continues by itself."""
    if mode is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        mode = "auto"
    if mode is not None and out is None:
        raise ValueError("--resume needs --out, the run folder to continue")
    if mode == "auto":
        return committed(out) is not None
    return mode == "yes"


def train_command(args: argparse.Namespace) -> None:
    if args.pause_after is not None and args.pause_after < 1:
        raise ValueError(f"--pause-after must be >= 1, got {args.pause_after}")
    args.resume = resume_wanted(args.resume, args.out)
    if args.resume and not (args.out / "config.json").exists():
        raise ValueError(f"nothing to resume: {args.out} has no config.json (start the run without --resume)")
    config = _config_from_args(args)
    if args.out is None:
        args.out = Path("runs") / f"{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    workers = int(os.environ.get("WORLD_SIZE", "1"))
    if workers > 1:
        config = start_workers(config)
    trainer = Trainer(config, args.out, resume=args.resume)
    if trainer.rank == 0:
        replicas = f" × {config.replicas} replicas (each on 1/{config.replicas} of the data)" if config.replicas > 1 else ""
        parts = (f", parallel steps in {config.parallel_micro_batches} parts"
                 if config.parallel_micro_batches > 1 and config.parallel_epochs != 0 else "")
        parallel = (f", {config.method} with {config.stages} stages {trainer.lp.plan.blocks_per_stage}{replicas}{parts} on {workers} worker(s)"
                    if trainer.lp else "")
        if trainer.data_parallel:
            parallel = f", data-parallel backprop (DDP) on {workers} workers"
        print(
            f"lpfast: {config.model} on {config.dataset} ({len(trainer.train_data)} train / {len(trainer.test_data)} test), "
            f"{config.epochs} epochs{parallel}, device {trainer.device}, run folder {args.out}",
            flush=True,
        )
    trainer.fit(pause_after=args.pause_after)


def start_workers(config: TrainConfig) -> TrainConfig:
    """Joins the torchrun job: gloo on CPU, NCCL on GPU, and a share of this machine's cores.

    Every worker gets ``--threads`` threads (default: the cores divided among the workers on this
    machine) pinned to its own cores when they divide evenly, so workers do not fight over cores.
    """
    import datetime

    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_workers = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    device = config.device
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    join_group("nccl" if device.startswith("cuda") else "gloo", datetime.timedelta(seconds=config.dist_timeout))
    threads = config.threads or max(1, len(os.sched_getaffinity(0)) // local_workers)
    if device == "cpu":
        pin_to_own_cores(local_rank, local_workers, threads)
    return replace(config, threads=threads, device=device)


def join_group(backend: str, timeout: "datetime.timedelta") -> None:
    """Initialises the default process group from torchrun's environment.

    torchrun's agent serves one store for all attempts of a worker group, so a group it restarted
    would find the previous attempt's addresses under the same keys and might connect to a dead
    worker ("Gloo connectFullMesh failed ... Connection refused"); each attempt gets its own prefix."""
    import torch.distributed as dist

    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend, timeout=timeout)
        return
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    attempt = dist.PrefixStore(f"lpfast/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group(backend, store=attempt, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]), timeout=timeout)


def pin_to_own_cores(local_rank: int, local_workers: int, threads: int) -> None:
    """Pins worker ``local_rank`` of ``local_workers`` on this machine to its own ``threads`` of the
    cores it may use, when every worker gets its own; otherwise leaves the affinity alone."""
    cores = sorted(os.sched_getaffinity(0))
    if threads * local_workers <= len(cores):
        os.sched_setaffinity(0, cores[local_rank * threads : (local_rank + 1) * threads])


def add_plan_parser(sub) -> None:
    plan = sub.add_parser("plan", help="predict layer-parallel speed-ups on this device from measured block costs",
                          description="Measures the model's per-block costs on this device (one thread by default: one device) "
                                      "and predicts, per K stages (× D replicas), the best cut, speed-ups of the parallel phase, the "
                                      "pipeline, DDP and a whole SPH run over backprop on one device, bytes per step, all-reduce bytes "
                                      "and λ memory per stage, and the best layout for each device count.")
    plan.add_argument("--model", default="resnet20", help="model name, as lpfast train takes it")
    plan.add_argument("--cifar-stem", action="store_true", help="torchvision models: the 32×32 stem")
    plan.add_argument("--input-shape", type=_int_list, default=(3, 32, 32), help="one sample's shape C,H,W (default 3,32,32)")
    plan.add_argument("--num-classes", type=int, default=10)
    plan.add_argument("--stages", type=_int_list, default=(2, 4, 8), help="the K to predict, e.g. 2,4,8")
    plan.add_argument("--replicas", type=_int_list, default=(1,), help="the D to predict with each K (K × D devices), e.g. 1,2")
    plan.add_argument("--link", default=None, help="link rate between devices, tc syntax (10mbit, 1gbit; default none: messages free)")
    plan.add_argument("--hosts", type=int, default=None,
                      help="the devices are this many machines of adjacent ranks, the link between machines (free within one); "
                           "each K × D is then predicted in both --placement's (default: every device a machine of its own)")
    plan.add_argument("--batch-size", type=int, default=128)
    plan.add_argument("--micro-batches", type=int, default=4, help="micro-batches of the serial phase's pipeline")
    plan.add_argument("--parallel-micro-batches", type=int, default=None,
                      help="parts each stage's parallel step works through its batch in (default: lpfast train's for each K and λ)")
    plan.add_argument("--parallel-share", type=float, default=0.5, help="share of the SPH run's epochs that are parallel")
    plan.add_argument("--dataset-size", type=int, default=50_000, help="training samples N (for the λ memory)")
    plan.add_argument("--method", choices=PARALLEL_METHODS, default="penalty", help="al keeps μ beside λ")
    plan.add_argument("--aux", choices=("store", "pipelined"), default=None,
                      help="λ of the SPH run and the memory column (default: lpfast train's, pipelined for penalty, store for al)")
    plan.add_argument("--threads", type=int, default=1, help="torch threads of one device")
    plan.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement")
    plan.add_argument("--out", type=Path, default=None, help="also write the measurement and predictions as JSON here")


def plan_command(args: argparse.Namespace) -> None:
    import datetime
    import json

    import torch

    from lpfast.models import build_model
    from lpfast.plan import as_table, plan, to_record

    if args.threads < 1 or args.repeats < 1:
        raise ValueError("--threads and --repeats must be >= 1")
    if len(args.input_shape) != 3:
        raise ValueError(f"--input-shape is one sample's C,H,W (e.g. 3,32,32), got {','.join(map(str, args.input_shape))}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model, in_channels=args.input_shape[0], num_classes=args.num_classes, cifar_stem=args.cifar_stem)
    if args.hosts is not None and args.link is None:
        raise ValueError("--hosts says which devices the link joins: give the link's rate too (--link 1gbit)")
    print(f"lpfast plan: measuring {args.model}'s blocks and cuts on this device ({args.repeats} repeats each)...", flush=True)
    costs, predictions = plan(model, args.input_shape, args.stages, link=args.link, batch_size=args.batch_size,
                              micro_batches=args.micro_batches, parallel_share=args.parallel_share, dataset_size=args.dataset_size, aux=args.aux,
                              method=args.method, repeats=args.repeats, replicas=args.replicas, hosts=args.hosts,
                              parallel_micro_batches=args.parallel_micro_batches)
    print(f"{args.model}, input {','.join(map(str, args.input_shape))}, batch {args.batch_size}, {args.threads} thread(s) per device")
    print(as_table(costs, predictions, link=args.link, parallel_share=args.parallel_share))
    if args.out is not None:
        args.out.write_text(json.dumps({"model": args.model, "input_shape": list(args.input_shape), "link": args.link, "hosts": args.hosts,
                                        "threads": args.threads, "date": datetime.date.today().isoformat(),
                                        **to_record(costs, predictions)}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    try:
        if args.command == "bench":  # its own parser reads everything after the word, -h included
            from lpfast.benchmark import main as bench_main

            bench_main(argv[argv.index("bench") + 1 :])
        elif unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        elif args.command == "plan":
            plan_command(args)
        else:
            train_command(args)
    except DivergenceError as exc:
        print(f"lpfast: error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except (DatasetError, ValueError, RuntimeError) as exc:
        # One line per worker: a torchrun job shows which rank stopped and why.
        print(f"lpfast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lpfast: interrupted; the last completed epoch is checkpointed (continue with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The layer-parallel phase: exact local gradients, K=1 = backprop, one process = K workers,
falling constraint violation, and a clear stop when a worker dies."""
import copy
import datetime
import math
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lpfast.config import TrainConfig
from lpfast.datasets import ImageDataset, load_embedded
from lpfast.describe import describe
from lpfast.models import build_model, mnist_resnet
from lpfast.parallel import LayerParallel
from lpfast.stages import partition, split
from lpfast.trainer import Trainer
from lpfast.transport import DistTransport, LocalTransport
from lpfast.weightnorms import WeightNorms


def small_data(n_train=192, n_test=64):
    return load_embedded("train").subset(n_train), load_embedded("test").subset(n_test)


# ------------------------------------------------------------------------------ exactness


def sequential_net() -> torch.nn.Sequential:
    """A user's own network as an nn.Sequential: stem, residual blocks, head."""
    from lpfast.models import BasicBlock

    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), BasicBlock(4, 4), BasicBlock(4, 8, 2), BasicBlock(8, 8),
                               BasicBlock(8, 8), torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)))


MODELS = {
    "mnist_resnet": lambda: mnist_resnet(depth=4, width=4),
    "torchvision:resnet18": lambda: build_model("torchvision:resnet18", in_channels=1),
    "torchvision:resnet18 cifar stem": lambda: build_model("torchvision:resnet18", in_channels=1, cifar_stem=True),
    "torchvision:resnet50": lambda: build_model("torchvision:resnet50", in_channels=1),
    "nn.Sequential": sequential_net,
}


@pytest.mark.parametrize("method, local_loss, model_name", [
    ("penalty", 0.0, "mnist_resnet"), ("al", 0.0, "mnist_resnet"), ("penalty", 0.7, "mnist_resnet"), ("al", 0.7, "mnist_resnet"),
    ("penalty", 0.0, "torchvision:resnet18"), ("al", 0.0, "torchvision:resnet18 cifar stem"), ("al", 0.0, "torchvision:resnet50"),
    ("penalty", 0.0, "nn.Sequential"), ("al", 0.7, "nn.Sequential"),
])
def test_local_steps_are_gradients_of_the_full_objective(method, local_loss, model_name):
    torch.manual_seed(0)
    model = MODELS[model_name]().double()
    reference = copy.deepcopy(model)
    n, batch, beta, eta = 10, 6, 3.0, 0.5
    lp = LayerParallel(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.0), stages=3, method=method, aux="store",
                       dataset_size=n, input_shape=(1, 28, 28), beta0=beta, lam_step=eta, local_loss=local_loss)
    assert sorted(lp.local_heads) == ([0, 1] if local_loss else [])
    heads = {s: copy.deepcopy(head) for s, head in lp.local_heads.items()}
    lp.initialise([(torch.randn(n, 1, 28, 28, dtype=torch.float64), torch.arange(n))])  # allocates the stores
    stores = {c: a.lam for c, a in lp.aux.items()}
    mu_stores = {c: a.mu for c, a in lp.aux.items() if a.mu is not None}
    for store in [*stores.values(), *mu_stores.values()]:  # auxiliary variables away from any trajectory
        store.data = torch.randn_like(store.data, dtype=torch.float64)
    x = torch.randn(batch, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (batch,))
    idx = torch.tensor([7, 0, 3, 9, 4, 1])
    lam0 = {c: s.data[idx].clone().requires_grad_() for c, s in stores.items()}
    mu0 = {c: s.data[idx].clone() for c, s in mu_stores.items()}

    lp.step(x, y, idx)

    # The whole objective as one graph over all stages, on an untouched copy of the model.
    stages = split(describe(reference), lp.plan)
    theta_objective, lam_objective, outs = 0.0, 0.0, {}
    h = x
    for s, stage in enumerate(stages):
        out = stage(h if s == 0 else lam0[s - 1])
        if s < len(stages) - 1:
            r = out - lam0[s] + (mu0[s] / beta if method == "al" else 0.0)
            theta_objective = theta_objective + beta / 2 * r.square().mean()
            if local_loss:  # the head's term joins θ's objective only
                theta_objective = theta_objective + local_loss * F.cross_entropy(heads[s](out), y)
            lam_objective = lam_objective + beta / 2 * r.square().sum()
            outs[s] = out.detach()
        else:
            theta_objective = theta_objective + F.cross_entropy(out, y)
            lam_objective = lam_objective + F.cross_entropy(out, y, reduction="sum")
    head_params = [p for s in sorted(heads) for p in heads[s].parameters()]
    theta_grads = torch.autograd.grad(theta_objective, [*reference.parameters(), *head_params], retain_graph=True)
    lam_grads = torch.autograd.grad(lam_objective, [lam0[c] for c in sorted(lam0)])

    # The stages train the user's own model in place.
    trained = [*model.named_parameters(), *((f"head{s}.{k}", p) for s in sorted(lp.local_heads) for k, p in lp.local_heads[s].named_parameters())]
    assert len(trained) == len(theta_grads)
    for (name, p), g in zip(trained, theta_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12, msg=name)
    for c, g in zip(sorted(lam0), lam_grads):
        expected_lam = lam0[c].detach() - (eta / beta) * g
        torch.testing.assert_close(stores[c].data[idx], expected_lam, rtol=1e-10, atol=1e-12)
        if method == "al":
            expected_mu = mu0[c] + beta * (outs[c] - expected_lam)
            torch.testing.assert_close(mu_stores[c].data[idx], expected_mu, rtol=1e-10, atol=1e-12)
    untouched = torch.tensor([2, 5, 6, 8])
    assert all(torch.equal(s.data[untouched], s.data[untouched]) for s in stores.values())


# ------------------------------------------------------------------------------ K = 1


@pytest.mark.parametrize("model", ["mnist_resnet", "torchvision:resnet18"])
def test_one_stage_is_ordinary_training(model):
    train, test = small_data()
    base = dict(model=model, epochs=2, batch_size=32, threads=1)
    serial = Trainer(TrainConfig(**base), train_data=train, test_data=test, log=lambda s: None)
    serial.fit()
    parallel = Trainer(TrainConfig(method="penalty", aux="store", stages=1, **base), train_data=train, test_data=test, log=lambda s: None)
    parallel.fit()
    for (name, a), b in zip(serial.model.state_dict().items(), parallel.model.state_dict().values()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------ K workers


def _worker(rank, world, store_file, out_dir, config_kwargs):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)
    try:
        train, test = small_data()
        trainer = Trainer(TrainConfig(**config_kwargs), train_data=train, test_data=test, log=lambda s: None)
        records = trainer.fit()
        state = trainer.lp.state_dict() if trainer.lp is not None else None
        torch.save({"state": state, "model": trainer.model.state_dict(), "records": records}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_workers(tmp_path, config, world=2):
    mp.start_processes(_worker, args=(world, str(tmp_path / "store"), str(tmp_path), config), nprocs=world, start_method="spawn")
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(world)]


def tensors(state, path=""):
    """(path, tensor) for every tensor in a nested state dict."""
    if torch.is_tensor(state):
        yield path, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from tensors(value, f"{path}/{key}")


def run_both_ways(tmp_path, config, world=2):
    """Trains ``config`` on ``world`` gloo workers and in one process, checks that every worker's
    stage ends as the one process's and that every worker reports the same test accuracy and bytes;
    returns (the one process's records and state, the workers' results)."""
    workers = run_workers(tmp_path, config, world)
    train, test = small_data()
    single = Trainer(TrainConfig(**config), train_data=train, test_data=test, log=lambda s: None)
    records = single.fit()
    state = single.lp.state_dict()
    for rank, worker in enumerate(workers):
        for name, value in worker["state"]["stages"][rank].items():
            torch.testing.assert_close(value, state["stages"][rank][name], rtol=1e-6, atol=1e-7, msg=name)
        # Every worker reports the whole network's statistics.
        for mine, theirs in zip(records, worker["records"]):
            assert mine["test_acc"] == pytest.approx(theirs["test_acc"])
            assert mine["bytes_forward"] == theirs["bytes_forward"] and mine["bytes_backward"] == theirs["bytes_backward"]
    return records, state, workers


@pytest.mark.parametrize("method, ds, aux, model", [
    ("penalty", False, "store", "mnist_resnet"), ("al", False, "store", "mnist_resnet"), ("penalty", True, "store", "mnist_resnet"),
    ("al", True, "net", "mnist_resnet"), ("penalty", False, "store", "torchvision:resnet18"), ("al", False, "store", "torchvision:resnet50"),
])
def test_one_process_and_two_workers_agree(tmp_path, method, ds, aux, model):
    config = dict(model=model, method=method, stages=2, epochs=2, batch_size=32, threads=1, aux=aux)
    if ds:
        config |= dict(ds_factor=2, wire_dtype="bfloat16", ds_mode="bilinear")
    records, state, workers = run_both_ways(tmp_path, config)
    for worker in workers:
        single_aux = dict(tensors(state["aux"]))
        for path, value in tensors(worker["state"]["aux"]):
            torch.testing.assert_close(value, single_aux[path], rtol=1e-6, atol=1e-7, msg=path)
        for mine, theirs in zip(records, worker["records"]):
            assert mine["violation"] == pytest.approx(theirs["violation"], rel=1e-5)
    assert worker["state"]["aux"].keys() == {0} and not workers[0]["state"]["aux"]
    if aux == "net" or model != "mnist_resnet":
        return  # its memory and regression are tested on their own; byte counts below are mnist_resnet's
    # One activation-sized message each way per step: 6 steps of 32 samples × 16×14×14 in float32,
    # or 16×7×7 in bfloat16 through the DS filter.
    per_message = 32 * 16 * 7 * 7 * 2 if ds else 32 * 16 * 14 * 14 * 4
    assert records[0]["bytes_forward"] == records[0]["bytes_backward"] == [6 * per_message]
    # λ (and μ) for all 192 samples, float32.
    assert records[0]["aux_bytes"] == worker["records"][0]["aux_bytes"] == [192 * 16 * 14 * 14 * 4 * (2 if method == "al" else 1)]


@pytest.mark.parametrize("aux", ["pipelined", "store"])
def test_one_process_and_four_workers_agree_through_both_phases(tmp_path, aux):
    # At K=4 the middle stages receive and send in both directions: activations and λ forward,
    # gradients back in the parallel phase, then torch.distributed.pipelining's 1F1B over 4 ranks
    # in the serial phase, against the same steps with every stage in one process.
    config = dict(model="mnist_resnet", method="penalty", aux=aux, stages=4, epochs=2, parallel_epochs=1, micro_batches=4,
                  batch_size=32, threads=1)
    records, state, workers = run_both_ways(tmp_path, config, world=4)
    assert [r["phase"] for r in records] == ["parallel", "serial"]
    for rank, worker in enumerate(workers):
        assert worker["state"]["stages"].keys() == {rank}
        # Each stored λ lived with the stage that reads it (freed for the serial epoch: the stages'
        # parameters, equal above, are what the parallel epoch's λ made of them).
        assert worker["state"]["aux"].keys() == ({rank - 1} if aux == "store" and rank > 0 else set())
    # Every cut carried one activation forward and one gradient back per step in both phases.
    cuts = partition(describe(mnist_resnet()), 4, (1, 28, 28)).cut_shapes
    for record in records:
        assert record["bytes_forward"] == record["bytes_backward"] == [6 * 32 * math.prod(shape) * 4 for shape in cuts]


def train_sequential(transport) -> dict:
    """A user's nn.Sequential under LayerParallel: λ pass, one AL epoch, then serial steps in a pipeline."""
    from lpfast.batches import BatchIterator

    torch.manual_seed(0)
    lp = LayerParallel(sequential_net(), optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), stages=2, method="al",
                       dataset_size=64, input_shape=(1, 28, 28), transport=transport)
    batches = list(BatchIterator(load_embedded("train").subset(64), 16, shuffle=True, seed=0))
    lp.initialise((b.x, b.idx) for b in batches)
    for b in batches:
        lp.step(b.x, b.y, b.idx)
    lp.end_epoch()
    for b in batches:
        lp.serial_step(b.x, b.y, micro_batches=2)
    return lp.state_dict()


def _sequential_worker(rank, store_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    try:
        torch.save(train_sequential(DistTransport(datetime.timedelta(seconds=30))), os.path.join(out_dir, f"seq{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sequential_on_one_process_and_two_workers_agree(tmp_path):
    mp.start_processes(_sequential_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="spawn")
    torch.set_num_threads(1)
    single = train_sequential(LocalTransport())
    for rank in range(2):
        worker = torch.load(tmp_path / f"seq{rank}.pt", weights_only=False)
        for name, value in worker["stages"][rank].items():
            torch.testing.assert_close(value, single["stages"][rank][name], rtol=1e-6, atol=1e-7, msg=name)
        mine = dict(tensors(single["aux"]))
        for path, value in tensors(worker["aux"]):
            torch.testing.assert_close(value, mine[path], rtol=1e-6, atol=1e-7, msg=path)


def _layout_worker(rank, store_file, result_file):
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    try:
        transport = DistTransport(timeout=datetime.timedelta(seconds=20))
        x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
        cl = x.contiguous(memory_format=torch.channels_last)
        # (tensor sent, layout both sides name): NCHW and NHWC tensors each way.
        cases = [(cl, torch.channels_last), (x, torch.channels_last), (cl, torch.contiguous_format), (x, torch.contiguous_format)]
        if rank == 0:
            for tensor, layout in cases:
                transport.isend(tensor, 0, 1, memory_format=layout)
            transport.flush()
            return
        lines = []
        for _, layout in cases:
            got = transport.irecv(tuple(x.shape), x.dtype, torch.device("cpu"), 0, 1, memory_format=layout).wait()
            lines.append(f"{torch.equal(got, x)} {got.is_contiguous(memory_format=layout)}")
        with open(result_file, "w") as f:
            f.write("\n".join(lines))
    finally:
        dist.destroy_process_group()


def test_channels_last_tensors_cross_as_they_are(tmp_path):
    # A channels-last tensor goes on the wire as its NHWC bytes and arrives channels-last; a tensor
    # in the other layout is laid out as both sides agreed before it leaves.
    mp.start_processes(_layout_worker, args=(str(tmp_path / "store"), str(tmp_path / "result")), nprocs=2, start_method="spawn")
    assert (tmp_path / "result").read_text().split("\n") == ["True True"] * 4


def _dying_worker(rank, store_file, result_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    train, test = small_data(64, 32)
    trainer = Trainer(TrainConfig(method="penalty", aux="store", stages=2, epochs=1, batch_size=32, threads=1, dist_timeout=20),
                      train_data=train, test_data=test, log=lambda s: None)
    trainer.lp.initialise([(train.images[:32].float(), torch.arange(32))])
    if rank == 1:
        os._exit(3)  # dies without a word
    start = time.perf_counter()
    try:
        trainer.lp.step(train.images[:32].float(), train.labels[:32], torch.arange(32))
        message = "no error"
    except Exception as exc:  # noqa: BLE001 - the test inspects whatever surfaced
        message = f"{type(exc).__name__}: {exc}"
    with open(result_file, "w") as f:
        f.write(f"{time.perf_counter() - start:.1f}\n{message}")


def test_dead_worker_stops_the_others_with_a_clear_error(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_dying_worker, args=(r, str(tmp_path / "store"), str(tmp_path / "result"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert all(not p.is_alive() for p in procs), "a worker hung"
    elapsed, message = (tmp_path / "result").read_text().split("\n", 1)
    assert "WorkerLostError" in message and "stage 1" in message, message
    assert float(elapsed) < 25


# ------------------------------------------------------------------------------ convergence


def test_violation_falls_as_beta_grows():
    train, test = small_data(1024, 200)
    trainer = Trainer(TrainConfig(method="penalty", aux="store", stages=2, epochs=4, batch_size=64, threads=2), train_data=train, test_data=test, log=lambda s: None)
    records = trainer.fit()
    violations = [r["violation"][0] for r in records]
    assert [r["beta"] for r in records] == [2.0, 4.0, 8.0, 16.0]
    assert violations[-1] < 0.7 * violations[0], violations


def test_stage_errors():
    model = mnist_resnet()
    with pytest.raises(ValueError, match="between 1 and the model's 8 blocks"):
        partition(model, 9, (1, 28, 28))
    with pytest.raises(ValueError, match="sum to the model's 8 blocks"):
        partition(model, [4, 3], (1, 28, 28))
    with pytest.raises(ValueError, match="method must be one of"):
        LayerParallel(model, optimizer=torch.optim.SGD, stages=2, method="admm", dataset_size=4, input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="regression_lr_scale must be > 0"):
        LayerParallel(model, optimizer=torch.optim.SGD, stages=2, aux="store", dataset_size=4, input_shape=(1, 28, 28), regression_lr_scale=0)
    lp = LayerParallel(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), stages=2, aux="store", dataset_size=4, input_shape=(1, 28, 28))
    with pytest.raises(RuntimeError, match="initialise"):
        lp.step(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), torch.arange(2))


@pytest.mark.parametrize("aux", ["store", "net"])
def test_parallel_run_resumes_exactly(tmp_path, aux):
    train, test = small_data()
    config = TrainConfig(method="al", stages=2, epochs=2, batch_size=32, threads=1, mu_every=2, aux=aux)
    straight = Trainer(config, tmp_path / "a", train_data=train, test_data=test, log=lambda s: None)
    straight.fit()
    first = Trainer(config, tmp_path / "b", train_data=train, test_data=test, log=lambda s: None)
    first.fit(pause_after=1)
    resumed = Trainer(config, tmp_path / "b", resume=True, train_data=train, test_data=test, log=lambda s: None)
    assert resumed.epoch == 1 and resumed.lp.beta == 4.0
    resumed.fit()
    a, b = straight.lp.state_dict(), resumed.lp.state_dict()
    for s in a["stages"]:
        for name, value in a["stages"][s].items():
            assert torch.equal(value, b["stages"][s][name]), name
    resumed_aux = dict(tensors(b["aux"]))
    assert resumed_aux and all(torch.equal(value, resumed_aux[path]) for path, value in tensors(a["aux"]))
    assert (a["epoch"], a["steps"]) == (b["epoch"], b["steps"])


@pytest.mark.parametrize("method", ["penalty", "al"])
def test_micro_batched_step_equals_the_whole_batch_step_without_batch_norm(method):
    """With no batch norm (whose statistics are then the part's) a step in M parts is the step on
    the whole batch: the same parameters and the same λ and μ, K=3 (a stage on both sides of a cut)."""
    import torch.nn as nn

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()),
                             nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()), nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()),
                             nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))).double()

    x, y, idx = torch.randn(8, 1, 6, 6, dtype=torch.float64), torch.arange(8) % 3, torch.tensor([3, 9, 0, 5, 1, 7, 2, 8])
    runs = []
    for parts in (1, 4):
        lp = LayerParallel(net(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), stages=3, method=method, aux="store",
                           dataset_size=10, input_shape=(1, 6, 6), local_loss=0.0)
        lp.initialise([(torch.randn(10, 1, 6, 6, dtype=torch.float64), torch.arange(10))])
        for a in lp.aux.values():  # λ and μ away from the network's own outputs
            for store in (a.lam, a.mu):
                if store is not None:
                    store.data.add_(torch.randn_like(store.data))
        losses = [lp.step(x, y, idx, micro_batches=parts) for _ in range(2)]
        runs.append((lp, losses))
    (whole, whole_losses), (parted, parted_losses) = runs
    for a, b in zip(whole.model.parameters(), parted.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for c in whole.aux:
        for name in ("lam", "mu"):
            if getattr(whole.aux[c], name) is not None:
                torch.testing.assert_close(getattr(whole.aux[c], name).data, getattr(parted.aux[c], name).data, rtol=1e-10, atol=1e-12)
    for a, b in zip(whole_losses, parted_losses):
        assert a.keys() == b.keys() and all(torch.allclose(a[s], b[s], rtol=1e-10) for s in a)
    with pytest.raises(ValueError, match="must divide the batch of 8"):
        parted.step(x, y, idx, micro_batches=3)
    with pytest.raises(ValueError, match="use it with --method penalty"):
        TrainConfig(parallel_micro_batches=2)


def test_regression_lr_scale_scales_only_the_regressing_stages():
    x, y, idx = torch.randn(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]), torch.arange(4)
    moves = {}
    for scale in (1.0, 0.1):
        torch.manual_seed(0)
        model = mnist_resnet()
        before = [p.detach().clone() for p in model.parameters()]
        lp = LayerParallel(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), stages=2, aux="store", dataset_size=4,
                           input_shape=(1, 28, 28), regression_lr_scale=scale)
        lp.initialise([(x, idx)])
        lp.step(x, y, idx)
        moves[scale] = [p.detach() - b for p, b in zip(model.parameters(), before)]
        assert all(opt.param_groups[0]["lr"] == 0.1 for opt in lp.optimizers.values())  # restored after the step
    n_first = len(list(lp.stages[0].parameters()))
    for i, (full, scaled) in enumerate(zip(moves[1.0], moves[0.1])):
        torch.testing.assert_close(scaled, full * (0.1 if i < n_first else 1.0), rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------ hybrid (SPH)


@pytest.mark.parametrize("micro_batches, schedule, model", [
    (1, "1f1b", "mnist_resnet"), (4, "1f1b", "mnist_resnet"), (4, "gpipe", "mnist_resnet"),
    (1, "1f1b", "torchvision:resnet18"), (1, "gpipe", "torchvision:resnet50"),
])
def test_serial_phase_over_two_workers_is_backprop(tmp_path, micro_batches, schedule, model):
    # Across workers the serial phase runs torch.distributed.pipelining's schedules.
    base = dict(model=model, epochs=2, batch_size=32, threads=1)
    workers = run_workers(tmp_path, dict(method="penalty", aux="store", stages=2, parallel_epochs=0, micro_batches=micro_batches,
                                         serial_schedule=schedule, **base))
    train, test = small_data()
    if micro_batches == 1:
        reference = Trainer(TrainConfig(**base), train_data=train, test_data=test, log=lambda s: None)
    else:  # batch norm sees micro-batches: the reference is the same pipeline in one process
        reference = Trainer(TrainConfig(method="penalty", aux="store", stages=2, parallel_epochs=0, micro_batches=micro_batches, **base),
                            train_data=train, test_data=test, log=lambda s: None)
    records = reference.fit()
    # The reference network cut as the workers cut theirs: stage by stage, the same parameters.
    described = describe(reference.model)
    expected = split(described, partition(described, 2, tuple(train.images.shape[1:])))
    for rank, worker in enumerate(workers):
        reference_stage = expected[rank].state_dict()
        assert worker["state"]["stages"][rank].keys() == reference_stage.keys()
        for name, value in worker["state"]["stages"][rank].items():
            torch.testing.assert_close(value, reference_stage[name], rtol=1e-5, atol=1e-6, msg=name)
        assert [r["phase"] for r in worker["records"]] == ["serial", "serial"]
        assert worker["records"][-1]["test_acc"] == pytest.approx(records[-1]["test_acc"], abs=0.5)
        # Each step sends every sample's activation across the cut and its gradient back.
        cut = math.prod(partition(described, 2, tuple(train.images.shape[1:])).cut_shapes[0])
        steps = len(train) // 32
        assert worker["records"][-1]["bytes_forward"] == [steps * 32 * cut * 4]
        assert worker["records"][-1]["bytes_backward"] == [steps * 32 * cut * 4]


@pytest.mark.parametrize("schedule", ["interleaved-1f1b", "zero-bubble"])
def test_looped_schedules_on_two_workers_are_the_four_stage_pipeline(tmp_path, schedule):
    # Four stages looped over two workers (stages 0 and 2 on one, 1 and 3 on the other) under
    # torch.distributed.pipelining's interleaved schedules: the four stages' pipeline of one process.
    config = dict(model="mnist_resnet", method="penalty", stages=4, parallel_epochs=0, micro_batches=4, epochs=1, batch_size=32,
                  threads=1, serial_schedule=schedule)
    workers = run_workers(tmp_path, config)
    train, test = small_data()
    single = Trainer(TrainConfig(**{**config, "serial_schedule": "1f1b"}), train_data=train, test_data=test, log=lambda s: None)
    records = single.fit()
    state = single.lp.state_dict()
    cuts = partition(describe(mnist_resnet()), 4, (1, 28, 28)).cut_shapes
    for rank, worker in enumerate(workers):
        assert worker["state"]["stages"].keys() == {rank, rank + 2}
        for s, stage in worker["state"]["stages"].items():
            for name, value in stage.items():
                torch.testing.assert_close(value, state["stages"][s][name], rtol=1e-5, atol=1e-6, msg=f"stage {s} {name}")
        assert worker["records"][-1]["test_acc"] == pytest.approx(records[-1]["test_acc"])
        assert worker["records"][-1]["bytes_forward"] == [6 * 32 * math.prod(shape) * 4 for shape in cuts]


def test_hybrid_switches_phase_and_augments_only_serially():
    train, test = small_data()
    trainer = Trainer(TrainConfig(method="al", stages=2, epochs=3, parallel_epochs=2, augment=True, batch_size=32, threads=1),
                      train_data=train, test_data=test, log=lambda s: None)
    assert [trainer.config.use_augmentation(e) for e in range(3)] == [False, False, True]
    records = trainer.fit()
    assert [r["phase"] for r in records] == ["parallel", "parallel", "serial"]
    assert records[2]["violation"] is None and records[2]["bytes_forward"] == [6 * 32 * 16 * 14 * 14 * 4]
    with pytest.raises(ValueError, match="add --parallel-epochs"):
        TrainConfig(method="al", stages=2, augment=True)


def test_lambda_is_held_only_while_a_parallel_epoch_is_left(tmp_path):
    train, test = small_data()
    lam_bytes = len(train) * 16 * 14 * 14 * 4  # λ and μ of the 192 samples at the cut, float32
    run = tmp_path / "sph"
    trainer = Trainer(TrainConfig(method="al", stages=2, epochs=3, parallel_epochs=2, batch_size=32, threads=1),
                      run, train_data=train, test_data=test, log=lambda s: None)
    assert trainer.lp.aux_nbytes() == 0  # nothing before the λ pass
    records = trainer.fit(pause_after=1)
    assert records[0]["aux_bytes"] == [2 * lam_bytes] and trainer.lp.aux_nbytes() == 2 * lam_bytes
    records = trainer.fit()
    assert records[0]["aux_bytes"] == [2 * lam_bytes] and records[1]["aux_bytes"] == [0]
    assert trainer.lp.aux_nbytes() == 0
    # The checkpoint at the switch and after it carry no per-sample rows.
    state = torch.load(run / "checkpoint-rank0-epoch3.pt", weights_only=True)["layer_parallel"]
    assert state["aux"] == {0: {"lam": None, "mu": None}}
    assert (run / "checkpoint-rank0-epoch3.pt").stat().st_size < lam_bytes
    with pytest.raises(RuntimeError, match="call LayerParallel.initialise"):  # a later parallel step needs a fresh λ pass
        trainer.lp.step(train.images[:2], train.labels[:2], torch.arange(2))
    # A run without parallel epochs (the serial pipeline alone) never allocates λ.
    pipeline = Trainer(TrainConfig(method="penalty", aux="store", stages=2, epochs=1, parallel_epochs=0, batch_size=32, threads=1),
                       train_data=train, test_data=test, log=lambda s: None)
    assert pipeline.fit()[0]["aux_bytes"] == [0]


def test_serial_warmup_trains_by_backprop_before_the_parallel_phase():
    train, test = small_data()
    config = TrainConfig(method="penalty", aux="store", stages=2, epochs=4, serial_warmup=1, parallel_epochs=2, augment=True, batch_size=32, threads=1)
    assert [config.phase(e) for e in range(4)] == ["serial", "parallel", "parallel", "serial"]
    assert [config.use_augmentation(e) for e in range(4)] == [True, False, False, True]
    # What the trainer frees and the bench snapshots go by, after 0..4 epochs; a run parallel to its
    # end keeps λ in its last checkpoint.
    assert [config.holds_lambda(n) for n in range(5)] == [False, False, True, False, False]
    assert [config.left_parallel_phase(n) for n in range(5)] == [False, False, False, True, False]
    assert TrainConfig(method="penalty", aux="store", stages=2, epochs=2).holds_lambda(2)
    trainer = Trainer(config, train_data=train, test_data=test, log=lambda s: None)
    warm = trainer.fit(pause_after=1)
    # The warm-up epoch is backprop (the same augmented batches, one learning-rate schedule) and holds no λ.
    backprop = Trainer(TrainConfig(epochs=4, augment=True, batch_size=32, threads=1), train_data=train, test_data=test, log=lambda s: None)
    backprop.fit(pause_after=1)
    for (name, a), b in zip(backprop.model.state_dict().items(), trainer.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert warm[0]["aux_bytes"] == [0]
    records = trainer.fit()
    assert [r["phase"] for r in records] == ["parallel", "parallel", "serial"]
    assert [r["beta"] for r in records[:2]] == [2.0, 4.0]  # β's schedule starts with the parallel phase
    assert records[0]["aux_bytes"] == [len(train) * 16 * 14 * 14 * 4] and records[2]["aux_bytes"] == [0]
    with pytest.raises(ValueError, match="needs --parallel-epochs"):
        TrainConfig(method="penalty", aux="store", stages=2, serial_warmup=1)
    with pytest.raises(ValueError, match="serial_warmup must be >= 0"):
        TrainConfig(method="penalty", aux="store", stages=2, epochs=4, serial_warmup=-1, parallel_epochs=2)
    with pytest.raises(ValueError, match="at most epochs=4"):
        TrainConfig(method="penalty", aux="store", stages=2, epochs=4, serial_warmup=2, parallel_epochs=3)


def test_parallel_blocks_alternate_and_start_each_from_a_fresh_lambda_pass():
    train, test = small_data()
    config = TrainConfig(method="penalty", aux="store", stages=2, epochs=6, parallel_epochs=4, parallel_blocks=2, augment=True,
                         batch_size=32, threads=1)
    assert [config.phase(e) for e in range(6)] == ["parallel", "parallel", "serial"] * 2
    assert [config.holds_lambda(n) for n in range(7)] == [False, True, False, False, True, False, False]
    assert [config.left_parallel_phase(n) for n in range(7)] == [False, False, True, False, False, True, False]
    lines: list[str] = []
    trainer = Trainer(config, train_data=train, test_data=test, log=lines.append)
    records = trainer.fit()
    assert [r["phase"] for r in records] == ["parallel", "parallel", "serial"] * 2
    assert sum(line.startswith("initialised auxiliary variables") for line in lines) == 2
    held = len(train) * 16 * 14 * 14 * 4
    assert [r["aux_bytes"] for r in records] == [[held], [held], [0], [held], [held], [0]]
    assert [r["beta"] for r in records if r["phase"] == "parallel"] == [2.0, 4.0, 8.0, 16.0]  # β counts parallel epochs
    with pytest.raises(ValueError, match="must divide both"):
        TrainConfig(method="penalty", aux="store", stages=2, epochs=6, parallel_epochs=3, parallel_blocks=2)
    with pytest.raises(ValueError, match="needs --parallel-epochs"):
        TrainConfig(method="penalty", aux="store", stages=2, epochs=6, parallel_blocks=2)


def test_restore_norms_puts_back_the_lengths_of_the_lambda_pass_when_the_parallel_phase_ends(tmp_path):
    train, test = small_data()
    base = dict(method="penalty", aux="store", stages=2, epochs=3, parallel_epochs=2, augment=True, batch_size=32, threads=1, local_loss=3.0)
    plain = Trainer(TrainConfig(**base), train_data=train, test_data=test, log=lambda s: None)
    # The λ pass runs before any step: the lengths it records are those of the initialised network.
    initial = [layer.weight.norm().item() for layer, _ in WeightNorms(plain.lp.stages[0]).pairs]
    plain.fit(pause_after=2)
    lines: list[str] = []
    config = TrainConfig(restore_norms=True, **base)
    first = Trainer(config, tmp_path, train_data=train, test_data=test, log=lines.append)
    first.fit(pause_after=1)  # resumed inside the parallel phase: the recorded lengths come from the checkpoint
    restoring = Trainer(config, tmp_path, resume=True, train_data=train, test_data=test, log=lines.append)
    restoring.fit(pause_after=1)
    assert sum(line.startswith("restored the regressing stages' weight norms") for line in lines) == 1
    pairs = restoring.lp.aux_phase.weight_norms[0].pairs
    grown = [layer.weight.norm().item() for layer, _ in WeightNorms(plain.lp.stages[0]).pairs]
    assert grown != pytest.approx(initial, rel=0.05)  # the parallel epochs changed them
    assert [layer.weight.norm().item() for layer, _ in pairs] == pytest.approx(initial, rel=1e-6)
    assert restoring.lp.aux_phase.weight_norms[0].recorded is None
    # Same function as the network that kept its lengths (up to batch norm's ε), in both modes.
    x = test.images[:32].float().contiguous(memory_format=torch.channels_last)
    for mode in (True, False):
        plain.model.train(mode), restoring.model.train(mode)
        torch.testing.assert_close(restoring.model(x), plain.model(x), rtol=1e-3, atol=1e-3)
    # The last stage learns from real gradients and is left as it was.
    for a, b in zip(plain.lp.stages[1].parameters(), restoring.lp.stages[1].parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="needs --parallel-epochs"):
        TrainConfig(method="penalty", aux="store", stages=2, epochs=3, restore_norms=True)
    with pytest.raises(RuntimeError, match="restore_norms=True"):
        plain.lp.restore_weight_norms()


def test_lambda_starts_from_the_batch_statistics_it_trains_with():
    # Sorted by class, as the CIFAR archives are: filled in file order, every batch of the λ pass
    # would hold one class, and λ would differ from what stage 0 computes on its training batch.
    train, test = small_data()
    order = torch.sort(train.labels, stable=True).indices
    train = ImageDataset(train.images[order], train.labels[order], train.num_classes, train.mean, train.std)
    # Stage 0's loss is then its penalty alone, on un-flipped images.
    trainer = Trainer(TrainConfig(method="penalty", aux="store", stages=2, epochs=1, batch_size=32, threads=1, local_loss=0.0, parallel_flip=False),
                      train_data=train, test_data=test, log=lambda s: None)
    losses, step = [], trainer.lp.step
    trainer.lp.step = lambda x, y, idx, flips, **options: losses.append(step(x, y, idx, flips, **options)) or losses[-1]
    trainer.train_epoch()
    assert losses[0][0].item() == 0.0  # stage 0's first output is exactly its λ: nothing to regress yet


# ------------------------------------------------------------------------------ DS filters


def test_identity_filter_is_bit_identical_to_none():
    train, test = small_data()
    base = dict(method="penalty", aux="store", stages=2, epochs=1, batch_size=32, threads=1)
    plain = Trainer(TrainConfig(**base), train_data=train, test_data=test, log=lambda s: None)
    plain.fit()
    filtered = Trainer(TrainConfig(ds_factor=1, wire_dtype="float32", **base), train_data=train, test_data=test, log=lambda s: None)
    filtered.fit()
    for (name, a), b in zip(plain.model.state_dict().items(), filtered.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(plain.lp.aux[0].lam.data, filtered.lp.aux[0].lam.data)


def test_coarse_store_and_filter_errors():
    train, test = small_data()
    trainer = Trainer(TrainConfig(method="al", stages=2, epochs=1, batch_size=32, threads=1, store_ds_factor=2, store_dtype="bfloat16"),
                      train_data=train, test_data=test, log=lambda s: None)
    records = trainer.fit()
    # λ and μ of 192 samples at 16×7×7 in bfloat16.
    assert records[0]["aux_bytes"] == [2 * 192 * 16 * 7 * 7 * 2]
    assert trainer.lp.aux[0].lam.data.shape == (192, 16, 7, 7)
    with pytest.raises(ValueError, match="DS factor 3 does not divide the cut's feature map"):
        Trainer(TrainConfig(method="penalty", aux="store", stages=2, ds_factor=3), train_data=train, test_data=test, log=lambda s: None)
    with pytest.raises(ValueError, match="use them with --method penalty"):
        TrainConfig(ds_factor=2)


# ------------------------------------------------------------------------------ auxiliary networks


def test_aux_net_regression_reduces_its_loss_on_a_fixed_batch():
    from lpfast.auxnet import AuxNet, NetAux

    torch.manual_seed(0)
    aux = NetAux(AuxNet(1, (28, 28), (16, 14, 14), width=8, depth=2, heads=2),
                 lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), with_mu=True)
    x, idx = torch.randn(16, 1, 28, 28), torch.arange(16)
    lam_target, mu_target = torch.randn(16, 16, 14, 14).relu(), torch.randn(16, 16, 14, 14) * 0.1
    losses = []
    for _ in range(30):
        lam, mu = aux.fetch(x, idx)
        assert lam.shape == mu.shape == (16, 16, 14, 14) and not lam.requires_grad
        losses.append(F.mse_loss(torch.cat([lam, mu], 1), torch.cat([lam_target, mu_target], 1)).item())
        aux.update(x, idx, lam_target, mu_target)
    assert losses[-1] < 0.6 * losses[0]
    assert aux.take_fit_loss().item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_aux_net_run_holds_no_per_sample_tensor_and_augments_in_parallel():
    train, test = small_data()
    config = TrainConfig(method="penalty", stages=2, epochs=1, batch_size=32, threads=1, aux="net", augment=True)
    assert config.use_augmentation(0)
    trainer = Trainer(config, train_data=train, test_data=test, log=lambda s: None)
    records = trainer.fit()
    per_sample = [path for path, t in tensors(trainer.lp.state_dict()) if t.dim() and t.shape[0] == len(train)]
    assert per_sample == []
    aux = trainer.lp.aux[0]
    net_bytes = sum(t.numel() * 4 for t in [*aux.net.parameters(), *aux.net.buffers()] if t.is_floating_point())
    int_bytes = sum(t.numel() * t.element_size() for t in aux.net.buffers() if not t.is_floating_point())
    momentum = sum(p.numel() * 4 for p in aux.net.parameters())
    assert records[0]["aux_bytes"] == [net_bytes + int_bytes + momentum]
    assert records[0]["aux_bytes"][0] < 192 * 16 * 14 * 14 * 4 / 4  # under a quarter of even this tiny store
    assert records[0]["aux_fit_loss"][0] > 0 and records[0]["violation"][0] > 0


def test_aux_net_default_width_fits_the_budget():
    from lpfast.auxnet import build_aux_net, forward_flops
    from lpfast.models import build_model

    for name, shape in (("resnet20", (3, 32, 32)), ("mnist_resnet", (1, 28, 28))):
        model = build_model(name, in_channels=shape[0])
        plan = partition(model, 2, shape)
        budget = 0.1 * plan.stage_flops[1]
        net = build_aux_net(shape[0], shape[1:], plan.cut_shapes[0], depth=2, width=None, heads=1, budget_flops=budget)
        assert forward_flops(net, torch.zeros(2, *shape)) <= budget
        assert net(torch.zeros(2, *shape)).shape == (2, *plan.cut_shapes[0])
    with pytest.raises(ValueError, match="--aux net is a layer-parallel option"):
        TrainConfig(aux="net")
    with pytest.raises(ValueError, match="which --aux net does not have"):
        TrainConfig(method="penalty", stages=2, aux="net", store_ds_factor=2)


# ------------------------------------------------------------------------------ data-parallel baseline


def test_data_parallel_serial_is_backprop_on_the_whole_batch(tmp_path):
    # DDP on 2 workers: each trains on its half of every batch, gradients averaged. The same steps
    # in one process: the mean of the two halves' gradients (batch norm on each half's statistics).
    config = dict(method="serial", epochs=1, batch_size=32, threads=1, weight_decay=5e-4)
    workers = run_workers(tmp_path, config)
    for name, value in workers[0]["model"].items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(value, workers[1]["model"][name]), name
    train, test = small_data()
    torch.manual_seed(0)
    trainer = Trainer(TrainConfig(**config), train_data=train, test_data=test, log=lambda s: None)
    model, opt = trainer.model, trainer.optimizers[0]
    for batch in trainer._train_batches():
        opt.zero_grad()
        for x, y in zip(batch.x.chunk(2), batch.y.chunk(2)):
            (F.cross_entropy(model(x), y) / 2).backward()
        opt.step()
        trainer.schedulers[0].step()
    for name, value in model.state_dict().items():
        if "running" not in name and "num_batches" not in name:
            torch.testing.assert_close(workers[0]["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert workers[0]["records"][0]["samples_per_s"] > 0
    with pytest.raises(ValueError, match="workers dividing batch_size"):
        from lpfast.batches import BatchIterator
        BatchIterator(train, 33, shuffle=True, shard=(0, 2))


@pytest.mark.parametrize("method", ["penalty", "al"])
def test_flipped_samples_train_on_their_mirrored_aux_variables(method):
    """A step on flipped images with flips marked equals a step on the same images whose stored λ
    and μ rows were mirrored beforehand (and are mirrored back after): targets follow the image."""
    from lpfast.auxvars import flip_rows

    torch.manual_seed(0)
    model = mnist_resnet(depth=2, width=4).double()
    twin = copy.deepcopy(model)
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    y, idx = torch.randint(0, 10, (6,)), torch.tensor([5, 0, 3, 7, 1, 2])
    flips = torch.tensor([True, False, True, True, False, False])

    def make(net):
        torch.manual_seed(1)  # the same local heads
        lp = LayerParallel(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), stages=2, method=method, aux="store", dataset_size=8,
                           input_shape=(1, 28, 28), local_loss=0.5)
        lp.initialise([(x, idx)])  # allocates the stores (their rows are replaced below)
        return lp

    a, b = make(model), make(twin)
    stores = lambda lp: [s for aux in lp.aux.values() for s in (aux.lam, aux.mu) if s is not None]  # noqa: E731
    for sa, sb in zip(stores(a), stores(b)):
        sa.data = torch.randn_like(sa.data, dtype=torch.float64)
        sb.data = sa.data.clone()
        sb.data[idx] = flip_rows(sb.data[idx], flips)
    a.step(x, y, idx, flips)
    b.step(x, y, idx)
    for sa, sb in zip(stores(a), stores(b)):
        sb.data[idx] = flip_rows(sb.data[idx], flips)
        torch.testing.assert_close(sa.data, sb.data, rtol=1e-12, atol=1e-12)
        assert not torch.equal(sa.data[idx[flips]], sa.data[idx[flips]].flip(-1))
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12, msg=name)


def test_parallel_flip_draws_flips_only_in_the_parallel_phase():
    from lpfast.batches import BatchIterator

    train, test = small_data()
    trainer = Trainer(TrainConfig(method="penalty", aux="store", stages=2, epochs=2, parallel_epochs=1, parallel_flip=True, batch_size=32, threads=1),
                      train_data=train, test_data=test, log=lambda s: None)
    parallel = next(iter(trainer._train_batches()))
    assert parallel.flips is not None and 0 < int(parallel.flips.sum()) < 32
    plain = next(iter(BatchIterator(train, 32, shuffle=True, seed=0, epoch=0, drop_last=True, channels_last=True)))
    assert torch.equal(parallel.idx, plain.idx)
    torch.testing.assert_close(parallel.x[parallel.flips], plain.x[parallel.flips].flip(-1))
    torch.testing.assert_close(parallel.x[~parallel.flips], plain.x[~parallel.flips])
    trainer.epoch = 1  # the serial phase augments as usual
    assert next(iter(trainer._train_batches())).flips is None

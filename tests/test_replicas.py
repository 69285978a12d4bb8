"""K stages × D replicas (lpfast.mesh, lpfast.replicas) on 4 gloo workers: 2 × 2 equals 2 × 1 on
the same global batches in float64, 1 × 4 equals DDP, the mesh places ranks as asked, and a dead
worker in either dimension stops the others with an error naming it."""
import datetime
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from lpfast.mesh import Mesh, build_mesh
from lpfast.parallel import LayerParallel
from lpfast.replicas import GradientAverage
from lpfast.transport import DistTransport, LocalTransport

N, BATCH, STEPS = 32, 8, 4
TIMEOUT = datetime.timedelta(seconds=30)
TIMES = ("epoch_time_s", "samples_per_s", "stage_time_s", "peak_rss_mb")  # what differs between two runs of the same numbers


class Residual(nn.Module):
    """A residual block without batch norm: every sample's output depends on that sample alone, so
    the replicas' halves of a batch give exactly the whole batch's mean gradient."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


def network() -> nn.Sequential:
    torch.manual_seed(0)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), *(Residual(4) for _ in range(4)), head).double()


def data():
    """N samples and STEPS global batches of sample ids, each with BATCH/4 ids of every residue mod 4:
    with D replicas (2 or 4) sample i is in replica i % D's part, and every replica gets its share."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (N,), generator=g)
    residues = [torch.randperm(N // 4, generator=g) * 4 + r for r in range(4)]
    share = BATCH // 4
    batches = [torch.cat([ids[b * share:(b + 1) * share] for ids in residues]) for b in range(STEPS)]
    return x, y, batches


def train(aux: str, transport, replica: int, replicas: int, stages: int = 2, parts: int = 1) -> dict:
    """``stages`` stages of ``network()`` trained by ``replica`` of ``replicas`` on its part of every global
    batch (sample i belongs to replica i % replicas, as its row i // replicas): one parallel epoch
    (each batch in ``parts`` parts), then serial steps through the stages."""
    x, y, batches = data()
    lp = LayerParallel(network(), optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3), stages=stages,
                       method="penalty", aux=aux, local_loss=0.0, dataset_size=N // replicas, input_shape=(1, 8, 8),
                       transport=transport)
    mine = [ids[ids % replicas == replica] for ids in batches]
    lp.initialise((x[ids], ids // replicas) for ids in mine)
    for ids in mine:
        lp.step(x[ids], y[ids], ids // replicas, micro_batches=parts)
    stats = lp.end_epoch()
    for ids in mine:
        lp.serial_step(x[ids], y[ids], micro_batches=2)
    return {"state": lp.state_dict(), "stats": stats}


def _worker(rank, store_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=4)
    try:
        results = {}
        mesh = build_mesh(2, 2)
        results["mesh"] = (mesh.stage, mesh.replica, build_mesh(2, 2, placement="replicas-together").stage)
        for aux in ("pipelined", "store"):
            results[aux] = train(aux, DistTransport(TIMEOUT, mesh), mesh.replica, 2)
        results["pipelined-parts"] = train("pipelined", DistTransport(TIMEOUT, mesh), mesh.replica, 2, parts=2)
        # K=1 × D=4 against DDP on the same parts of the same batches.
        x, y, batches = data()
        mesh = build_mesh(1, 4)
        results["k1"] = train("pipelined", DistTransport(TIMEOUT, mesh), mesh.replica, 4, stages=1)["state"]["stages"][0]
        model = network()[:]  # the same network as one module
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        for _ in range(2):  # the parallel epoch, then the serial one (micro-batches change nothing without batch norm)
            for ids in batches:
                ids = ids[ids % 4 == rank]
                opt.zero_grad()
                F.cross_entropy(ddp(x[ids]), y[ids]).backward()
                opt.step()
        results["ddp"] = model.state_dict()
        # Buckets leave while the backward runs: when the first layer's gradient (the backward's
        # last) arrives, the later layers' buckets are already on their way.
        average = GradientAverage([p.numel() for p in model.parameters()], 8, group=mesh.replica_group, replicas=4,
                                  timeout=TIMEOUT, who=f"rank {rank}", peers=[], bucket_bytes=64)
        reduction = average.track(list(model.parameters()))
        launched = []
        model[0].weight.register_post_accumulate_grad_hook(lambda _: launched.append(len(reduction.works)))
        F.cross_entropy(model(x[:2]), y[:2]).backward()
        reduction.finish()
        results["launched"] = (launched[0], len(average.buckets))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicas")
    mp.start_processes(_worker, args=(str(out / "store"), str(out)), nprocs=4, start_method="spawn")
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(4)]


def test_mesh_places_a_replicas_stages_or_a_stages_replicas_on_adjacent_ranks(workers):
    assert [w["mesh"] for w in workers] == [(0, 0, 0), (1, 0, 0), (0, 1, 1), (1, 1, 1)]
    together = Mesh(2, 2, "replicas-together", stage=0, replica=0)
    assert [together.rank_of(s, r) for s in range(2) for r in range(2)] == [0, 1, 2, 3]
    assert Mesh(2, 2, "stages-together", stage=1, replica=1).name(0) == "stage 0 of replica 1 (rank 2)"


@pytest.mark.parametrize("aux", ["pipelined", "store", "pipelined-parts"])
def test_two_stages_by_two_replicas_equal_two_stages_on_the_whole_batch(workers, aux):
    # In parts (each replica's half batch in two), the replicas average each batch's gradient once:
    # the bytes below are one all-reduce a step, not one a part.
    single = train(aux.removesuffix("-parts"), LocalTransport(), 0, 1, parts=2 if aux.endswith("-parts") else 1)
    for rank, worker in enumerate(workers):
        stage = rank % 2
        for name, value in worker[aux]["state"]["stages"][stage].items():
            torch.testing.assert_close(value, single["state"]["stages"][stage][name], rtol=1e-10, atol=1e-12, msg=f"rank {rank} {name}")
        stats = worker[aux]["stats"]
        assert stats["stage_loss"] == pytest.approx(single["stats"]["stage_loss"], rel=1e-10)
        # Each replica sent its half of the activations: together, the one replica's bytes.
        assert stats["bytes_forward"] == single["stats"]["bytes_forward"]
        # Every step each device all-reduced its own stage's gradient, nothing of the other stage.
        params = [sum(p.numel() * 8 for p in network()[i].parameters()) for i in range(6)]
        assert stats["allreduce_bytes"] == [STEPS * sum(params[:3]), STEPS * sum(params[3:])]
    if aux == "store":  # each replica keeps λ for its own half of the samples
        assert workers[2]["store"]["stats"]["aux_bytes"] == [N // 2 * 4 * 8 * 8 * 4]
        assert single["stats"]["aux_bytes"] == [N * 4 * 8 * 8 * 4]


def test_one_stage_by_four_replicas_is_ddp(workers):
    for worker in workers:
        state = {name.removeprefix("layers."): value for name, value in worker["k1"].items()}
        assert state.keys() == worker["ddp"].keys()
        for name, value in worker["ddp"].items():
            torch.testing.assert_close(state[name], value, rtol=1e-10, atol=1e-12, msg=name)


def test_buckets_leave_during_the_backward(workers):
    for worker in workers:
        launched, buckets = worker["launched"]
        assert buckets > 2 and 0 < launched < buckets


# ------------------------------------------------------------------------------ a dead worker


def _dying_worker(rank, store_file, result_file, stages, replicas, dead):
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=5)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=4, timeout=timeout)
    mesh = build_mesh(stages, replicas)
    x, y, batches = data()
    lp = LayerParallel(network(), optimizer=lambda p: torch.optim.SGD(p, lr=0.05), stages=stages, input_shape=(1, 8, 8),
                       transport=DistTransport(timeout, mesh))
    if rank == dead:
        os._exit(3)  # dies without a word
    start = time.perf_counter()
    try:
        for ids in batches:
            lp.step(x[ids[:2]], y[ids[:2]])
        lp.end_epoch()
        message = "no error"
    except Exception as exc:  # noqa: BLE001 - the test inspects whatever surfaced
        message = f"{type(exc).__name__}: {exc}"
    with open(f"{result_file}{rank}", "w") as f:
        f.write(f"{time.perf_counter() - start:.1f}\n{message}")


@pytest.mark.parametrize("stages, replicas, dead, named", [
    (2, 2, 2, {3: "receiving from stage 0 of replica 1 (rank 2)"}),  # the stage dimension: rank 3 waits for it
    (1, 4, 2, {0: "stage 0 of replica 2 (rank 2)", 1: "stage 0 of replica 2 (rank 2)"}),  # the replica dimension
])
def test_a_dead_worker_in_either_dimension_stops_every_rank_naming_it(tmp_path, stages, replicas, dead, named):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_dying_worker, args=(r, str(tmp_path / "store"), str(tmp_path / "result"), stages, replicas, dead))
             for r in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    assert all(not p.is_alive() for p in procs), "a worker hung"
    for rank in set(range(4)) - {dead}:
        elapsed, message = (tmp_path / f"result{rank}").read_text().split("\n", 1)
        assert "WorkerLostError" in message, (rank, message)
        assert named.get(rank, "") in message, (rank, message)
        assert float(elapsed) < 30


# ------------------------------------------------------------------------------ runs under torchrun


def torchrun_replicas(run, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4", "-m", "lpfast", "train",
                    "--method", "penalty", "--aux", "store", "--stages", "2", "--replicas", "2", "--epochs", "3", "--parallel-epochs", "2",
                    "--micro-batches", "2", "--train-subset", "512", "--batch-size", "64", "--threads", "1", "--dist-timeout", "30",
                    "--out", str(run), *args], check=True, timeout=600, capture_output=True)


def test_two_by_two_run_resumes_bit_for_bit_and_refuses_another_layout(tmp_path, capsys):
    # Stored λ: each replica checkpoints λ of its own part; the run paused after the first parallel
    # epoch resumes to the uninterrupted run's every tensor on all four ranks.
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    torchrun_replicas(straight)
    torchrun_replicas(paused, "--pause-after", "1")
    torchrun_replicas(paused, "--resume")
    epoch = json.loads((straight / "committed.json").read_text())["epoch"]
    assert epoch == 3 and json.loads((paused / "committed.json").read_text())["epoch"] == 3
    for rank in range(4):
        a, b = (torch.load(run / f"checkpoint-rank{rank}-epoch3.pt", weights_only=True)["layer_parallel"] for run in (straight, paused))
        for key, value in a["stages"][rank % 2].items():
            assert torch.equal(value, b["stages"][rank % 2][key]), (rank, key)
    lines = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert lines == [json.loads(line) | {k: lines[i][k] for k in TIMES}
                     for i, line in enumerate((paused / "metrics.jsonl").read_text().splitlines())]
    # Each replica stored λ for its half of the 512 samples: 256 × the cut's 16×14×14 floats.
    assert lines[0]["aux_bytes"] == [256 * 16 * 14 * 14 * 4] and lines[0]["allreduce_bytes"][0] > 0
    from lpfast.cli import main

    assert main(["train", "--out", str(paused), "--resume", "--stages", "4", "--replicas", "1"]) == 2
    assert "replicas: run has 2, asked 1" in capsys.readouterr().err

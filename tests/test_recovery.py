"""Nothing lost: a killed worker's group restarts and resumes by itself, a checkpoint counts only
once every rank committed it, and a diverging run stops at its last good checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lpfast.cli import EXIT_DIVERGED, main

TRAIN = ["-m", "lpfast", "train", "--method", "penalty", "--aux", "store", "--stages", "2", "--train-subset", "2048", "--batch-size", "64",
         "--threads", "1", "--dist-timeout", "30"]


def torchrun(*args: str, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--max-restarts", str(restarts), *TRAIN, *args]


def final_state(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of both ranks' committed checkpoints (parameters, optimizer state, λ)."""
    epoch = json.loads((run / "committed.json").read_text())["epoch"]
    flat = {}

    def walk(value, path):
        if torch.is_tensor(value):
            flat[path] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}/{key}")

    for rank in (0, 1):
        walk(torch.load(run / f"checkpoint-rank{rank}-epoch{epoch}.pt", weights_only=True), f"rank{rank}")
    return flat


def metrics(run: Path) -> list[dict]:
    keep = ("epoch", "train_loss", "test_acc", "violation", "stage_loss")
    return [{k: m[k] for k in keep} for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def assert_same_run(a: Path, b: Path) -> None:
    assert metrics(a) == metrics(b)
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys() and any("/lam" in k for k in sa)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def worker_pids(agent: int) -> dict[int, int]:
    """{local rank: pid} of the workers torchrun's agent process ``agent`` runs now."""
    found = {}
    for child in Path(f"/proc/{agent}/task/{agent}/children").read_text().split():
        try:
            env = dict(v.split("=", 1) for v in Path(f"/proc/{child}/environ").read_bytes().decode().split("\0") if "=" in v)
        except OSError:
            continue
        if "LOCAL_RANK" in env:
            found[int(env["LOCAL_RANK"])] = int(child)
    return found


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(torchrun("--epochs", "3", "--out", str(run)), check=True, timeout=600, capture_output=True)
    return run


def test_killed_worker_restarts_and_resumes_bit_for_bit(uninterrupted, tmp_path):
    run = tmp_path / "run"
    job = subprocess.Popen(torchrun("--epochs", "3", "--out", str(run), restarts=1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (run / "committed.json").exists() or json.loads((run / "committed.json").read_text())["epoch"] < 1:
        assert job.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(worker_pids(job.pid)[1], signal.SIGKILL)  # rank 1, in epoch 2
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output
    assert "resumed" in output and "after epoch" in output
    assert_same_run(uninterrupted, run)


def test_resume_takes_the_epoch_every_rank_committed(uninterrupted, tmp_path):
    run = tmp_path / "run"
    subprocess.run(torchrun("--epochs", "3", "--pause-after", "2", "--out", str(run)), check=True, timeout=600, capture_output=True)
    # Rank 0 wrote its epoch-3 checkpoint, rank 1 died before writing its own: epoch 3 never committed.
    (run / "checkpoint-rank0-epoch3.pt").write_bytes((uninterrupted / "checkpoint-rank0-epoch3.pt").read_bytes())
    assert json.loads((run / "committed.json").read_text()) == {"epoch": 2, "step": 0, "world": 2}
    done = subprocess.run(torchrun("--epochs", "3", "--out", str(run), "--resume"), timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed" in done.stdout and "after epoch 2" in done.stdout
    assert_same_run(uninterrupted, run)
    assert sorted(p.name for p in run.glob("checkpoint*")) == ["checkpoint-rank0-epoch3.pt", "checkpoint-rank1-epoch3.pt"]


def test_resume_auto_starts_or_continues(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--train-subset", "256", "--batch-size", "64", "--threads", "1", "--epochs", "2", "--out", str(run), "--resume", "auto"]
    assert main([*args, "--pause-after", "1"]) == 0  # nothing there: starts
    assert main(args) == 0  # a run there: continues it
    out = capsys.readouterr().out
    assert "resumed" in out and "after epoch 1" in out
    assert [m["epoch"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [1, 2]


@pytest.mark.parametrize("method", ["serial", "penalty"])
def test_divergence_stops_at_the_last_good_checkpoint(tmp_path, capsys, method):
    run = tmp_path / "run"
    # The learning rate ramps up to 40 over the run: epoch 1 stays finite, epoch 2 diverges.
    args = ["train", "--lr", "40", "--warmup-epochs", "2.9", "--epochs", "3", "--threads", "1", "--out", str(run), "--method", method]
    # (without the local head, which makes stage 0 diverge in epoch 1 already)
    assert main(args + (["--stages", "2", "--local-loss", "0"] if method == "penalty" else [])) == EXIT_DIVERGED
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "training diverged" in err and "at epoch 2, step" in err
    assert "the last good checkpoint (after epoch 1)" in err and ("stage" in err) == (method == "penalty")
    assert json.loads((run / "committed.json").read_text())["epoch"] == 1
    [checkpoint] = run.glob("checkpoint*")
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 1
    tensors = [v for v in (state.get("model") or state["layer_parallel"]["stages"][0]).values() if v.is_floating_point()]
    assert tensors and all(torch.isfinite(t).all() for t in tensors)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    import errno

    from lpfast import checkpoint

    run = tmp_path / "run"
    args = ["train", "--train-subset", "256", "--batch-size", "64", "--threads", "1", "--epochs", "2", "--out", str(run)]
    assert main([*args, "--pause-after", "1"]) == 0
    good = (run / "checkpoint-rank0-epoch1.pt").read_bytes()
    real_save = torch.save

    def save_until_full(obj, f):
        real_save(obj, f)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", save_until_full)
    assert main(["train", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "No space left on device" in err and "the checkpoint of epoch 1 is intact" in err
    assert json.loads((run / "committed.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == ["checkpoint-rank0-epoch1.pt"]
    assert (run / "checkpoint-rank0-epoch1.pt").read_bytes() == good


@pytest.mark.parametrize("method", ["serial", "al"])
def test_mid_epoch_checkpoint_resumes_exactly(tmp_path, monkeypatch, method):
    from lpfast.config import TrainConfig
    from lpfast.datasets import load_embedded
    from lpfast.parallel import LayerParallel
    from lpfast.trainer import Trainer

    train, test = load_embedded("train").subset(256), load_embedded("test").subset(64)
    options = dict(method=method, aux="store", epochs=3, batch_size=32, threads=1, augment=True, checkpoint_every=3)
    if method == "al":  # a parallel epoch, then augmented serial ones through the stages
        options |= dict(stages=2, parallel_epochs=1, micro_batches=2, augment=True)

    def trainer(run, resume=False):
        return Trainer(TrainConfig(**options), run, resume=resume, train_data=train, test_data=test, log=lambda s: None)

    straight = trainer(tmp_path / "a")
    straight_records = straight.fit()

    # Stop in the 13th step (epoch 2, step 5): the last checkpoint is epoch 1 + 3 steps.
    calls = {"n": 0}
    patched = "serial_step" if method == "al" else None
    real = getattr(LayerParallel, patched) if patched else torch.optim.SGD.step

    def stopping(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    if patched:
        # epoch 1 is parallel (8 steps); the serial steps of epoch 2 are counted from 9
        calls["n"] = 8
        monkeypatch.setattr(LayerParallel, patched, stopping)
    else:
        monkeypatch.setattr(torch.optim.SGD, "step", stopping)
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "b").fit()
    monkeypatch.undo()
    assert json.loads((tmp_path / "b" / "committed.json").read_text()) == {"epoch": 1, "step": 3, "world": 1}
    resumed = trainer(tmp_path / "b", resume=True)
    resumed_records = resumed.fit()

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if method == "al":
        # Past the switch neither run holds λ or μ: the resume started from a checkpoint without them.
        sa, sb = straight.lp.state_dict()["aux"], resumed.lp.state_dict()["aux"]
        assert sa.keys() == sb.keys() == {0}
        assert all(state[0][k] is None for state in (sa, sb) for k in ("lam", "mu"))
    every = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    drop = ("epoch_time_s", "samples_per_s", "peak_rss_mb", "stage_time_s", "mid_epoch_checkpoint_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in every] == \
           [{k: v for k, v in r.items() if k not in drop} for r in straight_records]
    assert resumed_records[-1]["mid_epoch_checkpoint_s"] > 0

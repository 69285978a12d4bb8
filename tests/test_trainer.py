"""The serial trainer and the CLI: exact resume, run folders, clear errors."""
import json
import os
import subprocess
import sys

import pytest
import torch

from lpfast.cli import main, pin_to_own_cores
from lpfast.config import TrainConfig
from lpfast.datasets import load_embedded
from lpfast.trainer import RunFolderError, Trainer, evaluate
from test_datasets import write_mnist


@pytest.fixture(scope="module")
def small_data():
    return load_embedded("train").subset(256), load_embedded("test").subset(100)


def trainer(config, run_dir, small_data, **kwargs):
    train, test = small_data
    return Trainer(config, run_dir, train_data=train, test_data=test, log=kwargs.pop("log", lambda s: None), **kwargs)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


class Interrupt(Exception):
    pass


def test_resume_gives_the_uninterrupted_parameters(tmp_path, small_data):
    # Augmentation on, so the per-epoch random streams are part of what must resume exactly.
    config = TrainConfig(epochs=3, batch_size=32, augment=True, threads=1)
    straight = trainer(config, tmp_path / "a", small_data)
    straight.fit()

    def stop_after_first_epoch(line):
        if line.startswith("epoch 1/"):
            raise Interrupt

    interrupted = trainer(config, tmp_path / "b", small_data, log=stop_after_first_epoch)
    with pytest.raises(Interrupt):
        interrupted.fit()
    resumed = trainer(config, tmp_path / "b", small_data, resume=True)
    assert resumed.epoch == 1
    resumed.fit()
    a, b = state(straight.model), state(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.optimizers[0].param_groups[0]["lr"] == resumed.optimizers[0].param_groups[0]["lr"]
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]


def test_training_learns(small_data):
    t = trainer(TrainConfig(epochs=6, batch_size=32, threads=1), None, small_data)
    records = t.fit()
    assert records[-1]["train_loss"] < 0.6 * records[0]["train_loss"]
    assert records[-1]["test_acc"] > 50


def test_test_subset_evaluates_on_a_balanced_part_of_the_test_set(small_data):
    train, test = small_data
    t = trainer(TrainConfig(epochs=1, batch_size=32, threads=1, test_subset=30), None, small_data)
    part = test.subset(30)
    assert torch.equal(t.test_data.images, part.images) and torch.equal(t.test_data.labels, part.labels)
    assert t.evaluate() == evaluate(t.model, part, batch_size=1000, device=torch.device("cpu"), channels_last=True)
    assert t.evaluate() != evaluate(t.model, test, batch_size=1000, device=torch.device("cpu"), channels_last=True)
    with pytest.raises(ValueError, match="test_subset must be at least one sample per replica"):
        TrainConfig(test_subset=0)


def test_run_folder_guards(tmp_path, small_data):
    config = TrainConfig(epochs=1, batch_size=64, threads=1)
    trainer(config, tmp_path, small_data).fit()
    with pytest.raises(RunFolderError, match="pass --resume"):
        trainer(config, tmp_path, small_data)
    with pytest.raises(RunFolderError, match="lr: run has 0.1, asked 0.2"):
        trainer(TrainConfig(epochs=1, batch_size=64, lr=0.2), tmp_path, small_data, resume=True)
    with pytest.raises(RunFolderError, match="nothing to resume"):
        trainer(config, tmp_path / "empty", small_data, resume=True)


def test_config_validation():
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="dataset must be one of"):
        TrainConfig(dataset="imagenet")
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="vgg")
    with pytest.raises(ValueError, match="momentum must be in"):
        TrainConfig(momentum=1.0)
    with pytest.raises(ValueError, match="in the serial phase only"):
        TrainConfig(method="penalty", stages=4, serial_schedule="interleaved-1f1b")  # parallel epochs too
    assert TrainConfig(method="penalty", stages=4, parallel_epochs=0, serial_schedule="zero-bubble").workers_per_replica == 2


def test_cli_train_and_resume(tmp_path, capsys):
    write_mnist(tmp_path / "data" / "MNIST" / "raw", n_train=16, n_test=8)
    run = tmp_path / "run"
    args = ["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--epochs", "2", "--batch-size", "8", "--threads", "1", "--out", str(run)]
    assert main(args) == 0
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "committed.json").read_text()) == {"epoch": 2, "step": 0, "world": 1}
    assert [p.name for p in run.glob("checkpoint*")] == ["checkpoint-rank0-epoch2.pt"]
    # A finished run resumes to nothing more; other options are refused with a fix.
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 2
    assert "epochs: run has 2, asked 3" in capsys.readouterr().err


def test_cli_missing_data_is_one_line(tmp_path, capsys):
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path) in err and "cifar-10-batches-py" in err


def test_python_dash_m_entry_points():
    out = subprocess.run([sys.executable, "-m", "lpfast", "train", "--help"], capture_output=True, text=True, check=True)
    assert "--resume" in out.stdout
    info = subprocess.run([sys.executable, "-m", "lpfast.info"], capture_output=True, text=True, check=True)
    assert "lpfast::penalty_residual" in info.stdout and "loaded" in info.stdout


def test_workers_pin_to_their_own_cores():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    try:
        pin_to_own_cores(1, 2, threads=len(cores) // 2)
        assert sorted(os.sched_getaffinity(0)) == cores[len(cores) // 2 : 2 * (len(cores) // 2)]
        os.sched_setaffinity(0, cores)
        pin_to_own_cores(0, len(cores) + 1, threads=1)  # more workers than cores: shared, left alone
        assert sorted(os.sched_getaffinity(0)) == cores
    finally:
        os.sched_setaffinity(0, cores)

"""The smallest benchmark preset end to end: lpfast bench runs every kind of row through the real
CLI (torchrun for the worker rows) and bench/report.py turns its records into the report;
the slow link between two network namespaces and what a message costs on it."""
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lpfast.plan import PartCosts, predict

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["serial, 1 thread", "serial, 2 threads", "DDP, 2 workers x 1 thread", "pipeline GPipe K=2, 4 micro-batches",
        "pipeline 1F1B K=2, 4 micro-batches", "penalty K=2", "penalty K=2, DS s=2 bf16", "penalty K=2, --aux net"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory) -> list[dict]:
    """The smoke preset's records: every kind of row, one epoch on 256 embedded images."""
    out = tmp_path_factory.mktemp("bench") / "results"
    subprocess.run([sys.executable, "-m", "lpfast", "bench", "smoke", "--dataset", "embedded", "--epochs", "1",
                    "--train-subset", "256", "--batch-size", "64", "--out", str(out), "--port", str(free_port())],
                   check=True, cwd=out.parent, timeout=600, capture_output=True)
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def make_report(records: list[dict], folder: Path) -> str:
    """Runs bench/report.py on ``records``: the short page goes to RESULTS.md, every table to ALL.md
    beside the records, whose text is returned."""
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--records", str(folder / "records.jsonl"),
                    "--out", str(folder / "RESULTS.md")], check=True, timeout=120, capture_output=True)
    return (folder / "ALL.md").read_text()


def timed(r: dict, invocation: str, seconds: float, phase: str, **fields) -> dict:
    """A devices row of two epochs of ``seconds`` each in ``phase``."""
    return {**r, "benchmark": "devices", "invocation": invocation, "epoch_time_s": [seconds, seconds], "median_epoch_time_s": seconds,
            "train_time_s": 2 * seconds, "phase": [phase] * 2, "test_acc": [r["final_test_acc"]] * 2, "violation": [None] * 2, **fields}


def real_run(kind: str, accuracies: list[float], parallel: int = 0, aux: str = "store", model: str = "mnist_resnet",
             dataset: str = "embedded", budget: int = 4, **config) -> dict:
    """A row of the real-budget campaign's table after ``len(accuracies)`` of its ``budget`` epochs."""
    epochs = len(accuracies)
    return {"name": kind, "kind": kind, "model": model, "dataset": dataset, "epoch_budget": budget, "invocation": "1",
            "git_commit": "abc", "config": {"train_subset": None, "parallel_epochs": parallel or None,
                                            "method": "penalty" if parallel else "serial", "aux": aux, **config},
            "test_acc": accuracies, "final_test_acc": accuracies[-1], "phase": ["parallel"] * parallel + ["serial"] * (epochs - parallel),
            "violation": [None] * epochs, "epochs": [{"train_loss": 0.5}] * epochs, "aux_bytes_per_cut": None, "peak_rss_mb": 1000.0}


def devices_on_loopback_and_100mbit(smoke_records: list[dict]) -> tuple[list[dict], list[dict]]:
    """The smoke rows filed as devices rows (the penalty rows as pipelined λ), with the same rows at
    the cut 3+5, and all of them again over a 100 Mbit link that slows the worker rows 4×."""
    kinds = {"penalty": "penalty+pipe+share1", "penalty+ds": "penalty+pipe+ds+share1"}
    loopback = [{**r, "benchmark": "devices", "kind": kinds.get(r["kind"], r["kind"])} for r in smoke_records]
    # The same rows at another cut (modifiers in another order): a real-budget row at that cut is timed by them.
    scaled = {"penalty": ("penalty+share1+cut3-5+pipe", 0.9), "1f1b": ("1f1b+cut3-5", 1.2)}
    loopback += [{**r, "benchmark": "devices", "kind": scaled[r["kind"]][0], "name": r["name"] + ", cut 3+5",
                  "epoch_time_s": [t * scaled[r["kind"]][1] for t in r["epoch_time_s"]],
                  "median_epoch_time_s": r["median_epoch_time_s"] * scaled[r["kind"]][1]} for r in smoke_records if r["kind"] in scaled]
    slow = [{**r, "benchmark": "devices over a 100mbit link", "slow_link": "100mbit",
             "message_3.2MB_ms": {"loopback": 1.5, "100mbit link": 267.0},
             "median_epoch_time_s": r["median_epoch_time_s"] * (4 if r["workers"] == 2 else 1),
             "epoch_time_s": [t * (4 if r["workers"] == 2 else 1) for t in r["epoch_time_s"]]} for r in loopback]
    return loopback, slow


def per_epoch_speedups(devices: list[dict]) -> dict[str, float]:
    """Each devices row's speed-up over one device: per parallel-phase epoch where it has them, else per epoch."""
    by_kind = {r["kind"]: r for r in devices}
    return {kind: by_kind["serial-1"]["median_epoch_time_s"] / (statistics.median(t for t, p in zip(r["epoch_time_s"], r["phase"]) if p == "parallel")
                                                               if "parallel" in r["phase"] else r["median_epoch_time_s"])
            for kind, r in by_kind.items()}


def test_smoke_preset_records(smoke_records):
    records = smoke_records
    assert [r["name"] for r in records] == ROWS
    by_name = {r["name"]: r for r in records}
    assert by_name["DDP, 2 workers x 1 thread"]["config"]["method"] == "serial" and by_name["DDP, 2 workers x 1 thread"]["workers"] == 2
    # 4 steps of 64 samples × 16×14×14 each way; 1/8 of that through the DS filter; nothing for serial rows.
    assert by_name["penalty K=2"]["bytes_sent"] == 2 * 4 * 64 * 16 * 14 * 14 * 4
    assert by_name["penalty K=2, DS s=2 bf16"]["bytes_sent"] == by_name["penalty K=2"]["bytes_sent"] // 8
    # A pipeline sends every micro-batch's activations forward and their gradients back, unfiltered;
    # both schedules compute backprop's gradients of the same micro-batches, so they train alike.
    for schedule in ("GPipe", "1F1B"):
        pipeline = by_name[f"pipeline {schedule} K=2, 4 micro-batches"]
        assert pipeline["bytes_sent"] == by_name["penalty K=2"]["bytes_sent"] and pipeline["phase"] == ["serial"]
    gpipe, one_f_one_b = (by_name[f"pipeline {schedule} K=2, 4 micro-batches"] for schedule in ("GPipe", "1F1B"))
    assert gpipe["final_test_acc"] == one_f_one_b["final_test_acc"]
    assert by_name["serial, 1 thread"]["bytes_sent"] == 0
    assert by_name["penalty K=2"]["aux_bytes_per_cut"] == [256 * 16 * 14 * 14 * 4]
    assert 0 < by_name["penalty K=2, --aux net"]["aux_bytes_per_cut"][0] < 256 * 16 * 14 * 14 * 4 / 10
    assert all(r["peak_rss_mb"] > 0 and 0 <= r["final_test_acc"] <= 100 for r in records)


def test_report_of_the_smoke_preset(smoke_records, tmp_path):
    # The planner's predictions beside the records are set against the measured rows of the devices
    # sections (one-core devices, as the planner measures), here the same records filed as one.
    subprocess.run([sys.executable, "-m", "lpfast", "plan", "--model", "mnist_resnet", "--input-shape", "1,28,28", "--stages", "2",
                    "--batch-size", "64", "--repeats", "1", "--out", str(tmp_path / "plan-mnist_resnet-embedded.json")],
                   check=True, timeout=300, capture_output=True)
    text = make_report(smoke_records + [{**r, "benchmark": "devices"} for r in smoke_records], tmp_path)
    for name in ROWS:
        assert f"| {name} |" in text
    smoke, devices = (text.split(f"## {bench}: mnist_resnet on embedded")[1].split("\n## ")[0] for bench in ("smoke", "devices"))
    assert "lpfast plan` against the measurement" not in smoke
    checked = devices.split("**`lpfast plan` against the measurement**")[1].split("\n\n")[1]
    for name in ("DDP, 2 workers x 1 thread", "pipeline GPipe K=2, 4 micro-batches", "pipeline 1F1B K=2, 4 micro-batches", "penalty K=2"):
        assert f"| {name} |" in checked
    for plot in ("accuracy", "violation", "bytes", "speedup"):
        assert (tmp_path / "plots" / f"smoke-mnist_resnet-embedded-{plot}.png").stat().st_size > 1000
    assert "lpfast bench smoke --model mnist_resnet --dataset embedded --epochs 1 --batch-size 64 --workers 2 --train-subset 256" in text
    assert "**Findings.**" in text and "## Summary" not in text


def test_report_summary_and_rerun_rows(smoke_records, tmp_path):
    # The summary table spans the grid preset's sections: the same records filed as a grid run.
    grid = [{**r, "benchmark": "grid"} for r in smoke_records]
    single = make_report(grid, tmp_path)
    summary = single.split("## Summary")[1].split("\n## ")[0]
    for name in ROWS:
        assert f"| {name} | " in summary
    assert "times not comparable" not in single
    # A later re-run of some rows (lpfast bench --rows) replaces just those rows.
    rerun = {**grid[1], "invocation": "99999999-999999", "final_test_acc": 12.34}
    text = make_report(grid + [rerun], tmp_path)
    assert f"| {ROWS[1]} | 12.34 |" in text and text.count(f"| {ROWS[0]} | {grid[0]['final_test_acc']:.2f} |") == 1
    assert "--train-subset 256 --rows serial-K" in text and "Invocation 99999999-999999" in text
    # The re-run row is the baseline: every other row's speed-up now compares two invocations.
    assert f"| {ROWS[0]} | " in text and "(other invocation: times not comparable)" in text


def test_report_sets_a_phase_against_the_baselines_epochs_of_the_same_rounds(smoke_records, tmp_path):
    """The host's speed drifts from round to round of an interleaved invocation: a row whose parallel
    epochs are its first two rounds is set against the baseline's epochs of those rounds, unless the
    baseline's epochs spread more than 1.5× (one slow epoch, not a drift, would then decide)."""
    by_name = {r["name"]: r for r in smoke_records}

    def four(r, times, phase):
        return {**r, "benchmark": "devices", "invocation": "1", "epoch_time_s": times, "median_epoch_time_s": statistics.median(times),
                "train_time_s": sum(times), "phase": phase, "test_acc": [r["final_test_acc"]] * 4, "violation": [None] * 4}

    sph = ["parallel", "parallel", "serial", "serial"]
    for baseline_times, expected in (([13.0, 13.0, 12.0, 12.0], f"{13.0 / 6.5:.2f}× over the same rounds"),
                                     ([13.0, 26.0, 12.0, 12.0], f"{12.5 / 6.5:.2f}×")):
        base = four(by_name["serial, 1 thread"], baseline_times, ["serial"] * 4)
        row = four(by_name["penalty K=2"], [6.5, 6.5, 9.0, 9.0], sph)
        text = make_report([base, row], tmp_path)
        assert f"a parallel epoch takes 6.5 s against {statistics.median(baseline_times):.1f} s ({expected})" in text


def test_report_times_a_row_of_an_older_invocation_against_its_own_backprop(smoke_records, tmp_path):
    """A later invocation re-runs the baseline on a host half as fast: a row kept from the older
    invocation is timed against the backprop of its own, not against the re-run."""
    by_name = {r["name"]: r for r in smoke_records}
    older = [timed(by_name["serial, 1 thread"], "1", 20.0, "serial"), timed(by_name["penalty K=2"], "1", 10.0, "parallel")]
    newer = [timed(by_name["serial, 1 thread"], "2", 40.0, "serial"), timed(by_name["DDP, 2 workers x 1 thread"], "2", 22.0, "serial")]
    section = make_report(older + newer, tmp_path).split("## devices: mnist_resnet on embedded")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| penalty K=2 |"))
    # ... and against DDP by the two speed-ups, 2.00× over 1.82×, not by their times.
    assert "| 2.00x | 2.00x (other invocation: against its own backprop) | 1.10x |" in row
    assert "|  | 1.82x |" in next(line for line in section.splitlines() if line.startswith("| DDP, 2 workers x 1 thread |"))


def test_report_real_budgets_section(smoke_records, tmp_path):
    """The campaign's table gives each row's accuracy against backprop's at the same epoch, backprop's
    seed spread, the targets, and the share curve with speed-ups from the devices invocation."""
    def row(kind, accuracies, parallel=0, name=None, aux="store"):
        return {**real_run(kind, accuracies, parallel, aux, model="resnet20", dataset="cifar10"), "name": name or kind,
                "violation": [[0.1]] * parallel + [None] * (len(accuracies) - parallel)}
    table = [row("serial-K", [50, 70, 80, 90.0]), row("serial-K+seed1", [50, 70, 80, 89.8]), row("penalty", [40, 60, 85, 89.5], 2),
             row("penalty+share0.25", [50, 70, 80, 89.9], 1), row("al", [40, 60, 80], 2),
             row("penalty+net+aw64", [40, 60, 80, 89.2], 2, aux="net")]
    (tmp_path / "real-resnet20-cifar10.json").write_text(json.dumps({"benchmark": "real", "records": table}))
    # An invocation beside it (--tag) without backprop rows of its own is set against the campaign's backprop.
    beside = [row("penalty+pipe", [52, 71, 81, 89.8], 2, name="pipelined", aux="pipelined")]
    (tmp_path / "real-resnet20-cifar10-pipelined.json").write_text(json.dumps({"benchmark": "real", "records": beside}))
    # ... and a share of the same λ in a third invocation joins its share curve.
    shares = [row("penalty+pipe+share0.75", [52, 71, 81, 89.6], 3, aux="pipelined")]
    (tmp_path / "real-resnet20-cifar10-pipelined-shares.json").write_text(json.dumps({"benchmark": "real", "records": shares}))
    devices = [{**r, "benchmark": "devices", "model": "resnet20", "dataset": "cifar10",
                "kind": "penalty+share1" if r["kind"] == "penalty" else r["kind"]} for r in smoke_records]
    text = make_report(devices, tmp_path).split("## Real budgets")[1].split("\n## ")[0]
    assert "| penalty | 4/4 | 89.50 | -0.50 | 60.00% (epoch 2) | 0.100 | 0.500 |" in text
    assert "| al | 3/4 | 80.00 | +0.00 |" in text  # under way: against backprop's third epoch
    assert "0.20 points" in text and "penalty -0.50 (not met: allowed 0.3)" in text and "penalty+share0.25 -0.10 (met" not in text
    assert "penalty+net+aw64 -0.80 (met: allowed 1.0)" in text  # a wider ψ is still an auxiliary network
    pipelined = text.split("-pipelined.md")[1]
    assert "| pipelined | 4/4 | 89.80 | -0.20 |" in pipelined and "penalty+pipe -0.20 (met: allowed 0.3)" in pipelined
    # Three quarters parallel is at least half: its target is the method's.
    assert "penalty+pipe+share0.75 -0.40 (not met: allowed 0.3)" in text
    by_kind = {r["kind"]: r for r in devices}
    base = by_kind["serial-1"]["median_epoch_time_s"]
    rho_par = base / statistics.median(by_kind["penalty+share1"]["epoch_time_s"])
    rho_ser = base / by_kind["1f1b"]["median_epoch_time_s"]
    stored = text.split("4 epochs, stored λ")[1].split("\n### ")[0]
    assert f"| 0.25 | penalty+share0.25 | 89.90 | -0.10 | {1 / (0.25 / rho_par + 0.75 / rho_ser):.2f}× |" in stored
    assert f"| 0.50 | penalty | 89.50 | -0.50 | {1 / (0.5 / rho_par + 0.5 / rho_ser):.2f}× |" in stored
    # No devices row runs pipelined λ in every epoch here: that curve has no speed-ups.
    curve = text.split("4 epochs, pipelined λ")[1].split("\n### ")[0]
    assert "`penalty+pipe+share1` and `1f1b` (not measured yet)" in curve
    assert "| 0.50 | penalty+pipe | 89.80 | -0.20 |  |" in curve and "| 0.75 | penalty+pipe+share0.75 | 89.60 | -0.40 |  |" in curve
    assert (tmp_path / "plots" / "real-resnet20-cifar10-accuracy.png").stat().st_size > 1000


def test_report_link_sweep_and_time_to_accuracy_at_each_rate(smoke_records, tmp_path):
    """The devices rows at each link rate in one table (speed-ups, messages per step, compute-to-message
    ratio, the GPU-cluster link of the same ratio), and the real budget's time to accuracy composed
    from each row's epochs to the target and the per-epoch speed-ups at each rate."""
    loopback, slow = devices_on_loopback_and_100mbit(smoke_records)
    table = [real_run("serial-K", [50, 70, 85, 90.0]), real_run("penalty+pipe", [50, 89.0, 89.5, 89.6], 2, "pipelined"),
             real_run("penalty+pipe+share1", [50, 70, 80, 88.0], 4, "pipelined"),
             real_run("penalty+pipe+cut3-5", [50, 70, 89.2, 89.5], 2, "pipelined")]
    (tmp_path / "real-mnist_resnet-embedded.json").write_text(json.dumps({"benchmark": "real", "records": table}))
    # The planner's costs, 4 MiB of parameters per block: DDP's all-reduce is free on loopback, not at 100 Mbit.
    costs = PartCosts(forward_s=[0.01] * 8, backward_s=[0.02] * 8, micro_forward_s=[0.003] * 8, micro_backward_s=[0.006] * 8,
                      cut_regress_s=[0.0] * 7, cut_lambda_s=[0.0] * 7, cut_shapes=[(16, 14, 14)] * 7, part_parameter_bytes=[4 << 20] * 8,
                      batch_size=64, micro_batch_size=16)
    (tmp_path / "plan-mnist_resnet-embedded.json").write_text(json.dumps(
        {"costs": dataclasses.asdict(costs), "predictions": [{"stages": 2, "cut": [4, 4], "default": True}]}))
    text = make_report(loopback + slow, tmp_path)
    for link, rate in (("", None), (" over a 100mbit link", 12.5e6)):
        section = text.split(f"## devices{link}: mnist_resnet on embedded")[1].split("\n## ")[0]
        ddp = predict(costs, 2, cut=[4, 4], link=rate).ddp_speedup
        assert f"| DDP, 2 workers x 1 thread | — | epoch | {ddp:.2f}x |" in section
    assert predict(costs, 2, link=12.5e6).ddp_speedup < 1.5 < predict(costs, 2, link=None).ddp_speedup

    sweep = text.split("### The link sweep: mnist_resnet on embedded")[1].split("\n### ")[0].split("\n## ")[0]
    by_kind = {r["kind"]: r for r in loopback}
    rho = per_epoch_speedups(loopback)
    each_way = 64 * 16 * 14 * 14 * 4  # 4 steps of 64 samples, the cut's activations, each way
    compute = by_kind["penalty+pipe+share1"]["median_epoch_time_s"] / 4
    assert (f"| loopback | 1.5 | {rho['ddp']:.2f}× | {rho['1f1b']:.2f}× | {rho['penalty+pipe+share1']:.2f}× | "
            f"{rho['penalty+pipe+ds+share1']:.2f}× | {each_way / 1e6:.2f} MB / {each_way / 8e6:.2f} MB | ∞ / ∞ |  |") in sweep
    assert (f"| 100mbit | 267.0 | {rho['ddp'] / 4:.2f}× | {rho['1f1b'] / 4:.2f}× | {rho['penalty+pipe+share1'] / 4:.2f}× | "
            f"{rho['penalty+pipe+ds+share1'] / 4:.2f}× | {each_way / 1e6:.2f} MB / {each_way / 8e6:.2f} MB | "
            f"{compute / (each_way / 12.5e6):.2g} / {compute / (each_way / 8 / 12.5e6):.2g} | 2 Gbit/s – 5 Gbit/s |") in sweep

    # Backprop's target is 89%: backprop reaches it after 4 epochs, the SPH row after 2 (both
    # parallel), the all-parallel row never.
    reach = text.split("### Time to accuracy: mnist_resnet on embedded, 4 epochs")[1].split("\n### ")[0].split("\n## ")[0]
    assert "| row | epochs to the target | loopback | 100mbit |" in reach
    assert f"| DDP (backprop's curve) | 4 | {rho['ddp']:.2f}× | {rho['ddp'] / 4:.2f}× |" in reach.replace("**", "")
    sph = 4 / (2 / rho["penalty+pipe+share1"])
    assert f"| penalty+pipe (devices row `penalty+pipe+share1`) | 2 | {sph:.2f}× | {sph / 4:.2f}× |" in reach.replace("**", "")
    # The same composed times, epoch by epoch, drawn one panel per rate.
    assert "![time to accuracy](plots/real-mnist_resnet-embedded-e4-time-to-accuracy.png)" in reach
    assert (tmp_path / "plots" / "real-mnist_resnet-embedded-e4-time-to-accuracy.png").stat().st_size > 0
    assert "| penalty+pipe+share1 | — (never) | — | — |" in reach
    # At the cut 3+5: two parallel epochs as that cut's all-parallel row, one serial as its 1F1B row.
    cut = 4 / (2 / rho["penalty+share1+cut3-5+pipe"] + 1 / rho["1f1b+cut3-5"])
    assert (f"| penalty+pipe+cut3-5 (devices rows `penalty+share1+cut3-5+pipe`, `1f1b+cut3-5`) | 3 | {cut:.2f}× | {cut / 4:.2f}× |"
            in reach.replace("**", ""))


def test_report_page_numbers_come_from_the_records(smoke_records, tmp_path):
    """The short page: each headline number is the one computed here from the records, the
    campaign's tables, the four-device records and the kernel results it was given."""
    loopback, slow = devices_on_loopback_and_100mbit(smoke_records)
    # Backprop's two seeds end at 90.0 and 89.6 (mean 89.8); the rows are set against that mean.
    table = [real_run("serial-K", [50, 70, 85, 90.0]), real_run("serial-K+seed1", [50, 70, 85, 89.6]),
             real_run("penalty+pipe", [50, 89.0, 89.5, 89.5], 2, "pipelined"), real_run("penalty", [40, 60, 80, 88.0], 2),
             real_run("penalty+pipe+share1", [55, 80, 89.2, 89.4], 4, "pipelined")]
    (tmp_path / "real-mnist_resnet-embedded.json").write_text(json.dumps({"benchmark": "real", "records": table}))
    # K=4 after 2 of its 4 epochs: partial, against backprop's second epoch.
    many = [real_run("penalty+pipe+share1+k4+oneprocess", [30, 50], 2, "pipelined", stages=4)]
    (tmp_path / "real-mnist_resnet-embedded-many.json").write_text(json.dumps({"benchmark": "real", "records": many}))
    # A proxy (part of the training set, 3 epochs): its backprop and K=8 rows rank the levers and join no real-budget table.
    proxy = [real_run(kind, accuracies, parallel, "pipelined" if parallel else "store", budget=3, train_subset=100,
                      stages=8 if parallel else None)
             for kind, accuracies, parallel in (("serial-K", [40, 60, 80.0], 0), ("penalty+pipe+share1+k8+oneprocess", [30, 50, 78.0], 3),
                                                ("penalty+pipe+share1+k8+oneprocess+gs0.5", [30, 50, 78.5], 3),
                                                ("penalty+pipe+share1+k8+oneprocess+wu1", [30, 50, 79.0], 3))]
    (tmp_path / "real-mnist_resnet-embedded-levers.json").write_text(json.dumps({"benchmark": "real", "records": proxy[:3]}))
    # A second table of the same proxy, read with the first: its lever against the first's backprop and plain run.
    (tmp_path / "real-mnist_resnet-embedded-levers2.json").write_text(json.dumps({"benchmark": "real", "records": proxy[3:]}))
    # Four devices of half a core: backprop on one 20 s an epoch, DDP 8 s, 2 stages x 2 replicas 6 s; the device
    # model's check on two devices, DDP 11 s against one device's 20 s on half cores, 5.2 s against 10 s on whole ones.
    by_kind = {r["kind"]: r for r in smoke_records}
    four = [timed(by_kind["serial-1"], "20300101-000003", 20.0, "serial", device_share=0.5),
            timed(by_kind["ddp"], "20300101-000003", 8.0, "serial", device_share=0.5, workers=4),
            timed(by_kind["penalty"], "20300101-000003", 6.0, "parallel", device_share=0.5, workers=4, kind="penalty+pipe+share1+d2+k2",
                  config={**by_kind["penalty"]["config"], "aux": "pipelined", "replicas": 2})]
    checks = [timed(by_kind[kind], invocation, seconds, "serial", device_share=share) for invocation, share, times in
              (("20300101-000001", 0.5, (20.0, 11.0)), ("20300101-000002", None, (10.0, 5.2))) for kind, seconds in zip(("serial-1", "ddp"), times)]
    (tmp_path / "four-devices").mkdir()
    (tmp_path / "four-devices" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in checks + four))
    # The planner's costs (one core): DDP and the 2 × 2 predicted on the devices of half a core.
    costs = PartCosts(forward_s=[0.01] * 8, backward_s=[0.02] * 8, micro_forward_s=[0.003] * 8, micro_backward_s=[0.006] * 8,
                      cut_regress_s=[0.0] * 7, cut_lambda_s=[0.0] * 7, cut_shapes=[(16, 14, 14)] * 7, part_parameter_bytes=[1 << 20] * 8,
                      batch_size=64, micro_batch_size=16)
    (tmp_path / "plan-mnist_resnet-embedded.json").write_text(json.dumps(
        {"costs": dataclasses.asdict(costs), "predictions": [{"stages": 2, "cut": [3, 5], "default": True}]}))
    kernels = {"machine": {"threads": 2, "torch": "x"}, "repeats": 3, "copy_GBps": 10.0,
               "rows": [{"op": "aux_update_ (AL)", "cut": cut, "batch": 4, "speedup": speedup, "copy_fraction": fraction}
                        for cut, speedup, fraction in (("a", 2.0, 0.5), ("b", 4.0, 0.7))]}
    (tmp_path / "kernels-cpu.json").write_text(json.dumps(kernels))
    # Mixed precision: backprop 12 s an epoch in float32, 8 s in bf16.
    (tmp_path / "precision").mkdir()
    (tmp_path / "precision" / "records.jsonl").write_text("".join(
        json.dumps({**timed(by_kind["serial-1"], "20300101-000004", seconds, "serial"), "kind": kind, "peak_rss_mb": peak}) + "\n"
        for kind, seconds, peak in (("serial-1", 12.0, 1000.0), ("serial-1+bf16", 8.0, 800.0))))
    full = make_report(loopback + slow, tmp_path)
    page = (tmp_path / "RESULTS.md").read_text()
    assert len(page.encode()) < 40_000 and "[ALL.md](ALL.md)" in page and "[narrative.md](narrative.md)" in page

    accuracy = page.split("## Will it be as accurate?")[1].split("\n## ")[0]
    assert "| backprop | **89.80** (mean of 2 seeds: 90.00, 89.60) |" in accuracy
    assert "| pipelined λ, half of the epochs parallel | 89.50 (-0.30) |" in accuracy
    assert "| stored λ (penalty), half of the epochs parallel | 88.00 (-1.80) |" in accuracy
    standing = page.split("## Where things stand (2030-01-01)")[1].split("\n## ")[0]
    assert "-0.30 (mnist_resnet, embedded, 4 epochs, mean of 2 seeds); backprop's own seeds differ by 0.40 points" in standing

    rho = per_epoch_speedups(loopback)
    ours = max(rho["penalty+pipe+share1"], rho["penalty+share1+cut3-5+pipe"])
    speed = page.split("## How much faster than DDP?")[1].split("\n## ")[0]
    # To 89.0%: backprop and DDP after 4 epochs, pipelined λ after 2 parallel ones.
    assert (f"| mnist_resnet, embedded | {rho['ddp']:.2f}× | {rho['gpipe']:.2f}× | {rho['1f1b']:.2f}× | {ours:.2f}×"
            in speed)
    assert f"| {rho['ddp']:.2f}× (4 epochs) | {2 * rho['penalty+pipe+share1']:.2f}× (pipelined λ, half of the epochs parallel) |" in speed
    assert f"lpfast {ours:.2f}×, DDP {rho['ddp']:.2f}× (mnist_resnet, embedded)" in standing

    links = page.split("## At what link does it pay?")[1].split("\n## ")[0]
    assert (f"| mnist_resnet, embedded | 100mbit | {rho['ddp'] / 4:.2f}× | {rho['1f1b'] / 4:.2f}× | {rho['penalty+pipe+share1'] / 4:.2f}× | "
            f"{rho['penalty+pipe+ds+share1'] / 4:.2f}× | 2 Gbit/s – 5 Gbit/s |") in links

    many_stages = page.split("## Many stages")[1].split("\n## ")[0]
    assert "| 4 | 2/4 | 50.00 | 70.00 | -20.00 | **in progress (2 of 4 epochs)** |" in many_stages and "K=8: not started yet." in many_stages
    # Beside it backprop (K=1) and the finished K=2 runs with pipelined λ, against backprop's two seeds.
    assert "| mnist_resnet, embedded: backprop | 1 | 4/4 | **89.80** (mean of 2 seeds: 90.00, 89.60) | | | finished |" in many_stages
    assert "| mnist_resnet, embedded: pipelined λ, every epoch parallel | 2 | 4/4 | 89.40 | 89.80 | -0.40 | finished |" in many_stages
    assert "stored λ" not in many_stages
    assert "| pipelined λ, K=8, gradient shrink 0.5, every epoch parallel | 8 | 3/3 | 78.50 | -1.50 | +0.50 | 0.500 |" in many_stages
    assert "| pipelined λ, K=8, every epoch parallel | 8 | 3/3 | 78.00 | -2.00 |  | 0.500 |" in many_stages
    assert "| pipelined λ, K=8, lr warm-up 1 epoch, every epoch parallel | 8 | 3/3 | 79.00 | -1.00 | +1.00 | 0.500 |" in many_stages
    assert "ranked on a proxy (`real-mnist_resnet-embedded-levers.json`, `real-mnist_resnet-embedded-levers2.json`)" in many_stages
    assert "| 8 | 3/3 | 78.00 | 80.00 |" not in many_stages  # not a real-budget run

    devices = page.split("## Four devices")[1].split("\n## ")[0]
    assert f"| lpfast 2 stages × 2 replicas, pipelined λ | {20 / 6:.2f}× ({20 / 6 / 2.5:.2f}× DDP) |" in devices
    assert f"DDP {20 / 11:.2f}× against {10 / 5.2:.2f}×" in devices and "Not measured yet on four devices: resnet20 on loopback" in devices
    assert f"lpfast 2 stages × 2 replicas, pipelined λ {20 / 6:.2f}×; DDP 2.50×" in standing
    # The planner: DDP on four and the 2 × 2 at the recorded cut, against 2.50× and 20/6 measured.
    errors = [predict(costs, 1, replicas=4, link=None).ddp_speedup / 2.5 - 1,
              predict(costs, 2, cut=[3, 5], replicas=2, link=None).pipelined_speedup / (20 / 6) - 1]
    assert (f"mnist_resnet, embedded, loopback: median error {100 * statistics.median(map(abs, errors)):.0f}%, "
            f"largest {100 * max(errors, key=abs):+.0f}%") in devices
    # Time to accuracy (89.0%): backprop and DDP after 4 epochs, the all-parallel 2-stage run after 3.
    tta = 4 / (3 * 6 / 20)
    assert "| row | epochs to the target | loopback |" in devices and f"| DDP (backprop's curve) | 4 | 2.50× (1.00×) |" in devices
    assert (f"| lpfast 2 stages × 2 replicas, pipelined λ (the 2-stage run `penalty+pipe+share1`) | 3 | {tta:.2f}× ({tta / 2.5:.2f}×) |"
            in devices)
    assert (tmp_path / "plots" / "real-mnist_resnet-embedded-e4-time-to-accuracy-four-devices.png").stat().st_size > 0

    assert "| aux_update_ (AL) | 3.00× | 2.00–4.00× | 60% |" in page and "**GPU**: not measured yet" in page
    assert "| backprop | 12.0 s | 8.0 s | 1.50× | 1000 → 800 MB |" in page and "bf16 epochs against float32: backprop 1.50×" in standing
    # Every four-device invocation has its section in the full page, and none of their rows joins the K=2 sections.
    assert "(invocation 20300101-000003)" in full and "(invocation 20300101-000001)" in full
    two_devices = full.split("## devices: mnist_resnet on embedded")[1].split("\n## ")[0]
    assert "20300101" not in two_devices


def load_bench_script(name: str):
    """A script of bench/ as a module, bench/ on the import path as when it runs (``python bench/NAME.py``)."""
    import importlib.util

    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_page_of_the_committed_results_is_small(tmp_path):
    """The page of this repository's results stays one a user reads in five minutes."""
    report = load_bench_script("report")
    folder = ROOT / "bench" / "results"
    page = "\n".join(report.short_page(report.load(folder / "records.jsonl"), report.load_invocations(folder / "four-devices" / "records.jsonl"),
                                       report.real_tables(folder), folder, tmp_path / "plots", ROOT / "bench" / "RESULTS.md", folder / "ALL.md"))
    assert len(page.encode()) < 40_000
    for question in ("Will it be as accurate?", "How much faster than DDP?", "At what link does it pay?", "Four devices", "Many stages"):
        assert question in page.split("\n## Will it be as accurate?")[0]  # answered on the first screen


def test_slow_link_joins_two_namespaces_and_removes_them():
    import os
    import shutil
    import time

    from lpfast.netns import slow_link

    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "tc", "taskset")):
        pytest.skip("needs root and ip, tc, taskset")
    with slow_link("100mbit", tag="t") as (a, b):
        qdisc = subprocess.run(a.wrap(["tc", "qdisc", "show", "dev", a.interface]), capture_output=True, text=True, check=True).stdout
        assert "tbf" in qdisc and "100Mbit" in qdisc
        server = subprocess.Popen(b.wrap([sys.executable, "-c", "import socket; s = socket.create_server(('0.0.0.0', 29871)); "
                                          "c, _ = s.accept(); c.sendall(b'ok')"]))
        try:
            client = [sys.executable, "-c", f"import socket, time\nfor _ in range(50):\n    try:\n"
                      f"        print(socket.create_connection(('{b.address}', 29871), timeout=5).recv(2).decode()); break\n"
                      f"    except ConnectionRefusedError:\n        time.sleep(0.1)"]
            reply = subprocess.run(a.wrap(client), capture_output=True, text=True, timeout=30).stdout
            assert reply.strip() == "ok"
        finally:
            server.kill()
            time.sleep(0.2)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert a.namespace not in names and b.namespace not in names


def test_message_over_slow_link_costs_its_rate(tmp_path):
    import os
    import shutil

    from lpfast.benchmark import launch
    from lpfast.netns import slow_link

    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "tc", "taskset")):
        pytest.skip("needs root and ip, tc, taskset")
    program = ["-m", "lpfast.message_time", "--megabytes", "1.25", "--repeats", "3", "--warmup", "1"]
    times = {}
    with slow_link("100mbit", tag="m") as link:
        for where, hosts in (("loopback", None), ("link", link)):
            out = tmp_path / f"{where}.json"
            processes = [subprocess.Popen(cmd) for cmd in launch([*program, "--out", str(out)], 2, free_port(), hosts)]
            assert all(p.wait(timeout=120) == 0 for p in processes)
            times[where] = json.loads(out.read_text())["median_ms"]
    # 1.25 MB at 100 Mbit/s is 100 ms on the wire; loopback moves it in a few ms.
    assert 90 < times["link"] < 400
    assert times["loopback"] < times["link"] / 5


def load_ceiling():
    return load_bench_script("ceiling")


def test_ceiling_bounds_follow_the_pipeline_and_amdahl():
    bounds = load_ceiling().bounds
    # Stages twice as fast as backprop; 4 micro-batches through 2 stages take 5/4 of one stage step.
    b = bounds(serial=1.0, stages=0.5, micro=0.5, k=2, m=4, p=2, s=1)
    assert b["parallel_epoch"] == 2.0 and b["pipeline_epoch"] == 1.6
    assert b["hybrid_run"] == pytest.approx(3 / (2 * 0.5 + 0.625))


def test_ceiling_benchmark_end_to_end(smoke_records, tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "ceiling.py"), "--dataset", "embedded", "--batch-size", "32",
                    "--rounds", "2", "--steps", "2", "--warmup", "1", "--port", str(free_port()), "--out", str(tmp_path), "--profile",
                    "--stage-blocks", "3,5"],
                   check=True, timeout=300, capture_output=True)
    record = json.loads((tmp_path / "ceiling-mnist_resnet-embedded-cut3-5.json").read_text())
    assert record["stage_blocks"] == "3,5"
    assert len(record["rounds"]) == 2 and all(r.keys() == set(load_ceiling().ROWS) and min(r.values()) > 0 for r in record["rounds"])
    med = record["median_s"]
    assert record["speedup_bound"] == load_ceiling().bounds(med["serial"], med["stages"], med["micro"], 2, 4, 2, 1)
    table = (tmp_path / "ceiling-mnist_resnet-embedded-cut3-5.md").read_text()
    assert "| backprop, whole model, one device (1 process x 1 thread) |" in table
    assert f"lpfast's parallel step takes {100 * (med['lpfast'] / med['stages'] - 1):+.1f}% over the ceiling's stage step" in table
    # One profile of the real step per stage, each with the ops that took its time.
    stage_0, stage_1 = (tmp_path / "profile-mnist_resnet-embedded-cut3-5.md").read_text().split("## Stage 0")[1].split("## Stage 1")
    assert all("aten::convolution_backward" in part and "Self CPU time total" in part for part in (stage_0, stage_1))
    # The report closes with the speed-limit table found beside the records.
    report = make_report(smoke_records, tmp_path).split("## Speed limit: ")[1]
    assert "### Speed limit of K=2 layer-parallel training: mnist_resnet on embedded, batch 32" in report
    assert f"hybrid run of 2 parallel + 1 serial epochs: **{record['speedup_bound']['hybrid_run']:.2f}x**" in report


def test_kernel_benchmark_rows_and_bandwidth(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "kernels.py"), "--cuts", "resnet56 64x8x8", "--batches", "4",
                    "--repeats", "1", "--out", str(tmp_path)], check=True, timeout=300, capture_output=True)
    record = json.loads((tmp_path / "kernels-cpu.json").read_text())
    rows = record["rows"]
    ops_and_sizes = [(r["op"], r["cut"]) for r in rows]
    assert ops_and_sizes[0] == ("crop_flip_normalise vs torchvision per-sample", "cifar images 3x32x32")
    assert {op for op, cut in ops_and_sizes[1:]} == {
        "penalty_residual (AL)", "aux_update_ (AL)", "ds_encode s=2 bf16, channels-last", "ds_encode s=2 bf16, contiguous",
        "ds_decode s=2 nearest", "aux_gather bf16->f32", "aux_scatter_ f32->bf16"}
    assert {cut for op, cut in ops_and_sizes[1:]} == {"resnet56 64x8x8"} and len(rows) == 8
    for r in rows:
        # On a CPU the bandwidth is the fused call's own wall time.
        assert r["clock"] == "wall" and r["kernel_ms"] == r["fused_ms"] > 0 and r["eager_ms"] > 0
        assert r["fused_GBps"] == pytest.approx(r["bytes"] / (r["fused_ms"] / 1e3) / 1e9)
        assert r["copy_fraction"] == pytest.approx(r["fused_GBps"] / record["copy_GBps"])
    # The penalty residual reads out, λ, μ and writes the gradient: 4 float32 tensors of 4×64×8×8.
    assert rows[1]["bytes"] == 4 * 4 * 64 * 8 * 8 * 4
    table = (tmp_path / "kernels-cpu.md").read_text()
    assert table.count("| resnet56 64x8x8 | 4 | wall |") == 7


def bench_records(out: Path) -> dict[str, dict]:
    return {r["name"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}


def results_repository(out: Path) -> None:
    """A new git repository OUT for ``lpfast bench --out OUT --commit-results``."""
    out.mkdir()
    for command in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(out), *command], check=True)


def git_output(out: Path, *command: str) -> str:
    return subprocess.run(["git", "-C", str(out), *command], capture_output=True, text=True).stdout


def kill_when_committed(options: list[str], out: Path, message: str) -> None:
    """Runs ``lpfast bench OPTIONS --out OUT --commit-results`` in a new git repository OUT and kills it
    (and its workers) as soon as a commit whose subject holds ``message`` is there."""
    import os
    import signal
    import time

    results_repository(out)
    bench = subprocess.Popen([sys.executable, "-m", "lpfast", "bench", *options, "--out", str(out), "--commit-results"],
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while message not in git_output(out, "log", "--format=%s"):
        assert time.monotonic() < deadline and bench.poll() is None
        time.sleep(0.2)
    os.killpg(bench.pid, signal.SIGKILL)
    bench.wait()


def test_interrupted_invocation_continues_to_the_same_numbers(tmp_path):
    """A bench killed mid-way continues with --continue to the numbers of an uninterrupted one, and
    --commit-results commits every round's table to the results folder's repository."""

    options = ["smoke", "--dataset", "embedded", "--epochs", "2", "--train-subset", "128", "--batch-size", "64",
               "--rows", "serial-1,penalty+seed1", "--port", str(free_port())]
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "lpfast", "bench", *options, "--out", str(straight)], check=True, timeout=600, capture_output=True)

    out = tmp_path / "results"
    # Kill it (and its workers) once the first round's table is committed, in the second round.
    kill_when_committed(options + ["--runs-dir", str(tmp_path / "runs")], out, "round 1 of 2")
    assert not (out / "records.jsonl").exists()
    [runs] = (tmp_path / "runs").iterdir()
    done = subprocess.run([sys.executable, "-m", "lpfast", "bench", "--continue", str(runs)], timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "continuing after epoch" in done.stdout or "[epoch 2/2]" in done.stdout

    a, b = bench_records(straight), bench_records(out)
    assert list(a) == list(b) == ["serial, 1 thread", "penalty K=2, seed 1"]
    for name in a:
        assert b[name]["config"]["seed"] == (1 if "seed" in name else 0)
        for key in ("test_acc", "train_loss"):
            assert [m[key] for m in a[name]["epochs"]] == [m[key] for m in b[name]["epochs"]], (name, key)
        assert len(b[name]["process_wall_s"]) == 2
    log = git_output(out, "log", "--format=%s")
    assert "round 1 of 2" in log and "round 2 of 2" in log and "records" in log
    # A finished invocation continues to nothing and appends no records twice.
    subprocess.run([sys.executable, "-m", "lpfast", "bench", "--continue", str(runs)], check=True, timeout=120, capture_output=True)
    assert len((out / "records.jsonl").read_text().splitlines()) == 2


def test_sequential_campaign_continues_on_a_new_machine_from_its_snapshot(tmp_path):
    """A sequential invocation with --snapshot, killed and its runs folder lost (a new machine), is
    restored from the committed snapshot and continues to the numbers of an uninterrupted one: the
    finished serial row is not run again, and no checkpoint holding λ enters the repository."""
    import shutil

    options = ["smoke", "--dataset", "embedded", "--epochs", "2", "--parallel-epochs", "1", "--train-subset", "128",
               "--batch-size", "64", "--rows", "serial-1,penalty", "--order", "sequential", "--port", str(free_port())]
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "lpfast", "bench", *options, "--out", str(straight)], check=True, timeout=600, capture_output=True)

    out = tmp_path / "repo"
    snapshot = out / "campaign"
    kill_when_committed(options + ["--runs-dir", str(tmp_path / "runs"), "--snapshot", str(snapshot)], out,
                        "serial, 1 thread, 2 of 2 epochs")
    # The committed snapshot holds the finished serial row's config and metrics (no checkpoint: it
    # is finished), and nothing of the penalty row, whose first (parallel) epoch holds λ.
    tracked = git_output(out, "ls-files", "campaign").split()
    assert "campaign/run0/metrics.jsonl" in tracked and not any(path.endswith(".pt") for path in tracked)
    assert not any(path.startswith("campaign/run1") for path in tracked)

    shutil.rmtree(tmp_path / "runs")  # the machine is gone; the repository's snapshot is what is left
    subprocess.run(["git", "-C", str(out), "checkout", "-q", "--", "."], check=True)
    restored = tmp_path / "new-machine" / "restored"
    shutil.copytree(snapshot, restored)
    done = subprocess.run([sys.executable, "-m", "lpfast", "bench", "--continue", str(restored), "--snapshot", str(snapshot)],
                          timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "] serial, 1 thread:" not in done.stdout and "[epoch 1/2] penalty+SPH K=2:" in done.stdout

    a, b = bench_records(straight), bench_records(out)
    assert list(a) == list(b) == ["serial, 1 thread", "penalty+SPH K=2"]
    for name in a:
        for key in ("test_acc", "train_loss"):
            assert [m[key] for m in a[name]["epochs"]] == [m[key] for m in b[name]["epochs"]], (name, key)
    # Finished, both rows keep their config and metrics and no checkpoint.
    assert (snapshot / "finished").exists() and (snapshot / "run1" / "metrics.jsonl").exists()
    assert not list(snapshot.rglob("*.pt"))


def test_a_stopped_campaign_commits_its_snapshot_first(tmp_path):
    """SIGTERM to a sequential invocation with --snapshot (as ``pkill`` sends when a session ends or
    a campaign is re-planned) stops the row's workers, and commits the snapshot with every epoch
    the row committed before the bench exits, though no snapshot was due: nothing done is lost to
    a new machine."""
    import os
    import signal
    import time

    from lpfast import checkpoint as ckpt

    out, runs = tmp_path / "repo", tmp_path / "runs"
    results_repository(out)
    options = ["smoke", "--dataset", "embedded", "--epochs", "8", "--train-subset", "128", "--batch-size", "64",
               "--rows", "serial-1", "--order", "sequential", "--port", str(free_port())]
    bench = subprocess.Popen([sys.executable, "-m", "lpfast", "bench", *options, "--runs-dir", str(runs),
                              "--snapshot", str(out / "campaign"), "--out", str(out), "--commit-results"],
                             start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(runs.glob("*/run0/" + ckpt.COMMIT_FILE)):
        assert time.monotonic() < deadline and bench.poll() is None
        time.sleep(0.1)
    os.kill(bench.pid, signal.SIGTERM)  # the bench alone: its row's worker is still training
    output, _ = bench.communicate(timeout=120)
    assert bench.returncode == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM; continue with --continue" in output

    [row] = runs.glob("*/run0")
    done = ckpt.committed(row)["epoch"]
    assert 1 <= done < 8
    tracked = git_output(out, "ls-files", "campaign").split()
    assert f"campaign/run0/checkpoint-rank0-epoch{done}.pt" in tracked
    assert json.loads(git_output(out, "show", "HEAD:campaign/run0/" + ckpt.COMMIT_FILE))["epoch"] == done
    assert "stopped by SIGTERM" in git_output(out, "log", "-1", "--format=%s")
    # No worker outlives the bench.
    assert subprocess.run(["pgrep", "-f", str(row)], capture_output=True).returncode == 1


def test_row_modifiers_and_errors():
    from lpfast.benchmark import row

    name, options, workers, threads = row("penalty+share0.25+seed2", 2, 15, 4, 30)
    assert name == "penalty+SPH K=2, 8 of 30 epochs parallel, seed 2" and (workers, threads) == (2, 1)
    assert options[-4:] == ["--parallel-epochs", "8", "--seed", "2"]
    assert row("serial-K+seed1", 2, None, 4, 30)[:2] == ("serial, 2 threads, seed 1", ["--seed", "1"])
    name, options, _, _ = row("penalty+share1+pmb4", 2, 15, 4, 30)
    assert name == "penalty+SPH K=2, 30 of 30 epochs parallel, parallel steps in 4 micro-batches"
    assert options[-2:] == ["--parallel-micro-batches", "4"]
    name, options, _, _ = row("penalty+blocks3", 2, 15, 4, 30)
    assert name == "penalty+SPH K=2, 3 parallel/serial blocks" and options[-2:] == ["--parallel-blocks", "3"]
    name, options, _, _ = row("penalty+net+aw64+ad4", 2, 15, 4, 30)
    assert name == "penalty+SPH K=2, --aux net, ψ width 64, ψ depth 4"
    assert options[-6:] == ["--aux", "net", "--aux-width", "64", "--aux-depth", "4"]
    name, options, _, _ = row("penalty+rn", 2, 15, 4, 30)
    assert name == "penalty+SPH K=2, norms restored" and options[-1] == "--restore-norms"
    name, options, _, _ = row("penalty+pipe", 2, 15, 4, 30)
    assert name == "penalty+SPH K=2, --aux pipelined" and options[-2:] == ["--aux", "pipelined"]
    name, options, _, _ = row("penalty+pipe+k8+gs0.5", 2, 15, 4, 30)
    assert name.endswith("--aux pipelined, gradient shrink 0.5") and options[-2:] == ["--gradient-shrink", "0.5"]
    name, options, _, _ = row("penalty+pipe+k8+wu1.5+sw1", 2, 15, 4, 30)
    assert name.endswith("lr warm-up 1.5 epochs, 1 serial warm-up epoch")
    assert options[-4:] == ["--warmup-epochs", "1.5", "--serial-warmup", "1"]
    assert row("penalty+pipe+k8+nopredict", 2, 15, 4, 30)[1][-1] == "--no-predict-weights"
    # A row keeps its λ whatever lpfast train's default: stored unless a modifier says otherwise, and
    # whole batches unless pmbM says otherwise (pipelined λ at K > 2 takes parts by default).
    from lpfast.cli import _config_from_args, build_parser

    def config(kind):
        args = build_parser().parse_args(["train", "--epochs", "30", *row(kind, 2, 15, 4, 30)[1], "--out", "x"])
        return _config_from_args(args)

    assert [config(kind).aux for kind in ("penalty", "al+ds", "penalty+pipe", "penalty+net")] == ["store", "store", "pipelined", "net"]
    assert [config(kind).parallel_micro_batches for kind in ("penalty+pipe+k4", "penalty+pipe+k4+pmb4")] == [1, 4]
    name, options, _, _ = row("1f1b+cut3-6", 2, None, 4, 30)
    assert name == "pipeline 1F1B K=2, 4 micro-batches, cut 3+6" and options[-2:] == ["--stage-blocks", "3,6"]
    # kN sets the row's stages; oneprocess runs them in one process (the numbers K workers give).
    name, options, workers, threads = row("penalty+pipe+k8+oneprocess", 2, None, 4, 30)
    assert name == "penalty K=8, --aux pipelined, one process" and (workers, threads) == (0, min(8, os.cpu_count()))
    assert options[:4] == ["--method", "penalty", "--stages", "8"]
    assert row("penalty+k4", 2, 15, 4, 30)[2:] == (4, 1) and row("serial-K+k4", 2, None, 4, 30)[0] == "serial, 4 threads"
    # dN: N replicas of the K stages on K·N workers; rt: a stage's replicas on adjacent ranks.
    name, options, workers, threads = row("penalty+pipe+d2+rt", 2, None, 4, 30)
    assert name == "penalty K=2 × 2 replicas, --aux pipelined, a stage's replicas together" and (workers, threads) == (4, 1)
    assert options[-6:] == ["--replicas", "2", "--aux", "pipelined", "--placement", "replicas-together"]
    # The looped schedules: two stages on each worker.
    name, options, workers, _ = row("zero-bubble", 2, None, 8, 30)
    assert name == "pipeline interleaved zero bubble K=4 on 2 workers, 8 micro-batches" and workers == 2
    assert options[:4] == ["--method", "penalty", "--stages", "4"] and options[-2:] == ["--serial-schedule", "zero-bubble"]
    # bf16 / fp16: the row under autocast.
    assert row("serial-1+bf16", 2, None, 4, 30)[:2] == ("serial, 1 thread, bf16 autocast", ["--precision", "bf16"])
    assert row("penalty+pipe+fp16", 2, None, 4, 30)[1][-2:] == ["--precision", "fp16"]
    for bad in ("serial-1+d2", "penalty+d2+oneprocess"):
        with pytest.raises(ValueError, match="unknown row"):
            row(bad, 2, None, 4, 30)
    for bad in ("penalty+share2", "penalty+fast", "sgd", "penalty+cut3-x", "penalty+pmbx", "penalty+blocksx", "penalty+awx", "penalty+k0"):
        with pytest.raises(ValueError, match="unknown row"):
            row(bad, 2, None, 4, 30)


def test_devices_of_a_share_of_a_core_are_cgroups_pinned_two_to_a_core():
    from lpfast.benchmark import launch
    from lpfast.cpuquota import CGROUP_CPU, PERIOD_US, Devices, cpu_quotas, in_group
    from lpfast.netns import Host

    devices = Devices([Path(f"/g{i}") for i in range(4)], per_core=2)
    processes = launch(["-m", "x"], 4, 29500, None, devices)
    # Each worker joins its group, then runs pinned to its core.
    assert [p[4:7] for p in processes] == [["taskset", "-c", str(i // 2)] for i in range(4)]
    assert all(p[:2] == ["sh", "-c"] and f"echo $$ > /g{i}/cgroup.procs" in p[2] and p[p.index("--node-rank") + 1] == str(i)
               for i, p in enumerate(processes))
    assert launch(["-m", "x"], 0, 29500, None, devices)[0][4:7] == ["taskset", "-c", "0"]
    # Over a link the group is joined before the namespace is entered: inside it /sys has no cgroups.
    hosts = (Host("ns-a", "if-a", "10.0.0.1"), Host("ns-b", "if-b", "10.0.0.2"))
    linked = launch(["-m", "x"], 4, 29500, hosts, devices)
    assert all(p[2].startswith("echo $$ > /g") and p[4:8] == ["ip", "netns", "exec", f"ns-{'ab'[i // 2]}"] for i, p in enumerate(linked))
    if os.geteuid() != 0 or not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
        pytest.skip("no cgroup v1 cpu controller to write to here")
    with cpu_quotas(1, 0.5, tag="test") as made:
        assert len(made.groups) == 1
        # Two places on core 0, the second a filler alone; each group holds its idle filler.
        groups = sorted(CGROUP_CPU.glob("lpfast-test-device*"))
        assert len(groups) == 2 and [(g / "cpu.cfs_quota_us").read_text().strip() for g in groups] == [str(PERIOD_US // 2)] * 2
        assert all(len((g / "cgroup.procs").read_text().split()) == 1 for g in groups)
        member = subprocess.run(in_group(["cat", "/proc/self/cgroup"], made.groups[0]), capture_output=True, text=True, check=True).stdout
        assert made.groups[0].name in member
    assert not any(g.exists() for g in groups)
    with pytest.raises(ValueError, match="cores; this machine gives"):
        with cpu_quotas(2 * (os.cpu_count() or 1) + 2, 0.5):
            pass

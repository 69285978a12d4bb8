"""The committed benchmark records and what they say, for both pages that ``bench/report.py`` writes:
loading ``lpfast bench``'s records and the campaign's tables, the row kinds, speed-ups over one
device (medians over the same interleaved rounds), time to accuracy composed from the real budgets'
accuracy curves and the devices rows' per-epoch speeds, ``lpfast plan``'s predictions for measured
rows, and the plots' helpers."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lpfast.benchmark import PRESETS  # noqa: E402
from lpfast.describe import describe as describe_model  # noqa: E402
from lpfast.models import build_model  # noqa: E402
from lpfast.plan import PartCosts, link_bytes_per_s, predict  # noqa: E402
from lpfast.stages import partition  # noqa: E402


NOISY = 1.5  # timing spread above which a row's times are flagged


def load(records_path: Path) -> dict[tuple[str, str, str], list[dict]]:
    """Per (benchmark, model, dataset), every row from the latest invocation that ran it (a re-run
    of some rows with ``lpfast bench --rows`` replaces those), in the row order of the latest
    invocation that ran the most rows."""
    groups: dict[tuple[str, str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in read_records(records_path):
        groups[(r["benchmark"], r["model"], r["dataset"])][r["invocation"]].append(r)
    return {key: merge_invocations(runs) for key, runs in sorted(groups.items())}


def merge_invocations(runs: dict[str, list[dict]]) -> list[dict]:
    """Every row from the latest of the invocations ``runs`` that ran it, in the row order of the
    latest invocation that ran the most rows."""
    order = max(runs, key=lambda invocation: (len(runs[invocation]), invocation))
    latest = {r["name"]: r for invocation in sorted(runs) for r in runs[invocation]}
    names = [r["name"] for r in runs[order]] + [name for name in latest if name not in {r["name"] for r in runs[order]}]
    # Speeds drift between invocations (up to 3x on this project's shared host): a row from an
    # older invocation is timed against the backprop of its own.
    for rows in runs.values():
        one_device = [r for r in rows if r["config"]["method"] == "serial" and r["workers"] == 1 and r["threads"] == 1]
        if one_device:
            for r in rows:
                r["invocation_baseline"] = one_device[0]
    return [latest[name] for name in names]


def load_invocations(records_path: Path) -> dict[str, list[dict]]:
    """Every invocation of a records file apart, oldest first (none if there is no file): the
    four-device records, whose invocations each test another device model or layout and so are
    not merged row by row as :func:`load` merges re-runs."""
    return dict(invocations(read_records(records_path))) if records_path.exists() else {}


def read_records(records_path: Path) -> list[dict]:
    return [json.loads(line) for line in records_path.read_text().splitlines() if line.strip()]


def against(base: dict, r: dict) -> dict:
    """The baseline a row's times are set against: ``base`` if the row ran in its invocation, else
    the one-device backprop of the row's own invocation where that has one."""
    return base if r["invocation"] == base["invocation"] else r.get("invocation_baseline", base)


def invocations(records: list[dict]) -> list[tuple[str, list[dict]]]:
    """The invocations behind a section's rows, oldest first, each with its rows."""
    by_invocation: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_invocation[r["invocation"]].append(r)
    return sorted(by_invocation.items())


def baseline(records: list[dict]) -> dict:
    """Layer-serial backprop on one device (one process, one thread), the paper's baseline; in
    sections without it, serial backprop with the most threads (else the first row)."""
    serial = [r for r in records if r["config"]["method"] == "serial" and r["workers"] == 1]
    one_device = [r for r in serial if r["threads"] == 1]
    if one_device:
        return one_device[0]
    return max(serial, key=lambda r: r["threads"]) if serial else records[0]


def phase_median(r: dict, phase: str) -> float | None:
    times = [t for t, p in zip(r["epoch_time_s"], r["phase"]) if p == phase]
    return statistics.median(times) if times else None


def phase_speedup(base: dict, r: dict, phase: str) -> float | None:
    """How much faster the row's epochs of ``phase`` ran than the baseline's: the ratio of their
    medians over the same rounds. In an interleaved invocation a round's epochs share the host's
    speed, which drifts from round to round, so a phase held in some rounds is set against the
    baseline's epochs of those rounds. A row of another invocation is set against the backprop of its
    own (:func:`against`); rows of other budgets, and baselines whose epochs spread more than
    ``NOISY`` (there one slow epoch, not a drift, would decide), against the baseline's median."""
    own = phase_median(r, phase)
    if own is None:
        return None
    base = against(base, r)
    rounds = [i for i, p in enumerate(r["phase"]) if p == phase]
    reference = statistics.median(base["epoch_time_s"][i] for i in rounds) if same_rounds(base, r) else base["median_epoch_time_s"]
    return reference / own


def run_speedup(base: dict, r: dict) -> float:
    """How much faster the row's whole budget trained than the baseline's (of its own invocation)."""
    return against(base, r)["train_time_s"] / r["train_time_s"]


def epoch_speedup(base: dict, r: dict) -> float:
    """How much faster the row's median epoch ran than the baseline's (of its own invocation)."""
    return against(base, r)["median_epoch_time_s"] / r["median_epoch_time_s"]


def same_rounds(base: dict, r: dict) -> bool:
    """Whether :func:`phase_speedup` sets the row against the baseline's epochs of the same rounds."""
    return base.get("invocation") is not None and base.get("invocation") == r.get("invocation") and \
        len(base["epoch_time_s"]) == len(r["epoch_time_s"]) and spread(base) <= NOISY


def spread(r: dict) -> float:
    """Largest ratio of two epoch times of one phase: near 1 on a quiet machine."""
    ratios = [1.0]
    for phase in set(r["phase"]):
        times = [t for t, p in zip(r["epoch_time_s"], r["phase"]) if p == phase]
        ratios.append(max(times) / min(times))
    return max(ratios)


def bench_command(records: list[dict], rows: list[str] | None = None) -> str:
    """The ``lpfast bench`` invocation that made these records (its options are in every record);
    ``rows`` the row kinds of a partial re-run."""
    first = records[0]
    preset, _, link = first["benchmark"].partition(" over a ")
    parts = ["lpfast bench", preset, "--model", first["model"], "--dataset", first["dataset"], "--epochs", str(first["epoch_budget"]),
             "--batch-size", str(first["config"]["batch_size"]), "--workers", str(max(max(r["workers"], r["threads"]) for r in records))]
    for option in ("train_subset", "test_subset"):
        if first["config"].get(option) is not None:
            parts += [f"--{option.replace('_', '-')}", str(first["config"][option])]
    hybrid = [r["config"] for r in records if r["config"]["method"] != "serial" and r["config"]["parallel_epochs"]]
    # The micro-batches of the serial phase's pipeline: a row with every epoch parallel records 1.
    piped = [r["config"] for r in records
             if r["config"]["method"] != "serial" and (r["config"]["parallel_epochs"] or 0) < r["epoch_budget"]]
    if hybrid:
        parts += ["--parallel-epochs", str(hybrid[0]["parallel_epochs"])]
    if piped:
        parts += ["--micro-batches", str(piped[0]["micro_batches"])]
    if link:
        parts += ["--slow-link", link.removesuffix(" link")]
    if first.get("device_share"):
        parts += ["--device-share", f"{first['device_share']:g}"]
    if rows:
        parts += ["--rows", ",".join(rows)]
    return " ".join(parts)


def canonical(kind: str) -> str:
    """A row kind with its modifiers in one order: ``penalty+share1+pipe`` is the row ``penalty+pipe+share1``."""
    method, *modifiers = kind.split("+")
    return "+".join([method, *sorted(modifiers)])


def row_kind(record: dict) -> str:
    """The ``lpfast bench`` row kind of a record (``--rows`` syntax); older records only have their name."""
    if "kind" in record:
        return record["kind"]
    name = record["name"]
    if name.startswith("serial, 1 thread"):
        return "serial-1"
    if name.startswith("serial, "):
        return "serial-K"
    if name.startswith("DDP"):
        return "ddp"
    if name.startswith("serial pipeline"):  # the hand-written pipeline before torch.distributed.pipelining ran it
        return "1f1b"
    method = name.split("+")[0].split(" ")[0]
    modifiers = {"DS s=2 bf16": "+ds", "--aux net": "+net", "regression lr x0.1": "+lr0.1"}
    return method + "".join(tag for label, tag in modifiers.items() if label in name)


def section_commands(records: list[dict]) -> list[str]:
    """The bench commands of a section: the full run, then any partial re-runs (``--rows``)."""
    runs = invocations(records)
    full, full_rows = max(runs, key=lambda run: (len(run[1]), run[0]))
    kinds = [row_kind(r) for r in full_rows]
    preset = records[0]["benchmark"].partition(" over a ")[0]
    first = bench_command(records, None if tuple(kinds) == PRESETS[preset] else kinds)
    return [first] + [bench_command(rows, [row_kind(r) for r in rows]) for invocation, rows in runs if invocation != full]


def budget(record: dict) -> str:
    subset = record["config"].get("train_subset")
    return f"{record['epoch_budget']} epochs" + ("" if subset is None else f" over {subset} training images (a class-balanced subset)")


def save_plot(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A tight bounding box grows the image to hold labels longer than the axes leave room for
    # (row names run to ~80 characters).
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def image(alt: str, plot: Path, page: Path) -> str:
    """A Markdown image of ``plot`` as ``page`` links it (the two pages sit in different folders)."""
    return f"![{alt}]({Path(os.path.relpath(plot, page.parent)).as_posix()})"


class Planned(NamedTuple):
    """One measured row beside the planner's prediction for it."""
    name: str
    label: str  # the row in words, as the four-device tables name it
    layout: str  # K × D and the cut
    what: str  # which speed-up: of an epoch, of the parallel epoch, of the whole run
    predicted: float
    measured: float

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1


def on_share(costs: PartCosts, share: float | None) -> PartCosts:
    """The plan's costs, measured on a whole core, on a device of ``share`` of a core: compute takes 1/share as long."""
    if not share:
        return costs
    times = ("forward_s", "backward_s", "micro_forward_s", "micro_backward_s", "cut_regress_s", "cut_lambda_s")
    return dataclasses.replace(costs, **{field: [t / share for t in getattr(costs, field)] for field in times})


def default_cut(plan: dict, dataset: str, k: int) -> list[int]:
    """The cut ``lpfast train`` makes for ``k`` stages of the plan's model: as the plan recorded it,
    else as ``lpfast.stages.partition`` makes it."""
    recorded = [p["cut"] for p in plan["predictions"] if p["stages"] == k and p["default"]]
    if recorded:
        return recorded[0]
    described = describe_model(build_model(plan["model"], in_channels=plan["input_shape"][0], num_classes=100 if dataset == "cifar100" else 10))
    return list(partition(described, k, plan["input_shape"]).blocks_per_stage)


def planned_rows(records: list[dict], folder: Path) -> tuple[str, list[Planned]]:
    """``lpfast plan``'s predictions for the rows of a ``devices`` invocation against their measured
    speed-ups over its backprop on one device: the block and cut costs of ``plan-<model>-<dataset>.json``
    beside the records (measured on one core; on a device of a share of a core, each takes
    1/share as long) put through :func:`lpfast.plan.predict` for each row's layout, cut,
    micro-batches, parallel parts, placement and link (two machines of half the devices each, as ``--slow-link``
    makes them). The plan file's name and the rows; none where the plan or the baseline is missing.
    The looped schedules, ψ and stored λ's filtered messages are not planned."""
    first = records[0]
    path = folder / f"plan-{first['model']}-{first['dataset']}.json"
    kinds = {row_kind(r) for r in records}
    if first["benchmark"].partition(" over a ")[0] != "devices" or not path.exists() or "serial-1" not in kinds:
        return path.name, []
    plan = json.loads(path.read_text())
    costs = on_share(PartCosts.from_dict(plan["costs"]), first.get("device_share"))
    link = first.get("slow_link")
    on_link = dict(link=link_bytes_per_s(link), hosts=2 if link else None)
    base = baseline(records)
    over_one = speedups_over_one_device(records)
    planned = []
    for r in records:
        kind, config = row_kind(r), r["config"]
        family_, ds, pipelined = kind.split("+")[0], config.get("ds_factor", 1) > 1, config.get("aux") == "pipelined"
        if family_ not in ("ddp", "gpipe", "1f1b", "penalty", "al") or config.get("aux") == "net" or (ds and link and not pipelined):
            continue
        if family_ == "ddp":  # one stage on every device
            p = predict(costs, 1, replicas=r["workers"], **on_link)
            planned.append(Planned(r["name"], device_label(r), "—", "epoch", p.ddp_speedup, over_one[kind]))
            continue
        replicas = config.get("replicas") or 1
        k = r["workers"] // replicas
        cut = config.get("stage_blocks") or default_cut(plan, first["dataset"], k)
        p = predict(costs, k, cut=cut, micro_batches=config.get("micro_batches", 4), replicas=replicas,
                    placement=config.get("placement", "stages-together"), parallel_micro_batches=config.get("parallel_micro_batches", 1),
                    **on_link)
        if family_ in ("gpipe", "1f1b"):
            predicted, measured, what = p.gpipe_speedup if family_ == "gpipe" else p.pipeline_speedup, over_one[kind], "epoch"
        else:
            share = sum(phase == "parallel" for phase in r["phase"]) / len(r["phase"])
            parallel = (p.pipelined_ds_step_s if ds else p.pipelined_step_s) if pipelined else p.parallel_step_s
            predicted = p.serial_step_s / (share * parallel + (1 - share) * p.pipeline_step_s)
            if share == 1:
                what, measured = "parallel epoch", over_one[kind]
            else:
                what, measured = f"whole run ({share:.2f} parallel)", run_speedup(base, r)
        layout = f"{k} × {replicas}, cut {','.join(map(str, cut))}" if replicas > 1 else ",".join(map(str, cut))
        planned.append(Planned(r["name"], device_label(r), layout, what, predicted, measured))
    return path.name, planned


# How much faster one GPU runs a small ResNet's training step than one of these CPU cores (ResNet-20,
# batch 128: about 400 ms per step on a core here; of the order of 8 to 20 ms on a current
# data-centre GPU). An assumption, not measured here (no GPU): it is the factor by which a GPU
# cluster's link must be faster than ours for compute and messages to stand in the same ratio.
GPU_OVER_CORE = (20, 50)


LINK_ROWS = (("ddp", "DDP"), ("1f1b", "1F1B"), ("penalty+pipe+share1", "pipelined λ"), ("penalty+pipe+ds+share1", "pipelined λ + DS"))


class LinkRate(NamedTuple):
    """One link rate of a sweep: what a message cost there and how each row ran."""
    link: str
    message_ms: float | None  # a 3.2 MB message's median round trip
    speedups: dict[str, float]  # per epoch over one device, per row kind of LINK_ROWS that ran
    sizes: list[str]  # the pipelined rows' messages per step, each way (without / with DS)
    ratios: list[str]  # their compute-to-message ratio
    cluster: str  # the GPU-cluster link of the same ratio


def link_sweeps(groups: dict) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """The ``devices`` records of every model measured at two link rates or more, per rate (the
    unshaped invocation as loopback), fastest first."""
    sweeps: dict = defaultdict(dict)
    for (bench, model, dataset), records in groups.items():
        if bench.partition(" over a ")[0] == "devices":
            sweeps[(model, dataset)][records[0].get("slow_link") or "loopback"] = records
    return {key: {link: by_link[link] for link in sorted(by_link, key=lambda link: -link_bytes_per_s(link) if link != "loopback"
                                                         else -float("inf"))}
            for key, by_link in sorted(sweeps.items()) if len(by_link) >= 2}


def link_rates(by_link: dict[str, list[dict]]) -> list[LinkRate]:
    """Each rate of one model's sweep: each row's per-epoch speed-up over one device, the pipelined
    rows' messages per step and their compute-to-message ratio, and the GPU-cluster link with the
    same ratio."""
    loopback = {row_kind(r): r for r in by_link.get("loopback", [])}
    # A stage's compute per step: the pipelined step with free messages (the loopback row).
    free = loopback.get("penalty+pipe+share1")
    compute = None if free is None else free["median_epoch_time_s"] / -(-free["config"]["train_subset"] // free["config"]["batch_size"])
    # The unshaped invocation has no message timing of its own: every slow-link one times loopback first.
    timed = [r["message_3.2MB_ms"] for records in by_link.values() for r in records[:1] if r.get("message_3.2MB_ms")]
    rates = []
    for link, records in by_link.items():
        kinds = {row_kind(r): r for r in records}
        base = kinds.get("serial-1")
        if base is None:
            continue
        sizes, ratios = [], []
        for kind in ("penalty+pipe+share1", "penalty+pipe+ds+share1"):
            r = kinds.get(kind)
            if r is None:
                sizes.append("—")
                ratios.append("—")
                continue
            steps = -(-r["config"]["train_subset"] // r["config"]["batch_size"]) * len(r["test_acc"])
            each_way = r["bytes_sent"] / steps / 2
            sizes.append(f"{each_way / 1e6:.2f} MB")
            ratios.append("∞" if link == "loopback" else "—" if compute is None
                          else f"{compute / (each_way / link_bytes_per_s(link)):.2g}")
        link_ms = (statistics.median(m["loopback"] for m in timed) if link == "loopback" and timed
                   else (base.get("message_3.2MB_ms") or {}).get(f"{link} link"))
        cluster = "" if link == "loopback" else " – ".join(f"{link_bytes_per_s(link) * 8 * g / 1e9:g} Gbit/s" for g in GPU_OVER_CORE)
        speedups = {kind: epoch_speedup(base, kinds[kind]) for kind, _ in LINK_ROWS if kind in kinds}
        rates.append(LinkRate(link, link_ms, speedups, sizes, ratios, cluster))
    return rates


def speedup_cells(speedups: dict[str, float], kinds) -> list[str]:
    """Table cells of the speed-ups of ``kinds`` (blank: not run)."""
    return [f"{speedups[kind]:.2f}×" if kind in speedups else "" for kind in kinds]


TARGETS = {"cifar10": 0.3, "cifar100": 0.5}  # issue 18: points under backprop allowed at >= half the epochs parallel


def device_speedups(groups: dict, model: str, dataset: str, link: str = "loopback") -> dict[str, float]:
    """Per-epoch speed-up over one device of every row of the latest ``devices`` invocation of a
    model and data set at a link rate (``loopback``: unshaped), by row kind: the baseline's median
    epoch over the row's median parallel-phase epoch (over the same rounds) where it has one, else over its median epoch."""
    return speedups_over_one_device(groups.get(("devices" if link == "loopback" else f"devices over a {link} link", model, dataset), []))


def speedups_over_one_device(records: list[dict]) -> dict[str, float]:
    """Per row kind, the speed-up over the ``serial-1`` row per epoch of the parallel phase where
    the row has one, else per epoch (none without a ``serial-1`` row)."""
    kinds = {row_kind(r): r for r in records}
    if "serial-1" not in kinds:
        return {}
    base = kinds["serial-1"]
    return {kind: phase_speedup(base, r, "parallel") or epoch_speedup(base, r)
            for kind, r in kinds.items()}


# Peers with exact gradients on the same devices follow backprop's accuracy curve (batch-norm
# statistics over a worker's or micro-batch's share of the batch aside), so at the real budget
# their time to accuracy is backprop's epochs at their per-epoch speed.
EXACT_PEERS = {"serial-1": "backprop, one device", "ddp": "DDP (backprop's curve)", "1f1b": "pipeline 1F1B (backprop's curve)",
               "gpipe": "pipeline GPipe (backprop's curve)"}


def first_epoch_at(r: dict, target: float) -> int | None:
    return next((i + 1 for i, accuracy in enumerate(r["test_acc"]) if accuracy >= target), None)


def composed_times(phases: list[str], rho: dict[str, float], parallel_row: str, serial_row: str) -> list[float]:
    """Cumulative time, in one device's backprop epochs, at the end of each epoch of a run whose
    epochs are ``phases``: a parallel epoch costs 1 / the speed-up of ``parallel_row``, a serial one
    1 / that of ``serial_row``; the list stops before the first epoch whose row ``rho`` lacks."""
    times, total = [], 0.0
    for phase in phases:
        row = parallel_row if phase == "parallel" else serial_row
        if row not in rho:
            break
        total += 1 / rho[row]
        times.append(total)
    return times


class ComposedRow(NamedTuple):
    """One row of a time-to-accuracy table: a real-budget run (or a peer on backprop's curve)."""
    name: str
    kind: str
    timed_by: str  # which devices rows give its epochs' times
    reached: int | None  # its epochs to the target (None: never)
    accuracy: list[float]
    curves: dict[str, list[float]]  # per link, its cumulative composed time at the end of each epoch
    run: dict | None  # the real-budget run (None: a peer on backprop's curve)


class Composed(NamedTuple):
    """Time to accuracy at one real budget, composed at every link rate with a ``devices`` invocation."""
    model: str
    dataset: str
    epochs: int
    ref: dict  # backprop's run at the budget
    target: float
    reach: int  # backprop's epochs to the target
    links: list[str]
    rows: list[ComposedRow]

    def speedup(self, row: ComposedRow, link: str) -> float | None:
        """The row's speed-up over one device until the target at ``link``: None where it never gets
        there or a devices row it needs was not run at that rate."""
        times = row.curves.get(link, [])
        return self.reach / times[row.reached - 1] if row.reached and len(times) >= row.reached else None


def finished(loaded: list) -> list[dict]:
    """The runs of the campaign's tables that trained their whole budget."""
    return [r for _, records in loaded for r in records if len(r["test_acc"]) == r["epoch_budget"]]


def time_to_accuracy(loaded: list, backprop: dict, groups: dict) -> list[Composed]:
    """Time to accuracy at the real budget, composed, at every link rate with a ``devices``
    invocation: each finished row's epochs until it first reaches backprop's final accuracy minus
    one point, each epoch weighted by the per-epoch time of its phase on one of K devices at that
    rate (its all-parallel devices row for parallel epochs, 1F1B for serial ones)."""
    done = finished(loaded)
    composed = []
    for (model, dataset, epochs), ref in sorted(backprop.items()):
        links = [link for link in ("loopback", *sorted({r.get("slow_link") for (bench, m, d), records in groups.items()
                                                         if (m, d) == (model, dataset) and " over a " in bench
                                                         for r in records[:1]}, key=link_bytes_per_s, reverse=True))
                 if device_speedups(groups, model, dataset, link)]
        if len(ref["test_acc"]) < epochs or not links:
            continue
        measured = {link: device_speedups(groups, model, dataset, link) for link in links}
        rho = {link: {canonical(kind): speedup for kind, speedup in speedups.items()} for link, speedups in measured.items()}
        written = {canonical(kind): kind for speedups in measured.values() for kind in speedups}  # as the devices invocation names it
        target = ref["final_test_acc"] - 1.0
        reach = first_epoch_at(ref, target)
        rows = [ComposedRow(label, kind, "", reach, ref["test_acc"],
                            {link: composed_times(["serial"] * epochs, rho[link], kind, kind) for link in links}, None)
                for kind, label in EXACT_PEERS.items()]
        for r in done:
            kind = row_kind(r)
            if (r["model"], r["dataset"], r["epoch_budget"]) != (model, dataset, epochs) or "+seed" in kind \
                    or r["config"]["method"] == "serial":
                continue
            # Its parallel epochs run as the all-parallel devices row of its options, its serial ones as 1F1B at its cut.
            method, *modifiers = kind.split("+")
            modifiers = [m for m in modifiers if not m.startswith(("share", "seed"))]
            parallel_row = canonical("+".join([method, *modifiers, "share1"]))
            serial_row = canonical("+".join(["1f1b", *(m for m in modifiers if m.startswith("cut"))]))
            reached = first_epoch_at(r, target)
            used = [parallel_row, *([serial_row] if "serial" in r["phase"][:reached or 0] else [])]
            timed_by = f" (devices row{'s' if len(used) > 1 else ''} {', '.join(f'`{written.get(row, row)}`' for row in used)})" if reached else ""
            rows.append(ComposedRow(r["name"], kind, timed_by, reached, r["test_acc"],
                                    {link: composed_times(r["phase"], rho[link], parallel_row, serial_row) for link in links}, r))
        composed.append(Composed(model, dataset, epochs, ref, target, reach, links, rows))
    return composed


def real_time_to_accuracy_plot(c: Composed, plot_dir: Path, devices: str = "") -> Path:
    """Test accuracy against composed training time (one device's backprop epochs), one panel per
    link rate, for the rows that reach the target; the legend in a panel of its own."""
    columns = 3
    lines_of_panels = -(-(len(c.links) + 1) // columns)  # the rates and the legend
    fig, axes = plt.subplots(lines_of_panels, columns, figsize=(10, 3.2 * lines_of_panels), sharey=True, squeeze=False)
    panels = axes.flatten()
    for ax, link in zip(panels, c.links):
        for i, row in enumerate(c.rows):  # a row keeps its colour and line in every panel
            if row.reached and row.curves[link]:
                ax.plot(row.curves[link], row.accuracy[:len(row.curves[link])], color=f"C{i % 10}",
                        linestyle=("-", "--")[i // 10 % 2], linewidth=1, label=row.name)
        ax.axhline(c.target, color="grey", linestyle=":")
        ax.set(title=link, xlabel="one device's epochs", ylabel="test accuracy (%)", ylim=(max(0.0, c.target - 20), c.target + 3))
    legend = {label: handle for ax in panels[:len(c.links)] for handle, label in zip(*ax.get_legend_handles_labels())}
    order = [row.name for row in c.rows if row.name in legend]
    panels[len(c.links)].legend([legend[label] for label in order], order, loc="center", fontsize=6.5, frameon=False)
    for ax in panels[len(c.links):]:
        ax.axis("off")
    fig.suptitle(f"{c.model} on {c.dataset}, {c.epochs} epochs{devices and ', ' + devices}: time to backprop's accuracy less one point "
                 "(dotted), composed", fontsize=9)
    fig.tight_layout()
    return save_plot(fig, plot_dir / f"real-{c.model}-{c.dataset}-e{c.epochs}-time-to-accuracy{devices and '-' + devices.replace(' ', '-')}.png")


def campaign_tables(folder: Path) -> list[tuple[Path, list[dict]]]:
    """The campaign's tables ``real-<model>-<dataset>[-tag].json`` (``bench/real_budgets.sh``
    rewrites them after every epoch), each with its records."""
    return [(path, json.loads(path.read_text())["records"]) for path in sorted(folder.glob("real-*.json"))]


def on_a_subset(records: list[dict]) -> bool:
    """A campaign table trained on part of the training set: a proxy for ranking levers, not a real budget."""
    return any(r["config"].get("train_subset") for r in records)


def real_tables(folder: Path) -> list[tuple[Path, list[dict]]]:
    """The campaign's real-budget tables: full training sets."""
    return [(path, records) for path, records in campaign_tables(folder) if not on_a_subset(records)]


def proxy_tables(folder: Path) -> list[tuple[Path, list[dict]]]:
    """The campaign's proxy tables: levers ranked on part of the training set at a short budget."""
    return [(path, records) for path, records in campaign_tables(folder) if on_a_subset(records)]


def seed_zero_backprop(loaded: list) -> dict[tuple[str, str, int], dict]:
    """The campaign's backprop row per model, data set and budget. An invocation added beside the
    campaign's (``--tag``) may have no backprop row of its own: it is set against this one."""
    return {(r["model"], r["dataset"], r["epoch_budget"]): r for _, records in loaded for r in records if row_kind(r) == "serial-K"}


def relative(target: Path, page: Path) -> str:
    """The link from ``page`` to ``target``."""
    return Path(os.path.relpath(target, page.parent)).as_posix()


def describe(kind: str, share: float | None = None) -> str:
    """A row kind in words (``penalty+pipe+ds+cut3-6`` with half the epochs parallel: "pipelined λ +
    DS, cut 3+6, half of the epochs parallel")."""
    method, *modifiers = kind.split("+")
    if method.startswith("serial"):
        return "backprop"
    words = ["pipelined λ" if "pipe" in modifiers else "auxiliary networks ψ" if "net" in modifiers
             else f"stored λ ({'AL' if method == 'al' else method})"]
    words[0] += " + DS" if "ds" in modifiers else ""
    words += [f"K={m[1:]}" for m in modifiers if re.fullmatch(r"k\d+", m)]
    words += [f"cut {m[3:].replace('-', '+')}" for m in modifiers if m.startswith("cut")]
    words += [f"gradient shrink {m[2:]}" for m in modifiers if m.startswith("gs")]
    words += ["no weight prediction" for m in modifiers if m == "nopredict"]
    words += [f"batches in {m[3:]} parts" for m in modifiers if re.fullmatch(r"pmb\d+", m)]
    words += [f"lr warm-up {m[2:]} epoch{'s' if m[2:] != '1' else ''}" for m in modifiers if m.startswith("wu")]
    words += [f"{m[2:]} serial warm-up epoch{'s' if m[2:] != '1' else ''}" for m in modifiers if m.startswith("sw")]
    if share is not None:
        words.append("every epoch parallel" if share == 1 else "half of the epochs parallel" if share == 0.5
                     else "no epoch parallel (backprop through the stages)" if share == 0
                     else f"{share:.2f} of the epochs parallel")
    return ", ".join(words)


def family(kind: str) -> str:
    """A row kind without its cut and parallel share: the rows one column of the speed table picks from."""
    return canonical("+".join(m for m in kind.split("+") if not m.startswith(("cut", "share"))))


PEER_NAMES = {"serial-1": "backprop, one device", "ddp": "DDP", "gpipe": "GPipe", "1f1b": "1F1B",
              "interleaved-1f1b": "interleaved 1F1B (2 stages a device)", "zero-bubble": "interleaved zero bubble (2 stages a device)"}


def without_cut(kind: str) -> str:
    return "+".join(m for m in kind.split("+") if not m.startswith("cut"))


def device_label(r: dict, *, cut: bool = True) -> str:
    """A row on several devices in words: the peer, or lpfast's λ and its layout of stages and replicas
    (and its cut, unless ``cut`` is False)."""
    kind = row_kind(r) if cut else without_cut(row_kind(r))
    if family(kind) in PEER_NAMES:
        return PEER_NAMES[family(kind)]
    replicas = r["config"].get("replicas") or 1
    layout = f"{r['workers'] // replicas} stages × {replicas} replicas" if replicas > 1 else f"K={r['workers']}"
    placement = ", a stage's replicas together" if "rt" in kind.split("+") else ""
    return f"lpfast {layout}, " + describe("+".join(m for m in kind.split("+") if not re.fullmatch(r"[kd]\d+", m))) + placement

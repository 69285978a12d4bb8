"""Turns the committed benchmark results into two pages with PNG plots beside them:
``bench/RESULTS.md``, the page a user reads in five minutes, and ``bench/results/ALL.md``, every
table behind it.

The short page states where things stand and answers one question per section (accuracy at real
budgets, many stages, speed on equal devices against DDP and the pipeline schedules, the link
sweep, four devices, memory, kernels), each with its headline table, its plot and the command that
reproduces it. Every number on it is computed here from a result file: the records of ``lpfast
bench`` (``bench/results/records.jsonl``; the four-device ones apart, in
``bench/results/four-devices/records.jsonl``), the real-budget campaign's tables
(``real-*.json``), the overlap profile (``overlap-*.json``) and the kernel benchmark
(``kernels-*.json``).

The full page has, for each (benchmark, model, data set), the latest invocation as one table: every
configuration's final accuracy, training and wall time at the same epoch budget, the speed-up of
the parallel phase per epoch and of the whole run over backprop on one device (and over the best
of DDP and the pipelines on K devices), the time each row takes to reach a common accuracy, bytes
sent and memory. Plots: test accuracy against wall time, per-cut constraint violation against
epoch, bytes per epoch, and the speed-up against K with the model ρ(K) of ALGORITHM.md §8 fitted
from the measured epoch times. Then the real-budget campaign, each four-device invocation, and the
speed-limit tables of ``bench/ceiling.py``. The hand-written history of the measurements stays in
``bench/results/narrative.md``; both pages link to it.

    python bench/report.py [--records bench/results/records.jsonl] [--out bench/RESULTS.md] [--all bench/results/ALL.md]
"""
from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
NOISY = 1.5  # timing spread above which a row's times are flagged


def load(records_path: Path) -> dict[tuple[str, str, str], list[dict]]:
    """Per (benchmark, model, dataset), every row from the latest invocation that ran it (a re-run
    of some rows with ``lpfast bench --rows`` replaces those), in the row order of the latest
    invocation that ran the most rows."""
    groups: dict[tuple[str, str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in read_records(records_path):
        groups[(r["benchmark"], r["model"], r["dataset"])][r["invocation"]].append(r)
    merged = {}
    for key, runs in sorted(groups.items()):
        order = max(runs, key=lambda invocation: (len(runs[invocation]), invocation))
        latest = {r["name"]: r for invocation in sorted(runs) for r in runs[invocation]}
        names = [r["name"] for r in runs[order]] + [name for name in latest if name not in {r["name"] for r in runs[order]}]
        merged[key] = [latest[name] for name in names]
        # Speeds drift between invocations (up to 3x on this project's shared host): a row from an
        # older invocation is timed against the backprop of its own.
        for invocation, rows in runs.items():
            one_device = [r for r in rows if r["config"]["method"] == "serial" and r["workers"] == 1 and r["threads"] == 1]
            if one_device:
                for r in rows:
                    r["invocation_baseline"] = one_device[0]
    return merged


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


PEER_KINDS = ("ddp", "gpipe", "1f1b")  # exact-gradient training on the same K devices


def best_peer(records: list[dict]) -> dict | None:
    """The fastest (whole-run speed-up over one device) of DDP and the pipeline schedules, if the section has them."""
    peers = [r for r in records if row_kind(r) in PEER_KINDS]
    return max(peers, key=lambda r: run_speedup(baseline(records), r)) if peers else None


def accuracy_target(records: list[dict]) -> float:
    """The common accuracy every row's time-to-accuracy is stated for: the baseline's final accuracy minus one point."""
    return baseline(records)["final_test_acc"] - 1.0


def time_to(r: dict, target: float) -> float | None:
    """Training time until the end of the first epoch whose test accuracy reaches ``target`` (None: never)."""
    elapsed = 0.0
    for seconds, accuracy in zip(r["epoch_time_s"], r["test_acc"]):
        elapsed += seconds
        if accuracy >= target:
            return elapsed
    return None


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


def apart(r: dict, base: dict) -> str:
    """A mark for a row timed in another invocation than the baseline: machine speed drifts between
    invocations (this project's shared host: up to 3x), so their times do not compare."""
    if r["invocation"] == base["invocation"]:
        return ""
    return " (other invocation: against its own backprop)" if against(base, r) is not base else " (other invocation: times not comparable)"


def rho_model(serial_1: float, parallel_k: float, k: int):
    """ρ(K) = T / (o + (T - o)/K) with T the 1-thread serial epoch and o = T_d + t_aux fitted
    from the measured K-worker parallel epoch (ALGORITHM.md §8)."""
    overhead = (parallel_k - serial_1 / k) / (1 - 1 / k)
    return overhead, lambda kk: serial_1 / (overhead + (serial_1 - overhead) / kk)


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


def link_line(record: dict) -> list[str]:
    """What a message cost on the slow link, measured before the rows (``--slow-link`` runs)."""
    times = record.get("message_3.2MB_ms")
    if not times:
        return []
    link = next(k for k in times if k != "loopback")
    return [f"The two workers of each K=2 row ran as two hosts joined by a {link}: a 3.2 MB gloo message took "
            f"{times[link]:.1f} ms there (median round trip) against {times['loopback']:.1f} ms on loopback. "
            "The serial rows ran on one host.", ""]


def findings(records: list[dict]) -> list[str]:
    """Plain statements of where the layer-parallel rows stand against serial backprop and DDP,
    with the §8 model's reading of the measured epoch times."""
    base = baseline(records)
    out = [f"**Findings.** Baseline: {base['name']}, {base['final_test_acc']:.2f}% after {base['train_time_s']:.0f} s of training"
           + (" (its epoch times are noisy: speed-ups against it are not to be trusted)." if spread(base) > NOISY else ".")]
    for r in records:
        if r is not base and r["config"]["method"] == "serial" and r["workers"] == 1:
            out.append(f"- {r['name']} (context, not a device-faithful row): {epoch_speedup(base, r):.2f}× "
                       f"per epoch against {base['name']} (what intra-op threading gets from the same cores).")
    serial_1 = next((r for r in records if r["name"] == "serial, 1 thread"), None)
    for r in records:
        if r is base or r["config"]["method"] == "serial" and r["workers"] == 1:
            continue
        faster = run_speedup(base, r)
        verdict = f"{faster:.2f}× faster" if faster >= 1 else f"{1 / faster:.2f}× slower"
        line = f"- {r['name']}: {r['final_test_acc'] - base['final_test_acc']:+.2f} points, whole run {verdict}"
        par, ser = phase_median(r, "parallel"), phase_median(r, "serial")
        if par is not None:
            line += (f"; a parallel epoch takes {par:.1f} s against {against(base, r)['median_epoch_time_s']:.1f} s "
                     f"({phase_speedup(base, r, 'parallel'):.2f}×{' over the same rounds' if same_rounds(base, r) else ''})")
        if ser is not None and r["config"]["method"] != "serial":
            k, m = r["workers"], r["config"]["micro_batches"]
            line += (f"; a serial-phase epoch (pipeline of {k} stages, {m} micro-batches, idle fraction (K-1)/(M+K-1) = "
                     f"{(k - 1) / (m + k - 1):.2f}) takes {ser:.1f} s ({phase_speedup(base, r, 'serial'):.2f}×)")
        if spread(r) > NOISY:
            line += " (timings noisy)"
        out.append(line + apart(r, base) + ".")
    parallel = [r for r in records if r["config"]["method"] != "serial" and phase_median(r, "parallel")]
    if serial_1 and parallel:
        r = parallel[0]
        t1 = against(serial_1, r)["median_epoch_time_s"]
        overhead, rho = rho_model(t1, phase_median(r, "parallel"), r["workers"])
        out.append(f"- §8 model from {r['name']}: T = {t1:.1f} s (1-thread serial epoch), fitted T_d + t_aux = {overhead:.1f} s "
                   f"({100 * overhead / t1:.0f}% of T); predicted parallel-epoch speed-up over 1 thread ρ(2) = {rho(2):.2f}, "
                   f"ρ(4) = {rho(4):.2f}, ρ(8) = {rho(8):.2f}, never above T/(T_d + t_aux) = {t1 / overhead:.1f}"
                   if overhead > 0 else
                   f"- §8 model from {r['name']}: the K-worker parallel epoch beat T/K (T = {t1:.1f} s), so no overhead can be fitted.")
    return out


def summary(groups: dict[tuple[str, str, str], list[dict]]) -> list[str]:
    """One table over the data sets of the ``grid`` preset: per configuration and data set, the final
    accuracy, its difference to the baseline and the whole run's speed-up over the baseline."""
    grids = {key: records for key, records in groups.items() if key[0] == "grid"}
    if not grids:
        return []
    names = list(dict.fromkeys(r["name"] for records in grids.values() for r in records))
    lines = ["## Summary: the grid on every data set", "",
             "Each cell: final test accuracy (difference to the section's baseline) · training-time speed-up of the "
             "whole run over it; `par.` is the speed-up of one parallel-phase epoch; (noisy): that row's or the baseline's epoch "
             f"times spread more than {NOISY}× (shared host). Same epoch budget in every column; "
             "details, noise flags and plots in the sections below.", "",
             "| configuration | " + " | ".join(f"{model} on {dataset}, {budget(records[0])}" for (_, model, dataset), records in grids.items()) + " |",
             "|---|" + "---|" * len(grids)]
    for name in names:
        cells = []
        for records in grids.values():
            base = baseline(records)
            r = next((r for r in records if r["name"] == name), None)
            if r is None:
                cells.append("")
                continue
            par = phase_speedup(base, r, "parallel")
            cells.append(f"{r['final_test_acc']:.2f}% ({r['final_test_acc'] - base['final_test_acc']:+.2f}) · "
                         f"{run_speedup(base, r):.2f}×" + ("" if par is None else f", par. {par:.2f}×")
                         + (" (noisy)" if spread(r) > NOISY or spread(base) > NOISY else "") + apart(r, base))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def plots(key, records: list[dict], folder: Path) -> list[str]:
    stem = "-".join(key).replace(" ", "_")
    made = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in records:
        wall = [sum(r["epoch_time_s"][: i + 1]) for i in range(len(r["epoch_time_s"]))]
        ax.plot(wall, r["test_acc"], marker="o", label=r["name"])
    ax.axhline(accuracy_target(records), color="grey", linestyle=":", label="time-to-accuracy target")
    ax.set(xlabel="training time (s)", ylabel="test accuracy (%)", title=f"{key[1]} on {key[2]}")
    ax.legend(fontsize=7)
    made.append(_save(fig, folder / f"{stem}-accuracy.png"))

    with_violation = [r for r in records if any(v for v in r["violation"])]
    if with_violation:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in with_violation:
            epochs = [i + 1 for i, v in enumerate(r["violation"]) if v]
            ax.plot(epochs, [v[0] for v in r["violation"] if v], marker="o", label=f"{r['name']} (cut 0)")
        ax.set(xlabel="epoch", ylabel="relative violation", yscale="log", title="constraint violation per cut")
        ax.legend(fontsize=7)
        made.append(_save(fig, folder / f"{stem}-violation.png"))

    sending = [r for r in records if r["bytes_sent"]]
    if sending:
        fig, ax = plt.subplots(figsize=(6, 1 + 0.3 * len(sending)))
        ax.barh([r["name"] for r in sending], [r["bytes_sent"] / len(r["epoch_time_s"]) / 1e9 for r in sending])
        ax.tick_params(axis="y", labelsize=7)
        ax.set(xlabel="GB sent between stages per epoch", title="communication, with and without DS")
        made.append(_save(fig, folder / f"{stem}-bytes.png"))

    serial_1 = next((r for r in records if r["name"] == "serial, 1 thread"), None)
    parallel = [r for r in records if r["config"]["method"] != "serial" and phase_median(r, "parallel")]
    if serial_1 and parallel:
        fig, ax = plt.subplots(figsize=(6, 4))
        ks = list(range(1, 17))
        for r in parallel[:1]:
            k, t1 = r["workers"], against(serial_1, r)["median_epoch_time_s"]
            overhead, rho = rho_model(t1, phase_median(r, "parallel"), k)
            if overhead > 0:  # else the K-worker epoch beat T/K and no overhead can be fitted
                ax.plot(ks, [rho(kk) for kk in ks], label=f"ρ(K), T_d + t_aux = {overhead:.1f} s fitted from {r['name']}")
            ax.plot([k], [t1 / phase_median(r, "parallel")], "o", label="measured")
        ax.plot(ks, ks, ":", color="grey", label="linear")
        ax.set(xlabel="K (stages)", ylabel="parallel-epoch speed-up over 1-thread serial", ylim=(0, 8))
        ax.legend(fontsize=7)
        made.append(_save(fig, folder / f"{stem}-speedup.png"))
    return made


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A tight bounding box grows the image to hold labels longer than the axes leave room for
    # (row names run to ~80 characters).
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def image(alt: str, plot: Path, page: Path) -> str:
    """A Markdown image of ``plot`` as ``page`` links it (the two pages sit in different folders)."""
    return f"![{alt}]({Path(os.path.relpath(plot, page.parent)).as_posix()})"


def table(records: list[dict]) -> list[str]:
    base, peer, target = baseline(records), best_peer(records), accuracy_target(records)
    peer_note = ("" if peer is None else
                 f" Best peer: **{peer['name']}**, the fastest of DDP and the pipelines (exact gradients on the same devices); "
                 "`vs best peer` is the row's run speed-up over the peer's.")
    lines = [
        f"Speed-ups are against **{base['name']}**.{peer_note} Parallel-epoch speed-up: the baseline's median epoch time over "
        "the median parallel-phase epoch, both over the rounds of the row's parallel epochs (the host's speed drifts from "
        f"round to round; over all of the baseline's epochs where they spread more than {NOISY}×; a row of another invocation against the backprop of its own); run speed-up: training time of the whole budget. Time to accuracy: training "
        f"time until the end of the first epoch at or above {target:.2f}% (the baseline's final accuracy minus one point; "
        "— where a row never got there), and its speed-up over the baseline's. Bytes sent count the "
        "messages between stages; DDP's gradient all-reduce (about 2(K-1)/K × the parameters' bytes per step) is not "
        "counted there. Timing spread: the largest ratio of two epoch times within one phase of a row; above "
        f"{NOISY}× the machine's speed changed under that row (shared host) and its speed-ups are not to be trusted.", "",
        "| configuration | final test acc (%) | Δ acc vs baseline | training time (s) | wall time (s) | parallel-epoch speed-up "
        f"| run speed-up | vs best peer | time to {target:.2f}% (s) | bytes sent | aux. memory | peak memory | timing spread |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        par = phase_speedup(base, r, "parallel")
        reach = time_to(r, target)
        base_reach = time_to(against(base, r), target)
        reach_cell = "—" if reach is None else f"{reach:.0f}" + ("" if base_reach is None else f" ({base_reach / reach:.2f}x)")
        # Each against the backprop of its own invocation: the same as their time ratio when they share one.
        peer_cell = "" if peer is None else f"{run_speedup(base, r) / run_speedup(base, peer):.2f}x"
        lines.append(
            f"| {r['name']} | {r['final_test_acc']:.2f} | {r['final_test_acc'] - base['final_test_acc']:+.2f} | {r['train_time_s']:.0f} | "
            f"{r['wall_time_s']:.0f} | {'' if par is None else f'{par:.2f}x'} | {run_speedup(base, r):.2f}x{apart(r, base)} | "
            f"{peer_cell} | {reach_cell} | "
            f"{r['bytes_sent'] / 1e9:.2f} GB | {sum(r['aux_bytes_per_cut'] or [0]) / 1e6:.1f} MB | {r['peak_rss_mb']:.0f} MB | "
            f"{spread(r):.2f}×{' (noisy)' if spread(r) > NOISY else ''} |"
        )
    return lines


def ceilings(folder: Path) -> list[str]:
    """The speed-limit tables that ``bench/ceiling.py`` wrote beside the records, one subsection each."""
    tables = [path.read_text().strip().splitlines() for path in sorted(folder.glob("ceiling-*.md"))]
    if not tables:
        return []
    lines = ["## Speed limit: the method's compute without its overhead (`bench/ceiling.py`)", "",
             "What the cut's stages cost when they step at once with nothing else to do, against backprop on the same cores: "
             "no implementation of layer-parallel training or its pipeline beats these bounds with this cut.", ""]
    for heading, *body in tables:
        lines += ["##" + heading, *body, ""]
    return lines


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
    micro-batches, placement and link (two machines of half the devices each, as ``--slow-link``
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
                    placement=config.get("placement", "stages-together"), **on_link)
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


def planner_check(records: list[dict], folder: Path) -> list[str]:
    """The planner's predictions against an invocation's measured speed-ups (:func:`planned_rows`), as a table."""
    name, planned = planned_rows(records, folder)
    if not planned:
        return []
    link = records[0].get("slow_link")
    return [f"**`lpfast plan` against the measurement** (the block and cut costs of `{name}`, measured on one core of this machine, "
            "put through the planner's cost model for each row's layout and cut"
            + (f" on two machines joined by the {link} link" if link else "") + "; speed-ups over the baseline; the planner leaves data "
            "loading and evaluation out):", "",
            "| row | cut | what | predicted | measured | error |", "|---|---|---|---|---|---|",
            *(f"| {p.name} | {p.layout} | {p.what} | {p.predicted:.2f}x | {p.measured:.2f}x | {100 * p.error:+.0f}% |" for p in planned), ""]


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


def link_sweep(groups: dict) -> list[str]:
    """The ``devices`` rows of each model at every link rate measured, one table per model."""
    lines = []
    for (model, dataset), by_link in link_sweeps(groups).items():
        lines += [f"### The link sweep: {model} on {dataset}", "",
                  "Each rate is one interleaved `lpfast bench devices ... --slow-link RATE` invocation (its own section below; "
                  "loopback: the unshaped `devices` section); speed-ups are per epoch over backprop on one device in the same "
                  "invocation. Messages: the pipelined rows' bytes per step each way (measured). Compute : message is a stage's "
                  "step with free messages (the loopback row's epoch over its steps) over the time those bytes take at the rate. "
                  f"A GPU {GPU_OVER_CORE[0]}–{GPU_OVER_CORE[1]}× faster than one of these cores (assumed, see `GPU_OVER_CORE` in "
                  "`bench/report.py`) sees the same ratio on a link that much faster: the last column.", "",
                  "| link | 3.2 MB message (ms) | " + " | ".join(label for _, label in LINK_ROWS)
                  + " | messages per step, each way (pipelined / + DS) | compute : message (pipelined / + DS) | GPU-cluster link, same ratio |",
                  "|---|---|" + "---|" * len(LINK_ROWS) + "---|---|---|"]
        for rate in link_rates(by_link):
            lines.append(f"| {rate.link} | {'—' if rate.message_ms is None else f'{rate.message_ms:.1f}'} | "
                         + " | ".join(speedup_cells(rate.speedups, [kind for kind, _ in LINK_ROWS]))
                         + f" | {' / '.join(rate.sizes)} | {' / '.join(rate.ratios)} | {rate.cluster} |")
        lines.append("")
    return lines


TARGETS = {"cifar10": 0.3, "cifar100": 0.5}  # issue 18: points under backprop allowed at >= half the epochs parallel


def target_allowance(kind: str, dataset: str) -> float | None:
    """Points under backprop's final accuracy issue 18 allows a campaign row of ``kind`` (None: it
    has no target): penalty or AL with at least half of the epochs parallel, at any cut; DS 0.2
    more; the auxiliary networks 1 point."""
    method, *modifiers = kind.split("+")
    share = next((float(m[5:]) for m in modifiers if m.startswith("share")), 0.5)  # the campaign's default: half
    rest = {m for m in modifiers if not m.startswith(("share", "cut", "aw", "ad"))}  # ψ's width and depth: still aux networks
    if method not in ("penalty", "al") or share < 0.5 or dataset not in TARGETS:
        return None
    if "net" in rest:
        return 1.0 if rest == {"net"} else None
    return TARGETS[dataset] + 0.2 if rest <= {"pipe", "ds"} and "ds" in rest else TARGETS[dataset] if rest <= {"pipe"} else None


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


def share_speedup(groups: dict, model: str, dataset: str, parallel_row: str):
    """Speed-up over one device of a run with a parallel share s, from the latest ``devices``
    invocation's measured per-epoch speed-ups: ρ_par of the parallel phase alone (the row
    ``parallel_row``, all epochs parallel) and ρ_ser of the 1F1B pipeline (the serial phase):
    1 / (s/ρ_par + (1-s)/ρ_ser). None without such an invocation."""
    rho = device_speedups(groups, model, dataset)
    if not {parallel_row, "1f1b"} <= rho.keys():
        return None
    return lambda share: 1.0 / (share / rho[parallel_row] + (1.0 - share) / rho["1f1b"])


# The share curves: penalty rows of one kind of λ at several parallel shares, and the devices row
# whose parallel phase gives their speed-ups.
SHARE_CURVES = {"store": ("stored λ", "penalty+share1"), "pipelined": ("pipelined λ", "penalty+pipe+share1")}


def share_curves(loaded: list, backprop: dict, groups: dict) -> list[str]:
    """Accuracy against the parallel share, per model, data set, budget and kind of λ, gathered from
    every table of the campaign (a share may run in an invocation of its own), against ``backprop``
    (the campaign's backprop row per model, data set and budget) once it has finished, with each
    share's speed-up over one device."""
    curves: dict = {}
    for r in finished(loaded):
        aux, kind = r["config"].get("aux", "store"), row_kind(r)
        if r["config"]["method"] == "penalty" and aux in SHARE_CURVES and "+ds" not in kind and "+seed" not in kind:
            curves.setdefault((r["model"], r["dataset"], r["epoch_budget"], aux), []).append(r)
    lines = []
    for (model, dataset, epochs, aux), rows in sorted(curves.items()):
        ref = backprop.get((model, dataset, epochs))
        if ref is None or len(ref["test_acc"]) < epochs:
            continue
        what, parallel_row = SHARE_CURVES[aux]
        speedup = share_speedup(groups, model, dataset, parallel_row)
        lines += [f"### Accuracy against the parallel share: {model} on {dataset}, {epochs} epochs, {what}", "",
                  f"Speed-ups over one device from the `devices` invocation's rows `serial-1`, `{parallel_row}` and `1f1b`"
                  + ("" if speedup is not None else " (not measured yet)") + ".", "",
                  "| parallel share | row | final test acc (%) | Δ vs backprop | speed-up over one device |", "|---|---|---|---|---|"]
        for share, r in sorted(((r["config"]["parallel_epochs"] / epochs, r) for r in rows), key=lambda item: item[0]):
            lines.append(f"| {share:.2f} | {row_kind(r)} | {r['final_test_acc']:.2f} | {r['final_test_acc'] - ref['final_test_acc']:+.2f} | "
                         f"{'' if speedup is None else f'{speedup(share):.2f}×'} |")
        lines.append("")
    return lines


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


def real_time_to_accuracy(composed: list[Composed], plot_dir: Path, page: Path) -> list[str]:
    """A table per real budget of each row's speed-up over one device until backprop's accuracy
    less one point at every link rate, the fastest at each rate in bold, and a plot of the rows that
    reach the target, accuracy against composed time, one panel per rate."""
    lines = []
    for c in composed:
        speedups = [{link: c.speedup(row, link) for link in c.links} for row in c.rows]
        best = {link: max((s[link] for s in speedups if s[link] is not None), default=None) for link in c.links}
        plot = real_time_to_accuracy_plot(c, plot_dir)
        lines += [f"### Time to accuracy: {c.model} on {c.dataset}, {c.epochs} epochs", "",
                  f"Speed-up over one device in the time until the end of the first epoch at or above {c.target:.2f}% (backprop's "
                  f"final {c.ref['final_test_acc']:.2f}% minus one point; backprop gets there after {c.reach} epochs): each row's epochs "
                  "to the target at the real budget, each weighted by its phase's per-epoch time on the same devices (1 / its speed-up "
                  "over one device in the `devices` invocation at that link rate). Composed from two measurements, not timed whole: "
                  "the real-budget rows ran one after another on a loaded host. Blank: a devices row it needs was not run at that rate.", "",
                  "| row | epochs to the target | " + " | ".join(c.links) + " |", "|---|---|" + "---|" * len(c.links)]
        for row, speedup in zip(c.rows, speedups):
            cells = [f"{speedup[link]:.2f}×" if speedup[link] is not None else ("—" if row.reached is None else "") for link in c.links]
            cells = [f"**{cell}**" if speedup[link] is not None and speedup[link] == best[link] else cell
                     for link, cell in zip(c.links, cells)]
            lines.append(f"| {row.name}{row.timed_by} | {row.reached or '— (never)'} | " + " | ".join(cells) + " |")
        lines += ["", image("time to accuracy", plot, page), ""]
    return lines


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
    return _save(fig, plot_dir / f"real-{c.model}-{c.dataset}-e{c.epochs}-time-to-accuracy{devices and '-' + devices.replace(' ', '-')}.png")


def real_tables(folder: Path) -> list[tuple[Path, list[dict]]]:
    """The real-budget campaign's tables ``real-<model>-<dataset>[-tag].json`` (``bench/real_budgets.sh``
    rewrites them after every epoch), each with its records."""
    return [(path, json.loads(path.read_text())["records"]) for path in sorted(folder.glob("real-*.json"))]


def seed_zero_backprop(loaded: list) -> dict[tuple[str, str, int], dict]:
    """The campaign's backprop row per model, data set and budget. An invocation added beside the
    campaign's (``--tag``) may have no backprop row of its own: it is set against this one."""
    return {(r["model"], r["dataset"], r["epoch_budget"]): r for _, records in loaded for r in records if row_kind(r) == "serial-K"}


def real_budgets(loaded: list, groups: dict, plot_dir: Path, page: Path) -> list[str]:
    """The real-budget campaign from its tables: each row's accuracy so far against backprop's at
    the same epoch, the seed-to-seed spread, the issue's targets, accuracy against the parallel
    share with each share's speed-up over one device, and the time to accuracy."""
    if not loaded:
        return []
    lines = ["## Real budgets: full training sets, tens of epochs", "",
             "The campaign of `bench/real_budgets.sh` (`lpfast bench real ... --order sequential --snapshot ...`): full training sets, "
             "one cosine schedule, batch 128, rows one after another, so their speeds are not compared here; the speed-ups of the "
             "parallel-share curve come from the per-epoch speed-ups over one device measured in the interleaved `devices` invocation "
             "of the same model and data set. A row still under way is compared with backprop at its own epoch count.", ""]
    backprop = seed_zero_backprop(loaded)
    for path, records in loaded:
        first = records[0]
        budget_epochs, dataset = first["epoch_budget"], first["dataset"]
        by_kind = {row_kind(r): r for r in records}
        base = by_kind.get("serial-K") or backprop.get((first["model"], dataset, budget_epochs))
        tag = path.stem.removeprefix(f"real-{first['model']}-{dataset}").lstrip("-")
        lines += [f"### {first['model']} on {dataset}, {budget(first)}{f' ({tag})' if tag else ''}", "",
                  f"Invocation {first['invocation']} (commit `{(first['git_commit'] or 'unknown')[:10]}`); table "
                  f"`bench/results/{path.name.replace('.json', '.md')}`.", "",
                  "| row | epochs | test acc (%) | Δ vs backprop at that epoch | acc after the parallel phase | last parallel-epoch violation | final train loss |",
                  "|---|---|---|---|---|---|---|"]
        for r in records:
            done = len(r["test_acc"])
            delta = ""
            if base is not None and r is not base and len(base["test_acc"]) >= done:
                delta = f"{r['test_acc'][-1] - base['test_acc'][done - 1]:+.2f}"
            parallel = [i for i, phase in enumerate(r["phase"]) if phase == "parallel"]
            after = f"{r['test_acc'][parallel[-1]]:.2f}% (epoch {parallel[-1] + 1})" if parallel else ""
            violation = next((v for v in reversed(r["violation"]) if v), None)
            lines.append(f"| {r['name']} | {done}/{budget_epochs} | {r['test_acc'][-1]:.2f} | {delta} | {after} | "
                         f"{'' if violation is None else ' '.join(f'{v:.3f}' for v in violation)} | {r['epochs'][-1]['train_loss']:.3f} |")
        lines.append("")
        done = {kind: r for kind, r in by_kind.items() if len(r["test_acc"]) == budget_epochs}
        if base is not None and len(base["test_acc"]) == budget_epochs:
            done.setdefault("serial-K", base)
        if "serial-K" in done and "serial-K+seed1" in done:
            a, b = done["serial-K"]["final_test_acc"], done["serial-K+seed1"]["final_test_acc"]
            lines += [f"Backprop's seed-to-seed spread at this budget: {a:.2f}% and {b:.2f}% ({abs(a - b):.2f} points).", ""]
        if "serial-K" in done and dataset in TARGETS:
            ref = done["serial-K"]["final_test_acc"]
            allowed = {kind: target_allowance(kind, dataset) for kind in done}
            checks = [(kind, r["final_test_acc"] - ref) for kind, r in done.items() if allowed[kind] is not None]
            if checks:
                lines += ["Against the targets (points under backprop's final accuracy): "
                          + "; ".join(f"{kind} {delta:+.2f} ({'met' if -delta <= allowed[kind] else 'not met'}: allowed {allowed[kind]:.1f})"
                                      for kind, delta in checks) + ".", ""]
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in records:
            ax.plot(range(1, len(r["test_acc"]) + 1), r["test_acc"], marker=".", label=r["name"])
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{first['model']} on {dataset}: real budget")
        ax.legend(fontsize=6)
        lines += [image("real budget", _save(fig, plot_dir / f"{path.stem}-accuracy.png"), page), ""]
    return lines + share_curves(loaded, backprop, groups) + real_time_to_accuracy(time_to_accuracy(loaded, backprop, groups),
                                                                                  plot_dir, page)


def invocation_section(heading: str, records: list[dict], notes: list[str], plots_made: list[Path], page: Path) -> list[str]:
    """One section of the full page: the machine, the invocations and their commands, the table,
    the findings, ``notes`` (the planner's check) and the plots."""
    first = records[0]
    machine = first["machine"]
    return [f"## {heading}", "",
            f"Machine: {machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}. "
            + " ".join(f"Invocation {invocation} (commit `{(rows[0]['git_commit'] or 'unknown')[:10]}`) ran "
                       + ", ".join(f"*{r['name']}*" for r in rows) + "." for invocation, rows in invocations(records))
            + " Rows of one invocation ran interleaved, one epoch at a time (`--pause-after 1`/`--resume`), as these commands "
            "from the repository root:", "",
            "```", *(r["command"] for r in records), "```", "", *link_line(first), *table(records), "", *findings(records), "",
            *notes, *(image(plot.name, plot, page) for plot in plots_made), ""]


def four_device_sections(four: dict[str, list[dict]], folder: Path, page: Path) -> list[str]:
    """The four-device records (``bench/four_devices.sh``), one section per invocation: the checks of
    the device model on two devices, then the rows on four."""
    if not four:
        return []
    lines = ["## Four devices: the invocations", "",
             "From `bench/results/four-devices/records.jsonl` (`bench/four_devices.sh`): each worker a device of a share of a core. "
             "Each invocation tests another device model or layout, so each has a section of its own, set against its own "
             "backprop on one device. The invocations, from the repository root (with `--out bench/results/four-devices`):", "",
             "```", *(bench_command(rows, [row_kind(r) for r in rows]) for rows in four.values()), "```", ""]
    for invocation, rows in four.items():
        first = rows[0]
        share = f"{first['device_share']:g} of a core" if first.get("device_share") else "a whole core"
        lines += invocation_section(f"{first['benchmark']} on {max(r['workers'] for r in rows)} devices of {share} each: {first['model']} "
                                    f"on {first['dataset']}, {budget(first)} (invocation {invocation})", rows,
                                    planner_check(rows, folder), [], page)
    return lines


def full_page(groups: dict, four: dict, loaded: list, folder: Path, plot_dir: Path, page: Path, short: Path) -> list[str]:
    """Every table: the summary of the grid, the link sweep, the real-budget campaign, one section per
    (benchmark, model, data set), the four-device invocations and the speed limits."""
    lines = ["# lpfast benchmark results: every table", "",
             f"The tables behind [the results page]({relative(short, page)}), made by `bench/report.py`; the history of the "
             f"measurements, in the order they were made: [narrative.md]({relative(folder / 'narrative.md', page)}). Each section "
             "of `records.jsonl` is one invocation of `lpfast bench`, with any rows re-run later (`--rows`) taken from the re-run. "
             "To reproduce every section on this kind of machine (the `--slow-link` one as root), from the repository root:", "",
             "```", *(command for records in groups.values() for command in section_commands(records)), "python bench/report.py", "```", "",
             *summary(groups), *link_sweep(groups), *real_budgets(loaded, groups, plot_dir, page)]
    for key, records in groups.items():
        if key[0] == "real":
            continue  # the real-budgets section above shows the campaign, from its tables
        lines += invocation_section(f"{key[0]}: {key[1]} on {key[2]}, {budget(records[0])}", records,
                                    planner_check(records, folder), plots(key, records, plot_dir), page)
    return lines + four_device_sections(four, folder, page) + ceilings(folder)


def relative(target: Path, page: Path) -> str:
    """The link from ``page`` to ``target``."""
    return Path(os.path.relpath(target, page.parent)).as_posix()


# ---------------------------------------------------------------------------------------------
# The short page: one section per question, each with its headline table, its plot and its command.

def parallel_share(r: dict) -> float:
    return (r["config"].get("parallel_epochs") or 0) / r["epoch_budget"]


def stages(r: dict) -> int:
    """The stages a run trained with (a real-budget row of K stages may run them in one process; a
    record without the option is one of the campaign's K=2 rows)."""
    return r["config"].get("stages") or 2


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
    if share is not None:
        words.append("every epoch parallel" if share == 1 else "half of the epochs parallel" if share == 0.5
                     else f"{share:.2f} of the epochs parallel")
    return ", ".join(words)


def model_on(model: str, dataset: str, epochs: int | None = None) -> str:
    return f"{model}, {dataset}" + ("" if epochs is None else f", {epochs} epochs")


def invocation_date(invocation: str) -> str | None:
    """The date of an invocation stamp ``YYYYMMDD-HHMMSS`` (None for any other)."""
    return f"{invocation[:4]}-{invocation[4:6]}-{invocation[6:8]}" if re.fullmatch(r"\d{8}-\d{6}", invocation) else None


def latest_date(groups: dict, four: dict, loaded: list) -> str:
    """The date of the newest invocation behind the page."""
    stamps = [r["invocation"] for records in groups.values() for r in records] + list(four)
    stamps += [r["invocation"] for _, records in loaded for r in records]
    dates = [d for d in map(invocation_date, stamps) if d]
    return max(dates) if dates else "undated"


# The real-budget rows of the accuracy table, K=2: lpfast's default, its variants and the paper's stored λ.
ACCURACY_ROWS = ("penalty+pipe", "penalty+pipe+share1", "penalty+pipe+ds+cut3-6", "penalty+pipe+ds+cut3-6+share1", "penalty", "al",
                 "penalty+net")


class Budget(NamedTuple):
    """What the campaign measured at one model, data set and budget: backprop's seeds and the other finished runs."""
    model: str
    dataset: str
    epochs: int
    seeds: list[float]  # backprop's final accuracy, seed 0 first
    runs: dict[str, dict]  # the finished K=2 runs by canonical kind

    @property
    def backprop(self) -> float:
        """Backprop's final accuracy: the mean over its seeds."""
        return statistics.mean(self.seeds)

    def delta(self, kind: str) -> float | None:
        r = self.runs.get(canonical(kind))
        return None if r is None else r["final_test_acc"] - self.backprop


def budgets(loaded: list) -> list[Budget]:
    """Every model, data set and budget of the campaign whose backprop finished, smallest budget first."""
    seeds: dict = defaultdict(dict)
    runs: dict = defaultdict(dict)
    for r in finished(loaded):
        key, kind = (r["model"], r["dataset"], r["epoch_budget"]), row_kind(r)
        if kind.startswith("serial-K"):
            seeds[key][kind] = r["final_test_acc"]
        elif stages(r) == 2:
            runs[key][canonical(kind)] = r
    return [Budget(*key, [seeds[key][kind] for kind in sorted(seeds[key])], runs[key])
            for key in sorted(seeds, key=lambda key: (key[2], key[1], key[0]))]


def seeds_cell(b: Budget) -> str:
    if len(b.seeds) == 1:
        return f"{b.backprop:.2f} (one seed)"
    return f"**{b.backprop:.2f}** (mean of {len(b.seeds)} seeds: {', '.join(f'{a:.2f}' for a in b.seeds)})"


def row_label(kind: str, columns: list[Budget]) -> str:
    """A row of the accuracy table in words, its parallel share from the first run of it."""
    run = next(b.runs[canonical(kind)] for b in columns if canonical(kind) in b.runs)
    return describe(kind, parallel_share(run))


def accuracy_section(columns: list[Budget], plot_dir: Path, page: Path) -> list[str]:
    if not columns:
        return ["## Will it be as accurate? Accuracy at real budgets", "", "Not measured yet.", ""]
    kinds = [kind for kind in ACCURACY_ROWS if any(b.delta(kind) is not None for b in columns)]
    lines = ["## Will it be as accurate? Accuracy at real budgets", "",
             "Full training sets, K=2 stages, one cosine schedule, batch 128: final test accuracy (%) and its difference to "
             "backprop's, the mean of backprop's seeds where it ran more than one (a seed moves backprop by the spread shown). "
             "In the plot, red: further under backprop than the issue's target allows ("
             + ", ".join(f"{points} point on {dataset}" for dataset, points in TARGETS.items()) + "); grey: backprop's seeds.", "",
             "| run | " + " | ".join(model_on(b.model, b.dataset, b.epochs) for b in columns) + " |", "|---|" + "---|" * len(columns),
             "| backprop | " + " | ".join(seeds_cell(b) for b in columns) + " |"]
    for kind in kinds:
        cells = [("" if b.delta(kind) is None else f"{b.runs[canonical(kind)]['final_test_acc']:.2f} ({b.delta(kind):+.2f})")
                 for b in columns]
        lines.append(f"| {row_label(kind, columns)} | " + " | ".join(cells) + " |")
    return lines + ["", image("accuracy against backprop", accuracy_plot(columns, kinds, plot_dir), page), "",
                    "```", "bash bench/real_budgets.sh   # the campaign: many hours on 2 cores; stops and continues anywhere",
                    "```", ""]


def accuracy_plot(columns: list[Budget], kinds: list[str], plot_dir: Path) -> Path:
    """Each row's difference to backprop's mean, one panel per budget, backprop's seeds as a band."""
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 0.4 * len(kinds) + 1.5), sharey=True, squeeze=False)
    for ax, b in zip(axes[0], columns):
        deltas = [b.delta(kind) for kind in kinds]
        allowed = TARGETS.get(b.dataset, float("inf"))
        ax.barh(range(len(kinds)), [d or 0 for d in deltas], color=["C3" if d is not None and -d > allowed else "C0" for d in deltas])
        ax.axvspan(min(b.seeds) - b.backprop, max(b.seeds) - b.backprop, color="grey", alpha=0.3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set(title=model_on(b.model, b.dataset, b.epochs), xlabel="Δ vs backprop's mean (points)")
        ax.title.set_fontsize(8)
    axes[0][0].set_yticks(range(len(kinds)), [row_label(kind, columns) for kind in kinds], fontsize=7)
    axes[0][0].invert_yaxis()
    return _save(fig, plot_dir / "page-accuracy.png")


def many_stage_runs(loaded: list) -> list[dict]:
    """The campaign's runs with more than two stages, finished or not."""
    return [r for _, records in loaded for r in records if stages(r) > 2]


def backprop_at(loaded: list, r: dict) -> float | None:
    """Backprop's (seed 0) test accuracy at the run's last epoch, at the same model, data set and budget."""
    ref = seed_zero_backprop(loaded).get((r["model"], r["dataset"], r["epoch_budget"]))
    return ref["test_acc"][len(r["test_acc"]) - 1] if ref and len(ref["test_acc"]) >= len(r["test_acc"]) else None


# Issue 36's targets: points under backprop's final accuracy (the mean of its seeds) allowed per model, data set and K.
MANY_STAGE_TARGETS = {("resnet56", "cifar10", 4): 0.3, ("resnet56", "cifar10", 8): 0.5, ("resnet20", "cifar100", 4): 0.5}


def many_stages_section(loaded: list, folder: Path, plot_dir: Path, page: Path) -> list[str]:
    runs = many_stage_runs(loaded)
    lines = ["## Many stages (K = 4, 8)", ""]
    missing = [k for k in (4, 8) if not any(stages(r) == k for r in runs)]
    if not runs:
        return lines + ["Not measured yet.", ""] + published_many_stages(folder)
    by_budget = {(b.model, b.dataset, b.epochs): b for b in budgets(loaded)}
    lines += ["Full training sets, every stage of a run in one process (accuracy is the measure), beside backprop (K=1) and "
              "the K=2 runs of the same budget. A finished run is set against the mean of backprop's seeds, a run still under way "
              "against backprop (seed 0) at its own epoch: **partial numbers, not final ones**.", "",
              "| run | K | epochs | test acc (%) | backprop | Δ | state |", "|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["model"], r["dataset"], r["epoch_budget"]) for r in runs):
        b, name = by_budget.get(key), model_on(key[0], key[1])
        if b is not None:
            lines.append(f"| {name}: backprop | 1 | {key[2]}/{key[2]} | {seeds_cell(b)} | | | finished |")
            lines += [f"| {name}: {describe(kind, parallel_share(r))} | 2 | {key[2]}/{key[2]} | {r['final_test_acc']:.2f} | {b.backprop:.2f} | "
                      f"{r['final_test_acc'] - b.backprop:+.2f} | finished |" for kind, r in b.runs.items() if r["config"].get("aux") == "pipelined"]
        for r in (r for r in runs if (r["model"], r["dataset"], r["epoch_budget"]) == key):
            done, last = len(r["test_acc"]), r["test_acc"][-1]
            ref = b.backprop if done == r["epoch_budget"] and b is not None else backprop_at(loaded, r)
            target = MANY_STAGE_TARGETS.get((r["model"], r["dataset"], stages(r)))
            if done < r["epoch_budget"]:
                state = f"**in progress ({done} of {r['epoch_budget']} epochs)**"
            elif target is None or ref is None:
                state = "finished"
            else:
                state = f"finished: {'within' if last - ref >= -target else '**short of**'} the target (−{target:g})"
            lines.append(f"| {name}: {describe(row_kind(r), parallel_share(r))} | {stages(r)} | "
                         f"{done}/{r['epoch_budget']} | {last:.2f} | " + ("| |" if ref is None else f"{ref:.2f} | {last - ref:+.2f} |")
                         + f" {state} |")
    lines += [""] + ([f"K={' and K='.join(map(str, missing))}: not started yet.", ""] if missing else [])
    return lines + [image("many stages", many_stages_plot(loaded, runs, plot_dir), page), "", *published_many_stages(folder),
                    "```", "bash bench/real_budgets.sh   # its many-* invocations", "```", ""]


def published_many_stages(folder: Path) -> list[str]:
    """Published accuracies of other delayed-gradient methods at several stages, each against its
    own paper's backprop (``published-many-stages.json``: each number with the text it was read from)."""
    path = folder / "published-many-stages.json"
    if not path.exists():
        return []
    rows = sorted(json.loads(path.read_text()), key=lambda e: (e["model"], e["stages"], e["name"]))
    return [f"Published, for comparison (`{path.name}` holds each number's source and the text it was read from): other "
            "delayed-gradient methods against their own backprop, mostly at 300 epochs with a step schedule, where a gap closes more "
            "than in our 30 cosine epochs.", "",
            "| method | model, data | K | epochs | backprop | method | Δ |", "|---|---|---|---|---|---|---|",
            *(f"| {e['name']} | {e['model']}, {e['dataset']} | {e['stages']} | {e['epochs'] or '?'} | {e['backprop_acc']:.2f} | "
              f"{e['method_acc']:.2f} | {e['method_acc'] - e['backprop_acc']:+.2f} |" for e in rows), ""]


def many_stages_plot(loaded: list, runs: list[dict], plot_dir: Path) -> Path:
    """Test accuracy per epoch of the many-stage runs and of backprop at the same budgets."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    backprop = seed_zero_backprop(loaded)
    for key in dict.fromkeys((r["model"], r["dataset"], r["epoch_budget"]) for r in runs):
        if key in backprop:
            acc = backprop[key]["test_acc"]
            ax.plot(range(1, len(acc) + 1), acc, color="grey", label=f"backprop, {model_on(*key)}")
    for r in runs:
        ax.plot(range(1, len(r["test_acc"]) + 1), r["test_acc"], marker="o", label=f"K={stages(r)}, {model_on(r['model'], r['dataset'])}")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="many stages against backprop")
    ax.legend(fontsize=7)
    return _save(fig, plot_dir / "page-many-stages.png")


# The short page's speed columns: per row family, the fastest of its rows at any cut and parallel share.
SPEED_COLUMNS = (("ddp", "DDP"), ("gpipe", "GPipe"), ("1f1b", "1F1B"), ("penalty+pipe", "lpfast, pipelined λ"),
                 ("penalty+pipe+ds", "lpfast, pipelined λ + DS"))


def family(kind: str) -> str:
    """A row kind without its cut and parallel share: the rows one column of the speed table picks from."""
    return canonical("+".join(m for m in kind.split("+") if not m.startswith(("cut", "share"))))


def fastest(speedups: dict[str, float], kind: str) -> tuple[str, float] | None:
    """The fastest row of ``kind``'s family: its kind and speed-up (None: none ran)."""
    rows = [(k, s) for k, s in speedups.items() if family(k) == family(kind)]
    return max(rows, key=lambda row: row[1]) if rows else None


def fastest_cell(speedups: dict[str, float], kind: str) -> str:
    best = fastest(speedups, kind)
    if best is None:
        return ""
    cut = [m[3:].replace("-", "+") for m in best[0].split("+") if m.startswith("cut")]
    return f"{best[1]:.2f}×" + (f" (cut {cut[0]})" if cut else "")


def to_accuracy(composed: list[Composed], model: str, dataset: str, link: str = "loopback") -> tuple[Composed, float, ComposedRow] | None:
    """At the smallest real budget of a model and data set: DDP's speed-up over one device until
    backprop's accuracy less one point, and lpfast's fastest row there (None: not composed)."""
    c = next((c for c in sorted(composed, key=lambda c: c.epochs) if (c.model, c.dataset) == (model, dataset) and link in c.links), None)
    ddp = None if c is None else next((row for row in c.rows if row.kind == "ddp"), None)
    ours = [] if c is None else [row for row in c.rows if row.run is not None and c.speedup(row, link) is not None]
    if ddp is None or c.speedup(ddp, link) is None or not ours:
        return None
    return c, c.speedup(ddp, link), max(ours, key=lambda row: c.speedup(row, link))


def loopback_devices(groups: dict) -> dict[tuple[str, str], dict[str, float]]:
    """Per model and data set, the per-epoch speed-ups of the unshaped ``devices`` invocation."""
    return {(model, dataset): device_speedups(groups, model, dataset) for bench, model, dataset in groups if bench == "devices"}


def speed_section(groups: dict, composed: list[Composed], plot_dir: Path, page: Path) -> list[str]:
    devices = {key: speedups for key, speedups in loopback_devices(groups).items() if speedups}
    lines = ["## How much faster than DDP? Two equal devices", ""]
    if not devices:
        return lines + ["Not measured yet.", ""]
    lines += ["K=2 devices of one CPU core each (as one GPU is one), on loopback, every peer on the same devices; speed-ups over "
              "backprop on one device, the paper's baseline. Per epoch: interleaved `lpfast bench devices` runs on a subset "
              "(lpfast: its parallel epoch; each column the fastest of its rows at any cut). Time to accuracy: until backprop's "
              "final accuracy less one point at the real budget, composed from the real runs' epochs and these per-epoch speeds "
              "(each model's smallest budget; lpfast: its fastest run).", "",
              "| model, data | " + " | ".join(f"{label} per epoch" for _, label in SPEED_COLUMNS)
              + " | time to accuracy: DDP | time to accuracy: lpfast |", "|---|" + "---|" * (len(SPEED_COLUMNS) + 2)]
    for (model, dataset), speedups in devices.items():
        reached = to_accuracy(composed, model, dataset)
        tta = ["", ""] if reached is None else [
            f"{reached[1]:.2f}× ({reached[0].epochs} epochs)",
            f"{reached[0].speedup(reached[2], 'loopback'):.2f}× ({describe(reached[2].kind, parallel_share(reached[2].run))})"]
        lines.append(f"| {model_on(model, dataset)} | " + " | ".join(fastest_cell(speedups, kind) for kind, _ in SPEED_COLUMNS)
                     + f" | {' | '.join(tta)} |")
    plotted = next((c for c in composed if to_accuracy([c], c.model, c.dataset)), None)
    commands = [command for model, dataset in devices for command in section_commands(groups[("devices", model, dataset)])]
    return lines + ["", *([image("time to accuracy", real_time_to_accuracy_plot(plotted, plot_dir), page), ""] if plotted else []),
                    "```", *commands, "```", ""]


# The link sweep's columns on the short page.
PAGE_LINK_ROWS = ("ddp", "1f1b", "penalty+pipe+share1", "penalty+pipe+ds+share1")


def link_section(groups: dict, plot_dir: Path, page: Path) -> list[str]:
    sweeps = {key: link_rates(by_link) for key, by_link in link_sweeps(groups).items()}
    lines = ["## At what link does it pay? The link sweep", ""]
    if not sweeps:
        return lines + ["Not measured yet.", ""]
    labels = dict(LINK_ROWS)
    lines += ["The K=2 devices as two hosts joined by a link shaped to each rate (`--slow-link`): speed-up per epoch over backprop "
              f"on one device in the same invocation. A GPU {GPU_OVER_CORE[0]}–{GPU_OVER_CORE[1]}× faster than one of these cores "
              "(an assumption) sees the same ratio of compute to message time on a link that much faster: the last column.", "",
              "| model, data | link | " + " | ".join(labels[kind] for kind in PAGE_LINK_ROWS) + " | GPU-cluster link, same ratio |",
              "|---|---|" + "---|" * len(PAGE_LINK_ROWS) + "---|"]
    for (model, dataset), rates in sweeps.items():
        for rate in rates:
            cells = speedup_cells(rate.speedups, PAGE_LINK_ROWS)
            lines.append(f"| {model_on(model, dataset)} | {rate.link} | " + " | ".join(cells) + f" | {rate.cluster} |")
    commands = [command for by_link in link_sweeps(groups).values() for link, records in by_link.items() if link != "loopback"
                for command in section_commands(records)]
    return lines + ["", image("link sweep", link_plot(sweeps, plot_dir), page), "",
                    "```", "# as root: each rate's two hosts are network namespaces joined by a shaped veth pair", *commands, "```", ""]


def link_plot(sweeps: dict[tuple[str, str], list[LinkRate]], plot_dir: Path) -> Path:
    """Per-epoch speed-up over one device against the link rate, one panel per model."""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.5 * len(sweeps), 3.5), sharey=True, squeeze=False)
    labels = dict(LINK_ROWS)
    for ax, ((model, dataset), rates) in zip(axes[0], sweeps.items()):
        for kind in PAGE_LINK_ROWS:
            points = [(i, rate.speedups[kind]) for i, rate in enumerate(rates) if kind in rate.speedups]
            if points:
                ax.plot(*zip(*points), marker="o", label=labels[kind])
        ax.axhline(1, color="grey", linestyle=":")
        ax.set_xticks(range(len(rates)), [rate.link for rate in rates])
        ax.set(title=model_on(model, dataset), xlabel="link", ylabel="speed-up per epoch over one device")
        ax.legend(fontsize=7)
    return _save(fig, plot_dir / "page-link-sweep.png")


def lpfast_lead(rate: LinkRate) -> tuple[float, float] | None:
    """lpfast's fastest pipelined row and DDP at a rate, where lpfast is ahead."""
    ours = max((rate.speedups[kind] for kind in ("penalty+pipe+share1", "penalty+pipe+ds+share1") if kind in rate.speedups), default=None)
    ddp = rate.speedups.get("ddp")
    return (ours, ddp) if ours is not None and ddp is not None and ours > ddp else None


# What bench/four_devices.sh measures: each model at each rate.
FOUR_DEVICE_PLAN = tuple((model, link) for model in ("resnet20", "wrn_16_4") for link in ("loopback", "1gbit", "100mbit"))


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


def four_device_headlines(four: dict[str, list[dict]]) -> dict[tuple[str, str, str], list[dict]]:
    """The latest invocation on four devices or more per model, data set and link rate, each model's
    fastest link first."""
    latest = {}
    for rows in four.values():
        if max(r["workers"] for r in rows) >= 4:
            latest[(rows[0]["model"], rows[0]["dataset"], rows[0].get("slow_link") or "loopback")] = rows
    return dict(sorted(latest.items(), key=lambda item: (item[0][:2], -(link_bytes_per_s(item[0][2].replace("loopback", "none")) or float("inf")))))


def device_model_check(four: dict[str, list[dict]]) -> tuple[list[dict], list[dict]] | None:
    """The latest two-device invocations on devices of a share of a core and on whole cores."""
    two = [rows for rows in four.values() if max(r["workers"] for r in rows) == 2]
    shared = [rows for rows in two if rows[0].get("device_share")]
    whole = [rows for rows in two if not rows[0].get("device_share")]
    return (shared[-1], whole[-1]) if shared and whole else None


def overlap_lines(folder: Path) -> list[str]:
    """``bench/overlap.py``'s profile of one stages × replicas step: when each stage's all-reduce
    leaves against its backward, and its bytes against DDP's."""
    lines = []
    for path in sorted(folder.glob("overlap-*.json")):
        profile = json.loads(path.read_text())
        first_replica = {rank["stage"]: rank for rank in profile["ranks"] if rank["replica"] == 0}
        stages_said = [f"stage {stage}: {len(rank['allreduce_start_ms'])} bucket(s), the first leaving "
                       f"{rank['backward_end_ms'] - rank['allreduce_start_ms'][0]:.0f} ms before its backward ends, "
                       f"{rank['allreduce_bytes'] / rank['ddp_allreduce_bytes']:.2f}× DDP's bytes"
                       for stage, rank in sorted(first_replica.items())]
        lines += [f"Overlap (`{path.name}`, one step of {profile['model']}, batch {profile['batch']}): " + "; ".join(stages_said) + ".", ""]
    return lines


def four_device_time_to_accuracy(heads: dict[tuple[str, str, str], list[dict]], loaded: list) -> list[Composed]:
    """Time to accuracy on four devices, composed as on two (:func:`time_to_accuracy`), per model and
    data set with a finished backprop run at the campaign's smallest budget, one column per link
    rate: the exact peers on backprop's curve; an lpfast row of K stages (× D replicas) on the curve
    of the finished real-budget run of K stages with its options (D replicas on the global batch
    compute the one-replica step, batch-norm statistics over a replica's share aside), each epoch at
    the row's per-epoch speed-up at that rate. Rows without such a run are left out."""
    backprop, done = seed_zero_backprop(loaded), finished(loaded)
    composed = []
    for model, dataset in sorted({(m, d) for m, d, _ in heads}):
        columns = {link: rows for (m, d, link), rows in heads.items() if (m, d) == (model, dataset)}
        epochs = min((e for m, d, e in backprop if (m, d) == (model, dataset)), default=None)
        if epochs is None or len(backprop[(model, dataset, epochs)]["test_acc"]) < epochs:
            continue
        ref = backprop[(model, dataset, epochs)]
        rho = {link: speedups_over_one_device(rows) for link, rows in columns.items()}
        target = ref["final_test_acc"] - 1.0
        reach = first_epoch_at(ref, target)
        rows = [ComposedRow(label, kind, "", reach, ref["test_acc"],
                            {link: composed_times(["serial"] * epochs, rho[link], kind, kind) for link in columns}, None)
                for kind, label in EXACT_PEERS.items() if any(kind in speedups for speedups in rho.values())]
        ours = {row_kind(r): r for rows in columns.values() for r in rows if row_kind(r).split("+")[0] in ("penalty", "al")}
        for kind, r in ours.items():
            k = r["workers"] // (r["config"].get("replicas") or 1)
            trained_as = canonical("+".join(m for m in kind.split("+") if not re.fullmatch(r"[kd]\d+|rt", m)))
            run = next((x for x in done if (x["model"], x["dataset"], x["epoch_budget"]) == (model, dataset, epochs)
                        and canonical(row_kind(x)) == trained_as and stages(x) == k and set(x["phase"]) == {"parallel"}), None)
            if run is not None:
                rows.append(ComposedRow(device_label(r), kind, f" (the {k}-stage run `{row_kind(run)}`)", first_epoch_at(run, target),
                                        run["test_acc"], {link: composed_times(run["phase"], rho[link], kind, kind) for link in columns}, run))
        composed.append(Composed(model, dataset, epochs, ref, target, reach, list(columns), rows))
    return composed


def four_device_time_to_accuracy_lines(c: Composed, plot_dir: Path, page: Path) -> list[str]:
    ddp = next((row for row in c.rows if row.kind == "ddp"), None)
    lines = [f"Time to accuracy, {model_on(c.model, c.dataset, c.epochs)}: speed-up over one device until backprop's final accuracy "
             f"less one point ({c.target:.2f}%, after {c.reach} epochs for backprop), composed as on two devices: each row's epochs "
             "to the target at the real budget (lpfast: its real-budget run of as many stages), each at its per-epoch speed "
             "above (in brackets: against DDP).", "",
             "| row | epochs to the target | " + " | ".join(c.links) + " |", "|---|---|" + "---|" * len(c.links)]
    for row in c.rows:
        cells = []
        for link in c.links:
            mine, theirs = c.speedup(row, link), None if ddp is None else c.speedup(ddp, link)
            cells.append("" if mine is None else f"{mine:.2f}×" + ("" if theirs is None else f" ({mine / theirs:.2f}×)"))
        lines.append(f"| {row.name}{row.timed_by} | {row.reached or '— (never)'} | " + " | ".join(cells) + " |")
    return lines + ["", image("time to accuracy on four devices", real_time_to_accuracy_plot(c, plot_dir, "four devices"), page), ""]


def planner_summary(heads: dict[tuple[str, str, str], list[dict]], folder: Path, page: Path) -> list[str]:
    """Per four-device invocation, how far ``lpfast plan``'s predictions fall from the measured rows
    (every row in bench/results/ALL.md), and whether it names the measured fastest layout."""
    said = []
    for (model, dataset, link), rows in heads.items():
        name, planned = planned_rows(rows, folder)
        if not planned:
            continue
        errors = sorted(planned, key=lambda p: abs(p.error))
        predicted, measured = max(planned, key=lambda p: p.predicted), max(planned, key=lambda p: p.measured)
        said.append(f"{model_on(model, dataset)}, {link}: median error {100 * statistics.median(abs(p.error) for p in planned):.0f}%, "
                    f"largest {100 * errors[-1].error:+.0f}% ({errors[-1].label}); its fastest is "
                    + ("the measured fastest" if predicted is measured else f"{predicted.label}, the measured fastest {measured.label}"))
    if not said:
        return []
    return [f"`lpfast plan` against these rows (block costs of one core scaled to the device's share, `--hosts 2` over a link; every "
            f"row in [ALL.md]({relative(folder / 'ALL.md', page)})): " + "; ".join(said) + ".", ""]


def four_devices_section(four: dict[str, list[dict]], loaded: list, folder: Path, plot_dir: Path, page: Path) -> list[str]:
    heads = four_device_headlines(four)
    lines = ["## Four devices", ""]
    check = device_model_check(four)
    if check:
        half, whole = (speedups_over_one_device(rows) for rows in check)
        labels = {row_kind(r): device_label(r) for r in check[0]}
        said = "; ".join(f"{labels[kind]} {half[kind]:.2f}× against {whole[kind]:.2f}×"
                         for kind in half if kind in whole and kind != "serial-1")
        lines += [f"A device is a share of a core ({check[0][0]['device_share']:g}; an idle filler burns its waits, as a real "
                  f"device loses them). The device model's check, two devices per epoch over one, on shares against whole cores "
                  f"(invocations {check[0][0]['invocation']} and {check[1][0]['invocation']}): {said}.", ""]
    if heads:
        # One line per row whatever its cut: each model's rows take the cut chosen for that model (said below the table).
        columns = list(heads)
        speedups = [{without_cut(kind): x for kind, x in speedups_over_one_device(heads[key]).items()} for key in columns]
        names = {without_cut(row_kind(r)): device_label(r, cut=False) for key in columns for r in heads[key]}
        ddp = [s.get("ddp") for s in speedups]
        lines += [f"Per-epoch speed-up over backprop on one device (against DDP on the same devices), {budget(heads[columns[0]][0])}:", "",
                  "| row | " + " | ".join(f"{model_on(model, dataset)}, {link}" for model, dataset, link in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for kind, name in names.items():
            cells = ["" if kind not in s else f"{s[kind]:.2f}×" + ("" if d is None else f" ({s[kind] / d:.2f}× DDP)")
                     for s, d in zip(speedups, ddp)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        cuts = {model: {device_label(r, cut=False): "+".join(map(str, r["config"]["stage_blocks"]))
                        for (m, _, _), rows in heads.items() if m == model for r in rows if r["config"].get("stage_blocks")}
                for model in dict.fromkeys(model for model, _, _ in columns)}
        said = [f"{model}: " + ", ".join(f"{label} {cut}" for label, cut in rows.items()) for model, rows in cuts.items() if rows]
        lines += [""] + ([f"Cuts (blocks per stage) where a row sets one, else `lpfast train`'s: {'; '.join(said)}.", ""] if said else [])
        lines += [image("four devices", four_devices_plot(heads, plot_dir), page), ""]
        lines += planner_summary(heads, folder, page)
        for c in four_device_time_to_accuracy(heads, loaded):
            lines += four_device_time_to_accuracy_lines(c, plot_dir, page)
    missing = [f"{model} on {link}" for model, link in FOUR_DEVICE_PLAN if not any(key[0] == model and key[2] == link for key in heads)]
    if missing:
        lines += [f"Not measured yet on four devices: {', '.join(missing)}.", ""]
    commands = [bench_command(rows, [row_kind(r) for r in rows]) + " --out bench/results/four-devices"
                for rows in [*(check or []), *heads.values()]]
    return lines + overlap_lines(folder) + ["```", "# bench/four_devices.sh runs these (as root)", *commands, "```", ""]


def four_devices_plot(heads: dict[tuple[str, str, str], list[dict]], plot_dir: Path) -> Path:
    """Per-epoch speed-up over one device of each row on four devices, one panel per invocation."""
    fig, axes = plt.subplots(1, len(heads), figsize=(6 * len(heads), 3.5), squeeze=False)
    for ax, ((model, dataset, link), rows) in zip(axes[0], heads.items()):
        speedups = speedups_over_one_device(rows)
        ax.barh([device_label(r) for r in rows], [speedups[row_kind(r)] for r in rows])
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        ax.set(xlabel="speed-up per epoch over one device", title=f"{model_on(model, dataset)}, {link}: four devices")
    return _save(fig, plot_dir / "page-four-devices.png")


# The memory table's rows: backprop, the two stores of the paper's method, ψ, and lpfast's pipelined λ.
MEMORY_ROWS = ("serial-K", "penalty", "al", "penalty+net", "penalty+pipe", "penalty+pipe+ds+cut3-6")


def memory_columns(loaded: list) -> dict[tuple[str, str, int], dict[str, dict]]:
    """Per model, data set and budget of the campaign, its K=2 rows (finished or not) by canonical kind."""
    columns: dict = defaultdict(dict)
    for _, records in loaded:
        for r in records:
            if stages(r) <= 2:
                columns[(r["model"], r["dataset"], r["epoch_budget"])].setdefault(canonical(row_kind(r)), r)
    return dict(sorted(columns.items(), key=lambda item: (item[0][2], item[0][1], item[0][0])))


def memory_section(loaded: list, plot_dir: Path, page: Path) -> list[str]:
    columns = memory_columns(loaded)
    kinds = [kind for kind in MEMORY_ROWS if any(canonical(kind) in rows for rows in columns.values())]
    lines = ["## Memory", ""]
    if not kinds:
        return lines + ["Not measured yet.", ""]
    lines += ["At the real budgets (full training sets, K=2): the auxiliary variables' memory over all cuts (stored λ keeps one "
              "per training sample and cut; AL also μ) / the run's peak memory.", "",
              "| run | " + " | ".join(model_on(*key) for key in columns) + " |", "|---|" + "---|" * len(columns)]
    for kind in kinds:
        cells = ["" if canonical(kind) not in rows else aux_and_peak(rows[canonical(kind)]) for rows in columns.values()]
        lines.append(f"| {describe(kind)} | " + " | ".join(cells) + " |")
    first = next(iter(columns.items()))
    return lines + ["", image("memory", memory_plot(first, kinds, plot_dir), page), "",
                    "```", "bash bench/real_budgets.sh   # every record carries aux_bytes_per_cut and peak_rss_mb", "```", ""]


def aux_memory_mb(r: dict) -> float:
    return sum(r["aux_bytes_per_cut"] or [0]) / 1e6


def aux_and_peak(r: dict) -> str:
    return f"{aux_memory_mb(r):.0f} MB / {r['peak_rss_mb']:.0f} MB"


def memory_plot(column: tuple[tuple[str, str, int], dict[str, dict]], kinds: list[str], plot_dir: Path) -> Path:
    """Peak memory of each row at one budget, its auxiliary variables' share hatched."""
    key, rows = column
    present = [kind for kind in kinds if canonical(kind) in rows]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(present) + 1.2))
    labels = [describe(kind) for kind in present]
    ax.barh(labels, [rows[canonical(kind)]["peak_rss_mb"] for kind in present], label="peak memory")
    ax.barh(labels, [aux_memory_mb(rows[canonical(kind)]) for kind in present], hatch="//", fill=False, label="auxiliary variables")
    ax.invert_yaxis()
    ax.set(xlabel="MB", title=f"memory, {model_on(*key)}")
    ax.legend(fontsize=7)
    return _save(fig, plot_dir / "page-memory.png")


def kernel_results(folder: Path) -> dict[str, dict]:
    """``bench/kernels.py``'s results per device type."""
    return {path.stem.removeprefix("kernels-"): json.loads(path.read_text()) for path in sorted(folder.glob("kernels-*.json"))}


def kernels_section(folder: Path, plot_dir: Path, page: Path) -> list[str]:
    results = kernel_results(folder)
    lines = ["## Kernels, CPU and GPU", ""]
    for device, result in results.items():
        by_op: dict = defaultdict(list)
        for row in result["rows"]:
            by_op[row["op"]].append(row)
        machine = result["machine"]
        lines += [f"**{device}** ({machine['threads']} threads, torch {machine['torch']}; copy bandwidth {result['copy_GBps']:.1f} GB/s): "
                  f"each fused op against eager PyTorch over {len({(r['cut'], r['batch']) for r in result['rows']})} cut sizes and batches "
                  f"(medians of {result['repeats']} runs each; every size in `bench/results/kernels-{device}.md`).", "",
                  "| op | median speed-up | range | median share of copy bandwidth |", "|---|---|---|---|"]
        for op, rows in by_op.items():
            speedups = [r["speedup"] for r in rows]
            lines.append(f"| {op} | {statistics.median(speedups):.2f}× | {min(speedups):.2f}–{max(speedups):.2f}× | "
                         f"{100 * statistics.median(r['copy_fraction'] for r in rows):.0f}% |")
        lines += ["", image(f"kernels on {device}", kernels_plot(device, by_op, plot_dir), page), ""]
    if "cuda" not in results:
        lines += ["**GPU**: not measured yet (no GPU was lent to these measurements); `make gpu-check` on a GPU machine writes "
                  "`bench/results/kernels-cuda.{json,md}`.", ""]
    return lines + ["```", "python bench/kernels.py   # CPU",
                    "make gpu-check            # GPU: builds the CUDA kernels, tests them, benchmarks them", "```", ""]


def kernels_plot(device: str, by_op: dict[str, list[dict]], plot_dir: Path) -> Path:
    """Each op's speed-ups over eager PyTorch at every size (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(by_op) + 1.2))
    for i, rows in enumerate(by_op.values()):
        ax.scatter([r["speedup"] for r in rows], [i] * len(rows), s=12)
    ax.set_yticks(range(len(by_op)), list(by_op), fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1, color="grey", linestyle=":")
    ax.set(xscale="log", xlabel="speed-up over eager PyTorch", title=f"fused kernels on {device}, every size")
    return _save(fig, plot_dir / f"page-kernels-{device}.png")


def precision_pairs(folder: Path) -> list[tuple[dict, dict]]:
    """(float32 row, its ``+bf16`` twin) from ``results/precision/records.jsonl``: one interleaved
    invocation, so their ratios stand (a later record of a kind replaces an earlier one)."""
    path = folder / "precision" / "records.jsonl"
    by_kind = {r["kind"]: r for r in map(json.loads, path.read_text().splitlines())} if path.exists() else {}
    return [(r, by_kind[kind + "+bf16"]) for kind, r in by_kind.items() if kind + "+bf16" in by_kind]


def precision_section(folder: Path) -> list[str]:
    pairs = precision_pairs(folder)
    if not pairs:
        return []
    first = pairs[0][0]
    subset = first["config"].get("train_subset")
    lines = ["## Mixed precision on this CPU", "",
             f"`--precision bf16` against float32, {model_on(first['model'], first['dataset'])}, "
             f"{f'{subset} training images' if subset else 'the whole training set'}, {len(first['test_acc'])} interleaved epochs "
             "(`bench/results/precision/`); a CPU number: a GPU's bf16 gain is its own.", "",
             "| run | float32 epoch | bf16 epoch | bf16 speed-up | peak memory float32 → bf16 |", "|---|---|---|---|---|"]
    for fp32, bf16 in pairs:
        lines.append(f"| {describe(fp32['kind'])} | {fp32['median_epoch_time_s']:.1f} s | {bf16['median_epoch_time_s']:.1f} s | "
                     f"{fp32['median_epoch_time_s'] / bf16['median_epoch_time_s']:.2f}× | "
                     f"{fp32['peak_rss_mb']:.0f} → {bf16['peak_rss_mb']:.0f} MB |")
    rows = [r for pair in pairs for r in pair]
    return lines + ["", "```", bench_command(rows, [r["kind"] for r in rows]) + " --out bench/results/precision", "```", ""]


def precision_standing(folder: Path) -> str | None:
    pairs = precision_pairs(folder)
    if not pairs:
        return None
    said = ", ".join(f"{describe(fp32['kind'])} {fp32['median_epoch_time_s'] / bf16['median_epoch_time_s']:.2f}×" for fp32, bf16 in pairs)
    return f"- **Mixed precision** (this CPU, {model_on(pairs[0][0]['model'], pairs[0][0]['dataset'])}): bf16 epochs against float32: {said}."


def standing(groups: dict, four: dict, loaded: list, composed: list[Composed], folder: Path) -> list[str]:
    """The page's first screen: one line per question, every number computed as in its section."""
    return [line for line in (accuracy_standing(budgets(loaded)), speed_standing(groups, composed), link_standing(groups),
                              *four_devices_standing(four), many_stages_standing(loaded), memory_standing(loaded),
                              precision_standing(folder), kernels_standing(folder)) if line]


def accuracy_standing(columns: list[Budget]) -> str | None:
    ours = [b for b in columns if b.delta("penalty+pipe") is not None]
    if not ours:
        return None
    said = "; ".join(f"{b.delta('penalty+pipe'):+.2f} ({model_on(b.model, b.dataset, b.epochs)}, "
                     + (f"mean of {len(b.seeds)} seeds)" if len(b.seeds) > 1 else "one seed)") for b in ours)
    spread = " and ".join(f"{max(b.seeds) - min(b.seeds):.2f}" for b in columns if len(b.seeds) > 1)
    first = columns[0]
    stored = ", ".join(f"{describe(kind)} {first.delta(kind):+.2f}" for kind in ("penalty", "al") if first.delta(kind) is not None)
    return (f"- **Will it be as accurate?** lpfast's default (pipelined λ, half of the epochs parallel, K=2) against backprop on "
            f"full training sets: {said}" + (f"; backprop's own seeds differ by {spread} points" if spread else "")
            + (f". The paper's {stored} ({model_on(first.model, first.dataset, first.epochs)})" if stored else "") + ".")


def speed_standing(groups: dict, composed: list[Composed]) -> str | None:
    devices = {key: s for key, s in loopback_devices(groups).items() if fastest(s, "penalty+pipe") and "ddp" in s}
    if not devices:
        return None
    per_epoch = "; ".join(f"lpfast {fastest(s, 'penalty+pipe')[1]:.2f}×, DDP {s['ddp']:.2f}× ({model_on(*key)})"
                          for key, s in devices.items())
    reached = [(key, to_accuracy(composed, *key)) for key in devices]
    tta = "; ".join(f"lpfast {r[0].speedup(r[2], 'loopback'):.2f}×, DDP {r[1]:.2f}× ({model_on(*key, r[0].epochs)})"
                    for key, r in reached if r)
    return (f"- **How much faster than DDP?** On two equal devices (one core each, loopback), per epoch over backprop on one: "
            f"{per_epoch}" + (f". In time to backprop's accuracy less one point at the real budget (lpfast's fastest run): {tta}"
                              if tta else "") + ".")


def lead_from(rates: list[LinkRate]) -> LinkRate | None:
    """The fastest rate from which lpfast leads DDP per epoch at every slower rate measured (rates fastest first)."""
    leading = None
    for rate in reversed(rates):
        if not lpfast_lead(rate):
            break
        leading = rate
    return leading


def link_standing(groups: dict) -> str | None:
    leads = []
    for (model, dataset), by_link in link_sweeps(groups).items():
        rate = lead_from(link_rates(by_link))
        if rate is not None:
            ours, ddp = lpfast_lead(rate)
            leads.append(f"{rate.link} and slower for {model_on(model, dataset)} ({ours:.2f}× against {ddp:.2f}× at {rate.link})")
    if not leads:
        return None
    return f"- **At what link does it pay?** Per epoch on two devices lpfast leads DDP at {'; at '.join(leads)}; on faster links DDP leads."


def four_devices_standing(four: dict) -> list[str]:
    """Per model, at each link rate: lpfast's fastest layout, DDP and the fastest pipeline schedule, per epoch over one device."""
    said = defaultdict(list)
    for (model, dataset, link), rows in four_device_headlines(four).items():
        s = speedups_over_one_device(rows)
        best = {who: max(((s[row_kind(r)], device_label(r)) for r in rows if pick(row_kind(r))), default=None)
                for who, pick in (("lpfast", lambda kind: kind.split("+")[0] in ("penalty", "al")),
                                  ("pipeline", lambda kind: family(kind) in ("gpipe", "1f1b", "interleaved-1f1b", "zero-bubble")))}
        parts = [f"{best['lpfast'][1]} {best['lpfast'][0]:.2f}×"] if best["lpfast"] else []
        parts += [f"DDP {s['ddp']:.2f}×"] if "ddp" in s else []
        parts += [f"best pipeline ({best['pipeline'][1]}) {best['pipeline'][0]:.2f}×"] if best["pipeline"] else []
        said[(model, dataset)].append(f"{link}: " + "; ".join(parts))
    return [f"- **Four devices** ({model_on(model, dataset)}, per epoch over one device, lpfast's fastest layout, DDP, the fastest "
            "pipeline): " + " — ".join(rates) + "." for (model, dataset), rates in said.items()]


def many_stages_standing(loaded: list) -> str:
    runs = many_stage_runs(loaded)
    if not runs:
        return "- **Many stages** (K = 4, 8): not measured yet."
    said = []
    for r in runs:
        done, ref = len(r["test_acc"]), backprop_at(loaded, r)
        state = "finished" if done == r["epoch_budget"] else f"in progress, after {done} of {r['epoch_budget']} epochs"
        said.append(f"K={stages(r)} ({model_on(r['model'], r['dataset'])}) {state}: {r['test_acc'][-1]:.2f}%"
                    + ("" if ref is None else f" against backprop's {ref:.2f}% at that epoch"))
    return "- **Many stages**: " + "; ".join(said) + "."


def memory_standing(loaded: list) -> str | None:
    memory = memory_columns(loaded)
    if not memory:
        return None
    key, rows = next(iter(memory.items()))
    said = ", ".join(f"{describe(kind)} {aux_and_peak(rows[canonical(kind)])}" for kind in MEMORY_ROWS if canonical(kind) in rows)
    return f"- **Memory** ({model_on(*key)}; auxiliary variables / peak): {said}."


def kernels_standing(folder: Path) -> str | None:
    kernels = kernel_results(folder)
    if not kernels:
        return None
    said = "; ".join(f"{device}: fused ops {min(r['speedup'] for r in result['rows']):.2f}–"
                     f"{max(r['speedup'] for r in result['rows']):.2f}× eager PyTorch" for device, result in kernels.items())
    return f"- **Kernels**: {said}" + ("" if "cuda" in kernels else "; GPU: not measured yet") + "."


def short_page(groups: dict, four: dict, loaded: list, folder: Path, plot_dir: Path, page: Path, full: Path) -> list[str]:
    """The page a user reads in five minutes: where things stand, then one section per question."""
    composed = time_to_accuracy(loaded, seed_zero_backprop(loaded), groups)
    machine = next((records[0]["machine"] for records in groups.values()), None)
    return ["# lpfast: results", "",
            f"Every number here is computed by `bench/report.py` from the committed result files"
            + (f" (a {machine['cpus']}-CPU host, torch {machine['torch']})" if machine else "")
            + f". Every table behind this page: [{relative(full, page)}]({relative(full, page)}); how the measurements went, in "
            f"the order they were made: [{relative(folder / 'narrative.md', page)}]({relative(folder / 'narrative.md', page)}). "
            "Rebuild: `python bench/report.py`.", "",
            f"## Where things stand ({latest_date(groups, four, loaded)})", "",
            *standing(groups, four, loaded, composed, folder), "",
            *accuracy_section(budgets(loaded), plot_dir, page), *many_stages_section(loaded, folder, plot_dir, page),
            *speed_section(groups, composed, plot_dir, page), *link_section(groups, plot_dir, page),
            *four_devices_section(four, loaded, folder, plot_dir, page), *memory_section(loaded, plot_dir, page),
            *precision_section(folder), *kernels_section(folder, plot_dir, page)]


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=Path, default=ROOT / "bench" / "results" / "records.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md", help="the short page")
    parser.add_argument("--all", type=Path, help="the page of every table (default: ALL.md beside the records)")
    args = parser.parse_args(argv)
    folder = args.records.parent
    full = args.all or folder / "ALL.md"
    groups = load(args.records)
    # The four-device records sit apart, so that no K=2 section takes their rows.
    four = load_invocations(folder / "four-devices" / "records.jsonl")
    loaded = real_tables(folder)
    plot_dir = args.out.parent / "plots"
    write(full, full_page(groups, four, loaded, folder, plot_dir, full, args.out))
    write(args.out, short_page(groups, four, loaded, folder, plot_dir, args.out, full))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), {full} ({sum(len(r) for r in groups.values())} rows "
          f"and {sum(len(r) for r in four.values())} four-device rows) and plots in {plot_dir}")


if __name__ == "__main__":
    main()

"""Turns the benchmark records (``bench/results/records.jsonl``, written by ``lpfast bench``) into
``bench/RESULTS.md`` with PNG plots beside it.

For each (benchmark, model, data set) the latest invocation gives one table: every
configuration's final accuracy, training and wall time at the same epoch budget, the speed-up of
the parallel phase per epoch and of the whole run over backprop on one device (and over the best
of DDP and the pipelines on K devices), the time each row takes to reach a common accuracy, bytes
sent and memory. Plots: test accuracy against wall time, per-cut constraint violation against
epoch, bytes per epoch, and the speed-up against K with the model ρ(K) of ALGORITHM.md §8 fitted
from the measured epoch times. Every number comes from a record; the commands are listed on top.
The speed-limit tables of ``bench/ceiling.py`` found beside the records close the report.

    python bench/report.py [--records bench/results/records.jsonl] [--out bench/RESULTS.md]
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lpfast.benchmark import PRESETS  # noqa: E402
from lpfast.plan import PartCosts, link_bytes_per_s, predict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOISY = 1.5  # timing spread above which a row's times are flagged


def load(records_path: Path) -> dict[tuple[str, str, str], list[dict]]:
    """Per (benchmark, model, dataset), every row from the latest invocation that ran it (a re-run
    of some rows with ``lpfast bench --rows`` replaces those), in the row order of the latest
    invocation that ran the most rows."""
    groups: dict[tuple[str, str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for line in records_path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
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
    if first["config"].get("train_subset") is not None:
        parts += ["--train-subset", str(first["config"]["train_subset"])]
    hybrid = [r["config"] for r in records if r["config"]["method"] != "serial" and r["config"]["parallel_epochs"]]
    if hybrid:
        parts += ["--parallel-epochs", str(hybrid[0]["parallel_epochs"]), "--micro-batches", str(hybrid[0]["micro_batches"])]
    if link:
        parts += ["--slow-link", link.removesuffix(" link")]
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


def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A tight bounding box grows the image to hold labels longer than the axes leave room for
    # (row names run to ~80 characters).
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


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


def planner_check(key: tuple[str, str, str], records: list[dict], folder: Path) -> list[str]:
    """``lpfast plan``'s predictions against the section's measured epoch speed-ups over the baseline:
    the plan's cost measurement (``plan-<model>-<dataset>.json`` beside the records) put through
    :func:`lpfast.plan.predict` for each row's cut, micro-batches and the section's link. Only the
    ``devices`` sections, whose rows run on one-core devices like the ones the planner measures."""
    path = folder / f"plan-{key[1]}-{key[2]}.json"
    if key[0].partition(" over a ")[0] != "devices" or not path.exists():
        return []
    plan = json.loads(path.read_text())
    costs = PartCosts.from_dict(plan["costs"])
    link = records[0].get("slow_link")
    base = baseline(records)
    lines = []
    for r in records:
        kind, config = row_kind(r).split("+")[0], r["config"]
        ds = config.get("ds_factor", 1) > 1
        pipelined = config.get("aux") == "pipelined"
        if kind not in ("ddp", "gpipe", "1f1b", "penalty", "al") or config.get("aux") == "net" or (ds and link and not pipelined):
            continue  # ψ's cost, and stored λ's filtered messages, are not planned
        default = [p["cut"] for p in plan["predictions"] if p["stages"] == r["workers"] and p["default"]]
        cut = config.get("stage_blocks") or (default[0] if default else None)
        if cut is None:
            continue
        p = predict(costs, r["workers"], cut=cut, link=link_bytes_per_s(link), micro_batches=config.get("micro_batches", 4))
        if kind == "ddp":
            predicted, measured, what = p.ddp_speedup, epoch_speedup(base, r), "epoch"
        elif kind in ("gpipe", "1f1b"):
            predicted = p.gpipe_speedup if kind == "gpipe" else p.pipeline_speedup
            measured, what = epoch_speedup(base, r), "epoch"
        else:
            share = sum(phase == "parallel" for phase in r["phase"]) / len(r["phase"])
            parallel = (p.pipelined_ds_step_s if ds else p.pipelined_step_s) if pipelined else p.parallel_step_s
            predicted = p.serial_step_s / (share * parallel + (1 - share) * p.pipeline_step_s)
            if share == 1:
                what, measured = "parallel epoch", phase_speedup(base, r, "parallel")
            else:
                what, measured = f"whole run ({share:.2f} parallel)", run_speedup(base, r)
        lines.append(f"| {r['name']} | {','.join(map(str, cut))} | {what} | {predicted:.2f}x | {measured:.2f}x | {100 * (predicted / measured - 1):+.0f}% |")
    if not lines:
        return []
    return [f"**`lpfast plan` against the measurement** (the block and cut costs of `{path.name}`, measured on this machine "
            f"{'on ' + plan['date'] if 'date' in plan else 'before these rows'}, put through the planner's cost model for each row's cut"
            + (f" and the {link} link" if link else "") + "; speed-ups over the baseline; the planner leaves data loading and "
            "evaluation out):", "",
            "| row | cut | what | predicted | measured | error |", "|---|---|---|---|---|---|", *lines, ""]


# How much faster one GPU runs a small ResNet's training step than one of these CPU cores (ResNet-20,
# batch 128: about 400 ms per step on a core here; of the order of 8 to 20 ms on a current
# data-centre GPU). An assumption, not measured here (no GPU): it is the factor by which a GPU
# cluster's link must be faster than ours for compute and messages to stand in the same ratio.
GPU_OVER_CORE = (20, 50)
LINK_ROWS = (("ddp", "DDP"), ("1f1b", "1F1B"), ("penalty+pipe+share1", "pipelined λ"), ("penalty+pipe+ds+share1", "pipelined λ + DS"))


def link_sweep(groups: dict) -> list[str]:
    """The ``devices`` rows of one model at every link rate measured (the unshaped invocation as
    loopback): each row's per-epoch speed-up over one device, the pipelined rows' messages per step
    and their compute-to-message ratio, and the GPU-cluster link with the same ratio."""
    sweeps: dict = defaultdict(dict)
    for (bench, model, dataset), records in groups.items():
        if bench.partition(" over a ")[0] == "devices":
            sweeps[(model, dataset)][records[0].get("slow_link") or "loopback"] = records
    lines = []
    for (model, dataset), by_link in sorted(sweeps.items()):
        if len(by_link) < 2:
            continue
        links = sorted(by_link, key=lambda link: -link_bytes_per_s(link) if link != "loopback" else -float("inf"))
        loopback = {row_kind(r): r for r in by_link.get("loopback", [])}
        # A stage's compute per step: the pipelined step with free messages (the loopback row).
        free = loopback.get("penalty+pipe+share1")
        compute = None if free is None else free["median_epoch_time_s"] / -(-free["config"]["train_subset"] // free["config"]["batch_size"])
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
        for link in links:
            kinds = {row_kind(r): r for r in by_link[link]}
            base = kinds.get("serial-1")
            if base is None:
                continue
            cells, sizes, ratios = [], [], []
            for kind, _ in LINK_ROWS:
                r = kinds.get(kind)
                cells.append("" if r is None else f"{epoch_speedup(base, r):.2f}×")
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
            # The unshaped invocation has no message timing of its own: every slow-link one times loopback first.
            timed = [r["message_3.2MB_ms"] for records in by_link.values() for r in records[:1] if r.get("message_3.2MB_ms")]
            link_ms = (statistics.median(m["loopback"] for m in timed) if link == "loopback" and timed
                       else (base.get("message_3.2MB_ms") or {}).get(f"{link} link"))
            cluster = "" if link == "loopback" else " – ".join(
                f"{link_bytes_per_s(link) * 8 * g / 1e9:g} Gbit/s" for g in GPU_OVER_CORE)
            lines.append(f"| {link} | {'—' if link_ms is None else f'{link_ms:.1f}'} | " + " | ".join(cells)
                         + f" | {' / '.join(sizes)} | {' / '.join(ratios)} | {cluster} |")
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
    records = groups.get(("devices" if link == "loopback" else f"devices over a {link} link", model, dataset))
    kinds = {row_kind(r): r for r in records or []}
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
    finished = [r for _, records in loaded for r in records if len(r["test_acc"]) == r["epoch_budget"]]
    curves: dict = {}
    for r in finished:
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


def real_time_to_accuracy(loaded: list, backprop: dict, groups: dict, plot_dir: Path) -> list[str]:
    """Time to accuracy at the real budget, composed, at every link rate with a ``devices``
    invocation: each finished row's epochs until it first reaches backprop's final accuracy minus
    one point, each epoch weighted by the per-epoch time of its phase on one of K devices at that
    rate (its all-parallel devices row for parallel epochs, 1F1B for serial ones); and a plot of the
    rows that reach the target, accuracy against that composed time, one panel per rate."""
    finished = [r for _, records in loaded for r in records if len(r["test_acc"]) == r["epoch_budget"]]
    lines = []
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
        # (name, the devices rows it is timed by, epochs to the target, accuracy curve, cumulative composed time per link)
        rows = [(label, "", reach, ref["test_acc"], {link: composed_times(["serial"] * epochs, rho[link], kind, kind) for link in links})
                for kind, label in EXACT_PEERS.items()]
        for r in finished:
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
            rows.append((r["name"], timed_by, reached, r["test_acc"],
                         {link: composed_times(r["phase"], rho[link], parallel_row, serial_row) for link in links}))
        # The time to the target at a rate, where every epoch until then has its devices row there.
        costs = [{link: times[reached - 1] for link, times in curves.items() if reached and len(times) >= reached}
                 for _, _, reached, _, curves in rows]
        plot = real_time_to_accuracy_plot(model, dataset, epochs, links, rows, target, plot_dir)
        lines += [f"### Time to accuracy: {model} on {dataset}, {epochs} epochs", "",
                  f"Speed-up over one device in the time until the end of the first epoch at or above {target:.2f}% (backprop's "
                  f"final {ref['final_test_acc']:.2f}% minus one point; backprop gets there after {reach} epochs): each row's epochs "
                  "to the target at the real budget, each weighted by its phase's per-epoch time on the same devices (1 / its speed-up "
                  "over one device in the `devices` invocation at that link rate). Composed from two measurements, not timed whole: "
                  "the real-budget rows ran one after another on a loaded host. Blank: a devices row it needs was not run at that rate.", "",
                  "| row | epochs to the target | " + " | ".join(links) + " |", "|---|---|" + "---|" * len(links)]
        for (name, timed_by, reached, _, _), cost in zip(rows, costs):
            cells = [f"{reach / cost[link]:.2f}×" if link in cost else ("—" if reached is None else "") for link in links]
            cells = [f"**{cell}**" if link in cost and cost[link] == min(c[link] for c in costs if link in c) else cell
                     for link, cell in zip(links, cells)]
            lines.append(f"| {name}{timed_by} | {reached or '— (never)'} | " + " | ".join(cells) + " |")
        lines += ["", f"![time to accuracy](plots/{plot})", ""]
    return lines


def real_time_to_accuracy_plot(model: str, dataset: str, epochs: int, links: list[str], rows: list, target: float,
                               plot_dir: Path) -> str:
    """Test accuracy against composed training time (one device's backprop epochs), one panel per
    link rate, for the rows that reach the target; the legend in a panel of its own."""
    columns = 3
    lines_of_panels = -(-(len(links) + 1) // columns)  # the rates and the legend
    fig, axes = plt.subplots(lines_of_panels, columns, figsize=(10, 3.2 * lines_of_panels), sharey=True, squeeze=False)
    panels = axes.flatten()
    for ax, link in zip(panels, links):
        for i, (name, _, reached, accuracy, curves) in enumerate(rows):  # a row keeps its colour and line in every panel
            if reached and curves[link]:
                ax.plot(curves[link], accuracy[:len(curves[link])], color=f"C{i % 10}", linestyle=("-", "--")[i // 10 % 2],
                        linewidth=1, label=name)
        ax.axhline(target, color="grey", linestyle=":")
        ax.set(title=link, xlabel="one device's epochs", ylabel="test accuracy (%)", ylim=(max(0.0, target - 20), target + 3))
    legend = {label: handle for ax in panels[:len(links)] for handle, label in zip(*ax.get_legend_handles_labels())}
    order = [name for name, *_ in rows if name in legend]
    panels[len(links)].legend([legend[label] for label in order], order, loc="center", fontsize=6.5, frameon=False)
    for ax in panels[len(links):]:
        ax.axis("off")
    fig.suptitle(f"{model} on {dataset}, {epochs} epochs: time to backprop's accuracy less one point (dotted), composed", fontsize=9)
    fig.tight_layout()
    return _save(fig, plot_dir / f"real-{model}-{dataset}-e{epochs}-time-to-accuracy.png")


def real_budgets(folder: Path, groups: dict, plot_dir: Path) -> list[str]:
    """The real-budget campaign (``bench/real_budgets.sh``) from its tables ``real-<model>-<dataset>.json``,
    which the campaign rewrites after every epoch: each row's accuracy so far against backprop's at
    the same epoch, the seed-to-seed spread, the issue's targets, and accuracy against the parallel
    share with each share's speed-up over one device."""
    tables = sorted(folder.glob("real-*.json"))
    if not tables:
        return []
    lines = ["## Real budgets: full training sets, tens of epochs", "",
             "The campaign of `bench/real_budgets.sh` (`lpfast bench real ... --order sequential --snapshot ...`): full training sets, "
             "one cosine schedule, batch 128, rows one after another, so their speeds are not compared here; the speed-ups of the "
             "parallel-share curve come from the per-epoch speed-ups over one device measured in the interleaved `devices` invocation "
             "of the same model and data set. A row still under way is compared with backprop at its own epoch count.", ""]
    loaded = [(path, json.loads(path.read_text())["records"]) for path in tables]
    # An invocation added beside the campaign's (`--tag`) may have no backprop row of its own: it is
    # set against the backprop of the same model, data set and budget.
    backprop = {(r["model"], r["dataset"], r["epoch_budget"]): r for _, records in loaded for r in records if row_kind(r) == "serial-K"}
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
        finished = {kind: r for kind, r in by_kind.items() if len(r["test_acc"]) == budget_epochs}
        if base is not None and len(base["test_acc"]) == budget_epochs:
            finished.setdefault("serial-K", base)
        if "serial-K" in finished and "serial-K+seed1" in finished:
            a, b = finished["serial-K"]["final_test_acc"], finished["serial-K+seed1"]["final_test_acc"]
            lines += [f"Backprop's seed-to-seed spread at this budget: {a:.2f}% and {b:.2f}% ({abs(a - b):.2f} points).", ""]
        if "serial-K" in finished and dataset in TARGETS:
            ref = finished["serial-K"]["final_test_acc"]
            allowed = {kind: target_allowance(kind, dataset) for kind in finished}
            checks = [(kind, r["final_test_acc"] - ref) for kind, r in finished.items() if allowed[kind] is not None]
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
        plot = _save(fig, plot_dir / f"{path.stem}-accuracy.png")
        lines += [f"![real budget](plots/{plot})", ""]
    return lines + share_curves(loaded, backprop, groups) + real_time_to_accuracy(loaded, backprop, groups, plot_dir)


def narrative(folder: Path) -> list[str]:
    """The hand-written account of what the measurements say (``narrative.md`` beside the records)."""
    path = folder / "narrative.md"
    return [*path.read_text().strip().splitlines(), ""] if path.exists() else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=Path, default=ROOT / "bench" / "results" / "records.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    groups = load(args.records)
    plot_dir = args.out.parent / "plots"
    lines = ["# lpfast benchmark results", "",
             f"Made by `bench/report.py` from `{args.records.name}`; each section is one invocation of `lpfast bench`, with any rows "
             "re-run later (`--rows`) taken from the re-run. "
             "To reproduce every section on this kind of machine (the `--slow-link` one as root), from the repository root:", "",
             "```", *(command for records in groups.values() for command in section_commands(records)), "python bench/report.py", "```", "",
             *narrative(args.records.parent), *summary(groups), *link_sweep(groups)]
    lines += real_budgets(args.records.parent, groups, plot_dir)
    for key, records in groups.items():
        if key[0] == "real":
            continue  # the real-budgets section above shows the campaign, from its tables
        first = records[0]
        machine = first["machine"]
        lines += [f"## {key[0]}: {key[1]} on {key[2]}, {budget(first)}", "",
                  f"Machine: {machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}. "
                  + " ".join(f"Invocation {invocation} (commit `{(rows[0]['git_commit'] or 'unknown')[:10]}`) ran "
                             + ", ".join(f"*{r['name']}*" for r in rows) + "." for invocation, rows in invocations(records))
                  + " Rows of one invocation ran interleaved, one epoch at a time (`--pause-after 1`/`--resume`), as these commands "
                  "from the repository root:", "",
                  "```", *(r["command"] for r in records), "```", "", *link_line(first), *table(records), "", *findings(records), "",
                  *planner_check(key, records, args.records.parent)]
        lines += [f"![{name}](plots/{name})" for name in plots(key, records, plot_dir)] + [""]
    lines += ceilings(args.records.parent)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} ({sum(len(r) for r in groups.values())} rows) and plots in {plot_dir}")


if __name__ == "__main__":
    main()

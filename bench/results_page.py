"""``bench/RESULTS.md``, the page a user reads in five minutes (written by ``bench/report.py``).

It states where things stand and answers one question per section (accuracy at real budgets, many
stages, speed on equal devices against DDP and the pipeline schedules, the link sweep, four
devices, memory, mixed precision, kernels), each with its headline table, its plot and the command
that reproduces it. Every number on it is computed from a result file: the records of ``lpfast
bench`` (``bench/results/records.jsonl``; the four-device ones apart, in
``bench/results/four-devices/records.jsonl``), the real-budget campaign's tables (``real-*.json``),
the overlap profile (``overlap-*.json``), the published numbers set beside ours
(``published-many-stages.json``) and the kernel benchmark (``kernels-*.json``)."""
from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lpfast.plan import link_bytes_per_s  # noqa: E402
from records import (  # noqa: E402
    bench_command, budget, canonical, Composed, composed_times, ComposedRow, describe, device_label, device_speedups,
    EXACT_PEERS, family, finished, first_epoch_at, GPU_OVER_CORE, image, invocations, link_rates, LINK_ROWS, link_sweeps,
    LinkRate, merge_invocations, planned_rows, proxy_tables, real_time_to_accuracy_plot, relative, row_kind, save_plot, section_commands, seed_zero_backprop,
    speedup_cells, speedups_over_one_device, spread, TARGETS, time_to_accuracy, without_cut,
)


def parallel_share(r: dict) -> float:
    return (r["config"].get("parallel_epochs") or 0) / r["epoch_budget"]


def stages(r: dict) -> int:
    """The stages a run trained with (a real-budget row of K stages may run them in one process; a
    record without the option is one of the campaign's K=2 rows)."""
    return r["config"].get("stages") or 2


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
    return save_plot(fig, plot_dir / "page-accuracy.png")


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
    return lines + [image("many stages", many_stages_plot(loaded, runs, plot_dir), page), "", *levers(proxy_tables(folder)),
                    *published_many_stages(folder), "```", "bash bench/real_budgets.sh   # its many-* and levers-* invocations", "```", ""]


# What a lever must move the proxy by to be taken to the full budget (issue 36, step 3).
LEVER_THRESHOLD = 0.3
# The row modifiers that are levers against late gradients: gradient shrinking, lr warm-up, serial
# warm-up, batches in parts (PipeDream-2BW), weight prediction turned off.
LEVER_MODIFIERS = ("gs", "wu", "sw", "pmb", "nopredict")


def levers(tables: list[tuple[Path, list[dict]]]) -> list[str]:
    """The levers against late gradients on their proxies (part of the training set, a short budget,
    one seed): each run's accuracy against the proxy's backprop and against the plain run of as
    many stages (every epoch parallel, no lever), at the same epoch. Tables of one proxy (model,
    data set, budget and subset) are read as one."""
    proxies: dict = defaultdict(list)
    names: dict = defaultdict(list)
    for path, records in tables:
        for r in records:
            key = (r["model"], r["dataset"], r["epoch_budget"], r["config"]["train_subset"])
            proxies[key].append(r)
            names[key] += [] if path.name in names[key] else [path.name]
    lines = []
    for key, records in proxies.items():
        model, dataset, budget, subset = key
        backprop = next((r for r in records if row_kind(r).startswith("serial")), None)
        plain = {stages(r): r for r in records if r is not backprop and parallel_share(r) == 1
                 and not any(m.startswith(LEVER_MODIFIERS) for m in row_kind(r).split("+"))}
        lines += [f"What keeps the accuracy as the delay grows, ranked on a proxy ({', '.join(f'`{n}`' for n in names[key])}): "
                  f"{model_on(model, dataset)}, {subset} training images, {budget} epochs, one seed. A lever is taken to the "
                  f"full budget if it moves the proxy by {LEVER_THRESHOLD} points or more over the plain run.", "",
                  "| run | K | epochs | test acc (%) | Δ backprop | Δ plain | train loss at the end |", "|---|---|---|---|---|---|---|"]
        for r in records:
            done, last = len(r["test_acc"]), r["test_acc"][-1]
            base = plain.get(stages(r)) if r is not backprop else None
            cells = [f"{last - ref['test_acc'][done - 1]:+.2f}" if ref is not None and ref is not r and len(ref["test_acc"]) >= done else ""
                     for ref in (backprop, base)]
            serial = f", serial epochs in {r['config']['micro_batches']} micro-batches" if r is not backprop and parallel_share(r) < 1 else ""
            lines.append(f"| {describe(row_kind(r), parallel_share(r))}{serial} | {1 if r is backprop else stages(r)} | {done}/{r['epoch_budget']} | "
                         f"{last:.2f} | {cells[0]} | {cells[1]} | {r['epochs'][-1]['train_loss']:.3f} |")
        lines.append("")
    return lines


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
    return save_plot(fig, plot_dir / "page-many-stages.png")


# The short page's speed columns: per row family, the fastest of its rows at any cut and parallel share.
SPEED_COLUMNS = (("ddp", "DDP"), ("gpipe", "GPipe"), ("1f1b", "1F1B"), ("penalty+pipe", "lpfast, pipelined λ"),
                 ("penalty+pipe+ds", "lpfast, pipelined λ + DS"))


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
    return save_plot(fig, plot_dir / "page-link-sweep.png")


def lpfast_lead(rate: LinkRate) -> tuple[float, float] | None:
    """lpfast's fastest pipelined row and DDP at a rate, where lpfast is ahead."""
    ours = max((rate.speedups[kind] for kind in ("penalty+pipe+share1", "penalty+pipe+ds+share1") if kind in rate.speedups), default=None)
    ddp = rate.speedups.get("ddp")
    return (ours, ddp) if ours is not None and ddp is not None and ours > ddp else None


# What bench/four_devices.sh measures: each model at each rate.
FOUR_DEVICE_PLAN = tuple((model, link) for model in ("resnet20", "wrn_16_4") for link in ("loopback", "1gbit", "100mbit"))


def four_device_headlines(four: dict[str, list[dict]]) -> dict[tuple[str, str, str], list[dict]]:
    """Per model, data set and link rate, the rows on four devices or more, each from the latest
    invocation that ran it (an invocation adding rows to an earlier one, each timed against its own
    backprop), each model's fastest link first."""
    runs: dict = defaultdict(dict)
    for invocation, rows in four.items():
        if max(r["workers"] for r in rows) >= 4:
            runs[(rows[0]["model"], rows[0]["dataset"], rows[0].get("slow_link") or "loopback")][invocation] = rows
    order = sorted(runs, key=lambda key: (key[:2], -(link_bytes_per_s(key[2].replace("loopback", "none")) or float("inf"))))
    return {key: merge_invocations(runs[key]) for key in order}


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
                for rows in [*(check or []), *(rows for head in heads.values() for _, rows in invocations(head))]]
    return lines + overlap_lines(folder) + ["```", "# bench/four_devices.sh runs these (as root)", *commands, "```", ""]


def four_devices_plot(heads: dict[tuple[str, str, str], list[dict]], plot_dir: Path) -> Path:
    """Per-epoch speed-up over one device on four devices: a panel per model, a bar per row and link rate."""
    models = list(dict.fromkeys((model, dataset) for model, dataset, _ in heads))
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5), squeeze=False)
    for ax, (model, dataset) in zip(axes[0], models):
        rates = [(link, rows) for (m, d, link), rows in heads.items() if (m, d) == (model, dataset)]
        labels = list(dict.fromkeys(device_label(r, cut=False) for _, rows in rates for r in rows))
        height = 0.8 / len(rates)
        for i, (link, rows) in enumerate(rates):
            speedups = speedups_over_one_device(rows)
            measured = {device_label(r, cut=False): speedups[row_kind(r)] for r in rows}
            shown = [label for label in labels if label in measured]
            ax.barh([labels.index(label) + (i - (len(rates) - 1) / 2) * height for label in shown], [measured[label] for label in shown],
                    height, label=link)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.legend(fontsize=7)
        ax.set(xlabel="speed-up per epoch over one device", title=f"{model_on(model, dataset)}: four devices")
    fig.tight_layout()
    return save_plot(fig, plot_dir / "page-four-devices.png")


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
    return save_plot(fig, plot_dir / "page-memory.png")


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
    return save_plot(fig, plot_dir / f"page-kernels-{device}.png")


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

"""Turns the committed benchmark results into two pages with PNG plots beside them:
``bench/RESULTS.md``, the page a user reads in five minutes (:mod:`results_page`), and
``bench/results/ALL.md``, every table behind it (here).

The full page has, for each (benchmark, model, data set), the latest invocation as one table: every
configuration's final accuracy, training and wall time at the same epoch budget, the speed-up of
the parallel phase per epoch and of the whole run over backprop on one device (and over the best
of DDP and the pipelines on K devices), the time each row takes to reach a common accuracy, bytes
sent and memory. Plots: test accuracy against wall time, per-cut constraint violation against
epoch, bytes per epoch, and the speed-up against K with the model ρ(K) of ALGORITHM.md §8 fitted
from the measured epoch times. Then the real-budget campaign, each four-device invocation, and the
speed-limit tables of ``bench/ceiling.py``. The hand-written history of the measurements stays in
``bench/results/narrative.md``; both pages link to it. The numbers both pages share are computed in
:mod:`records`.

    python bench/report.py [--records bench/results/records.jsonl] [--out bench/RESULTS.md] [--all bench/results/ALL.md]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from records import (  # noqa: E402
    against, baseline, bench_command, budget, Composed, device_speedups, epoch_speedup, finished, GPU_OVER_CORE, image,
    invocations, link_rates, LINK_ROWS, link_sweeps, load, load_invocations, NOISY, phase_median, phase_speedup,
    planned_rows, real_tables, real_time_to_accuracy_plot, relative, row_kind, run_speedup, same_rounds, save_plot,
    section_commands, seed_zero_backprop, speedup_cells, spread, TARGETS, time_to_accuracy,
)
from results_page import short_page  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]


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
    made.append(save_plot(fig, folder / f"{stem}-accuracy.png"))

    with_violation = [r for r in records if any(v for v in r["violation"])]
    if with_violation:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in with_violation:
            epochs = [i + 1 for i, v in enumerate(r["violation"]) if v]
            ax.plot(epochs, [v[0] for v in r["violation"] if v], marker="o", label=f"{r['name']} (cut 0)")
        ax.set(xlabel="epoch", ylabel="relative violation", yscale="log", title="constraint violation per cut")
        ax.legend(fontsize=7)
        made.append(save_plot(fig, folder / f"{stem}-violation.png"))

    sending = [r for r in records if r["bytes_sent"]]
    if sending:
        fig, ax = plt.subplots(figsize=(6, 1 + 0.3 * len(sending)))
        ax.barh([r["name"] for r in sending], [r["bytes_sent"] / len(r["epoch_time_s"]) / 1e9 for r in sending])
        ax.tick_params(axis="y", labelsize=7)
        ax.set(xlabel="GB sent between stages per epoch", title="communication, with and without DS")
        made.append(save_plot(fig, folder / f"{stem}-bytes.png"))

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
        made.append(save_plot(fig, folder / f"{stem}-speedup.png"))
    return made


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
        lines += [image("real budget", save_plot(fig, plot_dir / f"{path.stem}-accuracy.png"), page), ""]
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

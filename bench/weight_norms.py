"""Norms of a run's convolution weights against a backprop run's, from their committed checkpoints.

Every convolution of these networks feeds a batch norm, so the network computes the same function
at any scale of such a weight, but SGD's step turns it by about lr·|g|/|w|: a weight twice as long
learns at a quarter of the rate. This compares how long the weights of hybrid runs are against
backprop's at the same epoch (the checkpoints a run folder has committed):

    python bench/weight_norms.py BACKPROP_RUN RUN [RUN ...] [--out bench/results/weight-norms.md]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lpfast import checkpoint as ckpt


def conv_norms(run: Path) -> tuple[int, list[tuple[str, float]]]:
    """The committed epoch of ``run`` and the norm of every 4-d weight, in the network's order
    (stage by stage for a layer-parallel run)."""
    done = ckpt.committed(run)
    if done is None:
        raise SystemExit(f"{run} has no committed checkpoint")
    norms = []
    for rank in range(done["world"]):
        state = torch.load(ckpt.rank_checkpoint(run, rank, done["epoch"], done["step"]), map_location="cpu", weights_only=False)
        parts = ({"": state["model"]} if "model" in state
                 else {f"stage{s}.": weights for s, weights in sorted(state["layer_parallel"]["stages"].items())})
        for prefix, weights in parts.items():
            norms += [(prefix + name, w.float().norm().item()) for name, w in weights.items() if w.ndim == 4]
    return done["epoch"], norms


def label(run: Path, epoch: int) -> str:
    config = ckpt.read_config(run)
    method = "backprop" if config["method"] == "serial" else f"{config['method']}, {config['parallel_epochs']} parallel"
    return f"{run.name} ({method}, epoch {epoch})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="a backprop run folder")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders of the same model to compare with it")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    base_epoch, base = conv_norms(args.baseline)
    columns = []
    for run in args.runs:
        epoch, norms = conv_norms(run)
        if len(norms) != len(base):
            raise SystemExit(f"{run} has {len(norms)} convolution weights, {args.baseline} {len(base)}: not the same model")
        columns.append((label(run, epoch), norms))
    lines = [f"| weight | {label(args.baseline, base_epoch)}: norm | " + " | ".join(f"{name}: ratio" for name, _ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for i, (_, norm) in enumerate(base):
        lines.append(f"| {columns[0][1][i][0]} | {norm:.3f} | "
                     + " | ".join(f"{norms[i][1] / norm:.2f}" for _, norms in columns) + " |")
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.out is not None:
        args.out.write_text(table)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The real-budget campaign: full training sets, tens of epochs. It takes many hours on 2 cores, more
# than one session and often more than one machine, so it is built to be stopped anywhere and
# continued, on this machine or a new one:
#
#   bench/real_budgets.sh            # start the campaign at this checkout's commit, or continue it
#
# The code is pinned: the first call clones this repository at its current commit (or, where a
# snapshot exists, at the commit the snapshot's invocation started at) into $CAMPAIGN/src and builds
# it there, and every later call runs that clone, so every epoch of the campaign runs the same code.
# Run folders (checkpoints, λ stores of 1.6 GB per cut) live in $CAMPAIGN/runs, outside the work
# tree. The rows run one after another (--order sequential), and each invocation keeps a snapshot
# in bench/campaign/NAME (options, metrics, and the checkpoints of rows holding no λ), committed
# with its tables in this checkout: on a new machine, where $CAMPAIGN is gone, the runs folder is
# restored from the snapshot and continued; only a row caught in its parallel phase starts over.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
CAMPAIGN="${LPFAST_CAMPAIGN:-$HOME/lpfast-campaign}"
DATA="${LPFAST_DATA:-$(cd "$REPO/.." && pwd)/shared/data}"
SNAPSHOTS="$REPO/bench/campaign"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CAMPAIGN/runs"
if [ ! -d "$CAMPAIGN/src" ]; then
    pinned="$("$PYTHON" -c 'import json, pathlib, sys; found = sorted(pathlib.Path(sys.argv[1]).glob("*/invocation.json"))
print(json.loads(found[0].read_text())["commit"] if found else "")' "$SNAPSHOTS")"
    git clone -q "$REPO" "$CAMPAIGN/src"
    if [ -n "$pinned" ]; then
        git -C "$CAMPAIGN/src" checkout -q "$pinned"
    fi
fi
echo "campaign code: $(git -C "$CAMPAIGN/src" rev-parse HEAD) in $CAMPAIGN/src"
make -C "$CAMPAIGN/src" build LPFAST_CUDA=0 PYTHON="$PYTHON" >/dev/null

# name | lpfast bench options: one invocation each, run in this order; rows in the order given.
COMMON="--epochs 30 --parallel-epochs 15 --order sequential --snapshot-every 30"
INVOCATIONS=(
    "cifar10-resnet20|real --model resnet20 --dataset cifar10 $COMMON --rows serial-K,penalty,al,penalty+ds,al+ds,serial-K+seed1,penalty+net,penalty+share0.25,penalty+share0.75"
    "cifar100-resnet20|real --model resnet20 --dataset cifar100 $COMMON --rows serial-K,penalty,al,penalty+ds,serial-K+seed1"
    "cifar10-resnet56|real --model resnet56 --dataset cifar10 $COMMON --rows serial-K,penalty,penalty+ds"
)
cd "$CAMPAIGN/src"
WHERE=(--out "$REPO/bench/results" --data-dir "$DATA" --commit-results)
for entry in "${INVOCATIONS[@]}"; do
    name="${entry%%|*}"
    folder="$(ls -d "$CAMPAIGN/runs/$name"/*/ 2>/dev/null | head -1 || true)"
    if [ -z "$folder" ] && [ -f "$SNAPSHOTS/$name/invocation.json" ]; then
        stamp="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["stamp"])' "$SNAPSHOTS/$name/invocation.json")"
        folder="$CAMPAIGN/runs/$name/restored-$stamp/"
        mkdir -p "$folder"
        cp -r "$SNAPSHOTS/$name/." "$folder"
        echo "restored $folder from the snapshot $SNAPSHOTS/$name"
    fi
    if [ -n "$folder" ]; then
        .venv/bin/python -m lpfast bench --continue "$folder" --snapshot "$SNAPSHOTS/$name" "${WHERE[@]}"
    else
        # shellcheck disable=SC2086
        .venv/bin/python -m lpfast bench ${entry#*|} --runs-dir "$CAMPAIGN/runs/$name" --snapshot "$SNAPSHOTS/$name" \
            "${WHERE[@]}" --port 29571
    fi
done

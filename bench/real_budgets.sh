#!/usr/bin/env bash
# The real-budget campaign: full training sets, tens of epochs, every row interleaved one epoch at a
# time. It takes many hours on 2 cores, so it is built to be stopped anywhere and continued:
#
#   bench/real_budgets.sh            # start the campaign at this checkout's commit, or continue it
#
# The code is pinned: the first call clones this repository at its current commit into
# $CAMPAIGN/src and builds it there, and every later call (from any checkout) runs that clone, so
# every epoch of the campaign runs the same code. Run folders (checkpoints, λ stores of 1.6 GB per
# cut) live in $CAMPAIGN/runs, outside the work tree; the round tables go to this checkout's
# bench/results and are committed there after every round (--commit-results).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
CAMPAIGN="${LPFAST_CAMPAIGN:-$HOME/lpfast-campaign}"
DATA="${LPFAST_DATA:-$(cd "$REPO/.." && pwd)/shared/data}"
mkdir -p "$CAMPAIGN/runs"
if [ ! -d "$CAMPAIGN/src" ]; then
    git clone -q "$REPO" "$CAMPAIGN/src"
fi
echo "campaign code: $(git -C "$CAMPAIGN/src" rev-parse HEAD) in $CAMPAIGN/src"
make -C "$CAMPAIGN/src" build LPFAST_CUDA=0 PYTHON="${PYTHON:-python3}" >/dev/null

# name | lpfast bench options: one invocation each, run in this order.
INVOCATIONS=(
    "cifar10-resnet20|real --model resnet20 --dataset cifar10 --epochs 30 --parallel-epochs 15"
    "cifar100-resnet20|real --model resnet20 --dataset cifar100 --epochs 30 --parallel-epochs 15 --rows serial-K,serial-K+seed1,penalty,al,penalty+ds"
    "cifar10-resnet56|real --model resnet56 --dataset cifar10 --epochs 30 --parallel-epochs 15 --rows serial-K,penalty,penalty+ds"
)
cd "$CAMPAIGN/src"
for entry in "${INVOCATIONS[@]}"; do
    name="${entry%%|*}"
    folder="$(ls -d "$CAMPAIGN/runs/$name"/*/ 2>/dev/null | head -1 || true)"
    if [ -n "$folder" ]; then
        .venv/bin/python -m lpfast bench --continue "$folder" --commit-results
    else
        # shellcheck disable=SC2086
        .venv/bin/python -m lpfast bench ${entry#*|} --data-dir "$DATA" --out "$REPO/bench/results" \
            --runs-dir "$CAMPAIGN/runs/$name" --commit-results --port 29571
    fi
done

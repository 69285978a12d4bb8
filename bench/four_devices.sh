#!/usr/bin/env bash
# Four devices on two cores: each worker a device of half a core (--device-share 0.5: a cgroup CPU
# quota of its own, two devices pinned to each core), as two hosts of two devices joined by a
# shaped link where --slow-link is given. Timing runs: stop the accuracy campaign first
# (pkill -f real_budgets.sh; pkill -f "lpfast bench"), and run nothing else beside them.
#
#   bench/four_devices.sh NAME [NAME ...]     # the invocations below, in the order given
#
# Each writes its interleaved table (bench/results/four-devices/devices-MODEL-cifar10-...-TAG.{json,md})
# and appends its records to bench/results/four-devices/records.jsonl (apart from the two-device
# records that bench/report.py tabulates); commit them after each. The device model was checked with
# quota-half against quota-full run right after it (bench/results/narrative.md, 2026-12-07).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA="${LPFAST_DATA:-$(cd "$REPO/.." && pwd)/shared/data}"
SPEED="--dataset cifar10 --train-subset 10000 --epochs 3 --data-dir $DATA"
# The device model's check: the K=2 rows' speed-ups over one device at full cores and at half a core.
K2="--workers 2 --rows serial-1,ddp,penalty+pipe+share1"
# Every peer on four devices: backprop on one, DDP, the pipeline schedules (8 micro-batches), lpfast
# K=4 and 2 stages × 2 replicas (DS at the cut after block 3 for ResNet-20, where the filter keeps
# accuracy), each placement of the 2 × 2 over a link.
FOUR="--workers 4 --device-share 0.5 --micro-batches 8"
ROWS="serial-1,ddp,gpipe,1f1b,penalty+pipe+share1,penalty+pipe+ds+share1,penalty+pipe+share1+d2+k2,penalty+pipe+ds+share1+d2+k2+cut3-6"
LINKED="$ROWS,penalty+pipe+share1+d2+k2+rt,penalty+pipe+ds+share1+d2+k2+cut3-6+rt"
# The looped schedules (two stages a worker: 8 stages on four): ResNet-20's 9 blocks take them,
# WRN-16-4's 6 do not.
LOOPED="interleaved-1f1b,zero-bubble"
# WRN-16-4 at K=4 takes the cut `lpfast plan` finds fastest, 1+1+2+2 (lpfast train's FLOPs-balanced
# 2+1+2+1 leaves its first stage a fifth slower: its 32×32 blocks cost more than their FLOPs), for
# lpfast's K=4 rows and the pipelines alike; its 2 × 2 the default 3+3. Its test-set evaluation on a
# half-core device outweighs an epoch's training, and per-epoch speed is the measure: 1000 test images.
WRN_CUT=cut1-1-2-2
WRN_ROWS="serial-1,ddp,gpipe+$WRN_CUT,1f1b+$WRN_CUT,penalty+pipe+share1+$WRN_CUT,penalty+pipe+ds+share1+$WRN_CUT,penalty+pipe+share1+d2+k2,penalty+pipe+ds+share1+d2+k2"
WRN_LINKED="$WRN_ROWS,penalty+pipe+share1+d2+k2+rt,penalty+pipe+ds+share1+d2+k2+rt"
WRN="--model wrn_16_4 $SPEED --test-subset 1000 $FOUR"
declare -A INVOCATIONS=(
    [quota-full]="--model resnet20 $SPEED $K2 --tag quota-check"
    [quota-half]="--model resnet20 $SPEED $K2 --device-share 0.5 --tag quota-check"
    [r20-loopback]="--model resnet20 $SPEED $FOUR --rows $ROWS,$LOOPED --tag four"
    [r20-loopback-looped]="--model resnet20 $SPEED $FOUR --rows serial-1,ddp,1f1b,$LOOPED,penalty+pipe+share1+d2+k2 --tag four-looped"
    [r20-1gbit]="--model resnet20 $SPEED $FOUR --rows $LINKED,$LOOPED --slow-link 1gbit --tag four"
    [r20-100mbit]="--model resnet20 $SPEED $FOUR --rows $LINKED,$LOOPED --slow-link 100mbit --tag four"
    [wrn-loopback]="$WRN --rows $WRN_ROWS --tag four"
    [wrn-1gbit]="$WRN --rows $WRN_LINKED --slow-link 1gbit --tag four"
    [wrn-100mbit]="$WRN --rows $WRN_LINKED --slow-link 100mbit --tag four"
)
[ $# -gt 0 ] || { echo "usage: $0 NAME [NAME ...] (names: ${!INVOCATIONS[*]})" >&2; exit 2; }
for name in "$@"; do
    [ -n "${INVOCATIONS[$name]:-}" ] || { echo "unknown invocation $name (names: ${!INVOCATIONS[*]})" >&2; exit 2; }
done
for name in "$@"; do
    echo "== $name"
    # shellcheck disable=SC2086
    (cd "$REPO" && .venv/bin/python -m lpfast bench devices ${INVOCATIONS[$name]} --out bench/results/four-devices --port 29581)
done

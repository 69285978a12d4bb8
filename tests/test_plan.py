"""lpfast plan: the §8 predictions from block costs, and byte and memory counts equal to what
LayerParallel really sends and holds."""
import json
import subprocess
import sys

import pytest
import torch

from lpfast.filters import DsFilter
from lpfast.models import mnist_resnet
from lpfast.parallel import LayerParallel
from lpfast.plan import DDP_BUCKET_BYTES, PartCosts, _link_loads, best_layouts, link_bytes_per_s, measure, predict


def synthetic(regress=(0.0, 0.0, 0.0), own=(0.0, 0.0, 0.0), part_bytes=(250, 250, 250, 250), micro=(0.25, 0.5)) -> PartCosts:
    return PartCosts(forward_s=[1.0] * 4, backward_s=[2.0] * 4, micro_forward_s=[micro[0]] * 4, micro_backward_s=[micro[1]] * 4,
                     cut_regress_s=list(regress), cut_lambda_s=list(own), cut_shapes=[(8, 4, 4)] * 3, part_parameter_bytes=list(part_bytes),
                     batch_size=12, micro_batch_size=3)


def test_predictions_follow_the_cost_model():
    p = predict(synthetic(), 2, link=None, micro_batches=4, parallel_share=0.5)
    assert p.cut == [2, 2] and p.fastest and p.serial_step_s == 12.0
    assert p.parallel_speedup == 2.0  # two stages of 6 s at once
    assert p.pipeline_speedup == pytest.approx(12 / (5 * 6 / 4))  # (M + K - 1) micro-batch steps of 1.5 s
    assert p.gpipe_speedup == pytest.approx(p.pipeline_speedup)  # the same bubble when messages are free
    assert p.ddp_speedup == 2.0  # forward and backward halved, the all-reduce free without a link
    assert p.sph_speedup == pytest.approx(1 / (0.5 / 2.0 + 0.5 / p.pipeline_speedup))
    # The method's work moves the best cut: with 5 s of work before the cut after block 2 and 1 s
    # before the one after block 3, the slowest stage of 2+2 takes 11 s, of 3+1 10 s, of 1+3 9 s.
    assert predict(synthetic(regress=(0.0, 5.0, 1.0)), 2, link=None).cut == [1, 3]
    # Pipelined λ does no work at the cut: its step on 1+3 is the 9 s stage alone, without the 2 s of
    # λ work the second stage does after the first block's cut.
    p = predict(synthetic(regress=(0.0, 5.0, 1.0), own=(2.0, 0.0, 0.0)), 2, cut=[1, 3], link=None)
    assert p.parallel_step_s == 11.0 and p.pipelined_step_s == 9.0 and p.pipelined_speedup == pytest.approx(12 / 9)


def test_a_slow_link_bounds_the_step_and_ds_shrinks_its_bytes():
    # One cut: 12 samples × 128 elements × 4 bytes each way per step.
    p = predict(synthetic(), 2, link=6144 / 12.0)
    assert p.bytes_per_step == 2 * 12 * 128 * 4
    assert p.bytes_per_step_ds == p.bytes_per_step // 8  # s = 2 pooling and a bfloat16 wire
    # Output forward and target back take 12 s each way (a full-duplex link), more than a stage's 6 s of compute.
    assert p.parallel_step_s == pytest.approx(12.0)
    # Pipelined λ: the output's way to the last stage, its 6 s, the gradient's way back and the first
    # stage's 6 s lie on a cycle two steps long (lpfast.timeline), so a step takes 6 + 12 s.
    assert p.pipelined_step_s == pytest.approx(6.0 + 12.0)
    assert p.pipelined_ds_step_s == pytest.approx(6.0 + 1.5)  # an eighth of the bytes: 1.5 s each way
    assert p.ddp_allreduce_bytes == 1000  # 2(K-1)/K of the parameters' bytes
    # 1000 bytes fill no bucket before the backward's end: all of the all-reduce (~2 s) follows it.
    assert p.ddp_step_s == pytest.approx(2.0 + 4.0 + 1000 * 12 / 6144)


def test_a_micro_batch_costs_what_was_measured_at_its_size():
    # Measured: 1 s forward at 12 samples, 0.5 s at 3 (not the quarter, 0.25 s: a fixed cost per call).
    costs = synthetic(micro=(0.5, 1.0))
    assert costs.at_fraction(1.0, 0.5, 4) == pytest.approx(0.5)  # at the measured size
    assert costs.at_fraction(1.0, 0.5, 2) == pytest.approx(0.5 + 0.5 / 9 * 3)  # on the line through both sizes
    assert costs.at_fraction(1.0, 0.5, 12) == pytest.approx(0.5 - 0.5 / 9 * 2)  # below: on the line, here above 3's cost per sample
    # A part whose small batch fits a cache: 0.2 s at 3 samples, under the share of 12's 1 s. Between the
    # sizes on the line (6 samples: under their share, 0.5 s), below them at 3's cost per sample.
    assert costs.at_fraction(1.0, 0.2, 2) == pytest.approx(0.2 + 0.8 / 9 * 3)
    assert costs.at_fraction(1.0, 0.2, 12) == pytest.approx(0.2 / 3)
    # Two stages of 2 blocks: a micro-batch's step 1 + 2 s on each, five of them in the pipeline.
    assert predict(costs, 2, link=None).pipeline_step_s == pytest.approx(5 * 3.0)
    # A DDP worker and a replica take half the batch, 6 samples: a block's step costs what the line says there.
    half = 0.5 + 0.5 / 9 * 3 + 1.0 + 1.0 / 9 * 3
    assert predict(costs, 2, link=None).ddp_step_s == pytest.approx(4 * half)
    assert predict(costs, 2, cut=[2, 2], link=None, replicas=2).pipelined_step_s == pytest.approx(2 * half)


def test_a_parallel_step_in_parts_costs_its_parts():
    # Parts at the measured 3 samples: where a part costs its share (0.25 + 0.5 s a block), 4 parts
    # cost what one batch does; with a fixed cost per call (0.5 + 1 s a block) they cost twice it.
    for micro, step in (((0.25, 0.5), 6.0), ((0.5, 1.0), 12.0)):
        p = predict(synthetic(micro=micro), 2, cut=[2, 2], link=None, parallel_micro_batches=4)
        assert p.pipelined_step_s == pytest.approx(step) and p.parallel_step_s == pytest.approx(step)
        assert p.parallel_micro_batches == 4
    # On a slow link a part's message is a quarter of the batch's: the two-step cycle of output,
    # last stage, gradient and first stage (lpfast.timeline) is 1.5 + 3 + 1.5 + 3 s a part, 18 s a
    # batch as in one part; the bytes a step are the batch's.
    p = predict(synthetic(), 2, link=6144 / 12.0, parallel_micro_batches=4)
    assert p.pipelined_step_s == pytest.approx(18.0) and p.bytes_per_step == 2 * 12 * 128 * 4
    with pytest.raises(ValueError, match=r"parallel_micro_batches must be >= 1 and divide a replica's batch \(6\), got 4"):
        predict(synthetic(), 2, link=None, replicas=2, parallel_micro_batches=4)


@pytest.mark.parametrize("bucket_s, step_s", [(2.0, 6.0), (5.0, 8.0)])
def test_ddp_overlaps_a_bucket_with_the_backward_that_follows_it(bucket_s, step_s):
    # The last block holds 1 MiB, DDP's first bucket: ready after the first 1 s of the 4 s backward
    # on each of two devices, and all-reduced while the other 3 s run (or for as long as it takes).
    costs = synthetic(part_bytes=(0, 0, 0, 1 << 20))
    p = predict(costs, 2, link=(1 << 20) / bucket_s)
    assert p.ddp_step_s == pytest.approx(step_s)  # 2 s of forward, then the backward or the bucket, whichever ends later


def test_ddp_buckets_are_torchs_defaults():
    import torch.distributed as dist
    from torch.nn.parallel import distributed

    assert DDP_BUCKET_BYTES == (dist._DEFAULT_FIRST_BUCKET_BYTES, distributed._DEFAULT_BUCKET_CAP_MB * 2**20)


def test_replicas_share_the_batch_and_all_reduce_their_stages_gradient():
    costs = synthetic(part_bytes=(0, 0, 0, 1 << 20))
    one = predict(costs, 2, cut=[2, 2], link=None)
    two = predict(costs, 2, cut=[2, 2], link=None, replicas=2)
    # Messages and all-reduces free: each replica's stages do half the batch's work.
    assert two.devices == 4 and two.pipelined_step_s == pytest.approx(one.pipelined_step_s / 2)
    assert two.bytes_per_step == one.bytes_per_step // 2 and one.allreduce_bytes_per_device is None
    assert two.allreduce_bytes_per_device == [0, 1 << 20]  # 2(D-1)/D of each stage's parameters: all of the last stage's
    assert two.ddp_step_s == predict(costs, 4, link=None).ddp_step_s  # DDP on the same four devices
    # Over a link, 1 MiB taking 3 s: the last stage's bucket leaves after its last block's 1 s of backward
    # (at half the batch) and outlasts the other block's 1 s by 2 s, which its step then takes longer.
    slow = predict(costs, 2, cut=[2, 2], link=(1 << 20) / 3.0, replicas=2)
    free_messages = predict(costs, 2, cut=[2, 2], link=(1 << 20) / 3.0)
    assert slow.pipelined_step_s == pytest.approx(free_messages.pipelined_step_s / 2 + 2.0, rel=0.01)
    # The best layout per device count: here four devices do best as 2 × 2 (K=4 on whole batches
    # would pipeline 4 deep).
    best = best_layouts([one, two, predict(costs, 4, link=None, parallel_micro_batches=1)])
    assert list(best) == [2, 4] and best[2][0] is one and best[4][0] is two
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        predict(costs, 2, link=None, replicas=0)


def test_on_machines_only_what_passes_between_them_takes_the_link():
    # Per traffic, the copies that leave the busiest machine at once (0: it stays within machines):
    # (per cut, per stage's all-reduce, DDP's ring).
    assert _link_loads(2, 2, None, "stages-together") == ([1], [1, 1], 1)  # every device a machine: as without hosts
    assert _link_loads(2, 2, 1, "stages-together") == ([0], [0, 0], 0)  # one machine: nothing on the link
    assert _link_loads(2, 2, 2, "stages-together") == ([0], [2, 2], 1)  # a replica a machine: both stages' all-reduces cross
    assert _link_loads(2, 2, 2, "replicas-together") == ([2], [0, 0], 1)  # a stage a machine: the cut in both replicas crosses
    assert _link_loads(4, 1, 2, "stages-together") == ([0, 1, 0], [0, 0, 0, 0], 1)  # only the middle cut crosses
    assert _link_loads(2, 4, 2, "stages-together") == ([0], [2, 2], 1)  # each ring of four leaves each machine once
    # One cut's message is 6 samples × 128 elements × 4 bytes per replica, 6 s at 512 bytes/s; no parameters.
    costs, link = synthetic(part_bytes=(0, 0, 0, 0)), 512.0
    together = predict(costs, 2, cut=[2, 2], link=link, replicas=2, hosts=2)
    apart = predict(costs, 2, cut=[2, 2], link=link, replicas=2, hosts=2, placement="replicas-together")
    assert together.pipelined_step_s == pytest.approx(3.0)  # half the batch's 6 s of compute, the messages on loopback
    # Both replicas' messages leave the first machine at once: 12 s each way on a cycle with the two
    # stages' 3 s, two steps long (as in test_a_slow_link_bounds_the_step_and_ds_shrinks_its_bytes).
    assert apart.pipelined_step_s == pytest.approx(3.0 + 12.0)
    assert predict(costs, 2, cut=[2, 2], link=link, replicas=2, hosts=1).pipelined_step_s == pytest.approx(3.0)
    assert best_layouts([apart, together])[4][0] is together
    with pytest.raises(ValueError, match="hosts must be >= 1 and divide the 4 devices"):
        predict(costs, 2, link=link, replicas=2, hosts=3)
    with pytest.raises(ValueError, match="placement must be one of"):
        predict(costs, 2, link=link, replicas=2, hosts=2, placement="mixed")


def test_a_cut_must_fit_the_model():
    with pytest.raises(ValueError, match="at least one of the model's 4 blocks"):
        predict(synthetic(), 2, cut=[4, 0], link=None)


def test_the_sph_run_takes_the_aux_lpfast_train_would():
    # 1 s of λ work at the cut: stored λ's parallel step is 7 s, pipelined λ's 6 s (no work at the cut).
    costs = synthetic(own=(0.0, 1.0, 0.0))
    serial_phase = predict(costs, 2, link=None).pipeline_step_s
    for method, aux, parallel in (("penalty", None, 6.0), ("penalty", "store", 7.0), ("al", None, 7.0)):
        assert predict(costs, 2, cut=[2, 2], link=None, method=method, aux=aux).sph_speedup == pytest.approx(12 / (0.5 * parallel + 0.5 * serial_phase))
    with pytest.raises(ValueError, match="penalty method only"):
        predict(costs, 2, link=None, method="al", aux="pipelined")


def test_micro_batches_must_divide_the_batch():
    with pytest.raises(ValueError, match=r"micro_batches \(3\) must be >= 1 and divide batch_size \(16\)"):
        measure(mnist_resnet(), (1, 28, 28), batch_size=16, micro_batches=3, repeats=1)


def test_link_rates():
    assert link_bytes_per_s("1gbit") == 1.25e8 and link_bytes_per_s("100mbit") == 1.25e7 and link_bytes_per_s(None) is None
    with pytest.raises(ValueError, match="like 10mbit"):
        link_bytes_per_s("fast")


@pytest.mark.parametrize("method, ds", [("penalty", False), ("al", False), ("penalty", True)])
def test_bytes_and_memory_are_what_layer_parallel_sends_and_holds(method, ds):
    torch.manual_seed(0)
    model = mnist_resnet()
    costs = measure(model, (1, 28, 28), batch_size=16, micro_batches=4, repeats=1)
    assert costs.micro_batch_size == 4 and len(costs.micro_forward_s) == len(costs.forward_s) == 8
    p = predict(costs, 2, cut=[3, 5], link=None, dataset_size=48, method=method, aux="store")
    lp = LayerParallel(model, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.01), stages=[3, 5], method=method, aux="store", dataset_size=48,
                       input_shape=(1, 28, 28), wire_filter=DsFilter(2, torch.bfloat16) if ds else None)
    x, y, idx = torch.randn(16, 1, 28, 28), torch.arange(16) % 10, torch.arange(16)
    lp.initialise([(x, idx)])
    before = sum(n for (phase, _, _), n in lp.transport.sent_bytes.items() if phase == "parallel")
    lp.step(x, y, idx)
    sent = sum(n for (phase, _, _), n in lp.transport.sent_bytes.items() if phase == "parallel") - before
    assert sent == (p.bytes_per_step_ds if ds else p.bytes_per_step)
    assert lp.aux_nbytes() == sum(p.aux_bytes_per_stage)
    assert costs.parameter_bytes == sum(q.numel() * q.element_size() for q in model.parameters())  # every block's, counted once
    # lpfast train's default for the method: pipelined λ for penalty holds no λ at all, AL the store.
    assert sum(predict(costs, 2, cut=[3, 5], link=None, dataset_size=48, method=method).aux_bytes_per_stage) == (lp.aux_nbytes() if method == "al" else 0)


def test_plan_command_writes_its_predictions(tmp_path):
    out = tmp_path / "plan.json"
    result = subprocess.run([sys.executable, "-m", "lpfast", "plan", "--model", "mnist_resnet", "--input-shape", "1,28,28", "--stages", "2,4",
                             "--batch-size", "16", "--repeats", "1", "--link", "1gbit", "--replicas", "1,2", "--hosts", "2", "--parallel-micro-batches", "2", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    # Per K, D and placement (both where the layout has stages and replicas on two machines) the
    # fastest cut, then lpfast train's default where that is another.
    ks = [p["stages"] for p in record["predictions"]]
    assert sorted(set(ks)) == [2, 4] and ks == sorted(ks) and record["hosts"] == 2
    for k in (2, 4):
        for d in (1, 2):
            placements = ("stages-together", "replicas-together") if d > 1 else ("stages-together",)
            assert {p["placement"] for p in record["predictions"] if p["stages"] == k and p["replicas"] == d} == set(placements)
            for placement in placements:
                mine = [p for p in record["predictions"] if p["stages"] == k and p["replicas"] == d and p["placement"] == placement]
                assert mine[0]["fastest"] and any(p["default"] for p in mine) and len(mine) == (1 if mine[0]["default"] else 2)
                assert all(sum(p["cut"]) == 8 and p["parallel_speedup"] > 0 and p["hosts"] == 2 and p["parallel_micro_batches"] == 2
                           for p in mine)
                assert (mine[0]["allreduce_bytes_per_device"] is None) == (d == 1)
    assert "| 4 × 1 |" in result.stdout and "| 2 × 2 (a stage's replicas on one machine, --placement replicas-together) |" in result.stdout
    assert "Best on 4 device(s): " in result.stdout and "Best on 8 device(s): 4 stages × 2 replicas" in result.stdout
    for args, message in ((["--stages", "9"], "between 1 and the model's 8 blocks"), (["--input-shape", "1,28"], "one sample's C,H,W"),
                          (["--input-shape", "1,0,28"], "does not fit the model"), (["--hosts", "2"], "give the link's rate too"),
                          (["--hosts", "3", "--link", "1gbit"], "hosts (3) must divide every layout's devices")):
        bad = subprocess.run([sys.executable, "-m", "lpfast", "plan", "--model", "mnist_resnet", "--input-shape", "1,28,28", *args],
                             capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr

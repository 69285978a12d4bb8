"""Mixed precision (lpfast.precision): autocast in every phase, fp16's loss scale, exact resume."""
import copy

import pytest
import torch
import torch.nn.functional as F

from lpfast.config import TrainConfig
from lpfast.models import mnist_resnet
from lpfast.parallel import LayerParallel
from lpfast.precision import LossScaler
from lpfast.trainer import Trainer
from test_parallel import run_both_ways, small_data, tensors

BATCH = 16


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BATCH, 1, 28, 28, generator=g), torch.randint(0, 10, (BATCH,), generator=g)) for _ in range(n)]


def model():
    torch.manual_seed(0)
    return mnist_resnet(depth=4, width=4)


def assert_same_modules(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def autocast_backprop_step(net, optimizer, x, y):
    """One step of backprop as torch's AMP recipe writes it (bfloat16: no scaler)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(x)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def test_pipelined_bf16_steps_equal_autocast_written_out_by_hand():
    net = model()
    lp = LayerParallel(net, optimizer=sgd, stages=2, input_shape=(1, 28, 28), autocast=torch.bfloat16)
    first, second = (copy.deepcopy(s) for s in lp.stages)  # the same stages, trained by hand below
    data = batches(2)
    for x, y in data:
        lp.step(x, y)
    lp.drain()

    # By hand: stage 0 forwards both batches before its first (one step late) update, so both
    # forwards use its initial weights; stage 1 trains on each batch as it arrives.
    opt0, opt1 = sgd(first.parameters()), sgd(second.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = [first(x) for x, _ in data]
    grads = []
    for out, (_, y) in zip(outs, data):
        inp = out.detach().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = second(inp)
        opt1.zero_grad(set_to_none=True)
        F.cross_entropy(logits.float(), y).backward()
        opt1.step()
        grads.append(torch.autograd.grad(out, list(first.parameters()), inp.grad))
    for step_grads in grads:
        for p, g in zip(first.parameters(), step_grads):
            p.grad = g
        opt0.step()
    assert outs[0].dtype == torch.bfloat16
    assert_same_modules(lp.stages[0], first)
    assert_same_modules(lp.stages[1], second)
    # What crossed the cut went in the dtype the forward produced: 2 bytes an element, both ways.
    per_batch = BATCH * outs[0][0].numel() * 2
    assert lp.transport.sent_bytes[("parallel", 0, 1)] == lp.transport.sent_bytes[("parallel", 1, 0)] == 2 * per_batch


def test_one_stage_and_the_serial_phase_in_bf16_are_autocast_backprop():
    data = batches(3, seed=1)
    reference = model()
    reference_opt = sgd(reference.parameters())
    for x, y in data:
        autocast_backprop_step(reference, reference_opt, x, y)
    one_stage, two_stages = model(), model()  # LayerParallel trains them in place
    k1 = LayerParallel(one_stage, optimizer=sgd, stages=1, input_shape=(1, 28, 28), autocast=torch.bfloat16)
    k2 = LayerParallel(two_stages, optimizer=sgd, stages=2, input_shape=(1, 28, 28), autocast=torch.bfloat16)
    for x, y in data:
        k1.step(x, y)
        k2.serial_step(x, y)
    assert_same_modules(one_stage, reference)
    assert_same_modules(two_stages, reference)


def test_fp16_overflow_is_skipped_and_backs_off_as_grad_scaler_does():
    data = batches(4, seed=2)
    ours_net, theirs_net = model(), model()
    ours_opt, theirs_opt = sgd(ours_net.parameters()), sgd(theirs_net.parameters())
    ours, theirs = LossScaler(torch.device("cpu")), torch.amp.GradScaler("cpu")
    for step, (x, y) in enumerate(data):
        for net, opt, scale in ((ours_net, ours_opt, lambda loss: loss * ours.scale), (theirs_net, theirs_opt, theirs.scale)):
            with torch.autocast("cpu", dtype=torch.float16):
                logits = net(x)
            opt.zero_grad(set_to_none=True)
            scale(F.cross_entropy(logits.float(), y)).backward()
            if step in (0, 2):  # an overflow, on the first step (no momentum yet) and on a later one
                next(net.parameters()).grad[0] = float("inf")
        ours.step(ours_opt, list(ours_net.parameters()))
        theirs.step(theirs_opt)
        ours.update(ours.overflows.item(), 1)
        theirs.update()
        assert ours.scale == theirs.get_scale()
        assert_same_modules(ours_net, theirs_net)
        for p, q in zip(ours_net.parameters(), theirs_net.parameters()):
            mine, their = ours_opt.state[p].get("momentum_buffer"), theirs_opt.state[q].get("momentum_buffer")
            if their is not None:
                torch.testing.assert_close(mine, their, rtol=0, atol=0)
    assert ours.scale == 2.0**16 * 0.5**2  # backed off twice


def test_fp16_pipelined_overflow_leaves_every_stage_unchanged_and_one_scale_backs_off():
    lp = LayerParallel(model(), optimizer=sgd, stages=2, input_shape=(1, 28, 28), autocast=torch.float16)
    lp.precision.scaler.scale = 2.0**60  # every scaled gradient overflows float16
    before = copy.deepcopy(lp.model.state_dict())
    for x, y in batches(2, seed=3):
        lp.step(x, y)
    lp.drain()
    after = lp.model.state_dict()
    for name, value in before.items():
        if "running" not in name and "num_batches" not in name:  # batch norm's statistics move in any forward
            assert torch.equal(value, after[name]), name
    assert lp.update_loss_scale() == 2.0**59
    lp.precision.scaler.scale = 2.0**10  # at a sane scale the steps go through, and the scale stays
    for x, y in batches(2, seed=4):
        lp.step(x, y)
    lp.drain()
    assert lp.update_loss_scale() == 2.0**10
    assert all(not torch.equal(before[name], value) for name, value in lp.model.state_dict().items() if name.endswith("conv1.weight"))


def test_errors():
    with pytest.raises(ValueError, match="needs a loss scale"):
        LayerParallel(model(), optimizer=sgd, stages=2, input_shape=(1, 28, 28), aux="store", dataset_size=8, autocast=torch.float16)
    with pytest.raises(ValueError, match="autocast must be"):
        LayerParallel(model(), optimizer=sgd, stages=2, input_shape=(1, 28, 28), autocast=torch.float64)
    with pytest.raises(ValueError, match="--precision bf16"):
        TrainConfig(method="al", stages=2, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="int8")


@pytest.mark.parametrize("precision, extra", [("fp16", dict(method="penalty")), ("bf16", dict(method="al", aux="store")),
                                              ("fp16", dict(method="serial"))])
def test_mixed_precision_run_resumes_exactly(tmp_path, precision, extra):
    train, test = small_data(64, 16)  # float16 convolutions on a CPU take torch's slow path: few samples
    stages = 1 if extra["method"] == "serial" else 2
    config = TrainConfig(stages=stages, epochs=2, parallel_epochs=1 if stages > 1 else None, batch_size=16, threads=1,
                         precision=precision, **extra)
    def run(out, **kwargs):
        trainer = Trainer(config, tmp_path / out, train_data=train, test_data=test, log=lambda s: None, **kwargs)
        if trainer.precision.scaler is not None:
            trainer.precision.scaler.growth_interval = 2  # the scale grows at every read: its state must resume
        return trainer

    straight = run("a")
    straight.fit()
    run("b").fit(pause_after=1)
    resumed = run("b", resume=True)
    resumed.fit()
    assert_same_modules(straight.model, resumed.model)
    # fp16: the scale moves at every read (grows after 2 clean steps, backs off on an overflow);
    # not restored, the resumed run would start again from the initial scale and end elsewhere.
    assert straight.precision.loss_scale == resumed.precision.loss_scale


@pytest.mark.parametrize("config", [
    dict(method="penalty", epochs=2, parallel_epochs=1, micro_batches=2),  # pipelined λ, then the serial pipeline
    dict(method="al", aux="store", epochs=1, ds_factor=2, ds_mode="bilinear"),  # stored λ and μ through a DS filter
], ids=["pipelined-sph", "al-ds"])
def test_bf16_on_two_workers_equals_one_process(tmp_path, config):
    records, state, workers = run_both_ways(tmp_path, dict(model="mnist_resnet", stages=2, batch_size=32, threads=1,
                                                           precision="bf16", **config))
    # Messages in bfloat16 (through the filter, 16×7×7 a sample; else 16×14×14), one each way per step.
    per_sample = 16 * 7 * 7 if config.get("ds_factor") else 16 * 14 * 14
    assert records[0]["bytes_forward"] == records[0]["bytes_backward"] == [6 * 32 * per_sample * 2]
    for worker in workers:
        single_aux = dict(tensors(state["aux"]))
        for path, value in tensors(worker["state"]["aux"]):
            torch.testing.assert_close(value, single_aux[path], rtol=1e-6, atol=1e-7, msg=path)

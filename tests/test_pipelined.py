"""The pipelined parallel phase (aux="pipelined"): backprop in which stage k's gradient is K-1-k steps late."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from lpfast.config import TrainConfig
from lpfast.describe import describe
from lpfast.filters import DsFilter
from lpfast.models import mnist_resnet
from lpfast.parallel import LayerParallel
from lpfast.pipelined import default_parts
from lpfast.precision import LossScaler
from lpfast.stages import partition, split
from lpfast.trainer import Trainer
from test_parallel import run_both_ways, small_data


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def delayed_backprop(model, batches, k, shape, wire=None, shrink=1.0):
    """The reference, written out: for batch b stage s takes backprop's gradient of the whole
    network evaluated with its weights as they were b - (K-1-s) updates ago (0 at the start),
    times shrink^(K-1-s); with a DS filter ``wire`` the network has decode(encode(.)) at every cut."""
    stages = split(describe(model), partition(describe(model), k, shape))
    optimizers = [sgd(stage.parameters()) for stage in stages]
    history = [[{n: p.detach().clone() for n, p in stage.named_parameters()}] for stage in stages]
    for b, (x, y) in enumerate(batches):
        used = [{n: w.clone().requires_grad_() for n, w in history[s][max(0, b - (k - 1 - s))].items()} for s in range(k)]
        h = x
        for s, stage in enumerate(stages):
            if s > 0 and wire is not None:
                h = wire.decode(wire.encode(h), h.dtype)
            h = functional_call(stage, used[s], (h,))
        F.cross_entropy(h, y).backward()
        for s, stage in enumerate(stages):
            for n, p in stage.named_parameters():
                p.grad = used[s][n].grad * shrink ** (k - 1 - s)
            optimizers[s].step()
            history[s].append({n: p.detach().clone() for n, p in stage.named_parameters()})
    return model


def two_buffered_backprop(model, batches, k, shape, m):
    """The reference for batches in ``m`` parts, written out: part i (of batch i // m) meets at
    stage s the weights stage s had at its forward, i.e. after the updates of the batches whose
    last part j it had finished by then (j + K-1 < i + s); each stage's update sums the gradients
    of its batch's parts, each part's loss weighted by 1/m."""
    stages = split(describe(model), partition(describe(model), k, shape))
    optimizers = [sgd(stage.parameters()) for stage in stages]
    history = [[{n: p.detach().clone() for n, p in stage.named_parameters()}] for stage in stages]
    summed = [{} for _ in stages]
    parts = [part for x, y in batches for part in zip(x.tensor_split(m), y.tensor_split(m))]
    for i, (x, y) in enumerate(parts):
        version = [sum(1 for j in range(m - 1, i, m) if j + k - 1 < i + s) for s in range(k)]
        used = [{n: w.clone().requires_grad_() for n, w in history[s][version[s]].items()} for s in range(k)]
        h = x
        for s, stage in enumerate(stages):
            h = functional_call(stage, used[s], (h,))
        (F.cross_entropy(h, y) * (1 / m)).backward()
        for s in range(k):
            for n, w in used[s].items():
                summed[s][n] = w.grad if n not in summed[s] else summed[s][n] + w.grad
        if i % m == m - 1:
            for s, stage in enumerate(stages):
                for n, p in stage.named_parameters():
                    p.grad = summed[s].pop(n)
                optimizers[s].step()
                history[s].append({n: p.detach().clone() for n, p in stage.named_parameters()})
    return model


@pytest.mark.parametrize("k, m", [(3, 2), (4, 3)])
def test_batches_in_parts_step_each_stage_once_a_batch_on_the_weights_of_each_parts_forward(k, m):
    torch.manual_seed(0)
    model = mnist_resnet(depth=4, width=4).double()
    reference = copy.deepcopy(model)
    train, _ = small_data(n_train=60)
    batches = [(train.images[i:i + 12].double() / 255, train.labels[i:i + 12]) for i in range(0, 60, 12)]
    lp = LayerParallel(model, optimizer=sgd, stages=k, input_shape=(1, 28, 28), aux="pipelined", predict_weights=False)
    for x, y in batches:
        lp.step(x, y, micro_batches=m)
    lp.end_epoch()
    two_buffered_backprop(reference, batches, k, (1, 28, 28), m)
    for (name, mine), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-13, msg=name)
    # Not the one-part run: the first stage's gradient is fewer steps late.
    one_part = copy.deepcopy(reference)
    delayed_backprop(one_part, batches, k, (1, 28, 28))
    assert not torch.allclose(next(one_part.parameters()), next(model.parameters()))
    with pytest.raises(ValueError, match="must divide the batch of 12"):
        lp.step(*batches[0], micro_batches=5)


def test_by_default_pipelined_lambda_takes_the_fewest_parts_that_leave_every_stage_one_step_late():
    assert [default_parts(k, 128) for k in (1, 2, 3, 4, 6, 8)] == [1, 1, 2, 4, 8, 8]  # K-1 rounded up to a divisor
    assert default_parts(8, 100) == 10 and default_parts(4, 127) is None  # none from K-1 to 2(K-1): no default
    assert [TrainConfig(method="penalty", stages=k).parallel_micro_batches for k in (2, 4, 8)] == [1, 4, 8]
    assert TrainConfig(method="penalty", stages=4, replicas=2, batch_size=128).parallel_micro_batches == 4  # of a replica's 64
    assert TrainConfig(method="penalty", stages=4, aux="store").parallel_micro_batches == 1
    assert TrainConfig(method="penalty", stages=4, parallel_micro_batches=1).parallel_micro_batches == 1
    with pytest.raises(ValueError, match="a replica's batch of 127 has no such divisor"):
        TrainConfig(method="penalty", stages=4, batch_size=127)
    # A run saved before the option existed took whole batches, and resumes so.
    saved = TrainConfig(method="penalty", stages=4).to_dict()
    del saved["parallel_micro_batches"]
    assert TrainConfig.from_dict(saved).parallel_micro_batches == 1
    lp = LayerParallel(mnist_resnet(depth=4, width=4), optimizer=sgd, stages=3, input_shape=(1, 28, 28))
    lp.step(torch.rand(12, 1, 28, 28), torch.arange(12) % 10)
    assert lp.pipelined.parts == 2 and all(late <= 1 for late in (lp.pipelined._steps_late(s, p) for s in range(3) for p in range(4)))
    lp.step(torch.rand(6, 1, 28, 28), torch.arange(6) % 10)  # the parts in flight divide a smaller batch: it takes them
    assert lp.pipelined.parts == 2 and not lp.pipelined.empty
    lp.step(torch.rand(7, 1, 28, 28), torch.arange(7) % 10)  # a ragged batch none divides: drained, then whole
    assert lp.pipelined.parts == 1 and lp.steps == 3


def test_a_loss_scale_changed_between_a_batchs_parts_unscales_the_whole_batch_by_one_scale():
    # At K=4 in 4 parts a batch's first part is backpropagated one call of step before its other
    # parts; a loss scale changed in between (fp16's backs off on an overflow) must not count that
    # part at the other scale. A float32 network under a loss scale: powers of two scale exactly.
    train, _ = small_data(n_train=60)
    batches = [(train.images[i:i + 12] / 255, train.labels[i:i + 12]) for i in range(0, 60, 12)]

    def trained(scales):
        torch.manual_seed(0)
        model = mnist_resnet(depth=4, width=4)
        lp = LayerParallel(model, optimizer=sgd, stages=4, input_shape=(1, 28, 28), predict_weights=False)
        lp.precision.scaler = LossScaler(torch.device("cpu"))
        for (x, y), scale in zip(batches, scales):
            lp.precision.scaler.scale = scale
            lp.step(x, y, micro_batches=4)
        lp.drain()
        return model.state_dict()

    steady, changing = trained([2.0**10] * 5), trained([2.0**10, 2.0**12, 2.0**8, 2.0**12, 2.0**10])
    for name, value in steady.items():
        torch.testing.assert_close(changing[name], value, rtol=0, atol=0, msg=name)


def test_a_part_is_late_by_the_batch_ends_between_its_forward_and_its_batchs_step():
    def late(k, m, s, part):
        lp = LayerParallel(mnist_resnet(depth=4, width=4), optimizer=sgd, stages=k, input_shape=(1, 28, 28))
        lp.pipelined._parts = m
        return lp.pipelined._steps_late(s, part)

    assert all(late(4, 1, s, part) == 3 - s for s in range(4) for part in range(6))  # one part a batch: K-1-k steps
    assert [late(3, 2, 0, part) for part in range(6)] == [1, 1, 1, 1, 1, 1]  # the batch before ends after the forward
    assert [late(4, 2, 0, part) for part in range(6)] == [2, 1, 2, 1, 2, 1]  # ceil((K-1)/M) at most
    assert all(late(4, 3, s, part) <= 1 for s in range(4) for part in range(12))  # M >= K-1: one step late at most


@pytest.mark.parametrize("k, ds, shrink", [(2, False, 1.0), (3, False, 1.0), (3, True, 1.0), (3, False, 0.5)])
def test_each_stage_takes_backprops_gradient_with_the_weights_of_its_forward(k, ds, shrink):
    torch.manual_seed(0)
    model = mnist_resnet(depth=4, width=4).double()
    reference = copy.deepcopy(model)
    train, _ = small_data(n_train=60)
    batches = [(train.images[i:i + 12].double() / 255, train.labels[i:i + 12]) for i in range(0, 60, 12)]
    wire = DsFilter(2, None, "bilinear") if ds else None  # float64 on the wire: the comparison stays exact
    lp = LayerParallel(model, optimizer=sgd, stages=k, dataset_size=60, input_shape=(1, 28, 28), aux="pipelined",
                       predict_weights=False, wire_filter=wire, gradient_shrink=shrink)
    for b, (x, y) in enumerate(batches):
        losses = lp.step(x, y, torch.arange(12 * b, 12 * b + 12), micro_batches=1)  # whole batches, as the reference
        assert bool(losses) == (b >= k - 1)  # the last stage trains once the pipeline is full
    with pytest.raises(RuntimeError, match="drain"):
        lp.state_dict()
    lp.end_epoch()  # drains
    delayed_backprop(reference, batches, k, (1, 28, 28), wire, shrink)
    for (name, mine), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-13, msg=name)
    if ds:  # tested as trained, with the filter at every cut, unless asked for the plain network
        x, y = batches[0]

        def reference_loss(filtered: bool) -> float:
            stages = split(describe(reference), partition(describe(reference), k, (1, 28, 28)))
            h = x
            with torch.no_grad():
                for s, stage in enumerate(stages):
                    h = stage.eval()(wire.decode(wire.encode(h), h.dtype) if s > 0 and filtered else h)
            return F.cross_entropy(h, y).item()

        for filtered in (False, True):
            assert lp.evaluate([(x, y)], through_wire=filtered)[0] == pytest.approx(reference_loss(filtered), rel=1e-9)
        assert reference_loss(True) != pytest.approx(reference_loss(False), rel=1e-3)
    # Not plain backprop: the first stage's late gradients change the result.
    fresh = copy.deepcopy(reference)
    delayed_backprop(fresh, batches, 1, (1, 28, 28))
    assert not torch.allclose(next(fresh.parameters()), next(model.parameters()))


@pytest.mark.parametrize("ds", [False, True])
def test_one_process_and_two_workers_agree_and_send_one_activation_each_way_per_batch(tmp_path, ds):
    config = dict(method="penalty", aux="pipelined", stages=2, epochs=2, parallel_epochs=1, batch_size=32, threads=1)
    if ds:
        config |= dict(ds_factor=2, wire_dtype="bfloat16")
    records, _, _ = run_both_ways(tmp_path, config)
    # 6 batches of 32 samples × 16×14×14 float32 each way (with DS 16×7×7 bfloat16, the gradient
    # too); no per-sample store; no violation to report.
    each_way = 6 * 32 * 16 * 7 * 7 * 2 if ds else 6 * 32 * 16 * 14 * 14 * 4
    assert records[0]["bytes_forward"] == records[0]["bytes_backward"] == [each_way]
    assert records[0]["aux_bytes"] == [0] and records[0]["violation"] is None and records[0]["phase"] == "parallel"
    # The pipelined epoch trained the network with the filter in it and is tested so; the serial one without.
    assert [r.get("tested_through_wire", False) for r in records] == [ds, False]


def test_run_resumed_from_a_mid_epoch_checkpoint_gives_the_uninterrupted_numbers(tmp_path, monkeypatch):
    # Every checkpoint drains the pipeline, so a run that checkpoints every 4 steps is the same
    # computation whether or not it was interrupted.
    train, test = small_data()
    config = TrainConfig(method="penalty", aux="pipelined", stages=3, epochs=2, batch_size=32, threads=1, augment=True,
                         checkpoint_every=4)
    straight = Trainer(config, tmp_path / "a", train_data=train, test_data=test, log=lambda s: None)
    straight.fit()
    real, calls = LayerParallel.step, {"n": 0}

    def stopping(*args, **kwargs):  # stop in the 6th step of epoch 1: the checkpoint holds 4 steps
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(LayerParallel, "step", stopping)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "b", train_data=train, test_data=test, log=lambda s: None).fit()
    monkeypatch.undo()
    resumed = Trainer(config, tmp_path / "b", resume=True, train_data=train, test_data=test, log=lambda s: None)
    assert (resumed.epoch, resumed._mid_epoch["step"]) == (0, 4)
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_cli_option_reaches_the_pipelined_phase(tmp_path):
    train, test = small_data(n_train=32, n_test=16)
    config = TrainConfig(method="penalty", stages=3, gradient_shrink=0.25, batch_size=16, threads=1)
    trainer = Trainer(config, tmp_path, train_data=train, test_data=test, log=lambda s: None)
    assert trainer.lp.pipelined.gradient_shrink == 0.25


def test_options_it_cannot_take_are_refused():
    def build(**options):
        return LayerParallel(mnist_resnet(depth=4, width=4), **{"optimizer": sgd, **options}, stages=2, dataset_size=8,
                             input_shape=(1, 28, 28), aux="pipelined")

    assert build().local_loss == 0.0 and build().pipelined.predict_weights  # SGD with momentum: weights predicted
    assert not build(optimizer=torch.optim.Adam).pipelined.predict_weights
    for options in (dict(method="al"), dict(local_loss=1.0), dict(store_filter=DsFilter(2)), dict(restore_norms=True)):
        with pytest.raises(ValueError, match="pipelined"):
            build(**options)
    with pytest.raises(ValueError, match="flips"):
        build().step(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), torch.arange(4), torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="pipelined"):
        TrainConfig(method="al", stages=2, aux="pipelined")
    for shrink in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"gradient_shrink must be in \(0, 1\]"):
            build(gradient_shrink=shrink)
        with pytest.raises(ValueError, match=r"--gradient-shrink must be in \(0, 1\]"):
            TrainConfig(method="penalty", stages=2, gradient_shrink=shrink)
    with pytest.raises(ValueError, match="only aux='pipelined'"):
        LayerParallel(mnist_resnet(depth=4, width=4), optimizer=sgd, stages=2, dataset_size=8, input_shape=(1, 28, 28),
                      aux="store", gradient_shrink=0.5)
    with pytest.raises(ValueError, match="use it with --aux pipelined"):
        TrainConfig(method="penalty", stages=2, aux="store", gradient_shrink=0.5)
    config = TrainConfig(method="penalty", stages=2, aux="pipelined", dataset="cifar10", epochs=4, parallel_epochs=2)
    assert config.local_loss == 0.0 and config.predict_weights and config.use_augmentation(0)  # augmented images in the parallel phase
    assert not TrainConfig(method="penalty", stages=2, aux="pipelined", momentum=0.0).predict_weights
    assert TrainConfig(method="penalty", stages=2, aux="store").local_loss == 3.0


def test_pipelined_is_the_penalty_methods_default():
    assert TrainConfig(method="penalty", stages=2).aux == "pipelined" and TrainConfig(method="al", stages=2).aux == "store"
    torch.manual_seed(0)
    lp = LayerParallel(mnist_resnet(depth=4, width=4), optimizer=sgd, stages=2, input_shape=(1, 28, 28))  # no dataset_size: no store
    assert lp.aux_kind == "pipelined" and lp.aux_nbytes() == 0 and lp.local_loss == 0.0

    def never_read():
        raise AssertionError("initialise read the batches: with pipelined λ there is nothing to fill")
        yield

    lp.initialise(never_read())
    train, _ = small_data(n_train=24)
    x, y = train.images / 255, train.labels
    assert not lp.step(x[:12], y[:12]) and lp.step(x[12:], y[12:])  # no indices needed; the last stage trains from the 2nd step
    with pytest.raises(ValueError, match="aux='store'"):  # what the default refuses says how to get stored λ
        LayerParallel(mnist_resnet(depth=4, width=4), optimizer=sgd, stages=2, input_shape=(1, 28, 28), local_loss=3.0)
    with pytest.raises(ValueError, match="--aux store"):
        TrainConfig(method="penalty", stages=2, parallel_flip=True)
    for method in ("penalty", "al"):
        aux = {"aux": "store"} if method == "penalty" else {}
        with pytest.raises(ValueError, match="dataset_size=len"):
            LayerParallel(mnist_resnet(depth=4, width=4), optimizer=sgd, stages=2, input_shape=(1, 28, 28), method=method, **aux)
    stored = LayerParallel(mnist_resnet(depth=4, width=4), optimizer=sgd, stages=2, input_shape=(1, 28, 28), aux="store", dataset_size=24)
    stored.initialise([(x, torch.arange(24))])
    with pytest.raises(ValueError, match="sample indices idx"):
        stored.step(x[:12], y[:12])


def test_predicted_weights_are_the_weights_extrapolated_along_the_momentum(monkeypatch):
    torch.manual_seed(0)
    model = mnist_resnet(depth=4, width=4).double()
    train, _ = small_data(n_train=48)
    x, y = train.images.double() / 255, train.labels
    lp = LayerParallel(model, optimizer=sgd, stages=3, dataset_size=48, input_shape=(1, 28, 28), aux="pipelined",
                       predict_weights=True)
    checked, real = [], functional_call

    def spy(stage, weights, args):  # stage s's forward runs K-1-s = 2-s steps ahead of its weights
        opt = lp.optimizers[stage.index]
        for name, p in stage.named_parameters():
            velocity = opt.state.get(p, {}).get("momentum_buffer")
            expected = p.detach() if velocity is None else p.detach() - (2 - stage.index) * 0.05 * velocity
            torch.testing.assert_close(weights[name].detach(), expected, rtol=1e-13, atol=1e-15, msg=name)
            checked.append(velocity is not None)
        return real(stage, weights, args)

    monkeypatch.setattr("lpfast.pipelined.functional_call", spy)
    for b in range(4):
        lp.step(x[12 * b:12 * b + 12], y[12 * b:12 * b + 12], torch.arange(12 * b, 12 * b + 12), micro_batches=1)
    assert any(checked) and not all(checked)  # from the first step on which a stage has momentum
    with pytest.raises(ValueError, match="momentum"):
        LayerParallel(mnist_resnet(depth=4, width=4), optimizer=lambda p: torch.optim.Adam(p), stages=2, dataset_size=8,
                      input_shape=(1, 28, 28), aux="pipelined", predict_weights=True)
    with pytest.raises(ValueError, match="pipelined"):
        TrainConfig(method="penalty", stages=2, aux="store", predict_weights=True)

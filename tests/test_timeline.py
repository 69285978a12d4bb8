"""lpfast.timeline: the schedules' steps played out on a link, against what can be worked out by hand."""
import pytest

from lpfast.timeline import (Compute, Post, Receive, Send, WaitSent, gpipe_program, one_f_one_b_program, pipelined_program, play,
                             steady_step)


@pytest.mark.parametrize("k, m", [(2, 4), (2, 8), (3, 4), (4, 8)])
def test_with_free_messages_a_pipeline_idles_k_minus_1_of_m_plus_k_minus_1_slots(k, m):
    forward, backward = [1.0] * k, [2.0] * k
    for program in (gpipe_program, one_f_one_b_program):
        assert steady_step(program(forward, backward, [0.0] * (k - 1), m), k) == pytest.approx((m + k - 1) * 3.0)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_pipelined_phase_with_free_messages_runs_at_its_slowest_stage(k):
    forward, backward = [1.0 + s for s in range(k)], [2.0] * k
    assert steady_step(pipelined_program(forward, backward, [0.0] * (k - 1)), k) == pytest.approx(max(forward) + 2.0)


@pytest.mark.parametrize("message", [0.5, 3.0, 20.0])
def test_pipelined_phase_waits_on_a_cycle_two_steps_long(message):
    # The output of batch t goes over (message), the last stage trains on it (3 s), its gradient comes
    # back (message), and stage 0 backpropagates it (2 s) after its forward of batch t + 1, then
    # forwards batch t + 2 (1 s): two steps.
    step = steady_step(pipelined_program([1.0, 1.0], [2.0, 2.0], [message]), 2)
    assert step == pytest.approx(max(3.0, (2 * message + 3.0 + 3.0) / 2))


def test_gpipe_on_a_slow_link_sends_every_forward_then_every_backward():
    # 10 s per micro-batch message, each leaving once its receiver, done with the micro-batch before,
    # posts its receive: four outputs, each followed by stage 1's 1 s forward, then four gradients,
    # each followed by stage 0's 2 s backward; stage 0's first forward and stage 1's first backward
    # come before any message.
    step = steady_step(gpipe_program([1.0, 1.0], [2.0, 2.0], [10.0], 4), 2)
    assert step == pytest.approx(2 * 4 * 10.0 + 4 * 1.0 + 4 * 2.0 + 1.0 + 2.0)


def test_1f1b_first_stage_holds_its_forward_sends_for_the_backward_receives():
    ops = one_f_one_b_program([1.0, 1.0], [2.0, 2.0], [10.0], 3)(0, 1)
    out = lambda i: ("out", 0, 0, i)  # noqa: E731
    grad = lambda i: ("grad", 1, 0, i)  # noqa: E731
    assert ops == [  # torch 2.14's Schedule1F1B._step_microbatches on stage 0 of 2, three micro-batches
        Compute(1.0), Send(out(0), 10.0), Compute(1.0), WaitSent((out(0),)),  # warm-up: two forwards
        Send(out(1), 10.0), Receive(grad(0)), WaitSent((out(1),)), Compute(2.0),  # fwd_send_bwd_recv, backward 0
        Compute(1.0),  # forward 2 (stage 0 receives no input)
        Send(out(2), 10.0), Receive(grad(1)), WaitSent((out(2),)), Compute(2.0),
        Receive(grad(2)), Compute(2.0),  # cool-down
    ]


def test_a_link_carries_one_message_at_a_time():
    programs = [[Send(("a",), 2.0), Send(("b",), 2.0), Compute(1.0), WaitSent((("b",),))], [Receive(("a",)), Receive(("b",)), Compute(1.0)]]
    assert play(programs) == pytest.approx(5.0)  # "b" leaves after "a", at 2 s, and arrives at 4 s


def test_a_message_leaves_once_its_receive_is_posted():
    assert play([[Send(("a",), 1.0), WaitSent((("a",),))], [Compute(3.0), Receive(("a",))]]) == pytest.approx(4.0)
    assert play([[Send(("a",), 1.0), WaitSent((("a",),))], [Post(("a",)), Compute(3.0), Receive(("a",))]]) == pytest.approx(3.0)


def test_programs_that_wait_on_each_other_are_refused():
    with pytest.raises(RuntimeError, match="deadlock"):
        play([[Receive(("b",)), Send(("a",), 1.0)], [Receive(("a",)), Send(("b",), 1.0)]])

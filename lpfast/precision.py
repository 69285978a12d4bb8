"""Mixed precision: the autocast every forward runs under, and fp16's loss scale.

Parameters, gradients and optimizer state stay in the model's dtype (float32); ``torch.autocast``
runs each forward's matrix products and convolutions in bfloat16 or float16, so activations (and
what crosses a cut) come out in that dtype. bfloat16 has float32's range and needs nothing else.
float16 does not: small gradients underflow, so the loss is multiplied by a scale before the
backward and the gradients divided by it before the step (:class:`LossScaler`), the step skipped
where that overflowed.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class LossScaler:
    """float16's dynamic loss scale, with ``torch.amp.GradScaler``'s semantics and defaults, its
    host reads moved to the caller's cadence.

    :meth:`step` unscales a stage's gradients and checks them for inf/NaN on the device; where it
    finds one, the optimizer's step is undone on the device (parameters and optimizer state put back),
    so a skipped step costs no host read. The scale itself changes only in :meth:`update`, which the
    caller runs every few steps with the overflow count summed over every worker: it backs off by
    ``backoff_factor`` if any step overflowed since the last update and grows by ``growth_factor``
    after ``growth_interval`` steps without one, as GradScaler does step by step. The scale is a host
    number that every worker changes at the same step, so a gradient that crosses stages is
    unscaled by the scale its loss was multiplied with. Called every step, :meth:`update` is
    GradScaler's ``update``.
    """

    def __init__(self, device: torch.device, *, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000) -> None:
        if init_scale <= 0 or growth_factor <= 1 or not 0 < backoff_factor < 1 or growth_interval < 1:
            raise ValueError("need init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1 and growth_interval >= 1; got "
                             f"{init_scale}, {growth_factor}, {backoff_factor}, {growth_interval}")
        self.device = torch.device(device)
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.growth_tracker = 0  # steps since the scale last changed, none of which overflowed
        self.overflows = torch.zeros((), dtype=torch.float32, device=self.device)  # skipped steps since the last update

    def step(self, optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter]) -> None:
        """``optimizer.step()`` on ``params``' unscaled gradients, undone where any is not finite."""
        grads = [p.grad for p in params if p.grad is not None]
        found = torch.zeros((), dtype=torch.float32, device=self.device)
        if grads:
            inverse = torch.full((), 1.0 / self.scale, dtype=torch.float32, device=self.device)
            for group in _by_device_and_dtype(grads):
                torch._amp_foreach_non_finite_check_and_unscale_(group, found, inverse)
        _step_unless(optimizer, params, found)
        self.overflows += found

    def update(self, overflowed_steps: float, steps: int) -> None:
        """Closes ``steps`` steps in which ``overflowed_steps`` overflowed on some worker (the sum of
        every worker's :attr:`overflows`, read once); resets :attr:`overflows`."""
        if overflowed_steps > 0:
            self.scale *= self.backoff_factor
            self.growth_tracker = 0
        else:
            self.growth_tracker += steps
            if self.growth_tracker >= self.growth_interval:
                self.scale *= self.growth_factor
                self.growth_tracker = 0
        self.overflows.zero_()

    def agree(self, all_sum: Callable[[Tensor], Tensor], steps: int) -> None:
        """:meth:`update` with one count for every worker: :attr:`overflows` summed over the workers
        by ``all_sum`` (an all-reduce; the identity on one worker) and read once."""
        self.update(all_sum(self.overflows.reshape(1).double()).item(), steps)

    def state_dict(self) -> dict:
        return {"scale": self.scale, "growth_tracker": self.growth_tracker, "overflows": self.overflows}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.growth_tracker = state["scale"], state["growth_tracker"]
        self.overflows.copy_(state["overflows"])


def _by_device_and_dtype(tensors: list[Tensor]) -> Iterator[list[Tensor]]:
    """The foreach unscale kernel takes tensors of one device and dtype at a time."""
    groups: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    yield from groups.values()


@torch.no_grad()
def _step_unless(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], found: Tensor) -> None:
    """``optimizer.step()``, undone on the device where ``found`` (a 0-dim tensor, nonzero on
    overflow) says so, as if skipped: the step runs on zeroed gradients there (so that nothing
    non-finite reaches the state), then parameters and the state they had are put back, and state
    this step created (a first step's momentum, Adam's moments and count) is zeroed, which is where
    SGD's and Adam's next first step starts from. State kept on another device (Adam's step count on
    the host beside CUDA parameters) is left as the step made it: putting it back would need a host read."""
    skip = found.bool()
    for p in params:
        if p.grad is not None:
            p.grad.masked_fill_(skip, 0)
    on_device = lambda tensors: [t for t in tensors if torch.is_tensor(t) and t.device == found.device]  # noqa: E731
    state = optimizer.state
    had = {id(t) for p in params for t in state.get(p, {}).values()}
    before = [(t, t.clone()) for p in params for t in on_device([p, *state.get(p, {}).values()])]
    optimizer.step()
    for live, saved in before:
        live.copy_(torch.where(skip, saved, live))
    for t in on_device(t for p in params for t in state.get(p, {}).values() if id(t) not in had):
        t.masked_fill_(skip, 0)


class Precision:
    """What a run's forwards compute in: ``dtype`` None (``model_dtype``, the parameters'),
    ``torch.bfloat16`` or ``torch.float16`` under ``torch.autocast`` on ``device``; with float16,
    the loss scale."""

    def __init__(self, dtype: torch.dtype | None, *, model_dtype: torch.dtype, device: torch.device) -> None:
        if dtype not in PRECISIONS.values():
            raise ValueError(f"autocast must be torch.bfloat16, torch.float16 or None (the model's dtype), got {dtype}")
        self.dtype, self.model_dtype, self.device = dtype, model_dtype, torch.device(device)
        self.scaler = LossScaler(self.device) if dtype == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context every forward runs in."""
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()

    @property
    def activation_dtype(self) -> torch.dtype:
        """The dtype the forwards produce, and the one that crosses a cut unless a wire dtype is set."""
        return self.dtype or self.model_dtype

    def for_loss(self, logits: Tensor) -> Tensor:
        """``logits`` in the model's dtype: the loss and its sums in full precision."""
        return logits.to(self.model_dtype)

    @property
    def loss_scale(self) -> float:
        """What the losses are multiplied by before their backward (1 without float16)."""
        return 1.0 if self.scaler is None else self.scaler.scale

    def scale(self, loss: Tensor) -> Tensor:
        """The loss to backpropagate: times the loss scale with float16."""
        return loss if self.scaler is None else loss * self.scaler.scale

    def step(self, optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter]) -> None:
        """The optimizer's step on ``params`` (unscaled, and skipped on overflow, with float16)."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer, params)

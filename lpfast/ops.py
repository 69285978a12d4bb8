"""Typed entry points to lpfast's compiled kernels, each with its PyTorch reference beside it.

The kernels live in the extension ``lpfast._C`` and are registered with the dispatcher as
``torch.ops.lpfast.*``. Every op here has a ``*_reference`` twin written with plain torch
operations: the tests hold the kernels to it, and it documents what the kernel computes.
"""
from __future__ import annotations

import torch
from torch import Tensor

try:
    from lpfast import _C  # noqa: F401  (loading the library registers the ops)

    LOAD_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"

#: Names of the ops this module exposes, as registered under ``torch.ops.lpfast``.
OP_NAMES = ("penalty_residual", "aux_update_")


def _require_kernels() -> None:
    if LOAD_ERROR is not None:
        raise RuntimeError(
            f"lpfast's compiled kernels did not load ({LOAD_ERROR}). Rebuild them with "
            "`pip install --no-build-isolation -e .` (or `make venv`) in the lpfast checkout."
        )


# --------------------------------------------------------------------------- penalty_residual


def penalty_residual(out: Tensor, lam: Tensor, mu: Tensor | None = None, *, beta: float) -> tuple[Tensor, Tensor]:
    """Penalty term of one cut and its gradient, in one pass (ALGORITHM.md §3-§4).

    With ``r = out - lam + mu / beta`` (``mu`` omitted for the penalty method) returns
    ``loss = beta / 2 * mean(r**2)`` and ``grad = d loss / d out = beta * r / out.numel()``.
    ``loss`` is float32 for 16-bit inputs and has the input dtype otherwise; ``grad`` has out's
    shape, dtype and memory format. Differentiable in ``out``, ``lam`` and ``mu``.
    """
    _require_kernels()
    return torch.ops.lpfast.penalty_residual(out, lam, mu, float(beta))


def penalty_residual_reference(
    out: Tensor, lam: Tensor, mu: Tensor | None = None, *, beta: float
) -> tuple[Tensor, Tensor]:
    """The definition of :func:`penalty_residual` in plain torch operations."""
    r = out - lam
    if mu is not None:
        r = r + mu * (1.0 / beta)
    n = out.numel()
    scale = beta / n if n else 0.0
    loss_dtype = torch.float32 if out.dtype in (torch.float16, torch.bfloat16) else out.dtype
    loss = (0.5 * scale) * r.to(loss_dtype).square().sum()
    return loss, r * scale


# -------------------------------------------------------------------------------- aux_update_


def aux_update_(
    lam: Tensor, mu: Tensor | None, out: Tensor, grad: Tensor, *, beta: float, eta: float, update_mu: bool
) -> None:
    """Auxiliary-variable step of one cut, in place on ``lam`` (and ``mu``), in one pass.

    ``out`` is φ_k(λ_{k-1}) for the batch, ``grad`` the next stage's per-sample input gradient
    J^T g_{k+1}. The λ-step descends sample i's objective with step ``eta / beta`` (so ``eta = 1``
    is the closed form ``λ = out + (μ - grad) / β``)::

        lam <- lam + eta * (out - lam) + (eta / beta) * (mu - grad)
        mu  <- mu + beta * (out - lam)          (with the new lam; only if update_mu)

    ``mu=None`` is the penalty method (μ = 0). All tensors share shape, dtype and device; ``lam``
    and ``mu`` must be dense (contiguous or channels-last).
    """
    _require_kernels()
    torch.ops.lpfast.aux_update_(lam, mu, out, grad, float(beta), float(eta), bool(update_mu))


def aux_update_reference(
    lam: Tensor, mu: Tensor | None, out: Tensor, grad: Tensor, *, beta: float, eta: float, update_mu: bool
) -> tuple[Tensor, Tensor | None]:
    """The definition of :func:`aux_update_`, out of place: returns the new ``(lam, mu)``."""
    if update_mu and mu is None:
        raise ValueError("update_mu=True needs mu")
    pull = (mu - grad) if mu is not None else -grad
    new_lam = lam + eta * (out - lam) + (eta / beta) * pull
    new_mu = mu + beta * (out - new_lam) if update_mu else mu
    return new_lam, new_mu


if LOAD_ERROR is None:

    @torch.library.register_fake("lpfast::aux_update_")
    def _(lam, mu, out, grad, beta, eta, update_mu):
        return None

    @torch.library.register_fake("lpfast::penalty_residual")
    def _(out, lam, mu, beta):
        loss_dtype = torch.float32 if out.dtype in (torch.float16, torch.bfloat16) else out.dtype
        grad = torch.empty_like(out, memory_format=torch.contiguous_format if out.is_contiguous() else torch.preserve_format)
        return out.new_empty((), dtype=loss_dtype), grad

    def _penalty_setup(ctx, inputs, output):
        _, _, mu, beta = inputs
        ctx.beta = beta
        ctx.has_mu = mu is not None
        ctx.save_for_backward(output[1])

    def _penalty_backward(ctx, grad_loss, grad_grad):
        # loss is quadratic in r and grad is linear in r, with d r / d(out, lam, mu) = (1, -1, 1/beta).
        (grad,) = ctx.saved_tensors
        d_out = grad * grad_loss.to(grad.dtype) if grad_loss is not None else torch.zeros_like(grad)
        if grad_grad is not None:
            d_out = d_out + grad_grad * (ctx.beta / grad.numel() if grad.numel() else 0.0)
        d_mu = d_out * (1.0 / ctx.beta) if ctx.has_mu else None
        return d_out, -d_out, d_mu, None

    torch.library.register_autograd("lpfast::penalty_residual", _penalty_backward, setup_context=_penalty_setup)

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
OP_NAMES = ("penalty_residual", "aux_update_", "ds_encode", "ds_decode")

#: Up-sampling modes of :func:`ds_decode`, in the order of the kernel's ``mode`` argument.
DS_MODES = ("nearest", "bilinear")


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


# ------------------------------------------------------------------------ ds_encode / decode


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def ds_encode(x: Tensor, factor: int, wire_dtype: torch.dtype) -> Tensor:
    """Down-sampling filter of a tensor about to cross a cut (ALGORITHM.md §6), in one pass:
    ``factor``×``factor`` average pooling with stride ``factor``, cast to ``wire_dtype``, into a
    dense buffer in x's memory format. ``factor`` must divide H and W (no padding).
    Differentiable in ``x``."""
    _require_kernels()
    return torch.ops.lpfast.ds_encode(x, int(factor), wire_dtype)


def ds_encode_reference(x: Tensor, factor: int, wire_dtype: torch.dtype) -> Tensor:
    """The definition of :func:`ds_encode` in plain torch operations."""
    return torch.nn.functional.avg_pool2d(x.to(_opmath(x.dtype)), factor).to(wire_dtype)


def ds_decode(y: Tensor, factor: int, mode: str, out_dtype: torch.dtype) -> Tensor:
    """Inverse of :func:`ds_encode` on receipt, in one pass: up-sampling by ``factor``
    (``nearest``, or ``bilinear`` with half-pixel centres as ``F.interpolate(align_corners=False)``)
    and cast to ``out_dtype``, in y's memory format. Differentiable in ``y``."""
    _require_kernels()
    if mode not in DS_MODES:
        raise ValueError(f"mode must be one of {', '.join(DS_MODES)}, got {mode!r}")
    return torch.ops.lpfast.ds_decode(y, int(factor), DS_MODES.index(mode), out_dtype)


def ds_decode_reference(y: Tensor, factor: int, mode: str, out_dtype: torch.dtype) -> Tensor:
    """The definition of :func:`ds_decode` in plain torch operations."""
    extra = {"align_corners": False} if mode == "bilinear" else {}
    up = torch.nn.functional.interpolate(y.to(_opmath(y.dtype)), scale_factor=factor, mode=mode, **extra)
    return up.to(out_dtype)


if LOAD_ERROR is None:
    from torch._prims_common import suggest_memory_format

    def _ds_fake(t: Tensor, h: int, w: int, dtype: torch.dtype) -> Tensor:
        return t.new_empty((t.shape[0], t.shape[1], h, w), dtype=dtype).contiguous(memory_format=suggest_memory_format(t))

    @torch.library.register_fake("lpfast::ds_encode")
    def _(x, factor, wire_dtype):
        return _ds_fake(x, x.shape[2] // factor, x.shape[3] // factor, wire_dtype)

    @torch.library.register_fake("lpfast::ds_decode")
    def _(y, factor, mode, out_dtype):
        return _ds_fake(y, y.shape[2] * factor, y.shape[3] * factor, out_dtype)

    def _linear_vjp(reference, make_args):
        # Both filters are linear: their backward is the vector-Jacobian product of the reference.
        def setup(ctx, inputs, output):
            ctx.inputs = inputs

        def backward(ctx, grad):
            source = ctx.inputs[0]
            with torch.enable_grad():
                leaf = source.detach().requires_grad_()
                (vjp,) = torch.autograd.grad(reference(leaf, *make_args(ctx.inputs)), leaf, grad)
            return (vjp, *([None] * (len(ctx.inputs) - 1)))

        return backward, setup

    _enc_backward, _enc_setup = _linear_vjp(ds_encode_reference, lambda i: (i[1], i[2]))
    torch.library.register_autograd("lpfast::ds_encode", _enc_backward, setup_context=_enc_setup)
    _dec_backward, _dec_setup = _linear_vjp(ds_decode_reference, lambda i: (i[1], DS_MODES[i[2]], i[3]))
    torch.library.register_autograd("lpfast::ds_decode", _dec_backward, setup_context=_dec_setup)

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

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
    #: Whether the CPU kernels were built with OpenMP, so they run on torch's intra-op threads.
    PARALLEL_CPU: bool = bool(_C.openmp)
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"
    PARALLEL_CPU = False

#: Names of the ops this module exposes, as registered under ``torch.ops.lpfast``.
OP_NAMES = ("penalty_residual", "aux_update_", "ds_encode", "ds_decode", "aux_gather", "aux_scatter_", "crop_flip_normalise")

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


# ----------------------------------------------------------------------- aux_gather / scatter


def aux_gather(store: Tensor, idx: Tensor, dtype: torch.dtype) -> Tensor:
    """Rows ``idx`` of an auxiliary-variable store as a batch in ``dtype``, in one pass (the row
    copy and the storage-dtype conversion fused, e.g. a bfloat16 store into a float32 batch).

    ``store`` is N × row shape, dense (contiguous or channels-last; the batch keeps its layout);
    ``idx`` is 1-D int64 on the store's device with every row in ``[0, N)``."""
    _require_kernels()
    return torch.ops.lpfast.aux_gather(store, idx, dtype)


def aux_gather_reference(store: Tensor, idx: Tensor, dtype: torch.dtype) -> Tensor:
    """The definition of :func:`aux_gather` in plain torch operations."""
    return store[idx].to(dtype)


def aux_scatter_(store: Tensor, idx: Tensor, values: Tensor) -> None:
    """Writes the batch ``values`` to rows ``idx`` of ``store`` in place, converted to the store's
    dtype in the same pass. ``idx`` holds distinct rows (a batch of distinct samples)."""
    _require_kernels()
    torch.ops.lpfast.aux_scatter_(store, idx, values)


def aux_scatter_reference(store: Tensor, idx: Tensor, values: Tensor) -> Tensor:
    """The definition of :func:`aux_scatter_`, out of place: returns the new store."""
    new = store.clone()
    new[idx] = values.to(store.dtype)
    return new


# ------------------------------------------------------------------------ crop_flip_normalise


def crop_flip_normalise(
    images: Tensor, offsets: Tensor, flips: Tensor, *, padding: int, mean: tuple[float, ...],
    std: tuple[float, ...], dtype: torch.dtype = torch.float32, channels_last: bool = True,
) -> Tensor:
    """Data augmentation of a uint8 batch in one pass: zero-pad by ``padding``, crop H×W at
    ``offsets[n] = (row, column)`` in ``[0, 2·padding]`` of the padded image, mirror the samples
    whose ``flips[n]`` is set, then ``(x/255 - mean[c]) / std[c]`` in ``dtype``. With
    ``padding=0``, zero offsets and no flips it only normalises. Returns N×C×H×W, channels-last
    or contiguous; all inputs on one device."""
    _require_kernels()
    return torch.ops.lpfast.crop_flip_normalise(
        images, offsets, flips, int(padding), [float(m) for m in mean], [float(s) for s in std], dtype, bool(channels_last))


def crop_flip_normalise_reference(
    images: Tensor, offsets: Tensor, flips: Tensor, *, padding: int, mean: tuple[float, ...],
    std: tuple[float, ...], dtype: torch.dtype = torch.float32, channels_last: bool = True,
) -> Tensor:
    """The definition of :func:`crop_flip_normalise` in plain torch operations (one gather)."""
    n, c, h, w = images.shape
    dev = images.device
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    rows = offsets[:, 0, None] + torch.arange(h, device=dev)
    cols = torch.arange(w, device=dev).expand(n, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + offsets[:, 1, None]
    batch, chan = torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None]
    cropped = padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
    math = _opmath(dtype)
    m = torch.tensor(mean, dtype=math, device=dev).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=math, device=dev).view(1, -1, 1, 1)
    out = ((cropped.to(math) * (1.0 / 255.0) - m) / s).to(dtype)
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


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

    # The filters are linear and their windows do not overlap, so each one's adjoint is the other
    # kernel (one pass, nothing saved but the input's dtype): s×s average pooling spreads 1/s² of a
    # gradient over its window (nearest up-sampling of grad/s²), and nearest up-sampling sums the
    # gradients of the s×s copies (s² × average pooling). The scaling runs on the pooled tensor.
    def _ds_setup(ctx, inputs, output):
        ctx.factor, ctx.in_dtype = inputs[1], inputs[0].dtype
        ctx.mode = DS_MODES[inputs[2]] if len(inputs) == 4 else None
        ctx.source = inputs[0] if ctx.mode == "bilinear" else None

    def _ds_encode_backward(ctx, grad):
        spread = grad.to(_opmath(grad.dtype)) / ctx.factor ** 2
        return ds_decode(spread, ctx.factor, "nearest", ctx.in_dtype), None, None

    def _ds_decode_backward(ctx, grad):
        if ctx.mode == "bilinear":  # overlapping windows: the reference's vector-Jacobian product
            with torch.enable_grad():
                leaf = ctx.source.detach().requires_grad_()
                (vjp,) = torch.autograd.grad(ds_decode_reference(leaf, ctx.factor, ctx.mode, grad.dtype), leaf, grad)
            return vjp, None, None, None
        summed = ds_encode(grad, ctx.factor, _opmath(grad.dtype)) * ctx.factor ** 2
        return summed.to(ctx.in_dtype), None, None, None

    torch.library.register_autograd("lpfast::ds_encode", _ds_encode_backward, setup_context=_ds_setup)
    torch.library.register_autograd("lpfast::ds_decode", _ds_decode_backward, setup_context=_ds_setup)

    @torch.library.register_fake("lpfast::aux_gather")
    def _(store, idx, dtype):
        batch = store.new_empty((idx.shape[0], *store.shape[1:]), dtype=dtype)
        return batch.contiguous(memory_format=suggest_memory_format(store)) if store.dim() == 4 else batch

    @torch.library.register_fake("lpfast::aux_scatter_")
    def _(store, idx, values):
        return None

    @torch.library.register_fake("lpfast::crop_flip_normalise")
    def _(images, offsets, flips, padding, mean, std, dtype, channels_last):
        return images.new_empty(images.shape, dtype=dtype).contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format)

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

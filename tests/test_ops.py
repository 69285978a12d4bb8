"""lpfast::penalty_residual against its reference: values, gradients, layouts, dtypes, errors."""
import pytest
import torch

from lpfast import ops
from lpfast.info import kernel_devices

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make(shape, dtype=torch.float32, device="cpu", with_mu=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    out, lam, mu = (torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for _ in range(3))
    return out, lam, (mu if with_mu else None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_mu", [True, False])
@pytest.mark.parametrize("shape", [(8, 16, 14, 14), (3, 5, 7, 9), (70001,)])
def test_matches_reference_float32(device, with_mu, shape):
    out, lam, mu = make(shape, device=device, with_mu=with_mu)
    loss, grad = ops.penalty_residual(out, lam, mu, beta=3.5)
    ref_loss, ref_grad = ops.penalty_residual_reference(out, lam, mu, beta=3.5)
    # The gradient is elementwise with the reference's operation order: exact on the CPU.
    torch.testing.assert_close(grad, ref_grad, rtol=0 if device == "cpu" else 1e-6, atol=0 if device == "cpu" else 1e-7)
    # The loss sums in double (the reference in float32): agreement to float32 round-off.
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0)
    assert loss.dtype == torch.float32 and loss.shape == ()


@pytest.mark.parametrize("device", DEVICES)
def test_float64_gradcheck(device):
    out, lam, mu = (t.requires_grad_() for t in make((2, 3, 4, 5), torch.float64, device))
    fn = lambda o, l, m: ops.penalty_residual(o, l, m, beta=0.7)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (out, lam, mu))
    assert torch.autograd.gradgradcheck(fn, (out, lam, mu))
    out2, lam2, _ = (t.requires_grad_() if t is not None else t for t in make((2, 3, 4, 5), torch.float64, device, with_mu=False))
    assert torch.autograd.gradcheck(lambda o, l: ops.penalty_residual(o, l, None, beta=2.0), (out2, lam2))


@pytest.mark.parametrize("device", DEVICES)
def test_loss_gradient_is_autograd_of_reference(device):
    out, lam, mu = (t.requires_grad_() for t in make((4, 3, 6, 6), torch.float64, device))
    loss, _ = ops.penalty_residual(out, lam, mu, beta=2.5)
    grads = torch.autograd.grad(loss, (out, lam, mu))
    ref_loss, _ = ops.penalty_residual_reference(out, lam, mu, beta=2.5)
    ref = torch.autograd.grad(ref_loss, (out, lam, mu))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for with_mu in (True, False):
        out, lam, mu = make((2, 3, 4, 4), torch.float32, device, with_mu=with_mu)
        torch.library.opcheck(torch.ops.lpfast.penalty_residual.default, (out.requires_grad_(), lam, mu, 1.5))


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_and_noncontiguous(device):
    out, lam, mu = make((4, 8, 6, 6), device=device)
    out_cl = out.contiguous(memory_format=torch.channels_last)
    loss, grad = ops.penalty_residual(out_cl, lam, mu, beta=2.0)
    assert grad.is_contiguous(memory_format=torch.channels_last)
    ref_loss, ref_grad = ops.penalty_residual_reference(out, lam, mu, beta=2.0)
    torch.testing.assert_close(grad, ref_grad)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0)
    wide = torch.randn(4, 8, 6, 12, device=device)
    sliced = wide[..., ::2]  # a strided, non-dense view
    loss2, grad2 = ops.penalty_residual(sliced, lam, None, beta=2.0)
    ref_loss2, ref_grad2 = ops.penalty_residual_reference(sliced, lam, None, beta=2.0)
    torch.testing.assert_close(grad2, ref_grad2)
    torch.testing.assert_close(loss2, ref_loss2, rtol=1e-5, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_error_bounded_by_reference_error(device, dtype):
    out, lam, mu = make((8, 16, 14, 14), dtype, device)
    exact_loss, exact_grad = ops.penalty_residual_reference(out.double(), lam.double(), mu.double(), beta=3.0)
    loss, grad = ops.penalty_residual(out, lam, mu, beta=3.0)
    ref_loss, ref_grad = ops.penalty_residual_reference(out, lam, mu, beta=3.0)
    assert grad.dtype == dtype and loss.dtype == torch.float32
    # The fused kernel rounds once; the eager reference rounds after every operation.
    kernel_err = (grad.double() - exact_grad).abs().max()
    ref_err = (ref_grad.double() - exact_grad).abs().max()
    assert kernel_err <= 2 * ref_err + 1e-12
    assert abs(loss.double() - exact_loss) <= 2 * abs(ref_loss.double() - exact_loss) + 1e-5 * abs(exact_loss)


def test_loss_independent_of_thread_count():
    out, lam, mu = make((1 << 18,))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.penalty_residual(out, lam, mu, beta=2.0)[0]
        torch.set_num_threads(max(threads, 2))
        many = ops.penalty_residual(out, lam, mu, beta=2.0)[0]
    finally:
        torch.set_num_threads(threads)
    assert one.item() == many.item()


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    out, lam, mu = make((0, 16, 8, 8), device=device)
    loss, grad = ops.penalty_residual(out, lam, mu, beta=2.0)
    assert loss.item() == 0.0 and grad.shape == out.shape


def test_argument_errors():
    out, lam, mu = make((2, 3, 4, 4))
    with pytest.raises(RuntimeError, match="lam has shape"):
        ops.penalty_residual(out, lam[:1], mu, beta=1.0)
    with pytest.raises(RuntimeError, match="mu has dtype"):
        ops.penalty_residual(out, lam, mu.double(), beta=1.0)
    with pytest.raises(RuntimeError, match="beta must be > 0"):
        ops.penalty_residual(out, lam, mu, beta=0.0)
    with pytest.raises(RuntimeError, match="floating"):
        ops.penalty_residual(out.long(), lam.long(), None, beta=1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_error():
    out, lam, mu = make((2, 3, 4, 4))
    with pytest.raises(RuntimeError, match="lam is on"):
        ops.penalty_residual(out.cuda(), lam, mu.cuda(), beta=1.0)


def test_info_lists_compiled_kernels():
    assert ops.LOAD_ERROR is None
    # Built without -fopenmp, at::parallel_for runs every CPU kernel on one thread, silently.
    assert ops.PARALLEL_CPU
    for name in ops.OP_NAMES:
        assert "CPU" in kernel_devices(name), name
    import shutil
    import os

    if shutil.which("nvcc") and torch.version.cuda and os.environ.get("LPFAST_CUDA") != "0":
        # Where CUDA sources can be compiled they must have been: they may not rot unbuilt.
        for name in ops.OP_NAMES:
            assert "CUDA" in kernel_devices(name), name


# ------------------------------------------------------------------------------- aux_update_


def aux_inputs(shape, dtype=torch.float32, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for _ in range(4)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", ["penalty", "al", "al_frozen_mu"])
@pytest.mark.parametrize("shape", [(8, 16, 14, 14), (3, 5, 7, 9), (70001,)])
def test_aux_update_matches_reference(device, dtype, variant, shape):
    lam, mu, out, grad = aux_inputs(shape, dtype, device)
    mu = None if variant == "penalty" else mu
    update_mu = variant == "al"
    ref_lam, ref_mu = ops.aux_update_reference(lam, mu, out, grad, beta=4.0, eta=0.7, update_mu=update_mu)
    mu_before = mu.clone() if mu is not None else None
    ops.aux_update_(lam, mu, out, grad, beta=4.0, eta=0.7, update_mu=update_mu)
    # Same operations in the same order as the reference: identical on the CPU.
    exact = dict(rtol=0, atol=0) if device == "cpu" else {}
    torch.testing.assert_close(lam, ref_lam, **exact)
    if mu is not None:
        torch.testing.assert_close(mu, ref_mu, **exact)
        assert torch.equal(mu, mu_before) != update_mu


def test_aux_update_closed_form():
    lam, mu, out, grad = aux_inputs((4, 8, 5, 5), torch.float64)
    ops.aux_update_(lam, mu, out, grad, beta=2.0, eta=1.0, update_mu=False)
    torch.testing.assert_close(lam, out + (mu - grad) / 2.0)


@pytest.mark.parametrize("device", DEVICES)
def test_aux_update_channels_last(device):
    lam, mu, out, grad = aux_inputs((4, 8, 6, 6), device=device)
    lam_cl = lam.contiguous(memory_format=torch.channels_last)
    mu_cl = mu.contiguous(memory_format=torch.channels_last)
    ref_lam, ref_mu = ops.aux_update_reference(lam, mu, out, grad, beta=3.0, eta=0.5, update_mu=True)
    ops.aux_update_(lam_cl, mu_cl, out, grad[..., :].transpose(2, 3).contiguous().transpose(2, 3), beta=3.0, eta=0.5, update_mu=True)
    torch.testing.assert_close(lam_cl, ref_lam)
    torch.testing.assert_close(mu_cl, ref_mu)
    assert lam_cl.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_aux_update_16bit_error_bounded_by_reference_error(device, dtype):
    lam, mu, out, grad = aux_inputs((8, 16, 14, 14), dtype, device)
    exact = ops.aux_update_reference(lam.double(), mu.double(), out.double(), grad.double(), beta=3.0, eta=0.8, update_mu=True)
    ref = ops.aux_update_reference(lam, mu, out, grad, beta=3.0, eta=0.8, update_mu=True)
    ops.aux_update_(lam, mu, out, grad, beta=3.0, eta=0.8, update_mu=True)
    for mine, theirs, truth in zip((lam, mu), ref, exact):
        assert (mine.double() - truth).abs().max() <= 2 * (theirs.double() - truth).abs().max() + 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_aux_update_opcheck_and_empty(device):
    for mu_on, update_mu in ((False, False), (True, True), (True, False)):
        lam, mu, out, grad = aux_inputs((2, 3, 4, 4), device=device)
        torch.library.opcheck(torch.ops.lpfast.aux_update_.default, (lam, mu if mu_on else None, out, grad, 2.0, 0.5, update_mu))
    lam, mu, out, grad = aux_inputs((0, 3, 4, 4), device=device)
    ops.aux_update_(lam, mu, out, grad, beta=2.0, eta=1.0, update_mu=True)


def test_aux_update_errors():
    lam, mu, out, grad = aux_inputs((2, 3, 4, 4))
    with pytest.raises(RuntimeError, match="grad has shape"):
        ops.aux_update_(lam, mu, out, grad[:1], beta=1.0, eta=1.0, update_mu=True)
    with pytest.raises(RuntimeError, match="update_mu=True needs mu"):
        ops.aux_update_(lam, None, out, grad, beta=1.0, eta=1.0, update_mu=True)
    with pytest.raises(RuntimeError, match="must be dense"):
        ops.aux_update_(lam.transpose(0, 3), None, out.transpose(0, 3), grad.transpose(0, 3), beta=1.0, eta=1.0, update_mu=False)
    with pytest.raises(RuntimeError, match="out has dtype"):
        ops.aux_update_(lam, mu, out.double(), grad, beta=1.0, eta=1.0, update_mu=False)

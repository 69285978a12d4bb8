"""lpfast::ds_encode / ds_decode against their references: values, layouts, dtypes, gradients, errors."""
import pytest
import torch

from lpfast import ops

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LAYOUTS = [torch.contiguous_format, torch.channels_last]


def sample(shape=(3, 5, 8, 12), dtype=torch.float32, device="cpu", layout=torch.contiguous_format, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype).contiguous(memory_format=layout)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("wire", [torch.float32, torch.bfloat16, torch.float16])
def test_encode_matches_reference(device, layout, factor, wire):
    x = sample(device=device, layout=layout)
    y = ops.ds_encode(x, factor, wire)
    ref = ops.ds_encode_reference(x, factor, wire)
    assert y.shape == (3, 5, 8 // factor, 12 // factor) and y.dtype == wire
    assert y.is_contiguous(memory_format=layout)
    # Both average in float32 and round once to the wire dtype.
    torch.testing.assert_close(y, ref, rtol=1e-6 if wire == torch.float32 else 8e-3, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_decode_matches_reference(device, layout, mode, factor):
    y = sample((2, 6, 4, 5), device=device, layout=layout)
    out = ops.ds_decode(y, factor, mode, torch.float32)
    ref = ops.ds_decode_reference(y, factor, mode, torch.float32)
    assert out.shape == (2, 6, 4 * factor, 5 * factor) and out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_float64_exact_and_gradcheck(device):
    x = sample((2, 3, 4, 6), torch.float64, device).requires_grad_()
    torch.testing.assert_close(ops.ds_encode(x, 2, torch.float64), ops.ds_encode_reference(x, 2, torch.float64), rtol=1e-14, atol=1e-15)
    assert torch.autograd.gradcheck(lambda t: ops.ds_encode(t, 2, torch.float64), (x,))
    y = sample((2, 3, 3, 4), torch.float64, device).requires_grad_()
    for mode in ops.DS_MODES:
        torch.testing.assert_close(ops.ds_decode(y, 2, mode, torch.float64), ops.ds_decode_reference(y, 2, mode, torch.float64), rtol=1e-14, atol=1e-15)
        assert torch.autograd.gradcheck(lambda t: ops.ds_decode(t, 2, mode, torch.float64), (y,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("factor", [1, 2, 3])
@pytest.mark.parametrize("wire", [torch.float32, torch.bfloat16])
def test_backward_is_the_references_vector_jacobian_product(device, layout, factor, wire):
    """Each filter's backward is the other kernel (a scaled pass), not the reference's autograd:
    its gradient must be the reference's, in the input's dtype and layout, for every mode."""
    x = sample((2, 5, 6, 12), device=device, layout=layout).requires_grad_()
    ref_x = x.detach().requires_grad_()
    grad = sample((2, 5, 6 // factor, 12 // factor), wire, device, layout, seed=1)
    ops.ds_encode(x, factor, wire).backward(grad)
    ops.ds_encode_reference(ref_x, factor, wire).backward(grad)
    assert x.grad.dtype == torch.float32 and x.grad.is_contiguous(memory_format=layout)
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-6, atol=1e-7)
    for mode in ops.DS_MODES:
        y = sample((2, 5, 3, 4), wire, device, layout, seed=2).requires_grad_()
        ref_y = y.detach().requires_grad_()
        up = sample((2, 5, 3 * factor, 4 * factor), device=device, layout=layout, seed=3)
        ops.ds_decode(y, factor, mode, torch.float32).backward(up)
        ops.ds_decode_reference(ref_y, factor, mode, torch.float32).backward(up)
        assert y.grad.dtype == wire and y.grad.is_contiguous(memory_format=layout)
        # Both sum in float32 and round once to the wire dtype (one ulp apart where the order differs).
        torch.testing.assert_close(y.grad, ref_y.grad, rtol=1e-6 if wire == torch.float32 else 8e-3, atol=1e-6)


def test_factor_one_float32_is_bit_identical():
    x = sample()
    for layout in LAYOUTS:
        xl = x.contiguous(memory_format=layout)
        assert torch.equal(ops.ds_decode(ops.ds_encode(xl, 1, torch.float32), 1, "nearest", torch.float32), x)


def test_nearest_round_trip_of_piecewise_constant_maps():
    coarse = sample((2, 3, 4, 5))
    fine = ops.ds_decode(coarse, 2, "nearest", torch.float32)
    assert torch.equal(ops.ds_encode(fine, 2, torch.float32), coarse)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtypes", [(torch.bfloat16, torch.float32), (torch.float32, torch.float32), (torch.float32, torch.bfloat16)])
def test_nearest_decode_split_across_threads_mid_repeat(layout, dtypes):
    # Nearest decoding copies an output row from the row above within one thread's share of the
    # rows; 6 rows of 8192 values split over 2 threads start the second share at row 3, a repeat
    # whose row above belongs to the other thread, so it must be decoded from the source.
    wire, out_dtype = dtypes
    shape = (1, 1024, 3, 4) if layout == torch.channels_last else (1, 1, 3, 4096)
    coarse = sample(shape, dtype=wire, layout=layout)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = ops.ds_decode(coarse, 2, "nearest", out_dtype)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out, ops.ds_decode_reference(coarse, 2, "nearest", out_dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for layout in LAYOUTS:
        x = sample((2, 4, 4, 6), device=device, layout=layout).requires_grad_()
        torch.library.opcheck(torch.ops.lpfast.ds_encode.default, (x, 2, torch.bfloat16))
        torch.library.opcheck(torch.ops.lpfast.ds_decode.default, (x, 2, 1, torch.float32))


def test_noncontiguous_and_empty():
    wide = sample((3, 5, 8, 24))
    view = wide[..., ::2]
    torch.testing.assert_close(ops.ds_encode(view, 2, torch.float32), ops.ds_encode_reference(view, 2, torch.float32))
    empty = sample((0, 5, 8, 12))
    assert ops.ds_encode(empty, 2, torch.float16).shape == (0, 5, 4, 6)
    assert ops.ds_decode(empty, 2, "bilinear", torch.float32).shape == (0, 5, 16, 24)


def test_errors():
    x = sample((2, 3, 6, 6))
    with pytest.raises(RuntimeError, match="factor 4 does not divide the feature map 6×6"):
        ops.ds_encode(x, 4, torch.float32)
    with pytest.raises(RuntimeError, match="N×C×H×W"):
        ops.ds_encode(x[0], 2, torch.float32)
    with pytest.raises(RuntimeError, match="wire_dtype must be floating"):
        ops.ds_encode(x, 2, torch.int8)
    with pytest.raises(RuntimeError, match="floating tensor"):
        ops.ds_decode(x.long(), 2, "nearest", torch.float32)
    with pytest.raises(ValueError, match="mode must be one of nearest, bilinear"):
        ops.ds_decode(x, 2, "cubic", torch.float32)

"""lpfast::aux_gather / aux_scatter_ against their references: dtypes, layouts, empty batch, errors."""
import pytest
import torch

from lpfast import ops

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def store(n=20, row=(3, 4, 5), dtype=torch.float32, device="cpu", layout=torch.contiguous_format, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randn((n, *row), generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    return data.contiguous(memory_format=layout) if len(row) == 3 else data


def rows(device="cpu"):
    return torch.tensor([7, 0, 19, 3, 11], device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("store_dtype", DTYPES)
@pytest.mark.parametrize("batch_dtype", DTYPES)
def test_gather_and_scatter_match_reference_exactly(device, store_dtype, batch_dtype):
    # A copy with one rounding (or none) per element: the kernel must equal the reference bit for bit.
    s, idx = store(dtype=store_dtype, device=device), rows(device)
    batch = ops.aux_gather(s, idx, batch_dtype)
    assert batch.dtype == batch_dtype and batch.shape == (5, 3, 4, 5)
    assert torch.equal(batch, ops.aux_gather_reference(s, idx, batch_dtype))
    values = store(5, dtype=batch_dtype, device=device, seed=1)
    expected = ops.aux_scatter_reference(s, idx, values)
    ops.aux_scatter_(s, idx, values)
    assert torch.equal(s, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_store_gives_channels_last_batches(device):
    s = store(device=device, layout=torch.channels_last)
    idx = rows(device)
    batch = ops.aux_gather(s, idx, torch.float32)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, ops.aux_gather_reference(s, idx, torch.float32))
    # Values in the other layout are written by element, not by memory order.
    values = store(5, device=device, seed=2)
    expected = ops.aux_scatter_reference(s, idx, values)
    ops.aux_scatter_(s, idx, values)
    assert torch.equal(s, expected) and s.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
def test_flat_rows_noncontiguous_values_and_empty_batch(device):
    s = store(row=(6,), device=device)
    idx = rows(device)
    values = torch.randn(6, 5, device=device).t()  # a transposed view
    expected = ops.aux_scatter_reference(s, idx, values)
    ops.aux_scatter_(s, idx, values)
    assert torch.equal(s, expected)
    empty = torch.zeros(0, dtype=torch.long, device=device)
    assert ops.aux_gather(s, empty, torch.float32).shape == (0, 6)
    ops.aux_scatter_(s, empty, torch.zeros(0, 6, device=device))
    assert torch.equal(s, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    s, idx = store(device=device), rows(device)
    torch.library.opcheck(torch.ops.lpfast.aux_gather.default, (s, idx, torch.bfloat16))
    torch.library.opcheck(torch.ops.lpfast.aux_scatter_.default, (s, idx, store(5, device=device, seed=3)))


def test_errors():
    s, idx = store(), rows()
    with pytest.raises(RuntimeError, match=r"idx\[1\] = 20 is outside the store's rows \[0, 20\)"):
        ops.aux_gather(s, torch.tensor([0, 20]), torch.float32)
    with pytest.raises(RuntimeError, match="outside the store's rows"):
        ops.aux_scatter_(s, torch.tensor([-1]), torch.zeros(1, 3, 4, 5))
    with pytest.raises(RuntimeError, match="idx must be a 1-D int64 tensor"):
        ops.aux_gather(s, idx.int(), torch.float32)
    with pytest.raises(RuntimeError, match="values have shape"):
        ops.aux_scatter_(s, idx, torch.zeros(4, 3, 4, 5))
    with pytest.raises(RuntimeError, match="store must be dense"):
        ops.aux_gather(s.transpose(1, 2), idx, torch.float32)
    with pytest.raises(RuntimeError, match="dtype must be floating"):
        ops.aux_gather(s, idx, torch.int32)
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="move it with .to"):
            ops.aux_gather(s, idx.cuda(), torch.float32)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_aux_store_round_trip(layout, dtype):
    from lpfast.auxvars import AuxStore

    aux = AuxStore(12, (3, 4, 5), dtype=dtype, memory_format=layout)
    assert aux.data.is_contiguous(memory_format=layout) and aux.nbytes == 12 * 60 * dtype.itemsize
    idx = torch.tensor([5, 1, 9])
    values = store(3, seed=4).contiguous(memory_format=torch.channels_last)
    aux.scatter_(idx, values)
    batch = aux.gather(idx)
    assert batch.dtype == torch.float32 and batch.is_contiguous(memory_format=layout)
    assert torch.equal(batch, values.to(dtype).float())
    assert torch.equal(aux.gather(torch.tensor([0])), torch.zeros(1, 3, 4, 5))

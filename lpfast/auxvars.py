"""Per-sample auxiliary variables of one cut (λ, or μ for the augmented Lagrangian).

One row per training sample, indexed by the sample's index in its split (ALGORITHM.md §2).
Rows are stored in float32, bfloat16 or float16 (float64 for exactness tests) on the compute
device or in pinned host memory; batches are gathered to the compute dtype on the compute device
and scattered back.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from lpfast import ops
from lpfast.filters import DsFilter

STORE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
STORE_LOCATIONS = ("device", "pinned")


class AuxStore:
    """``num_samples`` rows of shape ``row_shape``; ``location`` is ``device`` or ``pinned`` (host).
    Batches are computed with in ``compute_dtype`` on ``device``. With a ``coarse`` filter the rows
    are kept down-sampled by its factor (encoded on scatter, decoded on gather)."""

    def __init__(
        self, num_samples: int, row_shape: Sequence[int], *, dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu", location: str = "device", compute_dtype: torch.dtype = torch.float32,
        coarse: DsFilter | None = None, memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        if dtype not in STORE_DTYPES.values():
            raise ValueError(f"auxiliary store dtype must be one of {', '.join(STORE_DTYPES)}, got {dtype}")
        if location not in STORE_LOCATIONS:
            raise ValueError(f"auxiliary store location must be one of {', '.join(STORE_LOCATIONS)}, got {location!r}")
        self.compute_device = torch.device(device)
        self.compute_dtype = compute_dtype
        self.coarse = coarse if coarse is not None and coarse.factor > 1 else None
        if self.coarse is not None:
            row_shape = self.coarse.wire_shape((1, *row_shape))[1:]
        pinned = location == "pinned" and torch.cuda.is_available()
        home = torch.device("cpu") if location == "pinned" else self.compute_device
        # Rows in the layout the stages compute in (channels-last maps), so batches need no transposing copy.
        layout = memory_format if len(row_shape) == 3 else torch.contiguous_format
        self.data = torch.empty((num_samples, *row_shape), dtype=dtype, device=home, pin_memory=pinned,
                                memory_format=layout).zero_()

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def gather(self, idx: Tensor) -> Tensor:
        """Rows ``idx`` as a batch in the compute dtype on the compute device (one fused
        gather-and-convert where the store lives on the compute device)."""
        on_device = self.data.device == self.compute_device
        rows_dtype = self.compute_dtype if on_device and self.coarse is None else self.data.dtype
        rows = ops.aux_gather(self.data, idx.to(self.data.device), rows_dtype)
        rows = rows.to(self.compute_device, non_blocking=True)
        if self.coarse is not None:
            return self.coarse.decode(rows, self.compute_dtype)
        return rows.to(self.compute_dtype)

    def scatter_(self, idx: Tensor, values: Tensor) -> None:
        """Writes ``values`` (a batch from :meth:`gather`) back to rows ``idx``."""
        if self.coarse is not None:
            values = ops.ds_encode(values, self.coarse.factor, self.data.dtype)
        if values.device != self.data.device:  # pinned host store: cross in the store's dtype
            values = values.to(self.data.dtype).to(self.data.device)
        ops.aux_scatter_(self.data, idx.to(self.data.device), values)


def flip_rows(batch: Tensor, flips: Tensor) -> Tensor:
    """``batch`` with the feature maps of the samples ``flips`` marks mirrored left to right: the
    target a horizontally flipped image's activation should match (its own inverse), in the
    batch's layout."""
    mirrored = torch.where(flips.view(-1, *[1] * (batch.dim() - 1)), batch.flip(-1), batch)
    if batch.dim() == 4 and not batch.is_contiguous() and batch.is_contiguous(memory_format=torch.channels_last):
        return mirrored.contiguous(memory_format=torch.channels_last)
    return mirrored


def _mirrored(lam: Tensor, mu: Tensor | None, flips: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """λ and μ rows with the flipped samples' mirrored (their own inverse: to and from the store alike)."""
    if flips is None:
        return lam, mu
    return flip_rows(lam, flips), (flip_rows(mu, flips) if mu is not None else None)


class StoredAux:
    """Cut c's auxiliary variables kept per sample: λ_c and, for the augmented Lagrangian, μ_c.
    :meth:`fetch` gathers a batch's rows, :meth:`update` writes the updated rows back (the
    interface :class:`~lpfast.auxnet.NetAux` shares).

    The stores (``make_store()`` each) are allocated when the λ pass fills them
    (:meth:`initialise`) or a checkpoint holding them is loaded, and freed by :meth:`release`
    once no parallel epoch is left: a run's serial phase, and a run that never goes parallel,
    neither hold them nor write them into its checkpoints (1.6 GB per cut on full CIFAR-10)."""

    def __init__(self, make_store: Callable[[], AuxStore], *, with_mu: bool) -> None:
        self._make_store, self.with_mu = make_store, with_mu
        self.lam: AuxStore | None = None
        self.mu: AuxStore | None = None

    @property
    def nbytes(self) -> int:
        return sum(store.nbytes for store in (self.lam, self.mu) if store is not None)

    def _allocate(self) -> None:
        if self.lam is None:
            self.lam = self._make_store()
            self.mu = self._make_store() if self.with_mu else None

    def release(self) -> None:
        """Frees λ (and μ): the parallel phase is over."""
        self.lam = self.mu = None

    def _held(self) -> tuple[AuxStore, AuxStore | None]:
        if self.lam is None:
            raise RuntimeError("this cut holds no λ: fill it with LayerParallel.initialise(...) before a parallel step "
                               "(release_aux() frees it until the next λ pass)")
        return self.lam, self.mu

    def fetch(self, x: Tensor, idx: Tensor, flips: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The batch's λ (and μ); with ``flips``, the rows of flipped images flipped with them."""
        lam, mu = self._held()
        return _mirrored(lam.gather(idx), mu.gather(idx) if mu is not None else None, flips)

    def update(self, x: Tensor, idx: Tensor, lam: Tensor, mu: Tensor | None, flips: Tensor | None = None) -> None:
        """Writes the updated rows back (un-flipped, as they belong to the stored image)."""
        lam_store, mu_store = self._held()
        lam, mu = _mirrored(lam, mu, flips)
        lam_store.scatter_(idx, lam)
        if mu_store is not None:
            mu_store.scatter_(idx, mu)

    def initialise(self, x: Tensor, idx: Tensor, received: Tensor) -> Tensor:
        """Stores the forward pass's activation as λ; returns it as stored (the store may round
        or down-sample it), which is what the next stage starts from."""
        self._allocate()
        self.lam.scatter_(idx, received)
        return self.lam.gather(idx)

    def state_dict(self) -> dict:
        return {"lam": self.lam.data if self.lam is not None else None, "mu": self.mu.data if self.mu is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state["lam"] is None:
            self.release()
            return
        self._allocate()
        self.lam.data.copy_(state["lam"])
        if self.mu is not None:
            self.mu.data.copy_(state["mu"])

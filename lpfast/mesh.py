"""Which rank is which stage of which replica (ALGORITHM.md §9), and the groups each traffic uses.

K stages × D replicas run on K·D ranks of one ``torch.distributed`` job. Within a replica the K
stages exchange the activation-sized cut messages; the D replicas of stage k average θ_k's
gradient over their own group. ``placement`` decides which ranks are neighbours, which under
``torchrun`` decides which traffic stays on a node (a node holds adjacent ranks):

- ``"stages-together"`` (default): replica r's stages are ranks r·K … r·K+K-1, so the cut
  messages stay within a node and the gradient all-reduce crosses nodes;
- ``"replicas-together"``: stage k's replicas are ranks k·D … k·D+D-1, so the all-reduce stays
  within a node and the cut messages cross nodes.

D = 1 is plain layer-parallel training (rank = stage, no groups made); K = 1 is data parallelism.
The groups come from ``torch.distributed.device_mesh.init_device_mesh`` with the dimensions named
``"replica"`` and ``"stage"``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

PLACEMENTS = ("stages-together", "replicas-together")


@dataclass(frozen=True)
class Mesh:
    """This rank's ``stage`` and ``replica`` in a ``stages`` × ``replicas`` layout, with the process
    groups of its replicas (``replica_group``: the stage's gradient average) and of its replica's
    stages (``pipeline_group``: the serial phase's schedule); both None where D = 1."""

    stages: int
    replicas: int
    placement: str
    stage: int
    replica: int
    replica_group: dist.ProcessGroup | None = None
    pipeline_group: dist.ProcessGroup | None = None

    def rank_of(self, stage: int, replica: int | None = None) -> int:
        """The global rank of ``stage`` in ``replica`` (default: this rank's replica). A network of
        more stages than ranks is looped over them: stage s lives with stage s mod ``stages``."""
        replica = self.replica if replica is None else replica
        stage %= self.stages
        if self.placement == "stages-together":
            return replica * self.stages + stage
        return stage * self.replicas + replica

    def holds(self, stage: int) -> bool:
        """Whether this rank holds ``stage`` (its own, and with a looped layout every ``stages``-th after it)."""
        return stage % self.stages == self.stage

    def name(self, stage: int, replica: int | None = None) -> str:
        """How errors and logs call a worker: ``stage 1`` or, with replicas, ``stage 1 of replica 0 (rank 1)``."""
        if self.replicas == 1:
            return f"stage {stage}"
        replica = self.replica if replica is None else replica
        return f"stage {stage} of replica {replica} (rank {self.rank_of(stage, replica)})"


def check_layout(stages: int, replicas: int, placement: str) -> None:
    """Raises a ValueError that says how to fix a layout that cannot be built."""
    if stages < 1 or replicas < 1:
        raise ValueError(f"stages and replicas must be >= 1, got {stages} and {replicas}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")


def build_mesh(stages: int, replicas: int = 1, *, placement: str = "stages-together") -> Mesh:
    """This rank's place in a ``stages`` × ``replicas`` layout of the initialised default group,
    whose world size must be their product (``torchrun --nproc-per-node K·D``). Every rank calls it
    (making the groups is collective)."""
    check_layout(stages, replicas, placement)
    if not dist.is_initialized():
        raise RuntimeError("build_mesh needs torch.distributed to be initialised (launch with torchrun)")
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != stages * replicas:
        raise ValueError(f"{world} workers cannot hold {stages} stages × {replicas} replicas: "
                         f"launch {stages * replicas} workers (torchrun --nproc-per-node {stages * replicas}) or change "
                         f"--stages / --replicas so that their product is {world}")
    if replicas == 1:
        return Mesh(stages, 1, placement, stage=rank, replica=0)
    from torch.distributed.device_mesh import init_device_mesh

    device_type = "cuda" if dist.get_backend() == "nccl" else "cpu"
    names = ("replica", "stage") if placement == "stages-together" else ("stage", "replica")
    shape = (replicas, stages) if placement == "stages-together" else (stages, replicas)
    mesh = init_device_mesh(device_type, shape, mesh_dim_names=names)
    return Mesh(stages, replicas, placement, stage=mesh.get_local_rank("stage"), replica=mesh.get_local_rank("replica"),
                replica_group=mesh.get_group("replica"), pipeline_group=mesh.get_group("stage"))

"""Samplers shared by the datamodules."""

from __future__ import annotations

from torch.utils.data import Dataset, DistributedSampler

__all__ = ["ShardSampler"]


class ShardSampler(DistributedSampler):
    """Disjoint, unpadded shards ``rank, rank + world, ...`` (evaluation under DDP).

    A ``DistributedSampler`` (so Lightning keeps it) that neither shuffles nor pads: every node
    is evaluated by exactly one process and metrics summed over processes count it once.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self):  # noqa: D105
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))

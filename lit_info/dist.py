"""Distributed helpers: gather per-sample results from all ranks and put them back in order.

``DistributedSampler`` pads the dataset by repeating samples so every rank gets the same count;
every lit_info dataset returns the sample index, so results are deduplicated by index here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_gather_variable(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0; ranks may hold different lengths.

    Args:
        tensor: ``(n_local, ...)`` on this rank; trailing dims must agree across ranks.

    Returns:
        ``(sum of n_local, ...)``, rank 0's rows first, on every rank.
    """
    if world_size() == 1:
        return tensor
    # gloo and nccl need contiguous tensors on the backend's device
    device = tensor.device
    if dist.get_backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    local = tensor.contiguous().to(device)
    n_local = torch.tensor([local.shape[0]], device=device)
    sizes = [torch.zeros_like(n_local) for _ in range(world_size())]
    dist.all_gather(sizes, n_local)
    n_max = int(max(int(s) for s in sizes))
    padded = torch.zeros((n_max, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    chunks = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(chunks, padded)
    out = torch.cat([c[: int(s)] for c, s in zip(chunks, sizes, strict=True)])
    return out.to(tensor.device)


def gather_by_index(index: Tensor, values: Tensor, num_samples: int) -> Tensor:
    """Gather per-sample ``values`` from all ranks into one tensor ordered by sample index.

    Samples seen on several ranks (the sampler's padding) are kept once; their values are
    expected to be identical (the same sample through the same model).

    Args:
        index: ``(n_local,)`` integer sample indices on this rank.
        values: ``(n_local, ...)`` per-sample values on this rank.
        num_samples: size of the dataset; every index in ``[0, num_samples)`` must be seen.

    Returns:
        ``(num_samples, ...)`` tensor on every rank, row ``i`` holding sample ``i``'s value.

    Raises:
        ValueError: when indices are out of range or some sample was seen on no rank.
    """
    if index.shape[0] != values.shape[0]:
        raise ValueError(
            f"index and values disagree in length: {index.shape[0]} vs {values.shape[0]}"
        )
    all_index = all_gather_variable(index.long())
    all_values = all_gather_variable(values)
    if all_index.numel() and (all_index.min() < 0 or all_index.max() >= num_samples):
        raise ValueError(
            f"sample indices must lie in [0, {num_samples}), got range "
            f"[{int(all_index.min())}, {int(all_index.max())}]"
        )
    out = torch.zeros((num_samples, *values.shape[1:]), dtype=values.dtype, device=values.device)
    seen = torch.zeros(num_samples, dtype=torch.bool, device=values.device)
    out[all_index] = all_values
    seen[all_index] = True
    if not bool(seen.all()):
        missing = torch.nonzero(~seen).flatten()[:10].tolist()
        raise ValueError(
            f"{int((~seen).sum())} of {num_samples} samples were seen on no rank "
            f"(first: {missing}); was the dataloader's sampler dropping samples?"
        )
    return out


def rank_shard_loader(
    dataset: Dataset, world: int, rank: int, batch_size: int, num_workers: int = 0
) -> DataLoader:
    """Unshuffled loader over this rank's shard of ``dataset`` (padded to equal shard sizes).

    Pair it with :func:`gather_by_index`, which removes the padding by sample index.

    Args:
        dataset: a dataset whose items end with the sample index.
        world: number of processes (``trainer.world_size``).
        rank: this process's global rank (``trainer.global_rank``).
        batch_size: loader batch size.
        num_workers: loader worker processes.

    Returns:
        A ``DataLoader`` over ``DistributedSampler(dataset, world, rank, shuffle=False)``.
    """
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)


def local_log_dir(trainer: Any) -> Path | None:
    """The trainer's log dir without ``trainer.log_dir``'s broadcast.

    ``trainer.log_dir`` is a collective under DDP (rank 0 broadcasts it), so calling it inside an
    ``if trainer.is_global_zero:`` block hangs the other ranks; this reads the first logger's
    folder directly (the same value on rank 0, where files are written).

    Args:
        trainer: a Lightning ``Trainer``.

    Returns:
        The first logger's ``log_dir`` (or ``save_dir``), or None without a logger.
    """
    if not trainer.loggers:
        return None
    logger = trainer.loggers[0]
    folder = getattr(logger, "log_dir", None) or logger.save_dir
    return None if folder is None else Path(folder)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the incoming gradients over ranks too."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over all ranks, with gradient (identity when not distributed).

    The backward pass all-reduces the gradient as well, so autograd on every rank computes the
    gradient of the *sum over ranks* of the rank's loss with respect to its own inputs. When
    every rank computes the same loss from the reduced sums (a replicated loss), that is
    ``world_size`` times the gradient of the loss: divide the loss by ``world_size`` before
    ``backward`` (what :class:`~lit_info.methods.corex_module.CorexModule` does). Unlike
    ``torch.distributed.nn.functional.all_reduce`` (deprecated in torch 2.x) it warns about
    nothing and works under ``torch.inference_mode``.

    Args:
        tensor: this rank's partial sum (same shape on every rank).

    Returns:
        The sum over ranks, on every rank.
    """
    if world_size() == 1:
        return tensor
    return _AllReduceSum.apply(tensor)


def all_gather_columns(tensor: Tensor, dim: int = -1) -> Tensor:
    """Concatenate ``tensor`` from all ranks along ``dim`` (rank 0's slice first), no gradient.

    The ranks may hold different sizes along ``dim`` (contiguous shards of uneven length); the
    other dims must agree. A collective: every rank must call it.

    Args:
        tensor: this rank's slice.
        dim: the sharded dimension.

    Returns:
        The full tensor on every rank (``tensor`` itself when not distributed).
    """
    if world_size() == 1:
        return tensor
    return all_gather_variable(tensor.detach().movedim(dim, 0)).movedim(0, dim)

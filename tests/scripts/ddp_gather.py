"""One rank of a gloo process group exercising :mod:`lit_info.dist`; used by ``tests/test_ddp.py``.

Each rank evaluates a fixed linear map on its share of an odd-sized dataset (11 samples) given
by a shuffling ``DistributedSampler`` (which pads by repeating a sample so both ranks get 6),
gathers the results with :func:`lit_info.dist.gather_by_index`, and also checks
:func:`lit_info.dist.all_gather_variable` with uneven lengths and the error raised when a sample
is seen on no rank. Everything is written to ``--out`` (one file per rank) with ``torch.save``.

Usage (one command per rank, started together)::

    python tests/scripts/ddp_gather.py --rank R --world-size 2 --init file:///tmp/x --out r.pt
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lit_info.dist import all_gather_variable, gather_by_index, rank, world_size

NUM_SAMPLES = 11
SEED = 0


def make_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs ``(11, 5)`` and the weight ``(5, 3)`` every rank (and the test) uses.

    float64, so a rank's product of its rows equals the test's product of all rows to float64
    rounding whatever the BLAS kernel picked for each block size (float32 would differ by ulps).
    """
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(NUM_SAMPLES, 5, generator=g, dtype=torch.float64)
    return x, torch.randn(5, 3, generator=g, dtype=torch.float64)


def run(out: str) -> None:
    """Run the checks on this rank and save the results."""
    x, w = make_problem()
    dataset = TensorDataset(x, torch.arange(NUM_SAMPLES))
    sampler = DistributedSampler(
        dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=SEED
    )
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    indices, values, preds = [], [], []
    for xb, ib in loader:
        logits = xb @ w
        indices.append(ib)
        values.append(logits)
        preds.append(logits.argmax(dim=1))
    index = torch.cat(indices)
    result = {
        "rank": rank(),
        "world_size": world_size(),
        "local_index": index,
        "gathered_values": gather_by_index(index, torch.cat(values), NUM_SAMPLES),
        "gathered_preds": gather_by_index(index, torch.cat(preds), NUM_SAMPLES),
    }
    # uneven lengths: rank r contributes r + 2 rows of (rank, row) pairs
    local = torch.tensor([[rank(), i] for i in range(rank() + 2)])
    result["uneven"] = all_gather_variable(local)
    # a sample seen on no rank must be reported, on every rank
    keep = index != 3
    try:
        gather_by_index(index[keep], torch.cat(values)[keep], NUM_SAMPLES)
    except ValueError as err:
        result["missing_error"] = str(err)
    torch.save(result, out)


def main(argv: list[str] | None = None) -> None:
    """Join the process group, run the checks, leave the group."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--init", required=True, help="init_method, e.g. file:///tmp/store")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=args.init, rank=args.rank, world_size=args.world_size
    )
    try:
        run(args.out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""T-CorEx at scale on one GPU: p = 100,000 variables, 20 periods (the paper's scale test).

The T-CorEx paper fits p = 100,000 variables over 20 periods "in under an hour on a PC"; the
target here is under 5 minutes on one GPU. Data: ``sudden_change_models`` (2 segments) with
``--train`` samples per period, never a p x p matrix: sampling is O(n p m) and the test NLL is
computed through Woodbury (``covariance_low_rank().log_prob``). Prints the fit time, the
iterations, the mean zero-mean test NLL per period (nats per sample, and per variable) next to
the truth's, and where the largest change-point score falls (the true change is between
periods 9 and 10).

    .venv/bin/python benchmarks/gpu_tcorex.py                     # p = 100,000 on cuda
    .venv/bin/python benchmarks/gpu_tcorex.py --p 64 --m 4 --periods 4 --max-iter 30 --device cpu
        # a check anywhere in seconds (tests/test_gpu_tcorex_script.py runs it); p = 2000 at
        # the defaults takes more than 10 minutes on 2 CPU cores

One prepared script for the lent GPU machine (``benchmarks/README.md``); it prints its numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lit_info.data.timeseries import sample_periods, sudden_change_models
from lit_info.info.low_rank import LowRankPlusDiagonal
from lit_info.methods.corex import TCorex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=int, default=100_000)
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--periods", type=int, default=20)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--l1", type=float, default=0.3)
    parser.add_argument("--gamma", type=float, default=0.4)
    parser.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "adam"])
    parser.add_argument("--max-iter", type=int, default=500)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    args = parser.parse_args()
    start = time.perf_counter()
    models = sudden_change_models(args.p, args.m, args.periods, n_segments=2, seed=0)
    rng = np.random.default_rng(0)
    train = sample_periods(models, args.train, rng)
    test = sample_periods(models, args.test, rng)
    print(
        f"data: p={args.p}, m={args.m}, {args.periods} periods x {args.train} train / "
        f"{args.test} test samples ({time.perf_counter() - start:.1f} s); device {args.device}, "
        f"{args.dtype}, optimizer {args.optimizer}",
        flush=True,
    )
    est = TCorex(
        n_hidden=args.m,
        l1=args.l1,
        gamma=args.gamma,
        init=True,
        optimizer=args.optimizer,
        max_iter=args.max_iter,
        device=args.device,
        dtype=args.dtype,
        random_state=0,
        verbose=True,
    )
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    est.fit(list(train))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    fit_s = time.perf_counter() - start
    dtype = torch.float64
    covs = est.covariance_low_rank()
    ours = [
        float(
            -c.log_prob(torch.as_tensor(x, dtype=c.diagonal.dtype, device=c.diagonal.device)).mean()
        )
        for c, x in zip(covs, test, strict=True)
    ]
    truth = [
        float(
            -LowRankPlusDiagonal(
                torch.as_tensor(m.diagonal, dtype=dtype), torch.as_tensor(m.factor, dtype=dtype)
            )
            .log_prob(torch.as_tensor(x, dtype=dtype))
            .mean()
        )
        for m, x in zip(models, test, strict=True)
    ]
    scores = est.change_point_scores()["frobenius"]
    peak, half = int(np.argmax(scores)), args.periods // 2
    print(f"fit: {fit_s:.1f} s ({fit_s / 60:.2f} min), iterations {est.n_iter_}")
    print(
        f"test NLL per period: ours {np.mean(ours):.1f} ({np.mean(ours) / args.p:.4f} per "
        f"variable), truth {np.mean(truth):.1f} ({np.mean(truth) / args.p:.4f})"
    )
    print(
        f"largest change-point score between periods {peak} and {peak + 1} "
        f"(true change: {half - 1} and {half})"
    )
    if args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()

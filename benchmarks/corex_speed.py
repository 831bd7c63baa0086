"""Linear CorEx fit time: lit_info's LinearCorex against the authors' ``linearcorex`` (CPU).

Both fit the same planted modular data (``lit_info.data.timeseries.modular_model``: the
authors' NGLF generator, snr ~ U(0, 5), std ~ U(0.25, 4)) with the same number of factors and
their defaults (annealing, tol 1e-5); every data set is fitted by both in the same run, in
alternating order, and the ratio of the wall-clock times is printed per data set and in total,
next to the test NLL of both (zero-mean Gaussian NLL of 1000 fresh samples, nats per sample,
the authors' metric) and the objective (TC lower bound) each reached.

The data sets include slow-converging ones (few samples, many factors). ``--scale`` adds the
time per fit of LinearCorex alone at p = 1,000 / 10,000 / 100,000 (n = 64, m = 16), which should
grow linearly in p.

    .venv/bin/python benchmarks/corex_speed.py            # the comparison table
    .venv/bin/python benchmarks/corex_speed.py --scale    # + the growth in p

Requires the dev-only reference (``pip install -e ".[bench]"``: linearcorex).
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import torch
from scipy.stats import multivariate_normal

from lit_info.data.timeseries import modular_model
from lit_info.methods.corex import LinearCorex

DATASETS = [  # (p, m, n): variables, factors, training samples
    (128, 8, 1000),
    (256, 16, 32),
    (512, 32, 16),
    (512, 16, 128),
    (1024, 64, 64),
    (1024, 32, 32),
]


def zero_mean_nll(cov: np.ndarray, x: np.ndarray) -> float:
    """Mean NLL of ``x`` under ``N(0, cov)`` (nats per sample)."""
    return float(-multivariate_normal.logpdf(x, cov=cov, allow_singular=False).mean())


def run_pair(p: int, m: int, n: int, seed: int, dtype: str) -> dict:
    import linearcorex

    rng = np.random.default_rng(seed)
    model = modular_model(p, m, rng=rng)
    x, x_test = model.sample(n, rng), model.sample(1000, rng)
    out: dict = {"p": p, "m": m, "n": n, "truth": zero_mean_nll(model.covariance(), x_test)}
    order = ("ours", "ref") if seed % 2 == 0 else ("ref", "ours")
    for which in order:
        start = time.perf_counter()
        if which == "ours":
            est = LinearCorex(n_hidden=m, random_state=seed, dtype=dtype).fit(x)
            out["ours_s"] = time.perf_counter() - start
            cov = est.covariance_low_rank()
            out["ours_nll"] = float(
                -cov.log_prob(torch.as_tensor(x_test, dtype=cov.diagonal.dtype)).mean()
            )
            out["ours_tc"] = est.tc_
            out["ours_iter"] = est.n_iter_
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = linearcorex.Corex(n_hidden=m, seed=seed).fit(x)
            out["ref_s"] = time.perf_counter() - start
            out["ref_nll"] = zero_mean_nll(ref.get_covariance().astype(np.float64), x_test)
            out["ref_tc"] = float(ref.tc)
            out["ref_iter"] = len(ref.history["TC"])
    return out


def scale_runs(dtype: str, sizes: list[int]) -> None:
    print("\nLinearCorex time per fit against p (n = 64, m = 16)")
    print(f"{'p':>8} {'fit s':>8} {'s / 1000 vars':>14} {'iterations':>11}")
    for p in sizes:
        rng = np.random.default_rng(0)
        x = modular_model(p, 16, rng=rng).sample(64, rng)
        start = time.perf_counter()
        est = LinearCorex(n_hidden=16, random_state=0, dtype=dtype).fit(x)
        took = time.perf_counter() - start
        print(f"{p:>8} {took:>8.2f} {1000 * took / p:>14.4f} {est.n_iter_:>11}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="data seeds per data set")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--scale", action="store_true", help="also time p = 1e3, 1e4, 1e5")
    parser.add_argument("--scale-sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"CPU {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, lit_info dtype {args.dtype} "
        "(linearcorex computes in float32)"
    )
    LinearCorex(n_hidden=2, random_state=0).fit(np.random.default_rng(0).normal(size=(20, 8)))
    rows = [run_pair(p, m, n, s, args.dtype) for (p, m, n) in DATASETS for s in range(args.seeds)]
    head = (
        f"{'p':>5} {'m':>3} {'n':>5} | {'ours s':>7} {'ref s':>7} {'ratio':>6} | "
        f"{'NLL ours':>9} {'NLL ref':>9} {'truth':>9} | {'TC ours':>9} {'TC ref':>9} | it ours/ref"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['p']:>5} {r['m']:>3} {r['n']:>5} | {r['ours_s']:>7.2f} {r['ref_s']:>7.2f} "
            f"{r['ref_s'] / r['ours_s']:>6.1f} | {r['ours_nll']:>9.1f} {r['ref_nll']:>9.1f} "
            f"{r['truth']:>9.1f} | {r['ours_tc']:>9.2f} {r['ref_tc']:>9.2f} | "
            f"{r['ours_iter']}/{r['ref_iter']}",
            flush=True,
        )
    ours = sum(r["ours_s"] for r in rows)
    ref = sum(r["ref_s"] for r in rows)
    print(f"total: ours {ours:.2f} s, linearcorex {ref:.2f} s, ratio {ref / ours:.1f}x")
    print("mean test NLL per data set over its seeds (a fit that ends in a worse local optimum")
    print("than the other's, by more than 1 nat, is counted)")
    for p, m, n in DATASETS:
        mine = [r for r in rows if (r["p"], r["m"], r["n"]) == (p, m, n)]
        ours_nll = float(np.mean([r["ours_nll"] for r in mine]))
        ref_nll = float(np.mean([r["ref_nll"] for r in mine]))
        ours_stuck = sum(r["ours_nll"] > r["ref_nll"] + 1.0 for r in mine)
        ref_stuck = sum(r["ref_nll"] > r["ours_nll"] + 1.0 for r in mine)
        verdict = "no worse" if ours_nll <= ref_nll + 1e-6 else f"worse by {ours_nll - ref_nll:.2f}"
        print(
            f"  p={p} m={m} n={n}: ours {ours_nll:.2f}, linearcorex {ref_nll:.2f} ({verdict}); "
            f"worse optimum: ours {ours_stuck}, linearcorex {ref_stuck} of {len(mine)}"
        )
    if args.scale:
        scale_runs(args.dtype, args.scale_sizes)


if __name__ == "__main__":
    main()

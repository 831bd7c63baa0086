"""Test accuracy over seeds on Cora and CiteSeer: MixHop (ours), GCN (ours), PyG's example.

Each seed trains configs/mixhop/<dataset>.yaml and configs/gcn/<dataset>.yaml through the CLI
objects (the test accuracy of the best-validation checkpoint) and torch-geometric's
examples/mixhop.py recipe (its own loop, best validation), all in this one run.

    python benchmarks/mixhop_accuracy.py --seeds 10 [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from mixhop_common import fit_config, pyg_example, quiet

PAPER = {"Cora": 81.9, "CiteSeer": 71.4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--datasets", nargs="+", default=["Cora", "CiteSeer"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    rows = []
    for name in args.datasets:
        results: dict[str, list[float]] = {
            "MixHop (lit_info)": [],
            "GCN (lit_info)": [],
            "PyG examples/mixhop.py": [],
        }
        for seed in range(args.seeds):
            results["MixHop (lit_info)"].append(fit_config(f"mixhop/{name.lower()}", seed)[0])
            results["GCN (lit_info)"].append(fit_config(f"gcn/{name.lower()}", seed)[0])
            results["PyG examples/mixhop.py"].append(pyg_example(name, seed))
            print(name, seed, {k: round(v[-1] * 100, 1) for k, v in results.items()}, flush=True)
        for method, accs in results.items():
            mean = 100 * statistics.mean(accs)
            std = 100 * statistics.stdev(accs) if len(accs) > 1 else 0.0
            rows.append((name, method, mean, std))
    print(f"\n{'dataset':9} {'method':24} {'test acc (mean +- std over seeds)':>34}  paper")
    for name, method, mean, std in rows:
        paper = f"{PAPER[name]:.1f}" if method.startswith("MixHop") else ""
        print(f"{name:9} {method:24} {mean:27.1f} +- {std:.1f}  {paper:>5}")
    print(f"({args.seeds} seeds, torch threads {args.threads})")


if __name__ == "__main__":
    main()

"""The synthetic homophily experiment: MixHop vs GCN test accuracy for h = 0.0 .. 0.9.

Trains configs/mixhop/synthetic_h<h>.yaml and configs/gcn/synthetic_h<h>.yaml (the paper's
graphs, raw files of MixHopSyntheticDataset) for every h and seed, prints the table and writes
it to TensorBoard (``--logdir``, default runs/benchmarks/mixhop_homophily/version_<N>): scalars
``homophily/mixhop`` and ``homophily/gcn`` with step = 10 h (the plot) and the table as text.

    python benchmarks/mixhop_homophily.py --seeds 1
"""

from __future__ import annotations

import argparse
import statistics

import torch
from mixhop_common import ROOT, fit_config, quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--logdir", default=str(ROOT / "runs" / "benchmarks" / "mixhop_homophily"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    from lightning.pytorch.loggers import TensorBoardLogger

    writer = TensorBoardLogger(args.logdir, name="").experiment
    lines = ["| h | MixHop | GCN | MixHop - GCN |", "|---|---|---|---|"]
    for k in range(10):
        h = f"{0.1 * k:.1f}"
        mix = [fit_config(f"mixhop/synthetic_h{h}", s)[0] for s in range(args.seeds)]
        gcn = [fit_config(f"gcn/synthetic_h{h}", s)[0] for s in range(args.seeds)]
        m, g = 100 * statistics.mean(mix), 100 * statistics.mean(gcn)
        writer.add_scalar("homophily/mixhop", m, k)
        writer.add_scalar("homophily/gcn", g, k)
        writer.add_scalar("homophily/mixhop_minus_gcn", m - g, k)
        lines.append(f"| {h} | {m:.1f} | {g:.1f} | {m - g:+.1f} |")
        print(lines[-1], flush=True)
    writer.add_text("homophily/table", "\n".join(lines), 0)
    writer.flush()
    print("\n".join(lines))
    print(f"({args.seeds} seed(s); TensorBoard: {writer.log_dir})")


if __name__ == "__main__":
    main()

"""MixHop architecture search on Cora: group lasso on a wide net, prune, retrain (2 stages).

Stage 1 trains configs/mixhop/cora_search.yaml (widths [40, 40, 40] / [7, 7, 7], group lasso);
its surviving columns give the widths of stage 2, trained with configs/mixhop/cora.yaml and
those widths. Prints widths, kernel entries and test accuracy before / after.

    python benchmarks/mixhop_search.py --seeds 3
"""

from __future__ import annotations

import argparse
import statistics

import torch
from mixhop_common import fit_config, quiet

from lit_info.methods.mixhop import parameter_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    before, after, widths_seen = [], [], []
    for seed in range(args.seeds):
        # the widths of the final stage-1 weights (as the fit's architecture.json)
        acc, _, _, widths = fit_config(
            "mixhop/cora_search", seed, inspect=lambda model: model.searched_widths()
        )
        before.append(acc)
        hidden = str(widths["hidden_widths"]).replace(" ", "")
        output = str(widths["output_widths"]).replace(" ", "")
        acc2 = fit_config(
            "mixhop/cora",
            seed,
            [
                f"--model.init_args.hidden_widths={hidden}",
                f"--model.init_args.output_widths={output}",
            ],
        )[0]
        after.append(acc2)
        widths_seen.append(widths)
        print(seed, widths, round(100 * acc, 1), round(100 * acc2, 1), flush=True)
    start = {"hidden_widths": [[40, 40, 40]], "output_widths": [7, 7, 7]}
    print(f"\n{'stage':28} {'widths (hidden / output)':36} {'kernel entries':>14} {'test acc':>9}")
    label = f"{start['hidden_widths']} / {start['output_widths']}"
    print(
        f"{'1: wide + group lasso':28} {label:36} "
        f"{parameter_count(start, 1433):14d} {100 * statistics.mean(before):9.1f}"
    )
    for seed, w in enumerate(widths_seen):
        label = f"2: searched (seed {seed})"
        print(
            f"{label:28} {str(w['hidden_widths']) + ' / ' + str(w['output_widths']):36} "
            f"{parameter_count(w, 1433):14d} {100 * after[seed]:9.1f}"
        )
    print(f"stage 2 mean over {args.seeds} seeds: {100 * statistics.mean(after):.1f}")


if __name__ == "__main__":
    main()

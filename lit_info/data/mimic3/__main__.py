"""``python -m lit_info.data.mimic3 build --mimic-dir DIR --out DIR``: build the benchmark.

See :mod:`lit_info.data.mimic3.pipeline` for the stages and their outputs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lit_info.data.mimic3.pipeline import STAGES, BuildOptions, build, default_workers
from lit_info.data.mimic3.tables import Mimic3InputError
from lit_info.data.mimic3.tasks import TASKS


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    main = argparse.ArgumentParser(
        prog="python -m lit_info.data.mimic3",
        description="The MIMIC-III clinical benchmarks (Harutyunyan et al., Scientific Data 2019).",
    )
    commands = main.add_subparsers(dest="command", required=True)
    make = commands.add_parser(
        "build",
        help="raw MIMIC-III CSVs -> per-subject episodes -> the five benchmark tasks",
        description="Build the benchmark; finished stages are skipped on a rerun (see --force).",
    )
    make.add_argument(
        "--mimic-dir", required=True, help="folder of the MIMIC-III v1.4 CSV (or .csv.gz) tables"
    )
    make.add_argument(
        "--out", required=True, help="output folder (root/, the task folders, report.json)"
    )
    make.add_argument(
        "--stage",
        action="append",
        choices=STAGES,
        help="run only this stage (repeatable); earlier stages must be done. Default: all",
    )
    make.add_argument(
        "--force", action="store_true", help="redo stages even if done with the same inputs"
    )
    make.add_argument(
        "--memory-limit",
        type=int,
        default=4000,
        metavar="MB",
        help="memory budget for the event stages (4000)",
    )
    make.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="threads for tables / subject buckets (CPU count, <= 8)",
    )
    make.add_argument(
        "--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks to create (all)"
    )
    make.add_argument(
        "--keep-work", action="store_true", help="keep the bucketed events in OUT/.work"
    )
    make.add_argument("--quiet", action="store_true", help="no progress bars or stage lines")
    score = commands.add_parser(
        "evaluate",
        help="the task's metrics of a predictions.csv with bootstrap means and 95% intervals",
        description="Score the predictions of `python -m lit_info predict` (predictions.csv).",
    )
    score.add_argument("--task", required=True, choices=[t for t in TASKS if t != "multitask"])
    score.add_argument(
        "--predictions", required=True, help="predictions.csv (index, y_true, prediction)"
    )
    score.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (10000)")
    score.add_argument("--seed", type=int, default=0)
    score.add_argument(
        "--out", default=None, help="JSON file (default: <predictions>.bootstrap.json)"
    )
    return main


def evaluate(task: str, predictions: str, resamples: int, seed: int, out: str | None) -> dict:
    """Bootstrap the task's metrics of a predictions file; print a table, write JSON.

    Raises:
        ValueError: for a file without the needed columns or a non-numeric value.
        FileNotFoundError: when the file is absent.
    """
    import csv
    import json
    from pathlib import Path

    import torch

    from lit_info.data.mimic3.files import write_text
    from lit_info.methods.clinical import task_metrics
    from lit_info.methods.clinical_metrics import bootstrap

    path = Path(predictions)
    if not path.is_file():
        raise FileNotFoundError(f"--predictions {path}: no such file")
    if resamples < 1:
        raise ValueError(f"--resamples {resamples}: give at least 1")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        rows = list(reader)
    truth_columns = sorted(
        (c for c in columns if c == "y_true" or c.startswith("y_true_")), key=_column_order
    )
    prediction_columns = sorted(
        (c for c in columns if c == "prediction" or c.startswith("prediction_")), key=_column_order
    )
    if not truth_columns or not prediction_columns:
        raise ValueError(
            f"{path}: needs y_true and prediction columns (found {', '.join(columns)})"
        )
    try:
        truth = torch.tensor(
            [[float(r[c]) for c in truth_columns] for r in rows], dtype=torch.float64
        )
        scores = torch.tensor(
            [[float(r[c]) for c in prediction_columns] for r in rows], dtype=torch.float64
        )
    except ValueError as error:
        raise ValueError(f"{path}: a value is not a number ({error})") from None
    if task != "phenotyping":
        truth, scores = truth[:, 0], scores[:, 0]

    def metric(p, y):
        return task_metrics(task, p, y)

    result = bootstrap(metric, scores, truth, resamples=resamples, seed=seed)
    print(f"{task}: {len(rows):,} samples, {resamples:,} bootstrap resamples")
    print(f"{'metric':<16} {'value':>8} {'mean':>8} {'95% interval':>20}")
    for name, entry in result.items():
        print(
            f"{name:<16} {entry['value']:>8.4f} {entry['mean']:>8.4f}"
            f"   [{entry['low']:.4f}, {entry['high']:.4f}]"
        )
    target = Path(out) if out else path.with_suffix(".bootstrap.json")
    summary = {"task": task, "samples": len(rows), "resamples": resamples, "metrics": result}
    write_text(target, json.dumps(summary, indent=2) + "\n")
    print(f"written: {target}")
    return result


def _column_order(name: str) -> tuple[int, str]:
    tail = name.rsplit("_", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (-1, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; bad input is one line on stderr and exit status 2."""
    args = parser().parse_args(argv)
    if args.command == "evaluate":
        try:
            evaluate(args.task, args.predictions, args.resamples, args.seed, args.out)
        except (ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    try:
        options = BuildOptions(
            memory_limit_mb=args.memory_limit,
            workers=args.workers,
            tasks=tuple(args.tasks),
            keep_work=args.keep_work,
        )
        log = (
            (lambda message: None)
            if args.quiet
            else (lambda message: print(message, file=sys.stderr))
        )
        report = build(
            args.mimic_dir,
            args.out,
            stages=args.stage or STAGES,
            force=args.force,
            options=options,
            log=log,
            progress=not args.quiet,
        )
    except (Mimic3InputError, ValueError, FileNotFoundError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(
            f"benchmark in {args.out}: report {args.out}/report.txt "
            f"({report['total_seconds']:.1f} s, peak memory {report['peak_memory_mb']:.0f} MB)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
    return main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; bad input is one line on stderr and exit status 2."""
    args = parser().parse_args(argv)
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

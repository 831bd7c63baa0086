"""MIMIC-III benchmark build: wall time and peak memory on the demo and on replicated demos.

The demo (100 patients) is replicated ``k`` times with SUBJECT_ID, HADM_ID and ICUSTAY_ID
offset by ``r * 10**7`` for replica ``r`` (a larger database of the same shape; replicas'
subjects are not in ``testset.csv`` and so all go to train), then built with
``python -m lit_info.data.mimic3 build`` in a fresh process. Printed: input event rows, wall
time, time per million event rows, peak resident memory (of the build process), and the
projection to the full MIMIC-III v1.4 (362.9 M event rows: CHARTEVENTS 330.7 M, LABEVENTS
27.9 M, OUTPUTEVENTS 4.3 M) from the largest scale's rate.

For reference, the authors' pipeline (mimic3-benchmarks ea0314c, csv.DictReader, one process)
took 46.8 s wall and 160 MB peak on the demo (measured by the issue's author).

    python benchmarks/mimic3_pipeline.py --scales 1 20 100 --memory-limit 2000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("LIT_INFO_DATASETS", ROOT.parent / "shared" / "datasets"))
TABLES = (
    "PATIENTS",
    "ADMISSIONS",
    "ICUSTAYS",
    "DIAGNOSES_ICD",
    "D_ICD_DIAGNOSES",
    "CHARTEVENTS",
    "LABEVENTS",
    "OUTPUTEVENTS",
)
ID_COLUMNS = ("SUBJECT_ID", "HADM_ID", "ICUSTAY_ID")
FULL_EVENT_ROWS = 330_712_484 + 27_854_056 + 4_349_219
AUTHORS_DEMO_SECONDS = 46.8
OFFSET = 10**7


def replicate(demo: Path, target: Path, copies: int) -> int:
    """Write ``copies`` id-shifted copies of the demo's tables; returns the event rows."""
    target.mkdir(parents=True, exist_ok=True)
    event_rows = 0
    for table in TABLES:
        source = demo / f"{table}.csv"
        if copies == 1 or table == "D_ICD_DIAGNOSES":
            shutil.copy(source, target / source.name)
            if table.endswith("EVENTS"):
                event_rows += (
                    pl.scan_csv(source, infer_schema=False).select(pl.len()).collect().item()
                )
            continue
        frame = pl.read_csv(source, infer_schema=False)
        ids = [c for c in ID_COLUMNS if c in frame.columns]
        parts = []
        for replica in range(copies):
            shifted = frame.with_columns(
                (pl.col(c).cast(pl.Int64, strict=False) + replica * OFFSET).cast(pl.String)
                for c in ids
            )
            parts.append(shifted)
        pl.concat(parts).write_csv(target / source.name, null_value="")
        if table.endswith("EVENTS"):
            event_rows += frame.height * copies
    return event_rows


def run_build(mimic: Path, out: Path, memory_limit: int, workers: int) -> tuple[float, float, dict]:
    """(wall seconds, peak MB of the build process, report) of one build in a new process."""
    command = [
        sys.executable,
        "-m",
        "lit_info.data.mimic3",
        "build",
        "--quiet",
        "--mimic-dir",
        str(mimic),
        "--out",
        str(out),
        "--memory-limit",
        str(memory_limit),
        "--workers",
        str(workers),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    report = json.loads((out / "report.json").read_text())
    # the build measures each stage's peak resident memory itself (VmHWM, reset per stage)
    return seconds, report["peak_memory_mb"], report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--memory-limit", type=int, default=2000, help="MB, passed to the build")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: a temp dir)"
    )
    args = parser.parse_args()
    demo = DATASETS / "mimic3-demo"
    if not (demo / "CHARTEVENTS.csv").is_file():
        sys.exit(f"MIMIC-III demo not found in {demo} (set LIT_INFO_DATASETS)")
    scratch = Path(tempfile.mkdtemp(dir=args.work, prefix="mimic3-bench-"))
    print(f"cores {os.cpu_count()}, workers {args.workers}, --memory-limit {args.memory_limit} MB")
    columns = [("scale", 6), ("event rows", 12), ("wall s", 8), ("s / M rows", 10), ("peak MB", 8)]
    columns += [("episodes", 9), ("decomp train", 13)]
    print(" ".join(f"{name:>{width}}" for name, width in columns))
    rates = []
    try:
        for scale in args.scales:
            mimic = scratch / f"mimic-x{scale}"
            rows = replicate(demo, mimic, scale)
            out = scratch / f"out-x{scale}"
            seconds, peak, report = run_build(mimic, out, args.memory_limit, args.workers)
            rate = seconds / (rows / 1e6)
            rates.append(rate)
            episodes = report["episodes"]["episodes"]
            decomp = report["tasks"]["decompensation"]["train"]["samples"]
            print(
                f"{scale:>6} {rows:>12,} {seconds:>8.1f} {rate:>10.2f} {peak:>8.0f} "
                f"{episodes:>9,} {decomp:>13,}"
            )
            stages = ", ".join(
                f"{k} {v['seconds']:.1f} s / {v['peak_memory_mb']:.0f} MB"
                for k, v in report["stages"].items()
            )
            print(f"       stages: {stages}")
            if scale == 1:
                speedup = AUTHORS_DEMO_SECONDS / seconds
                print(
                    f"       demo: {speedup:.1f}x faster than the authors' {AUTHORS_DEMO_SECONDS} s"
                )
            shutil.rmtree(mimic)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    projected = rates[-1] * FULL_EVENT_ROWS / 1e6
    print(
        f"projection to the full MIMIC-III ({FULL_EVENT_ROWS / 1e6:.1f} M event rows) at the "
        f"x{args.scales[-1]} rate: {projected / 60:.0f} min on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()

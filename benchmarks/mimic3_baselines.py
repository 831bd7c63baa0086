"""Every MIMIC-III baseline config trained and tested through the CLI on the demo benchmark.

Builds the benchmark from the 100-patient demo, then for each ``configs/mimic3/*.yaml`` runs
``python -m lit_info fit`` (epochs capped by ``--epochs``; the paper's settings otherwise) and
``test --ckpt_path best``, and prints the test metrics (epochs and training batches per epoch
capped: decompensation and length of stay have about 8,000 training samples on the demo).
The demo has 11 in-hospital-mortality and 18 phenotyping test stays: the numbers show that every
model trains and evaluates, they are not estimates of the models' quality.

    python benchmarks/mimic3_baselines.py --epochs 10 --train-batches 200
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

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("LIT_INFO_DATASETS", ROOT.parent / "shared" / "datasets"))
METRICS = {
    "ihm": ["auroc", "auprc", "minpse"],
    "decomp": ["auroc", "auprc", "minpse"],
    "los": ["kappa", "mad"],
    "pheno": ["auroc_macro", "auroc_micro"],
    "multitask": ["ihm_auroc", "decomp_auroc", "los_kappa", "pheno_auroc_macro"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="cap on max_epochs (LSTMs)")
    parser.add_argument(
        "--train-batches", type=int, default=200, help="cap on training batches per epoch (LSTMs)"
    )
    parser.add_argument("--configs", nargs="*", default=None, help="names (default: all)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from lit_info.data.mimic3.pipeline import build

    work = Path(tempfile.mkdtemp(prefix="mimic3-baselines-"))
    benchmark = work / "benchmark"
    build(DATASETS / "mimic3-demo", benchmark, log=lambda message: None, progress=False)
    configs = sorted((ROOT / "configs" / "mimic3").glob("*.yaml"))
    if args.configs:
        configs = [c for c in configs if c.stem in args.configs]
    print(f"{'config':<24} {'epochs':>6} {'fit s':>7}  test metrics")
    for config in configs:
        short = config.stem.split("_")[0]
        common = [
            f"--data.init_args.data_dir={benchmark}",
            f"--trainer.default_root_dir={work / 'runs'}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
        linear = config.stem.endswith("_lr")
        epochs = 1 if linear else args.epochs
        if not linear:
            common.append(f"--trainer.limit_train_batches={args.train_batches}")
        started = time.perf_counter()
        fit = [sys.executable, "-m", "lit_info", "fit", "--config", str(config), *common]
        quiet = {"check": True, "capture_output": True, "text": True}
        subprocess.run([*fit, f"--trainer.max_epochs={epochs}"], **quiet)
        seconds = time.perf_counter() - started
        test = [sys.executable, "-m", "lit_info", "test", "--config", str(config), *common]
        subprocess.run([*test, "--ckpt_path=best"], **quiet)
        # `test` writes <run>/test_best/version_<n>/metrics.json next to what it evaluated
        found = sorted((work / "runs" / "mimic3" / config.stem).rglob("test_best/*/metrics.json"))
        metrics = json.loads(found[-1].read_text())["metrics"][0] if found else {}
        values = "  ".join(
            f"{m} {metrics.get(f'test/{m}', float('nan')):.3f}" for m in METRICS[short]
        )
        print(f"{config.stem:<24} {epochs:>6} {seconds:>7.1f}  {values}", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Shared test set-up."""

import os
from pathlib import Path

import pytest
import torch

# The test models are tiny: on the 2-core CI machine one intra-op thread is several times faster
# than two (thread start-up and contention dominate). Override with LIT_INFO_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("LIT_INFO_TEST_THREADS", "1")))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """Real datasets folder (env LIT_INFO_DATASETS, default ../shared/datasets); skip if absent."""
    path = Path(os.environ.get("LIT_INFO_DATASETS", ROOT.parent / "shared" / "datasets"))
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set LIT_INFO_DATASETS)")
    return path


@pytest.fixture(scope="session")
def mimic3_demo(datasets_dir: Path) -> Path:
    """The MIMIC-III Clinical Database Demo folder (skip when absent)."""
    path = datasets_dir / "mimic3-demo"
    if not (path / "CHARTEVENTS.csv").is_file():
        pytest.skip(f"MIMIC-III demo not found in {path}")
    return path


@pytest.fixture(scope="session")
def mimic3_benchmark(mimic3_demo: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The benchmark built from the demo once per session: (folder, report). Do not modify."""
    from lit_info.data.mimic3.pipeline import build

    out = tmp_path_factory.mktemp("mimic3") / "benchmark"
    report = build(mimic3_demo, out, log=lambda message: None, progress=False)
    return out, report

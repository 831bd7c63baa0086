"""Execute ``notebooks/mimic3_demo.ipynb`` (build the demo benchmark, train an LSTM, plot)."""

from __future__ import annotations

import json

import pytest
from notebook_runs import ROOT, execute_notebook, skip_without_jupyter

skip_without_jupyter()

NOTEBOOK = ROOT / "notebooks" / "mimic3_demo.ipynb"


def test_mimic3_notebook_builds_trains_and_plots(tmp_path, mimic3_demo):
    from sklearn.metrics import roc_auc_score

    out = tmp_path / "out"
    env = {"LIT_INFO_DATASETS": str(mimic3_demo.parent), "LIT_INFO_NOTEBOOK_DIR": str(out)}
    printed = execute_notebook(NOTEBOOK, tmp_path, env)
    assert "in-hospital-mortality    train     46  test     11" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["probability"]) == 11 and sum(summary["y_true"]) == 5
    # the logged test AUC-ROC is the one of the plotted predictions
    assert summary["test/auroc"] == pytest.approx(
        roc_auc_score(summary["y_true"], summary["probability"]), abs=1e-6
    )
    assert (out / "mimic3_demo.png").stat().st_size > 20_000
    assert (out / "benchmark" / "report.json").is_file()

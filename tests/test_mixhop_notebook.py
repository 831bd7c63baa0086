"""Execute ``notebooks/mixhop_cora.ipynb`` (MixHop on the real Cora files) and check its outputs.

The notebook writes its figure, its best checkpoint and a summary (test accuracy, validation
curve, column norms) into ``$LIT_INFO_NOTEBOOK_DIR``; the test recomputes the column norms from
the checkpoint and checks the curve against the checkpoint's epoch.
"""

from __future__ import annotations

import json

import torch
from notebook_runs import ROOT, execute_notebook, skip_without_jupyter

skip_without_jupyter()

NOTEBOOK = ROOT / "notebooks" / "mixhop_cora.ipynb"


def test_mixhop_notebook_trains_plots_and_reports_the_best_checkpoint(tmp_path, datasets_dir):
    from lit_info.methods import MixHop

    out = tmp_path / "out"
    env = {"LIT_INFO_DATASETS": str(datasets_dir), "LIT_INFO_NOTEBOOK_DIR": str(out)}
    printed = execute_notebook(NOTEBOOK, tmp_path, env)
    assert "best validation accuracy" in printed
    assert (out / "mixhop_cora.png").stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_acc"] >= 0.79
    curve = summary["val_curve"]
    assert curve[summary["best_epoch"]] == max(curve) and 0.7 < max(curve) <= 1.0
    # the plotted column norms are those of the best checkpoint
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == summary["best_epoch"]
    model = MixHop(**ckpt["hyper_parameters"])
    model.load_state_dict(ckpt["state_dict"])
    for layer, recorded in zip(model.column_norms(), summary["column_norms"], strict=True):
        assert set(map(str, layer)) == set(recorded)
        for power, norms in layer.items():
            torch.testing.assert_close(norms, torch.tensor(recorded[str(power)]), rtol=1e-6, atol=0)

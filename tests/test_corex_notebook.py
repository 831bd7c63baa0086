"""Execute ``notebooks/corex_fmri.ipynb`` (T-CorEx on the real fMRI file) and check its outputs.

The notebook writes its change-point scores and figure into ``$LIT_INFO_NOTEBOOK_DIR``; the test
refits the same model in this process and compares the scores.
"""

from __future__ import annotations

import json

import numpy as np
from notebook_runs import ROOT, execute_notebook, skip_without_jupyter

skip_without_jupyter()

NOTEBOOK = ROOT / "notebooks" / "corex_fmri.ipynb"


def test_fmri_notebook_runs_and_its_scores_match_a_refit(tmp_path, datasets_dir):
    from lit_info.data.timeseries import read_table
    from lit_info.methods.corex import TCorex

    out = tmp_path / "out"
    env = {"LIT_INFO_DATASETS": str(datasets_dir), "LIT_INFO_NOTEBOOK_DIR": str(out)}
    printed = execute_notebook(NOTEBOOK, tmp_path, env)
    assert "250 time points x 28 regions, 10 periods of 25" in printed
    assert (out / "tcorex_fmri.png").stat().st_size > 10_000
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores) == {"frobenius", "spectral"}

    path = datasets_dir / "fmri" / "fmri_timeseries.csv"
    names = [n for n in read_table(path)[1] if n not in ("WM", "Vent", "Brain")]
    x, _ = read_table(path, columns=names)
    x = (x - x.mean(0)) / x.std(0)
    model = TCorex(n_hidden=4, l1=0.1, gamma=0.5, init=True, random_state=0).fit(np.split(x, 10))
    expected = model.change_point_scores()
    for key in ("frobenius", "spectral"):
        assert len(scores[key]) == 9
        assert np.all(np.isfinite(scores[key])) and np.all(np.asarray(scores[key]) > 0)
        assert np.allclose(scores[key], expected[key], rtol=1e-6)

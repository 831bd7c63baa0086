"""Execute ``notebooks/minsyn_words.ipynb`` (MinSyn vs FastICA on word images) and check it.

The notebook writes its figures and scores into ``$LIT_INFO_NOTEBOOK_DIR``; the test refits
FastICA on the same data in this process and compares the scores, and checks that MinSyn's
factors read the characters of non-words far above chance, one character tile each.
"""

from __future__ import annotations

import json

import pytest
import torch
from notebook_runs import ROOT, execute_notebook, skip_without_jupyter

skip_without_jupyter()

NOTEBOOK = ROOT / "notebooks" / "minsyn_words.ipynb"


def test_minsyn_notebook_runs_and_its_ica_scores_match_a_refit(tmp_path):
    from sklearn.decomposition import FastICA

    from lit_info.callbacks.disentanglement import factor_pixel_correlation
    from lit_info.data.words import WordImageDataModule
    from lit_info.info.disentanglement import disentanglement_scores

    out = tmp_path / "out"
    printed = execute_notebook(NOTEBOOK, tmp_path, {"LIT_INFO_NOTEBOOK_DIR": str(out)})
    assert "109 training words, 322 test non-words; 2180 / 1610 images of (1, 28, 84)" in printed
    for name in ("samples.png", "information.png", "components.png"):
        assert (out / name).stat().st_size > 5_000, name
    scores = json.loads((out / "scores.json").read_text())
    minsyn = scores["MinSyn (linear)"]
    assert minsyn["probe"] > 0.3  # chance 0.125
    assert minsyn["locality"] > 0.8  # 1 / 3 for components spread over the three tiles

    dm = WordImageDataModule(noise_std=0.05)
    dm.setup("fit")
    x_train, y_train = dm.arrays("train")
    x_test, y_test = dm.arrays("test")
    ica = FastICA(12, whiten="unit-variance", max_iter=2000, random_state=0).fit(x_train)
    f_train, f_test = ica.transform(x_train), ica.transform(x_test)
    components = factor_pixel_correlation(torch.from_numpy(f_train), dm.train_set.images)
    expected = disentanglement_scores(
        f_train, y_train, f_test, y_test, components=components.numpy()
    ).summary()
    for key in ("probe", "mig", "locality"):
        assert scores["FastICA"][key] == pytest.approx(expected[key], abs=0.01), key

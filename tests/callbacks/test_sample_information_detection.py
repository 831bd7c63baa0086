"""SampleInformation's mislabeled-detection scores and printed summary.

``detection_score="fsi_confidence"`` is checked against an independent computation from the
CSV's columns (pandas' average ranks) and from the trained network (a plain forward pass and
cross-entropy); ``"loo_margin"`` against retraining the linearized network without each sample
(per-sample autograd Jacobian, one explicit kernel-ridge solve per left-out sample). Both must
flag the flipped labels of a small digits fixture far better than chance and better than F-SI
alone. The printed summary is checked against scikit-learn's AUC-ROC.
"""

from __future__ import annotations

import copy
import logging
import math

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from lit_info.callbacks.detection import auroc, normalized_ranks, rank_mean
from lit_info.callbacks.sample_information import SampleInformation
from lit_info.data import NoisyImageDataModule
from lit_info.methods import Classifier


class _Records(logging.Handler):
    """Collects the messages of a logger (Lightning's does not propagate to the root)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _fit_digits(
    tmp_path, callbacks: list[SampleInformation], epochs: int
) -> tuple[list[str], object]:
    """Train an MLP on 150 digits (20% uniform label noise); return the printed lines and model."""
    pl.seed_everything(0, verbose=False)
    dm = NoisyImageDataModule(
        dataset="digits",
        noise_type="uniform",
        noise_level=0.2,
        train_subset=200,
        val_size=50,
        batch_size=32,
    )
    model = Classifier(
        num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [32]}, lr=3e-3
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=callbacks,
        logger=pl.loggers.CSVLogger(tmp_path, name="det"),
    )
    records = _Records()
    lightning_logger = logging.getLogger("lightning.pytorch")
    level = lightning_logger.level
    lightning_logger.addHandler(records)
    lightning_logger.setLevel(logging.INFO)
    try:
        trainer.fit(model, dm)
    finally:
        lightning_logger.removeHandler(records)
        lightning_logger.setLevel(level)
    summaries = [m for m in records.messages if m.startswith("SampleInformation")]
    return summaries, (model, dm)


def test_detection_scores_match_the_csv_and_beat_fsi(tmp_path):
    common = {"on_fit_end": True, "linearize_at": "initial", "t": None, "lam": 1e-3}
    cb = SampleInformation(detection_score="fsi_confidence", log_images=False, **common)
    loo = SampleInformation(
        detection_score="loo_margin", filename="loo_epoch{epoch}.csv", log_images=False, **common
    )
    summaries, (model, dm) = _fit_digits(tmp_path, [cb, loo], epochs=15)
    (path,) = tmp_path.rglob("sample_information_epoch*.csv")
    table = pd.read_csv(path)
    assert list(table.columns) == [
        "index",
        "label",
        "given_label",
        "corrupted",
        "si",
        "fsi",
        "loss",
        "detection",
    ]
    n = len(table)
    assert n == 150 and 15 <= table["corrupted"].sum() <= 40  # 200 - 50 validation, 20% noise

    # the score: mean of average ranks of F-SI and loss, recomputed from the CSV by pandas
    expected = (table["fsi"].rank() + table["loss"].rank()) / (2 * n)
    assert table["detection"].tolist() == pytest.approx(expected.tolist(), abs=1e-12)
    torch.testing.assert_close(cb.results["detection"], torch.tensor(expected.to_numpy()))

    # the loss: cross-entropy of the given labels under the trained network (eval mode)
    model.net.eval()
    x = torch.stack([torch.as_tensor(dm.train_eval_dataset[i][0]) for i in range(n)])
    with torch.no_grad():
        logits = model.net(x.float()).double()
    given = torch.tensor(table["given_label"].to_numpy())
    torch.testing.assert_close(
        torch.tensor(table["loss"].to_numpy()),
        F.cross_entropy(logits, given, reduction="none"),
        rtol=1e-5,
        atol=1e-6,
    )

    corrupted = table["corrupted"].to_numpy() == 1
    auc_fsi = roc_auc_score(corrupted, table["fsi"])
    auc_det = roc_auc_score(corrupted, table["detection"])
    assert auc_det > 0.9  # chance: 0.5
    assert auc_det > auc_fsi + 0.02  # the network's confidence adds to F-SI at initialization

    # loo_margin: the same F-SI (same linearization point), its own columns, a better score
    (loo_path,) = tmp_path.rglob("loo_epoch*.csv")
    loo_table = pd.read_csv(loo_path)
    assert list(loo_table.columns)[6:] == ["loo_margin", "detection"]
    assert loo_table["fsi"].tolist() == pytest.approx(table["fsi"].tolist(), rel=1e-9)
    assert (loo_table["detection"] == -loo_table["loo_margin"]).all()
    assert roc_auc_score(corrupted, loo_table["detection"]) > max(0.9, auc_fsi + 0.02)

    # the summary, printed once per callback, reports the same AUCs and means
    assert len(summaries) == 2
    (line,) = [m for m in summaries if str(path) in m]
    assert f"{n} rows written to {path}" in line
    assert f"F-SI {auc_fsi:.4f}" in line and f"fsi_confidence {auc_det:.4f}" in line
    assert f", SI {roc_auc_score(corrupted, table['si']):.4f}," in line
    assert f"corrupted {table['fsi'][corrupted].mean():.4g} ({corrupted.sum()})" in line
    assert f"clean {table['fsi'][~corrupted].mean():.4g} ({n - corrupted.sum()})" in line


def test_default_score_keeps_the_csv_and_prints_without_corruption(tmp_path):
    cb = SampleInformation(on_fit_end=True, t=None, lam=1e-3, log_images=False)
    pl.seed_everything(0, verbose=False)
    cb.results = {
        "index": torch.arange(3),
        "corrupted": torch.zeros(3, dtype=torch.bool),
        "si": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
        "fsi": torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64),
        "epoch": 4,
        "step": 40,
    }
    assert cb.summary() == (
        "SampleInformation epoch 4 step 40: 3 samples (no CSV); mean F-SI 1; 0 known corrupted"
    )
    summaries, _ = _fit_digits(tmp_path, [cb], epochs=1)
    (path,) = tmp_path.rglob("sample_information_epoch*.csv")
    assert list(pd.read_csv(path).columns) == [
        "index",
        "label",
        "given_label",
        "corrupted",
        "si",
        "fsi",
    ]
    (line,) = summaries
    assert "AUC-ROC F-SI" in line and "fsi_confidence" not in line and "loss" not in cb.results


def test_auroc_and_ranks_against_scikit_learn():
    gen = torch.Generator().manual_seed(0)
    score = torch.randint(0, 5, (60,), generator=gen).double()  # many ties
    positive = torch.rand(60, generator=gen) < 0.3
    assert auroc(score, positive) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
    assert math.isnan(auroc(score, torch.zeros(60, dtype=torch.bool)))
    ranks = normalized_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0]))
    torch.testing.assert_close(ranks, torch.tensor([0.875, 0.25, 0.875, 0.5], dtype=torch.float64))
    torch.testing.assert_close(
        rank_mean(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])),
        torch.tensor([0.75, 0.75], dtype=torch.float64),
    )
    with pytest.raises(ValueError, match="different lengths"):
        rank_mean(torch.ones(2), torch.ones(3))


def test_detection_score_is_validated_and_in_the_state_key():
    with pytest.raises(ValueError, match="detection_score must be one of"):
        SampleInformation(detection_score="cleanlab")
    default = SampleInformation()
    assert "detection" not in default.state_key  # keys of existing checkpoints unchanged
    assert default.state_key == SampleInformation(detection_score="fsi").state_key
    keys = {
        SampleInformation(detection_score=s).state_key for s in ("fsi_confidence", "loo_margin")
    }
    assert len(keys) == 2 and default.state_key not in keys


def _loop_kernel(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical NTK ``(n k, n k)`` from per-sample, per-output autograd gradients, and outputs."""
    params = list(net.parameters())
    rows, outs = [], []
    for i in range(x.shape[0]):
        out = net(x[i : i + 1])[0]
        for c in range(out.shape[0]):
            grads = torch.autograd.grad(out[c], params, retain_graph=True)
            rows.append(torch.cat([g.flatten() for g in grads]))
        outs.append(out.detach())
    jac = torch.stack(rows)
    return jac @ jac.T, torch.stack(outs)


def test_loo_margin_equals_retraining_without_each_sample(tmp_path):
    lam = 0.05
    cb = SampleInformation(t=None, lam=lam, detection_score="loo_margin", log_images=False)
    pl.seed_everything(0, verbose=False)
    dm = NoisyImageDataModule(
        dataset="digits", noise_type="uniform", noise_level=0.3, train_subset=50, val_size=10
    )
    model = Classifier(
        num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [8]}, lr=0.01
    )
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[cb],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    torch.set_grad_enabled(True)
    net = copy.deepcopy(model.net).double().eval()
    n = len(dm.train_eval_dataset)
    x = torch.stack([torch.as_tensor(dm.train_eval_dataset[i][0]) for i in range(n)]).double()
    given = torch.stack([torch.as_tensor(dm.train_eval_dataset[i][1]) for i in range(n)]).long()
    theta, f0 = _loop_kernel(net, x)
    k = f0.shape[1]
    r = (f0 - F.one_hot(given, k).double()).flatten()
    margins = []
    for i in range(n):
        keep = torch.ones(n, k, dtype=torch.bool)
        keep[i] = False
        keep = keep.flatten()
        own = ~keep
        # the ridge solution on the n - 1 others (mean loss): beta = -(Theta + m lam I)^-1 r
        beta = -torch.linalg.solve(
            theta[keep][:, keep] + (n - 1) * lam * torch.eye(int(keep.sum()), dtype=theta.dtype),
            r[keep],
        )
        pred = f0[i] + theta[own][:, keep] @ beta
        others = torch.cat([pred[: given[i]], pred[given[i] + 1 :]])
        margins.append(pred[given[i]] - others.max())
    torch.testing.assert_close(cb.results["loo_margin"], torch.stack(margins), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(cb.results["detection"], -torch.stack(margins), rtol=1e-7, atol=1e-9)
    assert bool((cb.results["loo_margin"] < 0).any()) and bool((cb.results["loo_margin"] > 0).any())

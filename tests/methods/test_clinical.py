"""MIMIC-III baselines: metrics against scikit-learn, the recurrent nets, modules via the CLI."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as sk
from sklearn.linear_model import LogisticRegression

from lit_info.cli import main
from lit_info.data.mimic3.datamodule import Mimic3DataModule
from lit_info.methods.clinical import ClinicalLinear, ClinicalLSTM
from lit_info.methods.clinical_metrics import (
    binary_metrics,
    bootstrap,
    length_of_stay_metrics,
    los_class,
    phenotyping_metrics,
)
from lit_info.nets.recurrent import ChannelWiseLSTM, StandardLSTM, channel_groups

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_binary_metrics_equal_scikit_learn():
    generator = np.random.default_rng(1)
    y = generator.integers(0, 2, 300)
    p = np.clip(y * 0.3 + generator.random(300) * 0.7, 0, 1).round(2)  # ties included
    ours = binary_metrics(torch.tensor(p), torch.tensor(y))
    precision, recall, _ = sk.precision_recall_curve(y, p)
    # torchmetrics computes the curves in float32
    assert float(ours["auroc"]) == pytest.approx(sk.roc_auc_score(y, p), abs=1e-6)
    assert float(ours["auprc"]) == pytest.approx(sk.auc(recall, precision), abs=1e-6)
    assert float(ours["minpse"]) == pytest.approx(
        max(min(a, b) for a, b in zip(precision, recall, strict=True)), abs=1e-6
    )
    assert torch.isnan(binary_metrics(torch.rand(5), torch.ones(5))["auroc"])


def test_length_of_stay_metrics_equal_scikit_learn():
    generator = np.random.default_rng(2)
    truth = generator.gamma(1.5, 60.0, 500)
    predicted = np.clip(truth + generator.normal(0, 40, 500), -5, None)
    ours = length_of_stay_metrics(torch.tensor(predicted), torch.tensor(truth))
    edges = [24, 48, 72, 96, 120, 144, 168, 192, 336]
    true_bins = np.digitize(truth, edges)
    predicted_bins = np.digitize(np.maximum(predicted, 0), edges)
    assert los_class(torch.tensor(truth)).tolist() == true_bins.tolist()
    assert float(ours["kappa"]) == pytest.approx(
        sk.cohen_kappa_score(true_bins, predicted_bins, weights="linear"), abs=1e-6
    )
    assert float(ours["mad"]) == pytest.approx(
        sk.mean_absolute_error(truth, np.maximum(predicted, 0)), rel=1e-12
    )


def test_phenotyping_metrics_equal_scikit_learn():
    generator = np.random.default_rng(3)
    y = generator.integers(0, 2, (200, 25))
    p = np.clip(y * 0.2 + generator.random((200, 25)), 0, 1)
    ours = phenotyping_metrics(torch.tensor(p), torch.tensor(y))
    for average in ("macro", "micro", "weighted"):
        assert float(ours[f"auroc_{average}"]) == pytest.approx(
            sk.roc_auc_score(y, p, average=average), abs=1e-6
        )


def test_bootstrap_interval_is_reproducible_and_brackets_the_value():
    generator = np.random.default_rng(4)
    y = torch.tensor(generator.integers(0, 2, 400))
    p = torch.tensor(np.clip(y.numpy() * 0.25 + generator.random(400), 0, 1))
    first = bootstrap(binary_metrics, p, y, resamples=300, seed=7)
    again = bootstrap(binary_metrics, p, y, resamples=300, seed=7)
    assert first == again
    auroc = first["auroc"]
    assert auroc["low"] < auroc["value"] < auroc["high"]
    assert abs(auroc["mean"] - auroc["value"]) < 0.01
    assert 0.03 < auroc["high"] - auroc["low"] < 0.2  # about 4 standard errors wide


def test_padded_batches_give_each_sequence_its_own_output():
    torch.manual_seed(0)
    header = Mimic3DataModule().model_hints()["header"]
    lengths = torch.tensor([5, 2, 7])
    x = torch.randn(3, 7, 76)
    for mask_padding in (True,):
        x[1, 2:] = 0.0 if mask_padding else x[1, 2:]
        x[0, 5:] = 0.0
    for net in (
        StandardLSTM(76, 16, depth=2, dropout=0.0),
        ChannelWiseLSTM(header, 4, depth=2, dropout=0.0),
    ):
        net.eval()
        batched = net(x, lengths)
        for b in range(3):
            alone = net(x[b : b + 1, : lengths[b]], lengths[b : b + 1])
            torch.testing.assert_close(batched[b : b + 1], alone, rtol=1e-5, atol=1e-6)
    sequence = StandardLSTM(76, 8, depth=2, dropout=0.0, sequence_output=True).eval()
    out = sequence(x, lengths)
    assert out.shape == (3, 7, 1)
    torch.testing.assert_close(out[1, :2], sequence(x[1:2, :2], lengths[1:2])[0])


def test_channel_groups_hold_each_variable_and_its_mask():
    header = Mimic3DataModule().model_hints()["header"]
    groups = channel_groups(header)
    assert len(groups) == 17
    assert sorted(i for g in groups for i in g) == list(range(76))
    gcs_eye = [header[i] for i in groups[3]]
    assert len(gcs_eye) == 9 and gcs_eye[-1] == "mask->Glascow coma scale eye opening"


def test_linear_baseline_equals_scikit_learn_logistic_regression(mimic3_benchmark):
    benchmark, _ = mimic3_benchmark
    dm = Mimic3DataModule(
        data_dir=str(benchmark),
        task="in-hospital-mortality",
        features="handcrafted",
        batch_size=1000,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    x, y = batch["x"].double(), batch["y"].double()
    module = ClinicalLinear(task="in-hospital-mortality", input_size=714, C=0.05, max_iter=1000)
    optimizer = module.configure_optimizers()

    def closure():
        optimizer.zero_grad()
        value = module.objective(x, y)
        value.backward()
        return value

    for _ in range(3):
        optimizer.step(closure)
    reference = LogisticRegression(C=0.05, tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())
    ours = module.linear.weight.detach().numpy().reshape(-1)
    np.testing.assert_allclose(ours, reference.coef_.reshape(-1), atol=2e-5)
    assert float(module.linear.bias.detach()) == pytest.approx(
        float(reference.intercept_[0]), abs=2e-5
    )


def _run(config: str, benchmark: Path, tmp_path: Path, *extra: str):
    return main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "mimic3" / config),
            *QUIET,
            f"--data.init_args.data_dir={benchmark}",
            f"--trainer.default_root_dir={tmp_path}",
            *extra,
        ]
    )


def test_lstm_trains_and_evaluates_through_the_cli(mimic3_benchmark, tmp_path):
    benchmark, _ = mimic3_benchmark
    cli = _run("ihm_lstm.yaml", benchmark, tmp_path, "--trainer.max_epochs=2")
    logged = cli.trainer.callback_metrics
    for key in ("train/loss", "val/loss", "val/auroc", "val/auprc", "val/minpse"):
        assert key in logged, key
    assert isinstance(cli.model, ClinicalLSTM) and cli.model.hparams.hidden == 16
    test = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert 0.0 <= test["test/auroc"] <= 1.0
    runs = list(tmp_path.rglob("events.out.tfevents.*"))
    assert runs, "TensorBoard events were written"
    # predictions: one row per test sample, y_true as in the listfile
    predictions = cli.trainer.predict(cli.model, datamodule=cli.datamodule)
    stacked = torch.cat([p["prediction"] for p in predictions])
    assert stacked.shape == (11,) and bool(((stacked >= 0) & (stacked <= 1)).all())
    truth = torch.cat([p["y_true"] for p in predictions]).tolist()
    with open(benchmark / "in-hospital-mortality" / "test_listfile.csv") as handle:
        assert truth == [float(row["y_true"]) for row in csv.DictReader(handle)]


@pytest.mark.parametrize(
    ("config", "keys"),
    [
        ("decomp_lstm_ds.yaml", ["val/auroc"]),
        ("los_channel_wise.yaml", ["val/kappa", "val/mad"]),
        ("pheno_lr.yaml", ["val/auroc_macro"]),
        (
            "multitask_lstm.yaml",
            ["val/ihm_auroc", "val/decomp_auroc", "val/los_kappa", "val/pheno_auroc_macro"],
        ),
        ("multitask_channel_wise.yaml", ["val/ihm_auroc", "val/pheno_auroc_macro"]),
    ],
)
def test_other_baselines_run_on_the_demo(mimic3_benchmark, tmp_path, config, keys):
    benchmark, _ = mimic3_benchmark
    extra = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=4",
    ]
    if "lr" not in config:
        extra.append("--model.init_args.hidden=8")
    cli = _run(config, benchmark, tmp_path, *extra)
    for key in keys:
        assert key in cli.trainer.callback_metrics, key
    assert cli.trainer.current_epoch == 1  # trained its epoch


@pytest.mark.parametrize("task", ["in-hospital-mortality", "decompensation"])
def test_two_processes_score_every_test_sample_once(mimic3_benchmark, tmp_path, task):
    from subprocess_runs import import_script, run_together

    benchmark, _ = mimic3_benchmark
    script = ROOT / "tests" / "scripts" / "ddp_clinical.py"
    build = import_script("ddp_clinical").build
    torch.manual_seed(3)
    dm, model = build(str(benchmark), task)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    outs = [tmp_path / "one.json", tmp_path / "two.json"]
    common = [
        "--data-dir",
        str(benchmark),
        "--task",
        task,
        "--weights",
        str(tmp_path / "weights.pt"),
    ]
    run_together(
        [
            [sys.executable, str(script), *common, "--devices", "1", "--out", str(outs[0])],
            [sys.executable, str(script), *common, "--devices", "2", "--out", str(outs[1])],
        ],
        cwd=tmp_path,
    )
    one, two = (json.loads(p.read_text()) for p in outs)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    # the same metrics as a direct pass over all test samples (11 and 1,874: uneven shards)
    dm.setup("test")
    model.eval()
    with torch.no_grad():
        batches = list(dm.test_dataloader())
        scores = torch.cat(
            [torch.sigmoid(model(b["x"], b["lengths"])).squeeze(-1) for b in batches]
        )
        truth = torch.cat([b["y"] for b in batches])
    direct = binary_metrics(scores, truth)
    for key in ("auroc", "auprc", "minpse"):
        assert two[f"test/{key}"] == pytest.approx(one[f"test/{key}"], abs=1e-6), key
        assert two[f"test/{key}"] == pytest.approx(float(direct[key]), abs=1e-6), key


def test_evaluate_command_bootstraps_a_predictions_file(tmp_path, capsys):
    from lit_info.data.mimic3.__main__ import main as mimic3_main

    generator = np.random.default_rng(5)
    y = generator.integers(0, 2, 200)
    p = np.clip(0.3 * y + 0.7 * generator.random(200), 0, 1)
    path = tmp_path / "predictions.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "y_true", "prediction"])
        writer.writerows([i, y[i], p[i]] for i in range(200))
    command = [
        "evaluate",
        "--task",
        "in-hospital-mortality",
        "--predictions",
        str(path),
        "--resamples",
        "200",
    ]
    assert mimic3_main(command) == 0
    result = json.loads((tmp_path / "predictions.bootstrap.json").read_text())["metrics"]
    assert result["auroc"]["value"] == pytest.approx(sk.roc_auc_score(y, p), abs=1e-6)
    assert result["auroc"]["low"] < result["auroc"]["value"] < result["auroc"]["high"]
    assert "95% interval" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("index,score\n0,0.5\n")
    assert (
        mimic3_main(["evaluate", "--task", "in-hospital-mortality", "--predictions", str(bad)]) == 2
    )
    assert "needs y_true and prediction columns" in capsys.readouterr().err


def test_grouped_lstm_equals_separate_lstms_and_keeps_its_blocks():
    from lit_info.nets.recurrent import GroupedLSTM

    torch.manual_seed(0)
    groups = [[0, 3], [1], [2, 4, 5]]
    layer = GroupedLSTM(6, groups, hidden=3, bidirectional=True, dropout=0.0).double()
    x = torch.randn(4, 9, 6, dtype=torch.float64)
    lengths = torch.tensor([9, 4, 7, 1])
    out = layer(x, lengths)
    total = 9
    for g, columns in enumerate(groups):
        alone = torch.nn.LSTM(len(columns), 3, batch_first=True, bidirectional=True).double()
        units = torch.arange(g * 3, (g + 1) * 3)
        rows = torch.cat([gate * total + units for gate in range(4)])
        for suffix in ("", "_reverse"):
            params = dict(layer.lstm.named_parameters())
            with torch.no_grad():
                getattr(alone, f"weight_ih_l0{suffix}").copy_(
                    params[f"weight_ih_l0{suffix}"][rows][:, columns]
                )
                getattr(alone, f"weight_hh_l0{suffix}").copy_(
                    params[f"weight_hh_l0{suffix}"][rows][:, units]
                )
                getattr(alone, f"bias_ih_l0{suffix}").copy_(params[f"bias_ih_l0{suffix}"][rows])
                getattr(alone, f"bias_hh_l0{suffix}").copy_(params[f"bias_hh_l0{suffix}"][rows])
        for b in range(4):
            expected, _ = alone(x[b : b + 1, : lengths[b], columns])
            got = out[b : b + 1, : lengths[b], layer.output_groups[g]]
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # training keeps the weights block-diagonal
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        layer(x, lengths).pow(2).sum().backward()
        optimizer.step()
    weight = layer.lstm.weight_hh_l0.detach()
    assert torch.count_nonzero(weight * (1 - layer.hidden_mask)) == 0
    assert torch.count_nonzero(weight * layer.hidden_mask) == int(layer.hidden_mask.sum())

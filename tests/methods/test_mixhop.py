"""MixHop / GCN modules: training recipe, mini-batch = full batch, DDP, search, real accuracy."""

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from subprocess_runs import run_together

from lit_info.cli import main
from lit_info.data import CitationGraphDataModule, HomophilyGraphDataModule
from lit_info.methods import GCN, MixHop
from lit_info.methods.mixhop import column_norm_image, linear_decrement, parameter_count
from lit_info.methods.node_classification import seed_nodes

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "scripts" / "ddp_mixhop.py"


def authors_learning_rates(lr, decrement, every, steps):
    """The loop of mixhop_trainer.py: train with lr, then maybe decrement it."""
    rates = []
    for i in range(steps):
        rates.append(lr)
        if i > 0 and i % every == 0:
            lr -= decrement * rates[0]
    return rates


def test_linear_decrement_matches_the_authors_loop():
    ours = [1.0 * linear_decrement(s, 0.01, 40) for s in range(400)]
    torch.testing.assert_close(
        torch.tensor(ours),
        torch.tensor(authors_learning_rates(1.0, 0.01, 40, 400)),
        atol=1e-12,
        rtol=0,
    )
    assert linear_decrement(10_000, 0.01, 20) == 0.0


def test_scheduler_in_a_trainer_follows_the_schedule(tmp_path):
    dm = HomophilyGraphDataModule(source="generate", num_nodes=90, num_classes=3, seed=1)
    model = MixHop(
        in_features=2,
        num_classes=3,
        hidden_widths=[[2, 2, 2]],
        output_widths=[3, 0, 3],
        input_normalization="none",
        lr=0.5,
        lr_decrement=0.25,
        lr_decrement_every=2,
    )
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = pl.Trainer(
        max_epochs=20,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    expected = authors_learning_rates(0.5, 0.25, 2, 20)
    stop = next(i for i, lr in enumerate(expected) if lr <= 0)
    assert lrs == pytest.approx(expected[:stop])  # training stops when the rate reaches 0
    assert trainer.current_epoch == stop


def test_penalty_is_keras_l2_plus_psum_plus_group_lasso():
    model = MixHop(
        in_features=5,
        num_classes=2,
        hidden_widths=[[2, 2, 2]],
        output_widths=[2, 2, 0],
        l2=0.3,
        group_lasso=0.7,
    )
    with torch.no_grad():
        model.net.psum_logits.copy_(torch.tensor([0.5, -1.5]))
    w1, w2 = model.net.layers[0].weight, model.net.layers[1].weight
    expected = (
        0.3 * (w1.pow(2).sum() + w2.pow(2).sum())
        + 1e-3 * (0.25 + 2.25) / 2
        + 0.7 * (w1.norm(dim=0).sum() + w2.norm(dim=0).sum())
    )
    torch.testing.assert_close(model.penalty(), expected)


def test_non_finite_loss_stops_with_the_projects_error(tmp_path):
    from lit_info.methods.base import NonFiniteLossError

    dm = HomophilyGraphDataModule(source="generate", num_nodes=90, num_classes=3, seed=1)
    model = GCN(in_features=2, num_classes=3, input_normalization="none", lr=1e30)
    trainer = pl.Trainer(
        max_epochs=20,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(NonFiniteLossError, match=r"global step \d+"):
        trainer.fit(model, dm)


def test_parameter_count_equals_the_kernels_of_the_net():
    widths = {"hidden_widths": [[3, 0, 5], [2, 2, 2]], "output_widths": [0, 4, 4]}
    model = MixHop(in_features=11, num_classes=4, powers=[0, 1, 2], **widths)
    assert parameter_count(widths, 11) == sum(w.numel() for w in model.net.kernels())


def test_searched_widths_drop_small_columns():
    model = MixHop(
        in_features=4,
        num_classes=2,
        powers=[0, 1, 2],
        hidden_widths=[[3, 3, 3]],
        output_widths=[2, 2, 2],
        prune_threshold=0.1,
    )
    with torch.no_grad():
        hidden = model.net.layers[0].weight
        hidden.fill_(1.0)
        hidden[:, [0, 1, 3, 4, 5]] = 1e-3  # power 0 keeps 1 of 3, power 1 none, power 2 all
        out = model.net.layers[1].weight
        out.fill_(1.0)
        out[:, 2:4] = 0.0  # power 1 of the output layer: gone
        out[:, 4] = 0.0  # power 2 keeps its psum block while one column lives
    widths = model.searched_widths()
    assert widths == {"hidden_widths": [[1, 0, 3]], "output_widths": [2, 0, 2]}
    image = column_norm_image(model.column_norms())
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    # the bars are drawn: the live columns colour more pixels than the dead ones
    assert (image != 255).any()


@pytest.mark.parametrize("kind", ["mixhop", "gcn"])
def test_minibatch_logits_equal_full_batch_logits(kind):
    torch.set_default_dtype(torch.float64)
    try:
        full_dm = HomophilyGraphDataModule(
            source="generate", num_nodes=120, num_classes=3, homophily=0.3, seed=2
        )
        mini_dm = HomophilyGraphDataModule(
            source="generate",
            num_nodes=120,
            num_classes=3,
            homophily=0.3,
            seed=2,
            batch_size=9,
            num_hops=4,
        )
        if kind == "mixhop":
            model = MixHop(
                in_features=2,
                num_classes=3,
                hidden_widths=[[3, 2, 4]],
                output_widths=[0, 3, 3],
                input_normalization="none",
                batch_norm="running",
            )
            model.net.norms[0].norm.running_mean.normal_()
            model.net.norms[0].norm.running_var.uniform_(0.5, 2.0)
        else:
            model = GCN(in_features=2, num_classes=3, hidden=[5, 4], input_normalization="none")
        model.eval()
        full_dm.setup()
        mini_dm.setup()
        full = full_dm.data
        with torch.no_grad():
            logits = model(full)
            seen = 0
            for batch in mini_dm.test_dataloader():
                nodes = seed_nodes(batch, "test")
                torch.testing.assert_close(
                    model(batch)[nodes], logits[batch.n_id[nodes]], rtol=1e-10, atol=1e-12
                )
                seen += nodes.numel()
        assert seen == int(full.test_mask.sum())
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("kind", ["mixhop", "gcn"])
def test_two_processes_train_and_evaluate_every_node_once(tmp_path, kind):
    outs = [tmp_path / "one.pt", tmp_path / "two.pt"]
    run_together(
        [
            [sys.executable, str(SCRIPT), "--model", kind, "--devices", "1", "--out", str(outs[0])],
            [sys.executable, str(SCRIPT), "--model", kind, "--devices", "2", "--out", str(outs[1])],
        ],
        cwd=tmp_path,
    )
    one, two = (torch.load(p, weights_only=False) for p in outs)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    # the 2-process validation equals a 1-process full-batch evaluation of the same weights
    from subprocess_runs import import_script

    build = import_script("ddp_mixhop").build
    torch.set_default_dtype(torch.float64)
    try:
        dm, model = build(kind)
        model.load_state_dict(two["state"])
        model.eval()
        dm.setup()
        data = dm.data
        with torch.no_grad():
            logits = model(data)[data.val_mask]
        acc = (logits.argmax(1) == data.y[data.val_mask]).double().mean().item()
        loss = torch.nn.functional.cross_entropy(logits, data.y[data.val_mask]).item()
    finally:
        torch.set_default_dtype(torch.float32)
    assert two["val_acc"] == pytest.approx(acc, abs=1e-6)  # 29 / 50 in float32 is not 0.58
    assert two["val_loss"] == pytest.approx(loss, rel=1e-9)
    # the two runs trained (weights moved from the same start) and differ (different batches)
    assert not torch.equal(one["state"]["net.layers.0.weight"], two["state"]["net.layers.0.weight"])


def test_cora_config_reaches_paper_accuracy_and_writes_its_run(tmp_path, datasets_dir):
    """One seed of configs/mixhop/cora.yaml (10-seed mean 81.7 +- 0.6: README)."""
    torch.set_num_threads(2)
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/mixhop/cora.yaml"),
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        f"--data.init_args.data_dir={datasets_dir / 'planetoid'}",
    ]
    cli = main(args)
    run = Path(cli.trainer.logger.log_dir)
    assert (run / "checkpoints" / "best.ckpt").is_file()
    record = json.loads((run / "architecture.json").read_text())
    assert record["trained"] == {"hidden_widths": [[24, 18, 18]], "output_widths": [0, 7, 7]}
    assert list(run.glob("events.*"))
    test = main(
        [
            "--config",
            str(ROOT / "configs/mixhop/cora.yaml"),
            f"--trainer.default_root_dir={tmp_path / 'eval'}",
            "--trainer.enable_progress_bar=false",
            f"--data.init_args.data_dir={datasets_dir / 'planetoid'}",
        ],
        run=False,
    )
    metrics = test.trainer.test(
        test.model,
        datamodule=test.datamodule,
        verbose=False,
        ckpt_path=str(run / "checkpoints" / "best.ckpt"),
    )[0]
    assert metrics["test/acc"] >= 0.80


@pytest.mark.parametrize(
    ("config", "extra", "expected"),
    [
        ("mixhop/pubmed", [], "ind.pubmed.allx"),
        (
            "mixhop/cora",
            ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu"],
            "--data.init_args.batch_size",
        ),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, datasets_dir, config, extra, expected):
    import subprocess

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_info",
            "fit",
            "--config",
            str(ROOT / f"configs/{config}.yaml"),
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
            f"--data.init_args.data_dir={datasets_dir / 'planetoid'}",
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("lit_info: error: ") and expected in last
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # no run folder, config or checkpoint


def test_full_batch_on_two_devices_is_refused_with_a_pointer(datasets_dir):
    dm = CitationGraphDataModule("Cora", data_dir=str(datasets_dir / "planetoid"))
    model = GCN(in_features=1433, num_classes=7)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
    )
    with pytest.raises(Exception, match="batch_size"):
        trainer.fit(model, dm)

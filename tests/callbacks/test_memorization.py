import math

import lightning.pytorch as pl
import pytest
import torch

from lit_info.callbacks import MemorizationMonitor
from lit_info.callbacks.memorization import memorization_stats
from lit_info.data import NoisyImageDataModule
from lit_info.dist import gather_by_index
from lit_info.methods import LIMIT


def test_memorization_stats_against_a_loop():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 5, (200,), generator=g)
    given = torch.where(
        torch.rand(200, generator=g) < 0.4, torch.randint(0, 5, (200,), generator=g), clean
    )
    pred = torch.where(
        torch.rand(200, generator=g) < 0.5, given, torch.randint(0, 5, (200,), generator=g)
    )
    stats = memorization_stats(pred, given, clean)
    rows = list(zip(pred.tolist(), given.tolist(), clean.tolist(), strict=True))
    corrupted = [r for r in rows if r[1] != r[2]]
    clean_rows = [r for r in rows if r[1] == r[2]]
    assert stats["train_acc"] == pytest.approx(sum(p == y for p, y, _ in rows) / 200)
    assert stats["clean_acc"] == pytest.approx(
        sum(p == y for p, y, _ in clean_rows) / len(clean_rows)
    )
    assert stats["corrupted_acc_given"] == pytest.approx(
        sum(p == y for p, y, _ in corrupted) / len(corrupted)
    )
    assert stats["corrupted_acc_true"] == pytest.approx(
        sum(p == c for p, _, c in corrupted) / len(corrupted)
    )
    assert stats["corrupted_fraction"] == pytest.approx(len(corrupted) / 200)
    no_noise = memorization_stats(pred, clean, clean)
    assert math.isnan(no_noise["corrupted_acc_given"])
    with pytest.raises(ValueError, match="one shape"):
        memorization_stats(pred[:3], given, clean)


def test_gather_by_index_orders_deduplicates_and_checks():
    index = torch.tensor([3, 0, 2, 1, 3])  # sample 3 twice, as DistributedSampler padding does
    values = torch.tensor([30.0, 0.0, 20.0, 10.0, 30.0])
    torch.testing.assert_close(
        gather_by_index(index, values, 4), torch.tensor([0.0, 10.0, 20.0, 30.0])
    )
    with pytest.raises(ValueError, match="seen on no rank"):
        gather_by_index(torch.tensor([0, 1]), torch.zeros(2), 3)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        gather_by_index(torch.tensor([0, 5]), torch.zeros(2), 2)


def test_monitor_matches_a_direct_evaluation_and_logs(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = NoisyImageDataModule(
        dataset="digits", noise_type="uniform", noise_level=0.5, batch_size=128
    )
    model = LIMIT(
        num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [32]}, beta=1.0
    )
    monitor = MemorizationMonitor(every_n_epochs=2)
    trainer = pl.Trainer(
        max_epochs=4,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[monitor],
        logger=pl.loggers.TensorBoardLogger(tmp_path, name="m"),
    )
    trainer.fit(model, dm)
    assert [row["epoch"] for row in monitor.history] == [1.0, 3.0]
    assert float(trainer.callback_metrics["train/info_penalty"]) > 0  # LIMIT's q loss, per epoch
    assert "train/grad_norm_sq" in trainer.callback_metrics
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x, _, _ in dm.train_eval_dataloader()])
    torch.testing.assert_close(monitor.last_predictions, pred)
    expected = memorization_stats(pred, dm.train_noisy_labels, dm.train_clean_labels)
    for key, value in expected.items():
        assert monitor.history[-1][key] == pytest.approx(value)
        assert float(trainer.callback_metrics[f"memorization/{key}"]) == pytest.approx(value)
    csv = (tmp_path / "m" / "version_0" / "memorization.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[0].startswith("epoch,train_acc")
    # histograms of clean/corrupted gradient norms, and LIMIT's predicted gradients
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "m" / "version_0"), size_guidance={"histograms": 0})
    events.Reload()
    tags = set(events.Tags()["histograms"])
    assert {
        "memorization/grad_norm_clean",
        "memorization/grad_norm_corrupted",
        "memorization/predicted_grad_norm_corrupted",
    } <= tags


def test_monitor_needs_label_bookkeeping():
    from types import SimpleNamespace

    from lightning.pytorch.demos.boring_classes import BoringDataModule

    for dm in (None, BoringDataModule()):
        with pytest.raises(RuntimeError, match="train_eval_dataloader"):
            MemorizationMonitor._check_datamodule(SimpleNamespace(datamodule=dm))
    with pytest.raises(ValueError, match="every_n_epochs"):
        MemorizationMonitor(every_n_epochs=0)


def test_rank_shards_cover_every_sample_once_after_dedup():
    from torch.utils.data import TensorDataset

    from lit_info.dist import rank_shard_loader

    ds = TensorDataset(torch.arange(11) * 10, torch.arange(11))
    seen = []
    for rank in range(2):
        shard = [int(i) for _, idx in rank_shard_loader(ds, 2, rank, batch_size=4) for i in idx]
        assert len(shard) == 6  # 11 samples padded to 12 over 2 ranks
        seen += shard
    assert sorted(set(seen)) == list(range(11)) and len(seen) == 12


def test_limit_predicted_gradient_reuses_given_logits():
    model = LIMIT(num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [8]})
    model.eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            model.predicted_logit_gradient(x, logits=model(x)), model.predicted_logit_gradient(x)
        )

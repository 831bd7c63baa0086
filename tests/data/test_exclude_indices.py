"""NoisyImageDataModule(exclude_train_indices=...): drop training samples after split and noise."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from lit_info.callbacks import MemorizationMonitor, SampleInformation
from lit_info.cli import main
from lit_info.data import NoisyImageDataModule
from lit_info.data.images import read_index_file
from lit_info.methods import Classifier

ROOT = Path(__file__).resolve().parents[2]
KW = dict(
    dataset="digits",
    noise_type="uniform",
    noise_level=0.3,
    noise_seed=3,
    train_subset=120,
    val_size=20,
    split_seed=1,
    batch_size=16,
)
N_TRAIN = 100
EXCLUDED = [0, 7, 8, 50, 99]


def _dm(**kw) -> NoisyImageDataModule:
    dm = NoisyImageDataModule(**{**KW, **kw})
    dm.setup()
    return dm


def test_exclusion_keeps_split_noise_and_labels_of_the_remaining_samples():
    full, dm = _dm(), _dm(exclude_train_indices=EXCLUDED)
    kept = np.setdiff1d(np.arange(N_TRAIN), EXCLUDED)
    assert full.train_split_size == dm.train_split_size == N_TRAIN
    np.testing.assert_array_equal(full.train_original_indices.numpy(), np.arange(N_TRAIN))
    assert full.train_excluded_indices.numel() == 0
    np.testing.assert_array_equal(dm.train_original_indices.numpy(), kept)
    assert dm.train_excluded_indices.tolist() == EXCLUDED
    assert len(dm.train_dataset) == len(dm.train_eval_dataset) == len(kept)
    k = torch.from_numpy(kept)
    # every per-sample attribute is the full run's, restricted to the kept samples
    torch.testing.assert_close(dm.train_dataset.images, full.train_dataset.images[k])
    for name in (
        "train_clean_labels",
        "train_noisy_labels",
        "train_is_corrupted",
        "train_source_indices",
    ):
        torch.testing.assert_close(getattr(dm, name), getattr(full, name)[k], msg=name)
    torch.testing.assert_close(dm.train_dataset.labels, dm.train_noisy_labels)
    assert bool(full.train_is_corrupted[k].any())  # the noise survives the exclusion
    # validation and test are untouched
    for split in ("val_dataset", "test_dataset"):
        torch.testing.assert_close(getattr(dm, split).images, getattr(full, split).images)
        torch.testing.assert_close(getattr(dm, split).labels, getattr(full, split).labels)


def test_items_carry_positions_in_the_reduced_set_that_map_back_to_original_indices():
    full, dm = _dm(), _dm(exclude_train_indices=EXCLUDED)
    xs, ys, index = (torch.cat(parts) for parts in zip(*dm.train_eval_dataloader(), strict=True))
    assert index.tolist() == list(range(N_TRAIN - len(EXCLUDED)))
    original = dm.train_original_indices[index]
    ref = [full.train_eval_dataset[int(i)] for i in original]
    torch.testing.assert_close(xs, torch.stack([r[0] for r in ref]))
    assert ys.tolist() == [r[1] for r in ref]
    # the shuffled training loader covers every remaining sample exactly once per epoch
    seen = torch.cat([b[2] for b in dm.train_dataloader()])
    assert sorted(seen.tolist()) == list(range(N_TRAIN - len(EXCLUDED)))


def test_index_files_text_and_csv(tmp_path):
    txt = tmp_path / "drop.txt"
    txt.write_text("# least informative\n8\n\n 0\n99\n7\n50\n")
    csv_file = tmp_path / "drop.csv"
    csv_file.write_text("index,label,fsi\n50,1,0.1\n0,2,0.2\n7,3,0.3\n99,4,0.4\n8,5,0.5\n")
    assert read_index_file(txt) == [8, 0, 99, 7, 50]
    assert read_index_file(csv_file) == [50, 0, 7, 99, 8]
    ref = _dm(exclude_train_indices=EXCLUDED)
    for source in (txt, str(csv_file), tuple(reversed(EXCLUDED))):
        dm = _dm(exclude_train_indices=source)
        torch.testing.assert_close(dm.train_original_indices, ref.train_original_indices)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert len(_dm(exclude_train_indices=str(empty)).train_dataset) == N_TRAIN
    assert len(_dm(exclude_train_indices=[]).train_dataset) == N_TRAIN


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([-1, 3], r"exclude_train_indices must be >= 0.*-1"),
        ([3, 5, 3], r"exclude_train_indices has duplicates.*\[3\]"),
        ([1.5], "exclude_train_indices must hold integers"),
        ([True], "exclude_train_indices must hold integers"),
        (3, "exclude_train_indices must be None, a list"),
    ],
)
def test_bad_index_lists_are_refused_when_built(value, match):
    with pytest.raises(ValueError, match=match):
        NoisyImageDataModule(**KW, exclude_train_indices=value)


def test_bad_index_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=r"exclude_train_indices file not found.*nope\.txt"):
        NoisyImageDataModule(**KW, exclude_train_indices=str(missing))
    bad = tmp_path / "bad.txt"
    bad.write_text("3\nfour\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 2.*'four'"):
        NoisyImageDataModule(**KW, exclude_train_indices=str(bad))
    no_col = tmp_path / "scores.csv"
    no_col.write_text("idx,fsi\n3,0.1\n")
    with pytest.raises(ValueError, match=r"scores\.csv.*'index' column"):
        NoisyImageDataModule(**KW, exclude_train_indices=str(no_col))
    dup = tmp_path / "dup.txt"
    dup.write_text("3\n3\n")
    with pytest.raises(ValueError, match=r"duplicates \(from .*dup\.txt"):
        NoisyImageDataModule(**KW, exclude_train_indices=str(dup))


def test_out_of_range_or_everything_fails_in_setup_and_leaves_the_module_untouched():
    dm = NoisyImageDataModule(**KW, exclude_train_indices=[5, N_TRAIN, N_TRAIN + 7])
    with pytest.raises(ValueError, match=rf"exclude_train_indices: \[{N_TRAIN}, {N_TRAIN + 7}\] "):
        dm.setup()
    assert not dm._is_setup and not hasattr(dm, "train_dataset")
    dm = NoisyImageDataModule(**KW, exclude_train_indices=list(range(N_TRAIN)))
    with pytest.raises(ValueError, match=f"removes all {N_TRAIN} training samples"):
        dm.setup()
    assert len(_dm(exclude_train_indices=list(range(1, N_TRAIN))).train_dataset) == 1


def test_per_sample_callbacks_work_on_a_reduced_training_set(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = NoisyImageDataModule(**KW, exclude_train_indices=EXCLUDED)
    model = Classifier(num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [8]})
    sui = SampleInformation(t=None, lam=1e-2, log_images=False)
    memo = MemorizationMonitor(log_histograms=False)
    trainer = pl.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[sui, memo],
        logger=pl.loggers.CSVLogger(tmp_path),
    )
    trainer.fit(model, dm)
    m = N_TRAIN - len(EXCLUDED)
    assert sui.results["index"].tolist() == list(range(m))
    torch.testing.assert_close(sui.results["label"], dm.train_clean_labels)
    torch.testing.assert_close(sui.results["given_label"], dm.train_noisy_labels)
    torch.testing.assert_close(sui.results["corrupted"], dm.train_is_corrupted)
    assert torch.isfinite(sui.results["fsi"]).all()
    assert memo.last_predictions.shape == (m,)


def test_cli_takes_a_list_or_a_file(tmp_path):
    config = str(ROOT / "configs" / "sui" / "digits_summarization.yaml")
    drop = tmp_path / "drop.txt"
    drop.write_text("1\n2\n")
    for value in ("[1,2]", str(drop)):
        cli = main(["--config", config, f"--data.init_args.exclude_train_indices={value}"], False)
        cli.datamodule.setup()
        assert cli.datamodule.train_excluded_indices.tolist() == [1, 2]
        assert len(cli.datamodule.train_dataset) == cli.datamodule.train_split_size - 2

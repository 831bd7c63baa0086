import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from scipy import stats

from lit_info.data import TimeSeriesDataModule
from lit_info.data.timeseries import (
    LatentFactorModel,
    PeriodDataset,
    approximately_modular_model,
    modular_model,
    read_table,
    sample_periods,
    smooth_change_models,
    sudden_change_models,
)


def _binomial_ok(count: int, n: int, p: float, z: float = 5.0) -> bool:
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


def _same(a: LatentFactorModel, b: LatentFactorModel) -> bool:
    return np.array_equal(a.std, b.std) and np.array_equal(a.loadings, b.loadings)


# ------------------------------------------------------------------ the model


def test_diagonal_and_factor_reproduce_covariance():
    for model in (
        modular_model(20, 4, rng=0),
        approximately_modular_model(20, 4, extra_parent_prob=0.5, rng=1),
    ):
        cov = model.covariance()
        assert cov.shape == (20, 20) and cov.dtype == np.float64
        rebuilt = np.diag(model.diagonal) + model.factor @ model.factor.T
        np.testing.assert_allclose(rebuilt, cov, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(np.diag(cov), model.std**2, rtol=1e-13)
        # one entry from the definition, written out
        i, j = 3, 4
        expected = (
            model.std[i]
            * model.std[j]
            * sum(model.loadings[i, k] * model.loadings[j, k] for k in range(4))
        )
        assert cov[i, j] == pytest.approx(expected, rel=1e-12)
        assert (model.diagonal > 0).all()
        np.testing.assert_allclose(model.factor, model.loadings * model.std[:, None])


@pytest.mark.parametrize("extra", [0.0, 0.6])
def test_sample_covariance_matches_the_model(extra):
    model = approximately_modular_model(12, 3, extra_parent_prob=extra, rng=5)
    n = 100_000
    x = model.sample(n, np.random.default_rng(11))
    assert x.shape == (n, 12) and x.dtype == np.float64
    cov = model.covariance()
    sample = x.T @ x / n  # the mean is known to be 0
    # standard error of a zero-mean sample covariance entry: sqrt((S_ij^2 + S_ii S_jj) / n)
    se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    z = np.abs(sample - cov) / se
    assert z.max() < 5.0, z.max()
    assert np.abs(x.mean(axis=0) / np.sqrt(np.diag(cov) / n)).max() < 5.0


def test_model_validation_and_read_only():
    with pytest.raises(ValueError, match="norm < 1; row 1"):
        LatentFactorModel(std=np.ones(2), loadings=np.array([[0.5, 0.5], [0.8, 0.6]]))
    with pytest.raises(ValueError, match="std must be positive"):
        LatentFactorModel(std=np.array([1.0, -1.0]), loadings=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="shape"):
        LatentFactorModel(std=np.ones(3), loadings=np.zeros((2, 1)))
    model = modular_model(6, 2, rng=0)
    assert model.n_variables == 6 and model.n_factors == 2
    with pytest.raises(ValueError):
        model.loadings[0, 0] = 0.1
    with pytest.raises(ValueError, match="n must be"):
        model.sample(-1)


def test_modular_parent_blocks():
    model = modular_model(10, 3, rng=0)
    np.testing.assert_array_equal(model.parents, [0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    assert ((model.loadings != 0).sum(axis=1) == 1).all()
    model = modular_model(128, 8, rng=0)
    np.testing.assert_array_equal(model.parents, np.arange(128) // 16)
    shuffled = modular_model(128, 8, shuffle=True, rng=0)
    assert set(shuffled.parents.tolist()) <= set(range(8))
    assert not np.array_equal(shuffled.parents, np.sort(shuffled.parents))
    counts = np.bincount(modular_model(8000, 4, shuffle=True, rng=3).parents, minlength=4)
    assert all(_binomial_ok(int(c), 8000, 0.25) for c in counts)


def test_modular_snr_cor_and_std_ranges():
    p, snr = 5000, 5.0
    model = modular_model(p, 5, snr=snr, min_std=0.5, max_std=2.0, rng=1)
    cor = model.loadings[np.arange(p), model.parents]
    assert (np.abs(cor) < math.sqrt(snr / (snr + 1))).all()
    snrs = cor**2 / (1 - cor**2)
    assert stats.kstest(snrs, stats.uniform(0, snr).cdf).pvalue > 1e-4
    assert _binomial_ok(int((cor > 0).sum()), p, 0.5)
    assert model.std.min() >= 0.5 and model.std.max() < 2.0
    assert stats.kstest(model.std, stats.uniform(0.5, 1.5).cdf).pvalue > 1e-4
    # signal share of the variance = snr_i / (snr_i + 1)
    np.testing.assert_allclose(1 - model.diagonal / model.std**2, snrs / (snrs + 1))


def test_generator_seeds_and_arguments():
    assert _same(modular_model(30, 3, rng=4), modular_model(30, 3, rng=np.random.default_rng(4)))
    assert not _same(modular_model(30, 3, rng=4), modular_model(30, 3, rng=5))
    for kwargs, match in [
        ({"n_factors": 0}, "n_factors"),
        ({"n_factors": 31}, "must not exceed n_variables"),
        ({"snr": 0.0}, "snr"),
        ({"min_std": 0.0}, "min_std"),
        ({"max_std": 0.1}, "max_std"),
    ]:
        with pytest.raises(ValueError, match=match):
            modular_model(**{"n_variables": 30, "n_factors": 3, **kwargs})


def test_approximately_modular_extra_parents():
    p, m, prob = 4000, 8, 0.3
    approx = approximately_modular_model(p, m, extra_parent_prob=prob, rng=9)
    base = modular_model(p, m, rng=9)
    nonzero = (approx.loadings != 0).sum(axis=1)
    assert set(nonzero.tolist()) <= {1, 2}
    assert _binomial_ok(int((nonzero == 2).sum()), p, prob)
    # std, main parents and the total signal share are those of the modular model
    np.testing.assert_array_equal(approx.std, base.std)
    np.testing.assert_array_equal(approx.parents, base.parents)
    norms = np.linalg.norm(approx.loadings, axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(base.loadings, axis=1), rtol=1e-12)
    assert (norms < 1).all()
    np.testing.assert_allclose(np.diag(approx.covariance()), approx.std**2)
    two = np.flatnonzero(nonzero == 2)
    rows = approx.loadings[two]
    main = np.abs(rows[np.arange(two.size), base.parents[two]])
    extra = np.abs(rows).sum(axis=1) - main
    assert (extra < main).all()  # the extra share is below one half
    assert (extra**2 / norms[two] ** 2 < 0.5).all()
    # the main loading keeps the sign of the modular one
    assert (
        np.sign(rows[np.arange(two.size), base.parents[two]]) == np.sign(base.loadings[two].sum(1))
    ).all()
    # no extra parent: exactly the modular model
    assert _same(
        approximately_modular_model(50, 5, extra_parent_prob=0.0, rng=2),
        modular_model(50, 5, rng=2),
    )
    with pytest.raises(ValueError, match="n_factors >= 2"):
        approximately_modular_model(10, 1, extra_parent_prob=0.1)
    with pytest.raises(ValueError, match="extra_parent_prob"):
        approximately_modular_model(10, 2, extra_parent_prob=1.5)


def test_sudden_change_segments():
    models = sudden_change_models(20, 4, 10, n_segments=3, seed=0)
    assert len(models) == 10
    segments = [range(0, 3), range(3, 6), range(6, 10)]  # remainder in the last
    for seg in segments:
        assert all(models[t] is models[seg[0]] for t in seg)
    firsts = [models[seg[0]] for seg in segments]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not np.allclose(firsts[a].covariance(), firsts[b].covariance())
    again = sudden_change_models(20, 4, 10, n_segments=3, seed=0)
    assert all(_same(a, b) for a, b in zip(models, again, strict=True))
    other = sudden_change_models(20, 4, 10, n_segments=3, seed=1)
    assert not _same(models[0], other[0])
    with pytest.raises(ValueError, match="n_periods=2 is too short for n_segments=3"):
        sudden_change_models(20, 4, 2, n_segments=3)


def test_smooth_change_interpolates_and_switches_once():
    p, m, T = 40, 4, 10  # two segments of 5 periods
    models = smooth_change_models(p, m, T, n_segments=2, seed=7)
    assert len(models) == T
    gen = np.random.default_rng(7)  # the anchors are the first draws of the generator
    anchors = [modular_model(p, m, shuffle=True, rng=gen) for _ in range(3)]
    assert _same(models[0], anchors[0])  # period 0 is anchor 0, before any switch
    assert _same(models[5], anchors[1])
    for s, start in enumerate((0, 5)):
        a, b = anchors[s], anchors[s + 1]
        cor_a, cor_b = a.loadings.sum(axis=1), b.loadings.sum(axis=1)
        changed = a.parents != b.parents
        assert changed.sum() > p // 2
        parents = np.stack([models[start + t].parents for t in range(5)])
        switches = (parents[1:] != parents[:-1]).sum(axis=0)
        np.testing.assert_array_equal(switches, changed.astype(int))
        np.testing.assert_array_equal(parents[0], a.parents)
        np.testing.assert_array_equal(parents[-1], b.parents)
        for t in range(5):
            alpha = t / 5
            model = models[start + t]
            np.testing.assert_allclose(model.std, (1 - alpha) * a.std + alpha * b.std)
            assert ((model.loadings != 0).sum(axis=1) <= 1).all()
            np.testing.assert_allclose(
                model.loadings.sum(axis=1), (1 - alpha) * cor_a + alpha * cor_b, atol=1e-15
            )
    again = smooth_change_models(p, m, T, n_segments=2, seed=7)
    assert all(_same(x, y) for x, y in zip(models, again, strict=True))
    with pytest.raises(ValueError, match="at least 2 periods"):
        smooth_change_models(p, m, 3, n_segments=2)


def test_sample_periods():
    models = sudden_change_models(6, 2, 4, seed=0)
    x = sample_periods(models, 7, rng=3)
    assert x.shape == (4, 7, 6) and x.dtype == np.float64
    np.testing.assert_array_equal(x, sample_periods(models, 7, rng=np.random.default_rng(3)))
    with pytest.raises(ValueError, match="at least one model"):
        sample_periods([], 3)


# ------------------------------------------------------------------ files


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_csv_with_and_without_header(tmp_path):
    values, names = read_table(_write(tmp_path / "a.csv", '"a","b",c\n1,2,3\n4.5,-5e-1, 6\n'))
    assert names == ["a", "b", "c"]
    np.testing.assert_array_equal(values, [[1, 2, 3], [4.5, -0.5, 6]])
    assert values.dtype == np.float64
    values, names = read_table(_write(tmp_path / "b.csv", "1,2\n3,4\n\n5,6\n"))
    assert names == ["x0", "x1"]
    np.testing.assert_array_equal(values, [[1, 2], [3, 4], [5, 6]])
    values, names = read_table(_write(tmp_path / "c.tsv", "u\tv\n1\t2\n"))
    assert names == ["u", "v"] and values.tolist() == [[1.0, 2.0]]


def test_read_csv_columns_and_missing_values(tmp_path):
    path = _write(tmp_path / "d.csv", "date,a,b\n2020-01-01,1,\n2020-01-02,NA,4\n")
    values, names = read_table(path, columns=["b", "a"])
    assert names == ["b", "a"]
    assert np.isnan(values[0, 0]) and np.isnan(values[1, 1])
    assert values[0, 1] == 1 and values[1, 0] == 4
    with pytest.raises(ValueError, match=r"d\.csv: no column 'z'; available columns: \['date'"):
        read_table(path, columns=["a", "z"])
    with pytest.raises(ValueError, match=r"line 2, column 'date': '2020-01-01' is not a number"):
        read_table(path)


def test_read_csv_errors(tmp_path):
    path = _write(tmp_path / "bad.csv", "a,b\n1,2\n3,oops\n")
    with pytest.raises(ValueError) as info:
        read_table(path)
    message = str(info.value)
    assert "bad.csv" in message and "line 3" in message and "'b'" in message and "\n" not in message
    with pytest.raises(ValueError, match=r"ragged\.csv: line 3 has 3 cells, expected 2"):
        read_table(_write(tmp_path / "ragged.csv", "a,b\n1,2\n3,4,5\n"))
    with pytest.raises(ValueError, match=r"empty\.csv: the file is empty"):
        read_table(_write(tmp_path / "empty.csv", ""))
    with pytest.raises(ValueError, match=r"header\.csv: the file has only a header"):
        read_table(_write(tmp_path / "header.csv", "a,b\n"))
    with pytest.raises(ValueError, match="infinite"):
        read_table(_write(tmp_path / "inf.csv", "a,b\n1,inf\n"))
    with pytest.raises(ValueError, match="appears more than once"):
        read_table(_write(tmp_path / "dup.csv", "a,a\n1,2\n"))
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        read_table(tmp_path / "nothere.csv")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        read_table(_write(tmp_path / "t.txt", "1,2\n"))


def test_read_npy_and_npz(tmp_path):
    array = np.arange(12, dtype=np.int32).reshape(4, 3)
    np.save(tmp_path / "a.npy", array)
    values, names = read_table(tmp_path / "a.npy", columns=["x2"])
    assert names == ["x2"] and values.dtype == np.float64
    np.testing.assert_array_equal(values[:, 0], array[:, 2])
    np.savez(tmp_path / "one.npz", data=array)
    values, names = read_table(tmp_path / "one.npz")
    assert names == ["x0", "x1", "x2"] and np.array_equal(values, array)
    np.save(tmp_path / "flat.npy", np.arange(3.0))
    with pytest.raises(ValueError, match=r"flat\.npy: the array has shape \(3,\); expected a 2-D"):
        read_table(tmp_path / "flat.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2\)"):
        read_table(tmp_path / "cube.npy")
    np.savez(tmp_path / "two.npz", first=array, second=array)
    with pytest.raises(ValueError, match=r"two\.npz: expected one array.*\['first', 'second'\]"):
        read_table(tmp_path / "two.npz")
    np.save(tmp_path / "none.npy", np.zeros((0, 3)))
    with pytest.raises(ValueError, match="no data"):
        read_table(tmp_path / "none.npy")


@pytest.fixture(scope="module")
def fmri_csv(datasets_dir) -> Path:
    path = datasets_dir / "fmri" / "fmri_timeseries.csv"
    if not path.is_file():
        pytest.skip(f"real fMRI file not found at {path}")
    return path


def test_real_fmri_file(fmri_csv):
    values, names = read_table(fmri_csv)
    assert values.shape == (250, 31) and values.dtype == np.float64
    assert names[:3] == ["WM", "Vent", "Brain"] and names[-1] == "RPrec"
    assert np.isfinite(values).all()
    reference = np.genfromtxt(fmri_csv, delimiter=",", names=True)
    assert [n.strip('"') for n in reference.dtype.names] == names
    np.testing.assert_array_equal(
        values, np.stack([reference[n] for n in reference.dtype.names], 1)
    )

    dm = TimeSeriesDataModule(source="file", file=str(fmri_csv), test_samples=18)
    assert dm.model_hints() == {"n_variables": 31, "n_periods": 5}
    dm.check_files()
    dm.setup()
    assert dm.variable_names == names and dm.true_models is None
    assert [t.shape for t in dm.train_periods] == [(16, 31)] * 5
    assert [t.shape for t in dm.test_periods] == [(18, 31)] * 5
    rows = torch.cat([dm.source_rows[s][4] for s in ("train", "val", "test")])
    assert sorted(rows.tolist()) == list(range(200, 250))
    np.testing.assert_array_equal(
        dm.val_periods[4].numpy(), values[dm.source_rows["val"][4].numpy()]
    )


# ------------------------------------------------------------------ the datamodule


@pytest.mark.parametrize(
    "source, periods",
    [("modular", 1), ("approximately_modular", 1), ("sudden_change", 10), ("smooth_change", 10)],
)
def test_synthetic_split_sizes(source, periods):
    dm = TimeSeriesDataModule(source=source, n_variables=12, n_factors=3, test_samples=50)
    assert dm.model_hints() == {"n_variables": 12, "n_periods": periods}
    dm.setup()
    assert len(dm.train_dataset) == 16 * periods
    assert len(dm.val_dataset) == 16 * periods
    assert len(dm.test_dataset) == 50 * periods
    for split, n in (("train", 16), ("val", 16), ("test", 50)):
        tensors = getattr(dm, f"{split}_periods")
        assert len(tensors) == periods
        assert all(t.shape == (n, 12) and t.dtype == torch.float64 for t in tensors)
    assert len(dm.true_models) == periods and dm.variable_names[:2] == ["x0", "x1"]
    x, period, index = dm.train_dataset[17 if periods > 1 else 3]
    assert (
        x.shape == (12,)
        and period == (1 if periods > 1 else 0)
        and index == (17 if periods > 1 else 3)
    )
    assert torch.equal(x, dm.train_periods[period][index - 16 * period])


def test_datamodule_reproducible_and_independent_splits():
    kwargs = {"source": "sudden_change", "n_variables": 10, "n_factors": 2, "test_samples": 20}
    a, b = TimeSeriesDataModule(**kwargs), TimeSeriesDataModule(**kwargs)
    a.setup()
    b.setup()
    assert torch.equal(a.train_dataset.x, b.train_dataset.x)
    assert torch.equal(a.test_dataset.x, b.test_dataset.x)
    c = TimeSeriesDataModule(**{**kwargs, "test_samples": 30})
    c.setup()
    assert torch.equal(a.train_dataset.x, c.train_dataset.x)  # other split sizes change nothing
    d = TimeSeriesDataModule(**{**kwargs, "seed": 1})
    d.setup()
    assert not torch.equal(a.train_dataset.x, d.train_dataset.x)
    assert _same(a.true_models[0], b.true_models[0])


def test_datamodule_samples_follow_true_model():
    dm = TimeSeriesDataModule(n_variables=8, n_factors=2, test_samples=40_000, seed=3)
    dm.setup()
    model = dm.true_models[0]
    x = dm.test_periods[0].numpy()
    cov = model.covariance()
    se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / x.shape[0])
    assert (np.abs(x.T @ x / x.shape[0] - cov) / se).max() < 5.0


def test_loaders_full_batch_and_minibatch():
    dm = TimeSeriesDataModule(
        source="sudden_change", n_variables=6, n_factors=2, n_periods=4, test_samples=10
    )
    batches = list(dm.train_dataloader())
    assert len(batches) == 1
    x, period, index = batches[0]
    assert x.shape == (64, 6) and torch.equal(index, torch.arange(64))
    assert torch.equal(period, torch.arange(4).repeat_interleave(16))
    assert torch.equal(x, dm.train_dataset.x)
    assert len(list(dm.test_dataloader())) == 1

    dm = TimeSeriesDataModule(n_variables=6, n_factors=2, batch_size=5, dtype="float32")
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and batches[0][0].dtype == torch.float32
    order = torch.cat([b[2] for b in batches])
    assert sorted(order.tolist()) == list(range(16)) and order.tolist() != list(range(16))
    assert order.tolist() == torch.cat([b[2] for b in dm.train_dataloader()]).tolist()
    assert len(list(dm.val_dataloader())) == 4


def test_predict_split_and_empty_splits():
    dm = TimeSeriesDataModule(n_variables=5, n_factors=1, predict_split="train", val_samples=0)
    ((x, _, index),) = list(dm.predict_dataloader())
    assert torch.equal(x, dm.train_dataset.x) and index.tolist() == list(range(16))
    assert dm.val_dataloader() == []
    assert dm.val_periods[0].shape == (0, 5)


def test_fit_with_a_trainer():
    class Mean(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.mu = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
            self.seen: list[int] = []

        def training_step(self, batch, batch_idx):
            x, period, index = batch
            self.seen.append(x.shape[0])
            return ((x - self.mu) ** 2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val", ((batch[0] - self.mu) ** 2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = TimeSeriesDataModule(
        source="sudden_change", n_variables=4, n_factors=2, n_periods=2, test_samples=8
    )
    model = Mean()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert model.seen == [32, 32]


def test_file_datamodule_windows(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(23, 3))
    path = tmp_path / "ts.csv"
    np.savetxt(path, table, delimiter=",", header="a,b,c", comments="")
    kwargs = {
        "source": "file",
        "file": str(path),
        "train_samples": 2,
        "val_samples": 1,
        "test_samples": 1,
    }
    dm = TimeSeriesDataModule(**kwargs)  # 5 whole windows of 4 rows; the last 3 rows unused
    assert dm.model_hints() == {"n_variables": 3, "n_periods": 5}
    dm.setup()
    assert [len(d) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)] == [10, 5, 5]
    for k in range(5):
        rows = torch.cat([dm.source_rows[s][k] for s in ("train", "val", "test")])
        assert sorted(rows.tolist()) == list(range(4 * k, 4 * k + 4))
        np.testing.assert_allclose(
            dm.train_periods[k].numpy(), table[dm.source_rows["train"][k].numpy()]
        )
    last = TimeSeriesDataModule(**kwargs, n_periods=2, columns=["c", "a"])
    assert last.model_hints() == {"n_variables": 2, "n_periods": 2}
    last.setup()
    assert last.variable_names == ["c", "a"]
    assert torch.equal(last.source_rows["train"][1], dm.source_rows["train"][4])  # same split
    np.testing.assert_allclose(
        last.test_periods[0].numpy(), table[dm.source_rows["test"][3].numpy()][:, [2, 0]]
    )
    assert last.test_dataset[0][1] == 0  # periods renumbered from 0

    short = TimeSeriesDataModule(**{**kwargs, "test_samples": 30})
    with pytest.raises(ValueError, match=r"23 data rows are fewer than one window of 33 rows"):
        short.check_files()
    with pytest.raises(ValueError, match=r"n_periods=6 exceeds the 5 whole windows"):
        TimeSeriesDataModule(**kwargs, n_periods=6).setup()
    missing = TimeSeriesDataModule(**{**kwargs, "file": str(tmp_path / "absent.csv")})  # no read
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        missing.check_files()
    with pytest.raises(FileNotFoundError):
        missing.model_hints()
    assert not missing._is_setup


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "gaussian"}, "source must be one of"),
        ({"n_factors": 0}, "n_factors must be an integer >= 1"),
        ({"n_variables": 1}, "n_variables must be an integer >= 2"),
        ({"n_variables": 4, "n_factors": 5}, "must not exceed n_variables"),
        ({"train_samples": 1}, "train_samples must be an integer >= 2"),
        ({"val_samples": -1}, "val_samples must be an integer >= 0"),
        ({"test_samples": -2}, "test_samples must be an integer >= 0"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"file": "x.csv"}, "file='x.csv' is given but source='modular'"),
        ({"source": "file"}, "source='file' needs file"),
        ({"columns": ["a"]}, "columns is given but source="),
        ({"source": "file", "file": "x.csv", "columns": []}, "columns must be a non-empty list"),
        ({"batch_size": 0}, "batch_size must be None or an integer >= 1"),
        ({"n_periods": 0}, "n_periods must be None or an integer >= 1"),
        ({"source": "smooth_change", "n_periods": 3}, "too short for n_segments=2"),
        ({"source": "approximately_modular", "extra_parent_prob": 2.0}, "extra_parent_prob"),
        ({"snr": -1.0}, "snr must be"),
        ({"predict_split": "all"}, "predict_split must be one of"),
        ({"predict_split": "test", "test_samples": 0}, "test_samples is 0"),
        ({"seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        TimeSeriesDataModule(**kwargs)
    assert "\n" not in str(info.value)


def test_period_dataset():
    ds = PeriodDataset(torch.zeros(3, 2), torch.tensor([0, 0, 1]))
    assert len(ds) == 3 and ds[2][1:] == (1, 2)
    with pytest.raises(ValueError, match="x must be"):
        PeriodDataset(torch.zeros(3, 2), torch.zeros(2))

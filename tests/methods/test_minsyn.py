"""MinSyn and beta-VAE modules, the disentanglement monitor and their configs through the CLI."""

import json
import sys
from pathlib import Path
from unittest.mock import PropertyMock, patch

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from lit_info.callbacks.disentanglement import DisentanglementMonitor, factor_pixel_correlation
from lit_info.cli import main
from lit_info.data.words import WordImageDataModule
from lit_info.info.corex import corex_moments
from lit_info.info.disentanglement import disentanglement_scores
from lit_info.info.minsyn import exact_information, minsyn_objective, standardize_columns
from lit_info.methods.minsyn import BetaVAE, MinSyn

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TINY_DATA = [
    "--data.init_args.images_per_char=4",
    "--data.init_args.samples_per_word=3",
    "--data.init_args.eval_samples_per_word=2",
]


@pytest.fixture(scope="module")
def words() -> WordImageDataModule:
    dm = WordImageDataModule(
        images_per_char=4,
        samples_per_word=3,
        eval_samples_per_word=2,
        noise_std=0.05,
        batch_size=100000,
    )
    dm.setup("fit")
    return dm


def _trainer(epochs: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kwargs,
    )


@pytest.mark.parametrize("lam", [1.0, 0.0])
def test_linear_loss_is_the_corex_bound_or_the_exact_objective(words, lam):
    torch.manual_seed(0)
    model = MinSyn(input_shape=words.input_shape, n_factors=4, synergy_weight=lam)
    images = words.train_set.images[:300]
    loss = model.training_step((images, None, None), 0)
    z = standardize_columns(images.flatten(1).double())
    moments = corex_moments(z, model.free_weights.detach().double(), 0.6, free=True)
    p = images[0].numel()
    if lam == 1.0:
        expected = -moments.tc / p
    else:
        expected = -(exact_information(moments).sum() + 0.5 * torch.log1p(-moments.u).sum()) / p
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-4)  # float32 module


def test_synergy_weight_ramps_over_the_warmup(words):
    model = MinSyn(input_shape=words.input_shape, synergy_weight=0.8, synergy_warmup_epochs=10)
    with patch.object(MinSyn, "current_epoch", new_callable=PropertyMock) as epoch:
        seen = []
        for value in (0, 5, 10, 30):
            epoch.return_value = value
            seen.append(model.current_synergy_weight)
    np.testing.assert_allclose(seen, [0.0, 0.4, 0.8, 0.8])
    assert MinSyn(input_shape=words.input_shape, encoder="mlp").eps == 0.0


def test_linear_fit_raises_the_objective_and_encode_ignores_background_pixels(words):
    torch.manual_seed(1)
    model = MinSyn(input_shape=words.input_shape, n_factors=6, anneal=False, lr=0.05)
    images = words.train_set.images

    def objective() -> float:
        with torch.no_grad():
            return float(minsyn_objective(model.moments(images, 0.0), 1.0))

    before = objective()
    _trainer(15, limit_val_batches=0).fit(model, words)
    after = objective()
    assert after > before + 0.01 * images[0].numel(), (before, after)
    assert bool(model.fitted_stats)
    # the factors are the standardized pixels times the free weights
    test = words.test_set.images[:5]
    z = (test.flatten(1) - model.mean) / model.scale
    torch.testing.assert_close(model.encode(test), z @ model.free_weights.T, rtol=1e-5, atol=1e-5)


def test_encode_ignores_pixels_constant_in_training():
    clean = WordImageDataModule(
        images_per_char=4, samples_per_word=3, eval_samples_per_word=2, batch_size=100000
    )  # no noise: the background pixels of every training image are 0
    model = MinSyn(input_shape=clean.input_shape, n_factors=3, anneal=False)
    _trainer(2, limit_val_batches=0).fit(model, clean)
    constant = torch.nonzero(model.scale.isinf()).flatten()
    assert constant.numel() > 100
    test = clean.test_set.images[:5].clone()
    base = model.encode(test)
    assert torch.isfinite(base).all()
    test.view(5, -1)[:, constant] = 1.0  # ink where training never had any
    torch.testing.assert_close(model.encode(test), base)


def test_cnn_encoder_trains_through_the_signal_moments(words):
    torch.manual_seed(7)
    model = MinSyn(input_shape=words.input_shape, n_factors=5, encoder="cnn", hidden=(16,))
    images = words.train_set.images[:64]
    assert model.encode(images).shape == (64, 5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def objective() -> torch.Tensor:
        return minsyn_objective(model.moments(images, 0.0), 1.0)

    start = float(objective())
    for _ in range(30):
        optimizer.zero_grad()
        (-objective()).backward()
        optimizer.step()
    assert float(objective()) > start
    assert all(p.grad is not None for p in model.parameters())


def test_betavae_terms_equal_torch_distributions(words):
    torch.manual_seed(2)
    model = BetaVAE(input_shape=words.input_shape, n_factors=3, hidden=(16,))
    images = words.train_set.images[:7]
    torch.manual_seed(5)
    reconstruction, kl = model.losses(images)
    mean, log_var = model.posterior(images)
    torch.manual_seed(5)
    z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
    target = images.flatten(1).clamp(0, 1)
    logits = model.decoder(z)
    expected_rec = (
        -(
            target * torch.nn.functional.logsigmoid(logits)
            + (1 - target) * torch.nn.functional.logsigmoid(-logits)
        ).sum()
        / 7
    )
    posterior = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
    prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected_kl = torch.distributions.kl_divergence(posterior, prior).sum() / 7
    torch.testing.assert_close(reconstruction, expected_rec, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl, expected_kl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.encode(images), mean)


def test_bad_arguments_are_named(words):
    shape = words.input_shape
    with pytest.raises(ValueError, match="input_shape"):
        MinSyn()
    with pytest.raises(ValueError, match="synergy_weight"):
        MinSyn(input_shape=shape, synergy_weight=1.5)
    with pytest.raises(ValueError, match="encoder"):
        MinSyn(input_shape=shape, encoder="rnn")
    with pytest.raises(ValueError, match="n_factors"):
        BetaVAE(input_shape=shape, n_factors=0)
    with pytest.raises(ValueError, match="beta"):
        BetaVAE(input_shape=shape, beta=0.0)
    with pytest.raises(ValueError, match="every_n_epochs"):
        DisentanglementMonitor(every_n_epochs=-1)


def test_monitor_scores_equal_a_direct_computation(words, tmp_path):
    torch.manual_seed(3)
    model = MinSyn(input_shape=words.input_shape, n_factors=6, encoder="mlp", hidden=(32,))
    monitor = DisentanglementMonitor(batch_size=97)  # uneven batches
    trainer = _trainer(1, callbacks=[monitor], limit_val_batches=0)
    trainer.fit(model, words)
    result = trainer.test(model, words, verbose=False)[0]
    model.eval()
    train = model.encode(words.train_set.images).double()
    test = model.encode(words.test_set.images).double()
    direct = disentanglement_scores(
        train.numpy(),
        words.train_set.labels.numpy(),
        test.numpy(),
        words.test_set.labels.numpy(),
        components=factor_pixel_correlation(train, words.train_set.images).numpy(),
    )
    np.testing.assert_allclose(monitor.last_scores["test"].information, direct.information)
    assert result["test/probe"] == pytest.approx(direct.probe.mean(), rel=1e-6)
    assert result["test/mig"] == pytest.approx(direct.mig.mean(), rel=1e-6)
    assert result["test/locality"] == pytest.approx(direct.locality.mean(), rel=1e-6)


def test_factor_pixel_correlation_is_the_pearson_correlation():
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(50, 1, 2, 3, generator=gen, dtype=torch.float64)
    images[:, :, 0, 0] = 0.5  # constant pixel
    factors = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    corr = factor_pixel_correlation(factors, images)
    flat = images.flatten(1).numpy()
    for j in range(2):
        for i in range(1, 6):
            expected = np.corrcoef(factors[:, j].numpy(), flat[:, i])[0, 1]
            assert float(corr[j].flatten()[i]) == pytest.approx(expected, rel=1e-10)
    assert torch.all(corr[:, 0, 0] == 0)


@pytest.mark.parametrize("name", ["font_minsyn_linear", "font_betavae"])
def test_configs_fit_test_and_predict_through_the_cli(tmp_path, name):
    config = str(ROOT / "configs" / "minsyn" / f"{name}.yaml")
    common = [*QUIET, *TINY_DATA, f"--trainer.default_root_dir={tmp_path}"]
    main(
        [
            "fit",
            "--config",
            config,
            *common,
            "--trainer.max_epochs=2",
            "--trainer.check_val_every_n_epoch=1",
        ]
    )
    run = tmp_path / "minsyn" / name / "version_0"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    assert {"disentanglement/val_information", "disentanglement/components"} <= set(
        events.Tags()["images"]
    )
    assert {"val/probe", "val/mig", "val/locality"} <= set(events.Tags()["scalars"])
    main(["test", "--config", config, *common, "--ckpt_path=best"])
    out = run / "test_best" / "version_0"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"][0]
    report = json.loads((out / "disentanglement_test.json").read_text())
    assert metrics["test/probe"] == pytest.approx(report["summary"]["probe"])
    assert np.asarray(report["information"]).shape == (12, 3)
    assert [len(a) for a in report["alphabets"]] == [8, 8, 8]
    assert 1 / 8 - 0.1 < metrics["test/probe"] <= 1.0
    main(["predict", "--config", config, *common, "--ckpt_path=best"])
    predictions = next(run.glob("predict*/version_0/predictions.csv"))
    header = predictions.read_text().splitlines()[0].split(",")
    assert header[0] == "index" and sum(h.startswith("factors") for h in header) == 12


def test_two_processes_give_the_monitor_scores_of_one(tmp_path, words):
    from subprocess_runs import import_script, run_together

    script = ROOT / "tests" / "scripts" / "ddp_minsyn.py"
    build = import_script("ddp_minsyn").build
    torch.manual_seed(6)
    _, model = build()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    outs = [tmp_path / "one.json", tmp_path / "two.json"]
    common = ["--weights", str(tmp_path / "weights.pt")]
    run_together(
        [
            [sys.executable, str(script), *common, "--devices", "1", "--out", str(outs[0])],
            [sys.executable, str(script), *common, "--devices", "2", "--out", str(outs[1])],
        ],
        cwd=tmp_path,
    )
    one, two = (json.loads(p.read_text()) for p in outs)
    assert (one.pop("world_size"), two.pop("world_size")) == (1, 2)
    for key in ("test/mig", "test/probe", "test/locality", "test/probe_0", "test/mig_2"):
        assert two[key] == pytest.approx(one[key], rel=1e-9, abs=1e-12), key

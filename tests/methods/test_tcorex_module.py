"""TCorexModule: the TCorex math as a LightningModule, through the CLI, and sharded.

* the batch weights, standardization and penalty equal ``TCorex``'s (``period_mixing``,
  ``weighted_standardization``, ``TCorex._penalty``); the objective equals ``TCorex``'s on the
  same weights; a full-batch fit takes exactly ``TCorex``'s Adam steps; ``init_from_pooled``
  is ``TCorex(init=True)``'s start; held-out NLL, covariances, change-point scores and factors
  equal ``TCorex``'s on its weights;
* a CLI fit writes one run folder (config, TensorBoard scalars, histograms and images,
  best/last checkpoints) and lowers ``val/nll``; every ``configs/tcorex`` config prints with
  the data hints (``n_variables``, ``n_periods``);
* the variables sharded over 2 gloo processes (``ddp_variables``) give the weights, objective,
  metrics, checkpoints (incl. Adam's state) and resumed fit of 1 process, in float64.
"""

from __future__ import annotations

import math
from pathlib import Path

import corex_helpers as helpers
import numpy as np
import pytest
import torch

from lit_info.cli import main
from lit_info.data import TimeSeriesDataModule
from lit_info.info.corex import ANNEAL_SCHEDULE, corex_moments, factor_tcs
from lit_info.info.tcorex import (
    batch_sample_weights,
    covariance_difference_penalty,
    difference_penalty,
    implied_factors,
    period_mixing,
    regularized_matrices,
    sample_weights,
    temporal_penalty,
    weighted_batch_standardization,
    weighted_standardization,
)
from lit_info.methods import TCorexModule
from lit_info.methods.corex import TCorex
from lit_info.methods.tcorex_module import bar_image

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "tcorex").glob("*.yaml"))
SUDDEN = ROOT / "configs" / "tcorex" / "sudden_change_p128.yaml"
SCRIPT = ROOT / "tests" / "scripts" / "ddp_tcorex.py"
F64 = torch.float64
P, M, T = 20, 3, 5


def _data(**kwargs) -> TimeSeriesDataModule:
    args = dict(
        source="sudden_change",
        n_variables=P,
        n_factors=M,
        n_periods=T,
        train_samples=12,
        val_samples=10,
        test_samples=20,
        seed=1,
    )
    args.update(kwargs)
    return TimeSeriesDataModule(**args)


def _module(**kwargs) -> TCorexModule:
    args = dict(n_variables=P, n_periods=T, n_hidden=M)
    args.update(kwargs)
    return TCorexModule(**args).double()


def _training_split(dm: TimeSeriesDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    dm.setup()
    return dm.train_dataset.x, dm.train_dataset.period


def _tcorex_start(seed: int) -> torch.Tensor:
    """``TCorex(init=False, random_state=seed)``'s start, one period."""
    g = torch.randn(M, P, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return 0.1 * g / g.norm(dim=1, keepdim=True)


# -- the math -----------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [None, 0.5, 1.0])
def test_batch_weights_and_standardization_are_tcorex_s(gamma):
    rng = np.random.default_rng(0)
    counts = [6, 8, 5]
    periods = [rng.normal(size=(n, 4)) * (t + 1) + 1e8 * (t + 1) for t, n in enumerate(counts)]
    period = torch.from_numpy(np.repeat(np.arange(3), counts))
    mixing = period_mixing(np.array(counts), gamma)
    omega = batch_sample_weights(period, 3, gamma)
    np.testing.assert_allclose(omega.numpy(), sample_weights(mixing, period.numpy()), rtol=1e-14)
    mean, scale = weighted_standardization(periods, mixing)
    ours = weighted_batch_standardization(torch.from_numpy(np.concatenate(periods)), period, omega)
    np.testing.assert_allclose(ours[0].numpy(), mean, rtol=1e-14)
    np.testing.assert_allclose(ours[1].numpy(), scale, rtol=1e-12)  # offsets 1e8, no cancellation
    # a period without samples in a batch (gamma unset): no weight, placeholder statistics
    part = torch.tensor([0, 0, 2, 2])
    omega = batch_sample_weights(part, 3, None)
    assert omega.sum(1).tolist() == [1.0, 0.0, 1.0]
    mean, scale = weighted_batch_standardization(torch.randn(4, 2, dtype=F64), part, omega)
    assert mean[1].tolist() == [0.0, 0.0] and scale[1].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    "reg_type, l1, l2", [("W", 0.3, 0.05), ("MI", 0.2, 0.1), ("covariance", 0.0, 0.4)]
)
def test_objective_is_tcorex_s_on_the_same_weights(reg_type, l1, l2):
    torch.manual_seed(0)
    x, period = _training_split(_data())
    gamma = 0.5
    module = _module(l1=l1, l2=l2, reg_type=reg_type, gamma=gamma)
    module.free_weights.data.copy_(0.3 * torch.randn(T, M, P, dtype=F64))
    v = module.free_weights.detach()
    # TCorex's evaluate(), written out with its pieces
    est = TCorex(n_hidden=M, l1=l1, l2=l2, reg_type=reg_type, gamma=gamma)
    periods = [x[period == t].numpy() for t in range(T)]
    mixing = period_mixing(np.array([len(p) for p in periods]), gamma)
    mean, scale = (torch.from_numpy(a) for a in weighted_standardization(periods, mixing))
    omega = torch.from_numpy(sample_weights(mixing, period.numpy()))
    for eps in (0.0, ANNEAL_SCHEDULE[2]):
        ref = corex_moments(x, v, eps, free=True, sample_weights=omega, mean=mean, scale=scale)
        # the penalty written out: TCorex's and the module's both call temporal_penalty
        if reg_type == "covariance":
            ref_penalty = l2 * covariance_difference_penalty(implied_factors(ref))
        else:
            ref_penalty = difference_penalty(regularized_matrices(ref, v, reg_type), l1, l2)
        torch.testing.assert_close(est._penalty(ref, v, 0.0), ref_penalty, rtol=0, atol=0)
        tc, penalty = module.objective(x, period, eps)
        torch.testing.assert_close(tc, ref.tc, rtol=1e-11, atol=0)
        torch.testing.assert_close(penalty, ref_penalty, rtol=1e-11, atol=1e-14)
        # the penalty's sharded code path (sums through reduce) on one shard
        same = temporal_penalty(ref, v, reg_type, l1, l2, reduce=lambda t: t)
        torch.testing.assert_close(same, ref_penalty, rtol=1e-12, atol=1e-14)
    assert float(ref_penalty) > 0
    # the training loss is -(sum_t TC_t - penalty) / T at the epoch's eps (0.6 in epoch 0)
    loss = module.training_step((x, period, torch.arange(len(x))), 0)
    ref = corex_moments(x, v, 0.6, free=True, sample_weights=omega, mean=mean, scale=scale)
    objective = ref.tc.sum() - est._penalty(ref, v, 0.0)
    torch.testing.assert_close(loss.detach(), -objective / T, rtol=1e-11, atol=0)
    loss.backward()
    assert module.free_weights.grad is not None and module.free_weights.grad.abs().sum() > 0


@pytest.mark.parametrize("gamma, l1, reg_type", [(0.5, 0.3, "W"), (None, 0.1, "MI")])
def test_full_batch_fit_takes_the_adam_steps_of_tcorex(gamma, l1, reg_type):
    dm = _data()
    k = 4  # Adam steps per annealing stage, 7 stages
    est = TCorex(n_hidden=M, max_iter=k, init=False, l1=l1, gamma=gamma, reg_type=reg_type, lr=0.02)
    est.set_params(random_state=3).fit([p.numpy() for p in dm.train_periods])
    module = _module(l1=l1, gamma=gamma, reg_type=reg_type, lr=0.02, epochs_per_stage=k)
    module.free_weights.data.copy_(_tcorex_start(3).expand(T, M, P))
    helpers.cpu_trainer(max_epochs=7 * k).fit(module, datamodule=dm)
    moments = module.train_moments()
    order = torch.argsort(factor_tcs(moments).mean(0), descending=True)  # TCorex's order
    v = module.free_weights.detach()[:, order].numpy()
    np.testing.assert_allclose(v, est.free_components_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(moments.tc.numpy(), est.tc_, rtol=1e-10)
    objective = float(moments.tc.sum() - module.penalty(moments).detach())
    assert objective == pytest.approx(est.objective_, rel=1e-10)
    np.testing.assert_allclose(module.mean.numpy(), est.mean_, rtol=1e-13)
    np.testing.assert_allclose(module.scale.numpy(), est.scale_, rtol=1e-13)
    np.testing.assert_allclose(module.mixing.numpy(), est.mixing_, rtol=1e-15)
    assert module.n_fit_samples.tolist() == [12] * T


def test_pooled_start_is_tcorex_init():
    dm = _data()
    periods = [p.numpy() for p in dm.train_periods]
    module = _module(gamma=0.5, init_from_pooled=True)
    helpers.cpu_trainer(max_epochs=0).fit(module, datamodule=dm)
    assert module.pooled_corex is not None
    seed = module.pooled_corex.random_state
    est = TCorex(n_hidden=M, max_iter=10000, gamma=0.5, random_state=seed)
    est.mean_, est.scale_ = weighted_standardization(periods, period_mixing([12] * T, 0.5))
    start = est._start(periods, seed)  # TCorex(init=True)'s start (its LinearCorex)
    torch.testing.assert_close(module.free_weights.detach(), start, rtol=1e-12, atol=1e-14)


def test_nll_covariances_change_points_and_factors_are_tcorex_s_on_its_weights():
    dm = _data(test_samples=10)
    train = [p.numpy() for p in dm.train_periods]
    val = [p.numpy() for p in dm.val_periods]
    est = TCorex(n_hidden=M, max_iter=30, l1=0.2, gamma=0.6, random_state=0).fit(train)
    module = _module(l1=0.2, gamma=0.6)
    module.free_weights.data.copy_(torch.from_numpy(est.free_components_))
    metrics = helpers.cpu_trainer().validate(module, datamodule=dm, verbose=False)[0]
    assert module.n_fit_samples.tolist() == [12] * T  # the statistics came from the training split
    assert metrics["val/nll"] == pytest.approx(-est.score(val), rel=1e-11)
    assert metrics["val/nll"] == pytest.approx(est.nll(val, center=True), rel=1e-11)
    moments = module.train_moments()
    np.testing.assert_allclose(moments.tc.numpy(), est.tc_, rtol=1e-11)
    np.testing.assert_allclose(moments.weights.numpy(), est.components_, rtol=1e-10, atol=1e-13)
    for ours, ref in zip(module.covariance_low_rank(), est.get_covariance(), strict=True):
        np.testing.assert_allclose(ours.dense().numpy(), ref, rtol=1e-10, atol=1e-12)
    ours, ref = module.change_point_scores(), est.change_point_scores()
    for key in ("frobenius", "spectral"):
        np.testing.assert_allclose(ours[key], ref[key], rtol=1e-9)
    factors = module(torch.as_tensor(np.concatenate(val)), dm.val_dataset.period)
    np.testing.assert_allclose(factors.detach().numpy(), np.concatenate(est.transform(val)))
    dm.predict_split = "val"
    predicted = helpers.cpu_trainer().predict(module, datamodule=dm)[0]
    assert set(predicted) == {"index", "period", "factors"}
    torch.testing.assert_close(predicted["factors"], factors.detach())


@pytest.mark.parametrize("gamma", [None, 0.5])
def test_minibatch_fit_raises_every_period_s_tc(gamma):
    # batches of 16 shuffled samples: several periods per batch, with gamma unset some missing
    dm = _data(batch_size=16)
    module = _module(gamma=gamma, l1=0.1, lr=0.05, anneal=False)
    x, period = _training_split(dm)
    before, _ = module.objective(x, period)
    helpers.cpu_trainer(max_epochs=10).fit(module, datamodule=dm)
    after = module.train_moments().tc
    assert bool((after > before.detach() + 0.5).all())


def test_bar_image_scales_to_the_largest_value():
    image = bar_image(torch.tensor([1.0, 4.0, 0.0, 2.0]), height=40, bar=5, gap=2)
    assert image.shape == (3, 40, 2 + 4 * 7)
    heights = [int((image[0, :, 2 + j * 7] < 1).sum()) for j in range(4)]
    assert heights == [10, 40, 1, 20]


def test_bad_arguments_and_strategy_must_agree():
    for kwargs, match in (
        ({"n_periods": None}, "n_periods"),
        ({"n_variables": None}, "n_variables"),
        ({"reg_type": "covariance", "l1": 0.1}, "l2"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": 1.5}, "gamma"),
        ({"l1": -1.0}, "l1"),
        ({"reg_type": "X"}, "reg_type"),
    ):
        with pytest.raises(ValueError, match=match):
            TCorexModule(**{"n_variables": 8, "n_periods": 3, **kwargs})
    helpers.assert_strategy_checks(
        lambda **kw: TCorexModule(n_variables=8, n_periods=3, n_hidden=2, **kw)
    )
    # the data must match n_periods and have 2 samples per period
    with pytest.raises(ValueError, match="n_periods=3"):
        helpers.cpu_trainer(max_epochs=1).fit(
            TCorexModule(n_variables=P, n_periods=3), datamodule=_data()
        )


# -- the CLI and the configs --------------------------------------------------------------------
def test_cli_fit_writes_one_run_folder_and_lowers_val_nll(tmp_path):
    args = [
        "fit",
        "--config",
        str(SUDDEN),
        *helpers.QUIET,
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=12",
        "--data.init_args.n_variables=24",
        "--data.init_args.n_factors=3",
        "--data.init_args.n_periods=4",
        "--data.init_args.test_samples=50",
        "--model.init_args.n_hidden=3",
        "--model.init_args.epochs_per_stage=2",
        "--model.init_args.lr=0.05",
        "--model.init_args.image_every_n_epochs=6",
    ]
    cli = main(args)
    model = cli.model
    assert isinstance(model, TCorexModule)
    assert (model.n_variables, model.n_periods) == (24, 4)  # from the data
    run = tmp_path / "tcorex" / "sudden_change_p128" / "version_0"
    assert (run / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    events = helpers.read_events(run)
    nll = [e.value for e in events.Scalars("val/nll")]
    assert len(nll) == 12 and all(map(math.isfinite, nll)) and nll[-1] < nll[0] - 1.0
    assert {"train/tc", "train/penalty", "train/loss", "train/eps"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Histograms("tcorex/period_tc")] == list(range(12))
    images = {tag: [e.step for e in events.Images(tag)] for tag in events.Tags()["images"]}
    assert images == {"tcorex/change_points": [5, 11], "tcorex/weights": [5, 11]}
    assert events.Images("tcorex/weights")[0].width == 24 * (256 // 24)
    # the best checkpoint (lowest val/nll) carries the standardization and evaluates alone
    best = TCorexModule.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert best.n_fit_samples.tolist() == [16] * 4
    torch.testing.assert_close(best.mean, model.mean.to(best.mean))
    test = helpers.cpu_trainer().test(best, datamodule=cli.datamodule, verbose=False)[0]
    assert math.isfinite(test["test/nll"])


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_tcorex_configs_print_with_the_data_hints(config, capsys, request):
    # the common checks (seed, logger name tcorex/<stem>, best/last checkpoints, relative file)
    printed, source = helpers.print_config(config, capsys, request)
    assert printed["model"]["class_path"] == "lit_info.methods.TCorexModule"
    hints = {k: printed["model"]["init_args"][k] for k in ("n_variables", "n_periods")}
    from_file = source.get("source") == "file"
    assert hints == (
        {"n_variables": 28, "n_periods": 10} if from_file else {"n_variables": 128, "n_periods": 10}
    )
    trainer = printed["trainer"]
    assert trainer["precision"] == "64-true"
    assert not trainer["callbacks"][0]["init_args"]["enable_version_counter"]


def test_fmri_config_fits_ten_windows_of_the_28_bold_signals(datasets_dir, tmp_path):
    cli = helpers.fit_fmri_config(
        ROOT / "configs" / "tcorex" / "fmri_rest.yaml", datasets_dir, tmp_path
    )
    assert (cli.model.n_variables, cli.model.n_periods) == (28, 10)
    assert "WM" not in cli.datamodule.variable_names
    assert len(cli.datamodule.train_dataset) == 150 and len(cli.datamodule.val_dataset) == 50
    metrics = cli.trainer.callback_metrics
    assert math.isfinite(float(metrics["val/nll"])) and float(metrics["train/eps"]) == 0.6
    assert float(metrics["train/penalty"]) >= 0


# -- variables sharded over 2 processes ---------------------------------------------------------
@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory) -> Path:
    return helpers.launch_sharded_runs(tmp_path_factory.mktemp("tcorex_ddp"), SCRIPT)


def test_sharded_checkpoints_hold_the_full_weights_and_adam_state(sharded_runs):
    state, adam = helpers.sharded_checkpoints(sharded_runs, (1e-9, 1e-11), (1e-8, 1e-16))
    assert state["free_weights"].shape == (4, 3, 37)
    assert state["mean"].shape == (4, 37)
    assert adam["exp_avg"].shape == (4, 3, 37)


def test_two_shards_give_the_weights_objective_and_metrics_of_one_process(sharded_runs):
    # the pooled start (gathered columns), 6 full-batch Adam steps with annealing, the
    # covariance penalty, clipping by the global norm and a resume
    one, two, logged = helpers.sharded_results(
        sharded_runs,
        weights_tol=(1e-9, 1e-11),
        metrics=("val/nll", "train/tc", "train/penalty", "train/loss", "train/eps"),
        test_metrics=("test/nll",),
        images={"tcorex/change_points", "tcorex/weights"},
    )
    torch.testing.assert_close(two["tc"], one["tc"], rtol=1e-11, atol=0)
    for key in ("frobenius", "spectral"):
        torch.testing.assert_close(two["scores"][key], one["scores"][key], rtol=1e-9, atol=0)
    assert one["metrics"]["train/penalty"] > 0
    assert logged.Images("tcorex/weights")[0].width == 37 * (256 // 37)

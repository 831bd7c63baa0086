"""CorexModule: the LinearCorex math as a LightningModule, through the CLI, and sharded.

* the objective, per-factor TC, held-out NLL and factors equal those of ``corex_moments`` /
  ``LinearCorex`` on the same weights;
* a CLI fit writes one run folder (config, TensorBoard scalars, histograms and images,
  best/last checkpoints) and lowers ``val/nll``; every ``configs/corex`` config prints;
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
from torch.utils.data import DataLoader, TensorDataset

from lit_info.cli import main
from lit_info.data import TimeSeriesDataModule
from lit_info.info.corex import ANNEAL_SCHEDULE, corex_moments, factor_tcs, moments_covariance
from lit_info.methods import CorexModule
from lit_info.methods.corex import Gaussianizer, LinearCorex
from lit_info.methods.corex_module import annealing_eps, sharded_nll

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "corex").glob("*.yaml"))
MODULAR = ROOT / "configs" / "corex" / "modular_p256_m16.yaml"
SCRIPT = ROOT / "tests" / "scripts" / "ddp_corex.py"
F64 = torch.float64


def _data(**kwargs) -> TimeSeriesDataModule:
    args = dict(n_variables=24, n_factors=3, train_samples=60, val_samples=40, test_samples=40)
    args.update(kwargs)
    return TimeSeriesDataModule(**args)


# -- the math -----------------------------------------------------------------------------------
def test_objective_and_factor_tcs_are_the_corex_moments_of_the_free_weights():
    torch.manual_seed(0)
    x = torch.randn(30, 10, dtype=F64) @ torch.randn(10, 10, dtype=F64) + 3.0
    module = CorexModule(n_variables=10, n_hidden=3).double()
    gauss = Gaussianizer("standard").fit(x.numpy())
    module.mean.copy_(torch.from_numpy(gauss.mean))
    module.scale.copy_(torch.from_numpy(gauss.std))
    z = module.standardize(x)
    torch.testing.assert_close(z, torch.from_numpy(gauss.transform(x.numpy())))
    for eps in (0.0, ANNEAL_SCHEDULE[1]):
        ours = module.moments(z, eps)
        ref = corex_moments(z, module.free_weights.detach(), eps, free=True)
        torch.testing.assert_close(ours.tc, ref.tc, rtol=1e-13, atol=0)
        torch.testing.assert_close(module.factor_tcs(ours), factor_tcs(ref), rtol=1e-12, atol=0)
    # the training loss is -TC / p of the batch at the epoch's eps (0.6 in epoch 0)
    loss = module.training_step((x, torch.zeros(30), torch.arange(30)), 0)
    ref = corex_moments(z, module.free_weights.detach(), 0.6, free=True).tc
    torch.testing.assert_close(loss.detach(), -ref / 10, rtol=1e-13, atol=0)
    loss.backward()
    assert module.free_weights.grad is not None and module.free_weights.grad.abs().sum() > 0


def test_annealing_schedule_advances_every_epochs_per_stage_then_stays_zero():
    stages = [annealing_eps(e, 3) for e in range(0, 30, 3)]
    assert stages[:7] == list(ANNEAL_SCHEDULE) and stages[6:] == [0.0] * 4
    assert [annealing_eps(e, 3) for e in (0, 1, 2, 3)] == [0.6, 0.6, 0.6, 0.36]
    assert annealing_eps(0, 3, anneal=False) == 0.0


def test_sharded_nll_code_path_equals_the_woodbury_nll():
    torch.manual_seed(1)
    z = torch.randn(50, 12, dtype=F64)
    v = 0.3 * torch.randn(4, 12, dtype=F64)
    cov = moments_covariance(corex_moments(z, v, 0.0, free=True))
    held_out = torch.randn(20, 12, dtype=F64)
    nll = sharded_nll(cov, held_out, reduce=lambda t: t)  # the sharded formulas, one shard
    torch.testing.assert_close(nll, cov.nll(held_out), rtol=1e-13, atol=0)


def test_nll_factors_and_tc_equal_linear_corex_on_its_weights():
    dm = _data()
    dm.setup()
    train = dm.train_periods[0].numpy()
    val = dm.val_periods[0].numpy()
    lc = LinearCorex(n_hidden=3, random_state=0, max_iter=200).fit(train)
    module = CorexModule(n_variables=24, n_hidden=3).double()
    u = torch.as_tensor(lc.moments().u)
    w = torch.as_tensor(lc.components_)
    # the free weights whose normalized weights are LinearCorex's W: V = W / sqrt(1 - u)
    module.free_weights.data.copy_(w / torch.sqrt(1.0 - u)[:, None])
    metrics = helpers.cpu_trainer().validate(module, datamodule=dm, verbose=False)[0]
    assert int(module.n_fit_samples) == 60  # the statistics came from the training split
    assert metrics["val/nll"] == pytest.approx(-lc.score(val), rel=1e-10)
    moments = module.train_moments()
    torch.testing.assert_close(moments.weights, w, rtol=1e-10, atol=1e-12)
    assert float(moments.tc) == pytest.approx(lc.tc_, rel=1e-10)
    np.testing.assert_allclose(module.factor_tcs(moments).numpy(), lc.tcs_, rtol=1e-9)
    factors = module(torch.as_tensor(val)).detach().numpy()
    np.testing.assert_allclose(factors, lc.transform(val), rtol=1e-9, atol=1e-12)


def test_minibatch_fit_raises_the_objective_and_dataloaders_without_datamodule_work():
    torch.manual_seed(0)
    dm = _data(batch_size=20)
    module = CorexModule(n_variables=24, n_hidden=3, lr=0.05, anneal=False)
    dm.setup()
    x = dm.train_dataset.x
    z = (x - x.mean(0)) / x.std(0, correction=0)
    start = float(corex_moments(z, module.free_weights.detach().double(), free=True).tc)
    helpers.cpu_trainer(max_epochs=15).fit(module, datamodule=dm)
    assert float(module.train_moments().tc) > start + 1.0
    # a plain dataloader (no datamodule): the statistics come from the fit's own loader
    x = x.clone()
    x[:, 5] = 2.0
    loader = DataLoader(TensorDataset(x, torch.zeros(60), torch.arange(60)), batch_size=60)
    with pytest.raises(ValueError, match="zero variance"):
        helpers.cpu_trainer(max_epochs=1).fit(CorexModule(n_variables=24), loader, loader)


def test_missing_values_give_linear_corex_objective_and_train_finite():
    torch.manual_seed(4)
    x = torch.randn(50, 8, dtype=F64) @ torch.randn(8, 8, dtype=F64) + 1.5
    x[torch.rand(50, 8) < 0.15] = float("nan")
    loader = DataLoader(TensorDataset(x, torch.zeros(50), torch.arange(50)), batch_size=50)
    with pytest.raises(ValueError, match="contain NaN; set missing_values: true"):
        helpers.cpu_trainer(max_epochs=1).fit(CorexModule(n_variables=8), loader, loader)
    module = CorexModule(n_variables=8, n_hidden=2, missing_values=True, lr=0.05).double()
    # the batch standardization is LinearCorex's: observed mean and std, missing -> 0
    gauss = Gaussianizer("standard").fit(x.numpy())
    z = torch.from_numpy(gauss.transform(x.numpy()))
    torch.testing.assert_close(module.standardize_own(x), z, rtol=1e-12, atol=1e-14)
    loss = module.training_step((x, torch.zeros(50), torch.arange(50)), 0)
    ref = corex_moments(z, module.free_weights.detach(), 0.6, free=True).tc
    torch.testing.assert_close(loss.detach(), -ref / 8, rtol=1e-12, atol=0)
    start = float(ref)
    helpers.cpu_trainer(max_epochs=20).fit(module, loader, loader)
    np.testing.assert_allclose(module.mean.numpy(), gauss.mean, rtol=1e-12)
    np.testing.assert_allclose(module.scale.numpy(), gauss.std, rtol=1e-12)
    assert math.isfinite(float(module.nll(x))) and torch.isfinite(module(x)).all()
    assert float(module.train_moments().tc) > start


def test_shard_variables_and_the_strategy_must_agree():
    helpers.assert_strategy_checks(
        lambda **kwargs: CorexModule(n_variables=8, n_hidden=2, **kwargs)
    )
    with pytest.raises(ValueError, match="n_variables"):
        CorexModule()


# -- the CLI and the configs --------------------------------------------------------------------
def test_cli_fit_writes_one_run_folder_and_lowers_val_nll(tmp_path):
    args = [
        "fit",
        "--config",
        str(MODULAR),
        *helpers.QUIET,
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=12",
        "--data.init_args.n_variables=32",
        "--data.init_args.n_factors=4",
        "--model.init_args.n_hidden=4",
        "--model.init_args.epochs_per_stage=2",
        "--model.init_args.lr=0.05",
        "--model.init_args.image_every_n_epochs=6",
    ]
    cli = main(args)
    assert isinstance(cli.model, CorexModule) and cli.model.n_variables == 32  # from the data
    run = tmp_path / "corex" / "modular_p256_m16" / "version_0"
    assert (run / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    events = helpers.read_events(run)
    nll = [e.value for e in events.Scalars("val/nll")]
    assert len(nll) == 12 and nll[-1] < nll[0] - 1.0
    assert {"train/tc", "train/eps", "val/tc"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Histograms("corex/factor_tc")] == list(range(12))
    images = {tag: [e.step for e in events.Images(tag)] for tag in events.Tags()["images"]}
    assert images == {"corex/weights": [5, 11], "corex/correlation": [5, 11]}
    # the best checkpoint (lowest val/nll) carries the standardization and evaluates alone
    best = CorexModule.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert int(best.n_fit_samples) == 32
    torch.testing.assert_close(best.mean, cli.model.mean.to(best.mean))
    test = helpers.cpu_trainer().test(best, datamodule=cli.datamodule, verbose=False)[0]
    assert math.isfinite(test["test/nll"]) and math.isfinite(test["test/tc"])


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_corex_configs_print_with_the_data_hints(config, capsys, request):
    # the common checks (seed, logger name corex/<stem>, best/last checkpoints, relative file)
    printed, _ = helpers.print_config(config, capsys, request)
    assert printed["model"]["class_path"] == "lit_info.methods.CorexModule"
    assert printed["model"]["init_args"]["n_variables"] == {"modular_p256_m16": 256}.get(
        config.stem, 28
    )


def test_fmri_config_fits_the_28_bold_signals(datasets_dir, tmp_path):
    cli = helpers.fit_fmri_config(
        ROOT / "configs" / "corex" / "fmri_rest.yaml", datasets_dir, tmp_path
    )
    assert cli.model.n_variables == 28 and "WM" not in cli.datamodule.variable_names
    assert len(cli.datamodule.train_dataset) == 150
    metrics = cli.trainer.callback_metrics
    assert math.isfinite(float(metrics["val/nll"])) and float(metrics["train/eps"]) == 0.6


# -- variables sharded over 2 processes ---------------------------------------------------------
@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory) -> Path:
    return helpers.launch_sharded_runs(tmp_path_factory.mktemp("corex_ddp"), SCRIPT)


def test_sharded_checkpoints_hold_the_full_weights_and_adam_state(sharded_runs):
    state, adam = helpers.sharded_checkpoints(sharded_runs, (1e-9, 1e-11), (1e-8, 1e-16))
    assert state["free_weights"].shape == (3, 37)
    assert adam["exp_avg"].shape == (3, 37)


def test_two_shards_give_the_weights_objective_and_metrics_of_one_process(sharded_runs):
    # 6 full-batch Adam steps with annealing, clipping by the global norm and a resume
    one, two, logged = helpers.sharded_results(
        sharded_runs,
        weights_tol=(1e-9, 1e-11),
        metrics=("val/nll", "val/tc", "train/tc", "train/eps"),
        test_metrics=("test/nll", "test/tc"),
        images={"corex/weights", "corex/correlation"},
    )
    assert two["tc"] == pytest.approx(one["tc"], rel=1e-12)
    assert logged.Images("corex/correlation")[0].width > 2 * 37

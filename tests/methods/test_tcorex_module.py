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
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.strategies import DDPStrategy

from lit_info.cli import main
from lit_info.data import TimeSeriesDataModule
from lit_info.info.corex import ANNEAL_SCHEDULE, corex_moments, factor_tcs
from lit_info.info.tcorex import (
    batch_sample_weights,
    period_mixing,
    sample_weights,
    temporal_penalty,
    weighted_batch_standardization,
    weighted_standardization,
)
from lit_info.methods import TCorexModule
from lit_info.methods.corex import TCorex
from lit_info.methods.tcorex_module import bar_image
from lit_info.strategies import VariableShardingStrategy

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "tcorex").glob("*.yaml"))
SUDDEN = ROOT / "configs" / "tcorex" / "sudden_change_p128.yaml"
SCRIPT = ROOT / "tests" / "scripts" / "ddp_tcorex.py"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
F64 = torch.float64
P, M, T = 20, 3, 5


def _trainer(**kwargs) -> pl.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    args.update(kwargs)
    return pl.Trainer(**args)


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


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = sorted(run_dir.glob("events.out.tfevents.*"))[0]  # the fit's (a test adds one)
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


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
        ref_penalty = est._penalty(ref, v, 0.0)
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
    _trainer(max_epochs=7 * k).fit(module, datamodule=dm)
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
    _trainer(max_epochs=0).fit(module, datamodule=dm)
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
    metrics = _trainer().validate(module, datamodule=dm, verbose=False)[0]
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
    predicted = _trainer().predict(module, datamodule=dm)[0]
    assert set(predicted) == {"index", "period", "factors"}
    torch.testing.assert_close(predicted["factors"], factors.detach())


@pytest.mark.parametrize("gamma", [None, 0.5])
def test_minibatch_fit_raises_every_period_s_tc(gamma):
    # batches of 16 shuffled samples: several periods per batch, with gamma unset some missing
    dm = _data(batch_size=16)
    module = _module(gamma=gamma, l1=0.1, lr=0.05, anneal=False)
    x, period = _training_split(dm)
    before, _ = module.objective(x, period)
    _trainer(max_epochs=10).fit(module, datamodule=dm)
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

    class FakeTrainer:
        def __init__(self, strategy):
            self.world_size, self.global_rank, self.strategy = 2, 0, strategy

    module = TCorexModule(n_variables=8, n_periods=3, n_hidden=2, shard_variables=True)
    module.trainer = FakeTrainer(DDPStrategy())
    with pytest.raises(ValueError, match="needs --trainer.strategy ddp_variables"):
        module.setup("fit")
    module = TCorexModule(n_variables=8, n_periods=3, n_hidden=2)
    module.trainer = FakeTrainer(VariableShardingStrategy())
    with pytest.raises(ValueError, match="shard_variables true"):
        module.setup("fit")
    # the data must match n_periods and have 2 samples per period
    with pytest.raises(ValueError, match="n_periods=3"):
        _trainer(max_epochs=1).fit(TCorexModule(n_variables=P, n_periods=3), datamodule=_data())


# -- the CLI and the configs --------------------------------------------------------------------
def test_cli_fit_writes_one_run_folder_and_lowers_val_nll(tmp_path):
    args = [
        "fit",
        "--config",
        str(SUDDEN),
        *QUIET,
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
    events = _events(run)
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
    test = _trainer().test(best, datamodule=cli.datamodule, verbose=False)[0]
    assert math.isfinite(test["test/nll"])


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_tcorex_configs_print_with_the_data_hints(config, capsys, request):
    extra = []
    source = yaml.safe_load(config.read_text())["data"]["init_args"]
    if source.get("source") == "file":  # the hints read the file: use the shared copy
        datasets = request.getfixturevalue("datasets_dir")
        path = datasets / source["file"]
        if not path.is_file():
            pytest.skip(f"{path} not found")
        extra = [f"--data.init_args.data_dir={datasets}"]
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), *extra, "--print_config"])
    assert stop.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "lit_info.methods.TCorexModule"
    hints = {k: printed["model"]["init_args"][k] for k in ("n_variables", "n_periods")}
    assert hints == (
        {"n_variables": 28, "n_periods": 10} if extra else {"n_variables": 128, "n_periods": 10}
    )
    assert isinstance(printed["seed_everything"], int)
    trainer = printed["trainer"]
    assert trainer["precision"] == "64-true"
    assert trainer["logger"]["init_args"]["name"] == f"tcorex/{config.stem}"
    best, last = trainer["callbacks"][:2]
    assert best["init_args"]["monitor"] == "val/nll" and best["init_args"]["mode"] == "min"
    assert last["init_args"]["filename"] == "last"
    assert not best["init_args"]["enable_version_counter"]
    assert not Path(source.get("file", "")).is_absolute()


def test_fmri_config_fits_ten_windows_of_the_28_bold_signals(datasets_dir, tmp_path):
    path = datasets_dir / "fmri" / "fmri_timeseries.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    config = ROOT / "configs" / "tcorex" / "fmri_rest.yaml"
    cli = main(
        [
            "fit",
            "--config",
            str(config),
            *QUIET,
            f"--data.init_args.data_dir={datasets_dir}",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=3",
        ]
    )
    assert (cli.model.n_variables, cli.model.n_periods) == (28, 10)
    assert "WM" not in cli.datamodule.variable_names
    assert len(cli.datamodule.train_dataset) == 150 and len(cli.datamodule.val_dataset) == 50
    metrics = cli.trainer.callback_metrics
    assert math.isfinite(float(metrics["val/nll"])) and float(metrics["train/eps"]) == 0.6
    assert float(metrics["train/penalty"]) >= 0


# -- variables sharded over 2 processes ---------------------------------------------------------
def _clean_env() -> dict[str, str]:
    """The environment without launcher variables (as tests/test_ddp.py), one thread each."""
    foreign = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in foreign
        and k not in ("GROUP_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "PL_GLOBAL_SEED")
        and not k.startswith(("SLURM_", "PMI_", "OMPI_"))
    }
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _run_together(commands: list[list[str]], cwd: Path, timeout: int = 240) -> None:
    procs = [
        subprocess.Popen(
            cmd, cwd=cwd, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for cmd in commands
    ]
    outputs = []
    try:
        outputs = [proc.communicate(timeout=timeout)[0].decode() for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"distributed helper timed out after {timeout} s")
    for cmd, proc, out in zip(commands, procs, outputs, strict=True):
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{out[-4000:]}")


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tcorex_ddp")

    def cmd(devices: int, epochs: int, name: str, *extra: str) -> list[str]:
        return [
            sys.executable,
            str(SCRIPT),
            "--devices",
            str(devices),
            "--epochs",
            str(epochs),
            "--out",
            str(tmp / f"{name}.pt"),
            "--ckpt-dir",
            str(tmp / f"ckpt_{devices}"),
            *extra,
        ]

    # 1 process for 6 epochs while 2 processes fit 3, then the 2 processes resume to 6
    _run_together([cmd(2, 3, "two_a", "--log-dir", str(tmp / "tb")), cmd(1, 6, "one")], tmp)
    resume = str(tmp / "ckpt_2" / "epoch=2.ckpt")
    _run_together([cmd(2, 6, "two", "--resume", resume)], tmp)
    return tmp


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_sharded_checkpoints_hold_the_full_weights_and_adam_state(sharded_runs):
    one = _load(sharded_runs / "ckpt_1" / "epoch=2.ckpt")
    two = _load(sharded_runs / "ckpt_2" / "epoch=2.ckpt")
    assert two["state_dict"]["free_weights"].shape == (4, 3, 37)
    assert two["state_dict"]["mean"].shape == (4, 37)
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-12, atol=1e-13)
    state_1, state_2 = (c["optimizer_states"][0]["state"][0] for c in (one, two))
    assert state_2["exp_avg"].shape == (4, 3, 37)
    for key, value in state_1.items():
        torch.testing.assert_close(state_2[key], value, rtol=1e-10, atol=1e-16)


def test_two_shards_give_the_weights_objective_and_metrics_of_one_process(sharded_runs):
    one, two = _load(sharded_runs / "one.pt"), _load(sharded_runs / "two.pt")
    first = _load(sharded_runs / "two_a.pt")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert first["columns"] == (0, 18)  # rank 0's slice of the 37 variables
    # the pooled start (gathered columns), 6 full-batch Adam steps with annealing, the
    # covariance penalty, clipping by the global norm and a resume
    torch.testing.assert_close(two["free_weights"], one["free_weights"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(two["weights"], one["weights"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(two["tc"], one["tc"], rtol=1e-11, atol=0)
    for key in ("frobenius", "spectral"):
        torch.testing.assert_close(two["scores"][key], one["scores"][key], rtol=1e-9, atol=0)
    assert not torch.allclose(first["free_weights"], one["free_weights"])  # it kept training
    for key in ("val/nll", "train/tc", "train/penalty", "train/loss", "train/eps"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-11), key
    assert one["metrics"]["train/penalty"] > 0
    assert two["test"]["test/nll"] == pytest.approx(one["test"]["test/nll"], rel=1e-11)
    # rank zero wrote the histograms and images of the gathered shards
    events = _events(sharded_runs / "tb")
    assert set(events.Tags()["images"]) == {"tcorex/change_points", "tcorex/weights"}
    assert events.Images("tcorex/weights")[0].width == 37 * (256 // 37)

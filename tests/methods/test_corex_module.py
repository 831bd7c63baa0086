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
from torch.utils.data import DataLoader, TensorDataset

from lit_info.cli import main
from lit_info.data import TimeSeriesDataModule
from lit_info.info.corex import ANNEAL_SCHEDULE, corex_moments, factor_tcs, moments_covariance
from lit_info.methods import CorexModule
from lit_info.methods.corex import Gaussianizer, LinearCorex
from lit_info.methods.corex_module import annealing_eps, sharded_nll
from lit_info.strategies import VariableShardingStrategy

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "corex").glob("*.yaml"))
MODULAR = ROOT / "configs" / "corex" / "modular_p256_m16.yaml"
SCRIPT = ROOT / "tests" / "scripts" / "ddp_corex.py"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
F64 = torch.float64


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
    args = dict(n_variables=24, n_factors=3, train_samples=60, val_samples=40, test_samples=40)
    args.update(kwargs)
    return TimeSeriesDataModule(**args)


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = sorted(run_dir.glob("events.out.tfevents.*"))[0]  # the fit's (a test adds one)
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


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
    metrics = _trainer().validate(module, datamodule=dm, verbose=False)[0]
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
    _trainer(max_epochs=15).fit(module, datamodule=dm)
    assert float(module.train_moments().tc) > start + 1.0
    # a plain dataloader (no datamodule): the statistics come from the fit's own loader
    x = x.clone()
    x[:, 5] = 2.0
    loader = DataLoader(TensorDataset(x, torch.zeros(60), torch.arange(60)), batch_size=60)
    with pytest.raises(ValueError, match="zero variance"):
        _trainer(max_epochs=1).fit(CorexModule(n_variables=24), loader, loader)


def test_shard_variables_and_the_strategy_must_agree():
    class FakeTrainer:
        def __init__(self, strategy):
            self.world_size, self.global_rank, self.strategy = 2, 0, strategy

    module = CorexModule(n_variables=8, n_hidden=2, shard_variables=True)
    module.trainer = FakeTrainer(DDPStrategy())
    with pytest.raises(ValueError, match="needs --trainer.strategy ddp_variables"):
        module.setup("fit")
    module = CorexModule(n_variables=8, n_hidden=2)
    module.trainer = FakeTrainer(VariableShardingStrategy())
    with pytest.raises(ValueError, match="shard_variables true"):
        module.setup("fit")
    with pytest.raises(ValueError, match="n_variables"):
        CorexModule()


# -- the CLI and the configs --------------------------------------------------------------------
def test_cli_fit_writes_one_run_folder_and_lowers_val_nll(tmp_path):
    args = [
        "fit",
        "--config",
        str(MODULAR),
        *QUIET,
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
    events = _events(run)
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
    test = _trainer().test(best, datamodule=cli.datamodule, verbose=False)[0]
    assert math.isfinite(test["test/nll"]) and math.isfinite(test["test/tc"])


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_corex_configs_print_with_the_data_hints(config, capsys, request):
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
    assert printed["model"]["class_path"] == "lit_info.methods.CorexModule"
    assert printed["model"]["init_args"]["n_variables"] == {"modular_p256_m16": 256}.get(
        config.stem, 28
    )
    assert isinstance(printed["seed_everything"], int)
    trainer = printed["trainer"]
    assert trainer["logger"]["init_args"]["name"] == f"corex/{config.stem}"
    best, last = trainer["callbacks"][:2]
    assert best["init_args"]["monitor"] == "val/nll" and best["init_args"]["mode"] == "min"
    assert last["init_args"]["filename"] == "last"
    assert not Path(source.get("file", "")).is_absolute()


def test_fmri_config_fits_the_28_bold_signals(datasets_dir, tmp_path):
    path = datasets_dir / "fmri" / "fmri_timeseries.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    config = ROOT / "configs" / "corex" / "fmri_rest.yaml"
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
    assert cli.model.n_variables == 28 and "WM" not in cli.datamodule.variable_names
    assert len(cli.datamodule.train_dataset) == 150
    metrics = cli.trainer.callback_metrics
    assert math.isfinite(float(metrics["val/nll"])) and float(metrics["train/eps"]) == 0.6


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
    tmp = tmp_path_factory.mktemp("corex_ddp")

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
    assert two["state_dict"]["free_weights"].shape == (3, 37)
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-13, atol=1e-15)
    state_1, state_2 = (c["optimizer_states"][0]["state"][0] for c in (one, two))
    assert state_2["exp_avg"].shape == (3, 37)
    for key, value in state_1.items():
        torch.testing.assert_close(state_2[key], value, rtol=1e-12, atol=1e-20)


def test_two_shards_give_the_weights_objective_and_metrics_of_one_process(sharded_runs):
    one, two = _load(sharded_runs / "one.pt"), _load(sharded_runs / "two.pt")
    first = _load(sharded_runs / "two_a.pt")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert first["columns"] == (0, 18)  # rank 0's slice of the 37 variables
    # 6 full-batch Adam steps with annealing, clipping by the global norm and a resume
    torch.testing.assert_close(two["free_weights"], one["free_weights"], rtol=1e-11, atol=1e-14)
    torch.testing.assert_close(two["weights"], one["weights"], rtol=1e-11, atol=1e-14)
    assert two["tc"] == pytest.approx(one["tc"], rel=1e-12)
    assert not torch.allclose(first["free_weights"], one["free_weights"])  # it kept training
    for key in ("val/nll", "val/tc", "train/tc", "train/eps"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-11), key
    for key in ("test/nll", "test/tc"):
        assert two["test"][key] == pytest.approx(one["test"][key], rel=1e-11), key
    # rank zero wrote the histograms and images of the gathered shards
    events = _events(sharded_runs / "tb")
    assert set(events.Tags()["images"]) == {"corex/weights", "corex/correlation"}
    assert events.Images("corex/correlation")[0].width > 2 * 37

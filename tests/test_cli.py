import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_info.cli import main
from lit_info.methods import LIMIT, Classifier

ROOT = Path(__file__).resolve().parents[1]
DEMO_CE = ROOT / "configs" / "demo" / "digits_uniform0.8_ce.yaml"
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def test_data_hints_reach_the_model_without_being_in_the_config():
    config = yaml.safe_load(DEMO_CE.read_text())
    assert "num_classes" not in config["model"]["init_args"]
    cli = main(["--config", str(DEMO_CE)], run=False)
    assert isinstance(cli.model, Classifier)
    assert cli.model.num_classes == cli.datamodule.num_classes == 10
    assert cli.model.input_shape == cli.datamodule.input_shape == (1, 8, 8)
    # an explicit value in the config wins over the hint
    cli = main(["--config", str(DEMO_CE), "--model.init_args.num_classes=12"], run=False)
    assert cli.model.num_classes == 12


def test_choose_any_model_class_from_the_command_line():
    cli = main(
        ["--config", str(DEMO_CE), "--model=lit_info.methods.LIMIT", "--model.beta=0.3"], run=False
    )
    assert isinstance(cli.model, LIMIT)
    assert cli.model.hparams.beta == 0.3
    assert cli.model.num_classes == 10


def test_print_config_shows_the_full_config_with_the_data_hints():
    out = subprocess.run(
        [sys.executable, "-m", "lit_info", "fit", "--config", str(DEMO_CE), "--print_config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["model"]["class_path"] == "lit_info.methods.Classifier"
    assert printed["data"]["init_args"]["noise_level"] == 0.8
    assert printed["seed_everything"] == 42
    # values filled in from the data are shown, not null
    assert printed["model"]["init_args"]["num_classes"] == 10
    assert printed["model"]["init_args"]["input_shape"] == [1, 8, 8]


def test_unknown_config_key_is_named(tmp_path):
    config = yaml.safe_load(DEMO_CE.read_text())
    config["data"]["init_args"]["noise_levle"] = 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [sys.executable, "-m", "lit_info.cli", "fit", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode != 0
    assert "noise_levle" in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing written


def test_bad_data_arguments_are_named():
    with pytest.raises(ValueError, match="noise_level"):
        main(["--config", str(DEMO_CE), "--data.noise_level=1.0"], run=False)
    with pytest.raises(ValueError, match="pair"):
        main(["--config", str(DEMO_CE), "--data.noise_type=pair"], run=False)


def test_fit_then_test_logs_the_metric_keys(tmp_path):
    args = [
        "fit",
        "--config",
        str(DEMO_CE),
        *QUIET,
        "--trainer.max_epochs=2",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.callbacks.init_args.every_n_epochs=1",
    ]
    cli = main(args)
    metrics = cli.trainer.callback_metrics
    for key in (
        "train/loss",
        "train/acc",
        "val/acc",
        "val/loss",
        "memorization/corrupted_acc_given",
    ):
        assert key in metrics, key
    test = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert set(test) >= {"test/acc", "test/loss"}
    assert 0.0 <= test["test/acc"] <= 1.0
    # the config was saved next to the logs, and TensorBoard events were written
    run_dir = tmp_path / "demo" / "digits_uniform0.8_ce" / "version_0"
    assert (run_dir / "config.yaml").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "memorization.csv").is_file()


def test_nan_loss_stops_training_naming_the_step(tmp_path):
    args = [
        "fit",
        "--config",
        str(DEMO_CE),
        *QUIET,
        "--trainer.max_epochs=3",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--model.init_args.lr=1e30",
        "--model.init_args.optimizer=sgd",
    ]
    with pytest.raises(RuntimeError, match=r"global step \d+"):
        main(args)


def test_every_experiment_config_parses():
    cli = main(["--config", str(DEMO_CE)], run=False)
    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(configs) > 100
    for path in configs:
        cfg = cli.parser.parse_args(["--config", str(path)])
        assert cfg.model.class_path.startswith("lit_info.methods."), path
        # images for the noisy-label and SUI configs; multivariate data for (T-)CorEx
        # graphs for MixHop / GCN: Planetoid, or the synthetic homophily graphs
        if path.parent.name in ("corex", "tcorex"):
            expected = "TimeSeriesDataModule"
        elif path.parent.name in ("mixhop", "gcn"):
            synthetic = path.name.startswith("synthetic_")
            expected = "HomophilyGraphDataModule" if synthetic else "CitationGraphDataModule"
        elif path.parent.name == "mimic3":
            expected = "Mimic3DataModule"
        elif path.parent.name == "minsyn":
            expected = "WordImageDataModule"
        else:
            expected = "NoisyImageDataModule"
        assert cfg.data.class_path == f"lit_info.data.{expected}", path
        assert isinstance(cfg.seed_everything, int)


@pytest.mark.parametrize(
    "name",
    [
        "limit/cifar10_pair0.2_g_init.yaml",
        "classifier/mnist_uniform0.89_gce.yaml",
        "limit/cifar100_uniform0.4_l.yaml",
    ],
)
def test_paper_configs_instantiate(name):
    # +init configs point to a CE checkpoint that does not exist yet: drop it for this check
    extra = ["--model.init_args.q_init_from=null"] if "init" in name else []
    cli = main(["--config", str(ROOT / "configs" / name), *extra], run=False)
    dm = cli.datamodule
    assert cli.model.num_classes == dm.num_classes
    x = torch.zeros(2, *dm.input_shape)
    assert cli.model(x).shape == (2, dm.num_classes)


def test_generated_configs_are_up_to_date():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_configs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_missing_data_ends_with_a_message_and_writes_nothing(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_info",
            "fit",
            "--config",
            str(ROOT / "configs/classifier/mnist_uniform0.8_ce.yaml"),
            f"--data.data_dir={tmp_path / 'nowhere'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "lit_info: error:" in out.stderr
    assert "t10k-images-idx3-ubyte" in out.stderr and "download: true" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _run_cli(tmp_path, *args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "lit_info", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model.init_args.betta", "3"], "model.betta: no such argument of"),
        (["--data.noise_level", "abc"], "data.noise_level: expected float, got 'abc'"),
        (["--model.loss", "foo"], "model.loss: expected one of 'ce'"),
        (["--config", "missing.yaml"], "does not exist"),
    ],
    ids=["unknown-key", "bad-float", "bad-choice", "missing-config"],
)
def test_parse_errors_are_one_line_and_a_hint(tmp_path, args, expected):
    out = _run_cli(tmp_path, "fit", "--config", str(DEMO_CE), *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("python -m lit_info: error: ") and expected in lines[0], lines
    assert len(lines) <= 2 and "usage:" not in out.stderr and "--help" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_lightning_configuration_errors_and_damaged_checkpoints_are_one_line(tmp_path):
    out = _run_cli(tmp_path, "fit", "--config", str(DEMO_CE), "--trainer.max_epochs", "-3")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "lit_info: error: `max_epochs` must be a non-negative integer" in out.stderr
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x80\x02garbage" * 50)
    out = _run_cli(tmp_path, "test", "--config", str(DEMO_CE), "--ckpt_path", str(bad))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "bad.ckpt is damaged or not a PyTorch checkpoint" in out.stderr
    assert "weights_only=False" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]


def test_a_run_prints_where_it_went_and_no_notices_a_user_cannot_act_on(tmp_path):
    out = _run_cli(
        tmp_path, "fit", "--config", str(DEMO_CE), *QUIET, "--trainer.max_epochs=1", timeout=300
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "Tip:" not in text and "litlogger" not in text and "LeafSpec" not in text
    run = Path("runs") / "demo" / "digits_uniform0.8_ce" / "version_0"
    assert f"lit_info: fit wrote {run}/" in out.stderr
    assert (tmp_path / run / "config.yaml").is_file()


def test_help_names_the_program_and_list_shows_every_component(tmp_path):
    out = _run_cli(tmp_path, "--help")
    assert out.stdout.startswith("usage: python -m lit_info ")
    assert "python -m lit_info list" in " ".join(out.stdout.split())
    out = _run_cli(tmp_path, "list")
    assert out.returncode == 0
    for name in ("Classifier", "LIMIT", "NoisyImageDataModule", "SampleInformation", "mnist_cnn"):
        assert name in out.stdout, name
    assert "ImageClassificationModule" not in out.stdout  # the abstract base is not a choice
    out = _run_cli(tmp_path, "fit", "--config", str(DEMO_CE), "--model.help", "Classifier")
    assert "--model.net" in out.stdout
    assert "``" not in out.stdout and ":func:" not in out.stdout and ":class:" not in out.stdout
    out = _run_cli(tmp_path, "fit", "--help")
    assert "ImageClassificationModule" not in out.stdout


def test_damaged_data_stops_the_run_before_anything_is_written(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 40)  # truncated IDX
    out = _run_cli(
        tmp_path,
        "fit",
        "--config",
        str(ROOT / "configs/classifier/mnist8k_uniform0.8_ce.yaml"),
        f"--data.data_dir={tmp_path / 'data'}",
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "t10k-images-idx3-ubyte" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no runs/, no events

"""Write the LightningCLI configs of the noisy-label experiments (Harutyunyan et al., ICML 2020).

The grid of the paper (Tables 1-3) is regular, so the YAML files in ``configs/classifier`` and
``configs/limit`` are generated here from one description; edit this script and rerun it
(``python scripts/make_configs.py``) rather than editing dozens of files by hand. A test checks
that the committed files equal what this script writes.

Run folders: ``runs/<method>/<experiment>/version_<N>/`` (one per run, never overwritten:
TensorBoard logs, ``config.yaml``, ``checkpoints/best.ckpt`` on the best validation accuracy,
``checkpoints/last.ckpt`` for resuming); ``--trainer.default_root_dir DIR`` replaces ``runs``.
Methods that start from a cross-entropy model (FW, DMI, LIMIT+init) read the newest
``runs/classifier/<experiment>_ce/version_*/checkpoints/best.ckpt``: train the CE config first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

# dataset -> (network, noise grid as (noise_type, level) pairs, epochs)
GRID: dict[str, tuple[str, list[tuple[str, float]], int]] = {
    "mnist": ("mnist_cnn", [("uniform", p) for p in (0.0, 0.5, 0.8, 0.89)], 400),
    "cifar10": (
        "resnet34",
        [("uniform", p) for p in (0.2, 0.4, 0.6, 0.8)]
        + [("pair", p) for p in (0.0, 0.1, 0.2, 0.3, 0.4)],
        400,
    ),
    "cifar100": ("resnet34", [("uniform", 0.4)], 400),
    # 8,000 train (incl. validation) / 2,000 test carved from the official MNIST test set, for
    # machines that only have the test set (e.g. the shared test data of this project)
    "mnist8k": ("mnist_cnn", [("uniform", 0.8)], 400),
}
# extra datamodule arguments per dataset name used in GRID
DATA_EXTRA: dict[str, dict[str, Any]] = {
    "mnist8k": {"dataset": "mnist", "train_from_test_set": 2000},
}

# LIMIT's beta (weight of mean ||g_hat||^2) per dataset and q distribution; the paper tunes it
# on validation data from {0, 0.1, 0.3, 1, 3, 10, 30, 100}. MNIST values from 30-epoch runs on
# 8k real MNIST images, 80% noise (README): LIMIT_L beta 10 -> 0.90 test acc, no memorization;
# LIMIT_G beta 10 memorizes (0.51), 30 -> 0.77 (slowly memorizing), 100 -> 0.75 (still rising,
# noisy-train acc falling). CIFAR values are untuned starting points.
LIMIT_BETA: dict[str, dict[str, float]] = {
    "mnist": {"gaussian": 100.0, "laplace": 10.0},
    "mnist8k": {"gaussian": 100.0, "laplace": 10.0},
    "cifar10": {"gaussian": 0.1, "laplace": 0.1},
    "cifar100": {"gaussian": 0.1, "laplace": 0.1},
}


def experiment_name(dataset: str, noise_type: str, level: float) -> str:
    """``<dataset>_<noise><level>``, e.g. ``mnist_uniform0.8``."""
    return f"{dataset}_{noise_type}{level:g}"


def trainer_section(method: str, name: str, epochs: int, monitor_memorization: bool) -> dict:
    """Trainer with TensorBoard logging, best/last checkpoints and the memorization monitor."""
    callbacks: list[dict[str, Any]] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "filename": "best",
                "monitor": "val/acc",
                "mode": "max",
                "enable_version_counter": False,
            },
        },
        # the newest state after every epoch, for --ckpt_path last (Lightning >= 2.6 refreshes
        # the monitored callback's save_last copy only when the monitor improves)
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"filename": "last", "enable_version_counter": False},
        },
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
    ]
    if monitor_memorization:
        callbacks.append({"class_path": "lit_info.callbacks.MemorizationMonitor"})
    return {
        "max_epochs": epochs,
        "accelerator": "auto",
        "devices": "auto",
        "logger": {
            "class_path": "lit_info.loggers.TensorBoardLogger",
            "init_args": {"name": f"{method}/{name}"},
        },
        "callbacks": callbacks,
    }


def data_section(dataset: str, noise_type: str, level: float) -> dict:
    """The noisy-label datamodule; ``data_dir`` defaults to ``$LIT_INFO_DATA`` or ``./data``."""
    args: dict[str, Any] = {
        "dataset": dataset,
        "noise_type": noise_type if level > 0 else None,
        "noise_level": level,
        "batch_size": 256,
        "val_size": 0.1,
    }
    if dataset.startswith("cifar"):
        args["num_workers"] = 4
    args.update(DATA_EXTRA.get(dataset, {}))
    return {"class_path": "lit_info.data.NoisyImageDataModule", "init_args": args}


def classifier_variants(net: str, ce_ckpt: str) -> dict[str, dict]:
    """The baselines: name suffix -> model init_args."""
    base = {"net": net, "lr": 1e-3}
    return {
        "ce": {**base, "loss": "ce"},
        "mae": {**base, "loss": "mae"},
        "mse": {**base, "loss": "mse"},
        "gce": {**base, "loss": "gce", "gce_q": 0.7},
        "fw": {**base, "loss": "fw", "transition_from": ce_ckpt},
        "dmi": {**base, "loss": "dmi", "lr": 1e-5, "init_from": ce_ckpt},
        "ce_gaussian_grad": {
            **base,
            "loss": "ce",
            "grad_noise": "gaussian",
            "grad_noise_scale": 0.1,
        },
        "ce_laplace_grad": {**base, "loss": "ce", "grad_noise": "laplace", "grad_noise_scale": 0.1},
    }


def limit_variants(dataset: str, net: str, ce_ckpt: str) -> dict[str, dict]:
    """LIMIT_G / LIMIT_L, and the "+init" variants where q starts from the CE model."""
    base = {"net": net, "lr": 1e-3}
    betas = LIMIT_BETA[dataset]
    variants = {
        "g": {**base, "beta": betas["gaussian"], "q_dist": "gaussian"},
        "l": {**base, "beta": betas["laplace"], "q_dist": "laplace"},
    }
    if dataset.startswith("cifar"):
        variants["g_init"] = {**variants["g"], "q_init_from": ce_ckpt}
        variants["l_init"] = {**variants["l"], "q_init_from": ce_ckpt}
    return variants


def header(title: str, method: str, name: str) -> str:
    """Comment block at the top of each generated config."""
    run = f"runs/{method}/{name}"
    return (
        f"# {title}\n"
        "# Generated by scripts/make_configs.py; edit that script, not this file.\n"
        f"# Train:  python -m lit_info fit --config configs/{method}/{name}.yaml\n"
        f"#         -> a new run folder {run}/version_<N>/ (config, events, checkpoints/)\n"
        f"# Resume: python -m lit_info fit --config configs/{method}/{name}.yaml "
        "--ckpt_path last\n"
        f"# Test:   python -m lit_info test --config configs/{method}/{name}.yaml "
        "--ckpt_path best\n"
        f"#         (the newest run's best.ckpt; results in {run}/version_<N>/test_best/)\n"
        "# Data:   --data.data_dir /path/to/datasets (or env LIT_INFO_DATA); --data.download "
        "true to fetch.\n"
    )


def build_configs() -> dict[Path, str]:
    """All generated configs: path relative to the repository -> YAML text."""
    out: dict[Path, str] = {}
    for dataset, (net, noise_grid, epochs) in GRID.items():
        for noise_type, level in noise_grid:
            exp = experiment_name(dataset, noise_type, level)
            ce_ckpt = f"runs/classifier/{exp}_ce/version_*/checkpoints/best.ckpt"
            for method, variants in (
                ("classifier", classifier_variants(net, ce_ckpt)),
                ("limit", limit_variants(dataset, net, ce_ckpt)),
            ):
                for suffix, model_args in variants.items():
                    name = f"{exp}_{suffix}"
                    class_path = (
                        "lit_info.methods.Classifier"
                        if method == "classifier"
                        else "lit_info.methods.LIMIT"
                    )
                    config = {
                        "seed_everything": 42,
                        "trainer": trainer_section(method, name, epochs, monitor_memorization=True),
                        "model": {"class_path": class_path, "init_args": model_args},
                        "data": data_section(dataset, noise_type, level),
                    }
                    title = f"{method} ({suffix}) on {dataset}, {noise_type} label noise {level:g}"
                    text = header(title, method, name) + yaml.safe_dump(config, sort_keys=False)
                    out[Path("configs") / method / f"{name}.yaml"] = text
    return out


def main() -> None:
    """Write (or with ``--check``, compare) the generated configs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any file is stale")
    args = parser.parse_args()
    stale = []
    for rel, text in build_configs().items():
        path = ROOT / rel
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(rel))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        raise SystemExit(f"stale configs (run python scripts/make_configs.py): {stale}")


if __name__ == "__main__":
    main()

"""MinSyn vs PCA / FastICA / independence / beta-VAE on word images: disentanglement scores.

For each data source (``font``: glyphs of the embedded default font; ``mnist``: digits from
the shared MNIST test images) and seed, trains every ``configs/minsyn/<source>_*.yaml`` model
in-process (the config's model, data and ``max_epochs``; the seed replaces ``seed_everything``
and the data's ``seed``, so images and initializations change, the split of combinations
does not), fits scikit-learn's PCA and FastICA with the same number of factors on the same
training images, and scores every representation on the held-out combinations (non-words for
letters) with :func:`lit_info.info.disentanglement.disentanglement_scores`: MIG, linear-probe
accuracy per position (probe fitted on the training words), tile locality of the components.
Prints one table of means and standard deviations over the seeds.

    python benchmarks/minsyn_words.py --seeds 0 1 2 --sources font mnist
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("LIT_INFO_DATASETS", ROOT.parent / "shared" / "datasets"))
METHODS = [
    "minsyn_linear",
    "independence_linear",
    "pca",
    "fastica",
    "minsyn_mlp",
    "independence_mlp",
    "betavae",
]


def _class(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _config(source: str, method: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / "configs" / "minsyn" / f"{source}_{method}.yaml").read_text())


def _datamodule(source: str, seed: int):
    cfg = _config(source, "minsyn_linear")["data"]
    args = dict(cfg["init_args"], seed=seed)
    if source == "mnist":
        args["data_dir"] = str(DATASETS)
    dm = _class(cfg["class_path"])(**args)
    dm.setup("fit")
    return dm


def _train(source: str, method: str, dm, seed: int, threads: int):
    import lightning.pytorch as pl
    import torch

    torch.set_num_threads(threads)
    cfg = _config(source, method)
    pl.seed_everything(seed, verbose=False)
    model = _class(cfg["model"]["class_path"])(
        input_shape=dm.input_shape, **cfg["model"]["init_args"]
    )
    dm.batch_size = cfg["data"]["init_args"]["batch_size"]
    trainer = pl.Trainer(
        max_epochs=cfg["trainer"]["max_epochs"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(model, dm)
    model.eval()
    with torch.no_grad():
        train = model.encode(dm.train_set.images).double().numpy()
        test = model.encode(dm.test_set.images).double().numpy()
    return train, test


def _sklearn(method: str, dm, seed: int, n_factors: int):
    from sklearn.decomposition import PCA, FastICA

    x_train, _ = dm.arrays("train")
    x_test, _ = dm.arrays("test")
    if method == "pca":
        model = PCA(n_factors, random_state=seed)
    else:
        model = FastICA(n_factors, whiten="unit-variance", max_iter=2000, random_state=seed)
    model.fit(x_train)
    return model.transform(x_train), model.transform(x_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sources", nargs="+", default=["font", "mnist"])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from lit_info.callbacks.disentanglement import factor_pixel_correlation
    from lit_info.info.disentanglement import disentanglement_scores

    n_factors = _config("font", "minsyn_linear")["model"]["init_args"]["n_factors"]
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    for source in args.sources:
        for seed in args.seeds:
            dm = _datamodule(source, seed)
            if seed == args.seeds[0]:
                sizes = [len(a) for a in dm.alphabets]
                print(
                    f"# {source}: alphabets {dm.alphabets} (probe chance {1 / sizes[0]:.3f}); "
                    f"{len(dm.train_set)} train / {len(dm.test_set)} test images, "
                    f"{len(dm.train_words)} / {len(dm.test_words)} combinations",
                    flush=True,
                )
            _, y_train = dm.arrays("train")
            _, y_test = dm.arrays("test")
            for method in args.methods:
                start = time.perf_counter()
                if method in ("pca", "fastica"):
                    f_train, f_test = _sklearn(method, dm, seed, n_factors)
                else:
                    f_train, f_test = _train(source, method, dm, seed, args.threads)
                seconds = time.perf_counter() - start
                components = factor_pixel_correlation(
                    torch.from_numpy(np.ascontiguousarray(f_train)), dm.train_set.images
                ).numpy()
                scores = disentanglement_scores(
                    f_train, y_train, f_test, y_test, components=components
                )
                summary = scores.summary()
                summary["seconds"] = seconds
                rows.setdefault((source, method), []).append(summary)
                print(
                    f"# {source} seed {seed} {method}: mig {summary['mig']:.3f} probe "
                    f"{summary['probe']:.3f} locality {summary['locality']:.3f} "
                    f"({seconds:.1f} s)",
                    flush=True,
                )
    print()
    print(
        f"{len(args.seeds)} seeds {args.seeds}; {n_factors} factors; held-out combinations; "
        "mean +- std over seeds"
    )
    print(
        "| data | method | MIG | probe accuracy (mean of positions) | per position | locality |"
        " fit s |"
    )
    print("|---|---|---|---|---|---|---|")
    for (source, method), results in rows.items():

        def stat(key: str, results: list[dict[str, float]] = results) -> str:
            values = np.array([r[key] for r in results])
            return f"{values.mean():.3f} +- {values.std():.3f}"

        positions = sorted(k for k in results[0] if k.startswith("probe_"))
        per = " / ".join(f"{np.mean([r[k] for r in results]):.2f}" for k in positions)
        seconds = np.mean([r["seconds"] for r in results])
        print(
            f"| {source} | {method} | {stat('mig')} | {stat('probe')} | {per} | "
            f"{stat('locality')} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()

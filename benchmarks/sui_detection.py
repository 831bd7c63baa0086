"""Mislabeled-example detection: F-SI variants against cleanlab, AUC-ROC under label noise.

Setting: real MNIST test images of 4s and 9s (``--n`` training, ``--val`` clean validation for
F-SI), a fraction ``--noise`` of the training labels flipped (uniform noise on two classes), the
MLP 784 -> ``--hidden`` -> 1 (MSE toward +-1, full-batch GD, lr ``--lr``, ``--steps`` steps, L2
``--lam`` toward the initialization), as in the ground-truth benchmark. Every method gives each
training sample a score; the AUC-ROC measures how well it ranks the flipped samples above the
clean ones (0.5 = chance, 1 = perfect) and ``prec@m`` is the fraction of flipped samples among
the ``m`` highest scores, ``m`` = the number flipped. Averaged over ``--seeds`` draws of data,
noise and initialization (mean and standard deviation).

Methods (``score``; what it costs):

* ``F-SI init`` / ``SI init``: the network linearized at its initialization and trained for
  ``t = --steps`` steps in closed form (the paper's setting); no training at all.
* ``F-SI trained`` / ``SI trained``: linearized at the weights after the real training (the
  trained network's NTK) and trained ``t`` more steps from there; needs the trained network.
* ``confidence``: ``1 - p(given label)`` of the trained network on its own training samples
  (in-sample; ``p = sigmoid(f)``, the output read as a logit difference).
* ``F-SI init + conf.`` / ``F-SI trained + conf.``: the mean of the normalized ranks of F-SI
  and of ``confidence`` (``SampleInformation(detection_score="fsi_confidence")``).
* ``LOO conf. init``: minus the margin ``y_i f_{-i}(x_i)`` of the given label under the
  network linearized at its initialization and trained *without* the sample (its exact
  leave-one-out prediction, from the same eigendecomposition and solutions as F-SI; ranks as
  ``1 - p(given label)``): an out-of-sample confidence without cross-validation or training
  (``SampleInformation(detection_score="loo_margin")``).
* ``cleanlab + MLP`` / ``cleanlab + LogReg``: cleanlab's confident learning on ``--folds``-fold
  cross-validated probabilities (stratified folds, the same for both) of the same MLP trained
  the same way on each fold's training part (from the same initialization), or of
  scikit-learn's ``LogisticRegression`` (default ``C = 1``); the score is ``1 -``
  ``cleanlab.rank.get_label_quality_scores`` (self-confidence), and ``cleanlab.filter.
  find_label_issues`` gives the flagged set (its precision and recall are printed).

Times are wall-clock seconds per seed of everything a method needs (the trained network's
training included; ``F-SI trained + conf.`` shares that training). cleanlab is a benchmark-only
dependency (``pip install -e ".[bench]"``); without it the cleanlab rows are skipped
(``--baselines`` selects them). Script-readable lines::

    auc F-SI mislabeled: 0.984 (+-0.000 over 3 seeds)
    auc cleanlab + MLP mislabeled: 0.993 (+-0.002 over 3 seeds)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sui_common import add_setting_arguments, mlp, mnist_4v9, parse_settings
from torch import Tensor, nn

from lit_info.info import (
    eigh_kernel,
    functional_si,
    leave_one_out_differences,
    structured_ntk_pair,
    weight_si,
)

BASELINES = ("mlp", "logreg")
T = TypeVar("T")


def sui_scores(
    model: nn.Module, x: Tensor, y: Tensor, xv: Tensor, args: argparse.Namespace
) -> dict[str, Tensor]:
    """SI, F-SI and the leave-one-out margin of every sample, linearized at ``model``'s weights.

    The linearized network (GD, ``args.lr``, ``args.steps`` steps, ``args.lam``) trained with and
    without each sample ``i``: ``si``/``fsi`` as in :func:`lit_info.info.smooth_unique_information`
    and ``loo_margin[i] = -y_i f_{-i}(x_i)``, minus the margin of the sample's given label under
    the model trained without it (``f_{-i}(x_i) = f_t(x_i) - (Theta delta_i)_i``).
    """
    theta, theta_v = structured_ntk_pair(model, x, xv)
    with torch.no_grad():
        f0 = model(x)
    eig = eigh_kernel(theta)
    beta, delta = leave_one_out_differences(
        theta, f0 - y, eta=args.lr, t=args.steps, lam=args.lam, mode="discrete", eig=eig
    )
    f_t = f0[:, 0].double() + theta @ beta
    f_loo = f_t - (theta * delta).sum(dim=1)  # theta is symmetric: (Theta delta_i)_i
    return {
        "si": weight_si(theta, delta, args.sigma2),
        "fsi": functional_si(theta_v, delta, args.sigma2),
        "loo_margin": -y[:, 0].double() * f_loo,
    }


def train_gd(model: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace) -> nn.Module:
    """Train ``model`` in place: ``args.steps`` full-batch GD steps on ``1/(2m) ||f - y||^2``
    plus ``args.lam / 2 ||w - w0||^2`` (the convention of :mod:`lit_info.info.linearized`)."""
    start = [p.detach().clone() for p in model.parameters()]
    for _ in range(args.steps):
        model.zero_grad(set_to_none=True)
        loss = 0.5 * (model(x) - y).pow(2).mean()
        if args.lam:
            loss = loss + 0.5 * args.lam * sum(
                (p - p0).pow(2).sum() for p, p0 in zip(model.parameters(), start, strict=True)
            )
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(args.lr * p.grad)
    return model


def rank_mean(*scores: np.ndarray) -> np.ndarray:
    """The mean of the normalized ranks (in ``(0, 1]``, ties averaged) of several scores."""
    return np.mean([rankdata(s) / len(s) for s in scores], axis=0)


def precision_at(corrupted: np.ndarray, score: np.ndarray) -> float:
    """Fraction of corrupted samples among the ``corrupted.sum()`` highest scores."""
    m = int(corrupted.sum())
    return float(corrupted[np.argsort(-score, kind="stable")[:m]].mean())


def cleanlab_scores(given: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's issue score ``1 - label quality`` (self-confidence) and its flagged mask."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(given, pred_probs, method="self_confidence")
    return 1.0 - quality, find_label_issues(given, pred_probs)


def cv_mlp_probs(
    x: Tensor,
    y: Tensor,
    folds: list[tuple[np.ndarray, np.ndarray]],
    args: argparse.Namespace,
    seed: int,
    device: torch.device,
) -> np.ndarray:
    """Out-of-fold ``(n, 2)`` probabilities of the benchmark's MLP (``p(9) = sigmoid(f)``)."""
    logit = torch.zeros(x.shape[0], dtype=torch.float64)
    for train_idx, test_idx in folds:
        tr, te = torch.from_numpy(train_idx).to(device), torch.from_numpy(test_idx).to(device)
        model = train_gd(mlp(args.hidden, seed=seed).to(device), x[tr], y[tr], args)
        with torch.no_grad():
            logit[torch.from_numpy(test_idx)] = model(x[te])[:, 0].double().cpu()
    p9 = torch.sigmoid(logit).numpy()
    return np.stack([1.0 - p9, p9], axis=1)


def cv_logreg_probs(
    x: np.ndarray, given: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Out-of-fold ``(n, 2)`` probabilities of scikit-learn's logistic regression."""
    probs = np.zeros((len(given), 2))
    for train_idx, test_idx in folds:
        clf = LogisticRegression(max_iter=5000).fit(x[train_idx], given[train_idx])
        probs[test_idx] = clf.predict_proba(x[test_idx])
    return probs


def _timed(fn: Callable[..., T], *args: object) -> tuple[T, float]:
    """``fn(*args)`` and its wall-clock seconds."""
    began = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - began


def main() -> None:
    """Run the detection benchmark and print the table of AUCs and times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (cleanlab)")
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=list(BASELINES),
        choices=BASELINES,
        help="cleanlab rows: cross-validated MLP and/or logistic regression (none: SUI only)",
    )
    add_setting_arguments(parser, hidden=1024, steps=2000)
    args, device = parse_settings(parser)
    baselines = list(args.baselines)
    if baselines:
        try:
            import cleanlab
        except ImportError:
            print('cleanlab not installed (pip install -e ".[bench]"): cleanlab rows skipped')
            baselines = []
        else:
            print(f"cleanlab {cleanlab.__version__}, {args.folds}-fold stratified CV")
    print(
        f"MNIST 4 vs 9: n={args.n}, {args.noise:.0%} labels flipped, MLP 784-{args.hidden}-1, "
        f"GD lr={args.lr} steps={args.steps} lam={args.lam}, {torch.get_num_threads()} threads"
    )
    aucs: dict[str, list[float]] = {}
    precs: dict[str, list[float]] = {}
    secs: dict[str, list[float]] = {}
    flagged: dict[str, list[tuple[int, float, float]]] = {}
    for seed in range(args.seeds):
        x, y, xv, _ = mnist_4v9(args.n, args.val, seed=seed)
        gen = torch.Generator().manual_seed(1000 + seed)
        flipped = torch.randperm(args.n, generator=gen)[: round(args.noise * args.n)]
        corrupted = torch.zeros(args.n, dtype=torch.bool)
        corrupted[flipped] = True
        y_noisy = torch.where(corrupted[:, None], -y, y)
        given = (y_noisy[:, 0] > 0).long().numpy()
        x, y_noisy, xv = x.to(device), y_noisy.to(device), xv.to(device)
        model = mlp(args.hidden, seed=seed).to(device)
        scores: dict[str, np.ndarray] = {}
        times: dict[str, float] = {}

        init, t_init = _timed(sui_scores, model, x, y_noisy, xv, args)
        _, t_train = _timed(train_gd, model, x, y_noisy, args)
        trained, t_sui_trained = _timed(sui_scores, model, x, y_noisy, xv, args)
        with torch.no_grad():
            margin = (-y_noisy[:, 0] * model(x)[:, 0]).double().cpu()
        confidence = torch.sigmoid(margin).numpy()  # 1 - p(given label)
        fsi_init, fsi_trained = init["fsi"].cpu().numpy(), trained["fsi"].cpu().numpy()
        scores["F-SI init"], times["F-SI init"] = fsi_init, t_init
        scores["SI init"], times["SI init"] = init["si"].cpu().numpy(), t_init
        scores["LOO conf. init"] = init["loo_margin"].cpu().numpy()
        times["LOO conf. init"] = t_init
        scores["F-SI trained"], times["F-SI trained"] = fsi_trained, t_train + t_sui_trained
        scores["SI trained"] = trained["si"].cpu().numpy()
        times["SI trained"] = t_train + t_sui_trained
        scores["confidence"], times["confidence"] = confidence, t_train
        scores["F-SI init + conf."] = rank_mean(fsi_init, confidence)
        times["F-SI init + conf."] = t_init + t_train
        scores["F-SI trained + conf."] = rank_mean(fsi_trained, confidence)
        times["F-SI trained + conf."] = t_train + t_sui_trained

        skf = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=seed)
        folds = list(skf.split(np.zeros(args.n), given))
        probs: dict[str, tuple[np.ndarray, float]] = {}
        if "mlp" in baselines:
            p, t = _timed(cv_mlp_probs, x, y_noisy, folds, args, seed, device)
            probs["cleanlab + MLP"] = (p, t)
        if "logreg" in baselines:
            p, t = _timed(cv_logreg_probs, x.cpu().numpy(), given, folds)
            probs["cleanlab + LogReg"] = (p, t)
        for name, (p, t_cv) in probs.items():
            (score, issues), t_cl = _timed(cleanlab_scores, given, p)
            scores[name], times[name] = score, t_cv + t_cl
            hits = corrupted.numpy()[issues]
            flagged.setdefault(name, []).append(
                (
                    int(issues.sum()),
                    float(hits.mean()) if len(hits) else 0.0,
                    float(hits.sum() / corrupted.sum()),
                )
            )

        line = []
        for name, score in scores.items():
            auc = roc_auc_score(corrupted.numpy(), score)
            aucs.setdefault(name, []).append(auc)
            precs.setdefault(name, []).append(precision_at(corrupted.numpy(), score))
            secs.setdefault(name, []).append(times[name])
            line.append(f"{name} {auc:.4f}")
        print(
            f"seed {seed}: SUI init {t_init:.1f} s, training {t_train:.1f} s, SUI trained "
            f"{t_sui_trained:.1f} s"
            + "".join(f", {name} {t:.1f} s" for name, (_, t) in probs.items()),
            flush=True,
        )
        print(f"  AUC {', '.join(line)}", flush=True)

    def stats(values: list[float], digits: int) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.{digits}f} +- {spread:.{digits}f}"

    print(f"\nmean +- std over {args.seeds} seeds (time: seconds per seed)")
    print(f"| {'method':22s} | {'AUC-ROC':17s} | {'prec@m':15s} | {'time (s)':15s} |")
    print(f"|{'-' * 24}|{'-' * 19}|{'-' * 17}|{'-' * 17}|")
    for name in aucs:
        print(
            f"| {name:22s} | {stats(aucs[name], 4):17s} | {stats(precs[name], 3):15s} "
            f"| {stats(secs[name], 2):15s} |"
        )
    for name, rows in flagged.items():
        count, prec, rec = (statistics.fmean(r[i] for r in rows) for i in range(3))
        print(
            f"{name}: find_label_issues flags {count:.0f} samples, precision {prec:.3f}, "
            f"recall {rec:.3f} (mean over seeds)"
        )
    for name, values in aucs.items():
        label = "F-SI" if name == "F-SI init" else "SI" if name == "SI init" else name
        spread = (max(values) - min(values)) / 2
        print(
            f"auc {label} mislabeled: {statistics.fmean(values):.3f} (+-{spread:.3f} over "
            f"{len(values)} seeds)"
        )


if __name__ == "__main__":
    main()

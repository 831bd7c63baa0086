"""Sample estimators of information and the disentanglement scores of learned factors.

Used to evaluate representations of word images (MinSyn, arXiv 1710.03839): ``factors`` are
``(n, m)`` learned codes, ``labels`` ``(n, k)`` the character (an integer class) at each of
``k`` positions. In nats, on numpy arrays (scikit-learn does the k-NN work).

Estimators:

* :func:`gaussian_information`: the Gaussian plug-in ``-1/2 log(1 - corr^2)`` between every
  pair of columns (exact for jointly Gaussian data, a lower bound on the information of any
  pair with that correlation);
* :func:`knn_information`: Kraskov et al.'s k-NN estimate for continuous pairs, scikit-learn's
  ``mutual_info_regression``;
* :func:`factor_label_information`: ``I(factor_j; position_k)`` with the k-NN estimator for a
  continuous variable and a discrete one (Ross 2014), scikit-learn's ``mutual_info_classif``.

Scores (all computed from the information matrix ``I`` (``m x k``) on held-out samples):

* :func:`mutual_information_gap` (MIG, Chen et al. 2018): per position, the gap between the
  largest and second largest ``I(factor; position)`` divided by ``H(position)``;
* :func:`factor_groups`: each factor assigned to the position it informs most about;
* :func:`probe_accuracy`: per position, a multinomial logistic regression fitted on the
  training samples' factors of that position's group (the single most informative factor when
  the group is empty) and scored on the held-out samples: disentangled factors let a probe
  trained on real words read the characters of non-words;
* :func:`tile_locality`: for components drawn as images (``m x H x W``, e.g. the correlation
  of each factor with each pixel), the share of each component's squared mass inside its
  heaviest character tile: 1 when a factor looks at one character only, ``1 / k`` when spread
  evenly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.feature_selection import mutual_info_classif, mutual_info_regression
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

__all__ = [
    "DisentanglementScores",
    "discrete_entropy",
    "disentanglement_scores",
    "factor_groups",
    "factor_label_information",
    "gaussian_information",
    "knn_information",
    "mutual_information_gap",
    "probe_accuracy",
    "tile_locality",
]


def _check_2d(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (samples x columns), got shape {a.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"{name} has {a.shape[0]} sample(s); at least 2 are needed")
    return a


def _per_target(
    estimator: Callable[..., np.ndarray],
    features: np.ndarray,
    targets: np.ndarray,
    n_neighbors: int,
    random_state: int,
) -> np.ndarray:
    """``estimator(features, target_k)`` for every column of ``targets``: ``(d, k)``."""
    return np.stack(
        [
            estimator(features, column, n_neighbors=n_neighbors, random_state=random_state)
            for column in targets.T
        ],
        axis=1,
    )


def discrete_entropy(labels: np.ndarray) -> np.ndarray:
    """Plug-in entropy (nats) of every column of integer ``labels`` (``n x k``)."""
    labels = _check_2d("labels", labels)
    out = np.empty(labels.shape[1])
    for k in range(labels.shape[1]):
        _, counts = np.unique(labels[:, k], return_counts=True)
        prob = counts / counts.sum()
        out[k] = -(prob * np.log(prob)).sum()
    return out


def gaussian_information(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Gaussian plug-in ``I(a_i; b_j) = -1/2 log(1 - corr(a_i, b_j)^2)`` (``d_a x d_b``).

    Constant columns have no correlation (0 nats).
    """
    a = _check_2d("a", a).astype(np.float64)
    b = _check_2d("b", b).astype(np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a has {a.shape[0]} samples but b has {b.shape[0]}")

    def unit(z: np.ndarray) -> np.ndarray:
        z = z - z.mean(0)
        norm = np.sqrt((z * z).sum(0))
        return z / np.where(norm > 0, norm, 1.0)

    corr = np.clip(unit(a).T @ unit(b), -1.0, 1.0)
    with np.errstate(divide="ignore"):
        return -0.5 * np.log1p(-(corr**2))


def knn_information(
    a: np.ndarray, b: np.ndarray, n_neighbors: int = 3, random_state: int = 0
) -> np.ndarray:
    """k-NN (Kraskov) estimate of ``I(a_i; b_j)`` for continuous columns (``d_a x d_b``)."""
    a = _check_2d("a", a).astype(np.float64)
    b = _check_2d("b", b).astype(np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a has {a.shape[0]} samples but b has {b.shape[0]}")
    return _per_target(mutual_info_regression, a, b, n_neighbors, random_state)


def factor_label_information(
    factors: np.ndarray, labels: np.ndarray, n_neighbors: int = 3, random_state: int = 0
) -> np.ndarray:
    """k-NN estimate of ``I(factor_j; position_k)`` (``m x k``), continuous vs discrete."""
    factors = _check_2d("factors", factors).astype(np.float64)
    labels = _check_2d("labels", labels)
    if factors.shape[0] != labels.shape[0]:
        raise ValueError(f"factors have {factors.shape[0]} samples but labels {labels.shape[0]}")
    return _per_target(mutual_info_classif, factors, labels, n_neighbors, random_state)


def mutual_information_gap(information: np.ndarray, entropies: np.ndarray) -> np.ndarray:
    """Per position ``(I_(1) - I_(2)) / H``: the gap of the two most informative factors (``k``).

    With a single factor the gap is ``I_(1) / H``.
    """
    information = np.asarray(information, dtype=np.float64)
    ranked = -np.sort(-information, axis=0)
    second = ranked[1] if ranked.shape[0] > 1 else np.zeros(ranked.shape[1])
    return (ranked[0] - second) / np.asarray(entropies, dtype=np.float64)


def factor_groups(information: np.ndarray) -> np.ndarray:
    """The position each factor informs most about (``m``)."""
    return np.asarray(information).argmax(1)


def probe_accuracy(
    train_factors: np.ndarray,
    train_labels: np.ndarray,
    test_factors: np.ndarray,
    test_labels: np.ndarray,
    information: np.ndarray,
    max_iter: int = 2000,
) -> np.ndarray:
    """Held-out accuracy per position of a linear probe on that position's factor group (``k``).

    Args:
        train_factors, train_labels: the samples the probe is fitted on.
        test_factors, test_labels: the samples it is scored on.
        information: ``(m, k)`` factor-position information deciding the groups.
        max_iter: iterations of the L-BFGS logistic regression.
    """
    groups = factor_groups(information)
    out = np.empty(train_labels.shape[1])
    for k in range(train_labels.shape[1]):
        columns = np.flatnonzero(groups == k)
        if columns.size == 0:
            columns = np.array([int(np.argmax(information[:, k]))])
        if np.unique(train_labels[:, k]).size < 2:  # nothing to learn: predict the one class
            out[k] = float(np.mean(test_labels[:, k] == train_labels[0, k]))
            continue
        scaler = StandardScaler().fit(train_factors[:, columns])
        probe = LogisticRegression(max_iter=max_iter)
        probe.fit(scaler.transform(train_factors[:, columns]), train_labels[:, k])
        predicted = probe.predict(scaler.transform(test_factors[:, columns]))
        out[k] = float(np.mean(predicted == test_labels[:, k]))
    return out


def tile_locality(components: np.ndarray, n_tiles: int) -> tuple[np.ndarray, np.ndarray]:
    """Share of each component's squared mass in its heaviest tile, and that tile.

    Args:
        components: ``(m, H, W)`` images; the width is cut into ``n_tiles`` equal tiles.
        n_tiles: number of characters side by side.

    Returns:
        ``(share (m,), tile (m,))``; a component of zeros has share ``1 / n_tiles``.
    """
    components = np.asarray(components, dtype=np.float64)
    m, _, width = components.shape
    if n_tiles < 1 or width % n_tiles:
        raise ValueError(f"width {width} cannot be cut into n_tiles={n_tiles} equal tiles")
    tiles = components.reshape(m, components.shape[1], n_tiles, width // n_tiles)
    mass = (tiles**2).sum(axis=(1, 3))  # (m, n_tiles)
    total = mass.sum(1)
    share = np.where(total > 0, mass.max(1) / np.where(total > 0, total, 1.0), 1.0 / n_tiles)
    return share, mass.argmax(1)


@dataclass(frozen=True)
class DisentanglementScores:
    """What :func:`disentanglement_scores` measures on the held-out samples.

    Attributes:
        information: ``(m, k)`` k-NN ``I(factor; position)`` in nats.
        normalized: ``information / H(position)``.
        mig: ``(k,)`` mutual information gap per position.
        probe: ``(k,)`` held-out linear-probe accuracy per position.
        locality: ``(m,)`` tile locality of the components (``None`` without components).
    """

    information: np.ndarray
    normalized: np.ndarray
    mig: np.ndarray
    probe: np.ndarray
    locality: np.ndarray | None

    def summary(self) -> dict[str, float]:
        """Means over positions (and factors, for locality): ``mig``, ``probe``, ``locality``."""
        out = {"mig": float(self.mig.mean()), "probe": float(self.probe.mean())}
        if self.locality is not None:
            out["locality"] = float(self.locality.mean())
        for k, (gap, acc) in enumerate(zip(self.mig, self.probe, strict=True)):
            out[f"mig_{k}"] = float(gap)
            out[f"probe_{k}"] = float(acc)
        return out


def disentanglement_scores(
    train_factors: np.ndarray,
    train_labels: np.ndarray,
    test_factors: np.ndarray,
    test_labels: np.ndarray,
    components: np.ndarray | None = None,
    n_neighbors: int = 3,
    random_state: int = 0,
) -> DisentanglementScores:
    """Information matrix, MIG, probe accuracy and locality of factors on held-out samples.

    The information matrix and MIG are estimated on the test samples; the probe is fitted on
    the training samples and scored on the test samples (see the module docstring).
    """
    train_factors = _check_2d("train_factors", train_factors)
    test_factors = _check_2d("test_factors", test_factors)
    if train_factors.shape[1] != test_factors.shape[1]:
        raise ValueError(
            f"train_factors have {train_factors.shape[1]} factors, test_factors "
            f"{test_factors.shape[1]}"
        )
    information = factor_label_information(test_factors, test_labels, n_neighbors, random_state)
    entropies = discrete_entropy(test_labels)
    normalized = information / entropies[None, :]
    mig = mutual_information_gap(information, entropies)
    probe = probe_accuracy(train_factors, train_labels, test_factors, test_labels, information)
    locality = None
    if components is not None:
        locality, _ = tile_locality(components, test_labels.shape[1])
    return DisentanglementScores(information, normalized, mig, probe, locality)

import math

import numpy as np
import pytest
from scipy import stats

from lit_info.data.label_noise import (
    CIFAR10_PAIR_MAP,
    PAIR_MAPS,
    apply_label_noise,
    pair_label_noise,
    uniform_label_noise,
)

N = 100_000


def _balanced_labels(n: int, k: int, seed: int = 123) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, size=n)


def _binomial_ok(count: int, n: int, p: float, z: float = 5.0) -> bool:
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("p", [0.1, 0.4, 0.8])
def test_uniform_corruption_rate_matches_p(p):
    # A corrupted label is never the original, so P(noisy != clean) must be exactly p
    # (a buggy "draw any class" would give p * (k-1)/k = 0.9 p, far outside the tolerance).
    labels = _balanced_labels(N, 10)
    noisy = uniform_label_noise(labels, 10, p, seed=0)
    assert _binomial_ok(int((noisy != labels).sum()), N, p)


def test_uniform_corrupted_labels_are_uniform_over_other_classes():
    k, p = 10, 0.5
    labels = _balanced_labels(N, k)
    noisy = uniform_label_noise(labels, k, p, seed=1)
    for c in range(k):
        corrupted = noisy[(labels == c) & (noisy != labels)]
        counts = np.bincount(corrupted, minlength=k)
        assert counts[c] == 0
        others = np.delete(counts, c)
        # chi-square goodness of fit against the uniform distribution on the k-1 other classes
        assert stats.chisquare(others).pvalue > 1e-4
    # full transition matrix against the closed form: 1-p on the diagonal, p/(k-1) elsewhere
    T = np.zeros((k, k))
    np.add.at(T, (labels, noisy), 1)
    T /= T.sum(1, keepdims=True)
    expected = np.full((k, k), p / (k - 1))
    np.fill_diagonal(expected, 1 - p)
    np.testing.assert_allclose(T, expected, atol=0.02)


def test_uniform_two_classes_always_flips_to_the_other():
    labels = _balanced_labels(10_000, 2)
    noisy = uniform_label_noise(labels, 2, 0.3, seed=5)
    flipped = noisy != labels
    np.testing.assert_array_equal(noisy[flipped], 1 - labels[flipped])


def test_pair_noise_flips_only_mapped_classes_to_their_target():
    p = 0.35
    labels = _balanced_labels(N, 10)
    noisy = pair_label_noise(labels, CIFAR10_PAIR_MAP, p, seed=2)
    changed = noisy != labels
    mapped = np.isin(labels, list(CIFAR10_PAIR_MAP))
    assert not changed[~mapped].any()
    for src, dst in CIFAR10_PAIR_MAP.items():
        sel = labels == src
        assert set(np.unique(noisy[sel])) <= {src, dst}
        assert _binomial_ok(int((noisy[sel] == dst).sum()), int(sel.sum()), p)


def test_seed_determinism_and_input_untouched():
    labels = _balanced_labels(5_000, 10)
    before = labels.copy()
    a = apply_label_noise(labels, 10, "uniform", 0.4, seed=7, dataset="mnist")
    b = apply_label_noise(labels, 10, "uniform", 0.4, seed=7, dataset="mnist")
    c = apply_label_noise(labels, 10, "uniform", 0.4, seed=8, dataset="mnist")
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.2  # independent corruptions disagree on ~ 2p - p^2 of labels
    np.testing.assert_array_equal(labels, before)
    p1 = apply_label_noise(labels, 10, "pair", 0.4, seed=7, dataset="cifar10")
    p2 = apply_label_noise(labels, 10, "pair", 0.4, seed=7, dataset="cifar10")
    p3 = apply_label_noise(labels, 10, "pair", 0.4, seed=9, dataset="cifar10")
    np.testing.assert_array_equal(p1, p2)
    assert (p1 != p3).any()


@pytest.mark.parametrize("noise_type", [None, "none", "uniform", "pair"])
def test_apply_returns_copy_and_zero_noise_is_identity(noise_type):
    labels = _balanced_labels(1_000, 10)
    out = apply_label_noise(labels, 10, noise_type, 0.0, seed=0, dataset="cifar10")
    np.testing.assert_array_equal(out, labels)
    out[:] = -1
    assert (labels >= 0).all()


def test_apply_dispatches_to_the_named_model():
    labels = _balanced_labels(2_000, 10)
    np.testing.assert_array_equal(
        apply_label_noise(labels, 10, "uniform", 0.3, 4, "cifar10"),
        uniform_label_noise(labels, 10, 0.3, 4),
    )
    np.testing.assert_array_equal(
        apply_label_noise(labels, 10, "pair", 0.3, 4, "cifar10"),
        pair_label_noise(labels, PAIR_MAPS["cifar10"], 0.3, 4),
    )


def test_error_unknown_noise_type():
    with pytest.raises(ValueError, match=r"noise_type.*'uniform'.*'pair'.*'symmetric'"):
        apply_label_noise(np.zeros(3, int), 10, "symmetric", 0.1, 0, "mnist")


@pytest.mark.parametrize("level", [1.0, -0.1, 1.5, float("nan")])
def test_error_noise_level_out_of_range(level):
    with pytest.raises(ValueError, match="noise_level") as err:
        apply_label_noise(np.zeros(3, int), 10, "uniform", level, 0, "mnist")
    assert repr(level) in str(err.value)
    with pytest.raises(ValueError, match="noise_level"):
        uniform_label_noise(np.zeros(3, int), 10, level, 0)
    with pytest.raises(ValueError, match="noise_level"):
        pair_label_noise(np.zeros(3, int), CIFAR10_PAIR_MAP, level, 0)


def test_error_pair_noise_without_pair_map():
    with pytest.raises(ValueError, match=r"'mnist'.*\['cifar10'\]"):
        apply_label_noise(np.zeros(3, int), 10, "pair", 0.2, 0, "mnist")


def test_error_bad_labels_and_num_classes():
    with pytest.raises(ValueError, match="labels must lie in"):
        apply_label_noise(np.array([0, 10]), 10, "uniform", 0.2, 0, "mnist")
    with pytest.raises(ValueError, match="1-D"):
        apply_label_noise(np.zeros((2, 2), int), 10, None, 0.0, 0, "mnist")
    with pytest.raises(ValueError, match="integer dtype"):
        uniform_label_noise(np.array([0.5, 1.0]), 10, 0.2, 0)
    with pytest.raises(ValueError, match="num_classes"):
        uniform_label_noise(np.zeros(3, int), 1, 0.2, 0)
    with pytest.raises(ValueError, match="itself"):
        pair_label_noise(np.zeros(3, int), {1: 1}, 0.2, 0)

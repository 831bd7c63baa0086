"""Information estimators and disentanglement scores against closed forms and constructed cases."""

import math

import numpy as np
import pytest

from lit_info.info.disentanglement import (
    discrete_entropy,
    disentanglement_scores,
    factor_groups,
    factor_label_information,
    gaussian_information,
    knn_information,
    mutual_information_gap,
    probe_accuracy,
    tile_locality,
)


def _gaussian_pair(rho: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n)
    b = rho * a + math.sqrt(1 - rho**2) * rng.standard_normal(n)
    return a[:, None], b[:, None]


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_gaussian_and_knn_information_match_the_closed_form(rho):
    a, b = _gaussian_pair(rho, 4000, seed=1)
    exact = -0.5 * math.log(1 - rho**2)
    assert gaussian_information(a, b)[0, 0] == pytest.approx(exact, abs=0.02)
    assert knn_information(a, b)[0, 0] == pytest.approx(exact, abs=0.05)


def test_factor_label_information_is_the_label_entropy_for_a_copy_and_zero_for_noise():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 8, size=(3000, 2))
    copy = labels[:, :1] + 0.01 * rng.standard_normal((3000, 1))
    noise = rng.standard_normal((3000, 1))
    info = factor_label_information(np.hstack([copy, noise]), labels)
    entropy = discrete_entropy(labels)
    assert entropy[0] == pytest.approx(math.log(8), abs=0.01)
    assert info[0, 0] == pytest.approx(entropy[0], abs=0.1)
    assert abs(info[0, 1]) < 0.05 and abs(info[1, 0]) < 0.05 and abs(info[1, 1]) < 0.05


def test_mig_groups_and_locality_on_hand_made_values():
    information = np.array([[1.0, 0.1], [0.4, 0.2], [0.0, 0.9]])
    entropies = np.array([2.0, 1.0])
    np.testing.assert_allclose(mutual_information_gap(information, entropies), [0.3, 0.7])
    np.testing.assert_array_equal(factor_groups(information), [0, 0, 1])
    components = np.zeros((2, 2, 6))
    components[0, :, 0:2] = 1.0  # all in tile 0
    components[1, :, 2:4] = 1.0  # half in tile 1, half in tile 2
    components[1, :, 4:6] = 1.0
    share, tile = tile_locality(components, 3)
    np.testing.assert_allclose(share, [1.0, 0.5])
    np.testing.assert_array_equal(tile, [0, 1])
    with pytest.raises(ValueError, match="n_tiles=4"):
        tile_locality(components, 4)


def test_probe_reads_disentangled_factors_and_not_scrambled_ones():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=(2000, 2))
    onehot = np.concatenate([np.eye(4)[labels[:, 0]], np.eye(4)[labels[:, 1]]], axis=1)
    factors = onehot + 0.05 * rng.standard_normal(onehot.shape)
    information = np.zeros((8, 2))
    information[:4, 0] = information[4:, 1] = 1.0
    train, test = slice(0, 1000), slice(1000, None)
    good = probe_accuracy(factors[train], labels[train], factors[test], labels[test], information)
    np.testing.assert_allclose(good, [1.0, 1.0])
    # the groups swapped: each position's probe sees the other position's factors: chance
    swapped = information[:, ::-1]
    bad = probe_accuracy(factors[train], labels[train], factors[test], labels[test], swapped)
    assert bad.max() < 0.35


def test_scores_of_a_perfect_code_beat_a_rotated_one():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 8, size=(2400, 3))
    factors = labels + 0.05 * rng.standard_normal(labels.shape)
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    train, test = slice(0, 1200), slice(1200, None)
    perfect = disentanglement_scores(factors[train], labels[train], factors[test], labels[test])
    mixed_factors = factors @ rotation
    mixed = disentanglement_scores(
        mixed_factors[train], labels[train], mixed_factors[test], labels[test]
    )
    assert perfect.mig.min() > 0.8
    assert perfect.probe.min() > 0.95
    assert mixed.mig.mean() < perfect.mig.mean() - 0.3
    summary = perfect.summary()
    assert summary["mig"] == pytest.approx(perfect.mig.mean())
    assert set(summary) >= {"mig_0", "mig_2", "probe_1"}


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="2-dimensional"):
        gaussian_information(np.zeros(5), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="samples"):
        gaussian_information(np.zeros((5, 1)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="train_factors have 2 factors"):
        disentanglement_scores(
            np.zeros((4, 2)), np.zeros((4, 1)), np.zeros((4, 3)), np.zeros((4, 1))
        )
